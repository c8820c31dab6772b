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
