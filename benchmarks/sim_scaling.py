"""Simulation throughput with 1 vs K local worker processes (lhcml.sim.runner).

Runs the same ttbar sample (same seed, same shards) with ``workers=1`` and ``workers=K`` and
reports events/s, the speed-up, the CPU time (load-independent cost, including the
workers' start-up), and whether the files are bit-identical. Wall time includes
the workers' start-up (spawned processes import Pythia/fastjet), as a user would see it.

    python benchmarks/sim_scaling.py [--events 400] [--shards 8] [--workers 2] [--mu 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds used by this process and its finished children (worker processes)."""
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--process", default="ttbar")
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mu", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from lhcml.sim.pileup import build_pileup_library
    from lhcml.sim.runner import pileup_library_size, run_simulation

    tmp = Path(tempfile.mkdtemp(prefix="lhcml_simscale_"))
    lib = None
    if args.mu > 0:  # build once, outside the timing
        lib = tmp / "pileup_minbias.h5"
        build_pileup_library(pileup_library_size(args.mu, args.events), args.seed, lib)
    per_shard = -(-args.events // args.shards)
    load0 = f"{os.getloadavg()[0]:.1f}"
    results = {}
    for k in (1, args.workers):
        out = tmp / f"w{k}"
        r0 = _cpu()
        t0 = time.perf_counter()
        files = run_simulation(args.process, args.events, args.mu, args.seed, out,
                               events_per_shard=per_shard, workers=k, pileup_library=lib,
                               progress=False)  # fmt: skip
        results[k] = (time.perf_counter() - t0, _cpu() - r0, [f.read_bytes() for f in files])
    t1, c1, b1 = results[1]
    tk, ck, bk = results[args.workers]
    print(
        f"{args.process}: {args.events} events, mu={args.mu}, {args.shards} shards of {per_shard}"
    )
    print(
        f"{'workers':>8s} {'wall [s]':>10s} {'events/s':>10s} {'speed-up':>9s} {'CPU [s]':>8s} {'CPU ms/event':>13s}"
    )
    for k, (t, c) in ((1, (t1, c1)), (args.workers, (tk, ck))):
        print(
            f"{k:>8d} {t:10.1f} {args.events / t:10.2f} {t1 / t:9.2f} {c:8.1f} {1e3 * c / args.events:13.1f}"
        )
    print(f"identical files: {b1 == bk}")
    print(
        f"load average before/after: {load0} / {os.getloadavg()[0]:.1f} (os.cpu_count()={os.cpu_count()})"
    )


if __name__ == "__main__":
    main()
