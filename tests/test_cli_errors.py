"""Bad input ends in one message naming the problem and the fix, exit status 2, no traceback and no
partial output (issue 11, "Errors"). Most cases run ``lhcml.cli.main`` in this process (the same
handler as the console script); a few run the real command in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml
from _train_mock import make_training_file

from lhcml.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd=None, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "lhcml", *args], capture_output=True,
                          text=True, timeout=180, cwd=cwd)  # fmt: skip


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """``lhcml ARGS`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    if err.startswith("lhcml:"):  # lhcml's handler: one line
        assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    else:  # click's own usage errors (options, unreadable path arguments): its one error box
        assert "Usage: lhcml" in err and err.count("Error") == 1, err
    for n in needles:
        assert n in err, (n, err)


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DL1 checkpoint and a file to predict (trained once for the module)."""
    import torch

    torch.set_num_threads(1)
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train

    d = tmp_path_factory.mktemp("trained")
    tr = make_training_file(d / "train.h5", n_jets=300, seed=1)
    va = make_training_file(d / "val.h5", n_jets=200, seed=2)
    cfg = load_train_config(ROOT / "configs/ftag/dl1.yaml", [
        f"data.train_files=[{tr}]", f"data.val_files=[{va}]", "data.norm_dict=null", "data.batch_size=100",
        "model.hidden=[8]", "trainer.max_epochs=1", "trainer.patience=null", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", f"output_dir={d / 'run'}",
    ])  # fmt: skip
    ckpt = train(cfg)
    return {"ckpt": ckpt, "dir": d, "val": va}


def _corrupt_chunk(src: Path, dst: Path, dataset: str = "jets", chunk: int = 1) -> Path:
    """Copy ``src`` and overwrite one stored chunk of ``dataset`` with bytes that do not decode."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r") as f:
        d = f[dataset]
        assert d.compression is not None and d.id.get_num_chunks() > chunk
        info = d.id.get_chunk_info(chunk)
    with open(dst, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    return dst


# --------------------------------------------------------------------------- first checks
def test_unknown_config_key_is_one_message_with_a_suggestion(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train_files": ["a.h5"], "val_files": ["b.h5"], "inputs": {"jets": ["pt"]}},
        "model": {"name": "dl1"}, "optimiser": {"lr": 0.1},
    }))  # fmt: skip
    res = _run("train", str(cfg))
    _user_error(res.returncode, res.stderr, "unknown key 'optimiser'", "did you mean 'optimizer'")


def test_corrupt_input_file_is_named(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file at all" * 10)
    res = _run("inspect", str(bad))
    _user_error(res.returncode, res.stderr, "broken.h5")


def test_help_lists_every_stage():
    res = _run("--help")
    assert res.returncode == 0
    for cmd in ("simulate", "convert", "preprocess", "train", "predict", "evaluate", "export", "tune"):
        assert cmd in res.stdout


# ------------------------------------------------------------------ files that cannot be read
def test_undecodable_chunk_in_predict_and_preprocess(trained, tmp_path, capsys):
    big = make_training_file(tmp_path / "big.h5", n_jets=3000, seed=5)
    (tmp_path / "in").mkdir()
    bad = _corrupt_chunk(big, tmp_path / "in" / "bad.h5")
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "predict", str(trained["ckpt"]), str(bad), "-o", str(out))
    _user_error(code, err, "CorruptFileError", str(bad), "'jets'", "cannot be read", "re-create")
    assert not out.exists() or not any(out.iterdir())  # no partial output
    # `inspect --check` and `predict` report the same file the same way
    code, _, err = _cli(capsys, "inspect", "--check", str(bad))
    _user_error(code, err, "CorruptFileError", "cannot be read")
    # preprocessing reads the same chunks
    cfg = yaml.safe_load((ROOT / "configs/ftag/preprocess_tiny.yaml").read_text())
    cfg["samples"]["ttbar"]["inputs"] = [str(bad)]
    cfg["output_dir"] = str(tmp_path / "pre")
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = _cli(capsys, "preprocess", str(tmp_path / "pre.yaml"))
    _user_error(code, err, "CorruptFileError", str(bad), "cannot be read")
    assert not list((tmp_path / "pre").glob("*.h5"))


def test_file_held_open_by_a_writer_is_locked_not_corrupt(trained, tmp_path, capsys):
    path = tmp_path / "busy.h5"
    shutil.copy(trained["val"], path)
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import h5py, pathlib, time, sys\n"
        f"f = h5py.File({str(path)!r}, 'a')\n"
        f"pathlib.Path({str(ready)!r}).write_text('1')\n"
        "time.sleep(120)\n"
    )])  # fmt: skip
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        code, _, err = _cli(capsys, "inspect", str(path))
        _user_error(code, err, "FileLockedError", "locked", str(path), "another process")
        assert "corrupt," not in err
        code, _, err = _cli(capsys, "predict", str(trained["ckpt"]), str(path), "-o", str(tmp_path / "o"))
        _user_error(code, err, "locked")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def _unprivileged() -> list[str]:
    """A command prefix that makes permission bits count (root reads everything otherwise)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def test_unreadable_input_and_read_only_output_dir(trained, tmp_path):
    prefix = _unprivileged()
    locked = tmp_path / "secret.h5"
    shutil.copy(trained["val"], locked)
    locked.chmod(0)
    res = _run("predict", str(trained["ckpt"]), str(locked), "-o", str(tmp_path / "o"), prefix=prefix)
    # click checks path arguments first; lhcml's open_h5 says the same for paths it is given otherwise
    _user_error(res.returncode, " ".join(res.stderr.replace("│", " ").split()), "secret.h5", "not readable")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        res = _run("predict", str(trained["ckpt"]), str(trained["val"]), "-o", str(readonly), prefix=prefix)
        # lhcml.atomic checks the output directory before writing
        _user_error(res.returncode, res.stderr, "OutputNotWritableError", "not writable", str(readonly))
        assert not list(readonly.iterdir())
    finally:
        readonly.chmod(0o755)


def test_directory_named_like_a_file(trained, tmp_path, capsys):
    fake = tmp_path / "x.h5"
    fake.mkdir()
    for args in (("inspect", str(fake)), ("predict", str(trained["ckpt"]), str(fake), "-o", str(tmp_path / "o"))):
        code, _, err = _cli(capsys, *args)
        _user_error(code, err, "x.h5", "is a directory")
        assert "does not exist" not in err and "corrupt" not in err


def test_pickle_bomb_checkpoint_is_refused_without_unsafe_advice(trained, tmp_path, capsys):
    import torch

    marker = tmp_path / "payload_ran"

    class Bomb:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bomb = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "lhcml": Bomb()}, bomb)
    code, _, err = _cli(capsys, "predict", str(bomb), str(trained["val"]), "-o", str(tmp_path / "o"))
    _user_error(code, err, "UnsafeCheckpointError", "model.ckpt", "posix.system")
    assert "weights_only" not in err and "trusted source" not in err
    assert not marker.exists()


# ------------------------------------------------------------------------ configs and options
def test_non_utf8_config(tmp_path, capsys):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("output_dir: runs/r\u00e9sum\u00e9\n".encode("latin-1"))
    code, _, err = _cli(capsys, "train", str(cfg))
    _user_error(code, err, "latin1.yaml", "not UTF-8", "save it as UTF-8")


def test_train_devices_zero(trained, tmp_path, capsys):
    cfg = trained["dir"] / "run" / "config.yaml"
    code, _, err = _cli(capsys, "train", str(cfg), "--devices", "0", "--set", f"output_dir={tmp_path / 'r'}")
    _user_error(code, err, "ConfigError", "devices", "--devices 0", "greater than or equal to 1")
    assert not (tmp_path / "r").exists()


def test_predict_refuses_two_inputs_with_the_same_name(trained, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(trained["val"], a / "test.h5")
    shutil.copy(trained["val"], b / "test.h5")
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "predict", str(trained["ckpt"]), str(a / "test.h5"), str(b / "test.h5"), "-o", str(out))
    _user_error(code, err, "same file name", str(a / "test.h5"), str(b / "test.h5"))
    assert not out.exists() or not any(out.iterdir())


def test_predict_error_in_a_later_file_leaves_no_output(trained, tmp_path, capsys):
    good = tmp_path / "good.h5"
    shutil.copy(trained["val"], good)
    bad = _corrupt_chunk(make_training_file(tmp_path / "big.h5", n_jets=3000, seed=6), tmp_path / "bad.h5")
    before = good.read_bytes()
    code, _, err = _cli(capsys, "predict", str(trained["ckpt"]), str(good), str(bad))  # in place
    _user_error(code, err, "bad.h5")
    assert good.read_bytes() == before  # the first file was not rewritten either
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_killed_in_place_predict_leaves_no_temporary_behind(trained, tmp_path, capsys):
    target = tmp_path / "test.h5"
    shutil.copy(trained["val"], target)
    # a predict run killed while writing: its hidden copy carries this host and its (dead) pid
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".test.h5.{socket.gethostname()}.{dead.pid}.lhcml-tmp"
    stale.write_bytes(b"partial")
    alive = tmp_path / f".test.h5.{socket.gethostname()}.{os.getppid()}.lhcml-tmp"  # a live run
    alive.write_bytes(b"in progress")
    code, out, err = _cli(capsys, "predict", str(trained["ckpt"]), str(target))
    assert code == 0, err
    assert not stale.exists() and alive.exists()
    with h5py.File(target) as f:
        assert "dl1_pb" in f["jets"].dtype.names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, alive.name])


def test_mu_nan_is_refused_before_any_output(tmp_path, capsys):
    out = tmp_path / "sim"
    for bad in ("nan", "inf"):
        code, _, err = _cli(capsys, "simulate", "ttbar", "--events", "10", "--mu", bad, "-o", str(out), "--quiet")
        _user_error(code, err, "--mu must be a finite number")
        assert not (out / "manifest.yaml").exists()


# ----------------------------------------------------------------------------------- tuning
def _tune_files(tmp_path: Path, cfg_delta: dict, parameters: dict) -> tuple[Path, Path]:
    cfg = {
        "base": str(ROOT / "configs/ftag/dl1.yaml"),
        "data": {"train_files": [str(tmp_path / "missing_train.h5")], "val_files": [str(tmp_path / "missing_val.h5")],
                 "norm_dict": None, "batch_size": 100},
        "model": {"name": "dl1", "hidden": [8]},
        "trainer": {"max_epochs": 1, "patience": None, "accelerator": "cpu"},
        **cfg_delta,
    }  # fmt: skip
    space = {"study_name": "s", "sampler": "random", "pruner": "none", "n_trials": 2, "seed": 1,
             "objectives": [{"metric": "val_loss", "direction": "minimize"}], "parameters": parameters}  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    return tmp_path / "cfg.yaml", tmp_path / "space.yaml"


def test_tune_space_naming_an_unknown_parameter_is_refused_at_load(tmp_path, capsys):
    cfg, space = _tune_files(tmp_path, {}, {"optimizer.lrate": {"type": "float", "low": 1e-4, "high": 1e-2}})
    code, _, err = _cli(capsys, "tune", str(cfg), "--space", str(space), "-o", str(tmp_path / "study"))
    _user_error(code, err, "ConfigError", "unknown key 'optimizer.lrate'", "valid keys: lr")
    assert not (tmp_path / "study").exists()  # refused before any trial (or journal) was made
    cfg, space = _tune_files(tmp_path, {}, {"model.hiden": {"type": "categorical", "choices": [[8], [16]]}})
    code, _, err = _cli(capsys, "tune", str(cfg), "--space", str(space), "-o", str(tmp_path / "study"))
    _user_error(code, err, "model.hiden", "did you mean 'hidden'")


def test_study_where_every_trial_fails_exits_non_zero_without_a_best_config(tmp_path):
    pytest.importorskip("optuna")
    cfg, space = _tune_files(tmp_path, {}, {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2}})
    res = _run("tune", str(cfg), "--space", str(space), "-o", str(tmp_path / "study"))
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    # one line per failed trial while the study runs (next to the progress bar), then the error
    assert "lhcml tune: trial 0 failed: FileNotFoundError" in res.stderr
    assert "Warning" not in res.stderr, res.stderr
    _user_error(res.returncode, lines[-1] + "\n", "StudyFailedError", "no trial of the study completed",
                "missing_train.h5")  # fmt: skip
    assert "best config" not in res.stdout
    assert not (tmp_path / "study" / "best_config.yaml").exists()
    assert (tmp_path / "study" / "trials.json").exists()  # the record of what failed is kept


def test_documented_postgresql_url_uses_the_installed_driver():
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install lhcml[scale]")
    import sqlalchemy

    from lhcml.tune.storage import resolve_storage_url

    url = resolve_storage_url("postgresql://user@db.example:5432/optuna", ".")
    # the URL resolves to a dialect whose driver imports (SQLAlchemy >= 2.1 alone picks psycopg 3)
    engine = sqlalchemy.create_engine(url)
    assert engine.dialect.driver == "psycopg2"
    assert resolve_storage_url("postgres://u@h/db", ".").startswith("postgresql+psycopg2://")
    assert resolve_storage_url("postgresql+psycopg://u@h/db", ".") == "postgresql+psycopg://u@h/db"


def test_user_message_maps_library_errors():
    """The taxonomy: builtin errors caused by input get a message, bugs keep their traceback."""
    from pydantic import BaseModel, Field

    from lhcml.errors import CorruptFileError, user_message

    class M(BaseModel):
        n: int = Field(ge=1)

    try:
        M(n=0)
    except Exception as err:  # noqa: BLE001
        assert "greater than or equal to 1" in user_message(err)
    assert "permission denied" in user_message(PermissionError(13, "Permission denied", "/x/y.h5"))
    assert "is a directory" in user_message(IsADirectoryError(21, "Is a directory", "/x/y.h5"))
    assert "UTF-8" in user_message(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert "locked" in user_message(OSError("Unable to open file (unable to lock file, errno = 11)"))
    assert user_message(CorruptFileError("x")).startswith("CorruptFileError: x")
    assert user_message(KeyError("bug")) is None and user_message(TypeError("bug")) is None
