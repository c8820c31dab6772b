"""``value ± error`` as physicists write it: the one formatter for reports, tables and benchmarks.

The rounding is the Particle Data Group's (``docs/references.md §10``): the error keeps two
significant digits if its three leading digits are 100-354, one if they are 355-949, and is
rounded up to 1000 (two significant digits) if they are 950-999; the value is rounded to the same
decimal place as the error. ``0.279008 ± 0.0123261`` is written ``0.279 ± 0.012``,
``14.53 ± 0.97`` ``14.5 ± 1.0``, ``1234.5 ± 56`` ``1230 ± 60``.

:func:`json_safe` prepares results for strict JSON (numpy scalars, NaN/inf) the same way everywhere.

Infrastructure module (no lhcml imports): every stage may use it.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np

__all__ = ["error_decimals", "json_safe", "pm"]


def error_decimals(error: float) -> int:
    """The decimal place to which ``error`` (> 0, finite) and its value are rounded (PDG rule).

    Returns
    -------
    int
        Number of decimals; negative for rounding to tens, hundreds, ... (``-1``: to tens).
    """
    if not (math.isfinite(error) and error > 0):
        raise ValueError(f"error must be positive and finite, got {error!r}")
    d = Decimal(f"{error:.15g}")
    exponent = d.adjusted()  # 10**exponent is the leading digit's place
    lead3 = int((d.scaleb(2 - exponent)).to_integral_value(rounding="ROUND_FLOOR"))  # 100..999
    if lead3 <= 354:
        digits = 2
    elif lead3 <= 949:
        digits = 1
    else:  # 950-999: rounds up to 1000, shown with two significant digits (e.g. 0.97 -> 1.0)
        exponent += 1
        digits = 2
    return digits - 1 - exponent


def _round(x: float, decimals: int) -> Decimal:
    return Decimal(f"{x:.17g}").quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _text(x: Decimal, decimals: int) -> str:
    return f"{x:.{max(decimals, 0)}f}"


def pm(value: float | None, error: float | None, *, digits_without_error: int = 4) -> str:
    """``"value ± error"`` rounded as the PDG does (see the module docstring).

    Parameters
    ----------
    value
        The central value; ``None`` or NaN give ``"–"``, infinity ``"∞"``.
    error
        Its uncertainty; ``None``, zero, negative or non-finite: the value alone.
    digits_without_error
        Significant digits of a value shown without an error.

    Returns
    -------
    str
        E.g. ``"0.83 ± 0.12"``, ``"25.8 ± 0.4"``, ``"1230 ± 60"``.
    """
    if value is None:
        return "–"
    value = float(value)
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if error is None or not math.isfinite(float(error)) or float(error) <= 0:
        return f"{value:.{digits_without_error}g}"
    decimals = error_decimals(float(error))
    v, e = _round(value, decimals), _round(float(error), decimals)
    if v == 0:
        v = abs(v)  # no "-0.0"
    return f"{_text(v, decimals)} ± {_text(e, decimals)}"


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON: numpy scalars become Python
    numbers, tuples lists, non-finite floats ``None`` (recursively through dicts and lists)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
