"""Primary-vertex reconstruction and impact parameters w.r.t. the reconstructed vertex.

:func:`reconstruct_primary_vertices` finds the primary vertices of each event from its
reconstructed tracks (:func:`lhcml.sim.tracker.simulate_tracks`) with an iterative adaptive
vertex finder in the spirit of ATLAS's Run-2 iterative vertex finding (ATL-PHYS-PUB-2015-026,
Eur. Phys. J. C 77 (2017) 332):

1. **Track selection** (``vertexing`` block of ``detector_params.yaml``): |d0| w.r.t. the beam
   line, silicon hits, pixel holes.
2. **Seed**: the z of the pool track where the density of track z0 values is largest; the density
   is a sum of Gaussian kernels with the two tracks' z0 uncertainties added (a z-scan seed).
3. **Fit**: an adaptive vertex fit (Frühwirth et al., deterministic annealing) of (x, y, z) with
   the beam-spot constraint (a Gaussian prior of width σxy in x, y and σz in z around the nominal
   beam spot). Each track contributes its linearised perigee (d0, z0) with the covariance
   diag(σ(d0)², σ(z0)²) and a weight ``w = φ(χ²) / (φ(χ²) + φ(χ²_cut))``,
   ``φ(χ²) = exp(−χ²/2T)``, for the temperatures ``annealing_temperatures``.
4. **Removal**: the tracks with χ² < ``chi2_cut`` to the fitted vertex are its tracks; a vertex
   is kept when it has at least ``min_tracks``. Its tracks, and those with χ² < ``removal_chi2_cut``
   (the looser seeding-compatibility cut of ATLAS's iterative finder), leave the pool. Repeat from 2 until fewer than ``min_tracks`` tracks
   remain or no seed gives a vertex.
5. **Hard scatter**: the vertex with the largest Σ pT² of its tracks (ATLAS); the others are
   pile-up vertices (counted in ``n_vertices``).

Linearised track model (straight line near the beam line, ATLAS perigee convention, the point of
closest approach to the z axis is ``(−d0 sin φ, d0 cos φ, z0)``): for a track from the point
``V = (x, y, z)``

    d0 = −x sin φ + y cos φ,        z0 = z − cot θ (x cos φ + y sin φ).

:func:`impact_parameters` gives the track impact parameters w.r.t. the hard-scatter vertex and
their uncertainties as ATLAS's ``TrackToVertexIPEstimator`` does in its unbiased mode: the track
is first removed from the vertex fit (exact down-date of the fit's information matrix), then
``σ²(d0_PV) = σ²(d0) + J C J^T`` with ``C`` the (beam-spot-constrained) vertex covariance, so the
beam-spot size and the vertex resolution both enter the significance. Without a reconstructed
vertex the beam spot itself (σxy, σz) is the reference point.

Everything is one numba kernel over all events; there is no per-track Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numba
import numpy as np

from lhcml.errors import SchemaError
from lhcml.sim.detector import BeamSpot, DetectorParams, default_detector_params

#: track fields the vertex finder reads
VERTEX_TRACK_FIELDS = ("pt", "d0", "z0", "phi", "theta", "d0Uncertainty", "z0SinThetaUncertainty",
                       "numberOfPixelHits", "numberOfSCTHits", "numberOfPixelHoles")


@dataclass(frozen=True)
class VertexResult:
    """Reconstructed primary vertices of a batch of events (lengths in mm).

    Attributes
    ----------
    position
        ``(n_events, 3)`` hard-scatter vertex (x, y, z); the beam-spot centre (z: the (upper) median
        track z0, 0 without tracks) where no vertex was found.
    covariance
        ``(n_events, 3, 3)`` covariance of ``position`` (the beam-spot size where none was found).
    information
        ``(n_events, 3, 3)`` information matrix (inverse covariance) of the hard-scatter fit, used
        to remove a track from the vertex (:func:`impact_parameters`).
    found
        ``(n_events,)`` bool: at least one vertex was reconstructed.
    n_vertices
        ``(n_events,)`` number of reconstructed vertices (hard scatter + pile-up).
    vertex_offsets
        ``(n_events + 1,)`` offsets into the per-vertex arrays.
    vertex_position, vertex_ntracks, vertex_sumpt2
        Per reconstructed vertex (all events, flat): ``(n, 3)`` position, number of tracks
        removed into it, Σ pT² (GeV²) of those tracks.
    hs_index
        ``(n_events,)`` index of the hard-scatter vertex within its event (−1: none).
    track_vertex
        Per input track (flat, event order): the vertex (index within the event) whose fit
        removed it from the pool, −1 if none (not selected or left over).
    track_weight
        Per input track: its final adaptive weight in that vertex's fit (0 when ``track_vertex``
        is −1).
    """

    position: np.ndarray
    covariance: np.ndarray
    information: np.ndarray
    found: np.ndarray
    n_vertices: np.ndarray
    vertex_offsets: np.ndarray
    vertex_position: np.ndarray
    vertex_ntracks: np.ndarray
    vertex_sumpt2: np.ndarray
    hs_index: np.ndarray
    track_vertex: np.ndarray
    track_weight: np.ndarray

    @property
    def z(self) -> np.ndarray:
        """Hard-scatter vertex z (mm) per event."""
        return self.position[:, 2]

    def is_hard_scatter(self, truth_z: np.ndarray, window: float | None = None,
                        params: DetectorParams | None = None) -> np.ndarray:
        """Whether the chosen vertex lies within ``window`` (mm, default
        ``vertexing.hs_match_window`` = 0.1) in z of the truth hard-scatter vertex (and exists)."""
        if window is None:
            window = (params or default_detector_params()).vertexing.hs_match_window
        truth_z = np.asarray(truth_z, dtype=np.float64)
        if truth_z.shape != self.z.shape:
            raise SchemaError(f"truth_z has shape {truth_z.shape}, expected {self.z.shape} (one per event)")
        return self.found & (np.abs(self.z - truth_z) < window)


def _columns(tracks, fields) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flat columns and per-event counts of an Awkward track array or a FlatTable."""
    if isinstance(tracks, ak.Array):
        missing = [f for f in fields if f not in tracks.fields]
        if missing:
            raise SchemaError(f"tracks lack field(s) {missing}; the vertex finder needs {list(fields)} "
                              "(tracks from lhcml.sim.tracker.simulate_tracks)")
        counts = ak.to_numpy(ak.num(tracks, axis=1)).astype(np.int64)
        flat = ak.flatten(tracks[list(fields)], axis=1)
        return {f: ak.to_numpy(flat[f]) for f in fields}, counts
    cols = getattr(tracks, "columns", None)
    if cols is None:
        raise SchemaError(f"tracks must be an awkward Array or a FlatTable, got {type(tracks).__name__}")
    missing = [f for f in fields if f not in cols]
    if missing:
        raise SchemaError(f"tracks lack field(s) {missing}; the vertex finder needs {list(fields)}")
    return {f: np.asarray(cols[f]) for f in fields}, np.asarray(tracks.counts, dtype=np.int64)


