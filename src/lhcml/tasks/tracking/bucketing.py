"""Track finding by approximate-nearest-neighbour buckets (Amrouche et al.; ``docs/references.md §23``).

Two steps, as in the seed talk and the paper:

1. **Buckets.** Every hit is a query of an HNSW index (:mod:`hnswlib`, Malkov & Yashunin) over the
   event's hits; its *bucket* is the query plus its ``bucket_size − 1`` approximate nearest
   neighbours. The space is either *geometric* — the hit's direction seen from the origin,
   ``(x, y, z)/|(x, y, z)|`` with the cosine distance: the "angular distance" of the seed talk, along
   which a high-pT track from the beam line is a point — or the learned *embedding* of
   :mod:`lhcml.models.tracking.embedding` (Euclidean distance).
2. **Tracks inside buckets** (a fit, not a classifier): hits are taken as queries in order of
   increasing radius; for a query not yet on a track, every other free hit ``j`` of its bucket
   defines, with the query and the beam line ``(0, 0)``, a helix: the circle through the origin, the
   query and ``j`` in the transverse plane, and the straight line ``z = z0 + s cot θ`` in the arc
   length ``s`` through the two hits. The helix with most free bucket hits within ``tol_xy_mm`` of
   the circle and ``tol_z_mm`` of the line (ties: smaller summed residual; with ``one_hit_per_layer``
   counted on distinct layers, keeping per layer the hit closest to the helix) is a track when it
   has at least ``min_hits`` hits; it is extended once with the helix through the query and its outermost
   hit over the free hits of its hits' buckets (a curved track leaves the query's bucket at large
   radius). Its hits then leave the pool: one track per hit (no sharing).

Bucket quality (definitions ours — the stored copies of the paper hold its abstract only,
``docs/references.md §23``): for a query hit ``q`` of particle ``p`` (noise: no particle),

* bucket **purity** = fraction of the bucket's hits that belong to ``p`` (0 for a noise query; at
  most ``n_p / bucket_size``);
* a reconstructable particle is **bucketed** when the bucket of one of its own hits holds all its
  hits (``efficiency_all``) or more than half of them (``efficiency_majority``, the TrackML
  double-majority half).

The track candidates are scored by :mod:`lhcml.metrics.tracking` like every finder's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from lhcml.config import StrictModel, coerce_config
from lhcml.errors import ConfigError

#: the shipped configuration of the ``bucketing`` finder
DEFAULT_CONFIG = "tracking/bucketing.yaml"


class BucketingConfig(StrictModel):
    """Bucketing and track building (every number: our choice unless stated; the tolerances were not scanned)."""

    #: ``geometric``: hit direction, cosine distance; ``embedding``: learned embedding, Euclidean
    space: Literal["geometric", "embedding"] = "geometric"
    #: embedding checkpoint (``.ckpt`` or training output directory; ``space: embedding``)
    embedding: str | None = None
    #: hits per bucket, the query included (paper: buckets of 20–50 hits, docs/references.md §23)
    bucket_size: int = Field(30, ge=2)
    #: HNSW graph links per node, construction and search breadth (hnswlib defaults M 16, ef 200/10 raised to 100)
    hnsw_m: int = Field(16, ge=2)
    hnsw_ef_construction: int = Field(200, ge=10)
    hnsw_ef: int = Field(100, ge=10)
    #: helix compatibility: distance to the circle in the transverse plane, and in z at the hit's arc length
    tol_xy_mm: float = Field(1.0, gt=0)
    tol_z_mm: float = Field(10.0, gt=0)
    #: smallest track (distinct layers with one_hit_per_layer; TrackML: particles with < 4 hits weigh 0, docs/references.md §21)
    min_hits: int = Field(4, ge=3)
    #: keep one hit per (volume, layer) on a track, the one closest to the helix (a particle crosses
    #: a layer once, module overlaps aside); measured: fewer fakes, more duplicates, lower TrackML
    #: score and ~2.5x the CPU (docs/benchmarks/tracking_bucketing.md), so off by default
    one_hit_per_layer: bool = False
    #: the second helix point must be this far from the query in radius (a lever arm)
    min_dr_mm: float = Field(20.0, ge=0)
    #: ``bucketing+ckf``: CKF seeds per track (pixel triplets along its helix, :func:`pixel_seed_hits`)
    seeds_per_track: int = Field(2, ge=1)
    seed: int = 0


def load_bucketing_config(cfg: BucketingConfig | dict[str, Any] | str | Path | None) -> BucketingConfig:
    """A validated config from a model, a mapping, a YAML path or ``None`` (the shipped default)."""
    return coerce_config(BucketingConfig, cfg, DEFAULT_CONFIG, "bucketing config")


# ---------------------------------------------------------------------------------------------
# buckets


def geometric_points(hits: Any) -> np.ndarray:
    """Unit direction of each hit seen from the origin, ``(N, 3)`` float32 (cosine space)."""
    xyz = hits[["x", "y", "z"]].to_numpy(np.float64)
    norm = np.linalg.norm(xyz, axis=1, keepdims=True)
    return (xyz / np.where(norm > 0, norm, 1.0)).astype(np.float32)


_EMBEDDERS: dict[str, Any] = {}


def embedding_points(event: Any, checkpoint: str | Path) -> np.ndarray:
    """The learned embedding ``(N, D)`` of the event's hits (model cached per checkpoint)."""
    import torch

    from lhcml.models.tracking.embedding import hit_features
    from lhcml.train.protocol import resolve_artifact
    from lhcml.train.tracking import load_tracking_model

    key = str(Path(checkpoint).resolve())
    if key not in _EMBEDDERS:
        _, artifact = resolve_artifact(checkpoint)
        model, meta = load_tracking_model(artifact)
        if meta["model_name"] != "hit_embedding":
            raise ConfigError(f"{checkpoint} holds a '{meta['model_name']}' model, not a hit_embedding")
        _EMBEDDERS[key] = model
    model = _EMBEDDERS[key]
    use_cells = any(n.startswith("cell_") for n in model.feature_names)
    feats, _ = hit_features(event, use_cells)
    with torch.inference_mode():
        return model(torch.from_numpy(feats)).numpy().astype(np.float32)


