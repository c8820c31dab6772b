"""Conditional flow matching for fast calorimeter showers (CaloDREAM / CaloFlow-matching family).

A velocity network ``v_theta(x_t, t, c)`` (an MLP on the state, a sinusoidal embedding of the
time ``t`` and the conditioning ``c = log E_inc`` scaled over the trained range, and with
``eta_range`` the incident ``|η|`` scaled over that range as a second condition,
``configs/fastcalo/fm_strips_eta.yaml``) is trained with
the conditional flow-matching loss on the straight (optimal-transport / rectified-flow) path of
Lipman et al. (arXiv:2210.02747) and Liu et al. (arXiv:2209.03003) with ``sigma_min = 0``:

``x_t = (1 - t) x_0 + t x_1``, ``x_0 ~ N(0, 1)``, ``t ~ U(0, 1)``, loss ``|v_theta(x_t, t, c) - (x_1 - x_0)|^2``

(``docs/references.md §15``). The state ``x_1`` is the shower in CaloFlow's variables
(:class:`lhcml.models.fastcalo.flow.CaloFlowVariables`: the standardised logits of the
layer-energy variables ``u`` and of the voxel energies normalised per layer, after CaloFlow's
dequantisation), so the generated shower's voxels are >= 0 and each layer's voxels sum exactly to
the generated layer energy. CaloDREAM (arXiv:2405.09629) splits this into an energy model and a
shape model; here one network generates both jointly (the split is optional in issue 15).

Sampling integrates ``dx/dt = v_theta`` from ``t = 0`` (the noise) to ``t = 1`` with a fixed
number of ``steps`` of the Euler or the midpoint rule, unrolled in the graph, so
``sample(energy, noise)`` is deterministic and exports to ONNX with the noise as an input. The
solver and step count are configuration (``configs/fastcalo/fm.yaml``); CaloDREAM uses adaptive
and higher-order solvers on GPU, a fixed small step count is our choice for CPU speed (the
generation time grows linearly with the network evaluations: ``steps`` for Euler, ``2 steps`` for
midpoint).

**Strips generated around their maximum** (``align_max_shift > 0``, ``configs/fastcalo/fm_strips.yaml``):
the first layer (lhcml's strips, ``align_n_phi`` cells in φ per η strip) is rolled in η so that
the strip with the largest φ-summed energy within ``±align_max_shift`` strips of the window centre
sits at the centre, and the shift becomes one more state variable (an integer, dequantised with
``U(-1/2, 1/2)``, rounded when sampling). The roll is circular, so encoding and decoding are exact
inverses (:func:`align_strips`). Without it the model has to place the strip core at the impact
strip or one of its neighbours (the impact point moves inside a strip only 0.003 wide), a
multimodal target that an under-trained velocity field blurs into two or three peaks: a spurious
second strip maximum (``docs/benchmarks/fastcalo.md``, "Ninth version").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.base import FastCaloGenerator
from lhcml.models.fastcalo.flow import CaloFlowVariables, check_prepared
from lhcml.models.layers import MLP
from lhcml.models.registry import register_model


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of ``t`` in [0, 1]: ``sin/cos(2 pi f_k t)``, ``f_k = 2^k``, k < n (our choice)."""

    def __init__(self, n_frequencies: int = 8) -> None:
        super().__init__()
        self.register_buffer(
            "freq", 2.0 * math.pi * 2.0 ** torch.arange(n_frequencies, dtype=torch.float32)
        )

    def forward(self, t: Tensor) -> Tensor:
        a = t * self.freq
        return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


