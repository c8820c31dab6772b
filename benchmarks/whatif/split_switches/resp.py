"""Cluster pT response (calibrated pT / truth-jet pT) of ATLAS-labelled W + Z jets, truth pT 550-650 GeV, |eta| < 2,
per variant and mu (pooled seeds), and the share of jets with <= 3 constituents (tau32 = 0 by construction).
usage: resp.py VARIANTS POOL"""
import sys
from pathlib import Path

import numpy as np

#: per-jet arrays (git-ignored scratch; the measurement used benchmarks/_work/h12j/out)
OUT = Path(__file__).resolve().parents[2] / "_work" / "split_switches" / "out"
variants = sys.argv[1].split(",")
pool = [(p.split(":")[0], int(p.split(":")[1])) for p in sys.argv[2].split(",")]
for v in variants:
    for mu in (0, 140):
        r, nc, t0 = [], [], []
        for proc, s in pool:
            d = np.load(OUT / f"{proc}_s{s}_mu{mu}_{v}.npz")
            tm, tp = d["truthJetMass"] / 1e3, d["truthJetPt"] / 1e3
            lab = d["R10TruthLabel"]
            sel = (((lab == 2) & (tm > 50) & (tm < 100)) | ((lab == 3) & (tm > 60) & (tm < 110))) & (np.abs(d["eta"]) < 2)
            w = sel & (tp > 550) & (tp < 650)
            r.append(d["pt"][w] / d["truthJetPt"][w])
            c = sel & (d["pt"] / 1e3 > 550) & (d["pt"] / 1e3 < 650)
            nc.append(d["n_constituents"][c])
            t0.append(d["tau32"][c])
        r, nc, t0 = np.concatenate(r), np.concatenate(nc), np.concatenate(t0)
        print(f"{v:22s} mu {mu:3d}: response median {np.median(r):.4f} mean {r.mean():.4f} rms {r.std():.4f} (n {len(r)}); "
              f"W+Z jets {len(nc)}, <= 3 constituents {100 * np.mean(nc <= 3):.1f} %, tau32 == 0 {100 * np.mean(t0 == 0):.1f} %")
