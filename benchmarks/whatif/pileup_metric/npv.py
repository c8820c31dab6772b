"""Groomed large-R τ32 against the number of reconstructed primary vertices (issue 12, fourteenth version;
docs/benchmarks/sim_large_r.md): ATLAS plots pile-up stability against N_PV.

Reads ``benchmarks/sim_large_r.py --save-jets DIR`` files written with the per-jet ``nPrimaryVertices`` (since
the fourteenth version) for every μ of ``--mus`` together, and prints per constituent type, for ATLAS-labelled
W+Z and top jets (|η| < 2, calibrated pT in ``--pt``): the median τ32 (and the jets) in bins of N_PV, the
least-squares slope of τ32 on N_PV per 10 vertices over all jets of all μ points and within each μ > 0 point
alone (the within-sample slope, the closest to a slope measured in one data set), and the mean N_PV per μ
point. Errors from ``--nboot`` bootstrap resamplings of the hard events (the same for every μ and type).

usage: npv.py DIR --seeds 7171,7272 [--types pflow,clusters,tcc] [--mus 0,60,140] [--events 1500]
              [--pt 350 450] [--nboot 200] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

STRIDE = 10_000_000  # lhcml.sim.events.EVENT_NUMBER_STRIDE
GROUPS = {"WZ": ("wz", [(2, 50.0, 100.0), (3, 60.0, 110.0)]), "top": ("top", [(1, 140.0, np.inf)])}
NPV_BINS = (0, 2, 20, 30, 40, 50, 60, 70, 80, 90, 1000)


def load(folder: Path, process: str, mus: list[float], ctype: str, seeds: list[int], windows, pt):
    parts = []
    for mu in mus:
        for s in seeds:
            f = folder / f"{process}_mu{mu:g}_{ctype}_s{s}.npz"
            if not f.exists():
                print(f"error: {f} is missing", file=sys.stderr)
                sys.exit(2)
            z = np.load(f)
            if "nPrimaryVertices" not in z.files:
                print(f"error: {f} has no nPrimaryVertices: written by a sim_large_r.py before the fourteenth version",
                      file=sys.stderr)
                sys.exit(2)
            lab, tm, ptc = z["R10TruthLabel"], z["truthJetMass"] / 1e3, z["pt"] / 1e3
            sel = np.zeros(len(lab), bool)
            for code, lo, hi in windows:
                sel |= (lab == code) & (tm > lo) & (tm < hi)
            sel &= (np.abs(z["eta"]) < 2) & (ptc > pt[0]) & (ptc < pt[1])
            parts.append({"tau32": z["tau32"][sel].astype(float), "npv": z["nPrimaryVertices"][sel].astype(float),
                          "mu": np.full(sel.sum(), mu), "seed": np.full(sel.sum(), s),
                          "event": z["eventNumber"][sel] - np.int64(s) * STRIDE})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def wmedian(x: np.ndarray, w: np.ndarray) -> float:
    o = np.argsort(x, kind="stable")
    xs, c = x[o], np.cumsum(w[o])
    tot = c[-1] if len(c) else 0
    if tot == 0:
        return float("nan")
    return float(0.5 * (xs[np.searchsorted(c, (tot - 1) // 2 + 1)] + xs[np.searchsorted(c, tot // 2 + 1)]))


def slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted least-squares slope of y on x (integer weights)."""
    if w.sum() < 3:
        return float("nan")
    mx, my = np.average(x, weights=w), np.average(y, weights=w)
    vx = np.average((x - mx) ** 2, weights=w)
    return float(np.average((x - mx) * (y - my), weights=w) / vx) if vx > 0 else float("nan")


def stats(d: dict, w: np.ndarray, mus: list[float]) -> dict[str, float]:
    out = {}
    for lo, hi in zip(NPV_BINS[:-1], NPV_BINS[1:], strict=True):
        m = (d["npv"] >= lo) & (d["npv"] < hi)
        out[f"med_{lo}_{hi}"] = wmedian(d["tau32"][m], w[m])
        out[f"n_{lo}_{hi}"] = float(w[m].sum())
    out["slope_all"] = 10 * slope(d["npv"], d["tau32"], w)
    for mu in mus:
        m = d["mu"] == mu
        out[f"npv_mean_{mu:g}"] = float(np.average(d["npv"][m], weights=w[m])) if w[m].sum() else float("nan")
        if mu > 0:
            out[f"slope_mu{mu:g}"] = 10 * slope(d["npv"][m], d["tau32"][m], w[m])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--types", default="pflow,clusters,tcc")
    ap.add_argument("--mus", default="0,60,140")
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--pt", type=float, nargs=2, default=(550.0, 650.0))
    ap.add_argument("--nboot", type=int, default=200)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
        mus = [float(m) for m in a.mus.split(",")]
    except ValueError as e:
        print(f"error: --seeds / --mus must be comma-separated numbers ({e})", file=sys.stderr)
        return 2
    if not a.folder.is_dir():
        print(f"error: {a.folder} is not a folder", file=sys.stderr)
        return 2
    rng = np.random.default_rng(15)
    boots = {s: [np.bincount(rng.integers(0, a.events, a.events), minlength=a.events) for _ in range(a.nboot)]
             for s in seeds}
    result = {}
    for part, (process, windows) in GROUPS.items():
        print(f"\n### {part} jets: median τ32 in bins of N_PV (all μ points {a.mus} together; calibrated pT "
              f"{a.pt[0]:g}-{a.pt[1]:g} GeV; seeds {a.seeds})\n")
        bins = list(zip(NPV_BINS[:-1], NPV_BINS[1:], strict=True))
        print("| type | " + " | ".join(f"N_PV {lo}-{hi - 1}" if hi < 1000 else f"N_PV ≥ {lo}" for lo, hi in bins)
              + " | slope per 10 N_PV, all | " + " | ".join(f"within μ = {m:g}" for m in mus if m > 0) + " |")
        print("|---" * (2 + len(bins) + sum(m > 0 for m in mus)) + "|")
        for ctype in a.types.split(","):
            d = load(a.folder, process, mus, ctype, seeds, windows, tuple(a.pt))
            n = len(d["tau32"])
            nom = stats(d, np.ones(n, np.int64), mus)
            rows = []
            for i in range(a.nboot):
                w = np.zeros(n, np.int64)
                for s in seeds:
                    m = d["seed"] == s
                    w[m] = boots[s][i][d["event"][m]]
                rows.append(stats(d, w, mus))
            err = {k: float(np.nanstd([r[k] for r in rows])) for k in nom}
            result[f"{part}/{ctype}"] = {"values": nom, "errors": err}
            cells = [(f"{nom[f'med_{lo}_{hi}']:.3f} ± {err[f'med_{lo}_{hi}']:.3f} ({nom[f'n_{lo}_{hi}']:.0f})"
                      if nom[f"n_{lo}_{hi}"] >= 20 else "—") for lo, hi in bins]
            sl = [f"{nom[f'slope_mu{m:g}']:+.4f} ± {err[f'slope_mu{m:g}']:.4f}" for m in mus if m > 0]
            print(f"| {ctype} | " + " | ".join(cells) + f" | {nom['slope_all']:+.4f} ± {err['slope_all']:.4f} | "
                  + " | ".join(sl) + " |")
        first = result[f"{part}/{a.types.split(',')[0]}"]["values"]
        print("\nmean N_PV per μ point: " + ", ".join(f"{m:g}: {first[f'npv_mean_{m:g}']:.1f}" for m in mus))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
