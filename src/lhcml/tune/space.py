"""Search spaces: a YAML file describing the study and the parameters to vary.

Example ``space.yaml``::

    study_name: dl1_lr_scan
    sampler: tpe            # grid | random | tpe | nsga2
    pruner: median          # none | median | asha | hyperband
    n_trials: 30
    seed: 1
    objectives:             # one entry = single-objective; several = multi-objective (Pareto)
      - {metric: val_loss, direction: minimize}
    parameters:             # dotted paths into the training config
      optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.hidden_layers: {type: categorical, choices: [[64, 64], [128, 64, 32]]}
      data.batch_size: {type: int, low: 64, high: 512, step: 64}

Grid sampling needs ``choices`` (or an int/float ``step``) for every parameter.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Literal

from pydantic import Field, model_validator

from lhcml.config import StrictModel, load_config
from lhcml.errors import ConfigError


class ParamSpec(StrictModel):
    """One hyperparameter: a float/int range or a list of categorical choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical parameters need a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} parameters need 'low' and 'high'")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) > high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("log-uniform parameters need low > 0")
            if self.log and self.step is not None:
                raise ValueError("'step' and 'log' cannot be combined")
        return self

    def grid_values(self) -> list[Any]:
        """The values a grid search visits."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.step is None:
            raise ConfigError("grid sampling needs 'choices' or 'step' for every parameter")
        vals, v = [], float(self.low)
        while v <= float(self.high) + 1e-12:
            vals.append(int(round(v)) if self.type == "int" else v)
            v += float(self.step)
        return vals

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask an Optuna trial for a value of this parameter."""
        if self.type == "categorical":
            # Optuna only stores scalars: lists are suggested by index and mapped back.
            if any(isinstance(c, (list, dict)) for c in self.choices or []):
                idx = trial.suggest_categorical(name, list(range(len(self.choices))))
                return copy.deepcopy(self.choices[idx])
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class Objective(StrictModel):
    """A metric to optimise, read from the validation metrics of each trial."""

    metric: str = "val_loss"
    direction: Literal["minimize", "maximize"] = "minimize"


class SearchSpace(StrictModel):
    """The whole study description."""

    study_name: str = "lhcml_study"
    sampler: Literal["grid", "random", "tpe", "nsga2"] = "tpe"
    pruner: Literal["none", "median", "asha", "hyperband"] = "median"
    n_trials: int = Field(20, ge=1)
    seed: int = 0
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()])
    parameters: dict[str, ParamSpec]
    #: startup trials before the median pruner starts pruning
    n_startup_trials: int = Field(5, ge=0)
    #: epochs a trial runs before pruning can stop it
    n_warmup_steps: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        if not self.parameters:
            raise ValueError("'parameters' must list at least one hyperparameter")
        if len(self.objectives) > 1 and self.pruner != "none":
            # Optuna cannot prune multi-objective trials.
            object.__setattr__(self, "pruner", "none")
        if self.sampler == "grid":
            for name, p in self.parameters.items():
                if p.type != "categorical" and p.step is None:
                    raise ValueError(f"grid sampling: parameter '{name}' needs 'choices' or 'step'")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def grid(self) -> dict[str, list[Any]]:
        """The grid of the grid sampler (categorical lists by index)."""
        out = {}
        for name, p in self.parameters.items():
            vals = p.grid_values()
            if p.type == "categorical" and any(isinstance(c, (list, dict)) for c in vals):
                vals = list(range(len(vals)))
            out[name] = vals
        return out


def load_space(path: str) -> SearchSpace:
    """Load and validate a search-space YAML file."""
    return load_config(SearchSpace, path)


def _walk(cfg: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    parts = path.split(".")
    node: Any = cfg
    for i, key in enumerate(parts[:-1]):
        if not isinstance(node, dict) or key not in node:
            valid = list(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(valid)})"
            raise ConfigError(
                f"search-space parameter '{path}': no key '{'.'.join(parts[: i + 1])}' "
                f"in the training config{hint}"
            )
        node = node[key]
    if not isinstance(node, dict):
        raise ConfigError(f"search-space parameter '{path}': '{'.'.join(parts[:-1])}' is not a mapping")
    return node, parts[-1]


def check_paths(space: SearchSpace, cfg: dict[str, Any]) -> None:
    """Every parameter path must name a section of the training config (leaf may be new)."""
    for name in space.parameters:
        _walk(cfg, name)


def apply_params(cfg: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the training config with dotted-path parameters set."""
    out = copy.deepcopy(cfg)
    for path, value in params.items():
        node, leaf = _walk(out, path)
        node[leaf] = value
    return out


def probe_params(space: SearchSpace) -> list[dict[str, Any]]:
    """Two parameter sets at the ends of the space: every ``low``/first choice, every ``high``/last."""
    lo: dict[str, Any] = {}
    hi: dict[str, Any] = {}
    for name, p in space.parameters.items():
        if p.type == "categorical":
            lo[name], hi[name] = copy.deepcopy((p.choices or [None])[0]), copy.deepcopy((p.choices or [None])[-1])
        elif p.type == "int":
            lo[name], hi[name] = int(p.low), int(p.high)
        else:
            lo[name], hi[name] = float(p.low), float(p.high)
    return [lo, hi] if hi != lo else [lo]


def check_space(space: SearchSpace, cfg: dict[str, Any], source: str = "the training config") -> None:
    """Refuse, before any trial, a space that names keys the training config does not have.

    Every parameter path must exist in the config's schema (``optimizer.lrate`` fails with
    "did you mean 'lr'?"), model hyperparameters must be arguments of the model, and the ends
    of every range must be valid values. Raises :class:`ConfigError`.
    """
    check_paths(space, cfg)
    from lhcml.train.config import check_hyperparameters
    from lhcml.train.protocol import validate_trainable_config

    for params in probe_params(space):
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        _, tcfg = validate_trainable_config(apply_params(cfg, params), source=f"{source} with the search-space values {shown}")
        from lhcml.models.bdt import BDT_MODELS

        if tcfg.model.name not in BDT_MODELS:
            from lhcml.models.registry import get_model_class
            from lhcml.train.tracking import is_tracking_model, tracking_model_class

            name = tcfg.model.name
            cls = tracking_model_class(name) if is_tracking_model(name) else get_model_class(name)
            check_hyperparameters(cls, tcfg.model.hyperparameters(), name)
