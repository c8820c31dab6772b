"""``ml-seeds+ckf``: ACTS triplet seeding, a learned seed classifier, then the ACTS CKF on the kept seeds.

The ACTS baseline (``ckf``) spends ~75 % of its time at ⟨μ⟩ = 200 in the CKF following seeds
that mostly combine hits of several particles. Here ACTS's grid triplet seeding runs with more
seeds per middle space point than the baseline (``max_seeds_per_spm``, to recover the
1.5 < |η| < 2 region), the classifier of :mod:`lhcml.models.tracking.seed_filter` scores every
seed, and the CKF (with ACTS's seed deduplication: a seed whose space points a found track
already holds is skipped) runs only on the seeds above ``cut`` — at most ``max_per_spm`` per
middle space point — in decreasing score, so that the best seed of a particle is followed first.

Pieces:

* :func:`acts_seeds` -- ACTS seeding of one event (space points, ``GridTripletSeedingAlgorithm``,
  ``SeedsToProtoTracks``): the seeds as measurement-index triplets and the stage timings;
* :func:`write_seed_files` -- seed files with features and truth labels for training
  (``lhcml tracking write-seeds``; :func:`lhcml.models.tracking.seed_filter.seed_file`);
* :func:`select_seeds` -- the kept seeds, ranked;
* :func:`ml_seeds_ckf` -- the finder (``configs/tracking/ml_seeds.yaml``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from lhcml.atomic import atomic_write_bytes
from lhcml.config import StrictModel, coerce_config
from lhcml.errors import ConfigError, SchemaError

#: the finder's shipped configuration
DEFAULT_CONFIG = "tracking/ml_seeds.yaml"


class MlSeedsConfig(StrictModel):
    """Configuration of ``ml-seeds+ckf`` (``configs/tracking/ml_seeds.yaml``)."""

    #: ACTS reconstruction config (a path; null: the shipped ``ckf.yaml``), seeding and CKF settings
    reco: str | None = None
    #: seeds per middle space point of ACTS's seeding (the baseline has 5)
    max_seeds_per_spm: int = Field(10, ge=1)
    #: the trained classifier: a checkpoint file or a training run directory (its best checkpoint)
    checkpoint: str
    #: keep seeds with score >= cut
    cut: float = Field(0.5, ge=0.0, le=1.0)
    #: keep at most this many seeds per middle space point (best first; 0: no limit)
    max_per_spm: int = Field(0, ge=0)
    #: ACTS's seed deduplication in the CKF (skip a seed whose space points a found track holds)
    seed_deduplication: bool = True


def load_ml_seeds_config(cfg: MlSeedsConfig | Mapping[str, Any] | str | Path | None) -> MlSeedsConfig:
    """A validated config from a model, a mapping, a YAML path or ``None`` (the shipped one)."""
    return coerce_config(MlSeedsConfig, cfg, DEFAULT_CONFIG, "ml-seeds config")


def reco_config(cfg: MlSeedsConfig) -> Any:
    """The ACTS config of the finder: ``reco`` with its seeds per middle space point and deduplication."""
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    reco = load_reco_config(cfg.reco).model_copy(deep=True)
    reco.seeding.max_seeds_per_spm = cfg.max_seeds_per_spm
    reco.ckf.seed_deduplication = cfg.seed_deduplication
    return reco


# ---------------------------------------------------------------------------------------- seeding
def acts_seeds(event_dir: str | Path, event_id: int, reco: Any) -> tuple[np.ndarray, dict[str, float]]:
    """ACTS's triplet seeds of one event: ``(n, 3)`` measurement indices (ACTS's order) and
    ``{stage: seconds}`` (read, space points, seeding; one thread)."""
    from lhcml.tasks.tracking.acts_reco import acts_files, add_seeding, run_chain, stage_seconds

    files = acts_files(event_dir)
    files.check(event_id)
    sink: dict[int, list[list[int]]] = {}

    def build(chain: Any, _: Any) -> None:
        acts = chain.acts
        seeds = add_seeding(chain, reco)
        conv = acts.examples.SeedsToProtoTracks.Config()
        conv.inputSeeds, conv.outputProtoTracks = seeds, "seed_protos"
        chain.seq.addAlgorithm(acts.examples.SeedsToProtoTracks(conv, chain.level))
        chain.seq.addAlgorithm(_ProtoCollector(acts, chain.level, "seed_protos", sink))

    _, timings = run_chain(files, [int(event_id)], build)
    rows = sink.get(int(event_id), [])
    return np.asarray(rows, np.int64).reshape(-1, 3), stage_seconds(timings)


class _ProtoCollector:
    """Reads a proto-track container into Python lists (per event)."""

    def __new__(cls, acts: Any, level: Any, key: str, sink: dict[int, list[list[int]]]) -> Any:
        class ProtoCollector(acts.examples.IAlgorithm):
            def __init__(self) -> None:
                acts.examples.IAlgorithm.__init__(self, "ProtoCollector", level)
                self.inp = acts.examples.ReadDataHandle(self, acts.examples.ProtoTrackContainer, "ProtoTracks")
                self.inp.initialize(key)

            def execute(self, ctx: Any) -> Any:
                sink[ctx.eventNumber] = [list(p) for p in self.inp(ctx.eventStore)]
                return acts.examples.ProcessCode.SUCCESS

        return ProtoCollector()


def event_features(event_dir: str | Path, event_id: int, triplets: np.ndarray, field_tesla: float) -> np.ndarray:
    """:func:`lhcml.models.tracking.seed_filter.seed_features` of an event's seeds (positions from its ACTS CSV)."""
    from lhcml.models.tracking.seed_filter import seed_features
    from lhcml.tasks.tracking.acts_reco import acts_files, read_measurement_positions

    meas = read_measurement_positions(acts_files(event_dir), event_id)
    return seed_features(meas["x"].to_numpy(float), meas["y"].to_numpy(float), meas["z"].to_numpy(float),
                         meas["geometry_id"].to_numpy(np.uint64), triplets, field_tesla)  # fmt: skip


