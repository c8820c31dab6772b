"""Mass-decorrelation (sculpting) metrics of the boosted-tagging literature (numpy only).

- :func:`jensen_shannon_divergence`: JSD(P, Q) = KL(P || M)/2 + KL(Q || M)/2 with M = (P + Q)/2,
  base-2 logarithms, so 0 <= JSD <= 1 (0: identical, 1: disjoint supports).
- :func:`inverse_jsd_at_efficiency`: 1/JSD50, the JSD between the normalised mass histograms of
  background jets *passing* and *failing* the cut at 50 % signal efficiency (larger = less
  sculpting), as in Kasieczka & Shih, "DisCo Fever" (arXiv:2001.05310) and Bradshaw et al.
  (arXiv:1908.08959). **Binning convention** (JSD depends on it, so quote it with the number):
  ``bins`` equal-width bins (default 50) spanning the range of the background mass of the whole
  background sample (passing and failing together) unless explicit edges are given; entries
  outside explicit edges are dropped; each histogram is normalised to unit sum of weights.
- :func:`r50`: background rejection at 50 % signal efficiency.
- :func:`distance_correlation`: Székely's distance correlation with per-event weights, the
  weighted V-statistic used by the DisCo regulariser (the torch loss lives in ``lhcml.train``).
"""

from __future__ import annotations

import numpy as np

from lhcml.metrics.rejection import rejection_at_efficiency
from lhcml.metrics.working_points import cut_at_efficiency

#: default number of mass bins for JSD (see module docstring)
DEFAULT_JSD_BINS = 50


def jensen_shannon_divergence(p: np.ndarray, q: np.ndarray, base: float = 2.0) -> float:
    """Jensen-Shannon divergence of two histograms (normalised internally).

    Parameters
    ----------
    p, q : np.ndarray
        Non-negative bin contents on the same binning.
    base : float, optional
        Logarithm base, by default 2 (so JSD is in [0, 1]).

    Returns
    -------
    float
        The divergence.

    Raises
    ------
    ValueError
        On shape mismatch, negative contents, or an empty histogram.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"histograms must have the same binning, got {p.shape} and {q.shape}")
    if np.any(p < 0) or np.any(q < 0):
        raise ValueError("histogram contents must be >= 0 for a JSD (negative weights?)")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("cannot compute a JSD with an empty histogram")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return (0.5 * kl(p) + 0.5 * kl(q)) / np.log(base)


def mass_histograms_pass_fail(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    mass_bkg: np.ndarray,
    sig_eff: float = 0.5,
    bins: int | np.ndarray = DEFAULT_JSD_BINS,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background mass histograms for jets passing and failing the cut at ``sig_eff``.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background discriminants.
    mass_bkg : np.ndarray
        Background jet mass.
    sig_eff : float, optional
        Signal efficiency defining the cut, by default 0.5.
    bins : int | np.ndarray, optional
        Number of equal-width bins over the background mass range, or explicit edges.
    w_sig, w_bkg : np.ndarray | None, optional
        Weights.

    Returns
    -------
    tuple[np.ndarray, np.ndarray, np.ndarray]
        (passing contents, failing contents, bin edges), unnormalised (sum of weights).
    """
    cut = float(cut_at_efficiency(disc_sig, sig_eff, w_sig))
    m = np.asarray(mass_bkg, dtype=np.float64)
    if np.isscalar(bins) or np.ndim(bins) == 0:
        finite = m[np.isfinite(m)]
        if finite.size == 0:
            raise ValueError("background mass has no finite values")
        lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    w = np.ones_like(m) if w_bkg is None else np.asarray(w_bkg, dtype=np.float64)
    passing = np.asarray(disc_bkg) >= cut
    h_pass, _ = np.histogram(m[passing], edges, weights=w[passing])
    h_fail, _ = np.histogram(m[~passing], edges, weights=w[~passing])
    return h_pass, h_fail, edges