@register_model("fastcalo_fm")
class CaloFlowMatching(FastCaloGenerator):
    """Conditional flow-matching shower generator (see the module docstring).

    Parameters
    ----------
    n_voxels, layer_sizes, e_min_gev, e_max_gev
        The common :class:`~lhcml.models.fastcalo.base.FastCaloGenerator` arguments.
    hidden, depth
        Width and number of hidden layers of the velocity MLP (SiLU).
    time_frequencies
        Frequencies of the time embedding.
    steps, solver
        Fixed-step ODE solver of the sampler: ``euler`` or ``midpoint``.
    u0_max, dequant_kev, threshold_kev, voxel_space, energy_standardisation, eta_standardisation, first_layer_whitening
        See :class:`~lhcml.models.fastcalo.flow.CaloFlowVariables` (``voxel_space: log``: the
        voxels as logs of their layer shares with explicit zeros under the readout threshold;
        ``eta_standardisation``: the voxel variables standardised per incident energy *and*
        ``|η|``, for a model with ``eta_range``, ``configs/fastcalo/fm_strips_etastd.yaml``).
    strip_ratios
        The strips (aligned on their maximum: needs ``align_max_shift``) as the maximum row's
        log share plus successive log-ratios outwards and per-row φ log-ratios
        (:class:`~lhcml.models.fastcalo.flow.CaloFlowVariables`; ``configs/fastcalo/fm_strips_ratio.yaml``).
    strip_first_ratio
        With ``strip_ratios``: ``"free"`` (default), ``"exp"`` or ``"softplus"`` — the two first outward
        row log-ratios generated as ``-exp(y)`` / ``-softplus(y)``, so the centre row stays above its
        neighbours by construction (:class:`~lhcml.models.fastcalo.flow.CaloFlowVariables`).
    middle_ratios
        ``None`` (default, off) or the middle (second) layer's grid ``[n_eta, n_phi]`` (lhcml's binning:
        ``[7, 11]``): its cells generated as the centre cell's log share and log-ratios to their inner
        neighbour, ring by ring outwards (:class:`~lhcml.models.fastcalo.flow.CaloFlowVariables`;
        ``configs/fastcalo/fm_strips_ratio_middle.yaml``).
    occupancy_layers
        ``None`` (default, off) or a list of layer indices (lhcml's middle layer: ``[1]``): each of their
        cells gets an occupancy variable generated jointly with the energies (the last ``n_occupancy``
        state columns, after the strip shift), the cell set to zero where it reads empty, and an empty
        cell's energy variable filled near an occupied cell's size
        (:class:`~lhcml.models.fastcalo.flow.CaloFlowVariables`; ``configs/fastcalo/fm_strips_ratio_occupancy.yaml``).
    occupancy_dequant_width
        ``occupancy_layers`` only: the width ``w`` (``0 < w <= 2``) of the bits' dequantisation noise,
        ``2 b - 1 + w (U - 1/2)``; ``2.0`` (default) is the original ``2 (b + U) - 2``. Training only: the
        sampled bits are read on/off at 0 whatever ``w`` (:class:`~lhcml.models.fastcalo.flow.CaloFlowVariables`).
    eta_range
        ``[lo, hi]``: condition on the incident ``|η|`` too (trained over that range; the
        calorimeter's depth in X0 grows as cosh η, so the layer fractions change with η);
        ``None``: energy only (:class:`~lhcml.models.fastcalo.base.FastCaloGenerator`).
    eta_cells
        Cell widths in η (with ``eta_range``): the sine and cosine of ``2 pi |η| / width`` as
        more conditions, the impact position inside the cells (``configs/fastcalo/fm_strips_cells.yaml``).
    phi_cells
        Cell widths in φ (rad, each ``2 pi / n``): the sine and cosine of ``n φ`` as more
        conditions, the impact position inside the φ cells (``configs/fastcalo/fm_strips_phi.yaml``);
        such a model takes each shower's ``phi`` beside ``eta``.
    align_max_shift, align_n_phi
        Generate the first layer (the strips, ``align_n_phi`` cells in φ per η row, η-major)
        around its maximum, found within ``±align_max_shift`` strips of the window centre
        (module docstring); ``0``: off (the layer as voxelised, around the impact cell).

    Attributes
    ----------
    onnx_atol
        The ``|onnxruntime - torch| / E_inc`` the exported graph keeps: 1e-4, not the export's
        default 1e-5 — the unrolled solver accumulates float32 rounding over its 16 network
        evaluations (trained models measured 1.0e-5 and 1.9e-5; ``lhcml export --atol 1e-4``).
    """

    onnx_atol: float = 1e-4

    def __init__(
        self,
        n_voxels: int,
        layer_sizes: Sequence[int],
        e_min_gev: float,
        e_max_gev: float,
        hidden: int = 512,
        depth: int = 3,
        time_frequencies: int = 8,
        steps: int = 8,
        solver: Literal["euler", "midpoint"] = "midpoint",
        u0_max: float = 1.5,
        dequant_kev: float = 1.0,
        threshold_kev: float | None = None,
        voxel_space: Literal["logit", "log"] = "logit",
        energy_standardisation: bool = False,
        eta_standardisation: bool = False,
        first_layer_whitening: bool = False,
        strip_ratios: bool = False,
        strip_first_ratio: str = "free",
        middle_ratios: Sequence[int] | None = None,
        occupancy_layers: Sequence[int] | None = None,
        occupancy_dequant_width: float = 2.0,
        align_max_shift: int = 0,
        align_n_phi: int = 3,
        eta_range: Sequence[float] | None = None,
        eta_cells: Sequence[float] | None = None,
        phi_cells: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            n_voxels=n_voxels, layer_sizes=layer_sizes, e_min_gev=e_min_gev, e_max_gev=e_max_gev,
            eta_range=eta_range, eta_cells=eta_cells, phi_cells=phi_cells,
        )
        if solver not in ("euler", "midpoint"):
            raise ConfigError(f"fastcalo_fm: unknown solver '{solver}' (valid: euler, midpoint)")
        if steps < 1 or hidden < 1 or depth < 1:
            raise ConfigError(
                f"fastcalo_fm needs steps, hidden, depth >= 1, got {steps}, {hidden}, {depth}"
            )
        if eta_standardisation and eta_range is None:
            raise ConfigError("fastcalo_fm: eta_standardisation needs a model conditioned on |eta| (model.eta_range)")
        self.align_max_shift = int(align_max_shift)
        self.align_n_phi = int(align_n_phi)
        if self.align_max_shift < 0 or self.align_n_phi < 1:
            raise ConfigError(
                f"fastcalo_fm needs align_max_shift >= 0 and align_n_phi >= 1, got "
                f"{align_max_shift}, {align_n_phi}"
            )
        n_eta, rest = divmod(self.layer_sizes[0], self.align_n_phi)
        if self.align_max_shift and (rest or 2 * self.align_max_shift + 1 > n_eta):
            raise ConfigError(
                f"fastcalo_fm: align_n_phi = {align_n_phi} and align_max_shift = {align_max_shift} do not fit "
                f"the first layer's {self.layer_sizes[0]} voxels (need n_eta x align_n_phi voxels and "
                "2 align_max_shift + 1 <= n_eta; the strips of lhcml's binning are 57 x 3)"
            )
        if strip_ratios is True and not self.align_max_shift:
            raise ConfigError(
                "fastcalo_fm: strip_ratios needs align_max_shift > 0 (the log-ratios go outwards from the "
                "strip maximum, which the alignment puts at the centre row)"
            )
        self.vars = CaloFlowVariables(
            layer_sizes, u0_max=u0_max, dequant_kev=dequant_kev, threshold_kev=threshold_kev,
            voxel_space=voxel_space, energy_standardisation=energy_standardisation,
            eta_standardisation=eta_standardisation, first_layer_whitening=first_layer_whitening,
            strip_ratios=strip_ratios, strip_grid=(n_eta, self.align_n_phi) if strip_ratios is True else None,
            strip_first_ratio=strip_first_ratio, middle_ratios=middle_ratios, occupancy_layers=occupancy_layers,
            occupancy_dequant_width=occupancy_dequant_width,
        )
        self.align_n_eta = n_eta
        self.n_occupancy = self.vars.n_occupancy
        self.noise_dim = self.n_layers + n_voxels + (1 if self.align_max_shift else 0) + self.n_occupancy
        self.steps = int(steps)
        self.solver = solver
        self.time_embedding = TimeEmbedding(time_frequencies)
        self.velocity = MLP(
            self.noise_dim + 2 * time_frequencies + self.cond_dim, self.noise_dim, [hidden] * depth, act="silu"
        )
        if self.n_occupancy:
            # occupancy_layers: a direct per-bit term s(t) * x_bit beside the network (zero at the start), so the
            # bits' velocity can follow their own state without the shared hidden layers (:meth:`v`)
            self.occ_skip = nn.Linear(2 * time_frequencies, self.n_occupancy)
            nn.init.zeros_(self.occ_skip.weight)
            nn.init.zeros_(self.occ_skip.bias)
        self.register_buffer("prepared", torch.zeros((), dtype=torch.uint8))

    #: :meth:`prepare` takes the training showers' ``|η|`` (``eta=``; the trainer passes it)
    prepare_takes_eta = True

    def prepare(self, energy_gev: Tensor, showers_gev: Tensor, eta: Tensor | None = None) -> None:
        """Fit the variables' standardisation on training showers (strips aligned if configured;
        ``eta``: their ``|η|``, needed with ``eta_standardisation``)."""
        if self.align_max_shift:
            showers_gev, _ = self.align(showers_gev)
        self.vars.fit(energy_gev, showers_gev, torch.Generator().manual_seed(0),
                      eta=eta if self.vars.eta_standardisation else None)
        self.prepared.fill_(1)

    def align(self, showers: Tensor) -> tuple[Tensor, Tensor]:
        """``(showers with the strips rolled to their maximum, shift (N,) int64)`` (module docstring)."""
        n0 = self.layer_sizes[0]
        strips = showers[:, :n0].reshape(-1, self.align_n_eta, self.align_n_phi)
        shift = strip_max_shift(strips, self.align_max_shift)
        rolled = roll_strips(strips, shift).reshape(-1, n0)
        return torch.cat([rolled, showers[:, n0:]], dim=1), shift

    def unalign(self, showers: Tensor, shift: Tensor) -> Tensor:
        """Inverse of :meth:`align` given its shift."""
        n0 = self.layer_sizes[0]
        strips = showers[:, :n0].reshape(-1, self.align_n_eta, self.align_n_phi)
        return torch.cat([roll_strips(strips, -shift).reshape(-1, n0), showers[:, n0:]], dim=1)

    def v(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        """Velocity ``(N, D)`` at states ``x`` ``(N, D)``, times ``t`` ``(N, 1)``, conditions ``c`` ``(N, cond_dim)``.

        With ``occupancy_layers`` the bits' velocity gets ``s(t) x_bit`` added, ``s`` linear in the time
        embedding (``occ_skip``, one coefficient per bit): the transport of a bit (a dequantised 0/1, e.g. the
        centre cell's always in ``[0, 2)``, a third of the noise's variance) needs a slope of about -1 in its own
        state, which a network widened by ``init_from`` did not learn through its shared hidden layers (the
        gradient of one bit's loss on the first layer is buried under the other 400 outputs')."""
        temb = self.time_embedding(t)
        out = self.velocity(torch.cat([x, temb, c], dim=1))
        if not self.n_occupancy:
            return out
        n = self.n_occupancy
        return torch.cat([out[:, :-n], out[:, -n:] + self.occ_skip(temb) * x[:, -n:]], dim=1)

    def target(self, energy_gev: Tensor, showers: Tensor, eta: Tensor | None = None) -> Tensor:
        """The data point ``x_1`` ``(N, L + V [+ 1] [+ n_occupancy])`` of (dequantised) showers; with
        strip alignment the next variable is the dequantised shift, with ``occupancy_layers`` the last
        ones the dequantised occupancy bits (``eta``: the showers' ``|η|``, used with ``eta_standardisation``)."""
        eta_s = eta if self.vars.eta_standardisation else None
        if not self.align_max_shift:
            x_u, x_v, _ = self.vars.encode(energy_gev, showers, eta=eta_s)
            parts = [x_u, x_v]
        else:
            showers, shift = self.align(showers)
            x_u, x_v, _ = self.vars.encode(energy_gev, showers, eta=eta_s)
            parts = [x_u, x_v, shift.to(x_v.dtype)[:, None] + torch.rand_like(x_v[:, :1]) - 0.5]
        if self.n_occupancy:
            parts.append(self.vars.occupancy_encode(showers))
        return torch.cat(parts, dim=1)

    def loss_terms(
        self, energy_gev: Tensor, showers: Tensor, phase: str, eta: Tensor | None = None,
        phi: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The conditional flow-matching loss (mean squared velocity error per dimension)."""
        check_prepared(self)
        energy_gev = energy_gev.reshape(-1)
        c = self.condition(energy_gev, eta, phi)
        x1 = self.target(energy_gev, self.vars.dequantise(showers), eta)
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], 1, device=x1.device, dtype=x1.dtype)
        xt = (1 - t) * x0 + t * x1
        return {"cfm": (self.v(xt, t, c) - (x1 - x0)).square().mean()}

    def integrate(
        self, energy_gev: Tensor, noise: Tensor, eta: Tensor | None = None, phi: Tensor | None = None
    ) -> Tensor:
        """The ODE solution ``x(t = 1)`` from ``x(0) = noise`` (fixed steps, unrolled)."""
        c = self.condition(energy_gev, eta, phi)
        x = noise
        dt = 1.0 / self.steps
        ones = torch.ones_like(c[:, :1])
        for i in range(self.steps):
            t = ones * (i * dt)
            if self.solver == "euler":
                x = x + dt * self.v(x, t, c)
            else:
                x_mid = x + 0.5 * dt * self.v(x, t, c)
                x = x + dt * self.v(x_mid, t + 0.5 * dt, c)
        return x

    def sample(
        self, energy_gev: Tensor, noise: Tensor, eta: Tensor | None = None, phi: Tensor | None = None
    ) -> Tensor:
        energy_gev = energy_gev.reshape(-1)
        x = self.integrate(energy_gev, noise, eta, phi)
        nl = self.n_layers
        e_layers = self.vars.decode_layers(x[:, :nl], energy_gev)
        occ = x[:, x.shape[1] - self.n_occupancy :] if self.n_occupancy else None
        showers = self.vars.decode_voxels(x[:, nl : nl + self.n_voxels], e_layers, energy_gev,
                                          eta if self.vars.eta_standardisation else None, occupancy=occ)
        if not self.align_max_shift:
            return showers
        s = self.align_max_shift
        shift = torch.round(x[:, nl + self.n_voxels]).clamp(-s, s).to(torch.int64)
        return self.unalign(showers, shift)


    def widen_state_dict(self, stored: dict[str, Tensor]) -> dict[str, Tensor]:
        """``init_from`` a model without ``occupancy_layers`` into one with them: the stored velocity network's
        first layer gets columns for the new state inputs (inserted after the stored state's columns, before
        the time embedding and conditions) and its last layer rows for the new outputs, both this model's
        own fresh initialisation, the columns scaled to the stored state columns' mean size. With the bits'
        inputs at zero the model computes the stored one's velocity for the old variables. Not zeros: with
        zero columns the hidden layers carry no feature of the bits, so the bits' velocity can follow their
        context's mean but not their own state, and a generated bit is its noise's sign shifted by that mean
        (two fine-tunes that started so, zero columns with zero or fresh rows, sat there for 40-100 epochs,
        docs/benchmarks/fastcalo.md "Twenty-first version"). Other tensors are returned unchanged (the
        caller compares the rest)."""
        if not self.n_occupancy or "vars.occ_select" in stored:
            return stored
        n = self.n_occupancy
        d_old = self.noise_dim - n
        lin = [k for k, m in self.velocity.named_modules() if isinstance(m, nn.Linear)]
        first, last = f"velocity.{lin[0]}.weight", f"velocity.{lin[-1]}"
        own = self.state_dict()
        out = dict(stored)
        w = stored.get(first)
        if w is not None and w.ndim == 2 and w.shape[0] == own[first].shape[0]:
            fresh = own[first][:, d_old : d_old + n].to(w.dtype)
            scale = w[:, :d_old].abs().mean() / own[first][:, :d_old].abs().mean().clamp(min=1e-12)
            out[first] = torch.cat([w[:, :d_old], fresh * scale, w[:, d_old:]], dim=1)
        for k in (f"{last}.weight", f"{last}.bias"):
            t = stored.get(k)
            if t is not None and t.shape[0] == d_old and own[k].shape[1:] == t.shape[1:]:
                out[k] = torch.cat([t, own[k][d_old:].to(t.dtype)], dim=0)
        for k in ("occ_skip.weight", "occ_skip.bias"):  # the per-bit term starts at zero (:meth:`v`)
            out[k] = own[k]
        return out


def strip_max_shift(strips: Tensor, max_shift: int) -> Tensor:
    """Offset ``(N,)`` of the η row with the largest φ-summed energy from the centre row
    ``(n_eta - 1) // 2`` of ``strips`` ``(N, n_eta, n_phi)``, searched within ``±max_shift``
    (the first such row on ties; 0 for an empty window)."""
    n_eta = strips.shape[1]
    c = (n_eta - 1) // 2
    window = strips[:, c - max_shift : c + max_shift + 1].sum(dim=2)
    best = torch.argmax(window, dim=1) - max_shift
    return torch.where(window.max(dim=1).values > 0, best, torch.zeros_like(best))


def roll_strips(strips: Tensor, shift: Tensor) -> Tensor:
    """``out[:, i] = strips[:, (i + shift) mod n_eta]`` per shower (a circular roll in η by
    ``-shift``; ``shift`` ``(N,)`` int64 with ``|shift| < n_eta``), as a gather (exports to ONNX)."""
    n, n_eta, n_phi = strips.shape
    rows = torch.arange(n_eta, device=strips.device)[None, :] + shift[:, None] + n_eta
    idx = torch.remainder(rows, n_eta)[:, :, None].expand(n, n_eta, n_phi)
    return torch.gather(strips, 1, idx)
