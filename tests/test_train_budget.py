"""lhcml.train.budget.TimeBudget: the projection rule, and a hook that returns True stops training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train_mock import make_training_file

from lhcml.train import budget as budget_mod
from lhcml.train.budget import TimeBudget

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ftag"


def test_projection(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(budget_mod.time, "monotonic", lambda: now[0])
    b = TimeBudget(10.0)
    now[0] = 104.0  # epoch 0 took 4 s: two epochs project to 8 s <= 10
    assert b(0, {}) is False and b.stopped_at is None
    now[0] = 107.5  # 3.75 s per epoch: three epochs project to 11.25 s > 10
    assert b(1, {}) is True and b.stopped_at == 2
    assert TimeBudget(None)(50, {}) is False
    with pytest.raises(ValueError, match="positive"):
        TimeBudget(0)


def test_budget_ends_training_after_the_first_epoch(tmp_path):
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train

    files = [
        make_training_file(tmp_path / f"{k}.h5", 300, seed=s) for k, s in (("train", 1), ("val", 2))
    ]
    cfg = load_train_config(CONFIGS / "dl1.yaml", [
        f"data.train_files=[{files[0]}]", f"data.val_files=[{files[1]}]", "data.norm_dict=null",
        "data.batch_size=100", "trainer.max_epochs=4", "trainer.patience=null",
        "trainer.enable_progress_bar=false", "model.hidden=[8]", "loss.class_dict=null",
        f"output_dir={tmp_path / 'run'}",
    ])  # fmt: skip
    b = TimeBudget(1e-6)  # already over budget when the first epoch ends
    best = train(cfg, epoch_hooks=[b])
    assert b.stopped_at == 1
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    epochs = {int(torch.load(p, map_location="cpu", weights_only=True)["epoch"]) for p in ckpts}
    assert epochs == {0}, f"training ran past the first epoch: {[p.name for p in ckpts]}"
    assert best.is_file()
