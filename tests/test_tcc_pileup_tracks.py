"""TCC treatments of pileup tracks (lhcml.sim.tcc.build_tcc pileup_tracks=): constructed events with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.sim.generator import FlatTable
from lhcml.sim.pflow import KIND_CHARGED_HADRON, KIND_NEUTRAL_HADRON, KIND_PHOTON
from lhcml.sim.tcc import TCC_PILEUP_TRACKS, build_tcc


def _event():
    """Two events. Event 0: cluster A (E 100, hadronic) matched by a hard-scatter track (pT 30) and a pileup
    track (pT 10); cluster B (E 20, a photon) matched only by a pileup track (pT 2); cluster C (E 5) unmatched;
    a hard-scatter track far from every cluster. Event 1: one cluster (E 8) matched by one hard-scatter track."""
    c = FlatTable({"eta": np.array([0.0, 0.5, 1.0, -1.0]), "phi": np.array([0.0, 0.5, 1.0, -1.0]),
                   "E": np.array([100.0, 20.0, 5.0, 8.0]), "em_fraction": np.array([0.2, 0.9, 0.3, 0.1])},
                  np.array([3, 1]))
    c.columns["pt"] = c["E"] / np.cosh(c["eta"])
    c.columns["mass"] = np.zeros(4)
    t = FlatTable({"pt": np.array([30.0, 10.0, 2.0, 7.0, 6.0]), "eta": np.array([0.01, 0.02, 0.5, 3.0, -1.0]),
                   "phi": np.array([0.0, -0.01, 0.52, 2.0, -1.01]),
                   "z0": np.array([0.0, 40.0, -30.0, 0.0, 0.0]),  # tracks 1 and 2 fail the vertex association
                   "charge": np.array([1, -1, 1, 1, -1], np.int8)}, np.array([4, 1]))
    return c, t


def _per_event(tcc, name, mask=None, n_ev=2):
    w = tcc[name] if mask is None else np.where(mask, tcc[name], 0.0)
    return np.bincount(tcc.event, weights=w, minlength=n_ev)


def test_default_is_remove_and_drops_hard_scatter_energy():
    c, t = _event()
    a = build_tcc(c, t, np.zeros(2))
    b = build_tcc(c, t, np.zeros(2), pileup_tracks="remove")
    for k in a.columns:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a.counts, b.counts)
    ch = a["charge"] != 0
    # A: the hard track gets 100 * 30 / 40; the pileup track's 25 and the whole photon cluster B are dropped
    np.testing.assert_allclose(np.sort(a["E"][ch]), [8.0, 75.0])
    np.testing.assert_allclose(np.sort(a["E"][~ch]), [5.0])
    np.testing.assert_allclose(_per_event(a, "E"), [80.0, 8.0])
    with pytest.raises(ValueError, match="pileup_tracks"):
        build_tcc(c, t, np.zeros(2), pileup_tracks="drop")
    assert TCC_PILEUP_TRACKS[0] == "remove"


def test_pv_only_gives_the_cluster_to_the_hard_track_and_keeps_clusters_of_pileup_tracks():
    c, t = _event()
    a = build_tcc(c, t, np.zeros(2), pileup_tracks="pv_only")
    ch = a["charge"] != 0
    # A goes whole to the hard-scatter track (its pileup share included: no SoftKiller on charged TCCs)
    np.testing.assert_allclose(a["E"][ch & (a.event == 0)], [100.0])
    np.testing.assert_allclose(a["eta"][ch & (a.event == 0)], [0.01])
    assert (a["kind"][ch] == KIND_CHARGED_HADRON).all()
    # B (no vertex track) is a neutral TCC again, a photon; C stays neutral
    neu = ~ch & (a.event == 0)
    order = np.argsort(a["E"][neu])
    np.testing.assert_allclose(a["E"][neu][order], [5.0, 20.0])
    assert a["kind"][neu][order][1] == KIND_PHOTON
    # energy bookkeeping: every cluster's energy is in the TCCs
    np.testing.assert_allclose(_per_event(a, "E"), np.bincount(c.event, weights=c["E"], minlength=2))
    # event 1 (no pileup track) as the default
    d = build_tcc(c, t, np.zeros(2))
    for k in ("E", "eta", "phi", "kind"):
        np.testing.assert_array_equal(a[k][a.event == 1], d[k][d.event == 1])


def test_share_return_puts_the_pileup_shares_back_as_neutral_tccs():
    c, t = _event()
    a = build_tcc(c, t, np.zeros(2), pileup_tracks="share_return")
    ch = a["charge"] != 0
    np.testing.assert_allclose(np.sort(a["E"][ch]), [8.0, 75.0])  # the charged shares as the default
    neu = ~ch
    got = sorted(zip(np.round(a["E"][neu], 9), np.round(a["eta"][neu], 9), a["kind"][neu], strict=True))
    # the pileup track's 25 at cluster A's position (hadronic), all of B (photon), C unchanged
    assert got == [(5.0, 1.0, KIND_NEUTRAL_HADRON), (20.0, 0.5, KIND_PHOTON), (25.0, 0.0, KIND_NEUTRAL_HADRON)]
    pt = a["pt"][neu][np.argmax(a["E"][neu] == 25.0)]
    assert pt == pytest.approx(25.0)  # massless at eta 0
    np.testing.assert_allclose(_per_event(a, "E"), np.bincount(c.event, weights=c["E"], minlength=2))
    # charged TCCs first, then neutral ones, per event
    for e in range(2):
        q = a["charge"][a.event == e] != 0
        assert not np.any(np.diff(q.astype(int)) > 0)


def test_share_subtract_returns_only_the_excess_over_the_pileup_tracks_momenta():
    c, t = _event()
    a = build_tcc(c, t, np.zeros(2), pileup_tracks="share_subtract")
    ch = a["charge"] != 0
    np.testing.assert_allclose(np.sort(a["E"][ch]), [8.0, 75.0])
    neu = ~ch
    p1, p2 = 10.0 * np.cosh(0.02), 2.0 * np.cosh(0.5)  # the pileup tracks' |p|
    got = sorted(zip(np.round(a["E"][neu], 9), np.round(a["eta"][neu], 9), a["kind"][neu], strict=True))
    want = sorted([(round(25.0 - p1, 9), 0.0, KIND_NEUTRAL_HADRON), (round(20.0 - p2, 9), 0.5, KIND_PHOTON),
                   (5.0, 1.0, KIND_NEUTRAL_HADRON)])
    assert got == want
    # bookkeeping: the clusters less the pileup tracks' own momenta
    np.testing.assert_allclose(_per_event(a, "E"), [125.0 - p1 - p2, 8.0])
    # a pileup track with more momentum than its share takes the share, nothing comes back (no negative energy)
    t2 = FlatTable({**t.columns, "pt": np.array([30.0, 10.0, 40.0, 7.0, 6.0])}, t.counts)
    b = build_tcc(c, t2, np.zeros(2), pileup_tracks="share_subtract")
    assert not np.any(np.isclose(b["eta"][b["charge"] == 0], 0.5))  # cluster B is gone
    assert (b["E"] > 0).all()


@pytest.mark.parametrize("variant", TCC_PILEUP_TRACKS[1:])
def test_variants_equal_the_default_without_pileup_tracks(variant):
    """All tracks at the vertex: the variants are the default, bit for bit."""
    c, t = _event()
    t = FlatTable({**t.columns, "z0": np.zeros(5)}, t.counts)
    a, b = build_tcc(c, t, np.zeros(2)), build_tcc(c, t, np.zeros(2), pileup_tracks=variant)
    np.testing.assert_array_equal(a.counts, b.counts)
    for k in a.columns:
        np.testing.assert_array_equal(a[k], b[k])


def test_benchmark_builds_the_variants_beside_the_default_from_the_same_events():
    """``benchmarks/sim_large_r.py --constituents tcc tcc~pv_only``: the variant's jets come from the same events as
    the default's (one simulation); with pileup they keep hard-scatter energy the default drops."""
    pytest.importorskip("fastjet")
    from _scripts import load_benchmark

    from lhcml.sim.pileup import build_pileup_library

    bench = load_benchmark("sim_large_r.py")
    assert bench._type_label("tcc~pv_only") == "tcc~pv_only"
    out = bench.simulate_types("wz", 30, 60.0, 31, build_pileup_library(100, 17), ["tcc", "tcc~pv_only"])
    a, b = out["tcc"]["jets"], out["tcc~pv_only"]["jets"]
    assert len(a) >= 4
    ratios = []
    for i in range(len(a)):
        same = np.flatnonzero(b["eventNumber"] == a["eventNumber"][i])
        if len(same):
            dr = np.hypot(b["eta"][same] - a["eta"][i], (b["phi"][same] - a["phi"][i] + np.pi) % (2 * np.pi) - np.pi)
            if dr.min() < 0.1:
                k = same[np.argmin(dr)]
                assert b["truthJetPt"][k] == a["truthJetPt"][i]  # the same hard event
                ratios.append(b["ptUngroomed"][k] / a["ptUngroomed"][i])
    assert len(ratios) >= 4
    assert np.median(ratios) > 1.0 and max(ratios) > 1.01, ratios
