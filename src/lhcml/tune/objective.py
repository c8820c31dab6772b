"""The training objective of ``lhcml tune``: one trial = one ``lhcml train`` run.

Each trial applies its parameters to the base training config, trains into
``<out>/trials/trial_NNNN``, reports the objective metric after every validation epoch (so the
pruner can stop bad trials early) and returns the best value over the epochs. The special metric
``latency_ms`` is the ONNX inference latency per jet (batch 1, one thread) of the trained model,
for multi-objective studies of performance against speed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lhcml.errors import ConfigError
from lhcml.tune.space import SearchSpace, apply_params

LATENCY_METRIC = "latency_ms"


class PruneTrial(Exception):
    """Raised from an epoch hook; converted to ``optuna.TrialPruned`` outside Lightning."""


class TrainObjective:
    """Picklable objective: ``TrainObjective(base_cfg, space, out_dir)(trial) -> value(s)``."""

    def __init__(self, base_cfg: dict[str, Any], space: SearchSpace | dict[str, Any], out_dir: str | Path):
        self.base_cfg = base_cfg
        self.space = space.model_dump(mode="json") if isinstance(space, SearchSpace) else dict(space)
        self.out_dir = str(Path(out_dir).resolve())

    def trial_config(self, params: dict[str, Any], number: int) -> dict[str, Any]:
        """The training config of one trial (parameters applied, own output dir, quiet)."""
        cfg = apply_params(self.base_cfg, params)
        cfg["output_dir"] = str(Path(self.out_dir) / "trials" / f"trial_{number:04d}")
        cfg.setdefault("trainer", {})["enable_progress_bar"] = False
        return cfg

    def __call__(self, trial: Any) -> float | tuple[float, ...]:
        import logging

        import optuna

        from lhcml.train.protocol import validate_trainable_config

        # one line per trial is enough: silence Lightning's per-run banners in the workers
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from lhcml.train.trainer import train

        space = SearchSpace.model_validate(self.space)
        params = {name: spec.suggest(trial, name) for name, spec in space.parameters.items()}
        _, cfg = validate_trainable_config(self.trial_config(params, trial.number), source=f"trial {trial.number}")
        metrics = [o.metric for o in space.objectives]
        signs = [1.0 if o.direction == "minimize" else -1.0 for o in space.objectives]
        best: dict[str, float] = {}
        first = metrics[0]

        def hook(epoch: int, values: dict[str, float]) -> None:
            for m, s in zip(metrics, signs, strict=True):
                if m == LATENCY_METRIC:
                    continue
                if m not in values:
                    raise ConfigError(
                        f"objective metric '{m}' is not among the validation metrics "
                        f"({', '.join(sorted(values))})"
                    )
                v = float(values[m])
                if math.isfinite(v) and (m not in best or s * v < s * best[m]):
                    best[m] = v
            if not space.multi_objective and first in values:
                trial.report(float(values[first]), epoch)
                if trial.should_prune():
                    raise PruneTrial(f"pruned at epoch {epoch}")

        try:
            ckpt = train(cfg, epoch_hooks=[hook])
        except PruneTrial:
            raise optuna.TrialPruned() from None
        result = []
        for m in metrics:
            if m == LATENCY_METRIC:
                result.append(self._latency(ckpt))
            elif m in best:
                result.append(best[m])
            else:
                raise RuntimeError(f"trial {trial.number} produced no finite value of '{m}'")
        return result[0] if len(result) == 1 else tuple(result)

    @staticmethod
    def _latency(checkpoint: Path) -> float:
        from lhcml.export import export_model

        onnx_path = Path(checkpoint).parent.parent / "model.onnx"
        rep = export_model(checkpoint, onnx_path, force=True, timing=True)
        return float(rep.latency_ms_per_jet)
