"""Calorimeter benchmark: showers per second vs energy, and shower-shape means vs ATLAS values.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/calo_showers.py [--n 400]

Prints (1) the GFlash spot generation rate (``em_spots`` only) and the full single-photon chain
rate (showers + cells + noise + clustering + shapes + images) per energy, and (2) the mean
shower shapes of single photons and single pi0 (uniform 20-60 GeV, |eta| < 1.3, mu = 0) next to
the ATLAS tight cuts and typical prompt-photon values of docs/references.md §5.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.photons import simulate_single
    from lhcml.sim.showers import em_spots

    geo = load_geometry()
    simulate_single(22, 10.0, 10, 0)  # warm-up (imports, numba)
    nl = len(geo.layers)
    print(f"{'E [GeV]':>8s} {'spots/shower':>13s} {'GFlash showers/s':>17s} {'full chain photons/s':>21s}")
    for e in (5.0, 20.0, 50.0, 100.0, 200.0):
        n = args.n
        rng = np.random.default_rng(1)
        t = time.perf_counter()
        sp = em_spots(np.full(n, e), np.arange(n), np.zeros((n, nl)), np.zeros((n, nl)), np.ones(n), geo, rng)
        t_sp = time.perf_counter() - t
        t = time.perf_counter()
        simulate_single(22, e, n, 2, eta=(-1.2, 1.2))
        t_full = time.perf_counter() - t
        print(f"{e:8.0f} {len(sp) / n:13.0f} {n / t_sp:17.0f} {n / t_full:21.0f}")

    rng = np.random.default_rng(3)
    g = simulate_single(22, rng.uniform(20, 60, args.n), args.n, 4, eta=(-1.3, 1.3))["photons"]
    p = simulate_single(111, rng.uniform(20, 60, args.n), args.n, 5, eta=(-1.3, 1.3))["photons"]
    p = p[p["pt"] > 10_000]
    ref = {  # docs/references.md §5: tight cut (|eta|<0.6, unconverted) and typical prompt-photon values
        "Rhad": ("< 0.020", "-"), "Reta": ("> 0.92", "≈0.96"), "Rphi": ("> 0.93", "≈0.95"),
        "weta2": ("< 0.011", "≈0.010"), "DeltaE": ("< 180 MeV", "-"), "Eratio": ("> 0.80", "0.9+"),
        "wtots1": ("< 3.0", "-"), "fracs1": ("< 0.28", "0.1-0.2"), "weta1": ("< 0.67", "-"),
        "f1": ("> 0.005", "-"), "f3": ("-", "-"),
    }  # fmt: skip
    print(f"\nsingle photons (n={len(g)}) and pi0 (n={len(p)}), 20-60 GeV, |eta|<1.3, mu=0, "
          f"converted photons: {g['converted'].mean():.0%}")
    print(f"{'variable':8s} {'photon mean':>12s} {'photon median':>14s} {'pi0 mean':>10s} {'ATLAS tight cut':>16s} {'ATLAS typical':>14s}")
    for v, (cut, typ) in ref.items():
        print(f"{v:8s} {g[v].mean():12.4g} {np.median(g[v]):14.4g} {p[v].mean():10.4g} {cut:>16s} {typ:>14s}")


if __name__ == "__main__":
    main()