def knn_buckets(points: np.ndarray, cfg: BucketingConfig, space: str) -> np.ndarray:
    """``(N, bucket_size)`` hit indices: each hit's bucket (itself first, then its approximate
    nearest neighbours by increasing distance) from an HNSW index (one thread)."""
    import hnswlib

    n, dim = points.shape
    k = min(cfg.bucket_size, n)
    index = hnswlib.Index(space=space, dim=dim)
    index.init_index(max_elements=n, M=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction, random_seed=cfg.seed)
    index.set_num_threads(1)
    index.add_items(points, np.arange(n))
    index.set_ef(max(cfg.hnsw_ef, k))
    labels, _ = index.knn_query(points, k=k, num_threads=1)
    labels = labels.astype(np.int64)
    # the query itself first (an exact duplicate point may come before it)
    own = labels == np.arange(n)[:, None]
    missing = ~own.any(axis=1)
    labels[missing, -1] = np.flatnonzero(missing)
    own[missing, -1] = True
    pos = own.argmax(axis=1)
    first = labels[:, 0].copy()
    labels[np.arange(n), pos] = first
    labels[:, 0] = np.arange(n)
    return labels


@dataclass
class BucketQuality:
    """Bucket efficiency/purity/size of one event (definitions in the module docstring)."""

    n_hits: int
    n_particles: int  # reconstructable particles
    efficiency_all: float
    efficiency_majority: float
    purity: float  # mean over the queries on particles
    bucket_size: int


def bucket_quality(buckets: np.ndarray, particle_id: np.ndarray, selected: np.ndarray) -> BucketQuality:
    """Quality of the buckets of one event.

    Parameters
    ----------
    buckets
        ``(N, k)`` hit indices (:func:`knn_buckets`; the query in column 0).
    particle_id
        Particle of each hit (0 = noise).
    selected
        Particle ids of the reconstructable particles.
    """
    pid = np.asarray(particle_id, np.int64)
    n, k = buckets.shape
    same = pid[buckets] == pid[:, None]  # (N, k)
    in_bucket = same.sum(axis=1)  # the query's particle's hits in its bucket
    _, inv, counts = np.unique(pid, return_inverse=True, return_counts=True)
    n_p = counts[inv]
    on_particle = pid != 0
    purity = float(np.mean(in_bucket[on_particle] / k)) if on_particle.any() else float("nan")
    sel = np.isin(pid, np.asarray(selected, np.int64)) & on_particle
    all_in = sel & (in_bucket == n_p)
    major = sel & (2 * in_bucket > n_p)
    n_sel = len(np.unique(pid[sel]))
    eff_all = len(np.unique(pid[all_in])) / n_sel if n_sel else float("nan")
    eff_major = len(np.unique(pid[major])) / n_sel if n_sel else float("nan")
    return BucketQuality(n, n_sel, eff_all, eff_major, purity, k)


