"""A pass's minimum number of hits required again after the hit recovery (``extend.min_hits_after``, issue 14,
tag h22d): a pass may keep shorter CKF tracks that the recovery completes; its tracks still short once the recovery
ran are dropped. Absent, the finder's tracks are unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_tracking_extend import TRACK, event

from lhcml.config import shipped_config
from lhcml.errors import ConfigError
from lhcml.tasks.tracking.extend import ExtendConfig, HitCuts, extend_tracks, short_after_recovery
from lhcml.tasks.tracking.seed_filter import _drop_short, load_ml_seeds_config, ml_seeds_ckf

REG = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml"
REC7 = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch_rec7.yaml"


def test_short_tracks_by_pass_known_answers() -> None:
    """Tracks 0 (pass 1, 5 hits), 1 (pass 3, 6 hits), 2 (pass 3, 7 hits), 3 (pass 4, 6 hits): with pass 3 at 7 only
    track 1 is short; with pass 4 at 7 too also track 3; pass 1 is never judged; nothing without the key."""
    counts, passes = [5, 6, 7, 6], [1, 3, 3, 4]
    t = np.repeat(np.arange(4), counts)
    p = np.repeat(passes, counts)
    perm = np.random.default_rng(1).permutation(len(t))  # rows in any order
    assert short_after_recovery(t[perm], p[perm], {3: 7}).tolist() == [1]
    assert short_after_recovery(t[perm], p[perm], {3: 7, 4: 7}).tolist() == [1, 3]
    assert short_after_recovery(t, p, {3: 6, 4: 6}).tolist() == []
    assert short_after_recovery(t, p, {}).tolist() == []
    assert short_after_recovery(t, p, {2: 100}).tolist() == []  # no track of pass 2
    with pytest.raises(ValueError):
        short_after_recovery(t, p[:-1], {3: 7})


@dataclasses.dataclass
class Fitted:  # the fields _drop_short filters (FittedTracks has more, handled alike)
    track_id: np.ndarray
    nhits: np.ndarray
    timings: dict


def test_the_recovered_hits_count_a_short_track_in() -> None:
    """The constructed 5-measurement track (a hole on layer 3) and a compatible hit on its hole: after the recovery it
    holds 6 hits, so a minimum of 6 keeps it, 7 drops it (with its fitted row), and the minimum of another pass
    leaves it alone. Without the recovered hit a minimum of 6 drops it."""
    cfg = ExtendConfig(cuts=[HitCuts(volumes=[8], transverse=0.2, longitudinal=1.0)])
    x, y, z, vol, lay, mod = event([(3, 0.0, 0.0, 0.05)])
    t, h, info = extend_tracks(*TRACK, x, y, z, vol, lay, mod, cfg)
    assert info["added"] == 1 and len(h) == 6

    def result(t: np.ndarray, h: np.ndarray) -> dict:
        # track 0 of pass 3 (pass 1: ids 0..-1, pass 2 none, pass 3 from 0), track 9 of pass 4, 8 hits
        t2, h2 = np.r_[t, np.full(8, 9)], np.r_[h, np.arange(100, 108)]
        return {"track_id": t2, "hit_id": h2, "pass_first_track_id": [0, 0, 0, 9], "timings": {},
                "fitted": Fitted(np.array([0, 9]), np.array([5, 8]), {})}  # fmt: skip

    kept = _drop_short(result(t, h), {3: 6})
    assert kept["n_short"] == 0 and np.array_equal(kept["track_id"], result(t, h)["track_id"])
    dropped = _drop_short(result(t, h), {3: 7})
    assert dropped["n_short"] == 1 and set(dropped["track_id"]) == {9} and dropped["hit_id"].tolist() == list(range(100, 108))
    assert dropped["fitted"].track_id.tolist() == [9] and dropped["fitted"].nhits.tolist() == [8]
    assert _drop_short(result(t, h), {4: 9})["track_id"].tolist() == [0] * 6  # pass 4's 8-hit track goes
    assert _drop_short(result(*TRACK), {3: 6})["n_short"] == 1  # not recovered: 5 hits


def test_bad_min_hits_after_is_one_clear_error() -> None:
    """Pass 0, a minimum of 0, a non-integer, or a pass the finder does not have: ConfigError (the last before any
    work: the bogus checkpoint and event directory are never read)."""
    base = {"checkpoint": "x.ckpt", "extend": {"cuts": [{"volumes": [7], "transverse": 0.2, "longitudinal": 1.0}]}}
    assert load_ml_seeds_config(base).extend.min_hits_after == {}
    for bad in ({0: 7}, {3: 0}, {3: "seven"}, [3, 7]):
        with pytest.raises(ConfigError):
            load_ml_seeds_config({**base, "extend": {**base["extend"], "min_hits_after": bad}})
    one_pass = load_ml_seeds_config({**base, "extend": {**base["extend"], "min_hits_after": {2: 7}}})
    with pytest.raises(ConfigError, match="pass 2, but the finder has 1"):
        ml_seeds_ckf("/nonexistent", 0, one_pass)


def test_the_candidate_differs_from_the_registered_finder_in_pass_3_and_the_minimum_only() -> None:
    """..._tf7_1branch_rec7.yaml: the registered finder with pass 3 at 6 measurements (CKF selector and ambiguity
    resolution, nothing else of the pass's reco config) and extend.min_hits_after {3: 7}."""
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    reg, new = (load_ml_seeds_config(shipped_config(n)).model_dump() for n in (REG, REC7))
    assert {k for k in reg if reg[k] != new[k]} == {"more_passes", "extend"}
    assert new["extend"] == {**reg["extend"], "min_hits_after": {3: 7}} and reg["extend"]["min_hits_after"] == {}
    assert [p for p in reg["more_passes"][1:]] == new["more_passes"][1:]
    assert {k: v for k, v in new["more_passes"][0].items() if k != "reco"} == {
        k: v for k, v in reg["more_passes"][0].items() if k != "reco"}  # fmt: skip
    r7, r6 = (load_reco_config(shipped_config(p["reco"])).model_dump() for p in (reg["more_passes"][0], new["more_passes"][0]))
    diff = {(s, k) for s in r7 if isinstance(r7[s], dict) for k in r7[s] if r7[s][k] != r6[s][k]}
    assert diff == {("ckf", "min_measurements"), ("ambiguity", "n_measurements_min")}
    assert r6["ckf"]["min_measurements"] == r6["ambiguity"]["n_measurements_min"] == 6
    assert {s for s in r7 if not isinstance(r7[s], dict) and r7[s] != r6[s]} == set()


def test_deferred_short_tracks_overlapping_a_later_pass_are_dropped() -> None:
    """defer_short: track 0 (pass 3, 6 hits) shares hit 3 with track 5 (pass 4): dropped; track 1 (pass 3, 6 hits)
    shares nothing: kept; track 2 (pass 3, 7 hits) shares hit 20 with track 5: not short, kept; track 6 (pass 4, 6
    hits, pass 4 not deferred) kept; a pass-2 track sharing track 1's hit 10 is earlier, not later: kept."""
    from lhcml.tasks.tracking.extend import deferred_overlaps

    tracks = {0: (3, [1, 2, 3, 4, 5, 6]), 1: (3, [10, 11, 12, 13, 14, 15]), 2: (3, [20, 21, 22, 23, 24, 25, 26]),
              5: (4, [3, 20, 30, 31, 32, 33, 34, 35]), 6: (4, [40, 41, 42, 43, 44, 45]), 7: (2, [10, 50, 51])}  # fmt: skip
    t = np.concatenate([[k] * len(h) for k, (_, h) in tracks.items()])
    h = np.concatenate([h for _, h in tracks.values()])
    p = np.concatenate([[q] * len(h) for q, h in tracks.values()])
    assert deferred_overlaps(t, h, p, {3: 7}).tolist() == [0]
    assert deferred_overlaps(t, h, p, {3: 6}).tolist() == []  # nothing short
    assert deferred_overlaps(t, h, p, {3: 8}).tolist() == [0, 2]  # track 2 now short too, shares hit 20
    assert deferred_overlaps(t, h, p, {4: 7}).tolist() == []  # no pass after 4 here
    with pytest.raises(ConfigError, match="give min_hits_after"):
        load_ml_seeds_config({"checkpoint": "x.ckpt", "extend": {"defer_short": True, "cuts": [
            {"volumes": [7], "transverse": 0.2, "longitudinal": 1.0}]}})  # fmt: skip


@pytest.fixture(scope="module")
def ttbar_event(tmp_path_factory):
    from _tracking_helpers import simulated_ttbar_event

    return simulated_ttbar_event(tmp_path_factory, "min_after", 23)


def test_finder_drops_exactly_the_short_tracks_of_the_pass(ttbar_event) -> None:
    """The candidate finder on a simulated tt-bar event (<mu> = 0: few short tracks, so the minimum is raised to 11 hits
    for pass 2 and 10 for pass 3): the result is the one without min_hits_after less exactly the tracks of those passes
    holding fewer hits after the recovery (every other row unchanged); with defer_short every final track of those
    passes holds its minimum and none of its hits is on a later pass's track."""
    cfg = load_ml_seeds_config(shipped_config(REC7))
    mins = {2: 11, 3: 10}
    off = ml_seeds_ckf(ttbar_event, 0, cfg.model_copy(update={"extend": cfg.extend.model_copy(update={"min_hits_after": {}})}))
    on = ml_seeds_ckf(ttbar_event, 0, cfg.model_copy(update={"extend": cfg.extend.model_copy(update={"min_hits_after": mins})}))
    first = np.asarray(off["pass_first_track_id"])
    t, h = off["track_id"], off["hit_id"]
    p = np.searchsorted(first, t, side="right")
    ids, n = np.unique(t, return_counts=True)
    pid = np.searchsorted(first, ids, side="right")
    short = ids[((pid == 2) & (n < 11)) | ((pid == 3) & (n < 10))]
    assert len(short) and "n_short" not in off and on["n_short"] == len(short)
    keep = ~np.isin(t, short)
    assert np.array_equal(on["track_id"], t[keep]) and np.array_equal(on["hit_id"], h[keep])
    assert set(on["fitted"].track_id) == set(off["fitted"].track_id) - set(short)
    assert np.isin(p[~keep], [2, 3]).all()
    d = ml_seeds_ckf(ttbar_event, 0, cfg.model_copy(update={"extend": cfg.extend.model_copy(
        update={"min_hits_after": mins, "defer_short": True})}))  # fmt: skip
    pd_ = np.searchsorted(np.asarray(d["pass_first_track_id"]), d["track_id"], side="right")
    assert d["n_deferred_dropped"] > 0
    for k, m in mins.items():
        ids_d, n_d = np.unique(d["track_id"][pd_ == k], return_counts=True)
        assert len(ids_d) and n_d.min() >= m
        assert not np.isin(d["hit_id"][pd_ == k], d["hit_id"][pd_ > k]).any()
