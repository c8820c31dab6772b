"""Particle-flow-like jet inputs: reconstructed tracks + neutral calorimeter towers.

A deliberately simple, documented model of ATLAS particle flow (PFlow):

Charged objects
    Reconstructed tracks (from :func:`lhcml.sim.tracker.simulate_tracks`) compatible with the
    reconstructed primary vertex, ``|Δz0 · sinθ| <`` :data:`CHS_DZ0_SINTHETA` (charged-hadron
    subtraction: pileup tracks are removed). Four-momentum from the track with the pion mass
    (electron/muon mass for tracks matched to a true electron/muon). The calorimeter energy of
    every particle that has a reconstructed track is removed (perfect energy-flow subtraction).
    Tracks of material secondaries (conversions, hadronic interactions) are not flow objects:
    their parent particle deposits its energy in the calorimeter; fake tracks are kept.

Neutral objects
    Every other stable particle with ``|η| < 4.9`` deposits energy in 0.1 × 0.1 (η × φ) towers:
    photons and electrons in the EM tower (resolution 10 %/√E ⊕ 0.7 %), hadrons in the hadronic
    tower (50 %/√E ⊕ 3 %; baryons deposit their kinetic energy, antibaryons E + m), muons only a
    minimum-ionising :data:`MUON_MIP_GEV`, neutrinos nothing. Charged particles below
    :data:`CURL_PT_GEV` curl up in the 2 T field inside the calorimeter radius and deposit
    nothing. The impact point is projected from the particle's production vertex onto a cylinder
    of radius :data:`CALO_RADIUS` (pileup vertices at ``z ≠ 0`` hit different towers); each tower
    becomes one massless object pointing from the reconstructed primary vertex to the tower
    centre. Gaussian electronic noise (:data:`NOISE_EM_GEV`, :data:`NOISE_HAD_GEV`) is added to
    towers that received energy, and towers below 3σ of noise are dropped.

Everything is vectorised over all particles of all events (numpy).
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from lhcml.sim.generator import FlatTable, insert_per_event

#: calorimeter coverage
CALO_ETA_MAX = 4.9
#: tower size in η and number of towers in φ (2π / 64 = 0.098)
TOWER_DETA = 0.1
N_PHI = 64
N_ETA = int(round(2 * CALO_ETA_MAX / TOWER_DETA))
#: radius (mm) of the cylinder on which impact points are computed
CALO_RADIUS = 1500.0
#: EM and hadronic resolutions: sigma/E = a / sqrt(E) (+) c
EM_STOCHASTIC, EM_CONSTANT = 0.10, 0.007
HAD_STOCHASTIC, HAD_CONSTANT = 0.50, 0.03
#: electronic noise per tower (GeV, our choice) and the 3-sigma threshold
NOISE_EM_GEV = 0.10
NOISE_HAD_GEV = 0.20
NOISE_THRESHOLD_SIGMA = 3.0
#: energy deposited by a muon (GeV)
MUON_MIP_GEV = 2.0
#: charged particles below this pT (GeV) curl up before the calorimeter: 0.3 B R / 2
CURL_PT_GEV = 0.45
#: charged-hadron subtraction window (mm)
CHS_DZ0_SINTHETA = 2.0

#: object kinds (match FLOW_DTYPE flags)
KIND_PHOTON, KIND_NEUTRAL_HADRON, KIND_CHARGED_HADRON, KIND_ELECTRON, KIND_MUON = 0, 1, 2, 3, 4

_M_PI = 0.13957039
_M_E = 0.000511
_M_MU = 0.1056584
_NEUTRINOS = (12, 14, 16)


def _resolution(e: np.ndarray, a: float, c: float) -> np.ndarray:
    return np.sqrt((a / np.sqrt(np.maximum(e, 1e-6))) ** 2 + c**2)


def tower_sums(key: np.ndarray, energy: np.ndarray, n_keys: int, dense: bool | None = None):
    """Occupied tower keys (sorted) and the summed energy of each.

    ``dense`` (default: when ``n_keys`` is at most 4 × the number of deposits) sums on the full
    grid of ``n_keys`` towers instead of sorting the keys; both give identical sums (each adds
    the deposits of a tower in input order).
    """
    if dense is None:
        dense = n_keys <= 4 * len(key)
    if dense:
        ukey = np.flatnonzero(np.bincount(key, minlength=n_keys))
        return ukey, np.bincount(key, weights=energy, minlength=n_keys)[ukey]
    ukey, inv = np.unique(key, return_inverse=True)
    return ukey, np.bincount(inv, weights=energy, minlength=len(ukey))


def build_pflow(
    particles: ak.Array,
    tracks: ak.Array | None,
    primary_vertex_z: np.ndarray,
    rng: np.random.Generator,
) -> ak.Array:
    """Particle-flow objects per event.

    Parameters
    ----------
    particles
        Particle table (:data:`lhcml.sim.generator.PARTICLE_FIELDS`), detector frame, GeV/mm.
    tracks
        Reconstructed tracks per event with at least ``pt`` (GeV), ``eta``, ``phi``, ``charge``
        (or ``qOverP``), ``z0`` (mm, w.r.t. the beam-line origin) and ``particle_index`` (index
        into the event's particle list, -1 for fakes); ``d0``, ``z0SinTheta`` (or ``z0``),
        ``d0Uncertainty``, ``z0SinThetaUncertainty`` are carried when present. ``None``: no
        tracker (every charged particle goes to the calorimeter).
    primary_vertex_z
        Reconstructed primary-vertex z per event (mm).
    rng
        Random generator (calorimeter resolution and noise).

    Returns
    -------
    ak.Array
        Per event, objects with fields ``px, py, pz, E, pt, eta, phi`` (GeV), ``charge``,
        ``kind`` (``KIND_*``), ``d0, z0SinTheta, d0Uncertainty, z0SinThetaUncertainty`` (mm,
        0 for neutrals) and ``track_index`` (index into the event's tracks, -1 for towers).
    """
    flat_tracks = None if tracks is None else FlatTable.from_awkward(tracks)
    table = FlatTable.from_awkward(particles, ["final", "pid", "px", "py", "pz", "e", "m", "vz", "charge"])
    return build_pflow_flat(table, flat_tracks, primary_vertex_z, rng).to_awkward()


def build_pflow_flat(
    particles: FlatTable,
    tracks: FlatTable | None,
    primary_vertex_z: np.ndarray,
    rng: np.random.Generator,
) -> FlatTable:
    """:func:`build_pflow` on flat tables (same random draws, same objects)."""
    n_ev = len(particles)
    pv_z = np.asarray(primary_vertex_z, dtype=np.float64)
    offs_p = particles.offsets
    final = particles["final"]
    pid = particles["pid"]
    px = particles["px"]
    py = particles["py"]
    pz = particles["pz"]
    e = particles["e"]
    m = particles["m"]
    vz = particles["vz"]
    charge = particles["charge"]
    evt_p = particles.event

    # ---- tracks -----------------------------------------------------------------------------
    tracked = np.zeros(len(pid), dtype=bool)
    trk_cols: dict[str, np.ndarray] = {}
    if tracks is not None:
        tflat = tracks.columns
        fields = set(tflat)
        evt_t = tracks.event
        pidx = tflat["particle_index"].astype(np.int64)
        real = pidx >= 0
        tracked[offs_p[evt_t[real]] + pidx[real]] = True
        t_pt = tflat["pt"].astype(np.float64)
        t_eta = tflat["eta"].astype(np.float64)
        t_phi = tflat["phi"].astype(np.float64)
        if "charge" in fields:
            t_q = tflat["charge"].astype(np.int8)
        else:
            t_q = np.sign(tflat["qOverP"]).astype(np.int8)
        sin_t = 1.0 / np.cosh(t_eta)
        if "z0" in fields:
            z0 = tflat["z0"].astype(np.float64)
            dz0st = (z0 - pv_z[evt_t]) * sin_t
        else:
            dz0st = tflat["z0SinTheta"].astype(np.float64)
        keep = np.abs(dz0st) < CHS_DZ0_SINTHETA
        if "origin" in fields:
            # material secondaries (conversions, hadronic interactions): their parent's energy
            # is already in the calorimeter, so they are not separate flow objects
            t_origin = tflat["origin"]
            keep &= real | (t_origin == 1)
        # only the tracks kept by the charged-hadron subtraction become flow objects
        k = np.flatnonzero(keep)
        pk = pidx[k]
        realk = pk >= 0
        tpid = np.zeros(len(k), dtype=np.int32)
        tpid[realk] = np.abs(pid[offs_p[evt_t[k][realk]] + pk[realk]])
        kind = np.full(len(k), KIND_CHARGED_HADRON, dtype=np.int8)
        kind[tpid == 11] = KIND_ELECTRON
        kind[tpid == 13] = KIND_MUON
        mass = np.where(kind == KIND_ELECTRON, _M_E, np.where(kind == KIND_MUON, _M_MU, _M_PI))

        def opt(name: str) -> np.ndarray:
            return tflat[name][k].astype(np.float64) if name in fields else np.zeros(len(k))

        pt_k, eta_k, phi_k = t_pt[k], t_eta[k], t_phi[k]
        tpx = pt_k * np.cos(phi_k)
        tpy = pt_k * np.sin(phi_k)
        tpz = pt_k * np.sinh(eta_k)
        tE = np.sqrt(tpx**2 + tpy**2 + tpz**2 + mass**2)
        local_idx = k - tracks.offsets[evt_t[k]]
        trk_cols = {
            "px": tpx,
            "py": tpy,
            "pz": tpz,
            "E": tE,
            "pt": pt_k,
            "eta": eta_k,
            "phi": phi_k,
            "charge": t_q[k],
            "kind": kind,
            "d0": opt("d0"),
            "z0SinTheta": dz0st[k],
            "d0Uncertainty": opt("d0Uncertainty"),
            "z0SinThetaUncertainty": opt("z0SinThetaUncertainty"),
            "track_index": local_idx.astype(np.int32),
        }
        trk_evt = evt_t[k]
    else:
        trk_evt = np.zeros(0, dtype=np.int64)

    # ---- calorimeter deposits ---------------------------------------------------------------
    # kinematics only for the untracked final-state particles
    pre = np.flatnonzero(final & ~tracked)
    a = np.abs(pid[pre])
    pt = np.hypot(px[pre], py[pre])
    with np.errstate(divide="ignore", invalid="ignore"):
        sinh_eta = np.where(pt > 0, pz[pre] / np.where(pt > 0, pt, 1.0), 1e9)
    eta = np.arcsinh(sinh_eta)
    dep = (
        (a != _NEUTRINOS[0])
        & (a != _NEUTRINOS[1])
        & (a != _NEUTRINOS[2])
        & (np.abs(eta) < CALO_ETA_MAX)
        & ~((charge[pre] != 0) & (pt < CURL_PT_GEV))
    )
    idx = pre[dep]
    a = a[dep]
    sinh_eta = sinh_eta[dep]
    is_em = (a == 22) | (a == 11)
    is_mu = a == 13
    baryon = (a > 1000) & (a < 10000)
    energy = e[idx].copy()
    energy = np.where(baryon & (pid[idx] > 0), energy - m[idx], energy)
    energy = np.where(baryon & (pid[idx] < 0), energy + m[idx], energy)
    energy = np.where(is_mu, np.minimum(energy, MUON_MIP_GEV), energy)
    # impact point on the calorimeter cylinder, seen from the detector origin
    eta_det = np.arcsinh(sinh_eta + vz[idx] / CALO_RADIUS)
    phi = np.arctan2(py[idx], px[idx])
    ieta = np.floor((eta_det + CALO_ETA_MAX) / TOWER_DETA).astype(np.int64)
    inside = (ieta >= 0) & (ieta < N_ETA)
    iphi = np.floor((phi + np.pi) / (2 * np.pi) * N_PHI).astype(np.int64) % N_PHI
    layer = np.where(is_em, 0, 1)
    ev = evt_p[idx]
    key = ((ev * 2 + layer) * N_ETA + ieta) * N_PHI + iphi
    key, energy = key[inside], energy[inside]
    ukey, tower_e = tower_sums(key, energy, n_ev * 2 * N_ETA * N_PHI)
    t_iphi = ukey % N_PHI
    t_ieta = (ukey // N_PHI) % N_ETA
    t_layer = (ukey // (N_PHI * N_ETA)) % 2
    t_ev = ukey // (N_PHI * N_ETA * 2)
    em = t_layer == 0
    res = np.where(
        em,
        _resolution(tower_e, EM_STOCHASTIC, EM_CONSTANT),
        _resolution(tower_e, HAD_STOCHASTIC, HAD_CONSTANT),
    )
    noise = np.where(em, NOISE_EM_GEV, NOISE_HAD_GEV)
    measured = tower_e * (1.0 + res * rng.standard_normal(len(tower_e))) + noise * rng.standard_normal(len(tower_e))
    ok = measured > NOISE_THRESHOLD_SIGMA * noise
    t_e = measured[ok]
    t_ev = t_ev[ok]
    eta_c = -CALO_ETA_MAX + (t_ieta[ok] + 0.5) * TOWER_DETA
    # direction from the reconstructed primary vertex to the tower centre
    t_eta = np.arcsinh(np.sinh(eta_c) - pv_z[t_ev] / CALO_RADIUS)
    t_phi = -np.pi + (t_iphi[ok] + 0.5) * (2 * np.pi / N_PHI)
    t_pt = t_e / np.cosh(t_eta)
    tow_cols = {
        "px": t_pt * np.cos(t_phi),
        "py": t_pt * np.sin(t_phi),
        "pz": t_pt * np.sinh(t_eta),
        "E": t_e,
        "pt": t_pt,
        "eta": t_eta,
        "phi": t_phi,
        "charge": np.zeros(len(t_e), dtype=np.int8),
        "kind": np.where(em[ok], KIND_PHOTON, KIND_NEUTRAL_HADRON).astype(np.int8),
        "d0": np.zeros(len(t_e)),
        "z0SinTheta": np.zeros(len(t_e)),
        "d0Uncertainty": np.zeros(len(t_e)),
        "z0SinThetaUncertainty": np.zeros(len(t_e)),
        "track_index": np.full(len(t_e), -1, dtype=np.int32),
    }

    # ---- merge per event (tracks first, then towers) ----------------------------------------
    # (both lists are already grouped by event: a block copy per event, no sort)
    towers = FlatTable(tow_cols, np.bincount(t_ev, minlength=n_ev))
    if not trk_cols:
        return towers
    trk_cols = {k: trk_cols[k].astype(np.result_type(trk_cols[k], tow_cols[k]), copy=False) for k in tow_cols}
    return insert_per_event(FlatTable(trk_cols, np.bincount(trk_evt, minlength=n_ev)), towers)


#: patches for the median pileup-density estimate: |eta| < RHO_ETA_MAX, RHO_N_ETA x RHO_N_PHI
RHO_ETA_MAX = 2.0
RHO_N_ETA = 8
RHO_N_PHI = 12


def pileup_density(objects: ak.Array) -> np.ndarray:
    """Median transverse-momentum density ρ (GeV per unit η×φ area) of each event.

    The ATLAS-style estimate of the diffuse (pileup + underlying event) energy density: the
    median over :data:`RHO_N_ETA` × :data:`RHO_N_PHI` patches in ``|η| <`` :data:`RHO_ETA_MAX`
    of the summed object pT divided by the patch area (the hard jets occupy few patches, so the
    median is insensitive to them). Jets are then corrected by ``pT → pT − ρ·A``.
    """
    return pileup_density_flat(FlatTable.from_awkward(objects, ["eta", "phi", "pt"]))


def pileup_density_flat(objects: FlatTable) -> np.ndarray:
    """:func:`pileup_density` of a flat object table."""
    n_ev = len(objects)
    eta = objects["eta"]
    phi = objects["phi"]
    pt = objects["pt"]
    ev = objects.event
    ok = np.abs(eta) < RHO_ETA_MAX
    ie = np.minimum(((eta[ok] + RHO_ETA_MAX) / (2 * RHO_ETA_MAX) * RHO_N_ETA).astype(np.int64), RHO_N_ETA - 1)
    ip = np.minimum(((phi[ok] + np.pi) / (2 * np.pi) * RHO_N_PHI).astype(np.int64), RHO_N_PHI - 1)
    n_patch = RHO_N_ETA * RHO_N_PHI
    key = ev[ok] * n_patch + ie * RHO_N_PHI + ip
    sums = np.bincount(key, weights=pt[ok], minlength=n_ev * n_patch).reshape(n_ev, n_patch)
    area = (2 * RHO_ETA_MAX / RHO_N_ETA) * (2 * np.pi / RHO_N_PHI)
    return np.median(sums, axis=1) / area
