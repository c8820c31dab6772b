"""Hit recovery after the CKF: each final track takes compatible hits that no track holds (issue 14).

A found particle still loses ~0.025 of the TrackML weight per ⟨μ⟩ = 200 event in hits that are not on its
track (docs/benchmarks/tracking.md, eighteenth version): a second hit on a layer where its track already has
one (module overlaps), hits after its last or before its first measurement, hits on other tracks, outliers,
holes. As ATLAS extends its silicon tracks into the TRT by a road search from the track (docs/references.md
§43), each track's helix is predicted onto every layer and unused hits close to it are added:

* the track's helix: a circle fitted to its measurements in x-y (algebraic fit, centred coordinates) and z
  linear in the turning angle from the circle's point closest to the beam line (a uniform solenoid field);
  tracks farther than ``max_track_spread`` from their own circle (hits of two particles) take nothing;
* the layers and their kind (barrel: a radius; endcap: a z) are read from the event's own hits;
* a free hit within ``window`` mm of the prediction on its layer and within ``preselect`` of the helix is a
  candidate; multiple scattering and energy loss bend a whole-track helix, so the residuals that decide come
  from a local helix through the track's ``local`` measurements nearest to the hit: it is added when its
  distance from that circle (``transverse``) and along it (barrel: in z; endcap: along the circle) are within
  the cuts of its volume group (:class:`HitCuts`); a hit compatible with several tracks goes to the closest
  (cut-normalised); a track takes at most one hit per module, none on a module where it has a measurement;
* optionally (``cap``) a track keeps its closest additions only, up to a fraction of its measurements, plus those
  well within the cuts (a guard against the fakes of wide cuts);
* only hits on no track's measurements are added: tracks never lose hits and no track is created.

Pure numpy / scipy on positions: :func:`extend_tracks` (tested on constructed helices) and
:func:`extend_event` (the event's positions from its ACTS measurements file).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from lhcml.config import StrictModel


class HitCuts(StrictModel):
    """The cuts of the hits of some volumes (mm)."""

    #: detector volumes these cuts apply to (ACTS volume ids)
    volumes: list[int] = Field(min_length=1)
    #: largest distance of the hit from the track's circle in x-y
    transverse: float = Field(gt=0.0)
    #: largest distance along the helix: in z for a barrel layer, along the circle for an endcap layer
    longitudinal: float = Field(gt=0.0)


class AddedCap(StrictModel):
    """A limit on the hits one track gains (``extend.cap``; a guard against fakes of a wide recovery)."""

    #: a track keeps its additions (closest first, cut-normalised) while they number fewer than this fraction of
    #: its measurements (rounded down) ...
    fraction: float = Field(gt=0.0)
    #: ... except those within this fraction of the cuts (cut-normalised residual <= exempt), which it always keeps
    exempt: float = Field(0.0, ge=0.0, le=1.0)


class ExtendConfig(StrictModel):
    """Hit recovery after the last pass (``extend`` of ``configs/tracking/ml_seeds*.yaml``)."""

    #: tracks with at least this many measurements are extended (the helix needs a lever arm)
    min_hits: int = Field(5, ge=3)
    #: candidate hits within this distance (mm, 3D) of the track's prediction on their layer
    window: float = Field(20.0, gt=0.0)
    #: per volume group the cuts; hits in other volumes are never added
    cuts: list[HitCuts] = Field(min_length=1)
    #: the local helix through this many of the track's measurements nearest to the hit
    local: int = Field(4, ge=3)
    #: (transverse, longitudinal) mm: the hits within these residuals of the track's global helix get a local one
    preselect: tuple[float, float] = (5.0, 20.0)
    #: tracks whose measurements lie farther than this (mm, in x-y) from their fitted circle take nothing
    #: (a track of hits of two particles); null: every track
    max_track_spread: float | None = Field(None, gt=0.0)
    #: null: no limit on the hits a track gains
    cap: AddedCap | None = None
    #: finder pass (1-based) -> the fewest hits (measurements + recovered hits) a track of that pass must hold
    #: after the recovery, else it is dropped (:func:`short_after_recovery`): a pass may then keep shorter CKF tracks
    #: (``min_measurements`` of its reco config) that the recovery completes; empty: no track is dropped
    min_hits_after: dict[int, int] = Field(default_factory=dict)
    #: with ``min_hits_after``: a track of such a pass with fewer CKF measurements than its minimum (a short track)
    #: leaves its hits to the later passes (they see them as free, so a short track never takes hits that a later
    #: pass would have used), and it is dropped before the selection if a later pass's track holds one of its hits
    defer_short: bool = False

    @model_validator(mode="after")
    def _defer_needs_minimum(self) -> ExtendConfig:
        if self.defer_short and not self.min_hits_after:
            raise ValueError("defer_short defers the tracks below a pass's min_hits_after: give min_hits_after too")
        return self

    @field_validator("min_hits_after")
    @classmethod
    def _min_hits_after(cls, v: dict[int, int]) -> dict[int, int]:
        bad = {k: n for k, n in v.items() if k < 1 or n < 1}
        if bad:
            raise ValueError(f"keys (passes) must be >= 1 and values (hits) >= 1, got {bad}")
        return v

    @model_validator(mode="after")
    def _volumes_once(self) -> ExtendConfig:
        seen = [v for c in self.cuts for v in c.volumes]
        if len(seen) != len(set(seen)):
            raise ValueError(f"extend.cuts: a volume is in two groups ({sorted(seen)})")
        return self


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles to [-pi, pi) (NaN stays NaN: a helix without a fit)."""
    with np.errstate(invalid="ignore"):
        return (a + np.pi) % (2.0 * np.pi) - np.pi


