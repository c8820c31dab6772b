"""Track-CaloClusters (TCCs): tracking angles with calorimeter energy (ATL-PHYS-PUB-2017-015).

The ATLAS combination for large-R jet substructure at the highest pT, where the calorimeter
cannot resolve the collimated decay products but the tracker can:

1. Each reconstructed track, extrapolated to the calorimeter (φ bent in the 2 T field,
   :func:`lhcml.sim.jet_calo.bend_phi`), is matched to the nearest calorimeter cluster within
   ``ΔR <`` :data:`TCC_MATCH_DR` (our choice: the 0.1 granularity of the hadronic calorimeter
   cells; ATLAS matches the extrapolated track to the cluster's angular width).
2. Each matched cluster's energy is shared among its matched tracks in proportion to their
   pT: track ``t`` gets ``E_c · pT_t / Σ pT``. The shares of one track (over clusters) make one
   *charged TCC* with the track's η, φ and the summed energy (massless, pT = E / cosh η).
3. Clusters without a matched track become *neutral TCCs* (the cluster itself).
4. Tracks matched to no cluster are **dropped** (their energy was not measured in the
   calorimeter: as ATLAS TCCs; such tracks are mostly soft ones that curl up before the
   calorimeter or whose deposit fell below the noise threshold).

Pileup: the shares of tracks that fail the primary-vertex association of particle flow
(``|Δz0 sinθ| <`` :data:`lhcml.sim.pflow.CHS_DZ0_SINTHETA`) are removed (the energy they carry
is attributed to pileup, as charged-hadron subtraction does for particle flow); material
secondaries are not matched (their parent's energy is in the calorimeter). The neutral TCCs
are then subject to SoftKiller in the large-R chain like other neutral constituents. ATLAS's
TCC code does the same: all tracks share a cluster, only hard-scatter-vertex tracks make TCCs
(``docs/references.md`` §52).

This removal takes hard-scatter energy with it: a pileup track takes its pT share of every
cluster it is matched to, and the whole cluster when it is the cluster's only matched track
(a hard-scatter photon or neutral-hadron cluster with a pileup track within ΔR 0.1 is lost).
Opt-in alternatives (``pileup_tracks`` of :func:`build_tcc`; :data:`TCC_PILEUP_TRACKS`):

* ``"remove"`` (default): as above.
* ``"pv_only"``: only the tracks that pass the primary-vertex association take part in the
  matching and sharing; the clusters they do not match stay neutral TCCs (pileup neutral energy
  in a cluster with a hard-scatter track goes to that track: SoftKiller does not act on
  charged TCCs).
* ``"share_return"``: the sharing among all matched tracks as the default, but the shares of
  the tracks failing the association are returned to a neutral TCC at the cluster's position
  (then subject to SoftKiller like the other neutral TCCs) instead of being dropped.
* ``"share_subtract"``: as ``"share_return"``, but each failing track's own momentum |p| is
  subtracted from its share first (charged-hadron subtraction of the pileup track's expected
  deposit, E/p = 1); only the excess is returned as a neutral TCC.

``"pv_only"`` and ``"share_return"`` keep every cluster's energy (charged + neutral TCC energy =
the summed cluster energy); ``"share_subtract"`` drops min(share, |p|) per failing track.

:func:`share_cluster_energy` is the pure matching/sharing step (tested to conserve each
matched cluster's energy); :func:`build_tcc` makes the flow-object table.
"""

from __future__ import annotations

import numpy as np

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable, insert_per_event
from lhcml.sim.jets import nearest_within_dr  # noqa: F401  (the one ΔR-matching helper; re-exported)

#: track-to-cluster matching distance (our choice: the 0.1 hadronic tower granularity)
TCC_MATCH_DR = 0.1
#: treatments of the tracks failing the primary-vertex association (:func:`build_tcc`); the first is the default
TCC_PILEUP_TRACKS = ("remove", "pv_only", "share_return", "share_subtract")


