"""Track-finding metrics: the TrackML score and the ACTS-style efficiency, fake and duplicate rates.

Pure functions on the per-event truth tables of the TrackML layout (``docs/references.md §21``)
and on *track candidates*: a pair of int64 arrays ``(track_id, hit_id)``, one row per (track, hit),
where a hit may belong to several tracks (the contract every lhcml track finder returns).

**TrackML score** (:func:`trackml_score`), as the challenge defined it: every hit is assigned to
exactly one track (:func:`to_submission` makes such an assignment from candidates); a track is
*good* when more than half of its hits come from one particle and it holds more than half of that
particle's hits (double majority, strict ``>`` on both fractions as the challenge's reference
implementation); the score is the summed truth ``weight`` of the good tracks' hits of their
majority particle over the event's total weight. Noise hits (``particle_id == 0``) and hits of
particles with fewer than 4 hits have weight 0 in the truth file, so they never count.

**ACTS-style rates** (:func:`match_tracks`, :func:`performance`): a candidate is *matched* to its
majority particle when that particle's hits are at least :data:`MATCHING_FRACTION` of the
candidate's hits (ACTS ``TrackTruthMatcher``, ``matchingRatio = 0.5``, no double matching), else it
is *fake*; of several candidates matched to one particle the best (most hits of the particle, then
higher purity, then lower track id — ACTS uses the measurement count and χ², which candidates do
not have) is the match and the others are *duplicates*. Efficiency = reconstructable particles
with a matched candidate / reconstructable particles; fake rate = fake candidates / candidates;
duplicate rate = duplicate candidates / candidates (ACTS's ``eff_particles``,
``fakeratio_tracks``, ``duplicateratio_tracks``). Candidates with fewer than
:data:`MIN_TRACK_HITS` hits are not tracks and are left out of the rates (not of the score).
Errors are binomial (:func:`lhcml.metrics.working_points.efficiency_error`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lhcml.errors import SchemaError
from lhcml.metrics.working_points import efficiency_error

#: minimum fraction of a candidate's hits from its majority particle for a match (ACTS
#: ``TrackTruthMatcher.matchingRatio`` default; docs/references.md §21)
MATCHING_FRACTION = 0.5
#: reconstructable particles, ACTS's example selection (docs/references.md §21): pT > 0.5 GeV (the
#: benchmark also reports pT > 1 GeV), |eta| < 3.0, >= 9 hits (measurements), charged
MIN_PT_GEV = 0.5
MAX_ABS_ETA = 3.0
MIN_PARTICLE_HITS = 9
#: candidates with fewer hits are not tracks for the rates (our choice: a 1-2 hit fragment would
#: otherwise count as a "matched" duplicate; the ACTS CKF itself keeps only tracks with >= 7
#: measurements). The TrackML score uses every candidate, as the challenge did.
MIN_TRACK_HITS = 5
#: magnetic field used for the hit-based pT estimate of candidates [T] (the GenericDetector's 2 T
#: solenoid of issue 14); pT [GeV] = 0.299792458 * B [T] * R [m]
BFIELD_T = 2.0
_C_GEV_PER_T_MM = 0.299792458e-3

TRUTH_COLUMNS = ("hit_id", "particle_id", "weight")
PARTICLE_COLUMNS = ("particle_id", "px", "py", "pz", "q")
HIT_COLUMNS = ("hit_id", "x", "y", "z")

#: default bins of the rate-vs-variable plots (our choice: log-like pT bins, eta in steps of 0.5)
PT_BINS = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 100.0)
ETA_BINS = tuple(np.round(np.arange(-3.0, 3.01, 0.5), 2))


# ----------------------------------------------------------------------------------- input checks
def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(f"{what} must be a pandas DataFrame with columns {list(columns)}, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{what} lacks the column(s) {missing} (has {list(df.columns)}); it needs {list(columns)} as in "
            "the TrackML layout: read events with lhcml.data.trackml.read_event or remake them with "
            "`lhcml tracking simulate`"
        )


def check_truth(truth: pd.DataFrame) -> pd.DataFrame:
    """Check a truth table (``hit_id``, ``particle_id``, ``weight``) and return it.

    Raises
    ------
    SchemaError
        A column is missing, a hit id appears twice, a weight is negative or not finite.
    """
    _require(truth, TRUTH_COLUMNS, "the truth table")
    hid = truth["hit_id"].to_numpy()
    if len(np.unique(hid)) != len(hid):
        raise SchemaError("the truth table lists a hit_id more than once: each hit must have one truth row")
    w = truth["weight"].to_numpy(dtype=float)
    if len(w) and not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise SchemaError("the truth table has negative or non-finite hit weights: recompute them (lhcml.data.trackml.hit_weights)")
    return truth


def check_candidates(track_id: Any, hit_id: Any, known_hit_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate track candidates and return them as int64 arrays without repeated (track, hit) rows.

    Parameters
    ----------
    track_id, hit_id : array-like
        One row per (track, hit) (a hit may be in several tracks).
    known_hit_ids : np.ndarray | None, optional
        The event's hit ids; candidates naming another hit are refused.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``(track_id, hit_id)``, int64, sorted by track then hit.

    Raises
    ------
    SchemaError
        Arrays of different lengths, not 1-D, not integers, or hit ids unknown to the event.
    """
    t = np.asarray(track_id)
    h = np.asarray(hit_id)
    if t.ndim != 1 or h.ndim != 1 or len(t) != len(h):
        raise SchemaError(
            f"track candidates must be two 1-D arrays of equal length (track_id, hit_id), got shapes {t.shape} and {h.shape}"
        )
    for name, a in (("track_id", t), ("hit_id", h)):
        if len(a) and not np.issubdtype(a.dtype, np.integer):
            if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                continue
            raise SchemaError(f"candidate {name} must be integers, got dtype {a.dtype}")
    t = t.astype(np.int64)
    h = h.astype(np.int64)
    if known_hit_ids is not None and len(h):
        unknown = np.setdiff1d(h, np.asarray(known_hit_ids, dtype=np.int64))
        if len(unknown):
            raise SchemaError(
                f"{len(unknown)} candidate hit id(s) are not hits of the event (e.g. {unknown[:5].tolist()}): the "
                "candidates were made from another event or another hit numbering (TrackML hit ids start at 1)"
            )
    if not len(t):
        return t, h
    pairs = np.unique(np.stack([t, h], axis=1), axis=0)  # sorted by track, then hit; repeats dropped
    return pairs[:, 0].copy(), pairs[:, 1].copy()


