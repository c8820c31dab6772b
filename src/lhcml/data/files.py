"""Input paths: the one function that turns what a user names (paths, globs, directories) into files.

Every reader and command that takes input files calls :func:`expand_inputs`, so ``~``, glob
patterns (``sim/ttbar_*.h5``, ``runs/**/test_*.h5``) and directories mean the same everywhere,
and a pattern that matches nothing is the same clear error everywhere.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from lhcml.errors import InputNotFoundError

#: characters that make an input a glob pattern (as :mod:`glob` reads them)
GLOB_CHARS = "*?["


def is_pattern(path: str | Path) -> bool:
    """True if ``path`` contains glob characters."""
    return any(c in str(path) for c in GLOB_CHARS)


def expand_inputs(
    patterns: str | Path | Iterable[str | Path],
    *,
    dir_glob: str | None = "*.h5",
    context: str = "",
    must_exist: bool = True,
) -> list[Path]:
    """The files named by ``patterns``: ``~`` expanded, globs matched, directories listed.

    Parameters
    ----------
    patterns
        One path or pattern, or several. Each may be a file, a glob pattern (``**`` recurses),
        or a directory (which stands for its files matching ``dir_glob``).
    dir_glob
        The files a directory stands for; ``None``: directories are refused.
    context
        Where the patterns come from, for the error message (e.g. ``"of sample 'ttbar' in the
        preprocessing config"``).
    must_exist
        Refuse a plain path (no glob characters) that does not exist. ``False`` passes it on,
        for callers that give their own message when they open it.

    Returns
    -------
    list[Path]
        The files, each pattern's matches sorted, in the order of the patterns, without
        duplicates (the first occurrence of a file is kept).

    Raises
    ------
    InputNotFoundError
        No pattern given; a pattern matches no file; a path does not exist; a directory holds no
        ``dir_glob`` file; or a directory is named where a file is expected (``dir_glob=None``,
        or a directory named like a file, e.g. ``out.h5/``).
    """
    items = [patterns] if isinstance(patterns, (str, Path)) else list(patterns)
    where = f" {context}" if context else ""
    if not items:
        raise InputNotFoundError(f"no input files given{where}: name at least one file, glob or directory")
    out: list[Path] = []
    for item in items:
        raw = str(item)
        path = os.path.expanduser(raw)
        if is_pattern(path):
            hits = [Path(h) for h in sorted(glob.glob(path, recursive=True)) if not os.path.isdir(h)]
            if not hits:
                raise InputNotFoundError(
                    f"no file matches '{raw}'{where}: check the path and the pattern (relative paths "
                    "start in the working directory)"
                )
        elif os.path.isdir(path):
            hits = _directory(Path(path), raw, dir_glob, where)
        else:
            if must_exist and not os.path.exists(path):
                raise InputNotFoundError(
                    f"input '{raw}'{where} does not exist: check the path (relative paths start in the "
                    "working directory)"
                )
            hits = [Path(path)]
        out.extend(hits)
    return _unique(out)


def _directory(path: Path, raw: str, dir_glob: str | None, where: str) -> list[Path]:
    suffix = Path(dir_glob).suffix if dir_glob else ""
    if dir_glob is None or (path.suffix and path.suffix == suffix):
        raise InputNotFoundError(
            f"'{raw}'{where} is a directory, not a file: give a file, or a glob such as "
            f"'{raw.rstrip('/')}/*{suffix or '.h5'}'"
        )
    hits = sorted(p for p in path.glob(dir_glob) if p.is_file())
    if not hits:
        raise InputNotFoundError(f"directory '{raw}'{where} has no {dir_glob} files: check the path")
    return hits


def _unique(paths: list[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


__all__ = ["GLOB_CHARS", "expand_inputs", "is_pattern"]
