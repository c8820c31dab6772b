"""CLI commands of the training stage: ``train``, ``predict``, ``export``.

Each command calls one plain function (:func:`lhcml.train.trainer.train`,
:func:`lhcml.train.predict.predict`, :func:`lhcml.export.export_model`); torch and
lightning are imported only when a command runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add ``train``, ``predict`` and ``export`` to ``app``."""

    @app.command("train")
    def train_cmd(
        config: Path = typer.Argument(..., help="training config YAML (e.g. configs/ftag/gn.yaml, configs/ftag/mv2.yaml, configs/photon/paed.yaml)"),
        resume: bool = typer.Option(False, "--resume", help="continue from <output_dir>/checkpoints/last.ckpt"),
        devices: Optional[int] = typer.Option(None, "--devices", help="number of devices (GPUs or CPU processes)"),  # noqa: UP045
        strategy: Optional[str] = typer.Option(None, "--strategy", help="auto, ddp or ddp_spawn"),  # noqa: UP045
        set_: list[str] = typer.Option([], "--set", help="override a config key: --set model.embed_dim=64"),
    ) -> None:
        """Train the model of CONFIG with its trainer (NN tagger, BDT or PAED, by model.name); prints the best checkpoint or model file."""
        from lhcml.train.protocol import train_from_config

        best = train_from_config(config, set_, resume=resume, devices=devices, strategy=strategy)
        if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
            typer.echo(str(best))

    @app.command("predict")
    def predict_cmd(
        checkpoint: Path = typer.Argument(..., help="checkpoint (.ckpt) or mv2 model (.json)"),
        files: list[Path] = typer.Argument(..., help="flat HDF5 files to predict"),
        tagger: Optional[str] = typer.Option(None, "--tagger", help="column prefix (default: from the checkpoint)"),  # noqa: UP045
        output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="write copies here (default: in place)"),  # noqa: UP045
        batch_size: int = typer.Option(2000, "--batch-size", help="jets per inference batch"),
        config: Optional[Path] = typer.Option(None, "--config", help="training config that must match the checkpoint"),  # noqa: UP045
    ) -> None:
        """Write <tagger>_p<class> columns into the jets of FILES."""
        from lhcml.train.config import load_train_config
        from lhcml.train.predict import predict

        cfg = load_train_config(config) if config is not None else None
        for p in predict(checkpoint, files, tagger, output_dir, batch_size, cfg):
            typer.echo(str(p))

    @app.command("export")
    def export_cmd(
        checkpoint: Path = typer.Argument(..., help="model file (tagger .ckpt, mv2 .json, PAED .pt) or a training output directory"),
        output: Path = typer.Argument(..., help="output .onnx file"),
        force: bool = typer.Option(False, "--force", help="overwrite an existing output"),
        check_file: Optional[Path] = typer.Option(None, "--check-file", help="flat file with real jets for the torch/onnxruntime check"),  # noqa: UP045
        n_check: int = typer.Option(1000, "--n-check", help="jets of --check-file compared"),
        atol: Optional[float] = typer.Option(None, "--atol", help="largest |onnx - original| accepted (default 1e-5; PAED 1e-4)"),  # noqa: UP045
        lean: bool = typer.Option(False, "--lean", help="flow-matching shower generators: the lean sampling graph (same function, constants folded, ~1.3-2.4x faster at batch 10^4)"),
    ) -> None:
        """Export any trained model to ONNX, check against the original, print latency and throughput."""
        from lhcml.export import export_model

        r = export_model(checkpoint, output, force=force, check_file=check_file, n_check=n_check, atol=atol, lean=lean)
        typer.echo(f"wrote {r.path}")
        typer.echo(f"inputs {r.inputs} -> outputs {r.outputs}")
        real = f"{r.max_abs_diff_real:.2e} on {r.n_real_jets} jets" if r.max_abs_diff_real is not None else "not checked"
        typer.echo(f"max |onnx - torch|: random {r.max_abs_diff_random:.2e}, real {real}")
        if r.latency_ms_per_jet == r.latency_ms_per_jet:  # not measured (NaN) for the PAED
            typer.echo(f"latency {r.latency_ms_per_jet:.3f} ms/jet (batch 1, 1 thread); throughput {r.throughput_jets_per_s:,.0f} jets/s (batch 1000)")