# ----------------------------------------------------------------------------------- TrackML score
def to_submission(track_id: Any, hit_id: Any, all_hit_ids: Any) -> pd.DataFrame:
    """One track per hit (a TrackML submission) from candidates that may share hits.

    The rule (our choice, documented): a hit in several candidates goes to the candidate with the
    most hits (ties: the lower track id), the usual resolution in favour of the longer track; a
    hit in no candidate becomes a one-hit track of its own, with a new id. One-hit tracks never
    score (a particle with weight > 0 has at least 4 hits, so one hit is never more than half of
    it), while collecting all unassigned hits into one "track" could match a short particle by
    accident.

    Parameters
    ----------
    track_id, hit_id : array-like
        Candidates, one row per (track, hit).
    all_hit_ids : array-like
        Every hit id of the event.

    Returns
    -------
    pandas.DataFrame
        Columns ``hit_id``, ``track_id`` (int64), one row per hit of the event.
    """
    all_h = np.asarray(all_hit_ids, dtype=np.int64)
    if len(np.unique(all_h)) != len(all_h):
        raise SchemaError("the event's hit ids are not unique")
    t, h = check_candidates(track_id, hit_id, all_h)
    if len(t):
        _, inv, counts = np.unique(t, return_inverse=True, return_counts=True)
        size = counts[inv]
        order = np.lexsort((t, -size, h))  # by hit, then longest track, then lowest id
        hs, ts = h[order], t[order]
        first = np.r_[True, hs[1:] != hs[:-1]]
        assigned_h, assigned_t = hs[first], ts[first]
        next_id = int(t.max()) + 1
    else:
        assigned_h = assigned_t = np.zeros(0, np.int64)
        next_id = 0
    rest = np.setdiff1d(all_h, assigned_h)
    out_h = np.concatenate([assigned_h, rest])
    out_t = np.concatenate([assigned_t, next_id + np.arange(len(rest), dtype=np.int64)])
    order = np.argsort(out_h, kind="stable")
    return pd.DataFrame({"hit_id": out_h[order], "track_id": out_t[order]})


