"""Jet by jet: how the τ32 of the same groomed W/Z (or top) jet moves from μ = 0 to a higher μ, split by its
trimmed constituent count at μ = 0 (issue 12, thirteenth version; README.md).

The hard events are the same at every μ (``benchmarks/sim_large_r.py --save-jets``), so each selected jet at
μ = 0 (ATLAS label window, |η| < 2, calibrated pT in ``--pt``) is followed to the jet of the same event and
label nearest in η at the higher μ (|Δη| < 0.05; no pT cut there). The mean rise of the followed jets is
split into the part of the jets with <= 3 constituents at μ = 0 (τ32 = 0 by construction) and of the rest:
rise = f3 · Δ3 + (1 − f3) · Δ4. Errors from bootstrap resamplings of the hard events.

usage: paired_jets.py DIR --seeds 5151,5252 [--types pflow,clusters,tcc] [--mu 140] [--particles WZ,top]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

STRIDE = 10_000_000
WINDOWS = {"W": ("wz", [(2, 50.0, 100.0)]), "Z": ("wz", [(3, 60.0, 110.0)]),
           "WZ": ("wz", [(2, 50.0, 100.0), (3, 60.0, 110.0)]), "top": ("top", [(1, 140.0, np.inf)])}


def _load(f: Path) -> dict:
    if not f.exists():
        print(f"error: {f} is missing (benchmarks/sim_large_r.py --save-jets writes it)", file=sys.stderr)
        sys.exit(2)
    z = np.load(f)
    return {k: z[k] for k in ("eventNumber", "eta", "pt", "R10TruthLabel", "truthJetMass", "tau32", "n_constituents")}


def follow(d0: dict, d1: dict, windows, pt) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(event, n_constituents at μ0, τ32 at μ0, τ32 at μ1) of the selected μ0 jets found again at μ1."""
    lab, tm = d0["R10TruthLabel"], d0["truthJetMass"] / 1e3
    sel = np.zeros(len(lab), bool)
    for code, lo, hi in windows:
        sel |= (lab == code) & (tm > lo) & (tm < hi)
    sel &= (np.abs(d0["eta"]) < 2) & (d0["pt"] / 1e3 > pt[0]) & (d0["pt"] / 1e3 < pt[1])
    by_event: dict[int, list[int]] = {}
    for j, ev in enumerate(d1["eventNumber"]):
        by_event.setdefault(int(ev), []).append(j)
    out = []
    for i in np.flatnonzero(sel):
        cand = [j for j in by_event.get(int(d0["eventNumber"][i]), []) if d1["R10TruthLabel"][j] == lab[i]]
        if not cand:
            continue
        j = min(cand, key=lambda j: abs(d1["eta"][j] - d0["eta"][i]))
        if abs(d1["eta"][j] - d0["eta"][i]) < 0.05:
            out.append((d0["eventNumber"][i], d0["n_constituents"][i], d0["tau32"][i], d1["tau32"][j]))
    a = np.array(out, dtype=float).reshape(-1, 4)
    return a[:, 0].astype(np.int64), a[:, 1], a[:, 2], a[:, 3]


def figures(w: np.ndarray, few: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(share of ≤ 3-constituent jets, mean rise, their mean rise, the others', their part of the mean rise)
    with event weights ``w``; ``d`` = τ32 at the higher μ − τ32 at μ = 0 per followed jet."""
    tot = w.sum()
    f3 = np.sum(w * few) / tot
    d3 = np.sum(w * few * d) / max(np.sum(w * few), 1)
    d4 = np.sum(w * ~few * d) / max(np.sum(w * ~few), 1)
    return np.array([f3, np.sum(w * d) / tot, d3, d4, f3 * d3])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--types", default="pflow,clusters,tcc")
    ap.add_argument("--mu", type=float, default=140.0)
    ap.add_argument("--particles", default="WZ,top")
    ap.add_argument("--pt", type=float, nargs=2, default=(550.0, 650.0))
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--nboot", type=int, default=300)
    a = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError as e:
        print(f"error: --seeds must be comma-separated integers ({e})", file=sys.stderr)
        return 2
    rng = np.random.default_rng(14)
    boots = {s: [np.bincount(rng.integers(0, a.events, a.events), minlength=a.events) for _ in range(a.nboot)]
             for s in seeds}
    print("| jets | type | followed jets | share ≤ 3 at μ 0 | mean τ32 rise (all) | rise of the ≤ 3 jets | "
          "rise of the others | ≤ 3 jets' part of the rise | median rise, others |")
    print("|---" * 9 + "|")
    for part in a.particles.split(","):
        if part not in WINDOWS:
            print(f"error: unknown particle group {part!r} (valid: {', '.join(WINDOWS)})", file=sys.stderr)
            return 2
        process, windows = WINDOWS[part]
        for ctype in a.types.split(","):
            evs, ns, t0s, t1s, sds = [], [], [], [], []
            for s in seeds:
                d0 = _load(a.folder / f"{process}_mu0_{ctype}_s{s}.npz")
                d1 = _load(a.folder / f"{process}_mu{a.mu:g}_{ctype}_s{s}.npz")
                ev, n, t0, t1 = follow(d0, d1, windows, a.pt)
                evs.append(ev - np.int64(s) * STRIDE)
                ns.append(n)
                t0s.append(t0)
                t1s.append(t1)
                sds.append(np.full(len(ev), s))
            ev, n, t0, t1, sd = (np.concatenate(x) for x in (evs, ns, t0s, t1s, sds))
            few = n <= 3
            nom = figures(np.ones(len(ev)), few, t1 - t0)
            bs = []
            for i in range(a.nboot):
                w = np.zeros(len(ev))
                for s in seeds:
                    m = sd == s
                    w[m] = boots[s][i][ev[m]]
                bs.append(figures(w, few, t1 - t0))
            err = np.std(np.array(bs), axis=0)
            med4 = float(np.median((t1 - t0)[~few])) if (~few).any() else float("nan")
            print(f"| {part} | {ctype} | {len(ev)} | {nom[0]:.3f} ± {err[0]:.3f} | {nom[1]:+.3f} ± {err[1]:.3f} | "
                  f"{nom[2]:+.3f} ± {err[2]:.3f} | {nom[3]:+.3f} ± {err[3]:.3f} | {nom[4]:+.3f} ± {err[4]:.3f} | "
                  f"{med4:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
