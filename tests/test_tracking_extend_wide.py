"""The wider hit recovery of ``ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_extwide.yaml`` (issue 14,
tag h20b): ml-seeds+ckf-8pass-quality with the recovery's cuts 6 x wider, a 5-measurement local helix and tracks up to
3 mm from their own circle extended; every pass, the selection and the candidate search unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from test_tracking_extend import TRACK, event

from lhcml.config import shipped_config
from lhcml.tasks.tracking.extend import extend_tracks
from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config

REGISTERED = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml"
WIDE = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_extwide.yaml"


def configs():
    return load_ml_seeds_config(shipped_config(REGISTERED)), load_ml_seeds_config(shipped_config(WIDE))


def test_only_the_recovery_differs_from_the_registered_finder() -> None:
    """Passes, classifiers, selection: the registered finder's. The recovery keeps its volume groups, window,
    preselection and minimum track length; its cuts are the registered ones x 6, its local helix 5 measurements,
    its track-spread cap 3 mm."""
    old, new = configs()
    assert new.model_copy(update={"extend": old.extend}) == old
    a, b = old.extend, new.extend
    assert (b.window, b.preselect, b.min_hits) == (a.window, a.preselect, a.min_hits)
    assert [c.volumes for c in b.cuts] == [c.volumes for c in a.cuts]
    for ca, cb in zip(a.cuts, b.cuts, strict=True):
        assert (cb.transverse, cb.longitudinal) == pytest.approx((6.0 * ca.transverse, 6.0 * ca.longitudinal))
    assert (a.local, b.local) == (4, 5) and (a.max_track_spread, b.max_track_spread) == (2.0, 3.0)


def test_the_wide_recovery_takes_a_hit_the_registered_one_leaves() -> None:
    """On a constructed pixel track (volume 8, hits on layers 1, 2, 4, 5, 6) a free hit past its last measurement
    (layer 7) 3 mm off the helix in z is added by the wide cuts (6 mm) and not by the registered ones (1 mm); a hit
    on layer 8 10 mm off is added by neither; the hole's hit on the helix (layer 3) by both."""
    old, new = configs()
    x, y, z, vol, lay, mod = event([(3, 0.0, 0.0, 0.05), (7, 0.0, 0.0, 3.0), (8, 0.0, 0.0, 10.0)])
    n = len(x)
    t_old, h_old, _ = extend_tracks(*TRACK, x, y, z, vol, lay, mod, old.extend)
    t_new, h_new, _ = extend_tracks(*TRACK, x, y, z, vol, lay, mod, new.extend)
    assert h_old[5:].tolist() == [n - 2]
    assert sorted(h_new[5:].tolist()) == [n - 2, n - 1]
    assert np.all(t_new[5:] == 0) and np.array_equal(h_new[:5], TRACK[1])