def trackml_score(truth: pd.DataFrame, submission: pd.DataFrame, return_pairs: bool = False) -> float | pd.DataFrame:
    """The TrackML score of one event (double majority, summed weights; see the module docstring).

    :func:`good_pairs` gives the good (track, particle) pairs behind it.

    Parameters
    ----------
    truth : pandas.DataFrame
        ``hit_id``, ``particle_id``, ``weight`` (noise: ``particle_id == 0``, weight 0).
    submission : pandas.DataFrame
        ``hit_id``, ``track_id``: every hit of the event exactly once.

    Returns
    -------
    float
        The score, in [0, 1].

    Raises
    ------
    SchemaError
        Missing columns, hits missing from or repeated in the submission, unknown hit ids, an event
        with zero total weight.
    """
    check_truth(truth)
    _require(submission, ("hit_id", "track_id"), "the submission")
    sub_h = submission["hit_id"].to_numpy(dtype=np.int64)
    if len(np.unique(sub_h)) != len(sub_h):
        raise SchemaError("the submission assigns a hit to more than one track: use to_submission() on candidates")
    truth_h = truth["hit_id"].to_numpy(dtype=np.int64)
    unknown = np.setdiff1d(sub_h, truth_h)
    if len(unknown):
        raise SchemaError(f"{len(unknown)} submitted hit id(s) are not in the truth table (e.g. {unknown[:5].tolist()})")
    if len(sub_h) != len(truth_h):
        raise SchemaError(
            f"the submission has {len(sub_h)} of the event's {len(truth_h)} hits: every hit must be assigned to a "
            "track (to_submission() makes one-hit tracks of unassigned hits)"
        )
    total = float(truth["weight"].to_numpy(dtype=np.float64).sum())  # float64: readers give float32
    if total <= 0:
        raise SchemaError("the event's hit weights sum to 0: the truth table has no weights (compute them with lhcml.data.trackml.hit_weights)")
    ev = truth[list(TRUTH_COLUMNS)].astype({"weight": np.float64})
    ev = ev.merge(submission[["hit_id", "track_id"]], on="hit_id", how="inner", validate="one_to_one")
    particle_n = ev.groupby("particle_id")["hit_id"].transform("size")
    track_n = ev.groupby("track_id")["hit_id"].transform("size")
    ev = ev.assign(particle_n=particle_n, track_n=track_n)
    pairs = ev.groupby(["track_id", "particle_id"], sort=False).agg(
        n=("hit_id", "size"), w=("weight", "sum"), track_n=("track_n", "first"), particle_n=("particle_n", "first")
    )
    good = (2 * pairs["n"] > pairs["track_n"]) & (2 * pairs["n"] > pairs["particle_n"])
    if return_pairs:
        return pairs.loc[good, ["n", "w"]].reset_index().assign(w=lambda d: d["w"] / total)
    return float(pairs.loc[good, "w"].sum() / total)


def good_pairs(truth: pd.DataFrame, submission: pd.DataFrame) -> pd.DataFrame:
    """The good (double-majority) pairs of :func:`trackml_score`: ``track_id``, ``particle_id``,
    ``n`` (hits of the particle in the track) and ``w`` (their weight over the event's total, the
    pair's share of the score). A particle is in at most one good pair."""
    return trackml_score(truth, submission, return_pairs=True)  # type: ignore[return-value]


def score_candidates(truth: pd.DataFrame, track_id: Any, hit_id: Any) -> float:
    """The TrackML score of candidates: :func:`trackml_score` of :func:`to_submission`."""
    check_truth(truth)
    return trackml_score(truth, to_submission(track_id, hit_id, truth["hit_id"].to_numpy()))


# ----------------------------------------------------------------------------------- ACTS-style matching
def _particle_of_hits(truth: pd.DataFrame, hit_id: np.ndarray) -> np.ndarray:
    index = pd.Index(truth["hit_id"].to_numpy(dtype=np.int64))
    pos = index.get_indexer(hit_id)
    if np.any(pos < 0):
        bad = hit_id[pos < 0]
        raise SchemaError(f"{len(bad)} candidate hit id(s) are not in the truth table (e.g. {bad[:5].tolist()})")
    return truth["particle_id"].to_numpy(dtype=np.int64)[pos]


