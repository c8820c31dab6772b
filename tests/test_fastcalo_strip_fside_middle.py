"""The outer-share pass on the middle layer, from an |η| bound up (``QuantileCorrection.fit(level="strips",
strip_variable="fside", strip_layer=1, strip_eta_min=...)``, ``lhcml fastcalo quantile-map ... --strip-pass
--strip-variable fside --strip-layer middle --strip-eta-min ETA``; :mod:`lhcml.models.fastcalo.strip_pass`; issue 15,
h31c).

* known answer: a three-layer shower whose second layer has 7 η rows x 3 φ (the middle layer's η profile: the outer
  share ``x = (E7 - E3) / E7`` is ``1 - R_eta`` over its φ rows). Generated and detailed showers agree at
  ``|η| < 0.9`` (``x ~ U(0.03, 0.05)``); above it the generated share is ``U(0.03, 0.05)`` and the detailed
  ``U(0.05, 0.07)`` (a too-narrow middle layer in η, as the seven-pass generator's R_eta is η-dependent at |η| > 0.9).
  After the pass with ``strip_eta_min=0.9`` the share above the bound has the detailed distribution, the showers below
  it are exactly as they were, and the middle layer's energy, E7 and every other layer are kept;
* the bound is stored, round-trips, and the torch module (the ONNX graph's) leaves the showers below it exactly alone;
  with ``strip_eta_max`` too only the band between the two moves;
* ``strip_eta_min`` belongs to an fside pass, must be > 0 and below ``strip_eta_max``; the CLI's ONNX with
  ``--strip-layer middle --strip-eta-min`` agrees with ``apply()`` (onnxruntime), and an unknown layer name is one error.
"""

from __future__ import annotations

import numpy as np
import pytest
from _fastcalo_helpers import assert_bounded_pass_round_trips

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import QuantileCorrection
from lhcml.models.fastcalo.strip_pass import apply_strip_pass, fside_share, strip_profile

N_ETA, N_PHI = 7, 3
SIZES = [6, N_ETA * N_PHI, 4]
START = SIZES[0]
MID = dict(level="strips", strip_variable="fside", strip_layer=1, strip_n_eta=N_ETA)


def _showers(rng, e, eta, lo, hi, lo_out=None, hi_out=None):
    """Middle-layer η profiles around the centre row: the three-row core holds ``1 - x`` of E7 (side share
    ``U(0.2, 0.3)``), the four outer rows ``x`` (2 : 1 from the inside out), ``x ~ U(lo, hi)`` at ``|η| < 0.9`` and
    ``U(lo_out, hi_out)`` above (default: the same); each row split over 3 φ cells; a first layer of 6 and a last of 4
    cells holding 50 % and 10 % of the middle energy on average; all times the incident energy."""
    n = len(e)
    out = np.abs(eta) >= 0.9
    x = np.where(out, rng.uniform(lo if lo_out is None else lo_out, hi if hi_out is None else hi_out, n),
                 rng.uniform(lo, hi, n))  # fmt: skip
    xs = rng.uniform(0.2, 0.3, n)
    asym = rng.uniform(-0.3, 0.3, n)
    c = N_ETA // 2
    prof = np.zeros((n, N_ETA))
    prof[:, c] = (1 - x) * (1 - xs)
    prof[:, c - 1], prof[:, c + 1] = (1 - x) * xs * (0.5 - asym / 2), (1 - x) * xs * (0.5 + asym / 2)
    for d, w in ((2, 2 / 6), (3, 1 / 6)):
        prof[:, c - d], prof[:, c + d] = x * w * (1 - asym / 3), x * w * (1 + asym / 3)
    prof *= rng.uniform(0.8, 1.2, n)[:, None]
    t = rng.dirichlet(np.full(N_PHI, 5.0), (n, N_ETA))
    mid = (prof[:, :, None] * t).reshape(n, -1)
    first = rng.dirichlet(np.ones(6), n) * 0.5 * rng.uniform(0.8, 1.2, n)[:, None]
    last = rng.dirichlet(np.ones(4), n) * 0.1 * rng.uniform(0.8, 1.2, n)[:, None]
    return (np.concatenate([first, mid, last], axis=1) * e[:, None]).astype(np.float32)


