"""Electrons and muons: reconstruction, identification, isolation and the jet overlap flags.

:func:`reconstruct_leptons` turns the true electrons and muons of the event (the final-state
particle table after pileup overlay, :mod:`lhcml.sim.generator`) into reconstructed candidates,
vectorised over all events; :func:`lepton_jet_overlap` runs the standard overlap removal
(:mod:`lhcml.sim.overlap`) between them and the small-R jets and returns the per-jet flags the
jets dataset carries (``truthPromptLepton``, ``overlapsElectron``, ``overlapsMuon``).

Truth
    A *prompt* lepton is a final-state e/μ from a W, Z/γ* or τ decay: Pythia status 21–29 (the
    outgoing leptons of the hard process and of resonance decays), or a QED-shower copy of such a
    lepton (status 51–59 with a parent of the same flavour), or ``origin == fromTau`` (τ not from a
    b/c hadron). Leptons from hadron decays (status 91–99: b, c, light hadrons), from γ → ℓℓ
    splittings in the shower and from pileup are not prompt (:func:`prompt_lepton_mask`).

Efficiencies (reconstruction, then one identification draw per candidate: nested working points)
    Electrons: |η| < 2.47, E_T > 4.5 GeV; reconstruction ε_reco = 0.99 − 0.10·exp(−(E_T − 4.5)/7 GeV)
    (≈ 97 % at 15 GeV, 99 % at 50 GeV); identification ε_WP(E_T) = a_WP − b_WP·exp(−E_T/23.6 GeV)
    with (a, b) chosen so that Loose/Medium/Tight give 93/88/80 % at E_T = 40 GeV and ≈ 88/80/69 % at
    20 GeV; × 0.9 in the barrel/end-cap transition 1.37 < |η| < 1.52 (our choice). ATLAS
    (docs/references.md §11, Z → ee, JINST 14 (2019) P12006): Loose/Medium/Tight 0.930/0.882/0.782
    at 40–45 GeV, 0.865/0.795/0.684 at 20–25 GeV; the parametrisation is within 0.02 of the Medium
    and Loose rows from 20 to 100 GeV (Tight: 0.02–0.03 above the ATLAS row from 20 to 60 GeV).
    Muons: |η| < 2.5, p_T > 3 GeV; ε_WP · (1 − exp(−(p_T − 3 GeV)/1.5 GeV)) (a candidate of any
    quality with a 99 % plateau, our choice) with the ATLAS plateaus Loose/Medium/Tight
    98.8/97.3/93.0 % (docs/references.md §11, EPJC 81 (2021) 578; Tight rises from 0.914 to 0.940
    between 10 and 18 GeV, we take 0.93 flat); the low-p_T turn-on is our choice.
    Identification does not depend on the environment: non-prompt leptons in jets are separated
    by isolation, not by a degraded ID efficiency (a simplification; ATLAS's likelihood ID rejects
    part of them too). Hadrons faking leptons and muons faking electrons are not simulated.

Resolution
    Electron energy: the true energy of the electron and of the photons/electrons in its
    3 × 7 middle-layer cluster (|Δη| < 0.0375, |Δφ| < 0.0859), smeared by 10 %/√E ⊕ 0.7 % (the
    docs/simulation.md EM calorimeter); direction from the electron's track when it has one. Muon p_T:
    σ/p_T = 1.7 % (|η| < 1.05) or 2.3 % (end-caps) ⊕ 10⁻⁴·p_T/GeV (ATLAS Z → μμ, EPJC 76 (2016) 292:
    1.7 % central, 2.3 % end-cap — **from memory, UNVERIFIED**; the p_T term is our choice, 10 % at
    1 TeV).

Isolation
    ``ptvarcone20`` / ``ptvarcone30``: scalar sum of the p_T of reconstructed tracks with
    p_T > 1 GeV, ≥ 7 silicon hits, |Δz0·sinθ| < 3 mm from the primary vertex, within
    ΔR < min(R, 10 GeV/p_T) of the lepton, its own track excluded (the ATLAS definitions).
    ``topoetcone20`` (``topoetcone40`` alike with ΔR < 0.4). In the simulation chain: from the
    topo-clusters of the jet calorimeter (:mod:`lhcml.sim.topoclusters`; EM scale, positive
    clusters with the barycentre in the cone, minus their cells in the core, minus the leakage of
    the lepton's own shower measured on single leptons, ρ-corrected with the clusters' median
    density), as ATLAS. Without a calorimeter (``topo=None``): the transverse energy of the visible final-state particles (no neutrinos or muons;
    charged particles above the 0.45 GeV curl-up threshold; each above :attr:`LeptonConfig.calo_e_min`,
    a topo-cluster noise threshold of our choice) within ΔR < 0.2, minus the 5 × 7 core around an
    electron (ΔR < 0.05 around a muon), smeared by the EM/hadronic resolutions and
    :attr:`LeptonConfig.calo_noise` and corrected for pileup and the underlying event by
    ρ·(π·0.2² − A_core), ρ the event's median E_T density of the same particles
    (:func:`lhcml.sim.pflow.pileup_density_flat`, the ATLAS ambient-energy correction).
    Working points (ratios to the lepton p_T, **from memory, UNVERIFIED**, ATLAS isolation
    recommendations of Run 2): electrons ``FCLoose`` ptvarcone20 < 0.15, topoetcone20 < 0.20;
    ``FCTight`` 0.06 and 0.06; muons ``FCLoose`` ptvarcone30 < 0.15, topoetcone20 < 0.30;
    ``FCTight`` 0.04 and 0.15.

Track-to-vertex association
    With the tracks' impact parameters w.r.t. the reconstructed hard-scatter vertex
    (``track_ips``, :func:`lhcml.sim.vertexing.impact_parameters`; the simulation chain passes
    them), the lepton's track must satisfy |d0/σ(d0)| < 5 (electrons) or < 3 (muons) and
    |Δz0·sinθ| < 0.5 mm (``passTTVA``; the ATLAS track-to-vertex-association recommendation of
    Run 2, docs/references.md §11 — **UNVERIFIED**); the isolation tracks use the same Δz0·sinθ. A lepton
    without a reconstructed track passes (its tracking inefficiency is in ε_reco already).
    Without ``track_ips``: no d0 cut, Δz0·sinθ = (z0 − z_PV)·sinθ from the beam-line z0.

Overlap removal inputs
    ATLAS analyses run the overlap removal on their *baseline* leptons — loosely identified,
    usually not isolated — and apply the tighter identification and the isolation afterwards, to
    the *signal* leptons only (docs/references.md §13). The default
    (:data:`OR_INPUTS` ``"baseline"``): electrons passing Loose (our stand-in for ATLAS's
    LooseAndBLayer likelihood, whose B-layer-hit requirement we do not model) and Loose muons,
    no isolation, p_T > 10 GeV and the track-to-vertex association. The former default, Medium ID
    + FCLoose isolation (the *signal* leptons of a tt̄ analysis), stays selectable:
    ``LeptonConfig.with_or_inputs("signal")`` or the fields :attr:`LeptonConfig.or_electron_id`,
    :attr:`LeptonConfig.or_muon_id`, :attr:`LeptonConfig.or_isolation`. Photons are not
    reconstructed in the jet chain, so the photon steps of the OR do not act there. The chain's OR
    (:data:`CHAIN_OR_CONFIG`) adds the removal of particle-flow jets built from muon ID tracks
    (``MuPFJetOverlapTool``), since our particle-flow jets contain the muons' tracks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable
from lhcml.sim.overlap import ORConfig, ORResult, delta_r, overlap_removal, same_event_pairs

#: overlap removal of the simulation chain: the standard working point plus the removal of
#: particle-flow jets built from muon ID tracks (our jets are particle-flow jets that contain them)
CHAIN_OR_CONFIG = ORConfig(mu_pflow_jet=True)
#: identification working points, loosest first
ID_WORKING_POINTS = ("loose", "medium", "tight")
#: isolation working points
ISOLATION_WORKING_POINTS = ("FCLoose", "FCTight")
#: named overlap-removal input definitions (:meth:`LeptonConfig.with_or_inputs`): ATLAS analyses'
#: *baseline* leptons (Loose ID, no isolation; the default, docs/references.md §13) and the
#: *signal* leptons of a tt̄ analysis (Medium ID + FCLoose; the default before 2026-12-03); and Loose
#: ID + FCLoose (keeps b-jets, misses the < 1 % goal at μ = 60: docs/benchmarks/sim_leptons.md)
OR_INPUTS: dict[str, dict[str, str | None]] = {
    "baseline": {"or_electron_id": "loose", "or_muon_id": "loose", "or_isolation": None},
    "signal": {"or_electron_id": "medium", "or_muon_id": "medium", "or_isolation": "FCLoose"},
    "loose_isolated": {"or_electron_id": "loose", "or_muon_id": "loose", "or_isolation": "FCLoose"},
}

_M_E = 0.000511
_M_MU = 0.1056584
_NEUTRINOS = (12, 14, 16)
#: calorimeter coverage and the curl-up threshold of charged particles in the 2 T field (GeV), as
#: the particle-flow calorimeter of :mod:`lhcml.sim.pflow`
_CALO_ETA_MAX = 4.9
_CURL_PT_GEV = 0.45
#: electron cluster (3 x 7 middle cells of 0.025 x 0.0245) and isolation core (5 x 7 cells) half-widths
_CLUSTER_DETA, _CORE_DETA, _CELL_DPHI_HALF7 = 0.0375, 0.0625, 3.5 * 2 * np.pi / 256
_MUON_CORE_DR = 0.05
#: leakage corrections of the topo-cluster isolation (as ATLAS's, from single particles): the
#: median topoetcone20 of isolated single electrons / muons at μ = 0 in this jet calorimeter,
#: measured with ``tests/test_sim_leptons.py::_gun`` (3000 per point): electrons leak
#: 0.57/1.03/1.68 % (barrel) and 1.03/1.79/2.71 % (end-cap) of E_T at 15/40/100 GeV outside the
#: 5 x 7 core; a muon's deposit leaks ~0.9 GeV outside ΔR = 0.05 in the barrel (|η| < 1.5).
_LEAK_ET = (15.0, 40.0, 100.0)
_LEAK_E_BARREL = (0.0057, 0.0103, 0.0168)
_LEAK_E_ENDCAP = (0.0103, 0.0179, 0.0271)
_LEAK_MU_BARREL_GEV = 0.9


@dataclass(frozen=True)
class LeptonConfig:
    """Parameters of the lepton model (sources in the module docstring)."""

    electron_eta_max: float = 2.47
    electron_et_min: float = 4.5
    crack: tuple[float, float] = (1.37, 1.52)
    crack_id_factor: float = 0.9
    electron_reco_plateau: float = 0.99
    electron_reco_drop: float = 0.10
    electron_reco_scale: float = 7.0
    #: (a, b) of ε = a − b·exp(−E_T / electron_id_scale) per working point
    electron_id: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "loose": (0.97, 0.218), "medium": (0.94, 0.327), "tight": (0.88, 0.435)})
    electron_id_scale: float = 23.6
    em_stochastic: float = 0.10
    em_constant: float = 0.007
    had_stochastic: float = 0.50
    muon_eta_max: float = 2.5
    muon_pt_min: float = 3.0
    muon_turn_on: float = 1.5
    muon_id: dict[str, float] = field(default_factory=lambda: {"loose": 0.988, "medium": 0.973, "tight": 0.930})
    #: plateau reconstruction efficiency of a muon candidate of any quality (our choice, above Loose)
    muon_reco: float = 0.99
    muon_res_barrel: float = 0.017
    muon_res_endcap: float = 0.023
    muon_res_slope: float = 1e-4
    #: isolation tracks
    iso_track_pt_min: float = 1.0
    iso_track_z0st_max: float = 3.0
    iso_track_min_si_hits: int = 7
    varcone_kt: float = 10.0
    #: track-to-vertex association of the lepton's track (module docstring)
    ttva_electron_d0sig_max: float = 5.0
    ttva_muon_d0sig_max: float = 3.0
    ttva_z0st_max: float = 0.5
    #: calorimeter isolation: particle energy threshold (GeV, our choice ~ topo-cluster seed) and
    #: Gaussian noise per cone (GeV, our choice)
    calo_cone: float = 0.2
    calo_e_min: float = 0.4
    calo_noise: float = 0.3
    #: (track-isolation cut, calorimeter-isolation cut) on ratios to pT
    electron_iso: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "FCLoose": (0.15, 0.20), "FCTight": (0.06, 0.06)})
    muon_iso: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "FCLoose": (0.15, 0.30), "FCTight": (0.04, 0.15)})
    #: overlap-removal inputs: ATLAS analyses' baseline leptons (:data:`OR_INPUTS`, docs/references.md
    #: §13); p_T > 10 GeV is our choice (the usual baseline threshold of tt̄ analyses)
    or_electron_id: str = "loose"
    or_muon_id: str = "loose"
    or_isolation: str | None = None
    or_pt_min: float = 10.0
    #: truth-prompt-lepton jet flag: lepton pT > frac * jet pT within ΔR < dr
    prompt_jet_pt_frac: float = 0.5
    prompt_jet_dr: float = 0.4

    def __post_init__(self) -> None:
        for name in ("or_electron_id", "or_muon_id"):
            if getattr(self, name) not in ID_WORKING_POINTS:
                raise ConfigError(f"LeptonConfig.{name} = {getattr(self, name)!r}; valid: {', '.join(ID_WORKING_POINTS)}")
        if self.or_isolation is not None and self.or_isolation not in ISOLATION_WORKING_POINTS:
            raise ConfigError(f"LeptonConfig.or_isolation = {self.or_isolation!r}; valid: "
                              f"{', '.join(ISOLATION_WORKING_POINTS)} or None")

    @classmethod
    def with_or_inputs(cls, name: str, **overrides) -> LeptonConfig:
        """A configuration with the named overlap-removal inputs (a key of :data:`OR_INPUTS`:
        ``"baseline"``, ``"signal"``, ``"loose_isolated"``); ``overrides`` set further fields."""
        if name not in OR_INPUTS:
            raise ConfigError(f"unknown overlap-removal inputs {name!r}; valid: {', '.join(OR_INPUTS)}")
        return cls(**{**OR_INPUTS[name], **overrides})


def _wp(wp: str) -> str:
    if wp not in ID_WORKING_POINTS:
        raise ConfigError(f"unknown identification working point {wp!r}; valid: {', '.join(ID_WORKING_POINTS)}")
    return wp


def electron_efficiency(et: np.ndarray, eta: np.ndarray, wp: str | None = "medium",
                        config: LeptonConfig | None = None) -> np.ndarray:
    """Reconstruction × identification efficiency of a true electron (E_T in GeV).

    ``wp=None``: the reconstruction efficiency alone.
    """
    c = config or LeptonConfig()
    et = np.asarray(et, dtype=np.float64)
    aeta = np.abs(np.asarray(eta, dtype=np.float64))
    reco = c.electron_reco_plateau - c.electron_reco_drop * np.exp(-(et - c.electron_et_min) / c.electron_reco_scale)
    eff = np.clip(reco, 0, 1)
    if wp is not None:
        a, b = c.electron_id[_wp(wp)]
        ident = a - b * np.exp(-et / c.electron_id_scale)
        ident = np.where((aeta > c.crack[0]) & (aeta < c.crack[1]), ident * c.crack_id_factor, ident)
        eff = eff * np.clip(ident, 0, 1)
    ok = (et > c.electron_et_min) & (aeta < c.electron_eta_max)
    return np.where(ok, eff, 0.0)


def muon_efficiency(pt: np.ndarray, eta: np.ndarray, wp: str | None = "medium",
                    config: LeptonConfig | None = None) -> np.ndarray:
    """Reconstruction × identification efficiency of a true muon (p_T in GeV).

    ``wp=None``: the reconstruction efficiency of a muon candidate of any quality
    (:attr:`LeptonConfig.muon_reco`).
    """
    c = config or LeptonConfig()
    plateau = c.muon_reco if wp is None else c.muon_id[_wp(wp)]
    pt = np.asarray(pt, dtype=np.float64)
    aeta = np.abs(np.asarray(eta, dtype=np.float64))
    turn = 1.0 - np.exp(-(pt - c.muon_pt_min) / c.muon_turn_on)
    ok = (pt > c.muon_pt_min) & (aeta < c.muon_eta_max)
    return np.where(ok, plateau * np.clip(turn, 0, 1), 0.0)


def prompt_lepton_mask(particles: FlatTable) -> np.ndarray:
    """Final-state electrons and muons from W, Z/γ* or τ decays (see the module docstring)."""
    apid = np.abs(particles["pid"])
    status = np.abs(particles["status"])
    origin = particles["origin"]
    lep = particles["final"] & ((apid == 11) | (apid == 13)) & ~particles["is_pileup"]
    hard = (status >= 21) & (status <= 29)
    shower_copy = (status >= 51) & (status <= 59) & (np.abs(particles["parent_pid"]) == apid)
    from_tau = origin == TRUTH_ORIGIN["fromTau"]
    return lep & (from_tau | ((origin == TRUTH_ORIGIN["primary"]) & (hard | shower_copy)))


def _pt_eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / np.where(pt > 0, pt, 1.0), 1e9))
    return pt, eta, np.arctan2(py, px)


def _calo_visible(particles: FlatTable, e_min: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                                 np.ndarray, np.ndarray]:
    """Rows, E, pT, η, φ and EM flag of the particles the calorimeter isolation sees."""
    apid = np.abs(particles["pid"])
    pt, eta, phi = _pt_eta_phi(particles["px"], particles["py"], particles["pz"])
    e = particles["e"]
    vis = (particles["final"] & ~np.isin(apid, (*_NEUTRINOS, 13)) & (np.abs(eta) < _CALO_ETA_MAX)
           & ~((particles["charge"] != 0) & (pt < _CURL_PT_GEV)) & (e > e_min))
    rows = np.flatnonzero(vis)
    em = (apid[rows] == 22) | (apid[rows] == 11)
    return rows, e[rows], pt[rows], eta[rows], phi[rows], em


def _track_match(particles: FlatTable, tracks: FlatTable | None, rows: np.ndarray) -> np.ndarray:
    """Event-local index of the reconstructed track of each particle row (-1: none)."""
    out = np.full(len(rows), -1, dtype=np.int64)
    if tracks is None or len(rows) == 0 or len(tracks["pt"]) == 0:
        return out
    pidx = np.asarray(tracks["particle_index"], dtype=np.int64)
    real = np.flatnonzero(pidx >= 0)
    glob = particles.offsets[tracks.event[real]] + pidx[real]
    lookup = np.full(int(particles.offsets[-1]), -1, dtype=np.int64)
    lookup[glob] = real - tracks.offsets[tracks.event[real]]
    return lookup[rows]


def _track_z0_sin_theta(tracks: FlatTable, pv_z: np.ndarray, track_ips: dict[str, np.ndarray] | None) -> np.ndarray:
    """Δz0·sinθ of every track w.r.t. the hard-scatter vertex (mm)."""
    if track_ips is not None:
        z0st = np.asarray(track_ips["z0SinTheta"], dtype=np.float64)
        if len(z0st) != len(tracks["pt"]):
            raise ConfigError(f"track_ips has {len(z0st)} rows for {len(tracks['pt'])} tracks; pass "
                              "lhcml.sim.vertexing.impact_parameters of the same tracks")
        return z0st
    if "z0" in tracks.columns:
        return (np.asarray(tracks["z0"]) - np.asarray(pv_z)[tracks.event]) / np.cosh(np.asarray(tracks["eta"]))
    return np.asarray(tracks["z0SinTheta"], dtype=np.float64)


def _track_isolation(cand_ev, cand_eta, cand_phi, cand_pt, cand_trk, tracks: FlatTable | None, z0st, n_ev,
                     radius: float, c: LeptonConfig) -> np.ndarray:
    out = np.zeros(len(cand_ev))
    if tracks is None or len(tracks["pt"]) == 0 or len(cand_ev) == 0:
        return out
    t_eta = np.asarray(tracks["eta"], dtype=np.float64)
    t_pt = np.asarray(tracks["pt"], dtype=np.float64)
    tev = tracks.event
    good = (t_pt > c.iso_track_pt_min) & (np.abs(z0st) < c.iso_track_z0st_max)
    if "numberOfPixelHits" in tracks.columns and "numberOfSCTHits" in tracks.columns:
        nsi = tracks["numberOfPixelHits"].astype(np.int64) + tracks["numberOfSCTHits"].astype(np.int64)
        good &= nsi >= c.iso_track_min_si_hits
    trows = np.flatnonzero(good)
    ic, it = same_event_pairs(cand_ev, tev[trows], n_ev)
    it = trows[it]
    local = it - tracks.offsets[tev[it]]
    cone = np.minimum(radius, c.varcone_kt / np.maximum(cand_pt[ic], 1e-9))
    dr = delta_r(cand_eta[ic], cand_phi[ic], t_eta[it], np.asarray(tracks["phi"])[it])
    inside = (dr < cone) & (local != cand_trk[ic])
    return np.bincount(ic[inside], weights=t_pt[it][inside], minlength=len(cand_ev))


def _calo_isolation(cand_ev, cand_eta, cand_phi, cand_rows, is_electron, particles: FlatTable, n_ev,
                    rng: np.random.Generator, c: LeptonConfig) -> tuple[np.ndarray, np.ndarray]:
    """topoetcone20- and topoetcone40-like isolation (GeV) of each candidate, ρ-corrected."""
    from lhcml.sim.pflow import pileup_density_flat

    rows, e, pt, eta, phi, em = _calo_visible(particles, c.calo_e_min)
    ev = particles.event[rows]
    rho = pileup_density_flat(FlatTable({"eta": eta, "phi": phi, "pt": pt}, np.bincount(ev, minlength=n_ev)))
    n = len(cand_ev)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    ic, ip = same_event_pairs(cand_ev, ev, n_ev)
    deta = eta[ip] - cand_eta[ic]
    dphi = (phi[ip] - cand_phi[ic] + np.pi) % (2 * np.pi) - np.pi
    dr = np.hypot(deta, dphi)
    ele = is_electron[ic]
    core = np.where(ele, (np.abs(deta) < _CORE_DETA) & (np.abs(dphi) < _CELL_DPHI_HALF7), dr < _MUON_CORE_DR)
    keep = ~core & (rows[ip] != cand_rows[ic]) & (dr < 0.4)
    ic, ip, dr = ic[keep], ip[keep], dr[keep]
    core_area = np.where(is_electron, (2 * _CORE_DETA) * (2 * _CELL_DPHI_HALF7), np.pi * _MUON_CORE_DR**2)
    out = []
    for cone in (c.calo_cone, 0.4):
        k = dr < cone
        et = np.bincount(ic[k], weights=pt[ip[k]], minlength=n)
        e_em = np.bincount(ic[k], weights=np.where(em[ip[k]], e[ip[k]], 0.0), minlength=n)
        e_had = np.bincount(ic[k], weights=np.where(em[ip[k]], 0.0, e[ip[k]]), minlength=n)
        sigma_e = np.sqrt(c.em_stochastic**2 * e_em + c.had_stochastic**2 * e_had)
        sigma = np.hypot(sigma_e / np.cosh(cand_eta), c.calo_noise * cone / c.calo_cone)
        out.append(et + sigma * rng.standard_normal(n) - rho[cand_ev] * (np.pi * cone**2 - core_area))
    return out[0], out[1]


def _topo_isolation(cand_ev, cand_eta, cand_phi, cand_pt, is_electron, topo, n_ev) -> tuple[np.ndarray, np.ndarray]:
    """topoetcone20/40 (GeV) from the topo-clusters of the jet calorimeter (EM scale), ρ-corrected.

    Σ E_T of the positive-energy clusters whose barycentre lies within the cone, minus the E_T of
    their cells in the core (electrons: EM cells within the 5 × 7 window; muons: cells within
    ΔR < 0.05), minus the leakage of the lepton's own shower out of the core (:data:`_LEAK_ET`),
    minus ρ·(πR² − A_core) with ρ the median E_T density of the clusters.
    """
    from lhcml.sim.generator import offsets_of
    from lhcml.sim.pflow import pileup_density_flat

    cl = topo.clusters
    et_cl = cl["E_em"] / np.cosh(cl["eta"])
    ev_cl = cl.event
    rho = pileup_density_flat(FlatTable({"eta": cl["eta"], "phi": cl["phi"], "pt": np.maximum(et_cl, 0.0)},
                                        cl.counts))
    n = len(cand_ev)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    ic, ik = same_event_pairs(cand_ev, ev_cl, n_ev)
    dr = delta_r(cand_eta[ic], cand_phi[ic], cl["eta"][ik], cl["phi"][ik])
    keep = (dr < 0.4) & (et_cl[ik] > 0)
    ic, ik, dr = ic[keep], ik[keep], dr[keep]
    # cells of those clusters, grouped by cluster
    geo = topo.geometry
    order = np.argsort(topo.cell_cluster, kind="stable")
    n_cells = np.bincount(topo.cell_cluster, minlength=len(et_cl))
    c_off = offsets_of(n_cells)
    reps = n_cells[ik]
    pair = np.repeat(np.arange(len(ic)), reps)
    cell = order[np.arange(int(reps.sum())) - np.repeat(offsets_of(reps)[:-1], reps) + np.repeat(c_off[ik], reps)]
    cid = topo.cell_id[cell]
    ceta, cphi = geo.eta[cid], geo.phi[cid]
    lep = ic[pair]
    deta = ceta - cand_eta[lep]
    dphi = (cphi - cand_phi[lep] + np.pi) % (2 * np.pi) - np.pi
    in_core = np.where(is_electron[lep], (geo.layer[cid] != 1) & (np.abs(deta) < _CORE_DETA)
                       & (np.abs(dphi) < _CELL_DPHI_HALF7), np.hypot(deta, dphi) < _MUON_CORE_DR)
    core_et = np.where(in_core, topo.cell_energy[cell] / np.cosh(ceta), 0.0)
    core_area = np.where(is_electron, (2 * _CORE_DETA) * (2 * _CELL_DPHI_HALF7), np.pi * _MUON_CORE_DR**2)
    barrel = np.abs(cand_eta) < 1.5
    leak_e = np.where(barrel, np.interp(cand_pt, _LEAK_ET, _LEAK_E_BARREL),
                      np.interp(cand_pt, _LEAK_ET, _LEAK_E_ENDCAP)) * cand_pt
    leak = np.where(is_electron, leak_e, np.where(barrel, _LEAK_MU_BARREL_GEV, 0.0))
    out = []
    for cone in (0.2, 0.4):
        k = dr < cone
        et = np.bincount(ic[k], weights=et_cl[ik[k]], minlength=n)
        kc = k[pair]
        core = np.bincount(lep[kc], weights=core_et[kc], minlength=n)
        out.append(et - core - leak - rho[cand_ev] * (np.pi * cone**2 - core_area))
    return out[0], out[1]


def reconstruct_leptons(
    particles: FlatTable,
    tracks: FlatTable | None,
    primary_vertex_z: np.ndarray,
    rng: np.random.Generator,
    config: LeptonConfig | None = None,
    topo=None,
    track_ips: dict[str, np.ndarray] | None = None,
) -> tuple[FlatTable, FlatTable]:
    """Reconstructed electrons and muons of every event.

    Parameters
    ----------
    particles
        Final-state particle table of the events (:data:`lhcml.sim.generator.PARTICLE_FIELDS`,
        pileup included), GeV and mm.
    tracks
        Reconstructed tracks (:func:`lhcml.sim.tracker.simulate_tracks`, flat) with ``pt`` (GeV),
        ``eta``, ``phi``, ``z0`` (or ``z0SinTheta``) and ``particle_index``; ``None``: no tracks
        (no track isolation, no track matching).
    primary_vertex_z
        Reconstructed primary-vertex z of each event (mm).
    rng
        Random generator (efficiencies, resolutions, calorimeter-isolation noise).
    config
        Model parameters (default :class:`LeptonConfig`).
    topo
        The batch's topo-clusters (:class:`lhcml.sim.topoclusters.TopoClusters`, from
        :func:`~lhcml.sim.topoclusters.simulate_topo_clusters`): the calorimeter isolation is then
        built from them (:func:`_topo_isolation`, as ATLAS's topoetcone); ``None``: from the
        visible particles with a parametric response (no calorimeter simulation needed).
    track_ips
        Impact parameters of ``tracks`` w.r.t. the reconstructed hard-scatter vertex
        (:func:`lhcml.sim.vertexing.impact_parameters`: ``d0``, ``d0Uncertainty``, ``z0SinTheta``,
        one row per track): the track-to-vertex association of the leptons and the Δz0·sinθ of
        the isolation tracks use them; ``None``: Δz0·sinθ from the beam-line ``z0`` and ``pv_z``,
        no d0 cut.

    Returns
    -------
    (electrons, muons)
        Flat tables with ``pt, eta, phi, rapidity, E`` (GeV), ``charge``, ``particle`` and ``track``
        (event-local indices, -1 none), ``isLoose, isMedium, isTight``, ``ptvarcone20,
        ptvarcone30, topoetcone20, topoetcone40`` (GeV), ``isoFCLoose, isoFCTight``, ``truthPrompt``,
        ``truthOrigin`` (``ftagTruthOriginLabel`` codes), ``truthPt`` (GeV), ``d0sig`` and
        ``z0SinTheta`` (mm) of the lepton's track w.r.t. the hard-scatter vertex (NaN: no track or
        no ``track_ips``), ``passTTVA`` and ``passOR`` (enters the overlap removal:
        :attr:`LeptonConfig.or_electron_id`/``or_muon_id``, :attr:`LeptonConfig.or_isolation`,
        p_T > :attr:`LeptonConfig.or_pt_min`, ``passTTVA``).
    """
    c = config or LeptonConfig()
    n_ev = len(particles)
    pv_z = np.asarray(primary_vertex_z, dtype=np.float64)
    if pv_z.shape != (n_ev,):
        raise ConfigError(f"primary_vertex_z has shape {pv_z.shape}, expected ({n_ev},) (one z per event)")
    apid = np.abs(particles["pid"])
    pt_all, eta_all, phi_all = _pt_eta_phi(particles["px"], particles["py"], particles["pz"])
    prompt_all = prompt_lepton_mask(particles)
    lep = particles["final"] & ((apid == 11) | (apid == 13))
    rows = np.flatnonzero(lep & (pt_all > min(c.electron_et_min, c.muon_pt_min)))
    is_e = apid[rows] == 11
    ev = particles.event[rows]
    tpt, teta, tphi = pt_all[rows], eta_all[rows], phi_all[rows]

    # electron cluster energy: the electron plus the EM particles in its 3x7 cluster
    e_true = particles["e"][rows].astype(np.float64).copy()
    erows = np.flatnonzero(is_e)
    if len(erows):
        vrows, ve, _, veta, vphi, vem = _calo_visible(particles, 0.0)
        ie, iv = same_event_pairs(ev[erows], particles.event[vrows], n_ev)
        deta = np.abs(veta[iv] - teta[erows][ie])
        dphi = np.abs((vphi[iv] - tphi[erows][ie] + np.pi) % (2 * np.pi) - np.pi)
        inside = vem[iv] & (deta < _CLUSTER_DETA) & (dphi < _CELL_DPHI_HALF7) & (vrows[iv] != rows[erows][ie])
        e_true[erows] += np.bincount(ie[inside], weights=ve[iv][inside], minlength=len(erows))

    trk = _track_match(particles, tracks, rows)
    eta = teta.copy()
    phi = tphi.copy()
    if tracks is not None and np.any(trk >= 0):
        has = trk >= 0
        glob = tracks.offsets[ev[has]] + trk[has]
        eta[has] = np.asarray(tracks["eta"], dtype=np.float64)[glob]
        phi[has] = np.asarray(tracks["phi"], dtype=np.float64)[glob]

    # measured momentum
    n = len(rows)
    g = rng.standard_normal(n)
    sig_e = np.hypot(c.em_stochastic / np.sqrt(np.maximum(e_true, 1e-6)), c.em_constant)
    sig_mu = np.hypot(np.where(np.abs(teta) < 1.05, c.muon_res_barrel, c.muon_res_endcap), c.muon_res_slope * tpt)
    e_meas = e_true * np.maximum(1.0 + sig_e * g, 0.0)
    pt = np.where(is_e, e_meas / np.cosh(eta), tpt * np.maximum(1.0 + sig_mu * g, 1e-3))

    # efficiencies: a candidate is reconstructed with ε_reco; the identification draw (one uniform
    # per candidate, so the working points are nested) uses ε_WP / ε_reco, giving ε_WP overall
    u_reco = rng.random(n)
    u_id = rng.random(n)
    eff_reco = np.where(is_e, electron_efficiency(tpt, teta, None, c), muon_efficiency(tpt, teta, None, c))
    reco = u_reco < eff_reco
    flags = {}
    for wp in ID_WORKING_POINTS:
        eff = np.where(is_e, electron_efficiency(tpt, teta, wp, c), muon_efficiency(tpt, teta, wp, c))
        flags[wp] = reco & (u_id * eff_reco < eff)
    z0st_trk = None if tracks is None else _track_z0_sin_theta(tracks, pv_z, track_ips)
    iso_trk20 = _track_isolation(ev, eta, phi, pt, trk, tracks, z0st_trk, n_ev, 0.2, c)
    iso_trk30 = _track_isolation(ev, eta, phi, pt, trk, tracks, z0st_trk, n_ev, 0.3, c)
    # track-to-vertex association of the lepton's own track (w.r.t. the reconstructed PV)
    d0sig = np.full(n, np.nan)
    z0st = np.full(n, np.nan)
    ttva = np.ones(n, dtype=bool)
    if tracks is not None and track_ips is not None and np.any(trk >= 0):
        has = np.flatnonzero(trk >= 0)
        glob = tracks.offsets[ev[has]] + trk[has]
        d0sig[has] = np.asarray(track_ips["d0"])[glob] / np.asarray(track_ips["d0Uncertainty"])[glob]
        z0st[has] = z0st_trk[glob]
        d0max = np.where(is_e[has], c.ttva_electron_d0sig_max, c.ttva_muon_d0sig_max)
        ttva[has] = (np.abs(d0sig[has]) < d0max) & (np.abs(z0st[has]) < c.ttva_z0st_max)
    if topo is not None:
        iso_calo, iso_calo40 = _topo_isolation(ev, eta, phi, pt, is_e, topo, n_ev)
    else:
        iso_calo, iso_calo40 = _calo_isolation(ev, eta, phi, rows, is_e, particles, n_ev, rng, c)
    ptd = np.maximum(pt, 1e-9)
    iso = {}
    for name in ISOLATION_WORKING_POINTS:
        te, ce = c.electron_iso[name]
        tm, cm = c.muon_iso[name]
        iso[name] = np.where(is_e, (iso_trk20 / ptd < te) & (iso_calo / ptd < ce),
                             (iso_trk30 / ptd < tm) & (iso_calo / ptd < cm))
    m = np.where(is_e, _M_E, _M_MU)
    cols = {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "rapidity": eta,  # massless to < 1e-5 for p_T > 3 GeV
        "E": np.sqrt((pt * np.cosh(eta)) ** 2 + m**2),
        "charge": -np.sign(particles["pid"][rows]).astype(np.int8),
        "particle": rows - particles.offsets[ev],
        "track": trk,
        "isLoose": flags["loose"],
        "isMedium": flags["medium"],
        "isTight": flags["tight"],
        "ptvarcone20": iso_trk20,
        "ptvarcone30": iso_trk30,
        "topoetcone20": iso_calo,
        "topoetcone40": iso_calo40,
        "isoFCLoose": iso["FCLoose"],
        "isoFCTight": iso["FCTight"],
        "truthPrompt": prompt_all[rows],
        "truthOrigin": np.where(particles["is_pileup"][rows], TRUTH_ORIGIN["pileup"],
                                particles["origin"][rows]).astype(np.int8),
        "truthPt": tpt,
        "d0sig": d0sig,
        "z0SinTheta": z0st,
        "passTTVA": ttva,
    }
    out = []
    for want in (is_e, ~is_e):
        k = want & reco
        table = FlatTable({name: v[k] for name, v in cols.items()}, np.bincount(ev[k], minlength=n_ev))
        table.columns["passOR"] = or_input_mask(table, want is is_e, c)
        out.append(table)
    return out[0], out[1]


#: lepton-table column of each identification working point
_ID_COLUMN = {"loose": "isLoose", "medium": "isMedium", "tight": "isTight"}


def or_input_mask(leptons: FlatTable, electrons: bool, config: LeptonConfig | None = None) -> np.ndarray:
    """Which reconstructed leptons enter the overlap removal under ``config`` (the ``passOR`` column).

    ``leptons``: a :func:`reconstruct_leptons` output (electrons if ``electrons`` else muons); the
    identification (:attr:`LeptonConfig.or_electron_id` / ``or_muon_id``), p_T >
    :attr:`LeptonConfig.or_pt_min`, ``passTTVA`` and, unless ``None``,
    :attr:`LeptonConfig.or_isolation`. Lets one set of reconstructed leptons be run through the
    overlap removal with other inputs (e.g. ``LeptonConfig.with_or_inputs("signal")``).
    """
    c = config or LeptonConfig()
    wp = c.or_electron_id if electrons else c.or_muon_id
    ok = np.asarray(leptons[_ID_COLUMN[wp]], dtype=bool) & (leptons["pt"] > c.or_pt_min) & leptons["passTTVA"]
    if c.or_isolation is not None:
        ok = ok & np.asarray(leptons["iso" + c.or_isolation], dtype=bool)
    return ok


def jet_truth_prompt_lepton(jets: FlatTable, particles: FlatTable, config: LeptonConfig | None = None) -> np.ndarray:
    """``True`` for jets with a prompt e/μ of p_T > 0.5·p_T(jet) within ΔR < 0.4 (truth).

    ``jets`` needs ``pt`` (GeV), ``eta``, ``phi``; ``particles`` is the event's particle table.
    """
    c = config or LeptonConfig()
    out = np.zeros(len(jets["pt"]), dtype=bool)
    rows = np.flatnonzero(prompt_lepton_mask(particles))
    if len(rows) == 0 or len(out) == 0:
        return out
    pt, eta, phi = _pt_eta_phi(particles["px"][rows], particles["py"][rows], particles["pz"][rows])
    ij, il = same_event_pairs(jets.event, particles.event[rows], len(jets))
    dr = delta_r(jets["eta"][ij], jets["phi"][ij], eta[il], phi[il])
    hit = (dr < c.prompt_jet_dr) & (pt[il] > c.prompt_jet_pt_frac * jets["pt"][ij])
    out[ij[hit]] = True
    return out


def lepton_jet_overlap(
    jets: FlatTable,
    jet_selected: np.ndarray,
    constituent_offsets: np.ndarray,
    constituents: np.ndarray,
    objects: FlatTable,
    electrons: FlatTable,
    muons: FlatTable,
    or_config: ORConfig | None = None,
) -> tuple[dict[str, np.ndarray], ORResult]:
    """Overlap removal between the selected small-R jets and the OR-input leptons.

    Parameters
    ----------
    jets
        All clustered jets (:func:`lhcml.sim.jets.cluster_flat` output after calibration) with
        ``pt, eta, phi, E, pz`` (GeV).
    jet_selected
        Jets that take part (the analysis jet selection), one flag per jet.
    constituent_offsets, constituents
        The jets' constituents (rows of ``objects``), as returned by ``cluster_flat``.
    objects
        The flow objects the jets were clustered from (``pt``, ``charge``; ``track_index`` for the
        ghost association of muons).
    electrons, muons
        :func:`reconstruct_leptons` outputs; rows with ``passOR`` take part.
    or_config
        Overlap-removal settings (default: :data:`CHAIN_OR_CONFIG`).

    Returns
    -------
    (flags, result)
        ``flags``: ``overlapsElectron``, ``overlapsMuon`` (removed by a surviving electron/muon) and
        ``NumTrkPt500`` per jet; ``result``: the :class:`~lhcml.sim.overlap.ORResult`.
    """
    n_jets = len(jets["pt"])
    ncons = np.diff(constituent_offsets)
    cons_jet = np.repeat(np.arange(n_jets), ncons)
    trk = (objects["charge"][constituents] != 0) & (objects["pt"][constituents] > 0.5)
    ntrk = np.bincount(cons_jet[trk], minlength=n_jets)
    sumtrk = np.bincount(cons_jet[trk], weights=objects["pt"][constituents][trk], minlength=n_jets)
    y = jets["eta"]
    if "E" in jets.columns and "pz" in jets.columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            y = 0.5 * np.log((jets["E"] + jets["pz"]) / (jets["E"] - jets["pz"]))
        y = np.where(np.isfinite(y), y, jets["eta"])
    jt = FlatTable({"pt": jets["pt"], "eta": jets["eta"], "phi": jets["phi"], "rapidity": y, "n_tracks": ntrk,
                    "sum_track_pt": sumtrk}, jets.counts)
    mu_cols = dict(muons.columns)
    if "track_index" in objects.columns and len(muons["pt"]):
        mu_cols["ghost_jet"] = muon_ghost_jets(jets, constituent_offsets, constituents, objects, muons)
    mu = FlatTable(mu_cols, muons.counts)
    res = overlap_removal(jt, electrons, mu, jets_selected=jet_selected, electrons_selected=electrons["passOR"],
                          muons_selected=muons["passOR"], config=or_config or CHAIN_OR_CONFIG)
    flags = {"overlapsElectron": res.jet_overlaps_electron, "overlapsMuon": res.jet_overlaps_muon,
             "NumTrkPt500": ntrk}
    return flags, res


def muon_ghost_jets(jets: FlatTable, constituent_offsets: np.ndarray, constituents: np.ndarray, objects: FlatTable,
                    muons: FlatTable) -> np.ndarray:
    """Ghost association of muons to jets: for each muon, the event-local index of the jet whose
    constituents hold the muon's ID track (-1: none). Arguments as :func:`lepton_jet_overlap`;
    ``objects`` needs ``track_index``."""
    n_jets = len(jets["pt"])
    cons_jet = np.repeat(np.arange(n_jets), np.diff(constituent_offsets))
    obj_jet = np.full(len(objects["pt"]), -1, dtype=np.int64)
    obj_jet[constituents] = cons_jet - jets.offsets[jets.event[cons_jet]]
    t_idx = np.asarray(objects["track_index"], dtype=np.int64)
    has = np.flatnonzero(t_idx >= 0)
    stride = int(max(t_idx.max(initial=0), np.asarray(muons["track"]).max(initial=0))) + 1
    key = objects.event[has] * stride + t_idx[has]
    order = np.argsort(key, kind="stable")
    key, has = key[order], has[order]
    mkey = muons.event * stride + np.asarray(muons["track"], dtype=np.int64)
    ghost = np.full(len(mkey), -1, dtype=np.int64)
    if len(key):
        pos = np.minimum(np.searchsorted(key, mkey), len(key) - 1)
        found = (np.asarray(muons["track"]) >= 0) & (key[pos] == mkey)
        ghost[found] = obj_jet[has[pos[found]]]
    return ghost


def small_r_lepton_flags(
    jets: FlatTable,
    jet_selected: np.ndarray,
    constituent_offsets: np.ndarray,
    constituents: np.ndarray,
    objects: FlatTable,
    particles: FlatTable,
    tracks: FlatTable | None,
    primary_vertex_z: np.ndarray,
    rng: np.random.Generator,
    config: LeptonConfig | None = None,
    or_config: ORConfig | None = None,
    raw_jet_pt: np.ndarray | None = None,
    topo=None,
    track_ips: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The lepton step of the small-R jet chain (:func:`lhcml.sim.events.simulate_events`).

    Reconstructs the leptons (:func:`reconstruct_leptons`), runs the overlap removal with the
    selected jets (:func:`lepton_jet_overlap`) and flags jets with a truth prompt lepton
    (:func:`jet_truth_prompt_lepton`). ``raw_jet_pt`` (GeV, one per jet): the constituent-scale
    jet pT the truth flag compares the lepton with (default ``jets["pt"]``); the calibrated pT of a
    jet made of an electron's EM cluster is the electron's pT times the hadronic jet energy scale
    factor (up to ~2 here), which would hide the lepton behind the 0.5 · pT(jet) condition.
    ``track_ips``: the tracks' impact parameters w.r.t. the reconstructed hard-scatter vertex
    (:func:`reconstruct_leptons`).

    Returns
    -------
    (flags, n_prompt)
        ``flags``: boolean ``truthPromptLepton``, ``overlapsElectron``, ``overlapsMuon`` for every
        jet of ``jets``; ``n_prompt``: the number of final-state prompt e/μ of each event.
    """
    electrons, muons = reconstruct_leptons(particles, tracks, primary_vertex_z, rng, config, topo=topo,
                                           track_ips=track_ips)
    or_flags, _ = lepton_jet_overlap(jets, jet_selected, constituent_offsets, constituents, objects, electrons,
                                     muons, or_config or CHAIN_OR_CONFIG)
    truth_jets = jets
    if raw_jet_pt is not None:
        truth_jets = FlatTable({"pt": np.asarray(raw_jet_pt), "eta": jets["eta"], "phi": jets["phi"]}, jets.counts)
    flags = {
        "truthPromptLepton": jet_truth_prompt_lepton(truth_jets, particles, config),
        "overlapsElectron": or_flags["overlapsElectron"],
        "overlapsMuon": or_flags["overlapsMuon"],
    }
    n_prompt = np.bincount(particles.event[prompt_lepton_mask(particles)], minlength=len(particles))
    return flags, n_prompt
