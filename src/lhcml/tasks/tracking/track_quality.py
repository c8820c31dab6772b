"""A track-quality selection after the passes of ``ml-seeds+ckf``: short tracks with a bad fit are dropped.

Iterative tracking at ⟨μ⟩ = 200 finds most of its fakes among the shortest tracks: random combinations of
7-9 hits of several low-pT particles that the CKF joins into one track. Their Kalman fit is worse than a
real particle's of the same length (docs/benchmarks/tracking_fakes.md: on validation events the fakes of
the six-pass finder with looser cuts have a median χ²/ndf of 3.0, its real 7-measurement tracks 0.84).
ACTS's track selection cuts on hit counts only; ACTS's ML ambiguity solver scores tracks from the same
per-track numbers (measurements, outliers, holes, χ²/ndf, η; docs/references.md §42). This selection is the
simplest such score: a ceiling on χ²/ndf that depends on the number of measurements.

Rule (:class:`TrackSelection`): a track with ``n`` measurements is removed when its χ²/ndf exceeds
``max_chi2_ndf[k]``, ``k`` the smallest key of ``max_chi2_ndf`` with ``k >= n``; tracks with more measurements
than the largest key are kept; the rule is the same for every pass. It is a final step: a removed track's hits stay out of the later passes of the same call
(they were excluded while the passes ran), but they are free for any step after it (e.g. hit recovery).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from lhcml.config import StrictModel

__all__ = ["TrackSelection", "removed_tracks", "select_tracks"]


class TrackSelection(StrictModel):
    """The ``track_selection`` section of an ml-seeds config (null there: off)."""

    #: measurement count -> highest χ²/ndf kept; a track with n measurements is judged by the smallest key >= n
    max_chi2_ndf: dict[int, float] = Field(min_length=1)

    @field_validator("max_chi2_ndf")
    @classmethod
    def _positive(cls, v: dict[int, float]) -> dict[int, float]:
        bad = {k: x for k, x in v.items() if k < 1 or not x > 0}
        if bad:
            raise ValueError(f"keys (measurements) must be >= 1 and values (chi2/ndf) > 0, got {bad}")
        return v


def removed_tracks(nhits: np.ndarray, chi2: np.ndarray, ndf: np.ndarray, cfg: TrackSelection) -> np.ndarray:
    """Boolean mask of the tracks the selection removes (per track: measurements, χ², ndf; ndf 0 counts as 1)."""
    n = np.asarray(nhits, np.int64)
    chi2_ndf = np.asarray(chi2, np.float64) / np.maximum(np.asarray(ndf, np.float64), 1.0)
    keys = np.array(sorted(cfg.max_chi2_ndf), np.int64)
    limits = np.array([cfg.max_chi2_ndf[k] for k in keys], np.float64)
    slot = np.searchsorted(keys, n, side="left")  # index of the smallest key >= n
    judged = slot < len(keys)
    limit = np.where(judged, limits[np.minimum(slot, len(keys) - 1)], np.inf)
    return judged & (chi2_ndf > limit)


def select_tracks(out: dict[str, Any], cfg: TrackSelection | None) -> dict[str, Any]:
    """The finder's result ``out`` (``track_id``, ``hit_id``, ``fitted``) without
    the tracks :func:`removed_tracks` removes (``fitted`` too; track ids unchanged), ``n_removed`` added;
    ``cfg`` None: ``out`` as it is."""
    if cfg is None:
        return out
    fitted = out["fitted"]
    ids = np.asarray(fitted.track_id, np.int64)
    gone = removed_tracks(fitted.nhits, fitted.chi2, fitted.ndf, cfg)
    keep_fit = ~gone
    fields = {f.name: np.asarray(getattr(fitted, f.name))[keep_fit] for f in dataclasses.fields(fitted)
              if isinstance(getattr(fitted, f.name), np.ndarray) and len(getattr(fitted, f.name)) == len(ids)}  # fmt: skip
    t = np.asarray(out["track_id"], np.int64)
    keep = ~np.isin(t, ids[gone])
    return {**out, "track_id": t[keep], "hit_id": np.asarray(out["hit_id"], np.int64)[keep],
            "fitted": dataclasses.replace(fitted, **fields), "n_removed": int(gone.sum())}  # fmt: skip
