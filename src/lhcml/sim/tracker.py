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
from lhcml.sim.detector import C_CURV, DetectorParams, default_detector_params
from lhcml.sim.hit_patterns import _merged_clusters, hit_pattern, neighbour_counts, surface_geometry
from lhcml.sim.track_resolution import (
    TAIL_DENSE_CORE,
    TAIL_MATERIAL,
    TAIL_PATTERN,
    core_resolutions,
    material_kinks,
    tail_factors,
    tail_flags,
)

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

#: vertex ids of material secondaries: this offset + the local index of the interacting parent
SECONDARY_VERTEX_OFFSET = 1_000_000

_M_PION = 0.13957039
_M_ELECTRON = 0.000510999
_FIELDS_NEEDED = ("pid", "charge", "px", "py", "pz", "e", "m", "vx", "vy", "vz", "final",
                  "parent_pid", "origin", "vertex_index", "is_pileup")
#: half-width of the η and φ window (rad) inside which pairs of tracks are tested for merged clusters
_SHARE_WINDOW = 0.05


# ------------------------------------------------------------------------------------------
# helix geometry (vectorised, float64)
# ------------------------------------------------------------------------------------------


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2.0 * np.pi) - np.pi


class _Helix:
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
    h = _Helix(vx, vy, vz, px, py, pz, q, field_tesla)
    d0, z0, phi0 = h.perigee()
    theta = np.arctan2(h.pt, pz)
    qoverp = q / np.sqrt(h.pt**2 + pz**2)
    return d0, z0, phi0, theta, qoverp


def _straight_cross_cylinder(vx, vy, vz, px, py, pz, r):
    """Forward crossing of a cylinder by a neutral particle (straight line)."""
    pt = np.hypot(px, py)
    ux, uy = px / pt, py / pt
    b = vx * ux + vy * uy
    c = vx * vx + vy * vy - r * r
    disc = b * b - c
    ok = (disc >= 0) & (c < 0)
    t = -b + np.sqrt(np.maximum(disc, 0.0))
    return ok, vx + t * ux, vy + t * uy, vz + t * pz / pt, ux, uy


# ------------------------------------------------------------------------------------------
# main entry point
# ------------------------------------------------------------------------------------------


def _interp_table(x: np.ndarray, edges, values, lower_edges: bool) -> np.ndarray:
    """Step-function lookup: ``lower_edges`` True means ``edges`` are bin lower edges."""
    edges = np.asarray(edges)
    values = np.asarray(values)
    if lower_edges:
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(values) - 1)
    else:
        idx = np.clip(np.searchsorted(edges, x, side="left"), 0, len(values) - 1)
    return values[idx]


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


