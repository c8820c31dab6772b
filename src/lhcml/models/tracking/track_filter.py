"""The track classifier of ``ml-seeds+ckf``'s track-quality selection: how likely a found track is a fake.

After the CKF, each track carries the numbers of its Kalman fit: measurements, holes, outliers, χ², ndf and
the fitted parameters at the perigee. At ⟨μ⟩ = 200 the fakes of iterative tracking are short tracks of
low-pT passes with holes and a bad fit (docs/benchmarks/tracking_fakes.md); ACTS's ML ambiguity solver scores
tracks from the same kind of per-track numbers with a small MLP (docs/references.md §42). This classifier is
the seed classifier's MLP (:class:`lhcml.models.tracking.seed_filter.SeedClassifier`: standardised features,
``log1p`` of the counts named ``n_*``) on :data:`TRACK_FEATURE_NAMES`; its label is 1 for a *fake* track
(ACTS matching, :func:`lhcml.metrics.tracking.match_tracks`: under half of its hits from one particle).

Track files (``<event directory>/tracks-<name>/event{N:09d}-tracks.npz``, written by
:func:`lhcml.tasks.tracking.track_quality.write_track_files`) hold per track ``features``, ``feature_names``
and, for simulated events, ``y``; the classifier trains on them with ``lhcml train
configs/tracking/track_filter.yaml`` (the tracking registry of :mod:`lhcml.train.tracking`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import SchemaError
from lhcml.models.tracking.seed_filter import SeedClassifier, load_npz

__all__ = ["TRACK_FEATURE_NAMES", "TrackClassifier", "read_track_file", "track_features", "track_file", "track_prepare"]

#: the per-track features of :func:`track_features`, in column order
TRACK_FEATURE_NAMES = (
    "n_measurements", "n_holes", "n_outliers",  # counts of the fitted track (log1p in the model)
    "chi2_ndf",  # chi2 / ndf of the fit (ndf 0 counts as 1)
    "inv_pt",  # 1 / pT in 1/GeV (no charge)
    "abs_eta", "abs_d0", "abs_z0",  # |eta|, |d0| and |z0| in mm at the perigee
    "pass_number",  # the finder pass (1-based) that made the track
)


def track_features(nhits: np.ndarray, nholes: np.ndarray, noutliers: np.ndarray, chi2: np.ndarray, ndf: np.ndarray,
                   params: np.ndarray, pass_number: np.ndarray) -> np.ndarray:  # fmt: skip
    """Features ``(n, len(TRACK_FEATURE_NAMES))`` float32 of fitted tracks (``params`` ``(n, 6)``: d0, z0, phi,
    theta, q/p, t in ACTS units)."""
    p = np.asarray(params, np.float64).reshape(-1, 6)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_pt = np.abs(p[:, 4] / np.sin(p[:, 3]))
        abs_eta = np.abs(-np.log(np.tan(p[:, 3] / 2.0)))
    out = np.column_stack([nhits, nholes, noutliers, np.asarray(chi2, np.float64) / np.maximum(np.asarray(ndf, np.float64), 1.0),
                           inv_pt, abs_eta, np.abs(p[:, 0]), np.abs(p[:, 1]), pass_number]).astype(np.float32)  # fmt: skip
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


class TrackClassifier(SeedClassifier):
    """MLP track classifier: standardised track features -> logit that the track is a fake (the seed classifier's
    network; ``hidden``, ``n_layers``: configs/tracking/track_filter.yaml)."""

    def __init__(self, feature_names: list[str] | tuple[str, ...] = TRACK_FEATURE_NAMES, hidden: int = 16,
                 n_layers: int = 2) -> None:  # fmt: skip
        super().__init__(feature_names, hidden, n_layers)


def track_file(source: str, event_id: int, name: str) -> Path:
    """``<event directory>/tracks-<name>/event{N:09d}-tracks.npz`` (``source``: the event's
    :attr:`lhcml.data.trackml.TrackMLEvent.source`)."""
    return Path(source).parent / f"tracks-{name}" / f"event{int(event_id):09d}-tracks.npz"


def read_track_file(path: str | Path) -> dict[str, np.ndarray]:
    """A track file's arrays; ``InputNotFoundError`` / ``CorruptFileError`` if absent or bad, :class:`SchemaError`."""
    path = Path(path)
    data = load_npz(path, "track file", "write the tracks first (python benchmarks/tracking_models.py --only "
                    "track_filter, or lhcml.tasks.tracking.track_quality.write_track_files)")  # fmt: skip
    missing = [k for k in ("features", "feature_names") if k not in data]
    if missing:
        raise SchemaError(f"track file {path} lacks {', '.join(missing)}; write it again")
    if data["features"].ndim != 2 or data["features"].shape[1] != len(data["feature_names"]):
        raise SchemaError(f"track file {path}: features {data['features'].shape} do not match "
                          f"{len(data['feature_names'])} names; write it again")  # fmt: skip
    return data


def track_prepare(event: Any, opts: Any) -> dict[str, Any]:
    """``prepare`` of the track classifier: the event's track file ``opts.tracks`` with its labels."""
    data = read_track_file(track_file(event.source, event.event_id, opts.tracks))
    if "y" not in data:
        raise SchemaError(f"tracks of event {event.event_id} have no labels; training needs simulated events with truth")
    return {"features": data["features"].astype(np.float32), "y": data["y"].astype(np.float32),
            "feature_names": [str(n) for n in data["feature_names"]]}  # fmt: skip
