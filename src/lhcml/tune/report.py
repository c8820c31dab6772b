"""Study results: the best configuration as a ready-to-train YAML, plots and an HTML page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lhcml.atomic import atomic_write_text
from lhcml.plots.style import save_figure
from lhcml.tune.space import SearchSpace, apply_params


def decode_params(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """Map stored trial parameters back to config values (list-valued choices are stored by index)."""
    out = {}
    for name, value in params.items():
        spec = space.parameters.get(name)
        if spec is not None and spec.type == "categorical" and any(
            isinstance(c, (list, dict)) for c in spec.choices or []
        ):
            value = spec.choices[int(value)]
        out[name] = value
    return out


def best_trials(study, space: SearchSpace) -> list[Any]:
    """The best trial (single objective) or the Pareto front (multi-objective)."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return list(study.best_trials) if space.multi_objective else [study.best_trial]


def write_best_config(study, space: SearchSpace, base_cfg: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``best_config.yaml`` (or one per Pareto-optimal trial) ready for ``lhcml train``."""
    paths = []
    for trial in best_trials(study, space):
        cfg = apply_params(base_cfg, decode_params(space, trial.params))
        name = "best_config.yaml" if not space.multi_objective else f"pareto_trial{trial.number:04d}.yaml"
        header = (
            f"# best trial {trial.number} of study '{space.study_name}' "
            f"(values {trial.values}); produced by lhcml tune\n"
        )
        path = out_dir / name
        atomic_write_text(path, header + yaml.safe_dump(cfg, sort_keys=False))
        paths.append(path)
    return paths


def summary_rows(study, space: SearchSpace) -> list[dict[str, Any]]:
    """One row per trial: number, state, values, parameters, duration."""
    rows = []
    for t in study.trials:
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
        for obj, v in zip(space.objectives, t.values or [None] * len(space.objectives), strict=False):
            row[obj.metric] = None if v is None else float(v)
        row.update(decode_params(space, t.params))
        row["duration_s"] = t.duration.total_seconds() if t.duration else None
        rows.append(row)
    return rows


def make_plots(study, space: SearchSpace, out_dir: Path) -> list[tuple[Path, str]]:
    """Optimisation history, parameter importances, parallel coordinates, Pareto front."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figs: list[tuple[Path, str]] = []
    out_dir.mkdir(parents=True, exist_ok=True)

    def save(name: str, caption: str, fn) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            path = save_figure(fig, out_dir / f"{name}.png", dpi=90)
            plt.close(fig)
            figs.append((path, caption))
        except (ValueError, RuntimeError, ImportError, ZeroDivisionError, IndexError):
            plt.close("all")  # e.g. importances need >1 distinct value; skip that plot

    if not complete:
        return figs
    metric_names = [o.metric for o in space.objectives]
    if space.multi_objective:
        save("pareto_front", f"Pareto front: {metric_names[0]} vs {metric_names[1]}",
             lambda: ovm.plot_pareto_front(study, target_names=metric_names[:2]))
        for i, m in enumerate(metric_names):
            save(f"history_{m}", f"Optimisation history of {m}",
                 lambda i=i, m=m: ovm.plot_optimization_history(study, target=lambda t: t.values[i], target_name=m))
    else:
        save("history", f"Optimisation history ({metric_names[0]})", lambda: ovm.plot_optimization_history(study))
        if len(complete) >= 3 and len(space.parameters) >= 1:
            save("importances", "Parameter importances (fANOVA)", lambda: ovm.plot_param_importances(study))
        if len(space.parameters) >= 2:
            save("parallel_coordinates", "Parallel coordinates", lambda: ovm.plot_parallel_coordinate(study))
        if any(t.intermediate_values for t in study.trials):
            save("intermediate", "Per-epoch validation metric (pruned trials stop early)",
                 lambda: ovm.plot_intermediate_values(study))
    return figs


def write_report(study, space: SearchSpace, base_cfg: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``best_config.yaml``, ``trials.json``, plots and ``report.html`` into ``out_dir``."""
    from lhcml.plots.report import HtmlReport

    out_dir = Path(out_dir)
    best_paths = write_best_config(study, space, base_cfg, out_dir)
    rows = summary_rows(study, space)
    atomic_write_text(out_dir / "trials.json", json.dumps(rows, indent=1, default=str))
    figs = make_plots(study, space, out_dir / "plots")

    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    rep = HtmlReport(title=f"lhcml tuning study: {space.study_name}")
    rep.add_heading("Study")
    rep.add_table([
        {"study": space.study_name, "sampler": space.sampler, "pruner": space.pruner,
         "seed": space.seed, "objectives": ", ".join(f"{o.metric} ({o.direction})" for o in space.objectives),
         **{f"n {k.lower()}": v for k, v in states.items()}},
    ])
    rep.add_heading("Best" if not space.multi_objective else "Pareto-optimal trials")
    best_rows = [r for r in rows if r["trial"] in {t.number for t in best_trials(study, space)}]
    rep.add_table(best_rows)
    rep.add_text("Ready-to-train configs: " + ", ".join(p.name for p in best_paths))
    for path, caption in figs:
        rep.add_figure(path, caption)
    rep.add_heading("All trials")
    rep.add_table(rows)
    return rep.write(out_dir / "report.html")
