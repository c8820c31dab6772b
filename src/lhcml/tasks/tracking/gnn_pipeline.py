"""GNN track finding, end to end: graph -> edge filter -> interaction network -> track building.

Stages (Exa.TrkX / GNN4ITk / acorn, docs/references.md §22), each a plain function:

1. :func:`build_event_graph` — candidate edges of an event from the module map or from the learned
   embedding + radius graph (:mod:`lhcml.tasks.tracking.graph`), with node and edge features and,
   for events with truth, the edge labels; :func:`write_graphs` writes one ``.npz`` per event for
   training (the staged pipeline: the training machinery reads graphs, it does not build them).
2. edge filter (:class:`lhcml.models.tracking.gnn.EdgeFilter`): keeps edges with score above
   ``filter_cut``; 3. interaction network (:class:`~lhcml.models.tracking.gnn.InteractionNetwork`)
   scores the remaining edges.
4. track building: :func:`cc_tracks` (connected components of the edges above a cut,
   scipy.sparse.csgraph) and :func:`cc_and_walk` (acorn's track building: components that are
   simple paths are tracks; the rest is walked through from the inner hits following the
   highest-scored outgoing edges, all branches above ``walk_add`` explored, the longest path kept).
   Tracks come back as contract-2 candidates ``(track_id, hit_id)``.

:class:`GNNFinder` runs 1-4 on an event; the finders ``gnn-mm`` (module-map graph) and ``gnn-ml``
(metric-learning graph) of ``lhcml tracking reconstruct`` call :func:`find_tracks`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lhcml.atomic import atomic_path
from lhcml.config import StrictModel
from lhcml.errors import ConfigError, CorruptFileError
from lhcml.tasks.tracking import graph as G

GRAPH_ARRAYS = ("x", "edge_index", "edge_attr", "y", "hit_id")


# ---------------------------------------------------------------- graphs for training


def build_event_graph(event: Any, *, method: Literal["module_map", "metric_learning"], module_map: G.ModuleMap | None = None,
                      embed: Any = None, r: float = 0.1, k: int = 100, use_triplets: bool = True,
                      need_truth: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """The hit graph of one event: ``x, edge_index, edge_attr, hit_id`` and ``y`` (if truth).

    ``method="module_map"`` needs ``module_map``; ``"metric_learning"`` needs ``embed``, a callable
    from the ``(N, 3)`` node features to the ``(N, D)`` embedding, and the radius ``r`` and
    neighbour count ``k``. Edges point from the inner to the outer hit. With ``need_truth`` events
    without truth raise :class:`lhcml.errors.SchemaError` (training needs labels).
    """
    hits = G.event_hits(event, need_truth=need_truth)
    x = G.node_features(hits)
    if method == "module_map":
        if module_map is None:
            raise ConfigError("graph method 'module_map' needs a module map (build one with lhcml tracking module-map)")
        edges = module_map.candidate_edges(hits, use_triplets=use_triplets)
    elif method == "metric_learning":
        if embed is None:
            raise ConfigError("graph method 'metric_learning' needs the embedding model (train configs/tracking/embedding.yaml)")
        edges = G.radius_graph(np.asarray(embed(x)), r=r, k=k)
    else:
        raise ConfigError(f"unknown graph method '{method}' (valid: module_map, metric_learning)")
    edges = G.orient_outward(hits, edges)
    out = {"x": x, "edge_index": edges, "edge_attr": G.edge_features(hits, edges), "hit_id": hits.hit_id}
    if hits.particle_id is not None:
        out["y"] = G.edge_labels(hits, edges)
    return out


def write_graph(path: str | Path, graph: dict[str, np.ndarray]) -> Path:
    """Write one event graph to ``path`` (.npz, atomically)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: graph[k] for k in GRAPH_ARRAYS if k in graph})
    return Path(path)


def read_graph(path: str | Path) -> dict[str, np.ndarray]:
    """Read a graph written by :func:`write_graph`; a clear error if it is not one."""
    try:
        with np.load(Path(path), allow_pickle=False) as f:
            g = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{path}: not a graph file ({err}); rebuild it with lhcml tracking build-graphs") from None
    missing = [k for k in ("x", "edge_index", "edge_attr", "hit_id") if k not in g]
    if missing:
        raise CorruptFileError(f"{path}: graph file lacks {', '.join(missing)}; rebuild it with lhcml tracking build-graphs")
    return g


