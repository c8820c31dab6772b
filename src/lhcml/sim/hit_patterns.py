"""Silicon hit patterns from the module geometry of the parametric inner detector.

Every sensor surface of ``detector_params.yaml`` (barrel cylinders, end-cap disks) is tiled by
modules: ``n_phi_modules`` in azimuth × ``n_z_modules`` along z (barrels) or ``n_r_modules``
rings (disks). Adjacent modules in φ overlap by the fraction ``phi_overlap`` of a module's width
(the tilted staves and the staggered disk modules of ATLAS), so a track crossing a layer in an
overlap region leaves a second hit on that layer. A fraction of the modules is dead
(``modules.dead_fraction_*``, placed at random by the fixed ``modules.dead_seed``, plus the ones
named in ``modules.dead_modules``): a track crossing a dead module gets no hit there, which counts
as a hole when it lies between the track's first and last hits. Live modules record a hit per
side with the per-layer ``hit_efficiency``; a missed side between the first and last hits is a
hole too.

The same kernel gives the hit patterns of real and fake tracks (:mod:`lhcml.sim.tracker`).
Also here: the pairwise search for merged clusters (shared/split hits) and the count of
neighbouring tracks (the local hit density used by pattern-recognition tails and fakes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np

from lhcml.errors import ConfigError
from lhcml.sim.detector import DetectorParams


@dataclass(frozen=True)
class SurfaceGeometry:
    """Flat per-surface arrays (barrel layers first, then disks) for the numba kernels."""

    names: tuple[str, ...]
    is_pixel: np.ndarray  # bool (ns,)
    nside: np.ndarray  # int64 (ns,) read-out sides per module (SCT: 2)
    efficiency: np.ndarray  # (ns,) hit efficiency per side of a live module
    n_phi: np.ndarray  # int64 (ns,)
    n_w: np.ndarray  # int64 (ns,) modules along z (barrel) or rings (disk)
    w_lo: np.ndarray  # (ns,) lower z (barrel) / r (disk) edge of the module grid
    w_hi: np.ndarray
    overlap: np.ndarray  # (ns,) fraction of a module's φ width shared with the next module
    module_offset: np.ndarray  # int64 (ns + 1,) offsets into ``dead``
    dead: np.ndarray  # bool (n_modules,): module index = offset + i_phi * n_w + i_w


def _dead_spec(p: DetectorParams) -> list[tuple[str, int, int]]:
    out = []
    names = [s.name for s in (*p.barrel_layers, *p.end_cap_disks)]
    for spec in p.modules.dead_modules:
        parts = spec.split("/")
        if len(parts) != 3 or parts[0] not in names or not parts[1].isdigit() or not parts[2].isdigit():
            raise ConfigError(f"modules.dead_modules entry '{spec}' must be 'LAYER/phi_index/z_or_ring_index' "
                              f"with LAYER one of {names}")
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


@lru_cache(maxsize=8)
def surface_geometry(p: DetectorParams) -> SurfaceGeometry:
    """The module tiling and dead-module map of all surfaces (cached per parameter set).

    Raises
    ------
    ConfigError
        A ``modules.dead_modules`` entry names an unknown layer or an index out of range.
    """
    layers = [*p.barrel_layers, *p.end_cap_disks]
    nb = len(p.barrel_layers)
    names = tuple(s.name for s in layers)
    is_pix = np.array([s.kind == "pixel" for s in layers])
    he = p.hit_efficiency
    eff = np.where(is_pix, he.pixel, he.sct)
    eff[0] = he.ibl
    n_phi = np.array([s.n_phi_modules for s in layers], dtype=np.int64)
    n_w = np.array([s.n_z_modules if k < nb else s.n_r_modules for k, s in enumerate(layers)], dtype=np.int64)
    w_lo = np.array([-s.half_length if k < nb else s.r_min for k, s in enumerate(layers)], dtype=np.float64)
    w_hi = np.array([s.half_length if k < nb else s.r_max for k, s in enumerate(layers)], dtype=np.float64)
    overlap = np.array([s.phi_overlap for s in layers], dtype=np.float64)
    off = np.zeros(len(layers) + 1, dtype=np.int64)
    np.cumsum(n_phi * n_w, out=off[1:])
    m = p.modules
    frac = np.where(is_pix, m.dead_fraction_pixel, m.dead_fraction_sct)
    frac[0] = m.dead_fraction_ibl
    u = np.random.default_rng(m.dead_seed).random(int(off[-1]))
    dead = u < np.repeat(frac, n_phi * n_w)
    for name, i_phi, i_w in _dead_spec(p):
        k = names.index(name)
        if i_phi >= n_phi[k] or i_w >= n_w[k]:
            raise ConfigError(f"modules.dead_modules entry '{name}/{i_phi}/{i_w}' is out of range: "
                              f"{name} has {n_phi[k]} φ modules and {n_w[k]} along z/r")
        dead[off[k] + i_phi * n_w[k] + i_w] = True
    return SurfaceGeometry(names, is_pix, np.array([s.hits_per_layer for s in layers], dtype=np.int64), eff,
                           n_phi, n_w, w_lo, w_hi, overlap, off, dead)


def module_center(p: DetectorParams, layer: str, i_phi: int, i_w: int) -> tuple[float, float]:
    """Azimuth (rad) and z (barrel) or r (disk) in mm of the centre of a module."""
    g = surface_geometry(p)
    if layer not in g.names:
        raise ConfigError(f"unknown layer '{layer}'; layers: {list(g.names)}")
    k = g.names.index(layer)
    phi = -np.pi + (i_phi + 0.5) * 2.0 * np.pi / g.n_phi[k]
    w = g.w_lo[k] + (i_w + 0.5) * (g.w_hi[k] - g.w_lo[k]) / g.n_w[k]
    return float(phi), float(w)


def hit_pattern(vx, vy, vz, px, py, pz, q, p: DetectorParams, rng: np.random.Generator,
                efficiency: np.ndarray | None = None):
    """Crossings, hits and holes per surface of helices (see :func:`_hit_pattern`).

    ``efficiency`` overrides the per-surface hit efficiency (fakes: the chance that a random hit
    lies in the road). Returns ``crossed, alpha, phi_pos, w_pos, rad_pos, hits, holes``, arrays of
    shape ``(n, n_surfaces)``.
    """
    from lhcml.sim.detector import C_CURV

    g = surface_geometry(p)
    nb = len(p.barrel_layers)
    eff = g.efficiency if efficiency is None else np.asarray(efficiency, dtype=np.float64)
    u_hit = rng.random((len(vx), len(g.names), 2))
    return _hit_pattern(vx, vy, vz, px, py, pz, q, C_CURV * p.field_tesla,
                        np.array([b.radius for b in p.barrel_layers]), g.w_hi[:nb],
                        np.array([d.z for d in p.end_cap_disks]), g.w_lo[nb:], g.w_hi[nb:],
                        g.nside, eff, u_hit, g.n_phi, g.n_w, g.w_lo, g.w_hi, g.overlap,
                        g.module_offset, g.dead)


@numba.njit(cache=True, inline="always")
def _module_hits(k, phi_pos, w, nside, eff, u_hit, i, n_phi, n_w, w_lo, w_hi, overlap, moff, dead):
    """Hits (sides) and expected sides on surface ``k`` at azimuth ``phi_pos`` and z/r ``w``."""
    x = (phi_pos + np.pi) * (0.5 / np.pi) * n_phi[k]  # phi_pos in [-π, π]: x >= 0
    i_phi = int(x)
    frac = x - i_phi
    if i_phi >= n_phi[k]:
        i_phi -= n_phi[k]
    i_w = int((w - w_lo[k]) / (w_hi[k] - w_lo[k]) * n_w[k])
    i_w = min(max(i_w, 0), n_w[k] - 1)
    n_mod = 2 if frac > 1.0 - overlap[k] else 1
    hits = 0
    expected = 0
    for mm in range(n_mod):
        ip = i_phi + mm
        if ip >= n_phi[k]:
            ip -= n_phi[k]
        expected += nside[k]
        if dead[moff[k] + ip * n_w[k] + i_w]:
            continue
        for side in range(nside[k]):
            u = u_hit[i, k, side]
            if mm == 1:
                # the overlap module: the low-order bits of the same uniform (53-bit doubles: the
                # fractional part of u·2^16 is uniform and independent of u's leading bits)
                u = (u * 65536.0) % 1.0
            if u < eff[k]:
                hits += 1
    return hits, expected


@numba.njit(cache=True)
def _hit_pattern(vx, vy, vz, px, py, pz, q, c_field, b_r, b_hl, d_z, d_rmin, d_rmax,
                 nside, eff, u_hit, n_phi, n_w, w_lo, w_hi, overlap, moff, dead):
    """Helix crossings of every sensor surface, hits (per side) and holes, per particle.

    Surfaces are the barrel layers (``b_*``) followed by the disks (``d_*``). Returns
    ``crossed, alpha, phi_pos, w_pos, rad_pos`` (per surface: crossed?, swept angle from the
    vertex, azimuth of the crossing point, z on barrels / r on disks, radius) and ``hits``,
    ``holes`` (per surface, counted over sides). A surface crossing hits one module, or two in
    the φ-overlap band; dead modules give no hits; expected sides without a hit between the first
    and last hits are holes.
    """
    n = len(vx)
    nb = len(b_r)
    nd = len(d_z)
    ns = nb + nd
    crossed = np.zeros((n, ns), dtype=np.bool_)
    alpha = np.full((n, ns), np.inf)
    phi_pos = np.zeros((n, ns))
    w_pos = np.zeros((n, ns))
    rad_pos = np.zeros((n, ns))
    hits = np.zeros((n, ns), dtype=np.int8)
    holes = np.zeros((n, ns), dtype=np.int8)
    two_pi = 2.0 * np.pi
    expect = np.zeros(ns, dtype=np.int64)
    rmax_disk = d_rmax.max() if nd > 0 else 0.0
    for i in range(n):
        pt = np.hypot(px[i], py[i])
        cot = pz[i] / pt
        s = 1.0 if q[i] > 0 else -1.0
        R = pt / (c_field * max(abs(q[i]), 1.0))
        nx = py[i] / pt
        ny = -px[i] / pt
        cx = vx[i] + s * R * nx
        cy = vy[i] + s * R * ny
        D = vx[i] * vx[i] + vy[i] * vy[i] + 2.0 * s * R * (vx[i] * nx + vy[i] * ny)
        cabs = max(np.hypot(cx, cy), 1e-12)
        chx = cx / cabs
        chy = cy / cabs
        u0x = -s * nx
        u0y = -s * ny
        beta0 = np.arctan2(u0y, u0x)
        rv2 = vx[i] * vx[i] + vy[i] * vy[i]
        rv = np.sqrt(rv2)
        for k in range(nb):
            r = b_r[k]
            if rv2 >= r * r:
                continue
            a = (r * r + D) / (2.0 * cabs)
            h2 = r * r - a * a
            if h2 < 0.0:
                continue
            h = np.sqrt(h2)
            best = np.inf
            bx = 0.0
            by = 0.0
            for sg in (-1.0, 1.0):
                x = a * chx - sg * h * chy
                y = a * chy + sg * h * chx
                ux = (x - cx) / R
                uy = (y - cy) / R
                ang = np.arctan2(ux * u0y - uy * u0x, ux * u0x + uy * u0y)
                al = (s * ang) % two_pi
                if al < best:
                    best = al
                    bx = x
                    by = y
            if best >= np.pi:
                continue
            z = vz[i] + R * best * cot
            if abs(z) >= b_hl[k]:
                continue
            crossed[i, k] = True
            alpha[i, k] = best
            phi_pos[i, k] = np.arctan2(by, bx)
            w_pos[i, k] = z
            rad_pos[i, k] = r
        if cot != 0.0:
            # the largest |z| reachable before leaving the disks' outer radius: skip the rest
            arg = min(1.0, (rmax_disk + rv) / (2.0 * R))
            zreach = abs(vz[i]) + 2.0 * R * np.arcsin(arg) * abs(cot)
            for k in range(nd):
                if d_z[k] > zreach:
                    continue
                zt = d_z[k] if cot > 0 else -d_z[k]
                al = (zt - vz[i]) / (R * cot)
                if al <= 0.0 or al >= np.pi:
                    continue
                beta = beta0 - s * al
                x = cx + R * np.cos(beta)
                y = cy + R * np.sin(beta)
                rr = np.hypot(x, y)
                if rr <= d_rmin[k] or rr >= d_rmax[k] or rr <= rv:
                    continue
                kk = nb + k
                crossed[i, kk] = True
                alpha[i, kk] = al
                phi_pos[i, kk] = np.arctan2(y, x)
                w_pos[i, kk] = rr
                rad_pos[i, kk] = rr
        # hits per side, then holes between the first and the last hit
        a_first = np.inf
        a_last = -np.inf
        for k in range(ns):
            if not crossed[i, k]:
                continue
            nh, ne = _module_hits(k, phi_pos[i, k], w_pos[i, k], nside, eff, u_hit, i, n_phi, n_w,
                                  w_lo, w_hi, overlap, moff, dead)
            hits[i, k] = nh
            expect[k] = ne
            if nh > 0:
                a_first = min(a_first, alpha[i, k])
                a_last = max(a_last, alpha[i, k])
        for k in range(ns):
            if crossed[i, k] and alpha[i, k] > a_first and alpha[i, k] < a_last:
                holes[i, k] = expect[k] - hits[i, k]
    return crossed, alpha, phi_pos, w_pos, rad_pos, hits, holes




@numba.njit(cache=True)
def _merged_clusters(offsets, eta, phi, crossed, phi_pos, w_pos, rad_pos, drphi, dw, window):
    """For each track and geometric surface: does its cluster merge with another track's?

    Pairs are searched per event among tracks sorted in η, within ``window`` in η and φ.
    Distances: ``0.5 (r_i + r_j) |Δφ_pos|`` against ``drphi[k]`` and ``|Δw|`` (z on barrel layers,
    r on disks) against ``dw[k]``.
    """
    n, ns = crossed.shape
    merged = np.zeros((n, ns), dtype=np.bool_)
    for e in range(len(offsets) - 1):
        lo = offsets[e]
        hi = offsets[e + 1]
        if hi - lo < 2:
            continue
        order = np.argsort(eta[lo:hi]) + lo
        m = hi - lo
        for a in range(m):
            i = order[a]
            for b in range(a + 1, m):
                j = order[b]
                if eta[j] - eta[i] > window:
                    break
                dphi = phi[i] - phi[j]
                if dphi > np.pi:
                    dphi -= 2 * np.pi
                elif dphi < -np.pi:
                    dphi += 2 * np.pi
                if abs(dphi) > window:
                    continue
                for k in range(ns):
                    if crossed[i, k] and crossed[j, k]:
                        dp = phi_pos[i, k] - phi_pos[j, k]
                        if dp > np.pi:
                            dp -= 2 * np.pi
                        elif dp < -np.pi:
                            dp += 2 * np.pi
                        if (abs(0.5 * (rad_pos[i, k] + rad_pos[j, k]) * dp) < drphi[k]
                                and abs(w_pos[i, k] - w_pos[j, k]) < dw[k]):
                            merged[i, k] = True
                            merged[j, k] = True
    return merged


@numba.njit(cache=True)
def neighbour_counts(offsets, eta, phi, radius):
    """Number of other tracks of the same event within ΔR < ``radius`` of each track."""
    n = len(eta)
    out = np.zeros(n, dtype=np.int64)
    r2 = radius * radius
    for e in range(len(offsets) - 1):
        lo = offsets[e]
        hi = offsets[e + 1]
        if hi - lo < 2:
            continue
        order = np.argsort(eta[lo:hi]) + lo
        m = hi - lo
        for a in range(m):
            i = order[a]
            for b in range(a + 1, m):
                j = order[b]
                de = eta[j] - eta[i]
                if de > radius:
                    break
                dp = phi[i] - phi[j]
                if dp > np.pi:
                    dp -= 2 * np.pi
                elif dp < -np.pi:
                    dp += 2 * np.pi
                if de * de + dp * dp < r2:
                    out[i] += 1
                    out[j] += 1
    return out


#: half-width of the η and φ window (rad) inside which pairs of tracks are tested for merged
#: clusters (our choice: wider than any cluster window at the innermost radius)
SHARE_WINDOW = 0.05


def shared_split(merged, n_side_hits, is_pix, rng, sh):
    """Merged clusters → (pixel shared, SCT shared, pixel split, IBL shared, IBL split) counts."""
    n, ns = merged.shape
    u_split = rng.random((n, ns))
    split = merged & is_pix[None, :] & (u_split < sh.split_probability)
    shared = merged & ~split
    shared_sides = np.where(shared, n_side_hits, 0)
    return (shared_sides[:, is_pix].sum(axis=1), shared_sides[:, ~is_pix].sum(axis=1),
            split[:, is_pix].sum(axis=1), shared[:, 0].astype(np.int64), split[:, 0].astype(np.int64))


def cluster_windows(p: DetectorParams, is_pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per surface: rφ and z/r distances below which two crossings share a cluster."""
    sh = p.shared_hits
    ns = len(is_pix)
    drphi = np.array([sh.ibl_drphi if k == 0 else (sh.pixel_drphi if is_pix[k] else sh.sct_drphi)
                      for k in range(ns)])
    dw = np.array([sh.ibl_dz if k == 0 else (sh.pixel_dz if is_pix[k] else sh.sct_dz) for k in range(ns)])
    return drphi, dw
