"""The strip pass of the quantile correction: a shower-shape correction of the strips' second maximum (issue 15, h27a).

The five-pass chain (docs/benchmarks/fastcalo.md, twenty-fifth version) maps every cell's distribution, its layer
energies and its width rank, yet at |η| > 0.9 the generated strips (the first EM layer, 57 η x 3 φ voxels) keep a
too-pronounced **second maximum** (ΔE +0.23σ, E_ratio −0.22σ; h26a): a second maximum is a pattern of neighbouring
strips (a bump with a dip before it), not a cell's marginal, so no per-cell map can remove it (h26b).

This pass corrects it the way ATLAS corrects simulated shower shapes, but at the cell level so every shape computed
from the cells follows (ΔE, E_ratio, w_s,tot, F_side):

* per shower, the strip **profile** in η (the strip voxels summed over φ), its hottest strip ``i1`` and its second
  maximum ``i2``: the highest strip above both neighbours (``p[i] > p[i-1]``, ``p[i] >= p[i+1]``, as
  :mod:`lhcml.sim.clusters`) within ``half_window`` strips of ``i1`` (12: the cluster's 24 strips), ``i2 != i1``;
  its **prominence** ``P = p[i2] - min(p between i1 and i2)`` (the cell-level ΔE; 0 without a second maximum);
* ``P / E_inc`` is quantile-mapped per (incident energy, ``|η|``) node from the generated showers onto the detailed
  training showers by the same one-dimensional map as every cell (:class:`~lhcml.models.fastcalo.quantile_map.
  QuantileCorrection` with one voxel and ``variable="energy"``: no second maximum is the point mass at zero, so where
  the generator makes second maxima more often, its least prominent ones are flattened, and a shower without one
  keeps none);
* the shower then gets the mapped prominence ``P'``: the second-maximum strip (its φ voxels, scaled together) is set
  to ``min + P'`` (at most halfway to the hottest strip's energy), and the energy it gives up (or takes) goes to
  (comes from) the strips around the first maximum (``i1`` and its neighbours that lie neither at nor between the two
  maxima, scaled together): **the strip layer's energy is kept**, every other layer untouched, and the dip between the
  maxima is unchanged.

Stored as a pass of a :class:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection` chain with ``level="strips"``
(``lhcml fastcalo quantile-map --after CHAIN --strip-pass``): its tables are the prominence map's (one column), the
strip layer's index, η cells and window in its header. :mod:`lhcml.models.fastcalo.strip_pass_torch` is the same pass
for the ONNX sampling graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lhcml.errors import ConfigError

if TYPE_CHECKING:
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

#: strips either side of the hottest one searched for a second maximum (the cluster's 24 strips: lhcml.sim.clusters)
HALF_WINDOW = 12
#: the largest share of the way from the second maximum's energy to the first's that a raised second maximum may take
#: (0.5: it never overtakes the first)
MAX_RAISE = 0.5
#: what the pass maps (``strip_variable`` in its header): ``prominence`` (``e2 - emin``, the cell-level ΔE; the default)
#: or ``height`` (``e2``, the second maximum's energy, which E_ratio compares with the first's; lowered below the dip
#: it is set level with the dip)
VARIABLES = ("prominence", "height", "recentre", "core", "fside")
#: ``recentre`` (h28a): strips either side of the window's centre strip (the impact strip) over which a shower's
#: barycentre is taken
RECENTRE_HALF = 3
#: ``core`` (h28a): the core's side share ``x = (p[i1-1] + p[i1+1]) / (p[i1-1] + p[i1] + p[i1+1])`` (``w_s3``'s
#: square without the impact correction) is mapped and the three strips' energy redistributed (their sum kept)
#: ``core``: the side share is capped at ``CORE_CAP / (1 + max(lo, hi) / (lo + hi))`` (the hottest strip stays the
#: hottest, by a margin that survives float32)
CORE_CAP = 0.999
#: ``fside`` (h31b): the outer share ``x = (E7 - E3) / E7`` of the ``2 FSIDE_HALF + 1`` strips around the hottest one
#: (``E3`` its three-strip core: ``fracs1 = (E7 - E3) / E3 = x / (1 - x)``) is mapped; the core's three strips and the
#: four outer ones are each scaled together (``E7`` kept, so the strip energy, and the core's own side share, ``w_s3``)
FSIDE_HALF = 3
#: ``fside`` with ``strip_eta_max`` in its header (h31b): showers at ``|η| >= strip_eta_max`` are left alone (at |η| > 0.9
#: the seven-pass generator's narrow outer share is offset, for photon ID, by its low strip fraction f1: h29a, h31b)
#: ``fside`` with ``strip_eta_min`` in its header (h31c): showers at ``|η| < strip_eta_min`` are left alone (with
#: ``strip_layer`` the middle layer, 7 η x 11 φ, the pass maps the middle layer's η outer share, ``1 - R_eta`` over
#: its φ rows, which the seven-pass generator has η-dependent at |η| > 0.9 only)
#: how ``recentre`` shifts a profile (``strip_shift`` in its header): ``linear`` by the mapped fraction of a strip
#: (linear interpolation between neighbouring strips) or ``whole`` by the nearest whole number of strips (a shower
#: whose hottest strip is off the impact strip moved back, no re-binning)
SHIFTS = ("linear", "whole")
#: what a phase-binned ``core`` pass bins (``strip_phase_from`` in its header): ``impact`` the impact's distance from
#: its strip's centre, ``cluster`` the cluster barycentre's place in the hottest strip (:func:`cluster_u`)
PHASE_FROM = ("impact", "cluster")
#: whose showers a phase-binned ``core`` pass's map of one bin is fitted on (``strip_phase_population`` in its header;
#: h29a): ``all`` every shower of the node, those of the other bins as zeros (the point mass at the bottom of the map:
#: where the generated and detailed bin populations differ, the within-bin ranks shift by up to
#: ``|p_gen - p_ref| / p`` and a shower mapped to zero keeps its share; the default, as first written) or ``own`` only
#: the showers in that bin, generated and detailed each binned by their own position (a plain within-bin quantile map)
POPULATIONS = ("all", "own")
#: the largest shift (strips) the recentring moves a strip profile by
MAX_SHIFT = 1.0
#: added to the barycentre residual (strips, within +-1.5) before its map, so the map's ``ln x`` sees a positive value
RECENTRE_OFFSET = 2.0


def strip_variable(meta: dict[str, Any]) -> str:
    """What a strip pass maps (:data:`VARIABLES`; ``prominence`` for a header without ``strip_variable``)."""
    v = meta.get("strip_variable", "prominence")
    if v not in VARIABLES:
        raise ConfigError(f"a strip pass's strip_variable must be one of {', '.join(VARIABLES)}, got {v!r}")
    return str(v)


def strip_geometry(meta: dict[str, Any], layer_sizes: Sequence[int]) -> tuple[int, int, int, int]:
    """``(first voxel, n_eta, n_phi, half_window)`` of the strip layer recorded in a strip pass's ``meta``; one
    :class:`ConfigError` for a missing or inconsistent record (also checks ``strip_variable``)."""
    strip_variable(meta)
    try:
        layer, n_eta, half = int(meta["strip_layer"]), int(meta["strip_n_eta"]), int(meta["strip_half_window"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("a strip pass records strip_layer, strip_n_eta and strip_half_window in its header") from None
    sizes = [int(n) for n in layer_sizes]
    if not 0 <= layer < len(sizes) or n_eta < 3 or sizes[layer] % n_eta or half < 1:
        raise ConfigError(f"a strip pass's layer {layer} with {n_eta} eta cells and half window {half} does not fit "
                          f"layers of {sizes} voxels (needs >= 3 eta cells dividing the layer's voxels)")  # fmt: skip
    pop = meta.get("strip_phase_population", "all")
    if pop not in POPULATIONS or (pop != "all" and int(meta.get("strip_phase_bins", 1)) < 2):
        raise ConfigError(f"a strip pass's strip_phase_population must be one of {', '.join(POPULATIONS)} ('own' "
                          f"only with phase bins), got {pop!r}")  # fmt: skip
    if meta.get("strip_eta_max") is not None and strip_variable(meta) != "fside":
        raise ConfigError(f"strip_eta_max belongs to an fside strip pass, not to strip_variable {strip_variable(meta)!r}")
    if meta.get("strip_eta_min") is not None:
        if strip_variable(meta) != "fside":
            raise ConfigError(f"strip_eta_min belongs to an fside strip pass, not to strip_variable {strip_variable(meta)!r}")
        if meta.get("strip_eta_max") is not None and not float(meta["strip_eta_min"]) < float(meta["strip_eta_max"]):
            raise ConfigError(f"a strip pass's strip_eta_min ({meta['strip_eta_min']}) must lie below its strip_eta_max "
                              f"({meta['strip_eta_max']})")  # fmt: skip
    if strip_variable(meta) == "recentre" or int(meta.get("strip_phase_bins", 1)) > 1:
        try:
            ok = float(meta["strip_cell_deta"]) > 0
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError("a recentring (or phase-binned core) strip pass records strip_cell_deta (> 0), the strip layer's eta cell width")
    return int(sum(sizes[:layer])), n_eta, sizes[layer] // n_eta, half


def centre_residual(profile: np.ndarray, eta: np.ndarray, cell_deta: float,
                    half: int = RECENTRE_HALF) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(b, r)`` per row of ``profile`` ``(N, n_eta)``: ``b`` the barycentre (strip units) of the ``2 half + 1``
    strips around the window's centre strip (the impact strip), from that strip's centre; ``r = b - (phase - 0.5)``
    its residual from the impact position (``phase = |eta| / cell_deta mod 1``; voxel η points to larger ``|η|``)."""
    p = np.asarray(profile, np.float64)
    c = p.shape[1] // 2
    k = np.arange(p.shape[1])[None, :] - c
    w = np.where(np.abs(k) <= half, p, 0.0)
    tot = w.sum(axis=1)
    b = np.divide((w * k).sum(axis=1), tot, out=np.zeros(len(p)), where=tot > 0)
    return b, b - (_phase(eta, cell_deta) - 0.5)


