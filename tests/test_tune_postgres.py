"""The tuning engine on a real PostgreSQL server (started here from Debian's package)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install lhcml[scale]")

sys.path.insert(0, str(Path(__file__).parent))
from tune_objectives import Quadratic  # noqa: E402

from lhcml.tune.space import SearchSpace  # noqa: E402
from lhcml.tune.storage import make_storage  # noqa: E402
from lhcml.tune.study import n_finished, run_study  # noqa: E402


def _pg_bin() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "initdb").exists() and (root / "pg_ctl").exists():
            return root
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; .ci/run does this)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the package's postgres account
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        as_user = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="lhcml-pg-"))
    os.chmod(tmp, 0o777)
    data, port = tmp / "data", _free_port()
    if as_user:
        shutil.chown(tmp, "postgres")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "lhcml", "--auth=trust")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start")
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lhcml", "optuna")
    except subprocess.CalledProcessError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {err.stderr.strip()[:300]}")
    # the documented form (no driver named): lhcml picks its driver (psycopg2)
    yield f"postgresql://lhcml@127.0.0.1:{port}/optuna"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)


def test_study_in_postgres_two_workers_and_resume(postgres_url):
    space = SearchSpace.model_validate(
        {
            "study_name": "pg_quad",
            "n_trials": 8,
            "seed": 5,
            "pruner": "none",
            "parameters": {"x": {"type": "float", "low": -5, "high": 5}, "y": {"type": "float", "low": -5, "high": 5}},
        }
    )
    study = run_study(space, postgres_url, Quadratic(), workers=2, progress=False)
    assert 8 <= n_finished(study) <= 9
    assert {t.user_attrs["lhcml_worker"] for t in study.trials} == {0, 1}
    # the study lives in the database: a new process sees it and extends it
    loaded = optuna.load_study(study_name="pg_quad", storage=make_storage(postgres_url))
    assert len(loaded.trials) == len(study.trials)
    more = run_study(space.model_copy(update={"n_trials": 11}), postgres_url, Quadratic(), progress=False)
    assert n_finished(more) >= 11
    assert more.best_value <= study.best_value


def test_postgres_keeps_a_live_workers_long_trial(postgres_url, tmp_path):
    from test_tune_engine import check_slow_trial_survived, run_slow_trial_while_another_worker_dies

    check_slow_trial_survived(run_slow_trial_while_another_worker_dies(postgres_url, tmp_path))
