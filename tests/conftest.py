"""Shared pytest fixtures."""

from __future__ import annotations

import os

# Tiny models on 2 cores: several intra-op threads per process only add contention
# (tests with multi-threaded torch ran up to 25x slower). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


# --------------------------------------------------------------------------- no silent skips
import pytest  # noqa: E402

#: skips that CI (env ``CI=true``) accepts: node id (or its prefix) -> why the skip is legitimate
#: there. Any other skip fails a CI run: `make test` installs every test dependency and `.ci/run`
#: the services (PostgreSQL, Slurm, Chromium), so a skip in CI means a test silently did not run.
ALLOWED_CI_SKIPS: dict[str, str] = {
    "tests/test_cli_errors.py::test_unreadable_input_and_read_only_output_dir": (
        "as root, permission bits only count after dropping CAP_DAC_OVERRIDE with util-linux's "
        "setpriv; a root CI image without setpriv cannot test them"
    ),
}

_SKIPPED: list[tuple[str, str]] = []


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    why = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return why.removeprefix("Skipped: ")


def _record_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)  # module-level importorskip


def unexpected_skips(skipped: list[tuple[str, str]], allowed: dict[str, str]) -> list[tuple[str, str]]:
    """The skips not covered by an allow-list entry (an entry covers node ids it prefixes)."""
    return [(node, why) for node, why in skipped if not any(node.startswith(k) for k in allowed)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, a skip that is not in :data:`ALLOWED_CI_SKIPS` fails the run (with its reason)."""
    if os.environ.get("CI", "").lower() not in ("true", "1", "yes"):
        return
    bad = unexpected_skips(_SKIPPED, ALLOWED_CI_SKIPS)
    if not bad:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"CI: {len(bad)} unexpected skip(s) (allow-list: tests/conftest.py ALLOWED_CI_SKIPS):"]
    lines += [f"  {node}: {why}" for node, why in bad]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    else:  # pragma: no cover
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
