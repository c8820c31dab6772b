"""A leaner ONNX sampling graph for flow-matching shower generators (issue 15, generation speed).

The sampling graph that :func:`lhcml.export.fastcalo.export_generator` traces from
:meth:`lhcml.models.fastcalo.fm.CaloFlowMatching.sample` spends most of a one-step student's time
outside the network's matrix products: onnxruntime's profiler at batch 10^4 on one thread puts
the four ``Gemm`` of a 128-wide student at 24 % of the kernel time, and the decoding at the rest —
``Where`` on ``(N, V)`` tensors against freshly built zero tensors (27 %), the strip
un-alignment's index arithmetic, ``Expand`` and ``GatherElements`` (18 %), three ``(N, L) x (L,
V)`` matrix products that spread the layer energies back over the voxels, the time embedding
recomputed for a constant time, and an input ``Concat`` (docs/benchmarks/fastcalo.md, "Fourteenth
version").

:class:`LeanFlowMatchingGraph` computes **the same function** with precomputed constants and
fewer passes over ``(N, V)``:

* the time embedding of each network evaluation is a constant (the solver's times are fixed), so
  it is folded into the first layer's bias; the conditions enter through their own block of the
  first layer's weights (``addmm``: no concatenation of the noise);
* the solver's step factor is folded into the last layer of each evaluation, and for the last
  evaluation also the state's standardisation (``x * std + mean``), so the state comes out of
  one ``Gemm`` plus one multiply-add with the previous state;
* the voxels are decoded layer by layer (one ``Split``): the layer energy is an ``(N, 1)``
  broadcast instead of an ``(N, L) x (L, V)`` product, the readout threshold a multiplication by
  the cast comparison instead of ``Where``, the layer sum a ``ReduceSum``, the renormalisation one
  ``(N, 1)`` factor per layer (``E_layer / sum``, zero for a layer left empty);
* the strip un-alignment gathers the strips with rows of a constant index table (one per
  shift), not with indices computed and expanded per call.

Only float rounding differs from the traced graph (sums in another order, ``f E / s`` for
``f / s E``); the export asserts onnxruntime's agreement with the PyTorch sampler
(:meth:`~lhcml.models.fastcalo.fm.CaloFlowMatching.sample`) as for the traced graph.
``export_generator(..., lean=True)`` and ``export_checkpoint(..., lean=True)`` write it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.flow import _expit


def supports_lean(model: Any) -> bool:
    """Whether :class:`LeanFlowMatchingGraph` can be built for ``model`` (a flow-matching generator
    whose velocity network is Linear / SiLU / Dropout layers)."""
    from lhcml.models.fastcalo.fm import CaloFlowMatching

    if not isinstance(model, CaloFlowMatching):
        return False
    return all(isinstance(m, nn.Linear | nn.SiLU | nn.Dropout) for m in model.velocity)


class LeanFlowMatchingGraph(nn.Module):
    """``forward(incident_energy (N, 1)[, eta (N, 1)][, phi (N, 1)], noise (N, D)) -> showers (N, V)``,
    the function of ``model.sample`` computed with fewer operations (module docstring)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        if not supports_lean(model):
            raise ConfigError(
                f"the lean sampling graph is built for flow-matching generators (fastcalo_fm) with an MLP of "
                f"Linear/SiLU layers, not {type(model).__name__}"
            )
        model = model.eval()
        self.model = model
        v = model.vars
        self.on_eta = bool(model.conditions_on_eta)
        self.on_phi = bool(model.conditions_on_phi)
        self.n_layers = int(model.n_layers)
        self.layer_sizes = [int(s) for s in model.layer_sizes]
        self.threshold = float(v.threshold_gev)
        self.log_space = v.voxel_space == "log"
        self.energy_standardisation = bool(v.energy_standardisation)
        self.whitening = bool(getattr(v, "first_layer_whitening", False))
        self.strip_ratios = bool(getattr(v, "strip_ratios", False))
        self.middle_ratios = bool(getattr(v, "middle_ratios", False))
        linears = [m for m in model.velocity if isinstance(m, nn.Linear)]
        d, f2 = int(model.noise_dim), 2 * len(model.time_embedding.freq)
        w0, b0 = linears[0].weight.detach(), linears[0].bias.detach()
        self.register_buffer("w0_x", w0[:, :d].T.contiguous())
        self.register_buffer("w0_c", w0[:, d + f2 :].T.contiguous())
        hidden_wb = [(lin.weight.detach().T.contiguous(), lin.bias.detach()) for lin in linears[1:-1]]
        self.n_hidden = len(hidden_wb)
        w_last, b_last = linears[-1].weight.detach(), linears[-1].bias.detach()
        # the solver's network evaluations: (time, factor of the velocity, whether it gives the final state)
        dt = 1.0 / model.steps
        evals: list[tuple[float, float, str]] = []
        for i in range(model.steps):
            if model.solver == "euler":
                evals.append((i * dt, dt, "step"))
            else:
                evals += [(i * dt, 0.5 * dt, "mid"), (i * dt + 0.5 * dt, dt, "step")]
        self.evals = evals
        # state standardisation (folded into the last evaluation): [u | voxels | shift]
        n_l, n_v = self.n_layers, int(model.n_voxels)
        scale = torch.ones(d)
        shift = torch.zeros(d)
        scale[:n_l], shift[:n_l] = v.u_std, v.u_mean
        if not self.energy_standardisation and not self.whitening:
            scale[n_l : n_l + n_v], shift[n_l : n_l + n_v] = v.v_std, v.v_mean
        self.register_buffer("state_scale", scale)
        biases0, w_outs, b_outs, skips = [], [], [], []
        n_occ = int(getattr(model, "n_occupancy", 0))
        with torch.no_grad():
            for k, (t, a, _) in enumerate(evals):
                temb = model.time_embedding(torch.tensor([[t]], dtype=torch.float32))[0]
                biases0.append(b0 + w0[:, d : d + f2] @ temb)
                last = k == len(evals) - 1
                s = a * (scale if last else torch.ones(d))
                w_outs.append((w_last * s[:, None]).T.contiguous())
                b_outs.append(b_last * s + (shift if last else 0.0))
                if n_occ:  # occupancy_layers: the per-bit term s(t) x_bit of model.v, a constant per evaluation
                    sk = torch.zeros(d)
                    sk[d - n_occ :] = model.occ_skip(temb[None, :])[0]
                    skips.append(sk * s)
        self.has_skip = bool(n_occ)
        if n_occ:
            self.register_buffer("skip", torch.stack(skips))  # (n_evals, D)
        self.register_buffer("bias0", torch.stack(biases0))  # (n_evals, H)
        self.register_buffer("w_out", torch.stack(w_outs))  # (n_evals, H, D)
        self.register_buffer("b_out", torch.stack(b_outs))  # (n_evals, D)
        for j, (w, b) in enumerate(hidden_wb):
            self.register_buffer(f"w_h{j}", w)
            self.register_buffer(f"b_h{j}", b)
        self.align = int(model.align_max_shift)
        self.n_occupancy = int(getattr(model, "n_occupancy", 0))
        self.split_sizes = [n_l, *self.layer_sizes] + ([1] if self.align else []) + (
            [self.n_occupancy] if self.n_occupancy else [])
        # occupancy_layers: per layer, the slice of the bits (the layer's cells in order) or None
        self.occ_slices: list[tuple[int, int] | None] = [None] * n_l
        if self.n_occupancy:
            cols = v.occ_select.argmax(dim=1)  # voxel of each bit, ascending (whole layers)
            starts = [sum(self.layer_sizes[:k]) for k in range(n_l)]
            for li, (a, size) in enumerate(zip(starts, self.layer_sizes, strict=True)):
                hit = ((cols >= a) & (cols < a + size)).nonzero().reshape(-1)
                if len(hit):
                    self.occ_slices[li] = (int(hit[0]), int(hit[-1]) + 1)
        if self.align:
            n_eta, n_phi, s_max = model.align_n_eta, model.align_n_phi, self.align
            rows = torch.arange(n_eta)
            table = torch.stack([
                (torch.remainder(rows - s, n_eta)[:, None] * n_phi + torch.arange(n_phi)[None, :]).reshape(-1)
                for s in range(-s_max, s_max + 1)
            ])  # fmt: skip
            self.register_buffer("unalign_table", table)  # (2 S + 1, strips): source voxel per shift

    def _net(self, x: Tensor, cb: Tensor, k: int) -> Tensor:
        """The velocity network of evaluation ``k`` times its step factor (and, for the last, the
        standardisation): ``cb`` the conditions' part of the first layer."""
        h = torch.nn.functional.silu(torch.addmm(cb + self.bias0[k], x, self.w0_x))
        for j in range(self.n_hidden):
            h = torch.nn.functional.silu(torch.addmm(getattr(self, f"b_h{j}"), h, getattr(self, f"w_h{j}")))
        out = torch.addmm(self.b_out[k], h, self.w_out[k])
        return out + x * self.skip[k] if self.has_skip else out

    def forward(self, *inputs: Tensor) -> Tensor:
        m = self.model
        energy = inputs[0].reshape(-1)
        eta = inputs[1] if self.on_eta else None
        phi = inputs[1 + int(self.on_eta)] if self.on_phi else None
        c = m.condition(energy, None if eta is None else eta.reshape(-1), None if phi is None else phi.reshape(-1))
        cb = c @ self.w0_c
        x = p = inputs[-1]  # the state, and the point of the next network evaluation
        n_evals = len(self.evals)
        for k, (_, _, kind) in enumerate(self.evals):
            out = self._net(p, cb, k)
            if kind == "mid":
                p = x + out
            elif k == n_evals - 1:
                x = out + x * self.state_scale  # the last step, standardisation folded: the raw variables
            else:
                x = p = x + out
        return self._decode(x, energy, None if eta is None else eta.reshape(-1))

    def _decode(self, raw: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
        m = self.model
        parts = torch.split(raw, self.split_sizes, dim=1)  # constant sizes: one Split node
        e_layers = m.vars.layers_from_u(_expit(parts[0]), energy)  # (N, L)
        if self.energy_standardisation:
            v_mean, v_std = m.vars.voxel_scales(energy, eta if m.vars.eta_standardisation else None)
        out = []
        start = 0
        for li, size in enumerate(self.layer_sizes):
            r = parts[1 + li]
            if self.whitening and li == 0:
                r = r @ m.vars.white_dec  # the first layer's whitened axes back to the voxels
            if self.energy_standardisation:
                r = r * v_std[:, start : start + size] + v_mean[:, start : start + size]
            elif self.whitening:
                r = r * m.vars.v_std[start : start + size] + m.vars.v_mean[start : start + size]
            if self.strip_ratios and li == 0:
                r = m.vars.strip_ratio_decode(r)  # the strips' outward log-ratios back to log shares
            if self.middle_ratios and li == 1:
                r = m.vars.middle_ratio_decode(r)  # the middle layer's ring-by-ring log-ratios back to log shares
            start += size
            frac = torch.exp(r.clamp(max=0.0)) if self.log_space else _expit(r)
            e_l = e_layers[:, li : li + 1]
            frac = frac * (frac * e_l >= self.threshold).to(frac.dtype)
            if self.occ_slices[li] is not None:  # occupancy_layers: a cell read as empty is zero
                a, b = self.occ_slices[li]
                frac = frac * (parts[-1][:, a:b] >= 0).to(frac.dtype)
            norm = frac.sum(dim=1, keepdim=True)
            scale = (e_l / norm.clamp(min=1e-30)) * (norm > 0).to(norm.dtype)  # 0 for a layer left empty
            out.append(frac * scale)
        if self.align:
            s = self.align
            shift = torch.round(parts[1 + self.n_layers][:, 0]).clamp(-s, s).to(torch.int64) + s
            out[0] = torch.gather(out[0], 1, self.unalign_table[shift])
        return torch.cat(out, dim=1)


def lean_graph(model: Any) -> nn.Module:
    """The lean sampling module of ``model`` in eval mode (:class:`LeanFlowMatchingGraph`)."""
    return LeanFlowMatchingGraph(model).eval()


__all__ = ["LeanFlowMatchingGraph", "lean_graph", "supports_lean"]
