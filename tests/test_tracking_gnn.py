"""GNN track finding (issue 14, ML item 2): module map, interaction network, track building.

The events are constructed here: charged helices in a 2 T solenoid through five barrel layers of
a cylindrical detector segmented in modules (φ × z), hits in the TrackML layout (hits, particles,
truth), a few noise hits. Their truth is known exactly, which is what the tests need.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lhcml.errors import SchemaError
from lhcml.models.tracking.gnn import EdgeFilter, InteractionNetwork, edge_loss
from lhcml.tasks.tracking import gnn_pipeline as P
from lhcml.tasks.tracking import graph as G

LAYERS_R = (32.0, 72.0, 116.0, 172.0, 260.0)  # mm, barrel layers (GenericDetector-like radii)
MODULE_PHI_MM, MODULE_Z_MM, HALF_LENGTH = 20.0, 60.0, 600.0


def _module(r: float, phi: np.ndarray, z: np.ndarray) -> np.ndarray:
    n_phi = int(np.ceil(2 * np.pi * r / MODULE_PHI_MM))
    n_z = int(2 * HALF_LENGTH / MODULE_Z_MM)
    iphi = np.floor((phi + np.pi) / (2 * np.pi) * n_phi).astype(int) % n_phi
    iz = np.clip(np.floor((z + HALF_LENGTH) / MODULE_Z_MM).astype(int), 0, n_z - 1)
    return iphi * n_z + iz + 1


def make_event(seed: int, n_particles: int = 40, n_noise: int = 10, event_id: int = 0) -> SimpleNamespace:
    """Helices from the beam line (vz ~ N(0, 50 mm)), pT 0.6-5 GeV, |η| < 1; 20 µm hit smearing."""
    rng = np.random.default_rng(seed)
    rows, truth, parts = [], [], []
    for p in range(1, n_particles + 1):
        pt, eta, phi0 = rng.uniform(0.6, 5.0), rng.uniform(-1.0, 1.0), rng.uniform(-np.pi, np.pi)
        q, vz = rng.choice([-1, 1]), rng.normal(0, 50)
        radius = pt / (0.3 * 2.0) * 1000.0  # mm, 2 T
        pid = 1000 + p
        mom = (pt * np.cos(phi0), pt * np.sin(phi0), pt * np.sinh(eta))
        parts.append((pid, 0.0, 0.0, vz, *mom, q, 0))
        for lay, r in enumerate(LAYERS_R):
            alpha = np.arcsin(r / (2 * radius))
            phi = phi0 - q * alpha
            z = vz + 2 * radius * alpha * np.sinh(eta)
            if abs(z) >= HALF_LENGTH:
                break
            x, y = r * np.cos(phi), r * np.sin(phi)
            xs, ys = x + rng.normal(0, 0.02), y + rng.normal(0, 0.02)
            rows.append((xs, ys, z, 8, 2 * (lay + 1), int(_module(r, np.array([phi]), np.array([z]))[0])))
            truth.append((pid, x, y, z, *mom, 0.0))
    for _ in range(n_noise):
        lay = rng.integers(len(LAYERS_R))
        r, phi, z = LAYERS_R[lay], rng.uniform(-np.pi, np.pi), rng.uniform(-HALF_LENGTH, HALF_LENGTH)
        rows.append((r * np.cos(phi), r * np.sin(phi), z, 8, 2 * (lay + 1), int(_module(r, np.array([phi]), np.array([z]))[0])))
        truth.append((0, r * np.cos(phi), r * np.sin(phi), z, 0.0, 0.0, 0.0, 0.0))
    perm = rng.permutation(len(rows))
    hits = pd.DataFrame([rows[i] for i in perm], columns=["x", "y", "z", "volume_id", "layer_id", "module_id"])
    hits.insert(0, "hit_id", np.arange(1, len(hits) + 1))
    tr = pd.DataFrame([truth[i] for i in perm], columns=["particle_id", "tx", "ty", "tz", "tpx", "tpy", "tpz", "weight"])
    tr.insert(0, "hit_id", hits["hit_id"])
    particles = pd.DataFrame(parts, columns=["particle_id", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits"])
    particles["nhits"] = tr["particle_id"].value_counts().reindex(particles["particle_id"]).fillna(0).to_numpy(int)
    return SimpleNamespace(hits=hits, truth=tr, particles=particles, cells=None, event_id=event_id)


def test_truth_edges_follow_each_particle():
    ev = make_event(1, n_particles=5, n_noise=3)
    hits = G.event_hits(ev, need_truth=True)
    e = G.truth_edges(hits)
    assert (hits.particle_id[e[0]] == hits.particle_id[e[1]]).all()
    assert (hits.r[e[1]] > hits.r[e[0]]).all()  # outward along the helix
    n_hits = np.bincount(np.unique(hits.particle_id[hits.particle_id > 0], return_inverse=True)[1])
    assert e.shape[1] == int((n_hits - 1).sum())


def test_module_map_contains_all_true_edges_of_its_training_events():
    events = [make_event(s) for s in range(3)]
    mm = G.ModuleMap.build(events, min_pt=0.5)
    assert len(mm) > 0 and len(mm.triplets) > 0
    for ev in events:
        hits = G.event_hits(ev, need_truth=True)
        cand = mm.candidate_edges(hits)
        got = G.graph_efficiency_purity(hits, cand, min_pt=0.5)
        assert got["efficiency"] == 1.0, got
        assert got["purity"] > 0.3  # the cuts remove most combinatorics of a known doublet


def test_module_map_round_trip_and_held_out_event(tmp_path):
    train = [make_event(s, n_particles=200) for s in range(16)]
    held = G.event_hits(make_event(99, n_particles=40), need_truth=True)
    eff = {}
    for n in (2, 16):
        for level in ("module", "layer"):
            mm = G.ModuleMap.build(train[:n], min_pt=0.5, cut_level=level)
            eff[n, level] = G.graph_efficiency_purity(held, mm.candidate_edges(held, use_triplets=False))["efficiency"]
    back = G.ModuleMap.load(mm.save(tmp_path / "mm.npz"))
    assert np.array_equal(mm.candidate_edges(held), back.candidate_edges(held))
    whole = mm.candidate_edges(held, use_triplets=False)
    assert np.array_equal(whole, mm.candidate_edges(held, use_triplets=False, chunk_pairs=7))  # chunking changes nothing
    # a held-out event has module doublets the training never saw: efficiency grows with the
    # training sample, and per-module min/max windows from few doublets are narrower than the
    # layer-pooled ones
    assert eff[16, "layer"] > eff[2, "layer"] and eff[16, "module"] > eff[2, "module"]
    assert eff[16, "layer"] > max(0.7, eff[16, "module"])


def test_training_without_truth_is_one_clear_error():
    ev = make_event(2, n_particles=3)
    ev.truth = ev.truth.iloc[:-2]
    with pytest.raises(SchemaError, match="without truth"):
        G.ModuleMap.build([ev])
    ev.truth = None
    with pytest.raises(SchemaError, match="without truth"):
        P.build_event_graph(ev, method="module_map", module_map=None, need_truth=True)


def test_radius_graph_matches_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(300, 3))
    e = G.radius_graph(pts, r=0.5, k=1000)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    i, j = np.nonzero(np.triu(d < 0.5, 1))
    assert np.array_equal(np.sort(G.pair_keys(e, 300)), np.sort(i * 300 + j))


def _graph(ev, mm):
    return P.build_event_graph(ev, method="module_map", module_map=mm, need_truth=True)


def test_interaction_network_is_permutation_equivariant():
    torch.manual_seed(0)
    ev = make_event(3, n_particles=15)
    g = _graph(ev, G.ModuleMap.build([ev]))
    model = InteractionNetwork(hidden=16, n_iterations=3).eval()
    x, ei, ea = (torch.as_tensor(g[k]) for k in ("x", "edge_index", "edge_attr"))
    out = model(x, ei, ea)
    pn, pe = torch.randperm(len(x)), torch.randperm(ei.shape[1])
    inv = torch.empty_like(pn)
    inv[pn] = torch.arange(len(pn))  # node pn[i] of the old graph is node i of the new one
    out_p = model(x[pn], inv[ei[:, pe]], ea[pe])
    torch.testing.assert_close(out_p, out[pe], rtol=1e-5, atol=1e-5)
    # and it is not edge-local: changing one node's features changes the scores of edges two steps away
    x2 = x.clone()
    x2[ei[0, 0]] += 0.5
    assert (model(x2, ei, ea) - out).abs().gt(1e-6).sum() > (ei == ei[0, 0]).any(0).sum()


def _geometric_graph(ev):
    # a radius graph in the raw (r, φ, z) features: ~13 % of its edges are true, a hard enough task
    return P.build_event_graph(ev, method="metric_learning", embed=lambda e: G.node_features(G.event_hits(e)), r=0.15, k=12, need_truth=True)


@pytest.mark.parametrize("cls", [InteractionNetwork, EdgeFilter])
def test_edge_classifiers_learn(cls):
    torch.manual_seed(1)
    graphs = [_geometric_graph(make_event(s, n_particles=60)) for s in range(10, 13)]
    test = _geometric_graph(make_event(20, n_particles=60))  # held out
    model = cls(hidden=16, **({"n_iterations": 3} if cls is InteractionNetwork else {}))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        for g in graphs:
            opt.zero_grad()
            loss = edge_loss(model(*(torch.as_tensor(g[k]) for k in ("x", "edge_index", "edge_attr"))), torch.as_tensor(g["y"]))
            loss.backward()
            opt.step()
    y = torch.as_tensor(test["y"])
    assert 0.05 < y.mean() < 0.2
    logits = model(*(torch.as_tensor(test[k]) for k in ("x", "edge_index", "edge_attr"))).detach()
    const = edge_loss(torch.zeros_like(logits), y)  # the constant that minimises the weighted BCE is 0
    assert edge_loss(logits, y) < 0.5 * const
    pred = logits > 0
    assert (pred & (y > 0)).sum() / (y > 0).sum() > 0.9  # recall
    assert (pred & (y > 0)).sum() / pred.sum() > 0.5  # precision, against 0.13 for the graph


def test_cc_and_walkthrough_on_a_constructed_graph():
    # two 5-hit tracks A = 0-1-2-3-4, B = 5-6-7-8-9 (ranks = layer order), a fake edge 2 -> 8
    # with score 0.55 merges them into one component; a 3-hit track C = 10-11-12 is a simple path;
    # a lone low-score edge 13 -> 14 is dropped
    rank = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 0, 1])
    edges = np.array([[0, 1, 2, 3, 5, 6, 7, 8, 2, 10, 11, 13], [1, 2, 3, 4, 6, 7, 8, 9, 8, 11, 12, 14]])
    scores = np.array([0.9, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.55, 0.8, 0.8, 0.05])
    cc = P.cc_tracks(len(rank), edges, scores, cut=0.5, min_hits=3)
    assert sorted(map(len, cc)) == [3, 10]  # CC alone merges A and B
    walk = P.cc_and_walk(rank, edges, scores, cc_cut=0.5, walk_min=0.1, walk_add=0.6, min_hits=3)
    got = sorted(tuple(sorted(t.tolist())) for t in walk)
    assert got == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9), (10, 11, 12)]
    tid, hid = P.to_candidates(walk, np.arange(100, 115))
    assert tid.dtype == np.int64 and len(tid) == 13 and set(hid) == set(range(100, 113))


def test_branch_with_two_high_scores_keeps_the_longest_path():
    # 0 -> 1 -> 2 -> 3 and a short branch 1 -> 4, both above walk_add: the longer path wins
    rank = np.array([0, 1, 2, 3, 2])
    edges = np.array([[0, 1, 2, 1], [1, 2, 3, 4]])
    scores = np.array([0.9, 0.9, 0.9, 0.95])
    walk = P.cc_and_walk(rank, edges, scores, cc_cut=0.5, walk_min=0.1, walk_add=0.6, min_hits=3)
    assert [t.tolist() for t in walk] == [[0, 1, 2, 3]]


def _write_sample(directory, seeds, n_particles):
    from lhcml.data.trackml import TrackMLEvent, hit_weights, write_event_csv

    for i, seed in enumerate(seeds):
        ev = make_event(seed, n_particles=n_particles)
        ev.truth["weight"] = hit_weights(ev.truth, ev.particles)
        write_event_csv(directory, TrackMLEvent(i, ev.hits, None, ev.particles, ev.truth))


def test_gnn_pipeline_end_to_end(tmp_path):
    """Module map -> graphs -> IN trained by lhcml.train.tracking -> finder gnn-mm -> ACTS-style
    efficiency on held-out events; the edge classifier exports to ONNX."""
    from lhcml.data.trackml import read_event
    from lhcml.metrics.tracking import evaluate_event, summarise
    from lhcml.train.tracking import fit_tracking, tracking_config_from_dict

    train, val, test = tmp_path / "train", tmp_path / "val", tmp_path / "test"
    _write_sample(train, range(100, 116), 200)
    _write_sample(val, [200], 60)
    _write_sample(test, [300, 301], 40)
    P.build_module_map([train], tmp_path / "mm.npz", min_pt=0.5, cut_level="layer", progress=False)
    for d in (train, val, test):
        stats = P.write_graphs(d, "mm", method="module_map", module_map=tmp_path / "mm.npz", events=4, progress=False)
    assert all(s["efficiency"] > 0.6 for s in stats)  # held-out events: edges of unseen module pairs are lost
    cfg = tracking_config_from_dict({
        "data": {"train_dir": str(train), "val_dir": str(val), "max_train_events": 4, "prepare": {"graph": "mm"}},
        "model": {"name": "interaction_network", "hidden": 16, "n_iterations": 3},
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0},
        "trainer": {"max_epochs": 12, "patience": 50, "precision": "32-true", "log_every_n_steps": 1},
        "output_dir": str(tmp_path / "run"),
    })  # fmt: skip
    best = fit_tracking(cfg)
    finder_cfg = {"module_map": str(tmp_path / "mm.npz"), "gnn": str(best),
                  "building": {"cc_cut": 0.5, "min_hits": 3}}  # fmt: skip
    perf = []
    for e in (0, 1):
        cand = P.gnn_mm(test, e, finder_cfg)
        ev = read_event(test, e)
        perf.append(evaluate_event(e, ev.truth, ev.particles, ev.hits, cand["track_id"], cand["hit_id"],
                                   min_particle_hits=4, min_track_hits=3, timings=cand["timings"]))  # fmt: skip
    s = summarise(perf)
    assert s["efficiency"]["value"] > 0.5, s["efficiency"]
    assert s["fake_rate"]["value"] < 0.2, s["fake_rate"]
    report = P.export_edge_classifier(best, tmp_path / "in.onnx", timing=False)
    assert report.max_abs_diff_random < 1e-4
    with pytest.raises(FileExistsError):
        P.export_edge_classifier(best, tmp_path / "in.onnx", timing=False)
