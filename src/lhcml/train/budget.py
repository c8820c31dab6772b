"""A wall-clock budget for a training run, as an epoch hook.

``train(cfg, epoch_hooks=[TimeBudget(3600)])`` ends the run after the last epoch that is
projected to finish within the budget: after epoch ``e`` (0-based) it stops if the elapsed time
scaled to ``e + 2`` epochs, ``elapsed · (e + 2) / (e + 1)``, exceeds the budget (our choice: the
mean epoch time so far predicts the next). The stopping epoch's checkpoint is still written. A
benchmark that compares taggers at equal CPU time uses it; ``budget_s=None`` never stops.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class TimeBudget:
    """Epoch hook (``hook(epoch, metrics) -> bool``) that asks training to stop when over budget.

    Parameters
    ----------
    budget_s
        Wall-clock seconds from the hook's construction; ``None``: no limit.

    Attributes
    ----------
    stopped_at
        Number of epochs run when the budget stopped training (``None`` while not stopped).
    """

    def __init__(self, budget_s: float | None) -> None:
        if budget_s is not None and not budget_s > 0:
            raise ValueError(f"budget_s must be positive seconds or None, got {budget_s!r}")
        self.budget_s = budget_s
        self.t0 = time.monotonic()
        self.stopped_at: int | None = None

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        elapsed = time.monotonic() - self.t0
        if self.budget_s is None or elapsed * (epoch + 2) / (epoch + 1) <= self.budget_s:
            return False
        self.stopped_at = epoch + 1
        log.info("time budget %.0f s: stopping after epoch %d", self.budget_s, epoch + 1)
        return True


__all__ = ["TimeBudget"]