def _event_of(flat_index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Event number of flat particle indices."""
    return np.searchsorted(offsets, flat_index, side="right") - 1


def _local(flat_index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Index of flat particle indices within their event."""
    return flat_index - offsets[_event_of(flat_index, offsets)]


def _material_secondaries(cols, offsets, rng, p: DetectorParams):
    """Hadronic interactions and photon conversions in the pixel-volume material.

    Returns the flat index of charged particles that interacted (they are lost) and a dict of
    columns for the secondary particles.
    """
    m = p.material
    radii = np.asarray(m.radii)
    pid = cols["pid"]
    px, py, pz = cols["px"], cols["py"], cols["pz"]
    # kinematics only for final hadrons and photons (a small subset at high pile-up)
    e_min = min(m.hadron_p_min, m.photon_e_min)
    pre = np.flatnonzero(cols["final"] & (cols["e"] > e_min) & ((pid > 100) | (pid < -100) | (pid == 22)))
    # cheap η and radius pre-selection with squares (no transcendental functions on all particles)
    sh2 = np.sinh(p.acceptance.eta_max + 0.1) ** 2
    pt2 = px[pre] ** 2 + py[pre] ** 2
    rv2 = cols["vx"][pre] ** 2 + cols["vy"][pre] ** 2
    pre = pre[(pz[pre] ** 2 < sh2 * pt2) & (rv2 < radii[-1] ** 2)]
    pt_p = np.hypot(px[pre], py[pre])
    ptot_p = np.sqrt(pt_p**2 + pz[pre] ** 2)
    rv_p = np.hypot(cols["vx"][pre], cols["vy"][pre])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta_p = np.arcsinh(pz[pre] / pt_p)
    base = (pt_p > 0) & (np.abs(eta_p) < p.acceptance.eta_max + 0.1) & (rv_p < radii[-1])
    pid_p = pid[pre]
    hadron = base & (pid_p != 22) & (ptot_p > m.hadron_p_min)
    photon = base & (pid_p == 22) & (cols["e"][pre] > m.photon_e_min)
    out_lost: list[np.ndarray] = []
    secs: list[dict[str, np.ndarray]] = []

    for kind, sel, thick, scale in (
        ("hadron", hadron, np.asarray(m.interaction_lengths), 1.0),
        ("photon", photon, np.asarray(m.radiation_lengths), 7.0 / 9.0),
    ):
        loc = np.flatnonzero(sel)
        idx = pre[loc]
        pt_i, ptot_i, rv_i = pt_p[loc], ptot_p[loc], rv_p[loc]
        # probability per layer (0 for layers inside the production radius)
        sin_t = pt_i / ptot_i
        u = rng.random(len(idx))
        # the exact layer-by-layer probabilities only where u is below their upper bound
        maybe = np.flatnonzero(u < scale * thick.sum() / sin_t)
        prob = np.minimum(scale * thick[None, :] / sin_t[maybe, None], 1.0)
        prob = np.where(radii[None, :] > rv_i[maybe, None], prob, 0.0)
        cum = 1.0 - np.cumprod(1.0 - prob, axis=1)
        um = u[maybe]
        hit_layer = np.argmax(um[:, None] < cum, axis=1)
        inter = um < cum[:, -1]
        interacts = maybe[inter]
        hit_layer = hit_layer[inter]
        idx = idx[interacts]
        pt_i, pz_i = pt_i[interacts], pz[idx]
        if len(idx) == 0:
            continue
        r_int = radii[hit_layer]
        qi = cols["charge"][idx].astype(np.float64)
        charged = qi != 0
        # crossing point and direction at the layer (helix for charged, line for neutral)
        ok_n, x_n, y_n, z_n, ux_n, uy_n = _straight_cross_cylinder(
            cols["vx"][idx], cols["vy"][idx], cols["vz"][idx], px[idx], py[idx], pz[idx], r_int)
        x, y, z, ux, uy = x_n, y_n, z_n, ux_n, uy_n
        if charged.any():
            c = np.flatnonzero(charged)
            ic = idx[c]
            h = _Helix(cols["vx"][ic], cols["vy"][ic], cols["vz"][ic], px[ic], py[ic], pz[ic], qi[c],
                       p.field_tesla)
            ok_c, xc, yc, zc, _ = h.cross_cylinder(r_int[c])
            dxc, dyc = h.direction_at(xc, yc)
            x, y, z, ux, uy = x.copy(), y.copy(), z.copy(), ux.copy(), uy.copy()
            x[c], y[c], z[c], ux[c], uy[c] = xc, yc, zc, dxc, dyc
            ok_n = ok_n.copy()
            ok_n[c] = ok_c
        keep = ok_n
        idx, x, y, z, ux, uy, r_int = idx[keep], x[keep], y[keep], z[keep], ux[keep], uy[keep], r_int[keep]
        qi = qi[keep]
        if len(idx) == 0:
            continue
        # secondaries start just outside the layer they were produced in (no hit on it)
        x, y = x * (1.0 + 1e-9), y * (1.0 + 1e-9)
        ptp = pt_i[keep]
        pzp = pz_i[keep]
        pabs = np.sqrt(ptp**2 + pzp**2)
        # unit momentum direction at the interaction point
        dx, dy, dz = ux * ptp / pabs, uy * ptp / pabs, pzp / pabs
        if kind == "hadron":
            lost = idx[qi != 0]
            out_lost.append(lost)
            nsec = 1 + rng.poisson(m.secondaries_mean, size=len(idx))
            par = np.repeat(np.arange(len(idx)), nsec)
            w = rng.exponential(1.0, size=len(par))
            wsum = np.bincount(par, weights=w, minlength=len(idx))
            pmag = m.secondary_energy_fraction * pabs[par] * w / wsum[par]
            kick = rng.normal(0.0, m.secondary_pt_kick / np.sqrt(2.0), size=(len(par), 2))
            sq = rng.choice(np.array([-1, 1], dtype=np.int8), size=len(par))
            spid = 211 * sq.astype(np.int32)
            smass = np.full(len(par), _M_PION)
        else:
            par = np.repeat(np.arange(len(idx)), 2)
            zfrac = rng.random(len(idx))
            frac = np.stack([zfrac, 1.0 - zfrac], axis=1).ravel()
            pmag = np.maximum(cols["e"][idx][par] * frac, 1e-6)
            kick = np.zeros((len(par), 2))
            sq = np.tile(np.array([-1, 1], dtype=np.int8), len(idx))
            spid = -11 * sq.astype(np.int32)  # e- (pdg 11) has charge -1
            smass = np.full(len(par), _M_ELECTRON)
        # orthonormal basis perpendicular to the parent direction
        ddx, ddy, ddz = dx[par], dy[par], dz[par]
        e1x, e1y, e1z = -ddy, ddx, np.zeros_like(ddx)
        n1 = np.maximum(np.hypot(e1x, e1y), 1e-12)
        e1x, e1y = e1x / n1, e1y / n1
        e2x, e2y, e2z = ddy * e1z - ddz * e1y, ddz * e1x - ddx * e1z, ddx * e1y - ddy * e1x
        spx = pmag * ddx + kick[:, 0] * e1x + kick[:, 1] * e2x
        spy = pmag * ddy + kick[:, 0] * e1y + kick[:, 1] * e2y
        spz = pmag * ddz + kick[:, 0] * e1z + kick[:, 1] * e2z
        pidx = idx[par]
        secs.append({
            "pid": spid,
            "charge": sq,
            "px": spx, "py": spy, "pz": spz,
            "e": np.sqrt(spx**2 + spy**2 + spz**2 + smass**2),
            "m": smass,
            "vx": x[par], "vy": y[par], "vz": z[par],
            "final": np.ones(len(par), dtype=bool),
            "parent_pid": pid[pidx].astype(np.int32),
            "origin": np.full(len(par), TRUTH_ORIGIN["otherSecondary"], dtype=np.int8),
            "vertex_index": (SECONDARY_VERTEX_OFFSET + _local(pidx, offsets)).astype(np.int32),
            "is_pileup": cols["is_pileup"][pidx],
            "_evt": _event_of(pidx, offsets),
            "_pidx": np.full(len(par), -1, dtype=np.int64),
        })
    lost = np.concatenate(out_lost) if out_lost else np.zeros(0, dtype=np.int64)
    if secs:
        sec = {k: np.concatenate([s[k] for s in secs]) for k in secs[0]}
    else:
        sec = None
    return lost, sec


def _shared_split(merged, n_side_hits, is_pix, rng, sh):
    """Merged clusters → (pixel shared, SCT shared, pixel split, IBL shared, IBL split) counts."""
    n, ns = merged.shape
    u_split = rng.random((n, ns))
    split = merged & is_pix[None, :] & (u_split < sh.split_probability)
    shared = merged & ~split
    shared_sides = np.where(shared, n_side_hits, 0)
    return (shared_sides[:, is_pix].sum(axis=1), shared_sides[:, ~is_pix].sum(axis=1),
            split[:, is_pix].sum(axis=1), shared[:, 0].astype(np.int64), split[:, 0].astype(np.int64))


def _cluster_windows(p: DetectorParams, is_pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per surface: rφ and z/r distances below which two crossings share a cluster."""
    sh = p.shared_hits
    ns = len(is_pix)
    drphi = np.array([sh.ibl_drphi if k == 0 else (sh.pixel_drphi if is_pix[k] else sh.sct_drphi)
                      for k in range(ns)])
    dw = np.array([sh.ibl_dz if k == 0 else (sh.pixel_dz if is_pix[k] else sh.sct_dz) for k in range(ns)])
    return drphi, dw


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
    lost, sec = _material_secondaries(cols, offsets, rng, p)
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
    c["_evt"] = _event_of(idx, offsets)
    c["_pidx"] = _local(idx, offsets)
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
    hel = _Helix(c["vx"], c["vy"], c["vz"], c["px"], c["py"], c["pz"], q, p.field_tesla)
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
    drphi, dw = _cluster_windows(p, is_pix)
    merged = _merged_clusters(coff, eta_t, phi_t, crossed, phi_pos, w_pos, rad_pos, drphi, dw,
                              _SHARE_WINDOW)
    merged &= any_hit
    (n_pix_shared, n_sct_shared, n_pix_split, ibl_shared, ibl_split) = _shared_split(
        merged, n_side_hits, is_pix, rng, sh)
    shared_modules = n_pix_shared + n_sct_shared // 2

    # ---- efficiency -------------------------------------------------------------------
    e = p.efficiency
    eps = (_interp_table(np.abs(eta_t), e.eta_edges, e.eta_values, lower_edges=False)
           * _interp_table(pt_t, e.pt_edges, e.pt_values, lower_edges=True) / e.pt_reference)
    eps *= np.interp(r_prod, e.radius_points, e.radius_values, right=0.0)
    apid = np.abs(c["pid"])
    eps = np.where(apid == 13, np.minimum(eps * e.muon_factor, 0.99), eps)
    eps = np.where(apid == 11, eps * e.electron_factor, eps)
    # the efficiency tables include hadronic interactions, which are simulated explicitly
    m = p.material
    sin_t = np.sin(theta_t)
    lam = np.where(np.asarray(m.radii)[None, :] > r_prod[:, None],
                   np.asarray(m.interaction_lengths)[None, :], 0.0).sum(axis=1) / sin_t
    is_hadron = (apid > 100) & (ptot_t > m.hadron_p_min)
    eps = np.where(is_hadron, eps / np.maximum(1.0 - lam, 0.5), eps)
    eps = np.clip(eps, 0.0, 1.0)
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
    phi = _wrap(phi_t + k_phi + s_phi * g[:, 2])
    theta = np.clip(theta_t + k_theta + s_theta * g[:, 3], 1e-4, np.pi - 1e-4)
    qp = qp_t + s_qp * g[:, 4]
    qp = np.where(qp == 0, qp_t, qp)
    tail_src = (kinked * TAIL_MATERIAL + dense * TAIL_DENSE_CORE + pattern * TAIL_PATTERN).astype(np.uint8)
    charge = np.sign(qp).astype(np.int8)
    pt = np.sin(theta) / np.abs(qp)
    eta = -np.log(np.tan(0.5 * theta))
    reco &= (pt > acc.pt_min) & (np.abs(eta) < acc.eta_max)

    # ---- lepton identification ---------------------------------------------------------
    li = p.lepton_id
    u_lep = rng.random(n)
    conv = (c["parent_pid"] == 22) & (c["origin"] == TRUTH_ORIGIN["otherSecondary"])
    eff_e = np.where(conv, li.conversion_electron_efficiency, li.electron_efficiency)
    is_e = (apid == 11) & (pt_t > li.electron_pt_min) & (u_lep < eff_e)
    is_mu = (apid == 13) & (ptot_t > li.muon_p_min) & (u_lep < li.muon_efficiency)
    had = apid > 100
    mis_e = had & (u_lep < li.hadron_as_electron)
    mis_mu = had & (u_lep >= li.hadron_as_electron) & (u_lep < li.hadron_as_electron + li.hadron_as_muon)
    lepton = np.where(is_e | mis_e, 11, np.where(is_mu | mis_mu, 13, 0)) * charge

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
    fakes, fake_evt = _fakes(real, real_evt, geo_real, n_events, rng, p)

    out_evt = np.concatenate([real_evt, fake_evt])
    order = np.argsort(out_evt, kind="stable")
    columns = {}
    for k, dt in TRACK_OUTPUT_FIELDS.items():
        columns[k] = np.concatenate([np.asarray(real[k]), np.asarray(fakes[k])]).astype(dt)[order]
    counts_out = np.bincount(out_evt, minlength=n_events).astype(np.int64)
    return ak.unflatten(ak.zip(columns, depth_limit=1), counts_out)


def _fakes(real: dict[str, np.ndarray], real_evt: np.ndarray, geo_real: dict[str, np.ndarray], n_events: int,
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
    phi = _wrap(real["phi"][host] + f.spread * g[:, 1])
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

    drphi, dw = _cluster_windows(p, is_pix)
    merged_all = _merged_clusters(off_all, cat(geo_real["eta"], eta), cat(geo_real["phi"], phi),
                                  cat(geo_real["crossed"], crossed), cat(geo_real["phi_pos"], phi_pos),
                                  cat(geo_real["w_pos"], w_pos), cat(geo_real["rad_pos"], rad_pos),
                                  drphi, dw, _SHARE_WINDOW)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    merged = merged_all[inv[len(real_evt):]] & (hits > 0)
    n_pix_shared, n_sct_shared, n_pix_split, ibl_shared, ibl_split = _shared_split(
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
