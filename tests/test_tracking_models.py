"""The seed classifiers shipped in models/tracking/ (issue 14): every checkpoint a shipped tracking config names
exists in the repository, is small, loads with ``torch.load(weights_only=True)``, was trained by the training
config of its name, and the finder finds it from any working directory; a missing or mismatched one is one
clear error. No ACTS run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lhcml.config import resolve_bases, resolve_model_path, shipped_configs_dir
from lhcml.errors import CheckpointMismatchError, ConfigError
from lhcml.models.tracking.seed_filter import FEATURE_NAMES
from lhcml.tasks.tracking import seed_filter as S
from lhcml.train.tracking import load_tracking_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "tracking"
#: the classifier cascade of benchmarks/tracking_models.py
CASCADE = ["seed_filter", "seed_filter_pass2", "seed_filter_pass3", "seed_filter_pass3l", "seed_filter_pass4"]


def shipped_checkpoints() -> dict[str, set[str]]:
    """``{checkpoint as written in a config: {configs naming it}}`` over every configs/tracking/*.yaml."""
    out: dict[str, set[str]] = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        data = resolve_bases(path)
        names = [data.get("checkpoint"), data.get("second_pass_checkpoint")]
        names += [p.get("checkpoint") for p in data.get("more_passes") or []]
        for n in names:
            if n is not None:
                out.setdefault(str(n), set()).add(path.name)
    return out


def test_every_config_names_a_shipped_classifier_of_the_cascade() -> None:
    ckpts = shipped_checkpoints()
    assert {Path(c).stem for c in ckpts} == set(CASCADE)
    assert all(c == f"models/tracking/{Path(c).stem}.ckpt" for c in ckpts), sorted(ckpts)
    assert {"ml_seeds.yaml", "ml_seeds_4pass_budget_p34.yaml", "ml_seeds_5pass_budget_fwd.yaml",
            "ml_seeds_4pass_budget_p34_strips.yaml", "ml_seeds_6pass_budget_fwd_strips.yaml",
            "ml_seeds_5pass_budget_fwd_lean.yaml", "ml_seeds_6pass_budget_fwd_strips_lean.yaml",
            "ml_seeds_6pass_budget_fwd_strips_lowpt.yaml"} <= set().union(*ckpts.values())
    for name in CASCADE:  # each training config says where its run goes and how the cascade is rebuilt
        text = (CONFIGS / f"{name}.yaml").read_text()
        assert yaml.safe_load(text)["output_dir"] == f"benchmarks/_work/tracking_models/{name}"
        assert "benchmarks/tracking_models.py" in text


@pytest.mark.parametrize("name", CASCADE)
def test_shipped_classifier_loads_safely_and_matches_its_training_config(name: str) -> None:
    path = resolve_model_path(f"models/tracking/{name}.ckpt")
    assert path.resolve() == (ROOT / "models" / "tracking" / f"{name}.ckpt").resolve()
    assert path.stat().st_size < 300_000  # weights and metadata only
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "lhcml"}  # no optimiser state, no callbacks
    assert raw["state_dict"] and all(k.startswith("model.") for k in raw["state_dict"])
    meta = raw["lhcml"]
    assert meta["kind"] == "tracking" and meta["model_name"] == "seed_filter"
    stored = yaml.safe_load(meta["config_yaml"])
    train = resolve_bases(CONFIGS / f"{name}.yaml")
    assert stored["model"] == train["model"]  # the hyperparameters of its training config
    assert stored["seed"] == train["seed"] == 42
    assert stored["data"]["prepare"] == train["data"]["prepare"]  # trained on that config's seed files
    assert stored["data"]["train_events"] == train["data"]["train_events"]
    assert stored["data"]["val_events"] == train["data"]["val_events"]
    assert [Path(d).name for d in stored["data"]["train_dir"]] == [Path(d).name for d in train["data"]["train_dir"]]
    model, meta2 = load_tracking_model(path)
    init = yaml.safe_load(meta2["model_init_yaml"])
    assert {k: init[k] for k in ("hidden", "n_layers")} == {k: train["model"][k] for k in ("hidden", "n_layers")}
    assert list(model.feature_names) == list(FEATURE_NAMES)
    assert sum(p.numel() for p in model.parameters()) > 1000  # a trained MLP, not an empty file


def test_finder_finds_the_shipped_classifiers_from_any_directory(tmp_path, monkeypatch) -> None:
    """``checkpoint: models/tracking/X.ckpt`` is found outside the checkout's root too (the shipped models' folder)."""
    monkeypatch.chdir(tmp_path)
    S._classifier.cache_clear()
    cfg = S.load_ml_seeds_config(shipped_configs_dir() / "tracking" / "ml_seeds_4pass_budget_p34.yaml")
    models = [S._classifier(c) for c in [cfg.checkpoint, cfg.second_pass_checkpoint] + [p.checkpoint for p in cfg.more_passes]]
    x = torch.zeros(4, len(FEATURE_NAMES)).numpy()
    for m in models:
        s = m.score(x)
        assert s.shape == (4,) and ((s >= 0) & (s <= 1)).all()
    assert models[0] is not models[-1]  # five classifiers, not one


def _variant(tmp_path: Path, change) -> Path:
    raw = torch.load(ROOT / "models" / "tracking" / "seed_filter.ckpt", map_location="cpu", weights_only=True)
    meta = dict(raw["lhcml"])
    init = yaml.safe_load(meta["model_init_yaml"])
    change(raw, meta, init)
    meta["model_init_yaml"] = yaml.safe_dump(init)
    out = tmp_path / "variant.ckpt"
    torch.save({"state_dict": raw["state_dict"], "lhcml": meta}, out)
    return out


def test_missing_or_mismatched_checkpoint_is_one_clear_error(tmp_path) -> None:
    S._classifier.cache_clear()
    with pytest.raises(ConfigError, match="does not exist.*tracking_models.py"):
        S._classifier("models/tracking/nope.ckpt")
    with pytest.raises(ConfigError, match="does not exist"):
        S._classifier(str(tmp_path / "nope.ckpt"))
    other = _variant(tmp_path, lambda raw, meta, init: init.update(feature_names=list(FEATURE_NAMES)[::-1]))
    with pytest.raises(ConfigError, match="trained on the seed features"):
        S._classifier(str(other))
    S._classifier.cache_clear()
    wider = _variant(tmp_path, lambda raw, meta, init: init.update(hidden=2 * init["hidden"]))
    with pytest.raises(CheckpointMismatchError):
        S._classifier(str(wider))
    S._classifier.cache_clear()
    gnn = _variant(tmp_path, lambda raw, meta, init: meta.update(model_name="embedding"))
    with pytest.raises((ConfigError, CheckpointMismatchError)):
        S._classifier(str(gnn))
