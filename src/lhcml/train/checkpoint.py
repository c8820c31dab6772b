"""What a trained tagger carries with it, and how to load it back safely.

Every Lightning checkpoint holds, under ``checkpoint["lhcml"]``, only strings and plain lists
(``torch.load(..., weights_only=True)`` loads it): the resolved training config as YAML, the
normalisation dictionary as YAML (the same constants are also in the model's buffers), the
class names and tagger-output suffixes, and the variables per input group. The model is
rebuilt from the registry by name (never from pickled code).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lhcml.errors import CheckpointMismatchError, CorruptFileError, UnsafeCheckpointError

#: keys of the training config that must agree between a checkpoint and a config/data
_MUST_MATCH = (
    ("data", "inputs"),
    ("data", "label_scheme"),
    ("data", "classes"),
    ("model",),
)


def build_meta(
    cfg_yaml: str,
    norm: Mapping[str, Any],
    class_names: list[str],
    outputs: list[str],
    variables: Mapping[str, list[str] | None],
    input_shapes: Mapping[str, list[int]],
    tagger_name: str,
) -> dict[str, Any]:
    """The metadata dictionary stored in checkpoints (plain types only)."""
    from lhcml import __version__

    return {
        "format_version": 1,
        "lhcml_version": __version__,
        "config_yaml": cfg_yaml,
        "norm_yaml": yaml.safe_dump(dict(norm), sort_keys=False),
        "class_names": list(class_names),
        "outputs": list(outputs),
        "variables_yaml": yaml.safe_dump(dict(variables), sort_keys=False),
        "input_shapes_yaml": yaml.safe_dump({k: list(v) for k, v in input_shapes.items()}),
        "tagger_name": tagger_name,
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with clear errors for missing/foreign files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message suggests reloading with weights_only=False, i.e. running the file's
        # code: pass on only what it found, never that advice
        found = _unpickler_reason(str(err))
        raise UnsafeCheckpointError(
            f"{path} holds pickled Python objects that are not tensors or plain data ({found}); "
            "lhcml never loads such files because unpickling them can run arbitrary code. It is "
            "not a checkpoint written by lhcml: use the checkpoint from `lhcml train` or retrain"
        ) from None
    except Exception as err:  # noqa: BLE001 - any other loading failure means a bad file
        raise CorruptFileError(
            f"{path} is not a loadable lhcml checkpoint ({_unpickler_reason(str(err))}); "
            "re-copy it or retrain"
        ) from None
    if not isinstance(ckpt, dict) or "lhcml" not in ckpt:
        raise CheckpointMismatchError(f"{path} is not an lhcml checkpoint (no 'lhcml' metadata)")
    return ckpt


def _unpickler_reason(text: str) -> str:
    """The finding of torch's safe unpickler, without torch's advice to load the file unsafely."""
    text = text.split("WeightsUnpickler error:", 1)[-1]
    advice = ("weights_only", "weights only", "trusted source", "documentation", "arbitrary code")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not any(a in ln.lower() for a in advice)]
    return lines[0].rstrip(".") if lines else "content that is not tensors or plain data"


def meta_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The training config stored in a checkpoint, as a mapping."""
    return yaml.safe_load(meta["config_yaml"])


def meta_variables(meta: Mapping[str, Any]) -> dict[str, list[str] | None]:
    return yaml.safe_load(meta["variables_yaml"])


