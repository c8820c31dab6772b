"""Tuning throughput and gain: trials/hour with 1 and 2 local workers, best trial vs default.

Usage::

    python benchmarks/tune_scaling.py --config configs/ftag/dl1.yaml --set data.train_files=[...] \
        --space configs/tune/dl1_space.yaml --scaling-trials 6 --study-trials 30 --out benchmarks/_work/tune

Prints a table; copy it into docs/benchmarks.md with the machine description.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], help="override key=value in the training config")
    ap.add_argument("--space", required=True)
    ap.add_argument("--scaling-trials", type=int, default=6)
    ap.add_argument("--study-trials", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/_work/tune")
    ap.add_argument("--workers", type=int, default=2, help="workers of the tuning study")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--skip-study", action="store_true")
    args = ap.parse_args()

    from lhcml.train.config import config_from_dict, raw_train_config
    from lhcml.train.trainer import train
    from lhcml.tune.objective import TrainObjective
    from lhcml.tune.report import decode_params, write_report
    from lhcml.tune.space import load_space
    from lhcml.tune.storage import resolve_storage_url
    from lhcml.tune.study import run_study

    out = Path(args.out)
    base = raw_train_config(args.config, args.set)
    space = load_space(args.space)
    rows = []
    # 1) scaling: the same fixed-size random study with 1 and 2 workers (pruning off: equal work)
    for workers in () if args.skip_scaling else (1, 2):
        # equal work in both runs: a grid space visits the same points whatever the workers
        upd = {"study_name": f"scaling_w{workers}", "n_trials": args.scaling_trials, "pruner": "none"}
        if space.sampler != "grid":
            upd["sampler"] = "random"
        sp = space.model_copy(update=upd)
        d = out / f"scaling_w{workers}"
        t0 = time.time()
        run_study(sp, resolve_storage_url(None, d), TrainObjective(base, sp, d), workers=workers, progress=True)
        dt = time.time() - t0
        rows.append((f"{workers} worker(s)", args.scaling_trials, dt, 3600 * args.scaling_trials / dt))
    if rows:
        print("\n| workers | trials | wall time [s] | trials/hour |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.1f} |")
        print(f"\nscaling 1 -> 2 workers: {rows[1][3] / rows[0][3]:.2f}x", flush=True)
    if args.skip_study:
        return

    # 2) the tuning study, then the default config trained the same way
    sp = space.model_copy(update={"n_trials": args.study_trials})
    d = out / "study"
    t0 = time.time()
    study = run_study(sp, resolve_storage_url(None, d), TrainObjective(base, sp, d), workers=args.workers,
                      progress=True)  # fmt: skip
    write_report(study, sp, base, d)
    t_study = time.time() - t0
    default = dict(base, output_dir=str(out / "default"))
    default.setdefault("trainer", {})["enable_progress_bar"] = False
    seen: list[float] = []
    train(config_from_dict(default), epoch_hooks=[lambda e, m: seen.append(float(m["val_rej_ujets"]))])
    best_default = max(seen)
    print("\n| config | light rejection @ 70% (val) |\n|---|---|")
    print(f"| default ({Path(args.config).name}) | {best_default:.1f} |")
    print(f"| best of {args.study_trials} trials (trial {study.best_trial.number}) | {study.best_value:.1f} |")
    print(f"\ngain: {study.best_value / best_default:.2f}x; study wall time {t_study / 60:.1f} min")
    best = decode_params(sp, study.best_params)
    print("best parameters:", yaml.safe_dump(best, default_flow_style=True).strip())


if __name__ == "__main__":
    main()
