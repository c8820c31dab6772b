"""Training of the hit-level tracking models (``lhcml train configs/tracking/X.yaml``).

The models of :data:`TRACKING_MODELS` (metric-learning embedding; the GNN's edge filter and
interaction network register here too) learn from whole events: one training step is one
event of TrackML-layout files read by :func:`lhcml.data.trackml.read_event`. Why a module of its
own beside the tagger loop of :mod:`lhcml.train.trainer`: a batch here is an event of
10³–10⁵ hits with its own truth, and each model builds its own training targets from it (hit
pairs, graph edges). The Lightning machinery is the one of every lhcml trainer:
``checkpoints/best-epoch=NN.ckpt`` (lowest ``val_loss``), ``checkpoints/last.ckpt`` (every
epoch), ``--resume`` (:func:`lhcml.train.trainer.resume_checkpoint`), early stopping,
``logs/metrics.csv``, ``epoch_hooks`` for ``lhcml tune``, ``--devices/--strategy``
(:func:`lhcml.train.trainer.override_devices`).

A registry entry (:class:`TrackingModelSpec`) pairs a model class with four functions:

* ``prepare(event, options) -> sample``: the event's arrays (numpy; features, truth, targets) —
  run once per event when the run starts, kept in memory; ``options`` is ``data.prepare`` of the
  config validated by the entry's strict ``options`` schema;
* ``init_args(sample) -> dict``: the constructor arguments that come from the data (e.g. the
  feature names; the user may not set them in ``model:``);
* ``setup(model, samples)``: fit data-derived constants on the training samples (normalisation);
* ``step(model, sample, generator, training) -> {"loss": tensor, ...}``: the loss terms (and at
  validation any metrics) of one event; all randomness from ``generator``.

Resume is exact: every training step draws from a generator seeded by ``(seed, batch, rank)``
and the event order is a permutation seeded by ``(seed, epoch)``, so a run resumed from
``last.ckpt`` continues as the uninterrupted run would have (``tests/test_tracking_bucketing.py``).
Validation draws under a fixed seed per event.

Checkpoints carry, under ``checkpoint["lhcml"]``: ``kind: tracking``, the resolved config, the
model name and its constructor arguments (``model_init_yaml``); :func:`load_tracking_model`
rebuilds the model from them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field

from lhcml.atomic import atomic_write_text
from lhcml.config import StrictModel, validate_config
from lhcml.errors import CheckpointMismatchError, ConfigError
from lhcml.train.config import (
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    check_hyperparameters,
)

#: config keys a resumed checkpoint must share with the config
_MUST_MATCH = (("model",), ("data", "prepare"))
#: seed of the validation draws (per event: VALIDATION_SEED + index; our choice)
VALIDATION_SEED = 12345


# ---------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class TrackingModelSpec:
    """One trainable tracking model: its class and how it learns from an event (module docstring)."""

    model: type
    prepare: Callable[[Any, Any], dict[str, Any]]
    step: Callable[[Any, dict[str, Any], Any, bool], dict[str, Any]]
    options: type[StrictModel]
    init_args: Callable[[dict[str, Any]], dict[str, Any]] = lambda sample: {}
    setup: Callable[[Any, list[dict[str, Any]]], None] = lambda model, samples: None


class EmbeddingOptions(StrictModel):
    """``data.prepare`` of the hit embedding."""

    #: add the cell count / summed value per hit; null: when the events have cells
    use_cells: bool | None = None
    #: validation queries per event for the neighbour recall (our choice)
    n_recall_queries: int = Field(2000, gt=0)
    #: true pairs: ``all`` same-particle pairs, or those at most ``pair_window`` hits apart along the
    #: particle (hits ordered by distance from the origin; 1 = consecutive, Exa.TrkX's truth edges)
    positives: Literal["all", "window"] = "all"
    pair_window: int = Field(3, ge=1)


def _embedding_prepare(event: Any, opts: EmbeddingOptions) -> dict[str, Any]:
    from lhcml.models.tracking.embedding import hit_features, neighbour_pairs, same_particle_pairs

    feats, names = hit_features(event, opts.use_cells)
    pid = hit_particle_ids(event)
    n_same = np.unique(pid, return_inverse=True, return_counts=True)
    multi = np.flatnonzero((pid != 0) & (n_same[2][n_same[1]] >= 2))
    rng = np.random.default_rng([VALIDATION_SEED, int(event.event_id)])
    queries = np.sort(rng.permutation(multi)[: opts.n_recall_queries])
    return {
        "features": feats,
        "particle_id": pid,
        "pos_pairs": same_particle_pairs(pid) if opts.positives == "all"
        else neighbour_pairs(pid, np.hypot(feats[:, 0], feats[:, 2]), opts.pair_window),
        "queries": queries.astype(np.int64),
        "feature_names": names,
    }


def _embedding_setup(model: Any, samples: list[dict[str, Any]]) -> None:
    model.set_normalisation(np.concatenate([np.asarray(s["features"]) for s in samples]))


def _embedding_step(model: Any, s: dict[str, Any], generator: Any, training: bool) -> dict[str, Any]:
    from lhcml.models.tracking.embedding import contrastive_loss, neighbour_recall, sample_pairs

    emb = model(s["features"])
    pairs, truth = sample_pairs(emb, s["particle_id"], s["pos_pairs"], model, generator)
    terms = {"loss": contrastive_loss(emb, pairs, truth, model.margin)}
    if not training:
        terms["recall"] = neighbour_recall(emb.detach(), s["particle_id"], model.recall_k, s["queries"])
    return terms


def _embedding_class() -> type:
    from lhcml.models.tracking.embedding import HitEmbedding

    return HitEmbedding


class _LazyClass:
    """A registry value resolved on first use (keeps ``import lhcml.train.tracking`` free of torch)."""

    def __init__(self, load: Callable[[], type]) -> None:
        self._load = load

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._load()(*args, **kwargs)

    @property
    def cls(self) -> type:
        return self._load()


class GraphOptions(StrictModel):
    """``data.prepare`` of the edge classifiers: the graph set they learn on (files
    ``<event dir>/graphs-<graph>/event{N:09d}-graph.npz`` of ``lhcml tracking build-graphs``)."""

    graph: str = "module_map"


def _tracking_model_module(module: str) -> Any:
    """:mod:`lhcml.models.tracking.gnn`, ``.seed_filter`` or ``.track_filter``, imported on first use (keeps
    ``import lhcml.train.tracking`` free of torch)."""
    from lhcml.models.tracking import gnn, seed_filter, track_filter

    return {"gnn": gnn, "seed_filter": seed_filter, "track_filter": track_filter}[module]


def _lazy(module: str, attr: str) -> Any:
    """The function ``attr`` of :func:`_tracking_model_module` ``(module)``, imported on its first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_tracking_model_module(module), attr)(*args, **kwargs)

    return call


