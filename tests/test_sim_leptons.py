"""Leptons (sim/leptons.py) and the overlap removal (sim/overlap.py).

Constructed events with known answers for each overlap-removal step; a particle gun for the
configured efficiencies and resolution; a small tt̄ sample for isolation and for the fraction of
light jets that are prompt leptons.
"""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable
from lhcml.sim.leptons import (
    OR_INPUTS,
    LeptonConfig,
    electron_efficiency,
    muon_efficiency,
    or_input_mask,
    prompt_lepton_mask,
    reconstruct_leptons,
)
from lhcml.sim.overlap import REMOVED_BY, ORConfig, overlap_removal, same_event_pairs


def _table(rows: list[tuple], names: tuple[str, ...], n_events: int) -> FlatTable:
    """A flat table from ``(event, *values)`` rows (rows sorted by event)."""
    rows = sorted(rows, key=lambda r: r[0])
    ev = np.array([r[0] for r in rows], dtype=np.int64)
    cols = {n: np.array([r[i + 1] for r in rows]) for i, n in enumerate(names)}
    return FlatTable(cols, np.bincount(ev, minlength=n_events))


# ---------------------------------------------------------------------------------------------
# overlap removal on constructed events
# ---------------------------------------------------------------------------------------------

N_EV = 8
JET_NAMES = ("pt", "eta", "phi", "n_tracks", "sum_track_pt", "is_bjet")
LEP_NAMES = ("pt", "eta", "phi", "track")


def _constructed():
    """Per event, one situation with a known ATLAS answer (see the assertions)."""
    jets = _table([
        (0, 42.0, 0.05, 0.0, 1, 40.0, False),   # on top of the electron -> removed by it
        (1, 50.0, 0.30, 0.0, 8, 30.0, False),   # dR 0.3 from the electron -> kept, electron removed
        (2, 31.0, 1.10, 1.0, 2, 30.0, False),   # dR 0.1 from the muon, 2 tracks -> removed
        (3, 60.0, 1.10, 1.0, 5, 20.0, False),   # dR 0.1 from the muon, 5 tracks -> kept, muon removed
        (4, 45.0, -1.0, 2.2, 5, 20.0, False),   # dR 0.15 from an electron sharing its track with a muon
        (5, 35.0, 0.0, -2.0, 6, 20.0, False),   # dR 0.3 from a photon -> removed by the photon
        (6, 70.0, 0.05, 0.0, 9, 30.0, True),    # b-tagged jet on top of an electron
        (7, 50.0, 2.0, 0.3, 1, 50.0, False),    # muon at dR 0.3, but its track is a constituent (ghost)
    ], JET_NAMES, N_EV)
    electrons = _table([
        (0, 40.0, 0.0, 0.0, 3),
        (1, 40.0, 0.0, 0.0, 2),
        (4, 44.0, -1.0, 2.05, 7),
        (5, 30.0, 1.5, 1.0, 1),
        (6, 20.0, 0.0, 0.0, 4),
    ], LEP_NAMES, N_EV)
    muons = _table([
        (2, 30.0, 1.0, 1.0, 0),
        (3, 30.0, 1.0, 1.0, 0),
        (4, 44.0, -1.0, 2.05, 7),
        (7, 48.0, 2.0, 0.0, 5),
    ], LEP_NAMES, N_EV)
    muons.columns["ghost_jet"] = np.array([-1, -1, -1, 0])
    photons = _table([
        (5, 25.0, 1.5, 1.2, -1),   # dR 0.2 from the electron -> removed
        (5, 40.0, 0.3, -2.0, -1),  # isolated photon near the jet -> removes the jet
    ], LEP_NAMES, N_EV)
    return jets, electrons, muons, photons


def test_overlap_removal_constructed_events():
    jets, ele, mu, pho = _constructed()
    res = overlap_removal(jets, ele, mu, pho)
    kept = {int(e): bool(k) for e, k in zip(jets.event, res.jet_pass, strict=True)}
    assert kept == {0: False, 1: True, 2: False, 3: True, 4: True, 5: False, 6: False, 7: False}
    by = dict(zip(jets.event.tolist(), res.jet_removed_by.tolist(), strict=True))
    assert by[0] == by[6] == REMOVED_BY["electron"]
    assert by[2] == by[7] == REMOVED_BY["muon"]
    assert by[5] == REMOVED_BY["photon"]
    # electrons: kept in events 0 and 6 (their jets went), removed by the jet in 1, by the shared
    # track with the muon in 4; kept in 5
    assert res.electron_pass.tolist() == [True, False, False, True, True]
    # muons: kept in 2 and 7 (their jets went); removed by the 5-track jets of 3 and 4
    assert res.muon_pass.tolist() == [True, False, False, True]
    assert res.photon_pass.tolist() == [False, True]
    # the electron removed by the shared track does not remove the jet of event 4
    assert res.jet_overlaps_electron.tolist() == [True, False, False, False, False, False, True, False]
    assert res.jet_overlaps_muon.tolist() == [False, False, True, False, False, False, False, True]