# ---------------------------------------------------------------------------------------------
# track building inside buckets


def _helix_candidates(x: np.ndarray, y: np.ndarray, z: np.ndarray, q: int, js: np.ndarray, cfg: BucketingConfig):
    """Residual-based inlier masks ``(J, M)`` and summed residuals ``(J,)`` of the helices through the
    beam line, hit ``q`` and each hit of ``js`` (all arrays: the bucket's free hits)."""
    xq, yq = x[q], y[q]
    xj, yj = x[js], y[js]
    # circle through (0, 0): centre (a, b) with a x + b y = (x² + y²) / 2 for both hits
    det = xq * yj - yq * xj
    ok = np.abs(det) > 1e-6
    det = np.where(ok, det, 1.0)
    rq2, rj2 = 0.5 * (xq * xq + yq * yq), 0.5 * (xj * xj + yj * yj)
    a = (rq2 * yj - rj2 * yq) / det
    b = (xq * rj2 - xj * rq2) / det
    radius = np.hypot(a, b)
    d_xy = np.abs(np.hypot(x[None, :] - a[:, None], y[None, :] - b[:, None]) - radius[:, None])
    # arc length from the origin along the circle: s = 2 R asin(r / 2R)
    r = np.hypot(x, y)
    s = 2 * radius[:, None] * np.arcsin(np.clip(r[None, :] / (2 * radius[:, None]), 0, 1))
    sq, sj = s[:, q], s[np.arange(len(js)), js]
    ds = np.where(np.abs(sj - sq) > 1e-6, sj - sq, np.nan)
    cot = (z[js] - z[q]) / ds
    z0 = z[q] - cot * sq
    d_z = np.abs(z[None, :] - z0[:, None] - cot[:, None] * s)
    inl = ok[:, None] & (d_xy < cfg.tol_xy_mm) & (d_z < cfg.tol_z_mm)
    rmat = d_xy / cfg.tol_xy_mm + d_z / cfg.tol_z_mm
    res = np.where(inl, rmat, 0.0).sum(axis=1)
    return inl, res, rmat


