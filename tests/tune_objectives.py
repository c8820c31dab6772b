"""Picklable objectives for the tuning-engine tests (imported by spawned worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Quadratic:
    """(x - 2)^2 + (y + 1)^2 with per-step reports, optionally slow, optionally dying once."""

    def __init__(self, sleep: float = 0.0, die_flag: str | None = None, steps: int = 3):
        self.sleep, self.die_flag, self.steps = sleep, die_flag, steps

    def __call__(self, trial):
        x = trial.suggest_float("x", -5, 5)
        y = trial.suggest_float("y", -5, 5)
        value = (x - 2) ** 2 + (y + 1) ** 2
        for step in range(self.steps):
            if self.die_flag and not Path(self.die_flag).exists():
                Path(self.die_flag).write_text(str(os.getpid()))
                time.sleep(60)  # the test kills us here, mid-trial
            time.sleep(self.sleep)
            trial.report(value * (1 + (self.steps - step) * 0.1), step)
            if trial.should_prune():
                import optuna

                raise optuna.TrialPruned()
        return value


class TwoObjectives:
    """A Pareto problem: minimise x^2 and (x-2)^2."""

    def __call__(self, trial):
        x = trial.suggest_float("x", -1, 3)
        return x**2, (x - 2) ** 2


class SlowAndDying:
    """Roles by arrival: the first trial runs ``slow`` seconds, the second dies mid-trial.

    The dying trial waits ``die_after`` seconds (so the slow trial has run longer than the
    storage's grace period) before writing its pid to ``<flag_dir>/died``; the test kills it then.
    Later trials, including the re-queued one, return at once.
    """

    def __init__(self, flag_dir: str, slow: float = 6.0, die_after: float = 3.5):
        self.flag_dir, self.slow, self.die_after = flag_dir, slow, die_after

    def __call__(self, trial):
        x = trial.suggest_float("x", -5, 5)
        d = Path(self.flag_dir)
        try:
            os.close(os.open(d / "slow", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            trial.set_user_attr("role", "slow")
            time.sleep(self.slow)
            return x * x
        try:
            os.close(os.open(d / "dying", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return x * x
        time.sleep(self.die_after)
        (d / "died").write_text(str(os.getpid()))
        time.sleep(60)  # killed here
        return x * x
