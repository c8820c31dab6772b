"""lhcml's own ROC/AUC/efficiency code agrees with scikit-learn and with direct counts (issue 11,
"well-kept libraries": an agreement test where lhcml keeps its own implementation).

The comparisons with atlas-ftag-tools and puma (cuts at a target efficiency, rejections and their
errors, ratios) are in ``test_metrics_ftag_agreement.py``; the brute-force Mann-Whitney check of
the AUC in ``test_metrics_classification.py``. Here: ``sklearn.metrics`` (AUC, ROC points,
accuracy, confusion matrix) on random data with many ties, with and without weights, and the
efficiencies at a cut against a direct weighted count.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lhcml.metrics import (
    accuracy,
    auc,
    auc_from_labels,
    confusion_matrix,
    cut_at_efficiency,
    efficiency,
    rejection,
    rejection_at_efficiency,
    rejection_vs_var,
    roc_curve,
)


@pytest.fixture(scope="module", params=["unweighted", "weighted"])
def sample(request):
    """Binary scores with heavy ties (scores rounded to 0.05) plus a block of exact duplicates."""
    rng = np.random.default_rng(23)
    n_s, n_b = 3000, 5000
    s = np.round(rng.normal(0.8, 1.0, n_s) / 0.05) * 0.05
    b = np.round(rng.normal(0.0, 1.0, n_b) / 0.05) * 0.05
    s[:300] = 0.5  # a large tie shared by both classes
    b[:500] = 0.5
    if request.param == "weighted":
        ws, wb = rng.uniform(0.1, 3.0, n_s), rng.exponential(1.0, n_b)
    else:
        ws, wb = None, None
    return s, b, ws, wb


def _labels(s, b, ws, wb):
    y = np.r_[np.ones(s.size), np.zeros(b.size)]
    score = np.r_[s, b]
    w = None if ws is None else np.r_[ws, wb]
    return y, score, w


def test_auc_equals_sklearn_roc_auc_score(sample):
    s, b, ws, wb = sample
    y, score, w = _labels(s, b, ws, wb)
    ref = skm.roc_auc_score(y, score, sample_weight=w)
    assert auc(s, b, ws, wb) == pytest.approx(ref, abs=1e-12)
    assert auc_from_labels(score, y, w) == pytest.approx(ref, abs=1e-12)
    # ties matter: the tied block alone has AUC 1/2 in both implementations
    assert auc(s[:300], b[:500]) == 0.5 == skm.roc_auc_score(np.r_[np.ones(300), np.zeros(500)],
                                                             np.full(800, 0.5))  # fmt: skip


def test_efficiency_at_every_sklearn_threshold_equals_its_roc_point(sample):
    """sklearn counts ``score >= threshold`` as positive, as lhcml's ``efficiency`` does."""
    s, b, ws, wb = sample
    y, score, w = _labels(s, b, ws, wb)
    fpr, tpr, thr = skm.roc_curve(y, score, sample_weight=w, drop_intermediate=False)
    finite = np.isfinite(thr)  # the first threshold is +inf (nothing passes)
    assert finite.sum() == np.unique(score).size  # one ROC point per distinct score: ties grouped
    mine_tpr = np.array([efficiency(s, t, ws)[0] for t in thr[finite]])
    mine_fpr = np.array([efficiency(b, t, wb)[0] for t in thr[finite]])
    np.testing.assert_allclose(mine_tpr, tpr[finite], rtol=0, atol=1e-12)
    np.testing.assert_allclose(mine_fpr, fpr[finite], rtol=0, atol=1e-12)


