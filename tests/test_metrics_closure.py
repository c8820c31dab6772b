"""Working points transferred between samples (lhcml.metrics.closure): known answers on
constructed scores, the pull's calibration, the bootstrap AUC error, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.errors import ConfigError
from lhcml.metrics import auc_bootstrap, transfer_working_points

GRID = np.linspace(0.0, 1.0, 10001)


def test_identical_samples_close_exactly() -> None:
    rng = np.random.default_rng(1)
    s, b = rng.normal(1, 1, 3000), rng.normal(0, 1, 5000)
    for wp in transfer_working_points(s, b, s.copy(), b.copy()):
        assert wp.sig == wp.sig_ref and wp.bkg == wp.bkg_ref
        assert wp.sig_pull == 0.0 and wp.bkg_pull == 0.0
        assert wp.sig_ref == pytest.approx(wp.target_eff, abs=1e-3)
        assert wp.rej == pytest.approx(1 / wp.bkg)


def test_known_answer_on_uniform_grids() -> None:
    # reference signal uniform on [0, 1]: the 80 % cut is 0.2; background on [0, 0.25] passes
    # above 0.8 of its range; the other sample's signal is shifted by +0.1 (passes above 0.1) and
    # its background stretched to [0, 0.5] (passes above 0.4 of its range)
    (wp,) = transfer_working_points(GRID, 0.25 * GRID, GRID + 0.1, 0.5 * GRID, effs=[0.8])
    assert wp.cut == pytest.approx(0.2, abs=1e-9)
    assert wp.sig_ref == pytest.approx(8001 / 10001)
    assert wp.sig == pytest.approx(9001 / 10001)
    assert wp.bkg_ref == pytest.approx(2001 / 10001)
    assert wp.bkg == pytest.approx(6001 / 10001)
    assert wp.rej_ref == pytest.approx(10001 / 2001)
    # binomial errors and the pull in their quadrature sum
    e_ref = np.sqrt(wp.bkg_ref * (1 - wp.bkg_ref) / 10001)
    e = np.sqrt(wp.bkg * (1 - wp.bkg) / 10001)
    assert wp.bkg_pull == pytest.approx((wp.bkg - wp.bkg_ref) / np.hypot(e_ref, e))
    assert wp.rej_ref_err == pytest.approx(e_ref / wp.bkg_ref**2)
    assert wp.sig_pull > 10 and wp.bkg_pull > 50


def test_pull_is_calibrated_for_samples_of_one_distribution() -> None:
    # two independent samples of the same distributions: the signal-efficiency pull at the
    # reference's own cut has unit spread (the cut's own uncertainty is the reference's error)
    rng = np.random.default_rng(7)
    pulls = []
    for _ in range(300):
        wp = transfer_working_points(rng.normal(1, 1, 1500), rng.normal(0, 1, 1500),
                                     rng.normal(1, 1, 1500), rng.normal(0, 1, 1500), effs=[0.8])[0]  # fmt: skip
        pulls.append(wp.sig_pull)
    pulls = np.asarray(pulls)
    assert abs(pulls.mean()) < 0.2
    assert 0.8 < pulls.std() < 1.2


def test_auc_bootstrap_matches_known_auc_and_hanley_mcneil() -> None:
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    n = 2000
    a, err = auc_bootstrap(rng.normal(1, 1, n), rng.normal(0, 1, n), n_boot=300, seed=5)
    truth = norm.cdf(1 / np.sqrt(2))  # P(X_s > X_b) for unit Gaussians 1 apart
    q1, q2 = truth / (2 - truth), 2 * truth**2 / (1 + truth)
    hm = np.sqrt((truth * (1 - truth) + (n - 1) * (q1 - truth**2) + (n - 1) * (q2 - truth**2)) / n**2)
    assert abs(a - truth) < 4 * hm
    assert err == pytest.approx(hm, rel=0.25)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.array([]), GRID, GRID, GRID), "'sig_ref' is empty"),
        ((GRID, GRID, GRID, np.array([])), "'bkg' is empty"),
    ],
)
def test_empty_sample_is_one_clear_error(args, match) -> None:
    with pytest.raises(ConfigError, match=match):
        transfer_working_points(*args)


def test_bad_efficiency_and_bootstrap_size() -> None:
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        transfer_working_points(GRID, GRID, GRID, GRID, effs=[0.8, 1.0])
    with pytest.raises(ConfigError, match="n_boot"):
        auc_bootstrap(GRID, GRID, n_boot=1)
