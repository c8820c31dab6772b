"""Parametric ATLAS-like tracker: particles in, reconstructed tracks out (docs/simulation.md).

:func:`simulate_tracks` turns the generator's particle table (one list of particles per event,
GeV and mm, see :mod:`lhcml.sim.generator`) into reconstructed tracks per event. Everything is
vectorised over all particles of all events (numpy), with one numba kernel for the pairwise
search of merged clusters; there is no per-particle Python loop.

What happens to a particle
--------------------------
1. **Selection**: stable charged particles with true pT > ``acceptance.pt_min_true`` and
   |η| < ``eta_max`` + 0.1 produced inside the outermost pixel layer.
2. **Material** (inside the pixel volume, ``material`` block): hadrons interact at the beam pipe
   or a pixel layer with probability x/λ_I / sinθ per layer; an interacting charged hadron is
   lost and 1 + Poisson(n) charged secondaries (``otherSecondary``, parent = the hadron) start at
   the interaction point. Photons convert into e+e− (probability 7/9 · x/X0 / sinθ per layer).
3. **Helix**: the true perigee (d0, z0, φ0, θ, q/p) of the particle's helix in the solenoid with
   respect to the beam line (x = y = 0), in the ATLAS convention: the point of closest approach
   is ``(-d0 sinφ0, d0 cosφ0, z0)``, i.e. d0 > 0 when the track goes clockwise around the beam
   line seen from +z. A particle produced at a displaced vertex gets the d0, z0 of its own helix.
4. **Hits** (:mod:`lhcml.sim.hit_patterns`): the helix is intersected with each barrel cylinder
   (``|z| < half_length``) and end-cap disk beyond the production radius; each surface is tiled
   by modules (φ staves × z modules / rings) whose neighbours overlap in φ (a second hit on the
   layer), a fraction of them dead (no hit); a live module gives a hit per side with the
   per-layer hit efficiency; an expected hit missing between the first and last hits (dead
   module or inefficiency) is a hole. Tracks whose crossing points on a layer lie within about
   two pitches of another charged particle's share that cluster (``numberOf*SharedHits``)
   unless the clustering splits it (``numberOf*SplitHits``); a track is dropped with
   probability 1 − (1 − p)^n_shared_modules, ``p = shared_hits.lost_probability`` (lost tracks
   in dense jet cores, as the ambiguity solver).
5. **Efficiency**: ε(η)·ε(pT)/ε_ref (ATLAS Loose tables) × ε(production radius) × a lepton
   factor, together with ≥ ``min_si_hits`` silicon hits, ≥ ``min_pixel_hits`` pixel hits and
   the standard-tracking |d0|, |z0| acceptance.
6. **Resolution** (:mod:`lhcml.sim.track_resolution`): σ(d0) = a ⊕ b/(pT √sinθ) (× r_first_hit /
   r_IBL when the first hit is not on the IBL), likewise z0·sinθ, φ, θ (via cotθ) and q/p; tails
   from three sources, each at its configured rate and with its own effect on each parameter:
   elastic hadron scattering in the material (a kink), a shared pixel cluster in a dense core,
   a wrong hit from pattern recognition (more often where tracks are dense). ``tailSource``
   records which fired. The reported uncertainties are the core σ (what a fit reports).
7. **Fakes**: random hit combinations seeded around each real track at a rate growing with the
   number of neighbouring tracks; their hit patterns come from the module geometry like real
   tracks' (a random hit in the road with probability ``fakes.hit_probability_*``), and only
   those passing the hit requirements are kept; origin ``fake``, truthPdgId 0.
8. **Lepton ID**: tracks of true electrons/muons get ``leptonID`` = ±11/±13 (sign = charge) with
   an identification efficiency (much lower for conversion electrons); hadrons are mis-identified
   at a small rate.

Modules: helix geometry :mod:`lhcml.sim.helix`; material :mod:`lhcml.sim.material_interactions`;
hits, shared/split clusters :mod:`lhcml.sim.hit_patterns`; efficiency and lepton ID
:mod:`lhcml.sim.track_efficiency`; resolution and tails :mod:`lhcml.sim.track_resolution`; fakes
:mod:`lhcml.sim.fake_tracks`. This module runs them in order (:func:`simulate_tracks`).

Output (one list per event): see :data:`TRACK_OUTPUT_FIELDS`. ``pt`` is in GeV like the particle
table, ``qOverP`` and its uncertainty in 1/MeV (the schema unit), lengths in mm.

Limitations (documented, not hidden): no energy loss or bremsstrahlung on the helix, no d0-φ
correlation in the smearing, straight-line (in r-z) material crossing of the end-caps is not
simulated (interactions, conversions and elastic kinks happen in the barrel pixel material
only), SCT sharing uses the strip direction only, dead modules count as holes (ATLAS counts them
separately as dead sensors), module overlaps only in φ.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.sim.detector import DetectorParams, default_detector_params
from lhcml.sim.fake_tracks import fake_tracks
from lhcml.sim.helix import Helix, true_perigee, wrap_phi
from lhcml.sim.hit_patterns import (
    SHARE_WINDOW,
    _merged_clusters,
    cluster_windows,
    hit_pattern,
    neighbour_counts,
    shared_split,
    surface_geometry,
)
from lhcml.sim.material_interactions import (
    SECONDARY_VERTEX_OFFSET,
    event_of,
    local_index,
    material_secondaries,
)
from lhcml.sim.track_efficiency import lepton_identification, reconstruction_efficiency
from lhcml.sim.track_resolution import (
    TAIL_DENSE_CORE,
    TAIL_MATERIAL,
    TAIL_PATTERN,
    core_resolutions,
    material_kinks,
    tail_factors,
    tail_flags,
)

__all__ = ["SECONDARY_VERTEX_OFFSET", "TRACK_OUTPUT_FIELDS", "simulate_tracks", "true_perigee"]

#: fields of each reconstructed track returned by :func:`simulate_tracks` and their dtypes
TRACK_OUTPUT_FIELDS: dict[str, str] = {
    "pt": "f8",  # GeV
    "eta": "f8",
    "phi": "f8",
    "theta": "f8",
    "qOverP": "f8",  # 1/MeV
    "charge": "i1",
    "d0": "f8",  # mm, w.r.t. the beam line, ATLAS sign convention
    "z0": "f8",  # mm, w.r.t. the nominal interaction point (z = 0)
    "d0Uncertainty": "f8",
    "z0SinThetaUncertainty": "f8",
    "phiUncertainty": "f8",
    "thetaUncertainty": "f8",
    "qOverPUncertainty": "f8",  # 1/MeV
    "numberOfInnermostPixelLayerHits": "u1",
    "numberOfNextToInnermostPixelLayerHits": "u1",
    "numberOfInnermostPixelLayerSharedHits": "u1",
    "numberOfInnermostPixelLayerSplitHits": "u1",
    "numberOfPixelHits": "u1",
    "numberOfPixelHoles": "u1",
    "numberOfPixelSharedHits": "u1",
    "numberOfPixelSplitHits": "u1",
    "numberOfSCTHits": "u1",
    "numberOfSCTHoles": "u1",
    "numberOfSCTSharedHits": "u1",
    "leptonID": "i1",
    "origin": "i1",  # TRUTH_ORIGIN (pileup 0 for pile-up particles, fake 1, otherSecondary 7, ...)
    "vertex_index": "i4",  # truth vertex id of the particle (0 = hard-scatter PV; -1 fakes)
    "truthPdgId": "i4",
    "truthParentPdgId": "i4",
    "truthProductionRadius": "f8",  # mm
    "is_pileup": "?",
    "particle_index": "i8",  # index in the event's particle list (-1 fakes and material secondaries)
    "truth_pt": "f8",  # GeV, for validation
    "truth_d0": "f8",  # mm, true perigee (0 for fakes)
    "truth_z0": "f8",
    "truth_phi": "f8",
    "truth_theta": "f8",
    "tailSource": "u1",  # bits: 1 material scatter, 2 dense-core shared hit, 4 pattern recognition (0 core)
}

_FIELDS_NEEDED = ("pid", "charge", "px", "py", "pz", "e", "m", "vx", "vy", "vz", "final",
                  "parent_pid", "origin", "vertex_index", "is_pileup")


def _flatten(particles: ak.Array) -> tuple[dict[str, np.ndarray], np.ndarray]:
    missing = [f for f in _FIELDS_NEEDED if f not in particles.fields]
    if missing:
        from lhcml.errors import SchemaError

        raise SchemaError(
            f"particle table lacks field(s) {missing}; simulate_tracks needs {list(_FIELDS_NEEDED)} "
            "(build it with lhcml.sim.generator)"
        )
    counts = ak.to_numpy(ak.num(particles, axis=1)).astype(np.int64)
    flat = ak.flatten(particles[list(_FIELDS_NEEDED)], axis=1)
    cols = {f: ak.to_numpy(flat[f]) for f in _FIELDS_NEEDED}
    return cols, counts


def simulate_tracks(particles: ak.Array, rng: np.random.Generator,
                    params: DetectorParams | None = None) -> ak.Array:
    """Reconstructed tracks of each event from its particle table.

    Parameters
    ----------
    particles
        One list of particles per event with at least the fields ``pid, charge, px, py, pz, e, m``
        (GeV), ``vx, vy, vz`` (mm, lab frame), ``final``, ``parent_pid``, ``origin``,
        ``vertex_index``, ``is_pileup`` (the table of :mod:`lhcml.sim.generator`).
    rng
        Random generator; the same seed and input give identical output.
    params
        Detector parameters (default: the shipped ``detector_params.yaml``).

    Returns
    -------
    ak.Array
        One list of tracks per event with the fields of :data:`TRACK_OUTPUT_FIELDS`: real tracks
        in particle order, then material secondaries, then fakes.

    Raises
    ------
    SchemaError
        If the particle table lacks a needed field.
    """
    p = params or default_detector_params()
    cols, counts = _flatten(particles)
    n_events = len(counts)
    offsets = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    cols = {k: np.asarray(v) for k, v in cols.items()}
    cols["charge"] = cols["charge"].astype(np.int8)

    # ---- material interactions and conversions --------------------------------------
    lost, sec = material_secondaries(cols, offsets, rng, p)
    alive = np.ones(int(offsets[-1]), dtype=bool)
    alive[lost] = False

    # ---- charged candidates -----------------------------------------------------------
    acc = p.acceptance
    r_pix_out = max(layer.radius for layer in p.barrel_layers if layer.kind == "pixel")
    idx = np.flatnonzero(cols["final"] & (cols["charge"] != 0) & alive)
    pt2 = cols["px"][idx] ** 2 + cols["py"][idx] ** 2
    rv2 = cols["vx"][idx] ** 2 + cols["vy"][idx] ** 2
    idx = idx[(pt2 > acc.pt_min_true**2) & (cols["pz"][idx] ** 2 < np.sinh(acc.eta_max + 0.1) ** 2 * pt2)
              & (rv2 < r_pix_out**2)]
    c = {k: v[idx] for k, v in cols.items()}
    c["_evt"] = event_of(idx, offsets)
    c["_pidx"] = local_index(idx, offsets)
    if sec is not None:
        spt = np.hypot(sec["px"], sec["py"])
        with np.errstate(divide="ignore", invalid="ignore"):
            seta = np.arcsinh(sec["pz"] / spt)
        srv = np.hypot(sec["vx"], sec["vy"])
        ssel = (spt > acc.pt_min_true) & (np.abs(seta) < acc.eta_max + 0.1) & (srv < r_pix_out)
        for k in c:
            c[k] = np.concatenate([c[k], sec[k][ssel].astype(c[k].dtype)])
    order = np.argsort(c["_evt"], kind="stable")
    c = {k: v[order] for k, v in c.items()}
    n = len(c["_evt"])
    cevt = c["_evt"]
    coff = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(np.bincount(cevt, minlength=n_events), out=coff[1:])

    q = c["charge"].astype(np.float64)
    hel = Helix(c["vx"], c["vy"], c["vz"], c["px"], c["py"], c["pz"], q, p.field_tesla)
    d0_t, z0_t, phi_t = hel.perigee()
    pt_t = hel.pt
    ptot_t = np.sqrt(pt_t**2 + c["pz"] ** 2)
    theta_t = np.arctan2(pt_t, c["pz"])
    eta_t = -np.log(np.tan(0.5 * theta_t))
    qp_t = q / ptot_t
    r_prod = np.hypot(c["vx"], c["vy"])

    # ---- layer crossings and hits -----------------------------------------------------
    geom = surface_geometry(p)
    is_pix = geom.is_pixel
    crossed, alpha, phi_pos, w_pos, rad_pos, n_side_hits, n_holes = hit_pattern(
        c["vx"], c["vy"], c["vz"], c["px"], c["py"], c["pz"], q, p, rng)
    any_hit = n_side_hits > 0
    n_pix = n_side_hits[:, is_pix].sum(axis=1)
    n_sct = n_side_hits[:, ~is_pix].sum(axis=1)
    n_pix_holes = n_holes[:, is_pix].sum(axis=1)
    n_sct_holes = n_holes[:, ~is_pix].sum(axis=1)
    ibl_hit = n_side_hits[:, 0]
    blayer_hit = n_side_hits[:, 1]

    # ---- merged clusters (shared / split hits) ---------------------------------------
    sh = p.shared_hits
    drphi, dw = cluster_windows(p, is_pix)
    merged = _merged_clusters(coff, eta_t, phi_t, crossed, phi_pos, w_pos, rad_pos, drphi, dw,
                              SHARE_WINDOW)
    merged &= any_hit
    (n_pix_shared, n_sct_shared, n_pix_split, ibl_shared, ibl_split) = shared_split(
        merged, n_side_hits, is_pix, rng, sh)
    shared_modules = n_pix_shared + n_sct_shared // 2

    apid = np.abs(c["pid"])
    # ---- efficiency -------------------------------------------------------------------
    eps = reconstruction_efficiency(eta_t, pt_t, r_prod, apid, theta_t, ptot_t, p)
    sin_t = np.sin(theta_t)
    u_eff = rng.random(n)
    u_lost = rng.random(n)
    reco = (
        (u_eff < eps)
        & (n_pix + n_sct >= acc.min_si_hits)
        & (n_pix >= acc.min_pixel_hits)
        & (np.abs(d0_t) < acc.max_abs_d0)
        & (np.abs(z0_t) < acc.max_abs_z0)
        & (u_lost >= 1.0 - (1.0 - sh.lost_probability) ** shared_modules)
    )

    # ---- resolution and smearing -------------------------------------------------------
    r_ibl = p.barrel_layers[0].radius
    first_k = np.argmin(np.where(any_hit & is_pix[None, :], alpha, np.inf), axis=1)
    r_first = np.where(n_pix > 0, rad_pos[np.arange(n), first_k], r_ibl)
    lever = np.maximum(r_first / r_ibl, 1.0)
    s_d0, s_z0, s_phi, s_theta, s_qp = core_resolutions(pt_t, theta_t, eta_t, qp_t, lever, p)
    nb_pat = neighbour_counts(coff, eta_t, phi_t, p.tails.density_radius)
    kinked, k_d0, k_z0, k_phi, k_theta = material_kinks(apid > 100, r_prod, theta_t, ptot_t, rng, p)
    dense, pattern = tail_flags(n_pix_shared, nb_pat, rng, p)
    fac = tail_factors(dense, pattern, p)
    g = rng.standard_normal((n, 5)) * fac.T
    d0 = d0_t + k_d0 + s_d0 * g[:, 0]
    z0 = z0_t + k_z0 + s_z0 / sin_t * g[:, 1]
    phi = wrap_phi(phi_t + k_phi + s_phi * g[:, 2])
    theta = np.clip(theta_t + k_theta + s_theta * g[:, 3], 1e-4, np.pi - 1e-4)
    qp = qp_t + s_qp * g[:, 4]
    qp = np.where(qp == 0, qp_t, qp)
    tail_src = (kinked * TAIL_MATERIAL + dense * TAIL_DENSE_CORE + pattern * TAIL_PATTERN).astype(np.uint8)
    charge = np.sign(qp).astype(np.int8)
    pt = np.sin(theta) / np.abs(qp)
    eta = -np.log(np.tan(0.5 * theta))
    reco &= (pt > acc.pt_min) & (np.abs(eta) < acc.eta_max)

    # ---- lepton identification ---------------------------------------------------------
    lepton = lepton_identification(apid, pt_t, ptot_t, c["parent_pid"], c["origin"], charge, rng, p)

    origin = np.where(c["is_pileup"], TRUTH_ORIGIN["pileup"], c["origin"]).astype(np.int8)
    real = {
        "pt": pt, "eta": eta, "phi": phi, "theta": theta, "qOverP": qp * 1e-3, "charge": charge,
        "d0": d0, "z0": z0,
        "d0Uncertainty": s_d0, "z0SinThetaUncertainty": s_z0, "phiUncertainty": s_phi,
        "thetaUncertainty": s_theta, "qOverPUncertainty": s_qp * 1e-3,
        "numberOfInnermostPixelLayerHits": ibl_hit,
        "numberOfNextToInnermostPixelLayerHits": blayer_hit,
        "numberOfInnermostPixelLayerSharedHits": ibl_shared,
        "numberOfInnermostPixelLayerSplitHits": ibl_split,
        "numberOfPixelHits": n_pix, "numberOfPixelHoles": n_pix_holes,
        "numberOfPixelSharedHits": n_pix_shared, "numberOfPixelSplitHits": n_pix_split,
        "numberOfSCTHits": n_sct, "numberOfSCTHoles": n_sct_holes,
        "numberOfSCTSharedHits": n_sct_shared,
        "leptonID": lepton, "origin": origin, "vertex_index": c["vertex_index"],
        "truthPdgId": c["pid"], "truthParentPdgId": c["parent_pid"],
        "truthProductionRadius": r_prod, "is_pileup": c["is_pileup"],
        "particle_index": c["_pidx"], "truth_pt": pt_t, "truth_d0": d0_t, "truth_z0": z0_t,
        "truth_phi": phi_t, "truth_theta": theta_t, "tailSource": tail_src,
    }
    real = {k: v[reco] for k, v in real.items()}
    real_evt = cevt[reco]

    # ---- fakes --------------------------------------------------------------------------
    geo_real = {"crossed": crossed[reco], "phi_pos": phi_pos[reco], "w_pos": w_pos[reco],
                "rad_pos": rad_pos[reco], "eta": eta_t[reco], "phi": phi_t[reco]}
    fakes, fake_evt = fake_tracks(real, real_evt, geo_real, n_events, rng, p)

    out_evt = np.concatenate([real_evt, fake_evt])
    order = np.argsort(out_evt, kind="stable")
    columns = {}
    for k, dt in TRACK_OUTPUT_FIELDS.items():
        columns[k] = np.concatenate([np.asarray(real[k]), np.asarray(fakes[k])]).astype(dt)[order]
    counts_out = np.bincount(out_evt, minlength=n_events).astype(np.int64)
    return ak.unflatten(ak.zip(columns, depth_limit=1), counts_out)
