"""Training loop of the MV2-like BDT (``model.name: mv2``; the model is :mod:`lhcml.models.bdt`).

The same training config, inputs, sample and class weights as the NN taggers; xgboost fits a
``multi:softprob`` ensemble with early stopping on the validation files and the model file
carries the lhcml metadata (:func:`lhcml.train.checkpoint.build_meta`) in its attributes.
:data:`lhcml.train.protocol.TRAINERS` ``["bdt"]`` calls :func:`fit_bdt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lhcml.atomic import atomic_path, atomic_write_text
from lhcml.errors import ConfigError, SchemaError
from lhcml.models.bdt import MV2


def fit_bdt(cfg: Any, resume: bool = False) -> Path:
    """Inspect the inputs of ``cfg`` and fit the BDT; return ``<output_dir>/checkpoints/mv2.json``."""
    from lhcml.train.trainer import prepare_inputs

    specs, labels = prepare_inputs(cfg)
    return train_bdt(cfg, specs, labels, resume=resume)


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

    from lhcml.train.checkpoint import build_meta
    from lhcml.train.config import check_hyperparameters
    from lhcml.train.datamodule import H5JetDataset
    from lhcml.train.trainer import class_dict_weights

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
