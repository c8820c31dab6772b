"""The error taxonomy of lhcml, in one place.

Every user-facing error names the bad value and how to fix it. lhcml's own errors derive from
:class:`LhcmlError` and from the builtin a caller would expect (``ValueError`` for bad values,
``OSError`` for files), so that callers who only know the builtins still catch them.

:func:`user_message` is the one map from an exception to the message the command line prints
(``lhcml.cli.main`` exits with status 2 and no traceback for every exception it maps). It covers
lhcml's errors and the builtin ones that bad input raises from libraries (``OSError`` and its
subclasses such as ``PermissionError``, ``UnicodeDecodeError``, pydantic's ``ValidationError``);
anything else is a bug and keeps its traceback. New code therefore cannot leak a traceback for
bad input, as long as it raises one of these.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path


class LhcmlError(Exception):
    """Base class of all lhcml errors."""


class ConfigError(LhcmlError, ValueError):
    """A configuration file or dictionary is invalid (unknown key, bad value, missing key)."""


class SchemaError(LhcmlError, ValueError):
    """A dataset does not have the variables, dtypes or shapes a stage needs."""


class CorruptFileError(LhcmlError, OSError):
    """An input file is truncated, corrupt or not an HDF5/ROOT file, or its data do not decode."""


class FileLockedError(LhcmlError, OSError):
    """An HDF5 file is open for writing in another process (HDF5's file lock is held)."""


class InputNotFoundError(ConfigError, FileNotFoundError):
    """Named input files do not exist (a path, a glob that matches nothing, an empty directory)."""


class OutputNotWritableError(LhcmlError, PermissionError):
    """An output location cannot be written (read-only directory or file system)."""


class CheckpointMismatchError(LhcmlError, ValueError):
    """A model checkpoint was produced with a different configuration."""


class UnsafeCheckpointError(LhcmlError, ValueError):
    """A checkpoint holds pickled Python objects beyond tensors and plain types (never loaded)."""


class StudyFailedError(LhcmlError, RuntimeError):
    """A tuning study ended without any completed trial."""


#: substrings of HDF5's messages when another process holds the file lock
_LOCK_MARKERS = ("unable to lock file", "file is already open for write", "lock file")


def is_lock_error(err: BaseException) -> bool:
    """True if ``err`` is HDF5's refusal to open a file that another process holds open."""
    text = str(err).lower()
    return any(m in text for m in _LOCK_MARKERS) or (
        isinstance(err, BlockingIOError) or getattr(err, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK)
    )


def locked_error(path: str | Path, err: BaseException | None = None) -> FileLockedError:
    """The :class:`FileLockedError` for ``path`` (one wording everywhere)."""
    return FileLockedError(
        f"{path} is locked: another process has it open for writing (a running simulate, "
        "preprocess, predict or copy). Wait until that process has finished, then run again; "
        "the file is not corrupt"
    )


def _name(err: OSError) -> str:
    if err.filename is not None:
        return str(err.filename)
    found = re.search(r"name = '([^']*)'", str(err))  # h5py names the file inside its message
    return found.group(1) if found else ""


def _os_message(err: OSError) -> str:
    """Problem and fix of a builtin ``OSError`` raised by the standard library or h5py."""
    if err.errno is None and err.args and not is_lock_error(err):
        return str(err)  # raised by lhcml with a full message (e.g. FileNotFoundError in open_h5)
    name = _name(err)
    what = f"'{name}'" if name else "a file"
    if isinstance(err, PermissionError):
        return (
            f"permission denied on {what}: make it readable (inputs) or "
            "its directory writable (outputs) for your user, or choose another location"
        )
    if isinstance(err, IsADirectoryError):
        return f"{what} is a directory, not a file: give the path of a file (or a glob such as DIR/*.h5)"
    if isinstance(err, NotADirectoryError):
        return f"{what} is not a directory (a part of the path is a file): check the path"
    if isinstance(err, FileNotFoundError):
        if name:
            return f"{what} does not exist: check the path (relative paths start in the working directory)"
        return str(err)
    if isinstance(err, FileExistsError):
        return str(err) if not name else f"{what} already exists: remove it or choose another name"
    if is_lock_error(err):
        return str(locked_error(name or "the file", err))
    if err.errno == errno.ENOSPC:
        return f"no space left on the device while writing {what}: free space or choose another output location"
    if err.errno == errno.EROFS:
        return f"{what} is on a read-only file system: choose an output location you can write to"
    return (
        f"cannot read or write {what}: {err}. If this is an HDF5 input, `lhcml inspect --check FILE` "
        "tells whether it is intact; re-create or re-copy a damaged file"
    )


def _validation_message(err: BaseException) -> str:
    parts = []
    for e in err.errors():  # type: ignore[attr-defined]
        key = ".".join(str(p) for p in e.get("loc", ())) or "value"
        parts.append(f"bad value for '{key}': {e.get('msg')} (got {e.get('input')!r})")
    return "; ".join(parts) + "; fix the option or config key"


def user_message(err: BaseException) -> str | None:
    """``"Kind: problem; fix"`` for an error caused by input, ``None`` for a bug.

    Parameters
    ----------
    err
        The exception that ended a command.

    Returns
    -------
    str | None
        The one-line message the command line prints (exit status 2), or ``None`` when the
        exception is not caused by the user's input and should keep its traceback.
    """
    if isinstance(err, LhcmlError):
        return f"{type(err).__name__}: {err}"
    if isinstance(err, UnicodeDecodeError):
        return (
            f"{type(err).__name__}: a text input (a config or a list file) is not UTF-8 text "
            f"({err.reason} at byte {err.start}); save it as UTF-8"
        )
    if isinstance(err, OSError):
        return f"{type(err).__name__}: {_os_message(err)}"
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover - pydantic is a core dependency
        ValidationError = ()  # type: ignore[assignment]  # noqa: N806
    if ValidationError and isinstance(err, ValidationError):
        return f"ConfigError: {_validation_message(err)}"
    return None
