"""Training, prediction and checkpoint handling for lhcml models.

``train(cfg) -> Path`` (:mod:`lhcml.train.trainer`), ``predict(checkpoint, files, ...)``
(:mod:`lhcml.train.predict`), configs in :mod:`lhcml.train.config`. Every trainable model —
Lightning taggers, BDTs (:mod:`lhcml.train.bdt`), the PAED denoiser (:mod:`lhcml.train.paed`) —
goes through one trainer protocol (:mod:`lhcml.train.protocol`: :data:`TRAINERS`,
:func:`train_from_config`, the function behind ``lhcml train``). Heavy packages (torch,
lightning, xgboost) are imported lazily.
"""

from __future__ import annotations

__all__ = ["TRAINERS", "load_train_config", "predict", "train", "train_from_config"]

_WHERE = {
    "train": "trainer",
    "predict": "predict",
    "load_train_config": "config",
    "TRAINERS": "protocol",
    "train_from_config": "protocol",
}


def __getattr__(name: str):
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"lhcml.train.{_WHERE[name]}"), name)
    raise AttributeError(name)
