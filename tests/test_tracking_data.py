"""Tracking data (issue 14): the TrackML-layout reader/writers, the challenge's hit weights, bad
inputs, and the ACTS simulation (deterministic, resumable, truth consistent)."""

from __future__ import annotations

import filecmp
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lhcml.data import trackml
from lhcml.errors import CorruptFileError, InputNotFoundError, SchemaError

# a TrackML event written by hand: 5 hits (one noise), 2 particles, cells of two hits
HITS = """hit_id,x,y,z,volume_id,layer_id,module_id
1,-64.4099,-7.1637,-1502.5,7,2,1
2,-55.3361,0.635342,-1502.5,7,2,1
3,-83.8305,-1.14301,-1502.5,7,2,1
4,-96.1091,-8.24103,-1502.5,7,2,1
5,-62.6736,-9.3712,-1502.5,7,2,1
"""
CELLS = """hit_id,ch0,ch1,value
1,209,617,0.0138317
2,68,446,0.0656165
2,68,447,0.0400000
"""
PARTICLES = """particle_id,vx,vy,vz,px,py,pz,q,nhits
4503599644147712,-0.00928065,0.0089334,-7.52878,-0.55,0.2,-2.1,1,2
4503599677702144,-0.00928065,0.0089334,-7.52878,-1.9,1.7,-15.2,-1,2
"""
TRUTH = """hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight
1,0,-64.4116,-7.16412,-1502.5,0,0,0,0
2,4503599644147712,-55.3385,0.630805,-1502.5,-0.55,0.2,-2.1,0
3,4503599644147712,-83.8284,-1.14558,-1502.5,-0.55,0.2,-2.1,0
4,4503599677702144,-96.1279,-8.23017,-1502.5,-1.9,1.7,-15.2,0
5,4503599677702144,-62.6591,-9.36771,-1502.5,-1.9,1.7,-15.2,0
"""


