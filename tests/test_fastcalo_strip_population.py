"""The core strip pass in cluster-position bins with each bin's own population
(``QuantileCorrection.fit(level="strips", strip_variable="core", strip_phase_bins=B, strip_phase_population="own")``,
``lhcml fastcalo quantile-map ... --strip-phase-population own``; :mod:`lhcml.models.fastcalo.strip_pass`; issue 15,
h29a).

* known answer: inside each bin of ``|u|`` the generated and detailed core shares have the same distribution, only the
  bins' populations differ (generated 70 / 30 %, detailed 30 / 70 %), so the right map is the identity. The map fitted
  over every shower (the other bins' showers as zeros, ``all``) shifts the within-bin ranks by ``|p_gen - p_ref| / p``
  (the bin with the larger detailed share raised, > 0.02 in the mean) and leaves the other bin's lower 57 % unmapped;
  the map over each bin's own showers moves no share by more than the quantiles' sampling error;
* save / load and the torch module (the ONNX graph's version) agree with ``apply()``; the CLI's ONNX agrees
  (onnxruntime); ``own`` without phase bins, or an unknown population, is one ConfigError; ``all`` is the default
  (the header without the key, the tables unchanged).
"""

from __future__ import annotations

import numpy as np
import pytest
from _fastcalo_helpers import strip_sample, strip_showers

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import QuantileCorrection
from lhcml.models.fastcalo.strip_pass import cluster_u, core_share, strip_profile

N_ETA, N_PHI = 15, 2
SIZES = [N_ETA * N_PHI, 4]
DETA = 0.003125
CORE = dict(level="strips", strip_variable="core", strip_phase_bins=2, strip_phase_from="cluster",
            cell_deta=[DETA, 0.025], strip_layer=0, strip_n_eta=N_ETA)  # fmt: skip


def _showers(rng, e, share_bin1):
    """Three-strip cores at the window's centre: ``|u| = 0.1`` (bin 0 of 2) with the side share ``x ~ U(0.30, 0.40)``
    or, with probability ``share_bin1``, ``|u| = 0.35`` (bin 1) with ``x ~ U(0.42, 0.52)``; the same per bin in any
    sample (``|u| = |hi - lo| / s3``, ``x = (lo + hi) / s3``)."""
    n = len(e)
    b1 = rng.uniform(size=n) < share_bin1
    u = np.where(b1, 0.35, 0.1) * rng.choice([-1.0, 1.0], n)
    x = np.where(b1, rng.uniform(0.42, 0.52, n), rng.uniform(0.30, 0.40, n))
    s3 = 0.3 * rng.uniform(0.8, 1.2, n)
    prof = np.zeros((n, N_ETA))
    c = N_ETA // 2
    prof[:, c - 1], prof[:, c], prof[:, c + 1] = (x - u) / 2 * s3, (1 - x) * s3, (x + u) / 2 * s3
    return strip_showers(rng, e, prof)


def _sample(seed, n=4000):
    return strip_sample(seed, n)


def _prof(x):
    return strip_profile(x, 0, N_ETA, N_PHI)


def test_each_bins_own_population_maps_equal_within_bin_shapes_to_themselves():
    rng, e, eta = _sample(31)
    gen, ref = _showers(rng, e, 0.3), _showers(rng, e, 0.7)
    ug = np.abs(cluster_u(_prof(gen)))
    assert np.allclose(ug[ug > 0.25], 0.35) and np.allclose(ug[ug < 0.25], 0.1)  # the bins are the constructed ones
    rng2, e2, eta2 = _sample(32)
    x = _showers(rng2, e2, 0.3)
    x0, _, ok = core_share(_prof(x))
    assert ok.all()
    b1 = np.abs(cluster_u(_prof(x))) > 0.25
    shift = {}
    for pop in ("all", "own"):
        corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, gen_eta=eta, ref_eta=eta, strip_phase_population=pop, **CORE)
        got = corr.apply(x, e2, eta2)
        shift[pop] = core_share(_prof(got))[0] - x0
        np.testing.assert_allclose(got[:, :30].sum(1), x[:, :30].sum(1), rtol=1e-5)  # the strip energy kept
        np.testing.assert_array_equal(got[:, 30:], x[:, 30:])
    # every shower's: the zero-column bookkeeping raises bin 1 (detailed 70 % vs generated 30 %) by ~0.03, lowers
    # bin 0's upper 43 %; each bin's own map is the identity up to the quantiles' sampling error
    assert shift["all"][b1].mean() > 0.02 and shift["all"][~b1].mean() < -0.005
    assert np.abs(shift["own"]).mean() < 0.003 and np.abs(shift["own"]).max() < 0.015
    assert abs(shift["own"][b1].mean()) < 0.002 and abs(shift["own"][~b1].mean()) < 0.002


