"""The cap on the hits one track gains in the hit recovery (``extend.cap``, issue 14, tag h20b): a track keeps its
additions closest first while they number fewer than ``fraction`` x its measurements, except those within ``exempt``
of the cuts; absent, the recovery is unchanged."""

from __future__ import annotations

import numpy as np
from test_tracking_extend import TRACK, event

from lhcml.tasks.tracking.extend import AddedCap, ExtendConfig, HitCuts, extend_tracks

WIDE = ExtendConfig(cuts=[HitCuts(volumes=[8], transverse=1.2, longitudinal=6.0)], local=5)
EXTRA = [(3, 0.0, 0.0, 0.05), (7, 0.0, 0.0, 3.0), (8, 0.0, 0.0, 1.5)]  # hole on the helix; 3 mm and 1.5 mm off in z


def added(cfg: ExtendConfig) -> tuple[np.ndarray, np.ndarray]:
    x, y, z, vol, lay, mod = event(EXTRA)
    t, h, info = extend_tracks(*TRACK, x, y, z, vol, lay, mod, cfg)
    assert np.array_equal(h[:5], TRACK[1]) and info["added"] == len(h) - 5
    return t, h


def test_without_a_cap_every_compatible_hit_is_added_and_a_loose_cap_changes_nothing() -> None:
    n = len(event(EXTRA)[0])
    t, h = added(WIDE)
    assert sorted(h[5:].tolist()) == [n - 2, n - 1, n]
    for cap in (None, AddedCap(fraction=1.0)):  # quota 5 >= the 3 additions
        t2, h2 = added(WIDE.model_copy(update={"cap": cap}))
        assert np.array_equal(t2, t) and np.array_equal(h2, h)


def test_the_cap_keeps_the_closest_additions_and_the_exempt_ones() -> None:
    """A 5-measurement track with fraction 0.25 (quota 1) gains the closest addition only (the hole's); with 0.4
    (quota 2) the hole's and the 1.5 mm one, not the 3 mm one. The quota counts every addition: with the hits within
    0.1 of the cuts (0.6 mm in z) exempt and fraction 0.2, the exempt hole's hit fills it; with fraction 0.1 (quota 0)
    the exempt hit alone is added, and nothing without the exemption."""
    n = len(event(EXTRA)[0])
    assert added(WIDE.model_copy(update={"cap": AddedCap(fraction=0.25)}))[1][5:].tolist() == [n - 2]
    assert sorted(added(WIDE.model_copy(update={"cap": AddedCap(fraction=0.4)}))[1][5:].tolist()) == [n - 2, n]
    capped = WIDE.model_copy(update={"cap": AddedCap(fraction=0.2, exempt=0.1)})
    assert added(capped)[1][5:].tolist() == [n - 2]
    assert added(WIDE.model_copy(update={"cap": AddedCap(fraction=0.1, exempt=0.1)}))[1][5:].tolist() == [n - 2]
    assert len(added(WIDE.model_copy(update={"cap": AddedCap(fraction=0.1)}))[1]) == 5
