"""``train(cfg) -> Path``: the training stage (Lightning) for every registered tagger.

Outputs in ``cfg.output_dir``::

    checkpoints/best-epoch=NN.ckpt   # lowest val_loss
    checkpoints/last.ckpt            # for --resume
    config.yaml                      # resolved config (also inside every checkpoint)
    norm_dict.yaml, class_names.yaml # the constants in the model (also inside checkpoints)
    logs/metrics.csv                 # per-epoch metrics (+ TensorBoard events if installed)

Resume (``resume=True``) continues from ``checkpoints/last.ckpt`` — epoch counter, optimiser,
LR schedule and early-stopping state — after checking that the checkpoint was made with the
same data inputs, classes and model. :func:`train` hands every config to its trainer in
:data:`lhcml.train.protocol.TRAINERS` (by ``model.name``): ``mv2`` trains the BDT
(:mod:`lhcml.train.bdt`) and returns its model file; the NN taggers go to
:func:`train_lightning`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lhcml.atomic import atomic_write_text
from lhcml.errors import ConfigError, SchemaError
from lhcml.train.config import TrainConfig, check_hyperparameters

log = logging.getLogger(__name__)


def _label_spec(cfg: TrainConfig):
    from lhcml.labels import get_scheme
    from lhcml.train.datamodule import LabelSpec

    scheme = get_scheme(cfg.data.label_scheme).subset(cfg.data.classes)
    return LabelSpec.build(scheme, cfg.data.label_field)


def check_fields(files: list[str], group: str, fields: list[str], what: str, hint: str = "") -> None:
    """Every file has ``fields`` in dataset ``group``; otherwise :class:`SchemaError` (``hint``: how to
    fix it, appended to the message)."""
    from lhcml.train.datamodule import MAIN_TABLES, main_table, open_h5

    for p in files:
        with open_h5(p) as f:
            if group in MAIN_TABLES and group not in f:
                group = main_table(f)
            if group not in f:
                raise SchemaError(f"{what}: no dataset '{group}' in {p}")
            names = f[group].dtype.names or ()
            missing = [x for x in fields if x not in names]
            if missing:
                raise SchemaError(f"{what}: field(s) {missing} not in '{group}' of {p}" + (f"; {hint}" if hint else ""))


def prepare_inputs(cfg: TrainConfig) -> tuple[dict, Any]:
    """Inspect the files: group specs (same in every file) and the label spec."""
    from lhcml.train.datamodule import inspect_inputs

    if not cfg.data.train_files or not cfg.data.val_files:
        raise ConfigError("data.train_files and data.val_files must not be empty")
    specs = inspect_inputs(cfg.data.train_files[0], cfg.data.inputs)
    for p in cfg.data.train_files[1:] + cfg.data.val_files:
        other = inspect_inputs(p, cfg.data.inputs)
        for g, s in specs.items():
            if other[g].shape[1:] != s.shape[1:] and s.kind == "image":
                raise SchemaError(f"image '{g}' has shape {other[g].shape} in {p}, {s.shape} elsewhere")
    labels = _label_spec(cfg)
    extra = [cfg.data.weight_field] if cfg.data.weight_field else []
    hint = (
        f"the label scheme '{cfg.data.label_scheme}' (data.label_scheme) needs them: choose a scheme whose "
        "label the files carry (labels.yaml), or remake the files with the command that writes it (e.g. "
        "`lhcml trigger dataset` writes jssTruthLabel only from samples whose large-R jets carry "
        "PartonTruthLabelID)"
    )
    check_fields(cfg.data.train_files + cfg.data.val_files, "jets", labels.jet_fields() + extra, "labels/weights", hint)
    return specs, labels


def load_norm(cfg: TrainConfig, specs: dict) -> dict:
    """The normalisation dictionary: ``data.norm_dict`` or computed from the training file."""
    from lhcml.train.datamodule import compute_norm, norm_arrays

    if cfg.data.norm_dict:
        path = Path(cfg.data.norm_dict)
        if not path.is_file():
            raise ConfigError(f"data.norm_dict file {path} does not exist (run `lhcml preprocess`)")
        norm = yaml.safe_load(path.read_text()) or {}
        missing = {
            g: [v for v in specs[g].variables if v not in (norm.get(g) or {})]
            for g in specs if specs[g].kind != "image"
        }  # fmt: skip
        if any(missing.values()):
            # e.g. DL1r's rnnip_p*, written into the files by `lhcml predict` after preprocessing
            warnings.warn(
                f"{path} has no entry for {({g: v for g, v in missing.items() if v})}: their mean/std "
                "are computed from the first training file", stacklevel=2,
            )  # fmt: skip
            computed = compute_norm(cfg.data.train_files, specs)
            for g, names in missing.items():
                for v in names:
                    norm.setdefault(g, {})[v] = computed[g][v]
    else:
        norm = compute_norm(cfg.data.train_files, specs)
    norm = {g: {v: norm[g][v] for v in specs[g].variables} for g in specs if specs[g].kind != "image" and g in norm}
    norm_arrays(norm, specs)  # raises on missing entries
    return norm


def class_dict_weights(cfg: TrainConfig) -> tuple[list[float] | None, list[float] | None]:
    """(jet-class weights, track-origin weights) from ``loss.class_dict`` (UPP layout), or Nones."""
    if not cfg.loss.class_dict:
        return None, None
    path = Path(cfg.loss.class_dict)
    if not path.is_file():
        raise ConfigError(f"loss.class_dict file {path} does not exist (run `lhcml preprocess`)")
    cd = yaml.safe_load(path.read_text()) or {}
    jets = next((v for k, v in cd.items() if k in ("jets", "photons") and isinstance(v, dict)), {})
    return jets.get(cfg.data.label_field), (cd.get("tracks") or {}).get("ftagTruthOriginLabel")


def _precision(cfg: TrainConfig) -> str:
    import torch

    p = cfg.trainer.precision
    if p != "auto":
        return p
    if cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _keep_metrics(csv_logger: Any, last_epoch: int) -> None:
    """Carry the ``metrics.csv`` rows of epochs ``<= last_epoch`` over into a resumed run.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts; the rows of the
    epochs finished before the crash (those the resumed checkpoint holds) are read first and
    handed to the new writer, which writes them back ahead of the new epochs. Rows of the
    interrupted epoch are dropped: that epoch is trained again.
    """
    import csv

    path = Path(csv_logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = []
    for r in rows:
        try:
            epoch = int(float(r.get("epoch") or "nan"))
        except ValueError:
            continue
        if epoch > last_epoch:
            continue
        kept.append({k: float(v) for k, v in r.items() if k and v not in (None, "")})
    writer = csv_logger.experiment  # rank 0: creates the writer, which deletes the old file
    if hasattr(writer, "log_metrics") and hasattr(writer, "metrics"):
        writer.metrics[:0] = [{**r, "step": int(r.get("step", 0))} for r in kept]


def train(
    cfg: TrainConfig,
    resume: bool = False,
    devices: int | None = None,
    strategy: str | None = None,
    epoch_hooks: list | None = None,
) -> Path:
    """Train the tagger described by ``cfg``; return the best checkpoint.

    Parameters
    ----------
    cfg
        Validated training config (:func:`lhcml.train.config.load_train_config`).
    resume
        Continue from ``<output_dir>/checkpoints/last.ckpt``.
    devices, strategy
        Override ``trainer.devices``/``trainer.strategy`` (e.g. ``4``, ``"ddp"``; gloo on CPU).
    epoch_hooks
        Callables ``hook(epoch, metrics)`` called after each validation epoch (tuning).

    Returns
    -------
    Path
        The best checkpoint (lowest ``val_loss``), or the BDT model file for ``mv2``.
    """
    from lhcml.train.protocol import trainer_for_model

    return trainer_for_model(cfg.model.name).fit(
        cfg, resume=resume, devices=devices, strategy=strategy, epoch_hooks=epoch_hooks
    )


def train_lightning(
    cfg: TrainConfig,
    resume: bool = False,
    devices: int | None = None,
    strategy: str | None = None,
    epoch_hooks: list | None = None,
) -> Path:
    """Train an NN tagger with Lightning (the ``lightning`` trainer of the protocol); arguments
    and return value as :func:`train`."""
    override_devices(cfg, devices, strategy)
    out = Path(cfg.output_dir)
    specs, labels = prepare_inputs(cfg)
    return _train_nn(cfg, specs, labels, out, resume, epoch_hooks or [])


def override_devices(cfg: Any, devices: int | None, strategy: str | None) -> None:
    """Put ``--devices``/``--strategy`` over ``cfg.trainer`` (any config with a ``TrainerConfig``),
    validated like the config keys: ``--devices 0`` is one clear ConfigError."""
    if devices is None and strategy is None:
        return
    from lhcml.config import validate_config
    from lhcml.train.config import TrainerConfig

    given = {"devices": devices, "strategy": strategy}
    options = " ".join(f"--{k} {v}" for k, v in given.items() if v is not None)
    trainer = {**cfg.trainer.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    cfg.trainer = validate_config(TrainerConfig, trainer, source=f"the command line ({options})")


def resume_checkpoint(out: Path, resume: bool) -> dict | None:
    """The checkpoint ``<out>/checkpoints/last.ckpt`` to resume from (``None`` for a new run).

    Raises ``FileNotFoundError`` for ``--resume`` without one, ``ConfigError`` for a new run
    into a folder that already holds one."""
    from lhcml.train.checkpoint import read_checkpoint

    last = out / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no {last} to resume from (train without --resume first)")
        return read_checkpoint(last)
    if last.exists():
        raise ConfigError(f"{out} already holds a training run; pass --resume or choose another output_dir")
    return None


def _train_nn(cfg: TrainConfig, specs: dict, labels: Any, out: Path, resume: bool, hooks: list) -> Path:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import (
        Callback,
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
    )
    from lightning.pytorch.loggers import CSVLogger

    from lhcml.models.registry import build_model, get_model_class
    from lhcml.train.checkpoint import (
        build_meta,
        check_state_dict,
        compare_configs,
        meta_config,
    )
    from lhcml.train.datamodule import H5JetDataset, collate_identity, norm_arrays
    from lhcml.train.extra_losses import build_extra_loss
    from lhcml.train.module import TaggerModule
    from lhcml.train.schedule import ScheduleLength

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    last = out / "checkpoints" / "last.ckpt"
    resumed = resume_checkpoint(out, resume)
    if resumed is not None:
        compare_configs(meta_config(resumed["lhcml"]), cfg.model_dump(mode="json"), str(last))

    # model
    cls = get_model_class(cfg.model.name)
    hyper = cfg.model.hyperparameters()
    check_hyperparameters(cls, hyper, cfg.model.name)
    input_dims = {g: s.dim for g, s in specs.items()}
    class_names = list(cfg.data.classes)
    model = build_model(cfg.model.name, len(class_names), input_dims, **hyper)
    variables = {g: list(s.variables) if s.variables is not None else None for g, s in specs.items()}
    model.configure_inputs({g: v for g, v in variables.items() if v is not None})
    norm = load_norm(cfg, specs)
    for g, (mean, std) in norm_arrays(norm, specs).items():
        model.set_normalisation(g, mean, std)
    if cfg.loss.head_weights:
        model.set_head_weights(cfg.loss.head_weights)
    extra = [build_extra_loss(e.name, e.weight, **e.options()) for e in cfg.extra_losses]

    # data
    label_fields = {g: list(v) for g, v in model.label_fields().items()}
    for el in extra:
        for g, fl in el.batch_fields.items():
            label_fields.setdefault(g, [])
            label_fields[g] += [x for x in fl if x not in label_fields[g]]
    for g, fl in label_fields.items():
        check_fields(cfg.data.train_files + cfg.data.val_files, g, fl, "label fields of the heads")
    d = cfg.data
    common = dict(specs=specs, labels=labels, batch_size=d.batch_size, chunk_size=d.chunk_size,
                  weight_field=d.weight_field, label_fields=label_fields)  # fmt: skip
    train_ds = H5JetDataset(d.train_files, num_jets=d.num_jets_train, shuffle=True, seed=cfg.seed,
                            bucket_by_length=d.bucket_by_length,
                            bucket_stratify=d.bucket_stratify, **common)
    val_ds = H5JetDataset(d.val_files, num_jets=d.num_jets_val, shuffle=False, **common)
    cw = cfg.loss.class_weights
    cd_jets, cd_origin = class_dict_weights(cfg)
    if cw is None:
        cw = cd_jets
    if cd_origin is not None and "track_origin" in model.heads:
        model.heads["track_origin"].set_class_weights(cd_origin)
    if cw is not None:
        if cw == "balanced":
            counts = train_ds.class_counts()
            if np.any(counts <= 0):
                raise SchemaError(f"class_weights: balanced needs every class in the training data (counts {counts.tolist()})")
            cw = (counts.sum() / (len(counts) * counts)).tolist()
        model.heads["jet_classification"].set_class_weights(cw)
    loader_kw = dict(batch_size=None, collate_fn=collate_identity, num_workers=d.num_workers)
    train_dl = torch.utils.data.DataLoader(train_ds, **loader_kw)
    val_dl = torch.utils.data.DataLoader(val_ds, **loader_kw)

    # metadata, written next to the checkpoints and into them
    outputs = [labels.scheme.get(c).output for c in class_names]
    meta = build_meta(cfg.to_yaml(), norm, class_names, outputs, variables,
                      {g: list(s.shape) for g, s in specs.items()}, cfg.resolved_tagger_name())  # fmt: skip

    module = TaggerModule(model, cfg, class_names, extra, meta)
    module.epoch_hooks.extend(hooks)
    if resume:
        # modules outside the compared config keys (extra losses' adversaries, model code) must fit too
        check_state_dict(
            resumed["state_dict"], module.state_dict(), str(last),
            "the config changes the trained modules (model or extra_losses, e.g. an added adversary): "
            "resume with the config stored in the checkpoint's output_dir/config.yaml or start a new output_dir",
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", meta["config_yaml"])
    atomic_write_text(out / "norm_dict.yaml", meta["norm_yaml"])
    atomic_write_text(out / "class_names.yaml", yaml.safe_dump({"classes": class_names, "outputs": outputs}))

    class _SetEpoch(Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            train_ds.set_epoch(trainer.current_epoch)

    ckpt_cb = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best-{epoch:02d}", monitor="val_loss",
        mode="min", save_top_k=1,
    )  # fmt: skip
    # last.ckpt after every epoch (save_last=True would refresh it only with a new best)
    last_cb = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1,
        every_n_epochs=1, enable_version_counter=False,
    )  # fmt: skip
    callbacks: list[Any] = [ckpt_cb, last_cb, LearningRateMonitor(logging_interval="epoch"), _SetEpoch(), ScheduleLength()]
    if cfg.trainer.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.trainer.patience))
    csv_logger = CSVLogger(save_dir=out, name="logs", version="")
    if resume:
        _keep_metrics(csv_logger, int(resumed.get("epoch", -1)))
    loggers: list[Any] = [csv_logger]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=out, name="logs", version="tb"))
    except ImportError:
        pass
    t = cfg.trainer
    strategy = t.strategy
    if t.devices > 1 and strategy == "auto":
        strategy = "ddp"
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=strategy,
        precision=_precision(cfg),
        callbacks=callbacks,
        logger=loggers,
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        limit_train_batches=t.limit_train_batches,
        deterministic=False,
        enable_model_summary=t.enable_progress_bar,
    )
    with warnings.catch_warnings():
        # our IterableDataset's __len__ is exact (chunks are split between workers, not copied)
        warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
        trainer.fit(module, train_dl, val_dl, ckpt_path=str(last) if resume else None, weights_only=True)
    best = Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else last
    return best