# ---------------------------------------------------------------- track building


def _components(n: int, edges: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    adj = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(n, n))
    return connected_components(adj, directed=False)[1]


def _group(labels: np.ndarray, nodes: np.ndarray, min_hits: int) -> list[np.ndarray]:
    order = np.argsort(labels[nodes], kind="stable")
    lab = labels[nodes][order]
    cuts = np.flatnonzero(np.diff(lab)) + 1
    return [g for g in np.split(nodes[order], cuts) if len(g) >= min_hits]


def cc_tracks(n: int, edges: np.ndarray, scores: np.ndarray, *, cut: float = 0.5, min_hits: int = 3) -> list[np.ndarray]:
    """Connected components of the edges with score > ``cut``; components with ≥ ``min_hits`` nodes."""
    e = edges[:, scores > cut]
    labels = _components(n, e)
    return _group(labels, np.unique(e), min_hits)


def cc_and_walk(rank: np.ndarray, edges: np.ndarray, scores: np.ndarray, *, cc_cut: float = 0.5, walk_min: float = 0.1,
                walk_add: float = 0.6, min_hits: int = 3, max_paths: int = 64) -> list[np.ndarray]:  # fmt: skip
    """acorn's track building: simple-path components, then a walk-through of the rest.

    ``rank``: per node, its position along the track direction (e.g. the index in (r, |z|) order);
    edges are used from lower to higher rank. Step 1: in the graph of edges with score >
    ``cc_cut``, every connected component in which no node has more than one incoming or one
    outgoing edge is a track. Step 2: on the unused nodes and the edges with score > ``walk_min``,
    nodes are visited in rank order; from each, paths are followed outwards: every outgoing edge
    with score > ``walk_add`` is a branch, and if there is none the best edge with score >
    ``walk_min`` is followed; of all paths (at most ``max_paths``) the longest (then highest summed
    score) is a track if it has ≥ ``min_hits`` nodes, and its nodes are used.
    """
    n = len(rank)
    src, dst = edges
    flip = rank[src] > rank[dst]
    src, dst = np.where(flip, dst, src), np.where(flip, src, dst)
    used = np.zeros(n, bool)
    tracks: list[np.ndarray] = []
    # step 1: simple paths among the edges above the CC cut
    sel = scores > cc_cut
    s1, d1 = src[sel], dst[sel]
    if len(s1):
        labels = _components(n, np.stack([s1, d1]))
        branchy = (np.bincount(s1, minlength=n) > 1) | (np.bincount(d1, minlength=n) > 1)
        bad = np.zeros(labels.max() + 1, bool)
        bad[labels[branchy]] = True
        nodes = np.unique(np.concatenate([s1, d1]))
        nodes = nodes[~bad[labels[nodes]]]
        for trk in _group(labels, nodes, min_hits):
            tracks.append(trk[np.argsort(rank[trk])])
            used[trk] = True
    # step 2: walk through the rest
    sel = (scores > walk_min) & ~used[src] & ~used[dst]
    s2, d2, sc2 = src[sel], dst[sel], scores[sel]
    order = np.lexsort((-sc2, s2))
    s2, d2, sc2 = s2[order], d2[order], sc2[order]
    start = np.searchsorted(s2, np.arange(n + 1))
    for node in np.unique(s2)[np.argsort(rank[np.unique(s2)], kind="stable")]:
        if used[node]:
            continue
        best: tuple[int, float, list[int]] = (0, 0.0, [])
        stack: list[tuple[list[int], float]] = [([int(node)], 0.0)]
        n_paths = 0
        while stack and n_paths < max_paths:
            path, total = stack.pop()
            cur = path[-1]
            lo, hi = start[cur], start[cur + 1]
            nxt = [(int(d2[i]), float(sc2[i])) for i in range(lo, hi) if not used[d2[i]] and d2[i] not in path]
            branches = [p for p in nxt if p[1] > walk_add] or nxt[:1]  # nxt is sorted by score
            if not branches:
                n_paths += 1
                if (len(path), total) > best[:2]:
                    best = (len(path), total, path)
                continue
            for d, s in branches:
                stack.append((path + [d], total + s))
        if best[0] >= min_hits:
            trk = np.asarray(best[2], np.int64)
            tracks.append(trk)
            used[trk] = True
    return tracks


