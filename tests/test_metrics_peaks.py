"""The mass-peak estimators of lhcml.metrics.peaks on constructed distributions with a known peak."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lhcml.errors import ConfigError
from lhcml.metrics.peaks import (
    PEAK_METHODS,
    crystal_ball_fit,
    event_bootstrap,
    gauss_core_peak,
    kde_mode,
    mass_peak,
)


def _crystal_ball_sample(n: int, seed: int) -> np.ndarray:
    # peak 172.5, σ 10, power-law tail from 1 σ below the peak (m = 3): median and mean sit well below the peak
    return stats.crystalball(1.0, 3.0, loc=172.5, scale=10.0).rvs(n, random_state=np.random.default_rng(seed))


def _shoulder_sample(n: int, seed: int) -> np.ndarray:
    # a Gaussian peak at 172.5 (σ 10) with 30 % of the entries in a flat low-side shoulder 110–155
    rng = np.random.default_rng(seed)
    k = int(0.3 * n)
    return np.concatenate([rng.normal(172.5, 10.0, n - k), rng.uniform(110.0, 155.0, k)])


def test_every_estimator_finds_the_mean_of_a_gaussian():
    x = np.random.default_rng(1).normal(100.0, 10.0, 20000)
    for method in PEAK_METHODS:
        assert mass_peak(x, method) == pytest.approx(100.0, abs=0.6), method


def test_the_crystal_ball_fit_recovers_the_peak_and_width_of_a_crystal_ball_sample():
    x = _crystal_ball_sample(20000, 2)
    fit = crystal_ball_fit(x)
    assert fit.converged
    assert fit.peak == pytest.approx(172.5, abs=0.5)
    assert fit.sigma == pytest.approx(10.0, rel=0.06)
    assert fit.beta == pytest.approx(1.0, abs=0.25)
    # the sample is skewed enough that the median would fail the same tolerance
    assert np.median(x) < 172.5 - 2.0


def test_core_fit_and_crystal_ball_are_not_pulled_by_a_low_side_shoulder():
    x = _shoulder_sample(20000, 3)
    assert np.median(x) < 172.5 - 3.0  # what a non-robust estimator would report
    assert gauss_core_peak(x, n_sigma=1.0) == pytest.approx(172.5, abs=1.2)
    assert crystal_ball_fit(x).peak == pytest.approx(172.5, abs=1.2)
    assert kde_mode(x) == pytest.approx(172.5, abs=2.0)
    # a wider core window is pulled towards the shoulder: the reason the 1 σ window is the default
    assert gauss_core_peak(x, n_sigma=2.0) < gauss_core_peak(x, n_sigma=1.0) - 0.5


def test_too_few_entries_give_nan_and_an_unknown_method_is_refused():
    x = np.array([1.0, 2.0, np.nan] * 5)
    assert np.isnan(gauss_core_peak(x))
    assert np.isnan(kde_mode(x))
    assert np.isnan(crystal_ball_fit(x).peak)
    with pytest.raises(ConfigError, match="unknown peak estimator 'median'"):
        mass_peak(np.arange(100.0), "median")


def test_event_bootstrap_resamples_whole_events():
    rng = np.random.default_rng(4)
    per_event = rng.normal(0.0, 1.0, 2000)
    values = np.repeat(per_event, 2)  # two identical entries per event: the information of 2000, not 4000
    events = np.repeat(np.arange(2000), 2)
    err_events = event_bootstrap(values, events, np.mean, n_boot=300, seed=1).std()
    err_entries = event_bootstrap(values, np.arange(4000), np.mean, n_boot=300, seed=1).std()
    assert err_events == pytest.approx(1.0 / np.sqrt(2000), rel=0.15)
    assert err_entries == pytest.approx(1.0 / np.sqrt(4000), rel=0.15)
    with pytest.raises(ValueError, match="differ in length"):
        event_bootstrap(values, events[:-1], np.mean)
