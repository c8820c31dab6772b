"""Speed of the simulation chain: Pythia alone vs. the whole chain (mu = 0 and mu = 50).

Usage::

    python benchmarks/sim_speed.py [--events 100] [--reps 5] [--processes ttbar,top,qcd_boosted]

Method (robust on a shared, noisy machine):

- CPU time of this process (``time.process_time``), not wall time, so that other users' load
  does not bias the ratios;
- Pythia alone and the whole chain are measured in the same process, interleaved batch by
  batch (Pythia-only batch, chain batch at mu = 0, chain batch at mu = 50, repeat), and the
  medians over ``--reps`` repetitions are reported;
- every generator has the same seed, so the Pythia-only batch and the chain batches of a
  repetition contain the same events;
- Pythia initialisation and the pileup library (built once, not timed) are excluded; numba
  kernels are compiled before timing;
- inside every chain batch the time spent in ``Pythia.nextBatch`` is also recorded, so the
  overhead of the detector + jet code is also given on the very same events
  (``own`` columns: chain time minus its own Pythia time, over its own Pythia time).

The chain = generator truth record and ancestry, pileup overlay, V0 decays, tracking, particle
flow, jet clustering, labels, track association and the schema arrays
(:func:`lhcml.sim.events.simulate_events` batch by batch).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lhcml.sim.events import simulate_batch, simulate_events
from lhcml.sim.generator import PythiaGenerator
from lhcml.sim.pileup import build_pileup_library
from lhcml.sim.processes import get_process


class _TimedGenerator(PythiaGenerator):
    """A generator that accumulates the CPU time spent in ``generate_raw`` (Pythia itself)."""

    pythia_cpu = 0.0

    def generate_raw(self, n_events: int):  # noqa: D102
        t0 = time.process_time()
        out = super().generate_raw(n_events)
        self.pythia_cpu += time.process_time() - t0
        return out


def _chain_batch(proc, gen: _TimedGenerator, n: int, mu: float, lib, rep: int) -> tuple[float, float]:
    """CPU seconds of one chain batch and of the Pythia part inside it."""
    rng = np.random.default_rng([rep, int(mu), 7])
    gen.pythia_cpu = 0.0
    t0 = time.process_time()
    simulate_batch(proc.name, gen, n, mu, rng, lib if mu > 0 else None, first_event=rep * n, seed=gen.seed)
    return time.process_time() - t0, gen.pythia_cpu


def measure(process: str, n: int, reps: int, lib, mu_values=(0.0, 50.0)) -> dict[str, float]:
    """Median CPU times (s per batch of ``n`` events) of Pythia alone and of the chain."""
    proc = get_process(process)
    # the same seed everywhere: the Pythia-only batches and the chain batches hold the same events
    py_gen = PythiaGenerator(proc, 101).init()
    chain_gens = {mu: _TimedGenerator(proc, 101).init() for mu in mu_values}
    py_gen.generate_raw(5)
    for mu, g in chain_gens.items():  # warm-up (caches, first-call costs)
        _chain_batch(proc, g, 5, mu, lib, 999)
    t_py: list[float] = []
    t_chain: dict[float, list[float]] = {mu: [] for mu in mu_values}
    t_own: dict[float, list[float]] = {mu: [] for mu in mu_values}
    for rep in range(reps):
        t0 = time.process_time()
        py_gen.generate_raw(n)
        t_py.append(time.process_time() - t0)
        for mu, g in chain_gens.items():
            total, pythia = _chain_batch(proc, g, n, mu, lib, rep)
            t_chain[mu].append(total)
            t_own[mu].append((total - pythia) / pythia)
    out = {"pythia": float(np.median(t_py))}
    for mu in mu_values:
        out[f"chain{int(mu)}"] = float(np.median(t_chain[mu]))
        out[f"own{int(mu)}"] = float(np.median(t_own[mu]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100, help="events per timed batch")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (medians reported)")
    ap.add_argument("--processes", default="ttbar,top,qcd_boosted")
    ap.add_argument("--library", type=int, default=500, help="pileup library size")
    args = ap.parse_args()
    lib = build_pileup_library(args.library, seed=99)
    simulate_events("ttbar", 5, mu=1, seed=1, pileup=lib)  # numba compilation / caches
    simulate_events("top", 5, mu=1, seed=1, pileup=lib)
    n = args.events
    print(f"CPU time (process_time), medians of {args.reps} interleaved batches of {n} events")
    head = (f"{'process':<12} {'pythia ev/s':>11} {'chain mu=0':>10} {'chain mu=50':>11} "
            f"{'overhead mu=0':>13} {'overhead mu=50':>14} {'own mu=0':>9} {'own mu=50':>9}")
    print(head)
    for proc in args.processes.split(","):
        r = measure(proc, n, args.reps, lib)
        print(f"{proc:<12} {n / r['pythia']:11.1f} {n / r['chain0']:10.1f} {n / r['chain50']:11.1f} "
              f"{100 * (r['chain0'] / r['pythia'] - 1):12.0f}% {100 * (r['chain50'] / r['pythia'] - 1):13.0f}% "
              f"{100 * r['own0']:8.0f}% {100 * r['own50']:8.0f}%", flush=True)


if __name__ == "__main__":
    main()
