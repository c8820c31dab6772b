"""The standard ATLAS overlap removal between electrons, muons, photons and jets, on flat arrays.

Reconstructed objects overlap: a prompt electron is also clustered into a jet, a muon's track is a
jet constituent, a photon is an electron's cluster. ATLAS resolves this with the overlap-removal
(OR) tools of ``AssociationUtils`` (the harmonisation recommendations, CDS record 1700874, as
configured by ``ORUtils::recommendedTools``: the "standard" working point). :func:`overlap_removal`
applies the same steps, in the same order, to every event at once:

1. **electron–muon** (``EleMuSharedTrkOverlapTool``): an electron sharing its ID track with a
   muon is removed; if the muon is calorimeter-tagged, the muon is removed instead.
2. **electron–jet** (``EleJetOverlapTool``): jets within ΔR < :attr:`ORConfig.ele_jet_inner_dr`
   (0.2) of a surviving electron are removed; then electrons within
   :attr:`ORConfig.ele_jet_outer_dr` (0.4) of a surviving jet are removed.
3. **muon–jet** (``MuJetOverlapTool``): jets with fewer than :attr:`ORConfig.num_jet_tracks` (3)
   tracks (``NumTrkPt500`` of the primary vertex) within ΔR < 0.2 of a muon, or with the muon
   ghost-associated, are removed (with ``apply_rel_pt`` also jets with ≥ 3 tracks when
   ``pT(μ)/pT(jet) > 0.5`` and ``pT(μ)/ΣpT(trk) > 0.7``); then muons within 0.4 of a surviving
   jet are removed.
4. **photon–electron**, **photon–muon** (``DeltaROverlapTool``, ΔR < 0.4): the photon is removed.
5. **photon–jet** (ΔR < 0.4): the jet is removed.

Optional (``ORConfig.mu_pflow_jet``, off in the standard working point): ``MuPFJetOverlapTool``,
the removal of particle-flow jets built from a muon's ID track — a jet within ΔR < 0.4 of a muon is
removed when the muon's ``topoetcone40`` < y0, or < y0 + (y2 − y1)/(x2 − x1)·(p_T(μ)/ΣpT(trk) − x1),
or p_T(μ)/ΣpT(trk) > x2, with (x1, x2, y0, y1, y2) = (0.7, 0.85, 15, 15, 30 GeV) for jets with
fewer than 4 tracks and (0.6, 0.9, 5, 5, 30 GeV) otherwise (the tool's defaults). It runs here
just before the muon–jet step (its place in ATLAS's tool ordering was not checked).

Options of the tools that are kept: b-jet-aware removal (``BJetLabel``: jets flagged ``is_bjet`` are
never removed by leptons), the sliding outer cone of the "boosted" working point
(ΔR = min(0.04 + 10 GeV/pT, 0.4)), rapidity instead of pseudorapidity in ΔR (``UseRapidity``, the
ATLAS default; a collection's ``rapidity`` column is used when present, else ``eta``). Not
implemented: electron–electron OR (off in the standard working point), taus and large-R jets.

Objects are :class:`~lhcml.sim.generator.FlatTable` collections (one list per event) with columns
``pt`` (GeV), ``eta``, ``phi`` and optionally ``rapidity``; the electron and muon ``track`` columns
hold the event-local index of the ID track (-1: none); muons may carry ``calo_tagged`` and
``ghost_jet`` (event-local index of the jet the muon's track is ghost-associated to, -1: none);
jets carry ``n_tracks`` (``NumTrkPt500``) and optionally ``sum_track_pt`` (GeV) and ``is_bjet``.
Only objects flagged by the ``selected`` arrays take part (the ATLAS ``InputLabel``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable, offsets_of

#: codes of :attr:`ORResult.jet_removed_by`
REMOVED_BY = {"kept": 0, "electron": 1, "muon": 2, "photon": 3}


@dataclass(frozen=True)
class ORConfig:
    """Settings of the overlap-removal steps (defaults: the ATLAS "standard" working point).

    Values are the defaults of ``AssociationUtils`` (``EleJetOverlapTool``, ``MuJetOverlapTool``,
    ``DeltaROverlapTool``, ``EleMuSharedTrkOverlapTool``) as read in the public athena sources.
    """

    #: jets within this ΔR of an electron are removed
    ele_jet_inner_dr: float = 0.2
    #: electrons within this ΔR of a surviving jet are removed
    ele_jet_outer_dr: float = 0.4
    #: jets within this ΔR of a muon (and with few tracks) are removed
    mu_jet_inner_dr: float = 0.2
    #: muons within this ΔR of a surviving jet are removed
    mu_jet_outer_dr: float = 0.4
    #: a jet with at least this many PV tracks (pT > 500 MeV) keeps priority over a muon
    num_jet_tracks: int = 3
    #: also remove high-multiplicity jets when the muon carries most of the jet's pT
    apply_rel_pt: bool = False
    mu_jet_pt_ratio: float = 0.5
    mu_jet_trk_pt_ratio: float = 0.7
    #: muons ghost-associated to a jet count as inside the inner cone
    use_ghost_association: bool = True
    #: sliding outer cone for boosted leptons: min(c1 + c2 / pT, max)
    sliding_dr: bool = False
    sliding_dr_c1: float = 0.04
    sliding_dr_c2_gev: float = 10.0
    sliding_dr_max: float = 0.4
    #: b-jet-aware OR: jets with ``is_bjet`` are not removed by leptons
    bjet_aware: bool = False
    #: photon removal cone around electrons/muons and jet removal cone around photons
    photon_dr: float = 0.4
    #: an electron sharing a track with a calorimeter-tagged muon removes the muon
    remove_calo_muons: bool = True
    #: ΔR from rapidity (when a ``rapidity`` column exists) rather than pseudorapidity
    use_rapidity: bool = True
    #: particle-flow jets built from muon ID tracks (``MuPFJetOverlapTool``): off in the standard
    #: working point; needs the muons' ``topoetcone40`` and the jets' ``sum_track_pt``
    mu_pflow_jet: bool = False
    mu_pflow_jet_dr: float = 0.4
    mu_pflow_jet_num_trk: int = 4
    #: (x1, x2, y0, y1, y2) of the low- and high-multiplicity criteria (y in GeV)
    mu_pflow_jet_low: tuple[float, float, float, float, float] = (0.7, 0.85, 15.0, 15.0, 30.0)
    mu_pflow_jet_high: tuple[float, float, float, float, float] = (0.6, 0.9, 5.0, 5.0, 30.0)

    def __post_init__(self) -> None:
        for name in ("ele_jet_inner_dr", "ele_jet_outer_dr", "mu_jet_inner_dr", "mu_jet_outer_dr", "photon_dr",
                     "sliding_dr_max"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ConfigError(f"ORConfig.{name} must be a finite ΔR >= 0, got {v}")
        if self.num_jet_tracks < 0:
            raise ConfigError(f"ORConfig.num_jet_tracks must be >= 0, got {self.num_jet_tracks}")


@dataclass
class ORResult:
    """Outcome of :func:`overlap_removal`: ``True`` = the object survives (ATLAS ``passOR``).

    Objects that were not selected as inputs are ``False`` in the ``*_pass`` arrays.
    ``jet_removed_by`` tells which step removed a jet (:data:`REMOVED_BY`);
    ``jet_overlaps_electron`` / ``jet_overlaps_muon`` flag jets that a surviving electron/muon removed.
    """

    electron_pass: np.ndarray
    muon_pass: np.ndarray
    jet_pass: np.ndarray
    photon_pass: np.ndarray
    jet_removed_by: np.ndarray

    @property
    def jet_overlaps_electron(self) -> np.ndarray:
        return self.jet_removed_by == REMOVED_BY["electron"]

    @property
    def jet_overlaps_muon(self) -> np.ndarray:
        return self.jet_removed_by == REMOVED_BY["muon"]


def same_event_pairs(event_a: np.ndarray, event_b: np.ndarray, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``(i, j)`` with ``event_a[i] == event_b[j]`` (vectorised, no Python loop).

    Returns the index arrays ``(i, j)``; pairs are grouped by event.
    """
    event_a = np.asarray(event_a, dtype=np.int64)
    event_b = np.asarray(event_b, dtype=np.int64)
    order_a = np.argsort(event_a, kind="stable")
    order_b = np.argsort(event_b, kind="stable")
    ca = np.bincount(event_a, minlength=n_events)
    cb = np.bincount(event_b, minlength=n_events)
    oa, ob = offsets_of(ca), offsets_of(cb)
    npair = ca * cb
    pe = np.repeat(np.arange(n_events, dtype=np.int64), npair)
    k = np.arange(int(npair.sum()), dtype=np.int64) - np.repeat(offsets_of(npair)[:-1], npair)
    cbp = cb[pe]
    return order_a[oa[pe] + k // np.maximum(cbp, 1)], order_b[ob[pe] + k % np.maximum(cbp, 1)]


def delta_r(y1: np.ndarray, phi1: np.ndarray, y2: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """ΔR = √(Δy² + Δφ²) with Δφ wrapped into [-π, π)."""
    dphi = (np.asarray(phi1) - np.asarray(phi2) + np.pi) % (2 * np.pi) - np.pi
    return np.hypot(np.asarray(y1) - np.asarray(y2), dphi)


def _y(objs: FlatTable, use_rapidity: bool) -> np.ndarray:
    if use_rapidity and "rapidity" in objs.columns:
        return objs["rapidity"]
    return objs["eta"]


def _col(objs: FlatTable, name: str, default, dtype) -> np.ndarray:
    if name in objs.columns:
        return np.asarray(objs[name]).astype(dtype, copy=False)
    return np.full(len(objs["pt"]), default, dtype=dtype)


def _check(objs: FlatTable | None, what: str, n_events: int, extra: tuple[str, ...] = ()) -> FlatTable:
    if objs is None:
        empty = {k: np.zeros(0) for k in ("pt", "eta", "phi")}
        return FlatTable(empty, np.zeros(n_events, dtype=np.int64))
    missing = [c for c in ("pt", "eta", "phi", *extra) if c not in objs.columns]
    if missing:
        raise ConfigError(f"overlap removal: the {what} table lacks columns {missing}; "
                          f"give {what} with pt (GeV), eta, phi{', ' + ', '.join(extra) if extra else ''}")
    if len(objs) != n_events:
        raise ConfigError(f"overlap removal: the {what} table has {len(objs)} events, the jets {n_events}; "
                          "pass the collections of the same events")
    return objs


def _selected(sel: np.ndarray | None, objs: FlatTable, what: str) -> np.ndarray:
    n = len(objs["pt"])
    if sel is None:
        return np.ones(n, dtype=bool)
    sel = np.asarray(sel, dtype=bool)
    if sel.shape != (n,):
        raise ConfigError(f"overlap removal: {what}_selected has shape {sel.shape}, expected ({n},)")
    return sel.copy()


def _near(a: FlatTable, a_alive: np.ndarray, b: FlatTable, b_alive: np.ndarray, cone: float,
          cfg: ORConfig) -> np.ndarray:
    """``True`` for each live ``a`` object within ``cone`` of a live ``b`` object of its event."""
    out = np.zeros(len(a["pt"]), dtype=bool)
    ia, ib = same_event_pairs(a.event, b.event, len(a))
    keep = a_alive[ia] & b_alive[ib]
    ia, ib = ia[keep], ib[keep]
    dr = delta_r(_y(a, cfg.use_rapidity)[ia], a["phi"][ia], _y(b, cfg.use_rapidity)[ib], b["phi"][ib])
    out[ia[dr < cone]] = True
    return out


def _lepton_outer_cone(pt: np.ndarray, flat: float, cfg: ORConfig) -> np.ndarray:
    if not cfg.sliding_dr:
        return np.full(len(pt), flat)
    return np.minimum(cfg.sliding_dr_c1 + cfg.sliding_dr_c2_gev / np.maximum(pt, 1e-9), cfg.sliding_dr_max)


def overlap_removal(
    jets: FlatTable,
    electrons: FlatTable | None = None,
    muons: FlatTable | None = None,
    photons: FlatTable | None = None,
    *,
    jets_selected: np.ndarray | None = None,
    electrons_selected: np.ndarray | None = None,
    muons_selected: np.ndarray | None = None,
    photons_selected: np.ndarray | None = None,
    config: ORConfig | None = None,
) -> ORResult:
    """Apply the standard ATLAS overlap removal to all events at once.

    Parameters
    ----------
    jets, electrons, muons, photons
        Flat per-event collections (see the module docstring for the columns); ``None`` = no such
        objects. All collections must hold the same number of events.
    jets_selected, electrons_selected, muons_selected, photons_selected
        Which objects enter the OR (default: all).
    config
        The OR settings (default :class:`ORConfig`, the standard working point).

    Returns
    -------
    ORResult
    """
    cfg = config or ORConfig()
    n_ev = len(jets)
    jets = _check(jets, "jets", n_ev, ("n_tracks",))
    ele = _check(electrons, "electrons", n_ev)
    mu = _check(muons, "muons", n_ev)
    pho = _check(photons, "photons", n_ev)
    j_ok = _selected(jets_selected, jets, "jets")
    e_ok = _selected(electrons_selected, ele, "electrons")
    m_ok = _selected(muons_selected, mu, "muons")
    p_ok = _selected(photons_selected, pho, "photons")
    removed_by = np.zeros(len(jets["pt"]), dtype=np.int8)
    bjet = _col(jets, "is_bjet", False, bool) if cfg.bjet_aware else np.zeros(len(jets["pt"]), dtype=bool)

    # 1. electron-muon: shared ID track
    e_trk = _col(ele, "track", -1, np.int64)
    m_trk = _col(mu, "track", -1, np.int64)
    ie, im = same_event_pairs(ele.event, mu.event, n_ev)
    share = e_ok[ie] & m_ok[im] & (e_trk[ie] >= 0) & (e_trk[ie] == m_trk[im])
    calo = _col(mu, "calo_tagged", False, bool)
    kill_mu = share & calo[im] & cfg.remove_calo_muons
    m_ok[im[kill_mu]] = False
    e_ok[ie[share & ~kill_mu]] = False

    # 2. electron-jet: jets near electrons, then electrons near the remaining jets
    hit = _near(jets, j_ok & ~bjet, ele, e_ok, cfg.ele_jet_inner_dr, cfg)
    removed_by[hit] = REMOVED_BY["electron"]
    j_ok &= ~hit
    e_ok &= ~_near_lepton_from_jets(ele, e_ok, jets, j_ok, cfg.ele_jet_outer_dr, cfg)

    ntrk = _col(jets, "n_tracks", 0, np.int64)
    sumtrk = _col(jets, "sum_track_pt", 0.0, np.float64)
    # 3a. (optional) particle-flow jets made from muon ID tracks
    if cfg.mu_pflow_jet:
        if "topoetcone40" not in mu.columns or "sum_track_pt" not in jets.columns:
            raise ConfigError("ORConfig.mu_pflow_jet needs the muons' topoetcone40 and the jets' sum_track_pt "
                              "columns; add them or set mu_pflow_jet=False")
        im, ij = same_event_pairs(mu.event, jets.event, n_ev)
        live = m_ok[im] & j_ok[ij] & ~bjet[ij]
        im, ij = im[live], ij[live]
        dr = delta_r(_y(mu, cfg.use_rapidity)[im], mu["phi"][im], _y(jets, cfg.use_rapidity)[ij], jets["phi"][ij])
        x = mu["pt"][im] / np.maximum(sumtrk[ij], 1e-9)
        iso = np.asarray(mu["topoetcone40"], dtype=np.float64)[im]
        low = ntrk[ij] < cfg.mu_pflow_jet_num_trk
        x1, x2, y0, y1, y2 = (np.where(low, a, b) for a, b in zip(cfg.mu_pflow_jet_low, cfg.mu_pflow_jet_high,
                                                                  strict=True))
        remove = (iso < y0) | (iso < y0 + (y2 - y1) / (x2 - x1) * (x - x1)) | (x > x2)
        hit = np.zeros(len(jets["pt"]), dtype=bool)
        hit[ij[remove & (dr < cfg.mu_pflow_jet_dr)]] = True
        removed_by[hit] = REMOVED_BY["muon"]
        j_ok &= ~hit

    # 3. muon-jet: low-multiplicity jets near (or ghost-matched to) muons, then muons near jets
    im, ij = same_event_pairs(mu.event, jets.event, n_ev)
    live = m_ok[im] & j_ok[ij] & ~bjet[ij]
    im, ij = im[live], ij[live]
    dr = delta_r(_y(mu, cfg.use_rapidity)[im], mu["phi"][im], _y(jets, cfg.use_rapidity)[ij], jets["phi"][ij])
    match = dr < cfg.mu_jet_inner_dr
    if cfg.use_ghost_association and "ghost_jet" in mu.columns:
        jet_local = ij - jets.offsets[jets.event[ij]]
        match |= np.asarray(mu["ghost_jet"])[im] == jet_local
    low_trk = ntrk[ij] < cfg.num_jet_tracks
    if cfg.apply_rel_pt:
        mpt = mu["pt"][im]
        rel = (mpt / np.maximum(jets["pt"][ij], 1e-9) > cfg.mu_jet_pt_ratio) & (
            mpt / np.maximum(sumtrk[ij], 1e-9) > cfg.mu_jet_trk_pt_ratio)
        low_trk |= rel
    hit = np.zeros(len(jets["pt"]), dtype=bool)
    hit[ij[match & low_trk]] = True
    removed_by[hit] = REMOVED_BY["muon"]
    j_ok &= ~hit
    m_ok &= ~_near_lepton_from_jets(mu, m_ok, jets, j_ok, cfg.mu_jet_outer_dr, cfg)

    # 4. photons near surviving electrons or muons
    p_ok &= ~_near(pho, p_ok, ele, e_ok, cfg.photon_dr, cfg)
    p_ok &= ~_near(pho, p_ok, mu, m_ok, cfg.photon_dr, cfg)

    # 5. jets near surviving photons
    hit = _near(jets, j_ok, pho, p_ok, cfg.photon_dr, cfg)
    removed_by[hit] = REMOVED_BY["photon"]
    j_ok &= ~hit
    return ORResult(electron_pass=e_ok, muon_pass=m_ok, jet_pass=j_ok, photon_pass=p_ok, jet_removed_by=removed_by)


def _near_lepton_from_jets(lep: FlatTable, lep_ok: np.ndarray, jets: FlatTable, jets_ok: np.ndarray, flat: float,
                           cfg: ORConfig) -> np.ndarray:
    """Leptons within the (flat or sliding) outer cone of a surviving jet."""
    out = np.zeros(len(lep["pt"]), dtype=bool)
    il, ij = same_event_pairs(lep.event, jets.event, len(lep))
    keep = lep_ok[il] & jets_ok[ij]
    il, ij = il[keep], ij[keep]
    dr = delta_r(_y(lep, cfg.use_rapidity)[il], lep["phi"][il], _y(jets, cfg.use_rapidity)[ij], jets["phi"][ij])
    cone = _lepton_outer_cone(lep["pt"][il], flat, cfg)
    out[il[dr < cone]] = True
    return out