def match_tracks(
    truth: pd.DataFrame, track_id: Any, hit_id: Any, matching_fraction: float = MATCHING_FRACTION
) -> pd.DataFrame:
    """Classify each candidate as matched, duplicate or fake (ACTS ``TrackTruthMatcher`` rules).

    Parameters
    ----------
    truth : pandas.DataFrame
        ``hit_id``, ``particle_id`` (0: noise) and ``weight``.
    track_id, hit_id : array-like
        Candidates.
    matching_fraction : float, optional
        Minimum fraction of the candidate's hits from its majority particle.

    Returns
    -------
    pandas.DataFrame
        One row per candidate: ``track_id``, ``nhits``, ``major_particle_id`` (0 when the candidate
        holds only noise), ``major_nhits``, ``purity`` (= major_nhits / nhits), ``matched``
        (the particle's best candidate), ``duplicate``, ``fake``.
    """
    check_truth(truth)
    if not 0.0 < matching_fraction <= 1.0:
        raise SchemaError(f"matching_fraction must be in (0, 1], got {matching_fraction}")
    t, h = check_candidates(track_id, hit_id, truth["hit_id"].to_numpy())
    pid = _particle_of_hits(truth, h)
    rows = pd.DataFrame({"track_id": t, "particle_id": pid})
    tracks = rows.groupby("track_id").size().to_frame("nhits")
    real = rows[rows["particle_id"] != 0]
    counts = real.groupby(["track_id", "particle_id"]).size().reset_index(name="n")
    counts = counts.sort_values(["track_id", "n", "particle_id"], ascending=[True, False, True])
    major = counts.drop_duplicates("track_id").set_index("track_id")
    tracks["major_particle_id"] = major["particle_id"].reindex(tracks.index).fillna(0).astype(np.int64)
    tracks["major_nhits"] = major["n"].reindex(tracks.index).fillna(0).astype(np.int64)
    tracks = tracks.reset_index()
    tracks["purity"] = tracks["major_nhits"] / tracks["nhits"]
    ok = (tracks["major_nhits"] > 0) & (tracks["purity"] >= matching_fraction - 1e-12)
    tracks["fake"] = ~ok
    cand = tracks[ok].sort_values(["major_particle_id", "major_nhits", "purity", "track_id"],
                                  ascending=[True, False, False, True])  # fmt: skip
    best = cand.drop_duplicates("major_particle_id").index
    tracks["matched"] = False
    tracks.loc[best, "matched"] = True
    tracks["duplicate"] = ok & ~tracks["matched"]
    return tracks


def particle_table(truth: pd.DataFrame, particles: pd.DataFrame) -> pd.DataFrame:
    """Per-particle truth quantities for the efficiency: pT, eta, phi, charge and hits in the event.

    ``nhits`` counts the particle's rows in the truth table (the hits it actually left in this
    event's digitised data). Momenta in GeV (TrackML layout). Particles without hits are kept
    (``nhits = 0``).
    """
    check_truth(truth)
    _require(particles, PARTICLE_COLUMNS, "the particles table")
    p = particles[list(PARTICLE_COLUMNS)].copy()
    p = p[p["particle_id"] != 0]
    px, py, pz = (p[c].to_numpy(dtype=float) for c in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, np.sign(pz) * np.inf))
    nh = truth.loc[truth["particle_id"] != 0, "particle_id"].value_counts()
    p["pt"] = pt
    p["eta"] = eta
    p["phi"] = np.arctan2(py, px)
    p["nhits"] = nh.reindex(p["particle_id"].to_numpy()).fillna(0).astype(np.int64).to_numpy()
    return p.reset_index(drop=True)


def reconstructable(
    ptable: pd.DataFrame, min_pt: float = MIN_PT_GEV, max_abs_eta: float = MAX_ABS_ETA, min_hits: int = MIN_PARTICLE_HITS
) -> np.ndarray:
    """Mask of the reconstructable particles: charged, pT > ``min_pt`` GeV, |eta| < ``max_abs_eta``,
    at least ``min_hits`` hits (ACTS's example selection, docs/references.md §21)."""
    return (
        (ptable["q"].to_numpy() != 0)
        & (ptable["pt"].to_numpy() > min_pt)
        & (np.abs(ptable["eta"].to_numpy()) < max_abs_eta)
        & (ptable["nhits"].to_numpy() >= min_hits)
    )


