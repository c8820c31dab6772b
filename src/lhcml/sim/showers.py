"""Parametric showers: EM (Grindhammer-Peters / GFlash), hadronic and MIP energy spots.

All functions are vectorised over many particles at once and return flat *spot* arrays
(:class:`Spots`): one entry per energy spot with its shower index, readout-layer index, eta, phi
and energy (MeV). :mod:`lhcml.sim.calorimeter` bins the spots into cells.

EM showers (Grindhammer, Rudowicz, Peters, NIM A290 (1990) 469; hep-ex/0001020)
-------------------------------------------------------------------------------
* Longitudinal: ``dE/dt = E * Gamma(t; alpha, beta)`` with ``t`` in X0 and the shower maximum
  ``T = (alpha - 1) / beta``. Each shower draws correlated ``(ln T, ln alpha)`` from a 2-D
  Gaussian (individual-profile parametrisation for an effective medium with ``y = E / E_c``)::

      <ln T>     = ln(ln y - 0.812)
      <ln alpha> = ln(0.81 + (0.458 + 2.26 / Z) ln y)
      sigma(ln T)     = 1 / (-1.4 + 1.26 ln y)
      sigma(ln alpha) = 1 / (-0.58 + 0.86 ln y)
      rho(ln T, ln alpha) = 0.705 - 0.023 ln y

  so the mean shower maximum grows as ``ln(E / E_c)``.
* Lateral (radius ``r`` in Moliere radii, ``tau = t / T``)::

      f(r) = p f_C(r) + (1 - p) f_T(r),   f_i(r) = 2 r R_i^2 / (r^2 + R_i^2)^2
      R_C = z1 + z2 tau,  z1 = 0.0251 + 0.00319 ln E,  z2 = 0.1162 - 0.000381 Z
      R_T = k1 [exp(k3 (tau - k2)) + exp(k4 (tau - k2))],
            k1 = 0.659 - 0.00309 Z, k2 = 0.645, k3 = -2.59, k4 = 0.3585 + 0.0421 ln E
      p   = p1 exp[(p2 - tau)/p3 - exp((p2 - tau)/p3)],
            p1 = 2.632 - 0.00094 Z, p2 = 0.401 + 0.00187 Z, p3 = 1.313 - 0.0686 ln E
  (E in GeV). ``r`` is drawn by inverting ``F_i(r) = r^2 / (r^2 + R_i^2)``.
* Spots: ``N = max(min_spots, spots_per_gev * E)`` spots per shower, depth from the shower's
  Gamma profile, radius from the core/tail mixture at that depth, azimuth uniform.
* Sampling fluctuations: each spot's energy is ``E/N * g`` with ``g ~ Gamma(k, 1/k)`` and
  ``k = E / (a^2 N)``, so the visible energy fluctuates by ``a / sqrt(E)`` (local, i.e.
  independently between cells and layers); the constant term ``c`` scales each shower by
  ``1 + c * N(0, 1)``.

Hadron showers (our simple parametrisation, parameters in ``calo_geometry.yaml: hadron``)
-----------------------------------------------------------------------------------------
First interaction at depth ``lambda_0 ~ Exp(1)`` (in lambda_int along the path); a charged
hadron deposits as a MIP before it and that ionisation loss (``mip.mev_per_x0`` per X0 of path,
dead material included) is taken from its kinetic energy: the shower starts with what is left,
and a hadron whose kinetic energy runs out before ``lambda_0`` stops there (range-out, no
shower; e.g. a 0.8 GeV pion that does not interact never reaches the Tile sampling). The shower has an EM fraction ``f_em = 1 - (E/e0)^(m-1)``
(Groom) smeared by ``fem_sigma``; the EM part is an EM shower starting at ``lambda_0`` (wider by
``em_lateral_scale``), the rest a Gamma profile in lambda with maximum
``t_max = tmax_a + tmax_b ln(E/GeV)`` after ``lambda_0``, deposited at ``h/e`` with core+tail
lateral radii in units of lambda_int and a ``50 %/sqrt(E)`` sampling term.

Muons deposit as MIPs: ``mev_per_x0 * X0-path`` per layer with a Moyal (Landau-like) spread.

Geometry: depth boundaries along a path grow as ``cosh(eta)``. A spot at lateral distance
``(r_phi, r_theta)`` from the axis at the layer radius ``R`` sits at ``phi_axis + r_phi / R`` and
``eta_axis + r_theta / R`` (projective geometry). The axis position at each layer radius is
computed from the particle's vertex (non-pointing pile-up vertices and conversion points move
showers) with the bending of charged particles in the solenoid field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lhcml.sim.calo_geometry import CaloGeometry

#: radius (mm) of the solenoid field volume; straight lines outside it
SOLENOID_RADIUS_MM = 1150.0


@dataclass
class Spots:
    """Flat energy spots: ``shower`` (index of the particle), ``layer`` (index into
    ``geometry.layers``), ``eta``, ``phi`` and ``energy`` (MeV)."""

    shower: np.ndarray
    layer: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    energy: np.ndarray

    @classmethod
    def empty(cls) -> Spots:
        z = np.zeros(0)
        return cls(z.astype(np.int64), z.astype(np.int64), z, z, z)

    @classmethod
    def concat(cls, parts: list[Spots]) -> Spots:
        parts = [p for p in parts if len(p.energy)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("shower", "layer", "eta", "phi", "energy")))

    def __len__(self) -> int:
        return len(self.energy)


# --------------------------------------------------------------------------------------------
# GFlash parametrisation (pure functions, used by tests and the benchmark too)
# --------------------------------------------------------------------------------------------


def em_longitudinal_parameters(energy_gev: np.ndarray, geo: CaloGeometry) -> dict[str, np.ndarray]:
    """Means, widths and correlation of ``(ln T, ln alpha)`` for EM showers of ``energy_gev``."""
    mat = geo.em_material
    e = np.asarray(energy_gev, dtype=np.float64)
    lny = np.log(np.maximum(e * 1e3 / mat.critical_energy_mev, 1.0))
    lny = np.maximum(lny, 2.0)  # below ~80 MeV the parametrisation is frozen at y = e^2
    z = mat.z_eff
    return {
        "mean_ln_t": np.log(lny - 0.812),
        "mean_ln_alpha": np.log(0.81 + (0.458 + 2.26 / z) * lny),
        "sigma_ln_t": np.minimum(1.0 / (-1.4 + 1.26 * lny), 1.0),
        "sigma_ln_alpha": np.minimum(1.0 / (-0.58 + 0.86 * lny), 1.0),
        "rho": 0.705 - 0.023 * lny,
    }


def mean_shower_maximum(energy_gev: np.ndarray, geo: CaloGeometry) -> np.ndarray:
    """Median depth of the shower maximum in X0, ``exp(<ln T>) = ln(E/E_c) - 0.812``."""
    return np.exp(em_longitudinal_parameters(energy_gev, geo)["mean_ln_t"])


def sample_em_profiles(
    energy_gev: np.ndarray, geo: CaloGeometry, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower ``(T, alpha)`` with correlated log-normal fluctuations."""
    p = em_longitudinal_parameters(energy_gev, geo)
    n = len(p["rho"])
    z1 = rng.standard_normal(n)
    z2 = rng.standard_normal(n)
    ln_t = p["mean_ln_t"] + p["sigma_ln_t"] * z1
    ln_a = p["mean_ln_alpha"] + p["sigma_ln_alpha"] * (p["rho"] * z1 + np.sqrt(1 - p["rho"] ** 2) * z2)
    t_max = np.clip(np.exp(ln_t), 0.3, 40.0)
    alpha = np.clip(np.exp(ln_a), 1.1, 40.0)
    return t_max, alpha


