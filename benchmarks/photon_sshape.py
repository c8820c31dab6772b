"""Derive the S-shape correction of the middle-layer cluster eta used for the w_eta2 impact point.

The energy barycentre of the 3 x 7 middle cells is pulled towards the centre of the hottest cell
(the "S-shape"); ATLAS corrects it (``CaloSwEta2``) before the shower shapes, and the w_eta2
impact-point correction (``egammaqweta2c``) is a function of the corrected position. This script
shoots unconverted single photons from the origin (so the true impact eta at the middle layer is
the generated eta), computes the relative positions in the hottest cell, ``u_bary`` (barycentre)
and ``u_true``, and tabulates the median ``|u_true|`` in bins of ``|u_bary|`` (the S-shape is odd in u): the
knots that :data:`lhcml.sim.clusters.S_SHAPE_KNOTS` holds (linear interpolation between them).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/photon_sshape.py --n 3000
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.calorimeter import simulate_calorimeter
    from lhcml.sim.clusters import S_SHAPE_KNOTS, build_clusters, find_clusters, s_shape_correction
    from lhcml.sim.photons import single_particles

    geo = load_geometry()
    geo = geo.with_changes(conversions=dataclasses.replace(geo.conversions, enabled=False))
    mid = geo.layer("middle")
    rng = np.random.default_rng(args.seed)
    ub, ut, ua = [], [], []
    for start in range(0, args.n, 200):
        m = min(200, args.n - start)
        eta = rng.uniform(-1.3, 1.3, m)
        cols, ev = single_particles(22, rng.uniform(25, 60, m), eta, rng.uniform(-np.pi, np.pi, m), rng)
        calo, _ = simulate_calorimeter(cols, ev, m, rng, geo=geo)
        e, ic, jc = find_clusters(calo)
        cl = build_clusters(calo, seeds=(e, ic, jc))
        lead = np.zeros(m, int) - 1
        order = np.argsort(-cl["energy"])
        for k in order[::-1]:
            lead[e[k]] = k
        k = lead[lead >= 0]
        centre = mid.eta_centre(ic[k])
        ub.append((cl["eta"][k] - centre) / mid.deta)
        ut.append((eta[e[k]] - centre) / mid.deta)
        ua.append(np.abs(eta[e[k]]))
    ub, ut = np.concatenate(ub), np.concatenate(ut)
    ok = (np.abs(ub) <= 0.5) & (np.abs(ut) <= 0.6)
    x, y = np.abs(ub[ok]), np.sign(ub[ok]) * ut[ok]  # odd symmetry: fold onto u >= 0
    edges = np.array([0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5])
    knots_b, knots_t = [0.0], [0.0]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        b = (x >= lo) & (x < hi)
        if b.sum() >= 10:
            knots_b.append(round(float(np.median(x[b])), 4))
            knots_t.append(round(float(np.median(y[b])), 4))
    knots_b.append(0.5)
    knots_t.append(0.5)
    print(f"n = {ok.sum()} photons")
    print(f"fitted knots: S_SHAPE_KNOTS = ({tuple(knots_b)}, {tuple(knots_t)})")
    print(f"shipped:      S_SHAPE_KNOTS = {S_SHAPE_KNOTS}")
    u = ub[ok]
    fit = np.sign(u) * np.interp(np.abs(u), knots_b, knots_t)
    for name, pred in (("barycentre", u), ("corrected (shipped)", s_shape_correction(u)), ("corrected (this fit)", fit)):
        print(f"  {name:22s} RMS(u - u_true) = {np.sqrt(np.mean((pred - ut[ok]) ** 2)):.4f} cells")


if __name__ == "__main__":
    main()
