"""Deep-sets constituent taggers: Particle and Energy Flow Networks.

* ``pfn`` / ``efn`` — Particle / Energy Flow Networks (Komiske, Metodiev, Thaler,
  JHEP 01 (2019) 121): ``F(Σ_i Φ(p_i))`` and the IRC-safe ``F(Σ_i z_i Φ(Δη_i, Δφ_i))`` with
  ``z_i = pT_i / Σ_j pT_j``; Φ (100, 100, 256), F (100, 100, 100) as published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lhcml.errors import ConfigError
from lhcml.models.base import JetClassificationHead
from lhcml.models.constituent_base import _EPS, ConstituentModel, compact_constituents
from lhcml.models.layers import MLP, masked_sum
from lhcml.models.registry import register_model


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
