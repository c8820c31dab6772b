"""Mass-decorrelation losses for boosted taggers, as plug-ins of :mod:`lhcml.train.extra_losses`.

* ``adversary`` — the pivot / adversarial decorrelation (Louppe, Kagan, Cranmer, NeurIPS 2017;
  Shimmin et al., PRD 96 (2017) 074034): an adversary network sees the classifier's class
  probabilities of **background** jets and predicts their mass, either as a categorical
  distribution over mass bins (``mode: binned``, cross-entropy) or as a Gaussian mixture
  (``mode: gmm``, negative log-likelihood, 20 components as Louppe et al.). The classifier sees
  the adversary's gradient through a gradient-reversal layer (Ganin & Lempitsky) with strength
  ``grl_lambda``, so one optimiser trains both: the adversary minimises its loss, the classifier
  minimises ``L_clf − λ·w·L_adv`` (w = the extra-loss ``weight``).
* ``disco`` — DisCo (Kasieczka & Shih, PRL 125 (2020) 122001): ``weight · dCor²(mass, score)``
  over background jets with per-jet weights, the weighted V-statistic distance correlation (the
  same definition as :func:`lhcml.metrics.decorrelation.distance_correlation`). ``score`` is the
  softmax probability of ``signal_class``.

``background_classes`` and ``signal_class`` are class indices in ``data.classes`` order (the
boosted configs list ``qcd`` first). Masses are read from the ``jets.mass`` field (MeV).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.layers import MLP
from lhcml.train.extra_losses import ExtraLoss, register_extra_loss


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lam: float) -> Tensor:  # noqa: D401
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: Tensor, lam: float = 1.0) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-lam`` in the backward pass."""
    return _GradReverse.apply(x, lam)


class GradientReversal(nn.Module):
    """Gradient-reversal layer with strength ``lam``."""

    def __init__(self, lam: float = 1.0) -> None:
        super().__init__()
        self.lam = float(lam)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lam)


def distance_correlation_torch(
    x: Tensor, y: Tensor, weights: Tensor | None = None, squared: bool = True
) -> Tensor:
    """Weighted (V-statistic) distance correlation of two 1-D tensors, differentiable.

    With normalised weights w: ``a_ij = |x_i − x_j|``, ``A = a − a_i. − a_.j + a..`` (weighted
    means), likewise B; ``dCov² = Σ w_i w_j A_ij B_ij``;
    ``dCor² = dCov²(x, y) / sqrt(dCov²(x, x) dCov²(y, y))``. Returns dCor² (``squared=True``,
    the DisCo regulariser) or dCor. O(N²) memory.
    """
    x = x.reshape(-1).double()
    y = y.reshape(-1).double()
    w = torch.ones_like(x) if weights is None else weights.reshape(-1).double()
    w = w / w.sum().clamp(min=1e-300)

    def centred(v: Tensor) -> Tensor:
        a = (v.unsqueeze(0) - v.unsqueeze(1)).abs()
        row = a @ w
        grand = row @ w
        return a - row.unsqueeze(0) - row.unsqueeze(1) + grand

    a, b = centred(x), centred(y)
    ww = w.unsqueeze(0) * w.unsqueeze(1)
    cov = (a * b * ww).sum()
    vx = (a * a * ww).sum()
    vy = (b * b * ww).sum()
    den = torch.sqrt(vx * vy)
    dcor2 = torch.where(den > 0, cov / den.clamp(min=1e-300), torch.zeros_like(cov))
    out = dcor2 if squared else torch.sqrt(dcor2.clamp(min=0))
    return out.to(torch.float32)


def _background_mask(labels: Tensor, background_classes: Sequence[int]) -> Tensor:
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for c in background_classes:
        mask = mask | (labels == int(c))
    return mask


@register_extra_loss("disco")
class DisCoLoss(ExtraLoss):
    """DisCo: ``dCor²(jet mass, p_signal)`` on background jets (see the module docstring).

    Parameters
    ----------
    weight
        λ of DisCo (the loss is ``λ · dCor²``).
    signal_class
        Index of the class whose softmax probability is decorrelated.
    background_classes
        Indices of the background classes whose mass must not be sculpted.
    """

    batch_fields = {"jets": ["mass"]}

    def __init__(
        self, weight: float = 1.0, signal_class: int = 1, background_classes: Sequence[int] = (0,)
    ) -> None:
        super().__init__(weight)
        if not background_classes:
            raise ConfigError("disco needs at least one background class index")
        self.signal_class = int(signal_class)
        self.background_classes = [int(c) for c in background_classes]

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        logits = outputs["logits"].float()
        if self.signal_class >= logits.shape[1]:
            raise ConfigError(f"disco.signal_class={self.signal_class} but the model has {logits.shape[1]} classes")
        score = torch.softmax(logits, dim=1)[:, self.signal_class]
        bkg = _background_mask(batch["labels"], self.background_classes)
        if int(bkg.sum()) < 2:
            return score.sum() * 0.0
        w = batch["weights"][bkg] if "weights" in batch else None
        return distance_correlation_torch(batch["jets_mass"][bkg].float(), score[bkg], w)


