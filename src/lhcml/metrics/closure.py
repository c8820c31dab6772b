"""Closure of a classifier between two samples: working points of one applied to the other.

A closure test asks whether a classifier behaves the same on two samples of the same physics
(e.g. detailed and fast-simulated showers of the same events): the cuts of its working points
are fixed on the *reference* sample (the signal-efficiency quantiles,
:func:`lhcml.metrics.working_points.cut_at_efficiency`) and applied unchanged to the *other*
sample; the signal efficiencies and background rejections of the two are compared.

Errors (:func:`transfer_working_points`): binomial on each sample
(:func:`lhcml.metrics.working_points.efficiency`). On the reference the binomial error of the
efficiency at its own quantile cut is the statistical uncertainty of the cut, expressed as an
efficiency. The difference is quoted in units of the two errors added in quadrature, i.e. the
samples are treated as independent; for two samples of the same events with independent showers
the positive correlation makes this conservative (the true error of the difference is smaller).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lhcml.errors import ConfigError
from lhcml.metrics.classification import auc
from lhcml.metrics.working_points import cut_at_efficiency, efficiency


@dataclass
class TransferredWorkingPoint:
    """One working point fixed on the reference sample and applied to another.

    ``sig_*`` are signal efficiencies, ``bkg_*`` background efficiencies, ``rej_*`` rejections
    ``1 / bkg``; ``*_ref`` on the reference sample, the others on the other sample; ``*_pull`` the
    difference other - reference over the quadrature sum of the two binomial errors (for the
    rejection: of the background efficiencies, which is where the statistics are).
    """

    target_eff: float
    cut: float
    sig_ref: float
    sig_ref_err: float
    sig: float
    sig_err: float
    sig_pull: float
    bkg_ref: float
    bkg_ref_err: float
    bkg: float
    bkg_err: float
    bkg_pull: float
    rej_ref: float
    rej_ref_err: float
    rej: float
    rej_err: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-friendly dictionary (non-finite numbers become None)."""
        return {k: (float(v) if np.isfinite(v) else None) for k, v in asdict(self).items()}


def _pull(a: float, ea: float, b: float, eb: float) -> float:
    err = float(np.hypot(ea, eb))
    if not err > 0:
        return 0.0 if a == b else float("inf") * np.sign(b - a)
    return (b - a) / err


def _rejection(eff: float, err: float) -> tuple[float, float]:
    if not eff > 0:
        return float("inf"), float("nan")
    return 1.0 / eff, err / eff**2


def transfer_working_points(
    sig_ref: np.ndarray,
    bkg_ref: np.ndarray,
    sig: np.ndarray,
    bkg: np.ndarray,
    effs: tuple[float, ...] | list[float] = (0.80, 0.90),
) -> list[TransferredWorkingPoint]:
    """Cuts at signal efficiencies ``effs`` on the reference, applied to the other sample.

    Parameters
    ----------
    sig_ref, bkg_ref : np.ndarray
        Discriminant (larger = more signal-like) of the reference sample's signal and background.
    sig, bkg : np.ndarray
        The same discriminant on the other sample.
    effs : sequence of float
        Target signal efficiencies on the reference, in (0, 1).

    Returns
    -------
    list[TransferredWorkingPoint]
        One per efficiency, in order (module docstring for the errors).

    Raises
    ------
    ConfigError
        If a sample is empty or an efficiency is outside (0, 1).
    """
    arrays = {"sig_ref": sig_ref, "bkg_ref": bkg_ref, "sig": sig, "bkg": bkg}
    for name, a in arrays.items():
        if np.asarray(a).size == 0:
            raise ConfigError(f"transfer_working_points: '{name}' is empty; every sample needs signal and background")
    e = np.asarray(effs, dtype=np.float64)
    if np.any((e <= 0) | (e >= 1)):
        raise ConfigError(f"working-point efficiencies must be in (0, 1), got {list(effs)}")
    cuts = np.atleast_1d(cut_at_efficiency(sig_ref, e))
    out = []
    for target, cut in zip(e, cuts, strict=True):
        s0, es0 = efficiency(sig_ref, cut)
        s1, es1 = efficiency(sig, cut)
        b0, eb0 = efficiency(bkg_ref, cut)
        b1, eb1 = efficiency(bkg, cut)
        r0, er0 = _rejection(b0, eb0)
        r1, er1 = _rejection(b1, eb1)
        out.append(TransferredWorkingPoint(
            float(target), float(cut), s0, es0, s1, es1, _pull(s0, es0, s1, es1),
            b0, eb0, b1, eb1, _pull(b0, eb0, b1, eb1), r0, er0, r1, er1,
        ))  # fmt: skip
    return out


