"""lhcml.formatting.pm: PDG rounding of value ± error, against hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lhcml.formatting import error_decimals, pm


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        (0.279008, 0.0123261, "0.279 ± 0.012"),  # PDG's own example (leading digits 123: two)
        (0.827, 0.119, "0.83 ± 0.12"),  # 119: two significant digits
        (0.827, 0.367, "0.8 ± 0.4"),  # 367: one
        (25.81, 0.355, "25.8 ± 0.4"),  # 355: the first "one digit" case
        (3.0, 0.354, "3.00 ± 0.35"),  # 354: the last "two digits" case
        (14.53, 0.97, "14.5 ± 1.0"),  # 970: rounded up to 1000, two digits
        (99.96, 0.0996, "99.96 ± 0.10"),
        (123.456, 4.2, "123 ± 4"),
        (1234.5, 123.0, "1230 ± 120"),  # tens place: value rounded to tens as well
        (1234, 56, "1230 ± 60"),
        (0.7012, 0.0031, "0.7012 ± 0.0031"),
        (-0.01, 0.3, "-0.01 ± 0.30"),
        (-0.004, 0.3, "0.00 ± 0.30"),  # no "-0.00"
        (np.float32(0.5), np.float64(0.25), "0.50 ± 0.25"),  # numpy scalars
    ],
)
def test_pdg_rounding(value, error, text):
    assert pm(value, error) == text


def test_without_error_and_non_finite():
    assert pm(None, 0.1) == "–"
    assert pm(float("nan"), 0.1) == "–"
    assert pm(math.inf, None) == "∞"
    assert pm(1234.5678, None) == "1235"
    assert pm(0.123456, 0.0) == "0.1235"
    assert pm(0.123456, float("nan")) == "0.1235"


def test_error_decimals():
    assert error_decimals(0.0123) == 3
    assert error_decimals(0.5) == 1
    assert error_decimals(0.97) == 1
    assert error_decimals(56) == -1
    with pytest.raises(ValueError, match="positive"):
        error_decimals(0.0)


def test_json_safe():
    import json

    from lhcml.formatting import json_safe

    obj = {"a": np.float32(0.5), "b": [np.int64(3), float("nan"), (1.0, np.inf)], "c": "x"}
    out = json_safe(obj)
    assert out == {"a": 0.5, "b": [3, None, [1.0, None]], "c": "x"}
    assert type(out["b"][0]) is int
    json.dumps(out, allow_nan=False)  # strict JSON
