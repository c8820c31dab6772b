"""One helper per job (issue 11): the copies that once existed cannot come back.

An :mod:`ast` scan of every module of ``src/lhcml`` fails when a module does itself what one
helper does for everyone:

- **atomic writes** — renaming a temporary onto the destination (``os.replace``, ``os.rename``,
  ``shutil.move``, ``Path.rename``, ``Path.replace``) only in :mod:`lhcml.atomic`;
- **input globbing** — ``glob.glob`` / ``glob.iglob`` only in :mod:`lhcml.data.files`
  (``Path.glob`` listings of a run's own outputs are fine);
- **flat-file reading** — ``h5py.File(..., "r")`` only in :mod:`lhcml.data.checks` (``open_h5``,
  re-exported by :mod:`lhcml.data.h5`), except files that are not flat files (:data:`H5_READ_OK`);
- **value ± error** — an f-string that puts ``±`` between two formatted values only in
  :mod:`lhcml.formatting` (``pm``), except the places in :data:`PM_OK`, which print something else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lhcml"

ATOMIC = "atomic.py"
GLOB = "data/files.py"
H5_READER = "data/checks.py"
FORMATTER = "formatting.py"
#: modules that read an HDF5 file that is not a flat file, with the reason
H5_READ_OK = {"sim/pileup.py": "the pileup library has its own layout and error messages"}
#: modules with a "±" between formatted values that is not a value and its error
PM_OK = {
    "validation/table.py": "a reference value and its tolerance, printed as the reference table gives them"
}


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        out.append((rel, ast.parse(p.read_text(encoding="utf-8"), filename=str(p))))
    assert len(out) > 50, "the scan found too few modules: wrong source root?"
    return out


MODULES = _modules()


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _calls(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _renames(tree: ast.Module) -> list[int]:
    lines = []
    for call in _calls(tree):
        name = _dotted(call.func)
        if name in ("os.replace", "os.rename", "shutil.move"):
            lines.append(call.lineno)
        elif isinstance(call.func, ast.Attribute) and call.func.attr == "rename":
            lines.append(call.lineno)  # Path.rename
        elif (
            isinstance(call.func, ast.Attribute)
            and call.func.attr == "replace"
            and len(call.args) == 1
            and not call.keywords
        ):  # Path.replace(target); str.replace takes two arguments
            lines.append(call.lineno)
    return lines


def _globs(tree: ast.Module) -> list[int]:
    return [
        c.lineno
        for c in _calls(tree)
        if _dotted(c.func) in ("glob.glob", "glob.iglob", "_glob.glob")
    ]


def _h5_reads(tree: ast.Module) -> list[int]:
    lines = []
    for call in _calls(tree):
        if _dotted(call.func) != "h5py.File":
            continue
        mode = (
            call.args[1]
            if len(call.args) > 1
            else next((k.value for k in call.keywords if k.arg == "mode"), None)
        )
        if mode is None or (isinstance(mode, ast.Constant) and mode.value == "r"):
            lines.append(call.lineno)
    return lines


def _pm(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.JoinedStr):
            continue
        parts = node.values
        for i, part in enumerate(parts[1:-1], start=1):
            if (
                isinstance(part, ast.Constant)
                and "±" in str(part.value)
                and isinstance(parts[i - 1], ast.FormattedValue)
                and isinstance(parts[i + 1], ast.FormattedValue)
            ):
                lines.append(node.lineno)
    return lines


def _offenders(scan, allowed: set[str]) -> list[str]:
    return [
        f"src/lhcml/{rel}:{line}"
        for rel, tree in MODULES
        if rel not in allowed
        for line in scan(tree)
    ]


@pytest.mark.parametrize(
    ("scan", "allowed", "helper"),
    [
        (_renames, {ATOMIC}, "lhcml.atomic (atomic_path, atomic_write_text, atomic_dir, commit)"),
        (_globs, {GLOB}, "lhcml.data.files.expand_inputs"),
        (_h5_reads, {H5_READER, *H5_READ_OK}, "lhcml.data.h5.open_h5 / H5Reader"),
        (_pm, {FORMATTER, *PM_OK}, "lhcml.formatting.pm"),
    ],
    ids=["atomic-rename", "glob", "h5-read", "value-pm-error"],
)
def test_no_copies_of_a_helper(scan, allowed, helper):
    bad = _offenders(scan, allowed)
    assert not bad, f"use {helper} instead of a local copy: {', '.join(bad)}"


def test_the_scans_find_what_they_look_for():
    """Each scan flags a copy written the way the old ones were (the test can fail)."""
    copy = ast.parse(
        "import glob, os, h5py\n"
        "tmp.write_text(t)\nos.replace(tmp, path)\ntmp.replace(path)\n"
        "files = glob.glob(p)\n"
        "f = h5py.File(p, 'r')\ng = h5py.File(p)\n"
        "s = f'{v:.2f} ± {e:.2f}'\n"
        "ok = 'a'.replace('a', 'b'); w = h5py.File(p, 'w'); n = f'±{k}σ'\n"
    )
    assert _renames(copy) == [3, 4]
    assert _globs(copy) == [5]
    assert _h5_reads(copy) == [6, 7]
    assert _pm(copy) == [8]


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_benchmarks_are_clients_of_lhcml():
    """A benchmark script imports lhcml, never another script (``sys.path`` tricks included),
    and writes atomically through lhcml.atomic like the library does (STYLE 19)."""
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    bad = []
    for p in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            bad += [
                f"{p.name}:{node.lineno} imports {n}"
                for n in names
                if n in scripts or n == "benchmarks"
            ]
        for call in _calls(tree):
            name = _dotted(call.func)
            if name in ("sys.path.insert", "sys.path.append"):
                bad.append(f"{p.name}:{call.lineno} changes sys.path")
        bad += [
            f"{p.name}:{c.lineno} renames a temporary itself (use lhcml.atomic)"
            for c in _calls(tree)
            if _dotted(c.func) in ("os.replace", "os.rename")
        ]  # (Path.replace of a finished file to its final name, a move, is fine in a script)
    assert not bad, "; ".join(bad)
