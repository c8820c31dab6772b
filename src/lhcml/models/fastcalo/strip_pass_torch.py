"""The strip pass (:mod:`lhcml.models.fastcalo.strip_pass`) as a ``torch.nn.Module`` for the ONNX sampling graph:
argmax, comparisons, masks and static gathers only (no data-dependent control flow). Built by
:meth:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection.torch_module` for a ``level="strips"`` pass; torch is
imported only here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection


def torch_strip_pass(corr: QuantileCorrection) -> Any:
    """The strip pass ``corr`` alone (its earlier passes are chained by the caller):
    ``(showers (N, V), energy (N,), eta (N,) or None) -> showers``, float32."""
    import torch
    from torch import Tensor, nn

    from lhcml.models.fastcalo.quantile_map_torch import torch_quantile_correction
    from lhcml.models.fastcalo.strip_pass import MAX_RAISE, _inner, strip_geometry, strip_variable

    start, n_eta, n_phi, half = strip_geometry(corr.meta, corr.layer_sizes)
    height = strip_variable(corr.meta) == "height"
    inner = _inner(corr)

    class TorchStripPass(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.map = torch_quantile_correction(inner)
            self.a, self.b = start, start + n_eta * n_phi
            self.register_buffer("k", torch.arange(n_eta, dtype=torch.int64)[None, :])

        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            s = showers.to(torch.float32)
            e = energy.reshape(-1).to(torch.float32)
            cells = s[:, self.a : self.b].reshape(-1, n_eta, n_phi)
            p = cells.sum(2)
            k = self.k
            i1 = torch.argmax(p, 1, keepdim=True)
            inner_loc = (p[:, 1:-1] > p[:, :-2]) & (p[:, 1:-1] >= p[:, 2:])
            no = torch.zeros_like(p[:, :1], dtype=torch.bool)
            loc = torch.cat([no, inner_loc, no], 1)
            cand = loc & (k != i1) & ((k - i1).abs() <= half) & (p > 0)
            neg = torch.full_like(p, -float("inf"))
            masked = torch.where(cand, p, neg)
            has2 = cand.any(1, keepdim=True)
            i2 = torch.where(has2, torch.argmax(masked, 1, keepdim=True), i1)
            e1, e2 = torch.gather(p, 1, i1), torch.gather(p, 1, i2)
            lo, hi = torch.minimum(i1, i2), torch.maximum(i1, i2)
            between = (k > lo) & (k < hi)
            emin = torch.where(between, p, torch.full_like(p, float("inf"))).amin(1, keepdim=True)
            emin = torch.where(torch.isfinite(emin), emin, e2)
            zero = torch.zeros_like(e2)
            prom = torch.where(has2, torch.clamp(e2 - emin, min=0.0), zero)
            if height:  # GeV in, GeV out (the map's variable is over E_inc)
                new_p = torch.clamp(self.map(torch.where(has2, e2, zero), e, eta) - emin, min=0.0)
            else:
                new_p = self.map(prom, e, eta)
            e2_new = torch.minimum(torch.clamp(emin + new_p, min=0.0), e2 + MAX_RAISE * (e1 - e2))
            give = torch.where(has2, e2 - e2_new, zero)
            core = ((k - i1).abs() <= 1) & ~between & (k != i2)
            c = (p * core).sum(1, keepdim=True)
            ok = has2 & (c > 0) & (e2 > 0) & (c + give > 0)
            one = torch.ones_like(c)
            f2 = torch.where(ok, e2_new / torch.where(ok, e2, one), one)
            fc = torch.where(ok, (c + give) / torch.where(ok, c, one), one)
            fac = torch.where(core & ok, fc.expand_as(p), torch.ones_like(p))
            fac = torch.where((k == i2) & ok, f2.expand_as(p), fac)
            new = (cells * fac[:, :, None]).reshape(-1, n_eta * n_phi)
            return torch.cat([s[:, : self.a], new, s[:, self.b :]], 1)

    return TorchStripPass().eval()


__all__ = ["torch_strip_pass"]
