"""Per-pass cuts of the track-quality selection (``track_selection.pass_cuts``; issue 14, tag h21b): known answers on
constructed tracks with a stand-in classifier, absent (or equal to ``cut`` for every pass) = the same tracks, bad
values = one ConfigError."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.errors import ConfigError
from lhcml.tasks.tracking import seed_filter as S
from lhcml.tasks.tracking import track_quality as Q
from lhcml.tasks.tracking.acts_reco import FittedTracks

CKPT = "models/tracking/track_filter.ckpt"


class _Scores:
    """A stand-in classifier: the fake score of track k is SCORES[k] (whatever its features)."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = np.asarray(scores)

    def score(self, features: np.ndarray) -> np.ndarray:
        assert len(features) == len(self.scores)
        return self.scores


def result() -> dict:
    """Four tracks of 8 measurements: tracks 0-1 of pass 1, 2 of pass 2, 3 of pass 3 (pass_first_track_id)."""
    n = 4
    fit = FittedTracks(event_id=0, track_id=np.arange(n, dtype=np.int64), params=np.tile([0.1, 1.0, 0.0, 1.0, 1.0, 0.0], (n, 1)),
                       cov=np.zeros((n, 6, 6)), nhits=np.full(n, 8, np.int32), nholes=np.zeros(n, np.int32),
                       noutliers=np.zeros(n, np.int32), nshared=np.zeros(n, np.int32), chi2=np.full(n, 8.0, np.float32),
                       ndf=np.full(n, 8, np.int32), truth_particle=np.arange(1, n + 1, dtype=np.int64),
                       truth_fraction=np.ones(n, np.float32))  # fmt: skip
    return {"track_id": np.repeat(np.arange(n, dtype=np.int64), 8), "hit_id": np.arange(1, 8 * n + 1, dtype=np.int64),
            "fitted": fit, "timings": {"ckf": 1.0}, "pass_first_track_id": [0, 2, 3]}  # fmt: skip


@pytest.fixture
def scores(monkeypatch):
    def use(values: list[float]) -> None:
        monkeypatch.setattr(Q, "track_classifier", lambda checkpoint: _Scores(values))

    return use


def kept(cfg: Q.TrackSelection) -> list[int]:
    return sorted(set(Q.select_tracks(result(), cfg)["track_id"].tolist()))


def test_pass_cuts_known_answers(scores) -> None:
    """Scores 0.02, 0.04, 0.04, 0.04 (passes 1, 1, 2, 3) at cut 0.03: tracks 1-3 go; a cut of 0.05 for pass 2 keeps
    track 2; a cut of 0.01 for pass 1 removes track 0 as well; a pass the finder does not have changes nothing."""
    scores([0.02, 0.04, 0.04, 0.04])
    assert kept(Q.TrackSelection(checkpoint=CKPT, cut=0.03)) == [0]
    assert kept(Q.TrackSelection(checkpoint=CKPT, cut=0.03, pass_cuts={2: 0.05})) == [0, 2]
    assert kept(Q.TrackSelection(checkpoint=CKPT, cut=0.03, pass_cuts={1: 0.01, 3: 0.05})) == [3]
    assert kept(Q.TrackSelection(checkpoint=CKPT, cut=0.03, pass_cuts={8: 0.5})) == [0]
    assert Q.TrackSelection(checkpoint=CKPT, cut=0.03, pass_cuts={2: 0.05}).cuts(np.array([1, 2, 3, 2])).tolist() == \
        [0.03, 0.05, 0.03, 0.05]  # fmt: skip


def test_pass_cuts_absent_or_equal_to_cut_give_the_same_tracks(scores) -> None:
    """No pass_cuts, an empty one and one equal to ``cut`` for every pass remove the same tracks (ids, hits, fits)."""
    scores([0.02, 0.04, 0.03, 0.01])
    base = Q.TrackSelection(checkpoint=CKPT, cut=0.03)
    assert Q.TrackSelection.model_validate({"checkpoint": CKPT, "cut": 0.03}) == base == Q.TrackSelection(checkpoint=CKPT, cut=0.03, pass_cuts={})
    ref = Q.select_tracks(result(), base)
    assert ref["n_removed"] == 2 and ref["fitted"].track_id.tolist() == [0, 3]
    for cfg in (Q.TrackSelection(checkpoint=CKPT, cut=0.03, pass_cuts={}),
                Q.TrackSelection(checkpoint=CKPT, cut=0.03, pass_cuts={1: 0.03, 2: 0.03, 3: 0.03})):  # fmt: skip
        out = Q.select_tracks(result(), cfg)
        assert out["n_removed"] == ref["n_removed"]
        assert out["track_id"].tolist() == ref["track_id"].tolist() and out["hit_id"].tolist() == ref["hit_id"].tolist()
        assert out["fitted"].track_id.tolist() == ref["fitted"].track_id.tolist()


@pytest.mark.parametrize("section", [
    {"checkpoint": CKPT, "pass_cuts": {0: 0.01}},  # passes are 1-based
    {"checkpoint": CKPT, "pass_cuts": {8: 0.0}},  # a cut in (0, 1]
    {"checkpoint": CKPT, "pass_cuts": {8: 1.5}},
    {"checkpoint": CKPT, "pass_cuts": {8: "tight"}},
    {"checkpoint": CKPT, "pass_cut": {8: 0.01}},  # misspelt key
    {"max_chi2_ndf": {7: 1.5}, "pass_cuts": {8: 0.01}},  # per-pass cuts without a classifier
])  # fmt: skip
def test_bad_pass_cuts_are_one_config_error(section: dict) -> None:
    with pytest.raises(ConfigError):
        S.load_ml_seeds_config({"checkpoint": "models/tracking/seed_filter.ckpt", "track_selection": section})
