"""Working points: discriminant cuts at fixed signal efficiency, efficiencies and their errors.

Conventions (shared with atlas-ftag-tools and puma, checked in ``tests/test_metrics_*``):

- The cut for a target signal efficiency ``eff`` is the weighted ``1 - eff`` quantile of the
  signal discriminant, with the mid-point weighted-percentile definition
  (cdf_i = (cumsum(w)_i - w_i / 2), rescaled to [0, 1], linear interpolation), as
  ``ftag.utils.weighted_percentile``.
- A jet passes when ``D >= cut`` (as ``ftag.utils.calculate_efficiency``; puma's
  ``VarVsEff`` uses ``>``; the two differ only for jets exactly on the cut).
- Binomial errors: sigma(eff) = sqrt(eff (1 - eff) / N), sigma(1/eff) = rej^2 sigma(eff).
  With weights, N is the effective sample size N_eff = (sum w)^2 / sum w^2 (as puma).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lhcml.errors import ConfigError

#: the standard b-tagging working points
DEFAULT_WORKING_POINTS: tuple[float, ...] = (0.60, 0.70, 0.77, 0.85)


def _as_weights(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.ones(len(values), dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != np.shape(values):
        raise ValueError(f"weights shape {w.shape} does not match values shape {np.shape(values)}")
    return w


def weighted_quantile(
    values: np.ndarray, q: float | np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray | float:
    """Weighted quantile with the mid-point convention of ``ftag.utils.weighted_percentile``.

    Parameters
    ----------
    values : np.ndarray
        1-D data.
    q : float | np.ndarray
        Quantile(s) in [0, 1].
    weights : np.ndarray | None, optional
        Per-value weights; None means unit weights.

    Returns
    -------
    np.ndarray | float
        The quantile(s); a float for a scalar ``q``.

    Raises
    ------
    ValueError
        If ``values`` is empty or the total weight is not positive.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot compute a quantile of an empty array")
    w = _as_weights(v, None if weights is None else np.asarray(weights).ravel())
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cdf = np.cumsum(w) - 0.5 * w
    # negative (NLO) weights can make the cdf decrease locally; keep it monotonic so the
    # interpolation is defined (identical to ftag for non-negative weights)
    cdf = np.maximum.accumulate(cdf)
    cdf -= cdf[0]
    if cdf[-1] <= 0:
        if v.size == 1:
            out = np.full(np.shape(q), v[0])
            return float(out) if np.ndim(q) == 0 else out
        raise ValueError("total weight must be positive to compute a weighted quantile")
    cdf /= cdf[-1]
    out = np.interp(q, cdf, v)
    return float(out) if np.ndim(q) == 0 else out


def effective_n(weights: np.ndarray | None, n: int | None = None) -> float:
    """Effective sample size ``(sum w)^2 / sum w^2`` (``n`` when unweighted).

    Parameters
    ----------
    weights : np.ndarray | None
        Weights, or None for unweighted.
    n : int | None, optional
        Number of entries, used when ``weights`` is None.

    Returns
    -------
    float
        The effective number of entries (0 for an empty sample).
    """
    if weights is None:
        return float(n or 0)
    w = np.asarray(weights, dtype=np.float64)
    s2 = float(np.sum(w**2))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def efficiency_error(eff: float | np.ndarray, n: float | np.ndarray) -> float | np.ndarray:
    """Binomial error ``sqrt(eff (1 - eff) / n)``.

    Parameters
    ----------
    eff : float | np.ndarray
        Efficiency.
    n : float | np.ndarray
        (Effective) number of entries in the denominator; must be > 0.

    Returns
    -------
    float | np.ndarray
        The error.
    """
    if np.any(np.asarray(n) <= 0):
        raise ValueError(f"number of entries must be > 0 to compute an efficiency error, got {n}")
    return np.sqrt(np.asarray(eff) * (1 - np.asarray(eff)) / n)


def rejection_error(rej: float | np.ndarray, n: float | np.ndarray) -> float | np.ndarray:
    """Error on a rejection ``1/eff`` propagated from the binomial error: ``rej^2 sigma(1/rej)``.

    Parameters
    ----------
    rej : float | np.ndarray
        Rejection (> 0).
    n : float | np.ndarray
        (Effective) number of background entries.

    Returns
    -------
    float | np.ndarray
        The error (NaN where the rejection is infinite).
    """
    rej = np.asarray(rej, dtype=np.float64)
    if np.any(rej == 0):
        raise ValueError("a rejection of 0 has no defined error")
    with np.errstate(divide="ignore", invalid="ignore"):
        err = rej**2 * efficiency_error(1.0 / rej, n)
    err = np.where(np.isfinite(rej), err, np.nan)
    return float(err) if err.ndim == 0 else err


