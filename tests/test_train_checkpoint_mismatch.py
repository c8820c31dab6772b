"""A checkpoint loaded into a different architecture gives one CheckpointMismatchError.

Paths: ``load_tagger`` (used by predict and export) on a checkpoint whose stored config no longer
builds the saved weights, and ``train(resume=True)`` with a config that changes the trained
modules (an added adversary) or the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from _boosted_fixtures import _one_torch_thread  # noqa: F401

from lhcml.data.mock import make_mock_file
from lhcml.errors import CheckpointMismatchError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "jets"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train

    d = tmp_path_factory.mktemp("ckpt_mismatch")
    f = make_mock_file(d / "jets.h5", n_jets=160, kind="boosted", seed=4)
    ov = [f"data.train_files=[{f}]", f"data.val_files=[{f}]", f"output_dir={d / 'run'}",
          "data.batch_size=80", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
          "trainer.accelerator=cpu", "model.phi_sizes=[8,8]", "model.f_sizes=[8]", "seed=1"]  # fmt: skip
    ckpt = train(load_train_config(CONFIGS / "pfn.yaml", ov))
    return ckpt, ov, d


def test_load_tagger_changed_architecture(trained, tmp_path):
    from lhcml.train.checkpoint import load_tagger

    ckpt, _, _ = trained
    model, meta = load_tagger(ckpt)  # the intact checkpoint loads
    assert meta["tagger_name"] == "pfn"
    # the stored config now builds a wider network than the saved weights (as after a change of
    # the model code): one clear error naming the checkpoint and the differing parameters
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = yaml.safe_load(blob["lhcml"]["config_yaml"])
    cfg["model"]["phi_sizes"] = [8, 16]
    blob["lhcml"]["config_yaml"] = yaml.safe_dump(cfg)
    bad = tmp_path / "changed.ckpt"
    torch.save(blob, bad)
    with pytest.raises(CheckpointMismatchError, match=r"changed\.ckpt.*shape.*\(8, 8\).*\(16, 8\)") as err:
        load_tagger(bad)
    assert err.value.__cause__ is None  # not a wrapped torch traceback
    # renamed parameters: named as missing/unexpected
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    sd = blob["state_dict"]
    key = next(k for k in sd if k.startswith("model.") and k.endswith("weight"))
    sd[key.replace("weight", "kernel")] = sd.pop(key)
    torch.save(blob, bad)
    with pytest.raises(CheckpointMismatchError, match="kernel"):
        load_tagger(bad)


def test_resume_with_changed_modules(trained):
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train

    ckpt, ov, d = trained
    last = d / "run" / "checkpoints" / "last.ckpt"
    adv = ["extra_losses=[{name: adversary, weight: 1.0, grl_lambda: 1.0, n_classes: 2, background_classes: [0]}]",
           "trainer.max_epochs=2"]
    with pytest.raises(CheckpointMismatchError, match=r"last\.ckpt.*extra_losses") as err:
        train(load_train_config(CONFIGS / "pfn.yaml", ov + adv), resume=True)
    assert err.value.__cause__ is None
    with pytest.raises(CheckpointMismatchError, match=r"last\.ckpt.*model\.phi_sizes"):
        train(load_train_config(CONFIGS / "pfn.yaml", [*ov, "model.phi_sizes=[8,16]"]), resume=True)
    assert last.is_file()  # untouched
    # the failed resume left the run's stored config alone
    stored = yaml.safe_load((d / "run" / "config.yaml").read_text())
    assert stored["extra_losses"] == [] and stored["model"]["phi_sizes"] == [8, 8]