def track_kinematics(
    track_id: np.ndarray, hit_id: np.ndarray, hits: pd.DataFrame, bfield: float = BFIELD_T
) -> pd.DataFrame:
    """pT and eta of each candidate estimated from its hits (for fake/duplicate rates vs pT, eta).

    pT from the circle through the innermost, middle and outermost hit in the transverse plane
    (pT = 0.3 B R, the seed-parameter estimate), eta from a straight-line fit of z against r.
    Candidates with fewer than 3 hits (or collinear hits) get pT = inf.

    Returns
    -------
    pandas.DataFrame
        ``track_id``, ``pt`` [GeV], ``eta``.
    """
    _require(hits, HIT_COLUMNS, "the hits table")
    t, h = check_candidates(track_id, hit_id, hits["hit_id"].to_numpy())
    index = pd.Index(hits["hit_id"].to_numpy(dtype=np.int64))
    pos = index.get_indexer(h)
    x, y, z = (hits[c].to_numpy(dtype=float)[pos] for c in ("x", "y", "z"))
    r = np.hypot(x, y)
    order = np.lexsort((r, t))
    t, x, y, z, r = t[order], x[order], y[order], z[order], r[order]
    ids, start, n = np.unique(t, return_index=True, return_counts=True)
    last = start + n - 1
    mid = start + (n - 1) // 2
    # straight line z = z0 + r cot(theta), least squares per track
    df = pd.DataFrame({"t": t, "r": r, "z": z, "rr": r * r, "rz": r * z})
    s = df.groupby("t", sort=True)[["r", "z", "rr", "rz"]].sum().to_numpy()
    denom = n * s[:, 2] - s[:, 0] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        cot = np.where(np.abs(denom) > 1e-9, (n * s[:, 3] - s[:, 0] * s[:, 1]) / denom, z[last] / np.maximum(r[last], 1e-9))
        eta = np.arcsinh(cot)
        ax, ay, bx, by, cx, cy = x[start], y[start], x[mid], y[mid], x[last], y[last]
        ab = np.hypot(bx - ax, by - ay)
        bc = np.hypot(cx - bx, cy - by)
        ca = np.hypot(ax - cx, ay - cy)
        area2 = np.abs((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))  # twice the triangle area
        radius = np.where((n >= 3) & (area2 > 1e-9), ab * bc * ca / (2 * area2), np.inf)
    pt = _C_GEV_PER_T_MM * bfield * radius
    return pd.DataFrame({"track_id": ids, "pt": pt, "eta": eta})


# ----------------------------------------------------------------------------------- per event and summary
@dataclass
class EventPerformance:
    """Tracking performance of one event: per-particle and per-candidate tables and the score."""

    event_id: int
    score: float
    particles: pd.DataFrame  # particle_table + reconstructable, found, n_matched_tracks
    tracks: pd.DataFrame  # match_tracks + pt, eta (hit estimate), counted (>= min_track_hits)
    timings: dict[str, float] = field(default_factory=dict)


