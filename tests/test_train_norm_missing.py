"""A norm dict from preprocessing that lacks variables added later (DL1r's rnnip_p*)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _train_mock import make_training_file

from lhcml.train.config import load_train_config
from lhcml.train.datamodule import compute_norm
from lhcml.train.trainer import load_norm, prepare_inputs

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ftag"


def test_missing_norm_entries_are_computed_from_the_training_file(tmp_path):
    train = make_training_file(tmp_path / "train.h5", 300, seed=4)
    cfg = load_train_config(CONFIGS / "dl1r.yaml", [f"data.train_files=[{train}]", f"data.val_files=[{train}]",
                                                   "data.norm_dict=null", f"output_dir={tmp_path / 'run'}"])  # fmt: skip
    specs, _ = prepare_inputs(cfg)
    full = compute_norm([train], specs)
    partial = {"jets": {k: v for k, v in full["jets"].items() if not k.startswith("rnnip_")}}
    partial["jets"]["pt"] = {"mean": 1.0, "std": 2.0}  # given entries are kept as they are
    (tmp_path / "norm.yaml").write_text(yaml.safe_dump(partial))
    cfg.data.norm_dict = str(tmp_path / "norm.yaml")
    with pytest.warns(UserWarning, match="rnnip_pu"):
        norm = load_norm(cfg, specs)
    assert norm["jets"]["pt"] == {"mean": 1.0, "std": 2.0}
    for v in ("rnnip_pu", "rnnip_pc", "rnnip_pb"):
        assert norm["jets"][v] == pytest.approx(full["jets"][v])