def to_candidates(tracks: list[np.ndarray], hit_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contract-2 candidates: ``(track_id, hit_id)`` int64 arrays, one row per (track, hit)."""
    if not tracks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tid = np.concatenate([np.full(len(t), i, np.int64) for i, t in enumerate(tracks)])
    return tid, hit_id[np.concatenate(tracks)].astype(np.int64)


def rank_along_track(x: np.ndarray) -> np.ndarray:
    """Node rank in (r, |z|) order from the node features (r/1000, φ/π, z/1000): inner hits first."""
    return np.lexsort((np.abs(x[:, 2]), x[:, 0])).argsort()


# ---------------------------------------------------------------- inference


class TrackBuildingConfig(StrictModel):
    """Track-building thresholds (our choices, the order of acorn's defaults)."""

    method: Literal["cc", "walkthrough"] = "walkthrough"
    cc_cut: float = 0.5
    walk_min: float = 0.1
    walk_add: float = 0.6
    min_hits: int = 3


class GNNFinderConfig(StrictModel):
    """Settings of the ``gnn-mm`` / ``gnn-ml`` finders (the ``gnn`` section of a reconstruct config)."""

    graph: Literal["module_map", "metric_learning"] = "module_map"
    module_map: str | None = None  # .npz from ModuleMap.save
    use_triplets: bool = True
    embedding: str | None = None  # embedding model checkpoint (14D's lhcml.models.tracking.embedding)
    radius: float = 0.1
    k: int = 100
    edge_filter: str | None = None  # edge-filter checkpoint; None: no filter stage
    filter_cut: float = 0.05
    gnn: str  # interaction-network checkpoint
    building: TrackBuildingConfig = Field(default_factory=TrackBuildingConfig)


@dataclass
class StageTimes:
    """Seconds per stage for one event."""

    graph: float = 0.0
    filter: float = 0.0
    gnn: float = 0.0
    building: float = 0.0


def score_edges(model: Any, graph: dict[str, np.ndarray]) -> np.ndarray:
    """Sigmoid scores ``(E,)`` of a torch edge classifier on a graph dict (no gradients)."""
    import torch

    if graph["edge_index"].shape[1] == 0:
        return np.zeros(0, np.float32)
    with torch.no_grad():
        logits = model(torch.as_tensor(graph["x"]), torch.as_tensor(graph["edge_index"]), torch.as_tensor(graph["edge_attr"]))
    return torch.sigmoid(logits).numpy()


def select_edges(graph: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The graph with only the edges where ``keep`` is True."""
    out = dict(graph)
    out["edge_index"] = graph["edge_index"][:, keep]
    out["edge_attr"] = graph["edge_attr"][keep]
    if "y" in graph:
        out["y"] = graph["y"][keep]
    return out


def run_gnn(graph: dict[str, np.ndarray], gnn: Any, *, edge_filter: Any = None, filter_cut: float = 0.05,
            building: TrackBuildingConfig | None = None, times: StageTimes | None = None) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """Filter, classify and build tracks on one graph; returns the tracks (node indices) and the
    scored graph (with ``score``)."""
    building = building or TrackBuildingConfig()
    times = times if times is not None else StageTimes()
    t0 = time.perf_counter()
    if edge_filter is not None:
        graph = select_edges(graph, score_edges(edge_filter, graph) > filter_cut)
    t1 = time.perf_counter()
    scores = score_edges(gnn, graph)
    t2 = time.perf_counter()
    if building.method == "cc":
        tracks = cc_tracks(len(graph["x"]), graph["edge_index"], scores, cut=building.cc_cut, min_hits=building.min_hits)
    else:
        tracks = cc_and_walk(rank_along_track(graph["x"]), graph["edge_index"], scores, cc_cut=building.cc_cut,
                             walk_min=building.walk_min, walk_add=building.walk_add, min_hits=building.min_hits)  # fmt: skip
    t3 = time.perf_counter()
    times.filter += t1 - t0
    times.gnn += t2 - t1
    times.building += t3 - t2
    return tracks, {**graph, "score": scores}
