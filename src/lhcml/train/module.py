"""The LightningModule that trains any :class:`~lhcml.models.base.TaggerModel`.

Loss = sum of the model's head losses (weighted cross-entropy for the jet head, auxiliary
heads with their weights) + the configured extra losses (:mod:`lhcml.train.extra_losses`).
Logged per epoch: ``train_loss``, ``val_loss``, each component ``<stage>_loss_<head>``,
``val_accuracy`` and the validation rejections ``val_rej_<class>`` of every background class
at the configured signal efficiency (discriminant ``ln(p_s / sum_k f_k p_k)``). Each epoch's
validation metrics are appended to :attr:`TaggerModule.val_history` and passed to the
callables in :attr:`TaggerModule.epoch_hooks` (``hook(epoch, metrics)``), which is how the
tuning stage reports and prunes trials; a hook that returns ``True`` ends training after this
epoch, with its checkpoint (:class:`lhcml.train.budget.TimeBudget`). Under DDP the validation predictions of all ranks are
gathered first, so the rejections are those of the whole validation set on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from lhcml.train.config import TrainConfig


class TaggerModule(L.LightningModule):
    """Lightning wrapper: steps, losses, metrics, optimiser and LR schedule.

    Parameters
    ----------
    model
        A registered tagger (normalisation already set).
    cfg
        The resolved training config.
    class_names
        Output class names in order.
    extra_losses
        Extra loss modules (their parameters are trained too).
    meta
        Metadata stored in every checkpoint under ``"lhcml"`` (YAML strings and plain lists
        only, so checkpoints load with ``torch.load(weights_only=True)``).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        class_names: Sequence[str],
        extra_losses: Sequence[nn.Module] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.class_names = list(class_names)
        self.extra_losses = nn.ModuleList(extra_losses)
        self.meta = dict(meta or {})
        self.val_history: list[dict[str, float]] = []
        self.epoch_hooks: list[Callable[[int, dict[str, float]], None]] = []
        self._val_store: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.model(batch)

    def _step(self, batch: Mapping[str, Tensor], stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.model(batch)
        losses = self.model.losses(out, batch)
        for el in self.extra_losses:
            losses[el.registry_name or type(el).__name__] = el.weight * el(out, batch)
        total = torch.stack(list(losses.values())).sum()
        bs = int(batch["labels"].shape[0])
        on_step = stage == "train"
        self.log(f"{stage}_loss", total, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        if len(losses) > 1:
            for k, v in losses.items():
                self.log(f"{stage}_loss_{k}", v, on_epoch=True, on_step=False, batch_size=bs, sync_dist=True)
        return total, out

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        _, out = self._step(batch, "val")
        probs = torch.softmax(out["logits"].float(), dim=-1)
        w = batch["weights"].float()
        acc = ((probs.argmax(-1) == batch["labels"]).float() * w).sum() / w.sum()
        self.log("val_accuracy", acc, on_epoch=True, prog_bar=True, batch_size=len(w), sync_dist=True)
        self._val_store.append(
            (probs.detach().cpu().numpy(), batch["labels"].cpu().numpy(), w.cpu().numpy())
        )

    def validation_rejections(self, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, float]:
        """``{"val_rej_<bkg>": rejection}`` at ``validation.efficiency`` (empty if unavailable)."""
        from lhcml.metrics.discriminants import discriminant
        from lhcml.metrics.rejection import rejection_at_efficiency

        v = self.cfg.validation
        if v.signal is None or v.signal not in self.class_names:
            return {}
        fr = {k: f for k, f in v.fractions.items() if k in self.class_names}
        if not fr or abs(sum(fr.values()) - 1) > 1e-6:
            return {}
        p = {c: probs[:, i] for i, c in enumerate(self.class_names)}
        disc = discriminant(p, v.signal, fr)
        s = labels == self.class_names.index(v.signal)
        out = {}
        if s.sum() == 0:
            return out
        for i, c in enumerate(self.class_names):
            b = labels == i
            if c == v.signal or b.sum() == 0:
                continue
            rej, _ = rejection_at_efficiency(disc[s], disc[b], v.efficiency, weights[s], weights[b])
            out[f"val_rej_{c}"] = float(rej) if np.isfinite(rej) else float(b.sum())
        return out

    def on_validation_epoch_start(self) -> None:
        self._val_store = []

    def _gathered_predictions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This epoch's validation (probs, labels, weights), from every rank under DDP."""
        n = len(self.class_names)
        store = self._val_store or [(np.zeros((0, n), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))]
        local = tuple(np.concatenate(x) for x in zip(*store, strict=True))
        self._val_store = []
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return local
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)  # every rank calls this, also with no batches
        return tuple(np.concatenate(x) for x in zip(*parts, strict=True))

    def on_validation_epoch_end(self) -> None:
        # the rejections are computed on the whole validation set: per-rank values averaged
        # afterwards are not the rejection of the union (a quantile of the signal, a ratio)
        probs, labels, w = self._gathered_predictions()
        if len(labels) == 0:
            return
        rej = self.validation_rejections(probs, labels, w)
        for k, val in rej.items():
            self.log(k, val, on_epoch=True, sync_dist=False)  # the same value on every rank
        if self.trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val_")}
        metrics.update(rej)
        metrics["epoch"] = float(self.current_epoch)
        self.val_history.append(metrics)
        for hook in self.epoch_hooks:
            if hook(self.current_epoch, metrics) is True:  # the hook asks to stop after this epoch
                self.trainer.should_stop = True

    def configure_optimizers(self) -> Any:
        from lhcml.train.schedule import make_optimizer, make_scheduler

        o = self.cfg.optimizer
        opt = make_optimizer([p for p in self.parameters() if p.requires_grad], o)
        steps = self.trainer.estimated_stepping_batches
        steps = int(steps) + 1 if np.isfinite(steps) else 10_000
        sched = make_scheduler(opt, self.cfg.scheduler, steps, o.lr)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lhcml"] = dict(self.meta)
