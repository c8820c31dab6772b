"""A learned per-cell quantile correction of generated showers (issue 15; docs/benchmarks/fastcalo.md,
"Twenty-second version").

A generator's cells can have the wrong *marginal* distributions given the incident energy (the
best flow-matching model's middle-layer halo is too soft: five times the detailed number of 1-5 MeV
cells, a third too few above 20 MeV). :class:`QuantileCorrection` maps each voxel's generated
distribution onto the detailed one by one-dimensional optimal transport — the monotone map
``F_detailed^-1(F_generated(x))`` — fitted on the detailed **training** showers and on showers the
generator makes at the same conditions, and applied after sampling. It is deterministic (no random
numbers) and cannot change correlations between cells beyond what a per-cell monotone map does.

Per voxel and per fitted node (incident energy, optionally ``|η|`` bins):

* the variable is the cell's energy over the incident energy with every layer renormalised to its
  generated energy after mapping (``variable="energy_layers"``, the default: the layer energies and the
  total are kept exactly), the cell's share of its layer's energy, renormalised the same way
  (``"share"``), or the cell's energy over the incident energy with nothing kept (``"energy"``; it moved
  the total energy away from the detailed one: docs/benchmarks/fastcalo.md);
* a zero cell is a point mass at the bottom of the distribution: with ``p`` the fraction of non-zero
  cells, a non-zero generated value at conditional quantile ``s`` has full quantile
  ``u = 1 - p_gen + p_gen s``; it becomes zero where ``u <= 1 - p_ref`` (the generator fills the cell
  more often than the detailed simulation), else the detailed conditional quantile
  ``(u - 1 + p_ref) / p_ref``. A zero generated cell stays zero (a deterministic map cannot split a
  point mass: where the detailed simulation fills a cell more often, the correction leaves that
  deficit);
* the conditional distributions of ``ln x`` of the non-zero cells are represented by their quantiles
  at ``n_quantiles`` fixed levels (denser in the tails), the map is piecewise linear between them and
  a shift beyond the outer ones;
* between nodes the tables (occupancies and quantile functions) are interpolated linearly in
  ``ln E`` (and ``|η|``), which is the displacement interpolation of the distributions; outside the
  nodes the nearest node's table is used;
* a (voxel, node) with fewer than ``min_count`` non-zero generated cells is left alone (identity); one
  with fewer than ``min_count`` non-zero detailed cells only gets its occupancy mapped.

**Conditional correction** (``condition="layer_energy"``, opt-in; also ``layer_peak`` and ``depth``, the same
machinery with another per-shower variable: :data:`CONDITIONS`; docs/benchmarks/fastcalo.md, h24b): what a
per-voxel map leaves is correlation, e.g. how a layer's lateral spread goes with its energy. Each voxel's map is
then fitted separately in ``condition_bins`` equal-count bins of its layer's energy fraction ``E_layer / E_inc``
(per node; each sample binned by its own quantiles, so bin ``c`` pairs the generated and detailed showers of the
same *rank* in layer energy, robust to a generator whose layer energies are shifted), and applied interpolated
linearly in that fraction between the generated bins' medians (the nearest bin's map outside them), so each cell's
distribution *given its layer's energy* is the detailed one (exactly so where the layer energies agree, as they do
for lhcml's generators). The layer energies are the generated ones before and after (``energy_layers`` and
``share`` renormalise to them), so the map conditions on what it keeps. A (bin, voxel) with fewer than
``min_count`` non-zero cells on either side, and a layer whose variable cannot be split into bins (mostly-empty
layers), use the unconditional map of their node.

:meth:`QuantileCorrection.torch_module` is the same map for the ONNX sampling graph
(``lhcml fastcalo quantile-map ... --onnx``, :func:`lhcml.export.fastcalo.export_generator`'s ``correction``).

Saved as a small ``.npz`` (no pickled objects; :meth:`QuantileCorrection.load` checks every array and
raises one :class:`~lhcml.errors.ConfigError` for a bad file), by default beside the checkpoint it
was fitted for (:func:`correction_path`); it records the sampler (steps, solver) it was fitted with,
and :meth:`QuantileCorrection.check_model` refuses another one. A conditional correction is written with the
format ``FORMAT_CONDITIONAL`` and one more array (``cond_nodes``); a plain one exactly as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import ConfigError

#: the file format's version (``meta["format"]``)
FORMAT = "lhcml-fastcalo-quantile-map-1"
#: the format of a conditional correction (``condition`` set: the tables have a conditioning axis)
FORMAT_CONDITIONAL = "lhcml-fastcalo-quantile-map-2"
VARIABLES = ("energy", "share", "energy_layers")
#: what a conditional correction conditions each voxel's map on (the generated shower's, before the map):
#: ``layer_energy`` its layer's energy over the incident energy (kept by ``energy_layers`` and ``share``, so the
#: map is fitted on what it keeps); ``layer_peak`` its layer's hottest cell over the layer's energy (a width proxy
#: without geometry: a narrow layer has a large peak share); ``depth`` the shower's longitudinal centre of gravity
#: in layer units, sum_L L E_L / sum_L E_L (one value per shower, kept), the same for every layer; ``eta_phase`` where
#: inside its layer's η cell the particle hits, ``|η| / Δη_L mod 1`` (0 and 1 the cell's edges; the cell widths
#: ``cell_deta`` stored with the map): not a property of the shower but of its condition, which the detailed
#: showers follow closely (a shower's centroid and width in the cell grid) and a generator only partly;
#: ``shower_width`` the shower's energy-weighted lateral width in η, sum_L E_L sigma_eta,L / sum_L E_L with sigma_eta,L
#: the energy-weighted RMS in η of layer L's cells (η units: the layers' ``cell_deta`` and ``cell_neta`` stored with the
#: map; one value per shower, the same for every layer, not kept by the map): each shower's cells mapped per bin of its
#: width *rank*, so where the generator's showers are wide in several layers at once (a correlated over-dispersion
#: that per-cell maps cannot see) the widest generated showers are mapped onto the widest detailed ones (h26b)
CONDITIONS = ("layer_energy", "layer_peak", "depth", "eta_phase", "shower_width")
#: the conditions that need the layers' cell geometry (stored with the map): ``cell_deta``, and ``cell_neta`` for widths
_GEOMETRY_CONDITIONS = ("eta_phase", "shower_width")
#: what a pass maps: each voxel (``cells``, every pass above) or each layer's energy (``layers``: the shower's layer
#: energies over its total, mapped per node as the cells of one layer with ``variable="share"`` so the total energy is
#: kept, then every cell of a layer scaled by its layer's new energy over the old; the cell passes keep the generator's
#: layer energies, so f1, f3 and R_had are otherwise the raw generator's: h26b); ``strips`` one strip-layer quantity
#: per shower (the second maximum's prominence or height, the core's side share, or the profile's centre residual),
#: then the strips moved to it (:mod:`lhcml.models.fastcalo.strip_pass`: the strip layer's energy kept; h27a, h28a)
LEVELS = ("cells", "layers", "strips")
#: the tables of a correction, in the constructor's order (a file's arrays; a second pass's first one as base_*)
_TABLES = ("log_e_nodes", "eta_nodes", "levels", "p_gen", "p_ref", "q_gen", "q_ref")
#: showers per chunk in :meth:`QuantileCorrection.apply` (memory: chunk x voxels x quantiles floats)
CHUNK = 2048


#: the outer quantile levels are LEVEL_MIN and LEVEL_MIN + LEVEL_SPAN (:func:`quantile_levels`; the ONNX map inverts it)
LEVEL_MIN, LEVEL_SPAN = 0.002, 0.996


def quantile_levels(n: int) -> np.ndarray:
    """``n`` conditional quantile levels in ``[0.002, 0.998]``, denser in the tails (cosine spacing;
    our choice: the tails of a cell's spectrum — the soft halo cells, the hard core — are what the
    generators get wrong)."""
    if n < 2:
        raise ConfigError(f"the quantile correction needs n_quantiles >= 2, got {n}")
    t = 0.5 * (1.0 - np.cos(np.pi * np.linspace(0.0, 1.0, n)))
    return LEVEL_MIN + LEVEL_SPAN * t


def correction_path(checkpoint: str | Path) -> Path:
    """The correction file that belongs to ``checkpoint``: ``<checkpoint without suffix>.qmap.npz``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".qmap.npz")


