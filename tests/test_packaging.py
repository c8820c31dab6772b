"""The built wheel carries the shipped configs and every YAML/HTML data file, and an installation
outside the repository finds them (``lhcml demo`` needs nothing from a source checkout)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` on a copy of the sources (no build/ or
    egg-info left in the working tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    shutil.copytree(ROOT / "configs", src / "configs", ignore=ignore)
    shutil.copytree(ROOT / "models", src / "models", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (whl,) = out.glob("lhcml-*.whl")
    return whl


def test_wheel_has_configs_and_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert len(shipped) > 30
    missing = [c for c in shipped if f"lhcml/configs/{c}" not in names]
    assert not missing, f"configs missing from the wheel: {missing}"
    # the ACTS chain's geometry selections / digitisation, named by the tracking configs
    acts = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.json"))
    assert "tracking/seeding-generic.json" in acts and "tracking/digi-generic.json" in acts
    assert not [c for c in acts if f"lhcml/configs/{c}" not in names], "ACTS data files missing from the wheel"
    data = sorted(p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "lhcml").rglob("*")
                  if p.suffix in (".yaml", ".html") and "__pycache__" not in p.parts)  # fmt: skip
    assert "lhcml/labels.yaml" in data and "lhcml/sim/detector_params.yaml" in data
    assert not [d for d in data if d not in names], "package data missing from the wheel"
    assert "lhcml/cluster.py" in names and "lhcml/sim/cluster.py" not in names
    models = sorted(p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models").rglob("*.ckpt"))
    assert "tracking/seed_filter.ckpt" in models
    assert not [m for m in models if f"lhcml/shipped_models/{m}" not in names], "trained models missing from the wheel"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "lhcml = lhcml.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_outside_the_repository_finds_its_configs(wheel, tmp_path):
    """A fresh venv (dependencies borrowed from this one), the wheel installed, run from /tmp."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    # dependencies from the test environment, appended after the venv's own site-packages (so the
    # wheel's lhcml wins; the .pth files there, e.g. the editable lhcml, are not processed)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                          str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import lhcml, lhcml.config as c\n"
        "from lhcml.train.config import load_train_config\n"
        "p = c.shipped_config('ftag/gn.yaml')\n"
        "cfg = load_train_config(p)\n"  # its base: chain resolves inside the package too
        "print(lhcml.__file__); print(p); print(cfg.model.name)\n"
    )
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    mod, cfg_path, model = res.stdout.split()[-3:]
    assert mod.startswith(str(site)) and cfg_path.startswith(str(site / "lhcml" / "configs"))
    assert model == "gn"
    res = subprocess.run([str(venv / "bin" / "lhcml"), "demo", "--help"], capture_output=True, text=True,
                         cwd=work, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0 and "--events" in res.stdout, res.stderr[-2000:]
    res = subprocess.run([str(py), "-c", "from lhcml.config import shipped_config; shipped_config('ftag/nope.yaml')"],
                         capture_output=True, text=True, cwd=work, env=env, timeout=300)  # fmt: skip
    assert res.returncode != 0 and "no shipped config 'ftag/nope.yaml'" in res.stderr
    assert "ftag/gn.yaml" in res.stderr  # the message lists what is shipped
    # the trained models of models/ (the tracking seed classifiers the finder configs name) ship as package data
    code = ("from lhcml.config import resolve_model_path, shipped_config\n"
            "from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config\n"
            "cfg = load_ml_seeds_config(shipped_config('tracking/ml_seeds_4pass_budget_p34.yaml'))\n"
            "for c in [cfg.checkpoint, cfg.second_pass_checkpoint] + [p.checkpoint for p in cfg.more_passes]:\n"
            "    print(resolve_model_path(c))\n")  # fmt: skip
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    paths = res.stdout.split()
    assert len(paths) == 4 and all(p.startswith(str(site / "lhcml" / "shipped_models" / "tracking")) for p in paths), paths
