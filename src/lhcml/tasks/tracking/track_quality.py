"""A track-quality selection after the passes of ``ml-seeds+ckf``: likely fakes among the found tracks are dropped.

Iterative tracking at ⟨μ⟩ = 200 finds most of its fakes among the shortest tracks of the low-pT passes: random
combinations of 7-9 hits of several particles that the CKF joins into one track. Their Kalman fit is worse than
a real particle's of the same length, and they have more holes (docs/benchmarks/tracking_fakes.md). ACTS's
track selection cuts on hit counts only; ACTS's ML ambiguity solver scores tracks from per-track numbers
(measurements, outliers, holes, χ²/ndf, η; docs/references.md §42) with a small MLP. This selection has two
rules (:class:`TrackSelection`), either or both:

* a ceiling on χ²/ndf that depends on the number of measurements: a track with ``n`` measurements is removed
  when its χ²/ndf exceeds ``max_chi2_ndf[k]``, ``k`` the smallest key of ``max_chi2_ndf`` with ``k >= n``;
  tracks with more measurements than the largest key are kept;
* a learned track classifier (``checkpoint``: :mod:`lhcml.models.tracking.track_filter`, trained on the track
  files of :func:`write_track_files`): a track whose fake score is ``>= cut`` is removed.

It is a final step: a removed track's hits stay out of the later passes of the same call (they were excluded
while the passes ran), but they are free for any step after it (e.g. hit recovery).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from lhcml.atomic import atomic_write_bytes
from lhcml.config import StrictModel
from lhcml.errors import ConfigError, SchemaError

__all__ = ["TrackSelection", "fitted_features", "load_selection", "pass_numbers", "removed_tracks", "select_tracks",
           "track_classifier", "write_track_files"]  # fmt: skip


class TrackSelection(StrictModel):
    """The ``track_selection`` section of an ml-seeds config (null there: off)."""

    #: measurement count -> highest χ²/ndf kept; a track with n measurements is judged by the smallest key >= n
    #: (empty: no ceiling)
    max_chi2_ndf: dict[int, float] = Field(default_factory=dict)
    #: the track classifier (a checkpoint file or training run directory; shipped: models/tracking/<name>.ckpt);
    #: null: none
    checkpoint: str | None = None
    #: with ``checkpoint``: tracks whose fake score is >= cut are removed
    cut: float = Field(0.5, gt=0.0, le=1.0)
    #: with ``checkpoint``: finder pass (1-based) -> the cut of that pass's tracks instead of ``cut``
    #: (empty: ``cut`` for every track)
    pass_cuts: dict[int, float] = Field(default_factory=dict)

    @field_validator("max_chi2_ndf")
    @classmethod
    def _positive(cls, v: dict[int, float]) -> dict[int, float]:
        bad = {k: x for k, x in v.items() if k < 1 or not x > 0}
        if bad:
            raise ValueError(f"keys (measurements) must be >= 1 and values (chi2/ndf) > 0, got {bad}")
        return v

    @field_validator("pass_cuts")
    @classmethod
    def _pass_cuts(cls, v: dict[int, float]) -> dict[int, float]:
        bad = {k: x for k, x in v.items() if k < 1 or not 0.0 < x <= 1.0}
        if bad:
            raise ValueError(f"keys (passes) must be >= 1 and cuts in (0, 1], got {bad}")
        return v

    @model_validator(mode="after")
    def _some_rule(self) -> TrackSelection:
        if not self.max_chi2_ndf and self.checkpoint is None:
            raise ValueError("give max_chi2_ndf, a checkpoint (and its cut), or both; or set track_selection: null")
        if self.pass_cuts and self.checkpoint is None:
            raise ValueError("pass_cuts are cuts on the track classifier's score: give its checkpoint too")
        return self

    def cuts(self, passes: np.ndarray) -> np.ndarray | float:
        """The classifier cut of each track of finder passes ``passes`` (1-based; ``cut`` without ``pass_cuts``)."""
        if not self.pass_cuts:
            return self.cut
        p = np.asarray(passes, np.int64)
        out = np.full(len(p), self.cut, np.float64)
        for k, c in self.pass_cuts.items():
            out[p == k] = c
        return out


def removed_tracks(nhits: np.ndarray, chi2: np.ndarray, ndf: np.ndarray, cfg: TrackSelection) -> np.ndarray:
    """Boolean mask of the tracks the χ²/ndf ceilings remove (per track: measurements, χ², ndf; ndf 0 counts as 1)."""
    n = np.asarray(nhits, np.int64)
    if not cfg.max_chi2_ndf:
        return np.zeros(len(n), bool)
    chi2_ndf = np.asarray(chi2, np.float64) / np.maximum(np.asarray(ndf, np.float64), 1.0)
    keys = np.array(sorted(cfg.max_chi2_ndf), np.int64)
    limits = np.array([cfg.max_chi2_ndf[k] for k in keys], np.float64)
    slot = np.searchsorted(keys, n, side="left")  # index of the smallest key >= n
    judged = slot < len(keys)
    limit = np.where(judged, limits[np.minimum(slot, len(keys) - 1)], np.inf)
    return judged & (chi2_ndf > limit)


def pass_numbers(out: dict[str, Any], track_ids: np.ndarray | None = None) -> np.ndarray:
    """The 1-based pass of each fitted track of a finder result (from ``pass_first_track_id``; one pass: all 1), or
    of each of ``track_ids`` (e.g. one per hit row) if given.

    Raises
    ------
    ConfigError
        A result of several passes run without ``one_run`` (no record of which pass made which track).
    """
    ids = np.asarray(out["fitted"].track_id if track_ids is None else track_ids, np.int64)
    first = out.get("pass_first_track_id")
    if first is None:
        if "second pass" in (out.get("timings") or {}):
            raise ConfigError("the track classifier needs each track's pass: run the passes with one_run: true")
        return np.ones(len(ids), np.int64)
    return np.searchsorted(np.asarray(first, np.int64), ids, side="right")


def fitted_features(out: dict[str, Any]) -> np.ndarray:
    """:func:`lhcml.models.tracking.track_filter.track_features` of a finder result's fitted tracks."""
    from lhcml.models.tracking.track_filter import track_features

    f = out["fitted"]
    return track_features(f.nhits, f.nholes, f.noutliers, f.chi2, f.ndf, f.params, pass_numbers(out))


