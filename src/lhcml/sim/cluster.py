"""Dask clusters for simulation shards and tuning trials (DESIGN §5): no home-made scheduler.

A cluster is named by one string::

    local:N            # N local worker processes (dask.distributed.LocalCluster)
    tcp://host:8786    # an existing scheduler (started with `dask scheduler` elsewhere)
    slurm              # dask_jobqueue.SLURMCluster: batch jobs, each running `cores` workers
    htcondor           # dask_jobqueue.HTCondorCluster

Batch options (``cores``, ``memory``, ``walltime``, ``queue``, ``account``, ``jobs``, ``disk``,
``job_extra``) are passed to dask-jobqueue; site defaults can also come from its YAML config
(``~/.config/dask/jobqueue.yaml``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lhcml.errors import ConfigError

_FORMS = "local:N, tcp://host:port (or tls://), slurm, htcondor"


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
    cores, memory, walltime, queue, account, disk, job_extra
        Per batch job (dask-jobqueue).
    jobs
        Number of batch jobs to submit.
    """

    kind: str
    n_workers: int = 1
    address: str | None = None
    cores: int = 1
    memory: str = "4GB"
    walltime: str = "02:00:00"
    queue: str | None = None
    account: str | None = None
    disk: str = "10GB"
    jobs: int = 1
    job_extra: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, spec: str, **options: Any) -> ClusterSpec:
        """Parse ``local:N``, a scheduler address, ``slurm`` or ``htcondor``.

        Raises
        ------
        ConfigError
            For any other string (the message lists the valid forms).
        """
        opts = {k: v for k, v in options.items() if v is not None}
        if "job_extra" in opts:
            opts["job_extra"] = tuple(opts["job_extra"])
        s = str(spec).strip()
        m = re.fullmatch(r"local(?::(\d+))?", s)
        if m:
            n = int(m.group(1) or 1)
            if n < 1:
                raise ConfigError(f"cluster '{spec}': need at least one worker (e.g. local:2)")
            return cls("local", n_workers=n, **opts)
        if re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", s):
            return cls("address", address=s, **opts)
        if s in ("slurm", "htcondor"):
            return cls(s, **opts)
        raise ConfigError(f"unknown cluster '{spec}'; valid forms: {_FORMS}")


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
        common = dict(cores=spec.cores, memory=spec.memory, processes=spec.cores)
        if spec.kind == "slurm":
            return dask_jobqueue.SLURMCluster(
                **common,
                walltime=spec.walltime,
                queue=spec.queue,
                account=spec.account,
                job_extra_directives=list(spec.job_extra),
            )
        return dask_jobqueue.HTCondorCluster(
            **common, disk=spec.disk, job_extra_directives=dict(_kv(spec.job_extra))
        )
    return None


@contextmanager
def dask_client(spec: str | ClusterSpec, **options: Any) -> Iterator[Any]:
    """Start (or connect to) the cluster ``spec`` and yield a ``distributed.Client``.

    Local and batch clusters are shut down on exit; an external scheduler is left running.
    """
    _require_dask()
    from distributed import Client

    if not isinstance(spec, ClusterSpec):
        spec = ClusterSpec.parse(spec, **options)
    cluster = make_cluster(spec)
    if spec.kind in ("slurm", "htcondor"):
        cluster.scale(jobs=spec.jobs)
    client = Client(cluster if cluster is not None else spec.address)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _kv(items: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for item in items:
        if "=" not in item:
            raise ConfigError(f"HTCondor job_extra entry '{item}' must be 'key = value'")
        k, v = item.split("=", 1)
        yield k.strip(), v.strip()


#: alias used by the tuning stage (``with make_client("local:4") as client: ...``)
make_client = dask_client
