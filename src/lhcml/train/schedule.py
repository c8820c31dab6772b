"""Optimisers and learning-rate schedules of every lhcml training loop, and what a resume does to them.

One place builds them for the tagger, tracking and fast-calorimeter modules (``trainer.py``,
``tracking.py``, ``fastcalo.py``):

* :func:`make_optimizer` — Adam, AdamW or SGD from the ``optimizer`` config block;
* :func:`make_scheduler` — ``onecycle`` (:class:`torch.optim.lr_scheduler.OneCycleLR`), ``cosine``
  (:class:`~torch.optim.lr_scheduler.CosineAnnealingLR` down to ``eta_min``) or ``none``, stepped once per
  optimiser step over the run's total number of steps;
* :class:`ScheduleLength` — the callback that keeps a resumed run on the schedule **its config asks for**.

Why the callback. A schedule's length is fixed when it is built (``total_steps`` / ``T_max`` = the run's
optimiser steps). ``--resume`` restores the scheduler's state from ``last.ckpt``, length included, so a run
resumed with a larger ``trainer.max_epochs`` (or another batch size) would go on with the *old* length: a
cosine schedule passes its minimum and climbs back towards the initial rate (it is periodic), a one-cycle
schedule stops with "Tried to step ... times". With this callback a resumed run follows the schedule of the
length its config gives, at the step it has reached — the learning rates it would have had at that step had it
been started with that length (it may jump, e.g. back up from ``eta_min`` when a finished cosine run is extended;
the run says so on stderr). A resume with an unchanged config changes nothing, so a run resumed after a crash
still gives the identical result.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback


def make_optimizer(
    params: Any, o: Any, lr: float | None = None, betas: tuple[float, float] | None = None
) -> Any:
    """The optimiser of the config block ``o`` (``name`` adam / adamw / sgd, ``lr``, ``weight_decay``,
    ``momentum``) over ``params``; ``lr`` overrides ``o.lr``, ``betas`` (Adam/AdamW only) the defaults."""
    import torch

    lr = o.lr if lr is None else lr
    if o.name in ("adam", "adamw"):
        kw: dict[str, Any] = {"lr": lr, "weight_decay": o.weight_decay}
        if betas is not None:
            kw["betas"] = betas
        return (torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam)(params, **kw)
    return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)


def make_scheduler(opt: Any, s: Any, total_steps: int, max_lr: float) -> Any | None:
    """The learning-rate schedule of the config block ``s`` over ``total_steps`` optimiser steps (None for
    ``none``). ``onecycle`` peaks at ``max_lr``; it needs at least ``ceil(3 / pct_start)`` steps (its warm-up
    divides by ``pct_start * steps - 1``), so shorter runs get that many."""
    import torch

    if s.name == "none":
        return None
    if s.name == "onecycle":
        steps = max(int(total_steps), int(np.ceil(3 / s.pct_start)))
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lr, total_steps=steps, pct_start=s.pct_start,
            div_factor=s.div_factor, final_div_factor=s.final_div_factor,
        )  # fmt: skip
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=int(total_steps), eta_min=s.eta_min
    )


def schedule_length(sched: Any) -> int | None:
    """The number of steps a scheduler was built for (OneCycleLR's ``total_steps``, cosine's ``T_max``)."""
    for key in ("total_steps", "T_max"):
        if hasattr(sched, key):
            return int(getattr(sched, key))
    return None


_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "betas", "momentum", "max_momentum", "base_momentum")


class _Fresh:
    """A scheduler's state as built for this run, and its optimiser's schedule-driven parameters."""

    def __init__(self, sched: Any) -> None:
        self.state = copy.deepcopy(sched.state_dict())
        self.groups = [
            {k: copy.deepcopy(g[k]) for k in _GROUP_KEYS if k in g}
            for g in sched.optimizer.param_groups
        ]
        self.length = schedule_length(sched)


def retarget(sched: Any, fresh: _Fresh) -> tuple[int | None, int | None]:
    """Put a restored ``sched`` (and its optimiser's learning rates / momenta) where the schedule ``fresh``
    (same kind, this run's length) is after the restored number of steps, by replaying that schedule with
    torch's own ``step()``. Returns (old length, new length); nothing changes when they are equal."""
    old, new = schedule_length(sched), fresh.length
    if old is None or new is None or old == new:
        return old, new
    # steps taken (0 right after construction); a one-cycle schedule cannot step past its end (the run is over anyway)
    done = min(int(sched.state_dict()["last_epoch"]), new - 1)
    sched.load_state_dict(copy.deepcopy(fresh.state))
    for group, saved in zip(sched.optimizer.param_groups, fresh.groups, strict=True):
        group.update(copy.deepcopy(saved))
    # a replay, not training: no "lr_scheduler.step() before optimizer.step()" warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(done):
            sched.step()
    return old, new


class ScheduleLength(Callback):
    """Lightning callback: after ``--resume`` restored the schedulers, put them on this run's schedule length
    (module doc). Add it to every trainer whose module returns schedulers."""

    def __init__(self) -> None:
        super().__init__()
        self._fresh: list[_Fresh] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # runs after configure_optimizers and before the checkpoint's scheduler states are loaded
        self._fresh = [_Fresh(c.scheduler) for c in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        for cfg, fresh in zip(trainer.lr_scheduler_configs, self._fresh, strict=True):
            old, new = retarget(cfg.scheduler, fresh)
            if old != new and trainer.is_global_zero:
                lr = cfg.scheduler.optimizer.param_groups[0]["lr"]
                print(
                    f"lhcml train: resumed with a schedule of {new} steps (the checkpoint's: {old}); the "
                    f"learning rate follows the {new}-step schedule from here (now {lr:.3g})",
                    file=sys.stderr,
                )