def fit_helices(track_id: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, n_tracks: int) -> dict[str, np.ndarray]:
    """Per track (ids 0..n_tracks-1) a helix through its points: circle centre ``cx, cy``, radius ``rho``,
    the angle ``phi0`` of its point closest to the beam line, the turning sense ``s`` (+-1), and
    ``z = z0 + k * alpha`` with ``alpha`` the turning angle from that point; ``ok`` where the fit exists."""
    t = np.asarray(track_id, np.int64)
    n = np.bincount(t, minlength=n_tracks).astype(float)
    safe = np.maximum(n, 1.0)
    mx, my = np.bincount(t, x, n_tracks) / safe, np.bincount(t, y, n_tracks) / safe
    u, v = x - mx[t], y - my[t]
    w = u * u + v * v

    def s(a: np.ndarray) -> np.ndarray:
        return np.bincount(t, a, n_tracks)

    a = np.empty((n_tracks, 3, 3))
    a[:, 0, 0], a[:, 0, 1], a[:, 0, 2] = s(u * u), s(u * v), s(u)
    a[:, 1, 0], a[:, 1, 1], a[:, 1, 2] = a[:, 0, 1], s(v * v), s(v)
    a[:, 2, 0], a[:, 2, 1], a[:, 2, 2] = a[:, 0, 2], a[:, 1, 2], n
    b = -np.stack([s(u * w), s(v * w), s(w)], axis=1)
    det = np.linalg.det(a)
    ok = (n >= 3) & (np.abs(det) > 1e-12 * np.maximum(1.0, np.abs(a[:, 0, 0] * a[:, 1, 1] * a[:, 2, 2])))
    sol = np.zeros((n_tracks, 3))
    if ok.any():
        sol[ok] = np.linalg.solve(a[ok], b[ok][:, :, None])[:, :, 0]
    cu, cv = -sol[:, 0] / 2.0, -sol[:, 1] / 2.0
    rho2 = cu * cu + cv * cv - sol[:, 2]
    ok &= rho2 > 0
    rho = np.sqrt(np.where(ok, rho2, 1.0))
    cx, cy = cu + mx, cv + my
    phi0 = np.arctan2(-cy, -cx)  # the circle's point closest to the origin is c - rho * c/|c|
    alpha = _wrap(np.arctan2(y - cy[t], x - cx[t]) - phi0[t])
    sense = np.where(s(alpha) >= 0, 1.0, -1.0)
    al = sense[t] * alpha
    # z = z0 + k alpha, least squares per track
    sa, sz, saa, saz = s(al), s(z), s(al * al), s(al * z)
    den = n * saa - sa * sa
    ok &= np.abs(den) > 1e-12
    k = np.where(ok, (n * saz - sa * sz) / np.where(ok, den, 1.0), 0.0)
    z0 = (sz - k * sa) / safe
    ok &= np.abs(k) > 1e-9
    return {"cx": cx, "cy": cy, "rho": rho, "phi0": phi0, "s": sense, "z0": z0, "k": k, "ok": ok}


