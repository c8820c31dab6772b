"""Speed of the simulation chain: Pythia alone vs. the whole chain (mu = 0 and mu = 50).

Usage: ``python benchmarks/sim_speed.py [--events N] [--processes ttbar,top]``. Prints a table of
events per second; the chain includes pileup overlay, V0 decays, tracking, particle flow, jets,
labels and the schema arrays (the pileup library is built once beforehand and not timed).
"""

from __future__ import annotations

import argparse
import time

from lhcml.sim.events import simulate_events
from lhcml.sim.generator import PythiaGenerator
from lhcml.sim.pileup import build_pileup_library


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--processes", default="ttbar,top,qcd_boosted")
    ap.add_argument("--library", type=int, default=500, help="pileup library size")
    args = ap.parse_args()
    lib = build_pileup_library(args.library, seed=99)
    simulate_events("ttbar", 5, mu=1, seed=1, pileup=lib)  # numba compilation / caches
    rows = []
    for proc in args.processes.split(","):
        gen = PythiaGenerator(proc, 1).init()
        gen.generate_raw(5)
        t_py = _time(lambda g=gen: g.generate_raw(args.events))
        # the chain includes its own Pythia initialisation: time it separately and subtract it
        t_init = _time(lambda p=proc: PythiaGenerator(p, 2).init())
        t0 = _time(lambda p=proc: simulate_events(p, args.events, mu=0, seed=2)) - t_init
        t50 = _time(lambda p=proc: simulate_events(p, args.events, mu=50, seed=2, pileup=lib)) - t_init
        rows.append((proc, args.events / t_py, args.events / t0, args.events / t50, t0 / t_py - 1, t50 / t_py - 1))
    print(f"{'process':<12} {'pythia ev/s':>12} {'chain mu=0':>11} {'chain mu=50':>12} {'overhead mu=0':>14} {'overhead mu=50':>15}")
    for r in rows:
        print(f"{r[0]:<12} {r[1]:12.1f} {r[2]:11.1f} {r[3]:12.1f} {100 * r[4]:13.0f}% {100 * r[5]:14.0f}%")


if __name__ == "__main__":
    main()
