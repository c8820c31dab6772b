"""Hit recovery after the last pass (:mod:`lhcml.tasks.tracking.extend`, key ``extend`` of the ml-seeds config;
issue 14, docs/benchmarks/tracking.md eighteenth version)."""

from __future__ import annotations

import numpy as np
import pytest
from _tracking_helpers import simulated_ttbar_event

from lhcml.errors import ConfigError
from lhcml.tasks.tracking.extend import ExtendConfig, HitCuts, extend_tracks, fit_helices

RADII = (32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0)  # barrel layers 1..8 of volume 8
CFG = ExtendConfig(cuts=[HitCuts(volumes=[8], transverse=0.2, longitudinal=1.0)])


def helix_point(r: float, rho: float = 833.0, phi_start: float = 0.3, cot: float = 0.5) -> tuple[float, float, float]:
    """The point at radius ``r`` of a helix from the origin (circle radius ``rho`` mm, turning counter-clockwise,
    initial direction ``phi_start``, dz/ds = ``cot``)."""
    alpha = 2.0 * np.arcsin(r / (2.0 * rho))  # turning angle at radius r
    cx, cy = -rho * np.sin(phi_start), rho * np.cos(phi_start)  # centre left of the direction
    phi = np.arctan2(-cy, -cx) + alpha
    return cx + rho * np.cos(phi), cy + rho * np.sin(phi), cot * rho * alpha


def event(extra: list[tuple[int, float, float, float]]) -> tuple[np.ndarray, ...]:
    """Hits (x, y, z, volume, layer, module) of one track on layers 1, 2, 4, 5, 6 (a hole on layer 3), background
    hits spread along z on every layer (far from the track), then ``extra`` hits (layer, dx, dy, dz) placed at the
    track's point on that layer, shifted."""
    rng = np.random.default_rng(5)
    rows = []
    for layer in (1, 2, 4, 5, 6):
        x, y, z = helix_point(RADII[layer - 1])
        rows.append((x + rng.normal(0, 0.01), y + rng.normal(0, 0.01), z + rng.normal(0, 0.01), 8, layer, 1))
    for layer, r in enumerate(RADII, start=1):  # background: the opposite side, |z| up to 400 mm
        for k, zz in enumerate(np.linspace(-400.0, 400.0, 9)):
            rows.append((-r, 0.0, zz, 8, layer, 100 + k))
    for k, (layer, dx, dy, dz) in enumerate(extra):
        x, y, z = helix_point(RADII[layer - 1])
        rows.append((x + dx, y + dy, z + dz, 8, layer, 10 + k))
    a = np.array(rows, dtype=float)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3].astype(int), a[:, 4].astype(int), a[:, 5].astype(int)


TRACK = (np.zeros(5, np.int64), np.arange(1, 6, dtype=np.int64))  # track 0 = the first five hits


def test_helix_fit_recovers_a_constructed_helix() -> None:
    """The circle through points of a known helix has its radius and centre; z is linear in the turning angle."""
    pts = np.array([helix_point(r) for r in RADII])
    f = fit_helices(np.zeros(len(pts), np.int64), pts[:, 0], pts[:, 1], pts[:, 2], 1)
    assert f["ok"][0]
    assert f["rho"][0] == pytest.approx(833.0, rel=1e-6)
    assert (f["cx"][0], f["cy"][0]) == pytest.approx((-833.0 * np.sin(0.3), 833.0 * np.cos(0.3)), abs=1e-3)
    assert f["k"][0] == pytest.approx(0.5 * 833.0, rel=1e-6) and f["z0"][0] == pytest.approx(0.0, abs=1e-6)


def test_compatible_hits_added_far_ones_not() -> None:
    """The hole's hit (layer 3) and the next layer's (7, outwards) on the helix are added; the same hit 5 mm off in z
    (layer 8) and a background hit are not; the track's rows come first, unchanged."""
    x, y, z, vol, lay, mod = event([(3, 0.02, -0.01, 0.05), (7, 0.0, 0.02, -0.1), (8, 0.0, 0.0, 5.0)])
    n = len(x)
    t, h, info = extend_tracks(*TRACK, x, y, z, vol, lay, mod, CFG)
    assert np.array_equal(t[:5], TRACK[0]) and np.array_equal(h[:5], TRACK[1])
    assert sorted(h[5:].tolist()) == [n - 2, n - 1]  # hit ids of the layer-3 and layer-7 hits
    assert np.all(t[5:] == 0) and info["added"] == 2
    # tighter longitudinal cut than the layer-7 hit's 0.1 mm offset: that one is no longer added
    tight = ExtendConfig(cuts=[HitCuts(volumes=[8], transverse=0.2, longitudinal=0.05)])
    assert extend_tracks(*TRACK, x, y, z, vol, lay, mod, tight)[1][5:].tolist() == [n - 2]


def test_one_hit_per_module_and_the_closest_track_wins() -> None:
    """Two free hits on one module (0.02 and 0.3 mm off in z): only the closer is added. With a second track (the
    first one's hits shifted by +0.15 mm in z) each hit goes to the track closer to it: the first to track 0, the
    second (0.15 mm from track 1, 0.3 mm from track 0) to track 1."""
    x, y, z, vol, lay, mod = event([(3, 0.0, 0.0, 0.02), (3, 0.0, 0.0, 0.3)])
    mod[-1] = mod[-2]  # both extra hits on one module
    n = len(x)
    t, h, _ = extend_tracks(*TRACK, x, y, z, vol, lay, mod, CFG)
    assert h[5:].tolist() == [n - 1]  # hit ids n - 1, n: the hit 0.02 mm off, not the one 0.3 mm off
    # a second track: the first one's hits moved by +0.15 mm in z (its own hits, appended)
    x2, y2, z2 = (np.r_[a, a[:5]] for a in (x, y, z))
    z2[-5:] += 0.15
    vol2, lay2, mod2 = np.r_[vol, vol[:5]], np.r_[lay, lay[:5]], np.r_[mod, mod[:5] + 50]
    t2 = np.r_[TRACK[0], np.ones(5, np.int64)]
    h2 = np.r_[TRACK[1], np.arange(n + 1, n + 6)]
    t, h, _ = extend_tracks(t2, h2, x2, y2, z2, vol2, lay2, mod2, CFG)
    assert dict(zip(h[10:].tolist(), t[10:].tolist(), strict=True)) == {n - 1: 0, n: 1}


