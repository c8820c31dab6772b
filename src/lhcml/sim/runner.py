"""Sharded, resumable simulation runs: ``DIR/<process>_<shard:04d>.h5`` + ``DIR/manifest.yaml``.

A run of ``n_events`` is split into shards of ``events_per_shard``. Shard ``i`` gets its own
Pythia seed derived from ``(seed, i)`` (:func:`shard_seed`), so the same run settings give
bit-identical files however the shards are scheduled (one process, a process pool, or Dask
workers on a batch system). Each shard file is written atomically; a shard whose file exists
(with matching attributes) is skipped, so a killed run restarts where it stopped and ends with
the same files as an unbroken run.

With ``mu > 0`` and no library given, a minimum-bias pileup library is built once into
``DIR/pileup_minbias.h5`` (seeded from ``seed``) and reused by every shard and on resume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lhcml.atomic import atomic_write_text, remove_stale_temporaries
from lhcml.errors import ConfigError

log = logging.getLogger(__name__)

EventFn = Callable[..., dict[str, np.ndarray]]

MANIFEST = "manifest.yaml"
PILEUP_FILE = "pileup_minbias.h5"
#: Pythia accepts seeds in [0, 900000000)
MAX_SEED = 900_000_000
#: pileup library size bounds (events); each hard event draws with replacement
PILEUP_MIN, PILEUP_MAX = 500, 20_000


def shard_seed(seed: int, index: int) -> int:
    """Deterministic Pythia seed of shard ``index`` of a run with ``seed`` (in [1, 9e8))."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0]
    return int(state) % (MAX_SEED - 1) + 1


def pileup_seed(seed: int) -> int:
    """Seed of the pileup library of a run (independent of every shard seed)."""
    state = np.random.SeedSequence([int(seed), 2**31 - 1, 7]).generate_state(1, dtype=np.uint32)
    return int(state[0]) % (MAX_SEED - 1) + 1


def pileup_library_size(mu: float, n_events: int) -> int:
    """Default library size: ~mu * n_events / 20 distinct minbias events, within bounds."""
    return int(min(PILEUP_MAX, max(PILEUP_MIN, math.ceil(mu * n_events / 20))))


def shard_name(process: str, index: int) -> str:
    """File name of shard ``index``."""
    return f"{process}_{index:04d}.h5"


def finished_shards(output_dir: str | Path, process: str) -> list[Path]:
    """The finished shard files of ``process`` in ``output_dir``, in shard order (a shard that is
    still being written has its temporary name)."""
    return sorted(Path(output_dir).glob(f"{process}_[0-9][0-9][0-9][0-9].h5"))


@dataclass(frozen=True)
class ShardTask:
    """Everything one shard needs (picklable, sent to local processes or Dask workers)."""

    process: str
    index: int
    n_events: int
    mu: float
    run_seed: int
    seed: int
    path: str
    pileup_path: str | None
    version: str
    constituents: str = "pflow"
    calo: str = "detailed"

    def attrs(self) -> dict[str, Any]:
        """Attributes stored in the shard file (and checked on resume)."""
        out = {
            "process": self.process,
            "shard": self.index,
            "n_events": self.n_events,
            "mu": float(self.mu),
            "run_seed": self.run_seed,
            "shard_seed": self.seed,
            "lhcml_version": self.version,
        }
        if self.constituents != "pflow":  # large-R jet inputs; absent = the default particle flow
            out["constituents"] = self.constituents
        if self.calo != "detailed":  # generated showers (lhcml.sim.fastcalo); absent = detailed
            out["calo"] = self.calo
        return out


_PILEUP_CACHE: dict[str, Any] = {}


def _load_pileup(path: str | None) -> Any:
    if path is None:
        return None
    if path not in _PILEUP_CACHE:
        from lhcml.sim.pileup import PileupLibrary

        _PILEUP_CACHE[path] = PileupLibrary.load(path)
    return _PILEUP_CACHE[path]


def _default_event_fn() -> EventFn:
    from lhcml.sim.events import simulate_events

    return simulate_events


