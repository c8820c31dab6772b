"""Tagging discriminants from multi-class tagger outputs.

The flavour-tagging discriminants are log-likelihood ratios of the network outputs,

    D_b = ln( p_b / (f_c p_c + f_tau p_tau + (1 - f_c - f_tau) p_u) )
    D_c = ln( p_c / (f_b p_b + f_tau p_tau + (1 - f_b - f_tau) p_u) )

and the generic version takes any signal class and a fraction per background class. Zeros are
handled as in atlas-ftag-tools (``ftag.utils.get_discriminant``): ``epsilon = 1e-10`` is added to
both the numerator and the denominator, ``ln((p_s + eps) / (sum_i f_i p_i + eps))``, so a jet
with all-zero outputs gets D = 0 instead of NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lhcml.errors import ConfigError, SchemaError

#: the additive regulator used by atlas-ftag-tools (and therefore by puma and Salt)
EPSILON = 1e-10

#: default background fractions (class name -> fraction) per signal class of the flavour scheme.
#: f_c = 0.2 for b-tagging and f_b = 0.3 for c-tagging are the values used for the GN2-era taggers
#: in atlas-ftag-tools examples; DL1r used f_c = 0.018. Always state the fractions you quote.
DEFAULT_FRACTIONS: dict[str, dict[str, float]] = {
    "bjets": {"cjets": 0.2, "ujets": 0.8},
    "cjets": {"bjets": 0.3, "ujets": 0.7},
}


def check_fractions(fractions: Mapping[str, float], signal: str, tol: float = 1e-6) -> None:
    """Check that background fractions are non-negative, exclude the signal and sum to one.

    Parameters
    ----------
    fractions : Mapping[str, float]
        Background class name -> fraction.
    signal : str
        Signal class name (must not appear with a non-zero fraction).
    tol : float, optional
        Tolerance on the sum, by default 1e-6.

    Raises
    ------
    ConfigError
        If a fraction is negative, the signal has a fraction, or the sum is not 1.
    """
    if not fractions:
        raise ConfigError("background fractions are empty: give at least one background class")
    bad = {k: v for k, v in fractions.items() if not np.isfinite(v) or v < 0}
    if bad:
        raise ConfigError(f"background fractions must be finite and >= 0, got {bad}")
    if fractions.get(signal, 0.0) != 0.0:
        raise ConfigError(
            f"the signal class '{signal}' cannot have a background fraction "
            f"(got {fractions[signal]}); remove it from the fractions"
        )
    total = float(sum(fractions.values()))
    if abs(total - 1.0) > tol:
        raise ConfigError(
            f"background fractions must sum to 1, got {total:.6g} from {dict(fractions)}"
        )


def discriminant(
    probs: Mapping[str, np.ndarray],
    signal: str,
    fractions: Mapping[str, float],
    epsilon: float = EPSILON,
) -> np.ndarray:
    """Generic log-likelihood-ratio discriminant ``ln(p_s / sum_i f_i p_i)``.

    Parameters
    ----------
    probs : Mapping[str, np.ndarray]
        Class name -> predicted probability (same shape for all classes).
    signal : str
        Name of the signal class (a key of ``probs``).
    fractions : Mapping[str, float]
        Background class name -> fraction. Fractions must sum to 1. Classes with fraction 0
        may be absent from ``probs``.
    epsilon : float, optional
        Regulator added to numerator and denominator (atlas-ftag-tools convention), 1e-10.

    Returns
    -------
    np.ndarray
        The discriminant, float64.

    Raises
    ------
    SchemaError
        If the signal probability, or a background probability with non-zero fraction, is missing.
    ConfigError
        If the fractions are invalid.
    """
    check_fractions(fractions, signal)
    if signal not in probs:
        raise SchemaError(
            f"no probability for the signal class '{signal}' (available: {', '.join(probs)})"
        )
    p_sig = np.asarray(probs[signal], dtype=np.float64)
    denom = np.zeros_like(p_sig)
    for name, frac in fractions.items():
        if frac == 0:
            continue
        if name not in probs:
            raise SchemaError(
                f"background class '{name}' has fraction {frac} but no probability is given "
                f"(available: {', '.join(probs)}); set its fraction to 0 or provide the output"
            )
        denom += frac * np.asarray(probs[name], dtype=np.float64)
    return np.log((p_sig + epsilon) / (denom + epsilon))


def _three_class_discriminant(pb, pc, pu, signal: str, other: str, f_other: float,
                              ptau, ftau: float, epsilon: float) -> np.ndarray:
    """``ln(p_signal / (f_other p_other + f_tau p_tau + (1 - f_other - f_tau) p_u))`` (D_b, D_c)."""
    probs = {"bjets": pb, "cjets": pc, "ujets": pu}
    if ptau is not None:
        probs["taujets"] = ptau
    fr = {other: f_other, "ujets": 1.0 - f_other - ftau}
    if ftau:
        fr["taujets"] = ftau
    return discriminant(probs, signal, fr, epsilon)


def d_b(
    pb: np.ndarray,
    pc: np.ndarray,
    pu: np.ndarray,
    fc: float = 0.2,
    ptau: np.ndarray | None = None,
    ftau: float = 0.0,
    epsilon: float = EPSILON,
) -> np.ndarray:
    """b-tagging discriminant ``ln(p_b / (f_c p_c + f_tau p_tau + (1 - f_c - f_tau) p_u))``.

    ``pb, pc, pu``: tagger outputs for b-, c- and light jets; ``fc``: c-jet fraction (0.2);
    ``ptau``/``ftau``: tau-jet output and fraction (needed when ``ftau > 0``); ``epsilon``:
    regulator (atlas-ftag-tools convention). Returns D_b per jet.
    """
    return _three_class_discriminant(pb, pc, pu, "bjets", "cjets", fc, ptau, ftau, epsilon)


def d_c(
    pb: np.ndarray,
    pc: np.ndarray,
    pu: np.ndarray,
    fb: float = 0.3,
    ptau: np.ndarray | None = None,
    ftau: float = 0.0,
    epsilon: float = EPSILON,
) -> np.ndarray:
    """c-tagging discriminant ``ln(p_c / (f_b p_b + f_tau p_tau + (1 - f_b - f_tau) p_u))``.

    Arguments as :func:`d_b`, with ``fb`` the b-jet fraction (0.3). Returns D_c per jet.
    """
    return _three_class_discriminant(pb, pc, pu, "cjets", "bjets", fb, ptau, ftau, epsilon)


def tagger_probabilities(
    table: np.ndarray,
    tagger: str,
    outputs: Mapping[str, str],
    source: str = "input",
) -> dict[str, np.ndarray]:
    """Collect the ``<tagger>_<output>`` columns of a structured array.

    Parameters
    ----------
    table : np.ndarray
        Structured array (e.g. the ``jets`` dataset).
    tagger : str
        Tagger name, the column prefix.
    outputs : Mapping[str, str]
        Class name -> output suffix (``{"bjets": "pb", ...}`` from ``labels.yaml``).
    source : str, optional
        Name of the file, for error messages.

    Returns
    -------
    dict[str, np.ndarray]
        Class name -> probabilities for the columns present.

    Raises
    ------
    SchemaError
        If none of the tagger's columns is present; names the available ``*_p*`` columns.
    """
    names = table.dtype.names or ()
    out = {c: table[f"{tagger}_{s}"] for c, s in outputs.items() if f"{tagger}_{s}" in names}
    if not out:
        avail = sorted(n for n in names if "_p" in n)
        raise SchemaError(
            f"tagger '{tagger}' has no output columns in {source} "
            f"(expected {', '.join(f'{tagger}_{s}' for s in outputs.values())}; "
            f"available tagger columns: {', '.join(avail) or 'none'})"
        )
    return out