@register_extra_loss("adversary")
class MassAdversary(ExtraLoss):
    """Adversary predicting the background-jet mass from the class probabilities (pivot).

    Parameters
    ----------
    weight
        Weight of the adversary loss.
    grl_lambda
        Gradient-reversal strength λ seen by the classifier.
    mode
        ``"binned"`` (categorical over ``n_bins`` mass bins in ``[mass_min, mass_max]`` MeV; jets
        outside are not used) or ``"gmm"`` (Gaussian mixture of ``n_components`` in
        ``mass / mass_scale``).
    hidden
        Hidden sizes of the adversary MLP.
    background_classes
        Indices of the background classes.
    warmup_steps
        Training steps during which only the adversary learns (its input is detached), before
        the reversed gradient reaches the classifier (adversary pre-training, as Louppe et al.).

    In training mode the loss is the adversary's ``L_adv`` (the classifier sees ``−λ·L_adv``
    through the gradient reversal); in evaluation mode it returns ``−λ·L_adv`` (0 during the
    warm-up), so that the logged ``val_loss``, which selects the best checkpoint, is the
    classifier's objective ``L_clf − λ·w·L_adv``.
    """

    batch_fields = {"jets": ["mass"]}

    def __init__(
        self,
        weight: float = 1.0,
        grl_lambda: float = 1.0,
        mode: str = "binned",
        n_classes: int = 2,
        n_bins: int = 20,
        mass_min: float = 40e3,
        mass_max: float = 300e3,
        n_components: int = 20,
        mass_scale: float = 100e3,
        hidden: Sequence[int] = (64, 64),
        background_classes: Sequence[int] = (0,),
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(weight)
        if warmup_steps < 0:
            raise ConfigError("adversary.warmup_steps must be >= 0")
        self.warmup_steps = int(warmup_steps)
        #: training forward passes seen (saved with the checkpoint, so a resumed run continues)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        if mode not in ("binned", "gmm"):
            raise ConfigError(f"unknown adversary mode '{mode}' (valid: binned, gmm)")
        if mass_max <= mass_min or n_bins < 2 or n_components < 1 or mass_scale <= 0:
            raise ConfigError("adversary needs mass_max > mass_min, n_bins >= 2, n_components >= 1, mass_scale > 0")
        self.mode = mode
        self.grl = GradientReversal(grl_lambda)
        self.background_classes = [int(c) for c in background_classes]
        self.n_classes = int(n_classes)
        self.mass_scale = float(mass_scale)
        self.register_buffer("edges", torch.linspace(float(mass_min), float(mass_max), n_bins + 1))
        n_out = n_bins if mode == "binned" else 3 * n_components
        self.n_components = n_components
        self.net = MLP(self.n_classes, n_out, hidden=list(hidden), act="relu")

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        logits = outputs["logits"].float()
        if logits.shape[1] != self.n_classes:
            raise ConfigError(
                f"adversary.n_classes={self.n_classes} but the model has {logits.shape[1]} classes"
            )
        probs = torch.softmax(logits, dim=1)
        if self.training:
            self.steps += 1
        if self.training and int(self.steps) <= self.warmup_steps:
            probs = probs.detach()  # adversary pre-training: the classifier is not penalised yet
        else:
            probs = self.grl(probs)
        mass = batch["jets_mass"].float()
        use = _background_mask(batch["labels"], self.background_classes)
        w = batch["weights"].float() if "weights" in batch else torch.ones_like(mass)
        pred = self.net(probs)
        if self.mode == "binned":
            idx = torch.bucketize(mass, self.edges[1:-1])
            use = use & (mass >= self.edges[0]) & (mass < self.edges[-1])
            nll = nn.functional.cross_entropy(pred, idx, reduction="none")
        else:
            k = self.n_components
            logit_pi, mu, log_sigma = pred[:, :k], pred[:, k : 2 * k], pred[:, 2 * k :].clamp(-7, 5)
            m = (mass / self.mass_scale).unsqueeze(1)
            log_n = -0.5 * ((m - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
            nll = -torch.logsumexp(torch.log_softmax(logit_pi, dim=1) + log_n, dim=1)
        wu = torch.where(use, w, torch.zeros_like(w))
        if float(wu.sum()) <= 0:
            return pred.sum() * 0.0
        loss = (nll * wu).sum() / wu.sum()
        if not self.training:
            # validation reports the adversary's part of the classifier's current objective, so
            # that the monitored val_loss (checkpoint selection) is what the classifier minimises:
            # L_clf during the warm-up (adversary detached), then the pivot objective
            # L_clf − λ·w·L_adv (Louppe et al.). Reporting +L_adv would make checkpoint selection
            # prefer the epochs in which the adversary predicts the mass best (least decorrelated)
            if int(self.steps) <= self.warmup_steps:
                return loss * 0.0
            return -self.grl.lam * loss
        return loss