def _variable(showers: np.ndarray, energies: np.ndarray, layer_slices: Sequence[slice], variable: str) -> np.ndarray:
    """The mapped variable ``(N, V)``: cell / E_inc or cell / its layer's energy (0 for an empty layer)."""
    s = np.asarray(showers, np.float64)
    if variable in ("energy", "energy_layers"):
        return s / np.asarray(energies, np.float64).reshape(-1, 1)
    out = np.zeros_like(s)
    for sl in layer_slices:
        tot = s[:, sl].sum(axis=1, keepdims=True)
        np.divide(s[:, sl], tot, out=out[:, sl], where=tot > 0)
    return out


def _layer_slices(sizes: Sequence[int]) -> list[slice]:
    """The voxel slice of each layer, for layers of ``sizes`` voxels in order."""
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _layer_energies(showers: np.ndarray, layer_slices: Sequence[slice]) -> np.ndarray:
    """``(N, L)`` each shower's energy per layer (float64)."""
    s = np.asarray(showers, np.float64)
    return np.stack([s[:, sl].sum(axis=1) for sl in layer_slices], axis=1)


def eta_offsets(layer_sizes: Sequence[int], cell_deta: Sequence[float], cell_neta: Sequence[int]) -> np.ndarray:
    """``(V,)`` each voxel's η offset from its layer's window centre, ``(i_eta - (n_eta - 1) / 2) deta``, for layers
    of ``layer_sizes`` voxels stored η-major (``i_eta * n_phi + i_phi``, :mod:`lhcml.data.calochallenge`) with
    ``cell_neta`` cells of width ``cell_deta`` in η."""
    parts = []
    for size, deta, neta in zip(layer_sizes, cell_deta, cell_neta, strict=True):
        i_eta = np.arange(int(size)) // (int(size) // int(neta))
        parts.append((i_eta - 0.5 * (int(neta) - 1)) * float(deta))
    return np.concatenate(parts)