def test_the_own_population_pass_round_trips_and_the_torch_module_agrees(tmp_path):
    from _fastcalo_helpers import assert_reloaded_chain_agrees

    rng, e, eta = _sample(33, 2000)
    gen, ref = _showers(rng, e, 0.3), _showers(rng, e, 0.7)
    first = QuantileCorrection.fit(gen, e, ref, e, SIZES, eta_bins=2, gen_eta=eta, ref_eta=eta)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, after=first, eta_bins=2, gen_eta=eta, ref_eta=eta,
                                  strip_phase_population="own", **CORE)  # fmt: skip
    assert corr.meta["strip_phase_population"] == "own" and corr.meta["passes"] == 2
    ee = np.exp(rng.uniform(np.log(5.0), np.log(100.0), len(e)))
    x = _showers(rng, ee, 0.3)
    want = assert_reloaded_chain_agrees(corr, corr.save(tmp_path / "own.npz"), x, ee, eta)
    assert np.abs(want - first.apply(x, ee, eta)).max() / ee.max() > 0.001  # the last pass moves strips


def test_all_is_the_default_and_own_needs_phase_bins():
    rng, e, eta = _sample(34, 600)
    gen, ref = _showers(rng, e, 0.3), _showers(rng, e, 0.7)
    default = QuantileCorrection.fit(gen, e, ref, e, SIZES, **CORE)
    explicit = QuantileCorrection.fit(gen, e, ref, e, SIZES, strip_phase_population="all", **CORE)
    assert "strip_phase_population" not in default.meta and "strip_phase_population" not in explicit.meta
    for k in ("p_gen", "p_ref", "q_gen", "q_ref"):
        np.testing.assert_array_equal(getattr(default, k), getattr(explicit, k))
    own = QuantileCorrection.fit(gen, e, ref, e, SIZES, strip_phase_population="own", **CORE)
    np.testing.assert_array_equal(own.q_gen, default.q_gen)  # the same quantiles: only the occupancy is recounted
    assert not np.array_equal(own.p_ref, default.p_ref)
    with pytest.raises(ConfigError, match="phase_population must be one of all, own"):
        QuantileCorrection.fit(gen, e, ref, e, SIZES, strip_phase_population="mine", **CORE)
    with pytest.raises(ConfigError, match="'own' only for a core pass in phase bins"):
        QuantileCorrection.fit(gen, e, ref, e, SIZES, **dict(CORE, strip_phase_bins=1, strip_phase_population="own"))
    bad = dict(own.meta, strip_phase_bins=1)
    with pytest.raises(ConfigError, match="strip_phase_population"):
        QuantileCorrection("energy", SIZES, own.log_e_nodes, own.eta_nodes, own.levels, own.p_gen[..., :1],
                           own.p_ref[..., :1], own.q_gen[..., :1, :], own.q_ref[..., :1, :], bad, level="strips")  # fmt: skip


def test_the_cli_fits_the_own_population_pass_into_onnx(tmp_path, capsys):
    """onnxruntime gives apply() for the CLI's pass on a tiny real-binning checkpoint."""
    from _fastcalo_helpers import corrected_onnx_matches_apply

    args = ["--strip-pass", "--strip-variable", "core", "--strip-phase-bins", "4", "--strip-phase-from", "cluster",
            "--strip-phase-population", "own"]  # fmt: skip
    corr, _ = corrected_onnx_matches_apply(tmp_path, capsys, args, data_seed=52, n=400)
    assert corr.meta["strip_phase_population"] == "own" and corr.meta["strip_phase_bins"] == 4
