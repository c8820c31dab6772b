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
from lhcml.errors import ConfigError
from lhcml.tasks.tracking import graph as G

# ---------------------------------------------------------------- graphs for training


def build_event_graph(event: Any, *, method: Literal["module_map", "metric_learning"], module_map: G.ModuleMap | None = None,
                      embed: Any = None, r: float = 0.1, k: int = 100, use_triplets: bool = True,
                      need_truth: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """The hit graph of one event: ``x, edge_index, edge_attr, hit_id`` and ``y`` (if truth).

    ``method="module_map"`` needs ``module_map``; ``"metric_learning"`` needs ``embed``, a callable
    from the event to its hits' ``(N, D)`` embedding (:func:`embedding_function`), and the radius
    ``r`` and neighbour count ``k``. Edges point from the inner to the outer hit. With ``need_truth`` events
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
        edges = G.radius_graph(np.asarray(embed(event)), r=r, k=k)
    else:
        raise ConfigError(f"unknown graph method '{method}' (valid: module_map, metric_learning)")
    edges = G.orient_outward(hits, edges)
    out = {"x": x, "edge_index": edges, "edge_attr": G.edge_features(hits, edges), "hit_id": hits.hit_id}
    if hits.particle_id is not None:
        out["y"] = G.edge_labels(hits, edges)
    return out


def write_graph(path: str | Path, graph: dict[str, np.ndarray]) -> Path:
    """Write one event graph to ``path`` (.npz, atomically); read back by :func:`lhcml.models.tracking.gnn.read_graph`."""
    from lhcml.models.tracking.gnn import GRAPH_ARRAYS

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: graph[k] for k in GRAPH_ARRAYS if k in graph})
    return Path(path)


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
    """Track-building settings: acorn's thresholds (docs/references.md §22); ``min_hits`` our choice."""

    method: Literal["cc", "walkthrough"] = "walkthrough"
    cc_cut: float = 0.01
    walk_min: float = 0.1
    walk_add: float = 0.6
    min_hits: int = 3


class GNNFinderConfig(StrictModel):
    """Settings of the ``gnn-mm`` / ``gnn-ml`` finders (configs/tracking/gnn_mm.yaml, gnn_ml.yaml)."""

    graph: Literal["module_map", "metric_learning"] = "module_map"
    module_map: str | None = None  # .npz written by ModuleMap.save (lhcml tracking module-map)
    use_triplets: bool = False
    embedding: str | None = None  # the hit embedding: checkpoint or run directory (configs/tracking/embedding.yaml)
    radius: float = 0.1
    k: int = 100
    edge_filter: str | None = None  # checkpoint or run directory of the edge filter (configs/tracking/edge_filter.yaml); None: no filter
    filter_cut: float = 0.1
    gnn: str  # checkpoint or run directory of the interaction network (configs/tracking/gnn.yaml)
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


def build_tracks(graph: dict[str, np.ndarray], scores: np.ndarray, building: TrackBuildingConfig) -> list[np.ndarray]:
    """Tracks (node-index arrays) from a scored graph: :func:`cc_tracks` or :func:`cc_and_walk`."""
    if building.method == "cc":
        return cc_tracks(len(graph["x"]), graph["edge_index"], scores, cut=building.cc_cut, min_hits=building.min_hits)
    return cc_and_walk(rank_along_track(graph["x"]), graph["edge_index"], scores, cc_cut=building.cc_cut,
                       walk_min=building.walk_min, walk_add=building.walk_add, min_hits=building.min_hits)  # fmt: skip


def load_stage(path: str | Path) -> Any:
    """A trained tracking model (edge filter, interaction network, embedding) from a checkpoint or
    a training output directory (its ``checkpoints/best-*.ckpt``), in eval mode."""
    from lhcml.train.protocol import resolve_artifact
    from lhcml.train.tracking import load_tracking_model

    return load_tracking_model(resolve_artifact(path)[1])[0]


def embedding_function(model: Any) -> Any:
    """``event -> (N, D)`` embedding of its hits by a trained hit embedding (``lhcml.models.tracking.embedding.HitEmbedding``)."""
    import torch

    from lhcml.models.tracking.embedding import hit_features

    use_cells = "cell_count" in getattr(model, "feature_names", ())

    def embed(event: Any) -> np.ndarray:
        feats, _ = hit_features(event, use_cells)
        with torch.no_grad():
            return model(torch.as_tensor(feats)).numpy()

    return embed


class GNNFinder:
    """The GNN pipeline with its trained stages loaded once; :meth:`find` runs it on an event."""

    def __init__(self, cfg: GNNFinderConfig) -> None:
        self.cfg = cfg
        self.module_map = self.embed = None
        if cfg.graph == "module_map":
            if cfg.module_map is None:
                raise ConfigError("gnn finder: graph 'module_map' needs module_map: PATH.npz (lhcml tracking module-map)")
            self.module_map = G.ModuleMap.load(cfg.module_map)
        else:
            if cfg.embedding is None:
                raise ConfigError("gnn finder: graph 'metric_learning' needs embedding: CHECKPOINT (configs/tracking/embedding.yaml)")
            self.embed = embedding_function(load_stage(cfg.embedding))
        self.edge_filter = load_stage(cfg.edge_filter) if cfg.edge_filter else None
        self.gnn = load_stage(cfg.gnn)

    def graph(self, event: Any) -> dict[str, np.ndarray]:
        """The event's candidate graph (no filter)."""
        c = self.cfg
        return build_event_graph(event, method=c.graph, module_map=self.module_map, embed=self.embed, r=c.radius,
                                 k=c.k, use_triplets=c.use_triplets)  # fmt: skip

    def find(self, event: Any) -> tuple[list[np.ndarray], dict[str, np.ndarray], StageTimes]:
        """``(tracks as node-index arrays, the scored graph after the filter, stage times)``."""
        times = StageTimes()
        t0 = time.perf_counter()
        graph = self.graph(event)
        t1 = time.perf_counter()
        if self.edge_filter is not None:
            graph = select_edges(graph, score_edges(self.edge_filter, graph) > self.cfg.filter_cut)
        t2 = time.perf_counter()
        scores = score_edges(self.gnn, graph)
        t3 = time.perf_counter()
        tracks = build_tracks(graph, scores, self.cfg.building)
        t4 = time.perf_counter()
        times.graph, times.filter, times.gnn, times.building = t1 - t0, t2 - t1, t3 - t2, t4 - t3
        return tracks, {**graph, "score": scores}, times


_FINDERS: dict[str, GNNFinder] = {}
#: the shipped finder configs (trained artifacts under benchmarks/_work/tracking/gnn/)
DEFAULT_CONFIGS = {"module_map": "tracking/gnn_mm.yaml", "metric_learning": "tracking/gnn_ml.yaml"}


def finder_config(cfg: Any, graph: str) -> GNNFinderConfig:
    """A :class:`GNNFinderConfig` from ``None`` (the shipped config of ``graph``), a YAML path or a mapping."""
    import yaml

    from lhcml.config import validate_config

    if cfg is None:
        from lhcml.config import shipped_config

        cfg = shipped_config(DEFAULT_CONFIGS[graph])
    if isinstance(cfg, GNNFinderConfig):
        return cfg
    source = "gnn finder config"
    if isinstance(cfg, (str, Path)):
        source = str(cfg)
        try:
            cfg = yaml.safe_load(Path(cfg).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"gnn finder config {cfg} not found") from None
    data = dict(cfg)
    data.setdefault("graph", graph)
    if data["graph"] != graph:
        raise ConfigError(f"{source}: graph '{data['graph']}' but the finder uses '{graph}'")
    return validate_config(GNNFinderConfig, data, source)


def find_tracks(event_dir: str | Path, event_id: int, cfg: Any, graph: str) -> dict[str, Any]:
    """Contract-2 candidates of one event by the GNN pipeline (``graph``: module_map or metric_learning)."""
    from lhcml.data.trackml import read_event

    c = finder_config(cfg, graph)
    key = c.model_dump_json()
    if key not in _FINDERS:
        _FINDERS[key] = GNNFinder(c)
    event = read_event(event_dir, int(event_id))
    tracks, g, times = _FINDERS[key].find(event)
    track_id, hit_id = to_candidates(tracks, g["hit_id"])
    return {"track_id": track_id, "hit_id": hit_id,
            "timings": {f"gnn_{k}": v for k, v in vars(times).items()}}  # fmt: skip


def gnn_mm(event_dir: str | Path, event_id: int, cfg: Any = None) -> dict[str, Any]:
    """Finder ``gnn-mm``: module-map graph -> edge filter -> interaction network -> CC + walk-through."""
    return find_tracks(event_dir, event_id, cfg, "module_map")


def gnn_ml(event_dir: str | Path, event_id: int, cfg: Any = None) -> dict[str, Any]:
    """Finder ``gnn-ml``: metric-learning radius graph -> edge filter -> interaction network -> CC + walk-through."""
    return find_tracks(event_dir, event_id, cfg, "metric_learning")


# ---------------------------------------------------------------- stages on a sample


def build_module_map(event_dirs: list[str | Path], out: str | Path, *, events: int | None = None, min_pt: float = 0.5,
                     cut_level: str = "module", triplets: bool = True, progress: bool = True) -> G.ModuleMap:  # fmt: skip
    """Learn a module map from the (training) events of ``event_dirs`` and write it to ``out``."""
    from lhcml.data.trackml import list_events, read_event

    def gen() -> Any:
        for d in event_dirs:
            for e in list_events(d)[:events]:
                yield read_event(d, e)

    mm = G.ModuleMap.build(gen(), min_pt=min_pt, triplets=triplets, cut_level=cut_level, progress=progress)
    mm.save(out)
    return mm


def write_graphs(event_dir: str | Path, name: str, *, method: Literal["module_map", "metric_learning"],
                 module_map: str | Path | None = None, embedding: str | Path | None = None, r: float = 0.1, k: int = 100,
                 use_triplets: bool = False, edge_filter: str | Path | None = None, filter_cut: float = 0.05,
                 events: int | None = None, progress: bool = True) -> list[dict[str, float]]:  # fmt: skip
    """Build the graph of every event of ``event_dir`` and write it to ``graphs-<name>/`` beside the
    events (:func:`lhcml.models.tracking.gnn.graph_file`), the files the edge classifiers train on.

    With ``edge_filter`` (a checkpoint) only the edges it scores above ``filter_cut`` are kept (the
    interaction network trains on the filtered graphs, as Exa.TrkX). Returns per event the graph's
    edge count, efficiency (pT > 1 GeV) and purity.
    """
    from tqdm import tqdm

    from lhcml.data.trackml import list_events, read_event
    from lhcml.models.tracking.gnn import graph_file

    mm = G.ModuleMap.load(module_map) if module_map else None
    embed = embedding_function(load_stage(embedding)) if embedding else None
    filt = load_stage(edge_filter) if edge_filter else None
    stats = []
    for e in tqdm(list_events(event_dir)[:events], desc=f"graphs-{name}", unit="event", disable=not progress):
        ev = read_event(event_dir, e)
        t0 = time.perf_counter()
        g = build_event_graph(ev, method=method, module_map=mm, embed=embed, r=r, k=k, use_triplets=use_triplets)
        if filt is not None:
            g = select_edges(g, score_edges(filt, g) > filter_cut)
        dt = time.perf_counter() - t0
        write_graph(graph_file(ev.source, e, name), g)
        hits = G.event_hits(ev)
        st = {"event": e, "seconds": dt, "hits": len(hits)}
        if hits.particle_id is not None:
            st.update(G.graph_efficiency_purity(hits, g["edge_index"], min_pt=1.0))
        stats.append(st)
    return stats


# ---------------------------------------------------------------- ONNX


def export_edge_classifier(checkpoint: str | Path, output: str | Path, *, force: bool = False, timing: bool = True) -> Any:
    """Export a trained edge filter / interaction network to ONNX, checked with onnxruntime
    (what ``lhcml export RUN out.onnx`` does: :func:`lhcml.export.tracking.export_checkpoint`).

    Inputs ``x`` ``(N, F_node)`` float32, ``edges`` ``(E, 2)`` int64 (source, target; edge-major so
    that both axes are dynamic and a prefix of nodes and edges is a graph), ``edge_attr``
    ``(E, F_edge)``; output ``logit`` ``(E,)`` (:class:`lhcml.models.tracking.gnn.EdgeMajor`).
    """
    from lhcml.export.tracking import export_checkpoint

    return export_checkpoint(checkpoint, output, force=force, timing=timing)
