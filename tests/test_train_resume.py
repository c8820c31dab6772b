"""Resume after a crash: continues at the next epoch with the optimiser state; config guard."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from _train_mock import make_training_file

from lhcml.errors import CheckpointMismatchError, ConfigError
from lhcml.train.config import load_train_config
from lhcml.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ftag"


class Crash(RuntimeError):
    pass


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_resume_continues_with_optimizer_state(tmp_path, one_thread):
    tr = make_training_file(tmp_path / "train.h5", 300, seed=11)
    va = make_training_file(tmp_path / "val.h5", 100, seed=12)
    out = tmp_path / "run"
    ov = [
        f"data.train_files=[{tr}]", f"data.val_files=[{va}]", "data.norm_dict=null",
        "data.batch_size=100", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "model.phi_hidden=[8,8]", "model.f_hidden=[8]", f"output_dir={out}",
    ]  # fmt: skip
    steps_per_epoch = 3  # 300 jets (b/c/light only after labels), batch 100
    cfg = load_train_config(CONFIGS / "dips.yaml", ov)

    def crash_in_second_epoch(epoch: int, metrics: dict) -> None:
        assert "val_loss" in metrics and "val_rej_ujets" in metrics
        if epoch == 1:
            raise Crash("simulated crash during epoch 2")

    with pytest.raises(Crash):
        train(cfg, epoch_hooks=[crash_in_second_epoch])
    last = out / "checkpoints" / "last.ckpt"
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert ck["epoch"] == 0
    n_train = ck["global_step"]
    assert 0 < n_train <= steps_per_epoch
    opt_steps = [int(s["step"]) for s in ck["optimizer_states"][0]["state"].values()]
    assert set(opt_steps) == {n_train}

    # without --resume the run refuses to overwrite; with another config it refuses to resume
    with pytest.raises(ConfigError, match="--resume"):
        train(load_train_config(CONFIGS / "dips.yaml", ov))
    with pytest.raises(CheckpointMismatchError, match="model.phi_hidden"):
        train(load_train_config(CONFIGS / "dips.yaml", ov + ["model.phi_hidden=[8,4]"]), resume=True)

    seen = []
    train(load_train_config(CONFIGS / "dips.yaml", ov), resume=True, epoch_hooks=[lambda e, m: seen.append(e)])
    assert seen == [1]  # epoch 0 is not repeated
    ck2 = torch.load(last, map_location="cpu", weights_only=True)
    assert ck2["epoch"] == 1 and ck2["global_step"] == 2 * n_train
    # Adam's step counter continued from the checkpoint (a fresh optimiser would show n_train)
    assert {int(s["step"]) for s in ck2["optimizer_states"][0]["state"].values()} == {2 * n_train}
    # the LR schedule continued too: OneCycle's step count is the global step
    assert ck2["lr_schedulers"][0]["last_epoch"] == 2 * n_train
    rows = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    # the epoch finished before the crash is kept (Lightning's CSV logger would delete it), once
    val_epochs = [int(float(r["epoch"])) for r in rows if r.get("val_loss")]
    assert val_epochs == [0, 1]
    train_epochs = {int(float(r["epoch"])) for r in rows if r.get("train_loss_epoch")}
    assert train_epochs == {0, 1}


def test_last_checkpoint_is_the_last_epoch_even_without_a_new_best(tmp_path, one_thread):
    tr = make_training_file(tmp_path / "train.h5", 300, seed=13)
    va = make_training_file(tmp_path / "val.h5", 100, seed=14)
    out = tmp_path / "run"
    # a large constant learning rate: the validation loss gets worse after the first epoch,
    # so the best checkpoint is an early one while last.ckpt must follow every epoch
    ov = [
        f"data.train_files=[{tr}]", f"data.val_files=[{va}]", "data.norm_dict=null",
        "data.batch_size=100", "trainer.max_epochs=4", "trainer.patience=null",
        "trainer.enable_progress_bar=false", "scheduler.name=none", "optimizer.lr=0.5",
        "model.phi_hidden=[8,8]", "model.f_hidden=[8]", f"output_dir={out}",
        "data.bucket_by_length=false",  # the unsorted batches of this seed diverge after epoch 0
    ]  # fmt: skip
    best = train(load_train_config(CONFIGS / "dips.yaml", ov))
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 3
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"]
    assert best_epoch < 3, "the test needs a run whose best epoch is not the last one"
