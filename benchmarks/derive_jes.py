"""Derive the small-R jet calibration table (residual pileup + numerical inversion); prints it.

Simulates truth-matched anti-kt 0.4 particle-flow jets (ρ·A subtraction only) on QCD dijets and
tt̄ at μ = 0 and at a pileup μ, fits the residual pileup slopes and one response table vs (pT, |η|)
per μ (:func:`lhcml.sim.jet_calibration.derive_table`) and writes the JSON table the simulation
loads::

    python benchmarks/derive_jes.py --events 1500 --events-pileup 5000 --mu 60 --library 2000 --libraries 5 --seed 141

The pileup-μ part can be pooled over several independent minimum-bias libraries
(``--libraries N``: the pileup events of each process are split into N chunks, each overlaid with
its own library, seeds fixed per chunk), so that one library's offset does not become the
calibration's. The response nodes of each (μ, |η|) bin are fitted with a polynomial in ln pT
(:func:`lhcml.sim.jet_calibration.fit_response_curve`); the printed table gives the fit order,
its χ² and each node's pull. ``--save-jets`` keeps the derivation jets, ``--from-jets`` refits them
without simulating again.

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
import sys
import time
from pathlib import Path

import numpy as np

#: reco threshold (GeV, after rho*A) of the derivation samples: below the closure's calibrated 8 GeV
RECO_PT_MIN = 2.0


def simulate(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The derivation jets (rho*A only): every process at mu = 0, and at the pileup mu pooled over
    ``--libraries`` libraries (chunk c of process k: hard-event seed ``seed + 10 k + 1 + 1000 c``,
    library seed ``seed + 7 + 1000 c``; chunk 0 has the one-library seeds)."""
    from lhcml.sim.jet_calibration import jes_sample, pooled_pileup_samples

    parts = []
    for k, proc in enumerate(args.processes):
        parts.append(jes_sample(proc, args.events, 0.0, args.seed + 10 * k, pt_min=args.reco_pt_min))
        print(f"{proc} mu = 0: {len(parts[-1]['pt'])} jets", flush=True)
    if args.mu > 0 and args.events_pileup > 0:
        pooled = pooled_pileup_samples(args.processes, args.events_pileup, args.mu,
                                       [args.seed + 10 * k + 1 for k in range(len(args.processes))], args.seed + 7,
                                       args.libraries, args.library, pt_min=args.reco_pt_min)
        print(f"mu = {args.mu:g}: " + ", ".join(str(len(p["pt"])) for p in pooled) + " jets (library-major)", flush=True)
        parts.extend(pooled)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def main() -> None:
    from lhcml.atomic import atomic_path, atomic_write_text
    from lhcml.errors import ConfigError
    from lhcml.sim.jet_calibration import TABLE_FILE, derive_table, load_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000, help="hard events per process at mu = 0")
    ap.add_argument("--events-pileup", type=int, default=400, help="hard events per process at the pileup mu")
    ap.add_argument("--mu", type=float, default=60.0)
    ap.add_argument("--library", type=int, default=2000, help="minimum-bias events in each pileup library")
    ap.add_argument("--libraries", type=int, default=1,
                    help="independent pileup libraries at the pileup mu: the pileup events of each process are "
                         "split into this many chunks, each overlaid with its own library (pooled derivation)")
    ap.add_argument("--processes", nargs="+", default=["qcd", "ttbar"])
    ap.add_argument("--reco-pt-min", type=float, default=RECO_PT_MIN,
                    help="rho*A-corrected jet pT threshold (GeV) of the derivation samples")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--out", type=Path, default=TABLE_FILE)
    ap.add_argument("--save-jets", type=Path, default=None, help="also write the derivation jets (npz)")
    ap.add_argument("--from-jets", type=Path, default=None,
                    help="derive from jets written by --save-jets instead of simulating (the provenance is kept)")
    args = ap.parse_args()
    if args.libraries < 1 or args.library < 1:
        print(f"derive_jes.py: --libraries {args.libraries} / --library {args.library}: both must be >= 1",
              file=sys.stderr)
        raise SystemExit(2)
    t0 = time.time()
    if args.from_jets is not None:
        if not args.from_jets.exists():
            print(f"derive_jes.py: {args.from_jets} does not exist; write it with --save-jets", file=sys.stderr)
            raise SystemExit(2)
        with np.load(args.from_jets) as z:
            sample = {k: z[k] for k in z.files if k != "provenance"}
            command = str(z["provenance"]) if "provenance" in z.files else f"jets from {args.from_jets}"
    else:
        sample, command = simulate(args), "python benchmarks/derive_jes.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("out", "save_jets", "from_jets") and v is not None)
        if args.save_jets is not None:
            with atomic_path(args.save_jets, suffix=".npz") as tmp:
                np.savez(tmp, provenance=np.asarray(command), **sample)
    try:
        table = derive_table(sample)
    except ConfigError as exc:
        print(f"derive_jes.py: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    table["provenance"] = {
        "command": command,
        "matched_jets": int(len(sample["pt"])),
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(args.out, json.dumps(table, indent=1) + "\n")
    load_table.cache_clear()
    print(f"{len(sample['pt'])} truth-matched jets, {time.time() - t0:.0f} s -> {args.out}")
    print("| mu | |eta| bin | alpha (GeV/N_PV) | beta (GeV/mu) | fit order | chi2 / ndf "
          "| response at nodes (pT GeV: R, (R - fit)/err) |")
    print("|---|---|---|---|---|---|---|")
    e = table["eta_edges"]
    n_eta = len(e) - 1
    for k, mu in enumerate(table["mu_points"]):
        for i in range(n_eta):
            j = k * n_eta + i
            x, r, err = (np.asarray(table[key][j]) for key in ("pt_nodes", "response", "response_err"))
            coef = np.asarray(table["fit_coef"][j])
            pull = (r - np.polynomial.polynomial.polyval(np.log(x), coef)) / err
            nodes = ", ".join(f"{a:.0f}: {b:.3f} ({p:+.1f})" for a, b, p in zip(x, r, pull, strict=True))
            print(f"| {mu:g} | {e[i]:.1f}-{e[i + 1]:.1f} | {table['alpha_npv'][i]:.3f} | {table['beta_mu'][i]:.3f} "
                  f"| {len(coef) - 1} | {np.sum(pull**2):.1f} / {max(len(x) - len(coef), 0)} | {nodes} |")

if __name__ == "__main__":
    main()
