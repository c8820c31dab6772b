"""Particle Transformer (Qu, Li, Qian, ICML 2022): particle attention with pairwise bias.

Particle embedding MLP (128, 512, 128) after a batch normalisation of the inputs; pairwise
interaction features ``ln Δ, ln kT, ln z, ln m²`` embedded by pointwise convolutions
(64, 64, 64 → n_heads, batch-normalised, the last one without activation) and added to the
attention logits of 8 particle-attention blocks, then 2 class-attention blocks with a class
token. Blocks as published (NormFormer): ``x += s_r ⊙ x`` residual scaling, per-head output
scaling ``c_h``, LayerNorms after the attention and inside the feed-forward network, dropout 0.1
on the attention weights, the activations and the block outputs. Initialisation as the authors'
implementation (weaver-core): Xavier-uniform linear layers (q, k, v separately), the output
projections of attention and feed-forward of block ``l`` divided by ``sqrt(2 l)``.

Training-batch trimming (``train_trim``, off by default): as the authors' implementation
(weaver-core's ``SequenceTrimmer``), each training batch can be cut to the q-quantile of its
constituent multiplicities, q drawn uniformly in ``train_trim`` (weaver: (0.9, 1.02), q capped at
1), keeping a random subset of the constituents of the longer jets (:func:`trim_batch`). The
attention and pair costs scale with the squared multiplicity, so this is a training speed-up
(~1.6x fewer pairs on the groomed top/QCD jets of docs/benchmarks/boosted.md) and an
augmentation; evaluation and export always see every constituent.

Pair features: with ``eta``/``phi`` among the inputs, from the true (massive) four-vectors
``(pT, η, φ, E)``, whose pairwise quantities (Δy, Δφ, m²) do not depend on the jet direction;
``pair_only: [eta, phi]`` keeps η, φ out of the per-particle embedding (the shipped configs).
Without η, φ the pair features come from ``deta``/``dphi`` for massless constituents
(:func:`pair_features_relative`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.base import JetClassificationHead
from lhcml.models.constituent_base import (
    _EPS,
    _GEV,
    ConstituentModel,
    compact_constituents,
    exporting,
    four_vectors,
)
from lhcml.models.layers import FastDropout, MultiheadAttention, key_mask, zero_padded
from lhcml.models.registry import register_model

__all__ = ["ParticleTransformer", "four_vectors", "pair_features", "pair_features_relative", "trim_batch"]


def _pairwise_dphi(phi: Tensor) -> Tensor:
    """``φ_a − φ_b`` wrapped into [−π, π), (B, N, N)."""
    d = phi.unsqueeze(2) - phi.unsqueeze(1)
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


def _sinh_stable(x: Tensor) -> Tensor:
    """sinh(x) with a series where ``exp(x) − exp(−x)`` would cancel (|x| < 0.5)."""
    x2 = x * x
    return torch.where(
        x.abs() < 0.5,
        x * (1 + x2 / 6 + x2 * x2 / 120 + x2 * x2 * x2 / 5040),
        0.5 * (torch.exp(x) - torch.exp(-x)),
    )


def _masked_pair_stack(delta: Tensor, kt: Tensor, z: Tensor, m2: Tensor, valid: Tensor) -> Tensor:
    """``(ln Δ, ln kT, ln z, ln m²)`` stacked to (B, 4, N, N), 0 where a constituent is padding."""
    feats = torch.stack(
        [
            torch.log(delta),
            torch.log(kt.clamp(min=_EPS)),
            torch.log(z.clamp(min=_EPS)),
            torch.log(m2.clamp(min=_EPS)),
        ],
        dim=1,
    )
    pair_ok = (valid.unsqueeze(2) & valid.unsqueeze(1)).unsqueeze(1)
    return torch.where(pair_ok, feats, torch.zeros_like(feats))


def pair_features(pt: Tensor, eta: Tensor, phi: Tensor, energy: Tensor, valid: Tensor) -> Tensor:
    """ParT interaction features ``(ln Δ, ln kT, ln z, ln m²)`` (B, 4, N, N); 0 on padded pairs.

    ``Δ = sqrt(Δy² + Δφ²)`` (rapidity y), ``kT = min(pT_a, pT_b) Δ``, ``z = min(pT)/(pT_a + pT_b)``,
    ``m² = (p_a + p_b)²``; momenta in GeV. ``m²`` is computed from the transverse masses and the
    half-angle forms ``sinh²(Δy/2)``, ``sin²(Δφ/2)`` (no cancellation for collinear pairs), so the
    exported graph agrees with torch to float precision.
    """
    # constituent m_i² from E² − p², with float32 rounding noise (~1e-7 E²) removed by a soft
    # threshold at 1e-5 E², so that massless constituents have m_i = 0 exactly in every runtime
    sinh = 0.5 * (torch.exp(eta) - torch.exp(-eta))
    pz = pt * sinh
    p2 = pt**2 + pz**2
    m2i = (energy**2 * (1.0 - 1e-5) - p2).clamp(min=0.0)
    e = torch.maximum(energy, torch.sqrt(p2))
    rap = 0.5 * torch.log((e + pz).clamp(min=_EPS) / (e - pz).clamp(min=_EPS))
    dphi = _pairwise_dphi(phi)
    drap = rap.unsqueeze(2) - rap.unsqueeze(1)
    delta = torch.sqrt(drap**2 + dphi**2 + _EPS)
    pti, ptj = pt.unsqueeze(2), pt.unsqueeze(1)
    ptmin = torch.minimum(pti, ptj)
    kt = ptmin * delta
    z = ptmin / (pti + ptj).clamp(min=_EPS)
    # m² = m_i² + m_j² + 2(mT_i mT_j cosh Δy − pT_i pT_j cos Δφ), written without cancellations:
    # 2 mT mT 2sinh²(Δy/2) + 2 pT pT 2sin²(Δφ/2) + 2 (mT mT − pT pT)
    mi2, mj2 = m2i.unsqueeze(2), m2i.unsqueeze(1)
    mti, mtj = torch.sqrt(pti**2 + mi2), torch.sqrt(ptj**2 + mj2)
    sh = _sinh_stable(0.5 * drap)
    mass_term = (mi2 * ptj**2 + mj2 * pti**2 + mi2 * mj2) / (mti * mtj + pti * ptj).clamp(min=_EPS)
    m2 = mi2 + mj2 + 4 * mti * mtj * sh**2 + 4 * pti * ptj * torch.sin(0.5 * dphi) ** 2 + 2 * mass_term
    return _masked_pair_stack(delta, kt, z, m2, valid)


def pair_features_relative(pt: Tensor, deta: Tensor, dphi: Tensor, valid: Tensor) -> Tensor:
    """ParT interaction features from the jet-relative coordinates (massless constituents).

    Same features as :func:`pair_features` (B, 4, N, N), from pT [GeV] and the constituents'
    Δη, Δφ to the jet axis only: pair differences of Δη, Δφ are those of η, φ, and for massless
    constituents y = η and ``m² = 4 pT_a pT_b (sinh²(Δη/2) + sin²(Δφ/2))``. For massive
    constituents (charged pions: m = 0.14 GeV) this drops the m_i² terms and uses Δη for Δy
    (differences O(m²/pT²)). No absolute η, φ needed, so a model using it is invariant to the
    jet direction by construction.
    """
    dphi_ab = _pairwise_dphi(dphi)
    deta_ab = deta.unsqueeze(2) - deta.unsqueeze(1)
    delta = torch.sqrt(deta_ab**2 + dphi_ab**2 + _EPS)
    pti, ptj = pt.unsqueeze(2), pt.unsqueeze(1)
    ptmin = torch.minimum(pti, ptj)
    m2 = 4 * pti * ptj * (_sinh_stable(0.5 * deta_ab) ** 2 + torch.sin(0.5 * dphi_ab) ** 2)
    return _masked_pair_stack(delta, ptmin * delta, ptmin / (pti + ptj).clamp(min=_EPS), m2, valid)


class PairEmbed(nn.Module):
    """Pointwise (1×1) convolutions over the pair features -> (B, H, N, N).

    ``BN → [Conv → BN → GELU] × len(dims) → Conv → BN`` (the last layer without activation: the
    attention bias, as in the authors' implementation). The features are symmetric, so (eagerly)
    only the pairs i ≥ j of valid constituents are embedded, as matrix products over the list of
    pairs (much faster on CPU than a 2-d 1×1 convolution over the padded N×N), and mirrored;
    other entries are 0 (they are masked in the attention). While exporting: all N×N pairs (no
    data-dependent shapes in the graph; the valid entries agree). In training the BN statistics
    are over the valid i ≥ j pairs, so padding does not enter them.
    """

    def __init__(self, in_dim: int, dims: Sequence[int], n_heads: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(in_dim)]
        prev = in_dim
        for d in [*dims, n_heads]:
            layers += [nn.Conv2d(prev, d, 1), nn.BatchNorm2d(d), nn.GELU()]
            prev = d
        self.net = nn.Sequential(*layers[:-1])

    def _embed(self, h: Tensor) -> Tensor:
        """(B, C, P) pairs -> (B, H, P)."""
        for layer in self.net:
            if isinstance(layer, nn.Conv2d):  # a 1×1 convolution is a matrix product
                h = torch.matmul(layer.weight.flatten(1), h)
                if layer.bias is not None:
                    h = h + layer.bias.unsqueeze(-1)
            elif isinstance(layer, nn.BatchNorm2d):
                if layer.training and h.shape[0] * h.shape[-1] < 2:  # one pair: the running statistics
                    h = nn.functional.batch_norm(h, layer.running_mean, layer.running_var, layer.weight,
                                                 layer.bias, False, 0.0, layer.eps)  # fmt: skip
                else:
                    h = layer(h.unsqueeze(-1)).squeeze(-1)
            else:
                h = layer(h)
        return h

    def forward(self, u: Tensor, valid: Tensor) -> Tensor:
        b, c, n, _ = u.shape
        pair = torch.tril(valid.unsqueeze(2) & valid.unsqueeze(1))
        if exporting() or int(pair.sum()) < 2:
            return self._embed(u.reshape(b, c, n * n)).reshape(b, -1, n, n)
        bi, i, j = pair.nonzero(as_tuple=True)
        h = self._embed(u.permute(0, 2, 3, 1)[bi, i, j].T.unsqueeze(0))[0].T  # (M, H)
        out = h.new_zeros(b, n, n, h.shape[1])
        out[bi, i, j] = h
        out[bi, j, i] = h
        return out.permute(0, 3, 1, 2)


class ParTBlock(nn.Module):
    """ParT block (NormFormer): ``x = x + LN(c_h ⊙ MHA(LN x, U))``;
    ``x = s_r ⊙ x + W2 LN(GELU(W1 LN x))``.

    ``c_h`` (one per head, applied to the attention output) and ``s_r`` (one per channel) are
    trainable, initialised to 1. Class-attention blocks (``cls`` given): the query is the class
    token, keys and values the normalised ``[cls, x]``.
    """

    def __init__(self, dim: int, n_heads: int, ffn_ratio: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.pre_attn = nn.LayerNorm(dim)
        self.attn = MultiheadAttention(dim, n_heads, dropout, fast_dropout=True)
        self.head_scale = nn.Parameter(torch.ones(n_heads))
        self.post_attn = nn.LayerNorm(dim)
        self.pre_fc = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ffn_ratio)
        self.act = nn.GELU()
        self.post_fc = nn.LayerNorm(dim * ffn_ratio)
        self.fc2 = nn.Linear(dim * ffn_ratio, dim)
        self.resid_scale = nn.Parameter(torch.ones(dim))
        self.drop = FastDropout(dropout)  # nn.Dropout's distribution, faster CPU mask

    def forward(self, x: Tensor, mask: Tensor, cls: Tensor | None = None) -> Tensor:
        if cls is None:
            h = self.pre_attn(x)
            a = self.attn(h, bias=mask)
            res = x
        else:
            a = self.attn(cls, context=self.pre_attn(torch.cat([cls, x], dim=1)), bias=mask)
            res = cls
        b, n, d = a.shape
        a = (a.reshape(b, n, self.n_heads, -1) * self.head_scale[:, None]).reshape(b, n, d)
        x = res + self.drop(self.post_attn(a))
        y = self.fc2(self.post_fc(self.drop(self.act(self.fc1(self.pre_fc(x))))))
        return self.resid_scale * x + self.drop(y)


class _MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the valid constituents only (training statistics without padding);
    eval/export: the affine map on all slots, padding zeroed."""

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:  # type: ignore[override]
        if self.training and not exporting():
            if int(valid.sum()) > 1:
                out = torch.zeros_like(x)
                out[valid] = super().forward(x[valid])
                return out
            # one real constituent in the whole batch: no batch statistics, use the running ones
            y = nn.functional.batch_norm(x.transpose(1, 2), self.running_mean, self.running_var, self.weight,
                                         self.bias, False, 0.0, self.eps)  # fmt: skip
            return zero_padded(y.transpose(1, 2), valid)
        return zero_padded(super().forward(x.transpose(1, 2)).transpose(1, 2), valid)


def trim_batch(valid: Tensor, tensors: Sequence[Tensor], q_range: Sequence[float]) -> tuple[Tensor, list[Tensor]]:
    """Cut a batch to the q-quantile of its multiplicities, q ~ U(q_range) capped at 1.

    ``valid`` (B, N) front-packed or not; ``tensors`` (B, N, ...) per-constituent arrays. Jets with
    more valid constituents than ``maxlen = quantile(n, q)`` keep a uniformly random subset of
    ``maxlen`` of them; shorter jets keep all theirs. Returns the trimmed ``valid`` (B, maxlen) and
    tensors (the constituent order changes; the models are permutation invariant). Unchanged
    when ``maxlen`` is not below N. Random numbers from torch's generator (seeded runs repeat).
    """
    n = valid.sum(dim=1)
    q = float(torch.empty(()).uniform_(float(q_range[0]), float(q_range[1])).clamp(max=1.0))
    maxlen = max(int(torch.quantile(n.float(), q)), 1)
    if maxlen >= valid.shape[1]:
        return valid, list(tensors)
    # random order among the valid constituents, padding last: the first maxlen are a random subset
    key = torch.where(valid, torch.rand(valid.shape), torch.full(valid.shape, 2.0))
    order = torch.argsort(key, dim=1)[:, :maxlen]
    out = []
    for t in tensors:
        idx = order.reshape(*order.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
        out.append(torch.gather(t, 1, idx))
    return torch.gather(valid, 1, order), out


def _init_like_reference(model: nn.Module, blocks: Sequence[ParTBlock]) -> None:
    """Xavier-uniform linear layers with zero bias (q, k, v as three matrices), then the
    output projections of block ``l`` (attention ``out``, ``fc2``) divided by ``sqrt(2 l)``."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            if name.endswith("attn.qkv"):
                bound = math.sqrt(6.0 / (mod.weight.shape[0] // 3 + mod.weight.shape[1]))
                nn.init.uniform_(mod.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    with torch.no_grad():
        for layer_id, blk in enumerate(blocks, start=1):
            blk.attn.out.weight.div_(math.sqrt(2.0 * layer_id))
            blk.fc2.weight.div_(math.sqrt(2.0 * layer_id))


@register_model("part")
class ParticleTransformer(ConstituentModel):
    """Particle Transformer with pairwise interaction features as attention bias.

    Parameters
    ----------
    embed_dims
        Particle-embedding MLP (LayerNorm + Linear + GELU per layer); last = model width.
    pair_embed_dims
        Pointwise-conv sizes of the interaction embedding (output: ``num_heads`` channels).
    num_heads, num_layers, num_cls_layers, ffn_ratio, dropout
        As published: 8, 8, 2, 4, 0.1 (class-attention blocks without dropout).
    fc_sizes
        Hidden sizes of the classifier after the class token (published: none).
    pair_only
        Flow variables used only for the pair features, not embedded per particle (e.g.
        ``[eta, phi]``: the true four-vectors for the pair features without feeding the absolute
        jet direction to the particle embedding). Without ``eta``/``phi`` in the inputs the pair
        features come from ``deta``/``dphi`` (:func:`pair_features_relative`, massless).
    train_trim
        ``(q_lo, q_hi)``: cut every training batch to a random quantile of its multiplicities
        (:func:`trim_batch`; weaver-core's default ``(0.9, 1.02)``); None (default): no trimming.
        The derived features (ln pT/ΣpT, ...) are computed before the cut, from every constituent.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        embed_dims: Sequence[int] = (128, 512, 128),
        pair_embed_dims: Sequence[int] = (64, 64, 64),
        num_heads: int = 8,
        num_layers: int = 8,
        num_cls_layers: int = 2,
        ffn_ratio: int = 4,
        dropout: float = 0.1,
        fc_sizes: Sequence[int] = (),
        pair_only: Sequence[str] = (),
        train_trim: Sequence[float] | None = None,
    ) -> None:
        super().__init__(n_classes, input_dims)
        if train_trim is not None:
            lo_hi = [float(v) for v in train_trim]
            if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1]:
                raise ConfigError(f"part: train_trim takes two quantiles 0 < lo <= hi (got {list(train_trim)})")
            train_trim = lo_hi
        self.train_trim = train_trim
        self.pair_only = list(pair_only)
        bad = [v for v in self.pair_only if v not in ("eta", "phi", "energy")]
        if bad:
            raise ConfigError(f"part: pair_only takes eta, phi, energy (got {bad})")
        self.embed_cols: list[int] | None = None
        embed_dims = list(embed_dims)
        if not embed_dims:
            raise ConfigError("part needs at least one embedding layer (model.embed_dims)")
        dim = embed_dims[-1]
        if dim % num_heads:
            raise ConfigError(f"part: embed dim {dim} is not divisible by num_heads={num_heads}")
        prev = self.n_features - len(self.pair_only)
        self.input_bn = _MaskedBatchNorm(prev)
        layers: list[nn.Module] = []
        for d in embed_dims:
            layers += [nn.LayerNorm(prev), nn.Linear(prev, d), nn.GELU()]
            prev = d
        self.embed = nn.Sequential(*layers)
        self.pair_embed = PairEmbed(4, list(pair_embed_dims), num_heads)
        self.blocks = nn.ModuleList(ParTBlock(dim, num_heads, ffn_ratio, dropout) for _ in range(num_layers))
        self.cls_blocks = nn.ModuleList(
            ParTBlock(dim, num_heads, ffn_ratio, 0.0) for _ in range(num_cls_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.heads["jet_classification"] = JetClassificationHead(dim, n_classes, hidden=list(fc_sizes), act="gelu")
        _init_like_reference(self, list(self.blocks))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def configure_inputs(self, variables: Mapping[str, Sequence[str]]) -> None:
        super().configure_inputs(variables)
        names = list(variables.get("flow", []))
        missing = [v for v in self.pair_only if v not in names]
        if missing:
            raise ConfigError(f"part: pair_only variables {missing} are not in data.inputs.flow ({names})")
        drop = {names.index(v) for v in self.pair_only}
        self.embed_cols = [i for i in range(self.n_features) if i not in drop]

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        inputs = compact_constituents(inputs)
        valid = inputs["flow_valid"]
        feats = self.features(inputs)
        if self.pair_only:
            if self.embed_cols is None:
                raise RuntimeError("call configure_inputs(variables) before using 'part'")
            feats = feats[..., self.embed_cols]
        massive = "eta" in self.kin and "phi" in self.kin  # true four-vectors (constituent masses)
        kin = [self._raw(inputs, v) for v in (("pt", "eta", "phi", "energy") if massive else ("pt", "deta", "dphi"))]
        if self.train_trim is not None and self.training and not exporting():
            valid, (feats, *kin) = trim_batch(valid, [feats, *kin], self.train_trim)
        x = zero_padded(self.embed(self.input_bn(feats, valid)), valid)
        pt = kin[0] / _GEV
        with torch.no_grad():  # inputs only (no parameters): no graph needed
            if massive:
                u = pair_features(pt, kin[1], kin[2], kin[3] / _GEV, valid)
            else:  # jet-relative coordinates (massless constituents)
                u = pair_features_relative(pt, kin[1], kin[2], valid)
        # pair bias + key mask, built once for all blocks (B, H, N, N)
        mask = self.pair_embed(u, valid) + key_mask(valid, x.dtype)
        for blk in self.blocks:
            x = zero_padded(blk(x, mask), valid)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        cls_mask = key_mask(torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1), x.dtype)
        for blk in self.cls_blocks:
            cls = blk(x, cls_mask, cls=cls)
        return {"logits": self.heads["jet_classification"](self.norm(cls).squeeze(1))}