def lateral_parameters(tau: np.ndarray, energy_gev: np.ndarray, z: float) -> tuple[np.ndarray, ...]:
    """GFlash core radius, tail radius (Moliere units) and core probability at ``tau = t/T``."""
    lne = np.log(np.maximum(energy_gev, 1e-3))
    r_c = 0.0251 + 0.00319 * lne + (0.1162 - 0.000381 * z) * tau
    k1 = 0.659 - 0.00309 * z
    k4 = 0.3585 + 0.0421 * lne
    r_t = k1 * (np.exp(-2.59 * (tau - 0.645)) + np.exp(k4 * (tau - 0.645)))
    p1 = 2.632 - 0.00094 * z
    p2 = 0.401 + 0.00187 * z
    p3 = 1.313 - 0.0686 * lne
    x = (p2 - tau) / p3
    p = p1 * np.exp(x - np.exp(x))
    return np.maximum(r_c, 0.005), np.maximum(r_t, 0.01), np.clip(p, 0.0, 1.0)


def _core_tail_radius(r_core, r_tail, p_core, rng) -> np.ndarray:
    """Radius from ``p f_C + (1-p) f_T`` with ``f_i(r) = 2 r R_i^2/(r^2+R_i^2)^2``."""
    n = len(r_core)
    u = rng.uniform(0.0, 0.999, n)
    radius = np.where(rng.random(n) < p_core, r_core, r_tail)
    return radius * np.sqrt(u / (1.0 - u))


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------


