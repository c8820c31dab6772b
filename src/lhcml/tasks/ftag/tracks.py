"""Track model shared by the vertex finders: perigee helices in a solenoid, vertex fits.

Conventions (ATLAS perigee, w.r.t. the beam line; lengths mm, momenta MeV, ``B`` along +z):

* perigee point ``(x0, y0) = (-d0 sin φ0, d0 cos φ0)``; ``z0`` is taken relative to the
  primary vertex (``z0 = z0SinTheta / sin θ``), so all positions are in the PV frame;
* the track direction turns as ``φ(s) = φ0 - h s / R`` with ``s`` the transverse arc length,
  ``R = pT / (0.3 B)`` (``pT`` in MeV, ``R`` in mm, ``B`` in T) and ``h = sign(q) sign(B)``
  (positive tracks turn clockwise seen from +z in a field along +z);
* uncertainties at arc length ``s`` ignore parameter correlations:
  ``σT² = σd0² + s² σφ²`` and ``σz² = σz0² + (s / sin²θ)² σθ²``.

The residuals of a track to a point are exact for the helix: transverse ``|V - C| - R`` (``C`` the
centre of the circle) and longitudinal ``zV - z(s*)`` at the point of closest transverse approach.
Vertex fits minimise the sum of squared significances (Gauss-Newton) with numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: solenoid field (T); set by the detector (ATLAS: 2 T)
B_FIELD = 2.0
#: pion mass hypothesis for track four-momenta (MeV)
M_PION = 139.57039
#: curvature constant: R[mm] = pT[MeV] / (C_CURV * B[T])
C_CURV = 0.299792458

#: indices of the per-track parameter rows used by the numba code
D0, Z0, PHI, THETA, QOP, SD0, SZ0, SPHI, STHETA = range(9)
N_PAR = 9


def track_parameters(tracks: np.ndarray) -> np.ndarray:
    """``(n_jets, n_tracks, 9)`` float64 array of perigee parameters and uncertainties.

    Uses the dumper fields ``d0, z0SinTheta, phi, eta, qOverP`` and their uncertainties;
    ``phiUncertainty``/``thetaUncertainty`` default to 1 mrad if absent.
    """
    names = tracks.dtype.names
    theta = 2.0 * np.arctan(np.exp(-tracks["eta"].astype(np.float64)))
    sin_t = np.sin(theta)
    out = np.zeros((*tracks.shape, N_PAR), dtype=np.float64)
    out[..., D0] = tracks["d0"]
    out[..., Z0] = tracks["z0SinTheta"] / sin_t
    out[..., PHI] = tracks["phi"]
    out[..., THETA] = theta
    out[..., QOP] = tracks["qOverP"]
    out[..., SD0] = tracks["d0Uncertainty"]
    out[..., SZ0] = tracks["z0SinThetaUncertainty"] / sin_t
    out[..., SPHI] = tracks["phiUncertainty"] if "phiUncertainty" in names else 1e-3
    out[..., STHETA] = tracks["thetaUncertainty"] if "thetaUncertainty" in names else 1e-3
    bad = ~np.isfinite(out) | (out[..., SD0:SD0 + 2] <= 0).any(-1, keepdims=True)
    if "valid" in names:
        bad &= tracks["valid"][..., None]
    if bad.any():
        from lhcml.errors import SchemaError

        raise SchemaError(
            "tracks with NaN/inf perigee parameters or non-positive uncertainties: the vertex "
            "finders need finite d0, z0SinTheta, phi, eta, qOverP and positive uncertainties"
        )
    return out


@njit(cache=True)
def helix_geometry(p, b_field):
    """Centre (cx, cy), radius R, turning sign h, perigee point (x0, y0) of one track."""
    qop = p[QOP]
    sin_t = np.sin(p[THETA])
    pt = abs(1.0 / qop) * sin_t if qop != 0 else 1e12
    r = pt / (C_CURV * abs(b_field))
    h = (1.0 if qop > 0 else -1.0) * (1.0 if b_field > 0 else -1.0)
    x0 = -p[D0] * np.sin(p[PHI])
    y0 = p[D0] * np.cos(p[PHI])
    # centre to the right of the direction for h=+1 (clockwise)
    cx = x0 + h * r * np.sin(p[PHI])
    cy = y0 - h * r * np.cos(p[PHI])
    return cx, cy, r, h, x0, y0, pt


@njit(cache=True)
def _wrap(a):
    while a > np.pi:
        a -= 2 * np.pi
    while a < -np.pi:
        a += 2 * np.pi
    return a


@njit(cache=True)
def residuals(p, v, b_field, out):
    """Residuals and derivatives of one track w.r.t. point ``v`` (3,).

    ``out`` receives ``[eT, ez, sT, sz, s, dT/dx, dT/dy, dz/dx, dz/dy]`` (dz/dz = 1).
    """
    cx, cy, r, h, x0, y0, pt = helix_geometry(p, b_field)
    dx = v[0] - cx
    dy = v[1] - cy
    rho = np.sqrt(dx * dx + dy * dy)
    a_v = np.arctan2(dy, dx)
    a_p = np.arctan2(y0 - cy, x0 - cx)
    s = -h * r * _wrap(a_v - a_p)
    cot = np.cos(p[THETA]) / np.sin(p[THETA])
    z_trk = p[Z0] + s * cot
    e_t = rho - r
    e_z = v[2] - z_trk
    st2 = p[SD0] ** 2 + (s * p[SPHI]) ** 2
    sin_t = np.sin(p[THETA])
    sz2 = p[SZ0] ** 2 + (s / (sin_t * sin_t) * p[STHETA]) ** 2
    out[0] = e_t
    out[1] = e_z
    out[2] = np.sqrt(st2)
    out[3] = np.sqrt(sz2)
    out[4] = s
    out[5] = dx / rho
    out[6] = dy / rho
    # ds/dV = -h r d(a_v)/dV = -h r (-dy, dx)/rho^2 ; dez/dV = -cot ds/dV
    out[7] = -cot * (-h * r * (-dy) / (rho * rho))
    out[8] = -cot * (-h * r * dx / (rho * rho))


@njit(cache=True)
def momentum_at(p, s, b_field):
    """(px, py, pz, E) of the track at arc length ``s`` under the pion hypothesis."""
    cx, cy, r, h, x0, y0, pt = helix_geometry(p, b_field)
    phi = p[PHI] - h * s / r
    pz = pt * np.cos(p[THETA]) / np.sin(p[THETA])
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    e = np.sqrt(px * px + py * py + pz * pz + M_PION * M_PION)
    return px, py, pz, e


@njit(cache=True)
def line_seed(p1, p2):
    """Midpoint of closest approach of the two tracks' perigee tangent lines."""
    a = np.array([-p1[D0] * np.sin(p1[PHI]), p1[D0] * np.cos(p1[PHI]), p1[Z0]])
    b = np.array([-p2[D0] * np.sin(p2[PHI]), p2[D0] * np.cos(p2[PHI]), p2[Z0]])
    u = np.array([np.cos(p1[PHI]) * np.sin(p1[THETA]), np.sin(p1[PHI]) * np.sin(p1[THETA]), np.cos(p1[THETA])])
    w = np.array([np.cos(p2[PHI]) * np.sin(p2[THETA]), np.sin(p2[PHI]) * np.sin(p2[THETA]), np.cos(p2[THETA])])
    d = a - b
    uu = 1.0
    ww = 1.0
    uw = u[0] * w[0] + u[1] * w[1] + u[2] * w[2]
    ud = u[0] * d[0] + u[1] * d[1] + u[2] * d[2]
    wd = w[0] * d[0] + w[1] * d[1] + w[2] * d[2]
    den = uu * ww - uw * uw
    if den < 1e-12:
        t1 = 0.0
        t2 = wd
    else:
        t1 = (uw * wd - ww * ud) / den
        t2 = (uu * wd - uw * ud) / den
    return 0.5 * (a + t1 * u + b + t2 * w)


