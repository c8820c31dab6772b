"""Wide-pT boosted processes (``top_wide``, ``wz_wide``, ``hbb_wide``, ``qcd_wide``): jets over
250-1500 GeV from a pT-hat-biased Pythia sample, weighted back with ``mcEventWeight``.

Two tiny samples (no pile-up): ~120 ``wz_wide`` and ~80 ``qcd_wide`` events.
"""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.sim.processes import get_process


@pytest.fixture(scope="module")
def wz_jets():
    from lhcml.sim.events import simulate_events

    return simulate_events("wz_wide", 120, mu=0.0, seed=7)["jets"]


@pytest.fixture(scope="module")
def qcd_jets():
    from lhcml.sim.events import simulate_events

    return simulate_events("qcd_wide", 80, mu=0.0, seed=8)["jets"]


def test_wide_processes_share_window_and_labels():
    narrow = {"top_wide": "top", "wz_wide": "wz", "hbb_wide": "hbb", "qcd_wide": "qcd_boosted"}
    for wide, old in narrow.items():
        p, q = get_process(wide), get_process(old)
        assert (p.kind, p.jet_kind, p.jet_eta_max) == ("boosted", "large_r", 2.0)
        assert (p.jet_pt_min, p.jet_pt_max) == (250.0, 1500.0)
        assert p.signal_labels == q.signal_labels  # same containment/label requirement
        assert "PhaseSpace:bias2Selection = on" in p.settings


def test_wz_wide_spans_the_pt_range_with_contained_w_and_z(wz_jets):
    j = wz_jets
    pt = j["pt"] / 1e3
    assert len(j) >= 30
    assert set(np.unique(j["R10TruthLabel"])) <= {2, 3}  # uncontained W/Z jets are dropped
    assert (pt > 250).all() and (pt < 1500).all() and (np.abs(j["eta"]) < 2.0).all()
    # the old narrow window was 550-650 GeV: the biased sample fills both sides of it
    assert (pt < 550).sum() >= 3 and (pt > 650).sum() >= 3
    # contained W (80 GeV) and Z (91 GeV): truth-jet masses near the boson masses, W below Z
    mw = np.median(j["truthMass"][j["R10TruthLabel"] == 2]) / 1e3
    mz = np.median(j["truthMass"][j["R10TruthLabel"] == 3]) / 1e3
    assert 65 < mw < 95 and 75 < mz < 105 and mw < mz


def test_bias_weights_fall_with_pt(qcd_jets):
    j = qcd_jets
    w = j["mcEventWeight"].astype(float)
    assert set(np.unique(j["R10TruthLabel"])) == {0}
    assert (w > 0).all() and np.ptp(w) > 0
    # sampling ∝ pT-hat^4 is undone by weights ∝ pT-hat^-4 (pT-hat ~ leading-jet pT):
    # the weight falls steeply with the jet pT
    rank_pt = np.argsort(np.argsort(j["pt"]))
    rank_w = np.argsort(np.argsort(w))
    assert np.corrcoef(rank_pt, rank_w)[0, 1] < -0.5
    assert w.max() / w.min() > 10