def test_roc_curve_points_lie_on_sklearn_roc(sample):
    """Each point of lhcml's ROC (cut from the signal quantile, background efficiency above it)
    is sklearn's ROC point of the smallest threshold at or above the cut."""
    s, b, ws, wb = sample
    y, score, w = _labels(s, b, ws, wb)
    fpr, tpr, thr = skm.roc_curve(y, score, sample_weight=w, drop_intermediate=False)
    grid = np.linspace(0.05, 1.0, 96)
    roc = roc_curve(s, b, grid, ws, wb)
    asc_thr = thr[::-1]  # increasing; +inf last
    idx = np.searchsorted(asc_thr, roc.cuts, side="left")  # first threshold >= cut
    k = thr.size - 1 - idx
    np.testing.assert_allclose(roc.bkg_eff, fpr[k], rtol=0, atol=1e-12)
    # the rejection is the inverse background efficiency of that point
    ok = fpr[k] > 0
    np.testing.assert_allclose(roc.bkg_rej[ok], 1.0 / fpr[k][ok], rtol=1e-12)
    # the signal efficiency reached by each cut is sklearn's tpr there (the target up to the
    # discreteness of the tied scores)
    reached = np.array([efficiency(s, c, ws)[0] for c in roc.cuts])
    np.testing.assert_allclose(reached, tpr[k], rtol=0, atol=1e-12)
    step = max(np.max(np.diff(np.r_[0.0, np.sort(np.unique(tpr))])), 0.0)
    assert np.all(np.abs(reached - grid) <= step + 1e-9)


def test_efficiency_and_rejection_equal_a_direct_count(sample):
    s, b, ws, wb = sample
    w_s = np.ones_like(s) if ws is None else ws
    w_b = np.ones_like(b) if wb is None else wb
    # cuts exactly on tied values, between values, below and above everything
    for cut in (0.5, 0.55, 0.525, -10.0, 10.0, float(np.median(s))):
        eff, err = efficiency(s, cut, ws)
        direct = w_s[s >= cut].sum() / w_s.sum()
        assert eff == pytest.approx(direct, abs=1e-12)
        n_eff = w_s.sum() ** 2 / (w_s**2).sum()
        assert err == pytest.approx(np.sqrt(direct * (1 - direct) / n_eff), abs=1e-12)
        rej, _ = rejection(b, cut, wb)
        passed = w_b[b >= cut].sum() / w_b.sum()
        assert rej == (np.inf if passed == 0 else pytest.approx(1.0 / passed, rel=1e-12))
    # at the cut of a working point the same holds, and the rejection at that efficiency is it
    cut = float(cut_at_efficiency(s, 0.7, ws))
    rej, _ = rejection_at_efficiency(s, b, 0.7, ws, wb)
    assert rej == pytest.approx(w_b.sum() / w_b[b >= cut].sum(), rel=1e-12)


def test_binned_rejection_equals_a_direct_count_per_bin(sample):
    s, b, ws, wb = sample
    rng = np.random.default_rng(5)
    pt_s, pt_b = rng.uniform(20, 250, s.size), rng.uniform(20, 250, b.size)
    edges = np.array([20.0, 50.0, 100.0, 250.0])
    w_s = np.ones_like(s) if ws is None else ws
    w_b = np.ones_like(b) if wb is None else wb
    res = rejection_vs_var(s, b, pt_s, pt_b, edges, 0.7, "fixed_cut", ws, wb)
    cut = float(cut_at_efficiency(s, 0.7, ws))
    for i in range(edges.size - 1):
        ms = (pt_s >= edges[i]) & (pt_s < edges[i + 1])
        mb = (pt_b >= edges[i]) & (pt_b < edges[i + 1])
        assert res.n_sig[i] == ms.sum() and res.n_bkg[i] == mb.sum()
        assert res.sig_eff[i] == pytest.approx(w_s[ms & (s >= cut)].sum() / w_s[ms].sum(), abs=1e-12)
        assert res.rejection[i] == pytest.approx(w_b[mb].sum() / w_b[mb & (b >= cut)].sum(), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_accuracy_and_confusion_matrix_equal_sklearn(weighted):
    rng = np.random.default_rng(3)
    n, k = 4000, 4
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.0
    logits[:200] = 0.0  # ties in the scores: argmax takes the first class, as np.argmax
    w = rng.uniform(0.2, 2.0, n) if weighted else None
    pred = np.argmax(logits, axis=1)
    assert accuracy(logits, labels, w) == pytest.approx(skm.accuracy_score(labels, pred, sample_weight=w),
                                                        abs=1e-12)  # fmt: skip
    ref = skm.confusion_matrix(labels, pred, sample_weight=w, normalize="true")
    np.testing.assert_allclose(confusion_matrix(logits, labels, w), ref, atol=1e-12)
    ref_counts = skm.confusion_matrix(labels, pred, sample_weight=w)
    np.testing.assert_allclose(confusion_matrix(logits, labels, w, normalize=False), ref_counts, atol=1e-9)
