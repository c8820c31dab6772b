"""``lhcml tune``: hyperparameter optimisation of any training config."""

from __future__ import annotations

from pathlib import Path

import typer


def run_tune(
    config: str | Path,
    space_path: str | Path,
    output: str | Path,
    storage: str | None = None,
    workers: int = 1,
    cluster: str | None = None,
    n_trials: int | None = None,
    progress: bool = True,
) -> Path:
    """Run (or resume/extend) a tuning study and write its report; returns the report path."""
    from lhcml.train.config import _resolve_raw, config_from_dict
    from lhcml.tune.objective import TrainObjective
    from lhcml.tune.report import write_report
    from lhcml.tune.space import check_paths, load_space
    from lhcml.tune.storage import resolve_storage_url
    from lhcml.tune.study import run_study

    space = load_space(str(space_path))
    if n_trials is not None:
        space = space.model_copy(update={"n_trials": n_trials})
    base_cfg = _resolve_raw(Path(config))
    config_from_dict(base_cfg, source=str(config))  # validate before any trial runs
    check_paths(space, base_cfg)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(storage, out)
    study = run_study(space, url, TrainObjective(base_cfg, space, out), workers=workers,
                      cluster=cluster, progress=progress)  # fmt: skip
    return write_report(study, space, base_cfg, out)


def register(app: typer.Typer) -> None:
    """Add ``lhcml tune`` to ``app``."""

    @app.command()
    def tune(
        config: Path = typer.Argument(..., help="Training config (as for `lhcml train`) to tune."),
        space: Path = typer.Option(..., "--space", help="Search-space YAML (parameters, sampler, pruner, objectives)."),
        output: Path = typer.Option(Path("tune_output"), "--output", "-o", help="Study directory: journal, trials, report."),
        storage: str = typer.Option(None, help="'journal' (default: a file in --output), 'journal:PATH' or postgresql://user@host/db."),
        workers: int = typer.Option(1, help="Parallel trials (local processes, or Dask tasks with --cluster); one per GPU."),
        cluster: str = typer.Option(None, help="Run trials on Dask: local:N, tcp://scheduler:8786, slurm or htcondor."),
        n_trials: int = typer.Option(None, "--n-trials", help="Total finished trials wanted (overrides the space; raise it to extend a study)."),
    ) -> None:
        """Optimise the hyperparameters of a training config with Optuna.

        Re-running the same command resumes the study (same --output/--storage and study name);
        a larger --n-trials extends it. Writes best_config.yaml (ready for `lhcml train`),
        trials.json and report.html into --output.
        """
        report = run_tune(config, space, output, storage, workers, cluster, n_trials)
        typer.echo(f"report: {report}")
        typer.echo(f"best config: {Path(output) / 'best_config.yaml'}")