# ------------------------------------------------------------------------------------------
# numba kernels
# ------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _track_terms(d0, z0, phi, cot, s_d0, s_z0):
    """Jacobian rows (2x3), weights (2,) and measurement (2,) of one track."""
    jac = np.zeros((2, 3))
    sp, cp = np.sin(phi), np.cos(phi)
    jac[0, 0] = -sp
    jac[0, 1] = cp
    jac[1, 0] = -cot * cp
    jac[1, 1] = -cot * sp
    jac[1, 2] = 1.0
    w = np.array([1.0 / (s_d0 * s_d0), 1.0 / (s_z0 * s_z0)])
    y = np.array([d0, z0])
    return jac, w, y


@numba.njit(cache=True, inline="always")
def _residuals(d0, z0, sp, cp, cot, x, y, z):
    """(d0, z0) of a track w.r.t. the point (x, y, z) (linearised)."""
    return d0 + x * sp - y * cp, z0 - z + cot * (x * cp + y * sp)


@numba.njit(cache=True)
def _fit(idx, d0, z0, sphi, cphi, cot, s_d0, s_z0, bs_info, bs_pos, seed_z, temps, chi2_cut):
    """Adaptive fit of one vertex to the tracks ``idx``; returns position, information, weights, χ².

    Track i measures (d0, z0) = J V with J = [[−sin φ, cos φ, 0], [−cot θ cos φ, −cot θ sin φ, 1]]
    and weights diag(1/σ²(d0), 1/σ²(z0)); the beam spot adds its Gaussian prior.
    """
    pos = np.array([bs_pos[0], bs_pos[1], seed_z])
    n = len(idx)
    wts = np.ones(n)
    chi2 = np.zeros(n)
    info = bs_info.copy()
    prior_rhs = bs_info @ bs_pos
    nt = len(temps)
    for it in range(nt + 2):
        temp = temps[min(it, nt - 1)]
        info = bs_info.copy()
        rhs = prior_rhs.copy()
        for k in range(n):
            i = idx[k]
            r0, r1 = _residuals(d0[i], z0[i], sphi[i], cphi[i], cot[i], pos[0], pos[1], pos[2])
            w0 = 1.0 / (s_d0[i] * s_d0[i])
            w1 = 1.0 / (s_z0[i] * s_z0[i])
            c2 = r0 * r0 * w0 + r1 * r1 * w1
            chi2[k] = c2
            # w = 1 / (1 + exp((χ² − χ²_cut) / 2T)), written without overflow
            arg = (c2 - chi2_cut) / (2.0 * temp)
            wt = 1.0 / (1.0 + np.exp(arg)) if arg < 700.0 else 0.0
            wts[k] = wt
            if wt < 1e-6:
                continue
            j00, j01 = -sphi[i], cphi[i]
            j10, j11 = -cot[i] * cphi[i], -cot[i] * sphi[i]
            a0, a1 = wt * w0, wt * w1
            info[0, 0] += a0 * j00 * j00 + a1 * j10 * j10
            info[0, 1] += a0 * j00 * j01 + a1 * j10 * j11
            info[0, 2] += a1 * j10
            info[1, 1] += a0 * j01 * j01 + a1 * j11 * j11
            info[1, 2] += a1 * j11
            info[2, 2] += a1
            rhs[0] += a0 * j00 * d0[i] + a1 * j10 * z0[i]
            rhs[1] += a0 * j01 * d0[i] + a1 * j11 * z0[i]
            rhs[2] += a1 * z0[i]
        info[1, 0] = info[0, 1]
        info[2, 0] = info[0, 2]
        info[2, 1] = info[1, 2]
        pos = np.linalg.solve(info, rhs)
    # final χ² at the final position
    for k in range(n):
        i = idx[k]
        r0, r1 = _residuals(d0[i], z0[i], sphi[i], cphi[i], cot[i], pos[0], pos[1], pos[2])
        chi2[k] = r0 * r0 / (s_d0[i] * s_d0[i]) + r1 * r1 / (s_z0[i] * s_z0[i])
    return pos, info, wts, chi2