def _get(d: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        d = d.get(k, {}) if isinstance(d, Mapping) else {}
    return d


def compare_configs(
    stored: Mapping[str, Any], current: Mapping[str, Any], source: str,
    must_match: tuple[tuple[str, ...], ...] = _MUST_MATCH,
) -> None:  # fmt: skip
    """Raise :class:`CheckpointMismatchError` naming the first config key that differs
    (among ``must_match``: the taggers' data inputs, classes and model by default)."""
    for keys in must_match:
        a, b = _get(stored, keys), _get(current, keys)
        if a != b:
            name = ".".join(keys)
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                detail = "; ".join(f"{name}.{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}" for k in diff)
            else:
                detail = f"{name}: checkpoint {a!r} vs config {b!r}"
            raise CheckpointMismatchError(
                f"checkpoint {source} was trained with a different configuration ({detail}); "
                "use the matching config or a new output_dir"
            )


def state_under(state_dict: Mapping[str, Any], prefix: str = "model.") -> dict[str, Any]:
    """The tensors of a checkpoint's ``state_dict`` stored under ``prefix`` (a Lightning module's ``model.``, or
    another sub-module's), keyed without it."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def check_state_dict(stored: Mapping[str, Any], expected: Mapping[str, Any], source: str, hint: str) -> None:
    """Raise :class:`CheckpointMismatchError` if the saved tensors do not fit the built modules.

    Parameters
    ----------
    stored
        The checkpoint's state dict (name -> tensor).
    expected
        ``module.state_dict()`` of the freshly built model/module.
    source
        The checkpoint path (named in the message).
    hint
        What to do about it (appended to the message).
    """
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(stored[k].shape)} vs built {tuple(expected[k].shape)}"
        for k in expected
        if k in stored and hasattr(stored[k], "shape") and tuple(stored[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} tensors differ in shape ({'; '.join(shapes[:5])}{'; ...' if len(shapes) > 5 else ''})")
    if missing:
        parts.append(f"{len(missing)} tensors missing from the checkpoint ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors in the checkpoint ({', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''})")
    raise CheckpointMismatchError(
        f"checkpoint {source} does not match the architecture built now: {'; '.join(parts)}; {hint}"
    )


def load_tagger(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained model of a checkpoint (eval mode, jet outputs only) and its metadata."""
    from lhcml.models.registry import build_model

    ckpt = read_checkpoint(path)
    meta = dict(ckpt["lhcml"])
    cfg = meta_config(meta)
    variables = meta_variables(meta)
    shapes = yaml.safe_load(meta["input_shapes_yaml"])
    hyper = {k: v for k, v in cfg["model"].items() if k != "name"}
    input_dims = {g: (s[-1] if variables[g] is not None else (s[0] if s else 1)) for g, s in shapes.items()}
    model = build_model(cfg["model"]["name"], len(meta["class_names"]), input_dims, **hyper)
    model.configure_inputs({g: v for g, v in variables.items() if v is not None})
    if hasattr(model, "set_head_weights") and cfg.get("loss", {}).get("head_weights"):
        model.set_head_weights(cfg["loss"]["head_weights"])
    state = state_under(ckpt["state_dict"])
    check_state_dict(
        state, model.state_dict(), str(path),
        f"the model '{cfg['model']['name']}' code or the stored config changed since it was saved "
        "(load it with the lhcml version that wrote it, or retrain)",
    )  # fmt: skip
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # anything check_state_dict did not foresee (dtype, ...)
        raise CheckpointMismatchError(f"checkpoint {path} does not load into model '{cfg['model']['name']}': {err}") from None
    model.eval()
    model.with_aux = False
    return model, meta


def read_kind_meta(path: str | Path, kind: str) -> dict[str, Any] | None:
    """The ``lhcml`` metadata of a checkpoint whose ``kind`` is ``kind``, or ``None`` for any other file.

    Used by the trainers that store their own metadata (``kind: tracking``, ``kind: fastcalo``) to
    tell their checkpoints apart without raising on foreign or unreadable files.
    """
    try:
        meta = read_checkpoint(path)["lhcml"]
    except (OSError, ValueError, KeyError):
        return None
    return dict(meta) if isinstance(meta, dict) and meta.get("kind") == kind else None


def load_kind_model(path: str | Path, kind: str, build: Any, what: str, hint: str) -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, metadata)`` of a checkpoint of ``kind`` whose model is built by name.

    Parameters
    ----------
    path : str or Path
        The checkpoint.
    kind : str
        The ``lhcml.kind`` it must carry.
    build : callable
        ``build(model_name, init_kwargs)`` of the trainer's model registry.
    what : str
        How the error names a checkpoint of this kind, e.g. "a tracking-model checkpoint (trained
        by `lhcml train configs/tracking/...`)".
    hint : str
        The fix, when the stored tensors do not fit the model built now.

    Raises
    ------
    CheckpointMismatchError
        Not a checkpoint of ``kind``, or its tensors do not fit the model its metadata describes.
    """
    ckpt = read_checkpoint(path)
    meta = dict(ckpt.get("lhcml") or {})
    if meta.get("kind") != kind:
        raise CheckpointMismatchError(f"{path} is not {what}")
    model = build(meta["model_name"], yaml.safe_load(meta["model_init_yaml"]))
    state = state_under(ckpt["state_dict"])
    check_state_dict(state, model.state_dict(), str(path),
                     f"the model '{meta['model_name']}' code changed since it was saved ({hint})")  # fmt: skip
    model.load_state_dict(state, strict=True)
    return model.eval(), meta
