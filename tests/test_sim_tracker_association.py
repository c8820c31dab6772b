"""Tests of track-to-jet association (lhcml.sim.association)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from lhcml.data.schema import TRACK_DTYPE, TRUTH_ORIGIN
from lhcml.errors import SchemaError
from lhcml.sim.association import (
    associate_tracks,
    association_cone,
    signed_ip_significance,
    truth_type_label,
)
from lhcml.sim.detector import default_detector_params
from lhcml.sim.tracker import simulate_tracks

JET_ETA, JET_PHI = 0.5, 1.0


def _kin(pt, eta, phi):
    pt, eta, phi = (np.asarray(v, dtype=float) for v in np.broadcast_arrays(pt, eta, phi))
    return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)


def _particles(rows):
    """rows: (pt, eta, phi, vx, vy, vz, charge, origin, vertex_index, is_pileup)."""
    a = np.array(rows, dtype=float)
    n = len(a)
    px, py, pz = _kin(a[:, 0], a[:, 1], a[:, 2])
    q = a[:, 6].astype(np.int8)
    m = np.full(n, 0.13957)
    cols = {
        "pid": (211 * q.astype(np.int32)), "charge": q, "px": px, "py": py, "pz": pz,
        "e": np.sqrt(px**2 + py**2 + pz**2 + m**2), "m": m,
        "vx": a[:, 3], "vy": a[:, 4], "vz": a[:, 5], "status": np.ones(n, np.int32),
        "final": np.ones(n, bool), "parent_pid": np.zeros(n, np.int32),
        "origin": a[:, 7].astype(np.int8), "hf_hadron": np.full(n, -1, np.int32),
        "vertex_index": a[:, 8].astype(np.int32), "is_pileup": a[:, 9].astype(bool),
    }
    return cols


@pytest.fixture(scope="session")
def quiet():
    return default_detector_params().with_updates(
        fakes=dict(base_rate=0.0, density_rate=0.0, occupancy_rate=0.0),
        material=dict(interaction_lengths=[0.0] * 5, radiation_lengths=[0.0] * 5),
        tails=dict(material=dict(elastic_to_inelastic=0.0), dense_core=dict(probability_per_shared_hit=0.0),
                   pattern_recognition=dict(rate=0.0, density_rate=0.0)),
        modules=dict(dead_fraction_ibl=0.0, dead_fraction_pixel=0.0, dead_fraction_sct=0.0),
        shared_hits=dict(lost_probability=0.0),
        efficiency=dict(eta_values=[1.0] * 8, pt_values=[1.0] * 6, pt_reference=1.0),
        hit_efficiency=dict(ibl=1.0, pixel=1.0, sct=1.0),
    )


@pytest.fixture(scope="session")
def bjet_event(quiet):
    """One event, one jet: 6 PV tracks, a b-like vertex (4 tracks), a c-like vertex further out
    (2 tracks), a pile-up track close in z, one far in z, a track with |d0| > 3.5 mm and a track
    outside the cone."""
    rows = []
    rng = np.random.default_rng(0)
    for k in range(6):
        rows.append((3.0 + k, JET_ETA + rng.normal(0, 0.08), JET_PHI + rng.normal(0, 0.08),
                     0, 0, 0, 1 if k % 2 else -1, TRUTH_ORIGIN["primary"], 0, 0))
    for lxy, n_trk, vtx, org in ((2.0, 4, 5, TRUTH_ORIGIN["fromB"]), (4.0, 2, 6, TRUTH_ORIGIN["fromBC"])):
        vx, vy, vz = lxy * np.cos(JET_PHI), lxy * np.sin(JET_PHI), lxy * np.sinh(JET_ETA)
        for k in range(n_trk):
            rows.append((8.0 + k, JET_ETA + (0.15 if k % 2 else -0.15), JET_PHI + (0.08 if k < 2 else -0.08),
                         vx, vy, vz, 1 if k % 2 else -1, org, vtx, 0))
    rows.append((4.0, JET_ETA + 0.05, JET_PHI - 0.05, 0, 0, 1.0, 1, TRUTH_ORIGIN["primary"], 3, 1))  # PU near
    rows.append((4.0, JET_ETA - 0.05, JET_PHI + 0.05, 0, 0, 25.0, 1, TRUTH_ORIGIN["primary"], 4, 1))  # PU far
    # |d0| = 6 mm: produced 6 mm from the beam line with momentum perpendicular to its position
    rows.append((10.0, JET_ETA, JET_PHI, 6 * np.cos(JET_PHI - np.pi / 2), 6 * np.sin(JET_PHI - np.pi / 2),
                 0.0, 1, TRUTH_ORIGIN["otherSecondary"], 7, 0))
    rows.append((10.0, JET_ETA, JET_PHI + 1.5, 0, 0, 0, 1, TRUTH_ORIGIN["primary"], 0, 0))  # outside
    cols = _particles(rows)
    parts = ak.unflatten(ak.zip(cols), [len(rows)])
    tracks = simulate_tracks(parts, np.random.default_rng(1), quiet)
    jets = ak.Array([[{"pt": 60.0, "eta": JET_ETA, "phi": JET_PHI}]])
    table, n = associate_tracks(jets, tracks, np.zeros(1), params=quiet)
    return tracks, table, n, jets


def test_table_shape_padding_and_units(bjet_event):
    tracks, table, n, _ = bjet_event
    assert table.dtype == TRACK_DTYPE and table.shape == (1, 40)
    assert n[0] == 6 + 4 + 2 + 1  # PV + two displaced vertices + the close pile-up track
    valid = table["valid"][0]
    assert valid.sum() == n[0] and np.all(valid[: n[0]]) and not np.any(valid[n[0]:])
    assert np.all(table[0, n[0]:] == np.zeros(1, dtype=TRACK_DTYPE)[0])
    t = table[0, : n[0]]
    assert np.all(t["pt"] > 2500)  # MeV
    np.testing.assert_allclose(t["ptfrac"], t["pt"] / 60e3, rtol=1e-5)
    np.testing.assert_allclose(t["dr"], np.hypot(t["deta"], t["dphi"]), rtol=1e-4)
    assert np.all(t["dr"] < association_cone(60e3))


def test_sorted_by_abs_signed_d0_significance(bjet_event):
    _, table, n, _ = bjet_event
    s = np.abs(table["IP3D_signed_d0_significance"][0, : n[0]])
    assert np.all(np.diff(s) <= 0)


def test_displaced_vertex_tracks_have_positive_significance_and_vertex_index(bjet_event):
    _, table, n, _ = bjet_event
    t = table[0, : n[0]]
    org = t["ftagTruthOriginLabel"]
    disp = (org == TRUTH_ORIGIN["fromB"]) | (org == TRUTH_ORIGIN["fromBC"])
    assert disp.sum() == 6
    assert np.all(t["IP3D_signed_d0_significance"][disp] > 3)
    assert np.all(t["IP3D_signed_z0_significance"][disp] > 0)
    # the six displaced tracks lead the |sd0| ordering
    assert np.all(disp[:6])
    assert np.all(t["ftagTruthVertexIndex"][org == TRUTH_ORIGIN["fromB"]] == 1)  # smaller radius first
    assert np.all(t["ftagTruthVertexIndex"][org == TRUTH_ORIGIN["fromBC"]] == 2)
    prim = org == TRUTH_ORIGIN["primary"]
    assert prim.sum() == 6 and np.all(t["ftagTruthVertexIndex"][prim] == 0)
    pu = org == TRUTH_ORIGIN["pileup"]
    assert pu.sum() == 1 and t["ftagTruthVertexIndex"][pu][0] == -1
    np.testing.assert_allclose(t["truthProductionRadius"][org == TRUTH_ORIGIN["fromB"]], 2.0, rtol=1e-5)
    assert set(np.abs(t["ftagTruthTypeLabel"])) == {2}
    np.testing.assert_array_equal(np.sign(t["ftagTruthTypeLabel"]), np.sign(t["qOverP"]))


def test_loose_selection_rejects_large_ip_and_far_tracks(bjet_event):
    tracks, table, n, _ = bjet_event
    # the |d0| = 6 mm track and the far pile-up track exist as tracks but are not associated
    f = ak.flatten(tracks)
    assert np.any(np.abs(ak.to_numpy(f.d0)) > 5.5)
    assert not np.any(np.abs(table["d0"][0, : n[0]]) > 3.5)
    assert np.all(np.abs(table["z0SinTheta"][0, : n[0]]) < 5.0)


def test_truncation_keeps_highest_significance(bjet_event, quiet):
    tracks, full, n, jets = bjet_event
    small, n_small = associate_tracks(jets, tracks, np.zeros(1), n_slots=3, params=quiet)
    assert small.shape == (1, 3) and n_small[0] == n[0]
    np.testing.assert_array_equal(small[0], full[0, :3])


def test_each_track_goes_to_the_closest_jet(quiet):
    rows = [(10.0, 0.0, 1.2, 0, 0, 0, 1, 2, 0, 0), (10.0, 0.0, 1.02, 0, 0, 0, 1, 2, 0, 0)]
    parts = ak.unflatten(ak.zip(_particles(rows)), [2])
    tracks = simulate_tracks(parts, np.random.default_rng(0), quiet)
    assert len(tracks[0]) == 2
    jets = ak.Array([[{"pt": 50.0, "eta": 0.0, "phi": 1.0}, {"pt": 40.0, "eta": 0.0, "phi": 1.3}]])
    table, n = associate_tracks(jets, tracks, np.zeros(1), params=quiet)
    np.testing.assert_array_equal(n, [1, 1])
    assert table["phi"][0, 0] == pytest.approx(1.02, abs=0.01)
    assert table["phi"][1, 0] == pytest.approx(1.2, abs=0.01)


def test_cone_shrinks_with_jet_pt(quiet):
    assert association_cone(20e3) == pytest.approx(0.239 + np.exp(-1.22 - 1.64e-5 * 20e3))
    rows = [(10.0, 0.0, 1.42, 0, 0, 0, 1, 2, 0, 0)]
    parts = ak.unflatten(ak.zip(_particles(rows)), [1])
    tracks = simulate_tracks(parts, np.random.default_rng(0), quiet)
    soft = ak.Array([[{"pt": 20.0, "eta": 0.0, "phi": 1.0}]])
    hard = ak.Array([[{"pt": 500.0, "eta": 0.0, "phi": 1.0}]])
    assert associate_tracks(soft, tracks, np.zeros(1), params=quiet)[1][0] == 1
    assert associate_tracks(hard, tracks, np.zeros(1), params=quiet)[1][0] == 0


def test_signed_significance_matches_geometry():
    rng = np.random.default_rng(0)
    n = 1000
    d0 = rng.normal(0, 0.1, n)
    phi_t = rng.uniform(-np.pi, np.pi, n)
    phi_j = phi_t + rng.normal(0, 0.2, n)
    eta_t = rng.normal(0, 1, n)
    eta_j = eta_t + rng.normal(0, 0.2, n)
    z0st = rng.normal(0, 0.1, n)
    sd0, sz0 = signed_ip_significance(d0, z0st, 0.01, 0.02, phi_t, eta_t, phi_j, eta_j)
    pca = d0[:, None] * np.stack([-np.sin(phi_t), np.cos(phi_t)], axis=1)  # ATLAS perigee point
    jet = np.stack([np.cos(phi_j), np.sin(phi_j)], axis=1)
    np.testing.assert_array_equal(np.sign(sd0), np.sign((pca * jet).sum(1)))
    np.testing.assert_allclose(np.abs(sd0), np.abs(d0) / 0.01)
    np.testing.assert_array_equal(np.sign(sz0), np.sign((eta_j - eta_t) * z0st))
    np.testing.assert_allclose(np.abs(sz0), np.abs(z0st) / 0.02)


def test_truth_type_label():
    pdg = np.array([211, -211, -321, 11, -13, 2212, -2212, 0])
    charge = np.array([1, -1, -1, -1, 1, 1, -1, 1])
    np.testing.assert_array_equal(truth_type_label(pdg, charge), [2, -2, -3, -4, 5, 1, -1, 0])


def test_bad_inputs(bjet_event, quiet):
    tracks, _, _, jets = bjet_event
    with pytest.raises(SchemaError, match="same events"):
        associate_tracks(jets, tracks, np.zeros(2), params=quiet)
    with pytest.raises(SchemaError, match="NaN"):
        associate_tracks(jets, tracks, np.array([np.nan]), params=quiet)
    with pytest.raises(SchemaError, match="d0Uncertainty"):
        associate_tracks(jets, ak.without_field(tracks, "d0Uncertainty"), np.zeros(1), params=quiet)


def test_event_without_jets_or_tracks(quiet):
    rows = [(10.0, 0.0, 1.0, 0, 0, 0, 1, 2, 0, 0)]
    parts = ak.unflatten(ak.zip(_particles(rows)), [1])
    tracks = simulate_tracks(parts, np.random.default_rng(0), quiet)
    two = ak.concatenate([tracks, tracks[:, :0]])
    jets = ak.Array([[], [{"pt": 50.0, "eta": 0.0, "phi": 1.0}]])
    table, n = associate_tracks(jets, two, np.zeros(2), params=quiet)
    assert table.shape == (1, 40) and n[0] == 0 and not table["valid"].any()