def _lazy_class(module: str, cls: str) -> _LazyClass:
    """The class ``cls`` of :func:`_tracking_model_module` ``(module)``, resolved on first use."""
    return _LazyClass(lambda: getattr(_tracking_model_module(module), cls))


def _gnn_spec(cls: str) -> TrackingModelSpec:
    """Registry entry of an edge classifier of :mod:`lhcml.models.tracking.gnn`."""
    return TrackingModelSpec(model=_lazy_class("gnn", cls),
                             prepare=_lazy("gnn", "graph_prepare"), step=_lazy("gnn", "edge_step"),
                             options=GraphOptions, init_args=_lazy("gnn", "graph_init_args"))  # fmt: skip


class SeedOptions(StrictModel):
    """``data.prepare`` of the seed classifier: the seed set it learns on (files
    ``<event dir>/seeds-<seeds>/event{N:09d}-seeds.npz`` of ``lhcml tracking write-seeds``)."""

    seeds: str = "ml"


class TrackOptions(StrictModel):
    """``data.prepare`` of the track classifier: the track set it learns on (files
    ``<event dir>/tracks-<tracks>/event{N:09d}-tracks.npz`` of ``lhcml.tasks.tracking.track_quality.write_track_files``)."""

    tracks: str = "quality"


#: the trainable tracking models, by ``model.name`` (explicit; the GNN stages are registered here too)
TRACKING_MODELS: dict[str, TrackingModelSpec] = {
    "hit_embedding": TrackingModelSpec(
        model=_LazyClass(_embedding_class), prepare=_embedding_prepare, step=_embedding_step,
        options=EmbeddingOptions, init_args=lambda s: {"feature_names": list(s["feature_names"])},
        setup=_embedding_setup,
    ),
    "edge_filter": _gnn_spec("EdgeFilter"),
    "interaction_network": _gnn_spec("InteractionNetwork"),
    "seed_filter": TrackingModelSpec(  # ACTS triplet-seed classifier of ml-seeds+ckf (lhcml.models.tracking.seed_filter)
        model=_lazy_class("seed_filter", "SeedClassifier"), prepare=_lazy("seed_filter", "seed_prepare"),
        step=_lazy("seed_filter", "seed_step"), options=SeedOptions,
        init_args=_lazy("seed_filter", "seed_init_args"), setup=_lazy("seed_filter", "seed_setup"),
    ),
    "track_filter": TrackingModelSpec(  # fake-track classifier of ml-seeds+ckf's track selection (lhcml.models.tracking.track_filter)
        model=_lazy_class("track_filter", "TrackClassifier"), prepare=_lazy("track_filter", "track_prepare"),
        step=_lazy("seed_filter", "seed_step"), options=TrackOptions,
        init_args=_lazy("seed_filter", "seed_init_args"), setup=_lazy("seed_filter", "seed_setup"),
    ),
}  # fmt: skip


