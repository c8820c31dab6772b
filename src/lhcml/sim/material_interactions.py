"""Hadronic interactions and photon conversions in the pixel-volume material.

Hadrons interact at the beam pipe or a pixel layer with probability x/λ_I / sinθ per layer; an
interacting charged hadron is lost and 1 + Poisson(n) charged secondaries (``otherSecondary``,
parent = the hadron) start at the interaction point. Photons convert into e+e− (probability
7/9 · x/X0 / sinθ per layer). Parameters: the ``material`` block of ``detector_params.yaml``
(docs/simulation.md). Called by :func:`lhcml.sim.tracker.simulate_tracks`.
"""

from __future__ import annotations

import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.sim.detector import DetectorParams
from lhcml.sim.helix import Helix, straight_cross_cylinder

#: vertex ids of material secondaries: this offset + the local index of the interacting parent
SECONDARY_VERTEX_OFFSET = 1_000_000

_M_PION = 0.13957039  # GeV, PDG
_M_ELECTRON = 0.000510999  # GeV, PDG


def event_of(flat_index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Event number of flat particle indices."""
    return np.searchsorted(offsets, flat_index, side="right") - 1


def local_index(flat_index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Index of flat particle indices within their event."""
    return flat_index - offsets[event_of(flat_index, offsets)]


def material_secondaries(cols, offsets, rng, p: DetectorParams):
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
        ok_n, x_n, y_n, z_n, ux_n, uy_n = straight_cross_cylinder(
            cols["vx"][idx], cols["vy"][idx], cols["vz"][idx], px[idx], py[idx], pz[idx], r_int)
        x, y, z, ux, uy = x_n, y_n, z_n, ux_n, uy_n
        if charged.any():
            c = np.flatnonzero(charged)
            ic = idx[c]
            h = Helix(cols["vx"][ic], cols["vy"][ic], cols["vz"][ic], px[ic], py[ic], pz[ic], qi[c],
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
            "vertex_index": (SECONDARY_VERTEX_OFFSET + local_index(pidx, offsets)).astype(np.int32),
            "is_pileup": cols["is_pileup"][pidx],
            "_evt": event_of(pidx, offsets),
            "_pidx": np.full(len(par), -1, dtype=np.int64),
        })
    lost = np.concatenate(out_lost) if out_lost else np.zeros(0, dtype=np.int64)
    if secs:
        sec = {k: np.concatenate([s[k] for s in secs]) for k in secs[0]}
    else:
        sec = None
    return lost, sec
