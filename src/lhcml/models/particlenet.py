"""ParticleNet (Qu, Gouskos, PRD 101 (2020) 056019): EdgeConv on dynamic kNN graphs.

Three EdgeConv blocks with k = 16 nearest neighbours, channels (64,64,64), (128,128,128),
(256,256,256) and a shortcut, neighbours found in (Δη, Δφ) for the first block and in the
learned feature space after (dynamic graph); global average pooling, FC 256 + ReLU + dropout
0.1. Padded constituents are never neighbours (their distances are +inf); constituents of jets
with ≤ k constituents get zero-feature points for their missing neighbours, as published
(``missing_neighbours: zero``; ``drop``: mean over the real ones). Equidistant neighbours (constituents at
identical Δη, Δφ are common: calorimeter cells) are chosen by a hash of their input features,
not by slot, so the scores do not depend on the order or the padding of the constituents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.base import JetClassificationHead
from lhcml.models.constituent_base import ConstituentModel, compact_constituents, exporting
from lhcml.models.layers import masked_mean, zero_padded
from lhcml.models.registry import register_model


def _stable_order(x: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest entries along the last axis, ties in slot order.

    Eager: a stable sort; exporting: ``topk``, whose ONNX definition also puts the lower index
    first among equal values.
    """
    if exporting():
        return torch.topk(x, k, dim=-1, largest=False, sorted=True)[1]
    return torch.sort(x, dim=-1, stable=True)[1][..., :k]


