"""Track-to-jet association and the per-jet track table of the flat files (docs/data.md, docs/simulation.md).

:func:`associate_tracks` takes the jets and the reconstructed tracks of each event (from
:func:`lhcml.sim.tracker.simulate_tracks`) and fills the ``tracks`` dataset: a
``(n_jets, n_slots)`` structured array of :data:`lhcml.data.schema.TRACK_DTYPE` (MeV, mm).

- Association as ATLAS flavour tagging: a track belongs to a jet when
  ΔR(track, jet) < 0.239 + exp(−1.22 − 1.64·10⁻⁵ · pT[MeV]) (wider for soft jets); a track inside
  several cones goes to the closest jet only.
- Impact parameters w.r.t. the reconstructed hard-scatter vertex
  (:func:`lhcml.sim.vertexing.impact_parameters`: the track removed from the vertex, the vertex
  covariance with its beam-spot constraint added to the track's, as ATLAS's IP estimator).
- Loose track selection of GN-style taggers: |d0| < 3.5 mm, |z0 sinθ| < 5 mm w.r.t. the primary
  vertex, ≥ 7 silicon hits, ≤ 2 silicon holes, ≤ 1 pixel hole (values in ``detector_params.yaml``).
- Lifetime-signed impact-parameter significances (:func:`signed_ip_significance`), tracks sorted
  by |signed d0 significance| (descending), truncated at ``n_slots``, padded slots all zero with
  ``valid`` False.
- Truth labels: ``ftagTruthOriginLabel`` (:data:`~lhcml.data.schema.TRUTH_ORIGIN`, pile-up 0),
  ``ftagTruthVertexIndex`` (0 = hard-scatter primary vertex, 1, 2, ... for the distinct displaced
  truth vertices in the jet ordered by production radius, −1 for fakes and pile-up) and
  ``ftagTruthTypeLabel`` (:data:`TRUTH_TYPE_LABEL`, signed by the truth charge).
"""

from __future__ import annotations

import awkward as ak
import numba
import numpy as np

from lhcml.data.schema import N_TRACKS, TRACK_DTYPE, TRUTH_ORIGIN
from lhcml.errors import SchemaError
from lhcml.sim.detector import DetectorParams, default_detector_params
from lhcml.sim.vertexing import VertexResult, impact_parameters

#: ftagTruthTypeLabel values (as ATLAS's FlavorTagDiscriminants truth types); the stored label is
#: signed by the truth particle's charge (e.g. −2 for a π−, +4 for an e+); 0 for fakes
TRUTH_TYPE_LABEL = {"none": 0, "other": 1, "pion": 2, "kaon": 3, "electron": 4, "muon": 5}

_TRACK_FIELDS_NEEDED = (
    "pt", "eta", "phi", "theta", "qOverP", "charge", "d0", "z0", "d0Uncertainty",
    "z0SinThetaUncertainty", "phiUncertainty", "thetaUncertainty", "qOverPUncertainty",
    "numberOfPixelHits", "numberOfSCTHits", "numberOfPixelHoles", "numberOfSCTHoles",
    "origin", "vertex_index", "truthPdgId", "truthParentPdgId", "truthProductionRadius",
    "is_pileup",
)
_COPIED = (
    "d0Uncertainty", "z0SinThetaUncertainty", "phiUncertainty", "thetaUncertainty",
    "qOverPUncertainty", "numberOfInnermostPixelLayerHits", "numberOfNextToInnermostPixelLayerHits",
    "numberOfInnermostPixelLayerSharedHits", "numberOfInnermostPixelLayerSplitHits",
    "numberOfPixelHits", "numberOfPixelHoles", "numberOfPixelSharedHits", "numberOfPixelSplitHits",
    "numberOfSCTHits", "numberOfSCTHoles", "numberOfSCTSharedHits", "leptonID", "truthPdgId",
    "truthParentPdgId", "truthProductionRadius", "qOverP",
)


