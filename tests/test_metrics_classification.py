"""AUC (weighted Mann-Whitney), accuracy, confusion matrix, rejection at fixed efficiency."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.metrics import accuracy, auc, auc_from_labels, confusion_matrix, rejection_at, roc_curve


def _auc_pairs(s, b, ws, wb):
    """Brute-force weighted Mann-Whitney: sum over all pairs, ties count one half."""
    gt = (s[:, None] > b[None, :]).astype(float) + 0.5 * (s[:, None] == b[None, :])
    return float(np.sum(ws[:, None] * wb[None, :] * gt) / (ws.sum() * wb.sum()))


def test_auc_equals_mann_whitney_with_ties_and_weights():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 8, 300).astype(float)  # many ties
    b = rng.integers(0, 6, 400).astype(float)
    ws, wb = rng.uniform(0.1, 3, s.size), rng.uniform(0.1, 3, b.size)
    assert auc(s, b, ws, wb) == pytest.approx(_auc_pairs(s, b, ws, wb), abs=1e-12)
    assert auc(s, b) == pytest.approx(_auc_pairs(s, b, np.ones(300), np.ones(400)), abs=1e-12)
    # Mann-Whitney U from scipy (unweighted, ties averaged)
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(s, b).statistic
    assert auc(s, b) == pytest.approx(u / (s.size * b.size), abs=1e-12)


def test_auc_hand_values_and_invariance():
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5
    rng = np.random.default_rng(1)
    s, b = rng.normal(1, 1, 500), rng.normal(0, 1, 500)
    a = auc(s, b)
    assert auc(np.exp(s), np.exp(b)) == pytest.approx(a)  # monotone transform
    assert auc(b, s) == pytest.approx(1 - a)  # swapping classes
    assert auc_from_labels(np.r_[s, b], np.r_[np.ones(500), np.zeros(500)]) == pytest.approx(a)
    assert np.isnan(auc(np.array([]), b))


def test_auc_matches_gaussian_expectation_and_roc_area():
    rng = np.random.default_rng(2)
    s, b = rng.normal(1, 1, 40_000), rng.normal(0, 1, 40_000)
    from scipy.stats import norm

    assert auc(s, b) == pytest.approx(norm.cdf(1 / np.sqrt(2)), abs=5e-3)
    roc = roc_curve(s, b, np.linspace(0, 1, 2001))
    area = np.trapezoid(1 - roc.bkg_eff, roc.sig_eff)  # area under eps_S vs eps_B
    assert area == pytest.approx(auc(s, b), abs=2e-3)


def test_accuracy_and_confusion():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 1, 0])
    assert accuracy(probs, labels) == 0.75
    assert accuracy(probs, labels, np.array([1, 1, 2, 0])) == pytest.approx(2 / 4)
    m = confusion_matrix(probs, labels)
    np.testing.assert_allclose(m[0], [1, 0, 0])
    np.testing.assert_allclose(m[1], [0, 0.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        accuracy(probs[:, 0], labels)


def test_rejection_at_fixed_efficiency_known_case():
    # signal uniform on [0.5, 1], background uniform on [0, 1]: at eps_S = 0.3 the cut is 0.85,
    # eps_B = 0.15, rejection 6.67; at eps_S = 0.5, cut 0.75, rejection 4.
    s = np.linspace(0.5, 1, 200_001)
    b = np.linspace(0, 1, 200_001)
    assert rejection_at(s, b, 0.3) == pytest.approx(1 / 0.15, rel=1e-3)
    assert rejection_at(s, b, 0.5) == pytest.approx(4.0, rel=1e-3)
