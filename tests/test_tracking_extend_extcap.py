"""The guarded wide hit recovery of ``ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_extcap.yaml``
(issue 14, tag h20b): extwide with the cuts 4 x the registered ones (not 6 x) and a cap of 0.35 x a track's
measurements on its additions, those within the registered cuts exempt; everything else is extwide's."""

from __future__ import annotations

import numpy as np
import pytest
from test_tracking_extend import TRACK, event

from lhcml.config import shipped_config
from lhcml.tasks.tracking.extend import extend_tracks
from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config

REGISTERED = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml"
WIDE = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_extwide.yaml"
CAP = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_extcap.yaml"


def configs():
    return tuple(load_ml_seeds_config(shipped_config(n)) for n in (REGISTERED, WIDE, CAP))


def test_only_the_cuts_and_the_cap_differ_from_extwide() -> None:
    reg, wide, cap = configs()
    assert cap.model_copy(update={"extend": wide.extend}) == wide
    assert cap.extend.model_copy(update={"cuts": wide.extend.cuts, "cap": None}) == wide.extend
    assert wide.extend.cap is None and reg.extend.cap is None
    assert cap.extend.cap.fraction == pytest.approx(0.35)
    for cr, cc in zip(reg.extend.cuts, cap.extend.cuts, strict=True):
        assert cc.volumes == cr.volumes
        assert (cc.transverse, cc.longitudinal) == pytest.approx((4.0 * cr.transverse, 4.0 * cr.longitudinal))
        # the exempt additions are exactly those within the registered cuts
        assert cap.extend.cap.exempt * cc.transverse == pytest.approx(cr.transverse)


def test_the_cap_leaves_a_five_hit_track_its_closest_wide_addition() -> None:
    """A constructed 5-hit pixel track with two free hits beyond the registered cuts (1.5 and 3 mm off the helix in z,
    within the 4 mm of the wide cuts): the registered recovery adds neither, the same cuts without the cap both, the
    shipped config (quota floor(0.35 x 5) = 1) the closer one only."""
    reg, _, cap = configs()
    x, y, z, vol, lay, mod = event([(7, 0.0, 0.0, 3.0), (8, 0.0, 0.0, 1.5)])
    n = len(x)

    def added(cfg):
        t, h, _ = extend_tracks(*TRACK, x, y, z, vol, lay, mod, cfg)
        assert np.array_equal(h[:5], TRACK[1]) and np.all(t[5:] == 0)
        return sorted(h[5:].tolist())

    assert added(reg.extend) == []
    assert added(cap.extend.model_copy(update={"cap": None})) == [n - 1, n]
    assert added(cap.extend) == [n]


def test_the_combined_finder_is_allpix_with_the_extcap_recovery() -> None:
    """``..._allpix_extcap.yaml`` (registered as ml-seeds+ckf-8pass-allpix-extcap): every pass, classifier and
    selection of the all-pixel candidate (h20c), the recovery of extcap -- nothing of either lost or changed."""
    allpix, cap, comb = (load_ml_seeds_config(shipped_config(n)) for n in (
        "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix.yaml", CAP,
        "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap.yaml"))
    assert comb.extend == cap.extend and comb.extend != allpix.extend
    assert comb.model_copy(update={"extend": allpix.extend}) == allpix
    assert comb != cap