def _write(d: Path, event: int = 21, **override: str | None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    texts = {"hits": HITS, "cells": CELLS, "particles": PARTICLES, "truth": TRUTH, **override}
    for part, text in texts.items():
        if text is not None:
            (d / f"event{event:09d}-{part}.csv").write_text(text)
    return d


def test_reads_a_hand_written_trackml_event(tmp_path):
    d = _write(tmp_path / "train_1")
    assert trackml.list_events(d) == [21]
    ev = trackml.read_event(d, 21)
    assert ev.event_id == 21
    assert list(ev.hits.columns) == list(trackml.COLUMNS["hits"])
    assert ev.hits["hit_id"].tolist() == [1, 2, 3, 4, 5]
    assert ev.hits["x"].dtype == np.float32 and ev.hits["volume_id"].dtype == np.int32
    np.testing.assert_allclose(ev.hits.loc[3, ["x", "y", "z"]].to_numpy(float), [-96.1091, -8.24103, -1502.5], rtol=1e-6)
    assert ev.cells["hit_id"].tolist() == [1, 2, 2] and ev.cells["ch1"].tolist() == [617, 446, 447]
    assert ev.particles["particle_id"].tolist() == [4503599644147712, 4503599677702144]  # int64 exact
    assert (ev.truth["particle_id"] == 0).sum() == 1
    # only the hits of a challenge test event
    only = trackml.read_event(d, 21, parts=("hits",))
    assert only.truth is None and only.particles is None and len(only.hits) == 5
    # gzipped CSV (as some TrackML mirrors ship them) reads the same
    g = tmp_path / "gz"
    g.mkdir()
    for p in d.iterdir():
        (g / (p.name + ".gz")).write_bytes(gzip.compress(p.read_bytes()))
    pd.testing.assert_frame_equal(trackml.read_event(g, 21).truth, ev.truth)


def test_csv_and_hdf5_round_trip(tmp_path):
    ev = trackml.read_event(_write(tmp_path / "in"), 21)
    trackml.write_event_csv(tmp_path / "out", ev)
    trackml.write_events_h5(tmp_path / "ev.h5", [ev], attrs={"mu": 0.0})
    for path in (tmp_path / "out", tmp_path / "ev.h5"):
        back = trackml.read_event(path, 21)
        for part in trackml.PARTS:
            pd.testing.assert_frame_equal(back.table(part), ev.table(part), check_exact=False, rtol=1e-6)
    assert trackml.list_events(tmp_path / "ev.h5") == [21]


def test_a_shard_still_being_written_is_not_listed(tmp_path):
    """The atomic writer's hidden temporary of a running shard is no event file (it would be locked)."""
    ev = trackml.read_event(_write(tmp_path / "in"), 21)
    (tmp_path / "run" / "h5").mkdir(parents=True)
    trackml.write_events_h5(tmp_path / "run" / "h5" / "events_0000.h5", [ev])
    (tmp_path / "run" / "h5" / ".events_0001.h5.host.1.lhcml-tmp.h5").write_bytes(b"partial")
    assert trackml.list_events(tmp_path / "run" / "h5") == [21]


def test_hit_weights_on_a_constructed_event():
    # particle 1: 4 hits, pT 10 GeV (pT weight 1); particle 2: 5 hits, pT 0.3 GeV (pT weight 0.2);
    # particle 3: 3 hits (< 4: weight 0); one noise hit. Hits in scrambled order; the order along
    # a trajectory is by |tz - vz| (particle 2 starts at vz = 100 mm and runs to -z).
    particles = pd.DataFrame({"particle_id": [1, 2, 3], "vz": [0.0, 100.0, 0.0], "px": [6.0, 0.3, 1.0],
                              "py": [8.0, 0.0, 1.0], "nhits": [4, 5, 3]})  # fmt: skip
    truth = pd.DataFrame({
        "hit_id": np.arange(1, 14),
        "particle_id": [1, 2, 0, 1, 2, 3, 2, 1, 2, 3, 1, 2, 3],
        "tz": [30.0, 60.0, 5.0, 10.0, 80.0, 1.0, -50.0, 20.0, 0.0, 2.0, 40.0, -200.0, 3.0],
    })  # fmt: skip
    w = trackml.hit_weights(truth, particles)
    # order weights by hand: the proposal (10, 8, 6, 5, 3, 3, 3, 5, 6) stretched over n hits
    w4 = np.array([10.0, 6.0 - 1.0 / 1.5, 3.0, 6.0]) / (10 + 16 / 3 + 3 + 6)  # n = 4: 10, 5.333, 3, 6
    w5 = np.array([10.0, 6.0, 3.0, 3.0, 6.0]) / 28.0  # n = 5
    expect = np.zeros(13)
    # particle 1 (vz 0): tz 10, 20, 30, 40 are hits 4, 8, 1, 11
    expect[[3, 7, 0, 10]] = w4 * 1.0
    # particle 2 (vz 100): |dz| 20 (80), 40 (60), 100 (0), 150 (-50), 300 (-200): hits 5, 2, 9, 7, 12
    expect[[4, 1, 8, 6, 11]] = w5 * 0.2
    expect /= expect.sum()
    np.testing.assert_allclose(w, expect, rtol=1e-12)
    assert w[2] == 0 and (w[[5, 9, 12]] == 0).all()  # noise; < 4 hits
    assert w.sum() == pytest.approx(1.0)
    # the pT weight: 0.2 below 0.5 GeV, linear to 1 at 3 GeV, 0 below 50 MeV
    np.testing.assert_allclose(trackml.pt_weight([0.01, 0.3, 1.75, 3.0, 50.0]), [0.0, 0.2, 0.6, 1.0, 1.0])
    # more than 20 hits use the 20-hit weights; hits beyond the 20th weigh 0
    long = pd.DataFrame({"hit_id": np.arange(1, 23), "particle_id": 7, "tz": np.arange(22.0)})
    wl = trackml.hit_weights(long, pd.DataFrame({"particle_id": [7], "vz": [-1.0], "px": [5.0], "py": [0.0], "nhits": [22]}))
    np.testing.assert_allclose(wl[:20], trackml.order_weight_matrix()[20])
    assert (wl[20:] == 0).all()


@pytest.mark.parametrize(
    ("override", "error", "words"),
    [
        ({"hits": HITS.replace("volume_id", "volume")}, SchemaError, ["hits.csv", "'volume_id'", "rewrite"]),
        ({"truth": TRUTH.rsplit("\n", 2)[0] + "\n"}, SchemaError, ["no row in the truth table", "hit_id 5"]),
        ({"truth": TRUTH.replace("4503599677702144", "99")}, SchemaError, ["particle_id 99", "particles table"]),
        ({"particles": PARTICLES[:-30]}, CorruptFileError, ["particles.csv", "truncated"]),
        ({"hits": ""}, CorruptFileError, ["hits.csv", "empty"]),
        ({"truth": None}, InputNotFoundError, ["truth.csv", "does not exist"]),
    ],
)
def test_bad_inputs_give_one_clear_error(tmp_path, override, error, words):
    d = _write(tmp_path / "bad", **override)
    with pytest.raises(error) as exc:
        trackml.read_event(d, 21)
    for w in words:
        assert w in str(exc.value)


def test_bad_paths_and_files(tmp_path):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        trackml.read_event(tmp_path / "nope", 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="holds no TrackML events"):
        trackml.list_events(tmp_path / "empty")
    with pytest.raises(InputNotFoundError, match="no event 3"):
        trackml.read_event(_write(tmp_path / "d"), 3)
    # a truncated HDF5 file
    ev = trackml.read_event(tmp_path / "d", 21)
    h5 = trackml.write_events_h5(tmp_path / "t.h5", [ev])
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptFileError, match="t.h5"):
        trackml.read_event(h5, 21)


def test_unknown_process_is_a_user_error_on_the_command_line(tmp_path, capsys):
    from lhcml.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["tracking", "simulate", "no_such_process", "--out", str(tmp_path / "o"), "--events", "1"])
    assert exc.value.code == 2
    assert "no_such_process" in capsys.readouterr().err


def _same_tree(a: Path, b: Path) -> list[str]:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "manifest.json" and "timing" not in p.name)
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "manifest.json" and "timing" not in p.name)
    assert fa == fb
    return [str(p) for p in fa if not filecmp.cmp(a / p, b / p, shallow=False)]


