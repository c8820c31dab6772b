"""Graph construction for GNN track finding: truth edges, the module map, the radius graph, features.

A hit graph has one node per hit and directed edges between hits that may be consecutive on one
particle's trajectory. Two constructions (docs/references.md §22):

* **module map** (GNN4ITk, Biscarat et al. 2021): from training events, the set of module doublets
  ``(volume, layer, module) -> (volume, layer, module)`` that consecutive hits of true particles
  connect, each with the minimum and maximum of the doublet's geometric quantities (z0, Δφ,
  φ-slope, Δη) seen in training; optionally the set of module *triplets*, an edge then being kept
  only when it belongs to a hit triplet of a known module triplet. Applied to an event, all hit
  pairs of every known doublet that pass its cuts are the candidate edges (:class:`ModuleMap`).
* **metric learning + radius graph** (Exa.TrkX, Ju et al. 2021): hits embedded by a learned MLP;
  edges to the ``k`` nearest neighbours within radius ``r`` in the embedding
  (:func:`radius_graph`), oriented from the inner to the outer hit.

Truth: the hits of a particle ordered by distance from its production vertex; consecutive hits
form the true edges (:func:`truth_edges`). Noise hits (``particle_id == 0``) have none. Events are
any object with pandas DataFrames ``hits``, ``particles``, ``truth`` (the TrackML layout of
:func:`lhcml.data.trackml.read_event`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.errors import ConfigError, CorruptFileError, InputNotFoundError, SchemaError

#: scales of the node features (r/1000 mm, φ/π, z/1000 mm), as Exa.TrkX (docs/references.md §22)
R_SCALE, Z_SCALE = 1000.0, 1000.0
NODE_FEATURES = ("r", "phi", "z")
EDGE_FEATURES = ("dr", "dphi", "dz", "deta", "phi_slope", "z0")
#: the doublet quantities the module map cuts on (GNN4ITk, docs/references.md §22)
CUT_FEATURES = ("z0", "dphi", "phi_slope", "deta")
_HIT_COLUMNS = ("hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id")
_TRUTH_COLUMNS = ("hit_id", "particle_id")


# ---------------------------------------------------------------- hits and truth


@dataclass
class Hits:
    """Per-hit arrays of one event, in hit-table order (row i = node i of the graph)."""

    hit_id: np.ndarray  # int64
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    module: np.ndarray  # int64 key of (volume, layer, module)
    particle_id: np.ndarray | None = None  # int64, 0 = noise; None without truth
    pt: np.ndarray | None = None  # true pT of the hit's particle [GeV], 0 for noise
    order: np.ndarray | None = None  # distance of the true hit from its particle's vertex [mm]
    r: np.ndarray = field(init=False)
    phi: np.ndarray = field(init=False)
    eta: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.r = np.hypot(self.x, self.y)
        self.phi = np.arctan2(self.y, self.x)
        self.eta = np.arcsinh(self.z / np.maximum(self.r, 1e-9))

    def __len__(self) -> int:
        return len(self.hit_id)


def module_key(volume: np.ndarray, layer: np.ndarray, module: np.ndarray) -> np.ndarray:
    """One int64 per (volume, layer, module): volume << 40 | layer << 24 | module."""
    v, lay, m = (np.asarray(a, dtype=np.int64) for a in (volume, layer, module))
    if (m >= 1 << 24).any() or (lay >= 1 << 16).any() or (v >= 1 << 22).any() or min(v.min(initial=0), lay.min(initial=0), m.min(initial=0)) < 0:
        raise SchemaError("volume_id/layer_id/module_id out of range (need 0 <= module < 2^24, layer < 2^16, volume < 2^22)")
    return (v << 40) | (lay << 24) | m


def _require(df: Any, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"the {what} table lacks column(s) {', '.join(missing)} (TrackML layout; read events with lhcml.data.trackml.read_event)")


def event_hits(event: Any, *, need_truth: bool = False) -> Hits:
    """The :class:`Hits` of a TrackML-layout event; with ``need_truth`` its particles too.

    Raises :class:`SchemaError` when columns are missing, or with ``need_truth`` when hits have no
    truth row (training and the module map need every hit's particle).
    """
    hits = event.hits
    _require(hits, _HIT_COLUMNS, "hits")
    out = Hits(
        hit_id=hits["hit_id"].to_numpy(np.int64),
        x=hits["x"].to_numpy(np.float64), y=hits["y"].to_numpy(np.float64), z=hits["z"].to_numpy(np.float64),
        module=module_key(hits["volume_id"].to_numpy(), hits["layer_id"].to_numpy(), hits["module_id"].to_numpy()),
    )  # fmt: skip
    truth = getattr(event, "truth", None)
    if truth is None or len(truth) == 0:
        if need_truth:
            raise SchemaError(f"event {getattr(event, 'event_id', '?')}: hits without truth (no truth table); training and "
                              "the module map need truth — use simulated events (lhcml tracking simulate) or TrackML training events")  # fmt: skip
        return out
    _require(truth, _TRUTH_COLUMNS, "truth")
    t = truth.set_index("hit_id")
    missing = ~np.isin(out.hit_id, t.index.to_numpy())
    if missing.any():
        if need_truth:
            raise SchemaError(f"event {getattr(event, 'event_id', '?')}: {int(missing.sum())} of {len(out)} hits without truth "
                              f"(e.g. hit_id {int(out.hit_id[missing][0])}); training and the module map need a truth row for every hit")  # fmt: skip
        return out
    t = t.loc[out.hit_id]
    pid = t["particle_id"].to_numpy(np.int64)
    out.particle_id = pid
    parts = getattr(event, "particles", None)
    out.pt = np.zeros(len(out))
    out.order = np.zeros(len(out))
    if parts is not None and len(parts):
        _require(parts, ("particle_id", "vx", "vy", "vz", "px", "py"), "particles")
        p = parts.drop_duplicates("particle_id").set_index("particle_id")
        known = np.isin(pid, p.index.to_numpy()) & (pid != 0)
        pk = p.loc[pid[known]]
        out.pt[known] = np.hypot(pk["px"].to_numpy(), pk["py"].to_numpy())
        tx = t["tx"].to_numpy() if "tx" in t.columns else out.x
        ty = t["ty"].to_numpy() if "ty" in t.columns else out.y
        tz = t["tz"].to_numpy() if "tz" in t.columns else out.z
        vx, vy, vz = np.zeros(len(out)), np.zeros(len(out)), np.zeros(len(out))
        vx[known], vy[known], vz[known] = pk["vx"].to_numpy(), pk["vy"].to_numpy(), pk["vz"].to_numpy()
        out.order = np.sqrt((tx - vx) ** 2 + (ty - vy) ** 2 + (tz - vz) ** 2)
    else:
        out.order = np.sqrt(out.x**2 + out.y**2 + out.z**2)
    return out


def truth_edges(hits: Hits, *, min_pt: float = 0.0) -> np.ndarray:
    """True edges ``(2, E)`` (row indices): consecutive hits of each particle with pT > ``min_pt`` [GeV].

    The hits of a particle are ordered by the distance of the true hit from the particle's
    production vertex (monotonic along the trajectory up to half a turn); noise hits (particle 0)
    have no edges. Edges point along the trajectory.
    """
    if hits.particle_id is None:
        raise SchemaError("hits without truth: true edges need the truth table (particle_id of every hit)")
    sel = np.flatnonzero((hits.particle_id != 0) & (hits.pt > min_pt) if min_pt > 0 else hits.particle_id != 0)
    o = sel[np.lexsort((hits.order[sel], hits.particle_id[sel]))]
    same = hits.particle_id[o[1:]] == hits.particle_id[o[:-1]]
    return np.stack([o[:-1][same], o[1:][same]]).astype(np.int64)


def pair_keys(edges: np.ndarray, n: int) -> np.ndarray:
    """Undirected key of each edge (min * n + max), to compare edge sets regardless of direction."""
    a, b = np.minimum(edges[0], edges[1]), np.maximum(edges[0], edges[1])
    return a.astype(np.int64) * n + b


def edge_labels(hits: Hits, edges: np.ndarray) -> np.ndarray:
    """1 for an edge joining consecutive hits of one particle (either direction), else 0."""
    true = truth_edges(hits)
    return np.isin(pair_keys(edges, len(hits)), pair_keys(true, len(hits))).astype(np.float32)


def graph_efficiency_purity(hits: Hits, edges: np.ndarray, *, min_pt: float = 1.0) -> dict[str, float]:
    """Edge efficiency and purity of a graph, as Exa.TrkX/GNN4ITk measure them.

    efficiency = fraction of the true edges of particles with pT > ``min_pt`` that are in the
    graph; purity = fraction of the graph's edges that are true edges (of any particle).
    """
    n = len(hits)
    keys = np.unique(pair_keys(edges, n))
    target = np.unique(pair_keys(truth_edges(hits, min_pt=min_pt), n))
    true_all = np.unique(pair_keys(truth_edges(hits), n))
    n_true_in = int(np.isin(keys, true_all).sum())
    return {
        "edges": float(len(keys)),
        "efficiency": float(np.isin(target, keys).mean()) if len(target) else float("nan"),
        "purity": n_true_in / len(keys) if len(keys) else float("nan"),
        "true_edges_target": float(len(target)),
    }


# ---------------------------------------------------------------- features


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def doublet_quantities(hits: Hits, src: np.ndarray, dst: np.ndarray) -> dict[str, np.ndarray]:
    """Geometric quantities of doublets ``src -> dst`` (mm, rad): dr, dphi, dz, deta, phi_slope, z0.

    z0 is the z of the straight line through both hits at r = 0 (r-z plane); phi_slope = Δφ/Δr.
    Where Δr = 0 (same radius) the slope and z0 use Δr = 1 µm (our choice; they then take large
    values that the learned cuts exclude unless training saw them).
    """
    dr = hits.r[dst] - hits.r[src]
    dz = hits.z[dst] - hits.z[src]
    dphi = _wrap(hits.phi[dst] - hits.phi[src])
    safe = np.where(np.abs(dr) < 1e-3, np.where(dr < 0, -1e-3, 1e-3), dr)
    return {
        "dr": dr, "dphi": dphi, "dz": dz, "deta": hits.eta[dst] - hits.eta[src],
        "phi_slope": dphi / safe, "z0": hits.z[src] - hits.r[src] * dz / safe,
    }  # fmt: skip


def node_features(hits: Hits) -> np.ndarray:
    """``(N, 3)`` float32 node features: r/1000 mm, φ/π, z/1000 mm (Exa.TrkX's scaling)."""
    return np.stack([hits.r / R_SCALE, hits.phi / np.pi, hits.z / Z_SCALE], axis=1).astype(np.float32)


def edge_features(hits: Hits, edges: np.ndarray) -> np.ndarray:
    """``(E, 6)`` float32 edge features (:data:`EDGE_FEATURES`), scaled to O(1) (our choice):
    Δr/100 mm, Δφ, Δz/100 mm, Δη, φ-slope × 1000 mm and z0/1000 mm, the last two clipped to ±10."""
    q = doublet_quantities(hits, edges[0], edges[1])
    return np.stack([
        q["dr"] / 100.0, q["dphi"], q["dz"] / 100.0, q["deta"],
        np.clip(q["phi_slope"] * 1000.0, -10, 10), np.clip(q["z0"] / 1000.0, -10, 10),
    ], axis=1).astype(np.float32)  # fmt: skip


def orient_outward(hits: Hits, edges: np.ndarray) -> np.ndarray:
    """Edges pointing from the inner to the outer hit (by r, then |z|), as track building walks them."""
    a, b = edges
    flip = (hits.r[a] > hits.r[b]) | ((hits.r[a] == hits.r[b]) & (np.abs(hits.z[a]) > np.abs(hits.z[b])))
    return np.where(flip, edges[::-1], edges)


def dedupe(edges: np.ndarray, n: int) -> np.ndarray:
    """Remove self-loops and repeated pairs (either direction); keeps the first occurrence."""
    edges = edges[:, edges[0] != edges[1]]
    _, first = np.unique(pair_keys(edges, n), return_index=True)
    return edges[:, np.sort(first)]


# ---------------------------------------------------------------- module map


@dataclass
class ModuleMap:
    """Module doublets (and triplets) connected by true particles, with min/max doublet cuts.

    ``modules``: sorted int64 module keys seen in training; ``doublets``: ``(D, 2)`` indices into
    ``modules`` (inner, outer); ``cut_min``/``cut_max``: ``(D, 4)`` per doublet for
    :data:`CUT_FEATURES`; ``triplets``: ``(T, 3)`` indices or empty; ``min_pt``: the pT cut [GeV] of
    the particles it was built from; ``n_events``: training events.
    """

    modules: np.ndarray
    doublets: np.ndarray
    cut_min: np.ndarray
    cut_max: np.ndarray
    triplets: np.ndarray
    min_pt: float
    n_events: int

    def __len__(self) -> int:
        return len(self.doublets)

    # -------------------------------------------------------------- building

    @classmethod
    def build(cls, events: Any, *, min_pt: float = 0.5, triplets: bool = True, cut_level: str = "module",
              progress: bool = False) -> ModuleMap:  # fmt: skip
        """Learn the map from training events (an iterable of TrackML-layout events).

        Every pair of consecutive hits of a particle with pT > ``min_pt`` [GeV] adds its module
        doublet (and every three consecutive hits their module triplet); the cuts are the minimum
        and maximum of :data:`CUT_FEATURES` over all training doublets of each module doublet
        (``cut_level="module"``, GNN4ITk), or over all training doublets of the same *layer* pair
        (``cut_level="layer"``: our option for small training samples, where most module doublets
        are seen once or twice and their min/max window is too narrow for a new event).
        Raises :class:`SchemaError` for events without truth.
        """
        if cut_level not in ("module", "layer"):
            raise ConfigError(f"unknown cut_level '{cut_level}' (valid: module, layer)")
        from tqdm import tqdm

        keys, quants, trip_keys, n_events = [], [], [], 0
        for ev in tqdm(events, desc="module map", unit="event", disable=not progress):
            hits = event_hits(ev, need_truth=True)
            e = truth_edges(hits, min_pt=min_pt)
            e = e[:, e[0] != e[1]]
            q = doublet_quantities(hits, e[0], e[1])
            keys.append(np.stack([hits.module[e[0]], hits.module[e[1]]], axis=1))
            quants.append(np.stack([q[c] for c in CUT_FEATURES], axis=1))
            if triplets:  # consecutive edges of one particle: e_k = (a, b), e_{k+1} = (b, c)
                chain = e[1, :-1] == e[0, 1:]
                trip_keys.append(np.stack([hits.module[e[0, :-1][chain]], hits.module[e[1, :-1][chain]], hits.module[e[1, 1:][chain]]], axis=1))
            n_events += 1
        if n_events == 0:
            raise SchemaError("no training events for the module map")
        k = np.concatenate(keys)
        qv = np.concatenate(quants)
        modules = np.unique(k)
        idx = np.searchsorted(modules, k)
        m = len(modules)
        dkey = idx[:, 0] * m + idx[:, 1]
        ukey, inv = np.unique(dkey, return_inverse=True)
        cmin = np.full((len(ukey), qv.shape[1]), np.inf)
        cmax = np.full((len(ukey), qv.shape[1]), -np.inf)
        for j in range(qv.shape[1]):
            np.minimum.at(cmin[:, j], inv, qv[:, j])
            np.maximum.at(cmax[:, j], inv, qv[:, j])
        doublets = np.stack([ukey // m, ukey % m], axis=1)
        if cut_level == "layer":  # pool the windows over the doublets of each (volume, layer) pair
            layer = modules >> 24
            lkey = np.unique(np.stack([layer[doublets[:, 0]], layer[doublets[:, 1]]], axis=1), axis=0, return_inverse=True)[1].ravel()
            for j in range(qv.shape[1]):
                lo = np.full(lkey.max() + 1, np.inf)
                hi = np.full(lkey.max() + 1, -np.inf)
                np.minimum.at(lo, lkey, cmin[:, j])
                np.maximum.at(hi, lkey, cmax[:, j])
                cmin[:, j], cmax[:, j] = lo[lkey], hi[lkey]
        if triplets and trip_keys and sum(len(t) for t in trip_keys):
            t = np.searchsorted(modules, np.concatenate(trip_keys))
            trip = np.unique(t, axis=0)
        else:
            trip = np.zeros((0, 3), np.int64)
        return cls(modules, doublets.astype(np.int64), cmin, cmax, trip.astype(np.int64), float(min_pt), n_events)

    # -------------------------------------------------------------- applying

    def candidate_edges(self, hits: Hits, *, use_triplets: bool = True, chunk_pairs: int = 2_000_000) -> np.ndarray:
        """Candidate edges ``(2, E)`` of an event: hit pairs of known module doublets passing their cuts.

        With ``use_triplets`` (and a map that has triplets) an edge is kept only if, with another
        edge that shares its inner or outer hit, it forms a hit triplet whose modules are a known
        module triplet (GNN4ITk's triplet map). The hit pairs are formed and cut in chunks of about
        ``chunk_pairs`` pairs (memory; our choice).
        """
        m = len(self.modules)
        pos = np.searchsorted(self.modules, hits.module)
        pos_c = np.minimum(pos, m - 1)
        known = self.modules[pos_c] == hits.module
        node_mod = np.where(known, pos_c, -1)
        order = np.argsort(node_mod, kind="stable")
        sorted_mod = node_mod[order]
        start = np.searchsorted(sorted_mod, np.arange(m), side="left")
        count = np.searchsorted(sorted_mod, np.arange(m), side="right") - start
        npairs_all = count[self.doublets[:, 0]] * count[self.doublets[:, 1]]
        live = np.flatnonzero(npairs_all)
        chunk_id = (np.cumsum(npairs_all[live]) - 1) // max(int(chunk_pairs), 1)
        srcs, dsts = [], []
        for chunk in np.split(live, np.flatnonzero(np.diff(chunk_id)) + 1) if len(live) else []:
            n2 = count[self.doublets[chunk, 1]]
            npairs = npairs_all[chunk]
            total = int(npairs.sum())
            dbl = np.repeat(chunk, npairs)
            local = np.arange(total) - np.repeat(np.cumsum(npairs) - npairs, npairs)
            n2r = np.repeat(n2, npairs)
            src = order[start[self.doublets[dbl, 0]] + local // n2r]
            dst = order[start[self.doublets[dbl, 1]] + local % n2r]
            q = doublet_quantities(hits, src, dst)
            ok = src != dst
            for j, c in enumerate(CUT_FEATURES):
                ok &= (q[c] >= self.cut_min[dbl, j]) & (q[c] <= self.cut_max[dbl, j])
            srcs.append(src[ok])
            dsts.append(dst[ok])
        src = np.concatenate(srcs) if srcs else np.zeros(0, np.int64)
        dst = np.concatenate(dsts) if dsts else np.zeros(0, np.int64)
        if use_triplets and len(self.triplets) and len(src):
            keep = self._in_triplet(src, dst, node_mod, m)
            src, dst = src[keep], dst[keep]
        return dedupe(np.stack([src, dst]).astype(np.int64), len(hits))

    def _in_triplet(self, src: np.ndarray, dst: np.ndarray, node_mod: np.ndarray, m: int) -> np.ndarray:
        """Which edges belong to a hit triplet (a -> b -> c, two candidate edges) of a known module triplet."""
        tkey = np.unique((self.triplets[:, 0] * m + self.triplets[:, 1]) * m + self.triplets[:, 2])
        e = len(src)
        by_dst = np.argsort(dst, kind="stable")  # incoming edges of each middle hit
        by_src = np.argsort(src, kind="stable")  # outgoing edges of each middle hit
        n = int(max(src.max(), dst.max())) + 1
        in_cnt = np.bincount(dst, minlength=n)
        out_cnt = np.bincount(src, minlength=n)
        in_start = np.cumsum(in_cnt) - in_cnt
        out_start = np.cumsum(out_cnt) - out_cnt
        pairs = in_cnt * out_cnt
        total = int(pairs.sum())
        keep = np.zeros(e, bool)
        if total == 0:
            return keep
        mid = np.repeat(np.arange(n), pairs)
        local = np.arange(total) - np.repeat(np.cumsum(pairs) - pairs, pairs)
        oc = out_cnt[mid]
        e_in = by_dst[in_start[mid] + local // oc]
        e_out = by_src[out_start[mid] + local % oc]
        a, b, c = node_mod[src[e_in]], node_mod[mid], node_mod[dst[e_out]]
        hit = np.isin((a * m + b) * m + c, tkey) & (src[e_in] != dst[e_out])
        keep[e_in[hit]] = True
        keep[e_out[hit]] = True
        return keep

    # -------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write the map to ``path`` (.npz, atomically)."""
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, modules=self.modules, doublets=self.doublets, cut_min=self.cut_min,
                                    cut_max=self.cut_max, triplets=self.triplets, min_pt=self.min_pt, n_events=self.n_events)  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModuleMap:
        """Read a map written by :meth:`save`."""
        if not Path(path).is_file():
            raise InputNotFoundError(f"no module map {path}: build it with lhcml tracking module-map TRAIN_DIR -o {path}")
        try:
            with np.load(Path(path), allow_pickle=False) as f:
                return cls(f["modules"], f["doublets"], f["cut_min"], f["cut_max"], f["triplets"], float(f["min_pt"]), int(f["n_events"]))
        except (KeyError, ValueError) as err:
            raise CorruptFileError(f"{path} is not a module map written by lhcml ({err}); rebuild it with lhcml tracking module-map") from None


# ---------------------------------------------------------------- radius graph


def radius_graph(points: np.ndarray, *, r: float, k: int) -> np.ndarray:
    """Edges ``(2, E)`` from every point to its up to ``k`` nearest neighbours within ``r``
    (Exa.TrkX's fixed-radius k-NN graph, exact, scipy's cKDTree), each pair once."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if n < 2:
        return np.zeros((2, 0), np.int64)
    tree = cKDTree(pts)
    kk = min(k + 1, n)
    dist, idx = tree.query(pts, k=kk, distance_upper_bound=r)
    src = np.repeat(np.arange(n), kk)
    dst = idx.ravel()
    ok = np.isfinite(dist.ravel()) & (dst != src) & (dst < n)
    return dedupe(np.stack([src[ok], dst[ok]]).astype(np.int64), n)
