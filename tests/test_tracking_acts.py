"""The ACTS reconstruction service (lhcml.tasks.tracking.acts_reco) on a tiny ACTS-simulated sample.

Two ttbar events at mu = 0 from ``lhcml tracking simulate`` (Pythia -> ACTS Fatras in the
GenericDetector, 2 T, digitisation, noise hits): the CKF baseline finds the true pT > 1 GeV tracks
with few fakes, the Kalman fitter recovers the true pT of truth proto-tracks within the fitted
uncertainty, the CKF from external seeds finds the seeded particles, fitted tracks go to HDF5
(MeV) and back, and bad inputs give one clear error.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from lhcml.config import shipped_config
from lhcml.data.trackml import read_event
from lhcml.errors import ConfigError, InputNotFoundError, SchemaError
from lhcml.metrics import tracking as tm
from lhcml.tasks.tracking import acts_reco
from lhcml.tasks.tracking.finders import FINDERS, clean, get_finder


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from lhcml.sim.tracking import simulate_tracking

    out = tmp_path_factory.mktemp("acts_reco") / "mu0"
    simulate_tracking("ttbar", out, mu=0.0, events=2, seed=11, progress=False)
    return out


@pytest.fixture(scope="module")
def ckf(sample):
    return acts_reco.run_ckf(sample)  # all events, the shipped configs/tracking/ckf.yaml


def _truth_protos(event, min_pt: float = 1.0, min_hits: int = 7):
    """Hit ids of the primary particles with pT > min_pt and at least min_hits hits (the truth's tracks)."""
    p = tm.particle_table(event.truth, event.particles)
    r0 = np.hypot(event.particles["vx"], event.particles["vy"]).to_numpy()
    good = p[(p["pt"] > min_pt) & (p["nhits"] >= min_hits) & (r0 < 1.0) & (p["q"] != 0)]
    t = event.truth[event.truth["particle_id"].isin(good["particle_id"])]
    return (
        t["particle_id"].to_numpy(np.int64),
        t["hit_id"].to_numpy(np.int64),
        good.set_index("particle_id"),
    )


def test_ckf_finds_most_true_tracks_with_few_fakes(sample, ckf):
    perf = []
    for e in (0, 1):
        ev = read_event(sample, e)
        track_id, hit_id = ckf.candidates[e]
        assert (
            track_id.dtype == np.int64 and hit_id.dtype == np.int64 and len(track_id) == len(hit_id)
        )
        assert hit_id.min() >= 1 and hit_id.max() <= len(ev.hits)
        perf.append(
            tm.evaluate_event(e, ev.truth, ev.particles, ev.hits, track_id, hit_id, min_pt=1.0)
        )
        fitted = ckf.tracks[e]
        assert len(fitted) == len(np.unique(track_id))
        # the truth match of the fitted tracks: almost all hits of a CKF track are its particle's
        assert np.median(fitted.truth_fraction) == 1.0
    s = tm.summarise(perf)
    # ACTS's CKF with ACTS's generic-detector settings: ~95 % of the pT > 1 GeV particles with >= 9 hits
    # (measured on 3 events, docs/benchmarks/tracking_ckf.md); 0.85 is ~4 binomial sigma below with
    # the ~120 particles of two events, far above what a broken seeding or CKF gives (< 0.5)
    assert s["n_particles"] > 50
    assert s["efficiency"]["value"] > 0.85, s["efficiency"]
    assert s["fake_rate"]["value"] < 0.05 and s["duplicate_rate"]["value"] < 0.05, (
        s["fake_rate"],
        s["duplicate_rate"],
    )
    stages = set(ckf.timings["stage"])
    assert {
        "read",
        "space points",
        "seeding",
        "parameter estimation",
        "ckf",
        "ambiguity resolution",
    } <= stages
    assert 0 < ckf.time_per_event() < 60


def test_kalman_fit_of_truth_prototracks_recovers_pt(sample, tmp_path):
    ev = read_event(sample, 0)
    pid, hid, good = _truth_protos(ev)
    order = np.random.default_rng(1).permutation(
        len(pid)
    )  # the hit order of a proto-track does not matter
    fitted = acts_reco.fit_candidates(sample, 0, (pid[order], hid[order]))
    assert len(fitted) >= 0.9 * len(good)
    assert np.all(fitted.truth_particle == fitted.track_id) and np.all(fitted.truth_fraction == 1.0)
    true = good.loc[fitted.track_id]
    rel = fitted.pt / true["pt"].to_numpy() - 1
    assert np.median(np.abs(rel)) < 0.03, np.median(
        np.abs(rel)
    )  # pixel + strip barrel: ~1-2 % at a few GeV
    assert np.all(fitted.charge == np.sign(true["q"].to_numpy()))
    # q/p pulls: the fitted uncertainty describes the residuals (core of the pull distribution)
    qop_true = np.sign(true["q"].to_numpy()) / np.sqrt(
        true["pt"].to_numpy() ** 2
        + ev.particles.set_index("particle_id").loc[fitted.track_id, "pz"].to_numpy() ** 2
    )
    pull = (fitted.params[:, 4] - qop_true) / np.sqrt(fitted.cov[:, 4, 4])
    core = pull[np.abs(pull) < 5]
    assert np.mean(np.abs(pull) < 3) > 0.85 and 0.6 < np.std(core) < 1.6, (
        np.mean(np.abs(pull) < 3),
        np.std(core),
    )
    assert np.all(fitted.ndf > 0) and np.median(fitted.chi2 / fitted.ndf) < 3

    # to lhcml HDF5 (MeV, mm) and back
    path = acts_reco.write_fitted_tracks(
        tmp_path / "fitted.h5", {0: fitted}, attrs={"finder": "truth"}
    )
    with h5py.File(path) as f:
        rows = f["fitted_tracks"][:]
        assert f.attrs["energy_unit"] == "MeV" and f.attrs["finder"] == "truth"
    assert len(rows) == len(fitted) and np.all(rows["eventNumber"] == 0) and np.all(rows["valid"])
    np.testing.assert_allclose(rows["pt"], fitted.pt * 1000, rtol=1e-5)
    np.testing.assert_allclose(rows["qOverP"], fitted.params[:, 4] / 1000, rtol=1e-5)
    np.testing.assert_allclose(rows["covariance"][:, 4, 4], fitted.cov[:, 4, 4] / 1e6, rtol=1e-6)
    np.testing.assert_array_equal(rows["truthParticleId"], fitted.truth_particle)
    # a track whose extrapolation to the perigee failed keeps ACTS's zero parameters: not valid
    par, cov = fitted.params.copy(), fitted.cov.copy()
    par[0], cov[0] = 0.0, 0.0
    assert acts_reco.has_parameters(par, cov).tolist() == [False] + [True] * (len(par) - 1)


def test_ckf_from_external_seeds_finds_the_seeded_particles(sample):
    ev = read_event(sample, 1)
    pid, hid, good = _truth_protos(ev)
    meas = acts_reco.read_measurement_positions(acts_reco.acts_files(sample), 1)
    np.testing.assert_allclose(
        meas["x"], ev.hits["x"], atol=1e-3
    )  # hit_id = measurement index + 1, in file order
    ids = np.unique(pid)
    protos = [sorted(hid[pid == p] - 1) for p in ids]
    radius = np.hypot(meas["x"], meas["y"]).to_numpy()
    trip = acts_reco.seed_triplets(
        protos, meas["geometry_id"].to_numpy(np.uint64), radius, {7, 8, 9}
    )
    seeded = [(p, t) for p, t in zip(ids, trip, strict=True) if t is not None]
    seeds = np.array([t for _, t in seeded]) + 1
    (track_id, hit_id), tracks = acts_reco.ckf_from_seeds(sample, 1, seeds)
    assert set(np.unique(track_id)) == set(range(len(tracks)))
    found = set(tracks.truth_particle[tracks.truth_fraction >= 0.5].tolist())
    assert len(found & {p for p, _ in seeded}) >= 0.8 * len(seeded), (len(found), len(seeded))


def test_helix_through_origin_known_answer():
    from lhcml.tasks.tracking.bucketing import _helix_through_origin

    a, b, z0, cot = 300.0, -900.0, 7.0, 0.8  # R = 949 mm (pT ~ 0.57 GeV at 2 T)
    radius = np.hypot(a, b)
    s = np.linspace(30.0, 1000.0, 12)  # arc length from the origin
    ang = np.arctan2(-b, -a) + s / radius  # the origin is on the circle at angle atan2(-b, -a)
    x, y = a + radius * np.cos(ang), b + radius * np.sin(ang)
    np.testing.assert_allclose(_helix_through_origin(x, y, z0 + cot * s), (a, b, z0, cot), rtol=1e-6, atol=1e-6)
    assert _helix_through_origin(np.ones(3), np.ones(3), np.ones(3)) is None  # one point: no helix


def test_bucketing_tracks_that_lost_their_pixel_hits_seed_ckf_tracks(sample):
    """The bucketing+ckf hand-over: a correct track whose pixel hits went to another candidate (the
    common case, docs/benchmarks/tracking_bucketing.md) gets three pixel hits of its particle back
    along its helix, and the CKF seeded from them finds the particle."""
    from lhcml.tasks.tracking.bucketing import pixel_seed_hits

    ev = read_event(sample, 1)
    pid, hid, good = _truth_protos(ev)
    hits = ev.hits.set_index("hit_id").loc[hid]
    strip = ~hits["volume_id"].isin([7, 8, 9]).to_numpy()
    pid, hid = pid[strip], hid[strip]  # the tracks keep only their strip hits
    ids, n_strip = np.unique(pid, return_counts=True)
    assert len(ids) > 30
    meas = acts_reco.read_measurement_positions(acts_reco.acts_files(sample), 1)
    radius = np.hypot(meas["x"], meas["y"]).to_numpy()
    protos = [sorted(hid[pid == p] - 1) for p in ids]
    gid = meas["geometry_id"].to_numpy(np.uint64)
    assert all(t is None for t in acts_reco.seed_triplets(protos, gid, radius, {7, 8, 9}))  # unseedable as they are

    seed_id, seed_hit = pixel_seed_hits(ev.hits, pid, hid, {7, 8, 9}, seeds_per_track=2)
    assert set(np.unique(seed_id // 2)) <= set(ids.tolist())
    truth = ev.truth.set_index("hit_id")["particle_id"]
    vol = ev.hits.set_index("hit_id")["volume_id"]
    pure, seeded = 0, set()
    for s in np.unique(seed_id):
        h = seed_hit[seed_id == s]
        px = h[vol.loc[h].isin([7, 8, 9]).to_numpy()]
        if len(px) == 3:
            seeded.add(s // 2)
            assert np.all(np.diff(np.hypot(*ev.hits.set_index("hit_id").loc[h, ["x", "y"]].to_numpy().T)) >= 0)
            pure += np.all(truth.loc[px].to_numpy() == s // 2)
    # the particles' own pixel hits are found for almost every track (no pile-up: little to confuse them)
    assert len(seeded) >= 0.85 * len(ids) and pure >= 0.8 * len(np.unique(seed_id)), (len(seeded), pure, len(ids))
    (track_id, _), tracks = acts_reco.ckf_from_seeds(sample, 1, (seed_id, seed_hit))
    found = set(tracks.truth_particle[tracks.truth_fraction >= 0.5].tolist())
    assert len(found & set(ids.tolist())) >= 0.8 * len(ids), (len(found & set(ids.tolist())), len(ids))
    assert np.median(tracks.truth_fraction) == 1.0


@pytest.fixture(scope="module")
def bucketed(sample):
    """The bucketing finder's candidates of event 0."""
    return get_finder("bucketing")(sample, 0, None)


def test_bucketing_ckf_finds_what_the_bucketing_finds(sample):
    """The CKF from bucketing seeds keeps the bucketing's efficiency and removes its fakes."""
    ev = read_event(sample, 0)
    perf = {}
    for name in ("bucketing", "bucketing+ckf"):
        out = get_finder(name)(sample, 0, None)
        perf[name] = tm.evaluate_event(0, ev.truth, ev.particles, ev.hits, out["track_id"], out["hit_id"], min_pt=1.0)
    parts = {k: v.particles[v.particles["reconstructable"]] for k, v in perf.items()}
    found_b = set(parts["bucketing"].loc[parts["bucketing"]["found"], "particle_id"])
    found_c = set(parts["bucketing+ckf"].loc[parts["bucketing+ckf"]["found"], "particle_id"])
    assert len(found_b) > 20
    # before the seed completion the CKF found ~50 % of the bucketing's particles (0.53 vs 0.96)
    assert len(found_b & found_c) >= 0.9 * len(found_b), (len(found_b & found_c), len(found_b))
    counted = perf["bucketing+ckf"].tracks[perf["bucketing+ckf"].tracks["counted"]]
    assert counted["fake"].mean() < 0.02


def test_gnn_like_fragments_seed_ckf_tracks_that_find_the_particles(sample):
    """The gnn-mm+ckf / gnn-ml+ckf hand-over (finders.seed_ckf): each true track cut into two short
    fragments without its innermost hits (what the GNN's walk-through leaves at high occupancy,
    docs/benchmarks/tracking_gnn.md) plus random-hit fakes; the CKF seeded from them finds the
    particles once each, the fragments themselves would count each particle twice."""
    from lhcml.tasks.tracking.finders import FINDERS, seed_ckf

    assert {"gnn-mm+ckf", "gnn-ml+ckf"} <= set(FINDERS)
    ev = read_event(sample, 1)
    pid, hid, good = _truth_protos(ev)
    radius = ev.hits.set_index("hit_id").loc[hid].eval("sqrt(x * x + y * y)").to_numpy()
    ids = np.unique(pid)
    rng = np.random.default_rng(5)
    t, h = [], []
    for k, p in enumerate(ids):
        mine = hid[pid == p][np.argsort(radius[pid == p], kind="stable")][2:]  # the two innermost hits lost
        half = len(mine) // 2
        t += [np.full(half, 2 * k), np.full(len(mine) - half, 2 * k + 1)]
        h += [mine[:half], mine[half:]]
    n_fake = 20
    for k in range(n_fake):
        t.append(np.full(6, 2 * len(ids) + k))
        h.append(rng.choice(ev.truth["hit_id"].to_numpy(), 6, replace=False))
    frags = {"track_id": np.concatenate(t).astype(np.int64), "hit_id": np.concatenate(h).astype(np.int64),
             "timings": {"gnn": 0.1}}  # fmt: skip
    out = seed_ckf(sample, 1, frags)
    assert set(out["timings"]) == {"gnn", "seed_completion", "ckf"}
    assert len(out["fitted"]) == len(np.unique(out["track_id"]))
    found = set(out["fitted"].truth_particle[out["fitted"].truth_fraction >= 0.5].tolist())
    assert len(found & set(ids.tolist())) >= 0.85 * len(ids), (len(found & set(ids.tolist())), len(ids))
    perf = tm.evaluate_event(1, ev.truth, ev.particles, ev.hits, out["track_id"], out["hit_id"], min_pt=1.0).tracks
    counted = perf[perf["counted"]]
    assert counted["fake"].mean() < 0.03 and counted["duplicate"].mean() < 0.05, counted[["fake", "duplicate"]].mean()
    before = tm.evaluate_event(1, ev.truth, ev.particles, ev.hits, frags["track_id"], frags["hit_id"], min_pt=1.0).tracks
    assert before.loc[before["counted"], "duplicate"].mean() > 0.2  # the fragments: one particle, two tracks
    # the CKF tracks are longer than the fragments: they got the inner hits back
    assert np.median(out["fitted"].nhits) > np.median(np.unique(frags["track_id"], return_counts=True)[1]) + 2


def test_cleaning_removes_fakes_and_duplicates(sample, bucketed):
    """clean_candidates (Kalman fit with outliers, track selection, greedy ambiguity resolution) on
    hand-made candidates of known truth: the true tracks, a duplicate of each and random hit sets
    (fakes); then on the bucketing's real candidates of the event."""
    from lhcml.tasks.tracking.bucketing import pixel_seed_hits

    ev = read_event(sample, 0)
    pid, hid, good = _truth_protos(ev)
    ids = np.unique(pid)
    rng = np.random.default_rng(3)
    t, h = [], []
    for k, p in enumerate(ids):  # candidate k: particle p; candidate k + n: its duplicate
        t += [np.full((pid == p).sum(), k), np.full((pid == p).sum(), k + len(ids))]
        h += [hid[pid == p], hid[pid == p]]
    n_fake = 30
    for k in range(n_fake):  # fakes: 10 random hits
        t.append(np.full(10, 2 * len(ids) + k))
        h.append(rng.choice(ev.truth["hit_id"].to_numpy(), 10, replace=False))
    cands = (np.concatenate(t).astype(np.int64), np.concatenate(h).astype(np.int64))
    before = tm.evaluate_event(0, ev.truth, ev.particles, ev.hits, *cands, min_pt=1.0).tracks
    assert before.loc[before["counted"], "fake"].sum() >= 0.8 * n_fake
    assert before.loc[before["counted"], "duplicate"].sum() >= 0.8 * len(ids)
    # the initial parameters from the pixel triplet along each candidate's helix, as the *+clean finders do
    seeds = pixel_seed_hits(ev.hits, *cands, {7, 8, 9}, seeds_per_track=1)
    (track_id, hit_id), tracks = acts_reco.clean_candidates(sample, 0, cands, seeds=seeds)
    perf = tm.evaluate_event(0, ev.truth, ev.particles, ev.hits, track_id, hit_id, min_pt=1.0)
    counted = perf.tracks[perf.tracks["counted"]]
    assert not np.any(track_id >= 2 * len(ids))  # no random hit set survives
    assert counted["fake"].sum() == 0 and counted["duplicate"].sum() == 0  # one track per particle
    kept = set(tracks.truth_particle.tolist()) & set(ids.tolist())
    assert len(kept) >= 0.85 * len(ids), (len(kept), len(ids))
    assert np.all(tracks.truth_fraction == 1.0) and np.all(tracks.nhits >= 5)

    # the bucketing's candidates (the bucketing+clean finder): fakes and duplicates go, most found particles stay found
    b = bucketed
    c = clean(sample, 0, b)
    pb, pc = (tm.evaluate_event(0, ev.truth, ev.particles, ev.hits, o["track_id"], o["hit_id"], min_pt=1.0)
              for o in (b, c))  # fmt: skip
    tb, tc = pb.tracks[pb.tracks["counted"]], pc.tracks[pc.tracks["counted"]]
    assert tb["fake"].sum() + tb["duplicate"].sum() > 0 and tc["fake"].sum() == 0
    assert tc["duplicate"].mean() <= tb["duplicate"].mean()
    fb = pb.particles[pb.particles["reconstructable"]]["found"].mean()
    fc = pc.particles[pc.particles["reconstructable"]]["found"].mean()
    assert fc >= 0.7 * fb, (fc, fb)
    assert "cleaning" in c["timings"] and len(c["fitted"]) == len(np.unique(c["track_id"]))


def test_finder_registry_and_bad_inputs(sample, tmp_path, capsys):
    out = get_finder("ckf")(sample, 0, None)
    assert {"track_id", "hit_id", "timings", "fitted"} <= set(out) and out["timings"]["ckf"] > 0
    assert "ckf" in FINDERS
    with pytest.raises(ConfigError, match="unknown track finder 'ckff'.*ckf"):
        get_finder("ckff")
    with pytest.raises(SchemaError, match=r"hit ids that the event does not have: \[999999999\]"):
        acts_reco.fit_candidates(sample, 0, (np.array([0, 0, 0]), np.array([1, 2, 999999999])))
    # the shipped config is the documented defaults (docs/references.md §25), its fast variant a delta
    assert acts_reco.load_reco_config(None) == acts_reco.ActsRecoConfig()
    fast = acts_reco.load_reco_config(shipped_config("tracking/ckf_fast.yaml"))
    assert fast.seeding.max_seeds_per_spm == 1 and fast.ckf == acts_reco.ActsRecoConfig().ckf
    with pytest.raises(ConfigError, match="unknown key 'ckf.chi2_cut'"):
        acts_reco.load_reco_config({"ckf": {"chi2_cut": 10.0}})
    with pytest.raises(InputNotFoundError, match="event 7 is not in"):
        acts_reco.fit_candidates(sample, 7, (np.array([0]), np.array([1])))
    # real TrackML files (no acts/): one clear error on the command line, exit status 2, no output
    shutil.copytree(sample / "trackml", tmp_path / "trackml_only")
    from lhcml.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "tracking",
                "reconstruct",
                str(tmp_path / "trackml_only"),
                "--out",
                str(tmp_path / "reco"),
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "has no acts/ subdirectory" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "reco").exists()
