"""CLI commands of the data stage (convert, inspect)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the data-stage commands to ``app``."""

    @app.command("convert")
    def convert_cmd(
        input: Path = typer.Argument(..., help="ROOT ntuple, one entry per jet (with --to: flat HDF5)"),
        output: Path = typer.Argument(..., help="file to write (atomically): HDF5, or with --to parquet/ROOT"),
        to: str = typer.Option(
            None, "--to", help="parquet or root: write flat HDF5 INPUT for weaver-core (GeV, one branch per field)"
        ),
        tree: str = typer.Option(None, "--tree", help="TTree/RNTuple name (default: the only one)"),
        config: Path = typer.Option(
            None, "--config", help="YAML mapping of branches to variables (see docs/data.md)"
        ),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    ) -> None:
        """Convert a flat ROOT ntuple (jet branches + vector<float> track branches) to HDF5.

        Variables named as in the schema (`pt`, `jet_pt`, `trk_d0`, ...) are found
        automatically; others are mapped in --config. Tracks are padded to 40 with `valid`.

        With --to parquet|root the other way: a flat HDF5 file becomes a parquet file or a ROOT
        TTree (--tree, default Events) with one entry per jet, branches jet_<field> and
        <dataset>_<field> (valid objects only), energies in GeV — the input of weaver-core.
        """
        if to is not None:
            from lhcml.data.convert import export_columnar

            out = export_columnar(input, output, fmt=to, tree=tree or "Events", progress=not quiet)
            typer.echo(f"wrote {out}")
            return
        from lhcml.data.convert import convert_root

        out = convert_root(input, output, tree=tree, config=config, progress=not quiet)
        typer.echo(f"wrote {out}")

    @app.command("inspect")
    def inspect_cmd(
        file: Path = typer.Argument(..., help="flat HDF5 file"),
        values: bool = typer.Option(False, "--values", help="also print mean and range per field"),
        check: bool = typer.Option(False, "--check", help="run the full schema/NaN check"),
    ) -> None:
        """Print the datasets, fields, dtypes, units and sizes of a flat HDF5 file."""
        from lhcml.data.h5 import describe

        typer.echo(describe(file, values=values))
        if check:
            from lhcml.data.checks import check_file

            check_file(file)
            typer.echo("check: OK")
