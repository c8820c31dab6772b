"""Small-R jet calibration at low pT: one numerical inversion per μ, the table's checks, and the
closure of the shipped table for 20 GeV jets (lhcml.sim.jet_calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lhcml.errors import ConfigError

ARRAY_KEYS = ("eta_edges", "alpha_npv", "beta_mu", "mu_points")


def _as_table(t: dict) -> dict:
    """A derived table (lists) in the form :func:`load_table` returns (arrays)."""
    return {k: (np.asarray(v, float) if k in ARRAY_KEYS else [np.asarray(x, float) for x in v])
            for k, v in t.items() if k != "provenance"}


def _synthetic_sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Jets with a response rising with pT and, at μ = 60, a pileup offset that falls with pT
    (what a pT-independent residual α·N_PV + β·μ cannot absorb below ~30 GeV)."""
    truth = np.exp(rng.uniform(np.log(8), np.log(400), n))
    eta = rng.uniform(-2.4, 2.4, n)
    mu = rng.choice([0.0, 60.0], n)
    npv = np.where(mu > 0, rng.poisson(0.6 * mu), 0) + 1.0
    resp = 0.80 + 0.12 * np.log10(truth / 8) / np.log10(50)
    offset = 0.3 * (npv - 1) + 0.05 * mu + np.where(mu > 0, 6.0 * np.exp(-truth / 15), 0.0)
    pt = truth * resp * (1 + 0.08 * rng.standard_normal(n)) + offset
    return {"pt": pt, "eta": eta, "truth_pt": truth, "truth_eta": eta, "mu": mu, "npv": npv}


def _closure(table: dict, s: dict[str, np.ndarray], mu: float, t: float) -> float:
    from lhcml.sim.jet_calibration import calibrated_pt

    m = (s["mu"] == mu) & (np.abs(s["truth_pt"] / t - 1) < 0.1) & (np.abs(s["eta"]) < 0.8)
    cal = calibrated_pt(s["pt"][m], s["eta"][m], np.zeros(m.sum()), mu, s["npv"][m], 0.4, table)
    return float(np.median(cal / s["truth_pt"][m]))


def test_one_inversion_per_mu_closes_20_gev_jets_at_each_mu_where_a_mu_blind_table_does_not():
    from lhcml.sim.jet_calibration import derive_table

    s = _synthetic_sample(np.random.default_rng(12), 60000)
    table = _as_table(derive_table(s))
    assert table["mu_points"].tolist() == [0.0, 60.0]
    n_eta = len(table["eta_edges"]) - 1
    assert len(table["pt_nodes"]) == 2 * n_eta
    for mu in (0.0, 60.0):
        for t in (20.0, 25.0, 50.0, 150.0):
            assert _closure(table, s, mu, t) == pytest.approx(1.0, abs=0.02), (mu, t)
    # the same table with the mu = 0 inversion used at mu = 60 (blind to mu): 20 GeV jets miss
    blind = dict(table, pt_nodes=table["pt_nodes"][:n_eta] * 2, response=table["response"][:n_eta] * 2)
    assert _closure(blind, s, 60.0, 20.0) > 1.04
    # between the mu points the response is interpolated linearly
    from lhcml.sim.jet_calibration import jes_response

    pt, eta = np.array([20.0, 20.0]), np.array([0.1, 0.1])
    r0, r60 = jes_response(table, pt, eta, 0.0)[0], jes_response(table, pt, eta, 60.0)[0]
    assert jes_response(table, pt, eta, np.array([30.0, 140.0])) == pytest.approx([(r0 + r60) / 2, r60])


def test_calibration_table_with_missing_mu_point_lists_is_a_config_error(tmp_path):
    from lhcml.sim.jet_calibration import load_table

    good = {"eta_edges": [0, 1, 2], "alpha_npv": [0, 0], "beta_mu": [0, 0], "mu_points": [0, 60],
            "pt_nodes": [[10, 20]] * 4, "response": [[0.9, 0.95]] * 4}
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(good))
    assert load_table(str(ok))["mu_points"].tolist() == [0.0, 60.0]
    for name, bad in (("short", dict(good, pt_nodes=[[10, 20]] * 2, response=[[0.9, 0.95]] * 2)),
                      ("unsorted", dict(good, mu_points=[60, 0])),
                      ("negative", dict(good, response=[[0.9, -0.95]] * 4))):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match="derive_jes"):
            load_table(str(p))


@pytest.fixture(scope="module")
def ttbar_mu0():
    """ρ·A-corrected truth-matched jets of 300 tt̄ events at μ = 0, from 2 GeV (the calibration is
    applied offline, so the shipped and a broken table calibrate the same jets)."""
    from lhcml.sim.jet_calibration import jes_sample

    return jes_sample("ttbar", 300, 0.0, seed=31, pt_min=2.0)


def _low_pt_response(table: dict, s: dict[str, np.ndarray]) -> tuple[float, int]:
    """Median calibrated response of jets with truth pT 17.5–30 GeV, |η| < 2.5, calibrated pT
    > 8 GeV (the closure selection of benchmarks/sim_jets.py)."""
    from lhcml.sim.jet_calibration import calibrated_pt

    cal = calibrated_pt(s["pt"], s["eta"], np.zeros(len(s["pt"])), 0.0, s["npv"], 0.4, table)
    m = (s["truth_pt"] >= 17.5) & (s["truth_pt"] < 30) & (np.abs(s["truth_eta"]) < 2.5) & (cal > 8)
    return float(np.median(cal[m] / s["truth_pt"][m])), int(m.sum())


def test_shipped_table_closes_20_gev_jets_and_a_table_with_low_nodes_shifted_5_percent_does_not(ttbar_mu0):
    from lhcml.sim.jet_calibration import load_table, table_loaded

    assert table_loaded(), "the shipped jet_calibration_table.json is missing: run benchmarks/derive_jes.py"
    table = load_table()
    r, n = _low_pt_response(table, ttbar_mu0)
    assert n > 250  # statistical error of the median ~1 %
    low = (ttbar_mu0["truth_pt"] >= 17.5) & (ttbar_mu0["truth_pt"] < 30)
    assert np.median(ttbar_mu0["pt"][low] / ttbar_mu0["truth_pt"][low]) < 0.95  # uncalibrated: not closed
    assert r == pytest.approx(1.0, abs=0.025), f"median response {r:.3f} on {n} jets"
    # the nodes that calibrate 20 GeV jets (below 30 GeV) with a 5 % higher response: the check fails
    broken = dict(table, response=[np.where(x < 30, y * 1.05, y) for x, y in zip(table["pt_nodes"], table["response"],
                                                                                 strict=True)])
    rb, _ = _low_pt_response(broken, ttbar_mu0)
    assert rb < r - 0.03
    assert abs(rb - 1.0) > 0.025