def seed_labels(event_dir: str | Path, event_id: int, triplets: np.ndarray) -> np.ndarray:
    """1 where the seed's three measurements come from one particle (noise never), else 0.

    Raises
    ------
    SchemaError
        The event has no truth (seeds of real data cannot train the classifier).
    """
    from lhcml.data.trackml import read_event
    from lhcml.errors import InputNotFoundError

    try:
        ev = read_event(event_dir, event_id, parts=("hits", "truth"), check=False)
    except (FileNotFoundError, InputNotFoundError):
        ev = None
    truth = getattr(ev, "truth", None)
    if truth is None or "particle_id" not in truth.columns:
        raise SchemaError(f"event {event_id} of {event_dir} has no truth (particle_id per hit): seeds for training "
                          "need simulated events; write seeds without labels with --no-labels")  # fmt: skip
    pid = np.zeros(int(truth["hit_id"].max()) + 1, np.int64)
    pid[truth["hit_id"].to_numpy(np.int64)] = truth["particle_id"].to_numpy(np.int64)
    t = np.asarray(triplets, np.int64).reshape(-1, 3) + 1  # hit_id = measurement index + 1
    if t.size and t.max() >= len(pid):
        raise SchemaError(f"event {event_id}: seed hit ids beyond the truth table (max {int(t.max())}); "
                          "the ACTS CSV and the TrackML files are of different events")  # fmt: skip
    p = pid[t]
    return ((p[:, 0] != 0) & (p[:, 0] == p[:, 1]) & (p[:, 1] == p[:, 2])).astype(np.int8)