def test_acts_simulation_is_deterministic_resumable_and_truth_consistent(tmp_path):
    from lhcml.sim.tracking import simulate_tracking

    kw = {"mu": 0.0, "events": 2, "seed": 5, "shards": 2, "progress": False}
    simulate_tracking("ttbar", tmp_path / "a", **kw)
    simulate_tracking("ttbar", tmp_path / "b", **kw)
    assert _same_tree(tmp_path / "a", tmp_path / "b") == []
    # a killed run: shard 1 never finished (no HDF5 file, a partial CSV) -> the rerun completes it identically
    (tmp_path / "b" / "h5" / "events_0001.h5").unlink()
    (tmp_path / "b" / "trackml" / "event000000001-truth.csv").write_text("hit_id,particle_id\n1,")
    simulate_tracking("ttbar", tmp_path / "b", **kw)
    assert _same_tree(tmp_path / "a", tmp_path / "b") == []

    out = tmp_path / "a"
    assert trackml.list_events(out) == [0, 1] and trackml.list_events(out / "h5") == [0, 1]
    for eid in (0, 1):
        ev = trackml.read_event(out, eid)  # check_event: every hit has truth, every truth particle is in particles
        t, p = ev.truth, ev.particles
        signal = t["particle_id"] != 0
        assert signal.sum() > 500 and (~signal).sum() > 0  # tt̄ hits and noise hits
        assert set(t.loc[signal, "particle_id"]) <= set(p["particle_id"])
        assert t["weight"].sum() == pytest.approx(1.0, abs=1e-5) and (t.loc[~signal, "weight"] == 0).all()
        counts = t.loc[signal, "particle_id"].value_counts()
        assert (p.set_index("particle_id").loc[counts.index, "nhits"].to_numpy() == counts.to_numpy()).all()
        # noise hits are exactly the measurements without a simulated hit; hit_id = ACTS measurement index + 1
        meas = pd.read_csv(out / "acts" / f"event{eid:09d}-measurements.csv", keep_default_na=False, dtype={"local_key": str})
        mmap = pd.read_csv(out / "acts" / f"event{eid:09d}-measurement-simhit-map.csv")
        assert (meas["measurement_id"].to_numpy() == np.arange(len(meas))).all()
        assert len(meas) == len(ev.hits)
        np.testing.assert_allclose(meas["global_z"].to_numpy(), ev.hits["z"].to_numpy(), rtol=1e-5, atol=1e-3)
        has_sim = np.zeros(len(meas), bool)
        has_sim[mmap["measurement_id"].to_numpy()] = True
        assert (has_sim == signal.to_numpy()).all()
        # the truth position of a signal hit is within a few mm of the measured position (strip length)
        d = np.hypot(*(ev.hits[c].to_numpy() - t[f"t{c}"].to_numpy() for c in "xy"))
        assert np.median(d[signal]) < 0.5
        # HDF5 holds the same event
        h = trackml.read_event(out / "h5", eid)
        pd.testing.assert_frame_equal(h.truth, ev.truth, check_exact=False, rtol=1e-5, atol=1e-6)

    # ACTS's own CSV readers read the acts/ files back (the same measurements; ACTS's reader may
    # reorder measurements of one module, its sort by geometry id is not stable)
    import acts
    import acts.examples

    lvl = acts.logging.WARNING
    seq = acts.examples.Sequencer(events=2, numThreads=1, logLevel=lvl)
    src = str(out / "acts")
    seq.addReader(acts.examples.CsvParticleReader(level=lvl, inputDir=src, inputStem="particles_simulated",
                                                  outputParticles="particles"))  # fmt: skip
    seq.addReader(acts.examples.CsvSimHitReader(level=lvl, inputDir=src, inputStem="hits", outputSimHits="simhits"))
    seq.addReader(acts.examples.CsvMeasurementReader(
        level=lvl, inputDir=src, outputMeasurements="measurements", outputMeasurementSimHitsMap="msm",
        outputMeasurementParticlesMap="mpm", inputSimHits="simhits", outputClusters="clusters"))  # fmt: skip
    back = tmp_path / "acts_back"
    back.mkdir()
    seq.addWriter(acts.examples.CsvMeasurementWriter(level=lvl, inputMeasurements="measurements", inputClusters="clusters",
                                                     inputMeasurementSimHitsMap="msm", outputDir=str(back)))  # fmt: skip
    seq.run()
    for eid in (0, 1):
        a = pd.read_csv(out / "acts" / f"event{eid:09d}-measurements.csv", keep_default_na=False, dtype={"local_key": str})
        b = pd.read_csv(back / f"event{eid:09d}-measurements.csv", keep_default_na=False, dtype={"local_key": str})
        assert len(a) == len(b) and (a["geometry_id"].to_numpy() == b["geometry_id"].to_numpy()).all()
        key = ["geometry_id", "local0", "local1"]
        sa, sb = (d[key].round(4).sort_values(key).to_numpy() for d in (a, b))
        np.testing.assert_allclose(sa, sb, atol=2e-4)