def layer_table(volume: np.ndarray, layer: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """The event's layers (``key`` = volume * 10000 + layer) from its hits: ``barrel`` where the hits spread
    more in z than in r; the layer's radius (barrel) or z (endcap), and its extent in z and r."""
    key = np.asarray(volume, np.int64) * 10000 + np.asarray(layer, np.int64)
    keys, inv = np.unique(key, return_inverse=True)
    r = np.hypot(x, y)
    nk = len(keys)

    def ext(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.full(nk, np.inf), np.full(nk, -np.inf)
        np.minimum.at(lo, inv, a)
        np.maximum.at(hi, inv, a)
        return lo, hi

    zlo, zhi = ext(z)
    rlo, rhi = ext(r)
    barrel = (zhi - zlo) > (rhi - rlo)
    cnt = np.bincount(inv, minlength=nk)
    pos = np.where(barrel, np.bincount(inv, r, nk), np.bincount(inv, z, nk)) / np.maximum(cnt, 1)
    return {"key": keys, "barrel": barrel, "pos": pos, "zlo": zlo, "zhi": zhi, "rlo": rlo, "rhi": rhi}


def candidate_pairs(track_id: Sequence[int], hit_id: Sequence[int], x: np.ndarray, y: np.ndarray, z: np.ndarray,
                    volume: np.ndarray, layer: np.ndarray, cfg: ExtendConfig) -> dict[str, np.ndarray]:  # fmt: skip
    """Every (track, free hit) pair within ``cfg.window`` of the track's prediction on the hit's layer, with
    its residuals: ``track`` (the track id), ``hit`` (hit id), ``transverse``, ``longitudinal`` (mm) and
    ``group`` (index into ``cfg.cuts``). Arguments as :func:`extend_tracks`."""
    from scipy.spatial import cKDTree

    t = np.asarray(track_id, np.int64)
    h = np.asarray(hit_id, np.int64)
    x, y, z = (np.asarray(a, np.float64) for a in (x, y, z))
    vol = np.asarray(volume, np.int64)
    lay = np.asarray(layer, np.int64)
    empty = {n: np.zeros(0, np.int64) for n in ("track", "hit", "group")} | {
        n: np.zeros(0) for n in ("transverse", "longitudinal", "global_transverse", "global_longitudinal")}  # fmt: skip
    if not len(t) or not len(x):
        return empty
    ids, tt = np.unique(t, return_inverse=True)  # dense track rows
    nt = len(ids)
    i = h - 1
    fit = fit_helices(tt, x[i], y[i], z[i], nt)
    fit["ok"] &= np.bincount(tt, minlength=nt) >= cfg.min_hits
    group = np.full(int(max(vol.max(), max(v for c in cfg.cuts for v in c.volumes))) + 1, -1, np.int64)
    for g, c in enumerate(cfg.cuts):
        group[c.volumes] = g
    free = np.ones(len(x), bool)
    free[i] = False
    free &= group[vol] >= 0
    layers = layer_table(vol, lay, x, y, z)
    lkey = vol * 10000 + lay
    if cfg.max_track_spread is not None:  # a track of two particles fits one circle badly
        own_b = layers["barrel"][np.searchsorted(layers["key"], lkey[i])]
        own_t, _ = _residuals({n: v[tt] for n, v in fit.items()}, x[i], y[i], z[i], own_b)
        spread = np.zeros(nt)
        np.maximum.at(spread, tt, np.nan_to_num(own_t, nan=np.inf))
        fit["ok"] &= spread <= cfg.max_track_spread
    good = np.flatnonzero(fit["ok"])
    if not len(good) or not free.any():
        return empty
    cx, cy, rho, phi0, sense, z0, k = (fit[n][good] for n in ("cx", "cy", "rho", "phi0", "s", "z0", "k"))
    d = np.hypot(cx, cy)
    pair_t, pair_h = [], []
    free_idx = np.flatnonzero(free)
    free_key = lkey[free_idx]
    for li, key in enumerate(layers["key"]):
        cand = free_idx[free_key == key]
        if not len(cand):
            continue
        pos = layers["pos"][li]
        if layers["barrel"][li]:
            with np.errstate(divide="ignore", invalid="ignore"):
                c = (d * d + rho * rho - pos * pos) / (2.0 * d * rho)
            m = np.abs(c) <= 1.0
            alpha = np.arccos(np.clip(c, -1.0, 1.0))
            zp = z0 + k * alpha
            m &= (zp >= layers["zlo"][li] - cfg.window) & (zp <= layers["zhi"][li] + cfg.window)
        else:
            alpha = (pos - z0) / k
            m = (alpha >= 0.0) & (alpha <= np.pi)
            zp = np.full(len(alpha), pos)
        phi = phi0 + sense * alpha
        xp, yp = cx + rho * np.cos(phi), cy + rho * np.sin(phi)
        if not layers["barrel"][li]:
            rp = np.hypot(xp, yp)
            m &= (rp >= layers["rlo"][li] - cfg.window) & (rp <= layers["rhi"][li] + cfg.window)
        rows = np.flatnonzero(m)
        if not len(rows):
            continue
        tree = cKDTree(np.column_stack([x[cand], y[cand], z[cand]]))
        found = tree.query_ball_point(np.column_stack([xp[rows], yp[rows], zp[rows]]), r=cfg.window)
        lens = np.fromiter(map(len, found), np.int64, count=len(found))
        if lens.sum():
            pair_t.append(np.repeat(rows, lens))
            pair_h.append(cand[np.fromiter(itertools.chain.from_iterable(found), np.int64, count=int(lens.sum()))])
    if not pair_t:
        return empty
    pt_, ph = np.concatenate(pair_t), np.concatenate(pair_h)
    barrel = layers["barrel"][np.searchsorted(layers["key"], lkey[ph])]
    trans, longi = _residuals({n: fit[n][good][pt_] for n in ("cx", "cy", "rho", "phi0", "s", "z0", "k")},
                              x[ph], y[ph], z[ph], barrel)  # fmt: skip
    # the global helix preselects; the residuals that count are those of a local helix through the track's
    # cfg.local measurements nearest to the hit (multiple scattering and energy loss bend the global one)
    pre = (trans <= cfg.preselect[0]) & (longi <= cfg.preselect[1])
    pt_, ph, barrel = pt_[pre], ph[pre], barrel[pre]
    rows = good[pt_]
    # the tracks' measurements padded per dense row
    order = np.argsort(tt, kind="stable")
    counts = np.bincount(tt, minlength=nt)
    start = np.r_[0, np.cumsum(counts)[:-1]]
    width = int(counts.max())
    pad = np.full((nt, width), -1, np.int64)
    pad[tt[order], np.arange(len(tt)) - start[tt[order]]] = i[order]
    mine = pad[rows]  # (pairs, width) measurement indices, -1 padding
    valid = mine >= 0
    mi = np.where(valid, mine, 0)
    dist = (x[mi] - x[ph, None]) ** 2 + (y[mi] - y[ph, None]) ** 2 + (z[mi] - z[ph, None]) ** 2
    dist[~valid] = np.inf
    kk = min(cfg.local, width)
    near = np.take_along_axis(mi, np.argsort(dist, axis=1)[:, :kk], axis=1)
    npair = len(ph)
    loc = fit_helices(np.repeat(np.arange(npair), kk), x[near].ravel(), y[near].ravel(), z[near].ravel(), npair)
    lt, ll = _residuals(loc, x[ph], y[ph], z[ph], barrel)
    ok = loc["ok"]
    return {"track": ids[rows[ok]], "hit": ph[ok] + 1, "transverse": lt[ok], "longitudinal": ll[ok],
            "global_transverse": trans[pre][ok], "global_longitudinal": longi[pre][ok],
            "group": group[vol[ph[ok]]]}  # fmt: skip


def _residuals(f: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, z: np.ndarray,
               barrel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Distance of points from helices ``f`` (one per point): from the circle in x-y, and along the helix
    (barrel: in z at the point's turning angle; endcap: along the circle at the point's z)."""
    dx, dy = x - f["cx"], y - f["cy"]
    trans = np.abs(np.hypot(dx, dy) - f["rho"])
    a_h = f["s"] * _wrap(np.arctan2(dy, dx) - f["phi0"])
    with np.errstate(divide="ignore", invalid="ignore"):
        a_z = (z - f["z0"]) / f["k"]
    longi = np.where(barrel, np.abs(z - (f["z0"] + f["k"] * a_h)), f["rho"] * np.abs(_wrap(a_h - a_z)))
    return trans, np.nan_to_num(longi, nan=np.inf)


def extend_tracks(track_id: Sequence[int], hit_id: Sequence[int], x: np.ndarray, y: np.ndarray, z: np.ndarray,
                  volume: np.ndarray, layer: np.ndarray, module: np.ndarray, cfg: ExtendConfig,
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:  # fmt: skip
    """Tracks ``(track_id, hit_id)`` with the compatible free hits added (module docstring).

    ``x, y, z, volume, layer, module`` are indexed by ``hit_id - 1`` (the event's measurements in order;
    ``module``: the module within its layer). Returns the new ``(track_id, hit_id)`` (the old rows first,
    then the added hits) and ``{"added": n, "candidates": n}`` (pairs within the window).
    """
    t = np.asarray(track_id, np.int64)
    h = np.asarray(hit_id, np.int64)
    p = candidate_pairs(t, h, x, y, z, volume, layer, cfg)
    info = {"added": 0, "candidates": len(p["hit"])}
    if not len(p["hit"]):
        return t, h, info
    tcut = np.array([c.transverse for c in cfg.cuts])
    lcut = np.array([c.longitudinal for c in cfg.cuts])
    g = p["group"]
    norm = np.maximum(p["transverse"] / tcut[g], p["longitudinal"] / lcut[g])
    keep = norm <= 1.0
    tr, ph, norm = p["track"][keep], p["hit"][keep], norm[keep]
    # a module (volume, layer, module) where the track already has a measurement takes nothing
    mkey = (np.asarray(volume, np.int64) * 10000 + np.asarray(layer, np.int64)) * (1 << 20) + np.asarray(module, np.int64)
    span = int(mkey.max()) + 1
    keep = ~np.isin(tr * span + mkey[ph - 1], t * span + mkey[h - 1])
    tr, ph, norm = tr[keep], ph[keep], norm[keep]
    if not len(ph):
        return t, h, info
    # each hit to its closest track (cut-normalised), then one hit per (track, module)
    order = np.lexsort((tr, norm, ph))
    tr, ph, norm = tr[order], ph[order], norm[order]
    first = np.r_[True, ph[1:] != ph[:-1]]
    tr, ph, norm = tr[first], ph[first], norm[first]
    order = np.lexsort((ph, norm, mkey[ph - 1], tr))
    tr, ph, norm, mk = tr[order], ph[order], norm[order], mkey[ph[order] - 1]
    first = np.r_[True, (tr[1:] != tr[:-1]) | (mk[1:] != mk[:-1])]
    tr, ph, norm = tr[first], ph[first], norm[first]
    if cfg.cap is not None:  # a track's additions in order of closeness; those past its quota beyond exempt go
        ids, nmeas = np.unique(t, return_counts=True)
        by = np.lexsort((norm, tr))
        new_track = np.r_[True, tr[by][1:] != tr[by][:-1]]
        start = np.maximum.accumulate(np.where(new_track, np.arange(len(by)), 0))
        rank = np.empty(len(by), np.int64)
        rank[by] = np.arange(len(by)) - start
        quota = np.floor(cfg.cap.fraction * nmeas[np.searchsorted(ids, tr)])
        keep = (norm <= cfg.cap.exempt) | (rank < quota)
        tr, ph = tr[keep], ph[keep]
    info["added"] = len(ph)
    return np.concatenate([t, tr]), np.concatenate([h, ph]), info


def short_after_recovery(track_id: np.ndarray, passes: np.ndarray, min_hits_after: dict[int, int]) -> np.ndarray:
    """The ids of the tracks that hold fewer hits than ``min_hits_after[pass]`` (``extend.min_hits_after``).

    ``track_id``: one row per hit of the tracks after the recovery (measurements and added hits);
    ``passes``: the 1-based finder pass of each row's track. Tracks of passes not in ``min_hits_after`` are never
    short. Returns the short tracks' ids, sorted.
    """
    t = np.asarray(track_id, np.int64)
    p = np.asarray(passes, np.int64)
    if len(t) != len(p):
        raise ValueError(f"{len(p)} passes for {len(t)} track rows: give each row its track's pass")
    if not min_hits_after or not len(t):
        return np.zeros(0, np.int64)
    ids, first, counts = np.unique(t, return_index=True, return_counts=True)
    need = np.zeros(len(ids), np.int64)
    for k, n in min_hits_after.items():
        need[p[first] == k] = n
    return ids[counts < need]


def deferred_overlaps(track_id: np.ndarray, hit_id: np.ndarray, passes: np.ndarray,
                      min_hits_after: dict[int, int]) -> np.ndarray:  # fmt: skip
    """The ids of the short tracks (``extend.defer_short``: of a pass in ``min_hits_after``, fewer hits than its
    minimum) that share a hit with a track of a later pass; arguments as :func:`short_after_recovery` (the tracks
    before the recovery: their measurements)."""
    t, h, p = (np.asarray(a, np.int64) for a in (track_id, hit_id, passes))
    short = np.isin(t, short_after_recovery(t, p, min_hits_after))
    if not short.any():
        return np.zeros(0, np.int64)
    gone = []
    for k in np.unique(p[short]):
        later = np.unique(h[p > k])
        mine = short & (p == k)
        gone.append(np.unique(t[mine][np.isin(h[mine], later)]))
    return np.unique(np.concatenate(gone))


def geometry_parts(geometry_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ACTS ``GeometryIdentifier`` -> volume, layer and sensitive (module) ids."""
    g = np.asarray(geometry_id, np.uint64)
    return ((g >> np.uint64(56)).astype(np.int64), ((g >> np.uint64(36)) & np.uint64(0xFFF)).astype(np.int64),
            ((g >> np.uint64(8)) & np.uint64(0xFFFFF)).astype(np.int64))  # fmt: skip


def extend_event(event_dir: str | Path, event_id: int, track_id: np.ndarray, hit_id: np.ndarray, cfg: ExtendConfig,
                 positions: Any = None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:  # fmt: skip
    """:func:`extend_tracks` on an event's tracks, the hit positions from its ACTS measurements file
    (or ``positions``, :func:`lhcml.tasks.tracking.acts_chain.read_measurement_positions` of the event)."""
    from lhcml.tasks.tracking.acts_chain import acts_files, read_measurement_positions

    meas = read_measurement_positions(acts_files(event_dir), int(event_id)) if positions is None else positions
    vol, lay, mod = geometry_parts(meas["geometry_id"].to_numpy(np.uint64))
    return extend_tracks(track_id, hit_id, meas["x"].to_numpy(float), meas["y"].to_numpy(float),
                         meas["z"].to_numpy(float), vol, lay, mod, cfg)  # fmt: skip
