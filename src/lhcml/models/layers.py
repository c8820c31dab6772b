"""Shared neural-network building blocks: MLPs, input normalisation, masked pooling, attention.

Masks follow the on-disk contract: ``valid`` is True for a real object, False for a padded slot.
Every block here is exactly invariant to the values stored in padded slots (they are zeroed or
excluded with ``torch.where``, never multiplied, so even NaN padding cannot leak) and, where the
block is permutation-equivariant, to the order of the objects. All blocks export to ONNX.
"""

from __future__ import annotations

import numpy as np
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


def fast_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Dropout (zero with probability ``p``, scale the rest by ``1/(1-p)``) with a faster CPU mask.

    Same distribution as :func:`torch.nn.functional.dropout` (``p`` resolved to 2⁻³²); on CPU the
    mask comes from numpy's PCG64 (two 32-bit uniforms per 64-bit draw) seeded by one draw from
    torch's generator, so seeded runs repeat. torch's CPU Bernoulli costs ~15 ns per element on
    our machine, 3-4x this (docs/benchmarks/boosted.md: a quarter of a ParT training step went to
    dropout masks). Other devices, and ``p`` outside (0, 1): torch's dropout.
    """
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.jit.is_tracing() or torch.jit.is_scripting():
        return nn.functional.dropout(x, p, True)
    gen = np.random.PCG64(int(torch.empty((), dtype=torch.int64).random_()))
    n = x.numel()
    r = torch.from_numpy(gen.random_raw((n + 1) // 2).view(np.int32)[:n].reshape(x.shape))
    drop = r < int(-(2**31) + round(p * 2**32))
    # one float factor per element (0 or 1/(1-p)): a plain product, forward and backward
    return x * torch.where(drop, 0.0, 1.0 / (1.0 - p)).to(x.dtype)


class FastDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with the mask of :func:`fast_dropout` (no parameters: state
    dicts are those of ``nn.Dropout``)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            raise ValueError("FastDropout has no in-place mode")
        return fast_dropout(x, self.p, self.training)


#: additive attention logit of a padded key: exp(-1e9 - max) is exactly 0 in float32 next to any
#: valid key, and finite, so rows without any valid key give no NaN (our choice)
MASKED_LOGIT = -1e9


def key_mask(valid: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Additive attention mask (B, 1, 1, Nk) from a key mask (True = real key): 0 or
    :data:`MASKED_LOGIT`. Add a pair bias (B, H, Nq, Nk) to it to combine both."""
    return torch.where(valid, 0.0, MASKED_LOGIT).to(dtype)[:, None, None, :]


class MultiheadAttention(nn.Module):
    """Multi-head scaled dot-product attention: key-padding mask, optional additive bias.

    The one attention implementation of the package (GN's transformer encoder, ParT's particle
    and class attention). ``forward(x, valid=None, context=None, bias=None)``:

    * ``x`` (B, Nq, D) queries; ``context`` (B, Nk, D) keys/values (default: ``x``,
      self-attention, one packed projection);
    * ``valid`` (B, Nk) bool, True = real key; padded keys get weight exactly 0 and their
      stored values never enter (they are zeroed before the projection, so even NaN padding
      cannot leak); queries with no valid key at all give a zero output (an empty jet);
    * ``bias`` additive float logits broadcastable to (B, H, Nq, Nk), e.g. ParT's pairwise
      interaction embedding; it may already contain the key mask (:func:`key_mask`), then
      ``valid`` can be None.

    Runs on :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels, exports to
    ONNX). Parameters ``qkv`` (packed q, k, v, as ``nn.MultiheadAttention.in_proj_*``) and
    ``out``: with the same weights it equals :class:`torch.nn.MultiheadAttention`.
    ``fast_dropout``: in training on CPU with dropout, the attention is written out (logits, add
    the mask/bias, softmax, :func:`fast_dropout` on the weights, weighted sum: the steps of
    scaled_dot_product_attention's reference path, whose Bernoulli mask dominates on CPU).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, fast_dropout: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding size {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.p_drop = dropout
        self.fast_dropout = fast_dropout

    def _heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)

    def forward(
        self, x: Tensor, valid: Tensor | None = None, context: Tensor | None = None, bias: Tensor | None = None
    ) -> Tensor:
        b, nq, d = x.shape
        if context is None:
            if valid is not None:
                x = zero_padded(x, valid)
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            if valid is not None:
                context = zero_padded(context, valid)
            w, bq = self.qkv.weight, self.qkv.bias
            q = nn.functional.linear(x, w[:d], bq[:d])
            k, v = nn.functional.linear(context, w[d:], bq[d:]).chunk(2, dim=-1)
        mask = bias
        if valid is not None:
            km = key_mask(valid, q.dtype)
            mask = km if mask is None else mask + km
        if self.fast_dropout and self.training and self.p_drop > 0 and q.device.type == "cpu":
            logits = torch.matmul(self._heads(q) * self.head_dim**-0.5, self._heads(k).transpose(-2, -1))
            if mask is not None:
                logits = logits + mask
            w = fast_dropout(torch.softmax(logits, dim=-1), self.p_drop)
            o = torch.matmul(w, self._heads(v))
        else:
            o = nn.functional.scaled_dot_product_attention(
                self._heads(q), self._heads(k), self._heads(v), attn_mask=mask,
                dropout_p=self.p_drop if self.training else 0.0,
            )  # fmt: skip
        o = o.transpose(1, 2).reshape(b, nq, d)
        if valid is not None:  # queries without any valid key (empty jets): zero, not a mean of padding
            o = torch.where(valid.any(dim=1)[:, None, None], o, torch.zeros_like(o))
        return self.out(o)


#: former name (GN's encoder layer); same parameters (``qkv``, ``out``), checkpoints load unchanged
MaskedMultiheadAttention = MultiheadAttention


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