@functools.lru_cache(maxsize=4)
def track_classifier(checkpoint: str) -> Any:
    """The trained track classifier of a checkpoint file or run directory (loaded once per process; a shipped one
    as ``models/tracking/<name>.ckpt``); :class:`ConfigError` for a checkpoint of another model or of other features
    (:func:`lhcml.train.tracking.load_tracking_classifier`)."""
    from lhcml.models.tracking.track_filter import TRACK_FEATURE_NAMES
    from lhcml.train.tracking import load_tracking_classifier

    return load_tracking_classifier(checkpoint, "track_filter", TRACK_FEATURE_NAMES, "track",
                                    "configs/tracking/track_filter.yaml")  # fmt: skip


def load_selection(cfg: TrackSelection | None) -> None:
    """Load the selection's classifier (if any) now, so that a bad checkpoint is one error before the passes run."""
    if cfg is not None and cfg.checkpoint is not None:
        track_classifier(str(cfg.checkpoint))


def select_tracks(out: dict[str, Any], cfg: TrackSelection | None) -> dict[str, Any]:
    """The finder's result ``out`` (``track_id``, ``hit_id``, ``fitted``) without the tracks the selection removes
    (``fitted`` too; track ids unchanged), ``n_removed`` added; ``cfg`` None: ``out`` as it is."""
    if cfg is None:
        return out
    fitted = out["fitted"]
    ids = np.asarray(fitted.track_id, np.int64)
    gone = removed_tracks(fitted.nhits, fitted.chi2, fitted.ndf, cfg)
    if cfg.checkpoint is not None and len(ids):
        gone |= track_classifier(str(cfg.checkpoint)).score(fitted_features(out)) >= cfg.cuts(pass_numbers(out))
    return {**without_tracks(out, ids[gone]), "n_removed": int(gone.sum())}


def without_tracks(out: dict[str, Any], gone: np.ndarray) -> dict[str, Any]:
    """The finder's result ``out`` without the tracks whose ids are ``gone``: their hit rows and their ``fitted``
    entries (track ids unchanged)."""
    fitted = out["fitted"]
    ids = np.asarray(fitted.track_id, np.int64)
    keep_fit = ~np.isin(ids, gone)
    fields = {f.name: np.asarray(getattr(fitted, f.name))[keep_fit] for f in dataclasses.fields(fitted)
              if isinstance(getattr(fitted, f.name), np.ndarray) and len(getattr(fitted, f.name)) == len(ids)}  # fmt: skip
    t = np.asarray(out["track_id"], np.int64)
    keep = ~np.isin(t, gone)
    return {**out, "track_id": t[keep], "hit_id": np.asarray(out["hit_id"], np.int64)[keep],
            "fitted": dataclasses.replace(fitted, **fields)}  # fmt: skip


def fake_labels(event_dir: str | Path, event_id: int, out: dict[str, Any]) -> np.ndarray:
    """1 for each fitted track of ``out`` that is a fake by ACTS's matching (:func:`lhcml.metrics.tracking.match_tracks`:
    under half of its hits from one particle), else 0; :class:`SchemaError` for an event without truth."""
    from lhcml.data.trackml import read_event
    from lhcml.metrics.tracking import match_tracks

    ev = read_event(event_dir, event_id, parts=("hits", "truth"), check=False)
    if getattr(ev, "truth", None) is None:
        raise SchemaError(f"event {event_id} of {event_dir} has no truth: track labels need simulated events")
    m = match_tracks(ev.truth, out["track_id"], out["hit_id"]).set_index("track_id")
    ids = np.asarray(out["fitted"].track_id, np.int64)
    return m["fake"].reindex(ids).fillna(True).to_numpy(bool).astype(np.int8)


def write_track_files(event_dir: str | Path, name: str, events: Sequence[int], config: Any,
                      labels: bool = True) -> list[Path]:  # fmt: skip
    """Track files of ``events`` of a sample (``<trackml dir>/tracks-<name>/``): the tracks of the ml-seeds finder
    ``config`` (a path, mapping or config; its own track selection switched off), their
    :func:`fitted_features` and (``labels``) :func:`fake_labels`. A file that exists is kept (resumable)."""
    import io

    from lhcml.data.trackml import read_event
    from lhcml.models.tracking.track_filter import TRACK_FEATURE_NAMES, track_file
    from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config, ml_seeds_ckf

    cfg = load_ml_seeds_config(config).model_copy(update={"track_selection": None})
    out = []
    for e in [int(x) for x in events]:
        path = track_file(read_event(event_dir, e, parts=("hits",), check=False).source, e, name)
        if not path.is_file():
            res = ml_seeds_ckf(event_dir, e, cfg)
            arrays = {"features": fitted_features(res), "feature_names": np.asarray(TRACK_FEATURE_NAMES)}
            if labels:
                arrays["y"] = fake_labels(event_dir, e, res)
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
        out.append(path)
    return out