def is_tracking_model(name: str) -> bool:
    """Whether ``model.name`` is one of :data:`TRACKING_MODELS`."""
    return name in TRACKING_MODELS


def tracking_spec(name: str) -> TrackingModelSpec:
    """The registry entry of ``name`` (:class:`ConfigError` naming the valid ones otherwise)."""
    if name not in TRACKING_MODELS:
        raise ConfigError(f"unknown tracking model '{name}' (valid: {', '.join(sorted(TRACKING_MODELS))})")
    return TRACKING_MODELS[name]


def tracking_model_class(name: str) -> type:
    """The model class of the registry entry ``name`` (its constructor's arguments are the hyperparameters)."""
    return _model_cls(tracking_spec(name))


def _model_cls(spec: TrackingModelSpec) -> type:
    m = spec.model
    return m.cls if isinstance(m, _LazyClass) else m


def hit_particle_ids(event: Any) -> np.ndarray:
    """``particle_id`` (int64, 0 = noise) of every hit of ``event.hits``, from ``event.truth``.

    Raises
    ------
    SchemaError
        Hits without a truth row (the event has no or incomplete truth).
    """
    from lhcml.errors import SchemaError

    truth = getattr(event, "truth", None)
    if truth is None or "particle_id" not in getattr(truth, "columns", ()):
        raise SchemaError(f"event {event.event_id}: no truth (particle_id per hit) — training needs simulated events")
    t = truth.set_index("hit_id")["particle_id"]
    hid = event.hits["hit_id"].to_numpy()
    missing = ~np.isin(hid, t.index.to_numpy())
    if missing.any():
        raise SchemaError(
            f"event {event.event_id}: {int(missing.sum())} hit(s) have no truth row (first hit_id {int(hid[missing][0])})"
        )
    return t.loc[hid].to_numpy(np.int64)


# ---------------------------------------------------------------------------------------------
# config


class TrackingDataConfig(StrictModel):
    """Event directories (TrackML layout, :func:`lhcml.data.trackml.list_events`) and the events used.

    ``train_dir`` / ``val_dir`` are one directory or a list of them (e.g. samples at several ⟨μ⟩);
    with a list, ``train_events`` / ``val_events`` are null (every event of each) or one entry per
    directory (a list of event ids, or null for all of that directory), and ``max_*_events``
    limits each directory. An event may not be both a training and a validation event.
    """

    train_dir: str | list[str]
    val_dir: str | list[str]
    #: event ids; null: every event of the directory (with several directories: one entry per directory)
    train_events: list[int] | list[list[int] | None] | None = None
    val_events: list[int] | list[list[int] | None] | None = None
    max_train_events: int | None = Field(None, gt=0)
    max_val_events: int | None = Field(None, gt=0)
    #: options of the model's event preparation (its registry entry's schema)
    prepare: dict[str, Any] = Field(default_factory=dict)


