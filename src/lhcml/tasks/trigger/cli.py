"""``lhcml trigger ...``: trigger-latency models (datasets, quantisation scans, FPGA conversion).

Each command calls one plain function of :mod:`lhcml.tasks.trigger`; heavy imports are lazy.
The FPGA commands (hls4ml / conifer conversion) live in :mod:`lhcml.tasks.trigger.fpga` and
are added by its ``register(group)``.
"""

from __future__ import annotations

from pathlib import Path

import typer

trigger_app = typer.Typer(
    help=(
        "Trigger-latency models: quantised (QAT/PTQ) and pruned jet taggers small enough for a "
        "Level-1 trigger FPGA (the hls4ml jet-substructure MLP, a DL1-size b-tagging MLP, a "
        "deep-sets model on the leading constituents).\n\n"
        "Order: `lhcml trigger dataset` (16-feature and constituent files from boosted samples; "
        "the DL1 model reads `lhcml preprocess` files) -> `lhcml train configs/trigger/*.yaml` or "
        "`lhcml trigger scan` (float, PTQ and QAT at several bit widths -> accuracy/AUC table) -> "
        "`lhcml trigger convert` (hls4ml firmware model of a trained network) and `lhcml trigger "
        "bdt` (conifer, for MV2-like BDTs)."
    ),
    no_args_is_help=True,
)


@trigger_app.command("dataset")
def dataset_cmd(
    inputs: list[str] = typer.Argument(..., help="boosted large-R jet files (jets + flow; globs, folders)"),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="folder for the trigger files (same names)"),
    constituents: int = typer.Option(16, "--constituents", help="leading constituents kept per jet"),
) -> None:
    """Write trigger files (16 jet-substructure features, leading constituents) from boosted jet files."""
    from lhcml.tasks.trigger.dataset import make_trigger_dataset

    for p in make_trigger_dataset(inputs, output_dir, constituents, progress=True):
        typer.echo(str(p))


@trigger_app.command("scan")
def scan_cmd(
    config: Path = typer.Argument(..., help="scan config (configs/trigger/scan.yaml)"),
    output_dir: Path = typer.Argument(..., help="folder for the training runs and the results table"),
) -> None:
    """Train float, PTQ and QAT models at every bit width; write results.json/.csv and a plot.

    Finished runs are reused and interrupted ones resumed: rerun the same command after a crash.
    """
    from lhcml.tasks.trigger.scan import run_scan

    rows = run_scan(config, output_dir, log=typer.echo)
    typer.echo(f"{len(rows)} rows: {output_dir / 'results.json'}")


def register(app: typer.Typer) -> None:
    """Add the ``trigger`` group to ``app``."""
    app.add_typer(trigger_app, name="trigger")


# the FPGA conversion commands (convert, bdt) of lhcml.tasks.trigger.fpga
from lhcml.tasks.trigger import fpga  # noqa: E402

fpga.register(trigger_app)
