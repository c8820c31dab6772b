"""The strip pass (:mod:`lhcml.models.fastcalo.strip_pass`) as a ``torch.nn.Module`` for the ONNX sampling graph:
argmax, comparisons, masks and static gathers only (no data-dependent control flow). Built by
:meth:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection.torch_module` for a ``level="strips"`` pass; torch is
imported only here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection


def _strip_module(inner: QuantileCorrection, start: int, n_eta: int, n_phi: int) -> Any:
    """The base class every strip module derives from: the pass's one-column map (``map``), the strip block
    ``[a, b)`` of the voxels and the strip index row ``k``; :meth:`strips` splits a batch into (showers, energy, strip
    cells ``(N, n_eta, n_phi)``) and :meth:`replace` puts new strip cells back."""
    import torch
    from torch import Tensor, nn

    from lhcml.models.fastcalo.quantile_map_torch import torch_quantile_correction

    class StripModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.map = torch_quantile_correction(inner)
            self.a, self.b = start, start + n_eta * n_phi
            self.register_buffer("k", torch.arange(n_eta, dtype=torch.int64)[None, :])

        def strips(self, showers: Tensor, energy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            s = showers.to(torch.float32)
            return s, energy.reshape(-1).to(torch.float32), s[:, self.a : self.b].reshape(-1, n_eta, n_phi)

        def replace(self, s: Tensor, cells: Tensor) -> Tensor:
            return torch.cat([s[:, : self.a], cells.reshape(-1, n_eta * n_phi), s[:, self.b :]], 1)

    return StripModule


def torch_strip_pass(corr: QuantileCorrection) -> Any:
    """The strip pass ``corr`` alone (its earlier passes are chained by the caller):
    ``(showers (N, V), energy (N,), eta (N,) or None) -> showers``, float32."""
    import torch
    from torch import Tensor

    from lhcml.models.fastcalo.strip_pass import MAX_RAISE, _inner, strip_geometry, strip_variable

    start, n_eta, n_phi, half = strip_geometry(corr.meta, corr.layer_sizes)
    height = strip_variable(corr.meta) == "height"
    inner = _inner(corr)
    if strip_variable(corr.meta) == "recentre":
        return _torch_recentre(corr, start, n_eta, n_phi, inner)
    if strip_variable(corr.meta) == "core":
        return _torch_core(corr, start, n_eta, n_phi, inner)
    if strip_variable(corr.meta) == "fside":
        return _torch_fside(start, n_eta, n_phi, inner, corr.meta.get("strip_eta_max"), corr.meta.get("strip_eta_min"))

    class TorchStripPass(_strip_module(inner, start, n_eta, n_phi)):
        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            s, e, cells = self.strips(showers, energy)
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
            return self.replace(s, cells * fac[:, :, None])

    return TorchStripPass().eval()


def _torch_core(corr: QuantileCorrection, start: int, n_eta: int, n_phi: int, inner: QuantileCorrection) -> Any:
    """The core strip pass (``strip_variable="core"``; :func:`~lhcml.models.fastcalo.strip_pass.core_factors`)."""
    import torch
    from torch import Tensor

    from lhcml.models.fastcalo.strip_pass import CORE_CAP, HALF_WINDOW

    nb = int(corr.meta.get("strip_phase_bins", 1))
    deta = float(corr.meta.get("strip_cell_deta", 1.0))
    from_cluster = corr.meta.get("strip_phase_from", "impact") == "cluster"

    class TorchStripCore(_strip_module(inner, start, n_eta, n_phi)):
        def __init__(self) -> None:
            super().__init__()
            k = self.k
            self.register_buffer("bins", torch.arange(nb, dtype=torch.int64)[None, :])
            self.register_buffer("kf", k.to(torch.float32))
            self.register_buffer("win", ((k - n_eta // 2).abs() <= HALF_WINDOW).to(torch.float32))

        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            s, e, cells = self.strips(showers, energy)
            p = cells.sum(2)
            i1 = torch.argmax(p, 1, keepdim=True)
            lo = torch.gather(p, 1, (i1 - 1).clamp(0, n_eta - 1))
            hi = torch.gather(p, 1, (i1 + 1).clamp(0, n_eta - 1))
            mid = torch.gather(p, 1, i1)
            side = lo + hi
            s3 = side + mid
            ok = (i1 > 0) & (i1 < n_eta - 1) & (s3 > 0) & (side > 0)
            one, zero = torch.ones_like(s3), torch.zeros_like(s3)
            x = torch.where(ok, side / torch.where(ok, s3, one), zero)
            if nb > 1:
                if from_cluster:
                    w = p * self.win
                    tw = w.sum(1, keepdim=True)
                    bc = torch.where(tw > 0, (w * self.kf).sum(1, keepdim=True) / torch.where(tw > 0, tw, one), zero)
                    # fmod(|v|, 1) - 0.5 of lhcml.sim.clusters' u; its |.| binned
                    v = (bc - i1.to(torch.float32) - 0.5).abs()
                    d = v - torch.floor(v) - 0.5
                else:
                    if eta is None:
                        raise ValueError("a core strip pass in phase bins needs each shower's eta")
                    a = eta.reshape(-1, 1).to(torch.float32).abs() / deta
                    d = a - torch.floor(a) - 0.5
                b = torch.clamp((d.abs() * (2 * nb)).to(torch.int64), 0, nb - 1)
                cols = torch.where(self.bins == b, x * e[:, None], torch.zeros_like(x))
                mapped = self.map(cols, e, eta).amax(1, keepdim=True) / e[:, None]
            else:
                mapped = self.map(x * e[:, None], e, eta) / e[:, None]
            x_new = torch.where(ok & (mapped > 0), mapped, x)
            big = torch.where(side > 0, torch.maximum(lo, hi) / torch.where(side > 0, side, one), one)
            xn = torch.minimum(torch.clamp(x_new, min=0.0), CORE_CAP / (1.0 + big))
            fs = torch.where(ok, xn * s3 / torch.where(ok, side, one), one)
            okc = ok & (mid > 0)
            fc = torch.where(okc, (1.0 - xn) * s3 / torch.where(okc, mid, one), one)
            k = self.k
            fac = torch.where(((k - i1).abs() == 1) & ok, fs.expand_as(p), torch.ones_like(p))
            fac = torch.where((k == i1) & ok, fc.expand_as(p), fac)
            return self.replace(s, cells * fac[:, :, None])

    return TorchStripCore().eval()


def _torch_fside(start: int, n_eta: int, n_phi: int, inner: QuantileCorrection, eta_max: float | None,
                 eta_min: float | None = None) -> Any:  # fmt: skip
    """The outer-share strip pass (``strip_variable="fside"``; :func:`~lhcml.models.fastcalo.strip_pass.fside_factors`):
    an argmax, masks and sums."""
    import torch
    from torch import Tensor

    from lhcml.models.fastcalo.strip_pass import CORE_CAP, FSIDE_HALF

    class TorchStripFside(_strip_module(inner, start, n_eta, n_phi)):
        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            s, e, cells = self.strips(showers, energy)
            p = cells.sum(2)
            i1 = torch.argmax(p, 1, keepdim=True)
            dk = (self.k - i1).abs()
            zp = torch.zeros_like(p)
            core, outer = dk <= 1, (dk >= 2) & (dk <= FSIDE_HALF)
            mid = torch.gather(p, 1, i1)
            e3 = torch.where(core, p, zp).sum(1, keepdim=True)
            out = torch.where(outer, p, zp).sum(1, keepdim=True)
            omax = torch.where(outer, p, zp).amax(1, keepdim=True)
            ok = (i1 >= FSIDE_HALF) & (i1 < n_eta - FSIDE_HALF) & (e3 > 0) & (out > 0) & (mid > 0)
            one, zero = torch.ones_like(e3), torch.zeros_like(e3)
            e7 = e3 + out
            x = torch.where(ok, out / torch.where(ok, e7, one), zero)
            mapped = self.map(x * e[:, None], e, eta) / e[:, None]
            x_new = torch.where(ok & (mapped > 0), mapped, x)
            if eta_max is not None:  # beyond it the shower is left exactly as it is
                if eta is None:
                    raise ValueError("an fside strip pass with strip_eta_max needs each shower's eta")
                ok = ok & (eta.reshape(-1, 1).to(torch.float32).abs() < float(eta_max))
            if eta_min is not None:  # below it too (h31c)
                if eta is None:
                    raise ValueError("an fside strip pass with strip_eta_min needs each shower's eta")
                ok = ok & (eta.reshape(-1, 1).to(torch.float32).abs() >= float(eta_min))
            a = CORE_CAP * mid * out
            cap = torch.where(ok, a / torch.where(ok, a + omax * e3, one), one)
            xn = torch.minimum(torch.clamp(x_new, min=0.0), cap)
            fc = torch.where(ok, (1.0 - xn) * e7 / torch.where(ok, e3, one), one)
            fo = torch.where(ok, xn * e7 / torch.where(ok, out, one), one)
            fac = torch.where(core & ok, fc.expand_as(p), torch.ones_like(p))
            fac = torch.where(outer & ok, fo.expand_as(p), fac)
            return self.replace(s, cells * fac[:, :, None])

    return TorchStripFside().eval()


def _torch_recentre(corr: QuantileCorrection, start: int, n_eta: int, n_phi: int, inner: QuantileCorrection) -> Any:
    """The recentring strip pass (``strip_variable="recentre"``; :func:`~lhcml.models.fastcalo.strip_pass.
    centre_residual`, :func:`~lhcml.models.fastcalo.strip_pass.shift_cells`) as a module: floor, two gathers."""
    import torch
    from torch import Tensor

    from lhcml.models.fastcalo.strip_pass import MAX_SHIFT, RECENTRE_HALF, RECENTRE_OFFSET

    deta = float(corr.meta["strip_cell_deta"])
    whole = corr.meta.get("strip_shift", "linear") == "whole"

    class TorchStripRecentre(_strip_module(inner, start, n_eta, n_phi)):
        def __init__(self) -> None:
            super().__init__()
            k = self.k
            self.register_buffer("kc", (k - n_eta // 2).to(torch.float32))
            self.register_buffer("win", ((k - n_eta // 2).abs() <= RECENTRE_HALF).to(torch.float32))

        def forward(self, showers: Tensor, energy: Tensor, eta: Tensor | None = None) -> Tensor:
            if eta is None:
                raise ValueError("a recentring strip pass needs each shower's eta")
            s, e, cells = self.strips(showers, energy)
            w = cells.sum(2) * self.win
            tot = w.sum(1)
            pos = tot > 0
            b = torch.where(pos, (w * self.kc).sum(1) / torch.where(pos, tot, torch.ones_like(tot)), torch.zeros_like(tot))
            a = eta.reshape(-1).to(torch.float32).abs() / deta
            r = b - ((a - torch.floor(a)) - 0.5)
            r_new = self.map(((r + RECENTRE_OFFSET) * e)[:, None], e, eta)[:, 0] / e - RECENTRE_OFFSET
            d = torch.clamp(r_new - r, -MAX_SHIFT, MAX_SHIFT)
            if whole:
                d = torch.round(d)
            fl = torch.floor(d)
            f = (d - fl)[:, None, None]
            src0 = self.k - fl.to(torch.int64)[:, None]
            out = torch.zeros_like(cells)
            for src, wgt in ((src0, 1.0 - f), (src0 - 1, f)):
                inside = ((src >= 0) & (src < n_eta))[:, :, None]
                idx = src.clamp(0, n_eta - 1)[:, :, None].expand(-1, -1, n_phi)
                out = out + torch.where(inside, torch.gather(cells, 1, idx), torch.zeros_like(cells)) * wgt
            t0, t1 = cells.sum((1, 2)), out.sum((1, 2))
            scale = torch.where(t1 > 0, t0 / torch.where(t1 > 0, t1, torch.ones_like(t1)), torch.ones_like(t1))
            return self.replace(s, out * scale[:, None, None])

    return TorchStripRecentre().eval()


__all__ = ["torch_strip_pass"]
