"""``lhcml trigger scan``: accuracy and AUC vs total bit width for float, PTQ and QAT models.

A scan config (``configs/trigger/scan.yaml``, validated on load) names the training configs of
the trigger models, the bit widths and the schemes::

    bits: [4, 6, 8, 10, 12, 16]
    schemes: [float, ptq, qat]
    calibration_jets: 10000          # PTQ calibration sample (from the training files)
    models:
      jet_substructure_mlp:
        config: jet_substructure_mlp.yaml    # relative to the scan config
        test_files: [runs/trigger/test.h5]
        set: [trainer.max_epochs=20]         # --set overrides of the training config
        bits: [6, 8]                         # optional: this model's bit widths

For every model: the float network is trained once with ``lhcml train``'s machinery
(:func:`lhcml.train.train`; checkpoints, early stopping, resume), then quantised after training
at every bit width (:func:`lhcml.models.quantized.post_training_quantise`, calibrated on the
first ``calibration_jets`` training jets), and trained again with QAT at every bit width
(``model.weight_bits = model.act_bits = bits``). A run that finished is reused and an
interrupted one resumed, so a killed scan restarts where it stopped. Every network is evaluated
on the test files: multi-class accuracy (argmax) and the one-vs-rest AUC of every class
(discriminant p_class), unweighted (the test sample as sampled).

The results table (``results.json``, a JSON list of rows; ``results.csv`` the same) has one
row per (model, scheme, bits) with the keys of :data:`ROW_KEYS`; ``lut``, ``dsp``, ``ff`` and
``latency_ns`` are left ``null``: the FPGA conversion (``lhcml trigger convert``;
``benchmarks/trigger_fpga.py`` reads this file) writes its resource and latency estimates per
row into its own table.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, field_validator

from lhcml.atomic import atomic_write_text
from lhcml.config import StrictModel, validate_config
from lhcml.errors import ConfigError

#: keys of a results row, in table order (``auc_<class>`` follow ``accuracy`` per class)
ROW_KEYS: tuple[str, ...] = (
    "model", "scheme", "bits", "weight_bits", "act_bits", "prune_sparsity", "sparsity", "n_params",
    "accuracy", "n_test", "checkpoint", "lut", "dsp", "ff", "latency_ns",
)  # fmt: skip
#: the schemes a scan can run
SCHEMES = ("float", "ptq", "qat")


def _check_bit_list(v: list[int]) -> list[int]:
    bad = [b for b in v if b < 2]
    if bad:
        raise ValueError(f"every bit width must be >= 2 (a sign and one magnitude bit), got {bad}")
    return sorted(set(v))


class ScanModel(StrictModel):
    """One model of a scan: its training config, test files and ``--set`` overrides."""

    config: str
    test_files: list[str] = Field(min_length=1)
    set: list[str] = Field(default_factory=list)
    bits: list[int] | None = None  # this model's bit widths (default: the scan's)

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else _check_bit_list(v)


class ScanConfig(StrictModel):
    """The scan config (see the module docstring)."""

    bits: list[int] = Field(default_factory=lambda: [4, 6, 8, 10, 12, 16], min_length=1)
    schemes: list[Literal["float", "ptq", "qat"]] = Field(default_factory=lambda: list(SCHEMES), min_length=1)
    calibration_jets: int = Field(10_000, gt=0)
    batch_size: int = Field(1000, gt=0)
    models: dict[str, ScanModel] = Field(min_length=1)

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: list[int]) -> list[int]:
        return _check_bit_list(v)


def load_scan_config(path: str | Path) -> tuple[ScanConfig, Path]:
    """The validated scan config and the folder its relative model-config paths refer to."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"scan config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    return validate_config(ScanConfig, data, source=path.name), path.parent


# -- evaluation ------------------------------------------------------------------------------