@numba.njit(cache=True)
def _find_vertices(offsets, sel, pt, d0, z0, sphi, cphi, cot, s_d0, s_z0, bs_info, bs_pos, temps, chi2_cut,
                   removal_chi2, seed_window, fit_window, min_tracks, max_vertices):
    n_ev = len(offsets) - 1
    n_trk = len(d0)
    track_vertex = np.full(n_trk, -1, dtype=np.int64)
    track_weight = np.zeros(n_trk)
    # per-vertex outputs (grown by doubling)
    cap = max(16, n_ev * 4)
    vpos = np.zeros((cap, 3))
    vinfo = np.zeros((cap, 3, 3))
    vntrk = np.zeros(cap, dtype=np.int64)
    vsum = np.zeros(cap)
    vevt = np.zeros(cap, dtype=np.int64)
    nv_tot = 0
    n_vertices = np.zeros(n_ev, dtype=np.int64)
    for e in range(n_ev):
        lo, hi = offsets[e], offsets[e + 1]
        # pool: selected tracks of the event, sorted in z0
        cand = np.empty(hi - lo, dtype=np.int64)
        m = 0
        for i in range(lo, hi):
            if sel[i]:
                cand[m] = i
                m += 1
        cand = cand[:m]
        if m < min_tracks:
            continue
        zs = np.empty(m)
        for k in range(m):
            zs[k] = z0[cand[k]]
        order = np.argsort(zs)
        cand = cand[order]
        zs = zs[order]
        alive = np.ones(m, dtype=np.bool_)
        n_alive = m
        # kernel density of z0 at each pool track (itself included)
        dens = np.zeros(m)
        for a in range(m):
            j = a
            while j < m and zs[j] - zs[a] < seed_window:
                s2 = s_z0[cand[a]] ** 2 + s_z0[cand[j]] ** 2
                g = np.exp(-0.5 * (zs[j] - zs[a]) ** 2 / s2)
                dens[a] += g
                if j != a:
                    dens[j] += g
                j += 1
        nv = 0
        while n_alive >= min_tracks and nv < max_vertices:
            best = -1
            bd = -1.0
            for a in range(m):
                if alive[a] and dens[a] > bd:
                    bd = dens[a]
                    best = a
            zseed = zs[best]
            # tracks within the fit window of the seed
            a0 = np.searchsorted(zs, zseed - fit_window)
            a1 = np.searchsorted(zs, zseed + fit_window)
            cnt = 0
            for a in range(a0, a1):
                if alive[a]:
                    cnt += 1
            loc = np.empty(cnt, dtype=np.int64)
            idx = np.empty(cnt, dtype=np.int64)
            c = 0
            for a in range(a0, a1):
                if alive[a]:
                    loc[c] = a
                    idx[c] = cand[a]
                    c += 1
            pos, info, wts, chi2 = _fit(idx, d0, z0, sphi, cphi, cot, s_d0, s_z0, bs_info, bs_pos, zseed,
                                        temps, chi2_cut)
            compat = chi2 < chi2_cut
            n_comp = 0
            for k in range(cnt):
                if compat[k]:
                    n_comp += 1
            accepted = n_comp >= min_tracks
            # remove the compatible tracks (and the seed in any case); when the vertex is kept, also
            # the tracks within the looser removal cut (they must not seed a split-off vertex)
            sp2 = 0.0
            for k in range(cnt):
                a = loc[k]
                if compat[k] or a == best or (accepted and chi2[k] < removal_chi2):
                    if not alive[a]:
                        continue
                    alive[a] = False
                    n_alive -= 1
                    # the removed track no longer contributes to the density of its neighbours
                    b = a - 1
                    while b >= 0 and zs[a] - zs[b] < seed_window:
                        s2 = s_z0[cand[a]] ** 2 + s_z0[cand[b]] ** 2
                        dens[b] -= np.exp(-0.5 * (zs[a] - zs[b]) ** 2 / s2)
                        b -= 1
                    b = a + 1
                    while b < m and zs[b] - zs[a] < seed_window:
                        s2 = s_z0[cand[a]] ** 2 + s_z0[cand[b]] ** 2
                        dens[b] -= np.exp(-0.5 * (zs[a] - zs[b]) ** 2 / s2)
                        b += 1
                    if accepted and compat[k]:
                        track_vertex[idx[k]] = nv
                        track_weight[idx[k]] = wts[k]
                        sp2 += pt[idx[k]] ** 2
            if not accepted:
                continue
            if nv_tot == cap:
                cap *= 2
                vpos2 = np.zeros((cap, 3))
                vinfo2 = np.zeros((cap, 3, 3))
                vntrk2 = np.zeros(cap, dtype=np.int64)
                vsum2 = np.zeros(cap)
                vevt2 = np.zeros(cap, dtype=np.int64)
                vpos2[:nv_tot] = vpos[:nv_tot]
                vinfo2[:nv_tot] = vinfo[:nv_tot]
                vntrk2[:nv_tot] = vntrk[:nv_tot]
                vsum2[:nv_tot] = vsum[:nv_tot]
                vevt2[:nv_tot] = vevt[:nv_tot]
                vpos, vinfo, vntrk, vsum, vevt = vpos2, vinfo2, vntrk2, vsum2, vevt2
            vpos[nv_tot] = pos
            vinfo[nv_tot] = info
            vntrk[nv_tot] = n_comp
            vsum[nv_tot] = sp2
            vevt[nv_tot] = e
            nv_tot += 1
            nv += 1
        n_vertices[e] = nv
    return (n_vertices, vpos[:nv_tot], vinfo[:nv_tot], vntrk[:nv_tot], vsum[:nv_tot], track_vertex,
            track_weight)