def test_short_tracks_and_unlisted_volumes_take_nothing() -> None:
    """A track below min_hits is not extended; hits of volumes in no cut group are never added."""
    x, y, z, vol, lay, mod = event([(3, 0.0, 0.0, 0.0)])
    t, h, info = extend_tracks(*TRACK, x, y, z, vol, lay, mod, CFG.model_copy(update={"min_hits": 6}))
    assert len(h) == 5 and info["added"] == 0
    other = ExtendConfig(cuts=[HitCuts(volumes=[13], transverse=0.2, longitudinal=1.0)])
    assert len(extend_tracks(*TRACK, x, y, z, vol, lay, mod, other)[1]) == 5


def test_bad_extend_config_is_one_clear_error() -> None:
    """Unknown keys, a volume in two groups and a non-positive cut are ConfigErrors of the ml-seeds config."""
    from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config

    base = {"checkpoint": "x.ckpt", "extend": {"cuts": [{"volumes": [7], "transverse": 0.2, "longitudinal": 1.0}]}}
    assert load_ml_seeds_config(base).extend.cuts[0].volumes == [7]
    for bad in ({"cuts": [{"volumes": [7], "transverse": 0.2, "longitudinal": 1.0}], "windw": 3.0},
                {"cuts": [{"volumes": [7], "transverse": 0.2, "longitudinal": 1.0},
                          {"volumes": [7, 8], "transverse": 1.0, "longitudinal": 5.0}]},
                {"cuts": [{"volumes": [7], "transverse": 0.0, "longitudinal": 1.0}]},
                {"cuts": []}):  # fmt: skip
        with pytest.raises(ConfigError):
            load_ml_seeds_config({**base, "extend": bad})


def test_a_track_of_two_particles_takes_nothing_with_max_track_spread() -> None:
    """A track whose outer two hits zigzag by 8 mm in r-phi (hits of other particles) lies more than 2 mm from its
    own fitted circle: with max_track_spread 2 mm it takes nothing; without, the hole's hit still fits the local
    helix through its three nearest measurements (layers 1, 2, 4)."""
    x, y, z, vol, lay, mod = event([(3, 0.0, 0.0, 0.0)])
    for k, shift in ((3, 8.0), (4, -8.0)):  # the hits on layers 5, 6: rotated by shift / r
        a = shift / np.hypot(x[k], y[k])
        x[k], y[k] = x[k] * np.cos(a) - y[k] * np.sin(a), x[k] * np.sin(a) + y[k] * np.cos(a)
    wide = CFG.model_copy(update={"local": 3, "cuts": [HitCuts(volumes=[8], transverse=0.5, longitudinal=1.0)]})
    assert extend_tracks(*TRACK, x, y, z, vol, lay, mod, wide)[2]["added"] == 1
    capped = wide.model_copy(update={"max_track_spread": 2.0})
    assert extend_tracks(*TRACK, x, y, z, vol, lay, mod, capped)[2]["added"] == 0
    assert extend_tracks(*TRACK, x, y, z, vol, lay, mod, wide.model_copy(update={"max_track_spread": 50.0}))[2]["added"] == 1


@pytest.fixture(scope="module")
def ttbar_event(tmp_path_factory):
    return simulated_ttbar_event(tmp_path_factory, "extend", 32)


def test_finder_with_extend_keeps_every_track_and_adds_only_free_hits(ttbar_event) -> None:
    """The shipped config with hit recovery on a simulated tt-bar event: the same tracks as the headline finder
    (extend: null) with the same hits first, then added hits that no track held, each once and on an existing track,
    and a TrackML score at least as high; the step's CPU is the stage ``extend``."""
    from lhcml.config import shipped_config
    from lhcml.data.trackml import read_event
    from lhcml.metrics.tracking import score_candidates
    from lhcml.tasks.tracking import seed_filter as S

    cfg = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips_lean_ext.yaml"))
    off = S.ml_seeds_ckf(ttbar_event, 0, cfg.model_copy(update={"extend": None}))
    on = S.ml_seeds_ckf(ttbar_event, 0, cfg)
    n = len(off["hit_id"])
    assert np.array_equal(on["track_id"][:n], off["track_id"]) and np.array_equal(on["hit_id"][:n], off["hit_id"])
    added_t, added_h = on["track_id"][n:], on["hit_id"][n:]
    assert len(added_h) == on["n_extended"] > 0 and np.isin(added_t, off["track_id"]).all()
    assert not np.isin(added_h, off["hit_id"]).any() and len(np.unique(added_h)) == len(added_h)
    assert "extend" in on["timings"] and "extend" not in off["timings"]
    truth = read_event(ttbar_event, 0, parts=("hits", "truth")).truth
    assert score_candidates(truth, on["track_id"], on["hit_id"]) >= score_candidates(truth, off["track_id"], off["hit_id"])
