"""CLI commands of the evaluation stage: ``lhcml evaluate CONFIG`` and ``lhcml report DIR``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` and ``report`` commands to ``app``."""

    @app.command("evaluate")
    def evaluate_cmd(
        config: Path = typer.Argument(..., help="Evaluate YAML config (samples, taggers, WPs)."),
        output: Path = typer.Option(None, "--output", "-o", help="Output folder (overrides config)."),
        report: bool = typer.Option(True, help="Also write report.html."),
    ) -> None:
        """Metrics and plots from prediction files: results.json/yaml, plots/, report.html.

        Rejections at the working points with errors, ROC curves with ratios, AUC, rejection vs
        pT, R50 and 1/JSD50 (with mass_var), significance (with significance: ams).
        """
        from lhcml.evaluation.run import evaluate_from_file

        res = evaluate_from_file(config, output)
        out = Path(output or res["config"]["output_dir"])
        typer.echo(f"wrote {out / 'results.json'}")
        if report:
            from lhcml.plots.report import build_report

            typer.echo(f"wrote {build_report(out)}")

    @app.command("report")
    def report_cmd(
        results_dir: Path = typer.Argument(..., help="Folder written by `lhcml evaluate`, or any folder of reports."),
        output: Path = typer.Option(None, "--output", "-o", help="HTML file (default DIR/report.html, or DIR/index.html)."),
        embed: bool = typer.Option(True, help="Embed images (self-contained page)."),
        index: bool = typer.Option(False, "--index", help="Write the index of all reports under DIR."),
    ) -> None:
        """Write the HTML report of an evaluation folder, or one index page linking every report.

        A folder with results.json (from `lhcml evaluate`) gets its report.html; any other folder
        (or --index) gets an index linking all reports under it: evaluation, tuning, simulation
        validation, photon ID, preprocessing.
        """
        from lhcml.plots.report import build_index, build_report

        if index or not (results_dir / "results.json").is_file():
            typer.echo(f"wrote {build_index(results_dir, output)}")
        else:
            typer.echo(f"wrote {build_report(results_dir, output, embed)}")