def axis_positions(
    eta: np.ndarray,
    phi: np.ndarray,
    charge: np.ndarray,
    pt_gev: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    vz: np.ndarray,
    geo: CaloGeometry,
) -> tuple[np.ndarray, np.ndarray]:
    """Shower-axis ``(eta, phi)`` at every layer radius, shape ``(n_particles, n_layers)``.

    Straight lines from the production vertex for neutral particles; charged particles bend in
    the solenoid (``|dphi| = asin(0.3 B R / 2 pT)`` at radius R, positive charges to lower phi)
    and go straight from ``R_sol`` on.
    """
    eta = np.asarray(eta, dtype=np.float64)
    radii = np.array([lay.radius_mm for lay in geo.layers])
    b = geo.field.bfield_t
    pt = np.maximum(np.asarray(pt_gev, dtype=np.float64), 1e-6)
    q = np.asarray(charge, dtype=np.float64)
    r0 = np.hypot(vx, vy)
    # curvature radius (mm): R_c = pT / (0.3 B) m
    rc = pt / (0.3 * b) * 1000.0

    def bend(r):
        return np.arcsin(np.clip(r / (2 * rc), -1.0, 1.0))

    r_sol = np.maximum(SOLENOID_RADIUS_MM, r0)
    dphi_exit = -q * (bend(r_sol) - bend(np.minimum(r0, r_sol)))
    # exit direction turns by twice the chord angle
    phi_dir = phi + 2.0 * dphi_exit
    phi_exit = phi + dphi_exit
    out_eta = np.empty((len(eta), len(radii)))
    out_phi = np.empty_like(out_eta)
    sinh = np.sinh(eta)
    for j, r_lay in enumerate(radii):
        # neutral: straight line from (vx, vy) in direction phi to radius r_lay
        ux, uy = np.cos(phi), np.sin(phi)
        vu = vx * ux + vy * uy
        s = -vu + np.sqrt(np.maximum(vu**2 - r0**2 + r_lay**2, 0.0))
        xn, yn = vx + s * ux, vy + s * uy
        zn = vz + s * sinh
        # charged: exit point on the solenoid, then straight in direction phi_dir
        xs, ys = r_sol * np.cos(phi_exit), r_sol * np.sin(phi_exit)
        wx, wy = np.cos(phi_dir), np.sin(phi_dir)
        vw = xs * wx + ys * wy
        s2 = -vw + np.sqrt(np.maximum(vw**2 - r_sol**2 + r_lay**2, 0.0))
        xc, yc = xs + s2 * wx, ys + s2 * wy
        path_t = np.maximum(r_sol - r0, 0.0) + s2  # transverse path length (approx.)
        zc = vz + path_t * sinh
        charged = q != 0
        x = np.where(charged, xc, xn)
        y = np.where(charged, yc, yn)
        z = np.where(charged, zc, zn)
        out_phi[:, j] = np.arctan2(y, x)
        out_eta[:, j] = np.arcsinh(z / r_lay)
    return out_eta, out_phi


