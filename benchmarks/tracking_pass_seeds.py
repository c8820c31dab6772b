"""Seed files of one pass of an iterative ml-seeds+ckf finder, as that pass sees them (issue 14).

``lhcml tracking write-seeds`` makes a pass's seeds on ALL hits of an event; a later pass of ml-seeds+ckf
(``second_pass`` / ``more_passes``) only sees the hits the earlier passes' tracks left. This runs the finder
(``--config``, an ml-seeds config) on each event and writes the seeds that pass ``--pass`` (default: the last)
was handed -- the pass's own seeding on the leftover hits, its seeds per middle space point -- with the
features the finder computed for its classifier and truth labels, in the seed-file format of ``write-seeds``
(``<trackml dir>/seeds-NAME/``), so that ``lhcml train`` can train that pass's classifier on them
(``configs/tracking/seed_filter_pass4.yaml``). Every pass up to ``--pass`` must have a classifier.

    OMP_NUM_THREADS=1 python benchmarks/tracking_pass_seeds.py benchmarks/_work/tracking/train_mu200 \
        --name ml10p4l --events 0-9,18,19 --config configs/tracking/ml_seeds_4pass_budget.yaml

Bad input (no such sample, events, config, a pass without a classifier): one message, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


def write_pass_seeds(event_dir: str | Path, name: str, events: str | None, config: Any,
                     pass_number: int | None = None) -> list[Path]:  # fmt: skip
    """Seed files of pass ``pass_number`` (1-based; None: the last) of ml-seeds+ckf with ``config`` on ``events``
    of ``event_dir``; returns their paths. :class:`lhcml.errors.ConfigError` on bad input, before any work."""
    from lhcml.data.trackml import list_events
    from lhcml.errors import ConfigError
    from lhcml.models.tracking.seed_filter import FEATURE_NAMES
    from lhcml.tasks.tracking import seed_filter
    from lhcml.tasks.tracking.acts_reco import acts_files
    from lhcml.tasks.tracking.finders import parse_events

    cfg = seed_filter.load_ml_seeds_config(config)
    checkpoints = [cfg.checkpoint] + ([cfg.second_pass_checkpoint] if cfg.second_pass else [])
    checkpoints += [p.checkpoint for p in cfg.more_passes]
    n = len(checkpoints) if pass_number is None else int(pass_number)
    if not 1 <= n <= len(checkpoints):
        raise ConfigError(f"--pass {n}: the config has passes 1..{len(checkpoints)}")
    if any(c is None for c in checkpoints[:n]):
        raise ConfigError(f"pass {checkpoints.index(None) + 1} of the config has no classifier: this tool finds "
                          f"pass {n}'s seeds by the classifier calls of passes 1..{n}")  # fmt: skip
    acts_files(event_dir)  # one clear error before any work
    ids = parse_events(events, list(list_events(event_dir)))
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    original = seed_filter.event_features

    def spy(*args: Any, **kwargs: Any) -> np.ndarray:
        feats = original(*args, **kwargs)
        calls.append((np.array(args[2], np.int64), feats))
        return feats

    out = []
    seed_filter.event_features = spy
    try:
        for e in ids:
            calls.clear()
            seed_filter.ml_seeds_ckf(event_dir, e, cfg)
            if len(calls) < n:
                raise RuntimeError(f"event {e}: {len(calls)} classifier calls for {n} passes (a pass without seeds?)")
            triplets, feats = calls[n - 1]
            arrays = {"triplets": triplets, "features": feats, "feature_names": np.asarray(FEATURE_NAMES),
                      "max_seeds_per_spm": np.asarray(cfg.max_seeds_per_spm), "y": seed_filter.seed_labels(event_dir, e, triplets)}  # fmt: skip
            path = seed_filter.save_seed_file(event_dir, e, name, arrays)
            out.append(path)
            print(f"event {e}: {len(triplets)} seeds of pass {n}, {int(arrays['y'].sum())} true", flush=True)
    finally:
        seed_filter.event_features = original
    return out


def main(argv: list[str] | None = None) -> int:
    from lhcml.errors import LhcmlError

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("event_dir", help="a sample (`lhcml tracking simulate` output)")
    ap.add_argument("--name", required=True, help="seed set name: files go to <trackml dir>/seeds-NAME/")
    ap.add_argument("--config", required=True, help="ml-seeds config of the finder (YAML)")
    ap.add_argument("--events", default=None, help="event numbers, e.g. 0-9,18,19 (default: all)")
    ap.add_argument("--pass", dest="pass_number", type=int, default=None, help="1-based pass (default: the last)")
    args = ap.parse_args(argv)
    try:
        write_pass_seeds(args.event_dir, args.name, args.events, args.config, args.pass_number)
    except (LhcmlError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