def _sample(seed, n):
    rng = np.random.default_rng(seed)
    # |η| in two bands (0.1-0.5 and 1.0-1.3), so an |η| node's map sees one side of the 0.9 bound only
    eta = np.where(rng.random(2 * n) < 0.5, rng.uniform(0.1, 0.5, 2 * n), rng.uniform(1.0, 1.3, 2 * n))
    return rng, np.repeat([10.0, 100.0], n), eta * rng.choice([-1.0, 1.0], 2 * n)


def _share(x):
    return fside_share(strip_profile(x, START, N_ETA, N_PHI))


def test_the_middle_layer_pass_above_eta_min_gives_the_detailed_share_and_leaves_the_rest_alone():
    rng, e, eta = _sample(61, 4000)
    gen = _showers(rng, e, eta, 0.03, 0.05)
    ref = _showers(rng, e, eta, 0.03, 0.05, 0.05, 0.07)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, eta_bins=2, gen_eta=eta, ref_eta=eta, strip_eta_min=0.9, **MID)
    assert corr.meta["strip_eta_min"] == 0.9 and corr.meta["strip_layer"] == 1 and "strip_eta_max" not in corr.meta
    rng2, e2, eta2 = _sample(62, 4000)
    x = _showers(rng2, e2, eta2, 0.03, 0.05)
    got = corr.apply(x, e2, eta2)
    s0, ok0 = _share(x)
    s1, ok1 = _share(got)
    assert ok0.all() and ok1.all()
    up = np.abs(eta2) >= 0.9
    want = np.quantile(_share(_showers(rng2, e2, eta2, 0.03, 0.05, 0.05, 0.07))[0][up], [0.1, 0.5, 0.9])
    np.testing.assert_allclose(np.quantile(s1[up], [0.1, 0.5, 0.9]), want, atol=0.003)  # the detailed distribution
    assert abs(np.quantile(s0[up], 0.5) - want[1]) > 0.015  # (it was not there before)
    np.testing.assert_array_equal(got[~up], x[~up])  # below the bound: exactly as they were
    np.testing.assert_array_equal(got[:, :START], x[:, :START])  # other layers untouched
    np.testing.assert_array_equal(got[:, START + N_ETA * N_PHI :], x[:, START + N_ETA * N_PHI :])
    mid0, mid1 = x[:, START : START + N_ETA * N_PHI], got[:, START : START + N_ETA * N_PHI]
    np.testing.assert_allclose(mid1.sum(1), mid0.sum(1), rtol=1e-5)  # the middle layer's energy (here E7) kept
    p0, p1 = strip_profile(x, START, N_ETA, N_PHI), strip_profile(got, START, N_ETA, N_PHI)
    np.testing.assert_array_equal(np.argmax(p1, 1), np.argmax(p0, 1))  # the hottest row stays the hottest
    # the φ split of each row is kept (rows are scaled as a whole)
    r0 = mid0.reshape(-1, N_ETA, N_PHI) / mid0.reshape(-1, N_ETA, N_PHI).sum(2, keepdims=True)
    r1 = mid1.reshape(-1, N_ETA, N_PHI) / mid1.reshape(-1, N_ETA, N_PHI).sum(2, keepdims=True)
    np.testing.assert_allclose(r1, r0, atol=1e-5)


