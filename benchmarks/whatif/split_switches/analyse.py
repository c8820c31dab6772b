"""Paired analysis: median cluster tau32 of ATLAS-labelled W / Z jets (|eta| < 2, calibrated pT 550-650 GeV),
rise mu 0 -> 140 per variant, and variant differences, errors from 400 bootstrap resamplings of the hard events
(the same resampling for every mu and variant; each seed resampled on its own).

usage: analyse.py VARIANTS(comma) POOL(comma of process:seed) [--events N] [--particles W,Z,WZ,top] [--mus 0,140]
"""
import argparse
from pathlib import Path

import numpy as np

#: per-jet arrays (git-ignored scratch; the measurement used benchmarks/_work/h12j/out)
OUT = Path(__file__).resolve().parents[2] / "_work" / "split_switches" / "out"
LAB = {"W": (2, 50.0, 100.0), "Z": (3, 60.0, 110.0), "top": (1, 140.0, np.inf)}
#: W and Z jets together (each with its own truth-mass window)
LAB["WZ"] = None

ap = argparse.ArgumentParser()
ap.add_argument("variants")
ap.add_argument("pool")
ap.add_argument("--events", type=int, default=1500)
ap.add_argument("--particles", default="W,Z")
ap.add_argument("--mus", default="0,140")
ap.add_argument("--nboot", type=int, default=400)
ap.add_argument("--out", default=str(OUT))
a = ap.parse_args()
variants = a.variants.split(",")
pool = [(p.split(":")[0], int(p.split(":")[1])) for p in a.pool.split(",")]
mus = [float(m) for m in a.mus.split(",")]
out = Path(a.out)
rng = np.random.default_rng(12)
boots = {s: [np.bincount(rng.integers(0, a.events, a.events), minlength=a.events) for _ in range(a.nboot)]
         for _, s in pool}


def wmedian(x, w):
    o = np.argsort(x)
    x, w = x[o], w[o]
    c = np.cumsum(w)
    tot = c[-1]
    if tot == 0:
        return np.nan
    # the median of np.repeat(x, w) (mean of the two middle values for an even count)
    lo = np.searchsorted(c, (tot - 1) // 2 + 1)
    hi = np.searchsorted(c, tot // 2 + 1)
    return 0.5 * (x[lo] + x[hi])


for part in a.particles.split(","):
    code, lo, hi = LAB[part] or (0, 0.0, 0.0)
    med, bmed, njet, ncons = {}, {}, {}, {}
    for v in variants:
        for mu in mus:
            taus, evs, seeds, ncs = [], [], [], []
            for proc, s in pool:
                f = out / f"{proc}_s{s}_mu{mu:g}_{v}.npz"
                d = np.load(f)
                pt = d["pt"] / 1e3
                lab, tm = d["R10TruthLabel"], d["truthJetMass"] / 1e3
                if part == "WZ":
                    sel = ((lab == 2) & (tm > 50) & (tm < 100)) | ((lab == 3) & (tm > 60) & (tm < 110))
                else:
                    sel = (lab == code) & (tm > lo) & (tm < hi)
                sel &= (np.abs(d["eta"]) < 2) & (pt > 550) & (pt < 650)
                taus.append(d["tau32"][sel])
                evs.append(d["eventNumber"][sel] - s * 10_000_000)
                seeds.append(np.full(sel.sum(), s))
                ncs.append(d["n_constituents"][sel])
            tau, ev, sd = np.concatenate(taus), np.concatenate(evs), np.concatenate(seeds)
            med[v, mu] = float(np.median(tau))
            njet[v, mu] = len(tau)
            ncons[v, mu] = float(np.mean(np.concatenate(ncs)))
            b = np.empty(a.nboot)
            for i in range(a.nboot):
                w = np.zeros(len(tau), np.int64)
                for _, s in pool:
                    m = sd == s
                    w[m] = boots[s][i][ev[m]]
                b[i] = wmedian(tau, w)
            bmed[v, mu] = b
    m0, m1 = mus[0], mus[-1]
    print(f"\n{part} pool {a.pool}")
    print("| variant | jets mu0/mu1 | <n_constituents> mu0/mu1 | tau32 mu0 / mu1 | rise | rise - " + variants[0] + " |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        r = med[v, m1] - med[v, m0]
        rb = bmed[v, m1] - bmed[v, m0]
        r0b = bmed[variants[0], m1] - bmed[variants[0], m0]
        r0 = med[variants[0], m1] - med[variants[0], m0]
        print(f"| {v} | {njet[v, m0]} / {njet[v, m1]} | {ncons[v, m0]:.2f} / {ncons[v, m1]:.2f} | "
              f"{med[v, m0]:.3f} / {med[v, m1]:.3f} | {r:+.3f} ± {np.std(rb):.3f} | "
              f"{r - r0:+.3f} ± {np.std(rb - r0b):.3f} |")
    for mu in mus[1:-1]:
        for v in variants:
            r = med[v, mu] - med[v, m0]
            print(f"  {v} rise to mu {mu:g}: {r:+.3f} ± {np.std(bmed[v, mu] - bmed[v, m0]):.3f}")
