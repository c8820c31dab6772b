"""The quantile correction (:mod:`lhcml.models.fastcalo.quantile_map`) as a ``torch.nn.Module``, for the ONNX
sampling graph: static gathers and fixed-step binary searches only, so the exported graph has no data-dependent
control flow. :meth:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection.torch_module` builds it; torch is
imported only here (the NumPy correction does not need it)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection


def torch_second_pass(first: Any, second: Any) -> Any:
    from torch import Tensor, nn

    class TorchSecondPass(nn.Module):
        """The plain map, then the conditional one (:meth:`QuantileCorrection.fit`'s ``second_pass``)."""

        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = first, second

        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            return self.second(self.first(showers, energy, eta), energy, eta)

    return TorchSecondPass().eval()


def torch_layer_pass(corr: QuantileCorrection) -> Any:
    """A layer-energy pass (``level="layers"``): the layer energies mapped as the cells of one layer (total kept),
    every cell of a layer scaled by its layer's new energy over the old (an empty layer stays empty)."""
    import torch
    from torch import Tensor, nn

    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

    layers = QuantileCorrection("share", [len(corr.layer_sizes)], corr.log_e_nodes, corr.eta_nodes, corr.levels,
                                corr.p_gen, corr.p_ref, corr.q_gen, corr.q_ref, source="the layer-energy pass")  # fmt: skip

    class TorchLayerPass(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.map = torch_quantile_correction(layers)
            self.slices = [(sl.start, sl.stop) for sl in corr.layer_slices]

        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            s = showers.to(torch.float32)
            e_layer = torch.cat([s[:, a:b].sum(1, keepdim=True) for a, b in self.slices], 1)
            new = self.map(e_layer, energy, eta)
            ok = e_layer > 0
            scale = torch.where(ok, new / torch.where(ok, e_layer, torch.ones_like(e_layer)), torch.ones_like(e_layer))
            return torch.cat([s[:, a:b] * scale[:, i : i + 1] for i, (a, b) in enumerate(self.slices)], 1)

    return TorchLayerPass().eval()


def torch_quantile_correction(corr: QuantileCorrection) -> Any:
    import torch
    from torch import Tensor, nn

    from lhcml.models.fastcalo.quantile_map import LEVEL_MIN, LEVEL_SPAN, quantile_levels

    class TorchQuantileCorrection(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            f32 = dict(dtype=torch.float32)
            self.variable = corr.variable
            self.v, self.k = corr.n_voxels, len(corr.levels)
            # the cheaper lookups (the same showers): a clamp-free search that keeps its last look for a
            # power-of-two number of levels, the level index in closed form for the cosine-spaced levels every
            # fit writes (quantile_levels)
            self.pow2 = self.k >= 2 and (self.k & (self.k - 1)) == 0
            self.cosine = bool(np.allclose(corr.levels, quantile_levels(self.k), rtol=0.0, atol=1e-9))
            self.nb, self.nh = len(corr.log_e_nodes), len(corr.eta_nodes)
            self.slices = [(sl.start, sl.stop) for sl in corr.layer_slices]
            # the tables as one row each: every lookup is a torch.gather along it (ONNX GatherElements; a flat
            # tensor indexed with an (N, V) index becomes Gather, which onnxruntime runs ~6x slower per element)
            self.register_buffer("qg", torch.as_tensor(corr.q_gen.reshape(1, -1), **f32))
            self.register_buffer("qr", torch.as_tensor(corr.q_ref.reshape(1, -1), **f32))
            self.register_buffer("pg", torch.as_tensor(corr.p_gen.reshape(1, -1), **f32))
            self.register_buffer("pr", torch.as_tensor(corr.p_ref.reshape(1, -1), **f32))
            self.register_buffer("lev", torch.as_tensor(corr.levels, **f32))
            self.register_buffer("lev_row", torch.as_tensor(corr.levels, **f32)[None, :])
            self.register_buffer("e_nodes", torch.as_tensor(corr.log_e_nodes, **f32))
            self.register_buffer("eta_nodes", torch.as_tensor(corr.eta_nodes, **f32))
            self.register_buffer("vox", torch.arange(self.v, dtype=torch.int64)[None, :])
            self.conditional, self.condition = corr.condition is not None, corr.condition
            if self.conditional:  # (H * B, L, C) bin medians of each layer's energy fraction
                self.nc = corr.cond_nodes.shape[-1]
                self.register_buffer("cond_nodes", torch.as_tensor(
                    corr.cond_nodes.reshape(-1, *corr.cond_nodes.shape[2:]), **f32))
                if corr.condition == "eta_phase":
                    self.register_buffer("cell_deta", torch.as_tensor(corr.cell_deta, **f32)[None, :])
                if corr.condition == "shower_width":  # (V, 1) each voxel's eta offset and its square
                    from lhcml.models.fastcalo.quantile_map import eta_offsets

                    x = eta_offsets(corr.layer_sizes, corr.cell_deta, corr.cell_neta)
                    self.register_buffer("eta_x", torch.as_tensor(x, **f32)[:, None])
                    self.register_buffer("eta_x2", torch.as_tensor(np.square(x), **f32)[:, None])

        def _take(self, row: Tensor, idx: Tensor) -> Tensor:
            """``row[0, idx]`` for an ``(N, V)`` index, as one GatherElements along the row (static reshapes)."""
            return torch.gather(row, 1, idx.reshape(1, -1)).reshape(-1, self.v)

        def _per_cell(self, x: Tensor) -> Tensor:
            """``(N, L) -> (N, V)``: each layer's value repeated over its cells (Expand + Concat, no gather)."""
            return torch.cat([x[:, i : i + 1].expand(-1, b - a) for i, (a, b) in enumerate(self.slices)], 1)

        @staticmethod
        def _bracket(x: Tensor, nodes: Tensor, n: int) -> tuple[Tensor, Tensor]:
            if n == 1:
                return torch.zeros_like(x, dtype=torch.int64), torch.zeros_like(x)
            xc = torch.minimum(torch.maximum(x, nodes[0]), nodes[-1])
            lo = (xc[:, None] >= nodes[None, 1:-1]).to(torch.int64).sum(1)
            return lo, (xc - nodes[lo]) / (nodes[lo + 1] - nodes[lo])

        @staticmethod
        def _count_below(table_at: Any, y: Tensor, k: int) -> Tensor:
            """Number of the k increasing values ``table_at(j)`` below ``y`` (binary search, fixed steps)."""
            i = torch.zeros_like(y, dtype=torch.int64)
            step = 1 << int(math.ceil(math.log2(k)))
            while step >= 1:
                cand = i + step
                below = table_at(torch.clamp(cand, max=k) - 1) < y
                i = torch.where((cand <= k) & below, cand, i)
                step >>= 1
            return i

        @staticmethod
        def _search_pow2(table_at: Any, y: Tensor, k: int) -> tuple[Tensor, Tensor]:
            """:meth:`_count_below` for ``k`` a power of two, cheaper in onnxruntime: no clamps (the steps ``k/2 .. 1``
            never leave the table and stop at ``min(i, k - 1)``; one last look at ``i`` decides ``i = k``) and no
            Where (``i`` grows by the look's outcome cast to an integer; an element-wise Where with a per-element
            condition costs onnxruntime ~15 Adds). Returns ``i`` and the last value looked at, ``table[min(i, k -
            1)]``: the upper one of the two values the map interpolates between (``table[clamp(i - 1, 0, k - 2) +
            1]``) except at ``i = 0``, where the map's fraction is clamped to 0 whatever it is."""
            i = torch.zeros_like(y, dtype=torch.int64)
            step = k >> 1
            while True:
                t = table_at(i if step <= 1 else i + (step - 1))
                below = (t < y).to(torch.int64)
                i = i + (below if step <= 1 else below * step)
                if step == 0:
                    return i, t
                step >>= 1

        def _condition_values(self, s: Tensor, e: Tensor, eta: Tensor | None) -> Tensor:
            """:func:`lhcml.models.fastcalo.quantile_map._condition_values` in torch ``(N, L)``."""
            if self.condition == "eta_phase":
                return torch.remainder(eta.reshape(-1, 1).abs().to(torch.float32) / self.cell_deta, 1.0)
            e_layer = torch.cat([s[:, a:b].sum(1, keepdim=True) for a, b in self.slices], 1)
            if self.condition == "layer_energy":
                return e_layer / e
            if self.condition == "shower_width":
                m1 = torch.cat([s[:, a:b] @ self.eta_x[a:b] for a, b in self.slices], 1)
                m2 = torch.cat([s[:, a:b] @ self.eta_x2[a:b] for a, b in self.slices], 1)
                tot = e_layer.sum(1, keepdim=True)
                width = torch.sqrt(torch.clamp(e_layer * m2 - m1 * m1, min=0.0)).sum(1, keepdim=True)
                w = torch.where(tot > 0, width / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.zeros_like(tot))
                return w.expand(-1, len(self.slices))
            ok = e_layer > 0
            if self.condition == "layer_peak":
                peak = torch.cat([s[:, a:b].amax(1, keepdim=True) for a, b in self.slices], 1)
                return torch.where(ok, peak / torch.where(ok, e_layer, torch.ones_like(e_layer)), torch.zeros_like(peak))
            tot = e_layer.sum(1, keepdim=True)
            idx = torch.arange(len(self.slices), dtype=s.dtype, device=s.device)[None, :]
            depth = torch.where(tot > 0, (e_layer * idx).sum(1, keepdim=True) / torch.where(tot > 0, tot, torch.ones_like(tot)),
                                torch.zeros_like(tot))  # fmt: skip
            return depth.expand(-1, len(self.slices))

        def _cond_cells(self, nodes: list[tuple[Tensor, Tensor]], frac: Tensor) -> list[tuple[Tensor, Tensor]]:
            """:meth:`QuantileCorrection._cond_cells` in torch: rows and weights of the two bracketing bins."""
            out = []
            for node, w in nodes:
                cn = self.cond_nodes[node]  # (n, L, C)
                xc = torch.minimum(torch.maximum(frac, cn[..., 0]), cn[..., -1])
                if self.nc > 2:
                    lo = (xc[..., None] >= cn[..., 1:-1]).to(torch.int64).sum(-1)
                else:
                    lo = torch.zeros_like(xc, dtype=torch.int64)
                c0 = torch.gather(cn, 2, lo[..., None])[..., 0]
                c1 = torch.gather(cn, 2, lo[..., None] + 1)[..., 0]
                wc = self._per_cell((xc - c0) / (c1 - c0))
                row0 = (node[:, None] * self.nc + self._per_cell(lo)) * self.v + self.vox
                out += [(row0, w[:, None] * (1.0 - wc)), (row0 + self.v, w[:, None] * wc)]
            return out

        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            s = showers.to(torch.float32)
            e = energy.reshape(-1, 1).to(torch.float32)
            v, k = self.v, self.k
            b0, wb = self._bracket(torch.log(e[:, 0]), self.e_nodes, self.nb)
            if self.nh > 1:
                h0, wh = self._bracket(eta.reshape(-1).abs().to(torch.float32), self.eta_nodes, self.nh)
                cand = [(h0, b0, (1 - wh) * (1 - wb)), (h0, b0 + 1, (1 - wh) * wb),
                        (h0 + 1, b0, wh * (1 - wb)), (h0 + 1, b0 + 1, wh * wb)]  # fmt: skip
            else:
                cand = [(torch.zeros_like(b0), b0, 1 - wb), (torch.zeros_like(b0), b0 + 1, wb)]
            nodes = [(torch.clamp(h, max=self.nh - 1) * self.nb + torch.clamp(b, max=self.nb - 1), w) for h, b, w in cand]
            if self.conditional:
                cells = self._cond_cells(nodes, self._condition_values(s, e, eta))
            else:
                cells = [(node[:, None] * v + self.vox, w[:, None]) for node, w in nodes]

            bases = [(c * k, w) for c, w in cells]

            def p_at(flat: Tensor) -> Tensor:
                return sum(w * self._take(flat, c) for c, w in cells)

            def q_at(flat: Tensor, j: Tensor) -> Tensor:
                return sum(w * self._take(flat, base + j) for base, w in bases)

            if self.variable == "share":
                tot = torch.cat([s[:, a:b].sum(1, keepdim=True).expand(-1, b - a) for a, b in self.slices], 1)
                x = torch.where(tot > 0, s / torch.where(tot > 0, tot, torch.ones_like(tot)), torch.zeros_like(s))
            else:
                x = s / e
            pg, pr = p_at(self.pg), p_at(self.pr)
            pos = x > 0
            # log(x) of the non-zero cells, log(1) = 0 of the others (arithmetic instead of an element-wise Where:
            # the same values, x + 0 and 0 + 1)
            y = torch.log(torch.clamp(x, min=0.0) + (~pos).to(torch.float32))
            if self.pow2:
                i, t = self._search_pow2(lambda j: q_at(self.qg, j), y, k)
                lo = torch.clamp(i - 1, 0, k - 2)
                # table[lo + 1] is the last look t, except at i = 0 where t = table[0] = q0: one above it keeps
                # the fraction (y - q0) / (q1 - q0) <= 0, clamped to 0 as with table[1]
                q0, q1 = q_at(self.qg, lo), t + (i == 0).to(torch.float32)
            else:
                i = self._count_below(lambda j: q_at(self.qg, j), y, k)
                lo = torch.clamp(i - 1, 0, k - 2)
                q0, q1 = q_at(self.qg, lo), q_at(self.qg, lo + 1)
            f = torch.clamp((y - q0) / (q1 - q0), 0.0, 1.0)
            lev = self.lev
            lev0, lev1 = self._take(self.lev_row, lo), self._take(self.lev_row, lo + 1)
            s1 = lev0 + f * (lev1 - lev0)
            # the shift beyond the outer quantiles, y - q0 below the first and y - q1 above the last (x 1 and x 0 of
            # finite values instead of Where: the same numbers)
            d = (y - q0) * (i == 0).to(torch.float32) + (y - q1) * (i == k).to(torch.float32)
            u = 1.0 - pg + pg * s1
            zero = (u <= 1.0 - pr) | ~pos
            s2 = torch.clamp((u - 1.0 + pr) / (pr + (pr <= 0).to(torch.float32)), lev[0], lev[-1])
            if self.cosine:  # the levels are quantile_levels(k): the last one below s2 in closed form
                x = torch.acos(torch.clamp(1.0 - 2.0 * (s2 - LEVEL_MIN) / LEVEL_SPAN, -1.0, 1.0)) * ((k - 1) / math.pi)
                j = torch.clamp(torch.ceil(x).to(torch.int64) - 1, 0, k - 2)
            else:
                j = torch.clamp(self._count_below(lambda jj: self._take(self.lev_row, jj), s2, k) - 1, 0, k - 2)
            lj0, lj1 = self._take(self.lev_row, j), self._take(self.lev_row, j + 1)
            g = (s2 - lj0) / (lj1 - lj0)
            r0, r1 = q_at(self.qr, j), q_at(self.qr, j + 1)
            # exp(...) x 0 for the zeroed cells (the exponent bounded so that it is finite there: exp(88) < float32 max)
            m = torch.exp(torch.clamp(r0 + g * (r1 - r0) + d, max=88.0)) * (~zero).to(torch.float32)
            if self.variable == "energy":
                return m * e
            parts = []
            for a, b in self.slices:
                tot = s[:, a:b].sum(1, keepdim=True)
                msum = m[:, a:b].sum(1, keepdim=True)
                ok = msum > 0
                parts.append(torch.where(ok, m[:, a:b] * tot / torch.where(ok, msum, torch.ones_like(msum)), s[:, a:b]))
            return torch.cat(parts, 1)

    return TorchQuantileCorrection().eval()


__all__ = ["torch_layer_pass", "torch_quantile_correction", "torch_second_pass"]
