"""Charged-particle helices in the solenoid (vectorised, float64) and straight lines for neutrals.

:class:`Helix` gives the transverse circle of each particle, its perigee w.r.t. the beam line in
the ATLAS convention (the point of closest approach is ``(-d0 sinφ0, d0 cosφ0, z0)``, d0 > 0
when the track goes clockwise around the beam line seen from +z), its first forward crossing of
a cylinder and the momentum direction there. Used by the tracker (:mod:`lhcml.sim.tracker`), the
hit patterns (:mod:`lhcml.sim.hit_patterns` has its own numba copy of the crossing) and the
material interactions (:mod:`lhcml.sim.material_interactions`).
"""

from __future__ import annotations

import numpy as np

from lhcml.sim.detector import C_CURV


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2.0 * np.pi) - np.pi


class Helix:
    """Transverse helix geometry of charged particles: centre, radius, rotation sense."""

    def __init__(self, vx, vy, vz, px, py, pz, q, field_tesla: float) -> None:
        self.vx, self.vy, self.vz = vx, vy, vz
        self.pt = np.hypot(px, py)
        self.cot = pz / self.pt
        self.s = np.where(q > 0, 1.0, -1.0)  # +1: clockwise seen from +z (positive charge, B along +z)
        self.R = self.pt / (C_CURV * field_tesla * np.maximum(np.abs(q), 1))
        nx, ny = py / self.pt, -px / self.pt  # unit vector to the right of the motion
        self.cx = vx + self.s * self.R * nx
        self.cy = vy + self.s * self.R * ny
        # |c|^2 - R^2 without cancellation
        self.D = vx * vx + vy * vy + 2.0 * self.s * self.R * (vx * nx + vy * ny)
        self.cabs = np.maximum(np.hypot(self.cx, self.cy), 1e-12)
        self.u0x, self.u0y = -self.s * nx, -self.s * ny  # (v - c) / R
        self.beta0 = np.arctan2(self.u0y, self.u0x)

    def perigee(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """True ``(d0, z0, phi0)`` w.r.t. the beam line, ATLAS convention."""
        dmr = self.D / (self.cabs + self.R)  # |c| - R
        chx, chy = self.cx / self.cabs, self.cy / self.cabs
        d0 = -self.s * dmr
        phi0 = np.arctan2(self.s * chx, -self.s * chy)
        # swept angle (positive = forward along the motion) from the vertex to the perigee point
        upx, upy = -chx, -chy
        ang = np.arctan2(upx * self.u0y - upy * self.u0x, upx * self.u0x + upy * self.u0y)
        alpha = self.s * ang
        z0 = self.vz + self.R * alpha * self.cot
        return d0, z0, phi0

    def _alpha_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Forward swept angle in [0, 2π) from the vertex to the point (x, y) on the circle."""
        ux, uy = (x - self.cx) / self.R, (y - self.cy) / self.R
        ang = np.arctan2(ux * self.u0y - uy * self.u0x, ux * self.u0x + uy * self.u0y)  # β0 - β
        return (self.s * ang) % (2.0 * np.pi)

    def cross_cylinder(self, r: float | np.ndarray) -> tuple[np.ndarray, ...]:
        """First forward crossing of the cylinder of radius ``r`` (scalar or per particle).

        Returns ``(ok, x, y, z, alpha)``; ``ok`` is False where the helix never reaches ``r`` or
        the particle is produced outside it.
        """
        a = (r * r + self.D) / (2.0 * self.cabs)
        h2 = r * r - a * a
        rv2 = self.vx * self.vx + self.vy * self.vy
        ok = (h2 >= 0.0) & (rv2 < r * r)
        h = np.sqrt(np.maximum(h2, 0.0))
        chx, chy = self.cx / self.cabs, self.cy / self.cabs
        x1, y1 = a * chx - h * chy, a * chy + h * chx
        x2, y2 = a * chx + h * chy, a * chy - h * chx
        a1, a2 = self._alpha_of(x1, y1), self._alpha_of(x2, y2)
        first = a1 <= a2
        x = np.where(first, x1, x2)
        y = np.where(first, y1, y2)
        alpha = np.where(first, a1, a2)
        ok &= alpha < np.pi  # no loopers
        z = self.vz + self.R * alpha * self.cot
        return ok, x, y, z, alpha

    def direction_at(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit transverse momentum direction at a point of the circle."""
        ux, uy = (x - self.cx) / self.R, (y - self.cy) / self.R
        return self.s * uy, -self.s * ux


def true_perigee(vx, vy, vz, px, py, pz, charge, field_tesla: float = 2.0):
    """True perigee parameters of charged particles' helices w.r.t. the beam line.

    Parameters
    ----------
    vx, vy, vz
        Production vertex (mm), arrays of the same shape.
    px, py, pz
        Momentum at production (GeV).
    charge
        Electric charge in units of e (non-zero).
    field_tesla
        Solenoid field along +z.

    Returns
    -------
    d0, z0, phi0, theta, qoverp
        d0, z0 in mm (ATLAS sign convention: the point of closest approach is
        ``(-d0 sin φ0, d0 cos φ0, z0)``), angles in rad, q/p in 1/GeV.
    """
    args = [np.asarray(a, dtype=np.float64) for a in (vx, vy, vz, px, py, pz, charge)]
    vx, vy, vz, px, py, pz, q = np.broadcast_arrays(*args)
    h = Helix(vx, vy, vz, px, py, pz, q, field_tesla)
    d0, z0, phi0 = h.perigee()
    theta = np.arctan2(h.pt, pz)
    qoverp = q / np.sqrt(h.pt**2 + pz**2)
    return d0, z0, phi0, theta, qoverp


def straight_cross_cylinder(vx, vy, vz, px, py, pz, r):
    """Forward crossing of a cylinder by a neutral particle (straight line)."""
    pt = np.hypot(px, py)
    ux, uy = px / pt, py / pt
    b = vx * ux + vy * uy
    c = vx * vx + vy * vy - r * r
    disc = b * b - c
    ok = (disc >= 0) & (c < 0)
    t = -b + np.sqrt(np.maximum(disc, 0.0))
    return ok, vx + t * ux, vy + t * uy, vz + t * pz / pt, ux, uy
