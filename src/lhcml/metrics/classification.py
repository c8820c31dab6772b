"""Classification metrics without scikit-learn: weighted AUC, accuracy, rejection at fixed
signal efficiency.
"""

from __future__ import annotations

import numpy as np

from lhcml.metrics.rejection import rejection_at_efficiency


def auc(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> float:
    """Area under the ROC curve (eps_B vs eps_S convention): P(D_sig > D_bkg) + P(tie) / 2.

    This is the (weighted) Mann-Whitney U statistic divided by ``sum(w_sig) * sum(w_bkg)``; it
    equals the trapezoidal area under the background-efficiency-vs-signal-efficiency ROC (as
    ``sklearn.metrics.roc_auc_score``). Computed in O(N log N) by sorting; ties count one half.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Scores of signal and background.
    w_sig, w_bkg : np.ndarray | None, optional
        Weights (unit if None).

    Returns
    -------
    float
        The AUC in [0, 1]; NaN if either class is empty or has zero total weight.
    """
    s = np.asarray(disc_sig, dtype=np.float64).ravel()
    b = np.asarray(disc_bkg, dtype=np.float64).ravel()
    ws = np.ones_like(s) if w_sig is None else np.asarray(w_sig, dtype=np.float64).ravel()
    wb = np.ones_like(b) if w_bkg is None else np.asarray(w_bkg, dtype=np.float64).ravel()
    tot_s, tot_b = ws.sum(), wb.sum()
    if s.size == 0 or b.size == 0 or tot_s == 0 or tot_b == 0:
        return float("nan")
    values = np.concatenate([s, b])
    uniq, inv = np.unique(values, return_inverse=True)
    sig_w = np.bincount(inv[: s.size], weights=ws, minlength=uniq.size)
    bkg_w = np.bincount(inv[s.size :], weights=wb, minlength=uniq.size)
    bkg_below = np.cumsum(bkg_w) - bkg_w
    u = np.sum(sig_w * (bkg_below + 0.5 * bkg_w))
    return float(u / (tot_s * tot_b))


def auc_from_labels(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """AUC for binary labels (1 = signal, 0 = background).

    Parameters
    ----------
    scores : np.ndarray
        Discriminant.
    labels : np.ndarray
        Truth (bool or 0/1).
    weights : np.ndarray | None, optional
        Weights.

    Returns
    -------
    float
        The AUC.
    """
    lab = np.asarray(labels).astype(bool)
    w = None if weights is None else np.asarray(weights)
    return auc(
        scores[lab],
        scores[~lab],
        None if w is None else w[lab],
        None if w is None else w[~lab],
    )


def accuracy(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Multi-class accuracy: (weighted) fraction with ``argmax(probs) == label``.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, n_classes) scores.
    labels : np.ndarray
        Integer class indices (0 .. n_classes-1), shape (N,).
    weights : np.ndarray | None, optional
        Weights.

    Returns
    -------
    float
        The accuracy; NaN for an empty sample.
    """
    p = np.asarray(probs)
    if p.ndim != 2 or len(p) != len(labels):
        raise ValueError(f"probs must have shape (N, n_classes) with N={len(labels)}, got {p.shape}")
    if len(p) == 0:
        return float("nan")
    correct = (np.argmax(p, axis=1) == np.asarray(labels)).astype(np.float64)
    if weights is None:
        return float(correct.mean())
    w = np.asarray(weights, dtype=np.float64)
    return float(np.sum(w * correct) / np.sum(w))


def confusion_matrix(
    probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, normalize: bool = True
) -> np.ndarray:
    """Confusion matrix ``M[true, predicted]`` from argmax predictions.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, n_classes) scores.
    labels : np.ndarray
        Integer true classes.
    weights : np.ndarray | None, optional
        Weights.
    normalize : bool, optional
        Normalise each true-class row to 1, by default True.

    Returns
    -------
    np.ndarray
        Shape (n_classes, n_classes).
    """
    p = np.asarray(probs)
    k = p.shape[1]
    pred = np.argmax(p, axis=1)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
    m = np.bincount(np.asarray(labels) * k + pred, weights=w, minlength=k * k).reshape(k, k)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            m = m / m.sum(axis=1, keepdims=True)
    return m


def rejection_at(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    sig_eff: float,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> float:
    """1/eps_B at fixed eps_S (e.g. 0.3 and 0.5 in top tagging); see
    :func:`lhcml.metrics.rejection.rejection_at_efficiency` for the error.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background scores.
    sig_eff : float
        Signal efficiency.
    w_sig, w_bkg : np.ndarray | None, optional
        Weights.

    Returns
    -------
    float
        The rejection.
    """
    return rejection_at_efficiency(disc_sig, disc_bkg, sig_eff, w_sig, w_bkg)[0]