def _phase(eta: np.ndarray, cell_deta: float) -> np.ndarray:
    """``(N,)`` the impact's place in its strip, ``|eta| / cell_deta mod 1``."""
    return np.mod(np.abs(np.asarray(eta, np.float64).reshape(-1)) / float(cell_deta), 1.0)


def _half_bin(d: np.ndarray, n_bins: int) -> np.ndarray:
    """``(N,)`` the bin of ``|d|`` (a distance from a strip's centre, in strips) in ``n_bins`` equal bins of [0, 0.5]."""
    return np.clip((np.abs(d) * 2 * n_bins).astype(np.int64), 0, n_bins - 1)


def phase_bin(eta: np.ndarray, cell_deta: float, n_bins: int) -> np.ndarray:
    """``(N,)`` the bin of ``|phase - 0.5|`` (the impact's distance from its strip's centre, ``phase = |eta| /
    cell_deta mod 1``) in ``n_bins`` equal bins of [0, 0.5]."""
    return _half_bin(_phase(eta, cell_deta) - 0.5, n_bins)


def cluster_u(profile: np.ndarray) -> np.ndarray:
    """``(N,)`` the place ``u`` in [-0.5, 0.5) of the barycentre of the cluster's strips (``HALF_WINDOW`` either side of
    the window's centre strip) in the hottest strip, as :func:`lhcml.sim.clusters.ws3_impact_correction` takes it."""
    p = np.asarray(profile, np.float64)
    k = np.arange(p.shape[1])[None, :]
    w = np.where(np.abs(k - p.shape[1] // 2) <= HALF_WINDOW, p, 0.0)
    tot = w.sum(axis=1)
    bc = np.divide((w * k).sum(axis=1), tot, out=np.zeros(len(p)), where=tot > 0)
    return np.fmod(np.abs(bc - np.argmax(p, axis=1) - 0.5), 1.0) - 0.5


def _core_columns(x: np.ndarray, meta: dict[str, Any], eta: np.ndarray | None,
                  profile: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``(N, B)``: ``x`` in its phase bin's column (``strip_phase_bins`` B > 1), zeros elsewhere; ``(N, 1)`` without.
    The bin: of the impact's distance from its strip's centre, or (``strip_phase_from="cluster"``) of ``|u|``
    (:func:`cluster_u`, from ``profile``)."""
    nb = int(meta.get("strip_phase_bins", 1))
    if nb == 1:
        return x[:, None]
    if meta.get("strip_phase_from", "impact") == "cluster":
        b = _half_bin(cluster_u(profile), nb)
    elif eta is None:
        raise ConfigError("a core strip pass in phase bins needs each shower's eta")
    else:
        b = phase_bin(eta, float(meta["strip_cell_deta"]), nb)
    return np.where(np.arange(nb)[None, :] == b[:, None], x[:, None], 0.0)


def _own_population(inner: QuantileCorrection, ind_gen: np.ndarray, ind_ref: np.ndarray, gen_energies: np.ndarray,
                    ref_energies: np.ndarray, fit_kw: dict[str, Any]) -> QuantileCorrection:
    """``inner`` (a phase-binned core map fitted with every shower of a node in each bin's column) with each column's
    occupancy counted over the showers of its own bin (``strip_phase_population="own"``): the quantiles of a column
    are already those of its bin's showers only (the others are its zeros), so only ``p_gen`` / ``p_ref`` change, to
    (non-zero in the column) / (in the bin), each sample's bin fractions per node from the same fit of the bins'
    indicators ``ind_gen`` / ``ind_ref`` ``(N, B)``. A column left as the identity (too few generated showers) stays
    one, as does a bin without detailed showers at a node."""
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

    kw = {k: v for k, v in fit_kw.items() if k != "meta"}
    ind = QuantileCorrection.fit(ind_gen, gen_energies, ind_ref, ref_energies, [ind_gen.shape[1]], variable="energy", **kw)
    identity = (inner.p_gen == inner.p_ref) & np.all(inner.q_gen == inner.q_ref, axis=-1)
    pg = np.clip(np.divide(inner.p_gen, ind.p_gen, out=inner.p_gen.copy(), where=ind.p_gen > 0), 0.0, 1.0)
    pr = np.clip(np.divide(inner.p_ref, ind.p_ref, out=pg.copy(), where=ind.p_ref > 0), 0.0, 1.0)
    pr = np.where(identity | (ind.p_ref <= 0), pg, pr)
    qr = np.where((ind.p_ref <= 0)[..., None], inner.q_gen, inner.q_ref)
    return QuantileCorrection("energy", inner.layer_sizes, inner.log_e_nodes, inner.eta_nodes, inner.levels, pg, pr,
                              inner.q_gen, qr, inner.meta)  # fmt: skip


def _core_strips(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i1, lo, mid, hi, ok)`` per row of ``p`` (float64 ``(N, n_eta)``): the hottest strip, its neighbours' and its
    own energies, and whether the core is usable (not at the window's edge, not empty)."""
    n, m = p.shape
    i1 = np.argmax(p, axis=1)
    r = np.arange(n)
    lo, mid, hi = p[r, np.clip(i1 - 1, 0, m - 1)], p[r, i1], p[r, np.clip(i1 + 1, 0, m - 1)]
    ok = (i1 > 0) & (i1 < m - 1) & (lo + mid + hi > 0) & (lo + hi > 0)
    return i1, lo, mid, hi, ok


def core_share(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, i1, ok)`` per row of ``profile``: the hottest strip ``i1``, the side share ``x`` of its two neighbours in
    the three strips' energy (0 where ``ok`` is False: the hottest strip at the window's edge or an empty core)."""
    i1, lo, mid, hi, ok = _core_strips(np.asarray(profile, np.float64))
    s3 = lo + mid + hi
    return np.where(ok, np.divide(lo + hi, s3, out=np.zeros(len(s3)), where=ok), 0.0), i1, ok


def core_factors(profile: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """``(N, n_eta)`` factors that give each row's core (:func:`core_share`) the side share ``x_new`` (at most what
    keeps the hottest strip hotter than either neighbour: :data:`CORE_CAP`), the three strips' sum kept; 1 elsewhere."""
    p = np.asarray(profile, np.float64)
    n, m = p.shape
    i1, lo, mid, hi, ok = _core_strips(p)
    side = lo + hi
    big = np.divide(np.maximum(lo, hi), side, out=np.ones(n), where=side > 0)
    xn = np.clip(np.asarray(x_new, np.float64).reshape(-1), 0.0, CORE_CAP / (1.0 + big))
    s3 = side + mid
    fs = np.divide(xn * s3, side, out=np.ones(n), where=ok)
    fc = np.divide((1.0 - xn) * s3, mid, out=np.ones(n), where=ok & (mid > 0))
    k = np.arange(m)[None, :]
    fac = np.where((np.abs(k - i1[:, None]) == 1) & ok[:, None], fs[:, None], 1.0)
    return np.where((k == i1[:, None]) & ok[:, None], fc[:, None], fac)


def _fside_strips(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i1, mid, e3, out, omax, ok)`` per row of ``p`` (float64 ``(N, n_eta)``): the hottest strip and its energy,
    the three-strip core's, the outer strips' (``2 <= |k - i1| <= FSIDE_HALF``) and the hottest of them, and whether
    the profile is usable (all seven strips inside the window, core and outer strips not empty)."""
    n, m = p.shape
    i1 = np.argmax(p, axis=1)
    dk = np.abs(np.arange(m)[None, :] - i1[:, None])
    mid = p[np.arange(n), i1]
    e3 = np.where(dk <= 1, p, 0.0).sum(axis=1)
    outer = (dk >= 2) & (dk <= FSIDE_HALF)
    out = np.where(outer, p, 0.0).sum(axis=1)
    omax = np.where(outer, p, 0.0).max(axis=1)
    ok = (i1 >= FSIDE_HALF) & (i1 < m - FSIDE_HALF) & (e3 > 0) & (out > 0) & (mid > 0)
    return i1, mid, e3, out, omax, ok


def fside_share(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, ok)`` per row of ``profile``: the outer share ``x = (E7 - E3) / E7`` of the seven strips around the hottest
    (:data:`FSIDE_HALF`; 0 where ``ok`` is False: the hottest strip within three strips of the window's edge, or an
    empty core or outer ring)."""
    _, _, e3, out, _, ok = _fside_strips(np.asarray(profile, np.float64))
    e7 = e3 + out
    return np.where(ok, np.divide(out, e7, out=np.zeros(len(e7)), where=ok), 0.0), ok


def fside_factors(profile: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """``(N, n_eta)`` factors that give each row the outer share ``x_new`` (:func:`fside_share`; at most what keeps the
    hottest strip hotter than every outer strip, by :data:`CORE_CAP`): the core's three strips scaled by
    ``(1 - x') E7 / E3``, the four outer ones by ``x' E7 / (E7 - E3)``, ``E7`` kept; 1 elsewhere."""
    p = np.asarray(profile, np.float64)
    n, m = p.shape
    i1, mid, e3, out, omax, ok = _fside_strips(p)
    a = CORE_CAP * mid * out
    cap = np.divide(a, a + omax * e3, out=np.ones(n), where=ok)
    xn = np.clip(np.asarray(x_new, np.float64).reshape(-1), 0.0, cap)
    e7 = e3 + out
    fc = np.divide((1.0 - xn) * e7, e3, out=np.ones(n), where=ok)
    fo = np.divide(xn * e7, out, out=np.ones(n), where=ok)
    dk = np.abs(np.arange(m)[None, :] - i1[:, None])
    fac = np.where((dk <= 1) & ok[:, None], fc[:, None], 1.0)
    return np.where((dk >= 2) & (dk <= FSIDE_HALF) & ok[:, None], fo[:, None], fac)


def shift_cells(cells: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``cells`` ``(N, n_eta, n_phi)`` shifted by ``delta`` ``(N,)`` strips along η (positive: to larger index) by
    linear interpolation between neighbouring strips (a profile narrower than a strip re-binned after a shift), the
    layer's energy then rescaled to the original (what would leave the window)."""
    c = np.asarray(cells, np.float64)
    n, m, _ = c.shape
    d = np.asarray(delta, np.float64).reshape(-1)
    fl = np.floor(d)
    f = (d - fl)[:, None, None]
    k = np.arange(m)[None, :]
    out = np.zeros_like(c)
    for src, wgt in ((k - fl[:, None].astype(np.int64), 1.0 - f), (k - fl[:, None].astype(np.int64) - 1, f)):
        inside = (src >= 0) & (src < m)
        g = np.take_along_axis(c, np.clip(src, 0, m - 1)[:, :, None], axis=1)
        out += np.where(inside[:, :, None], g, 0.0) * wgt
    t0, t1 = c.sum(axis=(1, 2)), out.sum(axis=(1, 2))
    return out * np.divide(t0, t1, out=np.ones(n), where=t1 > 0)[:, None, None]


def second_maximum(profile: np.ndarray, half_window: int = HALF_WINDOW) -> dict[str, np.ndarray]:
    """Per row of ``profile`` ``(N, n_eta)`` (strip energies in η): ``i1`` the hottest strip, ``i2`` the second
    maximum (module docstring; ``has2`` False and ``i2 = i1`` without one), ``e1``, ``e2`` their energies, ``emin`` the
    lowest strip strictly between them (``e2`` when adjacent), ``prominence`` ``e2 - emin`` (0 without one) and
    ``between`` ``(N, n_eta)`` the strips strictly between the two maxima."""
    p = np.asarray(profile, np.float64)
    n, m = p.shape
    k = np.arange(m)[None, :]
    i1 = np.argmax(p, axis=1)
    loc = np.zeros(p.shape, bool)
    loc[:, 1:-1] = (p[:, 1:-1] > p[:, :-2]) & (p[:, 1:-1] >= p[:, 2:])
    cand = loc & (k != i1[:, None]) & (np.abs(k - i1[:, None]) <= half_window) & (p > 0)
    masked = np.where(cand, p, -np.inf)
    has2 = cand.any(axis=1)
    i2 = np.where(has2, np.argmax(masked, axis=1), i1)
    rows = np.arange(n)
    e1, e2 = p[rows, i1], p[rows, i2]
    lo, hi = np.minimum(i1, i2)[:, None], np.maximum(i1, i2)[:, None]
    between = (k > lo) & (k < hi)
    emin = np.where(between, p, np.inf).min(axis=1) if m else np.zeros(n)
    emin = np.where(np.isfinite(emin), emin, e2)
    prom = np.where(has2, np.maximum(e2 - emin, 0.0), 0.0)
    return {"i1": i1, "i2": i2, "has2": has2, "e1": e1, "e2": e2, "emin": emin, "prominence": prom, "between": between}


def strip_profile(showers: np.ndarray, start: int, n_eta: int, n_phi: int) -> np.ndarray:
    """``(N, n_eta)`` the strip layer's voxels (η-major, from voxel ``start``) summed over φ."""
    s = np.asarray(showers, np.float64)
    return s[:, start : start + n_eta * n_phi].reshape(len(s), n_eta, n_phi).sum(axis=2)


def prominence(showers: np.ndarray, meta: dict[str, Any], layer_sizes: Sequence[int],
               eta: np.ndarray | None = None, energies: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``(N,)`` each shower's strip second-maximum prominence or height (``meta``'s ``strip_variable``; GeV, 0 without
    a second maximum); ``recentre``: ``(r + RECENTRE_OFFSET) E`` (``r`` :func:`centre_residual`; needs ``eta`` and
    ``energies``)."""
    start, n_eta, n_phi, half = strip_geometry(meta, layer_sizes)
    if strip_variable(meta) == "recentre":
        if eta is None or energies is None:
            raise ConfigError("a recentring strip pass needs each shower's eta (and energy)")
        _, r = centre_residual(strip_profile(showers, start, n_eta, n_phi), eta, float(meta["strip_cell_deta"]))
        return (r + RECENTRE_OFFSET) * np.asarray(energies, np.float64).reshape(-1)
    if strip_variable(meta) == "core":
        if energies is None:
            raise ConfigError("a core strip pass needs each shower's energy")
        prof = strip_profile(showers, start, n_eta, n_phi)
        return _core_columns(core_share(prof)[0] * np.asarray(energies, np.float64).reshape(-1), meta, eta, prof)
    if strip_variable(meta) == "fside":
        if energies is None:
            raise ConfigError("an fside strip pass needs each shower's energy")
        x, _ = fside_share(strip_profile(showers, start, n_eta, n_phi))
        return x * np.asarray(energies, np.float64).reshape(-1)
    sm = second_maximum(strip_profile(showers, start, n_eta, n_phi), half)
    return _mapped_value(sm, strip_variable(meta))


def _phase_indicator(showers: np.ndarray, meta: dict[str, Any], layer_sizes: Sequence[int],
                     eta: np.ndarray | None) -> np.ndarray:  # fmt: skip
    """``(N, B)`` 1 in each shower's phase bin of a core pass (:func:`_core_columns`), 0 elsewhere."""
    start, n_eta, n_phi, _ = strip_geometry(meta, layer_sizes)
    prof = strip_profile(showers, start, n_eta, n_phi)
    return _core_columns(np.ones(len(prof)), meta, eta, prof)


def _mapped_value(sm: dict[str, np.ndarray], variable: str) -> np.ndarray:
    if variable == "height":
        return np.where(sm["has2"], sm["e2"], 0.0)
    return sm["prominence"]


def _inner(corr: QuantileCorrection) -> QuantileCorrection:
    """The map of a strip pass as a one-voxel ``energy`` correction (no chain; a core pass in phase bins: one voxel
    per bin)."""
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

    return QuantileCorrection("energy", [corr.p_gen.shape[-1]], corr.log_e_nodes, corr.eta_nodes, corr.levels, corr.p_gen, corr.p_ref,
                              corr.q_gen, corr.q_ref, source="the strip pass")  # fmt: skip


def fit_strip_pass(gen_showers: np.ndarray, gen_energies: np.ndarray, ref_showers: np.ndarray,
                   ref_energies: np.ndarray, layer_sizes: Sequence[int], *, strip_layer: int, strip_n_eta: int,
                   half_window: int = HALF_WINDOW, after: QuantileCorrection | None = None,
                   variable: str = "prominence", cell_deta: float | None = None, shift: str = "linear", phase_bins: int = 1,
                   phase_from: str = "impact", phase_population: str = "all", eta_max: float | None = None,
                   eta_min: float | None = None, **fit_kw: Any) -> QuantileCorrection:  # fmt: skip
    """The strip pass (module docstring) fitted on generated and detailed showers, after ``after`` (a fitted chain,
    applied to ``gen_showers`` first) if given. ``fit_kw``: :meth:`QuantileCorrection.fit`'s node options
    (``gen_eta``, ``ref_eta``, ``eta_bins``, ``n_quantiles``, ``max_energy_nodes``, ``min_count``, ``meta``).
    ``variable``: what is mapped (:data:`VARIABLES`); ``recentre`` needs ``cell_deta`` (the strip layer's η cell width)
    and both samples' η, and shifts by ``shift`` (:data:`SHIFTS`); ``core`` with ``phase_bins`` > 1 maps the core
    share per bin of the impact's distance from its strip's centre (:func:`phase_bin`; needs ``cell_deta`` and η), or with ``phase_from="cluster"`` of the cluster barycentre's place
    in the hottest strip (:func:`cluster_u`: the w_s3 impact correction's ``u``); ``phase_population`` (:data:`POPULATIONS`):
    each bin's map over every shower of the node (``all``, the default) or over the bin's own showers (``own``).
    ``fside`` (h31b) maps the outer share ``(E7 - E3) / E7`` of the seven strips around the hottest
    (:func:`fside_share`, :func:`fside_factors`); with ``eta_max`` it leaves showers at ``|η| >= eta_max`` alone
    (fitted on all showers; applying it needs each shower's η); with ``eta_min`` (h31c) it leaves showers at
    ``|η| < eta_min`` alone (the same)."""
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

    geo = {"strip_layer": int(strip_layer), "strip_n_eta": int(strip_n_eta), "strip_half_window": int(half_window)}
    if variable != "prominence":  # a prominence pass's header as first written
        geo["strip_variable"] = variable
    if phase_bins > 1 and variable != "core":
        raise ConfigError(f"phase bins belong to a core strip pass, not to strip_variable {variable!r}")
    if variable == "core" and phase_bins > 1:
        geo["strip_cell_deta"] = None if cell_deta is None else float(cell_deta)
        geo["strip_phase_bins"] = int(phase_bins)
        if phase_from not in PHASE_FROM:
            raise ConfigError(f"a core strip pass's phase_from must be one of {', '.join(PHASE_FROM)}, got {phase_from!r}")
        if phase_from != "impact":
            geo["strip_phase_from"] = phase_from
    if phase_population not in POPULATIONS or (phase_population != "all" and not (variable == "core" and phase_bins > 1)):
        raise ConfigError(f"a strip pass's phase_population must be one of {', '.join(POPULATIONS)} ('own' only for a "
                          f"core pass in phase bins), got {phase_population!r}")  # fmt: skip
    if phase_population != "all":
        geo["strip_phase_population"] = phase_population
    if eta_max is not None:
        if variable != "fside" or not float(eta_max) > 0:
            raise ConfigError(f"eta_max (> 0) belongs to an fside strip pass, got {eta_max!r} for strip_variable {variable!r}")
        geo["strip_eta_max"] = float(eta_max)
    if eta_min is not None:
        if variable != "fside" or not float(eta_min) > 0:
            raise ConfigError(f"eta_min (> 0) belongs to an fside strip pass, got {eta_min!r} for strip_variable {variable!r}")
        geo["strip_eta_min"] = float(eta_min)
    if variable == "recentre":
        geo["strip_cell_deta"] = None if cell_deta is None else float(cell_deta)
        if shift not in SHIFTS:
            raise ConfigError(f"a recentring strip pass's shift must be one of {', '.join(SHIFTS)}, got {shift!r}")
        if shift != "linear":
            geo["strip_shift"] = shift
    strip_geometry(geo, layer_sizes)
    g = np.asarray(gen_showers) if after is None else after.apply(gen_showers, gen_energies, fit_kw.get("gen_eta"))
    ge = np.asarray(gen_energies, np.float64).reshape(-1)
    re_ = np.asarray(ref_energies, np.float64).reshape(-1)
    xg = prominence(g, geo, layer_sizes, fit_kw.get("gen_eta"), ge)  # GeV: mapped over the incident energy
    xr = prominence(ref_showers, geo, layer_sizes, fit_kw.get("ref_eta"), re_)
    xg, xr = xg.reshape(len(xg), -1), xr.reshape(len(xr), -1)  # (N, 1); a core pass in phase bins (N, B)
    inner = QuantileCorrection.fit(xg, ge, xr, re_, [xg.shape[1]], variable="energy", **fit_kw)
    if phase_population == "own":
        ig = _phase_indicator(g, geo, layer_sizes, fit_kw.get("gen_eta"))
        ir = _phase_indicator(ref_showers, geo, layer_sizes, fit_kw.get("ref_eta"))
        inner = _own_population(inner, ig, ir, ge, re_, fit_kw)
    info = dict(inner.meta, level="strips", **geo,
                second_max_fraction_generated=float(np.mean(xg > 0)),
                second_max_fraction_reference=float(np.mean(xr > 0)))  # fmt: skip
    if after is not None:
        info["passes"] = len(after.chain()) + 1
    return QuantileCorrection("energy", layer_sizes, inner.log_e_nodes, inner.eta_nodes, inner.levels, inner.p_gen,
                              inner.p_ref, inner.q_gen, inner.q_ref, info, base=after, level="strips")  # fmt: skip


def apply_strip_pass(corr: QuantileCorrection, showers: np.ndarray, energies: np.ndarray,
                     eta: np.ndarray | None) -> np.ndarray:  # fmt: skip
    """``corr`` (a ``level="strips"`` pass, its earlier passes already applied to ``showers``) on ``showers``
    ``(N, V)`` GeV: each shower's second maximum set to the mapped prominence, the strip energy kept (float32)."""
    from lhcml.models.fastcalo.quantile_map import CHUNK

    start, n_eta, n_phi, half = strip_geometry(corr.meta, corr.layer_sizes)
    var = strip_variable(corr.meta)
    inner = _inner(corr)
    out = np.array(showers, np.float32, copy=True)
    e_all = np.asarray(energies, np.float64).reshape(-1)
    if var == "recentre" and eta is None:
        raise ConfigError("a recentring strip pass needs each shower's eta")
    bounds = [k for k in ("strip_eta_max", "strip_eta_min") if corr.meta.get(k) is not None]
    bounded = bool(bounds)
    if bounded and eta is None:
        raise ConfigError(f"an fside strip pass with {bounds[0]} needs each shower's eta")
    for a in range(0, len(out), CHUNK):
        s = np.asarray(out[a : a + CHUNK], np.float64)
        e = e_all[a : a + CHUNK]
        prof = strip_profile(s, start, n_eta, n_phi)
        if var == "recentre":
            ea = np.abs(np.asarray(eta, np.float64).reshape(-1))[a : a + CHUNK]
            _, r = centre_residual(prof, ea, float(corr.meta["strip_cell_deta"]))
            r_new = inner._map((r + RECENTRE_OFFSET)[:, None], np.log(e), ea)[:, 0] - RECENTRE_OFFSET
            d = np.clip(r_new - r, -MAX_SHIFT, MAX_SHIFT)
            if corr.meta.get("strip_shift", "linear") == "whole":
                d = np.round(d)
            cells = shift_cells(s[:, start : start + n_eta * n_phi].reshape(len(s), n_eta, n_phi), d)
            out[a : a + CHUNK, start : start + n_eta * n_phi] = cells.reshape(len(s), -1)
            continue
        if var == "core":
            x, _, ok = core_share(prof)
            ec = None if eta is None else eta[a : a + CHUNK]
            cols = _core_columns(x, corr.meta, ec, prof)
            mapped = inner._map(cols, np.log(e), ec).max(axis=1)  # the shower's own column (the others stay zero)
            x_new = np.where(ok & (mapped > 0), mapped, x)
            cells = s[:, start : start + n_eta * n_phi].reshape(len(s), n_eta, n_phi) * core_factors(prof, x_new)[:, :, None]
            out[a : a + CHUNK, start : start + n_eta * n_phi] = cells.reshape(len(s), -1)
            continue
        if var == "fside":
            x, ok = fside_share(prof)
            ec = None if eta is None else eta[a : a + CHUNK]
            mapped = inner._map(x[:, None], np.log(e), ec)[:, 0]  # x: over E_inc
            x_new = np.where(ok & (mapped > 0), mapped, x)
            fac = fside_factors(prof, x_new)
            if bounded:  # outside [strip_eta_min, strip_eta_max) the shower is left exactly as it is
                a_eta = np.abs(np.asarray(ec, np.float64).reshape(-1))
                inside = (a_eta < float(corr.meta.get("strip_eta_max") or np.inf)) & (a_eta >= float(corr.meta.get("strip_eta_min") or 0.0))
                fac = np.where(inside[:, None], fac, 1.0)
            cells = s[:, start : start + n_eta * n_phi].reshape(len(s), n_eta, n_phi) * fac[:, :, None]
            out[a : a + CHUNK, start : start + n_eta * n_phi] = cells.reshape(len(s), -1)
            continue
        sm = second_maximum(prof, half)
        new = inner._map((_mapped_value(sm, var) / e)[:, None], np.log(e),
                         None if eta is None else eta[a : a + CHUNK])[:, 0] * e  # fmt: skip
        factors = strip_factors(prof, sm, new if var == "prominence" else np.maximum(new - sm["emin"], 0.0))
        cells = s[:, start : start + n_eta * n_phi].reshape(len(s), n_eta, n_phi) * factors[:, :, None]
        out[a : a + CHUNK, start : start + n_eta * n_phi] = cells.reshape(len(s), -1)
    return out


def strip_factors(prof: np.ndarray, sm: dict[str, np.ndarray], new_prominence: np.ndarray) -> np.ndarray:
    """``(N, n_eta)`` the factor each strip's voxels are scaled by so the second maximum gets ``new_prominence``
    (module docstring): 1 everywhere for a shower without a second maximum."""
    n, m = prof.shape
    k = np.arange(m)[None, :]
    i1, i2, has2 = sm["i1"], sm["i2"], sm["has2"]
    e2, emin, e1 = sm["e2"], sm["emin"], sm["e1"]
    e2_new = np.clip(emin + new_prominence, 0.0, e2 + MAX_RAISE * (e1 - e2))
    give = np.where(has2, e2 - e2_new, 0.0)  # energy the second maximum gives to the first's strips
    core = (np.abs(k - i1[:, None]) <= 1) & ~sm["between"] & (k != i2[:, None])
    c = (prof * core).sum(axis=1)
    ok = has2 & (c > 0) & (e2 > 0) & (c + give > 0)
    f2 = np.divide(e2_new, e2, out=np.ones(n), where=ok)
    fc = np.divide(c + give, c, out=np.ones(n), where=ok)
    fac = np.ones((n, m))
    fac = np.where(core & ok[:, None], fc[:, None], fac)
    return np.where((k == i2[:, None]) & ok[:, None], f2[:, None], fac)


__all__ = ["CORE_CAP", "FSIDE_HALF", "HALF_WINDOW", "MAX_SHIFT", "PHASE_FROM", "POPULATIONS", "RECENTRE_HALF", "RECENTRE_OFFSET", "SHIFTS", "VARIABLES", "apply_strip_pass", "centre_residual",
           "cluster_u", "core_factors", "core_share", "fside_factors", "fside_share", "phase_bin", "shift_cells", "fit_strip_pass", "prominence", "second_maximum", "strip_factors",
           "strip_geometry", "strip_profile", "strip_variable"]
