"""The tuning engine: studies, worker processes, Dask execution and fault handling.

Execution model (no scheduler of our own): every worker (a local process or a Dask task) runs
Optuna's own ``study.optimize`` loop against the shared storage until the study has
``n_trials`` finished trials. A worker killed mid-trial leaves a RUNNING trial behind; it is
detected (dead process on this host, or a missing heartbeat) and marked FAIL, and its
parameters are re-queued, so the study stays consistent and carries on.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lhcml.atomic import pid_alive
from lhcml.tune.space import SearchSpace
from lhcml.tune.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, is_journal, make_storage

_HOST = socket.gethostname()
#: how often a failed trial is re-queued before it is given up
MAX_RETRY = 2


def worker_seed(study_seed: int, worker_index: int, start: int = 0, n_existing: int = 0) -> int:
    """The sampler seed of one worker start: ``(study seed, worker id, start, trials before it)``.

    ``start`` counts the restarts of the worker slot (a replacement of a killed worker has
    ``start >= 1``) and ``n_existing`` is the number of trials the study already held when the
    worker started (a resumed or extended study, a Dask retry): either differs between a killed
    worker and its replacement, so the replacement does not replay the killed worker's draws.
    A fresh single-worker study (0, 0, 0, 0) stays reproducible for a given study seed.
    """
    import numpy as np

    ss = np.random.SeedSequence([int(study_seed) & 0xFFFFFFFF, int(worker_index), int(start), int(n_existing)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def make_sampler(space: SearchSpace, worker_index: int = 0, start: int = 0, n_existing: int = 0):
    """The Optuna sampler named in the space, seeded per worker start (see :func:`worker_seed`)."""
    import optuna

    seed = worker_seed(space.seed, worker_index, start, n_existing)
    if space.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if space.multi_objective:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, space.n_trials // 3)))


def make_pruner(space: SearchSpace):
    """The Optuna pruner named in the space (median, ASHA = successive halving, Hyperband)."""
    import optuna

    if space.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=space.n_startup_trials, n_warmup_steps=space.n_warmup_steps
        )
    if space.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, space.n_warmup_steps))
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, space.n_warmup_steps))
    return optuna.pruners.NopPruner()


def create_or_load_study(
    space: SearchSpace,
    storage_url: str,
    worker_index: int = 0,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    grace_period: float = GRACE_PERIOD,
):
    """Create the study (or load it to resume/extend); the space is recorded in its attributes."""
    import optuna

    storage = make_storage(storage_url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    kwargs: dict[str, Any] = {
        "study_name": space.study_name,
        "storage": storage,
        "sampler": make_sampler(space, worker_index),
        "pruner": make_pruner(space),
        "load_if_exists": True,
    }
    if space.multi_objective:
        kwargs["directions"] = space.directions
    else:
        kwargs["direction"] = space.directions[0]
    study = optuna.create_study(**kwargs)
    if "lhcml_space" not in study.user_attrs:
        study.set_user_attr("lhcml_space", space.model_dump(mode="json"))
        study.set_user_attr("lhcml_seed", space.seed)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in space.objectives])
    return study


def n_finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def n_waiting(study) -> int:
    """Trials queued but not started (e.g. re-queued parameters of a trial whose worker died)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def fail_stale_trials(study, grace_period: float = GRACE_PERIOD, dead_pids: set[int] | None = None) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL and re-queue their parameters.

    A worker is gone if its process on this host no longer exists (or is in ``dead_pids``), or if
    its last heartbeat is older than ``grace_period`` seconds. Returns the failed trial numbers.
    Safe to call from several workers at once: only the caller that wins the state change re-queues.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("lhcml_host"), t.user_attrs.get("lhcml_pid")
        beat = t.user_attrs.get("lhcml_heartbeat")
        if pid is not None and host == _HOST:
            # a worker on this host: its process decides, however long its trial runs
            gone = not pid_alive(int(pid)) or int(pid) in (dead_pids or set())
        elif beat is not None:
            # elsewhere, with a journal: lhcml's own heartbeat attribute
            gone = now - float(beat) > grace_period
        else:
            # elsewhere, with a database: Optuna's heartbeat (RDBStorage) fails and re-queues
            # those trials itself; the trial's start time says nothing about its worker
            gone = False
        if not gone:
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError):
            continue
        failed.append(t.number)
        retries = int(t.user_attrs.get("lhcml_retry", 0))
        if retries < MAX_RETRY and t.params:
            study.enqueue_trial(
                t.params, user_attrs={"lhcml_retry": retries + 1, "lhcml_retry_of": t.number},
                skip_if_exists=False,
            )
    return failed


class _Heartbeat:
    """Writes a timestamp into the running trial's attributes every ``interval`` seconds."""

    def __init__(self, study, trial_id: int, interval: float):
        self._storage, self._trial_id, self._interval = study._storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.set_trial_user_attr(self._trial_id, "lhcml_heartbeat", time.time())
            except Exception:  # trial finished meanwhile
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class WorkerSpec:
    """Everything a worker needs; picklable, so it travels to processes and Dask tasks."""

    space: dict[str, Any]
    storage_url: str
    objective: Any  # a picklable callable(trial) -> float | tuple[float, ...]
    worker_index: int = 0
    gpu: int | None = None
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    grace_period: float = GRACE_PERIOD
    env: dict[str, str] = field(default_factory=dict)
    #: how many times this worker slot was started before (replacements of killed workers)
    start: int = 0


