"""Light jets that are prompt leptons in tt̄, before and after the lepton overlap removal.

Runs the full simulation chain (:func:`lhcml.sim.events.simulate_events`, ``keep_lepton_overlaps=True``
so that the jets the overlap removal takes out stay in the output, flagged) and prints, per ⟨μ⟩,
the fraction of light jets (``HadronConeExclTruthLabelID == 0``) carrying ``truthPromptLepton``
(a prompt e/μ with pT > 0.5 pT(jet) within ΔR < 0.4) before the overlap removal (all jets) and
after it (jets not flagged ``overlapsElectron``/``overlapsMuon``), with 68 % Clopper–Pearson
intervals, for inclusive tt̄ (the sample the issue measured) and for its non-all-hadronic part
(events with ≥ 1 prompt e/μ, ``nTruthPromptLeptons > 0``: W → e/μ, also through τ), and what
the overlap removal takes away from each jet flavour.

The chain's lepton step is wrapped (:func:`capture_lepton_step`) so that the same reconstructed
leptons also go through the overlap removal with every other input definition of
:data:`lhcml.sim.leptons.OR_INPUTS` (baseline: Loose ID, no isolation — the default; signal:
Medium ID + FCLoose), and so that every prompt-lepton light jet the OR leaves is given the reason
its lepton did not remove it (:data:`CAUSES`).

Usage::

    nice -n 10 .venv/bin/python benchmarks/sim_leptons.py --events 2000 --mu 0 60
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import binomtest

FLAVOURS = {"b": 5, "c": 4, "tau": 15, "light": 0}
#: why a prompt-lepton jet survives the OR (first that applies, in this order)
CAUSES = (
    "outside acceptance (e |η| > 2.47, μ |η| > 2.5)",
    "not reconstructed (in acceptance)",
    "reconstructed p_T ≤ OR threshold (10 GeV)",
    "fails identification",
    "fails identification, e in the crack 1.37 < |η| < 1.52",
    "fails track-to-vertex association",
    "fails isolation",
    "OR input; μ in a ≥ 3-track jet (the jet keeps priority)",
    "OR input; ΔR(ℓ, jet) ≥ 0.2 (the jet keeps priority)",
    "OR input; lepton lost earlier in the OR (e–μ shared track)",
)


def fraction(k: int, n: int) -> str:
    """``k/n`` in % with the 68 % Clopper–Pearson interval."""
    if n == 0:
        return "n/a"
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.6827, method="exact")
    p = k / n
    return f"{100 * p:.2f} % (+{100 * (ci.high - p):.2f} −{100 * (p - ci.low):.2f}) [{k}/{n}]"


def _survivor_causes(jets, sel_rows, raw_pt, particles, electrons, muons, ghost, res, config, ntrk):
    """Cause code (index into :data:`CAUSES`) of each selected jet with a prompt lepton that the OR
    kept (-1 otherwise), the flavour (11/13) and τ origin of its lepton (the hardest prompt e/μ
    with p_T > 0.5 p_T(jet, constituent scale) within ΔR < 0.4)."""
    from lhcml.data.schema import TRUTH_ORIGIN
    from lhcml.sim.leptons import _ID_COLUMN, _pt_eta_phi, prompt_lepton_mask
    from lhcml.sim.overlap import delta_r, same_event_pairs

    n = len(sel_rows)
    cause = np.full(n, -1, dtype=np.int64)
    flav = np.zeros(n, dtype=np.int64)
    tau = np.zeros(n, dtype=bool)
    prows = np.flatnonzero(prompt_lepton_mask(particles))
    if n == 0 or len(prows) == 0:
        return cause, flav, tau
    lpt, leta, lphi = _pt_eta_phi(particles["px"][prows], particles["py"][prows], particles["pz"][prows])
    ij, il = same_event_pairs(jets.event[sel_rows], particles.event[prows], len(jets))
    j = sel_rows[ij]
    hit = (delta_r(jets["eta"][j], jets["phi"][j], leta[il], lphi[il]) < config.prompt_jet_dr) & (
        lpt[il] > config.prompt_jet_pt_frac * raw_pt[j])
    ij, il = ij[hit], il[hit]
    order = np.lexsort((-lpt[il], ij))  # per jet, hardest lepton first
    ij, il = ij[order], il[order]
    first = np.ones(len(ij), dtype=bool)
    first[1:] = ij[1:] != ij[:-1]
    ij, il = ij[first], il[first]
    removed = res.jet_overlaps_electron | res.jet_overlaps_muon
    keep = ~removed[sel_rows[ij]]
    ij, il = ij[keep], il[keep]
    row = prows[il]
    apid = np.abs(particles["pid"][row])
    flav[ij] = apid
    tau[ij] = particles["origin"][row] == TRUTH_ORIGIN["fromTau"]
    # reconstructed candidate of each lepton (global particle row -> index in its collection)
    lookup = {}
    for coll, is_e, passed in ((electrons, True, res.electron_pass), (muons, False, res.muon_pass)):
        glob = particles.offsets[coll.event] + np.asarray(coll["particle"], dtype=np.int64)
        lookup[is_e] = (dict(zip(glob.tolist(), range(len(glob)), strict=True)), coll, passed)
    for jrow_sel, prow, pid, eta_t in zip(ij, row, apid, leta[il], strict=True):
        is_e = pid == 11
        index, coll, passed = lookup[is_e]
        if abs(eta_t) >= (config.electron_eta_max if is_e else config.muon_eta_max):
            cause[jrow_sel] = 0
            continue
        i = index.get(int(prow))
        if i is None:
            cause[jrow_sel] = 1
            continue
        wp = config.or_electron_id if is_e else config.or_muon_id
        jrow = sel_rows[jrow_sel]
        dr = delta_r(coll["eta"][i], coll["phi"][i], jets["eta"][jrow], jets["phi"][jrow])
        if coll["pt"][i] <= config.or_pt_min:
            c = 2
        elif not coll[_ID_COLUMN[wp]][i]:
            c = 4 if is_e and config.crack[0] < abs(coll["eta"][i]) < config.crack[1] else 3
        elif not coll["passTTVA"][i]:
            c = 5
        elif config.or_isolation is not None and not coll["iso" + config.or_isolation][i]:
            c = 6
        elif not passed[i] and dr < 0.2 and is_e:
            c = 9
        elif not is_e and (dr < 0.2 or ghost[i] == jrow - jets.offsets[jets.event[jrow]]) and ntrk[jrow] >= 3:
            c = 7
        elif dr >= 0.2:
            c = 8
        else:
            c = 9
        cause[jrow_sel] = c
    return cause, flav, tau


def capture_lepton_step(records: list[dict[str, np.ndarray]]):
    """Wrap :func:`lhcml.sim.leptons.small_r_lepton_flags` for the next ``simulate_events`` calls.

    The wrapper reconstructs the leptons once (same random stream as the chain), runs the overlap
    removal with every :data:`~lhcml.sim.leptons.OR_INPUTS` definition, and appends per batch,
    for the selected jets in output order: ``removed_<inputs>`` and ``cause_<inputs>``
    (:data:`CAUSES` code of surviving prompt-lepton jets), ``lepton_pid``, ``lepton_from_tau``.
    It returns the default configuration's flags to the chain. Returns the function that undoes it.
    """
    import lhcml.sim.leptons as L
    from lhcml.sim.generator import FlatTable

    original = L.small_r_lepton_flags
    default = L.LeptonConfig()

    def wrapped(jets, jet_selected, constituent_offsets, constituents, objects, particles, tracks, primary_vertex_z,
                rng, config=None, or_config=None, raw_jet_pt=None, topo=None, track_ips=None):
        if config is not None:
            raise RuntimeError("capture_lepton_step expects the chain's default LeptonConfig")
        electrons, muons = L.reconstruct_leptons(particles, tracks, primary_vertex_z, rng, None, topo=topo,
                                                 track_ips=track_ips)
        raw = np.asarray(raw_jet_pt) if raw_jet_pt is not None else np.asarray(jets["pt"])
        truth_jets = FlatTable({"pt": raw, "eta": jets["eta"], "phi": jets["phi"]}, jets.counts)
        sel_rows = np.flatnonzero(jet_selected)
        rec: dict[str, np.ndarray] = {}
        out_flags = None
        for name in L.OR_INPUTS:
            cfg = L.LeptonConfig.with_or_inputs(name)
            e = FlatTable({**electrons.columns, "passOR": L.or_input_mask(electrons, True, cfg)}, electrons.counts)
            m = FlatTable({**muons.columns, "passOR": L.or_input_mask(muons, False, cfg)}, muons.counts)
            flags, res = L.lepton_jet_overlap(jets, jet_selected, constituent_offsets, constituents, objects, e, m,
                                              or_config or L.CHAIN_OR_CONFIG)
            ghost = np.full(len(m["pt"]), -1, dtype=np.int64)
            if "track_index" in objects.columns and len(m["pt"]):
                ghost = L.muon_ghost_jets(jets, constituent_offsets, constituents, objects, m)
            cause, flav, tau = _survivor_causes(jets, sel_rows, raw, particles, e, m, ghost, res, cfg,
                                                flags["NumTrkPt500"])
            rec[f"removed_{name}"] = (flags["overlapsElectron"] | flags["overlapsMuon"])[sel_rows]
            rec[f"by_electron_{name}"] = flags["overlapsElectron"][sel_rows]
            rec[f"cause_{name}"] = cause
            rec["lepton_pid"] = np.maximum(rec.get("lepton_pid", flav), flav)
            rec["lepton_from_tau"] = rec.get("lepton_from_tau", tau) | tau
            if all(getattr(cfg, k) == getattr(default, k) for k in L.OR_INPUTS[name]):
                out_flags = flags
        if out_flags is None:
            raise RuntimeError("the default LeptonConfig matches no OR_INPUTS definition")
        records.append(rec)
        result = {
            "truthPromptLepton": L.jet_truth_prompt_lepton(truth_jets, particles, default),
            "overlapsElectron": out_flags["overlapsElectron"],
            "overlapsMuon": out_flags["overlapsMuon"],
        }
        n_prompt = np.bincount(particles.event[L.prompt_lepton_mask(particles)], minlength=len(particles))
        return result, n_prompt

    L.small_r_lepton_flags = wrapped

    def undo() -> None:
        L.small_r_lepton_flags = original

    return undo


def summarise(out: dict[str, np.ndarray], removed: np.ndarray) -> list[tuple[str, str, str, str]]:
    jets, events = out["jets"], out["events"]
    light = jets["HadronConeExclTruthLabelID"] == 0
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


def removal_by_flavour(out: dict[str, np.ndarray], removed: np.ndarray,
                       by_electron: np.ndarray) -> list[tuple[str, str, str, str]]:
    """Per flavour: jets removed, jets without a prompt lepton removed, and how many of the removed
    jets an electron (rest: a muon) removed."""
    jets = out["jets"]
    rows = []
    for name, label in FLAVOURS.items():
        f = jets["HadronConeExclTruthLabelID"] == label
        no_lep = f & ~jets["truthPromptLepton"]
        rows.append((name, fraction(int((f & removed).sum()), int(f.sum())),
                     fraction(int((no_lep & removed).sum()), int(no_lep.sum())),
                     f"{int((f & removed & by_electron).sum())} / {int((f & removed & ~by_electron).sum())}"))
    return rows


def cause_table(out: dict[str, np.ndarray], rec: dict[str, np.ndarray], names: list[str]) -> list[str]:
    """Markdown rows: survivors among the prompt-lepton light jets by cause, e / μ, per OR inputs."""
    light = (out["jets"]["HadronConeExclTruthLabelID"] == 0) & out["jets"]["truthPromptLepton"]
    lines = []
    for code, text in enumerate(CAUSES):
        cells = []
        for name in names:
            c = light & (rec[f"cause_{name}"] == code)
            cells.append(f"{int((c & (rec['lepton_pid'] == 11)).sum())} / {int((c & (rec['lepton_pid'] == 13)).sum())}")
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    cells = []
    for name in names:
        s = light & (rec[f"cause_{name}"] >= 0)
        cells.append(f"**{int(s.sum())}** (from τ: {int((s & rec['lepton_from_tau']).sum())})")
    lines.append("| **total** (e / μ above) | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--mu", type=float, nargs="+", default=[0.0, 60.0])
    ap.add_argument("--seed", type=int, default=20261202)
    args = ap.parse_args()

    from lhcml.sim.events import simulate_events
    from lhcml.sim.leptons import OR_INPUTS
    from lhcml.sim.pileup import build_pileup_library

    names = list(OR_INPUTS)
    for mu in args.mu:
        t0 = time.time()
        pileup = build_pileup_library(1000, args.seed + 1) if mu > 0 else None
        records: list[dict[str, np.ndarray]] = []
        undo = capture_lepton_step(records)
        try:
            out = simulate_events("ttbar", args.events, mu=mu, seed=args.seed, pileup=pileup,
                                  keep_lepton_overlaps=True)
        finally:
            undo()
        dt = time.time() - t0
        rec = {k: np.concatenate([r[k] for r in records]) for k in records[0]}
        chain_removed = out["jets"]["overlapsElectron"] | out["jets"]["overlapsMuon"]
        default = next(n for n in names if np.array_equal(rec[f"removed_{n}"], chain_removed))
        print(f"\n## tt̄, ⟨μ⟩ = {mu:g}: {args.events} events, {len(out['jets'])} jets ({dt:.0f} s); "
              f"the chain's OR inputs: {default}\n")
        for name in names:
            removed = rec[f"removed_{name}"]
            print(f"\n### OR inputs: {name} {OR_INPUTS[name]}\n")
            print("| sample | prompt-lepton light jets, before OR | after OR | prompt-lepton light jets kept |")
            print("|---|---|---|---|")
            for r in summarise(out, removed):
                print("| " + " | ".join(r) + " |")
            print("\n| flavour | jets removed by the OR | jets without a prompt lepton removed | removed by e / μ |")
            print("|---|---|---|---|")
            for r in removal_by_flavour(out, removed, rec[f"by_electron_{name}"]):
                print("| " + " | ".join(r) + " |")
        print("\n### Why the prompt-lepton light jets the OR keeps survive (jets: e / μ)\n")
        print("| cause | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for line in cause_table(out, rec, names):
            print(line)


if __name__ == "__main__":
    main()
