"""Training configs: shipped configs validate, deltas from base, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _train_mock import make_training_file

from lhcml.errors import ConfigError, SchemaError
from lhcml.train.config import apply_overrides, load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ftag"


@pytest.mark.parametrize("name", ["dl1", "dl1r", "rnnip", "dips", "gn", "mv2"])
def test_shipped_configs_validate(name):
    cfg = load_train_config(CONFIGS / f"{name}.yaml")
    assert cfg.data.classes == ["bjets", "cjets", "ujets"]
    assert cfg.model.name == {"dl1r": "dl1"}.get(name, name)
    from lhcml.models.bdt import MV2
    from lhcml.models.registry import get_model_class
    from lhcml.train.config import check_hyperparameters

    cls = MV2 if name == "mv2" else get_model_class(cfg.model.name)
    check_hyperparameters(cls, cfg.model.hyperparameters(), cfg.model.name)


def test_deltas_from_base():
    dl1 = load_train_config(CONFIGS / "dl1.yaml")
    dl1r = load_train_config(CONFIGS / "dl1r.yaml")
    mv2 = load_train_config(CONFIGS / "mv2.yaml")
    assert dl1r.data.inputs["jets"] == dl1.data.inputs["jets"] + ["rnnip_pu", "rnnip_pc", "rnnip_pb"]
    assert dl1r.model == dl1.model and dl1r.resolved_tagger_name() == "dl1r"
    # switching model in a delta drops the base model's hyperparameters
    assert mv2.data.inputs == dl1.data.inputs and "hidden" not in mv2.model.hyperparameters()
    assert dl1.optimizer.lr == 1e-3 and dl1.trainer.max_epochs == 40  # from base.yaml


def test_unknown_key_suggests(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"base": str(CONFIGS / "dips.yaml"), "optimizer": {"lr_sheduler": 1}}))
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer.lr_sheduler' in bad.yaml"):
        load_train_config(p)
    with pytest.raises(ConfigError, match="did you mean 'max_epochs'"):
        load_train_config(CONFIGS / "dips.yaml", ["trainer.max_epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_train_config(CONFIGS / "dips.yaml", ["trainer.max_epochs"])


def test_overrides_parse_yaml_values():
    out = apply_overrides({"a": {"b": 1}}, ["a.b=[1, 2]", "a.c=null", "d.e=1e-3", "f=text"])
    assert out == {"a": {"b": [1, 2], "c": None}, "d": {"e": 1e-3}, "f": "text"}


def test_variable_not_in_file(tmp_path):
    from lhcml.train.trainer import train

    f = make_training_file(tmp_path / "t.h5", 50, seed=5)
    ov = [f"data.train_files=[{f}]", f"data.val_files=[{f}]", f"output_dir={tmp_path / 'r'}"]
    cfg = load_train_config(CONFIGS / "dips.yaml", ov + ["data.inputs.tracks=[IP3D_signed_d0_significance, d0Significanse]"])
    with pytest.raises(SchemaError, match=r"\['d0Significanse'\] of group 'tracks' not in"):
        train(cfg)
    cfg = load_train_config(CONFIGS / "dips.yaml", ov + ["data.label_field=flavour"])
    with pytest.raises(SchemaError, match=r"\['flavour'\] not in 'jets'.*choose a scheme whose label the files carry"):
        train(cfg)
    cfg = load_train_config(CONFIGS / "gn.yaml", ov + ["model.embed_dims=8"])
    with pytest.raises(ConfigError, match="did you mean 'embed_dim'"):
        train(cfg)
    cfg = load_train_config(CONFIGS / "gn.yaml", ov + ["data.norm_dict=missing.yaml"])
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        train(cfg)
    assert not (tmp_path / "r").exists()  # nothing written before the checks pass