def _condition_values(showers: np.ndarray, energies: np.ndarray, layer_slices: Sequence[slice],
                      condition: str, eta: np.ndarray | None = None, cell_deta: np.ndarray | None = None,
                      cell_neta: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``(N, L)`` the conditioning variable of each shower and layer (:data:`CONDITIONS`; ``eta_phase`` needs each
    shower's ``eta`` and the layers' ``cell_deta``, ``shower_width`` the layers' ``cell_deta`` and ``cell_neta``)."""
    if condition == "eta_phase":
        a = np.abs(np.asarray(eta, np.float64).reshape(-1, 1))
        return np.mod(a / np.asarray(cell_deta, np.float64).reshape(1, -1), 1.0)
    s = np.asarray(showers, np.float64)
    e_layer = _layer_energies(s, layer_slices)
    if condition == "shower_width":  # sum_L E_L sigma_L = sum_L sqrt(E_L m2_L - m1_L^2), over the total energy
        x = eta_offsets([sl.stop - sl.start for sl in layer_slices], cell_deta, cell_neta)
        m1 = np.stack([s[:, sl] @ x[sl] for sl in layer_slices], axis=1)
        m2 = np.stack([s[:, sl] @ np.square(x[sl]) for sl in layer_slices], axis=1)
        tot = e_layer.sum(axis=1, keepdims=True)
        width = np.sqrt(np.maximum(e_layer * m2 - np.square(m1), 0.0)).sum(axis=1, keepdims=True)
        return np.repeat(np.divide(width, tot, out=np.zeros_like(tot), where=tot > 0), len(layer_slices), axis=1)
    if condition == "layer_energy":
        return e_layer / np.asarray(energies, np.float64).reshape(-1, 1)
    if condition == "layer_peak":
        peak = np.stack([s[:, sl].max(axis=1) for sl in layer_slices], axis=1)
        return np.divide(peak, e_layer, out=np.zeros_like(peak), where=e_layer > 0)
    tot = e_layer.sum(axis=1, keepdims=True)
    depth = np.divide(e_layer @ np.arange(len(layer_slices), dtype=np.float64)[:, None], tot,
                      out=np.zeros_like(tot), where=tot > 0)  # fmt: skip
    return np.repeat(depth, len(layer_slices), axis=1)


def _fit_cell(g_all: np.ndarray, r_all: np.ndarray, levels: np.ndarray, ramp: np.ndarray,
              min_count: int) -> tuple[float, float, np.ndarray, np.ndarray, str]:  # fmt: skip
    """One (node, voxel) entry from its generated and reference values (zeros included): ``(p_gen, p_ref, q_gen,
    q_ref, kind)`` with kind ``identity`` (< min_count generated non-zero cells), ``occupancy`` (< min_count
    reference ones: only the occupancy mapped) or ``full``."""
    g = g_all[g_all > 0]
    r = r_all[r_all > 0]
    pg, pr = len(g) / len(g_all), len(r) / len(r_all)
    if len(g) < min_count:  # too few generated cells to know the map: identity
        both = np.log(np.concatenate([g, r])) if len(g) + len(r) else np.zeros(1)
        q = np.quantile(both, levels) + ramp
        return pg, pg, q, q, "identity"
    qg = np.maximum.accumulate(np.quantile(np.log(g), levels)) + ramp
    if len(r) < min_count:  # too few detailed cells for their spectrum: only the occupancy
        return pg, pr, qg, qg, "occupancy"
    return pg, pr, qg, np.maximum.accumulate(np.quantile(np.log(r), levels)) + ramp, "full"


def _rank_bins(values: np.ndarray, n_bins: int, min_count: int) -> tuple[np.ndarray, bool, np.ndarray]:
    """``(bin of each value, usable, bin medians)`` for ``n_bins`` equal-count bins of ``values``; not usable when
    a bin holds fewer than ``min_count`` values or the medians do not increase strictly (ties, e.g. empty layers)."""
    edges = np.quantile(values, np.arange(1, n_bins) / n_bins)
    idx = np.searchsorted(edges, values, side="right")
    counts = np.bincount(idx, minlength=n_bins)
    if (counts < min_count).any():
        return idx, False, np.zeros(n_bins)
    centres = np.array([np.median(values[idx == c]) for c in range(n_bins)])
    return idx, bool(np.all(np.diff(centres) > 0)), centres


def _nodes(values: np.ndarray, max_nodes: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(node positions (B,), node index of each value (N,))``: the distinct values if there are at most
    ``max_nodes`` of them (lhcml's discrete energies), else ``max_nodes`` equal-count bins at their means."""
    v = np.asarray(values, np.float64)
    uniq, inv = np.unique(v, return_inverse=True)
    if len(uniq) <= max_nodes:
        return uniq, inv
    edges = np.quantile(v, np.linspace(0.0, 1.0, max_nodes + 1))
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, max_nodes - 1)
    centres = np.array([v[idx == b].mean() if np.any(idx == b) else np.nan for b in range(max_nodes)])
    if np.isnan(centres).any() or np.any(np.diff(centres) <= 0):
        raise ConfigError(f"the quantile correction could not bin the {what} into {max_nodes} nodes: use fewer")
    return centres, idx


def _bracket(x: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower node index ``(N,)`` and weight of the upper node ``(N,)`` for linear interpolation at ``x``
    (clamped to the nodes' range)."""
    if len(nodes) == 1:
        return np.zeros(len(x), np.int64), np.zeros(len(x))
    xc = np.clip(x, nodes[0], nodes[-1])
    lo = np.clip(np.searchsorted(nodes, xc, side="right") - 1, 0, len(nodes) - 2)
    w = (xc - nodes[lo]) / (nodes[lo + 1] - nodes[lo])
    return lo, w


class QuantileCorrection:
    """Per-voxel monotone (1-D optimal-transport) correction of generated showers (module docstring).

    Build it with :meth:`fit`, apply it with :meth:`apply`, store it with :meth:`save` / :meth:`load`.

    Attributes
    ----------
    variable
        ``"energy"`` (cell / E_inc), ``"share"`` (cell / layer energy, layers renormalised) or
        ``"energy_layers"`` (cell / E_inc, layers renormalised).
    layer_sizes
        Voxels per layer.
    log_e_nodes, eta_nodes
        Node positions: ``ln E_inc`` (GeV), ``|η|`` (``[0.0]`` with one η node: not used).
    levels
        ``(K,)`` conditional quantile levels.
    p_gen, p_ref
        ``(H, B, V)`` fractions of non-zero cells (η node, energy node, voxel).
    q_gen, q_ref
        ``(H, B, V, K)`` quantiles of ``ln x`` of the non-zero cells (strictly increasing in K).
    meta
        JSON-able facts: the format, the sampler it was fitted for, the sample sizes.
    condition
        ``None`` (plain) or what each voxel's map is conditioned on (:data:`CONDITIONS`). Conditional: the
        occupancy tables are ``(H, B, C, V)``, the quantile tables ``(H, B, C, V, K)`` with ``C`` conditioning bins.
    cond_nodes
        Conditional only: ``(H, B, L, C)`` the generated bins' medians of each layer's conditioning variable (strictly
        increasing in ``C``; a layer left unconditional has placeholder nodes and equal tables in every bin).
    """

    def __init__(self, variable: str, layer_sizes: Sequence[int], log_e_nodes: np.ndarray, eta_nodes: np.ndarray,
                 levels: np.ndarray, p_gen: np.ndarray, p_ref: np.ndarray, q_gen: np.ndarray, q_ref: np.ndarray,
                 meta: dict[str, Any] | None = None, source: str = "QuantileCorrection", *,
                 condition: str | None = None, cond_nodes: np.ndarray | None = None,
                 base: QuantileCorrection | None = None, cell_deta: np.ndarray | None = None,
                 cell_neta: np.ndarray | None = None, level: str = "cells") -> None:  # fmt: skip
        self.variable = variable
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        self.log_e_nodes = np.asarray(log_e_nodes, np.float64)
        self.eta_nodes = np.asarray(eta_nodes, np.float64)
        self.levels = np.asarray(levels, np.float64)
        self.p_gen = np.asarray(p_gen, np.float64)
        self.p_ref = np.asarray(p_ref, np.float64)
        self.q_gen = np.asarray(q_gen, np.float64)
        self.q_ref = np.asarray(q_ref, np.float64)
        self.meta = dict(meta or {})
        self.condition = condition
        self.cond_nodes = None if cond_nodes is None else np.asarray(cond_nodes, np.float64)
        self.base = base
        #: ``eta_phase`` and ``shower_width`` only: each layer's η cell width ``(L,)``
        self.cell_deta = None if cell_deta is None else np.asarray(cell_deta, np.float64)
        #: ``shower_width`` only: each layer's number of cells in η ``(L,)`` (the voxels are η-major)
        self.cell_neta = None if cell_neta is None else np.asarray(cell_neta, np.int64)
        #: what the tables map (:data:`LEVELS`): each voxel or each layer's energy
        self.level = level
        self._check(source)
        if base is not None and (base.layer_sizes != self.layer_sizes or (self.condition is None and level == "cells")):
            raise ConfigError(f"{source}: a second pass needs a conditional correction on a plain one (or on an "
                              "earlier chain) of the same layers")  # fmt: skip  # source: what the errors name (the file, for load)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, gen_showers: np.ndarray, gen_energies: np.ndarray, ref_showers: np.ndarray, ref_energies: np.ndarray,
        layer_sizes: Sequence[int], *, gen_eta: np.ndarray | None = None, ref_eta: np.ndarray | None = None,
        variable: str = "energy_layers", n_quantiles: int = 32, eta_bins: int = 1, max_energy_nodes: int = 32,
        min_count: int = 20, meta: dict[str, Any] | None = None, condition: str | None = None, condition_bins: int = 3,
        second_pass: bool = False, cell_deta: Sequence[float] | None = None,
        condition_layers: Sequence[int] | None = None, after: QuantileCorrection | None = None,
        cell_neta: Sequence[int] | None = None, level: str = "cells", strip_layer: int | None = None,
        strip_n_eta: int | None = None, strip_variable: str = "prominence", strip_phase_bins: int = 1,
        strip_phase_from: str = "impact", strip_phase_population: str = "all", strip_eta_max: float | None = None,
        strip_eta_min: float | None = None,
    ) -> QuantileCorrection:  # fmt: skip
        """Fit the map of ``gen_showers`` (the generator's, GeV ``(N, V)`` at ``gen_energies`` GeV) onto
        ``ref_showers`` (detailed training showers at ``ref_energies``).

        Energy nodes: the distinct reference energies if at most ``max_energy_nodes`` (lhcml's discrete
        samples), else that many equal-count bins in ``ln E``. ``eta_bins > 1``: as many equal-count
        ``|η|`` bins of the reference (both ``*_eta`` needed); generated showers are binned with the
        reference's edges. ``condition``: ``None`` (plain, the default) or one of :data:`CONDITIONS` (a
        conditional correction, module docstring) with ``condition_bins`` >= 2 bins; ``second_pass``: fit the
        plain correction first and the conditional one on the plain-corrected generated showers (both stored,
        applied in that order). ``condition="eta_phase"`` needs both samples' ``*_eta`` and ``cell_deta``, each
        layer's η cell width; ``condition="shower_width"`` needs ``cell_deta`` and ``cell_neta``, each layer's number of
        η cells (its voxels η-major). ``condition_layers``: the indices of the layers whose maps are conditioned (default: every
        layer); the others keep the node's unconditional map in every bin (as a layer too thin to bin). Raises
        :class:`ConfigError` for bad arguments or too few showers per node. ``after``: a fitted correction (e.g. a
        two-pass one) to extend by one more pass: the conditional map is fitted on ``after``'s output and applied after
        it (``after`` is stored inside, as a second pass keeps its plain map). ``level="layers"``: a plain map of each
        shower's layer energies instead of its cells (:data:`LEVELS`; the total energy kept; no condition), alone or
        after ``after``. ``level="strips"``: the strip pass (:mod:`lhcml.models.fastcalo.strip_pass`) of layer
        ``strip_layer`` with ``strip_n_eta`` cells in η mapping the second maximum's ``strip_variable`` (``prominence``
        or ``height``), or (``recentre``, needs ``cell_deta`` and both samples' η) the strip profile's barycentre
        residual from the impact, or (``core``) the hottest strip's neighbours' share of the three strips, in
        ``strip_phase_bins`` bins of the impact's place in its strip (> 1 needs ``cell_deta`` and η) or
        (``strip_phase_from="cluster"``) of the cluster barycentre's place in the hottest strip, each bin's map
        fitted over every shower of the node or (``strip_phase_population="own"``) over the bin's own showers, alone
        or after ``after`` (no condition); or (``fside``) the outer share of the seven strips around the hottest,
        left alone at ``|η| >= strip_eta_max`` and ``|η| < strip_eta_min`` if given (``strip_layer`` may be any layer
        of at least 7 η cells: the middle layer's η outer share, h31c)."""
        if level not in LEVELS:
            raise ConfigError(f"the quantile correction's level must be one of {', '.join(LEVELS)}, got {level!r}")
        if level == "strips":
            if condition is not None or second_pass or strip_layer is None or strip_n_eta is None:
                raise ConfigError("the strip pass (level='strips') needs strip_layer and strip_n_eta, and takes no "
                                  "condition and no second_pass")  # fmt: skip
            from lhcml.models.fastcalo.strip_pass import fit_strip_pass

            return fit_strip_pass(gen_showers, gen_energies, ref_showers, ref_energies, layer_sizes,
                                  strip_layer=strip_layer, strip_n_eta=strip_n_eta, after=after, gen_eta=gen_eta,
                                  variable=strip_variable,
                                  cell_deta=None if cell_deta is None else list(cell_deta)[strip_layer],
                                  phase_bins=strip_phase_bins,
                                  phase_from=strip_phase_from, phase_population=strip_phase_population,
                                  eta_max=strip_eta_max, eta_min=strip_eta_min,
                                  ref_eta=ref_eta, n_quantiles=n_quantiles, eta_bins=eta_bins,
                                  max_energy_nodes=max_energy_nodes, min_count=min_count, meta=meta)  # fmt: skip
        if level == "layers":
            if condition is not None or second_pass:
                raise ConfigError("the layer-energy pass (level='layers') is a plain map: no condition, no second_pass")
            sl = _layer_slices([int(n) for n in layer_sizes])
            g = np.asarray(gen_showers) if after is None else after.apply(gen_showers, gen_energies, gen_eta)
            lay = [_layer_energies(x, sl) for x in (g, ref_showers)]
            inner = cls.fit(lay[0], gen_energies, lay[1], ref_energies, [len(sl)], gen_eta=gen_eta, ref_eta=ref_eta,
                            variable="share", n_quantiles=n_quantiles, eta_bins=eta_bins,
                            max_energy_nodes=max_energy_nodes, min_count=min_count, meta=meta)  # fmt: skip
            info = dict(inner.meta, level="layers")
            if after is not None:
                info["passes"] = len(after.chain()) + 1
            return cls("share", layer_sizes, inner.log_e_nodes, inner.eta_nodes, inner.levels, inner.p_gen,
                       inner.p_ref, inner.q_gen, inner.q_ref, info, base=after, level="layers")  # fmt: skip
        if variable not in VARIABLES:
            raise ConfigError(f"the quantile correction's variable must be one of {', '.join(VARIABLES)}, got {variable!r}")
        if condition is not None and condition not in CONDITIONS:
            raise ConfigError(f"the quantile correction's condition must be one of {', '.join(CONDITIONS)} (or None: plain), "
                              f"got {condition!r}")  # fmt: skip
        if condition == "eta_phase":
            cd = None if cell_deta is None else np.asarray(cell_deta, np.float64).reshape(-1)
            if gen_eta is None or ref_eta is None or cd is None or len(cd) != len(layer_sizes) or np.any(~(cd > 0)):
                raise ConfigError("the quantile correction conditioned on eta_phase needs both samples' |eta| and "
                                  f"one positive cell width in eta per layer ({len(layer_sizes)}), got "
                                  f"{None if cd is None else cd.tolist()}")  # fmt: skip
        if condition == "shower_width":
            cd = None if cell_deta is None else np.asarray(cell_deta, np.float64).reshape(-1)
            cn = None if cell_neta is None else np.asarray(cell_neta).reshape(-1)
            if (cd is None or cn is None or len(cd) != len(layer_sizes) or len(cn) != len(layer_sizes)
                    or np.any(~(cd > 0)) or any(int(n) < 1 or int(n) != n or int(size) % int(n)
                                                for n, size in zip(cn, layer_sizes, strict=True))):
                raise ConfigError("the quantile correction conditioned on shower_width needs one positive cell width "
                                  f"in eta and one number of eta cells (dividing the layer's voxels) per layer "
                                  f"({len(layer_sizes)}), got {None if cd is None else cd.tolist()} and "
                                  f"{None if cn is None else cn.tolist()}")  # fmt: skip
        if after is not None:
            if condition is None or second_pass:
                raise ConfigError("a further pass (after=) is one conditional map: give a condition, not second_pass")
            more = cls.fit(after.apply(gen_showers, gen_energies, gen_eta), gen_energies, ref_showers, ref_energies,
                           layer_sizes, gen_eta=gen_eta, ref_eta=ref_eta, variable=variable, n_quantiles=n_quantiles,
                           eta_bins=eta_bins, max_energy_nodes=max_energy_nodes, min_count=min_count, meta=meta,
                           condition=condition, condition_bins=condition_bins, cell_deta=cell_deta,
                           condition_layers=condition_layers, cell_neta=cell_neta)  # fmt: skip
            more.meta["passes"] = len(after.chain()) + 1
            return cls(more.variable, more.layer_sizes, more.log_e_nodes, more.eta_nodes, more.levels, more.p_gen,
                       more.p_ref, more.q_gen, more.q_ref, more.meta, condition=condition, cond_nodes=more.cond_nodes,
                       base=after, cell_deta=more.cell_deta, cell_neta=more.cell_neta)  # fmt: skip
        if second_pass:
            if condition is None:
                raise ConfigError("the quantile correction's second pass needs a condition (it is the conditional map)")
            kw = dict(gen_eta=gen_eta, ref_eta=ref_eta, variable=variable, n_quantiles=n_quantiles, eta_bins=eta_bins,
                      max_energy_nodes=max_energy_nodes, min_count=min_count)  # fmt: skip
            base = cls.fit(gen_showers, gen_energies, ref_showers, ref_energies, layer_sizes, meta=meta, **kw)
            second = cls.fit(base.apply(gen_showers, gen_energies, gen_eta), gen_energies, ref_showers, ref_energies,
                             layer_sizes, meta=meta, condition=condition, condition_bins=condition_bins,
                             cell_deta=cell_deta, condition_layers=condition_layers, cell_neta=cell_neta,
                             **kw)  # fmt: skip
            second.meta["second_pass"] = True
            return cls(second.variable, second.layer_sizes, second.log_e_nodes, second.eta_nodes, second.levels,
                       second.p_gen, second.p_ref, second.q_gen, second.q_ref, second.meta, condition=condition,
                       cond_nodes=second.cond_nodes, base=base, cell_deta=second.cell_deta,
                       cell_neta=second.cell_neta)  # fmt: skip
        if condition_layers is not None and (condition is None or not condition_layers or any(
                int(li) != li or not 0 <= int(li) < len(layer_sizes) for li in condition_layers)):
            raise ConfigError(f"the quantile correction's condition_layers must be layer indices in 0..{len(layer_sizes) - 1} "
                              f"of a conditional correction, got {list(condition_layers)}")  # fmt: skip
        if condition is not None and int(condition_bins) < 2:
            raise ConfigError(f"the conditional quantile correction needs condition_bins >= 2, got {condition_bins}")
        if int(eta_bins) < 1 or int(min_count) < 2 or int(max_energy_nodes) < 1:
            raise ConfigError(f"the quantile correction needs eta_bins >= 1, min_count >= 2 and max_energy_nodes >= 1, "
                              f"got {eta_bins}, {min_count}, {max_energy_nodes}")  # fmt: skip
        levels = quantile_levels(int(n_quantiles))
        sizes = [int(n) for n in layer_sizes]
        slices = _layer_slices(sizes)
        gs, rs = np.asarray(gen_showers), np.asarray(ref_showers)
        ge, re_ = np.asarray(gen_energies, np.float64).reshape(-1), np.asarray(ref_energies, np.float64).reshape(-1)
        v = sum(sizes)
        for name, s, e in (("generated", gs, ge), ("reference", rs, re_)):
            if s.ndim != 2 or s.shape[1] != v or len(e) != len(s) or len(s) == 0:
                raise ConfigError(f"the quantile correction's {name} showers must be (N, {v}) with N energies, "
                                  f"got {s.shape} and {e.shape}")  # fmt: skip
            if not (np.isfinite(s).all() and (s >= 0).all() and np.isfinite(e).all() and (e > 0).all()):
                raise ConfigError(f"the quantile correction's {name} showers need finite cells >= 0 and energies > 0")
        log_nodes, r_bin = _nodes(np.log(re_), max_energy_nodes, "incident energies")
        g_lo, g_w = _bracket(np.log(ge), log_nodes)
        g_bin = np.where(g_w > 0.5, g_lo + 1, g_lo) if len(log_nodes) > 1 else g_lo
        if int(eta_bins) > 1:
            if gen_eta is None or ref_eta is None:
                raise ConfigError("the quantile correction with eta_bins > 1 needs both samples' |eta|")
            ra, ga = np.abs(np.asarray(ref_eta, np.float64)), np.abs(np.asarray(gen_eta, np.float64))
            eta_nodes, r_h = _nodes(ra, int(eta_bins), "|eta|")
            if len(eta_nodes) < int(eta_bins):
                raise ConfigError(f"the reference has only {len(eta_nodes)} distinct |eta| values for {eta_bins} bins")
            h_lo, h_w = _bracket(ga, eta_nodes)
            g_h = np.where(h_w > 0.5, h_lo + 1, h_lo)
        else:
            eta_nodes, r_h, g_h = np.zeros(1), np.zeros(len(rs), np.int64), np.zeros(len(gs), np.int64)
        xg = _variable(gs, ge, slices, variable)
        xr = _variable(rs, re_, slices, variable)
        nh, nb, k = len(eta_nodes), len(log_nodes), len(levels)
        p_gen, p_ref = np.zeros((nh, nb, v)), np.zeros((nh, nb, v))
        q_gen, q_ref = np.zeros((nh, nb, v, k)), np.zeros((nh, nb, v, k))
        counts = np.zeros((nh, nb, 2), np.int64)
        n_identity = n_occupancy_only = 0
        ramp = 1e-6 * np.arange(k)  # keeps the quantiles strictly increasing (ties: repeated values)
        for h in range(nh):
            for b in range(nb):
                gi = xg[(g_h == h) & (g_bin == b)]
                ri = xr[(r_h == h) & (r_bin == b)]
                counts[h, b] = len(gi), len(ri)
                if len(gi) < min_count or len(ri) < min_count:
                    raise ConfigError(
                        f"the quantile correction has {len(gi)} generated and {len(ri)} reference showers at node "
                        f"E = {math.exp(log_nodes[b]):.4g} GeV, |eta| node {h}: needs >= {min_count} of each (generate "
                        "at the reference's conditions, or use fewer nodes)")
                for j in range(v):
                    p_gen[h, b, j], p_ref[h, b, j], q_gen[h, b, j], q_ref[h, b, j], kind = _fit_cell(
                        gi[:, j], ri[:, j], levels, ramp, min_count)
                    n_identity += kind == "identity"
                    n_occupancy_only += kind == "occupancy"
        info = {"format": FORMAT, "variable": variable, "n_generated": len(gs), "n_reference": len(rs),
                "min_count": int(min_count), "cells_identity": n_identity, "cells_occupancy_only": n_occupancy_only,
                "showers_per_node": counts.tolist()}  # fmt: skip
        if condition is None:
            info.update(meta or {})
            return cls(variable, sizes, log_nodes, eta_nodes, levels, p_gen, p_ref, q_gen, q_ref, info)
        # conditional: the same fit per bin of each layer's energy fraction, the node's map where statistics are thin
        nc, nl = int(condition_bins), len(sizes)
        tables = [np.repeat(t[:, :, None], nc, axis=2) for t in (p_gen, p_ref, q_gen, q_ref)]
        cond_nodes = np.zeros((nh, nb, nl, nc))
        cd = None if condition not in _GEOMETRY_CONDITIONS else np.asarray(cell_deta, np.float64).reshape(-1)
        cne = None if condition != "shower_width" else np.asarray(cell_neta, np.int64).reshape(-1)
        fg_all = _condition_values(gs, ge, slices, condition, gen_eta, cd, cne)
        fr_all = _condition_values(rs, re_, slices, condition, ref_eta, cd, cne)
        n_layers_pooled = n_cells_pooled = 0
        for h in range(nh):
            for b in range(nb):
                gm, rm = (g_h == h) & (g_bin == b), (r_h == h) & (r_bin == b)
                gi, ri, fg, fr = xg[gm], xr[rm], fg_all[gm], fr_all[rm]
                for li, sl in enumerate(slices):
                    # equal-count bins of each sample's own fraction (ranks: robust to a shifted layer energy)
                    rb, r_ok, _ = _rank_bins(fr[:, li], nc, min_count)
                    gb, g_ok, centres = _rank_bins(fg[:, li], nc, min_count)
                    if not (r_ok and g_ok) or (condition_layers is not None and li not in condition_layers):
                        cond_nodes[h, b, li] = np.arange(nc)  # placeholder: every bin keeps the node's map
                        n_layers_pooled += 1
                        continue
                    cond_nodes[h, b, li] = centres  # the generated bins' medians: where apply() finds a shower
                    for c in range(nc):
                        gc, rc = gi[gb == c], ri[rb == c]
                        for j in range(sl.start, sl.stop):
                            *entry, kind = _fit_cell(gc[:, j], rc[:, j], levels, ramp, min_count)
                            if kind != "full":
                                n_cells_pooled += 1
                                continue
                            for t, val in zip(tables, entry, strict=True):
                                t[h, b, c, j] = val
        info.update({"format": FORMAT_CONDITIONAL, "condition": condition, "condition_bins": nc,
                     "cond_layers_pooled": n_layers_pooled, "cond_cells_pooled": n_cells_pooled})  # fmt: skip
        if condition_layers is not None:
            info["condition_layers"] = sorted(int(li) for li in condition_layers)
        info.update(meta or {})
        return cls(variable, sizes, log_nodes, eta_nodes, levels, *tables, info, condition=condition,
                   cond_nodes=cond_nodes, cell_deta=cd, cell_neta=cne)  # fmt: skip

    def chain(self) -> list[QuantileCorrection]:
        """The maps this correction applies, in order: its earlier passes (``base``, recursively), then itself."""
        return ([] if self.base is None else self.base.chain()) + [self]

    # -- application --------------------------------------------------------------------------
    @property
    def n_voxels(self) -> int:
        return int(sum(self.layer_sizes))

    @property
    def n_table(self) -> int:
        """Columns of the tables: the voxels (``level="cells"``), the layers (``"layers"``) or one (``"strips"``; a
        core strip pass in phase bins: one per bin)."""
        strips = int(self.meta.get("strip_phase_bins", 1)) if self.meta else 1
        return {"layers": len(self.layer_sizes), "strips": strips}.get(self.level, self.n_voxels)

    @property
    def layer_slices(self) -> list[slice]:
        return _layer_slices(self.layer_sizes)

    @property
    def uses_eta(self) -> bool:
        return len(self.eta_nodes) > 1

    def _corners(self, log_e: np.ndarray, eta: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per shower the interpolation corners: ``[(flat node index (n,), weight (n,)), ...]`` (2, or 4 with |η|
        nodes); a shower on a node has all its weight on one corner (corners without weight are dropped)."""
        b0, wb = _bracket(log_e, self.log_e_nodes)
        nb, nh = len(self.log_e_nodes), len(self.eta_nodes)
        on = wb == 1.0  # exactly on the upper node: put it there (a discrete energy needs one table, not two)
        b0, wb = np.where(on, np.minimum(b0 + 1, nb - 1), b0), np.where(on, 0.0, wb)
        if self.uses_eta:
            h0, wh = _bracket(np.abs(eta), self.eta_nodes)
            on = wh == 1.0
            h0, wh = np.where(on, np.minimum(h0 + 1, nh - 1), h0), np.where(on, 0.0, wh)
            cand = [(h0, b0, (1 - wh) * (1 - wb)), (h0, b0 + 1, (1 - wh) * wb),
                    (h0 + 1, b0, wh * (1 - wb)), (h0 + 1, b0 + 1, wh * wb)]  # fmt: skip
        else:
            h0 = np.zeros_like(b0)
            cand = [(h0, b0, 1 - wb), (h0, b0 + 1, wb)]
        return [(np.minimum(h, nh - 1) * nb + np.minimum(b, nb - 1), w) for h, b, w in cand if np.any(w > 0)]

    def _cond_cells(self, corners: list[tuple[np.ndarray, np.ndarray]],
                    frac: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """A conditional correction's table rows and weights ``[(row (n, V), weight (n, V)), ...]``: per node corner
        the two conditioning bins that bracket each layer's energy fraction ``frac`` ``(n, L)`` (linear between the
        bins' medians, clamped outside)."""
        v, nc = self.n_voxels, self.cond_nodes.shape[-1]
        nodes = self.cond_nodes.reshape(-1, len(self.layer_sizes), nc)
        layer_of = np.repeat(np.arange(len(self.layer_sizes)), self.layer_sizes)
        vox = np.arange(v)[None, :]
        out = []
        for node, w in corners:
            cn = nodes[node]  # (n, L, C)
            xc = np.clip(frac, cn[..., 0], cn[..., -1])
            lo = (xc[..., None] >= cn[..., 1:-1]).sum(-1)  # (n, L) in [0, C - 2]
            c0 = np.take_along_axis(cn, lo[..., None], -1)[..., 0]
            c1 = np.take_along_axis(cn, lo[..., None] + 1, -1)[..., 0]
            wc = ((xc - c0) / (c1 - c0))[:, layer_of]
            row0 = (node[:, None] * nc + lo[:, layer_of]) * v + vox
            out += [(row0, w[:, None] * (1.0 - wc)), (row0 + v, w[:, None] * wc)]
        return out

    def _map(self, x: np.ndarray, log_e: np.ndarray, eta: np.ndarray | None,
             frac: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """The mapped variable ``(n, V)`` of one chunk (zeros stay zero).

        The tables of the shower's nodes are never built per shower: every interpolated quantile is a weighted
        sum of gathers from the node tables, and the generated level of a cell is found by a binary search over
        the K quantiles (``ceil(log2 K) + 1`` gathers per corner), so the cost is O(n V log K)."""
        v, k = self.n_table, len(self.levels)
        lev = self.levels
        corners = self._corners(log_e, eta)
        vox = np.arange(v)[None, :]
        if self.condition is None:
            cell = [(node[:, None] * v + vox, w[:, None]) for node, w in corners]  # (n, V) flat (node, voxel) index
        else:  # (n, V) flat (node, bin, voxel) index
            cell = self._cond_cells(corners, frac)
        qg_flat, qr_flat = self.q_gen.reshape(-1), self.q_ref.reshape(-1)

        def p_at(table: np.ndarray) -> np.ndarray:
            flat = table.reshape(-1)
            return sum(w * flat[c] for c, w in cell)

        def q_at(flat: np.ndarray, j: np.ndarray) -> np.ndarray:
            return sum(w * flat[c * k + j] for c, w in cell)

        pg, pr = p_at(self.p_gen), p_at(self.p_ref)
        pos = x > 0
        y = np.log(np.where(pos, x, 1.0))
        # forward: count i of the generated quantiles below y (binary search), then y -> level s, excess d beyond
        i = np.zeros(y.shape, np.int64)
        step = 1 << int(math.ceil(math.log2(k)))
        while step >= 1:
            cand = i + step
            ok = cand <= k
            below = q_at(qg_flat, np.minimum(cand, k) - 1) < y
            i = np.where(ok & below, cand, i)
            step >>= 1
        lo = np.clip(i - 1, 0, k - 2)
        q0, q1 = q_at(qg_flat, lo), q_at(qg_flat, lo + 1)
        f = np.clip((y - q0) / (q1 - q0), 0.0, 1.0)
        s = lev[lo] + f * (lev[lo + 1] - lev[lo])
        d = np.where(i == 0, y - q0, 0.0) + np.where(i == k, y - q1, 0.0)
        # full quantile with the zeros as a point mass at the bottom, then the reference's conditional level
        u = 1.0 - pg + pg * s
        zero = (u <= 1.0 - pr) | ~pos
        s2 = np.clip((u - 1.0 + pr) / np.where(pr > 0, pr, 1.0), lev[0], lev[-1])
        j = np.clip(np.searchsorted(lev, s2, side="right") - 1, 0, k - 2)
        g = (s2 - lev[j]) / (lev[j + 1] - lev[j])
        r0, r1 = q_at(qr_flat, j), q_at(qr_flat, j + 1)
        y2 = r0 + g * (r1 - r0) + d
        return np.where(zero, 0.0, np.exp(y2))

    def apply(self, showers: np.ndarray, energies: np.ndarray, eta: np.ndarray | None = None) -> np.ndarray:
        """The corrected showers ``(N, V)`` float32 GeV of generated ``showers`` at incident ``energies``
        GeV (and ``|η|`` ``eta`` for a correction fitted in η bins). With ``share`` or ``energy_layers`` every layer
        keeps its generated energy (a layer whose cells all map to zero keeps its generated cells)."""
        s = np.asarray(showers)
        e = np.asarray(energies, np.float64).reshape(-1)
        if s.ndim != 2 or s.shape[1] != self.n_voxels or len(e) != len(s):
            raise ConfigError(f"the quantile correction takes (N, {self.n_voxels}) showers with N energies, "
                              f"got {s.shape} and {e.shape}")  # fmt: skip
        if (self.uses_eta or self.condition == "eta_phase") and eta is None:
            raise ConfigError("this quantile correction was fitted in |eta| bins or on eta_phase: give each shower's eta")
        eta_a = None if eta is None else np.abs(np.asarray(eta, np.float64).reshape(-1))
        if self.base is not None:  # a second pass: the plain map first
            s = self.base.apply(s, e, eta)
        if self.level == "layers":
            return self._apply_layers(s, e, eta_a)
        if self.level == "strips":
            from lhcml.models.fastcalo.strip_pass import apply_strip_pass

            return apply_strip_pass(self, s, e, eta_a)
        out = np.empty(s.shape, np.float32)
        slices = self.layer_slices
        for a in range(0, len(s), CHUNK):
            sc, ec = s[a : a + CHUNK], e[a : a + CHUNK]
            x = _variable(sc, ec, slices, self.variable)
            frac = None if self.condition is None else _condition_values(
                sc, ec, slices, self.condition, None if eta_a is None else eta_a[a : a + CHUNK], self.cell_deta,
                self.cell_neta)
            m = self._map(x, np.log(ec), None if eta_a is None else eta_a[a : a + CHUNK], frac)
            if self.variable == "energy":
                out[a : a + CHUNK] = m * ec[:, None]
                continue
            sc64 = np.asarray(sc, np.float64)
            res = np.empty_like(m)
            for sl in slices:
                tot = sc64[:, sl].sum(axis=1, keepdims=True)
                msum = m[:, sl].sum(axis=1, keepdims=True)
                ok = msum > 0
                res[:, sl] = np.where(ok, m[:, sl] * tot / np.where(ok, msum, 1.0), sc64[:, sl])
            out[a : a + CHUNK] = res
        return out

    def _apply_layers(self, s: np.ndarray, e: np.ndarray, eta_a: np.ndarray | None) -> np.ndarray:
        """``level="layers"``: each shower's layer energies mapped (their total kept), every cell of a layer scaled by
        the layer's new energy over its old one (an empty layer stays empty)."""
        out = np.empty(s.shape, np.float32)
        slices = self.layer_slices
        for a in range(0, len(s), CHUNK):
            sc = np.asarray(s[a : a + CHUNK], np.float64)
            e_layer = _layer_energies(sc, slices)
            tot = e_layer.sum(axis=1, keepdims=True)
            m = self._map(_variable(e_layer, e[a : a + CHUNK], [slice(0, len(slices))], "share"),
                          np.log(e[a : a + CHUNK]), None if eta_a is None else eta_a[a : a + CHUNK])  # fmt: skip
            msum = m.sum(axis=1, keepdims=True)
            ok = msum > 0
            new = np.where(ok, m * tot / np.where(ok, msum, 1.0), e_layer)
            scale = np.divide(new, e_layer, out=np.ones_like(e_layer), where=e_layer > 0)
            for i, sl in enumerate(slices):
                out[a : a + CHUNK, sl] = sc[:, sl] * scale[:, i : i + 1]
        return out

    def torch_module(self) -> Any:
        """The same correction as a ``torch.nn.Module`` ``(showers (N, V), energy (N,), eta (N,) or None) ->
        showers``, float32, for the ONNX sampling graph (:func:`lhcml.export.fastcalo.export_generator`'s
        ``correction``): static gathers and fixed binary searches only. Agrees with :meth:`apply` to float32
        rounding (a cell at the edge of the occupancy cut may flip: ``tests/test_fastcalo_quantile_map.py``)."""
        from lhcml.models.fastcalo.quantile_map_torch import (
            torch_layer_pass,
            torch_quantile_correction,
            torch_second_pass,
        )

        if self.level == "strips":
            from lhcml.models.fastcalo.strip_pass_torch import torch_strip_pass

            this = torch_strip_pass(self)
        else:
            this = torch_layer_pass(self) if self.level == "layers" else torch_quantile_correction(self)
        return this if self.base is None else torch_second_pass(self.base.torch_module(), this)

    # -- files --------------------------------------------------------------------------------
    def check_model(self, model: Any, source: str = "the quantile correction") -> None:
        """Raise :class:`ConfigError` if ``model`` (a fast-calo generator) has other voxels or another
        sampler (steps, solver) than the one this correction was fitted on."""
        sizes = tuple(int(n) for n in getattr(model, "layer_sizes", ()))
        if sizes != self.layer_sizes:
            raise ConfigError(f"{source} is for layers of {list(self.layer_sizes)} voxels, the model has {list(sizes)}")
        for key in ("steps", "solver"):
            want, have = self.meta.get(key), getattr(model, key, None)
            if want is not None and have is not None and want != have:
                raise ConfigError(f"{source} was fitted on the model sampled with {key} = {want}, this one has "
                                  f"{have}: refit it for this sampler (lhcml fastcalo quantile-map)")  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the correction as ``.npz`` (plain arrays and one JSON string; written atomically)."""
        from lhcml.atomic import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta, arrays = self._file_arrays("")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
        return path

    def _file_arrays(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(header, arrays)`` of this pass with ``prefix`` before every array name, its earlier passes (``base``)
        under ``base_`` + prefix and their headers nested as ``header["base"]``: a plain correction's file and a
        two-pass one's stay exactly as before."""
        meta = dict(self.meta, format=FORMAT, variable=self.variable, layer_sizes=list(self.layer_sizes))
        if self.level != "cells":
            meta["level"] = self.level
        arrays = {f"{prefix}{n}": getattr(self, n) for n in _TABLES}
        if self.condition is not None:
            meta.update(format=FORMAT_CONDITIONAL, condition=self.condition)
            arrays[f"{prefix}cond_nodes"] = self.cond_nodes
            if self.cell_deta is not None:
                arrays[f"{prefix}cell_deta"] = self.cell_deta
            if self.cell_neta is not None:
                arrays[f"{prefix}cell_neta"] = self.cell_neta
        if self.base is not None:
            meta["base"], more = self.base._file_arrays("base_" + prefix)
            arrays.update(more)
        return meta, arrays

    @classmethod
    def load(cls, path: str | Path) -> QuantileCorrection:
        """Read a file written by :meth:`save` (``allow_pickle=False``), plain (``FORMAT``) or conditional
        (``FORMAT_CONDITIONAL``); one :class:`ConfigError` for a missing, unreadable or inconsistent file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"quantile correction {path} not found (write it with lhcml fastcalo quantile-map)")
        names = ("meta", *_TABLES)
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [n for n in names if n not in f.files]
                if missing:
                    raise ConfigError(f"quantile correction {path} lacks {', '.join(missing)}: not a file of "
                                      "lhcml fastcalo quantile-map")  # fmt: skip
                every = {n: f[n] for n in f.files}
            meta = json.loads(str(every.pop("meta")))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear error
            raise ConfigError(f"quantile correction {path} is not readable ({type(exc).__name__}: {exc})") from None
        return cls._from_arrays(meta, every, "", str(path))

    @classmethod
    def _from_arrays(cls, meta: Any, every: dict[str, np.ndarray], prefix: str, path: str) -> QuantileCorrection:
        """One pass (and, recursively, its earlier ones) from a file's header and arrays (:meth:`_file_arrays`)."""
        arrays = {n: every.get(f"{prefix}{n}") for n in _TABLES}
        cond_nodes, cell_deta = every.get(f"{prefix}cond_nodes"), every.get(f"{prefix}cell_deta")
        cell_neta = every.get(f"{prefix}cell_neta")
        if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, FORMAT_CONDITIONAL):
            raise ConfigError(f"quantile correction {path} has format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT!r} or {FORMAT_CONDITIONAL!r}")  # fmt: skip
        condition = None
        if meta["format"] == FORMAT_CONDITIONAL:
            condition = meta.get("condition")
            if condition not in CONDITIONS:
                raise ConfigError(f"quantile correction {path}: condition {condition!r} is not one of "
                                  f"{', '.join(CONDITIONS)}")  # fmt: skip
            if cond_nodes is None:
                raise ConfigError(f"quantile correction {path} is conditional but lacks cond_nodes")
        else:
            cond_nodes = None  # a plain file: its tables have no conditioning axis
        base = None
        level = meta.get("level", "cells")
        if (condition is not None or level in ("layers", "strips")) and meta.get("base") is not None:  # a pass on earlier ones
            bm, bp = meta["base"], "base_" + prefix
            if not isinstance(bm, dict) or bm.get("format") not in (FORMAT, FORMAT_CONDITIONAL) or any(
                    f"{bp}{n}" not in every for n in _TABLES):
                raise ConfigError(f"quantile correction {path} has a second pass without a complete plain first "
                                  f"pass (meta base, {bp}* arrays)")  # fmt: skip
            base = cls._from_arrays(bm, every, bp, f"{path} (first pass)" if not prefix else path)
        if any(a is None for a in arrays.values()):
            raise ConfigError(f"quantile correction {path} lacks {prefix}* tables")
        return cls(meta.get("variable"), meta.get("layer_sizes") or (), arrays["log_e_nodes"], arrays["eta_nodes"],
                   arrays["levels"], arrays["p_gen"], arrays["p_ref"], arrays["q_gen"], arrays["q_ref"], meta,
                   source=path, condition=condition, cond_nodes=cond_nodes, base=base,
                   cell_deta=cell_deta if condition in _GEOMETRY_CONDITIONS else None,
                   cell_neta=cell_neta if condition == "shower_width" else None, level=level)  # fmt: skip

    def _check(self, source: str) -> None:
        if self.variable not in VARIABLES:
            raise ConfigError(f"{source}: variable {self.variable!r} is not one of {', '.join(VARIABLES)}")
        if self.level not in LEVELS:
            raise ConfigError(f"{source}: level {self.level!r} is not one of {', '.join(LEVELS)}")
        if self.level == "layers" and (self.condition is not None or self.variable != "share"):
            raise ConfigError(f"{source}: a layer-energy pass is a plain map of variable share, got condition "
                              f"{self.condition!r} and variable {self.variable!r}")  # fmt: skip
        if self.level == "strips":
            if self.condition is not None or self.variable != "energy":
                raise ConfigError(f"{source}: a strip pass is a plain map of variable energy, got condition "
                                  f"{self.condition!r} and variable {self.variable!r}")  # fmt: skip
            from lhcml.models.fastcalo.strip_pass import strip_geometry

            try:
                strip_geometry(self.meta, self.layer_sizes)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        v = self.n_table
        nh, nb, k = len(self.eta_nodes), len(self.log_e_nodes), len(self.levels)
        if not self.layer_sizes or any(n <= 0 for n in self.layer_sizes) or nh < 1 or nb < 1 or k < 2:
            raise ConfigError(f"{source}: empty or non-positive layer sizes, nodes or quantile levels")
        cb: tuple[int, ...] = ()  # the conditioning axis
        if self.condition is not None:
            if self.condition not in CONDITIONS:
                raise ConfigError(f"{source}: condition {self.condition!r} is not one of {', '.join(CONDITIONS)}")
            cn = self.cond_nodes
            if cn is None or cn.ndim != 4 or cn.shape[:3] != (nh, nb, len(self.layer_sizes)) or cn.shape[3] < 2:
                raise ConfigError(f"{source}: cond_nodes has shape {None if cn is None else cn.shape}, expected "
                                  f"({nh}, {nb}, {len(self.layer_sizes)}, >= 2)")  # fmt: skip
            if not np.isfinite(cn).all() or np.any(np.diff(cn, axis=-1) <= 0):
                raise ConfigError(f"{source}: cond_nodes must be finite and strictly increasing along the bins")
            cb = (cn.shape[3],)
        elif self.cond_nodes is not None:
            raise ConfigError(f"{source}: cond_nodes given without a condition")
        cd = self.cell_deta
        if (self.condition in _GEOMETRY_CONDITIONS) != (cd is not None):
            raise ConfigError(f"{source}: cell_deta (each layer's eta cell width) belongs to an eta_phase or shower_width "
                              "condition and only to them")  # fmt: skip
        cn = self.cell_neta
        if (self.condition == "shower_width") != (cn is not None):
            raise ConfigError(f"{source}: cell_neta (each layer's number of eta cells) belongs to a shower_width "
                              "condition and only to it")  # fmt: skip
        if cn is not None and (cn.shape != (len(self.layer_sizes),) or np.any(cn < 1) or any(
                size % int(n) for n, size in zip(cn, self.layer_sizes, strict=True))):
            raise ConfigError(f"{source}: cell_neta {cn.tolist()} must give each of the {len(self.layer_sizes)} layers a "
                              "number of eta cells that divides its voxels")  # fmt: skip
        if cd is not None and (cd.shape != (len(self.layer_sizes),) or not np.all(cd > 0) or not np.isfinite(cd).all()):
            raise ConfigError(f"{source}: cell_deta has shape {cd.shape}, expected {len(self.layer_sizes)} positive widths")
        shapes = {"p_gen": (nh, nb, *cb, v), "p_ref": (nh, nb, *cb, v), "q_gen": (nh, nb, *cb, v, k),
                  "q_ref": (nh, nb, *cb, v, k)}  # fmt: skip
        for name, shape in shapes.items():
            a = getattr(self, name)
            if a.shape != shape:
                raise ConfigError(f"{source}: {name} has shape {a.shape}, expected {shape}")
            if not np.isfinite(a).all():
                raise ConfigError(f"{source}: {name} holds non-finite values")
        for name in ("log_e_nodes", "eta_nodes", "levels"):
            a = getattr(self, name)
            if a.ndim != 1 or not np.isfinite(a).all() or np.any(np.diff(a) <= 0):
                raise ConfigError(f"{source}: {name} must be finite and strictly increasing")
        if self.levels[0] <= 0 or self.levels[-1] >= 1:
            raise ConfigError(f"{source}: quantile levels must lie in (0, 1)")
        if np.any((self.p_gen < 0) | (self.p_gen > 1) | (self.p_ref < 0) | (self.p_ref > 1)):
            raise ConfigError(f"{source}: occupancies must lie in [0, 1]")
        if np.any(np.diff(self.q_gen, axis=-1) <= 0) or np.any(np.diff(self.q_ref, axis=-1) <= 0):
            raise ConfigError(f"{source}: the quantiles must increase strictly")


__all__ = ["CONDITIONS", "FORMAT", "FORMAT_CONDITIONAL", "LEVELS", "QuantileCorrection", "correction_path", "eta_offsets",
           "quantile_levels"]
