"""The tuning engine on analytic objectives: samplers, storage, resume, a worker killed mid-trial."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tune_objectives import Quadratic, TwoObjectives  # noqa: E402

from lhcml.errors import ConfigError  # noqa: E402
from lhcml.tune.space import SearchSpace, apply_params, check_paths  # noqa: E402
from lhcml.tune.storage import resolve_storage_url  # noqa: E402
from lhcml.tune.study import n_finished, run_study  # noqa: E402


def _space(**kw):
    base = {
        "study_name": "quad",
        "n_trials": 12,
        "sampler": "tpe",
        "pruner": "none",
        "seed": 3,
        "parameters": {"x": {"type": "float", "low": -5, "high": 5}, "y": {"type": "float", "low": -5, "high": 5}},
    }
    base.update(kw)
    return SearchSpace.model_validate(base)


def test_tpe_beats_random_sampling_at_equal_budget():
    """TPE uses the trial history: at the same number of trials it gets closer to the minimum of
    the quadratic than random sampling, on most seeds (the same seeds for both)."""
    from lhcml.tune.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    best = {}
    for sampler in ("tpe", "random"):
        best[sampler] = []
        for seed in range(6):
            space = _space(sampler=sampler, n_trials=25, seed=seed)
            study = optuna.create_study(sampler=make_sampler(space), direction="minimize")  # in memory
            study.optimize(Quadratic(steps=1), n_trials=space.n_trials)
            best[sampler].append(study.best_value)
    wins = sum(t < r for t, r in zip(best["tpe"], best["random"], strict=True))
    assert wins >= 5, best
    assert np.median(best["tpe"]) < 0.5 * np.median(best["random"]), best


def test_study_resumes_from_its_journal(tmp_path):
    space = _space()
    url = resolve_storage_url(None, tmp_path)
    study = run_study(space, url, Quadratic(), workers=1, progress=False)
    assert n_finished(study) == 12
    assert study.user_attrs["lhcml_seed"] == 3
    first = [t.params for t in study.trials]
    # extend the same study: the 12 trials are loaded from the journal (not redone), 3 are added
    study2 = run_study(_space(n_trials=15), url, Quadratic(), workers=1, progress=False)
    assert n_finished(study2) == 15 and len(study2.trials) == 15
    assert [t.params for t in study2.trials[:12]] == first
    # and the added ones are new draws, not a replay of the first trials
    added = [tuple(sorted(t.params.items())) for t in study2.trials[12:]]
    assert not set(added) & {tuple(sorted(p.items())) for p in first}


def test_grid_sampler_visits_every_point(tmp_path):
    space = _space(
        sampler="grid",
        n_trials=6,
        parameters={
            "x": {"type": "categorical", "choices": [0, 2, 4]},
            "y": {"type": "float", "low": -1, "high": 0, "step": 1},
        },
    )
    study = run_study(space, resolve_storage_url(None, tmp_path), Quadratic(), progress=False)
    seen = {(t.params["x"], t.params["y"]) for t in study.trials}
    assert seen == {(x, y) for x in (0, 2, 4) for y in (-1.0, 0.0)}
    assert study.best_params == {"x": 2, "y": -1.0}


def test_multi_objective_pareto_front(tmp_path):
    space = _space(
        sampler="nsga2",
        n_trials=10,
        objectives=[{"metric": "a", "direction": "minimize"}, {"metric": "b", "direction": "minimize"}],
        parameters={"x": {"type": "float", "low": -1, "high": 3}},
    )
    study = run_study(space, resolve_storage_url(None, tmp_path), TwoObjectives(), progress=False)
    front = study.best_trials
    # the front is exactly the set of non-dominated trials (both objectives minimised)
    done = [(t.number, t.values) for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 10
    nondominated = {
        n for n, v in done
        if not any(all(a <= b for a, b in zip(w, v, strict=True)) and any(a < b for a, b in zip(w, v, strict=True)) for _, w in done)
    }  # fmt: skip
    assert {t.number for t in front} == nondominated
    # where the objectives conflict, x in [0, 2], the front has its members
    assert any(0 <= t.params["x"] <= 2 for t in front)


def test_two_workers_share_a_journal_and_a_killed_worker_is_recovered(tmp_path):
    # random sampling: a replacement worker seeded like the killed one would redraw its values
    space = _space(n_trials=6, study_name="kill", sampler="random")
    url = resolve_storage_url(None, tmp_path)
    flag = tmp_path / "died"

    def killer():
        deadline = time.time() + 60
        while not flag.exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(int(flag.read_text()), signal.SIGKILL)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    study = run_study(space, url, Quadratic(sleep=0.05, die_flag=str(flag)), workers=2, progress=False)
    th.join(timeout=5)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    # the failed trial's parameters were re-queued and completed by a worker
    retried = [t for t in study.trials if t.user_attrs.get("lhcml_retry_of") == failed[0].number]
    assert retried and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == failed[0].params
    # parallel workers may each start one last trial when the target is nearly reached, and a
    # re-queued trial is run even when other trials reached the target meanwhile
    assert 6 <= n_finished(study) <= 8
    assert not [t for t in study.trials if t.state == TrialState.WAITING]
    assert {t.user_attrs["lhcml_worker"] for t in study.trials} == {0, 1}
    # the replacement worker did not replay the killed worker's draws: apart from the re-queued
    # retry, no two trials share their parameters
    drawn = [tuple(sorted(t.params.items())) for t in study.trials if "lhcml_retry_of" not in t.user_attrs]
    assert len(set(drawn)) == len(drawn)


def test_worker_seeds_differ_per_worker_start_and_study_size():
    from lhcml.tune.study import worker_seed

    seeds = {worker_seed(3, w, start, n) for w in range(3) for start in range(3) for n in (0, 5)}
    assert len(seeds) == 18
    assert worker_seed(3, 0) == worker_seed(3, 0)  # a fresh study stays reproducible


def run_slow_trial_while_another_worker_dies(url: str, tmp_path: Path):
    """Two workers on a database: one trial runs longer than the grace period while the other
    worker is killed. Returns the finished study."""
    from tune_objectives import SlowAndDying

    space = _space(n_trials=4, study_name="slow", sampler="random",
                   parameters={"x": {"type": "float", "low": -5, "high": 5}})  # fmt: skip
    flags = tmp_path / "flags"
    flags.mkdir()

    def killer():
        deadline = time.time() + 90
        while not (flags / "died").exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(int((flags / "died").read_text()), signal.SIGKILL)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    study = run_study(space, url, SlowAndDying(str(flags), slow=6.0, die_after=3.5), workers=2,
                      progress=False, heartbeat_interval=1, grace_period=2)  # fmt: skip
    th.join(timeout=5)
    return study


def check_slow_trial_survived(study) -> None:
    slow = [t for t in study.trials if t.user_attrs.get("role") == "slow"]
    assert len(slow) == 1 and slow[0].state == TrialState.COMPLETE, [(t.number, t.state) for t in study.trials]
    assert slow[0].duration.total_seconds() > 2 * 2  # it ran well past the grace period
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1  # only the killed worker's trial
    retried = [t for t in study.trials if t.user_attrs.get("lhcml_retry_of") == failed[0].number]
    assert retried and retried[0].state == TrialState.COMPLETE


def test_database_storage_keeps_a_live_workers_long_trial(tmp_path):
    pytest.importorskip("sqlalchemy")
    study = run_slow_trial_while_another_worker_dies(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    check_slow_trial_survived(study)


def test_space_errors_and_param_paths():
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        check_paths(_space(parameters={"optimiser.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}), {"optimizer": {"lr": 1e-3}})
    cfg = {"optimizer": {"lr": 1e-3}, "model": {"hidden": [1]}}
    new = apply_params(cfg, {"optimizer.lr": 0.1, "model.hidden": [4, 4]})
    assert new["optimizer"]["lr"] == 0.1 and cfg["optimizer"]["lr"] == 1e-3
    with pytest.raises(ValueError, match="low"):
        SearchSpace.model_validate({"parameters": {"a": {"type": "float", "high": 1}}})
    with pytest.raises(ValueError, match="grid"):
        SearchSpace.model_validate({"sampler": "grid", "parameters": {"a": {"type": "float", "low": 0, "high": 1}}})
    with pytest.raises(ConfigError, match="unknown storage"):
        resolve_storage_url("redis://x", ".")


def test_median_pruner_prunes_bad_trials(tmp_path):
    space = _space(pruner="median", n_trials=15, n_startup_trials=3, n_warmup_steps=0)
    study = run_study(space, resolve_storage_url(None, tmp_path), Quadratic(steps=4), progress=False)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner should stop trials worse than the median"
    done = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    # pruned trials were worse, at their last report, than the best completed trial
    assert all(max(t.intermediate_values.values()) > min(done) for t in pruned)


def test_asha_and_hyperband_pruners_stop_trials(tmp_path):
    for pruner in ("asha", "hyperband"):
        space = _space(pruner=pruner, n_trials=12, study_name=f"p_{pruner}", n_warmup_steps=1)
        study = run_study(space, resolve_storage_url(None, tmp_path / pruner), Quadratic(steps=6), progress=False)
        states = [t.state for t in study.trials]
        assert TrialState.PRUNED in states, pruner
        assert n_finished(study) == 12


def test_trials_run_as_dask_tasks_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    space = _space(n_trials=4, study_name="dask")
    # 1.5 s per trial: with an instant objective the first Dask task to start could finish all
    # four trials before the second task's process had started (seen once in CI)
    study = run_study(space, resolve_storage_url(None, tmp_path), Quadratic(sleep=0.5), workers=2, cluster="local:2")
    assert 4 <= n_finished(study) <= 5
    # both Dask tasks ran trials, in processes other than this one
    assert {t.user_attrs["lhcml_worker"] for t in study.trials} == {0, 1}
    assert all(t.user_attrs["lhcml_pid"] != os.getpid() for t in study.trials)
