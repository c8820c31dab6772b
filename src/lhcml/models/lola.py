"""LoLa with the CoLa combination layer (Butter, Kasieczka, Plehn, Russell, SciPost Phys. 5
(2018) 028).

The leading-``n_constituents`` four-vectors (sorted by pT inside the model, so the network is
invariant to the input order) are combined by ``C = [1_N | 1 | trainable]`` and the Lorentz
layer returns ``m², pT, E``, a trainable energy sum and trainable Minkowski-distance
sums/minimum per combined vector (in float64), compressed by ``sign(x)·ln(1 + |x|)`` and
batch-normalised (our addition, for the numerical range of GeV-scale invariants); FC layers
after.
"""

from __future__ import annotations

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
    four_vectors,
)
from lhcml.models.layers import zero_padded
from lhcml.models.registry import register_model


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
