"""Jet-constituent taggers for boosted-object and quark/gluon tagging.

All take the ``flow`` input group (``(B, N, F)`` raw constituent variables) and its mask
``flow_valid`` (True = real constituent), are multi-class, are exactly invariant to the values
stored in padded slots and (up to floating-point summation order) to the order of the
constituents, and export to ONNX with a dynamic constituent axis.

* ``pfn`` / ``efn`` — Particle / Energy Flow Networks (Komiske, Metodiev, Thaler,
  JHEP 01 (2019) 121): ``F(Σ_i Φ(p_i))`` and the IRC-safe ``F(Σ_i z_i Φ(Δη_i, Δφ_i))`` with
  ``z_i = pT_i / Σ_j pT_j``; Φ (100, 100, 256), F (100, 100, 100) as published.
* ``particlenet`` — ParticleNet (Qu, Gouskos, PRD 101 (2020) 056019): three EdgeConv blocks
  with k = 16 nearest neighbours, channels (64,64,64), (128,128,128), (256,256,256) and a
  shortcut, neighbours found in (Δη, Δφ) for the first block and in the learned feature space
  after (dynamic graph); global average pooling, FC 256 + ReLU + dropout 0.1. Padded
  constituents are never neighbours (their distances are +inf; neighbour slots beyond the real
  constituents are dropped from the mean). Equidistant neighbours (constituents at identical
  Δη, Δφ are common: calorimeter cells) are chosen by a hash of their input features, not by
  slot, so the scores do not depend on the order or the padding of the constituents.
* ``part`` — Particle Transformer (Qu, Li, Qian, ICML 2022): particle embedding MLP
  (128, 512, 128), pairwise interaction features ``ln Δ, ln kT, ln z, ln m²`` embedded by a
  pointwise convolution (64, 64, 64 → n_heads) and added to the attention logits of 8 particle
  attention blocks, then 2 class-attention blocks with a class token; NormFormer-style blocks.
  ``pair_only: [eta, phi]`` reads the absolute η, φ for the pair features only (not embedded
  per particle); without η, φ the pair features come from Δη, Δφ (massless constituents).
* ``lola`` — LoLa with the CoLa combination layer (Butter, Kasieczka, Plehn, Russell,
  SciPost Phys. 5 (2018) 028): the leading-``n_constituents`` four-vectors (sorted by pT inside
  the model, so the network is invariant to the input order) are combined by
  ``C = [1_N | 1 | trainable]`` and the Lorentz layer returns ``m², pT, E``, a trainable
  energy sum and trainable Minkowski-distance sums/minimum per combined vector (in float64),
  compressed by ``sign(x)·ln(1 + |x|)`` and batch-normalised (our addition, for the numerical
  range of GeV-scale invariants); FC layers after.

Kinematic variables are found by name among ``data.inputs.flow`` through
:meth:`configure_inputs` (``pt``, ``energy`` in MeV, ``deta``, ``dphi``; ``eta``/``phi`` used
when present for four-vectors). The set models also receive the weaver-style derived
features ``ln pT, ln E, ln(pT/ΣpT), ln(E/ΣE), ΔR`` computed inside the graph from raw inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.base import JetClassificationHead, TaggerModel
from lhcml.models.layers import MLP, masked_mean, masked_sum, zero_padded
from lhcml.models.registry import register_model

#: MeV per GeV (the flat files are in MeV; log features and pair features use GeV)
_GEV = 1000.0
_EPS = 1e-8
_N_DERIVED = 5


def _exporting() -> bool:
    """True while tracing/exporting (shapes must not depend on data then)."""
    is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return bool(
        torch.onnx.is_in_onnx_export()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or is_exporting()
        or torch.compiler.is_compiling()
    )


def compact_constituents(inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Move the valid constituents first and drop slots beyond the batch's largest jet.

    The models are invariant to constituent order and to padding, so this changes no output;
    it only saves compute (flat files pad to 200 slots, jets have ~50 constituents). Skipped
    while exporting, so the ONNX graph has no data-dependent shapes.
    """
    if _exporting() or "flow_valid" not in inputs:
        return dict(inputs)
    valid = inputs["flow_valid"]
    n_max = max(int(valid.sum(dim=1).max()) if valid.numel() else 0, 1)
    if n_max >= valid.shape[1] and bool(valid[:, :n_max].sum() == valid.sum()):
        return dict(inputs)
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :n_max]
    out = dict(inputs)
    out["flow_valid"] = torch.gather(valid, 1, order)
    flow = inputs["flow"]
    out["flow"] = torch.gather(flow, 1, order.unsqueeze(-1).expand(-1, -1, flow.shape[-1]))
    return out


