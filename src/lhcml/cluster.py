"""Dask clusters for simulation shards and tuning trials: no home-made scheduler.

The one cluster module of lhcml: ``lhcml simulate --cluster`` and ``lhcml tune --cluster`` both
go through :func:`dask_client`. A cluster is named by one string::

    local:N            # N local worker processes (dask.distributed.LocalCluster)
    tcp://host:8786    # an existing scheduler (started with `dask scheduler` elsewhere)
    slurm              # dask_jobqueue.SLURMCluster: batch jobs, each running `cores` workers
    htcondor           # dask_jobqueue.HTCondorCluster
    site.yaml          # a YAML file: `kind: slurm` (or any form above) plus job resources

Job resources (:class:`ClusterSpec` fields ``cores``, ``memory``, ``walltime``, ``queue``,
``account``, ``gpus``, ``jobs``, ``disk``, ``prologue``, ``job_extra``, ``log_directory``,
``interface``) come from that YAML file and/or the command-line options, which win. Site
defaults can also come from dask-jobqueue's own configuration (``~/.config/dask/jobqueue.yaml``).

GPUs are requested per job (``--gpus=N`` for Slurm, ``request_gpus`` for HTCondor) and found on
the worker that runs a task (:func:`pin_worker_gpu`), never on the submitting machine.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lhcml.errors import ConfigError

_FORMS = "local:N, tcp://host:port (or tls://), slurm, htcondor, or a YAML file with 'kind:'"
_KINDS = ("local", "address", "slurm", "htcondor")


@dataclass(frozen=True)
class ClusterSpec:
    """Where Dask tasks run; build with :meth:`parse` (pure: starts nothing).

    Attributes
    ----------
    kind
        ``"local"``, ``"address"``, ``"slurm"`` or ``"htcondor"``.
    n_workers
        Local workers (``local:N``).
    address
        Scheduler address (``tcp://...``).
    cores
        Worker processes (one thread each) per batch job, and the cores the job asks for.
    memory
        Memory per batch job (``"4GB"``), shared by its worker processes.
    walltime
        Wall-time limit per Slurm job (``HH:MM:SS``).
    queue, account
        Slurm partition / HTCondor queue, and the account (project) to charge.
    gpus
        GPUs per batch job (``None``: none requested).
    disk
        Scratch disk per HTCondor job.
    jobs
        Number of batch jobs to submit.
    prologue
        Shell lines run in the job script before the Dask worker starts (``module load ...``,
        ``source venv/bin/activate``).
    job_extra
        Extra scheduler directives: Slurm ``--constraint=a100``; HTCondor ``key = value``.
    log_directory
        Where batch jobs write their logs (default: the scheduler's default, the working
        directory).
    interface
        Network interface the scheduler and workers listen on (``ib0``; default: all).
    """

    kind: str
    n_workers: int = 1
    address: str | None = None
    cores: int = 1
    memory: str = "4GB"
    walltime: str = "02:00:00"
    queue: str | None = None
    account: str | None = None
    gpus: int | None = None
    disk: str = "10GB"
    jobs: int = 1
    prologue: tuple[str, ...] = field(default_factory=tuple)
    job_extra: tuple[str, ...] = field(default_factory=tuple)
    log_directory: str | None = None
    interface: str | None = None

    @classmethod
    def parse(cls, spec: str | Path | ClusterSpec, **options: Any) -> ClusterSpec:
        """Parse ``local:N``, a scheduler address, ``slurm``, ``htcondor`` or a YAML file.

        ``options`` (``None`` values ignored) override the YAML file's values and the defaults.

        Raises
        ------
        ConfigError
            For any other string, an unknown option, or a bad value (the message names it).
        """
        opts = {k: v for k, v in options.items() if v is not None}
        if isinstance(spec, ClusterSpec):
            return spec._with(opts) if opts else spec
        s = str(spec).strip()
        if s.endswith((".yaml", ".yml")):
            from lhcml.config import read_yaml

            data = read_yaml(s)
            if "kind" not in data:
                raise ConfigError(
                    f"cluster file {s} needs a 'kind:' key (local:N, tcp://host:port, slurm or "
                    f"htcondor)"
                )
            base = cls.parse(str(data.pop("kind")))
            return base._with({**data, **opts}, source=s)
        m = re.fullmatch(r"local(?::(\d+))?", s)
        if m:
            n = int(m.group(1) or 1)
            if n < 1:
                raise ConfigError(f"cluster '{spec}': need at least one worker (e.g. local:2)")
            return cls("local", n_workers=n)._with(opts)
        if re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", s):
            return cls("address", address=s)._with(opts)
        if s in ("slurm", "htcondor"):
            return cls(s)._with(opts)
        raise ConfigError(f"unknown cluster '{spec}'; valid forms: {_FORMS}")

    def _with(self, opts: dict[str, Any], source: str = "cluster options") -> ClusterSpec:
        """A copy with ``opts`` applied, each checked (unknown keys and bad values refused)."""
        known = {f.name: f for f in fields(self) if f.name not in ("kind", "address")}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, val in opts.items():
            if key not in known:
                import difflib

                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(known)})"
                raise ConfigError(f"unknown cluster option '{key}' in {source}{hint}")
            values[key] = _check(key, val, source)
        return type(self)(**values)


def _check(key: str, val: Any, source: str) -> Any:
    bad = f"bad value for cluster option '{key}' in {source}: "
    if key in ("prologue", "job_extra"):
        if isinstance(val, str):
            val = [val]
        if not isinstance(val, (list, tuple)) or not all(isinstance(v, str) for v in val):
            raise ConfigError(bad + f"expected a list of strings, got {val!r}")
        return tuple(val)
    if key in ("cores", "jobs", "n_workers", "gpus"):
        if isinstance(val, bool) or not isinstance(val, int) or val < (0 if key == "gpus" else 1):
            low = 0 if key == "gpus" else 1
            raise ConfigError(bad + f"expected an integer >= {low}, got {val!r}")
        return None if key == "gpus" and val == 0 else val
    if key in ("memory", "disk"):
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([kKMGTP]i?B?)?\s*", str(val)):
            raise ConfigError(bad + f"expected a size such as 4GB or 500MB, got {val!r}")
        return str(val).strip()
    if key == "walltime":
        if isinstance(val, int) and not isinstance(val, bool) and val >= 0:
            # YAML 1.1 reads an unquoted 04:00:00 as sexagesimal seconds (14400): convert back
            val = f"{val // 3600:02d}:{val % 3600 // 60:02d}:{val % 60:02d}"
        if not re.fullmatch(r"(\d+-)?\d{1,3}(:\d{2}){0,2}", str(val)):
            raise ConfigError(bad + f"expected HH:MM:SS (or D-HH:MM:SS), got {val!r}")
        return str(val)
    return None if val is None else str(val)


def _require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as err:  # pragma: no cover - in the scale extra
        raise ImportError(
            "Dask clusters need dask.distributed: pip install 'lhcml[scale]'"
        ) from err


def make_cluster(spec: ClusterSpec) -> Any:
    """Start the cluster object of ``spec`` (``None`` for an external scheduler address).

    Batch clusters are created without submitting jobs; call ``cluster.scale(jobs=...)``.
    """
    _require_dask()
    if spec.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=spec.n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    if spec.kind in ("slurm", "htcondor"):
        try:
            import dask_jobqueue
        except ImportError as err:  # pragma: no cover - in the scale extra
            raise ImportError(
                "batch clusters need dask-jobqueue: pip install 'lhcml[scale]'"
            ) from err
        common: dict[str, Any] = dict(
            cores=spec.cores,
            memory=spec.memory,
            processes=spec.cores,
            job_script_prologue=list(spec.prologue),
            scheduler_options={"dashboard_address": None},
        )
        if spec.log_directory:
            Path(spec.log_directory).mkdir(parents=True, exist_ok=True)
            common["log_directory"] = str(spec.log_directory)
        if spec.interface:
            common["interface"] = spec.interface
        if spec.kind == "slurm":
            extra = list(spec.job_extra)
            if spec.gpus:
                extra.append(f"--gpus={spec.gpus}")
            return dask_jobqueue.SLURMCluster(
                **common,
                walltime=spec.walltime,
                queue=spec.queue,
                account=spec.account,
                job_extra_directives=extra,
            )
        extra_kv = dict(_kv(spec.job_extra))
        if spec.gpus:
            extra_kv["request_gpus"] = str(spec.gpus)
        if spec.queue:
            extra_kv.setdefault("+JobFlavour", f'"{spec.queue}"')
        if spec.account:
            extra_kv.setdefault("accounting_group", spec.account)
        return dask_jobqueue.HTCondorCluster(**common, disk=spec.disk, job_extra_directives=extra_kv)
    return None


@contextmanager
def dask_client(spec: str | Path | ClusterSpec, **options: Any) -> Iterator[Any]:
    """Start (or connect to) the cluster ``spec`` and yield a ``distributed.Client``.

    ``options`` are job resources (see :meth:`ClusterSpec.parse`). Local and batch clusters are
    shut down on exit (batch jobs cancelled); an external scheduler is left running.
    """
    _require_dask()
    from distributed import Client

    spec = ClusterSpec.parse(spec, **options)
    cluster = make_cluster(spec)
    try:
        if spec.kind == "slurm":
            check_slurm_job(cluster.job_script())
        if spec.kind in ("slurm", "htcondor"):
            cluster.scale(jobs=spec.jobs)
        client = Client(cluster if cluster is not None else spec.address)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def check_slurm_job(script: str) -> None:
    """Ask Slurm whether it would accept the job script (``sbatch --test-only``, submits nothing).

    dask-jobqueue submits in the background: a refused job (unknown partition or account, more
    memory than a node has) only logs an error while the run waits forever for workers. This
    check turns it into one clear error first.

    Raises
    ------
    ConfigError
        With Slurm's reason, when it would refuse the job.
    """
    import shutil
    import subprocess
    import tempfile

    if shutil.which("sbatch") is None:
        raise ConfigError("--cluster slurm needs the Slurm commands (sbatch) on this machine's PATH")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="lhcml-job-") as f:
        f.write(script)
        f.flush()
        res = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        reason = " ".join(ln.removeprefix("sbatch: error: ") for ln in res.stderr.strip().splitlines())
        raise ConfigError(
            f"Slurm refuses the job ({reason}); fix --queue/--account/--memory/--cores/--gpus/"
            f"--walltime or the cluster file"
        )


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` (set by Slurm for a job's GPUs),
    else every GPU torch sees; ``[]`` without GPUs or torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in (s.strip() for s in env.split(",")) if g and g != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch / no driver: no GPUs
        return []


def pin_worker_gpu(index: int) -> str | None:
    """On the machine running a task: give this process one of its GPUs, ``index`` modulo their
    number (so the worker processes of one batch job spread over the job's GPUs).

    Returns the GPU id written to ``CUDA_VISIBLE_DEVICES``, or ``None`` (no GPU; nothing set).
    """
    gpus = visible_gpus()
    if not gpus:
        return None
    gpu = gpus[index % len(gpus)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def _kv(items: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for item in items:
        if "=" not in item:
            raise ConfigError(f"HTCondor job_extra entry '{item}' must be 'key = value'")
        k, v = item.split("=", 1)
        yield k.strip(), v.strip()


#: alias used by the tuning stage (``with make_client("local:4") as client: ...``)
make_client = dask_client
