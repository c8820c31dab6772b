"""Speed of the parametric tracker and the track-to-jet association on tt̄ events.

Generates tt̄ events with Pythia (lhcml.sim.generator), overlays minimum-bias pile-up from a small
library (lhcml.sim.pileup) at μ = 0 and μ = 50, decays V0s, and times ``simulate_tracks`` and
``associate_tracks``. Jet clustering is not part of this benchmark: the six leading tracks of
each event stand in as jet axes (pT × 5) for timing the association. Prints a table.

Usage::

    nice -n 10 .venv/bin/python benchmarks/sim_tracker_speed.py --events 200 --repeat 3
"""

from __future__ import annotations

import argparse
import time

import awkward as ak
import numpy as np


def _pseudo_jets(tracks: ak.Array, n: int = 6) -> ak.Array:
    order = ak.argsort(tracks.pt, axis=1, ascending=False)
    lead = tracks[order][:, :n]
    return ak.zip({"pt": lead.pt * 5.0, "eta": lead.eta, "phi": lead.phi})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--library", type=int, default=300, help="minimum-bias library size")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from lhcml.sim.association import associate_tracks
    from lhcml.sim.decays import decay_v0s
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.pileup import build_pileup_library
    from lhcml.sim.tracker import simulate_tracks

    rng = np.random.default_rng(args.seed)
    gen = PythiaGenerator("ttbar", seed=args.seed).init()
    hard = gen.generate(args.events).particles
    lib = build_pileup_library(args.library, seed=args.seed + 1)
    simulate_tracks(decay_v0s(hard[:2], rng), rng)  # numba compilation outside the timing

    rows = []
    for mu in (0.0, 50.0):
        parts = hard
        if mu > 0:
            parts, _ = lib.overlay(hard, mu, rng)
        parts = decay_v0s(parts, rng)
        n_final_charged = int(ak.sum(parts.final & (parts.charge != 0)))
        best_w, best_c, best_a = np.inf, np.inf, np.inf
        for r in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            tracks = simulate_tracks(parts, np.random.default_rng(r))
            w1, c1 = time.perf_counter(), time.process_time()
            jets = _pseudo_jets(tracks)
            pvz = np.zeros(len(tracks))
            c2 = time.process_time()
            associate_tracks(jets, tracks, pvz)
            c3 = time.process_time()
            best_w, best_c, best_a = min(best_w, w1 - w0), min(best_c, c1 - c0), min(best_a, c3 - c2)
        n_tracks = int(ak.sum(ak.num(tracks)))
        rows.append((mu, args.events, n_final_charged / args.events, n_tracks / args.events,
                     1e3 * best_c / args.events, 1e3 * best_w / args.events, n_tracks / best_c,
                     1e3 * best_a / args.events))

    # CPU time (process_time) is what the code costs; wall time depends on the machine's load
    print(f"{'mu':>5} {'events':>7} {'charged/evt':>12} {'tracks/evt':>11} {'cpu ms/evt':>11} "
          f"{'wall ms/evt':>12} {'tracks/cpu-s':>13} {'assoc cpu ms/evt':>17}")
    for mu, n, nc, nt, ms, wms, tps, ams in rows:
        print(f"{mu:5.0f} {n:7d} {nc:12.0f} {nt:11.1f} {ms:11.3f} {wms:12.3f} {tps:13.3g} {ams:17.3f}")


if __name__ == "__main__":
    main()