@numba.njit(cache=True)
def _ips(tevt, d0, z0, phi, cot, s_d0, s_z0, pos, info, weight):
    """Unbiased impact parameters of each track w.r.t. its event's vertex and their σ."""
    n = len(d0)
    d0v = np.zeros(n)
    z0v = np.zeros(n)
    sd0 = np.zeros(n)
    sz0 = np.zeros(n)
    for t in range(n):
        e = tevt[t]
        jac, w, y = _track_terms(d0[t], z0[t], phi[t], cot[t], s_d0[t], s_z0[t])
        v = pos[e].copy()
        a = info[e].copy()
        wt = weight[t]
        if wt > 0.0:
            # remove the track from the vertex: A' = A − w JᵀWJ, V' = V − A'⁻¹ w JᵀW (y − J V)
            r0 = y[0] - (jac[0, 0] * v[0] + jac[0, 1] * v[1])
            r1 = y[1] - (jac[1, 0] * v[0] + jac[1, 1] * v[1] + v[2])
            g = np.zeros(3)
            for i in range(3):
                for j in range(3):
                    a[i, j] -= wt * (jac[0, i] * w[0] * jac[0, j] + jac[1, i] * w[1] * jac[1, j])
                g[i] = wt * (jac[0, i] * w[0] * r0 + jac[1, i] * w[1] * r1)
            cov = np.linalg.inv(a)
            v = v - cov @ g
        else:
            cov = np.linalg.inv(a)
        r0 = y[0] - (jac[0, 0] * v[0] + jac[0, 1] * v[1])
        r1 = y[1] - (jac[1, 0] * v[0] + jac[1, 1] * v[1] + v[2])
        d0v[t] = r0
        z0v[t] = r1
        p0 = 0.0
        p1 = 0.0
        for i in range(3):
            for j in range(3):
                p0 += jac[0, i] * cov[i, j] * jac[0, j]
                p1 += jac[1, i] * cov[i, j] * jac[1, j]
        sd0[t] = np.sqrt(s_d0[t] ** 2 + p0)
        sz0[t] = np.sqrt(s_z0[t] ** 2 + p1)
    return d0v, z0v, sd0, sz0


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------