def share_cluster_energy(
    clusters: FlatTable, tracks: FlatTable, dr_max: float = TCC_MATCH_DR, track_phi: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Match tracks to clusters and share the cluster energies.

    Parameters
    ----------
    clusters
        Per event, clusters with ``eta, phi, E`` (GeV).
    tracks
        Per event, tracks with ``pt, eta, phi`` (only the tracks that may be matched).
    track_phi
        φ of the tracks at the calorimeter (default: their ``phi``).

    Returns
    -------
    (cluster_index, energy)
        Per track (flat, in ``tracks`` order): the flat row of its matched cluster (-1 if none)
        and its share of that cluster's energy (0 if none). The shares of the tracks matched to
        a cluster sum to the cluster energy.
    """
    if len(clusters) != len(tracks):
        raise ValueError(f"clusters ({len(clusters)} events) and tracks ({len(tracks)} events) differ")
    tphi = np.asarray(tracks["phi"] if track_phi is None else track_phi, np.float64)
    match = nearest_within_dr(
        tracks.offsets, np.asarray(tracks["eta"], np.float64), tphi,
        clusters.offsets, np.asarray(clusters["eta"], np.float64), np.asarray(clusters["phi"], np.float64),
        float(dr_max),
    )
    m = match >= 0
    tpt = np.asarray(tracks["pt"], np.float64)
    sum_pt = np.bincount(match[m], weights=tpt[m], minlength=int(clusters.counts.sum()))
    energy = np.zeros(len(match))
    energy[m] = np.asarray(clusters["E"], np.float64)[match[m]] * tpt[m] / sum_pt[match[m]]
    return match, energy


def build_tcc(
    clusters: FlatTable,
    tracks: FlatTable,
    primary_vertex_z: np.ndarray,
    dr_max: float = TCC_MATCH_DR,
    bend: bool = False,
    pileup_tracks: str = "remove",
) -> FlatTable:
    """TCC flow objects per event (charged TCCs first, then neutral ones).

    Parameters
    ----------
    clusters
        Per event, calorimeter clusters with ``pt, eta, phi, E`` (GeV) and ``em_fraction``.
    tracks
        Reconstructed tracks (:func:`lhcml.sim.tracker.simulate_tracks` as a flat table): ``pt,
        eta, phi``, ``z0`` (or ``z0SinTheta``), ``charge`` (or ``qOverP``), optionally ``origin``,
        ``particle_index``, ``d0`` and the IP uncertainties.
    primary_vertex_z
        Reconstructed primary-vertex z per event (mm).
    bend
        Match the tracks at their φ at the calorimeter (:func:`lhcml.sim.jet_calo.bend_phi`), as
        the clusters of the jet calorimeter are; ``False``: at their φ at the vertex.
    pileup_tracks
        What becomes of the tracks failing the primary-vertex association
        (:data:`TCC_PILEUP_TRACKS`, module docstring): ``"remove"`` (default: they take their
        shares, which are dropped), ``"pv_only"`` (they take no part in the matching) or
        ``"share_return"`` (their shares become a neutral TCC at the cluster's position) or
        ``"share_subtract"`` (the same, less each failing track's |p|).

    Returns
    -------
    FlatTable
        The columns of :func:`lhcml.sim.pflow.build_pflow_flat` objects: ``px, py, pz, E, pt,
        eta, phi, charge, kind, d0, z0SinTheta, d0Uncertainty, z0SinThetaUncertainty,
        track_index``; charged TCCs have ``kind`` charged hadron, neutral ones photon (EM
        fraction > 0.5) or neutral hadron.
    """
    from lhcml.sim.pflow import CHS_DZ0_SINTHETA, KIND_CHARGED_HADRON

    if pileup_tracks not in TCC_PILEUP_TRACKS:
        raise ConfigError(f"pileup_tracks {pileup_tracks!r}: valid {', '.join(TCC_PILEUP_TRACKS)}")
    n_ev = len(clusters)
    pv_z = np.asarray(primary_vertex_z, dtype=np.float64)
    cols = tracks.columns
    fields = set(cols)
    t_eta = np.asarray(cols["eta"], np.float64)
    sin_t = 1.0 / np.cosh(t_eta)
    if "z0" in fields:
        dz0st = (np.asarray(cols["z0"], np.float64) - pv_z[tracks.event]) * sin_t
    else:
        dz0st = np.asarray(cols["z0SinTheta"], np.float64)
    usable = np.ones(len(t_eta), dtype=bool)
    if "origin" in fields and "particle_index" in fields:
        # material secondaries: their parent's energy is in the calorimeter already
        usable &= (np.asarray(cols["particle_index"]) >= 0) | (np.asarray(cols["origin"]) == 1)
    if pileup_tracks == "pv_only":
        usable &= np.abs(dz0st) < CHS_DZ0_SINTHETA
    use = np.flatnonzero(usable)
    if "charge" in fields:
        q_all = np.asarray(cols["charge"]).astype(np.int8)
    else:
        q_all = np.sign(np.asarray(cols["qOverP"])).astype(np.int8)
    sub = FlatTable({k: np.asarray(cols[k])[use] for k in ("pt", "eta", "phi")},
                    np.bincount(tracks.event[use], minlength=n_ev))
    phi_calo = None
    if bend:
        from lhcml.sim.jet_calo import bend_phi

        phi_calo = bend_phi(np.asarray(sub["phi"], np.float64), np.asarray(sub["pt"], np.float64), q_all[use])
    match, energy = share_cluster_energy(clusters, sub, dr_max, track_phi=phi_calo)
    pv = np.abs(dz0st[use]) < CHS_DZ0_SINTHETA
    charged = np.flatnonzero((match >= 0) & pv)
    k = use[charged]
    e_ch = energy[charged]
    eta_ch = t_eta[k]
    phi_ch = np.asarray(cols["phi"], np.float64)[k]
    pt_ch = e_ch / np.cosh(eta_ch)
    q = q_all[k]

    def opt(name: str) -> np.ndarray:
        return np.asarray(cols[name], np.float64)[k] if name in fields else np.zeros(len(k))

    ch_cols = {
        "px": pt_ch * np.cos(phi_ch), "py": pt_ch * np.sin(phi_ch), "pz": pt_ch * np.sinh(eta_ch), "E": e_ch,
        "pt": pt_ch, "eta": eta_ch, "phi": phi_ch, "charge": q,
        "kind": np.full(len(k), KIND_CHARGED_HADRON, dtype=np.int8),
        "d0": opt("d0"), "z0SinTheta": dz0st[k], "d0Uncertainty": opt("d0Uncertainty"),
        "z0SinThetaUncertainty": opt("z0SinThetaUncertainty"),
        "track_index": (k - tracks.offsets[tracks.event[k]]).astype(np.int32),
    }
    matched = np.zeros(int(clusters.counts.sum()), dtype=bool)
    matched[match[match >= 0]] = True
    if pileup_tracks in ("share_return", "share_subtract"):
        # the failing tracks' shares go back to their cluster as a neutral TCC at its position
        back = (match >= 0) & ~pv
        e_back = energy[back]
        if pileup_tracks == "share_subtract":  # less the failing track's own expected deposit (E/p = 1)
            p_back = np.asarray(sub["pt"], np.float64)[back] * np.cosh(np.asarray(sub["eta"], np.float64)[back])
            e_back = np.maximum(e_back - p_back, 0.0)
        returned = np.bincount(match[back], weights=e_back, minlength=len(matched))
        keep = ~matched | (returned > 0)
        e_n = np.where(matched, returned, np.asarray(clusters["E"], np.float64))
        neutral = clusters.select(keep)
        neutral = FlatTable({**neutral.columns, "E": e_n[keep].astype(np.asarray(clusters["E"]).dtype)}, neutral.counts)
    else:
        neutral = clusters.select(~matched)
    n_cols = cluster_objects(neutral).columns
    out_n = FlatTable(n_cols, neutral.counts)
    charged_table = FlatTable(
        {c: ch_cols[c].astype(np.result_type(ch_cols[c], n_cols[c]), copy=False) for c in n_cols},
        np.bincount(tracks.event[k], minlength=n_ev),
    )
    return insert_per_event(charged_table, out_n)


def cluster_objects(clusters: FlatTable) -> FlatTable:
    """Calorimeter clusters as (neutral, massless) flow objects with the particle-flow columns.

    ``kind`` is photon for clusters with an EM fraction above 0.5, else neutral hadron.
    """
    from lhcml.sim.pflow import KIND_NEUTRAL_HADRON, KIND_PHOTON

    eta = np.asarray(clusters["eta"], np.float64)
    phi = np.asarray(clusters["phi"], np.float64)
    e = np.asarray(clusters["E"], np.float64)
    pt = e / np.cosh(eta)
    n = len(e)
    zero = np.zeros(n)
    return FlatTable(
        {
            "px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "E": e, "pt": pt, "eta": eta,
            "phi": phi, "charge": np.zeros(n, dtype=np.int8),
            "kind": np.where(np.asarray(clusters["em_fraction"]) > 0.5, KIND_PHOTON, KIND_NEUTRAL_HADRON).astype(np.int8),
            "d0": zero, "z0SinTheta": zero.copy(), "d0Uncertainty": zero.copy(), "z0SinThetaUncertainty": zero.copy(),
            "track_index": np.full(n, -1, dtype=np.int32),
        },
        clusters.counts,
    )
