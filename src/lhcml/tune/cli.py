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
    cluster_options: dict | None = None,
) -> Path:
    """Run (or resume/extend) a tuning study and write its report; returns the report path."""
    from lhcml.train.config import _resolve_raw
    from lhcml.train.protocol import validate_trainable_config
    from lhcml.tune.objective import TrainObjective
    from lhcml.tune.report import write_report
    from lhcml.tune.space import check_space, load_space
    from lhcml.tune.storage import resolve_storage_url
    from lhcml.tune.study import run_study

    space = load_space(str(space_path))
    if n_trials is not None:
        space = space.model_copy(update={"n_trials": n_trials})
    base_cfg = _resolve_raw(Path(config))
    validate_trainable_config(base_cfg, source=str(config))  # validate before any trial runs
    check_space(space, base_cfg, source=str(config))  # every parameter names a config key
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(storage, out)
    if cluster:
        from lhcml.cluster import ClusterSpec

        cluster = ClusterSpec.parse(cluster, **(cluster_options or {}))
    study = run_study(space, url, TrainObjective(base_cfg, space, out), workers=workers,
                      cluster=cluster, progress=progress)  # fmt: skip
    report = write_report(study, space, base_cfg, out)
    _require_completed(study, out, report)
    return report


def _require_completed(study, out: Path, report: Path) -> None:
    """:class:`StudyFailedError` (with the first failure's reason) if no trial completed."""
    from optuna.trial import TrialState

    from lhcml.errors import StudyFailedError

    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    reasons = [t.user_attrs.get("lhcml_fail_reason") for t in failed if t.user_attrs.get("lhcml_fail_reason")]
    why = f"; the first failure: {reasons[0]}" if reasons else ""
    raise StudyFailedError(
        f"no trial of the study completed ({len(failed)} failed, "
        f"{len(study.trials) - len(failed)} pruned or unfinished), so no best config was written"
        f"{why}. Fix the training config or the search space (each trial's log is in "
        f"{out / 'trials'}, the trial list in {report})"
    )


def best_config_paths(output: Path) -> list[Path]:
    """The best config(s) a study wrote: ``best_config.yaml`` or one per Pareto-optimal trial."""
    pareto = sorted(Path(output).glob("pareto_trial*.yaml"))
    best = Path(output) / "best_config.yaml"
    return pareto or ([best] if best.is_file() else [])


def register(app: typer.Typer) -> None:
    """Add ``lhcml tune`` to ``app``."""

    @app.command()
    def tune(
        config: Path = typer.Argument(..., help="Training config (as for `lhcml train`) to tune."),
        space: Path = typer.Option(..., "--space", help="Search-space YAML (parameters, sampler, pruner, objectives)."),
        output: Path = typer.Option(Path("tune_output"), "--output", "-o", help="Study directory: journal, trials, report."),
        storage: str = typer.Option(None, help="'journal' (default: a file in --output), 'journal:PATH' or postgresql://user@host/db."),
        workers: int = typer.Option(1, help="Parallel trials (local processes, or Dask tasks with --cluster); one per GPU."),
        cluster: str = typer.Option(None, help="Run trials on Dask: local:N, tcp://scheduler:8786, slurm, htcondor, or a cluster YAML (kind: + job resources)."),
        n_trials: int = typer.Option(None, "--n-trials", help="Total finished trials wanted (overrides the space; raise it to extend a study)."),
        cores: int = typer.Option(None, "--cores", help="batch: cores (= worker processes) per job"),
        memory: str = typer.Option(None, "--memory", help="batch: memory per job, e.g. 8GB"),
        walltime: str = typer.Option(None, "--walltime", help="batch: wall time per job, HH:MM:SS"),
        queue: str = typer.Option(None, "--queue", help="batch: partition/queue"),
        account: str = typer.Option(None, "--account", help="batch: account/project"),
        gpus: int = typer.Option(None, "--gpus", help="batch: GPUs per job (found on the worker)"),
        jobs: int = typer.Option(None, "--jobs", help="batch: number of jobs to submit"),
        prologue: list[str] = typer.Option(None, "--prologue", help="batch: shell line run before the worker starts (repeatable)"),
    ) -> None:
        """Optimise the hyperparameters of a training config with Optuna.

        Re-running the same command resumes the study (same --output/--storage and study name);
        a larger --n-trials extends it. Writes best_config.yaml (ready for `lhcml train`),
        trials.json and report.html into --output.
        """
        opts = dict(cores=cores, memory=memory, walltime=walltime, queue=queue, account=account,
                    gpus=gpus, jobs=jobs, prologue=prologue or None)  # fmt: skip
        report = run_tune(config, space, output, storage, workers, cluster, n_trials,
                          cluster_options={k: v for k, v in opts.items() if v is not None})  # fmt: skip
        typer.echo(f"report: {report}")
        for path in best_config_paths(output):
            typer.echo(f"best config: {path}")
