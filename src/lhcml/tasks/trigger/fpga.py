"""``lhcml trigger convert`` / ``lhcml trigger bdt``: trigger models to FPGA firmware models.

* ``convert``: a trained ``trigger_mlp`` or ``trigger_deepsets`` checkpoint (QAT, or float with ``--ptq-bits`` for its
  post-training-quantised copy) -> hls4ml project, bit-exact C-simulation check on jets of a
  file, analytic resource/latency estimate (:mod:`lhcml.export.hls`).
* ``bdt``: an ``mv2`` BDT model file -> conifer project, C++ emulation vs xgboost on jets of a
  file, analytic estimate (:mod:`lhcml.export.conifer_bdt`).

Each writes one output folder atomically (``<out>/report.json`` and the project under
``<out>/hls4ml`` or ``<out>/conifer``); a failed check leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from lhcml.errors import ConfigError


def _jets(checkpoint: Path, meta: dict[str, Any], data_file: Path, n: int) -> dict[str, Any]:
    """The first ``n`` jets of ``data_file`` as the model's input groups (raw features)."""
    from lhcml.export.onnx import _real_inputs
    from lhcml.train.predict import _specs_for

    specs = _specs_for(Path(data_file), Path(checkpoint), meta)
    groups = list(specs)
    arrays = _real_inputs(data_file, specs, groups, n)
    out, i = {}, 0
    for g in groups:
        out[g] = arrays[i]
        i += 1
        if specs[g].kind == "object":
            out[f"{g}_valid"] = arrays[i]
            i += 1
    return out


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    data_file: str | Path,
    *,
    n_jets: int = 1000,
    ptq_bits: int | None = None,
    calibration_file: str | Path | None = None,
    calibration_jets: int = 10000,
    reuse_factor: int = 1,
    clock_ns: float = 5.0,
) -> dict[str, Any]:
    """Convert a trigger checkpoint to hls4ml, check the C simulation, estimate; return the report."""
    import torch

    from lhcml.atomic import atomic_dir
    from lhcml.export.hls import check_agreement, convert_to_hls, estimate_resources, report_dict
    from lhcml.models.quantized import post_training_quantise
    from lhcml.train.checkpoint import load_tagger

    if n_jets < 1:
        raise ConfigError(f"--jets must be >= 1, got {n_jets}")
    model, meta = load_tagger(checkpoint)
    if ptq_bits is not None:
        calib = _jets(Path(checkpoint), meta, Path(calibration_file or data_file), calibration_jets)
        batch = {k: torch.as_tensor(v) for k, v in calib.items()}
        model = post_training_quantise(model, ptq_bits, [batch])
    inputs = _jets(Path(checkpoint), meta, Path(data_file), n_jets)
    out = Path(output_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder")
    with atomic_dir(out) as tmp:
        n_objects = next((v.shape[1] for v in inputs.values() if v.ndim == 3), None)  # deep sets: slots
        conv = convert_to_hls(model, tmp / "hls4ml", reuse_factor=reuse_factor, clock_ns=clock_ns,
                              n_objects=n_objects)  # fmt: skip
        agreement = check_agreement(conv, model, inputs)
        estimate = estimate_resources(conv.lowered, reuse_factor, clock_ns)
        report = report_dict(conv, agreement, estimate)
        report.update({"checkpoint": str(checkpoint), "data_file": str(data_file),
                       "hls_project": str(out / "hls4ml"), "model": meta.get("tagger_name", "")})  # fmt: skip
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def convert_bdt_file(
    model_file: str | Path,
    output_dir: str | Path,
    data_file: str | Path,
    *,
    n_jets: int = 1000,
    bits: int | None = 24,
    require: bool = True,
) -> dict[str, Any]:
    """Convert an mv2 model file with conifer (``bits=None``: float), check, estimate; the report.

    ``require=False`` records the agreement without enforcing it (for precision scans)."""
    from lhcml.atomic import atomic_dir
    from lhcml.export.conifer_bdt import check_bdt_agreement, convert_bdt, estimate_bdt
    from lhcml.models.bdt import load_bdt

    booster, meta = load_bdt(model_file)
    x = _jets(Path(model_file), meta, Path(data_file), n_jets)["jets"]
    out = Path(output_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output folder")
    with atomic_dir(out) as tmp:
        conv = convert_bdt(booster, tmp / "conifer", precision="float" if bits is None else bits)
        agreement = check_bdt_agreement(conv, x, require=require)
        estimate = estimate_bdt(conv)
        report = {"model_file": str(model_file), "data_file": str(data_file), "conifer_project": str(out / "conifer"),
                  "precision": conv.precision, "score_precision": conv.score_precision,
                  "feature_scale": conv.feature_scale.tolist(), "n_trees_per_class": conv.n_trees,
                  "n_classes": conv.n_classes, "agreement": asdict(agreement), "estimate": asdict(estimate)}  # fmt: skip
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _summary(report: dict[str, Any]) -> str:
    a, e = report["agreement"], report["estimate"]
    exact = a.get("exact")
    check = ("bit-exact" if exact else f"max |diff| {a['max_abs_diff_float64']:g}") if exact is not None else (
        f"{a['frac_within_bound']:.2%} within the rounding bound, top class {a['argmax_agreement']:.2%}")
    return (f"agreement on {a['n']} jets: {check}\nestimate ({e['method']}): LUT {e['lut']}, FF {e['ff']}, "
            f"DSP {e['dsp']}, BRAM18 {e['bram18']}, latency {e['latency_cycles']} cycles = {e['latency_ns']:.0f} ns "
            f"at {1e3 / e['clock_ns']:.0f} MHz, II {e['ii_cycles']}")  # fmt: skip


def register(group: typer.Typer) -> None:
    """Add ``convert`` and ``bdt`` to the ``lhcml trigger`` group."""

    @group.command("convert")
    def convert_cmd(
        checkpoint: Path = typer.Argument(..., help="trigger_mlp / trigger_deepsets checkpoint (.ckpt) from lhcml train / trigger scan"),
        data_file: Path = typer.Argument(..., help="flat file with the model's inputs (jets for the C-simulation check)"),
        output_dir: Path = typer.Option(..., "--output-dir", "-o", help="new folder: hls4ml/ project + report.json"),
        n_jets: int = typer.Option(1000, "--jets", help="jets compared between C simulation and PyTorch"),
        ptq_bits: int = typer.Option(None, "--ptq-bits", help="float checkpoint: convert its post-training-quantised copy at these total bits"),
        calibration_file: Path = typer.Option(None, "--calibration", help="PTQ calibration file (default: DATA_FILE; use a training file)"),
        reuse_factor: int = typer.Option(1, "--reuse-factor", help="hls4ml reuse factor (1: fully parallel)"),
    ) -> None:
        """Convert a quantised trigger MLP or deep-sets model to an hls4ml firmware model.

        Writes the hls4ml project, compiles its bit-accurate C simulation with g++, checks that it
        reproduces the quantised PyTorch model's logits exactly on jets of DATA_FILE, and writes
        report.json with the fixed-point types and an analytic resource/latency estimate (labelled
        as such: no vendor synthesis is run).
        """
        rep = convert_checkpoint(checkpoint, output_dir, data_file, n_jets=n_jets, ptq_bits=ptq_bits,
                                 calibration_file=calibration_file, reuse_factor=reuse_factor)  # fmt: skip
        typer.echo(_summary(rep))
        typer.echo(str(Path(output_dir) / "report.json"))

    @group.command("bdt")
    def bdt_cmd(
        model_file: Path = typer.Argument(..., help="mv2 BDT model file (.json from lhcml train)"),
        data_file: Path = typer.Argument(..., help="flat file with the model's jet inputs (for the agreement check)"),
        output_dir: Path = typer.Option(..., "--output-dir", "-o", help="new folder: conifer/ project + report.json"),
        n_jets: int = typer.Option(1000, "--jets", help="jets compared between conifer and xgboost"),
        bits: int = typer.Option(24, "--bits", help="total bits of conifer's ap_fixed types"),
        use_float: bool = typer.Option(False, "--float", help="conifer's float backend instead (xgboost's arithmetic)"),
    ) -> None:
        """Convert an MV2-like BDT to a conifer firmware model (C++ emulation) and check it.

        The float backend must reproduce xgboost's margins (to float32 summation order); the
        ap_fixed backend within the leaf-rounding bound on >= 99 % of the jets (the rest lie within
        one input LSB of a cut). report.json holds the types and an analytic estimate.
        """
        rep = convert_bdt_file(model_file, output_dir, data_file, n_jets=n_jets, bits=None if use_float else bits)
        typer.echo(_summary(rep))
        typer.echo(str(Path(output_dir) / "report.json"))
