"""Speed of the metrics: `lhcml evaluate` on a flat file of N jets, AUC, ROC and distance
correlation. Prints a table (machine, command and numbers go to docs/benchmarks/metrics.md).

    nice -n 10 .venv/bin/python benchmarks/metrics_speed.py --n-jets 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from lhcml.config import validate_config
from lhcml.evaluation import EvaluateConfig, evaluate
from lhcml.metrics import auc, d_b, distance_correlation, roc_curve, working_points


def make_file(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    fields = [("pt", "f4"), ("eta", "f4"), ("HadronConeExclTruthLabelID", "i1"),
              ("mcEventWeight", "f4")]
    taggers = {"A": 2.0, "B": 1.0}
    fields += [(f"{t}_{o}", "f4") for t in taggers for o in ("pb", "pc", "pu")]
    a = np.zeros(n, fields)
    lab = rng.choice([5, 4, 0], n, p=[0.3, 0.2, 0.5])
    a["HadronConeExclTruthLabelID"] = lab
    a["pt"] = (20 + rng.exponential(50, n)) * 1e3
    a["eta"] = rng.uniform(-2.5, 2.5, n)
    a["mcEventWeight"] = rng.uniform(0.5, 1.5, n)
    for t, sep in taggers.items():
        logit = rng.normal(size=(n, 3))
        for k, c in enumerate([5, 4, 0]):
            logit[lab == c, k] += sep
        p = np.exp(logit)
        p /= p.sum(1, keepdims=True)
        for k, o in enumerate(("pb", "pc", "pu")):
            a[f"{t}_{o}"] = p[:, k]
    with h5py.File(path, "w") as f:
        f.create_dataset("jets", data=a, chunks=True)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-jets", type=int, default=1_000_000)
    ap.add_argument("--dcor-n", type=int, nargs="+", default=[2000, 5000, 10000])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.h5"
        make_file(path, args.n_jets)
        for plots in (False, True):
            cfg = validate_config(EvaluateConfig, {
                "taggers": ["A", "B"], "reference": "B", "weight": "mcEventWeight",
                "samples": [{"name": "ttbar", "kind": "ttbar", "files": [str(path)]}],
                "plots": plots,
            })
            _, dt = timed(evaluate, cfg, Path(tmp) / f"out_{plots}")
            rows.append((f"lhcml evaluate, 2 taggers, {'with' if plots else 'no'} plots",
                         args.n_jets, dt))
        with h5py.File(path) as f:
            j = f["jets"][:]
    lab = j["HadronConeExclTruthLabelID"]
    d = d_b(j["A_pb"], j["A_pc"], j["A_pu"], fc=0.2)
    s, u = d[lab == 5], d[lab == 0]
    _, dt = timed(d_b, j["A_pb"], j["A_pc"], j["A_pu"])
    rows.append(("D_b", d.size, dt))
    _, dt = timed(working_points, s, {"u": u})
    rows.append(("4 working points (cuts + rejection + errors)", s.size + u.size, dt))
    _, dt = timed(roc_curve, s, u)
    rows.append(("ROC, 121 efficiencies", s.size + u.size, dt))
    _, dt = timed(auc, s, u)
    rows.append(("AUC (sort-based Mann-Whitney)", s.size + u.size, dt))
    rng = np.random.default_rng(1)
    _, dt = timed(distance_correlation, rng.normal(size=50), rng.normal(size=50))
    rows.append(("distance correlation: first call (numba import/compile)", 50, dt))
    for n in args.dcor_n:
        x = rng.normal(size=n)
        _, dt = timed(distance_correlation, x, x + rng.normal(size=n))
        rows.append(("distance correlation (O(N^2) numba pair loop)", n, dt))
    print(f"{'operation':55s} {'N':>10s} {'time [s]':>10s}")
    for name, n, dt in rows:
        print(f"{name:55s} {n:10d} {dt:10.3f}")


if __name__ == "__main__":
    main()