def auc_bootstrap(
    disc_sig: np.ndarray, disc_bkg: np.ndarray, n_boot: int = 200, seed: int = 0
) -> tuple[float, float]:
    """AUC and its bootstrap standard deviation (signal and background resampled separately).

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Scores of signal and background.
    n_boot : int
        Bootstrap replicas (>= 2).
    seed : int
        Seed of the resampling.

    Returns
    -------
    tuple[float, float]
        (AUC of the full samples, standard deviation over the replicas).
    """
    if n_boot < 2:
        raise ConfigError(f"n_boot must be >= 2 for a bootstrap error, got {n_boot}")
    s = np.asarray(disc_sig, dtype=np.float64).ravel()
    b = np.asarray(disc_bkg, dtype=np.float64).ravel()
    if s.size == 0 or b.size == 0:
        raise ConfigError("auc_bootstrap: signal and background need at least one entry each")
    rng = np.random.default_rng(seed)
    reps = [auc(s[rng.integers(0, s.size, s.size)], b[rng.integers(0, b.size, b.size)]) for _ in range(n_boot)]
    return auc(s, b), float(np.std(reps, ddof=1))


def paired_transfer_bootstrap(
    disc_ref: np.ndarray,
    is_sig_ref: np.ndarray,
    groups_ref: np.ndarray,
    disc: np.ndarray,
    is_sig: np.ndarray,
    groups: np.ndarray,
    effs: tuple[float, ...] | list[float] = (0.80, 0.90),
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Errors of the closure differences (other - reference) with a paired event bootstrap.

    When the two samples hold the same events (``groups``, e.g. ``eventNumber``), their
    efficiencies are correlated and the quadrature of the binomial errors
    (:func:`transfer_working_points`) misjudges the error of the difference. Each replica draws one
    Poisson(1) weight per event, shared by both samples' candidates of that event, fixes the cut
    again at the target signal efficiency of the weighted reference and takes the difference of the
    weighted efficiencies: the error is the replicas' standard deviation.

    Parameters
    ----------
    disc_ref, is_sig_ref, groups_ref : np.ndarray
        Reference sample: discriminant, signal flag and event of each candidate.
    disc, is_sig, groups : np.ndarray
        The same for the other sample.
    effs : sequence of float
        Target signal efficiencies on the reference, in (0, 1).
    n_boot : int
        Replicas.
    seed : int
        Seed of the Poisson weights.

    Returns
    -------
    list[dict[str, float]]
        Per efficiency: ``target_eff``, ``sig_diff``/``bkg_diff`` (the differences on the samples
        themselves, cut fixed on the reference) and ``sig_diff_err``/``bkg_diff_err``.
    """
    e = np.asarray(effs, dtype=np.float64)
    if np.any((e <= 0) | (e >= 1)):
        raise ConfigError(f"working-point efficiencies must be in (0, 1), got {list(effs)}")
    if n_boot < 2:
        raise ConfigError(f"n_boot must be >= 2, got {n_boot}")
    d0, s0 = np.asarray(disc_ref, dtype=np.float64), np.asarray(is_sig_ref, dtype=bool)
    d1, s1 = np.asarray(disc, dtype=np.float64), np.asarray(is_sig, dtype=bool)
    _, inv = np.unique(np.concatenate([np.asarray(groups_ref), np.asarray(groups)]), return_inverse=True)
    inv0, inv1 = inv[: len(d0)], inv[len(d0):]

    def diffs(w0: np.ndarray | None, w1: np.ndarray | None) -> np.ndarray:
        i0 = np.arange(len(d0)) if w0 is None else np.repeat(np.arange(len(d0)), w0)
        i1 = np.arange(len(d1)) if w1 is None else np.repeat(np.arange(len(d1)), w1)
        a, sa, b, sb = d0[i0], s0[i0], d1[i1], s1[i1]
        if not (sa.any() and (~sa).any() and sb.any() and (~sb).any()):
            return np.full((len(e), 2), np.nan)
        cuts = np.atleast_1d(cut_at_efficiency(a[sa], e))
        return np.array([[np.mean(b[sb] >= c) - np.mean(a[sa] >= c), np.mean(b[~sb] >= c) - np.mean(a[~sa] >= c)]
                         for c in cuts])  # fmt: skip

    rng = np.random.default_rng(seed)
    central = diffs(None, None)
    reps = []
    for _ in range(n_boot):
        w = rng.poisson(1.0, int(inv.max()) + 1)
        reps.append(diffs(w[inv0], w[inv1]))
    err = np.nanstd(np.array(reps), axis=0, ddof=1)
    return [{"target_eff": float(t), "sig_diff": float(central[i, 0]), "sig_diff_err": float(err[i, 0]),
             "bkg_diff": float(central[i, 1]), "bkg_diff_err": float(err[i, 1])} for i, t in enumerate(e)]  # fmt: skip


__all__ = ["TransferredWorkingPoint", "auc_bootstrap", "paired_transfer_bootstrap", "transfer_working_points"]