def evaluate_event(
    event_id: int,
    truth: pd.DataFrame,
    particles: pd.DataFrame,
    hits: pd.DataFrame,
    track_id: Any,
    hit_id: Any,
    *,
    min_pt: float = MIN_PT_GEV,
    max_abs_eta: float = MAX_ABS_ETA,
    min_particle_hits: int = MIN_PARTICLE_HITS,
    min_track_hits: int = MIN_TRACK_HITS,
    matching_fraction: float = MATCHING_FRACTION,
    bfield: float = BFIELD_T,
    timings: Mapping[str, float] | None = None,
) -> EventPerformance:
    """Score, matching and particle efficiency of one event's candidates (see the module docstring)."""
    t, h = check_candidates(track_id, hit_id, check_truth(truth)["hit_id"].to_numpy())
    pairs = good_pairs(truth, to_submission(t, h, truth["hit_id"].to_numpy()))
    score = float(pairs["w"].sum())
    tracks = match_tracks(truth, t, h, matching_fraction)
    kin = track_kinematics(t, h, hits, bfield)
    tracks = tracks.merge(kin, on="track_id", how="left")
    tracks["counted"] = tracks["nhits"] >= min_track_hits
    counted = tracks[tracks["counted"]]
    # classification among the counted candidates only (a short fragment neither matches nor duplicates)
    if len(counted) != len(tracks):
        sub = match_tracks(truth, *_subset(t, h, counted["track_id"].to_numpy()), matching_fraction)
        tracks = tracks.drop(columns=["matched", "duplicate", "fake"]).merge(
            sub[["track_id", "matched", "duplicate", "fake"]], on="track_id", how="left"
        )
        for c in ("matched", "duplicate", "fake"):
            tracks[c] = tracks[c].fillna(False).astype(bool)
    ptab = particle_table(truth, particles)
    ptab["reconstructable"] = reconstructable(ptab, min_pt, max_abs_eta, min_particle_hits)
    good = tracks[tracks["counted"] & (tracks["matched"] | tracks["duplicate"])]
    nmatch = good.groupby("major_particle_id").size()
    ptab["n_matched_tracks"] = nmatch.reindex(ptab["particle_id"].to_numpy()).fillna(0).astype(np.int64).to_numpy()
    ptab["found"] = ptab["n_matched_tracks"] > 0
    # each particle's share of the event's weight and the share the score collected from it
    wsum = truth.astype({"weight": np.float64}).groupby("particle_id")["weight"].sum()
    total = float(wsum.sum())
    ids = ptab["particle_id"].to_numpy()
    ptab["weight"] = (wsum.reindex(ids).fillna(0.0) / total).to_numpy()
    ptab["score_weight"] = pairs.groupby("particle_id")["w"].sum().reindex(ids).fillna(0.0).to_numpy()
    return EventPerformance(int(event_id), score, ptab, tracks, dict(timings or {}))