@njit(cache=True)
def fit_vertex(params, idx, n, v0, b_field, n_iter, chi2_out, cov_out):
    """Gauss-Newton fit of one vertex to tracks ``params[idx[:n]]`` starting from ``v0``.

    Returns the vertex (3,); writes the per-track chi2 contributions to ``chi2_out[:n]`` and the
    3x3 covariance to ``cov_out``.
    """
    v = v0.copy()
    res = np.zeros(9)
    for _it in range(n_iter):
        a = np.zeros((3, 3))
        g = np.zeros(3)
        for k in range(n):
            p = params[idx[k]]
            residuals(p, v, b_field, res)
            jt = np.array([res[5], res[6], 0.0])
            jz = np.array([res[7], res[8], 1.0])
            wt = 1.0 / (res[2] * res[2])
            wz = 1.0 / (res[3] * res[3])
            for i in range(3):
                g[i] += wt * jt[i] * res[0] + wz * jz[i] * res[1]
                for j in range(3):
                    a[i, j] += wt * jt[i] * jt[j] + wz * jz[i] * jz[j]
        for i in range(3):
            a[i, i] += 1e-12
        step = np.linalg.solve(a, g)
        v = v - step
        # keep the fit sane: a vertex cannot be outside the pixel volume
        if abs(v[0]) > 600 or abs(v[1]) > 600 or abs(v[2]) > 3000:
            break
        if abs(step[0]) + abs(step[1]) + abs(step[2]) < 1e-6:
            break
    a = np.zeros((3, 3))
    for k in range(n):
        p = params[idx[k]]
        residuals(p, v, b_field, res)
        chi2_out[k] = (res[0] / res[2]) ** 2 + (res[1] / res[3]) ** 2
        jt = np.array([res[5], res[6], 0.0])
        jz = np.array([res[7], res[8], 1.0])
        wt = 1.0 / (res[2] * res[2])
        wz = 1.0 / (res[3] * res[3])
        for i in range(3):
            for j in range(3):
                a[i, j] += wt * jt[i] * jt[j] + wz * jz[i] * jz[j]
    for i in range(3):
        a[i, i] += 1e-12
    cov_out[:, :] = np.linalg.inv(a)
    return v


