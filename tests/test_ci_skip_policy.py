"""CI fails on a skip that is not in the allow-list of tests/conftest.py (no silent skips)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import conftest

TESTS = Path(__file__).resolve().parent


def test_allow_list_entries_cover_node_id_prefixes():
    skipped = [("tests/a.py::test_x", "no server"), ("tests/b.py::test_y[1]", "no driver")]
    allowed = {"tests/a.py::test_x": "why"}
    assert conftest.unexpected_skips(skipped, allowed) == [("tests/b.py::test_y[1]", "no driver")]
    assert all(why.strip() for why in conftest.ALLOWED_CI_SKIPS.values())  # every entry says why


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('lhcml_tests_conftest', {str(TESTS / 'conftest.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "pytest_runtest_logreport = mod.pytest_runtest_logreport\n"
        "pytest_collectreport = mod.pytest_collectreport\n"
        "pytest_sessionfinish = mod.pytest_sessionfinish\n"
    )
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "def test_runs():\n    assert 1 + 1 == 2\n"
        "def test_needs_a_server():\n    pytest.skip('no server here')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_unexpected_skip_fails_ci_and_is_printed(tmp_path):
    local = _run(tmp_path, None)
    assert local.returncode == 0, local.stdout
    assert "SKIPPED" in local.stdout and "no server here" in local.stdout  # -ra prints the reason
    ci = _run(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout
    assert "unexpected skip" in ci.stdout and "test_needs_a_server: no server here" in ci.stdout