class TrackingModelConfig(ModelConfig):
    """``name`` (one of :data:`TRACKING_MODELS`) plus its hyper-parameters."""


class TrackingTrainConfig(StrictModel):
    """The full configuration of a tracking-model training run."""

    data: TrackingDataConfig
    model: TrackingModelConfig
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(name="adam", lr=1e-3, weight_decay=0.0)
    )
    scheduler: SchedulerConfig = Field(default_factory=lambda: SchedulerConfig(name="none"))
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(precision="32-true", log_every_n_steps=1))
    seed: int = 42
    output_dir: str = "runs/tracking"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def prepare_options(self) -> Any:
        """``data.prepare`` validated by the model's options schema."""
        spec = tracking_spec(self.model.name)
        return validate_config(spec.options, dict(self.data.prepare), source="data.prepare")


def tracking_config_from_dict(data: dict[str, Any], source: str = "config") -> TrackingTrainConfig:
    """Validate a tracking training config given as a mapping (model name and ``data.prepare`` too)."""
    cfg = validate_config(TrackingTrainConfig, data, source=source)
    tracking_spec(cfg.model.name)
    cfg.prepare_options()
    return cfg


# ---------------------------------------------------------------------------------------------
# data


def event_ids(directory: str, events: list[int] | None, limit: int | None) -> list[int]:
    """The event ids to use from ``directory`` (all listed ones when ``events`` is None)."""
    from lhcml.data.trackml import list_events

    have = [int(e) for e in list_events(directory)]
    if events is None:
        ids = have
    else:
        absent = sorted(set(events) - set(have))
        if absent:
            raise ConfigError(f"event(s) {absent[:5]} not in {directory} (it holds {len(have)}: {have[:5]}...)")
        ids = list(events)
    if limit is not None:
        ids = ids[:limit]
    if not ids:
        raise ConfigError(f"no events in {directory}")
    return ids


def event_sets(dirs: str | list[str], events: list[Any] | None, limit: int | None,
               what: str) -> list[tuple[str, list[int]]]:  # fmt: skip
    """``[(directory, event ids)]`` of ``data.<what>_dir`` / ``data.<what>_events`` (one or several directories).

    Raises
    ------
    ConfigError
        No directory, per-directory event lists that do not match the directories, or events a
        directory does not hold.
    """
    if isinstance(dirs, str):
        if events is not None and any(not isinstance(e, int) for e in events):
            raise ConfigError(f"data.{what}_events: one directory in data.{what}_dir, so give a list of event ids, "
                              "not one list per directory")  # fmt: skip
        return [(dirs, event_ids(dirs, events, limit))]
    if not dirs:
        raise ConfigError(f"data.{what}_dir is an empty list: give one directory or a list of directories")
    if events is None:
        per: list[Any] = [None] * len(dirs)
    elif len(events) != len(dirs) or any(isinstance(e, int) for e in events):
        raise ConfigError(f"data.{what}_events: data.{what}_dir lists {len(dirs)} directories, so give one entry "
                          f"per directory (a list of event ids, or null for all), got {events!r:.80}")  # fmt: skip
    else:
        per = list(events)
    return [(d, event_ids(d, e, limit)) for d, e in zip(dirs, per, strict=True)]


def load_samples(directory: str, ids: list[int], spec: TrackingModelSpec, options: Any) -> list[dict[str, Any]]:
    """``spec.prepare`` of every event ``ids`` of ``directory`` (read with :func:`lhcml.data.trackml.read_event`)."""
    from lhcml.data.trackml import read_event

    return [spec.prepare(read_event(directory, e), options) for e in ids]


