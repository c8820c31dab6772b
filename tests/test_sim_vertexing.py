"""Tests of the primary-vertex reconstruction and the impact parameters w.r.t. it (lhcml.sim.vertexing)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from lhcml.errors import SchemaError
from lhcml.sim.detector import BeamSpot, default_detector_params
from lhcml.sim.vertexing import (
    VERTEX_TRACK_FIELDS,
    impact_parameters,
    reconstruct_primary_vertices,
)

SIGMA_XY = 0.010  # beam spot (mm), as the shipped parameters


def _vertex_tracks(rng, vertex, n, pt_range, s_d0=0.015, s_z0st=0.06):
    """Hand-made tracks from ``vertex`` (x, y, z): perigee parameters smeared by their errors."""
    x, y, z = vertex
    pt = rng.uniform(*pt_range, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    theta = 2 * np.arctan(np.exp(-rng.uniform(-2.0, 2.0, n)))
    sd0 = np.full(n, s_d0) * (1 + 2.0 / pt)
    sz0st = np.full(n, s_z0st) * (1 + 2.0 / pt)
    d0 = -x * np.sin(phi) + y * np.cos(phi) + sd0 * rng.standard_normal(n)
    z0 = z - (x * np.cos(phi) + y * np.sin(phi)) / np.tan(theta) + sz0st / np.sin(theta) * rng.standard_normal(n)
    return {"pt": pt, "d0": d0, "z0": z0, "phi": phi, "theta": theta, "d0Uncertainty": sd0,
            "z0SinThetaUncertainty": sz0st, "numberOfPixelHits": np.full(n, 4), "numberOfSCTHits": np.full(n, 8),
            "numberOfPixelHoles": np.zeros(n, dtype=int), "truth_vertex": np.full(n, z)}


def _events(rng, n_events, vertices_per_event):
    """Events of tracks from several vertices; the first vertex of each event is the hard scatter."""
    evs, truth = [], []
    for _ in range(n_events):
        cols = []
        vtx = []
        for k, (n, pt_range) in enumerate(vertices_per_event):
            v = (rng.normal(0, SIGMA_XY), rng.normal(0, SIGMA_XY), rng.normal(0, 35.0) if k else rng.normal(0, 10.0))
            vtx.append(v)
            cols.append(_vertex_tracks(rng, v, n, pt_range))
        evs.append({key: np.concatenate([c[key] for c in cols]) for key in cols[0]})
        truth.append(vtx)
    counts = [len(e["pt"]) for e in evs]
    flat = {k: np.concatenate([e[k] for e in evs]) for k in evs[0]}
    return ak.unflatten(ak.zip(flat), counts), np.array(truth)


@pytest.fixture(scope="module")
def three_vertex_events():
    """200 events: a hard scatter (25 tracks, 2-30 GeV) and two pile-up vertices (8 soft tracks)."""
    rng = np.random.default_rng(1)
    tracks, truth = _events(rng, 200, [(25, (2.0, 30.0)), (8, (0.5, 2.0)), (8, (0.5, 2.0))])
    return tracks, truth, reconstruct_primary_vertices(tracks)


def test_finds_all_vertices_and_the_hard_scatter(three_vertex_events):
    tracks, truth, res = three_vertex_events
    dz_pu = np.abs(truth[:, 1, 2] - truth[:, 2, 2])
    separated = dz_pu > 2.0
    sep_hs = np.minimum(np.abs(truth[:, 0, 2] - truth[:, 1, 2]), np.abs(truth[:, 0, 2] - truth[:, 2, 2])) > 2.0
    ok = separated & sep_hs
    assert ok.sum() > 150
    assert np.mean(res.n_vertices[ok] == 3) > 0.95
    assert res.found.all()
    # the hard scatter (largest Σ pT²) is chosen and within 0.1 mm of the truth
    assert np.mean(res.is_hard_scatter(truth[:, 0, 2])) > 0.98
    assert len(res.vertex_offsets) == len(tracks) + 1 and res.vertex_offsets[-1] == len(res.vertex_sumpt2)


def test_vertex_within_its_resolution(three_vertex_events):
    """The reconstructed hard-scatter position agrees with the truth within its reported covariance."""
    _, truth, res = three_vertex_events
    good = res.is_hard_scatter(truth[:, 0, 2])
    for axis in range(3):
        pull = (res.position[good, axis] - truth[good, 0, axis]) / np.sqrt(res.covariance[good, axis, axis])
        assert np.std(pull) == pytest.approx(1.0, abs=0.15), axis
        assert abs(np.mean(pull)) < 0.25
    # the beam-spot constraint: the transverse error never exceeds the beam-spot size, z is free
    assert np.all(np.sqrt(res.covariance[:, 0, 0]) <= SIGMA_XY * 1.0001)
    assert np.median(np.sqrt(res.covariance[good, 2, 2])) < 0.03


def test_tracks_assigned_to_their_vertex(three_vertex_events):
    tracks, truth, res = three_vertex_events
    counts = ak.to_numpy(ak.num(tracks))
    evt = np.repeat(np.arange(len(counts)), counts)
    # vertex index per track -> its reconstructed z; compare with the track's true vertex z
    gidx = res.vertex_offsets[evt] + res.track_vertex
    assigned = res.track_vertex >= 0
    vz = res.vertex_position[gidx[assigned], 2]
    tz = ak.to_numpy(ak.flatten(tracks.truth_vertex))[assigned]
    assert assigned.mean() > 0.9
    assert np.mean(np.abs(vz - tz) < 0.5) > 0.98
    # track weights are those of the hard-scatter fit only
    in_hs = res.track_weight > 0
    assert np.all(res.track_vertex[in_hs] == res.hs_index[evt[in_hs]])


def test_d0_significance_pull_is_one_wrt_reconstructed_pv(three_vertex_events):
    """Hard-scatter tracks: d0/σ w.r.t. the reco PV has unit width; w.r.t. the beam line it does not
    (the beam spot is not in the track's σ)."""
    tracks, truth, res = three_vertex_events
    ip = impact_parameters(tracks, res)
    counts = ak.to_numpy(ak.num(tracks))
    hs_track = np.concatenate([np.arange(c) < 25 for c in counts])
    good = np.repeat(res.is_hard_scatter(truth[:, 0, 2]), counts)
    sel = hs_track & good & (ak.to_numpy(ak.flatten(tracks.pt)) > 5.0)
    pull = ip["d0"][sel] / ip["d0Uncertainty"][sel]
    assert np.std(pull) == pytest.approx(1.0, abs=0.05)
    zpull = ip["z0SinTheta"][sel] / ip["z0SinThetaUncertainty"][sel]
    assert np.std(zpull) == pytest.approx(1.0, abs=0.06)
    flat = ak.flatten(tracks)
    naive = ak.to_numpy(flat.d0)[sel] / ak.to_numpy(flat.d0Uncertainty)[sel]
    assert np.std(naive) > 1.1
    # the reported uncertainty includes the vertex: larger than the track's own
    assert np.all(ip["d0Uncertainty"] > ak.to_numpy(flat.d0Uncertainty))


def test_pull_on_simulated_primaries():
    """Tracks from the parametric tracker (tails switched off) around a beam-spot-displaced PV."""
    from test_sim_tracker import kinematics, make_particles

    from lhcml.sim.tracker import simulate_tracks

    p = default_detector_params().with_updates(
        fakes=dict(base_rate=0.0, density_rate=0.0, occupancy_rate=0.0),
        material=dict(interaction_lengths=[0.0] * 5, radiation_lengths=[0.0] * 5),
        tails=dict(material=dict(elastic_to_inelastic=0.0), dense_core=dict(probability_per_shared_hit=0.0),
                   pattern_recognition=dict(rate=0.0, density_rate=0.0)))
    rng = np.random.default_rng(3)
    events, pv = [], []
    for _ in range(60):
        v = rng.normal(0, [SIGMA_XY, SIGMA_XY, 30.0])
        n = 30
        events.append({**kinematics(rng.uniform(5, 40, n), rng.uniform(-2, 2, n), rng.uniform(-3, 3, n)),
                       "charge": rng.choice([-1, 1], n), "vx": np.full(n, v[0]), "vy": np.full(n, v[1]),
                       "vz": np.full(n, v[2])})
        pv.append(v)
    tracks = simulate_tracks(make_particles(events), np.random.default_rng(4), p)
    res = reconstruct_primary_vertices(tracks, params=p)
    assert res.is_hard_scatter(np.array(pv)[:, 2], params=p).all()
    ip = impact_parameters(tracks, res)
    pull = ip["d0"] / ip["d0Uncertainty"]
    assert np.std(pull) == pytest.approx(1.0, abs=0.06)
    naive = ak.to_numpy(ak.flatten(tracks.d0 / tracks.d0Uncertainty))
    assert np.std(naive) > 1.1


def test_beam_spot_constrains_two_track_vertices():
    """A two-track vertex is pulled to the beam line in x, y by the constraint (its σ ≲ the beam spot)."""
    rng = np.random.default_rng(5)
    tracks, truth = _events(rng, 50, [(2, (0.6, 1.0))])
    res = reconstruct_primary_vertices(tracks)
    assert res.found.mean() > 0.9
    f = res.found
    assert np.all(np.sqrt(res.covariance[f, 0, 0]) < SIGMA_XY)
    assert np.all(np.abs(res.position[f, :2]) < 5 * SIGMA_XY)
    wide = reconstruct_primary_vertices(tracks, beam_spot=BeamSpot(sigma_xy=1.0, sigma_z=35.0))
    assert np.median(np.sqrt(wide.covariance[f, 0, 0])) > 3 * SIGMA_XY


def test_events_without_vertex_fall_back_to_the_beam_spot():
    rng = np.random.default_rng(6)
    one = _vertex_tracks(rng, (0.0, 0.0, 12.0), 1, (5, 6))
    cols = {k: np.concatenate([one[k], one[k][:0]]) for k in one}
    tracks = ak.unflatten(ak.zip(cols), [1, 0])
    res = reconstruct_primary_vertices(tracks)
    assert not res.found.any() and np.all(res.n_vertices == 0)
    assert res.position[0, 2] == pytest.approx(one["z0"][0]) and res.position[1, 2] == 0.0
    np.testing.assert_allclose(np.sqrt(res.covariance[:, 0, 0]), SIGMA_XY)
    ip = impact_parameters(tracks, res)
    assert ip["d0Uncertainty"][0] == pytest.approx(np.hypot(one["d0Uncertainty"][0], SIGMA_XY), rel=0.01)
    assert not res.is_hard_scatter(np.array([12.0, 0.0])).any()


def test_association_uses_the_reconstructed_vertex():
    """associate_tracks with a VertexResult: IPs and uncertainties w.r.t. the reco PV."""
    from test_sim_tracker_association import JET_ETA, JET_PHI

    from lhcml.sim.association import associate_tracks

    rng = np.random.default_rng(7)
    v = (0.012, -0.008, 3.0)
    hs = _vertex_tracks(rng, v, 30, (2.0, 20.0))
    hs["phi"] = JET_PHI + 0.1 * rng.standard_normal(30)
    hs["theta"] = 2 * np.arctan(np.exp(-(JET_ETA + 0.1 * rng.standard_normal(30))))
    hs["d0"] = -v[0] * np.sin(hs["phi"]) + v[1] * np.cos(hs["phi"]) + hs["d0Uncertainty"] * rng.standard_normal(30)
    hs["z0"] = v[2] - (v[0] * np.cos(hs["phi"]) + v[1] * np.sin(hs["phi"])) / np.tan(hs["theta"])
    n = 30
    extra = {"eta": -np.log(np.tan(hs["theta"] / 2)), "charge": np.ones(n, dtype=np.int8), "qOverP": 1e-4 * np.ones(n),
             "phiUncertainty": np.full(n, 1e-3), "thetaUncertainty": np.full(n, 1e-3), "qOverPUncertainty": np.full(n, 1e-6),
             "numberOfSCTHoles": np.zeros(n, dtype=int), "origin": np.full(n, 2), "vertex_index": np.zeros(n, dtype=int),
             "truthPdgId": np.full(n, 211), "truthParentPdgId": np.zeros(n, dtype=int),
             "truthProductionRadius": np.zeros(n), "is_pileup": np.zeros(n, dtype=bool)}
    for k in ("numberOfInnermostPixelLayerHits", "numberOfNextToInnermostPixelLayerHits",
              "numberOfInnermostPixelLayerSharedHits", "numberOfInnermostPixelLayerSplitHits",
              "numberOfPixelSharedHits", "numberOfPixelSplitHits", "numberOfSCTSharedHits", "leptonID"):
        extra[k] = np.zeros(n, dtype=int)
    tracks = ak.unflatten(ak.zip({**{k: hs[k] for k in VERTEX_TRACK_FIELDS}, **extra}), [n])
    jets = ak.Array([[{"pt": 80.0, "eta": JET_ETA, "phi": JET_PHI}]])
    res = reconstruct_primary_vertices(tracks)
    with_pv, n_pv = associate_tracks(jets, tracks, res)
    with_z, n_z = associate_tracks(jets, tracks, res.z)
    assert n_pv[0] == n_z[0] == n
    t_pv, t_z = with_pv[0, :n], with_z[0, :n]
    t_pv, t_z = t_pv[np.argsort(t_pv["pt"])], t_z[np.argsort(t_z["pt"])]  # the same tracks, side by side
    assert np.all(t_pv["d0Uncertainty"] > t_z["d0Uncertainty"])
    assert np.std(t_pv["IP3D_signed_d0_significance"]) < np.std(t_z["IP3D_signed_d0_significance"])


def test_bad_inputs():
    rng = np.random.default_rng(8)
    t = _vertex_tracks(rng, (0, 0, 0), 5, (1, 2))
    tracks = ak.unflatten(ak.zip(t), [5])
    with pytest.raises(SchemaError, match="d0Uncertainty"):
        reconstruct_primary_vertices(ak.without_field(tracks, "d0Uncertainty"))
    bad = dict(t)
    bad["d0Uncertainty"] = np.zeros(5)
    with pytest.raises(SchemaError, match="non-positive"):
        reconstruct_primary_vertices(ak.unflatten(ak.zip(bad), [5]))
    res = reconstruct_primary_vertices(tracks)
    with pytest.raises(SchemaError, match="do not match"):
        impact_parameters(ak.unflatten(ak.zip(t), [3, 2]), res)
    with pytest.raises(SchemaError, match="one per event"):
        res.is_hard_scatter(np.zeros(3))
    with pytest.raises(SchemaError, match="awkward Array or a FlatTable"):
        reconstruct_primary_vertices({"pt": [1.0]})
