"""Small-R jet response, resolution and cost of the jet calorimeter chain; prints tables.

Simulates QCD dijets + tt̄ (jets with pT > 8 GeV, |η| < 4.5, fully calibrated) at each μ,
matches anti-kt 0.4 truth jets, and reports in truth-pT bins (|η_truth| < 0.8) the median
response (± its bootstrap statistical error) and the relative resolution (IQR/1.349 over the median) next to ATLAS's JER curve
``N/pT ⊕ S/√pT ⊕ C`` through the published points (24 ± 1.5) % at 20 GeV and (6 ± 0.5) % at
300 GeV (docs/references.md §9: EPJC 81 (2021) 689, Run-2 data at ⟨μ⟩ ≈ 34): S = 0.7 √GeV
(unverified, fixed), then N = 3.5 GeV and C = 0.043 solve the two points. At the sample's μ the
pileup part of N is rescaled, ``N(μ)² = N₀² + (N² − N₀²) μ/⟨μ⟩_Run2`` with N₀ = 0.5 GeV (the
electronic-noise part of an R = 0.4 jet, our estimate) and ⟨μ⟩_Run2 = 33.7 (§8): the μ = 0
curve has no pileup noise. Both curves are printed; the ratio uses the μ-matched one.
Then the cost of the chain (calorimeter + topo-clusters + particle flow + small-R jets) next to
Pythia's on tt̄::

    python benchmarks/sim_jets.py --events 1000 --mus 0 60 --seed 202 [--cost-mus 0 50 60]
    python benchmarks/sim_jets.py --cost-only --cost-mus 0 0 0 0 50 --cost-events 200 --seed 404

The cost ratio is (calorimeter + topo-clusters + particle flow) / Pythia, in wall time and in
CPU time of this process; each μ of ``--cost-mus`` is one run (repeat a μ to repeat the run).
Before the first run with μ = 0 and the first with μ > 0 the process simulates 10 tt̄ events
outside the timed runs (loading the compiled kernels from the numba cache, one-time set-up); their
CPU time is printed in the last column, once, and is not part of any ratio.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

#: ATLAS JER curve through the published points (see the module doc; docs/references.md §9)
ATLAS_N, ATLAS_S, ATLAS_C = 3.5, 0.7, 0.043
#: electronic-noise part of N (GeV, our estimate) and the Run-2 ⟨μ⟩ of the published curve (§8)
ATLAS_N0, ATLAS_MU = 0.5, 33.7
#: truth-pT bins (GeV) of the JER points
POINTS = {20: (17.5, 22.5), 50: (45, 55), 100: (90, 110), 300: (270, 330)}
RESPONSE_BINS = ((20, 30), (30, 50), (50, 100), (100, 200), (200, 500), (500, 1500))


def atlas_jer(pt: float, mu: float | None = None) -> float:
    """The ATLAS curve at ``pt`` (GeV); ``mu``: with the pileup part of N rescaled to that μ."""
    n2 = ATLAS_N**2 if mu is None else ATLAS_N0**2 + (ATLAS_N**2 - ATLAS_N0**2) * mu / ATLAS_MU
    return float(np.sqrt(n2 / pt**2 + ATLAS_S**2 / pt + ATLAS_C**2))


def chain_cost(n_events: int, mu: float, seed: int, pileup) -> dict[str, float]:
    """Seconds spent in Pythia (+ pileup overlay) and in each stage of the jet chain: wall time,
    and CPU time of this process under ``"cpu " + stage`` (robust against other users' load)."""
    import lhcml.sim.events as ev
    import lhcml.sim.pflow as pf
    import lhcml.sim.topoclusters as tc

    times: dict[str, float] = {}
    originals = []

    def wrap(mod, name, key):
        f = getattr(mod, name)
        originals.append((mod, name, f))

        def timed(*a, **k):
            t, c = time.perf_counter(), time.process_time()
            r = f(*a, **k)
            times[key] = times.get(key, 0.0) + time.perf_counter() - t
            times["cpu " + key] = times.get("cpu " + key, 0.0) + time.process_time() - c
            return r

        setattr(mod, name, timed)

    from lhcml.sim import generator as gen_mod

    wrap(gen_mod.PythiaGenerator, "generate", "pythia")
    wrap(ev, "_simulate_particles_flat", "particles (pythia + pileup + V0)")
    wrap(tc, "simulate_topo_clusters", "calorimeter + topo-clusters")
    wrap(pf, "build_pflow_flat", "particle flow")
    wrap(ev, "_small_r", "small-R jets (+ tracks, labels)")
    try:
        t = time.perf_counter()
        ev.simulate_events("ttbar", n_events, mu=mu, seed=seed, pileup=pileup)
        times["total"] = time.perf_counter() - t
    finally:
        for mod, name, f in originals:
            setattr(mod, name, f)
    return times


def main() -> None:
    from lhcml.sim.jet_calibration import (
        jes_sample,
        pooled_pileup_samples,
        response_resolution,
        table_loaded,
    )
    from lhcml.sim.pileup import build_pileup_library

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000, help="hard events per process and mu")
    ap.add_argument("--mus", type=float, nargs="+", default=[0.0, 60.0])
    ap.add_argument("--library", type=int, default=2000,
                    help="minimum-bias events in the pileup library (300 moves the mu = 60 offset by ~0.5 GeV)")
    ap.add_argument("--libraries", type=int, default=1,
                    help="closure samples at mu > 0 pooled over this many independent libraries (events split "
                         "into chunks; chunk c: hard seeds + 1000 c, library seed + 3 + 1000 c; 1 = one library)")
    ap.add_argument("--cost-events", type=int, default=200)
    ap.add_argument("--cost-mus", type=float, nargs="+", default=None, help="mu of the cost table (default --mus)")
    ap.add_argument("--seed", type=int, default=202)
    ap.add_argument("--cost-only", action="store_true", help="only the cost table (no resolution samples)")
    args = ap.parse_args()
    if args.libraries < 1:
        print(f"sim_jets.py: --libraries {args.libraries} must be >= 1", file=sys.stderr)
        raise SystemExit(2)
    print(f"calibration table loaded: {table_loaded()}")
    libs = {}
    for mu in [] if args.cost_only else args.mus:
        if mu > 0 and args.libraries > 1:
            parts = pooled_pileup_samples(("qcd", "ttbar"), args.events, mu, [args.seed, args.seed + 10], args.seed + 3,
                                          args.libraries, args.library, calibrated=True)
        else:
            lib = libs.setdefault("lib", build_pileup_library(args.library, args.seed + 3)) if mu > 0 else None
            parts = [jes_sample(p, args.events, mu, args.seed + 10 * k, pileup=lib, calibrated=True)
                     for k, p in enumerate(("qcd", "ttbar"))]
        s = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        pooled = f", pileup from {args.libraries} libraries" if mu > 0 and args.libraries > 1 else ""
        print(f"\n### mu = {mu:g}: {len(s['pt'])} truth-matched jets ({args.events} qcd + {args.events} ttbar events"
              f"{pooled})\n")
        print("| truth pT (GeV) | jets | response ± stat | JER (ours) | ATLAS, published (Run-2 pileup) "
              f"| ATLAS at mu = {mu:g} | ours / ATLAS at mu |")
        print("|---|---|---|---|---|---|---|")
        for pt, (lo, hi) in POINTS.items():
            r, res, n, err = response_resolution(s, lo, hi)
            ref = atlas_jer(pt, mu)
            print(f"| {pt} ({lo}-{hi}) | {n} | {r:.3f} ± {err:.3f} | {res:.3f} | {atlas_jer(pt):.3f} | {ref:.3f} "
                  f"| {res / ref:.3f} |")
        print("\n| truth pT bin (GeV), abs(eta) < 2.5 | jets | median response ± stat |")
        print("|---|---|---|")
        for lo, hi in RESPONSE_BINS:
            r, _, n, err = response_resolution(s, lo, hi, eta_max=2.5)
            print(f"| {lo}-{hi} | {n} | {r:.3f} ± {err:.3f} |")
    print("\n### cost on ttbar (seconds)\n")
    print("| mu | events | " + " | ".join(["pythia", "particles (pythia + pileup + V0)", "calorimeter + topo-clusters",
                                         "particle flow", "small-R jets (+ tracks, labels)", "total"])
          + " | chain / pythia | chain / pythia (CPU) | warm-up: 10 events, once per process and μ kind (CPU, not in the ratio) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    from lhcml.sim.events import simulate_events

    warm: set[bool] = set()
    for run, mu in enumerate(args.cost_mus or args.mus):
        lib = (libs.get("lib") or libs.setdefault("lib", build_pileup_library(args.library, args.seed + 3))) \
            if mu > 0 else None
        warm_cpu = None
        if (mu > 0) not in warm:  # compiled kernels loaded before timing: not in the ratio, printed on its own
            c0 = time.process_time()
            simulate_events("ttbar", 10, mu=mu, seed=args.seed + 98, pileup=lib)
            warm_cpu = time.process_time() - c0
            warm.add(mu > 0)
        ev_n = args.cost_events if mu == 0 else max(args.cost_events // 4, 20)
        c = chain_cost(ev_n, mu, args.seed + 99 + run, lib)
        chain = c.get("calorimeter + topo-clusters", 0) + c.get("particle flow", 0)
        chain_cpu = c.get("cpu calorimeter + topo-clusters", 0) + c.get("cpu particle flow", 0)
        keys = ["pythia", "particles (pythia + pileup + V0)", "calorimeter + topo-clusters", "particle flow",
                "small-R jets (+ tracks, labels)", "total"]
        print(f"| {mu:g} | {ev_n} | " + " | ".join(f"{c.get(k, 0):.2f}" for k in keys)
              + f" | {chain / max(c.get('pythia', 1e-9), 1e-9):.2f} | {chain_cpu / max(c.get('cpu pythia', 1e-9), 1e-9):.2f} | "
              + ("–" if warm_cpu is None else f"{warm_cpu:.2f}") + " |", flush=True)


if __name__ == "__main__":
    main()