def _lazy_permutation(n: int, seed: int) -> Any:
    """:class:`lhcml.train.fastcalo._EpochPermutation` whose order is drawn at the first ``next``.

    With ``batch_size=None`` the DataLoader calls ``iter(sampler)`` itself (no batch sampler in
    between), and a resumed Lightning run creates that iterator before it sets the epoch: a lazy
    iterator draws the resumed epoch's permutation, not epoch 0's."""
    from lhcml.train.fastcalo import _EpochPermutation

    class _Lazy(_EpochPermutation):
        def __iter__(self):
            yield from super().__iter__()

    return _Lazy(n, seed)


class _Events:
    """Map-style dataset over prepared events: item ``i`` = event ``i``'s arrays (tensors on use)."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        # np.require: a read-only array (from pandas) is copied, torch.from_numpy needs a writable one
        return {
            k: torch.from_numpy(np.require(v, requirements="W")) if isinstance(v, np.ndarray) else v
            for k, v in self.samples[i].items()
        }


# ---------------------------------------------------------------------------------------------
# model and Lightning module


def build_tracking_model(name: str, init: dict[str, Any]) -> Any:
    """A model of :data:`TRACKING_MODELS` from its constructor arguments (no I/O)."""
    cls = _model_cls(tracking_spec(name))
    try:
        return cls(**init)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad hyperparameters for model '{name}': {err}") from None


def model_init(cfg: TrackingTrainConfig, sample: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments: the data's (:attr:`TrackingModelSpec.init_args`) plus ``model:``'s keys."""
    spec = tracking_spec(cfg.model.name)
    hyper = cfg.model.hyperparameters()
    from_data = spec.init_args(sample)
    clash = [k for k in from_data if k in hyper]
    if clash:
        raise ConfigError(f"model.{clash[0]} comes from the data (data.prepare): remove it from 'model'")
    return {**from_data, **hyper}


def _module_class() -> type:
    import lightning as L
    import torch

    class TrackingModule(L.LightningModule):
        """Lightning wrapper: one event per step, the registry entry's ``step`` as the loss."""

        def __init__(self, model: Any, spec: TrackingModelSpec, cfg: TrackingTrainConfig, meta: dict[str, Any]) -> None:
            super().__init__()
            self.model = model
            self.spec = spec
            self.cfg = cfg
            self.meta = dict(meta)
            self.val_history: list[dict[str, float]] = []
            self.epoch_hooks: list[Any] = []

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
            b = self.current_epoch * int(self.trainer.num_training_batches) + batch_idx
            g = torch.Generator(device="cpu")
            g.manual_seed(int(np.random.default_rng([self.cfg.seed, b, self.global_rank]).integers(2**62)))
            terms = self.spec.step(self.model, batch, g, True)
            for k, v in terms.items():
                name = "train_loss" if k == "loss" else f"train_{k}"
                self.log(name, v, on_step=k == "loss", on_epoch=True, prog_bar=k == "loss", batch_size=1, sync_dist=True)
            return terms["loss"]

        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
            g = torch.Generator(device="cpu")
            g.manual_seed(VALIDATION_SEED + batch_idx)
            terms = self.spec.step(self.model, batch, g, False)
            for k, v in terms.items():
                name = "val_loss" if k == "loss" else f"val_{k}"
                self.log(name, float(v), on_epoch=True, prog_bar=k == "loss", batch_size=1, sync_dist=True)

        def on_validation_epoch_end(self) -> None:
            if self.trainer.sanity_checking:
                return
            metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val_")}
            metrics["epoch"] = float(self.current_epoch)
            self.val_history.append(metrics)
            for hook in self.epoch_hooks:
                if hook(self.current_epoch, metrics) is True:
                    self.trainer.should_stop = True

        def configure_optimizers(self) -> Any:
            from lhcml.train.schedule import make_optimizer, make_scheduler

            o = self.cfg.optimizer
            opt = make_optimizer([p for p in self.parameters() if p.requires_grad], o)
            steps = self.trainer.estimated_stepping_batches
            steps = int(steps) + 1 if np.isfinite(steps) else 10_000
            sched = make_scheduler(opt, self.cfg.scheduler, steps, o.lr)
            if sched is None:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["lhcml"] = dict(self.meta)

    return TrackingModule


# ---------------------------------------------------------------------------------------------
# fit / load


