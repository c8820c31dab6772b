"""lhcml.data.files.expand_inputs: ~, globs, directories, order, duplicates, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lhcml.data.files import expand_inputs
from lhcml.errors import ConfigError, InputNotFoundError, user_message


@pytest.fixture
def tree(tmp_path):
    for name in ("b_0001.h5", "b_0000.h5", "a.h5", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.h5").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "run.h5").mkdir()  # a directory named like a file
    return tmp_path


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_glob_sorted_and_pattern_order_kept(tree):
    got = expand_inputs([str(tree / "b_*.h5"), str(tree / "a.h5")])
    assert _names(got) == ["b_0000.h5", "b_0001.h5", "a.h5"]
    # the directory 'run.h5' matches the glob but is not a file
    assert _names(expand_inputs(str(tree / "*.h5"))) == ["a.h5", "b_0000.h5", "b_0001.h5"]
    assert _names(expand_inputs(str(tree / "**" / "*.h5"))) == [
        "a.h5",
        "b_0000.h5",
        "b_0001.h5",
        "c.h5",
    ]


def test_duplicates_removed_first_kept(tree):
    got = expand_inputs([tree / "a.h5", str(tree / "*.h5"), str(tree / "." / "a.h5")])
    assert _names(got) == ["a.h5", "b_0000.h5", "b_0001.h5"]


def test_directory_stands_for_its_h5_files(tree):
    assert _names(expand_inputs(tree)) == ["a.h5", "b_0000.h5", "b_0001.h5"]
    assert _names(expand_inputs(tree, dir_glob="*.txt")) == ["notes.txt"]


def test_home_is_expanded(tree, monkeypatch):
    monkeypatch.setenv("HOME", str(tree))
    assert expand_inputs("~/a.h5") == [tree / "a.h5"]
    assert _names(expand_inputs("~/b_*.h5")) == ["b_0000.h5", "b_0001.h5"]


def test_errors_name_the_problem(tree):
    with pytest.raises(InputNotFoundError, match=r"no file matches '.*nope\*\.h5' in the config"):
        expand_inputs([str(tree / "a.h5"), str(tree / "nope*.h5")], context="in the config")
    with pytest.raises(InputNotFoundError, match="does not exist"):
        expand_inputs(tree / "missing.h5")
    assert expand_inputs(tree / "missing.h5", must_exist=False) == [tree / "missing.h5"]
    with pytest.raises(InputNotFoundError, match="has no \\*.h5 files"):
        expand_inputs(tree / "empty")
    with pytest.raises(InputNotFoundError, match="is a directory, not a file.*run.h5/\\*.h5"):
        expand_inputs(tree / "run.h5")
    with pytest.raises(InputNotFoundError, match="is a directory"):
        expand_inputs(tree / "sub", dir_glob=None)
    with pytest.raises(InputNotFoundError, match="no input files given"):
        expand_inputs([])


def test_error_is_a_config_and_file_error_with_one_line_message(tree):
    with pytest.raises(InputNotFoundError) as exc:
        expand_inputs(str(tree / "x*.h5"))
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, FileNotFoundError)
    msg = user_message(exc.value)
    assert msg.startswith("InputNotFoundError: no file matches") and "\n" not in msg