def _batches(cfg: Any, files: Sequence[str], num_jets: int | None, batch_size: int,
             shuffle: bool = False) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Labelled input batches of ``files`` for the inputs and classes of training config ``cfg``."""
    from lhcml.labels import get_scheme
    from lhcml.train.datamodule import H5JetDataset, LabelSpec, inspect_inputs

    specs = inspect_inputs(files[0], cfg.data.inputs)
    labels = LabelSpec.build(get_scheme(cfg.data.label_scheme).subset(cfg.data.classes), cfg.data.label_field)
    yield from H5JetDataset(list(files), specs, labels, batch_size=batch_size, num_jets=num_jets,
                            shuffle=shuffle, chunk_size=cfg.data.chunk_size)  # fmt: skip


def predict_batches(model: Any, batches: Iterator[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities, labels) of ``model`` over ``batches``."""
    import torch

    probs, labels = [], []
    model.eval()
    with torch.no_grad():
        for b in batches:
            probs.append(torch.softmax(model(b)["logits"].float(), -1).numpy())
            labels.append(b["labels"].numpy())
    if not probs:
        raise ConfigError("the test files hold no jet of the configured classes")
    return np.concatenate(probs), np.concatenate(labels)


def score(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """``accuracy`` and ``auc_<class>`` (one-vs-rest, discriminant p_class) of a prediction."""
    from lhcml.metrics.classification import accuracy, auc_from_labels

    out = {"accuracy": accuracy(probs, labels), "n_test": int(len(labels))}
    for i, c in enumerate(class_names):
        out[f"auc_{c}"] = auc_from_labels(probs[:, i], labels == i)
    return out


def _n_params(model: Any) -> int:
    """Non-zero weights and the biases of the linear layers: what the FPGA multiplies (weights
    pruned or rounded to zero need no multiplier); QAT weights counted after quantisation."""
    import torch

    from lhcml.models.quantized import effective_weight

    n = 0
    model.refresh_pruned_weights()
    with torch.no_grad():
        for m in model.linear_layers():
            w = m.quant_weight().value if hasattr(m, "quant_weight") else effective_weight(m)
            n += int((w != 0).sum()) + (m.bias.numel() if m.bias is not None else 0)
    return n


# -- the scan --------------------------------------------------------------------------------


def _train_once(cfg: Any, log: Any) -> Path:
    """Train ``cfg`` unless its run finished (``done.txt``); resume an interrupted run."""
    from lhcml.train import train

    out = Path(cfg.output_dir)
    done = out / "done.txt"
    if done.is_file():
        return Path(done.read_text().strip())
    resume = (out / "checkpoints" / "last.ckpt").is_file()
    log(f"training {out}{' (resumed)' if resume else ''}")
    t0 = time.time()
    best = train(cfg, resume=resume)
    atomic_write_text(done, f"{best}\n")
    log(f"  {best} ({time.time() - t0:.0f} s)")
    return best


def run_scan(scan_path: str | Path, output_dir: str | Path, log: Any = print) -> list[dict[str, Any]]:
    """Run the scan of ``scan_path`` into ``output_dir``; return (and write) the results rows.

    Outputs: ``output_dir/<model>/{float,qat<bits>}/`` (training runs), ``results.json``,
    ``results.csv`` and ``accuracy_vs_bits.png`` (rewritten after every model, atomically).
    """
    from lhcml.models.quantized import post_training_quantise
    from lhcml.train.checkpoint import load_tagger
    from lhcml.train.config import load_train_config

    scan, here = load_scan_config(scan_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name, m in scan.models.items():
        cfg_path = here / m.config
        if not cfg_path.is_file():
            raise ConfigError(f"model '{name}' of {scan_path}: training config {cfg_path} does not exist")

        def cfg_for(run: str, extra: Sequence[str] = (), m=m, cfg_path=cfg_path, name=name) -> Any:
            return load_train_config(cfg_path, [*m.set, *extra, f"output_dir={out / name / run}"])

        base = cfg_for("float")
        if base.model.name not in ("trigger_mlp", "trigger_deepsets"):
            raise ConfigError(f"model '{name}': the scan takes the trigger models (trigger_mlp, trigger_deepsets), "
                              f"{cfg_path} trains '{base.model.name}'")  # fmt: skip
        classes = list(base.data.classes)
        bits = m.bits or scan.bits
        hyper = base.model.hyperparameters()
        if hyper.get("weight_bits") is not None:
            raise ConfigError(f"model '{name}': {cfg_path} must describe the float model (weight_bits: null); "
                              "the scan sets the bits")  # fmt: skip

        def row(scheme: str, bits: int | None, model: Any, ckpt: Any, name=name, hyper=hyper, classes=classes,
                m=m, base=base) -> dict[str, Any]:  # fmt: skip
            probs, labels = predict_batches(model, _batches(base, m.test_files, None, scan.batch_size))
            r = {"model": name, "scheme": scheme, "bits": bits, **model.quantisation(),
                 "prune_sparsity": float(hyper.get("prune_sparsity", 0.0)), "sparsity": model.sparsity(),
                 "n_params": _n_params(model), **score(probs, labels, classes), "checkpoint": str(ckpt),
                 "lut": None, "dsp": None, "ff": None, "latency_ns": None}  # fmt: skip
            log(f"  {name} {scheme} {bits or '':>2}: accuracy {r['accuracy']:.4f}")
            return r

        if "float" in scan.schemes or "ptq" in scan.schemes:
            best = _train_once(base, log)
            fmodel, _ = load_tagger(best)
            if "float" in scan.schemes:
                rows.append(row("float", None, fmodel, best))
            if "ptq" in scan.schemes:
                calib = list(_batches(base, base.data.train_files, scan.calibration_jets, scan.batch_size))
                for b in bits:
                    rows.append(row("ptq", b, post_training_quantise(fmodel, b, calib), best))
        if "qat" in scan.schemes:
            for b in bits:
                cfg = cfg_for(f"qat{b}", [f"model.weight_bits={b}", f"model.act_bits={b}"])
                best = _train_once(cfg, log)
                qmodel, _ = load_tagger(best)
                rows.append(row("qat", b, qmodel, best))
        write_results(rows, out)
    return rows


def write_results(rows: Sequence[Mapping[str, Any]], out: str | Path) -> dict[str, Path]:
    """``results.json``, ``results.csv`` and ``accuracy_vs_bits.png`` of ``rows`` in ``out``."""
    out = Path(out)
    keys = list(ROW_KEYS)
    for r in rows:
        keys += [k for k in r if k not in keys]
    atomic_write_text(out / "results.json", json.dumps(list(rows), indent=1) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in keys})
    atomic_write_text(out / "results.csv", buf.getvalue())
    return {"json": out / "results.json", "csv": out / "results.csv",
            "plot": plot_accuracy_vs_bits(rows, out / "accuracy_vs_bits.png")}  # fmt: skip


def plot_accuracy_vs_bits(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Accuracy vs total bits, one panel line per (model, scheme); float as a horizontal line."""
    from lhcml.plots.style import add_experiment_label, colour, new_figure, save_figure, style

    with style():
        fig, (ax,) = new_figure()
        models = list(dict.fromkeys(r["model"] for r in rows))
        for i, name in enumerate(models):
            mine = [r for r in rows if r["model"] == name]
            for r in mine:
                if r["scheme"] == "float":
                    ax.axhline(r["accuracy"], color=colour(i), ls=":", label=f"{name} float")
            for scheme, marker, ls in (("ptq", "s", "--"), ("qat", "o", "-")):
                pts = sorted((r["bits"], r["accuracy"]) for r in mine if r["scheme"] == scheme)
                if pts:
                    x, y = zip(*pts, strict=True)
                    ax.plot(x, y, marker=marker, ls=ls, color=colour(i), label=f"{name} {scheme.upper()}")
        ax.set_ylim(0.0, 1.3 * max(r["accuracy"] for r in rows))  # room for the label above the curves
        ax.set_xlabel("total bits W (ap_fixed<W,I>)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8, loc="lower right")
        add_experiment_label(ax, ["quantised trigger models"])
        return save_figure(fig, path)
