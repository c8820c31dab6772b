"""Light jets that are prompt leptons in tt̄, before and after the lepton overlap removal.

Runs the full simulation chain (:func:`lhcml.sim.events.simulate_events`, ``keep_lepton_overlaps=True``
so that the jets the overlap removal takes out stay in the output, flagged) and prints, per ⟨μ⟩,
the fraction of light jets (``HadronConeExclTruthLabelID == 0``) carrying ``truthPromptLepton``
(a prompt e/μ with pT > 0.5 pT(jet) within ΔR < 0.4) before the overlap removal (all jets) and
after it (jets not flagged ``overlapsElectron``/``overlapsMuon``), with 68 % Clopper–Pearson
intervals, for inclusive tt̄ (the sample the issue measured) and for its non-all-hadronic part
(events with ≥ 1 prompt e/μ, ``nTruthPromptLeptons > 0``: W → e/μ, also through τ), and what
the overlap removal takes away from each jet flavour.

Usage::

    nice -n 10 .venv/bin/python benchmarks/sim_leptons.py --events 2000 --mu 0 60
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import binomtest

FLAVOURS = {"b": 5, "c": 4, "tau": 15, "light": 0}


def fraction(k: int, n: int) -> str:
    """``k/n`` in % with the 68 % Clopper–Pearson interval."""
    if n == 0:
        return "n/a"
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.6827, method="exact")
    p = k / n
    return f"{100 * p:.2f} % (+{100 * (ci.high - p):.2f} −{100 * (p - ci.low):.2f}) [{k}/{n}]"


def summarise(out: dict[str, np.ndarray]) -> list[tuple[str, str, str, str]]:
    jets, events = out["jets"], out["events"]
    light = jets["HadronConeExclTruthLabelID"] == 0
    removed = jets["overlapsElectron"] | jets["overlapsMuon"]
    lepton = jets["truthPromptLepton"]
    nah_events = events["eventNumber"][events["nTruthPromptLeptons"] > 0]
    nah = np.isin(jets["eventNumber"], nah_events)
    rows = []
    for name, sel in (("inclusive tt̄", np.ones(len(jets), dtype=bool)), ("non-all-hadronic (≥1 prompt e/μ)", nah)):
        lj = light & sel
        before = fraction(int((lj & lepton).sum()), int(lj.sum()))
        kept = lj & ~removed
        after = fraction(int((kept & lepton).sum()), int(kept.sum()))
        survive = fraction(int((lj & lepton & ~removed).sum()), int((lj & lepton).sum()))
        rows.append((name, before, after, survive))
    return rows


def removal_by_flavour(out: dict[str, np.ndarray]) -> list[tuple[str, str, str]]:
    jets = out["jets"]
    removed = jets["overlapsElectron"] | jets["overlapsMuon"]
    rows = []
    for name, label in FLAVOURS.items():
        f = jets["HadronConeExclTruthLabelID"] == label
        no_lep = f & ~jets["truthPromptLepton"]
        rows.append((name, fraction(int((f & removed).sum()), int(f.sum())),
                     fraction(int((no_lep & removed).sum()), int(no_lep.sum()))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--mu", type=float, nargs="+", default=[0.0, 60.0])
    ap.add_argument("--seed", type=int, default=20261202)
    args = ap.parse_args()

    from lhcml.sim.events import simulate_events
    from lhcml.sim.pileup import build_pileup_library

    for mu in args.mu:
        t0 = time.time()
        pileup = build_pileup_library(1000, args.seed + 1) if mu > 0 else None
        out = simulate_events("ttbar", args.events, mu=mu, seed=args.seed, pileup=pileup, keep_lepton_overlaps=True)
        dt = time.time() - t0
        print(f"\n## tt̄, ⟨μ⟩ = {mu:g}: {args.events} events, {len(out['jets'])} jets ({dt:.0f} s)\n")
        print("| sample | prompt-lepton light jets, before OR | after OR | prompt-lepton light jets kept |")
        print("|---|---|---|---|")
        for r in summarise(out):
            print("| " + " | ".join(r) + " |")
        print("\n| flavour | jets removed by the OR | jets without a prompt lepton removed |")
        print("|---|---|---|")
        for r in removal_by_flavour(out):
            print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
