"""The command line turns user errors into one clear message and exit status 2."""

from __future__ import annotations

import subprocess
import sys

import yaml


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lhcml", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)  # fmt: skip


def test_unknown_config_key_is_one_message_with_a_suggestion(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train_files": ["a.h5"], "val_files": ["b.h5"], "inputs": {"jets": ["pt"]}},
        "model": {"name": "dl1"}, "optimiser": {"lr": 0.1},
    }))  # fmt: skip
    res = _run("train", str(cfg))
    assert res.returncode == 2
    assert "unknown key 'optimiser'" in res.stderr and "did you mean 'optimizer'" in res.stderr
    assert "Traceback" not in res.stderr


def test_corrupt_input_file_is_named(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file at all" * 10)
    res = _run("inspect", str(bad))
    assert res.returncode == 2
    assert "broken.h5" in res.stderr and "Traceback" not in res.stderr


def test_help_lists_every_stage():
    res = _run("--help")
    assert res.returncode == 0
    for cmd in ("simulate", "convert", "preprocess", "train", "predict", "evaluate", "export", "tune"):
        assert cmd in res.stdout
