"""lhcml.metrics agrees with atlas-ftag-tools and puma-hep on the same random scores."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.metrics import (
    cut_at_efficiency,
    d_b,
    d_c,
    discriminant,
    effective_n,
    efficiency,
    rejection,
    rejection_error,
    rejection_vs_var,
    roc_curve,
    weighted_quantile,
    working_points,
)

ftag = pytest.importorskip("ftag")
puma = pytest.importorskip("puma")
from ftag import Flavours  # noqa: E402
from ftag.labels import LabelContainer  # noqa: E402
from ftag.utils import (  # noqa: E402
    calculate_efficiency,
    calculate_efficiency_error,
    calculate_rejection,
    calculate_rejection_error,
    get_discriminant,
    weighted_percentile,
)


@pytest.fixture(scope="module")
def jets():
    """Random 4-class tagger outputs (softmax of shifted Gaussians) with labels and weights."""
    rng = np.random.default_rng(7)
    n = 30_000
    label = rng.choice([5, 4, 0, 15], n, p=[0.3, 0.2, 0.45, 0.05])
    logits = rng.normal(size=(n, 4))
    for k, lab in enumerate([5, 4, 0, 15]):
        logits[label == lab, k] += 1.5
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    p[:50, 0] = 0.0  # exact zeros exercise the epsilon convention
    p[50:60, :] = 0.0
    arr = np.zeros(n, [("t_pb", "f4"), ("t_pc", "f4"), ("t_pu", "f4"), ("t_ptau", "f4"),
                       ("label", "i1"), ("pt", "f4"), ("w", "f4")])
    arr["t_pb"], arr["t_pc"], arr["t_pu"], arr["t_ptau"] = p.T
    arr["label"] = label
    arr["pt"] = 20 + rng.exponential(60, n)
    arr["w"] = rng.uniform(0.2, 2.0, n)
    return arr


FLAVS = LabelContainer.from_list([Flavours.bjets, Flavours.cjets, Flavours.ujets, Flavours.taujets])


@pytest.mark.parametrize("fc,ftau", [(0.2, 0.0), (0.018, 0.0), (0.1, 0.05)])
def test_db_matches_ftag(jets, fc, ftau):
    ref = get_discriminant(jets, "t", Flavours.bjets, FLAVS,
                           {"fc": fc, "fu": 1 - fc - ftau, "ftau": ftau})
    mine = d_b(jets["t_pb"], jets["t_pc"], jets["t_pu"], fc=fc, ptau=jets["t_ptau"], ftau=ftau)
    assert np.all(np.isfinite(mine))
    np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-5)
    # all-zero outputs give D = ln(eps/eps) = 0, as ftag
    assert np.all(mine[50:60] == 0.0)


def test_dc_and_generic_match_ftag(jets):
    ref = get_discriminant(jets, "t", Flavours.cjets, FLAVS, {"fb": 0.3, "fu": 0.7, "ftau": 0.0})
    np.testing.assert_allclose(d_c(jets["t_pb"], jets["t_pc"], jets["t_pu"], fb=0.3), ref,
                               rtol=1e-5, atol=1e-5)
    probs = {"bjets": jets["t_pb"], "cjets": jets["t_pc"], "ujets": jets["t_pu"]}
    gen = discriminant(probs, "cjets", {"bjets": 0.3, "ujets": 0.7})
    np.testing.assert_allclose(gen, ref, rtol=1e-5, atol=1e-5)


def test_discriminant_errors(jets):
    from lhcml.errors import ConfigError, SchemaError

    probs = {"bjets": jets["t_pb"], "ujets": jets["t_pu"]}
    with pytest.raises(SchemaError, match="cjets"):
        discriminant(probs, "bjets", {"cjets": 0.2, "ujets": 0.8})
    with pytest.raises(ConfigError, match="sum to 1"):
        discriminant(probs, "bjets", {"ujets": 0.8})
    with pytest.raises(ConfigError, match="signal class"):
        discriminant(probs, "bjets", {"bjets": 0.5, "ujets": 0.5})


@pytest.fixture(scope="module")
def discs(jets):
    d = d_b(jets["t_pb"], jets["t_pc"], jets["t_pu"], fc=0.2)
    lab, w = jets["label"], jets["w"].astype(float)
    return {k: (d[lab == v], w[lab == v], jets["pt"][lab == v]) for k, v in
            {"b": 5, "c": 4, "u": 0}.items()}


@pytest.mark.parametrize("weighted", [False, True])
def test_working_points_match_ftag(discs, weighted):
    (ds, ws, _), (dc, wc, _), (du, wu, _) = discs["b"], discs["c"], discs["u"]
    if not weighted:
        ws = wc = wu = None
    effs = [0.6, 0.7, 0.77, 0.85]
    ref_cuts = weighted_percentile(ds, 1 - np.array(effs), ws)
    cuts = cut_at_efficiency(ds, np.array(effs), ws)
    np.testing.assert_allclose(cuts, ref_cuts, rtol=1e-5, atol=1e-5)  # ftag sums in float32
    for bkg, wb in ((dc, wc), (du, wu)):
        ref_rej = calculate_rejection(ds, bkg, target_eff=effs, sig_weights=ws, bkg_weights=wb)
        wps = working_points(ds, {"x": bkg}, effs, ws, {"x": wb})
        np.testing.assert_allclose([wp.rejection["x"] for wp in wps], ref_rej, rtol=2e-3)
        # binomial errors with N (or N_eff) as puma's rej_err / eff_err
        n = effective_n(wb, bkg.size)
        for wp in wps:
            np.testing.assert_allclose(wp.rejection_err["x"],
                                       calculate_rejection_error(np.array(wp.rejection["x"]), n),
                                       rtol=1e-10)
            np.testing.assert_allclose(wp.bkg_eff_err["x"],
                                       calculate_efficiency_error(np.array(wp.bkg_eff["x"]), n),
                                       rtol=1e-10)
        # the signal efficiency of the cut is the target
        assert all(abs(wp.sig_eff - wp.target_eff) < 2e-3 for wp in wps)
        ref_eff = calculate_efficiency(ds, bkg, target_eff=effs, sig_weights=ws, bkg_weights=wb)
        np.testing.assert_allclose([wp.bkg_eff["x"] for wp in wps], ref_eff, rtol=2e-3)


def test_weighted_quantile_integer_weights_equal_repetition():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    k = rng.integers(1, 4, size=200)
    rep = np.repeat(x, k)
    for q in (0.1, 0.5, 0.77):
        # mid-point convention: compare with the same definition on the repeated sample
        assert abs(weighted_quantile(x, q, k) - weighted_quantile(rep, q)) < 0.05
    assert weighted_quantile(x, 0.0) == x.min() and weighted_quantile(x, 1.0) == x.max()


def test_rejection_error_edge_cases():
    assert np.isnan(rejection_error(np.inf, 100))
    with pytest.raises(ValueError):
        rejection_error(0.0, 100)
    rej, err = rejection(np.array([0.0, 0.1]), 1.0)
    assert rej == np.inf and np.isnan(err)
    eff, err = efficiency(np.array([]), 0.0)
    assert np.isnan(eff)


def test_roc_matches_ftag_and_puma(discs):
    (ds, _, _), (du, _, _) = discs["b"], discs["u"]
    roc = roc_curve(ds, du, np.linspace(0.5, 1.0, 26))
    ref = calculate_rejection(ds, du, target_eff=roc.sig_eff)
    np.testing.assert_allclose(roc.bkg_rej, ref, rtol=1e-3)
    p_roc = puma.Roc(roc.sig_eff, roc.bkg_rej, n_test=du.size, rej_class="ujets",
                     signal_class="bjets")
    np.testing.assert_allclose(roc.bkg_rej_err[p_roc.non_zero_mask], p_roc.binomial_error(),
                               rtol=1e-10)
    ref_roc = roc_curve(ds * 0.5 + np.random.default_rng(1).normal(size=ds.size), du * 0.5,
                        roc.sig_eff)
    p_ref = puma.Roc(ref_roc.sig_eff, ref_roc.bkg_rej, n_test=du.size, rej_class="ujets",
                     signal_class="bjets")
    _, p_ratio, p_err = p_roc.divide(p_ref)
    ratio, err = roc.ratio_to(ref_roc)
    np.testing.assert_allclose(ratio, p_ratio, rtol=1e-10)
    np.testing.assert_allclose(err[p_roc.non_zero_mask], p_err, rtol=1e-10)


@pytest.mark.parametrize("flat", [False, True])
def test_rejection_vs_pt_matches_puma(discs, flat):
    (ds, ws, pts), (du, wu, ptu) = discs["b"], discs["u"]
    bins = [20, 40, 60, 100, 150, 250]
    mine = rejection_vs_var(ds, du, pts, ptu, bins, 0.7, "flat_per_bin" if flat else "fixed_cut",
                            ws, wu)
    ref = puma.VarVsEff(x_var_sig=pts, disc_sig=ds, weights_sig=ws, x_var_bkg=ptu, disc_bkg=du,
                        weights_bkg=wu, bins=np.array(bins, float), working_point=0.7,
                        flat_per_bin=flat)
    rej, rej_err = ref.bkg_rej
    eff, eff_err = ref.sig_eff
    np.testing.assert_allclose(mine.rejection, rej, rtol=1e-6)
    np.testing.assert_allclose(mine.rejection_err, rej_err, rtol=1e-6)
    np.testing.assert_allclose(mine.sig_eff, eff, rtol=1e-6)
    np.testing.assert_allclose(mine.sig_eff_err, eff_err, rtol=1e-6)
    if flat:
        np.testing.assert_allclose(mine.sig_eff, 0.7, atol=0.01)


def test_negative_weights_give_monotonic_cuts():
    rng = np.random.default_rng(11)
    x = rng.normal(size=5000)
    w = rng.choice([-1.0, 1.0], size=5000, p=[0.15, 0.85])  # NLO-like negative weights
    cuts = cut_at_efficiency(x, np.array([0.85, 0.77, 0.7, 0.6]), w)
    assert np.all(np.diff(cuts) > 0)
    # the weighted efficiency of each cut is close to its target
    for eff, cut in zip([0.85, 0.77, 0.7, 0.6], cuts, strict=True):
        assert efficiency(x, cut, w)[0] == pytest.approx(eff, abs=0.03)
