"""Fake tracks: random hit combinations seeded around the reconstructed tracks.

Their rate grows with the local track density and the event's occupancy; their hit patterns
come from the module geometry like real tracks' (a random hit in the road with probability
``fakes.hit_probability_*``), and only those passing the hit requirements are kept; origin
``fake``, truthPdgId 0. Parameters: the ``fakes`` block of ``detector_params.yaml``
(docs/simulation.md). Called by :func:`lhcml.sim.tracker.simulate_tracks`.
"""

from __future__ import annotations

import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.sim.detector import DetectorParams
from lhcml.sim.helix import wrap_phi
from lhcml.sim.hit_patterns import (
    SHARE_WINDOW,
    _merged_clusters,
    cluster_windows,
    hit_pattern,
    neighbour_counts,
    shared_split,
    surface_geometry,
)
from lhcml.sim.track_resolution import core_resolutions


def fake_tracks(real: dict[str, np.ndarray], real_evt: np.ndarray, geo_real: dict[str, np.ndarray], n_events: int,
           rng: np.random.Generator, p: DetectorParams) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fake tracks from random hit combinations around the reconstructed tracks.

    Each real track seeds Poisson(base + density · n_neighbours + occupancy · N_tracks/1000)
    candidates (its neighbours within ``fakes.density_radius``: the local hit density; the event's
    track count: the global occupancy). A candidate is a helix near the seed track
    (spread in η, φ; broad d0; z0 near the seed's); its hit pattern comes from the module geometry
    (:func:`~lhcml.sim.hit_patterns.hit_pattern`) with the chance ``hit_probability_*`` of a random
    hit in its road per layer, its shared hits from the same cluster-merging search as real tracks,
    and it is kept only if it passes the real tracks' hit requirements.
    """
    f = p.fakes
    acc = p.acceptance
    n_real = np.bincount(real_evt, minlength=n_events).astype(np.int64)
    roff = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(n_real, out=roff[1:])
    nb = neighbour_counts(roff, geo_real["eta"], geo_real["phi"], f.density_radius)
    k = rng.poisson(f.base_rate + f.density_rate * nb + f.occupancy_rate * n_real[real_evt] / 1000.0)
    host = np.repeat(np.arange(len(real_evt)), k)
    fevt = real_evt[host]
    nf = len(host)
    g = rng.standard_normal((nf, 4))
    u = rng.random((nf, 2))
    eta = real["eta"][host] + f.spread * g[:, 0]
    phi = wrap_phi(real["phi"][host] + f.spread * g[:, 1])
    pt = acc.pt_min + rng.exponential(f.pt_slope, size=nf)
    charge = np.where(u[:, 0] < 0.5, -1, 1).astype(np.int8)
    d0 = f.d0_sigma * g[:, 2]
    z0 = real["z0"][host] + f.z0_sigma * g[:, 3]
    # the helix whose perigee is (d0, z0, φ): start at the point of closest approach
    vx, vy = -d0 * np.sin(phi), d0 * np.cos(phi)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    geom = surface_geometry(p)
    is_pix = geom.is_pixel
    eff = np.where(is_pix, f.hit_probability_pixel, f.hit_probability_sct)
    crossed, alpha, phi_pos, w_pos, rad_pos, hits, holes = hit_pattern(
        vx, vy, z0, px, py, pz, charge.astype(np.float64), p, rng, efficiency=eff)
    n_pix = hits[:, is_pix].sum(axis=1)
    n_sct = hits[:, ~is_pix].sum(axis=1)
    keep = ((n_pix + n_sct >= acc.min_si_hits) & (n_pix >= acc.min_pixel_hits)
            & (np.abs(eta) < acc.eta_max))
    # shared hits with the real tracks (the same pairwise search), fakes after the real tracks
    evt_all = np.concatenate([real_evt, fevt])
    order = np.argsort(evt_all, kind="stable")
    off_all = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(np.bincount(evt_all, minlength=n_events), out=off_all[1:])

    def cat(a, b):
        return np.concatenate([a, b])[order]

    drphi, dw = cluster_windows(p, is_pix)
    merged_all = _merged_clusters(off_all, cat(geo_real["eta"], eta), cat(geo_real["phi"], phi),
                                  cat(geo_real["crossed"], crossed), cat(geo_real["phi_pos"], phi_pos),
                                  cat(geo_real["w_pos"], w_pos), cat(geo_real["rad_pos"], rad_pos),
                                  drphi, dw, SHARE_WINDOW)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    merged = merged_all[inv[len(real_evt):]] & (hits > 0)
    n_pix_shared, n_sct_shared, n_pix_split, ibl_shared, ibl_split = shared_split(
        merged, hits, is_pix, rng, p.shared_hits)
    n_pix_holes = holes[:, is_pix].sum(axis=1)
    n_sct_holes = holes[:, ~is_pix].sum(axis=1)
    theta = 2.0 * np.arctan(np.exp(-eta))
    qp = charge * np.sin(theta) / pt
    r_ibl = p.barrel_layers[0].radius
    first_k = np.argmin(np.where((hits > 0) & is_pix[None, :], alpha, np.inf), axis=1)
    r_first = np.where(n_pix > 0, rad_pos[np.arange(nf), first_k], r_ibl)
    lever = np.maximum(r_first / r_ibl, 1.0)
    s_d0, s_z0, s_phi, s_theta, s_qp = core_resolutions(pt, theta, eta, qp, lever, p)
    sc = f.uncertainty_scale
    zeros = np.zeros(nf, dtype=np.int64)
    fakes = {
        "pt": pt, "eta": eta, "phi": phi, "theta": theta, "qOverP": qp * 1e-3, "charge": charge,
        "d0": d0, "z0": z0,
        "d0Uncertainty": sc * s_d0, "z0SinThetaUncertainty": sc * s_z0, "phiUncertainty": sc * s_phi,
        "thetaUncertainty": sc * s_theta, "qOverPUncertainty": sc * s_qp * 1e-3,
        "numberOfInnermostPixelLayerHits": hits[:, 0],
        "numberOfNextToInnermostPixelLayerHits": hits[:, 1],
        "numberOfInnermostPixelLayerSharedHits": ibl_shared,
        "numberOfInnermostPixelLayerSplitHits": ibl_split,
        "numberOfPixelHits": n_pix, "numberOfPixelHoles": n_pix_holes,
        "numberOfPixelSharedHits": n_pix_shared, "numberOfPixelSplitHits": n_pix_split,
        "numberOfSCTHits": n_sct, "numberOfSCTHoles": n_sct_holes,
        "numberOfSCTSharedHits": n_sct_shared,
        "leptonID": zeros, "origin": np.full(nf, TRUTH_ORIGIN["fake"]),
        "vertex_index": np.full(nf, -1), "truthPdgId": zeros, "truthParentPdgId": zeros,
        "truthProductionRadius": np.zeros(nf), "is_pileup": np.zeros(nf, dtype=bool),
        "particle_index": np.full(nf, -1), "truth_pt": np.zeros(nf), "truth_d0": np.zeros(nf),
        "truth_z0": np.zeros(nf), "truth_phi": np.zeros(nf), "truth_theta": np.zeros(nf),
        "tailSource": zeros,
    }
    return {k: np.asarray(v)[keep] for k, v in fakes.items()}, fevt[keep]