def inverse_jsd_at_efficiency(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    mass_bkg: np.ndarray,
    sig_eff: float = 0.5,
    bins: int | np.ndarray = DEFAULT_JSD_BINS,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> float:
    """1/JSD between passing and failing background mass histograms at ``sig_eff`` (1/JSD50).

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background discriminants.
    mass_bkg : np.ndarray
        Background jet mass.
    sig_eff : float, optional
        Signal efficiency of the cut, by default 0.5.
    bins : int | np.ndarray, optional
        Binning (see the module docstring for the convention).
    w_sig, w_bkg : np.ndarray | None, optional
        Weights.

    Returns
    -------
    float
        1/JSD (inf when the distributions are identical).
    """
    h_pass, h_fail, _ = mass_histograms_pass_fail(
        disc_sig, disc_bkg, mass_bkg, sig_eff, bins, w_sig, w_bkg
    )
    j = jensen_shannon_divergence(h_pass, h_fail)
    return float("inf") if j == 0 else 1.0 / j


def r50(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> float:
    """Background rejection at 50 % signal efficiency.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background discriminants.
    w_sig, w_bkg : np.ndarray | None, optional
        Weights.

    Returns
    -------
    float
        R50.
    """
    return rejection_at_efficiency(disc_sig, disc_bkg, 0.5, w_sig, w_bkg)[0]


def _row_sums(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a_i. = sum_j w_j |x_i - x_j| for all i in O(N log N) (sorted cumulative sums)."""
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    cw = np.cumsum(ws)
    cwx = np.cumsum(ws * xs)
    w_tot, wx_tot = cw[-1], cwx[-1]
    # below (<= x_i, including i itself, whose term is 0) and above
    row_sorted = xs * cw - cwx + (wx_tot - cwx) - xs * (w_tot - cw)
    row = np.empty_like(row_sorted)
    row[order] = row_sorted
    return row


def _pair_kernel_py(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """sum_ij w_i w_j |x_i - x_j| |y_i - y_j| as a double loop (compiled with numba)."""
    n = x.size
    total = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(i + 1, n):
            acc += w[j] * abs(x[i] - x[j]) * abs(y[i] - y[j])
        total += w[i] * acc
    return 2.0 * total


_PAIR_KERNEL = None


def _pair_sum(x: np.ndarray, y: np.ndarray, w: np.ndarray, chunk: int) -> float:
    """sum_ij w_i w_j |x_i - x_j| |y_i - y_j| (numba loop; numpy blocks if numba is missing)."""
    global _PAIR_KERNEL
    if _PAIR_KERNEL is None:
        try:
            import numba

            _PAIR_KERNEL = numba.njit(cache=True, nogil=True)(_pair_kernel_py)
        except ImportError:  # pragma: no cover - numba is a core dependency
            _PAIR_KERNEL = False
    if _PAIR_KERNEL:
        return float(_PAIR_KERNEL(x, y, w))
    total = 0.0  # pragma: no cover
    for s in range(0, x.size, chunk):  # pragma: no cover
        blk = np.abs(x[s : s + chunk, None] - x[None, :]) * np.abs(y[s : s + chunk, None] - y)
        total += float(w[s : s + chunk] @ (blk @ w))
    return total  # pragma: no cover


def distance_correlation(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    squared: bool = False,
    chunk: int = 2048,
) -> float:
    """Székely's (V-statistic) distance correlation, with optional per-event weights.

    With normalised weights w (sum 1), a_ij = |x_i - x_j|, a_i. = sum_j w_j a_ij,
    a.. = sum_i w_i a_i., A_ij = a_ij - a_i. - a_j. + a.. (same for B from y),
    dCov^2 = sum_ij w_i w_j A_ij B_ij, and dCor^2 = dCov^2(x, y) / sqrt(dVar^2(x) dVar^2(y)).
    Integer weights equal repeating events. ``squared=True`` returns dCor^2, the quantity the
    DisCo regulariser (Kasieczka & Shih, arXiv:2001.05310) adds to the loss. O(N^2) time
    (one numba-compiled pair loop), O(N) memory.

    Parameters
    ----------
    x, y : np.ndarray
        1-D samples of equal length.
    weights : np.ndarray | None, optional
        Non-negative per-event weights.
    squared : bool, optional
        Return dCor^2 instead of dCor, by default False.
    chunk : int, optional
        Rows per block of the numpy fallback (used only without numba).

    Returns
    -------
    float
        Distance correlation in [0, 1]; 0 when either variable is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError("distance correlation needs at least two entries")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != x.shape or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative, with positive sum and the shape of x")
    w = w / w.sum()
    # With A double-centred (sum_j w_j A_ij = 0), sum_ij w_i w_j A_ij B_ij =
    # sum_ij w_i w_j a_ij b_ij - 2 sum_i w_i a_i. b_i. + a.. b.. ; the row sums are O(N log N)
    # and sum_ij w_i w_j (x_i - x_j)^2 = 2 Var_w(x), so only the cross term is O(N^2).
    ax, by = _row_sums(x, w), _row_sums(y, w)
    axx, byy = float(w @ ax), float(w @ by)
    cov = _pair_sum(x, y, w, chunk) - 2.0 * float(w @ (ax * by)) + axx * byy
    var_x = 2.0 * (float(w @ x**2) - float(w @ x) ** 2)
    var_y = 2.0 * (float(w @ y**2) - float(w @ y) ** 2)
    varx = var_x - 2.0 * float(w @ ax**2) + axx**2
    vary = var_y - 2.0 * float(w @ by**2) + byy**2
    scale = max(var_x, var_y, 1e-300)
    if varx <= 1e-12 * scale or vary <= 1e-12 * scale:
        return 0.0
    dcor2 = max(cov, 0.0) / np.sqrt(varx * vary)
    return float(dcor2 if squared else np.sqrt(dcor2))
