"""Training, prediction and checkpoint handling for lhcml taggers (Lightning).

``train(cfg) -> Path`` (:mod:`lhcml.train.trainer`), ``predict(checkpoint, files, ...)``
(:mod:`lhcml.train.predict`), configs in :mod:`lhcml.train.config`. Heavy packages (torch,
lightning) are imported lazily.
"""

from __future__ import annotations

__all__ = ["load_train_config", "predict", "train"]


def __getattr__(name: str):
    if name == "train":
        from lhcml.train.trainer import train

        return train
    if name == "predict":
        from lhcml.train.predict import predict

        return predict
    if name == "load_train_config":
        from lhcml.train.config import load_train_config

        return load_train_config
    raise AttributeError(name)