def test_overlap_removal_options():
    jets, ele, mu, pho = _constructed()
    # b-jet-aware OR: the b-tagged jet survives and removes the electron
    res = overlap_removal(jets, ele, mu, pho, config=ORConfig(bjet_aware=True))
    assert res.jet_pass[6] and not res.electron_pass[4]
    # calorimeter-tagged muon sharing the track: the muon goes, the electron stays and removes the jet
    mu.columns["calo_tagged"] = np.array([False, False, True, False])
    res = overlap_removal(jets, ele, mu, pho)
    assert res.electron_pass[2] and not res.muon_pass[2] and not res.jet_pass[4]
    # inputs that are not selected take no part
    res = overlap_removal(jets, ele, mu, pho, electrons_selected=np.array([False, True, True, True, True]))
    assert res.jet_pass[0] and not res.electron_pass[0]
    # relative-pT option: the 5-track jet of event 3 is removed when the muon carries it
    mu.columns["pt"] = np.array([30.0, 55.0, 44.0, 48.0])
    assert overlap_removal(jets, ele, mu, pho).jet_pass[3]
    assert not overlap_removal(jets, ele, mu, pho, config=ORConfig(apply_rel_pt=True)).jet_pass[3]
    # no ghost association: the muon at dR 0.3 no longer removes the 1-track jet, the jet removes it
    res = overlap_removal(jets, ele, mu, pho, config=ORConfig(use_ghost_association=False))
    assert res.jet_pass[7] and not res.muon_pass[3]


def test_overlap_removal_sliding_cone_and_rapidity():
    # electron of 100 GeV at dR 0.3 from a jet: flat cone 0.4 removes it, the sliding cone
    # min(0.04 + 10/100, 0.4) = 0.14 keeps it
    jets = _table([(0, 60.0, 0.3, 0.0, 8, 40.0, False)], JET_NAMES, 1)
    ele = _table([(0, 100.0, 0.0, 0.0, 0)], LEP_NAMES, 1)
    assert not overlap_removal(jets, ele).electron_pass[0]
    assert overlap_removal(jets, ele, config=ORConfig(sliding_dr=True)).electron_pass[0]
    # rapidity: a massive jet whose rapidity is 0.1 (eta 0.3) is within 0.2 of the electron
    jets.columns["rapidity"] = np.array([0.1])
    assert not overlap_removal(jets, ele).jet_pass[0]
    assert overlap_removal(jets, ele, config=ORConfig(use_rapidity=False)).jet_pass[0]


def test_mu_pflow_jet_removal():
    # a 6-track particle-flow jet made mostly of an isolated muon's track (muon 40 of 45 GeV of tracks)
    jets = _table([(0, 48.0, 0.0, 0.1, 6, 45.0, False)], JET_NAMES, 1)
    mu = _table([(0, 40.0, 0.0, 0.0, 0)], LEP_NAMES, 1)
    mu.columns["topoetcone40"] = np.array([2.0])
    res = overlap_removal(jets, None, mu)
    assert res.jet_pass[0] and not res.muon_pass[0]  # standard: the muon is lost
    res = overlap_removal(jets, None, mu, config=ORConfig(mu_pflow_jet=True))
    assert not res.jet_pass[0] and res.muon_pass[0]
    # a non-isolated muon inside a genuine jet: the jet stays
    mu.columns["topoetcone40"] = np.array([25.0])
    jets.columns["sum_track_pt"] = np.array([120.0])
    res = overlap_removal(jets, None, mu, config=ORConfig(mu_pflow_jet=True))
    assert res.jet_pass[0]
    with pytest.raises(ConfigError, match="topoetcone40"):
        mu.columns.pop("topoetcone40")
        overlap_removal(jets, None, mu, config=ORConfig(mu_pflow_jet=True))


