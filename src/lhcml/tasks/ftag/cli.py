"""CLI of the flavour-tagging chain: ``lhcml preprocess`` and ``lhcml ftag baselines fit|apply``."""

from __future__ import annotations

from pathlib import Path

import typer

ftag_app = typer.Typer(
    help=(
        "Flavour tagging: b-, c- and light-jet identification from tracks, vertices and jets.\n\n"
        "Order: `lhcml simulate ttbar|zprime` -> `lhcml ftag baselines fit` -> "
        "`lhcml ftag baselines apply` (only for DL1/MV2, which read the baseline taggers) -> "
        "`lhcml preprocess configs/ftag/preprocess.yaml` -> `lhcml train configs/ftag/*.yaml` -> "
        "`lhcml predict` -> `lhcml evaluate configs/evaluate/ftag.yaml` -> `lhcml export`."
    ),
    no_args_is_help=True,
)

baselines_app = typer.Typer(
    help=(
        "Baseline flavour taggers (IP2D/IP3D, SV1, JetFitter, soft muon) as jet variables.\n\n"
        "Order: `fit` the likelihood templates on training jets, then `apply` them to every file."
    ),
    no_args_is_help=True,
)


def preprocess_cmd(
    config: Path = typer.Argument(..., help="preprocessing YAML config"),
    stage: list[str] = typer.Option(
        None, "--stage", help="run only these stages (train, val, test, norm, plots); repeatable"
    ),
    force: bool = typer.Option(False, "--force", help="redo stages a previous run finished"),
) -> None:
    """Resample, split, shuffle and normalise flat files into training files (as UPP)."""
    from lhcml.data.preprocess import preprocess

    outputs = preprocess(config, stages=stage or None, force=force)
    for name, path in outputs.items():
        typer.echo(f"{name}: {path}")


ftag_app.add_typer(baselines_app, name="baselines")


@baselines_app.command("fit")
def fit_cmd(
    train: list[Path] = typer.Option(..., "--train", help="training files (repeatable; globs ok)"),
    output: Path = typer.Option(..., "--output", "-o", help="templates file to write (.h5)"),
    max_jets: int = typer.Option(None, "--max-jets", help="use at most this many jets"),
    batch_size: int = typer.Option(5000, "--batch-size", help="jets read per chunk"),
) -> None:
    """Fill the IP2D/IP3D and SV1 likelihood templates on training jets."""
    from lhcml.tasks.ftag.baselines import fit_baselines

    typer.echo(fit_baselines(train, output, max_jets=max_jets, batch_size=batch_size))


@baselines_app.command("apply")
def apply_cmd(
    files: list[Path] = typer.Argument(..., help="files to augment (rewritten atomically)"),
    templates: Path = typer.Option(..., "--templates", "-t", help="file from `lhcml ftag baselines fit`"),
    output_dir: Path = typer.Option(None, "--output-dir", help="write copies here instead"),
    batch_size: int = typer.Option(5000, "--batch-size", help="jets read per chunk"),
) -> None:
    """Add IP2D/IP3D, SV1, JetFitter and soft-muon variables to the jets of each file."""
    from lhcml.tasks.ftag.baselines import apply_baselines

    for p in apply_baselines(templates, files, output_dir=output_dir, batch_size=batch_size):
        typer.echo(p)


def register(app: typer.Typer) -> None:
    """Add ``preprocess`` and the ``ftag`` group (``ftag baselines fit|apply``) to the ``lhcml`` app."""
    app.command("preprocess")(preprocess_cmd)
    app.add_typer(ftag_app, name="ftag")
