"""Atomic writes: the one helper every stage uses to write a file or a directory.

A writer never leaves a partial output under the final name: it writes a temporary next to the
destination (same directory, so same file system), flushes it to disk (``fsync``) and renames it
onto the destination with :func:`os.replace`, which POSIX makes atomic. On an exception inside
the block the temporary is removed and the destination is left as it was.

>>> with atomic_path("results/model.onnx") as tmp:     # doctest: +SKIP
...     onnx.save(proto, str(tmp))

Temporaries are hidden and name their host and process, ``.<name>.<host>.<pid>.lhcml-tmp``
(plus an optional suffix for libraries that choose the format by extension), so concurrent runs
on a shared file system never collide, and :func:`remove_stale_temporaries` can delete those of
killed runs without touching live ones.

Directories (:func:`atomic_dir`): the new directory is built under a temporary name and renamed
onto the destination; an existing destination is first renamed aside and deleted after the
swap, so readers see either the whole old or the whole new directory (POSIX has no atomic
exchange of two non-empty directories; between the two renames the destination is briefly
absent).

This module is infrastructure (it imports only :mod:`lhcml.errors`), usable by every stage.
"""

from __future__ import annotations

import errno
import glob
import itertools
import json
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lhcml.errors import OutputNotWritableError

#: marker of every temporary this module creates
TMP_MARK = ".lhcml-tmp"

_HOST = socket.gethostname()
_counter = itertools.count(1)


def temp_path(dest: str | Path, suffix: str = "") -> Path:
    """A fresh hidden temporary name next to ``dest``: ``.<name>.<host>.<pid>[-<n>].lhcml-tmp<suffix>``.

    Parameters
    ----------
    dest
        The final path.
    suffix
        Appended to the name (e.g. ``".json"`` for writers that choose the format by extension).
    """
    dest = Path(dest)
    k = next(_counter)
    n = f"-{k}" if k > 1 else ""
    return dest.with_name(f".{dest.name}.{_HOST}.{os.getpid()}{n}{TMP_MARK}{suffix}")


def _not_writable(dest: Path, err: OSError) -> OutputNotWritableError:
    return OutputNotWritableError(
        f"cannot write {dest}: the directory {dest.parent} is not writable ({err.strerror or err}); "
        "make it writable for your user or choose another output location"
    )


def prepare_output(dest: str | Path, directory: bool = False) -> None:
    """Create the parent directory; a read-only location becomes :class:`OutputNotWritableError`,
    a directory where a file is to be written :class:`IsADirectoryError`."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if isinstance(err, PermissionError) or err.errno == errno.EROFS:
            raise _not_writable(dest, err) from None
        raise
    if not directory and dest.is_dir() and not dest.is_symlink():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(dest))
    if not os.access(dest.parent, os.W_OK | os.X_OK):
        raise _not_writable(dest, PermissionError(errno.EACCES, "permission denied"))


def _fsync_path(path: Path) -> None:
    """Flush a file, or every file of a directory tree and the directories, to disk (best effort
    for directories, whose ``fsync`` some file systems refuse)."""
    if path.is_dir():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync_path(Path(root) / name)
            _fsync_dir(Path(root))
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def commit(tmp: str | Path, dest: str | Path) -> Path:
    """Flush ``tmp`` to disk and rename it onto ``dest`` (a file or a directory); return ``dest``.

    For a directory an existing ``dest`` is renamed aside and deleted after the swap.
    """
    tmp, dest = Path(tmp), Path(dest)
    if not tmp.exists():
        raise FileNotFoundError(errno.ENOENT, "the temporary to commit was never written", str(tmp))
    _fsync_path(tmp)
    if tmp.is_dir() and dest.exists():
        old = temp_path(dest, ".old")
        os.replace(dest, old)
        os.replace(tmp, dest)
        _remove(old)
    else:
        os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    return dest


def discard(tmp: str | Path) -> None:
    """Remove a temporary (file or directory) if it exists."""
    _remove(Path(tmp))


@contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it replaces ``dest``, on error it goes.

    Parameters
    ----------
    dest
        Final file. Its directory is created if missing.
    suffix
        Suffix of the temporary name (for writers that choose the format by extension).

    Raises
    ------
    OutputNotWritableError
        The destination's directory cannot be created or written.
    """
    dest = Path(dest)
    prepare_output(dest)
    tmp = temp_path(dest, suffix)
    try:
        yield tmp
        commit(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a fresh, empty temporary directory that replaces the directory ``dest`` on success.

    On an exception the temporary directory and everything in it is removed and ``dest`` is
    left unchanged.
    """
    dest = Path(dest)
    prepare_output(dest, directory=True)
    tmp = temp_path(dest)
    try:
        tmp.mkdir()
    except PermissionError as err:
        raise _not_writable(dest, err) from None
    try:
        yield tmp
        commit(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(dest: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``dest`` atomically; return ``dest``."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(dest)


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically; return ``dest``."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_update_json(dest: str | Path, entries: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``entries`` into the JSON object in ``dest`` (created if missing), atomically.

    For result files that several steps of a run fill in turn; returns the merged object.
    """
    dest = Path(dest)
    data = json.loads(dest.read_text(encoding="utf-8")) if dest.exists() else {}
    data.update(entries)
    atomic_write_text(dest, json.dumps(data, indent=1, sort_keys=True))
    return data


def remove_stale_temporaries(dest: str | Path) -> list[Path]:
    """Delete the temporaries of ``dest`` left by killed runs on this host; return them.

    A temporary belongs to a dead run if its process id no longer exists on this host; those of
    live runs and of runs on other hosts sharing the file system are left alone.
    """
    dest = Path(dest)
    removed = []
    for tmp in dest.parent.glob(f".{glob.escape(dest.name)}.*{TMP_MARK}*"):
        middle = tmp.name[len(dest.name) + 2 : tmp.name.index(TMP_MARK)]
        host, _, pid = middle.rpartition(".")
        pid = pid.partition("-")[0]  # ``<pid>-<n>``: the n-th temporary of that process
        if host != _HOST or not pid.isdigit() or pid_alive(int(pid)):
            continue
        _remove(tmp)
        removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = [
    "TMP_MARK",
    "atomic_dir",
    "atomic_path",
    "atomic_update_json",
    "atomic_write_bytes",
    "atomic_write_text",
    "commit",
    "discard",
    "prepare_output",
    "remove_stale_temporaries",
    "temp_path",
]
