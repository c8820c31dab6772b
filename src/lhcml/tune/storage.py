"""Optuna storages: an embedded journal file by default, an RDB URL (PostgreSQL) for many machines."""

from __future__ import annotations

from pathlib import Path

from lhcml.errors import ConfigError

#: seconds between heartbeats of a running trial
HEARTBEAT_INTERVAL = 10
#: a running trial without a heartbeat for this long is considered dead
GRACE_PERIOD = 40

_RDB_PREFIXES = ("postgresql", "postgres", "sqlite", "mysql")
#: the one PostgreSQL driver lhcml uses (psycopg2-binary, in the ``scale`` extra)
POSTGRES_DRIVER = "postgresql+psycopg2"


def resolve_storage_url(storage: str | None, out_dir: str | Path) -> str:
    """Normalise the ``--storage`` option.

    ``None``/``"journal"`` gives ``journal:<out_dir>/study.journal``; ``journal:PATH`` a journal file
    at PATH; ``postgresql://user@host/db`` (or sqlite/mysql URLs) an RDB.
    """
    if storage in (None, "", "journal"):
        return f"journal:{Path(out_dir).resolve() / 'study.journal'}"
    if storage.startswith("journal:"):
        return f"journal:{Path(storage[len('journal:'):]).resolve()}"
    if storage.split(":", 1)[0].split("+", 1)[0] in _RDB_PREFIXES:
        return with_driver(storage)
    raise ConfigError(
        f"unknown storage '{storage}': use 'journal' (default, a file next to the results), "
        "'journal:PATH', or a database URL such as postgresql://user@host:5432/dbname"
    )


def with_driver(url: str) -> str:
    """``postgresql://...`` (the documented form) or ``postgres://...`` with lhcml's driver named.

    SQLAlchemy >= 2.1 maps a bare ``postgresql://`` to psycopg (3) while ``lhcml[scale]``
    installs psycopg2, so the URL names :data:`POSTGRES_DRIVER`. URLs that name a driver
    (``postgresql+psycopg://``) and other databases are returned unchanged.
    """
    scheme, sep, rest = url.partition(":")
    if sep and scheme in ("postgresql", "postgres"):
        return f"{POSTGRES_DRIVER}:{rest}"
    return url


def is_journal(url: str) -> bool:
    return url.startswith("journal:")


def make_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD):
    """Open the storage behind a URL from :func:`resolve_storage_url`.

    RDB storages use Optuna's own heartbeat: a trial whose worker died is marked failed and
    re-queued by :class:`optuna.storages.RetryFailedTrialCallback`. Journal storages get the same
    behaviour from :mod:`lhcml.tune.study` (heartbeats written as trial attributes).
    """
    import optuna
    from optuna.storages import JournalStorage, RDBStorage

    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    url = with_driver(url)
    try:  # Optuna >= 4.9 names the retry callback after heartbeats
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

        retry = {"heartbeat_stale_trial_callback": Retry(max_retry=2)}
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback as Retry

        retry = {"failed_trial_callback": Retry(max_retry=2)}
    try:
        return RDBStorage(
            url,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            engine_kwargs={"pool_pre_ping": True},
            **retry,
        )
    except (ImportError, ModuleNotFoundError) as err:
        raise ConfigError(
            f"storage {url.split('://')[0]} needs a database driver: {err}. "
            "Install it with `pip install lhcml[scale]` (psycopg2-binary for PostgreSQL; give the "
            "URL as postgresql://user@host:port/db)"
        ) from None
    except optuna.exceptions.StorageInternalError as err:
        raise ConfigError(f"cannot connect to storage {url}: {err}") from None
