"""`lhcml tune` on a real (tiny) DL1 training: best config, report, multi-objective with latency."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")
pytest.importorskip("lightning")
sys.path.insert(0, str(Path(__file__).parent))
from _train_mock import make_training_file  # noqa: E402

from lhcml.errors import ConfigError  # noqa: E402
from lhcml.train.config import load_train_config  # noqa: E402
from lhcml.tune.cli import run_tune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dl1_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    train = make_training_file(d / "train.h5", n_jets=600, seed=1)
    val = make_training_file(d / "val.h5", n_jets=300, seed=2)
    cfg = {
        "base": str(ROOT / "configs/ftag/dl1.yaml"),
        "data": {"train_files": [str(train)], "val_files": [str(val)], "norm_dict": None, "batch_size": 100},
        "model": {"name": "dl1", "hidden": [16, 8]},
        "trainer": {"max_epochs": 2, "patience": None, "accelerator": "cpu"},
        "output_dir": str(d / "unused"),
    }
    path = d / "dl1_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _space(path: Path, **kw) -> Path:
    space = {
        "study_name": "dl1_tiny",
        "sampler": "random",
        "pruner": "none",
        "n_trials": 3,
        "seed": 7,
        "objectives": [{"metric": "val_rej_ujets", "direction": "maximize"}],
        "parameters": {
            "optimizer.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            "model.hidden": {"type": "categorical", "choices": [[16, 8], [32, 16, 8]]},
        },
    }
    space.update(kw)
    path.write_text(yaml.safe_dump(space))
    return path


def test_tune_dl1_writes_best_config_and_report(dl1_config, tmp_path):
    out = tmp_path / "study"
    report = run_tune(dl1_config, _space(tmp_path / "space.yaml"), out, progress=False)
    html = report.read_text()
    assert "Optimisation history" in html and "val_rej_ujets" in html
    best = load_train_config(out / "best_config.yaml")
    trials = yaml.safe_load((out / "trials.json").read_text())
    done = [t for t in trials if t["state"] == "COMPLETE"]
    assert len(done) == 3
    top = max(done, key=lambda t: t["val_rej_ujets"])
    # the written config carries the best trial's parameters and trains as it is
    assert best.optimizer.lr == pytest.approx(top["optimizer.lr"])
    assert best.model.hyperparameters()["hidden"] == top["model.hidden"]
    # the objective is the learned rejection, not a constant: a random classifier has light
    # rejection 1/0.7 = 1.4 at 70 % b-efficiency; the best trial must be far above it
    assert top["val_rej_ujets"] > 3 * (1 / 0.7), top
    # resume/extend: the journal keeps the 3 trials, one more is added
    run_tune(dl1_config, tmp_path / "space.yaml", out, n_trials=4, progress=False)
    assert len(yaml.safe_load((out / "trials.json").read_text())) == 4


def test_multi_objective_rejection_vs_latency(dl1_config, tmp_path):
    out = tmp_path / "mo"
    space = _space(
        tmp_path / "mo.yaml",
        sampler="nsga2",
        n_trials=2,
        objectives=[
            {"metric": "val_rej_ujets", "direction": "maximize"},
            {"metric": "latency_ms", "direction": "minimize"},
        ],
    )
    report = run_tune(dl1_config, space, out, progress=False)
    assert "Pareto" in report.read_text()
    pareto = sorted(out.glob("pareto_trial*.yaml"))
    assert pareto
    assert all(t["latency_ms"] > 0 for t in yaml.safe_load((out / "trials.json").read_text()))


def test_bad_parameter_path_is_refused_before_training(dl1_config, tmp_path):
    bad = _space(tmp_path / "bad.yaml", parameters={"optimiser.lr": {"type": "float", "low": 1e-4, "high": 1e-2}})
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        run_tune(dl1_config, bad, tmp_path / "bad_out", progress=False)
    assert not (tmp_path / "bad_out" / "trials").exists()
