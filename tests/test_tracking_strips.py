"""The strip-seeded pass (``configs/tracking/ckf_pass5_strips.yaml``): ACTS triplet seeds made of short-strip space
points only, the CKF from them outwards and, by its second (backward) search, inwards; and the finder config that runs
it after p34's four pixel-seeded passes (``configs/tracking/ml_seeds_4pass_budget_p34_strips.yaml``; issue 14)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tracking_helpers import ttbar_event_with_volumes

pytest.importorskip("acts")

from lhcml.config import shipped_config, shipped_configs_dir  # noqa: E402
from lhcml.data.trackml import read_event  # noqa: E402
from lhcml.tasks.tracking import seed_filter as S  # noqa: E402
from lhcml.tasks.tracking.acts_reco import (  # noqa: E402
    load_reco_config,
    run_ckf,
)

PIXELS = {7, 8, 9}
SHORT_STRIPS = {12, 13, 14}
STRIPS = SHORT_STRIPS | {16, 17, 18}
STRIP_PASS = "tracking/ckf_pass5_strips.yaml"


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    """One tt-bar event at mu = 0 and the volume of each of its measurements (index = hit_id - 1)."""
    return ttbar_event_with_volumes(tmp_path_factory, "strips", 31)


def _majority(
    truth_pid: np.ndarray, track_id: np.ndarray, hit_id: np.ndarray
) -> dict[int, tuple[int, float]]:
    """Per track: its majority particle and the fraction of its hits on it."""
    out = {}
    for t in np.unique(track_id):
        pids = truth_pid[hit_id[track_id == t] - 1]
        vals, counts = np.unique(pids, return_counts=True)
        out[int(t)] = (int(vals[np.argmax(counts)]), float(counts.max() / counts.sum()))
    return out


def test_strip_pass_seeds_in_the_short_strips_within_acts_limits(event) -> None:
    """The pass's space points are the short strips' (volumes 12-14, every layer), its seeding radius covers every
    short-strip measurement, and its min pT keeps r_max within ACTS's grid limit (r_max <= twice the helix radius of
    min_pt); its seeds' impact parameter is wider than the first pass's and the track selection keeps the |d0| the
    seeding allows."""
    _, meas, volume = event
    reco = load_reco_config(shipped_config(STRIP_PASS))
    s = reco.seeding
    entries = json.loads((shipped_configs_dir() / s.geometry_selection).read_text(encoding="utf-8"))
    assert {e["volume"] for e in entries} == SHORT_STRIPS and all(
        set(e) == {"volume"} for e in entries
    )
    r = np.hypot(meas["x"], meas["y"]).to_numpy()[np.isin(volume, list(SHORT_STRIPS))]
    z = meas["z"].to_numpy()[np.isin(volume, list(SHORT_STRIPS))]
    assert len(r) > 100 and r.max() < s.r_max and s.z_range[0] < z.min() and z.max() < s.z_range[1]
    assert s.r_middle is not None and s.r_middle[0] < np.quantile(r, 0.5) < s.r_middle[1]
    helix_radius_mm = s.min_pt / (0.299792458 * reco.field_tesla) * 1000.0
    assert s.r_max <= 2.0 * helix_radius_mm
    prompt = load_reco_config(None)  # ckf.yaml: the first pass's seeding and selection
    assert (
        s.impact_max > prompt.seeding.impact_max
        and reco.ckf.loc0_max >= s.impact_max > prompt.ckf.loc0_max
    )


def test_strip_pass_finds_tracks_the_pixel_seeding_cannot(event) -> None:
    """With every pixel measurement taken away, ACTS's pixel seeding (ckf.yaml) has nothing to seed from and finds no
    track; the strip pass finds tracks there, each of strip hits only, >= 7 of them, nearly all on one particle, and
    it finds most of the particles that leave >= 7 strip hits at pT > 1 GeV."""
    out, _, volume = event
    pixel_hits = np.flatnonzero(np.isin(volume, list(PIXELS)))
    exclude = {0: pixel_hits}
    base = run_ckf(out, [0], None, exclude=exclude)
    assert len(base.candidates[0][1]) == 0
    res = run_ckf(out, [0], shipped_config(STRIP_PASS), exclude=exclude)
    track_id, hit_id = (np.asarray(a, np.int64) for a in res.candidates[0])
    assert len(np.unique(track_id)) >= 10
    assert not np.isin(hit_id - 1, pixel_hits).any()
    assert np.bincount(track_id)[np.unique(track_id)].min() >= 7  # hits per track
    ev = read_event(out, 0, parts=("hits", "particles", "truth"))
    pid = ev.truth.sort_values("hit_id")["particle_id"].to_numpy()
    major = _majority(pid, track_id, hit_id)
    purity = np.array([p for _, p in major.values()])
    assert np.mean(purity >= 0.5) > 0.9
    # particles with >= 7 strip hits and pT > 1 GeV: found (majority of a track) in most cases
    strip_hits = np.isin(volume, list(STRIPS))
    counts = (
        ev.truth.assign(strip=strip_hits[ev.truth["hit_id"].to_numpy() - 1])
        .groupby("particle_id")["strip"]
        .sum()
    )
    parts = ev.particles.set_index("particle_id")
    pt = np.hypot(parts["px"], parts["py"])
    wanted = {
        int(p) for p, n in counts.items() if n >= 7 and p in pt.index and pt[p] > 1.0 and p != 0
    }
    found = {p for p, f in major.values() if f >= 0.5}
    assert len(wanted) >= 20 and len(wanted & found) / len(wanted) > 0.8


def test_strip_seeded_tracks_reach_inwards_into_the_pixels(event) -> None:
    """Seeds whose space points are all strips still give tracks with pixel hits: ACTS's CKF (two-way) searches
    backwards from the seed's first measurement; those pixel hits are on the track's own particle."""
    out, _, volume = event
    res = run_ckf(out, [0], shipped_config(STRIP_PASS))
    track_id, hit_id = (np.asarray(a, np.int64) for a in res.candidates[0])
    ev = read_event(out, 0, parts=("truth",))
    pid = ev.truth.sort_values("hit_id")["particle_id"].to_numpy()
    major = _majority(pid, track_id, hit_id)
    on_pixels = np.isin(volume[hit_id - 1], list(PIXELS))
    with_pixels = np.unique(track_id[on_pixels])
    # most of them: the pixel layers lie inside every strip seed
    assert len(with_pixels) > len(np.unique(track_id)) / 2
    own = [
        np.mean(pid[hit_id[(track_id == t) & on_pixels] - 1] == major[int(t)][0])
        for t in with_pixels
    ]
    assert np.mean(own) > 0.8


def test_strips_finder_is_p34_plus_the_strip_pass() -> None:
    """ml_seeds_4pass_budget_p34_strips.yaml runs p34's passes unchanged, then the strip pass (every ACTS seed of it:
    no classifier); its reco config and geometry selection resolve as shipped files."""
    p34 = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget_p34.yaml"))
    strips = S.load_ml_seeds_config(
        shipped_config("tracking/ml_seeds_4pass_budget_p34_strips.yaml")
    )
    assert (
        strips.more_passes[:-1] == p34.more_passes
        and len(strips.more_passes) == len(p34.more_passes) + 1
    )
    assert strips.model_copy(update={"more_passes": p34.more_passes}) == p34
    last = strips.more_passes[-1]
    assert last.reco == STRIP_PASS and last.checkpoint is None and last.max_per_spm == 0
    selection = load_reco_config(shipped_config(last.reco)).seeding.geometry_selection
    assert (shipped_configs_dir() / selection).is_file()


def test_six_pass_finder_is_the_forward_finder_plus_the_strip_pass() -> None:
    """ml_seeds_6pass_budget_fwd_strips.yaml runs ml_seeds_5pass_budget_fwd.yaml's passes unchanged (p34's four and the
    forward pass), then the same strip pass as p34s, last."""
    fwd = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_5pass_budget_fwd.yaml"))
    six = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips.yaml"))
    p34s = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget_p34_strips.yaml"))
    assert six.model_copy(update={"more_passes": fwd.more_passes}) == fwd
    assert six.more_passes[:-1] == fwd.more_passes and six.more_passes[-1] == p34s.more_passes[-1]