def test_overlap_removal_bad_input():
    jets, ele, mu, pho = _constructed()
    del jets.columns["n_tracks"]
    with pytest.raises(ConfigError, match="n_tracks"):
        overlap_removal(jets, ele, mu, pho)
    jets, ele, mu, pho = _constructed()
    short = _table([(0, 40.0, 0.0, 0.0, 0)], LEP_NAMES, 2)
    with pytest.raises(ConfigError, match="events"):
        overlap_removal(jets, short)
    with pytest.raises(ConfigError, match="shape"):
        overlap_removal(jets, ele, electrons_selected=np.ones(3, dtype=bool))
    with pytest.raises(ConfigError, match="ΔR"):
        ORConfig(ele_jet_inner_dr=-0.1)


def test_same_event_pairs_matches_brute_force():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 7, 40)
    b = rng.integers(0, 7, 25)
    i, j = same_event_pairs(a, b, 7)
    got = sorted(zip(i.tolist(), j.tolist(), strict=True))
    want = sorted((x, y) for x in range(len(a)) for y in range(len(b)) if a[x] == b[y])
    assert got == want


# ---------------------------------------------------------------------------------------------
# efficiencies and resolution on a particle gun
# ---------------------------------------------------------------------------------------------

def _gun(pid: int, pt: float, n: int, rng: np.random.Generator) -> FlatTable:
    """One prompt lepton (W daughter) per event, |eta| < 2.4, fixed pT."""
    eta = rng.uniform(-2.4, 2.4, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    m = 0.000511 if abs(pid) == 11 else 0.1056584
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    cols = {
        "pid": np.full(n, pid, np.int32), "charge": np.full(n, -np.sign(pid), np.int8),
        "px": px, "py": py, "pz": pz, "e": np.sqrt(px**2 + py**2 + pz**2 + m**2), "m": np.full(n, m),
        "vx": np.zeros(n), "vy": np.zeros(n), "vz": np.zeros(n), "t": np.zeros(n),
        "status": np.full(n, 23, np.int32), "final": np.ones(n, bool), "parent_pid": np.full(n, 24, np.int32),
        "origin": np.full(n, 2, np.int8), "hf_hadron": np.full(n, -1, np.int32),
        "vertex_index": np.zeros(n, np.int32), "is_pileup": np.zeros(n, bool),
    }
    return FlatTable(cols, np.ones(n, dtype=np.int64))


@pytest.mark.parametrize("pid", [11, 13])
def test_gun_efficiencies_at_configured_values(pid):
    n = 20000
    rng = np.random.default_rng(5)
    parts = _gun(pid, 40.0, n, rng)
    assert prompt_lepton_mask(parts).all()
    ele, mu = reconstruct_leptons(parts, None, np.zeros(n), rng)
    got = ele if pid == 11 else mu
    assert len((mu if pid == 11 else ele)["pt"]) == 0
    eta = np.arcsinh(parts["pz"] / 40.0)
    eff_fn = electron_efficiency if pid == 11 else muon_efficiency
    for wp, flag in (("loose", "isLoose"), ("medium", "isMedium"), ("tight", "isTight")):
        want = eff_fn(np.full(n, 40.0), eta, wp).mean()
        measured = got[flag].sum() / n
        assert abs(measured - want) < 4 * np.sqrt(want * (1 - want) / n), (wp, measured, want)
    # nested working points, and the configured values sit on the ATLAS numbers at 40 GeV
    assert (got["isTight"] <= got["isMedium"]).all() and (got["isMedium"] <= got["isLoose"]).all()
    central = eff_fn(np.array([40.0]), np.array([0.5]), "medium")[0]
    if pid == 11:
        assert 0.85 <= central <= 0.90  # ATLAS Medium electrons ~ 88 % at 40 GeV (x 99 % reconstruction)
    else:
        assert 0.965 <= central <= 0.98  # ATLAS Medium muons 97.3 % (docs/references.md §11)
    # an isolated gun lepton passes the isolation working point
    assert got["isoFCLoose"].mean() > 0.97
    # momentum resolution at eta ~ 0: electrons 10 %/sqrt(E) (+) 0.7 %, muons 1.7 % (+) 0.4 %
    c = LeptonConfig()
    central_rows = np.abs(got["eta"]) < 0.3
    rel = got["pt"][central_rows] / got["truthPt"][central_rows] - 1
    expect = np.hypot(c.em_stochastic / np.sqrt(40.0), c.em_constant) if pid == 11 else \
        np.hypot(c.muon_res_barrel, c.muon_res_slope * 40.0)
    assert abs(np.std(rel) / expect - 1) < 0.15
    assert abs(np.mean(rel)) < 0.3 * expect


@pytest.mark.parametrize("pid", [11, 13])
def test_topo_cluster_isolation_of_single_leptons_is_zero_after_core_and_leakage(pid):
    """Isolated single leptons in the jet calorimeter: after the core and the leakage correction
    (derived from such samples) topoetcone20 is centred on 0 and they pass FCTight."""
    from lhcml.sim.topoclusters import simulate_topo_clusters

    n = 500
    rng = np.random.default_rng(8)
    parts = _gun(pid, 40.0, n, rng)
    topo = simulate_topo_clusters(parts, np.zeros(n), rng, 0.0, np.zeros(n))
    ele, mu = reconstruct_leptons(parts, None, np.zeros(n), rng, topo=topo)
    got = ele if pid == 11 else mu
    assert abs(np.median(got["topoetcone20"] / got["pt"])) < 0.005
    assert got["isoFCTight"].mean() > 0.95


def test_efficiency_acceptance_and_errors():
    assert electron_efficiency(np.array([40.0]), np.array([2.6]))[0] == 0.0
    assert electron_efficiency(np.array([3.0]), np.array([0.0]))[0] == 0.0
    assert muon_efficiency(np.array([2.0]), np.array([0.0]))[0] == 0.0
    crack = electron_efficiency(np.array([40.0]), np.array([1.45]))[0]
    assert crack < electron_efficiency(np.array([40.0]), np.array([1.0]))[0]
    with pytest.raises(ConfigError, match="working point"):
        muon_efficiency(np.array([40.0]), np.array([0.0]), "medum")
    with pytest.raises(ConfigError, match="or_isolation"):
        LeptonConfig(or_isolation="Gradient")
    with pytest.raises(ConfigError, match="primary_vertex_z"):
        reconstruct_leptons(_gun(11, 40.0, 3, np.random.default_rng(0)), None, np.zeros(2), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# tt̄: isolation and the light jets that are prompt leptons
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ttbar_sample():
    from lhcml.sim.events import simulate_particles
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.topoclusters import simulate_topo_clusters
    from lhcml.sim.tracker import simulate_tracks

    gen = PythiaGenerator("ttbar", 4242).init()
    rng = np.random.default_rng(4242)
    generated, particles, n_pu = simulate_particles(gen, 200, 0.0, rng, None)
    tracks = FlatTable.from_awkward(simulate_tracks(particles, rng))
    parts = FlatTable.from_awkward(particles)
    pv_z = generated.primary_vertex[:, 2]
    topo = simulate_topo_clusters(parts, pv_z, rng, 0.0, n_pu)
    return parts, tracks, pv_z, topo


@pytest.mark.parametrize("calorimeter", ["topo-clusters", "particles"])
def test_isolation_separates_prompt_from_heavy_flavour_leptons(ttbar_sample, calorimeter):
    from lhcml.data.schema import TRUTH_ORIGIN

    parts, tracks, pv_z, topo = ttbar_sample
    leptons = reconstruct_leptons(parts, tracks, pv_z, np.random.default_rng(1),
                                  topo=topo if calorimeter == "topo-clusters" else None)
    pass_prompt, pass_hf = [], []
    for coll in leptons:
        hard = coll["pt"] > 15
        hf = np.isin(coll["truthOrigin"], [TRUTH_ORIGIN[k] for k in ("fromB", "fromBC", "fromC")])
        pass_prompt.append(coll["isoFCLoose"][hard & coll["truthPrompt"]])
        pass_hf.append(coll["isoFCLoose"][hard & hf])
    prompt, hf = np.concatenate(pass_prompt), np.concatenate(pass_hf)
    print(f"{calorimeter} FCLoose: prompt {prompt.mean():.3f} of {len(prompt)}, b/c-decay {hf.mean():.3f} of {len(hf)}")
    assert len(prompt) >= 60 and len(hf) >= 15
    assert prompt.mean() > 0.9
    assert hf.mean() < 0.2
    # the isolation variables themselves: b/c-decay leptons sit inside jets
    for coll in leptons:
        hard = coll["pt"] > 15
        hf = hard & ~coll["truthPrompt"]
        if hf.sum() >= 5:
            assert np.median(coll["topoetcone20"][hf]) > np.median(coll["topoetcone20"][hard & coll["truthPrompt"]])


def test_or_inputs_baseline_by_default_signal_selectable():
    """The OR runs on ATLAS-style baseline leptons (Loose ID, no isolation, p_T > 10 GeV, TTVA) by
    default; the signal definition (Medium + FCLoose) is selectable. Constructed leptons, one per
    case."""
    assert {k: getattr(LeptonConfig(), k) for k in OR_INPUTS["baseline"]} == OR_INPUTS["baseline"]
    # Loose-only non-isolated | Medium isolated | Medium non-isolated | Medium isolated, 8 GeV | no TTVA | not Loose
    leptons = FlatTable({
        "pt": np.array([25.0, 30.0, 30.0, 8.0, 30.0, 30.0]),
        "isLoose": np.array([True, True, True, True, True, False]),
        "isMedium": np.array([False, True, True, True, True, False]),
        "isTight": np.zeros(6, dtype=bool),
        "isoFCLoose": np.array([False, True, False, True, True, True]),
        "isoFCTight": np.zeros(6, dtype=bool),
        "passTTVA": np.array([True, True, True, True, False, True]),
    }, np.array([6]))
    for electrons in (True, False):
        assert or_input_mask(leptons, electrons).tolist() == [True, True, True, False, False, False]
        signal = LeptonConfig.with_or_inputs("signal")
        assert or_input_mask(leptons, electrons, signal).tolist() == [False, True, False, False, False, False]
    assert LeptonConfig.with_or_inputs("signal", or_pt_min=5.0).or_pt_min == 5.0
    with pytest.raises(ConfigError, match="overlap-removal inputs"):
        LeptonConfig.with_or_inputs("tight")


def test_chain_or_inputs_include_non_isolated_loose_leptons(ttbar_sample):
    """On tt̄ the reconstructed leptons' passOR is the baseline definition: leptons failing FCLoose
    (b/c-decay leptons inside jets) and Loose-but-not-Medium electrons enter the OR; with the
    signal definition they do not."""
    parts, tracks, pv_z, topo = ttbar_sample
    for config, expect in ((None, "baseline"), (LeptonConfig.with_or_inputs("signal"), "signal")):
        ele, mu = reconstruct_leptons(parts, tracks, pv_z, np.random.default_rng(3), config, topo=topo)
        for coll, wp_col in ((ele, "isLoose"), (mu, "isLoose")):
            base = coll[wp_col] & (coll["pt"] > 10) & coll["passTTVA"]
            sig = coll["isMedium"] & coll["isoFCLoose"] & (coll["pt"] > 10) & coll["passTTVA"]
            assert np.array_equal(coll["passOR"], base if expect == "baseline" else sig)
        both = np.concatenate([ele["passOR"] & ~ele["isoFCLoose"], mu["passOR"] & ~mu["isoFCLoose"]])
        if expect == "baseline":
            assert both.sum() >= 5  # non-isolated leptons are OR inputs
        else:
            assert both.sum() == 0


def test_overlap_removal_takes_prompt_leptons_out_of_the_light_jets():
    """400 tt̄ events: ~10 % of the light jets are prompt leptons before the OR, < 1 % after
    (2000 events, baseline OR inputs: 11.4 % → 0.65 %, docs/benchmarks/sim_leptons.md). With
    5–10 prompt-lepton light jets left in 400 events (in 200 events the 3 % bound sat at the edge
    of the interval: 8 of 497 after a change of the noise's random stream) the test checks what
    such a sample can establish:
    the fraction before is far above 5 %, at most 20 % of the prompt-lepton jets survive (the
    lepton reconstruction and Loose-ID inefficiencies; ~5 % expected), and the fraction after is
    compatible with the 1 % goal (95 % Clopper-Pearson interval reaching below 1 %, above 3 %
    excluded). That the baseline inputs are used: test_chain_or_inputs_include_non_isolated_loose_leptons."""
    from scipy.stats import binomtest

    from lhcml.sim.events import simulate_events

    out = simulate_events("ttbar", 400, mu=0.0, seed=11, keep_lepton_overlaps=True)
    jets = out["jets"]
    light = jets["HadronConeExclTruthLabelID"] == 0
    removed = jets["overlapsElectron"] | jets["overlapsMuon"]
    lepton_jets = light & jets["truthPromptLepton"]
    n_lep, n_light = int(lepton_jets.sum()), int(light.sum())
    assert binomtest(n_lep, n_light).proportion_ci(0.95).low > 0.05
    survivors = int((lepton_jets & ~removed).sum())
    assert survivors <= 0.2 * n_lep
    # genuine light jets are rarely removed (a prompt lepton with < half the jet pT inside it)
    genuine = light & ~jets["truthPromptLepton"]
    assert (genuine & removed).sum() < 0.08 * genuine.sum()
    ci = binomtest(survivors, int((light & ~removed).sum())).proportion_ci(0.95)
    assert ci.low < 0.01 and ci.high < 0.03
    # by default the removed jets are not written
    default = simulate_events("ttbar", 40, mu=0.0, seed=11)["jets"]
    assert len(default) and not (default["overlapsElectron"] | default["overlapsMuon"]).any()
    assert (out["events"]["nTruthPromptLeptons"] > 0).mean() > 0.3
