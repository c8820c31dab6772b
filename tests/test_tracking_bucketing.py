"""Tracking training machinery, the metric-learning embedding and the bucketing finder (issue 14).

Events are built here in the TrackML CSV layout (``lhcml.data.trackml.write_event_csv``): charged
particles from the beam line on helices in a 2 T field crossing ten barrel layers, plus noise hits.
Checked: a killed and resumed training equals the uninterrupted one; the embedding learns (beats
its untrained self and the geometric coordinates at same-particle neighbour recall) and exports
to ONNX; bucket efficiency/purity on hand-built buckets with a known answer; the finder finds most
tracks; an unknown config key, a checkpoint of another config and an event without truth give
one clear error each.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lhcml.errors import CheckpointMismatchError, ConfigError, SchemaError

RADII = (32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0)  # mm, barrel layers


def _event(event_id: int, n_particles: int, n_noise: int, pt_scale: float = 2.0):
    """Helices from the beam line (z0 ~ N(0, 30 mm)) in 2 T; hits smeared by 50 µm (xy), 0.5 mm (z)."""
    from lhcml.data.trackml import TrackMLEvent

    rng = np.random.default_rng(event_id)
    hits, truth, parts = [], [], []
    for p in range(1, n_particles + 1):
        pt, phi0, eta = 0.5 + rng.exponential(pt_scale), rng.uniform(-np.pi, np.pi), rng.uniform(-2, 2)
        q, z0 = rng.choice([-1, 1]), rng.normal(0, 30.0)
        radius = pt / (0.3 * 2.0) * 1000.0  # mm
        pid = 1000 + p
        n = 0
        for r in RADII:
            if r >= 2 * radius:
                break
            a = np.arcsin(r / (2 * radius))
            phi, z = phi0 - q * a, z0 + np.sinh(eta) * 2 * radius * a
            if abs(z) > 3000:
                break
            x, y = r * np.cos(phi) + rng.normal(0, 0.05), r * np.sin(phi) + rng.normal(0, 0.05)
            z += rng.normal(0, 0.5)
            hits.append((len(hits) + 1, x, y, z, 8, 2 * (RADII.index(r) + 1), 1))
            truth.append((len(truth) + 1, pid, x, y, z, 0.0, 0.0, 0.0, 0.0))
            n += 1
        parts.append((pid, 0.0, 0.0, z0, pt * np.cos(phi0), pt * np.sin(phi0), pt * np.sinh(eta), q, n))
    for _ in range(n_noise):
        r, phi, z = rng.choice(RADII), rng.uniform(-np.pi, np.pi), rng.uniform(-1000, 1000)
        hits.append((len(hits) + 1, r * np.cos(phi), r * np.sin(phi), z, 8, 2, 1))
        truth.append((len(truth) + 1, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    truth_df = pd.DataFrame(truth, columns=["hit_id", "particle_id", "tx", "ty", "tz", "tpx", "tpy", "tpz", "weight"])
    truth_df["weight"] = np.where(truth_df["particle_id"] != 0, 1.0, 0.0)
    truth_df["weight"] /= truth_df["weight"].sum()
    return TrackMLEvent(
        event_id,
        pd.DataFrame(hits, columns=["hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id"]),
        None,
        pd.DataFrame(parts, columns=["particle_id", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits"]),
        truth_df,
    )


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    from lhcml.data.trackml import write_event_csv

    d = tmp_path_factory.mktemp("trackml")
    for e in range(1, 7):  # 1-4 train, 5 validates, 6 held out
        write_event_csv(d, _event(e, 150, 60))
    return d


def _config(events: Path, out: Path, epochs: int, **model) -> dict:
    return {
        "data": {"train_dir": str(events), "val_dir": str(events), "train_events": [1, 2, 3, 4], "val_events": [5]},
        "model": {"name": "hit_embedding", "embedding_dim": 8, "hidden": [32, 32], "n_pos": 1500, "n_random": 1500,
                  "n_query": 100, "k_hard": 10, **model},
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0},
        "trainer": {"max_epochs": epochs, "patience": None, "enable_progress_bar": False, "log_every_n_steps": 1},
        "output_dir": str(out),
    }  # fmt: skip


def _fit(cfg: dict, resume: bool = False) -> Path:
    from lhcml.train.protocol import validate_trainable_config

    trainer, c = validate_trainable_config(copy.deepcopy(cfg), "test")
    assert trainer.kind == "tracking"
    return trainer.fit(c, resume=resume)


@pytest.fixture(scope="module")
def trained(events, tmp_path_factory) -> Path:
    # the plain MLP (no direction coordinates): everything it knows it has learned
    return _fit(_config(events, tmp_path_factory.mktemp("emb") / "run", 8, direction_skip=False))


def test_killed_run_resumed_equals_uninterrupted(events, tmp_path: Path) -> None:
    from lhcml.train.checkpoint import read_checkpoint

    _fit(_config(events, tmp_path / "a", 3))
    crashed = _config(events, tmp_path / "b", 2)
    _fit(crashed)  # "killed" after epoch 2; resumed to epoch 3
    crashed["trainer"]["max_epochs"] = 3
    _fit(crashed, resume=True)
    a = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    b = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    metrics = pd.read_csv(tmp_path / "b" / "logs" / "metrics.csv").dropna(subset=["val_loss"])
    assert sorted(metrics["epoch"].astype(int)) == [0, 1, 2]  # the rows before the crash are kept

    # a checkpoint of another config: one clear error naming the key
    other = copy.deepcopy(crashed)
    other["model"]["embedding_dim"] = 4
    with pytest.raises(CheckpointMismatchError, match="model.embedding_dim: checkpoint 8 vs config 4"):
        _fit(other, resume=True)


def test_config_errors(events, tmp_path: Path) -> None:
    from lhcml.train.protocol import validate_trainable_config

    cfg = _config(events, tmp_path / "x", 1)
    bad = copy.deepcopy(cfg)
    bad["data"]["train_event"] = [1]
    with pytest.raises(ConfigError, match="unknown key 'data.train_event'.*train_events"):
        validate_trainable_config(bad, "bad.yaml")
    bad = copy.deepcopy(cfg)
    bad["data"]["prepare"] = {"use_cell": True}
    with pytest.raises(ConfigError, match="use_cell.*did you mean 'use_cells'"):
        validate_trainable_config(bad, "bad.yaml")
    bad = copy.deepcopy(cfg)
    bad["model"]["hiden"] = [8]
    with pytest.raises(ConfigError, match="unknown hyperparameter 'model.hiden'.*hidden"):
        _fit(bad)
    bad = copy.deepcopy(cfg)
    bad["data"]["val_events"] = [4]
    with pytest.raises(ConfigError, match=r"events \[4\] are used for training and validation"):
        _fit(bad)


def test_event_without_truth_is_one_clear_error(events) -> None:
    from lhcml.data.trackml import read_event
    from lhcml.train.tracking import hit_particle_ids

    ev = read_event(events, 1)
    ev.truth = ev.truth.iloc[5:]
    with pytest.raises(SchemaError, match="5 hit\\(s\\) have no truth row"):
        hit_particle_ids(ev)


def test_embedding_learns_and_exports(events, trained: Path, tmp_path: Path) -> None:
    """On the held-out event the trained embedding's (plain MLP) same-particle recall among the 10
    nearest hits beats the untrained network and the normalised network inputs (r, cos φ, sin φ, z, η)."""
    from lhcml.data.trackml import read_event
    from lhcml.export import export_model
    from lhcml.export.onnx import inference_session
    from lhcml.models.tracking.embedding import HitEmbedding, hit_features, neighbour_recall
    from lhcml.train.tracking import hit_particle_ids, load_tracking_model

    model, meta = load_tracking_model(trained)
    ev = read_event(events, 6)
    x, names = hit_features(ev)
    pid = torch.from_numpy(hit_particle_ids(ev))
    queries = torch.from_numpy(np.flatnonzero(pid.numpy() != 0))
    feats = torch.from_numpy(x)
    with torch.no_grad():
        learned = neighbour_recall(model(feats), pid, 10, queries)
        untrained = HitEmbedding(names, hidden=[32, 32], direction_skip=False)
        untrained.norm.load_state_dict(model.norm.state_dict())
        raw = neighbour_recall(untrained(feats), pid, 10, queries)
        geo = neighbour_recall(model.norm(model.expand(feats)), pid, 10, queries)
    assert learned > raw + 0.1 and learned > geo + 0.05, (learned, raw, geo)

    rep = export_model(trained.parent.parent, tmp_path / "emb.onnx", timing=False)
    assert rep.max_abs_diff_random < 1e-4 and rep.inputs == ["features"]
    got = inference_session(tmp_path / "emb.onnx").run(None, {"features": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(feats).numpy(), atol=1e-4)


def test_bucket_quality_known_answer() -> None:
    from lhcml.tasks.tracking.bucketing import bucket_quality

    # particle 1: hits 0-3; particle 2: hits 4-5; hit 6 noise; buckets of 4 (query first)
    pid = np.array([1, 1, 1, 1, 2, 2, 0])
    buckets = np.array([
        [0, 1, 2, 3],  # all of particle 1
        [1, 0, 2, 4],  # 3 of 4
        [2, 6, 4, 5],  # 1 of 4
        [3, 4, 5, 6],
        [4, 5, 0, 1],  # all of particle 2
        [5, 6, 0, 1],
        [6, 0, 1, 2],  # noise query
    ])  # fmt: skip
    q = bucket_quality(buckets, pid, selected=np.array([1, 2]))
    assert q.efficiency_all == 1.0 and q.efficiency_majority == 1.0
    # purity: query's particle hits / 4 over the six particle queries
    assert q.purity == pytest.approx(np.mean([4, 3, 1, 1, 2, 1]) / 4)
    q = bucket_quality(np.delete(buckets, 0, axis=1)[:, :3], pid, selected=np.array([1]))
    # buckets of 3 cannot hold the 4 hits of particle 1; bucket of hit 1 holds 3 of 4 (> half)
    assert q.efficiency_all == 0.0 and q.efficiency_majority == 1.0 and q.n_particles == 1


def test_geometric_buckets_and_finder(events) -> None:
    from lhcml.data.trackml import read_event
    from lhcml.metrics.tracking import evaluate_event
    from lhcml.tasks.tracking.bucketing import (
        bucket_quality,
        bucketing,
        event_buckets,
        load_bucketing_config,
    )
    from lhcml.train.tracking import hit_particle_ids

    # straight tracks from the origin are points in the hit-direction space: with buckets of their
    # size (10 layers), each bucket holds exactly its query's particle
    ev = _straight_event(40)
    cfg = load_bucketing_config({"bucket_size": 10})
    buckets, _ = event_buckets(ev, cfg)
    q = bucket_quality(buckets, hit_particle_ids(ev), ev.particles["particle_id"].to_numpy())
    assert q.n_particles == 40 and q.efficiency_all == 1.0 and q.purity == 1.0

    out = bucketing(events, 6, None)  # the finder registered as "bucketing" (tasks/tracking/finders.py)
    ev = read_event(events, 6)
    perf = evaluate_event(6, ev.truth, ev.particles, ev.hits, out["track_id"], out["hit_id"], min_pt=0.5)
    found = perf.particles.loc[perf.particles["reconstructable"], "found"].mean()
    counted = perf.tracks[perf.tracks["counted"]]
    assert found > 0.85 and counted["fake"].mean() < 0.05 and perf.score > 0.8, (found, counted["fake"].mean(), perf.score)
    assert set(out["timings"]) == {"bucketing", "track_building"}
    # one hit per layer: no track holds two hits of one (volume, layer)
    out = bucketing(events, 6, {"one_hit_per_layer": True})
    lay = ev.hits.set_index("hit_id").loc[out["hit_id"], ["volume_id", "layer_id"]]
    per = pd.DataFrame({"t": out["track_id"], "v": lay["volume_id"].to_numpy(), "l": lay["layer_id"].to_numpy()})
    assert len(out["track_id"]) > 0 and not per.duplicated().any()


def _straight_event(n: int):
    """``n`` straight particles from the origin (|η| < 1, directions ≥ 0.05 rad apart), one hit per layer."""
    from lhcml.data.trackml import TrackMLEvent

    rng = np.random.default_rng(3)
    dirs: list[np.ndarray] = []
    while len(dirs) < n:
        phi, eta = rng.uniform(-np.pi, np.pi), rng.uniform(-1, 1)
        d = np.array([np.cos(phi), np.sin(phi), np.sinh(eta)]) / np.cosh(eta)
        if all(np.arccos(np.clip(d @ e, -1, 1)) > 0.05 for e in dirs):
            dirs.append(d)
    hits = [(i * len(RADII) + j + 1, *(d * r / np.hypot(d[0], d[1])), 8, 2 * j + 2, 1)
            for i, d in enumerate(dirs) for j, r in enumerate(RADII)]  # fmt: skip
    h = pd.DataFrame(hits, columns=["hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id"])
    pid = 1 + (h["hit_id"].to_numpy() - 1) // len(RADII)
    t = pd.DataFrame({"hit_id": h["hit_id"], "particle_id": pid, "tx": h["x"], "ty": h["y"], "tz": h["z"],
                      "tpx": 0.0, "tpy": 0.0, "tpz": 0.0, "weight": 1.0 / len(h)})  # fmt: skip
    p = pd.DataFrame({"particle_id": np.arange(1, n + 1), "vx": 0.0, "vy": 0.0, "vz": 0.0,
                      "px": [d[0] for d in dirs], "py": [d[1] for d in dirs], "pz": [d[2] for d in dirs],
                      "q": 1, "nhits": len(RADII)})  # fmt: skip
    return TrackMLEvent(0, h, None, p, t)


def test_true_pairs_known_answer() -> None:
    from lhcml.models.tracking.embedding import neighbour_pairs, same_particle_pairs

    pid = np.array([1, 1, 1, 2, 2, 0, 1])
    dist = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 0.0, 9.0])  # particle 1 in order: hits 1, 2, 0, 6
    got = {tuple(p) for p in neighbour_pairs(pid, dist, 1).tolist()}
    assert got == {(1, 2), (0, 2), (0, 6), (3, 4)}
    got = {tuple(p) for p in neighbour_pairs(pid, dist, 2).tolist()}
    assert got == {(1, 2), (0, 2), (0, 6), (3, 4), (0, 1), (2, 6)}
    # all pairs: C(4, 2) + C(2, 2); noise (0) never pairs
    assert len(same_particle_pairs(pid)) == 7 and 5 not in same_particle_pairs(pid)


def test_lhcml_tune_runs_a_tracking_config(events, tmp_path: Path) -> None:
    """`lhcml tune` validates and trains a tracking config through the trainer protocol (objective
    ``val_recall``, a metric of the model's validation step)."""
    import yaml

    from lhcml.tune.cli import run_tune

    cfg = _config(events, tmp_path / "unused", 1)
    (tmp_path / "emb.yaml").write_text(yaml.safe_dump(cfg))
    space = {
        "study_name": "emb_tiny", "sampler": "random", "pruner": "none", "n_trials": 2, "seed": 7,
        "objectives": [{"metric": "val_recall", "direction": "maximize"}],
        "parameters": {"model.margin": {"type": "float", "low": 0.5, "high": 2.0}},
    }  # fmt: skip
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    report = run_tune(tmp_path / "emb.yaml", tmp_path / "space.yaml", tmp_path / "study", progress=False)
    assert report.is_file()
    assert len(list((tmp_path / "study" / "trials").glob("trial_*/checkpoints/best-*.ckpt"))) == 2
