"""Common base of the jet-constituent taggers (:mod:`~lhcml.models.deepsets`,
:mod:`~lhcml.models.particlenet`, :mod:`~lhcml.models.part`, :mod:`~lhcml.models.lola`).

All take the ``flow`` input group (``(B, N, F)`` raw constituent variables) and its mask
``flow_valid`` (True = real constituent), are multi-class, are exactly invariant to the values
stored in padded slots and (up to floating-point summation order) to the order of the
constituents, and export to ONNX with a dynamic constituent axis.

Kinematic variables are found by name among ``data.inputs.flow`` through
:meth:`ConstituentModel.configure_inputs` (``pt``, ``energy`` in MeV, ``deta``, ``dphi``;
``eta``/``phi`` used when present for four-vectors). The models also receive the weaver-style
derived features ``ln pT, ln E, ln(pT/ΣpT), ln(E/ΣE), ΔR`` computed inside the graph from raw
inputs (:meth:`ConstituentModel.derived_features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lhcml.errors import ConfigError
from lhcml.models.base import TaggerModel
from lhcml.models.layers import masked_sum, zero_padded

#: MeV per GeV (the flat files are in MeV; log features and pair features use GeV)
_GEV = 1000.0
_EPS = 1e-8
_N_DERIVED = 5


def exporting() -> bool:
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
    if exporting() or "flow_valid" not in inputs:
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


def four_vectors(pt: Tensor, eta: Tensor, phi: Tensor, energy: Tensor) -> Tensor:
    """``(px, py, pz, E)`` (B, N, 4) from pT, η, φ, E."""
    sinh = 0.5 * (torch.exp(eta) - torch.exp(-eta))  # (no ONNX Sinh in the legacy exporter)
    return torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * sinh, energy], dim=-1)
