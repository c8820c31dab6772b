"""Validation as code at full statistics: simulate the validation samples and run ``lhcml sim validate``.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/validate_sim.py [--events 2000] \
        [--mu 0 60 140] [--processes ttbar qcd top wz gamma_jet dijet_photon] [--work benchmarks/_work/validate_sim] [-j 2]

Simulates each process at each ⟨μ⟩ into ``WORK/<process>_mu<μ>/`` with ``lhcml simulate``'s
runner (resumable: rerunning skips finished shards; one minimum-bias library per run in
``WORK/pileup_minbias.h5``), then runs every check of the shipped reference table
(``src/lhcml/validation/reference.yaml``) on all sample directories in ``WORK`` together
(also those of earlier calls, e.g. with other ``--events`` per process) (τ32 stability compares
the top samples across ⟨μ⟩), prints the pass/fail table and writes ``WORK/report/index.html`` and
``WORK/report/validation.json``. The samples cover the checks: tt̄ (JES/JER 20-100 GeV, IP pulls,
hit patterns, PV, prompt leptons in light jets, b/c lifetimes, tracks per jet), ``qcd`` (jets of
250-1500 GeV: JES/JER at 300 GeV), ``top`` and ``wz`` (groomed large-R masses, τ32), ``gamma_jet``
(prompt-photon Tight efficiency, isolation vs μ), ``dijet_photon`` (EM-filtered fakes: their
Tight pass rate, reported only).

The issue asks for ≥ 2 000 events per point (the default); on a shared 2-core machine run a
smaller ``--events`` and say so next to the numbers (docs/benchmarks/validation.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_PROCESSES = ("ttbar", "qcd", "top", "wz", "gamma_jet", "dijet_photon")


def _n_events(sample_dir: Path) -> int:
    import yaml

    m = yaml.safe_load((sample_dir / "manifest.yaml").read_text()) or {}
    return int(m.get("n_events", m.get("events", 0)) or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000, help="hard-scatter events per (process, mu)")
    ap.add_argument("--mu", type=float, nargs="+", default=[0.0, 60.0, 140.0])
    ap.add_argument("--processes", nargs="+", default=list(DEFAULT_PROCESSES))
    ap.add_argument("--work", type=Path, default=Path("benchmarks/_work/validate_sim"))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--events-per-shard", type=int, default=500)
    ap.add_argument("--pileup-size", type=int, default=2000, help="minimum-bias library events")
    ap.add_argument("-j", "--workers", type=int, default=1)
    ap.add_argument("--no-plots", action="store_true", help="checks only (no validation plots)")
    args = ap.parse_args()

    from lhcml.sim.pileup import build_pileup_library
    from lhcml.sim.runner import run_simulation
    from lhcml.validation import format_table, run_validation

    args.work.mkdir(parents=True, exist_ok=True)
    library = args.work / "pileup_minbias.h5"
    timings: dict[str, float] = {}
    if any(m > 0 for m in args.mu) and not library.exists():
        t = time.perf_counter()
        build_pileup_library(args.pileup_size, args.seed + 1, library, progress=False)
        timings["pileup library"] = time.perf_counter() - t
    dirs = []
    for process in args.processes:
        for mu in args.mu:
            out = args.work / f"{process}_mu{mu:g}"
            t = time.perf_counter()
            run_simulation(process, args.events, mu, args.seed, out,
                           events_per_shard=args.events_per_shard, workers=args.workers,
                           pileup_library=library if mu > 0 else None, progress=False)  # fmt: skip
            timings[out.name] = time.perf_counter() - t
            dirs.append(out)
    # every sample simulated into WORK so far (earlier calls may have used other sizes/processes)
    for d in sorted(args.work.glob("*_mu*")):
        if (d / "manifest.yaml").is_file() and d not in dirs:
            dirs.append(d)
    t = time.perf_counter()
    results, page = run_validation(dirs, args.work / "report", plots=not args.no_plots)
    timings["validation"] = time.perf_counter() - t
    print("\nsamples: " + ", ".join(f"{d.name} ({_n_events(d)} events)" for d in dirs) + "\n")
    measured = [r for r in results if r.measurement is not None and r.measurement.n > 0]
    print(format_table(measured))
    missing = sorted({r.check.name for r in results} - {r.check.name for r in measured})
    if missing:
        print(f"\nnot measured in any sample (fields absent or no entries): {', '.join(missing)}")
    print("\nwall time [s]: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"report: {page}")


if __name__ == "__main__":
    main()
