"""CaloFlow-like normalising flow for fast calorimeter showers (Krause & Shih, arXiv:2106.05285).

Two conditional flows, built with ``zuko`` (neural spline flows: masked autoregressive
transforms with monotonic rational-quadratic splines, Durkan et al. arXiv:1906.04032):

* **flow I** learns the layer energies given the incident energy, ``p_1(E_0..E_{L-1} | E_inc)``,
  on CaloFlow's unit-interval variables (``docs/references.md §15``)

  ``u_0 = sum_k E_k / (u0_max E_inc)``, ``u_{k+1} = E_k / sum_{j >= k} E_j`` (k = 0..L-2),

  each mapped to ``logit(alpha + (1 - 2 alpha) u)`` with CaloFlow's ``alpha = 1e-6`` and
  standardised. CaloFlow's ``u_0`` is ``E_dep / E_inc`` (Geant4 deposits stay below ``E_inc``);
  lhcml's showers are calibrated cell energies that fluctuate above ``E_inc``, so ``u_0`` is
  divided by ``u0_max`` (our choice, 1.5; training data above it are refused with a clear error).
* **flow II** learns the voxel energies normalised to their layer's energy,
  ``p_2(I | E_0..E_{L-1}, E_inc)``, conditioned on ``log10`` of the layer energies and on
  ``log E_inc``, after CaloFlow's dequantisation (uniform noise of up to ``dequant_kev`` = 1 keV
  added to every voxel) and the same logit transform. Generated voxels below a readout threshold
  (``threshold_kev``; CaloFlow: the dequantisation scale; lhcml's configs: 1 MeV, as the VAE's)
  are set to zero and each layer is renormalised to flow I's layer energy, as CaloFlow does, so
  the shower's energy is exactly that of flow I (up to layers left entirely below threshold).

Both flows are fully autoregressive in CaloFlow (MADE blocks). Here flow I is (``L`` = a few
layers: ``L`` sequential passes to sample), and flow II is autoregressive over ``voxel_passes``
blocks of voxels (zuko's ``passes``): ``2`` (default, our choice) is a coupling flow that samples
in two network passes per transform — the ``D``-pass inversion of a fully autoregressive flow
over hundreds of voxels is what CaloFlow replaced by its IAF student (CaloFlow II,
arXiv:2110.11377) for speed; ``voxel_passes: null`` gives the paper's fully autoregressive flow.

Sizes (``configs/fastcalo/flow.yaml``): CaloFlow used 6 MADE blocks of one hidden layer of 64
nodes for flow I and 8 blocks of 504 nodes for flow II, with RQS of 8 bins; here flow I has
``layer_transforms`` x 2 hidden layers of ``layer_hidden``, flow II ``voxel_transforms`` x 2 of
``voxel_hidden`` (smaller by default: training on one CPU thread), RQS of 8 bins.

``sample(energy, noise)`` with ``noise = [z_1 (L), z_2 (V)]`` the concatenated base samples of the
two flows is a deterministic function (exported to ONNX with the noise as an input).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError, SchemaError
from lhcml.models.fastcalo.base import FastCaloGenerator
from lhcml.models.registry import register_model

#: CaloFlow's logit offset (Krause & Shih, arXiv:2106.05285, docs/references.md §15)
ALPHA = 1e-6


def _logit(u: Tensor) -> Tensor:
    p = ALPHA + (1 - 2 * ALPHA) * u
    return torch.log(p) - torch.log1p(-p)


#: ``model.strip_first_ratio`` values (:class:`CaloFlowVariables`)
FIRST_RATIO_MODES = ("free", "exp", "softplus")
#: the smallest ``-ln(S_{c±1} / S_c)`` the ``exp`` / ``softplus`` first ratios encode (a tie reads as this)
FIRST_RATIO_FLOOR = 1e-3
#: the largest first-ratio variable decoded (``exp(30)``: a neighbour row ~e^-1e13 of the centre, i.e. empty)
FIRST_RATIO_Y_MAX = 30.0


def _middle_grid(middle_ratios: object, sizes: list[int], voxel_space: str) -> tuple[int, int] | None:
    """The checked ``middle_ratios`` grid ``(n_eta, n_phi)`` of the second layer, or ``None`` (off)."""
    if middle_ratios is None or middle_ratios is False:
        return None
    ok = (
        isinstance(middle_ratios, (list, tuple)) and len(middle_ratios) == 2
        and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in middle_ratios)
    )  # fmt: skip
    if not ok:
        raise ConfigError(
            f"middle_ratios must be null (off) or the middle layer's grid [n_eta, n_phi] (two positive integers, "
            f"lhcml's binning: [7, 11]), got {middle_ratios!r}"
        )
    n_eta, n_phi = int(middle_ratios[0]), int(middle_ratios[1])
    if len(sizes) < 2 or n_eta * n_phi != sizes[1] or n_eta * n_phi < 2:
        raise ConfigError(
            f"middle_ratios: [{n_eta}, {n_phi}] does not fit the second layer "
            f"({sizes[1] if len(sizes) > 1 else 'none'} voxels; need n_eta x n_phi = its voxels, at least 2)"
        )
    if voxel_space != "log":
        raise ConfigError("middle_ratios needs voxel_space: log (log-ratios of the middle layer's cell shares)")
    return n_eta, n_phi


#: ``occupancy_layers``: the energy (GeV) an empty cell's energy variable is filled with, times a log-normal
#: jitter: one spot of the detailed simulation (1 / 60 GeV: ``em_material.spots_per_gev`` of
#: ``calo_geometry.yaml``), the size of the halo's occupied cells, so that the variable is unimodal
OCCUPANCY_FILL_GEV = 1.0 / 60.0
#: the log-normal width of the fill: the spread of ``ln`` of one detailed spot's Gamma(5/3) weight,
#: ``sqrt(trigamma(5/3))`` = 0.90 (``resolution.em_stochastic`` 0.10 and 60 spots per GeV: k = 5/3)
OCCUPANCY_FILL_SIGMA = 0.90


def _occupancy_voxels(occupancy_layers: object, sizes: list[int], voxel_space: str) -> list[int] | None:
    """The voxel indices (in voxel order) of the checked ``occupancy_layers``, or ``None`` (off)."""
    if occupancy_layers is None:
        return None
    ok = (
        isinstance(occupancy_layers, (list, tuple)) and len(occupancy_layers) > 0
        and all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(sizes) for k in occupancy_layers)
        and len(set(occupancy_layers)) == len(occupancy_layers)
    )  # fmt: skip
    if not ok:
        raise ConfigError(
            f"occupancy_layers must be null (off) or a non-empty list of distinct layer indices 0-{len(sizes) - 1} "
            f"(voxel order; lhcml's middle layer: [1]), got {occupancy_layers!r}"
        )
    if voxel_space != "log":
        raise ConfigError("occupancy_layers needs voxel_space: log (an empty cell's log share is filled, its bit says empty)")
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return [v for k in sorted(occupancy_layers) for v in range(starts[k], starts[k] + sizes[k])]


def ring_parent(di: int, dj: int) -> tuple[int, int]:
    """The inner neighbour's offset of the cell at offset ``(di, dj) != (0, 0)`` from the centre: one
    Chebyshev ring closer, on the discrete ray to the centre (``round(d (r - 1) / r)``, halves away from 0)."""
    r = max(abs(di), abs(dj))

    def step(d: int) -> int:
        m = math.floor(abs(d) * (r - 1) / r + 0.5)
        return m if d >= 0 else -m

    return step(di), step(dj)


def ring_ratio_matrices(n_eta: int, n_phi: int) -> tuple[Tensor, Tensor]:
    """``(enc, dec)`` ``(n, n)`` with ``n = n_eta n_phi`` (η-major): ``y @ enc`` gives the centre cell's
    value and every other cell minus its inner neighbour (:func:`ring_parent`); ``z @ dec`` sums them
    back along the ray from the centre (``enc @ dec`` is the identity)."""
    ci, cj = (n_eta - 1) // 2, (n_phi - 1) // 2
    n = n_eta * n_phi
    enc = torch.zeros(n, n)
    dec = torch.zeros(n, n)
    for i in range(n_eta):
        for j in range(n_phi):
            k = i * n_phi + j
            enc[k, k] = 1.0
            di, dj = i - ci, j - cj
            if (di, dj) != (0, 0):
                pi, pj = ring_parent(di, dj)
                enc[(ci + pi) * n_phi + cj + pj, k] = -1.0
            dec[k, k] = 1.0  # the path centre -> cell: every cell on it adds its ratio
            while (di, dj) != (0, 0):
                di, dj = ring_parent(di, dj)
                dec[(ci + di) * n_phi + cj + dj, k] = 1.0
    return enc, dec


def _expit(x: Tensor) -> Tensor:
    return ((torch.sigmoid(x) - ALPHA) / (1 - 2 * ALPHA)).clamp(0.0, 1.0)


class CaloFlowVariables(nn.Module):
    """Showers (GeV) <-> CaloFlow's standardised logit variables (layer energies and voxel fractions).

    Parameters
    ----------
    layer_sizes
        Voxels per layer, in voxel order.
    u0_max
        Scale of ``u_0 = E_dep / (u0_max E_inc)`` (must bound the training data's ``E_dep / E_inc``).
    dequant_kev
        Upper edge of CaloFlow's uniform dequantisation noise per voxel (keV).
    threshold_kev
        Readout threshold of the generated showers (keV): smaller voxels are set to zero before
        each layer is renormalised to its generated energy; ``None``: ``dequant_kev`` (CaloFlow).
        A layer whose voxels all fall below it reads zero (its energy is lost, as in a detector).
    voxel_space
        ``"logit"`` (CaloFlow): ``logit(alpha + (1 - 2 alpha) E_v / E_layer)``, an empty voxel at
        ``logit(1e-6)``; ``"log"``: the log of the voxel's share of its layer, ``ln(E_v / E_layer)``,
        with **explicit zeros just below the readout threshold**: a voxel under ``threshold_kev``
        is encoded as ``ln(E_t / E_layer)`` with ``E_t = threshold x exp(-1 - U(0, 1))`` (one to
        two e-folds under the threshold, so decoding reads it as zero), and ``E_layer`` is floored
        at the threshold (empty layers stay finite). CaloFlow's empty voxels at ``logit(1e-6)``
        make the per-voxel distribution bimodal: for lhcml's strips 2-6 cells from the core,
        occupied in 55-90 % of the showers, the standardisation width is then 3-4 e-folds, so a
        generator error of 0.3 standardised units is a factor 2-3 in energy; in ``"log"`` space
        the width is that of the occupied energies (docs/benchmarks/fastcalo.md, "Ninth version").
    energy_standardisation
        ``False`` (CaloFlow): one mean and width per voxel variable over the whole sample;
        ``True``: mean and variance of every voxel variable as quadratics in
        ``l = (ln E_inc - m) / s`` (least squares on the training sample; the variance floored at
        ``(0.25 x`` the global width``)^2``, so rare outliers stay within ~15 units), so that at
        every incident energy the variables the generator sees have about unit width: a 100 GeV photon's smooth strip tails fluctuate by far
        less than the spread of the same voxel over 1-260 GeV, and a generator error of a fixed
        size in the globally standardised variables is then a large error in the tails at high
        energy. :meth:`decode_voxels` then needs the incident energies.
    eta_standardisation
        With ``energy_standardisation``: the mean and variance also depend on the incident
        ``|η|`` — quadratics in ``(l, h)`` with ``h = (|η| - m_η) / s_η``, the basis
        ``(1, l, l^2, h, h^2, l h)`` — for models trained over an η range: at ``|η|`` > 1 the
        strips hold three times the energy they hold at η = 0 and their tails fluctuate several
        times less than the global width, so a generator error of fixed standardised size made
        their second maximum 20-40 times the detailed one (docs/benchmarks/fastcalo.md,
        "Fifteenth version"). :meth:`encode`, :meth:`decode_voxels` and :meth:`fit` then need
        the incident ``|η|`` too.
    first_layer_whitening
        After the per-voxel standardisation, rotate the first layer's voxel variables (lhcml's
        strips) onto the principal axes of their covariance on the training sample, each axis
        scaled to unit variance (PCA whitening; eigenvalues floored at 1e-6 of the largest): the
        detailed strips fluctuate *together* (a shower a little wider lifts all its side strips),
        a generator that gets each voxel's spread right but not the correlations puts
        independent spikes into the side strips — the second strip maximum. Whitened, a generator
        error of fixed size along a direction in which the strips barely fluctuate is that
        small in the strips. Exactly invertible.
    strip_ratios, strip_grid
        ``strip_ratios``: the first layer's (the strips', an ``strip_grid = (n_eta, n_phi)`` grid,
        η-major, its maximum at the centre row ``(n_eta - 1) // 2``, as the flow-matching model's
        strip alignment puts it) log shares re-expressed before the standardisation as the
        centre row's log share ``ln S_c`` (``S_i``: row ``i``'s φ-summed share), then the
        successive log-ratios ``ln(S_i / S_{i-1})`` going outwards to the right of the centre
        and ``ln(S_i / S_{i+1})`` to the left, and, inside every row, the log-ratios of the
        other φ cells to the centre φ cell (``voxel_space: log`` only). A side strip is then as
        large as its inner neighbour times a generated ratio: independent generator errors give
        a profile that wanders smoothly outwards instead of independent spikes (the second strip
        maximum, docs/benchmarks/fastcalo.md "Sixteenth version"). Exactly invertible
        (:meth:`strip_ratio_encode` / :meth:`strip_ratio_decode`; the row sums and differences
        are constant matrices, the φ shares a log-sum-exp).
    strip_first_ratio
        With ``strip_ratios``: how the two first outward row log-ratios (the rows next to the
        centre one, ``r = ln(S_{c±1} / S_c)``) are generated. ``"free"`` (default): as they are, so
        a generated ``r > 0`` moves the maximum off the centre row (3-6 % of the sides of a
        trained model, docs/benchmarks/fastcalo.md "Sixteenth version"); ``"exp"``: the variable is
        ``y = ln(-r)``, decoded as ``r = -exp(y)``; ``"softplus"``: ``y = ln(exp(-r) - 1)``, decoded
        as ``r = -softplus(y)``. Either way the centre row is strictly above both neighbours by
        construction (a local maximum; rows further out can still exceed it). Encoding floors
        ``-r`` at :data:`FIRST_RATIO_FLOOR` (an aligned detailed shower has ``r <= 0``; a tie or a
        maximum outside the alignment window is the only loss), so the inverse is exact for
        ``r <= -FIRST_RATIO_FLOOR``; decoding caps ``y`` at :data:`FIRST_RATIO_Y_MAX` (finite).

    middle_ratios
        ``None`` (default): off. ``(n_eta, n_phi)``: the second layer's (lhcml's middle layer's) grid,
        η-major; its log shares are re-expressed before the standardisation as the centre cell's
        log share (the cell ``((n_eta - 1) // 2, (n_phi - 1) // 2)``, the impact cell of lhcml's
        windows) and, for every other cell, the log-ratio ``ln(E_cell / E_parent)`` to its *inner
        neighbour*: the cell one ring closer to the centre (rings of the Chebyshev distance) on the
        discrete ray to the centre (``parent = centre + round(d (r - 1) / r)`` for the offset ``d``
        of ring ``r``, halves rounded away from zero). The halo is then built ring by ring outwards,
        each cell its inner neighbour times a generated ratio — the strips' ratio idea
        (``strip_ratios``) for the middle layer, whose halo cells sorted by energy separate generated
        from detailed showers at AUC 0.95 (docs/benchmarks/fastcalo.md "Nineteenth version" §1).
        ``voxel_space: log`` only. Exactly invertible (:meth:`middle_ratio_encode` /
        :meth:`middle_ratio_decode`: constant matrices, a difference and a sum along the rays).

    occupancy_layers
        ``None`` (default): off. A list of layer indices (voxel order; lhcml's middle layer: ``[1]``): every
        cell of those layers gets an **occupancy variable** beside its energy variable, generated jointly:
        ``o = 2 (b + U(0, 1)) - 2`` with ``b = 1`` for a cell at or above the readout threshold (occupied,
        ``o`` in ``[0, 2)``) and ``b = 0`` below it (empty, ``o`` in ``[-2, 0)``); decoding keeps a cell
        only where ``o >= 0`` (and it is above the threshold). An empty cell's energy variable is then
        free and is filled with the log share of :data:`OCCUPANCY_FILL_GEV` times a log-normal jitter
        (:data:`OCCUPANCY_FILL_SIGMA`) — the size of an occupied halo cell — instead of a value one to
        two e-folds under the threshold, so each cell's energy variable is unimodal: the "empty" mode
        no longer sits 3-4 e-folds below the occupied cells for the generator to blur into cells of
        1-20 MeV (docs/benchmarks/fastcalo.md, "Twenty-first version"). Exactly invertible on the
        cells at or above the threshold; the bits are :meth:`occupancy_encode` (``n_occupancy``
        columns appended to the state by the flow-matching model).

    occupancy_dequant_width
        ``occupancy_layers`` only: the width ``w`` (``0 < w <= 2``) of the bits' dequantisation,
        ``o = 2 b - 1 + w (U(0, 1) - 1/2)``: an occupied cell's ``o`` in ``[1 - w/2, 1 + w/2)``, an empty
        one's in ``[-1 - w/2, -1 + w/2)``, symmetric about the decoding threshold 0 for every ``w``.
        ``2.0`` (default): the gap between the bits, exactly the original ``2 (b + U) - 2`` (the same
        numbers). A narrow width (e.g. ``0.25``) keeps the two modes apart, so that a transport close to
        linear in each bit's own noise reproduces the data's occupancy fractions instead of pulling
        them towards 1/2 (docs/benchmarks/fastcalo.md, "Twenty-first version" §4).

    The standardisation (means and widths of the logit variables) is fitted on training showers
    with :meth:`fit` and kept in buffers, so it travels with the weights and into ONNX.
    """

    def __init__(
        self, layer_sizes: Sequence[int], u0_max: float = 1.5, dequant_kev: float = 1.0,
        threshold_kev: float | None = None, voxel_space: str = "logit",
        energy_standardisation: bool = False, eta_standardisation: bool = False,
        first_layer_whitening: bool = False, strip_ratios: bool = False,
        strip_grid: Sequence[int] | None = None, strip_first_ratio: str = "free",
        middle_ratios: Sequence[int] | None = None, occupancy_layers: Sequence[int] | None = None,
        occupancy_dequant_width: float = 2.0,
    ) -> None:
        super().__init__()
        if voxel_space not in ("logit", "log"):
            raise ConfigError(f"unknown voxel_space '{voxel_space}' (valid: logit, log)")
        self.voxel_space = voxel_space
        sizes = [int(s) for s in layer_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"layer_sizes must be positive voxel counts, got {list(layer_sizes)}")
        if not isinstance(strip_ratios, bool):
            raise ConfigError(f"strip_ratios must be true or false, got {strip_ratios!r}")
        self.strip_ratios = strip_ratios
        if strip_ratios:
            if voxel_space != "log":
                raise ConfigError("strip_ratios needs voxel_space: log (log-ratios of the strips' layer shares)")
            grid = [int(g) for g in strip_grid] if strip_grid is not None else []
            if len(grid) != 2 or min(grid) < 1 or grid[0] < 3 or grid[0] * grid[1] != sizes[0]:
                raise ConfigError(
                    f"strip_ratios needs the first layer's grid (n_eta >= 3, n_phi) with n_eta x n_phi = "
                    f"{sizes[0]} voxels, got {strip_grid}"
                )
            self.strip_grid = (grid[0], grid[1])
            n_eta, c = grid[0], (grid[0] - 1) // 2
            enc = torch.zeros(n_eta, n_eta)  # row log shares L -> R = L @ enc (centre, then outward log-ratios)
            dec = torch.zeros(n_eta, n_eta)  # R -> L = R @ dec (cumulative sums outwards from the centre)
            for i in range(n_eta):
                enc[i, i] = 1.0
                if i > c:
                    enc[i - 1, i] = -1.0
                elif i < c:
                    enc[i + 1, i] = -1.0
                lo, hi = min(i, c), max(i, c)
                dec[lo : hi + 1, i] = 1.0
            self.register_buffer("ratio_enc", enc)
            self.register_buffer("ratio_dec", dec)
        if strip_first_ratio not in FIRST_RATIO_MODES:
            raise ConfigError(
                f"strip_first_ratio must be one of {', '.join(FIRST_RATIO_MODES)}, got {strip_first_ratio!r}"
            )
        if strip_first_ratio != "free" and not strip_ratios:
            raise ConfigError(
                f"strip_first_ratio: {strip_first_ratio} needs strip_ratios: true (it shapes the strips' first "
                "outward row log-ratios)"
            )
        self.strip_first_ratio = strip_first_ratio
        if strip_first_ratio != "free":
            n_eta, c = self.strip_grid[0], (self.strip_grid[0] - 1) // 2
            first = torch.zeros(n_eta, dtype=torch.bool)
            first[c - 1] = first[c + 1] = True
            # present only off "free" (older checkpoints load unchanged); init_from compares it
            self.register_buffer("first_ratio_rows", first)
        self.middle_grid = _middle_grid(middle_ratios, sizes, voxel_space)
        self.middle_ratios = self.middle_grid is not None
        if self.middle_grid is not None:
            enc, dec = ring_ratio_matrices(*self.middle_grid)
            self.register_buffer("middle_enc", enc)  # log shares Y -> ratios Z = Y @ middle_enc
            self.register_buffer("middle_dec", dec)  # Z -> Y = Z @ middle_dec (sums along the rays)
            self.middle_start = sizes[0]
        occ = _occupancy_voxels(occupancy_layers, sizes, voxel_space)
        #: cells with an occupancy variable (``occupancy_layers``); 0: off
        self.n_occupancy = 0 if occ is None else len(occ)
        if occ is not None:
            sel = torch.zeros(len(occ), sum(sizes))
            sel[torch.arange(len(occ)), torch.tensor(occ)] = 1.0
            self.register_buffer("occ_select", sel)  # (n_occupancy, V): occupancy column -> its voxel
        w = occupancy_dequant_width
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (0.0 < float(w) <= 2.0):
            raise ConfigError(
                f"occupancy_dequant_width must be a number with 0 < w <= 2 (2: the original dequantisation), got {w!r}"
            )
        if occ is None and float(w) != 2.0:
            raise ConfigError("occupancy_dequant_width needs occupancy_layers (it is the width of their bits' noise)")
        #: ``occupancy_layers``: the width of the bits' dequantisation (class docstring)
        self.occupancy_dequant_width = float(w)
        if u0_max <= 0 or dequant_kev < 0:
            raise ValueError(
                f"u0_max must be > 0 and dequant_kev >= 0, got {u0_max}, {dequant_kev}"
            )
        self.n_layers = len(sizes)
        self.n_voxels = sum(sizes)
        self.u0_max = float(u0_max)
        self.dequant_gev = float(dequant_kev) * 1e-6
        self.threshold_gev = (float(dequant_kev) if threshold_kev is None else float(threshold_kev)) * 1e-6
        assign = torch.zeros(self.n_voxels, self.n_layers)
        start = 0
        for k, s in enumerate(sizes):
            assign[start : start + s, k] = 1.0
            start += s
        self.register_buffer("assign", assign)  # (V, L) one-hot voxel -> layer
        # remainder matrix: R[j, k] = 1 if j >= k (sum over the layers from k on)
        self.register_buffer(
            "tail", torch.triu(torch.ones(self.n_layers, self.n_layers)).T.contiguous()
        )
        self.register_buffer("u_mean", torch.zeros(self.n_layers))
        self.register_buffer("u_std", torch.ones(self.n_layers))
        self.register_buffer("v_mean", torch.zeros(self.n_voxels))
        self.register_buffer("v_std", torch.ones(self.n_voxels))
        self.energy_standardisation = bool(energy_standardisation)
        self.eta_standardisation = bool(eta_standardisation)
        if self.eta_standardisation and not self.energy_standardisation:
            raise ConfigError("eta_standardisation needs energy_standardisation: true (a basis in ln E_inc and |eta|)")
        if self.energy_standardisation:
            # (K, V) coefficients of the mean and of the variance in the basis (K = 3: 1, l, l^2; K = 6
            # with eta_standardisation: and h, h^2, l h); (m, s) of ln E (and of |eta|)
            k = 6 if self.eta_standardisation else 3
            self.register_buffer("v_mean_coef", torch.zeros(k, self.n_voxels))
            self.register_buffer("v_var_coef", torch.zeros(k, self.n_voxels))
            self.register_buffer("log_e_ref", torch.tensor([0.0, 1.0]))
            if self.eta_standardisation:
                self.register_buffer("eta_ref", torch.tensor([0.0, 1.0]))
        self.first_layer_whitening = bool(first_layer_whitening)
        self.n_first = sizes[0]
        if self.first_layer_whitening:
            # z = x_first @ white_enc, x_first = z @ white_dec (fitted in fit())
            self.register_buffer("white_enc", torch.eye(sizes[0]))
            self.register_buffer("white_dec", torch.eye(sizes[0]))

    # ---- layer energies <-> u ----
    def layer_energies(self, showers: Tensor) -> Tensor:
        """``(N, L)`` energy of each layer."""
        return showers @ self.assign

    def u_from_layers(self, e_layers: Tensor, energy: Tensor) -> Tensor:
        """CaloFlow's unit-interval variables ``(N, L)`` of the layer energies."""
        rem = e_layers @ self.tail  # (N, L): sum_{j >= k} E_j
        u0 = rem[:, :1] / (self.u0_max * energy[:, None])
        uk = e_layers[:, :-1] / rem[:, :-1].clamp(min=1e-30)
        return torch.cat([u0, uk], dim=1).clamp(0.0, 1.0)

    def layers_from_u(self, u: Tensor, energy: Tensor) -> Tensor:
        """Inverse of :meth:`u_from_layers`: ``(N, L)`` layer energies, >= 0, summing to ``E_dep``."""
        rem = u[:, 0] * self.u0_max * energy
        out = []
        for k in range(self.n_layers - 1):
            e_k = u[:, k + 1] * rem
            out.append(e_k)
            rem = rem - e_k
        out.append(rem)
        return torch.stack(out, dim=1).clamp(min=0.0)

    # ---- encode / decode ----
    def dequantise(self, showers: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Add CaloFlow's uniform noise ``U[0, dequant)`` to every voxel (negative cells clipped to 0)."""
        noise = torch.rand(
            showers.shape, generator=generator, device=showers.device, dtype=showers.dtype
        )
        return showers.clamp(min=0.0) + self.dequant_gev * noise

    def raw_variables(
        self, energy: Tensor, showers: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(logit u (N, L), voxel variables (N, V), layer energies (N, L))``, not standardised;
        the voxel variables are logits or logs of the layer shares (``voxel_space``)."""
        e_layers = self.layer_energies(showers)
        u = self.u_from_layers(e_layers, energy)
        if self.voxel_space == "logit":
            frac = showers / (e_layers @ self.assign.T).clamp(min=1e-30)
            return _logit(u), _logit(frac.clamp(0.0, 1.0)), e_layers
        thr = self.threshold_gev
        jitter = torch.rand(showers.shape, generator=generator, device=showers.device, dtype=showers.dtype)
        e_vox = torch.where(showers >= thr, showers, thr * torch.exp(-1.0 - jitter))
        if self.n_occupancy:  # empty cells of the occupancy layers: the fill (class docstring)
            z = torch.randn(showers.shape, generator=generator, device=showers.device, dtype=showers.dtype)
            fill = OCCUPANCY_FILL_GEV * torch.exp(OCCUPANCY_FILL_SIGMA * z)
            in_occ = self.occ_select.sum(0).to(torch.bool)
            e_vox = torch.where((showers < thr) & in_occ, fill, e_vox)
        lv = torch.log(e_vox) - torch.log((e_layers @ self.assign.T).clamp(min=thr))
        if self.strip_ratios:
            n0 = self.n_first
            lv = torch.cat([self.strip_ratio_encode(lv[:, :n0]), lv[:, n0:]], dim=1)
        if self.middle_ratios:
            a, b = self.middle_start, self.middle_start + self.middle_enc.shape[0]
            lv = torch.cat([lv[:, :a], self.middle_ratio_encode(lv[:, a:b]), lv[:, b:]], dim=1)
        return _logit(u), lv, e_layers

    def occupancy_encode(self, showers: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``occupancy_layers``: the dequantised occupancy bits ``(N, n_occupancy)`` of (dequantised)
        showers: ``2 b - 1 + w (U(0, 1) - 1/2)``, ``b = 1`` at or above the readout threshold, ``w`` =
        ``occupancy_dequant_width`` (class docstring; ``w = 2``: computed as ``2 (b + U) - 2``, as before)."""
        b = ((showers @ self.occ_select.T) >= self.threshold_gev).to(showers.dtype)
        u = torch.rand(b.shape, generator=generator, device=showers.device, dtype=showers.dtype)
        w = self.occupancy_dequant_width
        if w == 2.0:
            return 2.0 * (b + u) - 2.0
        return 2.0 * b - 1.0 + w * (u - 0.5)

    def occupancy_off(self, occupancy: Tensor) -> Tensor:
        """``(N, V)``: 1 for the cells an occupancy variable ``(N, n_occupancy)`` reads as empty (``< 0``: the
        midpoint between the two bits' intervals for every ``occupancy_dequant_width``)."""
        return (occupancy < 0).to(occupancy.dtype) @ self.occ_select

    def middle_ratio_encode(self, y: Tensor) -> Tensor:
        """``middle_ratios``: the second layer's log shares ``y`` ``(N, n_eta n_phi)`` (η-major) -> the
        centre cell's log share and every other cell's log-ratio to its inner neighbour."""
        return y @ self.middle_enc

    def middle_ratio_decode(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`middle_ratio_encode`: the second layer's log shares."""
        return z @ self.middle_dec

    def strip_ratio_encode(self, y: Tensor) -> Tensor:
        """``strip_ratios``: the first layer's log shares ``y`` ``(N, n_eta n_phi)`` (η-major) ->
        per row the outward row log-ratio (the centre row: its log share) at the centre φ
        position and the other φ cells' log-ratios to the centre φ cell beside it."""
        n_eta, n_phi = self.strip_grid
        jc = n_phi // 2
        g = y.reshape(-1, n_eta, n_phi)
        rows = torch.logsumexp(g, dim=2) @ self.ratio_enc  # (N, n_eta)
        if self.strip_first_ratio != "free":
            m = (-rows).clamp(min=FIRST_RATIO_FLOOR)  # -r, floored (r > 0 only off the alignment)
            first = torch.log(m) if self.strip_first_ratio == "exp" else m + torch.log(-torch.expm1(-m))
            rows = torch.where(self.first_ratio_rows, first, rows)
        side = g - g[:, :, jc : jc + 1]
        return torch.cat([side[:, :, :jc], rows[:, :, None], side[:, :, jc + 1 :]], dim=2).reshape(y.shape)

    def strip_ratio_decode(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`strip_ratio_encode`: the first layer's log shares."""
        n_eta, n_phi = self.strip_grid
        jc = n_phi // 2
        g = z.reshape(-1, n_eta, n_phi)
        r = g[:, :, jc]
        if self.strip_first_ratio != "free":
            y = r.clamp(max=FIRST_RATIO_Y_MAX)
            neg = -torch.exp(y) if self.strip_first_ratio == "exp" else -torch.nn.functional.softplus(y)
            r = torch.where(self.first_ratio_rows, neg, r)
        rows = r @ self.ratio_dec  # (N, n_eta) row log shares
        a = torch.cat([g[:, :, :jc], torch.zeros_like(g[:, :, :1]), g[:, :, jc + 1 :]], dim=2)
        return (rows[:, :, None] + a - torch.logsumexp(a, dim=2, keepdim=True)).reshape(z.shape)

    def encode(
        self, energy: Tensor, showers: Tensor, generator: torch.Generator | None = None,
        eta: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Standardised ``(x_u, x_v, layer energies)`` of (already dequantised) showers
        (``eta``: the incident ``|η|``, with ``eta_standardisation`` only)."""
        lu, lv, e_layers = self.raw_variables(energy, showers, generator)
        v_mean, v_std = self.voxel_scales(energy, eta)
        return (lu - self.u_mean) / self.u_std, self.whiten((lv - v_mean) / v_std), e_layers

    def whiten(self, x_v: Tensor) -> Tensor:
        """With ``first_layer_whitening``: the first layer's standardised voxel variables onto their
        whitened principal axes (else ``x_v`` unchanged)."""
        if not self.first_layer_whitening:
            return x_v
        n0 = self.n_first
        return torch.cat([x_v[:, :n0] @ self.white_enc, x_v[:, n0:]], dim=1)

    def unwhiten(self, z_v: Tensor) -> Tensor:
        """Inverse of :meth:`whiten`."""
        if not self.first_layer_whitening:
            return z_v
        n0 = self.n_first
        return torch.cat([z_v[:, :n0] @ self.white_dec, z_v[:, n0:]], dim=1)

    def _energy_basis(self, energy: Tensor, eta: Tensor | None = None) -> Tensor:
        ell = (torch.log(energy.reshape(-1, 1)) - self.log_e_ref[0]) / self.log_e_ref[1]
        cols = [torch.ones_like(ell), ell, ell * ell]
        if self.eta_standardisation:
            if eta is None:
                raise ValueError("eta_standardisation: the voxel scales need the incident |eta|")
            h = (eta.reshape(-1, 1).to(ell.dtype).abs() - self.eta_ref[0].to(ell.dtype)) / self.eta_ref[1].to(ell.dtype)
            cols += [h, h * h, ell * h]
        return torch.cat(cols, dim=1)

    def voxel_scales(self, energy: Tensor | None, eta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and width of the voxel variables: ``(V,)`` each, or ``(N, V)`` at the incident
        energies ``(N,)`` GeV (and ``|η|`` ``(N,)`` with ``eta_standardisation``) with
        ``energy_standardisation``."""
        if not self.energy_standardisation:
            return self.v_mean, self.v_std
        if energy is None:
            raise ValueError("energy_standardisation: the voxel scales need the incident energies")
        basis = self._energy_basis(energy, eta)
        var = (basis @ self.v_var_coef).clamp(min=0.0)
        return basis @ self.v_mean_coef, torch.sqrt(torch.maximum(var, (0.25 * self.v_std) ** 2))

    def decode_layers(self, x_u: Tensor, energy: Tensor) -> Tensor:
        """Layer energies ``(N, L)`` from standardised ``x_u``."""
        return self.layers_from_u(_expit(x_u * self.u_std + self.u_mean), energy)

    def decode_voxels(
        self, x_v: Tensor, e_layers: Tensor, energy: Tensor | None = None, eta: Tensor | None = None,
        occupancy: Tensor | None = None,
    ) -> Tensor:
        """Voxel energies (GeV) from standardised ``x_v``: voxels below the threshold set to zero,
        each layer renormalised to ``e_layers`` (CaloFlow's post-processing); ``energy`` (the
        incident energies) only with ``energy_standardisation``, ``eta`` (``|η|``) only with
        ``eta_standardisation``."""
        v_mean, v_std = self.voxel_scales(energy, eta)
        raw = self.unwhiten(x_v) * v_std + v_mean
        if self.strip_ratios:
            raw = torch.cat([self.strip_ratio_decode(raw[:, : self.n_first]), raw[:, self.n_first :]], dim=1)
        if self.middle_ratios:
            a, b = self.middle_start, self.middle_start + self.middle_dec.shape[0]
            raw = torch.cat([raw[:, :a], self.middle_ratio_decode(raw[:, a:b]), raw[:, b:]], dim=1)
        frac = _expit(raw) if self.voxel_space == "logit" else torch.exp(raw.clamp(max=0.0))
        e_vox = frac * (e_layers @ self.assign.T)
        frac = torch.where(e_vox < self.threshold_gev, torch.zeros_like(frac), frac)
        if self.n_occupancy:
            if occupancy is None:
                raise ValueError("occupancy_layers: decoding the voxels needs the occupancy variables")
            frac = frac * (1.0 - self.occupancy_off(occupancy))
        norm = (frac @ self.assign) @ self.assign.T
        return torch.where(norm > 0, frac / norm.clamp(min=1e-30), torch.zeros_like(frac)) * (
            e_layers @ self.assign.T
        )

    def layer_context(self, e_layers: Tensor) -> Tensor:
        """Flow II's layer-energy conditioning: ``(log10(E_k / GeV + 1e-3) + 1) / 3`` (our scaling,
        about [-0.7, 1.1] for 0-300 GeV; the 1 MeV offset keeps empty layers finite)."""
        return (torch.log10(e_layers + 1e-3) + 1.0) / 3.0

    @torch.no_grad()
    def fit(
        self, energy: Tensor, showers: Tensor, generator: torch.Generator | None = None,
        eta: Tensor | None = None,
    ) -> None:
        """Fit the standardisation on training showers (``energy`` (N,) GeV, ``showers`` (N, V) GeV;
        ``eta`` (N,) their ``|η|``, needed with ``eta_standardisation``).

        Raises
        ------
        SchemaError
            If the showers do not have ``n_voxels`` columns, or deposit more than ``u0_max`` times
            the incident energy (raise ``u0_max``).
        """
        if (
            showers.ndim != 2
            or showers.shape[1] != self.n_voxels
            or energy.shape != showers.shape[:1]
        ):
            raise SchemaError(
                f"expected energies (N,) and showers (N, {self.n_voxels}), got {tuple(energy.shape)} "
                f"and {tuple(showers.shape)}"
            )
        ratio = (showers.clamp(min=0).sum(1) / energy).max().item()
        if ratio > self.u0_max:
            raise SchemaError(
                f"a training shower deposits {ratio:.3f} x its incident energy, above u0_max = "
                f"{self.u0_max}: raise the model's u0_max"
            )
        lu, lv, _ = self.raw_variables(energy, self.dequantise(showers, generator), generator)
        self.u_mean.copy_(lu.mean(0))
        self.u_std.copy_(lu.std(0).clamp(min=1e-3))
        self.v_mean.copy_(lv.mean(0))
        self.v_std.copy_(lv.std(0).clamp(min=1e-3))
        if self.energy_standardisation:
            log_e = torch.log(energy.double())
            self.log_e_ref.copy_(torch.stack([log_e.mean(), log_e.std().clamp(min=1e-6)]).float())
            if self.eta_standardisation:
                if eta is None or eta.reshape(-1).shape != energy.reshape(-1).shape:
                    raise SchemaError(
                        "eta_standardisation: fitting the voxel scales needs one |eta| per training shower "
                        f"(got {None if eta is None else tuple(eta.shape)} for {tuple(energy.shape)} energies)"
                    )
                a = eta.reshape(-1).double().abs()
                self.eta_ref.copy_(torch.stack([a.mean(), a.std().clamp(min=1e-6)]).float())
            basis = self._energy_basis(energy.double(), eta).double()
            mean_coef = torch.linalg.lstsq(basis, lv.double()).solution
            resid2 = (lv.double() - basis @ mean_coef) ** 2
            self.v_mean_coef.copy_(mean_coef.float())
            self.v_var_coef.copy_(torch.linalg.lstsq(basis, resid2).solution.float())
        if self.first_layer_whitening:
            v_mean, v_std = self.voxel_scales(energy, eta)
            x0 = ((lv - v_mean) / v_std)[:, : self.n_first].double()
            cov = torch.cov(x0.T)
            lam, vec = torch.linalg.eigh(cov)
            lam = lam.clamp(min=1e-6 * float(lam.max()))
            self.white_enc.copy_((vec / lam.sqrt()[None, :]).float())
            self.white_dec.copy_((lam.sqrt()[:, None] * vec.T).float())


def check_prepared(model: nn.Module) -> None:
    """Raise if ``model.prepare`` has not fitted the standardisation (the trainer calls it)."""
    if not bool(model.prepared):
        raise ConfigError(
            f"model '{model.registry_name}' has no fitted standardisation: call "
            "model.prepare(energies_gev, showers_gev) on the training sample before training"
        )


@functools.cache
def _rqs_class() -> type:
    """zuko's :class:`~zuko.transforms.MonotonicRQSTransform` with its two softmaxes written as
    ``exp / sum``: torch's CPU softmax over a last axis of 8 bins is several times slower than
    the whole rest of a training step (measured here with torch 2.13; the spline is zuko's,
    ``tests/test_fastcalo_flows.py`` checks that both agree). zuko bounds the unnormalised widths
    and heights to ``|w| < |log slope| / 2`` first, so ``exp`` cannot overflow."""
    import torch.nn.functional as F
    from torch.distributions import Transform
    from zuko.transforms import MonotonicRQSTransform

    def softmax(x: Tensor) -> Tensor:
        x = torch.exp(x)
        return x / x.sum(dim=-1, keepdim=True)

    class RQS(MonotonicRQSTransform):
        def __init__(self, widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float = 5.0,
                     slope: float = 1e-3, **kwargs) -> None:
            Transform.__init__(self, **kwargs)
            log_slope = math.log(slope)
            widths = widths / (1 + abs(2 * widths / log_slope))
            heights = heights / (1 + abs(2 * heights / log_slope))
            derivatives = derivatives / (1 + abs(derivatives / log_slope))
            widths = F.pad(softmax(widths), (1, 0), value=0)
            heights = F.pad(softmax(heights), (1, 0), value=0)
            self.horizontal = bound * (2 * torch.cumsum(widths, dim=-1) - 1)
            self.vertical = bound * (2 * torch.cumsum(heights, dim=-1) - 1)
            self.derivatives = torch.exp(F.pad(derivatives, (1, 1), value=0))

    return RQS


def _nsf(features: int, context: int, transforms: int, hidden: int, bins: int, passes: int | None) -> nn.Module:
    """zuko's neural spline flow (``zuko.flows.NSF``: MAF of RQS transforms), with :func:`_rqs_class`."""
    from functools import partial

    import zuko

    return zuko.flows.MAF(
        features=features, context=context, transforms=transforms, hidden_features=(hidden, hidden),
        passes=passes, univariate=partial(_rqs_class(), slope=1e-3), shapes=[(bins,), (bins,), (bins - 1,)],
    )  # fmt: skip


@register_model("fastcalo_flow")
class CaloFlow(FastCaloGenerator):
    """CaloFlow-like two-flow shower generator (see the module docstring).

    Parameters
    ----------
    n_voxels, layer_sizes, e_min_gev, e_max_gev
        The common :class:`~lhcml.models.fastcalo.base.FastCaloGenerator` arguments.
    layer_transforms, layer_hidden, layer_bins
        Flow I: autoregressive RQS transforms, hidden width (two hidden layers), spline bins.
    voxel_transforms, voxel_hidden, voxel_bins, voxel_passes
        Flow II: the same, and zuko's ``passes`` (2 = coupling; ``None`` = fully autoregressive).
    u0_max, dequant_kev, threshold_kev
        See :class:`CaloFlowVariables`.

    Attributes
    ----------
    onnx_atol
        The ``|onnxruntime - torch| / E_inc`` this model's exported graph keeps: 1e-4, not the
        export's default 1e-5 — the sampling inverts up to 10 float32 spline transforms, whose
        quadratic-root inverse loses digits in steep bins (a trained flow measured 2.2e-5).
    """

    onnx_atol: float = 1e-4

    def __init__(
        self,
        n_voxels: int,
        layer_sizes: Sequence[int],
        e_min_gev: float,
        e_max_gev: float,
        layer_transforms: int = 6,
        layer_hidden: int = 64,
        layer_bins: int = 8,
        voxel_transforms: int = 6,
        voxel_hidden: int = 128,
        voxel_bins: int = 8,
        voxel_passes: int | None = 2,
        u0_max: float = 1.5,
        dequant_kev: float = 1.0,
        threshold_kev: float | None = None,
    ) -> None:
        super().__init__(
            n_voxels=n_voxels, layer_sizes=layer_sizes, e_min_gev=e_min_gev, e_max_gev=e_max_gev
        )
        self.vars = CaloFlowVariables(
            layer_sizes, u0_max=u0_max, dequant_kev=dequant_kev, threshold_kev=threshold_kev
        )
        self.flow1 = _nsf(self.n_layers, 1, layer_transforms, layer_hidden, layer_bins, None)
        self.flow2 = _nsf(
            n_voxels, 1 + self.n_layers, voxel_transforms, voxel_hidden, voxel_bins, voxel_passes
        )
        self.noise_dim = self.n_layers + n_voxels
        self.register_buffer("prepared", torch.zeros((), dtype=torch.uint8))

    def prepare(self, energy_gev: Tensor, showers_gev: Tensor) -> None:
        """Fit the variables' standardisation on the training sample (deterministic: the
        dequantisation noise of the fit has a fixed seed)."""
        self.vars.fit(energy_gev, showers_gev, torch.Generator().manual_seed(0))
        self.prepared.fill_(1)

    def _contexts(self, energy: Tensor, e_layers: Tensor) -> tuple[Tensor, Tensor]:
        c = self.condition(energy)
        return c, torch.cat([c, self.vars.layer_context(e_layers)], dim=1)

    def log_prob(
        self, energy_gev: Tensor, showers_gev: Tensor, dequantise: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Exact log-likelihoods ``(log p_1, log p_2)`` per shower of the standardised variables."""
        energy_gev = energy_gev.reshape(-1)
        showers = self.vars.dequantise(showers_gev) if dequantise else showers_gev
        x_u, x_v, e_layers = self.vars.encode(energy_gev, showers)
        c1, c2 = self._contexts(energy_gev, e_layers)
        return self.flow1(c1).log_prob(x_u), self.flow2(c2).log_prob(x_v)

    def loss_terms(self, energy_gev: Tensor, showers: Tensor, phase: str) -> dict[str, Tensor]:
        """Negative log-likelihood per dimension of flow I (``nll_layers``) and flow II
        (``nll_voxels``), on freshly dequantised showers."""
        check_prepared(self)
        lp1, lp2 = self.log_prob(energy_gev, showers)
        return {
            "nll_layers": -lp1.mean() / self.n_layers,
            "nll_voxels": -lp2.mean() / self.n_voxels,
        }

    def latent(self, energy_gev: Tensor, x_u: Tensor, x_v: Tensor, e_layers: Tensor) -> Tensor:
        """The base-space point ``[z_1, z_2]`` of standardised variables (the inverse of sampling)."""
        c1, c2 = self._contexts(energy_gev, e_layers)
        return torch.cat([self.flow1.transform(c1)(x_u), self.flow2.transform(c2)(x_v)], dim=1)

    def sample_variables(self, energy_gev: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_u, x_v, layer energies)`` of base samples ``noise = [z_1, z_2]``."""
        energy_gev = energy_gev.reshape(-1)
        n_layers = self.n_layers
        c1 = self.condition(energy_gev)
        x_u = self.flow1.transform(c1).inv(noise[:, :n_layers])
        e_layers = self.vars.decode_layers(x_u, energy_gev)
        _, c2 = self._contexts(energy_gev, e_layers)
        x_v = self.flow2.transform(c2).inv(noise[:, n_layers:])
        return x_u, x_v, e_layers

    def sample(self, energy_gev: Tensor, noise: Tensor) -> Tensor:
        _, x_v, e_layers = self.sample_variables(energy_gev, noise)
        return self.vars.decode_voxels(x_v, e_layers)