def truth_type_label(pdg_id: np.ndarray, charge: np.ndarray | None = None) -> np.ndarray:
    """Signed ``ftagTruthTypeLabel`` from truth pdg ids.

    Parameters
    ----------
    pdg_id
        Truth pdg ids (0 = no truth particle, i.e. a fake track).
    charge
        Charges used for the sign of 'other' particles (whose charge does not follow from the id
        alone without a particle table); pions, kaons, electrons and muons are signed from the id.

    Returns
    -------
    np.ndarray
        int8 labels: 0 none, ±1 other, ±2 pion, ±3 kaon, ±4 electron, ±5 muon (sign = charge).
    """
    pid = np.asarray(pdg_id, dtype=np.int64)
    apid = np.abs(pid)
    lab = np.select(
        [apid == 0, apid == 211, apid == 321, apid == 11, apid == 13],
        [0, 2, 3, 4, 5],
        default=1,
    )
    sign = np.where((apid == 11) | (apid == 13), -np.sign(pid), np.sign(pid))
    if charge is not None:
        other = lab == 1
        sign = np.where(other, np.sign(np.asarray(charge)), sign)
    sign = np.where(sign == 0, 1, sign)
    return (lab * sign).astype(np.int8)


def association_cone(jet_pt_mev: np.ndarray, params: DetectorParams | None = None) -> np.ndarray:
    """ATLAS pT-dependent association cone ΔR = 0.239 + exp(−1.22 − 1.64·10⁻⁵ · pT[MeV])."""
    a = (params or default_detector_params()).association
    return a.cone_a + np.exp(a.cone_b + a.cone_c * np.asarray(jet_pt_mev, dtype=np.float64))


