"""lhcml.atomic: no partial file and no temporary after a crash; success replaces; directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lhcml import atomic
from lhcml.errors import LhcmlError, OutputNotWritableError, user_message


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_crash_inside_block_leaves_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_path(dest) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert _listing(tmp_path) == ["out.txt"]


def test_crash_without_previous_file_leaves_nothing(tmp_path):
    dest = tmp_path / "sub" / "out.h5"
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(dest) as tmp:
            tmp.write_bytes(b"\x89HDF")
            raise KeyboardInterrupt
    assert _listing(tmp_path / "sub") == []


def test_success_replaces_and_temporary_is_hidden_next_to_dest(tmp_path):
    dest = tmp_path / "model.json"
    dest.write_text("old")
    with atomic.atomic_path(dest, suffix=".json") as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(".model.json.")
        assert tmp.name.endswith(".json") and atomic.TMP_MARK in tmp.name
        tmp.write_text("new")
        assert dest.read_text() == "old"  # not visible before the block ends
    assert dest.read_text() == "new"
    assert _listing(tmp_path) == ["model.json"]


def test_block_that_writes_nothing_is_an_error_and_keeps_dest(tmp_path):
    dest = tmp_path / "a.txt"
    dest.write_text("old")
    with pytest.raises(FileNotFoundError, match="never written"):
        with atomic.atomic_path(dest):
            pass
    assert dest.read_text() == "old"


def test_write_text_and_bytes(tmp_path):
    assert atomic.atomic_write_text(tmp_path / "x" / "a.yaml", "k: 1\n").read_text() == "k: 1\n"
    assert atomic.atomic_write_bytes(tmp_path / "b.bin", b"\0\1").read_bytes() == b"\0\1"
    assert _listing(tmp_path) == ["b.bin", "x"]


def test_temporaries_are_unique_within_a_process(tmp_path):
    names = {atomic.temp_path(tmp_path / "f.h5") for _ in range(5)}
    assert len(names) == 5


def test_directory_replace_and_crash(tmp_path):
    dest = tmp_path / "plots"
    dest.mkdir()
    (dest / "old.png").write_bytes(b"old")
    with atomic.atomic_dir(dest) as tmp:
        (tmp / "pt.png").write_bytes(b"new")
        assert (dest / "old.png").exists()
    assert _listing(dest) == ["pt.png"]
    assert _listing(tmp_path) == ["plots"]
    with pytest.raises(ValueError):
        with atomic.atomic_dir(dest) as tmp:
            (tmp / "eta.png").write_bytes(b"half")
            raise ValueError("plotting failed")
    assert _listing(dest) == ["pt.png"]
    assert _listing(tmp_path) == ["plots"]


def test_directory_new(tmp_path):
    with atomic.atomic_dir(tmp_path / "new" / "d") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "new" / "d" / "f").read_text() == "x"


def test_file_dest_that_is_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        with atomic.atomic_path(tmp_path / "d"):
            pass
    assert "is a directory" in user_message(IsADirectoryError(21, "x", str(tmp_path / "d")))


def test_read_only_directory_gives_lhcml_error(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: emulate what access(2) answers a user
        real = os.access
        monkeypatch.setattr(
            atomic.os, "access", lambda p, m: False if Path(p) == ro else real(p, m)
        )
    try:
        with pytest.raises(OutputNotWritableError, match="not writable") as exc:
            with atomic.atomic_path(ro / "out.h5") as tmp:
                tmp.write_text("x")
        assert isinstance(exc.value, LhcmlError) and isinstance(exc.value, PermissionError)
        assert str(ro) in str(exc.value) and "choose another output location" in str(exc.value)
        assert user_message(exc.value).startswith("OutputNotWritableError: cannot write")
        with pytest.raises(OutputNotWritableError):  # directories too
            with atomic.atomic_dir(ro / "d"):
                pass
    finally:
        ro.chmod(0o755)
    assert _listing(ro) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dest = tmp_path / "f.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    host = atomic._HOST
    stale = tmp_path / f".f.h5.{host}.{dead}{atomic.TMP_MARK}"
    stale2 = tmp_path / f".f.h5.{host}.{dead}-3{atomic.TMP_MARK}.json"
    live = tmp_path / f".f.h5.{host}.{os.getpid()}{atomic.TMP_MARK}"
    other = tmp_path / f".f.h5.otherhost.{dead}{atomic.TMP_MARK}"
    for p in (stale, stale2, live, other):
        p.write_text("x")
    assert sorted(atomic.remove_stale_temporaries(dest)) == sorted([stale, stale2])
    assert live.exists() and other.exists()


def test_update_json_merges(tmp_path):
    dest = tmp_path / "r" / "timings.json"
    assert atomic.atomic_update_json(dest, {"a": 1}) == {"a": 1}
    assert atomic.atomic_update_json(dest, {"b": {"c": 2}, "a": 3}) == {"a": 3, "b": {"c": 2}}
    assert json.loads(dest.read_text()) == {"a": 3, "b": {"c": 2}}
    assert _listing(dest.parent) == ["timings.json"]