def _beam_prior(beam_spot: BeamSpot) -> tuple[np.ndarray, np.ndarray]:
    info = np.diag([1.0 / beam_spot.sigma_xy**2, 1.0 / beam_spot.sigma_xy**2, 1.0 / beam_spot.sigma_z**2])
    return info, np.zeros(3)


def reconstruct_primary_vertices(
    tracks,
    beam_spot: BeamSpot | None = None,
    rng: np.random.Generator | None = None,
    params: DetectorParams | None = None,
) -> VertexResult:
    """Primary vertices of each event from its reconstructed tracks.

    Parameters
    ----------
    tracks
        One list of tracks per event (Awkward array or :class:`~lhcml.sim.generator.FlatTable`)
        with the fields of :data:`VERTEX_TRACK_FIELDS` (GeV, mm, rad; d0 w.r.t. the beam line,
        z0 w.r.t. z = 0), as :func:`lhcml.sim.tracker.simulate_tracks` returns them.
    beam_spot
        The luminous region (Gaussian widths, centred on the origin); default
        ``params.beam_spot``.
    rng
        Unused (the reconstruction is deterministic); accepted for the stage signature.
    params
        Detector parameters (the ``vertexing`` block); default: the shipped file.

    Returns
    -------
    VertexResult
        Hard-scatter vertex per event, all vertices, and the track-to-vertex assignment.

    Raises
    ------
    SchemaError
        If a needed track field is missing or an uncertainty is not positive.
    """
    del rng
    p = params or default_detector_params()
    bs = beam_spot or p.beam_spot
    v = p.vertexing
    cols, counts = _columns(tracks, VERTEX_TRACK_FIELDS)
    n_ev = len(counts)
    offsets = np.zeros(n_ev + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    f8 = {k: np.asarray(cols[k], dtype=np.float64) for k in ("pt", "d0", "z0", "phi", "theta",
                                                             "d0Uncertainty", "z0SinThetaUncertainty")}
    if np.any(~(f8["d0Uncertainty"] > 0)) or np.any(~(f8["z0SinThetaUncertainty"] > 0)):
        raise SchemaError("tracks have non-positive or NaN d0Uncertainty/z0SinThetaUncertainty; "
                          "the vertex fit needs positive track uncertainties")
    sin_t = np.sin(f8["theta"])
    cot = np.cos(f8["theta"]) / sin_t
    s_z0 = f8["z0SinThetaUncertainty"] / sin_t
    n_si = cols["numberOfPixelHits"].astype(np.int64) + cols["numberOfSCTHits"].astype(np.int64)
    sel = ((np.abs(f8["d0"]) < v.track_max_abs_d0) & (n_si >= v.track_min_si_hits)
           & (cols["numberOfPixelHoles"].astype(np.int64) <= v.track_max_pixel_holes)
           & (f8["pt"] > v.track_pt_min))
    bs_info, bs_pos = _beam_prior(bs)
    temps = np.asarray(v.annealing_temperatures, dtype=np.float64)
    n_vtx, vpos, vinfo, vntrk, vsum, tvtx, twt = _find_vertices(
        offsets, sel, f8["pt"], f8["d0"], f8["z0"], np.sin(f8["phi"]), np.cos(f8["phi"]), cot, f8["d0Uncertainty"], s_z0, bs_info,
        bs_pos, temps, v.chi2_cut, max(v.removal_chi2_cut, v.chi2_cut), v.seed_window, v.fit_window, v.min_tracks, v.max_vertices)
    voff = np.zeros(n_ev + 1, dtype=np.int64)
    np.cumsum(n_vtx, out=voff[1:])
    found = n_vtx > 0
    # hard scatter: largest Σ pT² (the first one on ties)
    hs = np.full(n_ev, -1, dtype=np.int64)
    if len(vsum):
        vevt = np.repeat(np.arange(n_ev), n_vtx)
        order = np.lexsort((-vsum, vevt))
        first = voff[:-1][found]
        hs[found] = order[first] - first
    position = np.zeros((n_ev, 3))
    information = np.broadcast_to(bs_info, (n_ev, 3, 3)).copy()
    gi = voff[:-1][found] + hs[found]
    position[found] = vpos[gi]
    information[found] = vinfo[gi]
    # events without a vertex: the beam spot, at the median z0 of their selected tracks (of all
    # their tracks when none is selected); the upper median, vectorised over events
    tevt = np.repeat(np.arange(n_ev), counts)
    n_sel = np.bincount(tevt[sel], minlength=n_ev)
    use = np.where(n_sel[tevt] > 0, sel, True)
    ev_u, z_u = tevt[use], f8["z0"][use]
    order = np.lexsort((z_u, ev_u))
    n_use = np.bincount(ev_u, minlength=n_ev)
    off_u = np.zeros(n_ev + 1, dtype=np.int64)
    np.cumsum(n_use, out=off_u[1:])
    fill = ~found & (n_use > 0)
    position[fill, 2] = z_u[order][off_u[:-1][fill] + n_use[fill] // 2]
    covariance = np.linalg.inv(information)
    # the track weights are those in the hard-scatter fit only
    in_hs = (tvtx >= 0) & (tvtx == hs[tevt])
    return VertexResult(
        position=position, covariance=covariance, information=information, found=found,
        n_vertices=n_vtx, vertex_offsets=voff, vertex_position=vpos, vertex_ntracks=vntrk,
        vertex_sumpt2=vsum, hs_index=hs, track_vertex=tvtx, track_weight=np.where(in_hs, twt, 0.0),
    )


def impact_parameters(tracks, vertices: VertexResult) -> dict[str, np.ndarray]:
    """Impact parameters of every track w.r.t. its event's hard-scatter vertex.

    Parameters
    ----------
    tracks
        The same tracks (same events, same order) that :func:`reconstruct_primary_vertices` saw.
    vertices
        Its result.

    Returns
    -------
    dict
        Flat arrays (event order): ``d0`` (mm, w.r.t. the vertex, ATLAS sign), ``z0`` (mm, track z
        at closest approach minus the vertex z), ``z0SinTheta``, ``d0Uncertainty``,
        ``z0SinThetaUncertainty`` (track ⊕ vertex, the track removed from the vertex first).

    Raises
    ------
    SchemaError
        If the tracks do not match the vertices' events or tracks.
    """
    cols, counts = _columns(tracks, ("d0", "z0", "phi", "theta", "d0Uncertainty", "z0SinThetaUncertainty"))
    if len(counts) != len(vertices.found) or int(counts.sum()) != len(vertices.track_weight):
        raise SchemaError(f"tracks ({len(counts)} events, {int(counts.sum())} tracks) do not match the vertex "
                          f"result ({len(vertices.found)} events, {len(vertices.track_weight)} tracks)")
    theta = np.asarray(cols["theta"], dtype=np.float64)
    sin_t = np.sin(theta)
    cot = np.cos(theta) / sin_t
    tevt = np.repeat(np.arange(len(counts)), counts)
    d0v, z0v, sd0, sz0 = _ips(tevt, np.asarray(cols["d0"], np.float64), np.asarray(cols["z0"], np.float64),
                              np.asarray(cols["phi"], np.float64), cot,
                              np.asarray(cols["d0Uncertainty"], np.float64),
                              np.asarray(cols["z0SinThetaUncertainty"], np.float64) / sin_t,
                              vertices.position, vertices.information, vertices.track_weight)
    return {"d0": d0v, "z0": z0v, "z0SinTheta": z0v * sin_t, "d0Uncertainty": sd0,
            "z0SinThetaUncertainty": sz0 * sin_t}