def test_the_bounds_round_trip_and_the_torch_module_leaves_the_showers_outside_them_exactly_alone(tmp_path):

    rng, e, eta = _sample(63, 2000)
    gen = _showers(rng, e, eta, 0.03, 0.05, 0.02, 0.04)
    ref = _showers(rng, e, eta, 0.03, 0.05, 0.05, 0.07)
    kw = dict(eta_bins=2, gen_eta=eta, ref_eta=eta, **MID)
    every = QuantileCorrection.fit(gen, e, ref, e, SIZES, **kw)
    x = _showers(rng, e, eta, 0.03, 0.05, 0.02, 0.04)
    a = every.apply(x, e, eta)
    for lo, hi in ((0.9, None), (0.3, 1.1)):
        band = QuantileCorrection.fit(gen, e, ref, e, SIZES, strip_eta_min=lo, strip_eta_max=hi, **kw)
        for k in ("p_gen", "p_ref", "q_gen", "q_ref"):  # the same map, fitted on every shower
            np.testing.assert_array_equal(getattr(band, k), getattr(every, k))
        inside = (np.abs(eta) >= lo) & (np.abs(eta) < (np.inf if hi is None else hi))
        b = band.apply(x, e, eta)
        np.testing.assert_array_equal(b[inside], a[inside])
        np.testing.assert_array_equal(b[~inside], x[~inside])
        assert np.abs(a[~inside] - x[~inside]).max() > 1e-3  # (the pass moves them without the bounds)
        back = assert_bounded_pass_round_trips(band, x, e, eta, b, inside, tmp_path / f"band{lo}.npz")
        assert back.meta["strip_eta_min"] == lo and back.meta.get("strip_eta_max") == hi
        with pytest.raises(ConfigError, match="strip_eta_m.. needs each shower's eta"):
            apply_strip_pass(back, x, e, None)


def test_eta_min_belongs_to_fside_is_positive_and_lies_below_eta_max():
    rng, e, eta = _sample(64, 500)
    gen = _showers(rng, e, eta, 0.03, 0.05)
    kw = dict(gen_eta=eta, ref_eta=eta, **MID)
    with pytest.raises(ConfigError, match="eta_min .* belongs to an fside strip pass"):
        QuantileCorrection.fit(gen, e, gen, e, SIZES, strip_eta_min=0.9, **dict(kw, strip_variable="core"))
    with pytest.raises(ConfigError, match="eta_min .* belongs to an fside strip pass"):
        QuantileCorrection.fit(gen, e, gen, e, SIZES, strip_eta_min=0.0, **kw)
    with pytest.raises(ConfigError, match="strip_eta_min .* must lie below its strip_eta_max"):
        QuantileCorrection.fit(gen, e, gen, e, SIZES, strip_eta_min=0.9, strip_eta_max=0.5, **kw)
    ok = QuantileCorrection.fit(gen, e, gen, e, SIZES, strip_eta_min=0.9, **kw)
    with pytest.raises(ConfigError, match="strip_eta_min belongs to an fside strip pass"):
        QuantileCorrection("energy", SIZES, ok.log_e_nodes, ok.eta_nodes, ok.levels, ok.p_gen, ok.p_ref, ok.q_gen,
                           ok.q_ref, dict(ok.meta, strip_variable="height"), level="strips")  # fmt: skip


def test_the_cli_fits_the_middle_layer_pass_into_onnx(tmp_path, capsys):
    """onnxruntime gives apply() for the CLI's middle-layer pass on a tiny real-binning checkpoint (|η| 0–1.3)."""
    from _fastcalo_helpers import corrected_onnx_matches_apply

    corr, _ = corrected_onnx_matches_apply(tmp_path, capsys, ["--strip-pass", "--strip-variable", "fside", "--strip-layer",
                                                              "middle", "--strip-eta-min", "0.3"], data_seed=54, n=400)  # fmt: skip
    assert corr.meta["strip_variable"] == "fside" and corr.meta["strip_eta_min"] == 0.3
    assert corr.meta["strip_layer"] == 1 and corr.meta["strip_n_eta"] == 7  # the middle layer: 7 eta x 11 phi


def test_the_cli_names_an_unknown_strip_layer(tmp_path):
    from _fastcalo_helpers import checkpoint_and_training_file

    from lhcml.tasks.fastcalo.dataset import fit_quantile_correction

    _, _, ckpt = checkpoint_and_training_file(tmp_path, data_seed=55, noise_seed=5, n=100)
    with pytest.raises(ConfigError, match=r"unknown layer\(s\) \['midle'\] for the strip pass; the binning's layers"):
        fit_quantile_correction(ckpt, tmp_path / "train.h5", tmp_path / "x.npz", level="strips", strip_variable="fside",
                                strip_layer="midle")  # fmt: skip
