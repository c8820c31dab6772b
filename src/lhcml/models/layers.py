"""Shared neural-network building blocks: MLPs, input normalisation, masked pooling, attention.

Masks follow the on-disk contract: ``valid`` is True for a real object, False for a padded slot.
Every block here is exactly invariant to the values stored in padded slots (they are zeroed or
excluded with ``torch.where``, never multiplied, so even NaN padding cannot leak) and, where the
block is permutation-equivariant, to the order of the objects. All blocks export to ONNX.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    """The activation layer called ``name`` (``relu``, ``silu``, ``gelu``, ``tanh``, ``selu``...)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}' (valid: {', '.join(sorted(_ACTIVATIONS))})")
    return _ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """Fully connected network ``in -> hidden... -> out`` (no activation after the last layer).

    Parameters
    ----------
    in_dim, out_dim
        Input and output feature sizes.
    hidden
        Sizes of the hidden layers.
    act
        Activation name (see :func:`activation`).
    dropout
        Dropout probability after each hidden activation.
    batch_norm
        Add a BatchNorm1d after each hidden linear layer (as DL1); only for ``(B, F)`` inputs.
    final_act
        Also apply the activation after the last layer (for feature extractors such as DIPS φ).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: list[int] | tuple[int, ...] = (),
        act: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        final_act: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers.append(nn.Linear(a, b))
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[-1], out_dim))
        if final_act:
            layers.append(activation(act))
        super().__init__(*layers)


class Normaliser(nn.Module):
    """``(x - mean) / std`` with the constants stored as buffers, so scaling travels with the model.

    The buffers start as identity (mean 0, std 1) and are filled by :meth:`set` from a
    normalisation dictionary; they are saved in the state dict and folded into exported graphs.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    @torch.no_grad()
    def set(self, mean: Tensor, std: Tensor) -> None:
        """Fill the constants; non-positive or non-finite std values raise ``ValueError``."""
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(f"normalisation shape {tuple(mean.shape)} != {tuple(self.mean.shape)}")
        if not bool(torch.all(torch.isfinite(mean))) or not bool(torch.all(std > 0)):
            raise ValueError("normalisation constants must be finite with std > 0")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def zero_padded(x: Tensor, valid: Tensor) -> Tensor:
    """``x`` (B, N, F) with padded slots set to 0 (robust to NaN/inf padding)."""
    return torch.where(valid.unsqueeze(-1), x, torch.zeros_like(x))


def masked_sum(x: Tensor, valid: Tensor) -> Tensor:
    """Sum of ``x`` (B, N, F) over the valid objects -> (B, F)."""
    return zero_padded(x, valid).sum(dim=1)


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``x`` (B, N, F) over the valid objects (0 for an empty jet) -> (B, F)."""
    n = valid.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
    return masked_sum(x, valid) / n


def _masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask``; all-masked rows give zeros."""
    neg = torch.finfo(scores.dtype).min
    scores = torch.where(mask, scores, torch.full_like(scores, neg))
    w = torch.softmax(scores, dim=dim)
    return torch.where(mask, w, torch.zeros_like(w))


class MaskedMultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention with a key-padding mask (True = real key).

    Written out explicitly (rather than ``nn.MultiheadAttention``) so that the masking is exact
    for jets with zero tracks and the graph exports to ONNX with dynamic object axes.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, Dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, Nq, Nk)
        key_mask = valid[:, None, None, :].expand_as(scores)
        attn = self.dropout(_masked_softmax(scores, key_mask, dim=-1))
        y = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.out(y)


class TransformerEncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer (self-attention + feed-forward) over valid objects."""

    def __init__(
        self, dim: int, num_heads: int, ff_mult: int = 2, dropout: float = 0.0, act: str = "silu"
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MaskedMultiheadAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = MLP(dim, dim, hidden=[ff_mult * dim], act=act, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), valid))
        x = x + self.drop(self.ff(self.norm2(x)))
        return zero_padded(x, valid)


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerEncoderLayer` followed by a final LayerNorm."""

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        ff_mult: int = 2,
        dropout: float = 0.0,
        act: str = "silu",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(dim, num_heads, ff_mult, dropout, act) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        x = zero_padded(x, valid)
        for layer in self.layers:
            x = layer(x, valid)
        return zero_padded(self.norm(x), valid)


class AttentionPooling(nn.Module):
    """Global attention pooling (as GN1): per-head weights softmax-normalised over valid objects.

    ``out = concat_h sum_i softmax_i(w_h . x_i) * (V x_i)_h``; an empty jet pools to zeros.
    """

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.score = nn.Linear(dim, num_heads)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        b, n, d = x.shape
        scores = self.score(x)  # (B, N, H)
        w = _masked_softmax(scores, valid.unsqueeze(-1).expand_as(scores), dim=1)
        v = self.value(x).reshape(b, n, self.num_heads, d // self.num_heads)
        return (w.unsqueeze(-1) * zero_padded(v.reshape(b, n, d), valid).reshape(v.shape)).sum(
            dim=1
        ).reshape(b, d)
