"""The low-pT strip pass (``configs/tracking/ckf_pass7_strips_lowpt.yaml``) and the finder that runs it seventh,
``ml_seeds_7pass_budget_quality_ext_spend_strips_lowpt.yaml`` (issue 14, tag h19b): strip seeds from 0.16 GeV for the
strip-only particles below the strip pass's 0.25 GeV."""

from __future__ import annotations

import numpy as np
import pytest
from _tracking_helpers import ttbar_event_with_volumes

pytest.importorskip("acts")

from lhcml.config import shipped_config  # noqa: E402
from lhcml.data.trackml import read_event  # noqa: E402
from lhcml.tasks.tracking import seed_filter as S  # noqa: E402
from lhcml.tasks.tracking.acts_reco import (  # noqa: E402
    load_reco_config,
    run_ckf,
)

LOWPT = "tracking/ckf_pass7_strips_lowpt.yaml"
STRIPS = "tracking/ckf_pass5_strips_4hits.yaml"
PIXELS = [7, 8, 9]


def test_lowpt_finder_is_the_strips_candidate_plus_one_pass() -> None:
    """The seven-pass finder runs the strips candidate's passes, selection and hit recovery unchanged, then the
    low-pT strip pass (every ACTS seed of it: no classifier)."""
    old = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext_spend_strips.yaml"))
    new = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_7pass_budget_quality_ext_spend_strips_lowpt.yaml"))
    assert new.more_passes[:-1] == old.more_passes and len(new.more_passes) == len(old.more_passes) + 1
    assert new.model_copy(update={"more_passes": old.more_passes}) == old
    last = new.more_passes[-1]
    assert last.reco == LOWPT and last.checkpoint is None and last.max_per_spm == 0


def test_lowpt_pass_differs_from_the_strip_pass_in_pt_and_seed_windows_within_acts_limits() -> None:
    """Only the pT, the seeding radius, the seeds' span and origin windows differ from the strip pass; the seeding radius
    obeys ACTS's grid limit (r_max <= twice the helix radius of min_pt) and the middle space points lie inside it;
    the track selection keeps the |d0| the seeds allow."""
    low, strips = load_reco_config(shipped_config(LOWPT)), load_reco_config(shipped_config(STRIPS))
    s = low.seeding
    assert s.min_pt < strips.seeding.min_pt and low.ckf.min_pt == s.min_pt
    helix_radius_mm = s.min_pt / (0.299792458 * low.field_tesla) * 1000.0
    assert s.r_max <= 2.0 * helix_radius_mm
    assert s.r_middle is not None and strips.seeding.r_middle is not None
    assert strips.seeding.r_middle[0] <= s.r_middle[0] < s.r_middle[1] < s.r_max
    assert s.impact_max > strips.seeding.impact_max and low.ckf.loc0_max >= s.impact_max
    assert s.collision_region[1] > strips.seeding.collision_region[1]
    assert s.delta_r[1] < strips.seeding.delta_r[1]
    keys = ("min_pt", "r_max", "r_middle", "delta_r", "collision_region", "impact_max")
    same_seeding = s.model_copy(update={k: getattr(strips.seeding, k) for k in keys})
    assert same_seeding == strips.seeding
    assert low.ckf.model_copy(update={"min_pt": strips.ckf.min_pt}) == strips.ckf
    assert (low.ambiguity, low.fit, low.clean) == (strips.ambiguity, strips.fit, strips.clean)


def _majority(pid: np.ndarray, track_id: np.ndarray, hit_id: np.ndarray) -> dict[int, tuple[int, float]]:
    """Per track: its majority particle and the fraction of its hits on it."""
    out = {}
    for t in np.unique(track_id):
        vals, counts = np.unique(pid[hit_id[track_id == t] - 1], return_counts=True)
        out[int(t)] = (int(vals[np.argmax(counts)]), float(counts.max() / counts.sum()))
    return out


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    """One tt-bar event at mu = 0 and the volume of each of its measurements (index = hit_id - 1)."""
    out, _, volume = ttbar_event_with_volumes(tmp_path_factory, "strips_lowpt", 31)
    return out, volume


def test_lowpt_pass_finds_strip_tracks_below_the_strip_pass_pt(event) -> None:
    """Without pixel hits and after the 0.25 GeV strip pass took its hits, the low-pT pass still finds tracks, nearly
    all pure, among them particles below 0.25 GeV that the strip pass cannot find on the same hits (its seeds and tracks
    stop at 0.25 GeV)."""
    out, volume = event
    pixel_hits = np.flatnonzero(np.isin(volume, PIXELS))
    first = run_ckf(out, [0], shipped_config(STRIPS), exclude={0: pixel_hits})
    t1, h1 = (np.asarray(a, np.int64) for a in first.candidates[0])
    exclude = np.union1d(pixel_hits, h1 - 1)
    res = run_ckf(out, [0], shipped_config(LOWPT), exclude={0: exclude})
    t2, h2 = (np.asarray(a, np.int64) for a in res.candidates[0])
    assert not np.isin(h2 - 1, exclude).any()
    ev = read_event(out, 0, parts=("particles", "truth"))
    pid = ev.truth.sort_values("hit_id")["particle_id"].to_numpy()
    parts = ev.particles.set_index("particle_id")
    pt = np.hypot(parts["px"], parts["py"])
    major = _majority(pid, t2, h2)
    assert len(major) >= 3
    assert np.mean([f >= 0.5 for _, f in major.values()]) > 0.8
    low = {p for p, f in major.values() if f >= 0.5 and p in pt.index and pt[p] < 0.25}
    assert len(low) >= 2
    # the 0.25 GeV strip pass on the same hits finds none of them
    again = run_ckf(out, [0], shipped_config(STRIPS), exclude={0: exclude})
    t3, h3 = (np.asarray(a, np.int64) for a in again.candidates[0])
    assert not low & {p for p, f in _majority(pid, t3, h3).values() if f >= 0.5}
