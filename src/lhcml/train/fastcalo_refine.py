"""Training of the refinement classifier of classifier-refined sampling (:mod:`lhcml.models.fastcalo.refine`).

:func:`fit_refinement` trains a :class:`~lhcml.models.fastcalo.refine.RefinementClassifier` to tell detailed showers
(label 1) from a generator's (label 0) drawn at the *same* conditions (shower ``i`` of both samples shares its
incident energy, |eta| and phi; the pairs are split together, so the held-out split has both classes at the same
conditions). Balanced classes and the binary cross-entropy make ``exp(logit)`` an estimate of the density ratio
detailed / generated; the epoch with the lowest held-out loss is kept (our choice: the weights' calibration is what
matters, not the accuracy). :func:`weighted_separation` is the check that the weights calibrate: the held-out
generated showers' feature histograms, weighted with ``w``, should move onto the detailed ones.

:func:`fit_distilled` trains a ``stage="raw"`` classifier that scores the generator's showers *before* the correction
chain: it regresses a corrected-stage classifier's logit of the chain's output from the raw shower (knowledge
distillation; :mod:`lhcml.models.fastcalo.refine`, "Scoring before the correction chain").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lhcml.errors import ConfigError
from lhcml.metrics.fastcalo import separation_power


def weighted_separation(ref: np.ndarray, gen: np.ndarray, weights: np.ndarray | None = None, n_bins: int = 50) -> float:
    """:func:`lhcml.metrics.fastcalo.separation_power` of ``ref`` and ``gen`` binned in equal-count quantiles of
    ``ref``, the generated histogram weighted with ``weights`` (``None``: unweighted)."""
    r, g = np.asarray(ref, np.float64), np.asarray(gen, np.float64)
    edges = np.unique(np.quantile(r, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 3:
        edges = np.unique(np.concatenate([edges, [r.min() - 1, r.max() + 1]]))
    edges[0], edges[-1] = min(edges[0], g.min()), max(edges[-1], g.max())
    return separation_power(np.histogram(r, edges)[0], np.histogram(g, edges, weights=weights)[0])


def _fit_loop(clf: Any, xs: Any, y: Any, tr: Any, va: Any, lossf: Callable[[Any, Any], Any], *, epochs: int,
              batch: int, lr: float, patience: int, seed: int, min_delta: float, keys: tuple[str, str], line: str,
              log: Callable[[str], None] | None) -> dict[str, Any]:  # fmt: skip
    """Train ``clf.net`` on the standardised inputs ``xs`` rows ``tr`` against ``y`` (Adam, a cosine schedule to
    ``lr / 20``, a shuffle per epoch from ``seed``), keep the epoch with the lowest loss on rows ``va`` (stop after
    ``patience`` epochs without one lower by ``min_delta``) and load it into ``clf``. Returns ``{keys[0]: train
    losses, keys[1]: held-out losses, "best_epoch"}``; ``line`` formats the log line (``ep``, ``tr``, ``va``)."""
    import torch

    opt = torch.optim.Adam(clf.net.parameters(), lr=lr)
    steps = max(1, math.ceil(len(tr) / batch)) * int(epochs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 20)
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, Any] = {keys[0]: [], keys[1]: []}
    best, best_state, since, best_epoch = math.inf, None, 0, -1
    for ep in range(int(epochs)):
        clf.net.train()
        order = tr[torch.randperm(len(tr), generator=gen)]
        tot = 0.0
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            opt.zero_grad()
            loss = lossf(clf.net(xs[idx]).squeeze(1), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        clf.net.eval()
        with torch.no_grad():
            vl = float(lossf(clf.net(xs[va]).squeeze(1), y[va]))
        hist[keys[0]].append(tot / len(tr))
        hist[keys[1]].append(vl)
        if log is not None:
            log(line.format(ep=ep + 1, tr=tot / len(tr), va=vl))
        if vl < best - min_delta:
            best, since, best_epoch = vl, 0, ep + 1
            best_state = {k: v.clone() for k, v in clf.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    if best_state is not None:
        clf.load_state_dict(best_state)
    hist["best_epoch"] = best_epoch
    return hist


def fit_refinement(
    detailed: np.ndarray, generated: np.ndarray, energies: np.ndarray, cond: np.ndarray,
    layer_sizes: Sequence[int], centres: Any, *, binning_sha256: str = "",
    hidden: Sequence[int] | None = None, epochs: int = 20, batch: int = 1000, lr: float = 1e-3,
    val_fraction: float = 0.2, patience: int = 4, seed: int = 1, calibrate: bool = False,
    input_clip: float | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train the refinement classifier (module docstring).

    Parameters
    ----------
    detailed, generated
        ``(N, V)`` GeV showers, pair ``i`` at the same condition.
    energies, cond
        ``(N,)`` incident energies (GeV) and ``(N, C)`` the generator's condition encoding of each pair
        (:meth:`FastCaloGenerator.condition`).
    layer_sizes, centres
        The binning's voxels per layer and ``(2, V)`` voxel centres.
    epochs, batch, lr, patience
        Adam with a cosine schedule to ``lr / 20``; stop after ``patience`` epochs without a lower held-out loss.
    val_fraction
        Share of the pairs held out (early stopping, the temperature and the returned diagnostics).
    calibrate
        Divide the logits by the temperature that minimises the held-out loss (:func:`fit_temperature`; the held-out
        split then also serves the calibration, so its diagnostics are slightly optimistic). Opt-in: on cuph4 it
        softened the choice (T = 1.28) and the refinement gained less.
    input_clip
        Clamp the standardised inputs to +-this (``RefinementClassifier``'s ``input_clip``; ``None``: no clamp).

    Returns
    -------
    (classifier, history)
        The classifier in eval mode (the best epoch, calibrated) and ``{"train_loss", "val_loss", "best_epoch",
        "val_auc", "n_train", "n_val", "val_index", "temperature"}`` (``val_index``: the held-out pairs, for the caller's checks).
    """
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn

    from lhcml.models.fastcalo.refine import DEFAULT_HIDDEN, RefinementClassifier

    detailed, generated = np.asarray(detailed, np.float32), np.asarray(generated, np.float32)
    n = len(detailed)
    if generated.shape != detailed.shape:
        raise ConfigError(f"detailed {detailed.shape} and generated {generated.shape} showers must be pairs of one shape")
    if len(energies) != n or len(cond) != n:
        raise ConfigError(f"{len(energies)} energies and {len(cond)} conditions for {n} shower pairs")
    if n < 20:
        raise ConfigError(f"the refinement classifier needs at least 20 shower pairs, got {n}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    torch.manual_seed(seed)
    clf = RefinementClassifier(layer_sizes, centres, np.asarray(cond).shape[1], hidden or DEFAULT_HIDDEN, binning_sha256,
                               input_clip)  # fmt: skip
    e = torch.as_tensor(np.asarray(energies, np.float32))
    c = torch.as_tensor(np.asarray(cond, np.float32))
    with torch.no_grad():
        x = torch.cat([clf.features(torch.from_numpy(detailed), e, c), clf.features(torch.from_numpy(generated), e, c)])
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = max(int(round(val_fraction * n)), 1)
    val_pairs, tr_pairs = np.sort(perm[:n_val]), perm[n_val:]
    tr = torch.as_tensor(np.concatenate([tr_pairs, tr_pairs + n]))
    va = torch.as_tensor(np.concatenate([val_pairs, val_pairs + n]))
    mu = x[tr].mean(0)
    sd = x[tr].std(0)
    clf.mean.copy_(mu)
    clf.std.copy_(torch.where(sd > 0, sd, torch.ones_like(sd)))
    xs = (x - clf.mean) / clf.std
    if clf.input_clip is not None:
        xs = torch.clamp(xs, -clf.input_clip, clf.input_clip)
    del x
    hist = _fit_loop(clf, xs, y, tr, va, nn.BCEWithLogitsLoss(), epochs=epochs, batch=batch, lr=lr, patience=patience,
                     seed=seed, min_delta=1e-6, keys=("train_loss", "val_loss"),
                     line="refinement epoch {ep}: train loss {tr:.5f}, held-out loss {va:.5f}", log=log)  # fmt: skip
    clf.eval()
    with torch.no_grad():
        p = clf.net(xs[va]).squeeze(1).numpy()
    temperature = 1.0
    if calibrate:
        temperature = fit_temperature(p, y[va].numpy())
        with torch.no_grad():  # logit / T, folded into the last layer
            clf.net[-1].weight.div_(temperature)
            clf.net[-1].bias.div_(temperature)
    hist.update(val_auc=float(roc_auc_score(y[va].numpy(), p)), n_train=int(len(tr_pairs)),
                n_val=int(n_val), val_index=val_pairs, temperature=temperature)  # fmt: skip
    return clf, hist


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` (0.05-50, log grid then a finer one) minimising the binary cross-entropy of
    ``sigmoid(logits / T)``: one scalar of calibration (Guo et al., arXiv:1706.04599), which keeps the order of the
    logits and so the AUC."""
    z, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)

    def bce(t: float) -> float:
        a = z / t
        return float(np.mean(np.logaddexp(0.0, a) - y * a))

    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 61))
    best = grid[int(np.argmin([bce(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.12, 0.12, 25))
    return float(fine[int(np.argmin([bce(t) for t in fine]))])


def fit_distilled(
    raw: np.ndarray, teacher_logits: np.ndarray, energies: np.ndarray, cond: np.ndarray,
    layer_sizes: Sequence[int], centres: Any, *, binning_sha256: str = "", chain_sha256: str = "",
    hidden: Sequence[int] | None = None, epochs: int = 30, batch: int = 1000, lr: float = 1e-3,
    val_fraction: float = 0.1, patience: int = 4, seed: int = 1, logit_clip: float = 12.0,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train a ``stage="raw"`` refinement classifier: the generator's raw showers ``raw`` ``(N, V)`` (GeV) in,
    ``teacher_logits`` ``(N,)`` out (the corrected-stage classifier's logits of the same showers after the chain),
    by mean squared error on the logits clipped to +-``logit_clip``; Adam with a cosine schedule to ``lr / 20``, the
    epoch with the lowest held-out error kept (stop after ``patience`` epochs without one).

    Returns ``(student in eval mode, history)`` with ``train_mse``, ``val_mse`` per epoch, ``best_epoch``,
    ``val_r2`` (the held-out share of the teacher's logit variance the student explains), ``val_corr`` (their
    Pearson correlation), ``n_train``, ``n_val`` and ``val_index``."""
    import torch

    from lhcml.models.fastcalo.refine import DEFAULT_HIDDEN, RefinementClassifier

    raw = np.asarray(raw, np.float32)
    t = np.asarray(teacher_logits, np.float64).reshape(-1)
    n = len(raw)
    if len(t) != n or len(energies) != n or len(cond) != n:
        raise ConfigError(f"{n} raw showers, {len(t)} teacher logits, {len(energies)} energies and {len(cond)} "
                          "conditions: one of each per shower")  # fmt: skip
    if n < 20:
        raise ConfigError(f"the distillation needs at least 20 showers, got {n}")
    if not np.all(np.isfinite(t)):
        raise ConfigError(f"{int(np.sum(~np.isfinite(t)))} teacher logits are NaN or infinite")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    torch.manual_seed(seed)
    clf = RefinementClassifier(layer_sizes, centres, np.asarray(cond).shape[1], hidden or DEFAULT_HIDDEN, binning_sha256,
                               None, "raw", chain_sha256)  # fmt: skip
    e = torch.as_tensor(np.asarray(energies, np.float32))
    c = torch.as_tensor(np.asarray(cond, np.float32))
    with torch.no_grad():
        x = torch.cat([clf.features(torch.from_numpy(raw[i:i + 20000]), e[i:i + 20000], c[i:i + 20000])
                       for i in range(0, n, 20000)])  # fmt: skip
    y = torch.as_tensor(np.clip(t, -logit_clip, logit_clip), dtype=torch.float32)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = max(int(round(val_fraction * n)), 1)
    va, tr = torch.as_tensor(np.sort(perm[:n_val])), torch.as_tensor(perm[n_val:])
    sd = x[tr].std(0)
    clf.mean.copy_(x[tr].mean(0))
    clf.std.copy_(torch.where(sd > 0, sd, torch.ones_like(sd)))
    xs = (x - clf.mean) / clf.std
    del x
    # the network's last bias starts at the mean logit, so the first epochs learn the spread, not the offset
    with torch.no_grad():
        clf.net[-1].bias.fill_(float(y[tr].mean()))
    hist = _fit_loop(clf, xs, y, tr, va, torch.nn.MSELoss(), epochs=epochs, batch=batch, lr=lr,
                     patience=patience, seed=seed, min_delta=1e-7, keys=("train_mse", "val_mse"),
                     line="distillation epoch {ep}: train MSE {tr:.5f}, held-out MSE {va:.5f}", log=log)  # fmt: skip
    clf.eval()
    with torch.no_grad():
        pred = clf.net(xs[va]).squeeze(1).numpy().astype(np.float64)
    target = y[va].numpy().astype(np.float64)
    var = float(np.var(target))
    r2 = float(1.0 - np.mean((pred - target) ** 2) / var) if var > 0 else float("nan")
    corr = float(np.corrcoef(pred, target)[0, 1]) if var > 0 and np.var(pred) > 0 else float("nan")
    hist.update(val_r2=r2, val_corr=corr, n_train=int(len(tr)), n_val=int(n_val),
                val_index=va.numpy())  # fmt: skip
    return clf, hist


__all__ = ["fit_distilled", "fit_refinement", "fit_temperature", "weighted_separation"]