def _one_per_layer(inl: np.ndarray, rmat: np.ndarray, layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate row: the number of distinct layers among its inliers, and the inlier mask that
    keeps on each layer only the hit closest to the helix (a particle crosses a layer once)."""
    _, inv = np.unique(layer, return_inverse=True)
    onehot = inv[:, None] == np.arange(inv.max() + 1)[None, :]  # (M, L)
    n_layers = ((inl.astype(np.float64) @ onehot) > 0).sum(axis=1)
    keep = np.zeros_like(inl)
    for row in range(inl.shape[0]):
        idx = np.flatnonzero(inl[row])
        if len(idx):
            order = idx[np.lexsort((rmat[row, idx], inv[idx]))]
            first = np.r_[True, inv[order][1:] != inv[order][:-1]]
            keep[row, order[first]] = True
    return n_layers, keep


def build_tracks(hits: Any, buckets: np.ndarray, cfg: BucketingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Tracks found inside the buckets (module docstring): ``(track_id, hit index)`` arrays."""
    x, y, z = (hits[c].to_numpy(np.float64) for c in ("x", "y", "z"))
    r = np.hypot(x, y)
    if {"volume_id", "layer_id"} <= set(hits.columns):
        layer = hits["volume_id"].to_numpy(np.int64) * 10_000 + hits["layer_id"].to_numpy(np.int64)
    else:
        layer = np.arange(len(x), dtype=np.int64)  # no layer information: every hit its own layer
    free = np.ones(len(x), bool)
    tid_out, hit_out = [], []
    n_tracks = 0
    for q in np.argsort(r, kind="stable"):
        if not free[q]:
            continue
        b = buckets[q]
        b = b[free[b]]
        if len(b) < cfg.min_hits:
            continue
        bx, by, bz, br = x[b], y[b], z[b], r[b]
        # b[0] is the query (knn_buckets puts it first)
        js = np.flatnonzero(np.abs(br - br[0]) >= cfg.min_dr_mm)
        if len(js) == 0:
            continue
        inl, res, rmat = _helix_candidates(bx, by, bz, 0, js, cfg)
        n_in, keep = _one_per_layer(inl, rmat, layer[b]) if cfg.one_hit_per_layer else (inl.sum(axis=1), inl)
        best = np.lexsort((res, -n_in))[0]
        if n_in[best] < cfg.min_hits:
            continue
        members = b[keep[best]]
        # one extension step: the helix through the query and the track's outermost hit, applied
        # to the free hits of the buckets of all the track's hits (a curved track leaves the
        # query's bucket at large radius; its outer hits' buckets follow it)
        pool = np.unique(buckets[members].ravel())
        pool = np.concatenate([[q], pool[free[pool] & (pool != q)]])
        far = np.flatnonzero(np.isin(pool, members))
        far = far[np.argmax(r[pool[far]])]
        if far != 0:
            inl2, _, rmat2 = _helix_candidates(x[pool], y[pool], z[pool], 0, np.array([far]), cfg)
            keep2 = _one_per_layer(inl2, rmat2, layer[pool])[1] if cfg.one_hit_per_layer else inl2
            if keep2[0].sum() >= len(members):
                members = pool[keep2[0]]
        free[members] = False
        tid_out.append(np.full(len(members), n_tracks, np.int64))
        hit_out.append(members)
        n_tracks += 1
    if not tid_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(tid_out), np.concatenate(hit_out).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# the finders


def event_buckets(event: Any, cfg: BucketingConfig) -> tuple[np.ndarray, dict[str, float]]:
    """``(buckets (N, k), timings)`` of an event in the configured space."""
    t0 = time.process_time()
    if cfg.space == "geometric":
        points, space = geometric_points(event.hits), "cosine"
    else:
        if cfg.embedding is None:
            raise ConfigError("space: embedding needs 'embedding': a hit_embedding checkpoint or training run directory")
        points, space = embedding_points(event, cfg.embedding), "l2"
    t1 = time.process_time()
    buckets = knn_buckets(points, cfg, space)
    t2 = time.process_time()
    timings = {"bucketing": t2 - t1}
    if cfg.space == "embedding":
        timings["embedding"] = t1 - t0
    return buckets, timings


def find_tracks(event: Any, cfg: BucketingConfig) -> dict[str, Any]:
    """Buckets + track building on a read event: ``{"track_id", "hit_id", "timings", "buckets"}``."""
    buckets, timings = event_buckets(event, cfg)
    t0 = time.process_time()
    tid, idx = build_tracks(event.hits, buckets, cfg)
    timings["track_building"] = time.process_time() - t0
    hit_id = event.hits["hit_id"].to_numpy(np.int64)[idx]
    return {"track_id": tid, "hit_id": hit_id, "timings": timings, "buckets": buckets}


def bucketing(event_dir: str | Path, event_id: int, cfg: Any = None) -> dict[str, Any]:
    """The ``bucketing`` finder (``lhcml tracking reconstruct --method bucketing``): candidates of one event."""
    from lhcml.data.trackml import read_event

    c = load_bucketing_config(cfg)
    event = read_event(event_dir, event_id, parts=("hits", "cells") if c.space == "embedding" else ("hits",),
                       check=False)  # fmt: skip
    out = find_tracks(event, c)
    out.pop("buckets")
    return out


def _helix_through_origin(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float, float, float] | None:
    """Least-squares helix from the beam line through a track's hits: circle centre ``(a, b)``
    through ``(0, 0)`` (``x² + y² = 2 a x + 2 b y``) and the line ``z = z0 + s cot θ`` in the arc
    length ``s`` from the origin; ``(a, b, z0, cot θ)`` or ``None`` if the hits do not fix it."""
    design = np.column_stack([2 * x, 2 * y])
    sol, _, rank, _ = np.linalg.lstsq(design, x * x + y * y, rcond=None)
    if rank < 2:
        return None
    a, b = float(sol[0]), float(sol[1])
    radius = np.hypot(a, b)
    s = 2 * radius * np.arcsin(np.clip(np.hypot(x, y) / (2 * radius), 0, 1))
    if np.ptp(s) < 1e-3:
        return None
    cot, z0 = np.polyfit(s, z, 1)
    return a, b, float(z0), float(cot)


def pixel_seed_hits(
    hits: Any,
    track_id: np.ndarray,
    hit_id: np.ndarray,
    pixel_volumes: set[int],
    tol_xy_mm: float = 1.0,
    tol_z_mm: float = 10.0,
    seeds_per_track: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeds for the ACTS CKF from tracks: ``(seed_id, hit_id)`` with ``seed_id = track_id *
    seeds_per_track + k``, each seed a track's non-pixel hits plus three pixel hits on distinct
    layers chosen along the track's helix, hit ids ordered by radius.

    ACTS seeds a CKF from three pixel space points on distinct layers. The bucketing gives each hit
    to one track only, and a particle's inner pixel hits often end up on another candidate (a
    fragment or a fake): measured on ``bench_mu0`` event 3, 87 of the 154 bucketing tracks matched
    to reconstructable particles had lost pixel hits to another candidate and 93 had fewer than
    three pixel layers, so they could not seed the CKF. At high occupancy the track's own innermost
    pixel hits are often another particle's (``bench_mu200`` event 0: 169 of the 1 000 seeds of
    matched tracks started from a wrong innermost hit). So the track's least-squares helix from the
    beam line (:func:`_helix_through_origin`) is extrapolated over *all* pixel hits of the event
    (the track's own or not, shared or not); per pixel layer the hit closest to it (within the
    tolerances) is a candidate, and seed 0 takes the three layers with the smallest residuals;
    seed ``k > 0`` replaces the innermost hit of seed ``k − 1`` by the next-ranked layer's (a wrong
    hit on the crowded innermost layer is the common failure). A track with fewer than three such
    layers gives one seed of its own hits (ACTS then seeds it if it can). The CKF, its track
    selection, seed deduplication and ambiguity resolution decide between the seeds.
    """
    x, y, z = (hits[c].to_numpy(np.float64) for c in ("x", "y", "z"))
    ids = hits["hit_id"].to_numpy(np.int64)
    volume = hits["volume_id"].to_numpy(np.int64)
    layer = volume * 10_000 + hits["layer_id"].to_numpy(np.int64)
    r_all = np.hypot(x, y)
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    pix_volumes = np.array(sorted(pixel_volumes), np.int64)
    is_pix = np.isin(volume, pix_volumes)
    pix = np.flatnonzero(is_pix)
    phi_pix = np.arctan2(y[pix], x[pix])
    r_pix = float(r_all[pix].max()) if len(pix) else 0.0
    order = np.argsort(phi_pix, kind="stable")
    pix, phi_pix = pix[order], phi_pix[order]
    # the pixel hits twice around the circle so that a window in azimuth never wraps
    pix2, phi2 = np.concatenate([pix, pix]), np.concatenate([phi_pix, phi_pix + 2 * np.pi])
    track_id, hit_id = np.asarray(track_id, np.int64), np.asarray(hit_id, np.int64)
    srt = np.argsort(track_id, kind="stable")
    tids = np.unique(track_id)
    groups = np.split(row_of.loc[hit_id[srt]].to_numpy(), np.searchsorted(track_id[srt], tids)[1:]) if len(tids) else []
    out_t, out_h = [], []

    def emit(seed_id: int, rows: np.ndarray) -> None:
        rows = rows[np.argsort(r_all[rows], kind="stable")]
        out_t.append(np.full(len(rows), seed_id, np.int64))
        out_h.append(ids[rows])

    for tid, rows in zip(tids.tolist(), groups, strict=True):
        helix = _helix_through_origin(x[rows], y[rows], z[rows]) if len(rows) >= 3 else None
        ranked = np.zeros(0, np.int64)
        if helix is not None:
            a, b, z0, cot = helix
            radius = np.hypot(a, b)
            # the track leaves the origin along the tangent (b, -a) or (-b, a): the side of its hits
            tx, ty = (b, -a) if np.mean(x[rows] * b - y[rows] * a) >= 0 else (-b, a)
            phi0 = float(np.arctan2(ty, tx))
            # at the pixel radii r the helix has turned by asin(r / 2R) from its tangent (+ margin)
            half = np.arcsin(min(1.0, r_pix / (2 * radius))) + 0.05
            if phi0 - half < -np.pi:
                phi0 += 2 * np.pi
            lo, hi = np.searchsorted(phi2, [phi0 - half, phi0 + half])
            cand = np.union1d(pix2[lo:hi], rows[is_pix[rows]])
            d_xy = np.abs(np.hypot(x[cand] - a, y[cand] - b) - radius)
            s = 2 * radius * np.arcsin(np.clip(r_all[cand] / (2 * radius), 0, 1))
            d_z = np.abs(z[cand] - z0 - cot * s)
            ok = (x[cand] * tx + y[cand] * ty > 0) & (d_xy < tol_xy_mm) & (d_z < tol_z_mm)
            cand, res = cand[ok], (d_xy / tol_xy_mm + d_z / tol_z_mm)[ok]
            o = np.lexsort((res, layer[cand]))
            cand, res = cand[o], res[o]
            first = np.r_[True, layer[cand][1:] != layer[cand][:-1]] if len(cand) else np.zeros(0, bool)
            cand, res = cand[first], res[first]  # per layer the hit closest to the helix
            ranked = cand[np.argsort(res, kind="stable")]
        if len(ranked) < 3:
            emit(tid * seeds_per_track, rows)
            continue
        others = rows[~is_pix[rows]]
        chosen = list(ranked[:3])
        for k in range(min(seeds_per_track, len(ranked) - 2)):
            if k:
                chosen.remove(min(chosen, key=lambda h: r_all[h]))
                chosen.append(ranked[k + 2])
            emit(tid * seeds_per_track + k, np.concatenate([others, np.asarray(chosen, np.int64)]))
    if not out_t:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_t), np.concatenate(out_h)


def ckf_from_tracks(event_dir: str | Path, event_id: int, hits: Any, out: Mapping[str, Any],
                    tol_xy_mm: float = 1.0, tol_z_mm: float = 10.0, seeds_per_track: int = 2) -> dict[str, Any]:
    """Any finder's tracks ``out`` (``track_id``, ``hit_id``, ``timings``) handed as seeds to the
    ACTS CKF (:func:`lhcml.tasks.tracking.acts_reco.ckf_from_seeds`): each track's pixel hits are
    completed along its helix (:func:`pixel_seed_hits`) before ACTS takes three of them as the seed;
    the CKF runs with the shipped configuration except ``stay_on_seed: false``: a seed triplet taken
    from a finder's track may hold a hit of another particle (7 of 109 bucketing seeds on
    ``bench_mu0`` event 7), which ACTS's own triplets, made compatible by its seed finder, do not.
    Returns the CKF's tracks with ``out``'s timings plus ``seed_completion`` and ``ckf``."""
    from lhcml.tasks.tracking.acts_reco import ckf_from_seeds, load_reco_config, pixel_volumes

    t0 = time.process_time()
    reco = load_reco_config(None).model_copy(deep=True)
    reco.ckf.stay_on_seed = False
    seeds = pixel_seed_hits(hits, np.asarray(out["track_id"], np.int64), np.asarray(out["hit_id"], np.int64),
                            pixel_volumes(reco), tol_xy_mm, tol_z_mm, seeds_per_track)  # fmt: skip
    timings = dict(out.get("timings") or {})
    timings["seed_completion"] = time.process_time() - t0
    t0 = time.process_time()
    (track_id, hit_id), fitted = ckf_from_seeds(event_dir, event_id, seeds, reco)
    timings["ckf"] = time.process_time() - t0
    return {"track_id": np.asarray(track_id, np.int64), "hit_id": np.asarray(hit_id, np.int64),
            "timings": timings, "fitted": fitted}  # fmt: skip


def bucketing_ckf(event_dir: str | Path, event_id: int, cfg: Any = None) -> dict[str, Any]:
    """The ``bucketing+ckf`` finder: bucketing tracks handed as seeds to the ACTS CKF
    (:func:`ckf_from_tracks`, with the bucketing's helix tolerances and ``seeds_per_track``)."""
    from lhcml.data.trackml import read_event

    c = load_bucketing_config(cfg)
    event = read_event(event_dir, event_id, parts=("hits", "cells") if c.space == "embedding" else ("hits",),
                       check=False)  # fmt: skip
    out = find_tracks(event, c)
    return ckf_from_tracks(event_dir, event_id, event.hits, out, c.tol_xy_mm, c.tol_z_mm, c.seeds_per_track)