def perigee_from_vertex(
    vertex: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray, charge: np.ndarray,
    b_field: float = B_FIELD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact perigee ``(d0, z0, phi0, theta)`` of helices produced at ``vertex`` (…, 3).

    The inverse of the track model above (used by tests and simulations); ``z0`` is in the
    frame of ``vertex``'s coordinates.
    """
    vertex = np.asarray(vertex, dtype=np.float64)
    pt = np.hypot(px, py)
    phi_v = np.arctan2(py, px)
    theta = np.arctan2(pt, pz)
    r = pt / (C_CURV * abs(b_field))
    h = np.sign(charge) * np.sign(b_field)
    cx = vertex[..., 0] + h * r * np.sin(phi_v)
    cy = vertex[..., 1] - h * r * np.cos(phi_v)
    rc = np.hypot(cx, cy)
    x0 = cx - r * cx / rc
    y0 = cy - r * cy / rc
    sin_phi0 = -(x0 - cx) / (h * r)
    cos_phi0 = (y0 - cy) / (h * r)
    phi0 = np.arctan2(sin_phi0, cos_phi0)
    d0 = y0 * np.cos(phi0) - x0 * np.sin(phi0)
    a_v = np.arctan2(vertex[..., 1] - cy, vertex[..., 0] - cx)
    a_p = np.arctan2(y0 - cy, x0 - cx)
    s = -h * r * ((a_v - a_p + np.pi) % (2 * np.pi) - np.pi)
    z0 = vertex[..., 2] - s / np.tan(theta)
    return d0, z0, phi0, theta