def _subset(t: np.ndarray, h: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.isin(t, keep)
    return t[m], h[m]


def rate(passed: int | float, total: int | float) -> dict[str, float | int]:
    """``{"value", "error", "n"}``: a fraction with its binomial error (NaN when ``total`` is 0)."""
    if total <= 0:
        return {"value": float("nan"), "error": float("nan"), "n": int(total)}
    v = float(passed) / float(total)
    return {"value": v, "error": float(efficiency_error(v, float(total))), "n": int(total)}


def binned_rate(values: np.ndarray, passed: np.ndarray, edges: Sequence[float]) -> dict[str, list[float]]:
    """A fraction and its binomial error in bins of ``values`` (NaN in empty bins).

    Returns
    -------
    dict
        ``edges``, ``value``, ``error``, ``n`` (lists, one entry per bin).
    """
    values = np.asarray(values, dtype=float)
    passed = np.asarray(passed, dtype=bool)
    e = np.asarray(edges, dtype=float)
    idx = np.digitize(values, e) - 1
    inside = (idx >= 0) & (idx < len(e) - 1)
    n = np.bincount(idx[inside], minlength=len(e) - 1).astype(float)
    k = np.bincount(idx[inside], weights=passed[inside].astype(float), minlength=len(e) - 1)
    v = np.full(len(n), np.nan)
    err = np.full(len(n), np.nan)
    filled = n > 0
    v[filled] = k[filled] / n[filled]
    err[filled] = efficiency_error(v[filled], n[filled])
    return {"edges": e.tolist(), "value": v.tolist(), "error": err.tolist(), "n": n.astype(int).tolist()}


def summarise(
    events: Sequence[EventPerformance],
    pt_bins: Sequence[float] = PT_BINS,
    eta_bins: Sequence[float] = ETA_BINS,
    pt_thresholds: Sequence[float] = (0.5, 1.0),
) -> dict[str, Any]:
    """Rates over several events of one method and sample (JSON-ready).

    Returns
    -------
    dict
        ``events``; ``trackml_score`` (mean over events, error = standard error of the mean);
        ``efficiency`` (reconstructable particles) and ``efficiency_pt>X`` for each threshold;
        ``fake_rate``, ``duplicate_rate`` (counted candidates); ``n_particles``, ``n_tracks``;
        ``vs_pt`` / ``vs_eta``: binned efficiency (truth pT, eta), fake and duplicate rate (hit
        estimates of the candidates'); ``timing``: mean and standard deviation per stage [s/event].
    """
    if not events:
        raise SchemaError("no events to summarise")
    scores = np.array([e.score for e in events])
    parts = pd.concat([e.particles for e in events], ignore_index=True)
    tracks = pd.concat([e.tracks for e in events], ignore_index=True)
    sel = parts[parts["reconstructable"]]
    trk = tracks[tracks["counted"]]
    out: dict[str, Any] = {
        "events": len(events),
        "trackml_score": {
            "value": float(scores.mean()),
            "error": float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else float("nan"),
            "n": len(scores),
        },
        "efficiency": rate(int(sel["found"].sum()), len(sel)),
        "fake_rate": rate(int(trk["fake"].sum()), len(trk)),
        "duplicate_rate": rate(int(trk["duplicate"].sum()), len(trk)),
        "n_particles": int(len(sel)),
        "n_tracks": int(len(trk)),
        "n_candidates": int(len(tracks)),
    }
    for thr in pt_thresholds:
        s = sel[sel["pt"] > thr]
        out[f"efficiency_pt>{thr:g}"] = rate(int(s["found"].sum()), len(s))
    out["vs_pt"] = {
        "efficiency": binned_rate(sel["pt"].to_numpy(), sel["found"].to_numpy(), pt_bins),
        "fake_rate": binned_rate(trk["pt"].to_numpy(), trk["fake"].to_numpy(), pt_bins),
        "duplicate_rate": binned_rate(trk["pt"].to_numpy(), trk["duplicate"].to_numpy(), pt_bins),
    }
    out["vs_eta"] = {
        "efficiency": binned_rate(sel["eta"].to_numpy(), sel["found"].to_numpy(), eta_bins),
        "fake_rate": binned_rate(trk["eta"].to_numpy(), trk["fake"].to_numpy(), eta_bins),
        "duplicate_rate": binned_rate(trk["eta"].to_numpy(), trk["duplicate"].to_numpy(), eta_bins),
    }
    out["score_breakdown"] = score_breakdown(events)
    out["timing"] = timing_summary([e.timings for e in events])
    return out


#: particle categories of :func:`score_breakdown` (label -> mask of a particle table); they overlap
SCORE_CATEGORIES = {
    "pT < 0.5 GeV": lambda p: p["pt"] < 0.5,
    "0.5 < pT < 1 GeV": lambda p: (p["pt"] >= 0.5) & (p["pt"] < 1.0),
    "pT > 1 GeV": lambda p: p["pt"] >= 1.0,
    "eta outside (-3, 3)": lambda p: np.abs(p["eta"]) >= 3.0,
    "reconstructable": lambda p: p["reconstructable"],
    "not reconstructable": lambda p: ~p["reconstructable"],
}


def score_breakdown(events: Sequence[EventPerformance]) -> dict[str, dict[str, float]]:
    """Where the TrackML score's weight lies and how much of it was collected, per particle category.

    For each category of :data:`SCORE_CATEGORIES`: ``weight`` = the category's share of the event's
    total weight and ``collected`` = its contribution to the score (both averaged over events, so
    the ``collected`` of a set of categories that partition the particles sums to the mean score).
    """
    out = {}
    for name, sel in SCORE_CATEGORIES.items():
        w = [float(e.particles.loc[sel(e.particles), "weight"].sum()) for e in events]
        c = [float(e.particles.loc[sel(e.particles), "score_weight"].sum()) for e in events]
        out[name] = {"weight": float(np.mean(w)), "collected": float(np.mean(c))}
    return out


def timing_summary(timings: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation per stage of per-event timings [s] (stages missing from an event
    are not averaged over it); ``total`` is the sum of the stages when no event gives one."""
    stages = list(dict.fromkeys(k for t in timings for k in t))
    out: dict[str, dict[str, float]] = {}
    for s in stages:
        v = np.array([float(t[s]) for t in timings if s in t])
        out[s] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}
    if stages and "total" not in out:
        tot = np.array([sum(float(x) for x in t.values()) for t in timings if t])
        out["total"] = {"mean": float(tot.mean()), "std": float(tot.std(ddof=1)) if len(tot) > 1 else 0.0,
                        "n": int(len(tot))}  # fmt: skip
    return out