def write_seed_files(event_dir: str | Path, name: str, events: Sequence[int] | None = None,
                     max_seeds_per_spm: int = 10, labels: bool = True, progress: bool = True) -> list[Path]:  # fmt: skip
    """Seed files of ``events`` (default: all) of a sample: ACTS's seeds with ``max_seeds_per_spm``,
    their features and (``labels``) truth labels, in ``<trackml dir>/seeds-<name>/``."""
    import io

    from tqdm import tqdm

    from lhcml.data.trackml import list_events, read_event
    from lhcml.models.tracking.seed_filter import FEATURE_NAMES, seed_file
    from lhcml.tasks.tracking.acts_reco import acts_files, load_reco_config

    acts_files(event_dir)  # one clear error before any work
    ids = list(list_events(event_dir)) if events is None else [int(e) for e in events]
    reco = load_reco_config(None).model_copy(deep=True)
    reco.seeding.max_seeds_per_spm = int(max_seeds_per_spm)
    out = []
    for e in tqdm(ids, desc=f"seeds {name}", unit="event", disable=not progress):
        triplets, _ = acts_seeds(event_dir, e, reco)
        arrays: dict[str, np.ndarray] = {
            "triplets": triplets, "features": event_features(event_dir, e, triplets, reco.field_tesla),
            "feature_names": np.asarray(FEATURE_NAMES), "max_seeds_per_spm": np.asarray(int(max_seeds_per_spm)),
        }  # fmt: skip
        if labels:
            arrays["y"] = seed_labels(event_dir, e, triplets)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path = seed_file(read_event(event_dir, e, parts=("hits",), check=False).source, e, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
        out.append(path)
    return out


# ---------------------------------------------------------------------------------------- selection
def select_seeds(scores: np.ndarray, triplets: np.ndarray, cut: float, max_per_spm: int = 0) -> np.ndarray:
    """Indices of the kept seeds, best first: score >= ``cut``, at most ``max_per_spm`` per middle
    space point (0: no limit); ties keep ACTS's order (deterministic)."""
    scores = np.asarray(scores, np.float64)
    t = np.asarray(triplets, np.int64).reshape(-1, 3)
    if len(scores) != len(t):
        raise SchemaError(f"{len(scores)} scores for {len(t)} seeds; score every seed once")
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] >= cut]
    if max_per_spm > 0 and len(order):
        middle = t[order, 1]
        rank = np.zeros(len(order), np.int64)
        seen: dict[int, int] = {}
        for i, m in enumerate(middle.tolist()):
            rank[i] = seen.get(m, 0)
            seen[m] = rank[i] + 1
        order = order[rank < max_per_spm]
    return order


@functools.lru_cache(maxsize=4)
def _classifier(checkpoint: str) -> Any:
    """The trained classifier of a checkpoint file or run directory (loaded once per process)."""
    from lhcml.train.tracking import load_tracking_model

    path = Path(checkpoint)
    if path.is_dir():
        best = sorted((path / "checkpoints").glob("best-*.ckpt"))
        if not best:
            raise ConfigError(f"no best-*.ckpt under {path / 'checkpoints'}: train the seed classifier first "
                              "(lhcml train configs/tracking/seed_filter.yaml)")  # fmt: skip
        path = best[-1]
    model, meta = load_tracking_model(path)
    if meta.get("model_name") != "seed_filter":
        raise ConfigError(f"{path} is a '{meta.get('model_name')}' checkpoint, not a seed classifier (seed_filter)")
    return model


def ml_seeds_ckf(event_dir: str | Path, event_id: int, cfg: Any = None) -> dict[str, Any]:
    """The finder ``ml-seeds+ckf``: ACTS seeding, the seed classifier, the ACTS CKF on the kept seeds.

    Returns the finders' contract (``track_id``, ``hit_id``, ``timings``, ``fitted``); the timings
    are ACTS's per stage (read and space points of both ACTS runs summed) plus ``classifier``
    (features, scores, selection); ``n_seeds`` / ``n_kept`` give the seeds before and after.
    """
    from lhcml.tasks.tracking.acts_reco import ckf_from_seeds

    c = load_ml_seeds_config(cfg)
    reco = reco_config(c)
    model = _classifier(str(c.checkpoint))
    triplets, timings = acts_seeds(event_dir, event_id, reco)
    t0 = time.process_time()
    scores = model.score(event_features(event_dir, event_id, triplets, reco.field_tesla)) if len(triplets) else np.zeros(0)
    keep = select_seeds(scores, triplets, c.cut, c.max_per_spm)
    timings["classifier"] = time.process_time() - t0
    if len(keep) == 0:
        from lhcml.tasks.tracking.acts_reco import FittedTracks

        empty = np.zeros(0, np.int64)
        fitted = FittedTracks(int(event_id), empty, np.zeros((0, 6)), np.zeros((0, 6, 6)), *(empty,) * 6)
        return {"track_id": empty, "hit_id": empty, "timings": timings, "fitted": fitted,
                "n_seeds": len(triplets), "n_kept": 0}  # fmt: skip
    (track_id, hit_id), fitted = ckf_from_seeds(event_dir, event_id, triplets[keep] + 1, reco)
    for k, v in fitted.timings.items():
        timings[k] = timings.get(k, 0.0) + v
    return {"track_id": np.asarray(track_id, np.int64), "hit_id": np.asarray(hit_id, np.int64),
            "timings": timings, "fitted": fitted, "n_seeds": len(triplets), "n_kept": len(keep)}  # fmt: skip
