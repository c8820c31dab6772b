"""Track-parameter resolution of the parametric tracker: the Gaussian core and the tails by source.

Core (``resolution`` block of ``detector_params.yaml``): σ(d0) = a ⊕ b/(pT √sinθ) (× the lever-arm
factor r_first_hit / r_IBL), likewise z0·sinθ, φ, θ (via cotθ) and q/p.

Tails (``tails`` block), each from a physical source with its own rate and its own effect on
each of the five parameters; the reported uncertainties stay the core σ:

- **material** (:data:`TAIL_MATERIAL`): a hadron scatters (quasi-)elastically on a nucleus of
  the beam pipe or a pixel layer with probability ``elastic_to_inelastic · x/λ_I / sinθ`` per
  layer outside its production radius. It keeps going with a kink of angles δ ~ N(0, q/(√2 p))
  per projection (``q_transfer``): the fit follows the hits after the kink, so d0 moves by
  L·δφ, z0 by L·δθ/sin²θ (L = the transverse distance from the production point to the layer),
  φ and θ by the kink; q/p is unchanged (elastic).
- **dense core** (:data:`TAIL_DENSE_CORE`): a merged (shared) pixel cluster biases the fit with
  probability ``1 − (1 − p)^n_shared_pixel_hits``; the five widths are multiplied by
  ``dense_core.scale``.
- **pattern recognition** (:data:`TAIL_PATTERN`): a wrong hit picked up by the track finder,
  probability ``rate + density_rate · n_neighbours`` (other tracks within ``density_radius``);
  widths × ``pattern_recognition.scale``.

Several sources on one track add in quadrature (``σ² = σ²_core (1 + Σ (scale² − 1))``).
"""

from __future__ import annotations

import numpy as np

from lhcml.sim.detector import DetectorParams

#: bits of the ``tailSource`` track field
TAIL_MATERIAL = 1
TAIL_DENSE_CORE = 2
TAIL_PATTERN = 4

_PARAMS = ("d0", "z0", "phi", "theta", "qoverp")


def core_resolutions(pt, theta, eta, qoverp, lever, p: DetectorParams):
    """Core resolutions (d0 mm, z0 sinθ mm, φ, θ rad, q/p 1/GeV)."""
    r = p.resolution
    sin_t = np.sin(theta)
    ms = 1.0 / (pt * np.sqrt(sin_t))
    s_d0 = np.hypot(r.d0_a, r.d0_b * ms) * lever
    s_z0 = np.hypot(r.z0st_a, r.z0st_b * ms) * lever
    s_phi = np.hypot(r.phi_a, r.phi_b * ms)
    s_theta = sin_t**2 * np.hypot(r.cot_a, r.cot_b * ms)
    f_eta = 1.0 + r.qoverp_eta_slope * np.maximum(np.abs(eta) - 1.0, 0.0)
    s_qp = np.abs(qoverp) * np.hypot(r.qoverp_a * pt * f_eta, r.qoverp_b)
    return s_d0, s_z0, s_phi, s_theta, s_qp


def material_scatter_probability(is_hadron, r_prod, theta, p: DetectorParams) -> np.ndarray:
    """Per-layer probability ``(n, n_layers)`` of a (quasi-)elastic hadron scatter."""
    m = p.material
    radii = np.asarray(m.radii)
    lam = np.asarray(m.interaction_lengths)
    prob = p.tails.material.elastic_to_inelastic * lam[None, :] / np.sin(theta)[:, None]
    prob = np.where((radii[None, :] > r_prod[:, None]) & np.asarray(is_hadron)[:, None], prob, 0.0)
    return np.minimum(prob, 1.0)


def material_kinks(is_hadron, r_prod, theta, ptot, rng: np.random.Generator, p: DetectorParams):
    """Which tracks scatter in the material and the shifts of (d0, z0, φ, θ) it causes.

    Returns ``(kinked, dd0, dz0, dphi, dtheta)``.
    """
    n = len(r_prod)
    radii = np.asarray(p.material.radii)
    prob = material_scatter_probability(is_hadron, r_prod, theta, p)
    cum = 1.0 - np.cumprod(1.0 - prob, axis=1)
    u = rng.random(n)
    g = rng.standard_normal((n, 2))
    kinked = u < cum[:, -1] if len(radii) else np.zeros(n, dtype=bool)
    layer = np.argmax(u[:, None] < cum, axis=1) if len(radii) else np.zeros(n, dtype=np.int64)
    sin_t = np.sin(theta)
    delta = p.tails.material.q_transfer / (np.sqrt(2.0) * ptot)
    dphi = np.where(kinked, g[:, 0] * delta / sin_t, 0.0)
    dtheta = np.where(kinked, g[:, 1] * delta, 0.0)
    lever = np.maximum(radii[layer] - r_prod, 0.0) if len(radii) else np.zeros(n)
    return kinked, lever * dphi, lever * dtheta / sin_t**2, dphi, dtheta


def tail_flags(n_pixel_shared, n_neighbours, rng: np.random.Generator, p: DetectorParams):
    """``(dense_core, pattern)`` booleans per track, drawn at their configured rates."""
    t = p.tails
    n = len(n_pixel_shared)
    u = rng.random((n, 2))
    p_dense = 1.0 - (1.0 - t.dense_core.probability_per_shared_hit) ** np.asarray(n_pixel_shared)
    pr = t.pattern_recognition
    p_pat = np.minimum(pr.rate + pr.density_rate * np.asarray(n_neighbours), 1.0)
    return u[:, 0] < p_dense, u[:, 1] < p_pat


def tail_factors(dense, pattern, p: DetectorParams) -> np.ndarray:
    """``(5, n)`` width multipliers for (d0, z0, φ, θ, q/p)."""
    t = p.tails
    out = np.empty((5, len(dense)))
    for i, name in enumerate(_PARAMS):
        sd = getattr(t.dense_core.scale, name)
        sp = getattr(t.pattern_recognition.scale, name)
        out[i] = np.sqrt(1.0 + dense * (sd * sd - 1.0) + pattern * (sp * sp - 1.0))
    return out
