"""``lhcml jets ...``: boosted-tagging helpers (substructure fields, weights, variations, frontier)."""

from __future__ import annotations

from pathlib import Path

import typer

jets_app = typer.Typer(
    help=(
        "Boosted-jet tagging: top, W/Z and quark/gluon vs QCD jets from large-R jet constituents "
        "(flow).\n\n"
        "Order: `lhcml simulate top|wz|qcd_boosted` (or your own jets + flow files) -> "
        "`lhcml jets substructure` -> `lhcml jets weights` (optional flat pT/mass weights) -> "
        "`lhcml train configs/jets/*.yaml` -> `lhcml predict` -> `lhcml evaluate configs/jets/evaluate.yaml` -> "
        "`lhcml jets frontier` (R50 vs 1/JSD50 with the tau21/DDT baselines); "
        "`lhcml jets vary` writes a detector-varied copy for robustness studies."
    ),
    no_args_is_help=True,
)


@jets_app.command("substructure")
def substructure_cmd(
    files: list[Path] = typer.Argument(..., help="Flat files with 'jets' and 'flow'; updated in place."),
    radius: float = typer.Option(1.0, help="Jet radius R (τ_N normalisation, soft drop)."),
    zcut: float = typer.Option(0.1, help="Soft-drop z_cut."),
    beta: float = typer.Option(0.0, help="Soft-drop β."),
    chunk_size: int = typer.Option(5000, help="Jets per chunk."),
) -> None:
    """Add N-subjettiness, ECF/C2/D2, kt splitting scales, track multiplicity and soft-drop mass."""
    from lhcml.tasks.boosted.substructure import add_substructure_to_file

    for f in files:
        add_substructure_to_file(f, chunk_size=chunk_size, radius=radius, zcut=zcut, sd_beta=beta)
        typer.echo(f"substructure fields added to {f}")


@jets_app.command("weights")
def weights_cmd(
    files: list[Path] = typer.Argument(..., help="Flat files; updated in place."),
    field: str = typer.Option("flat_weight", help="Name of the new jets field."),
    target: str = typer.Option("flat", help="'flat' or the class index to match (e.g. 1 = top)."),
) -> None:
    """Add per-jet weights flattening every class in (pT, mass) (for data.weight_field)."""
    from lhcml.tasks.boosted.samples import add_flattening_weights

    tgt: str | int = target if target == "flat" else int(target)
    for f in files:
        add_flattening_weights(f, field=field, target=tgt)
        typer.echo(f"'{field}' added to {f}")


@jets_app.command("vary")
def vary_cmd(
    file: Path = typer.Argument(..., help="Nominal flat file."),
    output: Path = typer.Argument(..., help="Output file for the varied sample."),
    seed: int = typer.Option(1, help="Random seed of the variation."),
    pt_resolution: float = typer.Option(0.10, help="Extra relative constituent pT smearing."),
    angular_resolution: float = typer.Option(0.01, help="Constituent η/φ smearing."),
    efficiency: float = typer.Option(0.97, help="Constituent survival probability."),
) -> None:
    """Write a detector-varied copy (smeared, partly lost constituents) for robustness studies."""
    from lhcml.tasks.boosted.robustness import write_varied_file

    write_varied_file(file, output, seed, pt_resolution, angular_resolution, efficiency)
    typer.echo(f"varied sample written to {output}")


@jets_app.command("frontier")
def frontier_cmd(
    files: list[Path] = typer.Argument(..., help="Prediction files."),
    tagger: list[str] = typer.Option(..., help="LABEL=PREFIX of a tagger's output columns; repeat."),
    output: Path = typer.Option(Path("frontier.png"), help="Plot file."),
    signal: str = typer.Option("top", help="Signal class name."),
    background: str = typer.Option("qcd", help="Background class name (its mass distribution gives the JSD)."),
    weight: str | None = typer.Option(None, help="Jets weight field."),
    ddt_fit_files: list[Path] = typer.Option(
        [], help="Background sample to fit the DDT slope on (repeat; default: the prediction files)."
    ),
    ddt_range: tuple[float, float] = typer.Option((1.5, 4.0), help="ρ' range of the DDT fit."),
) -> None:
    """R50 vs 1/JSD50 for the taggers and the τ21/DDT baselines; prints a table, saves a plot."""
    from lhcml.errors import ConfigError
    from lhcml.tasks.boosted.frontier import frontier_plot, frontier_points

    taggers = {}
    for t in tagger:
        if "=" not in t:
            raise ConfigError(f"--tagger expects LABEL=PREFIX, got '{t}'")
        k, v = t.split("=", 1)
        taggers[k] = v
    from lhcml.formatting import pm
    from lhcml.tasks.boosted.frontier import fit_ddt_files

    ddt = fit_ddt_files(ddt_fit_files, background, ddt_range) if ddt_fit_files else None
    if ddt is not None:
        typer.echo(f"DDT fit on {len(ddt_fit_files)} file(s): M = {pm(ddt.slope, ddt.slope_err)}, "
                   f"χ²/ndf = {ddt.chi2:.1f}/{ddt.ndf} in {ddt.fit_range[0]} < ρ' < {ddt.fit_range[1]}")
    rows = frontier_points(files, taggers, signal, background, weight_var=weight, ddt=ddt, ddt_fit_range=ddt_range)
    typer.echo(f"{'tagger':30s} {'R50':>10s} {'1/JSD50':>10s}")
    for r in rows:
        typer.echo(f"{r['tagger']:30s} {r['r50']:10.2f} {r['inv_jsd50']:10.2f}")
    frontier_plot(rows, output)
    typer.echo(f"frontier plot: {output}")


def register(app: typer.Typer) -> None:
    """Add ``lhcml jets`` to ``app``."""
    app.add_typer(jets_app, name="jets")
