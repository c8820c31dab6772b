"""Significance estimators: hand values, limits, AMS regularisation, cut scan."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.metrics import ams, asimov_z, best_cut, s_over_sqrt_b, s_over_sqrt_s_plus_b


def test_hand_values():
    assert s_over_sqrt_b(10, 100) == 1.0
    assert s_over_sqrt_s_plus_b(10, 90) == 1.0
    # sqrt(2 (110 ln 1.1 - 10)) = 0.98399...
    z = np.sqrt(2 * (110 * np.log(1.1) - 10))
    assert asimov_z(10, 100) == pytest.approx(z, rel=1e-12)
    assert asimov_z(10, 100) == pytest.approx(0.98399, abs=1e-5)
    # AMS = Asimov with b -> b + 10
    assert ams(10, 90) == pytest.approx(z, rel=1e-12)
    assert ams(10, 90, b_reg=0) == pytest.approx(asimov_z(10, 90))
    np.testing.assert_allclose(ams(np.array([10.0, 0.0]), np.array([90.0, 5.0])), [z, 0.0])


def test_limits():
    # s << b: Asimov -> s / sqrt(b)
    assert asimov_z(1.0, 1e6) == pytest.approx(s_over_sqrt_b(1.0, 1e6), rel=1e-5)
    # s >> b: Asimov is much smaller than s/sqrt(b)
    assert asimov_z(100.0, 1.0) < 0.3 * s_over_sqrt_b(100.0, 1.0)
    # with background uncertainty: -> no-uncertainty value as sigma -> 0, smaller otherwise
    assert asimov_z(10, 100, sigma_b=1e-4) == pytest.approx(asimov_z(10, 100), rel=1e-4)
    assert asimov_z(10, 100, sigma_b=20) < 0.5 * asimov_z(10, 100)
    with pytest.raises(ValueError, match="b > 0"):
        asimov_z(1.0, 0.0)


def test_best_cut_scan():
    rng = np.random.default_rng(8)
    ds, db = rng.normal(2, 1, 20_000), rng.normal(0, 1, 200_000)
    ws, wb = np.full(ds.size, 50 / ds.size), np.full(db.size, 5000 / db.size)
    res = best_cut(ds, db, ws, wb, metric="ams")
    assert res["significance"] == pytest.approx(ams(res["s"], res["b"]))
    # the optimum beats no cut and a very tight cut
    assert res["significance"] > ams(50, 5000)
    assert res["cut"] > 0.5
    with pytest.raises(ValueError, match="unknown significance"):
        best_cut(ds, db, metric="z")
