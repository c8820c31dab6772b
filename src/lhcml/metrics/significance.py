"""Discovery significance estimators for event classification.

- ``s / sqrt(b)`` and ``s / sqrt(s + b)``: simple approximations, valid for s << b.
- Asimov: Z_A = sqrt(2 ((s + b) ln(1 + s/b) - s)) (Cowan, Cranmer, Gross, Vitells,
  EPJC 71 (2011) 1554, eq. 97); with a background uncertainty sigma_b the profiled version
  Z = sqrt(2 ((s+b) ln[(s+b)(b+sigma^2) / (b^2 + (s+b) sigma^2)]
            - b^2/sigma^2 ln[1 + sigma^2 s / (b (b + sigma^2))])).
- AMS of the HiggsML challenge (Adam-Bourdarios et al., JMLR W&CP 42 (2015)):
  AMS = sqrt(2 ((s + b + b_reg) ln(1 + s / (b + b_reg)) - s)), b_reg = 10.
"""

from __future__ import annotations

import numpy as np

#: the regularisation term of the HiggsML challenge AMS
AMS_B_REG = 10.0


def s_over_sqrt_b(s: float | np.ndarray, b: float | np.ndarray) -> float | np.ndarray:
    """``s / sqrt(b)`` (inf for b = 0 and s > 0).

    Parameters
    ----------
    s, b : float | np.ndarray
        Expected signal and background yields.

    Returns
    -------
    float | np.ndarray
        The estimate.
    """
    s, b = np.asarray(s, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = s / np.sqrt(b)
    return float(out) if out.ndim == 0 else out


def s_over_sqrt_s_plus_b(s: float | np.ndarray, b: float | np.ndarray) -> float | np.ndarray:
    """``s / sqrt(s + b)``.

    Parameters
    ----------
    s, b : float | np.ndarray
        Expected signal and background yields.

    Returns
    -------
    float | np.ndarray
        The estimate.
    """
    s, b = np.asarray(s, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = s / np.sqrt(s + b)
    return float(out) if out.ndim == 0 else out


def asimov_z(
    s: float | np.ndarray, b: float | np.ndarray, sigma_b: float | np.ndarray | None = None
) -> float | np.ndarray:
    """Median discovery significance from the Asimov data set.

    Parameters
    ----------
    s, b : float | np.ndarray
        Expected signal and background yields (b > 0).
    sigma_b : float | np.ndarray | None, optional
        Absolute uncertainty on b; None (or 0) gives the formula without uncertainty.

    Returns
    -------
    float | np.ndarray
        Z_A.
    """
    s, b = np.asarray(s, dtype=float), np.asarray(b, dtype=float)
    if np.any(b <= 0):
        raise ValueError("the Asimov significance needs b > 0")
    if sigma_b is None or np.all(np.asarray(sigma_b) == 0):
        z2 = 2.0 * ((s + b) * np.log1p(s / b) - s)
    else:
        v = np.asarray(sigma_b, dtype=float) ** 2
        z2 = 2.0 * (
            (s + b) * np.log((s + b) * (b + v) / (b**2 + (s + b) * v))
            - (b**2 / v) * np.log1p(v * s / (b * (b + v)))
        )
    out = np.sqrt(np.maximum(z2, 0.0))
    return float(out) if out.ndim == 0 else out


def ams(
    s: float | np.ndarray, b: float | np.ndarray, b_reg: float = AMS_B_REG
) -> float | np.ndarray:
    """Approximate median significance of the HiggsML challenge.

    Parameters
    ----------
    s, b : float | np.ndarray
        Weighted signal and background counts selected.
    b_reg : float, optional
        Regularisation term, by default 10.

    Returns
    -------
    float | np.ndarray
        AMS.
    """
    s, b = np.asarray(s, dtype=float), np.asarray(b, dtype=float)
    br = b + b_reg
    out = np.sqrt(np.maximum(2.0 * ((s + br) * np.log1p(s / br) - s), 0.0))
    return float(out) if out.ndim == 0 else out


def best_cut(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
    metric: str = "ams",
    n_cuts: int = 200,
) -> dict[str, float]:
    """Scan cuts ``D >= cut`` on quantiles of the signal discriminant and maximise a significance.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background discriminants.
    w_sig, w_bkg : np.ndarray | None, optional
        Event weights normalised to the expected yields.
    metric : str, optional
        ``ams``, ``asimov``, ``s_over_sqrt_b`` or ``s_over_sqrt_s_plus_b``.
    n_cuts : int, optional
        Number of cut values scanned.

    Returns
    -------
    dict[str, float]
        ``cut``, ``s``, ``b`` and ``significance`` at the maximum.
    """
    funcs = {
        "ams": ams,
        "asimov": lambda s, b: asimov_z(s, np.maximum(b, 1e-12)),
        "s_over_sqrt_b": s_over_sqrt_b,
        "s_over_sqrt_s_plus_b": s_over_sqrt_s_plus_b,
    }
    if metric not in funcs:
        raise ValueError(f"unknown significance metric '{metric}' (valid: {', '.join(funcs)})")
    ds = np.asarray(disc_sig, dtype=float)
    db = np.asarray(disc_bkg, dtype=float)
    ws = np.ones_like(ds) if w_sig is None else np.asarray(w_sig, dtype=float)
    wb = np.ones_like(db) if w_bkg is None else np.asarray(w_bkg, dtype=float)
    cuts = np.unique(np.quantile(ds, np.linspace(0.0, 1.0, n_cuts, endpoint=False)))

    def passed(d: np.ndarray, w: np.ndarray) -> np.ndarray:
        order = np.argsort(d)
        cum = np.concatenate([[0.0], np.cumsum(w[order])])
        return cum[-1] - cum[np.searchsorted(d[order], cuts, side="left")]

    s, b = passed(ds, ws), passed(db, wb)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.asarray(funcs[metric](s, b), dtype=float)
    z = np.where(np.isfinite(z), z, -np.inf)
    i = int(np.argmax(z))
    return {"cut": float(cuts[i]), "s": float(s[i]), "b": float(b[i]), "significance": float(z[i])}
