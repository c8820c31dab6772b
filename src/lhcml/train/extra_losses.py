"""Plug-in registry of extra loss terms (decorrelation, adversaries, ...) added to the head losses.

A training config lists them as ``extra_losses: [{name: disco, weight: 10, ...options}]``. An
extra loss is an ``nn.Module`` registered with ``@register_extra_loss("name")``; its parameters
(e.g. an adversary network) are optimised with the model's. Contract::

    class MyLoss(ExtraLoss):
        batch_fields = {"jets": ["mass"]}          # extra per-jet fields to load: batch["jets_mass"]
        def __init__(self, weight: float = 1.0, **options): ...   # no I/O
        def forward(self, outputs, batch) -> Tensor: ...           # unweighted scalar loss

``outputs`` is the model output (``"logits"`` and auxiliary keys), ``batch`` the batch (labels,
weights, inputs, requested fields). The module multiplies by ``weight`` and logs the term as
``<stage>_loss_<name>``. Modules holding registered extra losses are listed in
``_EXTRA_LOSS_MODULES`` (a fixed list, never from configs).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from lhcml.errors import ConfigError

_EXTRA_LOSSES: dict[str, type] = {}

# Modules that register extra losses (append yours here).
_EXTRA_LOSS_MODULES: tuple[str, ...] = ("lhcml.train.decorrelation",)


class ExtraLoss(nn.Module):
    """Base class of extra loss terms (see the module docstring)."""

    registry_name: str = ""
    #: extra fields to load per group, delivered as ``batch["<group>_<field>"]``
    batch_fields: dict[str, list[str]] = {}

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError


def register_extra_loss(name: str) -> Callable[[type], type]:
    """Class decorator adding an extra loss to the registry under ``name``."""

    def deco(cls: type) -> type:
        if name in _EXTRA_LOSSES and _EXTRA_LOSSES[name] is not cls:
            raise ValueError(f"extra loss '{name}' registered twice")
        _EXTRA_LOSSES[name] = cls
        cls.registry_name = name
        return cls

    return deco


def list_extra_losses() -> list[str]:
    """Names of all registered extra losses."""
    for mod in _EXTRA_LOSS_MODULES:
        importlib.import_module(mod)
    return sorted(_EXTRA_LOSSES)


def build_extra_loss(name: str, weight: float = 1.0, **options: Any) -> ExtraLoss:
    """Construct a registered extra loss; unknown names or options give a :class:`ConfigError`."""
    valid = list_extra_losses()
    if name not in _EXTRA_LOSSES:
        raise ConfigError(
            f"unknown extra loss '{name}' (valid: {', '.join(valid) or 'none registered'})"
        )
    try:
        return _EXTRA_LOSSES[name](weight=weight, **options)
    except TypeError as err:
        raise ConfigError(f"bad options for extra loss '{name}': {err}") from None
