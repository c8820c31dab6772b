"""The extra-loss plug-in: registered terms are added, logged, get their batch fields and train."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from _train_mock import make_training_file
from torch import nn

from lhcml.errors import ConfigError
from lhcml.train.config import load_train_config
from lhcml.train.extra_losses import ExtraLoss, build_extra_loss, register_extra_loss
from lhcml.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ftag"


@register_extra_loss("test_scaled_logit_l2")
class ScaledLogitL2(ExtraLoss):
    """``scale² · mean(logits²) · mean(mass)/mean(mass)``: uses a batch field and owns a parameter."""

    batch_fields = {"jets": ["mass"]}

    def __init__(self, weight: float = 1.0, scale: float = 1.0) -> None:
        super().__init__(weight)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, outputs, batch):
        mass = batch["jets_mass"]
        assert mass.dtype == torch.float32 and mass.shape == batch["labels"].shape
        return self.scale**2 * outputs["logits"].pow(2).mean() * (mass.mean() / mass.mean())


def test_extra_loss_is_added_logged_and_trained(tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        f = make_training_file(tmp_path / "t.h5", 300, seed=21)
        ov = [
            f"data.train_files=[{f}]", f"data.val_files=[{f}]", "data.norm_dict=null",
            "data.batch_size=100", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            "model.phi_hidden=[8]", "model.f_hidden=[8]", f"output_dir={tmp_path / 'r'}",
            "extra_losses=[{name: test_scaled_logit_l2, weight: 0.5, scale: 2.0}]",
        ]  # fmt: skip
        best = train(load_train_config(CONFIGS / "dips.yaml", ov))
    finally:
        torch.set_num_threads(n)
    sd = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert float(sd["extra_losses.0.scale"]) != 2.0  # optimised with the model
    rows = [r for r in csv.DictReader(open(tmp_path / "r" / "logs" / "metrics.csv")) if r.get("val_loss")]
    r = rows[-1]
    total = float(r["val_loss"])
    parts = float(r["val_loss_jet_classification"]) + float(r["val_loss_test_scaled_logit_l2"])
    assert total == pytest.approx(parts, rel=1e-4) and float(r["val_loss_test_scaled_logit_l2"]) > 0


def test_extra_loss_errors():
    with pytest.raises(ConfigError, match="unknown extra loss 'disko'.*test_scaled_logit_l2"):
        build_extra_loss("disko")
    with pytest.raises(ConfigError, match="bad options for extra loss"):
        build_extra_loss("test_scaled_logit_l2", scal=3)