def cut_at_efficiency(
    disc_sig: np.ndarray, eff: float | np.ndarray, weights: np.ndarray | None = None
) -> float | np.ndarray:
    """Discriminant cut(s) giving signal efficiency ``eff`` (weighted 1 - eff quantile).

    Parameters
    ----------
    disc_sig : np.ndarray
        Signal discriminant values.
    eff : float | np.ndarray
        Target efficiency (or efficiencies) in [0, 1].
    weights : np.ndarray | None, optional
        Signal weights.

    Returns
    -------
    float | np.ndarray
        Cut value(s).

    Raises
    ------
    ConfigError
        If an efficiency is outside [0, 1].
    """
    e = np.asarray(eff, dtype=np.float64)
    if np.any((e < 0) | (e > 1)):
        raise ConfigError(f"signal efficiencies must be in [0, 1], got {eff}")
    return weighted_quantile(disc_sig, 1.0 - e, weights)


def efficiency(
    disc: np.ndarray, cut: float, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """Fraction (weighted) of entries with ``disc >= cut`` and its binomial error.

    Parameters
    ----------
    disc : np.ndarray
        Discriminant values.
    cut : float
        Cut value.
    weights : np.ndarray | None, optional
        Weights; the error uses the effective number of entries.

    Returns
    -------
    tuple[float, float]
        (efficiency, error); (NaN, NaN) for an empty sample.
    """
    d = np.asarray(disc)
    if d.size == 0:
        return float("nan"), float("nan")
    w = _as_weights(d, weights)
    total = float(w.sum())
    if total <= 0:
        return float("nan"), float("nan")
    eff = float(w[d >= cut].sum()) / total
    n = effective_n(weights, d.size)
    return eff, float(efficiency_error(min(max(eff, 0.0), 1.0), n))


def rejection(
    disc: np.ndarray, cut: float, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """Background rejection ``1/eff`` at ``cut`` and its binomial error.

    Parameters
    ----------
    disc : np.ndarray
        Background discriminant values.
    cut : float
        Cut value.
    weights : np.ndarray | None, optional
        Background weights.

    Returns
    -------
    tuple[float, float]
        (rejection, error). Rejection is ``inf`` (error NaN) when nothing passes, NaN for an
        empty sample.
    """
    eff, _ = efficiency(disc, cut, weights)
    if not np.isfinite(eff):
        return float("nan"), float("nan")
    if eff <= 0:
        return float("inf"), float("nan")
    rej = 1.0 / eff
    n = effective_n(weights, np.asarray(disc).size)
    return rej, float(rejection_error(rej, n))


@dataclass
class WorkingPoint:
    """One working point: the cut, the signal efficiency and each background's rejection."""

    target_eff: float
    cut: float
    sig_eff: float
    sig_eff_err: float
    bkg_eff: dict[str, float] = field(default_factory=dict)
    bkg_eff_err: dict[str, float] = field(default_factory=dict)
    rejection: dict[str, float] = field(default_factory=dict)
    rejection_err: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-friendly dictionary (non-finite numbers become None)."""

        def clean(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {
            "target_eff": self.target_eff,
            "cut": clean(self.cut),
            "sig_eff": clean(self.sig_eff),
            "sig_eff_err": clean(self.sig_eff_err),
            "backgrounds": {
                b: {
                    "eff": clean(self.bkg_eff[b]),
                    "eff_err": clean(self.bkg_eff_err[b]),
                    "rejection": clean(self.rejection[b]),
                    "rejection_err": clean(self.rejection_err[b]),
                }
                for b in self.rejection
            },
        }


def working_points(
    disc_sig: np.ndarray,
    disc_bkg: dict[str, np.ndarray],
    effs: tuple[float, ...] | list[float] = DEFAULT_WORKING_POINTS,
    w_sig: np.ndarray | None = None,
    w_bkg: dict[str, np.ndarray | None] | None = None,
) -> list[WorkingPoint]:
    """Cuts, signal efficiencies and background rejections at a list of signal efficiencies.

    Parameters
    ----------
    disc_sig : np.ndarray
        Signal discriminant.
    disc_bkg : dict[str, np.ndarray]
        Background class name -> discriminant.
    effs : sequence of float, optional
        Target signal efficiencies, by default 60/70/77/85 %.
    w_sig : np.ndarray | None, optional
        Signal weights.
    w_bkg : dict[str, np.ndarray | None] | None, optional
        Background weights per class.

    Returns
    -------
    list[WorkingPoint]
        One entry per efficiency, in the given order.
    """
    w_bkg = w_bkg or {}
    cuts = np.atleast_1d(cut_at_efficiency(disc_sig, np.asarray(effs, dtype=float), w_sig))
    out = []
    for eff, cut in zip(effs, cuts, strict=True):
        se, se_err = efficiency(disc_sig, cut, w_sig)
        wp = WorkingPoint(float(eff), float(cut), se, se_err)
        for name, d in disc_bkg.items():
            be, be_err = efficiency(d, cut, w_bkg.get(name))
            r, r_err = rejection(d, cut, w_bkg.get(name))
            wp.bkg_eff[name], wp.bkg_eff_err[name] = be, be_err
            wp.rejection[name], wp.rejection_err[name] = r, r_err
        out.append(wp)
    return out