def _layer_from_depth(depth: np.ndarray, cosh: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Index of the layer containing path depth ``depth`` (boundaries scaled by cosh eta); -1 beyond."""
    i = np.searchsorted(bounds, depth / cosh, side="right") - 1
    return np.where((i >= 0) & (i < len(bounds) - 1), i, -1)


def _place_spots(
    shower: np.ndarray,
    layer: np.ndarray,
    r_mm: np.ndarray,
    energy: np.ndarray,
    axis_eta: np.ndarray,
    axis_phi: np.ndarray,
    geo: CaloGeometry,
    rng: np.random.Generator,
) -> Spots:
    """Convert (shower, layer, lateral radius) into (eta, phi) spots on read-out layers."""
    readout = np.array([lay.readout for lay in geo.layers])
    keep = (layer >= 0) & readout[np.maximum(layer, 0)] & (energy != 0)
    shower, layer, r_mm, energy = shower[keep], layer[keep], r_mm[keep], energy[keep]
    radii = np.array([lay.radius_mm for lay in geo.layers])
    psi = rng.uniform(0.0, 2.0 * np.pi, len(shower))
    r_lay = radii[layer]
    eta = axis_eta[shower, layer] + r_mm * np.sin(psi) / r_lay
    phi = axis_phi[shower, layer] + r_mm * np.cos(psi) / r_lay
    phi = np.mod(phi + np.pi, 2 * np.pi) - np.pi
    return Spots(shower, layer, eta, phi, energy)


def _sampling_weights(n_per: np.ndarray, energy_gev: np.ndarray, a: float, rng) -> np.ndarray:
    """Per-spot Gamma weights with total relative spread ``a / sqrt(E)`` per shower."""
    k = np.maximum(energy_gev / (a * a * np.maximum(n_per, 1)), 1e-3) if a > 0 else None
    if k is None:
        return np.ones(int(n_per.sum()))
    kk = np.repeat(k, n_per)
    return rng.gamma(kk, 1.0 / kk)


# --------------------------------------------------------------------------------------------
# shower generators
# --------------------------------------------------------------------------------------------


def em_spots(
    energy_gev: np.ndarray,
    index: np.ndarray,
    axis_eta: np.ndarray,
    axis_phi: np.ndarray,
    cosh: np.ndarray,
    geo: CaloGeometry,
    rng: np.random.Generator,
    start_x0: np.ndarray | None = None,
    lateral_scale: float = 1.0,
    sampling: bool = True,
    spot_scale: float = 1.0,
) -> Spots:
    """Energy spots of EM showers.

    Parameters
    ----------
    energy_gev
        Shower energies (GeV), one per shower.
    index
        Row of each shower in ``axis_eta``/``axis_phi`` (``(n_particles, n_layers)``) and the
        value stored in ``Spots.shower``.
    cosh
        ``cosh(eta)`` of each shower direction (path-length factor).
    start_x0
        Path depth (X0) where each shower starts (0 = calorimeter front).
    lateral_scale
        Multiplies the lateral radii (EM sub-showers of hadrons are wider).
    sampling
        Apply sampling fluctuations and the constant term.
    spot_scale
        Multiplies ``spots_per_gev`` (pile-up uses fewer spots).
    """
    e = np.asarray(energy_gev, dtype=np.float64)
    n = len(e)
    if n == 0:
        return Spots.empty()
    mat = geo.em_material
    res = geo.resolution
    t_max, alpha = sample_em_profiles(e, geo, rng)
    beta = (alpha - 1.0) / t_max
    n_per = np.maximum(mat.min_spots, np.round(mat.spots_per_gev * spot_scale * e)).astype(np.int64)
    sh = np.repeat(np.arange(n), n_per)
    depth = rng.gamma(alpha[sh], 1.0 / beta[sh])
    tau = depth / t_max[sh]
    r_c, r_t, p = lateral_parameters(tau, e[sh], mat.z_eff)  # E per spot: the shower's energy
    r_mm = _core_tail_radius(r_c, r_t, p, rng) * mat.moliere_radius_mm * lateral_scale
    if start_x0 is not None:
        depth = depth + np.asarray(start_x0)[sh]
    bounds = geo.depth_boundaries("x0")
    layer = _layer_from_depth(depth, cosh[sh], bounds)
    e_spot = (e / n_per)[sh] * 1e3
    if sampling:
        e_spot = e_spot * _sampling_weights(n_per, e, res.em_stochastic, rng)
        const = 1.0 + res.em_constant * rng.standard_normal(n)
        e_spot = e_spot * const[sh]
    return _place_spots(index[sh], layer, r_mm, e_spot, axis_eta, axis_phi, geo, rng)


def mip_spots(
    index: np.ndarray,
    axis_eta: np.ndarray,
    axis_phi: np.ndarray,
    cosh: np.ndarray,
    geo: CaloGeometry,
    rng: np.random.Generator,
    stop_lambda: np.ndarray | None = None,
) -> Spots:
    """MIP deposits in every layer crossed (up to path depth ``stop_lambda`` if given)."""
    n = len(index)
    if n == 0:
        return Spots.empty()
    bx = geo.depth_boundaries("x0")
    bl = geo.depth_boundaries("lambda")
    n_lay = len(geo.layers)
    parts = []
    for j in range(n_lay):
        x0_path = (bx[j + 1] - bx[j]) * cosh
        if stop_lambda is not None:
            lo, hi = bl[j] * cosh, bl[j + 1] * cosh
            frac = np.clip((stop_lambda - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
            x0_path = x0_path * frac
        mpv = geo.mip.mev_per_x0 * x0_path
        moyal = -np.log(np.maximum(rng.standard_normal(n) ** 2, 1e-12))
        e = np.maximum(mpv * (1.0 + geo.mip.landau_width * moyal), 0.0)
        parts.append((np.arange(n), np.full(n, j), e))
    sh = np.concatenate([p[0] for p in parts])
    lay = np.concatenate([p[1] for p in parts])
    e = np.concatenate([p[2] for p in parts])
    return _place_spots(index[sh], lay, np.zeros(len(sh)), e, axis_eta, axis_phi, geo, rng)


def hadron_spots(
    energy_gev: np.ndarray,
    charged: np.ndarray,
    index: np.ndarray,
    axis_eta: np.ndarray,
    axis_phi: np.ndarray,
    cosh: np.ndarray,
    geo: CaloGeometry,
    rng: np.random.Generator,
    spot_scale: float = 1.0,
    kinetic_gev: np.ndarray | None = None,
) -> Spots:
    """Energy spots of hadron showers (see the module docstring); ``spot_scale`` as :func:`em_spots`.

    ``energy_gev`` is the energy the shower can deposit (total energy for mesons, kinetic for
    baryons), ``kinetic_gev`` the kinetic energy that the ionisation before the first interaction
    uses up (default ``energy_gev``).
    """
    e = np.asarray(energy_gev, dtype=np.float64)
    n = len(e)
    if n == 0:
        return Spots.empty()
    hp = geo.hadron
    res = geo.resolution
    bl = geo.depth_boundaries("lambda")
    bx = geo.depth_boundaries("x0")
    lam0 = rng.exponential(1.0, n)  # path depth (lambda) of the first interaction
    parts = []
    ch = np.asarray(charged, dtype=bool)
    if ch.any():
        # ionisation before the first interaction, from the kinetic energy (range-out if it runs out)
        ke = e if kinetic_gev is None else np.asarray(kinetic_gev, dtype=np.float64)
        x0_range = np.maximum(ke, 0.0) * 1e3 / geo.mip.mev_per_x0  # path X0 until the hadron stops
        lam_range = np.interp(x0_range / cosh, bx, bl, right=np.inf) * cosh
        stop = np.where(ch, np.minimum(lam0, lam_range), lam0)
        x0_before = np.interp(np.minimum(stop, bl[-1] * cosh) / cosh, bl, bx) * cosh
        loss = np.where(ch, geo.mip.mev_per_x0 * x0_before * 1e-3, 0.0)
        e = np.where(ch & (lam0 >= lam_range), 0.0, np.maximum(e - loss, 0.0))
        parts.append(mip_spots(index[ch], axis_eta, axis_phi, cosh[ch], geo, rng, stop_lambda=stop[ch]))
    # EM fraction
    fem = 1.0 - np.power(np.maximum(e / hp.fem_e0_gev, 1.0), hp.fem_m - 1.0)
    fem = np.clip(fem + hp.fem_sigma * rng.standard_normal(n), 0.0, 1.0)
    # EM part: starts at lambda_0, converted to X0 along the path
    start_x0 = np.interp(lam0 / cosh, bl, bx, right=bx[-1] + 1e3) * cosh
    e_em = fem * e
    sel = e_em > 1e-3
    if sel.any():
        parts.append(
            em_spots(e_em[sel], index[sel], axis_eta, axis_phi, cosh[sel], geo, rng,
                     start_x0=start_x0[sel], lateral_scale=hp.em_lateral_scale, spot_scale=spot_scale)
        )
    # hadronic part: Gamma profile in lambda after lambda_0, visible at h/e
    e_h = (1.0 - fem) * e
    t_h = hp.tmax_a_lambda + hp.tmax_b_lambda * np.log(np.maximum(e, 0.1))
    t_h = np.maximum(t_h, 0.2)
    beta = (hp.alpha - 1.0) / t_h
    n_per = np.maximum(hp.min_spots, np.round(hp.spots_per_gev * spot_scale * e_h)).astype(np.int64)
    sh = np.repeat(np.arange(n), n_per)
    depth = lam0[sh] + rng.gamma(hp.alpha, 1.0, len(sh)) / beta[sh]
    layer = _layer_from_depth(depth, cosh[sh], bl)
    lam_mm = geo.em_material.x0_mm * geo.em_material.lambda_over_x0
    r_c = np.full(len(sh), hp.lateral_core_lambda)
    r_t = np.full(len(sh), hp.lateral_tail_lambda)
    r_mm = _core_tail_radius(r_c, r_t, np.full(len(sh), hp.lateral_core_fraction), rng) * lam_mm
    e_spot = (e_h * hp.h_over_e / n_per)[sh] * 1e3
    e_spot = e_spot * _sampling_weights(n_per, np.maximum(e_h, 1e-3), res.had_stochastic, rng)
    const = 1.0 + res.had_constant * rng.standard_normal(n)
    e_spot = e_spot * const[sh]
    parts.append(_place_spots(index[sh], layer, r_mm, e_spot, axis_eta, axis_phi, geo, rng))
    return Spots.concat(parts)