def signed_ip_significance(
    d0: np.ndarray,
    z0_sin_theta: np.ndarray,
    d0_uncertainty: np.ndarray,
    z0_sin_theta_uncertainty: np.ndarray,
    track_phi: np.ndarray,
    track_eta: np.ndarray,
    jet_phi: np.ndarray,
    jet_eta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Lifetime-signed transverse and longitudinal impact-parameter significances.

    The sign is positive when the track's point of closest approach lies in front of the primary
    vertex along the jet direction (ATLAS IP2D/IP3D convention):

    - d0: with the ATLAS perigee convention the point of closest approach is
      ``d0 (−sin φ, cos φ)``, so its projection on the jet direction has the sign of
      ``d0 · sin(φ_jet − φ_track)``;
    - z0: the sign of ``(η_jet − η_track) · z0 sinθ``.

    All arguments broadcast (e.g. tracks ``(n_jets, n_tracks)`` with jets ``(n_jets, 1)``).
    The significance is |IP| / σ with that sign (a zero projection counts as positive).

    Returns
    -------
    sd0, sz0
        float arrays of the broadcast shape.
    """
    d0 = np.asarray(d0, dtype=np.float64)
    z0st = np.asarray(z0_sin_theta, dtype=np.float64)
    proj = d0 * np.sin(np.asarray(jet_phi, dtype=np.float64) - np.asarray(track_phi, dtype=np.float64))
    sgn_d0 = np.where(proj >= 0, 1.0, -1.0)
    zproj = (np.asarray(jet_eta, dtype=np.float64) - np.asarray(track_eta, dtype=np.float64)) * z0st
    sgn_z0 = np.where(zproj >= 0, 1.0, -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd0 = sgn_d0 * np.abs(d0) / np.asarray(d0_uncertainty, dtype=np.float64)
        sz0 = sgn_z0 * np.abs(z0st) / np.asarray(z0_sin_theta_uncertainty, dtype=np.float64)
    return sd0, sz0


@numba.njit(cache=True)
def _assign(joff, jeta, jphi, jcone, toff, teta, tphi, tsel):
    """Closest jet (global index) whose cone contains each selected track, or −1."""
    nt = len(teta)
    out = np.full(nt, -1, dtype=np.int64)
    dr_out = np.zeros(nt)
    for e in range(len(joff) - 1):
        j0 = joff[e]
        j1 = joff[e + 1]
        if j1 == j0:
            continue
        for t in range(toff[e], toff[e + 1]):
            if not tsel[t]:
                continue
            best = -1
            bestdr = 1e9
            for j in range(j0, j1):
                deta = teta[t] - jeta[j]
                dphi = tphi[t] - jphi[j]
                while dphi > np.pi:
                    dphi -= 2 * np.pi
                while dphi < -np.pi:
                    dphi += 2 * np.pi
                dr = np.sqrt(deta * deta + dphi * dphi)
                if dr < jcone[j] and dr < bestdr:
                    best = j
                    bestdr = dr
            out[t] = best
            dr_out[t] = bestdr
    return out, dr_out


def _flat(array: ak.Array, fields, what: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    missing = [f for f in fields if f not in array.fields]
    if missing:
        raise SchemaError(f"{what} lack field(s) {missing}; needed: {list(fields)}")
    counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
    flat = ak.flatten(array[list(fields)], axis=1)
    return {f: ak.to_numpy(flat[f]) for f in fields}, counts


def _truth_vertex_index(jet_of, vertex_index, radius, origin, is_pileup) -> np.ndarray:
    """0 for the hard-scatter PV, 1, 2, ... per distinct displaced vertex in a jet, −1 none."""
    out = np.zeros(len(jet_of), dtype=np.int64)
    none = (origin == TRUTH_ORIGIN["fake"]) | is_pileup | (vertex_index < 0)
    out[none] = -1
    disp = ~none & (vertex_index != 0)
    if disp.any():
        jd = jet_of[disp].astype(np.int64)
        key = (jd << 32) | (vertex_index[disp].astype(np.int64) & 0xFFFFFFFF)
        ukey, inv = np.unique(key, return_inverse=True)
        minrad = np.full(len(ukey), np.inf)
        np.minimum.at(minrad, inv, radius[disp])
        gjet = ukey >> 32
        order = np.lexsort((minrad, gjet))
        first = np.searchsorted(gjet[order], gjet[order], side="left")
        rank = np.empty(len(ukey), dtype=np.int64)
        rank[order] = np.arange(len(ukey)) - first + 1
        out[disp] = np.minimum(rank[inv], 127)
    return out


def associate_tracks(
    jets: ak.Array,
    tracks: ak.Array,
    primary_vertex: np.ndarray | VertexResult,
    n_slots: int = N_TRACKS,
    params: DetectorParams | None = None,
    return_pileup_counts: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Associate tracks to jets and fill the padded per-jet track table.

    Parameters
    ----------
    jets
        One list of jets per event with fields ``pt`` (GeV), ``eta``, ``phi``.
    tracks
        One list of tracks per event from :func:`lhcml.sim.tracker.simulate_tracks`.
    primary_vertex
        The reconstructed primary vertices (:func:`lhcml.sim.vertexing.reconstruct_primary_vertices`
        of the same ``tracks``): d0 and z0 sinθ are then measured w.r.t. the hard-scatter vertex and
        their uncertainties include the vertex (beam-spot-constrained) covariance, the track removed
        from the vertex first (:func:`lhcml.sim.vertexing.impact_parameters`). Or an array of the
        hard-scatter vertex z (mm), one per event: d0 stays w.r.t. the beam line, z0 sinθ is
        ``(z0 − z_PV) sinθ`` and the uncertainties are the track's alone.
    n_slots
        Track slots per jet (40 as ATLAS GN-style taggers).
    params
        Detector parameters (association cone and loose selection); default: shipped file.
    return_pileup_counts
        Also return the number of associated pile-up tracks per jet (``n_truth_pileup_tracks``).

    Returns
    -------
    table : np.ndarray
        ``(n_jets_total, n_slots)`` array of :data:`~lhcml.data.schema.TRACK_DTYPE` (MeV, mm),
        jets in event order, tracks sorted by |IP3D_signed_d0_significance| descending; padded
        slots are all zero with ``valid`` False.
    n_tracks : np.ndarray
        Number of associated tracks per jet before truncation (int64).
    n_pileup : np.ndarray
        Only with ``return_pileup_counts``: associated pile-up tracks per jet.

    Raises
    ------
    SchemaError
        Missing fields, a different number of events in jets, tracks and vertices, or
        non-finite jet kinematics or vertex positions.
    """
    if n_slots < 1:
        raise SchemaError(f"n_slots must be >= 1, got {n_slots}")
    p = params or default_detector_params()
    a = p.association
    jcols, jcounts = _flat(jets, ("pt", "eta", "phi"), "jets")
    tcols, tcounts = _flat(tracks, _TRACK_FIELDS_NEEDED + tuple(
        f for f in _COPIED if f not in _TRACK_FIELDS_NEEDED), "tracks")
    vertices = primary_vertex if isinstance(primary_vertex, VertexResult) else None
    pvz = (vertices.z if vertices is not None
           else np.asarray(primary_vertex, dtype=np.float64).reshape(-1))
    if not (len(jcounts) == len(tcounts) == len(pvz)):
        raise SchemaError(
            f"jets ({len(jcounts)} events), tracks ({len(tcounts)} events) and primary_vertex "
            f"({len(pvz)}) must describe the same events"
        )
    if not np.all(np.isfinite(pvz)):
        raise SchemaError("primary_vertex contains NaN/inf: give the reconstructed PV z of every event")
    for f in ("pt", "eta", "phi"):
        if not np.all(np.isfinite(jcols[f])):
            raise SchemaError(f"jets.{f} contains NaN/inf")
    n_ev = len(jcounts)
    n_jets = int(jcounts.sum())
    joff = np.zeros(n_ev + 1, dtype=np.int64)
    np.cumsum(jcounts, out=joff[1:])
    toff = np.zeros(n_ev + 1, dtype=np.int64)
    np.cumsum(tcounts, out=toff[1:])
    tevt = np.repeat(np.arange(n_ev), tcounts)

    jpt_mev = jcols["pt"].astype(np.float64) * 1e3
    cone = association_cone(jpt_mev, p)
    t = {k: np.asarray(v) for k, v in tcols.items()}
    sin_t = np.sin(t["theta"])
    if vertices is not None:
        ip = impact_parameters(tracks, vertices)
        t["d0"], t["d0Uncertainty"] = ip["d0"], ip["d0Uncertainty"]
        t["z0SinThetaUncertainty"] = ip["z0SinThetaUncertainty"]
        z0st = ip["z0SinTheta"]
    else:
        z0st = (t["z0"] - pvz[tevt]) * sin_t
    n_si = t["numberOfPixelHits"].astype(np.int64) + t["numberOfSCTHits"]
    n_si_holes = t["numberOfPixelHoles"].astype(np.int64) + t["numberOfSCTHoles"]
    sel = (
        (np.abs(t["d0"]) < a.max_abs_d0)
        & (np.abs(z0st) < a.max_abs_z0sintheta)
        & (n_si >= a.min_si_hits)
        & (n_si_holes <= a.max_si_holes)
        & (t["numberOfPixelHoles"] <= a.max_pixel_holes)
    )
    jet_of, dr = _assign(joff, jcols["eta"].astype(np.float64), jcols["phi"].astype(np.float64),
                         cone, toff, t["eta"].astype(np.float64), t["phi"].astype(np.float64), sel)

    out = np.zeros((n_jets, n_slots), dtype=TRACK_DTYPE)
    ti = np.flatnonzero(jet_of >= 0)
    jt = jet_of[ti]
    n_tracks = np.bincount(jt, minlength=n_jets).astype(np.int64)
    pile = np.bincount(jt, weights=t["is_pileup"][ti].astype(np.float64), minlength=n_jets)
    if len(ti):
        jeta, jphi = jcols["eta"][jt].astype(np.float64), jcols["phi"][jt].astype(np.float64)
        sd0, sz0 = signed_ip_significance(
            t["d0"][ti], z0st[ti], t["d0Uncertainty"][ti], t["z0SinThetaUncertainty"][ti],
            t["phi"][ti], t["eta"][ti], jphi, jeta)
        order = np.lexsort((-np.abs(sd0), jt))
        jt_s = jt[order]
        first = np.searchsorted(jt_s, jt_s, side="left")
        rank = np.arange(len(order)) - first
        keep = rank < n_slots
        src = ti[order][keep]
        jj, rr = jt_s[keep], rank[keep]
        o = order[keep]
        dst = out[jj, rr]  # a copy: fill field by field, then write back
        dst["pt"] = t["pt"][src] * 1e3
        dst["eta"] = t["eta"][src]
        dst["phi"] = t["phi"][src]
        deta = t["eta"][src] - jeta[o]
        dphi = (t["phi"][src] - jphi[o] + np.pi) % (2 * np.pi) - np.pi
        dst["deta"] = deta
        dst["dphi"] = dphi
        dst["dr"] = dr[src]
        dst["ptfrac"] = t["pt"][src] / jcols["pt"][jj]
        dst["d0"] = t["d0"][src]
        dst["z0SinTheta"] = z0st[src]
        dst["IP3D_signed_d0_significance"] = sd0[o]
        dst["IP3D_signed_z0_significance"] = sz0[o]
        for f in _COPIED:
            if f in t:
                dst[f] = t[f][src]
        dst["ftagTruthOriginLabel"] = t["origin"][src]
        vtx = _truth_vertex_index(jt, t["vertex_index"][ti], t["truthProductionRadius"][ti],
                                  t["origin"][ti], t["is_pileup"][ti].astype(bool))
        dst["ftagTruthVertexIndex"] = vtx[o]
        dst["ftagTruthTypeLabel"] = truth_type_label(t["truthPdgId"][src], t["charge"][src])
        dst["valid"] = True
        out[jj, rr] = dst
    if return_pileup_counts:
        return out, n_tracks, pile.astype(np.int64)
    return out, n_tracks
