"""MV2-like boosted decision tree (xgboost) on jet-level inputs.

MV2 (ATL-PHYS-PUB-2017-013) is a BDT combining the low-level taggers (IP2D, IP3D, SV1,
JetFitter) and the jet kinematics. lhcml's ``mv2`` trains a multi-class gradient-boosted tree
ensemble (``multi:softprob``) on the same jet inputs as DL1, with the same config file,
sample/class weights and output columns as the NN taggers (train with ``lhcml train``, predict
with ``lhcml predict``). The model is one xgboost JSON file; the lhcml metadata (config YAML,
classes, outputs, variables) is stored in the booster's attributes, so the file is
self-describing.

This module holds the model side (hyperparameters, loading, inference); the training loop is
:mod:`lhcml.train.bdt` (the training stage imports the models, never the reverse).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lhcml.errors import CheckpointMismatchError, CorruptFileError

#: model names of this module (trained by :mod:`lhcml.train.bdt`, not the Lightning trainer)
BDT_MODELS = ("mv2",)


class MV2:
    """Hyperparameters of the MV2-like BDT (a pure container; :func:`lhcml.train.bdt.train_bdt` fits it).

    Parameters
    ----------
    n_estimators
        Maximum number of boosting rounds.
    max_depth, learning_rate, subsample, min_child_weight
        Usual xgboost tree parameters.
    early_stopping_rounds
        Stop when the validation log-loss has not improved for this many rounds.
    """

    def __init__(
        self,
        n_estimators: int = 1000,
        max_depth: int = 6,
        learning_rate: float = 0.1,
        subsample: float = 0.8,
        min_child_weight: float = 1.0,
        early_stopping_rounds: int = 20,
        n_jobs: int = 0,
    ) -> None:
        self.params = dict(
            n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
            subsample=subsample, min_child_weight=min_child_weight,
            early_stopping_rounds=early_stopping_rounds, n_jobs=n_jobs,
        )  # fmt: skip


def load_bdt(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The booster of an mv2 model file and its lhcml metadata."""
    import xgboost as xgb

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    booster = xgb.Booster()
    try:
        booster.load_model(path)
    except xgb.core.XGBoostError as err:
        raise CorruptFileError(f"{path} is not an xgboost model ({err})") from None
    raw = booster.attr("lhcml_meta")
    if raw is None:
        raise CheckpointMismatchError(f"{path} is not an lhcml BDT (no lhcml metadata)")
    return booster, yaml.safe_load(raw)


def predict_bdt(booster: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n_jets, n_classes)`` of raw jet features ``x``."""
    import xgboost as xgb

    best = booster.attr("best_iteration")
    rng = (0, int(best) + 1) if best is not None else (0, 0)
    return booster.predict(xgb.DMatrix(x, feature_names=booster.feature_names), iteration_range=rng)