def _matches(path: Path, task: ShardTask) -> bool:
    """Whether an existing shard file was made by ``task`` (raise if it was made otherwise)."""
    from lhcml.data.h5 import read_attrs

    attrs = read_attrs(path)
    want = task.attrs()
    diff = {
        k: (attrs.get(k), v) for k, v in want.items() if k != "lhcml_version" and attrs.get(k) != v
    }
    if diff:
        detail = ", ".join(f"{k}: file {a!r} vs run {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(
            f"{path} exists but was made by a different run ({detail}); use a new --output "
            f"directory or delete the old shards"
        )
    return True


def run_shard(
    task: ShardTask, event_fn: EventFn | None = None, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Simulate one shard and write it atomically; skip it if already complete.

    ``progress`` (optional) receives the number of events just finished.

    Returns ``{index, file, seed, n_events, n_jets, skipped}``.
    """
    from lhcml.data.h5 import write_h5

    path = Path(task.path)
    if path.exists() and _matches(path, task):
        n_jets = _n_rows(path)
        return {"index": task.index, "file": path.name, "seed": task.seed,
                "n_events": task.n_events, "n_jets": n_jets, "skipped": True}  # fmt: skip
    fn = event_fn or _default_event_fn()
    tables = fn(
        task.process,
        task.n_events,
        task.mu,
        task.seed,
        pileup=_load_pileup(task.pileup_path),
        progress=None,
        **({"constituents": task.constituents} if task.constituents != "pflow" else {}),
        **({"calo": task.calo} if task.calo != "detailed" else {}),
    )
    write_h5(path, tables, attrs=task.attrs())
    per_object = [k for k in tables if k not in ("events",)]
    n_jets = (
        len(tables["jets"])
        if "jets" in tables
        else (len(tables[per_object[0]]) if per_object else 0)
    )
    return {"index": task.index, "file": path.name, "seed": task.seed,
            "n_events": task.n_events, "n_jets": int(n_jets), "skipped": False}  # fmt: skip


def _n_rows(path: Path) -> int:
    """Rows of the per-object datasets (jets, or photons for photon processes)."""
    from lhcml.data import schema
    from lhcml.data.checks import datasets, open_h5

    with open_h5(path) as f:
        ds = datasets(f)
        if "jets" in ds:
            return int(ds["jets"].shape[0])
        rows = [d.shape[0] for k, d in ds.items() if k not in schema.PER_EVENT_DATASETS]
        return int(rows[0]) if rows else 0


def _write_yaml_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def plan_shards(
    process: str,
    n_events: int,
    mu: float,
    seed: int,
    output_dir: str | Path,
    events_per_shard: int,
    pileup_path: str | Path | None,
    constituents: str = "pflow",
    calo: str = "detailed",
) -> list[ShardTask]:
    """The shard tasks of a run (pure: no I/O)."""
    from lhcml import __version__

    n_shards = math.ceil(n_events / events_per_shard)
    out = Path(output_dir)
    return [
        ShardTask(
            process=process,
            index=i,
            n_events=min(events_per_shard, n_events - i * events_per_shard),
            mu=float(mu),
            run_seed=int(seed),
            seed=shard_seed(seed, i),
            path=str(out / shard_name(process, i)),
            pileup_path=None if pileup_path is None else str(pileup_path),
            version=__version__,
            constituents=constituents,
            calo=calo,
        )
        for i in range(n_shards)
    ]


def run_simulation(
    process: str,
    n_events: int,
    mu: float,
    seed: int,
    output_dir: str | Path,
    events_per_shard: int = 1000,
    workers: int = 1,
    cluster: str | Any | None = None,
    pileup_library: str | Path | None = None,
    pileup_size: int | None = None,
    event_fn: EventFn | None = None,
    progress: bool = True,
    cluster_options: dict[str, Any] | None = None,
    constituents: str = "pflow",
    calo: str = "detailed",
) -> list[Path]:
    """Simulate ``n_events`` of ``process`` into sharded flat files in ``output_dir``.

    Parameters
    ----------
    process
        Registered process name (``lhcml.sim.processes.list_processes()``).
    n_events
        Hard-scatter events in total.
    mu
        Mean pileup interactions per crossing (0: none).
    seed
        Run seed; shard ``i`` uses :func:`shard_seed` ``(seed, i)``.
    output_dir
        Directory for ``<process>_<shard:04d>.h5``, ``manifest.yaml`` and the pileup library.
    events_per_shard
        Events per shard file (the unit of work, of resumption and of parallelism).
    workers
        Local worker processes (ignored with ``cluster``).
    cluster
        A Dask cluster: ``"local:N"``, ``"tcp://host:port"``, ``"slurm"``, ``"htcondor"``
        (or a YAML file with ``kind:`` and job resources; see :mod:`lhcml.cluster`) or a
        :class:`lhcml.cluster.ClusterSpec`.
    pileup_library
        An existing library file (:func:`lhcml.sim.pileup.build_pileup_library`); default: built
        once into ``DIR/pileup_minbias.h5`` when ``mu > 0``.
    pileup_size
        Events in that library (default :func:`pileup_library_size`).
    event_fn
        The event function ``(process, n_events, mu, seed, pileup=, progress=) -> tables``;
        default :func:`lhcml.sim.events.simulate_events`. Must be importable by name to run
        in other processes.
    progress
        Show a progress bar (events/s across shards).
    cluster_options
        Job resources for :func:`lhcml.cluster.dask_client` (cores, memory, walltime, queue,
        account, gpus, jobs, prologue, ...); they override those of a cluster YAML file.
    constituents
        Inputs of large-R jets: ``pflow`` (default), ``clusters`` or ``tcc``
        (:func:`lhcml.sim.events.simulate_events`).
    calo
        ``detailed`` (default) or ``fast:MODEL.onnx[:BINNING.xml]``: generated showers for photon
        processes (:mod:`lhcml.sim.fastcalo`); the model is loaded and checked before any shard.

    Returns
    -------
    list[Path]
        The shard files, in shard order.
    """
    if n_events < 1:
        raise ConfigError(f"--events must be >= 1, got {n_events}")
    if events_per_shard < 1:
        raise ConfigError(f"--events-per-shard must be >= 1, got {events_per_shard}")
    if not math.isfinite(mu) or mu < 0:  # NaN would pass `mu < 0` and be written to the manifest
        raise ConfigError(f"--mu must be a finite number >= 0, got {mu}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if not 0 <= int(seed) < 2**63:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed}")
    if event_fn is None:
        from lhcml.sim.processes import get_process

        proc = get_process(process)  # unknown name: ConfigError listing the valid ones
        from lhcml.sim.events import CONSTITUENT_TYPES

        if constituents not in CONSTITUENT_TYPES or (constituents != "pflow" and proc.jet_kind != "large_r"):
            raise ConfigError(
                f"--constituents {constituents!r}: valid {', '.join(CONSTITUENT_TYPES)}; other than pflow "
                f"for large-R processes only ('{process}' has {proc.jet_kind} jets)"
            )
    if calo != "detailed":
        from lhcml.sim.fastcalo import fast_calo_cache

        if event_fn is None and get_process(process).kind != "photon":
            raise ConfigError(f"--calo {calo!r} applies to photon processes only (gamma_jet, dijet_photon, ...)")
        fast_calo_cache(calo)  # a missing model, bad metadata or a binning mismatch fails here
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # partial files of a killed run (shards; the pileup library's temporary file)
    for stale in out.glob(f"{process}_*.h5.tmp"):
        stale.unlink()
    remove_stale_temporaries(out / PILEUP_FILE)

    pileup_info: dict[str, Any] | None = None
    if mu > 0:
        if pileup_library is None:
            pileup_library = out / PILEUP_FILE
            size = pileup_size or pileup_library_size(mu, n_events)
            pileup_info = {"file": PILEUP_FILE, "n_events": size, "seed": pileup_seed(seed)}
            if not pileup_library.exists():
                from lhcml.sim.pileup import build_pileup_library

                log.info("building pileup library %s (%d minbias events)", pileup_library, size)
                build_pileup_library(size, pileup_seed(seed), pileup_library, progress=progress)
        else:
            pileup_library = Path(pileup_library)
            if not pileup_library.is_file():
                raise FileNotFoundError(f"pileup library {pileup_library} does not exist")
            pileup_info = {"file": str(pileup_library)}
        pileup_library = pileup_library.resolve()

    tasks = plan_shards(process, n_events, mu, seed, out, events_per_shard, pileup_library, constituents, calo)
    if event_fn is not None and (cluster is not None or (workers > 1 and len(tasks) > 1)):
        _check_picklable(event_fn)
    from lhcml import __version__

    manifest: dict[str, Any] = {
        "process": process,
        "n_events": int(n_events),
        "mu": float(mu),
        "seed": int(seed),
        "events_per_shard": int(events_per_shard),
        "lhcml_version": __version__,
        "pileup": pileup_info,
        **({"calo": calo} if calo != "detailed" else {}),
        "complete": False,
        "shards": [],
    }
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        old = yaml.safe_load(manifest_path.read_text()) or {}
        keys = ("process", "n_events", "mu", "seed", "events_per_shard")
        diff = [k for k in keys if old.get(k) != manifest[k]]
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {manifest[k]!r}" for k in diff)
            raise ConfigError(
                f"{out} holds a different run ({detail}); use a new --output directory to "
                f"start another run, or repeat the original settings to resume it"
            )
    _write_yaml_atomic(manifest_path, manifest)

    results: dict[int, dict[str, Any]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_events, unit="evt", desc=f"simulate {process}", smoothing=0.1)

    def done(res: dict[str, Any], counted: int = 0) -> None:
        results[res["index"]] = res
        if bar is not None:
            bar.update(tasks[res["index"]].n_events - counted)
        manifest["shards"] = [
            {k: v for k, v in results[i].items() if k != "skipped"} for i in sorted(results)
        ]
        _write_yaml_atomic(manifest_path, manifest)

    try:
        if cluster is not None:
            _run_dask(tasks, event_fn, cluster, cluster_options or {}, done)
        elif workers == 1 or len(tasks) == 1:
            for t in tasks:
                counter = _Counter(bar)
                res = run_shard(t, event_fn, counter if bar is not None else None)
                done(res, counted=counter.n)
        else:
            _run_pool(tasks, event_fn, workers, done)
    finally:
        if bar is not None:
            bar.close()
    manifest["complete"] = True
    manifest["n_jets"] = int(sum(r["n_jets"] for r in results.values()))
    _write_yaml_atomic(manifest_path, manifest)
    return [Path(t.path) for t in tasks]


def _check_picklable(fn: EventFn) -> None:
    import pickle

    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(
            f"event_fn {fn!r} cannot be sent to worker processes ({err}); pass a module-level "
            f"function (not a lambda or closure), or use workers=1"
        ) from None


class _Counter:
    """Progress callback for in-process shards: per-batch bar updates, counted once."""

    def __init__(self, bar: Any) -> None:
        self.bar, self.n = bar, 0

    def __call__(self, n: int) -> None:
        self.n += int(n)
        if self.bar is not None:
            self.bar.update(int(n))


def _run_pool(
    tasks: list[ShardTask], event_fn: EventFn | None, workers: int, done: Callable
) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    # spawn: no forked copies of Pythia/thread state; workers import lhcml afresh
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_shard, t, event_fn) for t in tasks}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in finished:
                if fut.exception() is not None:
                    for other in futures:
                        other.cancel()
                    # let running shards finish writing (atomic) before re-raising
                    for other in futures:
                        if not other.cancelled():
                            try:
                                done(other.result())
                            except Exception:  # noqa: BLE001 - the first error is reported
                                pass
                    raise fut.exception()
                done(fut.result())


def _run_dask(
    tasks: list[ShardTask],
    event_fn: EventFn | None,
    cluster: Any,
    options: dict[str, Any],
    done: Callable,
) -> None:
    import dataclasses

    from distributed import as_completed

    from lhcml.cluster import dask_client

    # batch jobs may start in another working directory (HTCondor: a scratch directory)
    tasks = [dataclasses.replace(t, path=str(Path(t.path).resolve())) for t in tasks]
    with dask_client(cluster, **options) as client:
        futures = [
            client.submit(
                run_shard, t, event_fn, key=f"lhcml-shard-{Path(t.path).stem}-{t.seed}", pure=False
            )
            for t in tasks
        ]
        for fut in as_completed(futures):
            done(fut.result())


def read_manifest(output_dir: str | Path) -> dict[str, Any]:
    """The run manifest of a simulation directory."""
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not an lhcml simulation directory")
    return yaml.safe_load(path.read_text())


__all__ = [
    "ShardTask",
    "plan_shards",
    "read_manifest",
    "run_shard",
    "run_simulation",
    "shard_seed",
]
