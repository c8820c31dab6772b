"""Cost of the command line and of the plot libraries (issue 11: CLI groups, mplhep style, hist
filling, sklearn agreement). Prints a table; machine, command and numbers go to
docs/benchmarks/plots_cli.md.

    nice -n 10 .venv/bin/python benchmarks/plots_cli.py --n 1000000 --repeat 5

Rows: `lhcml --help` and `lhcml photon --help` (fresh process each), the first figure of a fresh
process (imports included) per mplhep style, a figure drawn and saved in a warm process, the
weighted histogram fill (`lhcml.plots.histograms.fill_histogram` vs two `np.histogram` calls), and
lhcml's AUC vs `sklearn.metrics.roc_auc_score` on the same weighted scores.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIRST_FIGURE = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from lhcml.plots.histograms import HistogramPlot
rng = np.random.default_rng(0)
h = HistogramPlot(bins=50, xlabel="D", logy=True, label_lines=["sample"])
h.add(rng.normal(1, 1, 20000), "sig").add(rng.normal(0, 1, 50000), "bkg").add_line(1.0, "77%")
h.save(sys.argv[1])
print(time.perf_counter() - t0)
"""


def _median_wall(cmd: list[str], repeat: int, env: dict | None = None) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="entries for the fill and AUC rows")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions (median reported)")
    args = ap.parse_args(argv)

    import os

    from lhcml.metrics import auc
    from lhcml.plots import style as st
    from lhcml.plots.histograms import HistogramPlot, fill_histogram

    rows: list[tuple[str, str, float]] = []
    lhcml = [sys.executable, "-m", "lhcml"]
    rows.append(("`lhcml --help` (fresh process)", "-", _median_wall([*lhcml, "--help"], args.repeat)))
    rows.append(("`lhcml photon --help` (fresh process)", "-",
                 _median_wall([*lhcml, "photon", "--help"], args.repeat)))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in st.PLOT_STYLES:
            env = {**os.environ, "LHCML_PLOT_STYLE": name}
            out = Path(tmp) / f"first_{name}.png"
            rows.append((f"first figure of a process, style {name} (imports + draw + PNG)", "70 000",
                         _median_wall([sys.executable, "-c", FIRST_FIGURE, str(out)], args.repeat, env)))

        rng = np.random.default_rng(1)
        s, b = rng.normal(1, 1, 20_000), rng.normal(0, 1, 50_000)

        def figure() -> None:
            h = HistogramPlot(bins=50, xlabel="D", logy=True, label_lines=["sample"])
            h.add(s, "sig").add(b, "bkg").add_line(1.0, "77%")
            h.save(Path(tmp) / "warm.png")

        figure()  # warm up (imports)
        rows.append(("histogram figure, warm process (draw + PNG)", "70 000", _median(figure, args.repeat)))

    n = args.n
    rng = np.random.default_rng(2)
    v, w = rng.normal(0, 1, n), rng.exponential(1.0, n)
    edges = np.linspace(-3, 3, 61)
    rows.append(("fill_histogram (hist, Weight storage)", f"{n:,}",
                 _median(lambda: fill_histogram(v, edges, w), args.repeat)))  # fmt: skip
    rows.append(("np.histogram of w and of w^2 (the former code)", f"{n:,}",
                 _median(lambda: (np.histogram(v, edges, weights=w), np.histogram(v, edges, weights=w**2)),
                         args.repeat)))  # fmt: skip

    ds, db = np.round(rng.normal(1, 1, n // 2), 2), np.round(rng.normal(0, 1, n // 2), 2)  # ties
    ws, wb = rng.uniform(0.2, 2, ds.size), rng.uniform(0.2, 2, db.size)
    a_mine = auc(ds, db, ws, wb)
    rows.append(("lhcml.metrics.auc (weighted, ties)", f"{n:,}", _median(lambda: auc(ds, db, ws, wb), args.repeat)))
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # the bench/test extras bring it
        print("scikit-learn not installed: no sklearn row (pip install '.[test]')")
    else:
        y = np.r_[np.ones(ds.size), np.zeros(db.size)]
        sc, ww = np.r_[ds, db], np.r_[ws, wb]
        a_sk = roc_auc_score(y, sc, sample_weight=ww)
        rows.append(("sklearn roc_auc_score (same input)", f"{n:,}",
                     _median(lambda: roc_auc_score(y, sc, sample_weight=ww), args.repeat)))  # fmt: skip
        print(f"AUC lhcml {a_mine:.12f}, sklearn {a_sk:.12f}, |diff| {abs(a_mine - a_sk):.1e}")

    print(f"\n| operation | N | time [s] (median of {args.repeat}) |\n|---|---:|---:|")
    for op, size, t in rows:
        print(f"| {op} | {size} | {t:.3f} |")


if __name__ == "__main__":
    main()
