"""Pile-up dependence of groomed large-R jets per constituent type, measured as slopes and rises in μ
(issue 12, thirteenth version; docs/benchmarks/sim_large_r.md, docs/references.md).

Reads the per-jet files of ``benchmarks/sim_large_r.py --save-jets DIR`` (``<process>_mu<mu>_<type>_s<seed>.npz``,
all types from the same events, the same hard events at every μ) and prints, for ATLAS-labelled W, Z, W+Z and
top jets (truth-jet mass 50-100 / 60-110 / > 140 GeV), |η| < 2 and calibrated pT in ``--pt`` (``--truth-pt``: the
truth-jet pT, as ATLAS bins its mass resolution), per constituent
type and μ: the median and mean of τ32, τ21, D2 (β = 1), the groomed mass and the trimmed constituent count,
the share of jets with <= 3 constituents, and the mass resolution as ATLAS defines it (½ IQR68 / median of
m / m_truth-jet, jets with a matched truth jet); then each quantity's rise from the first to every other μ
and its least-squares slope in μ (per 100 units of μ), with errors from ``--nboot`` bootstrap resamplings of
the hard events (each seed on its own, the same resampling for every μ and type, so rises and type
differences are paired).

usage: analyse.py DIR --seeds 5151,5252 [--types pflow,clusters,tcc] [--mus 0,60,140] [--events 1500]
                  [--pt 550 650] [--truth-pt] [--nboot 300] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

STRIDE = 10_000_000  # lhcml.sim.events.EVENT_NUMBER_STRIDE
#: (process, [(label code, truth-jet mass low, high)]) of each particle group (ATLAS's R21Consolidated windows)
GROUPS = {
    "W": ("wz", [(2, 50.0, 100.0)]),
    "Z": ("wz", [(3, 60.0, 110.0)]),
    "WZ": ("wz", [(2, 50.0, 100.0), (3, 60.0, 110.0)]),
    "top": ("top", [(1, 140.0, np.inf)]),
}
QUANTITIES = ("tau32", "tau21", "D2", "mass", "n_constituents")


def wquantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """Quantile of ``np.repeat(x, w)`` (integer weights), interpolated linearly as ``np.percentile``."""
    o = np.argsort(x, kind="stable")
    xs, c = x[o], np.cumsum(w[o])
    tot = c[-1]
    if tot == 0:
        return float("nan")
    pos = q * (tot - 1)
    k = int(np.floor(pos))
    lo = xs[np.searchsorted(c, k, side="right")]
    hi = xs[np.searchsorted(c, min(k + 1, tot - 1), side="right")]
    return float(lo + (pos - k) * (hi - lo))


def wmedian(x: np.ndarray, w: np.ndarray) -> float:
    """Median of ``np.repeat(x, w)`` (mean of the two middle values for an even count)."""
    o = np.argsort(x, kind="stable")
    xs, c = x[o], np.cumsum(w[o])
    tot = c[-1]
    if tot == 0:
        return float("nan")
    return float(0.5 * (xs[np.searchsorted(c, (tot - 1) // 2 + 1)] + xs[np.searchsorted(c, tot // 2 + 1)]))


def stats(d: dict, w: np.ndarray) -> dict[str, float]:
    """Every statistic of one selection with integer event weights ``w`` per jet."""
    out = {}
    n = w.sum()
    for q in QUANTITIES:
        x = d[q]
        out[f"median_{q}"] = wmedian(x, w)
        out[f"mean_{q}"] = float(np.sum(x * w) / n) if n else float("nan")
    out["frac_le3"] = float(np.sum((d["n_constituents"] <= 3) * w) / n) if n else float("nan")
    m = d["matched"]
    r, wr = d["resp"][m], w[m]
    if wr.sum() >= 10:
        q16, q50, q84 = (wquantile(r, wr, q) for q in (0.16, 0.50, 0.84))
        out["iqnr"] = 0.5 * (q84 - q16) / q50
    else:
        out["iqnr"] = float("nan")
    return out


def load(folder: Path, process: str, mu: float, ctype: str, seeds: list[int], windows, pt: tuple[float, float],
         truth_pt: bool = False):
    parts = []
    for s in seeds:
        f = folder / f"{process}_mu{mu:g}_{ctype}_s{s}.npz"
        if not f.exists():
            print(f"error: {f} is missing (run benchmarks/sim_large_r.py --save-jets {folder} "
                  f"--seed {s} --mus ... --constituents ... first)", file=sys.stderr)
            sys.exit(2)
        z = np.load(f)
        if "eventNumber" not in z.files:
            print(f"error: {f} has no eventNumber: written by a sim_large_r.py older than 16e4b63", file=sys.stderr)
            sys.exit(2)
        lab, tm = z["R10TruthLabel"], z["truthJetMass"] / 1e3
        sel = np.zeros(len(lab), bool)
        for code, lo, hi in windows:
            sel |= (lab == code) & (tm > lo) & (tm < hi)
        ptc = (z["truthJetPt"] if truth_pt else z["pt"]) / 1e3
        sel &= (np.abs(z["eta"]) < 2) & (ptc > pt[0]) & (ptc < pt[1])
        ev = z["eventNumber"][sel] - np.int64(s) * STRIDE
        matched = z["truthJetMass"][sel] > 0
        parts.append({
            **{q: (z[q][sel] / 1e3 if q == "mass" else z[q][sel].astype(float)) for q in QUANTITIES},
            "event": ev, "seed": np.full(sel.sum(), s), "matched": matched,
            "resp": np.where(matched, z["mass"][sel] / np.where(matched, z["truthJetMass"][sel], 1.0), np.nan),
        })
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--types", default="pflow,clusters,tcc")
    ap.add_argument("--mus", default="0,60,140")
    ap.add_argument("--events", type=int, default=1500, help="hard events per seed (the bootstrap's range)")
    ap.add_argument("--pt", type=float, nargs=2, default=(550.0, 650.0), help="calibrated pT window, GeV")
    ap.add_argument("--particles", default="W,Z,WZ,top")
    ap.add_argument("--truth-pt", action="store_true",
                    help="select on the truth-jet pT instead of the calibrated pT (ATLAS's JMR binning)")
    ap.add_argument("--nboot", type=int, default=300)
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
    types = a.types.split(",")
    rng = np.random.default_rng(13)
    boots = {s: [np.bincount(rng.integers(0, a.events, a.events), minlength=a.events) for _ in range(a.nboot)]
             for s in seeds}
    mu_arr = np.asarray(mus)
    result = {}
    for part in a.particles.split(","):
        if part not in GROUPS:
            print(f"error: unknown particle group {part!r} (valid: {', '.join(GROUPS)})", file=sys.stderr)
            return 2
        process, windows = GROUPS[part]
        for ctype in types:
            nom, bs, njets = {}, {}, {}
            for mu in mus:
                d = load(a.folder, process, mu, ctype, seeds, windows, tuple(a.pt), a.truth_pt)
                njets[mu] = len(d["event"])
                nom[mu] = stats(d, np.ones(len(d["event"]), np.int64))
                rows = []
                for i in range(a.nboot):
                    w = np.zeros(len(d["event"]), np.int64)
                    for s in seeds:
                        m = d["seed"] == s
                        w[m] = boots[s][i][d["event"][m]]
                    rows.append(stats(d, w))
                bs[mu] = {k: np.array([r[k] for r in rows]) for k in rows[0]}
            res = {"jets": njets, "values": {}, "rise": {}, "slope_per_100mu": {}}
            for k in nom[mus[0]]:
                vals = np.array([nom[mu][k] for mu in mus])
                bvals = np.array([bs[mu][k] for mu in mus])  # (n_mu, nboot)
                res["values"][k] = {f"{mu:g}": [float(nom[mu][k]), float(np.nanstd(bs[mu][k]))] for mu in mus}
                res["rise"][k] = {f"{mu:g}": [float(vals[i] - vals[0]), float(np.nanstd(bvals[i] - bvals[0]))]
                                  for i, mu in enumerate(mus) if i}
                slope = np.polyfit(mu_arr, vals, 1)[0] * 100
                bslope = np.polyfit(mu_arr, bvals, 1)[0] * 100
                res["slope_per_100mu"][k] = [float(slope), float(np.nanstd(bslope))]
            result[f"{part}/{ctype}"] = res
        which = "truth-jet" if a.truth_pt else "calibrated"
        print(f"\n### {part} jets (|eta| < 2, {which} pT {a.pt[0]:g}-{a.pt[1]:g} GeV, seeds {a.seeds})")
        print("| type | jets μ " + "/".join(f"{m:g}" for m in mus) + " | quantity | "
              + " | ".join(f"μ = {m:g}" for m in mus) + " | rise " + f"{mus[0]:g}→{mus[-1]:g}"
              + " | slope per 100 μ |")
        print("|---" * (5 + len(mus)) + "|")
        for ctype in types:
            res = result[f"{part}/{ctype}"]
            nj = "/".join(str(res["jets"][m]) for m in mus)
            for k in ("median_tau32", "mean_tau32", "median_tau21", "median_D2", "mean_D2", "median_mass",
                      "mean_mass", "mean_n_constituents", "frac_le3", "iqnr"):
                v = res["values"][k]
                r = res["rise"][k][f"{mus[-1]:g}"]
                s = res["slope_per_100mu"][k]
                print(f"| {ctype} | {nj} | {k} | " + " | ".join(f"{v[f'{m:g}'][0]:.3f} ± {v[f'{m:g}'][1]:.3f}" for m in mus)
                      + f" | {r[0]:+.3f} ± {r[1]:.3f} | {s[0]:+.4f} ± {s[1]:.4f} |")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
