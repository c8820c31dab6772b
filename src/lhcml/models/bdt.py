"""MV2-like boosted decision tree (xgboost) on jet-level inputs.

MV2 (ATL-PHYS-PUB-2017-013) is a BDT combining the low-level taggers (IP2D, IP3D, SV1,
JetFitter) and the jet kinematics. lhcml's ``mv2`` trains a multi-class gradient-boosted tree
ensemble (``multi:softprob``) on the same jet inputs as DL1, with the same config file,
sample/class weights and output columns as the NN taggers (train with ``lhcml train``, predict
with ``lhcml predict``). The model is one xgboost JSON file; the lhcml metadata (config YAML,
classes, outputs, variables) is stored in the booster's attributes, so the file is
self-describing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lhcml.atomic import atomic_path, atomic_write_text
from lhcml.errors import CheckpointMismatchError, ConfigError, CorruptFileError, SchemaError

#: model names trained by this module instead of the NN trainer
BDT_MODELS = ("mv2",)


class MV2:
    """Hyperparameters of the MV2-like BDT (a pure container; :func:`train_bdt` fits it).

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


def _read_all(ds: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    xs, ys, ws = [], [], []
    for batch in ds:
        xs.append(batch["jets"].numpy())
        if "labels" in batch:
            ys.append(batch["labels"].numpy())
        ws.append(batch["weights"].numpy())
    if not xs:
        raise SchemaError("no jets to read (empty files or no jet in the configured classes)")
    return np.concatenate(xs), (np.concatenate(ys) if ys else None), np.concatenate(ws)


def train_bdt(cfg: Any, specs: dict, labels: Any, resume: bool = False) -> Path:
    """Fit the BDT of ``cfg`` (``model.name: mv2``); return ``<output_dir>/checkpoints/mv2.json``."""
    import xgboost as xgb

    from lhcml.train.config import check_hyperparameters
    from lhcml.train.datamodule import H5JetDataset

    if resume:
        raise ConfigError("--resume is not supported for the BDT (mv2); train it again")
    if set(specs) != {"jets"}:
        raise ConfigError(f"mv2 takes only jet-level inputs (data.inputs: jets), got {sorted(specs)}")
    hyper = cfg.model.hyperparameters()
    check_hyperparameters(MV2, hyper, cfg.model.name)
    p = MV2(**hyper).params
    d = cfg.data
    kw = dict(specs=specs, labels=labels, batch_size=100_000, chunk_size=d.chunk_size, weight_field=d.weight_field)
    x, y, w = _read_all(H5JetDataset(d.train_files, num_jets=d.num_jets_train, **kw))
    xv, yv, wv = _read_all(H5JetDataset(d.val_files, num_jets=d.num_jets_val, **kw))
    n_cls = len(d.classes)
    if np.bincount(y, minlength=n_cls).min() == 0:
        raise SchemaError(f"every class needs training jets; counts {np.bincount(y, minlength=n_cls).tolist()}")
    from lhcml.train.trainer import class_dict_weights

    cw = cfg.loss.class_weights
    if cw is None:
        cw = class_dict_weights(cfg)[0]
    if cw == "balanced":
        counts = np.bincount(y, weights=w, minlength=n_cls)
        cw = counts.sum() / (n_cls * counts)
    if cw is not None:
        cw = np.asarray(cw, dtype=float)
        w, wv = w * cw[y], wv * cw[yv]
    out = Path(cfg.output_dir) / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "objective": "multi:softprob", "num_class": n_cls, "eval_metric": "mlogloss",
        "tree_method": "hist", "seed": cfg.seed, "max_depth": p["max_depth"],
        "eta": p["learning_rate"], "subsample": p["subsample"],
        "min_child_weight": p["min_child_weight"], "nthread": p["n_jobs"] or None,
    }  # fmt: skip
    dtrain = xgb.DMatrix(x, label=y, weight=w, feature_names=list(specs["jets"].variables))
    dval = xgb.DMatrix(xv, label=yv, weight=wv, feature_names=list(specs["jets"].variables))
    booster = xgb.train(
        {k: v for k, v in params.items() if v is not None}, dtrain,
        num_boost_round=p["n_estimators"], evals=[(dval, "val")],
        early_stopping_rounds=p["early_stopping_rounds"], verbose_eval=False,
    )  # fmt: skip
    from lhcml.train.checkpoint import build_meta

    variables = {"jets": list(specs["jets"].variables)}
    outputs = [labels.scheme.get(c).output for c in d.classes]
    meta = build_meta(cfg.to_yaml(), {}, list(d.classes), outputs, variables,
                      {"jets": list(specs["jets"].shape)}, cfg.resolved_tagger_name())  # fmt: skip
    booster.set_attr(lhcml_meta=yaml.safe_dump(meta))
    path = out / "mv2.json"
    with atomic_path(path, suffix=".json") as tmp:  # xgboost picks the format by the suffix
        booster.save_model(tmp)
    atomic_write_text(Path(cfg.output_dir) / "config.yaml", meta["config_yaml"])
    return path


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
