"""The ninth pass with tracks from 5 measurements (``configs/tracking/ckf_pass9_pixels_lowpt_allpix_5hits.yaml``) and the
finder that runs it after the registered eight passes (``..._tf7_1branch_pass9.yaml``; issue 14, tag h22c)."""

from __future__ import annotations

import numpy as np
import pytest
from _tracking_helpers import simulated_ttbar_event

from lhcml.config import shipped_config
from lhcml.tasks.tracking.acts_reco import load_reco_config
from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config

PASS8 = "tracking/ckf_pass8_pixels_lowpt_allpix_7hits.yaml"
PASS9 = "tracking/ckf_pass9_pixels_lowpt_allpix_5hits.yaml"
REGISTERED = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml"
FINDER = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch_pass9.yaml"


def test_pass9_is_pass8_with_tracks_from_5_measurements() -> None:
    """Pass 8's seeding and CKF; only the CKF's and the ambiguity resolution's minimum measurements differ (7 -> 5)."""
    p8, p9 = (load_reco_config(shipped_config(f)) for f in (PASS8, PASS9))
    assert (p8.ckf.min_measurements, p9.ckf.min_measurements) == (7, 5)
    assert (p8.ambiguity.n_measurements_min, p9.ambiguity.n_measurements_min) == (7, 5)
    assert p9.model_copy(update={"ckf": p8.ckf, "ambiguity": p8.ambiguity}) == p8
    assert p9.ckf.model_copy(update={"min_measurements": 7}) == p8.ckf
    assert p9.ambiguity.model_copy(update={"n_measurements_min": 7}) == p8.ambiguity


def test_finder_is_the_registered_one_with_a_ninth_pass() -> None:
    """The registered finder's eight passes, classifiers, selection and hit recovery unchanged; one more pass (pass 8's
    seed classifier, cut and seeds per middle space point) and a cut of its own for its tracks in the selection,
    which applies to pass-9 tracks only."""
    reg, new = (load_ml_seeds_config(shipped_config(f)) for f in (REGISTERED, FINDER))
    assert new.more_passes[:-1] == reg.more_passes
    p8, p9 = reg.more_passes[-1], new.more_passes[-1]
    assert p8.reco == PASS8 and p9.reco == PASS9
    assert p9.model_copy(update={"reco": PASS8}) == p8
    assert reg.track_selection.pass_cuts == {} and set(new.track_selection.pass_cuts) == {9}
    assert new.track_selection.model_copy(update={"pass_cuts": {}}) == reg.track_selection
    c9 = new.track_selection.pass_cuts[9]
    assert 0.0 < c9 < reg.track_selection.cut
    assert new.track_selection.cuts([1, 3, 8, 9]).tolist() == [reg.track_selection.cut] * 3 + [c9]
    assert new.model_copy(update={"more_passes": reg.more_passes, "track_selection": reg.track_selection}) == reg


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    return simulated_ttbar_event(tmp_path_factory, "pass9_short", 13)


def test_short_tracks_need_the_ambiguity_floor_lowered_too(event) -> None:
    """On a simulated tt-bar event, pass 9's CKF with the ambiguity resolution's floor left at 7 returns no track below
    7 measurements (the CKF's own minimum of 5 alone changes nothing below 7); with the floor at 5 (the shipped pass)
    it returns tracks of 5-6 measurements, none below 5."""
    from lhcml.tasks.tracking.acts_reco import run_ckf

    def nmeas(floor: int) -> np.ndarray:
        reco = load_reco_config(shipped_config(PASS9)).model_copy(deep=True)
        reco.ambiguity.n_measurements_min = floor
        return np.asarray(run_ckf(event, [0], reco).tracks[0].nhits)

    floor7, floor5 = nmeas(7), nmeas(5)
    assert len(floor7) > 20
    assert floor7.min() >= 7
    assert floor5.min() >= 5
    assert ((floor5 >= 5) & (floor5 < 7)).sum() > 0
    assert len(floor5) > len(floor7)