def run_worker(spec: WorkerSpec) -> int:
    """Run trials until the study has ``n_trials`` finished ones. Returns trials run here."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    os.environ.update(spec.env)
    if spec.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(spec.gpu)
    # a failed trial is reported in one line below (Optuna's own report carries a traceback)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchSpace.model_validate(spec.space)
    study = create_or_load_study(
        space, spec.storage_url, spec.worker_index, spec.heartbeat_interval, spec.grace_period
    )
    # a replacement worker, a Dask retry or a resumed study must not replay earlier draws
    study.sampler = make_sampler(space, spec.worker_index, spec.start, len(study.get_trials(deepcopy=False)))
    journal = is_journal(spec.storage_url)
    ran = 0

    def run(trial):
        try:
            return spec.objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            # kept with the trial: a study whose every trial fails reports why
            reason = f"{type(err).__name__}: {err}"[:1000]
            trial.set_user_attr("lhcml_fail_reason", reason)
            print(f"lhcml tune: trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)
            raise

    def objective(trial):
        nonlocal ran
        ran += 1
        trial.set_user_attr("lhcml_host", _HOST)
        trial.set_user_attr("lhcml_pid", os.getpid())
        trial.set_user_attr("lhcml_worker", spec.worker_index)
        if journal:
            trial.set_user_attr("lhcml_heartbeat", time.time())
            with _Heartbeat(study, trial._trial_id, spec.heartbeat_interval):
                return run(trial)
        return run(trial)

    def housekeeping(study, trial) -> None:
        if journal:
            fail_stale_trials(study, spec.grace_period)
        n_fail = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        if n_fail >= max(3, 2 * space.n_trials):
            study.stop()  # the objective itself is broken: stop rather than loop forever

    if journal:
        fail_stale_trials(study, spec.grace_period)
    if n_finished(study) < space.n_trials:
        study.optimize(
            objective,
            callbacks=[MaxTrialsCallback(space.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)), housekeeping],
            catch=(Exception,),
            gc_after_trial=True,
        )
    # re-queued trials are owed even if the target was reached meanwhile by other trials
    while n_waiting(study) and not getattr(study, "_stop_flag", False):
        study.optimize(objective, n_trials=1, callbacks=[housekeeping], catch=(Exception,))
    return ran


def _detect_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def run_study(
    space: SearchSpace,
    storage_url: str,
    objective: Any,
    workers: int = 1,
    cluster: str | None = None,
    progress: bool = True,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    grace_period: float = GRACE_PERIOD,
    max_restarts: int = 4,
):
    """Run a study to ``space.n_trials`` finished trials and return it.

    ``workers`` local processes by default (one per GPU when GPUs are present and ``workers``
    is not larger); ``cluster`` (``local:N``, ``tcp://scheduler:8786``, ``slurm``, ``htcondor``)
    runs the same workers as Dask tasks. A local worker that dies is replaced and its trial
    re-queued.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # create once, before workers race
    study = create_or_load_study(space, storage_url, 0, heartbeat_interval, grace_period)
    n_gpu = _detect_gpus()
    specs = [
        WorkerSpec(
            space=space.model_dump(mode="json"),
            storage_url=storage_url,
            objective=objective,
            worker_index=i,
            gpu=(i % n_gpu) if n_gpu else None,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
        for i in range(max(1, workers))
    ]
    if cluster:
        _run_dask(specs, cluster)
    elif len(specs) == 1 and not progress:
        run_worker(specs[0])
    else:
        _run_local(specs, study, space, progress, max_restarts)
    fail_stale_trials(study, grace_period=float("inf"))
    return create_or_load_study(space, storage_url)


def _run_local(specs: list[WorkerSpec], study, space: SearchSpace, progress: bool, max_restarts: int) -> None:
    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    procs = {}
    for s in specs:
        p = ctx.Process(target=run_worker, args=(s,), daemon=False)
        p.start()
        procs[s.worker_index] = (p, s)
    restarts = 0
    bar = tqdm(total=space.n_trials, desc=f"study {space.study_name}", unit="trial", disable=not progress)
    try:
        while procs:
            time.sleep(0.5)
            done = min(n_finished(study), space.n_trials)
            if done != bar.n:
                bar.update(done - bar.n)
            for idx, (p, s) in list(procs.items()):
                if p.is_alive():
                    continue
                p.join()
                del procs[idx]
                if p.exitcode != 0:
                    # the worker was killed mid-trial: fail its trial now, re-queue, replace it
                    fail_stale_trials(study, s.grace_period, dead_pids={p.pid})
                    owed = n_finished(study) < space.n_trials or n_waiting(study) > 0
                    if owed and restarts < max_restarts:
                        restarts += 1
                        s = dataclasses.replace(s, start=s.start + 1)  # new sampler seed
                        q = mp.get_context("spawn").Process(target=run_worker, args=(s,))
                        q.start()
                        procs[idx] = (q, s)
    finally:
        bar.close()
        for p, _ in procs.values():
            p.terminate()


def _run_dask(specs: list[WorkerSpec], cluster) -> None:
    from lhcml.cluster import dask_client

    with dask_client(cluster) as client:
        futures = [client.submit(_run_cluster_worker, s, pure=False, retries=2, key=f"lhcml-tune-{s.worker_index}") for s in specs]
        client.gather(futures)


def _run_cluster_worker(spec: WorkerSpec) -> int:
    """:func:`run_worker` on a Dask worker: its GPU is one of the worker's (batch job's) own GPUs,
    not one counted on the submitting machine."""
    import dataclasses

    from lhcml.cluster import pin_worker_gpu

    pin_worker_gpu(spec.worker_index)
    return run_worker(dataclasses.replace(spec, gpu=None))
