"""The learning-rate schedule of a resumed run is the one its config asks for (lhcml.train.schedule)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _train_mock import make_training_file

from lhcml.train.config import load_train_config
from lhcml.train.schedule import _Fresh, make_optimizer, make_scheduler, retarget
from lhcml.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ftag"
ADAM = SimpleNamespace(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.9)
COSINE = SimpleNamespace(name="cosine", eta_min=1e-5)
ONECYCLE = SimpleNamespace(name="onecycle", pct_start=0.3, div_factor=25.0, final_div_factor=1e4)


def _run(s, total: int, steps: int, state: dict | None = None):
    """An Adam + schedule of ``total`` steps, optionally restored from ``state``, stepped ``steps`` times."""
    w = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer([w], ADAM)
    sched = make_scheduler(opt, s, total, ADAM.lr)
    fresh = _Fresh(sched)
    if state is not None:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt, sched, fresh


def _groups(opt) -> list[float]:
    """The schedule-driven numbers of the optimiser: learning rate and Adam's beta1 (one-cycle cycles it)."""
    return [x for g in opt.param_groups for x in (g["lr"], g["betas"][0])]


@pytest.mark.parametrize("s", [COSINE, ONECYCLE], ids=["cosine", "onecycle"])
def test_retarget_puts_a_restored_schedule_on_the_new_length(s):
    # a 20-step run stopped after 8 steps, resumed as a 40-step run
    opt, sched, _ = _run(s, 20, 8)
    state = {"opt": opt.state_dict(), "sched": sched.state_dict()}
    opt2, sched2, fresh = _run(s, 40, 0, state)
    before = _groups(opt2)
    assert retarget(sched2, fresh) == (20, 40)
    ref_opt, ref_sched, _ = _run(s, 40, 8)  # a 40-step schedule after 8 steps
    assert _groups(opt2) == pytest.approx(_groups(ref_opt), rel=1e-12)
    assert _groups(opt2) != pytest.approx(before, rel=1e-6)  # it did move
    assert sched2.state_dict()["last_epoch"] == 8
    # and it goes on as the 40-step schedule does, to its end
    for _ in range(31):
        opt2.step(), sched2.step()
        ref_opt.step(), ref_sched.step()
    assert _groups(opt2) == pytest.approx(_groups(ref_opt), rel=1e-12)


def test_cosine_retarget_known_value_and_unchanged_length_is_a_no_op():
    opt, sched, _ = _run(COSINE, 20, 20)  # a finished 20-step cosine run sits at eta_min
    assert opt.param_groups[0]["lr"] == pytest.approx(COSINE.eta_min, rel=1e-9)
    state = {"opt": opt.state_dict(), "sched": sched.state_dict()}
    # resumed with the same length: nothing changes
    opt2, sched2, fresh = _run(COSINE, 20, 0, state)
    assert retarget(sched2, fresh) == (20, 20)
    assert _groups(opt2) == _groups(opt) and sched2.state_dict() == sched.state_dict()
    # extended to 80 steps: the rate of an 80-step cosine at step 20, by the closed form
    opt3, sched3, fresh3 = _run(COSINE, 80, 0, state)
    retarget(sched3, fresh3)
    expected = COSINE.eta_min + (ADAM.lr - COSINE.eta_min) * (1 + math.cos(math.pi * 20 / 80)) / 2
    assert opt3.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)


def test_resume_with_more_epochs_follows_the_longer_cosine_to_its_end(tmp_path, capsys):
    tr = make_training_file(tmp_path / "train.h5", 300, seed=21)
    va = make_training_file(tmp_path / "val.h5", 100, seed=22)

    def overrides(out: Path, epochs: int) -> list[str]:
        return [
            f"data.train_files=[{tr}]", f"data.val_files=[{va}]", "data.norm_dict=null",
            "data.batch_size=100", f"trainer.max_epochs={epochs}", "trainer.patience=null",
            "trainer.enable_progress_bar=false", "scheduler.name=cosine", "scheduler.eta_min=1e-6",
            "model.phi_hidden=[8,8]", "model.f_hidden=[8]", f"output_dir={out}",
        ]  # fmt: skip

    def last(out: Path) -> dict:
        return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    run = tmp_path / "run"
    train(load_train_config(CONFIGS / "dips.yaml", overrides(run, 2)))
    n = last(run)["global_step"]  # steps in two epochs
    assert last(run)["lr_schedulers"][0]["T_max"] == n + 1
    capsys.readouterr()
    train(load_train_config(CONFIGS / "dips.yaml", overrides(run, 4)), resume=True)
    assert "resumed with a schedule of" in capsys.readouterr().err
    ck = last(run)
    assert ck["epoch"] == 3 and ck["global_step"] == 2 * n
    assert ck["lr_schedulers"][0]["T_max"] == 2 * n + 1  # the 4-epoch schedule's length
    lr_end = ck["optimizer_states"][0]["param_groups"][0]["lr"]
    # a fresh 4-epoch run ends at the same rate, near eta_min (the restored 2-epoch cosine would have
    # climbed back to near the initial rate: it is periodic)
    fresh = tmp_path / "fresh"
    train(load_train_config(CONFIGS / "dips.yaml", overrides(fresh, 4)))
    ref = last(fresh)["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr_end == pytest.approx(ref, rel=1e-9)
    lr0 = load_train_config(CONFIGS / "dips.yaml", overrides(run, 4)).optimizer.lr
    assert lr_end < 0.05 * lr0  # (the 2-epoch cosine, periodic, would be at ~0.8 lr0 here)
