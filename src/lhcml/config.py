"""Typed configuration: a strict pydantic base class and YAML loading with clear errors.

Per-stage schemas live next to the stage that uses them (``train/config.py``, ...); they all
derive from :class:`StrictModel`, so an unknown key fails on load with a suggestion::

    ConfigError: unknown key 'lr_sheduler' in train.yaml (did you mean 'lr_scheduler'?)
"""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lhcml.errors import ConfigError

M = TypeVar("M", bound="StrictModel")


class StrictModel(BaseModel):
    """Base class for all configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(sorted(choices))})"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow a validation-error location into nested models to find the model owning a key."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        current = None
        for cand in (ann, *getattr(ann, "__args__", ())):
            for sub in (cand, *getattr(cand, "__args__", ())):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    current = sub
                    break
            if current is not None:
                break
    return current if isinstance(current, type) else None


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """Turn a pydantic error into one readable message naming the key and the file."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            choices = list(owner.model_fields) if owner is not None else []
            lines.append(f"unknown key '{key}' in {source}{_suggest(str(loc[-1]), choices)}")
        elif e["type"] == "missing":
            lines.append(f"missing required key '{key}' in {source}")
        else:
            lines.append(f"bad value for '{key}' in {source}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)


def validate_config(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate a dictionary against ``model``; raise :class:`ConfigError` with a clear message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory, not a YAML file; give the file's path")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = copy.deepcopy(_parse_yaml(path.read_text(encoding="utf-8")))
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 YAML"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a mapping at top level, got {type(data).__name__}")
    return data


@functools.lru_cache(maxsize=256)
def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` of a config's text, parsed once per process and text (a finder that loads its chain of
    configs for every event parses each file once; the caller gets a deep copy, never the cached object)."""
    return yaml.safe_load(text)


def deep_merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``delta`` into a copy of ``base`` (delta wins)."""
    out = dict(base)
    for k, v in delta.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_bases(
    path: str | Path,
    merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] = deep_merge,
) -> dict[str, Any]:
    """The mapping of a YAML config with its ``base:`` chain merged in (not yet validated).

    A chained base is relative to the file that names it; ``merge(base, delta)`` combines each
    level (default :func:`deep_merge`).
    """
    path = Path(path)
    data = read_yaml(path)
    seen = {path.resolve()}
    here = path.parent  # a chained base is relative to the file that names it
    while "base" in data:
        base_path = (here / str(data.pop("base"))).resolve()
        here = base_path.parent
        if base_path in seen:
            raise ConfigError(f"circular 'base' reference in {path}")
        seen.add(base_path)
        data = merge(read_yaml(base_path), data)
    return data


def load_config(model: type[M], path: str | Path) -> M:
    """Load a YAML config, resolving an optional ``base: other.yaml`` key (relative to the file).

    Experiment configs hold only the deltas from their base.
    """
    return validate_config(model, resolve_bases(path), source=Path(path).name)


def coerce_config(model: type[M], cfg: Any, default: str, what: str) -> M:
    """A validated ``model`` config from an instance of it, a mapping, a YAML path (``base:``
    resolved, as :func:`load_config`) or ``None`` (the shipped config ``default``, e.g.
    ``"tracking/ckf.yaml"``); ``what`` names a mapping's source in error messages."""
    if isinstance(cfg, model):
        return cfg
    if cfg is None:
        return load_config(model, shipped_config(default))
    if isinstance(cfg, Mapping):
        return validate_config(model, dict(cfg), source=what)
    return load_config(model, cfg)


def shipped_configs_dir() -> Path:
    """The directory of the shipped recipes: ``lhcml/configs/`` inside an installed package (package
    data, see setup.py), else ``configs/`` of the source checkout this module runs from."""
    installed = Path(__file__).resolve().parent / "configs"
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if checkout.is_dir():
        return checkout
    raise ConfigError(
        f"the shipped configs are missing (looked in {installed} and {checkout}); reinstall "
        f"lhcml (pip install lhcml) or run from a source checkout"
    )


def shipped_config(name: str) -> Path:
    """The path of a shipped config by its name under ``configs/``, e.g. ``"ftag/gn.yaml"``."""
    root = shipped_configs_dir()
    path = root / str(name).removeprefix("configs/")
    if not path.is_file():
        have = sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))
        raise ConfigError(f"no shipped config '{name}'; shipped: {', '.join(have)}")
    return path


def shipped_models_dir() -> Path:
    """The directory of the shipped trained models: ``lhcml/shipped_models/`` inside an installed package
    (package data, see setup.py), else ``models/`` of the source checkout this module runs from."""
    installed = Path(__file__).resolve().parent / "shipped_models"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "models"


def resolve_model_path(name: str | Path, what: str = "checkpoint", hint: str = "") -> Path:
    """A trained model named in a config: a path that exists (relative to the working directory), else
    a shipped model named as in the repository, ``models/<...>`` (e.g. ``models/tracking/seed_filter.ckpt``,
    found in :func:`shipped_models_dir` from any working directory and in an installed package).

    Raises
    ------
    ConfigError
        Neither exists; ``hint`` says how to make the model.
    """
    path = Path(name)
    if path.exists():
        return path
    parts = path.parts
    if not path.is_absolute() and len(parts) > 1 and parts[0] == "models":
        shipped = shipped_models_dir().joinpath(*parts[1:])
        if shipped.exists():
            return shipped
    raise ConfigError(f"{what} {name} does not exist (neither a path from the working directory nor a model "
                      f"shipped under models/){': ' + hint if hint else ''}")  # fmt: skip
