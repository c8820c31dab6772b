"""Training configuration schema (``lhcml train CONFIG``), validated on load.

A config is YAML; experiment configs hold only their deltas from a base via ``base: base.yaml``
(see :func:`lhcml.config.load_config`). Unknown keys fail with a suggestion. Top-level keys:

``data``
    ``train_files``, ``val_files`` (paths, relative to the working directory),
    ``inputs`` (``{group: [variables]}``; ``null`` for an image dataset read whole), ``label_scheme``
    and ``classes`` (from ``labels.yaml``; their order is the output order), ``label_field`` (an
    integer jets field holding the class index, e.g. ``flavour_label``; if unset the label is
    derived from the scheme's cuts), ``weight_field``, ``norm_dict`` (``norm_dict.yaml`` from
    preprocessing; computed from the training file if unset), ``batch_size``, ``num_jets_train``,
    ``num_jets_val``, ``chunk_size``, ``num_workers``.
``model``
    ``name`` (a registered model, or ``mv2`` for the BDT) plus that model's hyperparameters.
``loss``
    ``class_weights`` (list, ``balanced`` or null), ``class_dict`` (preprocessing's
    ``class_dict.yaml``: jet-class weights unless ``class_weights`` is set, and the track-origin
    weights) and ``head_weights`` (``{head: weight}``, e.g. ``track_origin: 0.5``; 0 disables an
    auxiliary head).
``extra_losses``
    ``[{name: <registered extra loss>, weight: w, ...options}]`` (see :mod:`lhcml.train.extra_losses`).
``optimizer``, ``scheduler``, ``trainer``, ``validation``, ``seed``, ``output_dir``.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, field_validator

from lhcml.config import StrictModel, deep_merge, resolve_bases, validate_config
from lhcml.errors import ConfigError


class DataConfig(StrictModel):
    """Input files, variables per input group, labels and batching."""

    train_files: list[str]
    val_files: list[str]
    inputs: dict[str, list[str] | None]
    label_scheme: str = "flavour"
    classes: list[str] = Field(default_factory=lambda: ["bjets", "cjets", "ujets"])
    label_field: str | None = None
    weight_field: str | None = None
    norm_dict: str | None = None
    batch_size: int = Field(1000, gt=0)
    num_jets_train: int | None = Field(None, gt=0)
    num_jets_val: int | None = Field(None, gt=0)
    chunk_size: int = Field(100_000, gt=0)
    num_workers: int = Field(0, ge=0)
    bucket_by_length: bool = False  # batches of jets with similar track/constituent counts
    bucket_stratify: bool = True  # with bucket_by_length: every batch keeps the class fractions

    @field_validator("inputs")
    @classmethod
    def _non_empty(cls, v: dict[str, list[str] | None]) -> dict[str, list[str] | None]:
        if not v:
            raise ValueError("at least one input group is needed")
        for g, names in v.items():
            if names is not None and (not names or len(set(names)) != len(names)):
                raise ValueError(f"input group '{g}' needs a non-empty list of distinct variables")
        return v


class ModelConfig(StrictModel):
    """``name`` plus the model's hyperparameters (checked against its constructor)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossConfig(StrictModel):
    """Class weights of the jet head, the UPP ``class_dict.yaml``, and per-head loss weights."""

    class_weights: list[float] | Literal["balanced"] | None = None
    class_dict: str | None = None
    head_weights: dict[str, float] = Field(default_factory=dict)


class ExtraLossConfig(StrictModel):
    """One extra loss term, found by registered name; further keys go to its constructor."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str
    weight: float = 1.0

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    momentum: float = 0.9


class SchedulerConfig(StrictModel):
    name: Literal["onecycle", "cosine", "none"] = "onecycle"
    pct_start: float = Field(0.1, gt=0, lt=1)
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    eta_min: float = 0.0


class TrainerConfig(StrictModel):
    max_epochs: int = Field(20, gt=0)
    patience: int | None = Field(5, ge=1)
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    gradient_clip_val: float | None = None
    log_every_n_steps: int = Field(50, gt=0)
    enable_progress_bar: bool = True
    limit_train_batches: int | float | None = None


class ValidationConfig(StrictModel):
    """The per-epoch validation rejection (read by tuning): ``val_rej_<class>`` at ``efficiency``.

    Discriminant ``D = ln(p_sig / sum_k f_k p_k)`` over the background ``fractions``.
    """

    signal: str | None = "bjets"
    fractions: dict[str, float] = Field(default_factory=lambda: {"cjets": 0.018, "ujets": 0.982})
    efficiency: float = Field(0.70, gt=0, lt=1)


class TrainConfig(StrictModel):
    """The full training configuration."""

    data: DataConfig
    model: ModelConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    extra_losses: list[ExtraLossConfig] = Field(default_factory=list)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    seed: int = 42
    output_dir: str = "runs/train"
    tagger_name: str | None = None

    def resolved_tagger_name(self) -> str:
        """Column prefix of predictions (``tagger_name`` or the model name)."""
        return self.tagger_name or self.model.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse value of --set {key}: {err}") from None
    if isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip().split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config mapping."""
    out = copy.deepcopy(data)
    for item in overrides:
        keys, value = _parse_override(item)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise ConfigError(f"--set {item}: '{k}' is not a mapping")
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out


def _merge_model_aware(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``deep_merge``, except that a delta switching to another model replaces ``model`` whole."""
    if isinstance(delta.get("model"), dict) and isinstance(base.get("model"), dict):
        if delta["model"].get("name", base["model"].get("name")) != base["model"].get("name"):
            base = {k: v for k, v in base.items() if k != "model"}
    return deep_merge(base, delta)


def _resolve_raw(path: str | Path) -> dict[str, Any]:
    """The training-config mapping of ``path`` with its ``base:`` chain merged (not validated)."""
    return resolve_bases(path, merge=_merge_model_aware)


def raw_train_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The training-config mapping of ``path`` (``base:`` chain merged, ``--set`` overrides applied),
    not validated: for callers that modify it before :func:`config_from_dict` (tuning, benchmarks)."""
    return apply_overrides(_resolve_raw(Path(path)), overrides or [])


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a training config (``base:`` inheritance, ``--set`` overrides) and validate it.

    File paths are used as given (relative to the working directory).
    """
    path = Path(path)
    data = apply_overrides(_resolve_raw(path), overrides or [])
    return validate_config(TrainConfig, data, source=path.name)


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a training config given as a mapping (paths used as given)."""
    return validate_config(TrainConfig, data, source=source)


def check_hyperparameters(cls: type, hyper: dict[str, Any], model_name: str) -> None:
    """Unknown model hyperparameters -> :class:`ConfigError` with a suggestion."""
    import inspect

    params = [
        p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "n_classes", "input_dims")
    ]
    for key in hyper:
        if key not in params:
            close = difflib.get_close_matches(key, params, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(params)})"
            raise ConfigError(f"unknown hyperparameter 'model.{key}' for model '{model_name}'{hint}")