def fit_tracking(
    cfg: TrackingTrainConfig,
    resume: bool = False,
    devices: int | None = None,
    strategy: str | None = None,
    epoch_hooks: list | None = None,
) -> Path:
    """Train the tracking model of ``cfg``; return the best checkpoint (lowest ``val_loss``).

    Parameters
    ----------
    cfg
        Validated config (:func:`tracking_config_from_dict`).
    resume
        Continue from ``<output_dir>/checkpoints/last.ckpt`` (same model and ``data.prepare``).
    devices, strategy
        Override ``trainer.devices``/``trainer.strategy``.
    epoch_hooks
        Callables ``hook(epoch, metrics)`` after each validation epoch (tuning); returning
        ``True`` stops training after this epoch.

    Raises
    ------
    CheckpointMismatchError
        ``--resume`` from a checkpoint of another kind, model, data preparation or data-derived
        constructor arguments.
    """
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from lhcml import __version__
    from lhcml.train.checkpoint import check_state_dict, compare_configs, meta_config
    from lhcml.train.schedule import ScheduleLength
    from lhcml.train.trainer import _keep_metrics, override_devices, resume_checkpoint

    override_devices(cfg, devices, strategy)
    spec = tracking_spec(cfg.model.name)
    options = cfg.prepare_options()
    out = Path(cfg.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    resumed = resume_checkpoint(out, resume)
    if resumed is not None:
        if resumed.get("lhcml", {}).get("kind") != "tracking":
            raise CheckpointMismatchError(f"{last} is not a tracking-model checkpoint; use a new output_dir")
        compare_configs(meta_config(resumed["lhcml"]), cfg.model_dump(mode="json"), str(last), must_match=_MUST_MATCH)
    check_hyperparameters(_model_cls(spec), cfg.model.hyperparameters(), cfg.model.name)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    d = cfg.data
    train_sets = event_sets(d.train_dir, d.train_events, d.max_train_events, "train")
    val_sets = event_sets(d.val_dir, d.val_events, d.max_val_events, "val")
    both = {(str(Path(td).resolve()), e) for td, ids in train_sets for e in ids} & {
        (str(Path(vd).resolve()), e) for vd, ids in val_sets for e in ids}  # fmt: skip
    if both:
        where = sorted({x for x, _ in both})
        ids = sorted(e for x, e in both if x == where[0])
        raise ConfigError(f"events {ids[:5]} are used for training and validation (in {where[0]}"
                          f"{f' and {len(where) - 1} other directories' if len(where) > 1 else ''}): "
                          "set data.train_events/val_events to disjoint lists")  # fmt: skip
    train_samples = [x for td, ids in train_sets for x in load_samples(td, ids, spec, options)]
    val_samples = [x for vd, ids in val_sets for x in load_samples(vd, ids, spec, options)]
    train_events: Any = ([int(e) for e in train_sets[0][1]] if isinstance(d.train_dir, str)
                         else {td: [int(e) for e in ids] for td, ids in train_sets})  # fmt: skip
    init = model_init(cfg, train_samples[0])
    model = build_tracking_model(cfg.model.name, init)
    spec.setup(model, train_samples)
    meta = {
        "format_version": 1,
        "kind": "tracking",
        "lhcml_version": __version__,
        "config_yaml": cfg.to_yaml(),
        "model_name": cfg.model.name,
        "model_init_yaml": yaml.safe_dump(init, sort_keys=False),
        "train_events": train_events,
    }
    module = _module_class()(model, spec, cfg, meta)
    module.epoch_hooks.extend(epoch_hooks or [])
    if resumed is not None:
        stored = yaml.safe_load(resumed["lhcml"]["model_init_yaml"])
        if stored != yaml.safe_load(meta["model_init_yaml"]):
            diff = sorted(k for k in set(stored) | set(init) if stored.get(k) != init.get(k))
            raise CheckpointMismatchError(
                f"checkpoint {last} was trained on data with other {', '.join(diff)}; "
                "resume with the same events and data.prepare or start a new output_dir"
            )
        check_state_dict(resumed["state_dict"], module.state_dict(), str(last),
                         "the model code changed since it was saved: start a new output_dir")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", meta["config_yaml"])

    train_dl = torch.utils.data.DataLoader(_Events(train_samples), batch_size=None,
                                           sampler=_lazy_permutation(len(train_samples), cfg.seed))  # fmt: skip
    val_dl = torch.utils.data.DataLoader(_Events(val_samples), batch_size=None, shuffle=False)
    ckpt_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="best-{epoch:02d}", monitor="val_loss",
                              mode="min", save_top_k=1)  # fmt: skip
    last_cb = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1,
                              every_n_epochs=1, enable_version_counter=False)  # fmt: skip
    callbacks: list[Any] = [ckpt_cb, last_cb, ScheduleLength()]
    t = cfg.trainer
    if t.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=t.patience))
    csv_logger = CSVLogger(save_dir=out, name="logs", version="")
    if resumed is not None:
        _keep_metrics(csv_logger, int(resumed.get("epoch", -1)))
    strategy_ = t.strategy
    if t.devices > 1 and strategy_ == "auto":
        strategy_ = "ddp"
    precision = "32-true" if t.precision == "auto" else t.precision
    trainer = L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, strategy=strategy_,
        precision=precision, callbacks=callbacks, logger=[csv_logger], gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.enable_progress_bar,
        limit_train_batches=t.limit_train_batches, deterministic=False,
        enable_model_summary=t.enable_progress_bar, num_sanity_val_steps=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(module, train_dl, val_dl, ckpt_path=str(last) if resumed is not None else None, weights_only=True)
    return Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else last