def knn_indices(coords: Tensor, valid: Tensor, k: int, key: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Indices ``(B, N, k)`` of the ``k`` nearest valid neighbours (self excluded) and their mask.

    Padded points and the point itself have infinite distance; ``k`` dummy columns of infinite
    distance are appended so that the selection works (also in ONNX) for any number of points,
    and every neighbour slot that is not a real neighbour is flagged False in the mask.

    Ties: ``key`` (B, N), a per-point value that depends only on the point's content (e.g. a hash
    of its input features), orders equidistant neighbours (lower key first), so that the
    neighbour set does not depend on the slot order or the number of padding slots. Real
    constituents often share their (Δη, Δφ) exactly (calorimeter cell centres), so distances
    tie exactly. Without ``key`` ties go to the lower slot. Low-dimensional coordinates
    (≤ 4) use the exact difference form ``Σ (a − b)²`` (identical values for identical points,
    whatever their slot or the tensor width); higher dimensions the ``|a|² + |b|² − 2a·b`` GEMM
    (there only exact duplicates tie, and those are interchangeable).
    """
    b, n, c = coords.shape
    if c <= 4:
        d = ((coords.unsqueeze(2) - coords.unsqueeze(1)) ** 2).sum(-1)
    else:
        sq = (coords * coords).sum(-1)
        d = sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * coords @ coords.transpose(1, 2)  # squared
    ar = torch.arange(n, device=coords.device)
    eye = (ar.unsqueeze(0) == ar.unsqueeze(1)).unsqueeze(0)
    bad = eye | ~valid.unsqueeze(1)
    d = torch.where(bad, torch.full_like(d, math.inf), d)
    order = None
    if key is not None:  # columns in key order, so that "lower slot first" means "lower key first"
        key = torch.where(valid, key.to(d.dtype), torch.full_like(d[:, 0], math.inf))
        order = _stable_order(key, n)  # (B, N)
        d = torch.gather(d, 2, order.unsqueeze(1).expand(-1, n, -1))
    d = torch.cat([d, torch.full((b, n, k), math.inf, dtype=d.dtype, device=d.device)], dim=2)
    idx = _stable_order(d, k)
    dist = torch.gather(d, 2, idx)
    nbr_ok = torch.isfinite(dist) & valid.unsqueeze(-1)
    if order is not None:
        idx = torch.gather(order.unsqueeze(1).expand(-1, n, -1), 2, idx.clamp(max=n - 1))
    idx = torch.where(nbr_ok, idx, torch.zeros_like(idx))
    return idx, nbr_ok


def _gather_neighbours(x: Tensor, idx: Tensor) -> Tensor:
    """``x`` (B, N, C), ``idx`` (B, N, k) -> (B, N, k, C)."""
    b, n, c = x.shape
    k = idx.shape[-1]
    flat = idx.reshape(b, n * k, 1).expand(-1, -1, c)
    return torch.gather(x, 1, flat).reshape(b, n, k, c)


class EdgeConvBlock(nn.Module):
    """EdgeConv: ``x_i' = ReLU(shortcut(x_i) + mean_{j∈kNN(i)} h(x_i, x_j − x_i))``.

    ``h`` is a stack of 1×1 convolutions with batch normalisation and ReLU, as in ParticleNet.
    A constituent with fewer than ``k`` real neighbours (jets with ≤ k constituents): with
    ``zero_missing`` (as published: padded points carry zero features) the missing neighbours
    are points with zero features and the mean is over ``k``; otherwise the mean is over the
    real neighbours only. Neither depends on the number of padding slots.
    """

    def __init__(self, k: int, in_dim: int, channels: Sequence[int], zero_missing: bool = True) -> None:
        super().__init__()
        self.k = k
        self.zero_missing = zero_missing
        layers: list[nn.Module] = []
        dims = [2 * in_dim, *channels]
        for a, c in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Conv2d(a, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.edge = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv1d(in_dim, channels[-1], 1, bias=False), nn.BatchNorm1d(channels[-1]))
        self.act = nn.ReLU()

    def forward(self, coords: Tensor, x: Tensor, valid: Tensor, key: Tensor | None = None) -> Tensor:
        idx, ok = knn_indices(coords, valid, self.k, key)
        nb = _gather_neighbours(x, idx)  # (B, N, k, C)
        if self.zero_missing:
            nb = torch.where(ok.unsqueeze(-1), nb, torch.zeros_like(nb))
        xi = x.unsqueeze(2).expand_as(nb)
        e = torch.cat([xi, nb - xi], dim=-1).permute(0, 3, 1, 2)  # (B, 2C, N, k)
        h = self.edge(e).permute(0, 2, 3, 1)  # (B, N, k, C')
        if self.zero_missing:
            agg = h.mean(dim=2)
        else:
            h = torch.where(ok.unsqueeze(-1), h, torch.zeros_like(h))
            agg = h.sum(dim=2) / ok.sum(dim=2, keepdim=True).clamp(min=1).to(h.dtype)
        sc = self.shortcut(x.transpose(1, 2)).transpose(1, 2)
        return zero_padded(self.act(sc + agg), valid)


def _content_key(x: Tensor, valid: Tensor) -> Tensor:
    """A per-constituent hash of its input features (B, N): the kNN tie-break of ParticleNet.

    A fixed irrational-weighted sum of the features, computed row by row (elementwise product
    and a reduction over the feature axis, no GEMM), so that a constituent gets the same key in
    any slot and any batch width; distinct constituents get distinct keys, and constituents
    with equal keys have identical inputs (interchangeable). 0 for padded slots.
    """
    w = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device) * 0.6180339887 + 0.4142135624
    key = (torch.where(valid.unsqueeze(-1), x, torch.zeros_like(x)) * w).sum(-1)
    return torch.where(valid, key, torch.zeros_like(key))


@register_model("particlenet")
class ParticleNet(ConstituentModel):
    """ParticleNet (EdgeConv with dynamic kNN graphs) over the valid constituents.

    Parameters
    ----------
    k
        Number of nearest neighbours (16 as published).
    conv_params
        Channels of the EdgeConv blocks (published: (64,64,64), (128,128,128), (256,256,256)).
    fc_sizes, dropout
        Fully connected layers after global average pooling (published: 256, dropout 0.1).
    missing_neighbours
        Constituents of jets with ≤ k constituents: ``"zero"`` (as published and in weaver-core:
        the missing neighbours are zero-feature points, the mean is over k) or ``"drop"`` (mean
        over the real neighbours only; lhcml before December 2026).
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        k: int = 16,
        conv_params: Sequence[Sequence[int]] = ((64, 64, 64), (128, 128, 128), (256, 256, 256)),
        fc_sizes: Sequence[int] = (256,),
        dropout: float = 0.1,
        missing_neighbours: str = "zero",
    ) -> None:
        super().__init__(n_classes, input_dims)
        if k < 1 or not conv_params:
            raise ConfigError("particlenet needs k >= 1 and at least one EdgeConv block")
        if missing_neighbours not in ("zero", "drop"):
            raise ConfigError(f"particlenet: missing_neighbours is 'zero' or 'drop' (got {missing_neighbours!r})")
        self.input_bn = nn.BatchNorm1d(self.n_features)
        blocks = []
        in_dim = self.n_features
        for ch in conv_params:
            blocks.append(EdgeConvBlock(k, in_dim, list(ch), missing_neighbours == "zero"))
            in_dim = list(ch)[-1]
        self.blocks = nn.ModuleList(blocks)
        self.heads["jet_classification"] = JetClassificationHead(
            in_dim, n_classes, hidden=list(fc_sizes), act="relu", dropout=dropout
        )

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        inputs = compact_constituents(inputs)
        valid = inputs["flow_valid"]
        x = self.features(inputs)
        key = _content_key(x, valid)
        x = zero_padded(self.input_bn(x.transpose(1, 2)).transpose(1, 2), valid)
        coords = torch.stack([self._raw(inputs, "deta"), self._raw(inputs, "dphi")], dim=-1)
        for i, block in enumerate(self.blocks):
            x = block(coords if i == 0 else x, x, valid, key)
        return {"logits": self.heads["jet_classification"](masked_mean(x, valid))}
