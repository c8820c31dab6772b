"""Derive the small-R jet calibration table (residual pileup + numerical inversion); prints it.

Simulates truth-matched anti-kt 0.4 particle-flow jets (ρ·A subtraction only) on QCD dijets and
tt̄ at μ = 0 and at a pileup μ, fits the residual pileup slopes and one response table vs (pT, |η|)
per μ (:func:`lhcml.sim.jet_calibration.derive_table`) and writes the JSON table the simulation
loads::

    python benchmarks/derive_jes.py --events 1500 --events-pileup 2500 --mu 60 --library 2000 --seed 131

The jets enter from ``--reco-pt-min`` (ρ·A-corrected pT, GeV), well below the 15–25 GeV truth bins
whose nodes calibrate 20 GeV jets: a threshold near them keeps only the jets that fluctuated up
(at μ = 60 an 8 GeV cut raised the 15–20 GeV node by 5 %, ``docs/benchmarks/sim_jets.md``).
The pileup library is large (2000 minimum-bias events): with 300, two libraries moved the μ = 60
offset of the same jets by 0.4–0.6 GeV (2–3 % at 20 GeV), which the μ = 60 inversion would inherit.

(writes ``src/lhcml/sim/jet_calibration_table.json`` unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

#: reco threshold (GeV, after rho*A) of the derivation samples: below the closure's calibrated 8 GeV
RECO_PT_MIN = 2.0


def main() -> None:
    from lhcml.atomic import atomic_write_text
    from lhcml.sim.jet_calibration import TABLE_FILE, derive_table, jes_sample, load_table
    from lhcml.sim.pileup import build_pileup_library

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000, help="hard events per process at mu = 0")
    ap.add_argument("--events-pileup", type=int, default=400, help="hard events per process at the pileup mu")
    ap.add_argument("--mu", type=float, default=60.0)
    ap.add_argument("--library", type=int, default=2000, help="minimum-bias events in the pileup library")
    ap.add_argument("--processes", nargs="+", default=["qcd", "ttbar"])
    ap.add_argument("--reco-pt-min", type=float, default=RECO_PT_MIN,
                    help="rho*A-corrected jet pT threshold (GeV) of the derivation samples")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--out", type=Path, default=TABLE_FILE)
    args = ap.parse_args()
    t0 = time.time()
    parts = []
    lib = build_pileup_library(args.library, args.seed + 7) if args.mu > 0 and args.events_pileup > 0 else None
    for k, proc in enumerate(args.processes):
        parts.append(jes_sample(proc, args.events, 0.0, args.seed + 10 * k, pt_min=args.reco_pt_min))
        if lib is not None:
            parts.append(jes_sample(proc, args.events_pileup, args.mu, args.seed + 10 * k + 1, pileup=lib,
                                    pt_min=args.reco_pt_min))
    sample = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    table = derive_table(sample)
    table["provenance"] = {
        "command": "python benchmarks/derive_jes.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "out"),
        "matched_jets": int(len(sample["pt"])),
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(args.out, json.dumps(table, indent=1) + "\n")
    load_table.cache_clear()
    print(f"{len(sample['pt'])} truth-matched jets, {time.time() - t0:.0f} s -> {args.out}")
    print("| mu | |eta| bin | alpha (GeV/N_PV) | beta (GeV/mu) | response at nodes (pT GeV: R) |")
    print("|---|---|---|---|---|")
    e = table["eta_edges"]
    n_eta = len(e) - 1
    for k, mu in enumerate(table["mu_points"]):
        for i in range(n_eta):
            j = k * n_eta + i
            nodes = ", ".join(f"{x:.0f}: {r:.3f}" for x, r in zip(table["pt_nodes"][j], table["response"][j], strict=True))
            print(f"| {mu:g} | {e[i]:.1f}-{e[i + 1]:.1f} | {table['alpha_npv'][i]:.3f} | {table['beta_mu'][i]:.3f} "
                  f"| {nodes} |")


if __name__ == "__main__":
    main()