def read_tracking_meta(path: str | Path) -> dict[str, Any] | None:
    """The ``lhcml`` metadata of a tracking-model checkpoint, or ``None`` for any other file."""
    from lhcml.train.checkpoint import read_kind_meta

    return read_kind_meta(path, "tracking")


def load_tracking_classifier(checkpoint: str, model_name: str, feature_names: Sequence[str], kind: str,
                             train_config: str) -> Any:  # fmt: skip
    """The trained classifier ``model_name`` of a checkpoint file or training run directory (its best checkpoint):
    a path from the working directory, or a shipped one named ``models/tracking/<name>.ckpt``
    (:func:`lhcml.config.resolve_model_path`). ``kind`` names it in messages (``seed``: "seed classifier", "seed
    features"); ``train_config`` is the config that trains one.

    Raises
    ------
    ConfigError
        No such file, a run directory without a best checkpoint, a checkpoint of another model, or one trained on
        other features than ``feature_names``.
    """
    from lhcml.config import resolve_model_path

    what = f"{kind} classifier"
    path = resolve_model_path(checkpoint, f"{what} checkpoint",
                              "rebuild the shipped ones with `python benchmarks/tracking_models.py --install` "
                              f"or train one (lhcml train {train_config})")  # fmt: skip
    if path.is_dir():
        best = sorted((path / "checkpoints").glob("best-*.ckpt"))
        if not best:
            raise ConfigError(f"no best-*.ckpt under {path / 'checkpoints'}: train the {what} first "
                              f"(lhcml train {train_config})")  # fmt: skip
        path = best[-1]
    model, meta = load_tracking_model(path)
    if meta.get("model_name") != model_name:
        raise ConfigError(f"{path} is a '{meta.get('model_name')}' checkpoint, not a {what} ({model_name})")
    if list(model.feature_names) != list(feature_names):
        raise ConfigError(f"{path} was trained on the {kind} features {list(model.feature_names)}, the finder computes "
                          f"{list(feature_names)}: retrain it (python benchmarks/tracking_models.py)")  # fmt: skip
    return model


def load_tracking_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, metadata)`` of a tracking-model checkpoint.

    Raises
    ------
    CheckpointMismatchError
        Not a tracking-model checkpoint, or its tensors do not fit the model its metadata describes.
    """
    from lhcml.train.checkpoint import load_kind_model

    return load_kind_model(
        path, "tracking", build_tracking_model,
        "a tracking-model checkpoint (trained by `lhcml train configs/tracking/...`)", "retrain",
    )  # fmt: skip
