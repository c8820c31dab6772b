"""Registry of model architectures by name.

Each architecture module decorates its class with ``@register_model("name")``. Configs refer to
models as ``model: {name: dips, ...hyperparameters}``; :func:`build_model` validates the name.

Contract for registered classes (see :class:`lhcml.models.base.TaggerModel`):

* ``__init__(self, n_classes: int, input_dims: dict[str, int], **hyperparameters)`` does no I/O;
* ``forward(inputs: dict[str, Tensor]) -> dict[str, Tensor]`` where ``inputs`` maps input
  groups (``"jets"``: ``(B, F)``; ``"tracks"``/``"flow"``: ``(B, N, F)``; images ``(B, C, H, W)``)
  and their masks ``"<group>_valid"`` (``(B, N)`` bool, True = real object) to tensors; the
  output holds ``"logits"`` ``(B, n_classes)`` and any auxiliary-task outputs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from lhcml.errors import ConfigError

_MODELS: dict[str, type] = {}

# Modules that hold registered architectures: a fixed list in the package, not from configs.
_ARCHITECTURE_MODULES = (
    "lhcml.models.ftag",
    "lhcml.models.deepsets",
    "lhcml.models.particlenet",
    "lhcml.models.part",
    "lhcml.models.lola",
    "lhcml.models.images",
    "lhcml.models.photon",
    "lhcml.models.quantized",
    "lhcml.models.fastcalo.vae",
    "lhcml.models.fastcalo.gan",
    "lhcml.models.fastcalo.flow",
    "lhcml.models.fastcalo.fm",
)


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator adding an architecture to the registry under ``name``."""

    def deco(cls: type) -> type:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name '{name}' registered twice")
        _MODELS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def _load_all() -> None:
    for mod in _ARCHITECTURE_MODULES:
        importlib.import_module(mod)


def list_models() -> list[str]:
    """Names of all registered architectures."""
    _load_all()
    return sorted(_MODELS)


def get_model_class(name: str) -> type:
    """The class registered under ``name``; a :class:`ConfigError` lists valid names otherwise."""
    _load_all()
    if name not in _MODELS:
        raise ConfigError(f"unknown model '{name}' (valid models: {', '.join(sorted(_MODELS))})")
    return _MODELS[name]


def build_model(name: str, n_classes: int, input_dims: dict[str, int], **hyper: Any):
    """Construct a registered model. Unknown hyperparameters give a clear error."""
    cls = get_model_class(name)
    try:
        return cls(n_classes=n_classes, input_dims=input_dims, **hyper)
    except TypeError as err:
        raise ConfigError(f"bad hyperparameters for model '{name}': {err}") from None
