"""JetFitter-like topological vertexing along the b → c flight axis (a documented subset).

ATLAS's JetFitter (ATL-PHYS-PUB-2018-025) assumes the b- and c-hadron vertices lie on one line
from the primary vertex, the *flight axis*, and fits that axis together with the positions of the
vertices on it with a Kalman filter, clustering tracks into vertices step by step. This module
implements the same model with a global least-squares fit instead of the Kalman filter:

1. track selection: valid, ``pT > pt_min``, ``|d0| < d0_max``, ``min_si_hits``; tracks whose 3-D
   impact-parameter significance is below ``pv_sig_max`` are attached to the primary vertex and
   take no further part (at most ``max_tracks`` most significant tracks are kept);
2. every remaining track starts as its own (single-track) vertex at distance ``d_k`` along the
   axis; the fit parameters ``(φ_axis, θ_axis, d_1..d_m)`` minimise the sum of the tracks'
   squared residual significances to their vertex point (exact helix residuals,
   :mod:`lhcml.tasks.ftag.tracks`) plus a Gaussian prior of width ``axis_sigma`` tying the axis
   to the jet direction (it makes the fit well defined when only single tracks remain);
3. clustering: the two vertices most compatible along the axis (smallest
   ``Δχ² = (d_k - d_l)² / var(d_k - d_l)`` from the fit covariance) are merged while
   ``Δχ² < merge_chi2``, refitting after each merge; then the vertex most compatible with the PV
   (``d / σ_d < pv_merge_sig``) is removed (its tracks go to the PV) and clustering resumes;
4. outputs: ``JetFitter_nVTX`` (vertices with ≥ 2 tracks), ``JetFitter_nSingleTracks``,
   ``JetFitter_nTracksAtVtx`` (tracks in ≥ 2-track vertices), ``JetFitter_mass`` and
   ``JetFitter_energyFraction`` (all tracks at displaced vertices, π hypothesis, over all tracks),
   ``JetFitter_significance3d`` (``Σ(d/σ²) / sqrt(Σ 1/σ²)`` over vertices),
   ``JetFitter_deltaR`` (jet axis vs the summed momentum of the vertex tracks) and
   ``JetFitter_N2Tpair`` (two-track vertices passing the SV1 two-track selection with the looser
   JetFitter cuts). Without displaced vertex the continuous outputs are -1.

Not done (compared with ATLAS): the Kalman-filter update and its per-step χ² probabilities,
neutral (V0) vertex reconstruction inside JetFitter, and the JetFitter likelihood/NN combination.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from lhcml.tasks.ftag.sv_finder import (
    ip3d_significance,
    jet_direction,
    track_energy,
    two_track_vertices,
)
from lhcml.tasks.ftag.tracks import B_FIELD, momentum_at, residuals, track_parameters

JF_OUTPUTS = (
    "JetFitter_mass", "JetFitter_energyFraction", "JetFitter_significance3d", "JetFitter_nVTX",
    "JetFitter_nSingleTracks", "JetFitter_nTracksAtVtx", "JetFitter_N2Tpair", "JetFitter_deltaR",
)  # fmt: skip


@dataclass(frozen=True)
class JetFitterConfig:
    """Cuts of the JetFitter-like finder (mm, MeV, rad)."""

    pt_min: float = 500.0
    d0_max: float = 7.0
    min_si_hits: int = 7
    z0sintheta_max: float = 2.0  # removes pileup tracks (they form fake vertices far in z)
    pv_sig_max: float = 2.0
    max_tracks: int = 12
    axis_sigma: float = 0.05
    merge_chi2: float = 6.63  # chi2 probability 1 % for 1 dof
    pv_merge_sig: float = 2.5
    n2t_track_sig_min: float = 1.5
    n2t_chi2_max: float = 9.0


@njit(cache=True)
def _resid_vec(par, params, tidx, assign, n, phi_j, th_j, axis_sigma, b_field, out):
    res = np.zeros(9)
    st = np.sin(par[1])
    u0 = st * np.cos(par[0])
    u1 = st * np.sin(par[0])
    u2 = np.cos(par[1])
    x = np.zeros(3)
    for k in range(n):
        d = par[2 + assign[k]]
        x[0] = d * u0
        x[1] = d * u1
        x[2] = d * u2
        residuals(params[tidx[k]], x, b_field, res)
        out[2 * k] = res[0] / res[2]
        out[2 * k + 1] = res[1] / res[3]
    dphi = par[0] - phi_j
    while dphi > np.pi:
        dphi -= 2 * np.pi
    while dphi < -np.pi:
        dphi += 2 * np.pi
    out[2 * n] = dphi / axis_sigma
    out[2 * n + 1] = (par[1] - th_j) / axis_sigma


@njit(cache=True)
def _fit_axis(par, params, tidx, assign, n, m, phi_j, th_j, axis_sigma, b_field, cov):
    n_r = 2 * n + 2
    n_p = 2 + m
    r = np.zeros(n_r)
    r2 = np.zeros(n_r)
    jac = np.zeros((n_r, n_p))
    for _it in range(15):
        _resid_vec(par, params, tidx, assign, n, phi_j, th_j, axis_sigma, b_field, r)
        for q in range(n_p):
            h = 1e-6 if q < 2 else 1e-5 * max(1.0, abs(par[q]))
            par[q] += h
            _resid_vec(par, params, tidx, assign, n, phi_j, th_j, axis_sigma, b_field, r2)
            par[q] -= h
            jac[:, q] = (r2 - r) / h
        a = jac.T @ jac
        for q in range(n_p):
            a[q, q] += 1e-9
        step = np.linalg.solve(a, jac.T @ r)
        # damped step: at most 5 mm along the axis and 0.05 rad per iteration
        for q in range(n_p):
            lim = 0.05 if q < 2 else 5.0
            step[q] = max(-lim, min(lim, step[q]))
        par[:n_p] -= step
        if np.max(np.abs(step)) < 1e-7:
            break
    _resid_vec(par, params, tidx, assign, n, phi_j, th_j, axis_sigma, b_field, r)
    a = jac.T @ jac
    for q in range(n_p):
        a[q, q] += 1e-9
    cov[:n_p, :n_p] = np.linalg.inv(a)
    return np.sum(r * r)


@njit(cache=True)
def _jf_kernel(params, sel, sig3d, jetdir, e_all, cfg, n2t_sel, n2t_cuts, ibl, bl, b_field, out):
    n_jets, n_t = sel.shape
    max_t = int(cfg[0])
    out_v = np.zeros((n_t * (n_t - 1) // 2 + 1, 3))
    for jj in range(n_jets):
        ok = np.zeros((n_t, n_t), dtype=np.bool_)
        out[jj, 6] = two_track_vertices(
            params[jj], n2t_sel[jj], sig3d[jj], ibl[jj], bl[jj], jetdir[jj], n2t_cuts, b_field,
            out_v, ok,
        )  # fmt: skip
        out[jj, 0] = -1.0
        out[jj, 1] = -1.0
        out[jj, 2] = -1.0
        out[jj, 7] = -1.0
        # candidate tracks, most significant first
        cand = np.zeros(n_t, dtype=np.int64)
        nc = 0
        order = np.argsort(-sig3d[jj])
        for i in order:
            if sel[jj, i] and sig3d[jj, i] >= cfg[1] and nc < max_t:
                cand[nc] = i
                nc += 1
        if nc == 0:
            continue
        jt = np.sqrt(jetdir[jj, 0] ** 2 + jetdir[jj, 1] ** 2)
        phi_j = np.arctan2(jetdir[jj, 1], jetdir[jj, 0])
        th_j = np.arctan2(jt, jetdir[jj, 2])
        tidx = cand[:nc].copy()
        assign = np.arange(nc)
        m = nc
        par = np.zeros(2 + nc)
        par[0] = phi_j
        par[1] = th_j
        res = np.zeros(9)
        u = jetdir[jj]
        for k in range(nc):
            # start each vertex where the track passes closest to the jet axis (line approx.)
            best = 0.0
            best_r = 1e30
            for dd in (0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0):
                residuals(params[jj, tidx[k]], dd * u, b_field, res)
                rr = (res[0] / res[2]) ** 2 + (res[1] / res[3]) ** 2
                if rr < best_r:
                    best_r = rr
                    best = dd
            par[2 + k] = best
        cov = np.zeros((2 + nc, 2 + nc))
        n = nc
        while True:
            _fit_axis(par, params[jj], tidx, assign, n, m, phi_j, th_j, cfg[2], b_field, cov)
            # merge the two most compatible vertices
            bk = -1
            bl_ = -1
            best = cfg[3]
            for k in range(m):
                for q in range(k + 1, m):
                    var = cov[2 + k, 2 + k] + cov[2 + q, 2 + q] - 2 * cov[2 + k, 2 + q]
                    c2 = (par[2 + k] - par[2 + q]) ** 2 / max(var, 1e-30)
                    if c2 < best:
                        best = c2
                        bk = k
                        bl_ = q
            if bk >= 0:
                for k in range(n):
                    if assign[k] == bl_:
                        assign[k] = bk
                    elif assign[k] > bl_:
                        assign[k] -= 1
                par[2 + bk] = 0.5 * (par[2 + bk] + par[2 + bl_])
                for v in range(bl_, m - 1):
                    par[2 + v] = par[3 + v]
                m -= 1
                continue
            # remove a vertex compatible with the PV
            worst = -1
            worst_s = cfg[4]
            for v in range(m):
                s = par[2 + v] / np.sqrt(max(cov[2 + v, 2 + v], 1e-30))
                if s < worst_s:
                    worst_s = s
                    worst = v
            if worst >= 0:
                keep = 0
                for k in range(n):
                    if assign[k] != worst:
                        tidx[keep] = tidx[k]
                        assign[keep] = assign[k] - (1 if assign[k] > worst else 0)
                        keep += 1
                n = keep
                for v in range(worst, m - 1):
                    par[2 + v] = par[3 + v]
                m -= 1
                if m == 0:
                    break
                continue
            break
        if m == 0 or n == 0:
            continue
        counts = np.zeros(m, dtype=np.int64)
        for k in range(n):
            counts[assign[k]] += 1
        n_vtx = 0
        n_single = 0
        n_at = 0
        for v in range(m):
            if counts[v] >= 2:
                n_vtx += 1
                n_at += counts[v]
            else:
                n_single += 1
        px = py = pz = e = 0.0
        st = np.sin(par[1])
        x = np.zeros(3)
        for k in range(n):
            d = par[2 + assign[k]]
            x[0] = d * st * np.cos(par[0])
            x[1] = d * st * np.sin(par[0])
            x[2] = d * np.cos(par[1])
            residuals(params[jj, tidx[k]], x, b_field, res)
            a, b, c, ee = momentum_at(params[jj, tidx[k]], res[4], b_field)
            px += a
            py += b
            pz += c
            e += ee
        num = 0.0
        den = 0.0
        for v in range(m):
            w = 1.0 / max(cov[2 + v, 2 + v], 1e-30)
            num += par[2 + v] * w
            den += w
        out[jj, 0] = np.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0))
        out[jj, 1] = e / e_all[jj] if e_all[jj] > 0 else -1.0
        out[jj, 2] = num / np.sqrt(den)
        out[jj, 3] = n_vtx
        out[jj, 4] = n_single
        out[jj, 5] = n_at
        pt = np.sqrt(px * px + py * py)
        eta_v = np.arcsinh(pz / max(pt, 1e-12))
        eta_j = np.arcsinh(jetdir[jj, 2] / max(jt, 1e-12))
        dphi = np.arctan2(py, px) - phi_j
        while dphi > np.pi:
            dphi -= 2 * np.pi
        while dphi < -np.pi:
            dphi += 2 * np.pi
        out[jj, 7] = np.sqrt((eta_v - eta_j) ** 2 + dphi * dphi)
        out[jj, 8] = par[0]
        out[jj, 9] = par[1]


def find_jetfitter(
    jets: np.ndarray,
    tracks: np.ndarray,
    cfg: JetFitterConfig = JetFitterConfig(),
    b_field: float = B_FIELD,
) -> dict[str, np.ndarray]:
    """Run the JetFitter-like vertexing on a chunk of jets; return the jet variables.

    Also returns ``JetFitter_phi``/``JetFitter_theta`` (fitted flight axis, NaN without
    vertex) for validation.
    """
    params = track_parameters(tracks)
    si = tracks["numberOfPixelHits"].astype(int) + tracks["numberOfSCTHits"]
    sel = (
        tracks["valid"]
        & (tracks["pt"] > cfg.pt_min)
        & (np.abs(tracks["d0"]) < cfg.d0_max)
        & (np.abs(tracks["z0SinTheta"]) < cfg.z0sintheta_max)
        & (si >= cfg.min_si_hits)
    )
    sig = np.nan_to_num(ip3d_significance(params))
    kcfg = np.array(
        [cfg.max_tracks, cfg.pv_sig_max, cfg.axis_sigma, cfg.merge_chi2, cfg.pv_merge_sig],
        dtype=np.float64,
    )
    # two-track cuts: (track_sig_min, pair_chi2_max, pair_sig_min, k0s, lambda, conv, material, pv)
    n2t_cuts = np.array(
        [cfg.n2t_track_sig_min, cfg.n2t_chi2_max, 1.0, 15.0, 8.0, 40.0, 2.5, 0.015, 0.03, 1.0]
    )
    out = np.zeros((len(jets), 10))
    _jf_kernel(
        params, sel, sig, jet_direction(jets), track_energy(tracks).sum(axis=1), kcfg, sel,
        n2t_cuts, tracks["numberOfInnermostPixelLayerHits"].astype(np.int64),
        tracks["numberOfNextToInnermostPixelLayerHits"].astype(np.int64), float(b_field), out,
    )  # fmt: skip
    res: dict[str, np.ndarray] = {}
    ints = ("JetFitter_nVTX", "JetFitter_nSingleTracks", "JetFitter_nTracksAtVtx", "JetFitter_N2Tpair")
    for k, name in enumerate(JF_OUTPUTS):
        res[name] = out[:, k].astype(np.int16 if name in ints else np.float32)
    has = out[:, 0] >= 0
    res["JetFitter_phi"] = np.where(has, out[:, 8], np.nan)
    res["JetFitter_theta"] = np.where(has, out[:, 9], np.nan)
    return res