class ConstituentModel(TaggerModel):
    """Base of the constituent taggers: resolves the kinematic variables by name."""

    #: variables needed (by name) in the flow group
    kinematic_variables: tuple[str, ...] = ("pt", "energy", "deta", "dphi")

    def __init__(self, n_classes: int, input_dims: Mapping[str, int]) -> None:
        super().__init__(n_classes, input_dims, required=("flow",))
        self.kin: dict[str, int] = {}

    def configure_inputs(self, variables: Mapping[str, Sequence[str]]) -> None:
        super().configure_inputs(variables)
        names = list(variables.get("flow", []))
        missing = [v for v in self.kinematic_variables if v not in names]
        if missing:
            raise ConfigError(
                f"model '{self.registry_name}' needs the constituent variables {missing} in "
                f"data.inputs.flow (got {names})"
            )
        self.kin = {v: names.index(v) for v in ("pt", "energy", "deta", "dphi", "eta", "phi") if v in names}

    def _raw(self, inputs: Mapping[str, Tensor], name: str) -> Tensor:
        if not self.kin:
            raise RuntimeError(
                f"call configure_inputs(variables) before using '{self.registry_name}'"
            )
        x = inputs["flow"][..., self.kin[name]].float()
        return torch.where(inputs["flow_valid"], x, torch.zeros_like(x))

    def derived_features(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """``ln pT, ln E`` [GeV], ``ln(pT/ΣpT), ln(E/ΣE), ΔR`` per constituent, 0 when padded.

        Standardised with the fixed constants of weaver's top-tagging data configs:
        ``(ln pT − 1.7)·0.7``, ``(ln E − 2.0)·0.7``, ``(ln pT/ΣpT + 4.7)·0.7``,
        ``(ln E/ΣE + 4.7)·0.7``, ``(ΔR − 0.2)·4``.
        """
        valid = inputs["flow_valid"]
        pt = self._raw(inputs, "pt").clamp(min=_EPS)
        e = self._raw(inputs, "energy").clamp(min=_EPS)
        deta, dphi = self._raw(inputs, "deta"), self._raw(inputs, "dphi")
        spt = masked_sum(pt.unsqueeze(-1), valid).clamp(min=_EPS)
        se = masked_sum(e.unsqueeze(-1), valid).clamp(min=_EPS)
        # fixed standardisation of the weaver top-tagging configs (GeV units)
        feats = torch.stack(
            [
                (torch.log(pt / _GEV) - 1.7) * 0.7,
                (torch.log(e / _GEV) - 2.0) * 0.7,
                (torch.log(pt / spt) + 4.7) * 0.7,
                (torch.log(e / se) + 4.7) * 0.7,
                (torch.sqrt(deta**2 + dphi**2 + _EPS) - 0.2) * 4.0,
            ],
            dim=-1,
        )
        return zero_padded(feats, valid)

    def features(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Normalised flow variables concatenated with :meth:`derived_features`."""
        x = self.normalise(inputs)["flow"]
        return torch.cat([x, self.derived_features(inputs)], dim=-1)

    @property
    def n_features(self) -> int:
        return self.input_dims["flow"] + _N_DERIVED


@register_model("pfn")
class PFN(ConstituentModel):
    """Particle Flow Network ``F(Σ_i Φ(p_i))`` over the valid constituents.

    Parameters
    ----------
    phi_sizes
        Per-particle network Φ (the last size is the latent dimension ℓ).
    f_sizes
        Hidden sizes of F.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        phi_sizes: Sequence[int] = (100, 100, 256),
        f_sizes: Sequence[int] = (100, 100, 100),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(n_classes, input_dims)
        phi_sizes = list(phi_sizes)
        if not phi_sizes:
            raise ConfigError(f"{self.registry_name} needs at least one Φ layer (model.phi_sizes)")
        self.phi = MLP(self._phi_in(), phi_sizes[-1], hidden=phi_sizes[:-1], act=activation, final_act=True)
        self.heads["jet_classification"] = JetClassificationHead(
            phi_sizes[-1], n_classes, hidden=list(f_sizes), act=activation, dropout=dropout
        )

    def _phi_in(self) -> int:
        return self.n_features

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        inputs = compact_constituents(inputs)
        valid = inputs["flow_valid"]
        latent = masked_sum(self.phi(self.features(inputs)), valid)
        return {"logits": self.heads["jet_classification"](latent)}


@register_model("efn")
class EFN(PFN):
    """Energy Flow Network ``F(Σ_i z_i Φ(Δη_i, Δφ_i))``, IRC safe (same sizes as PFN)."""

    kinematic_variables = ("pt", "deta", "dphi")

    def _phi_in(self) -> int:
        return 2

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        inputs = compact_constituents(inputs)
        valid = inputs["flow_valid"]
        pt = self._raw(inputs, "pt")
        z = pt / masked_sum(pt.unsqueeze(-1), valid).clamp(min=_EPS)
        ang = torch.stack([self._raw(inputs, "deta"), self._raw(inputs, "dphi")], dim=-1)
        latent = masked_sum(z.unsqueeze(-1) * self.phi(ang), valid)
        return {"logits": self.heads["jet_classification"](latent)}


# ---------------------------------------------------------------------------------------------
# ParticleNet
# ---------------------------------------------------------------------------------------------
def _stable_order(x: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest entries along the last axis, ties in slot order.

    Eager: a stable sort; exporting: ``topk``, whose ONNX definition also puts the lower index
    first among equal values.
    """
    if _exporting():
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
    """

    def __init__(self, k: int, in_dim: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.k = k
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
        xi = x.unsqueeze(2).expand_as(nb)
        e = torch.cat([xi, nb - xi], dim=-1).permute(0, 3, 1, 2)  # (B, 2C, N, k)
        h = self.edge(e).permute(0, 2, 3, 1)  # (B, N, k, C')
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
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        k: int = 16,
        conv_params: Sequence[Sequence[int]] = ((64, 64, 64), (128, 128, 128), (256, 256, 256)),
        fc_sizes: Sequence[int] = (256,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(n_classes, input_dims)
        if k < 1 or not conv_params:
            raise ConfigError("particlenet needs k >= 1 and at least one EdgeConv block")
        self.input_bn = nn.BatchNorm1d(self.n_features)
        blocks = []
        in_dim = self.n_features
        for ch in conv_params:
            blocks.append(EdgeConvBlock(k, in_dim, list(ch)))
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


# ---------------------------------------------------------------------------------------------
# Particle Transformer
# ---------------------------------------------------------------------------------------------
def four_vectors(pt: Tensor, eta: Tensor, phi: Tensor, energy: Tensor) -> Tensor:
    """``(px, py, pz, E)`` (B, N, 4) from pT, η, φ, E."""
    sinh = 0.5 * (torch.exp(eta) - torch.exp(-eta))  # (no ONNX Sinh in the legacy exporter)
    return torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * sinh, energy], dim=-1)


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
    """Pointwise (1×1) convolutions with BN + GELU over the pair features -> (B, H, N, N).

    The features are symmetric, so (eagerly) only the pairs i ≥ j of valid constituents are
    embedded, as matrix products over the list of pairs (much faster on CPU than a 2-d 1×1
    convolution over the padded N×N), and mirrored; other entries are 0 (they are masked in
    the attention). While exporting: all N×N pairs (no data-dependent shapes in the graph; the
    valid entries agree). Same parameters as the 2-d form (checkpoints are compatible). In
    training the BN statistics are over the valid i ≥ j pairs (as in weaver's sparse mode), so
    padding does not enter them.
    """

    def __init__(self, in_dim: int, dims: Sequence[int], n_heads: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(in_dim)]
        prev = in_dim
        for d in dims:
            layers += [nn.Conv2d(prev, d, 1), nn.BatchNorm2d(d), nn.GELU()]
            prev = d
        layers.append(nn.Conv2d(prev, n_heads, 1))
        self.net = nn.Sequential(*layers)

    def _embed(self, h: Tensor) -> Tensor:
        """(B, C, P) pairs -> (B, H, P)."""
        for layer in self.net:
            if isinstance(layer, nn.Conv2d):  # a 1×1 convolution is a matrix product
                h = torch.matmul(layer.weight.flatten(1), h)
                if layer.bias is not None:
                    h = h + layer.bias.unsqueeze(-1)
            elif isinstance(layer, nn.BatchNorm2d):
                h = layer(h.unsqueeze(-1)).squeeze(-1)
            else:
                h = layer(h)
        return h

    def forward(self, u: Tensor, valid: Tensor) -> Tensor:
        b, c, n, _ = u.shape
        pair = torch.tril(valid.unsqueeze(2) & valid.unsqueeze(1))
        if _exporting() or int(pair.sum()) < 2:
            return self._embed(u.reshape(b, c, n * n)).reshape(b, -1, n, n)
        bi, i, j = pair.nonzero(as_tuple=True)
        h = self._embed(u.permute(0, 2, 3, 1)[bi, i, j].T.unsqueeze(0))[0].T  # (M, H)
        out = h.new_zeros(b, n, n, h.shape[1])
        out[bi, i, j] = h
        out[bi, j, i] = h
        return out.permute(0, 3, 1, 2)


class ParTAttention(nn.Module):
    """Multi-head attention with an additive float mask (B, H or 1, Nq, Nk): pair bias ``U`` plus
    a large negative value on padded keys (``scaled_dot_product_attention``)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ConfigError(f"part: embed dim {dim} is not divisible by num_heads={n_heads}")
        self.h = n_heads
        self.dh = dim // n_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.p_drop = dropout

    def forward(self, xq: Tensor, xkv: Tensor, attn_mask: Tensor) -> Tensor:
        b, nq, d = xq.shape
        nk = xkv.shape[1]
        q = self.q(xq).reshape(b, nq, self.h, self.dh).transpose(1, 2)
        kv = self.kv(xkv).reshape(b, nk, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        o = nn.functional.scaled_dot_product_attention(
            q, kv[0], kv[1], attn_mask=attn_mask, dropout_p=self.p_drop if self.training else 0.0
        )
        return self.out(o.transpose(1, 2).reshape(b, nq, d))


def _key_mask(key_valid: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive attention mask (B, 1, 1, Nk): 0 for valid keys, −1e9 for padded ones (weight 0
    exactly next to any valid key; finite, so a jet without constituents gives no NaN)."""
    return torch.where(key_valid, 0.0, -1e9).to(dtype)[:, None, None, :]


class ParTBlock(nn.Module):
    """ParT (NormFormer-style) block: ``x += LN(MHA(LN x, U))``; ``x += W2 LN(GELU(W1 LN x))``."""

    def __init__(self, dim: int, n_heads: int, ffn_ratio: int, dropout: float) -> None:
        super().__init__()
        self.pre_attn = nn.LayerNorm(dim)
        self.attn = ParTAttention(dim, n_heads, dropout)
        self.post_attn = nn.LayerNorm(dim)
        self.pre_fc = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * ffn_ratio)
        self.act = nn.GELU()
        self.post_fc = nn.LayerNorm(dim * ffn_ratio)
        self.fc2 = nn.Linear(dim * ffn_ratio, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv: Tensor | None, attn_mask: Tensor) -> Tensor:
        q = self.pre_attn(x)
        k = q if kv is None else self.pre_attn(kv)
        x = x + self.drop(self.post_attn(self.attn(q, k, attn_mask)))
        y = self.fc2(self.drop(self.post_fc(self.act(self.fc1(self.pre_fc(x))))))
        return x + self.drop(y)


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
        As published: 8, 8, 2, 4, 0.1.
    fc_sizes
        Hidden sizes of the classifier after the class token (published: none).
    pair_only
        Flow variables used only for the pair features, not embedded per particle (e.g.
        ``[eta, phi]``: the true four-vectors for the pair features without feeding the absolute
        jet direction to the particle embedding). Without ``eta``/``phi`` in the inputs the pair
        features come from ``deta``/``dphi`` (:func:`pair_features_relative`, massless).
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
    ) -> None:
        super().__init__(n_classes, input_dims)
        self.pair_only = list(pair_only)
        bad = [v for v in self.pair_only if v not in ("eta", "phi", "energy")]
        if bad:
            raise ConfigError(f"part: pair_only takes eta, phi, energy (got {bad})")
        self.embed_cols: list[int] | None = None
        embed_dims = list(embed_dims)
        if not embed_dims:
            raise ConfigError("part needs at least one embedding layer (model.embed_dims)")
        layers: list[nn.Module] = []
        prev = self.n_features - len(self.pair_only)
        for d in embed_dims:
            layers += [nn.LayerNorm(prev), nn.Linear(prev, d), nn.GELU()]
            prev = d
        self.embed = nn.Sequential(*layers)
        dim = embed_dims[-1]
        self.pair_embed = PairEmbed(4, list(pair_embed_dims), num_heads)
        self.blocks = nn.ModuleList(ParTBlock(dim, num_heads, ffn_ratio, dropout) for _ in range(num_layers))
        self.cls_blocks = nn.ModuleList(
            ParTBlock(dim, num_heads, ffn_ratio, 0.0) for _ in range(num_cls_layers)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.heads["jet_classification"] = JetClassificationHead(dim, n_classes, hidden=list(fc_sizes), act="gelu")

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
        x = zero_padded(self.embed(feats), valid)
        pt = self._raw(inputs, "pt") / _GEV
        with torch.no_grad():  # inputs only (no parameters): no graph needed
            if "eta" in self.kin and "phi" in self.kin:  # true four-vectors (constituent masses)
                e = self._raw(inputs, "energy") / _GEV
                u = pair_features(pt, self._raw(inputs, "eta"), self._raw(inputs, "phi"), e, valid)
            else:  # jet-relative coordinates (massless constituents)
                u = pair_features_relative(pt, self._raw(inputs, "deta"), self._raw(inputs, "dphi"), valid)
        # pair bias + key mask, built once for all blocks (B, H, N, N)
        mask = self.pair_embed(u, valid) + _key_mask(valid, x.dtype)
        for blk in self.blocks:
            x = zero_padded(blk(x, None, mask), valid)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        ones = torch.ones_like(valid[:, :1])
        cls_mask = _key_mask(torch.cat([ones, valid], dim=1), x.dtype)
        for blk in self.cls_blocks:
            kv = torch.cat([cls, x], dim=1)
            cls = blk(cls, kv, cls_mask)
        return {"logits": self.heads["jet_classification"](self.norm(cls).squeeze(1))}


# ---------------------------------------------------------------------------------------------
# LoLa
# ---------------------------------------------------------------------------------------------
def _minkowski(a: Tensor, b: Tensor) -> Tensor:
    """Minkowski product of (…, 4) vectors ``(px, py, pz, E)``."""
    return a[..., 3] * b[..., 3] - a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1] - a[..., 2] * b[..., 2]


@register_model("lola")
class LoLa(ConstituentModel):
    """LoLa + CoLa on the leading ``n_constituents`` constituents (sorted by pT in the model).

    Parameters
    ----------
    n_constituents
        Number of leading constituents N (published: 40); fewer are zero-padded.
    n_combinations
        Trainable CoLa combinations M − N − 1 (published: 15; plus the identity and the sum).
    n_distance_sums
        Number of trainable Minkowski-distance sums per combined vector (published: 2).
    fc_sizes
        Hidden layers after the Lorentz layer (published: 100, 50).
    """

    kinematic_variables = ("pt", "energy", "deta", "dphi")

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        n_constituents: int = 40,
        n_combinations: int = 15,
        n_distance_sums: int = 2,
        fc_sizes: Sequence[int] = (100, 50),
    ) -> None:
        super().__init__(n_classes, input_dims)
        if n_constituents < 2:
            raise ConfigError("lola needs n_constituents >= 2")
        self.n = n_constituents
        m = n_constituents + 1 + n_combinations
        self.m = m
        self.cola = nn.Parameter(torch.randn(n_constituents, n_combinations) * 0.1)
        self.w_energy = nn.Parameter(torch.randn(m, m) * 0.1)
        self.w_dist = nn.Parameter(torch.randn(n_distance_sums + 1, m, m) * 0.1)
        n_out = 4 + n_distance_sums + 1  # m², pT, E, Σw E, Σw d² (×n), min w d²
        self.bn = nn.BatchNorm1d(m * n_out)
        self.heads["jet_classification"] = JetClassificationHead(m * n_out, n_classes, hidden=list(fc_sizes))

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        inputs = compact_constituents(inputs)
        valid = inputs["flow_valid"]
        pt = self._raw(inputs, "pt") / _GEV
        e = self._raw(inputs, "energy") / _GEV
        if "eta" in self.kin and "phi" in self.kin:
            eta, phi = self._raw(inputs, "eta"), self._raw(inputs, "phi")
        else:
            # relative coordinates only: massless four-vectors in the frame boosted along z to
            # the jet axis, E = pT cosh(Δη) (the measured E belongs to the absolute η)
            eta, phi = self._raw(inputs, "deta"), self._raw(inputs, "dphi")
            e = pt * 0.5 * (torch.exp(eta) + torch.exp(-eta))
        # four-vectors in float64 (see below): identical rounding in torch and onnxruntime
        p4 = zero_padded(four_vectors(pt.double(), eta.double(), phi.double(), e.double()), valid)
        b = p4.shape[0]
        key = torch.where(valid, pt, torch.full_like(pt, -1.0))
        # append N zero slots so that topk works for any number of constituents
        p4 = torch.cat([p4, p4.new_zeros(b, self.n, 4)], dim=1)
        key = torch.cat([key, key.new_full((b, self.n), -2.0)], dim=1)
        _, order = torch.topk(key, self.n, dim=1, largest=True, sorted=True)
        k = torch.gather(p4, 1, order.unsqueeze(-1).expand(-1, -1, 4))  # (B, N, 4)
        # the Lorentz layer runs in float64: invariant masses and Minkowski distances of
        # GeV-scale four-vectors cancel strongly in float32
        k = k.double()
        # CoLa: identity, the jet sum, trainable combinations
        c = torch.cat(
            [
                torch.eye(self.n, device=k.device, dtype=k.dtype),
                torch.ones(self.n, 1, device=k.device, dtype=k.dtype),
                self.cola.double(),
            ],
            dim=1,
        )  # (N, M)
        kt = torch.einsum("bnf,nm->bmf", k, c)  # (B, M, 4)
        m2 = _minkowski(kt, kt)
        ptt = torch.sqrt(kt[..., 0] ** 2 + kt[..., 1] ** 2 + _EPS)
        en = kt[..., 3]
        e_sum = torch.einsum("jm,bm->bj", self.w_energy.double(), en)
        diff = kt.unsqueeze(2) - kt.unsqueeze(1)  # (B, M, M, 4)
        d2 = _minkowski(diff, diff)
        wd = torch.einsum("sjm,bjm->bsjm", self.w_dist.double(), d2)  # (B, S+1, M, M)
        d_sums = wd[:, :-1].sum(-1)  # (B, S, M)
        d_min = wd[:, -1].min(-1).values  # (B, M)
        feats = torch.cat(
            [m2.unsqueeze(1), ptt.unsqueeze(1), en.unsqueeze(1), e_sum.unsqueeze(1), d_sums, d_min.unsqueeze(1)],
            dim=1,
        )  # (B, n_out, M)
        # the invariants span many orders of magnitude (GeV² to 10⁶ GeV²): compress them with
        # sign(x)·ln(1 + |x|) before batch normalisation (numerical range; monotonic)
        feats = torch.sign(feats) * torch.log1p(feats.abs())
        return {"logits": self.heads["jet_classification"](self.bn(feats.reshape(b, -1).float()))}
