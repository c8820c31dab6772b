"""The first pass with one CKF branch per surface (``configs/tracking/ckf_budget_pass1_lean_chi2_1branch.yaml``) and
the finder that runs it (``..._allpix_extcap_1branch.yaml``; issue 14, tag h21c)."""

from __future__ import annotations

import numpy as np
import pytest
from _tracking_helpers import simulated_ttbar_event

from lhcml.config import shipped_config
from lhcml.errors import ConfigError
from lhcml.tasks.tracking.acts_reco import load_reco_config
from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config

PASS1 = "tracking/ckf_budget_pass1_lean_chi2.yaml"
ONE = "tracking/ckf_budget_pass1_lean_chi2_1branch.yaml"
REGISTERED = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap.yaml"
FINDER = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_1branch.yaml"


def test_finder_is_the_registered_one_with_the_first_pass_on_one_branch() -> None:
    """Every pass, classifier and hit recovery of ml-seeds+ckf-8pass-allpix-extcap; the first pass's reco differs only
    in max_branches (2 -> 1), and the selection only in pass 3's cut (0.025; every other pass keeps 0.03)."""
    old, new = (load_ml_seeds_config(shipped_config(f)) for f in (REGISTERED, FINDER))
    assert old.reco == PASS1 and new.reco == ONE
    assert new.model_copy(update={"reco": PASS1, "track_selection": old.track_selection}) == old
    assert old.track_selection.pass_cuts == {} and new.track_selection.pass_cuts == {3: 0.025}
    assert new.track_selection.model_copy(update={"pass_cuts": {}}) == old.track_selection
    assert new.track_selection.cuts([1, 2, 3, 4, 8]).tolist() == [0.03, 0.03, 0.025, 0.03, 0.03]
    p_old, p_new = (load_reco_config(shipped_config(f)) for f in (PASS1, ONE))
    assert (p_old.ckf.max_branches, p_new.ckf.max_branches) == (2, 1)
    assert p_new.model_copy(update={"ckf": p_old.ckf}) == p_old
    assert p_new.ckf.model_copy(update={"max_branches": 2}) == p_old.ckf


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two"])
def test_bad_max_branches_is_one_config_error(bad) -> None:
    with pytest.raises(ConfigError, match="max_branches"):
        load_reco_config({"ckf": {"max_branches": bad}})


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    return simulated_ttbar_event(tmp_path_factory, "one_branch", 11)


def test_one_branch_reaches_the_ckf(event) -> None:
    """On a simulated tt-bar event, the first pass's CKF with every candidate kept (no ambiguity resolution, no seed
    deduplication): two branches per surface give more tracks than there are with one, and the one-branch tracks
    (the best-chi2 measurement on each surface) are nearly all among the two-branch tracks, which only add branches."""
    from lhcml.tasks.tracking.acts_reco import run_ckf

    def tracks(branches: int) -> list[tuple[int, ...]]:
        reco = load_reco_config(shipped_config(ONE)).model_copy(deep=True)
        reco.ckf.max_branches = branches
        reco.ckf.seed_deduplication = False
        reco.ambiguity.method = "none"
        t, h = run_ckf(event, [0], reco).candidates[0]
        return [tuple(sorted(h[t == k].tolist())) for k in np.unique(t)]

    one, two = tracks(1), tracks(2)
    assert len(one) > 50
    assert len(two) > len(one)
    kept = set(two)
    assert np.mean([x in kept for x in one]) > 0.9


TF7 = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7.yaml"
BOTH = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml"


def test_combination_is_tf7_with_the_first_pass_on_one_branch() -> None:
    """``..._tf7_1branch.yaml`` (integrator, twenty-first version): h21b's tf7 finder (retrained classifier, pass 8
    from 7 measurements) with h21c's one-branch first pass, nothing else — tf7's selection (0.02 on every pass), not
    h21c's pass-3 cut that was chosen for the old classifier."""
    tf7, both = (load_ml_seeds_config(shipped_config(f)) for f in (TF7, BOTH))
    assert tf7.reco == PASS1 and both.reco == ONE
    assert both.model_copy(update={"reco": PASS1}) == tf7
    assert both.track_selection.pass_cuts == {} and both.track_selection.cut == 0.02
