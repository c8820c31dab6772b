"""The track classifier retrained on the tracks of the finder it serves (issue 14, tag h21b):
``models/tracking/track_filter_allpix.ckpt`` (``configs/tracking/track_filter_allpix.yaml``; tracks of
``configs/tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7.yaml`` with its
selection off) and that candidate finder: the registered ``ml-seeds+ckf-8pass-allpix-extcap`` with pass 8's tracks from
7 measurements and this classifier in its track selection (docs/benchmarks/tracking.md, twenty-first version)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _tracking_helpers import shipped_track_filter, track_classifier_on_held_out

from lhcml.config import shipped_config
from lhcml.tasks.tracking import seed_filter as S
from lhcml.tasks.tracking.acts_reco import load_reco_config

CKPT = "models/tracking/track_filter_allpix.ckpt"
CANDIDATE = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7.yaml"
REGISTERED = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap.yaml"
#: tracks the classifier never saw: the candidate's fitted tracks (selection off) of validation event train_mu200 17
#: (every fake, 1 000 real tracks drawn with seed 0; features and labels as in its tracks-allpix7 files)
HELD_OUT = Path(__file__).parent / "data" / "tracks_allpix7_train_mu200_17.npz"


def test_allpix_classifier_loads_safely_and_matches_its_training_config() -> None:
    """Small checkpoint of weights and metadata (weights_only=True), the track_filter model on the finder's features,
    trained by configs/tracking/track_filter_allpix.yaml on the tracks-allpix7 files of train_mu200 0-9."""
    _, stored, train = shipped_track_filter(CKPT, "tracking/track_filter_allpix.yaml", "allpix7")
    assert stored["data"]["train_events"] == train["data"]["train_events"] == [list(range(10))]
    assert stored["data"]["val_events"] == [[18, 19]]


def test_allpix_classifier_beats_a_constant_on_held_out_tracks() -> None:
    """On tracks it never saw the classifier's log-loss is far below the best constant's (the entropy of the fake
    fraction), its ROC area is high, and at the candidate's cut it removes nearly all fakes and few real tracks."""
    s, y, loss_ratio, auc = track_classifier_on_held_out(CKPT, HELD_OUT)
    assert y.sum() > 100
    x = np.load(HELD_OUT)["features"]
    assert (x[:, -1] == 8).any() and (x[y, -1] == 8).any()  # pass 8's tracks (the new ones) among them, fakes too
    assert loss_ratio < 0.3
    assert auc > 0.98
    cut = S.load_ml_seeds_config(shipped_config(CANDIDATE)).track_selection.cut
    gone = s >= cut
    assert gone[y].mean() > 0.9 and gone[~y].mean() < 0.05


def test_candidate_is_the_registered_finder_with_7_measurement_pass_8_and_the_new_classifier() -> None:
    """The candidate differs from the registered finder only in pass 8's reco config (min_measurements 8 -> 7, nothing
    else) and the track selection's checkpoint and cut; its hit recovery is the registered one."""
    from lhcml.tasks.tracking.track_quality import TrackSelection

    reg = S.load_ml_seeds_config(shipped_config(REGISTERED))
    new = S.load_ml_seeds_config(shipped_config(CANDIDATE))
    assert reg.track_selection == TrackSelection(checkpoint="models/tracking/track_filter.ckpt", cut=0.03)
    assert new.track_selection.checkpoint == CKPT and not new.track_selection.max_chi2_ndf
    assert new.extend == reg.extend and new.extend is not None
    passes = [*new.more_passes[:-1], new.more_passes[-1].model_copy(update={"reco": reg.more_passes[-1].reco})]
    assert new.model_copy(update={"more_passes": passes, "track_selection": reg.track_selection}) == reg
    old, p8 = load_reco_config(shipped_config(reg.more_passes[-1].reco)), load_reco_config(shipped_config(new.more_passes[-1].reco))
    assert reg.more_passes[-1].reco != new.more_passes[-1].reco
    assert (old.ckf.min_measurements, p8.ckf.min_measurements) == (8, 7)
    assert p8.model_copy(update={"ckf": p8.ckf.model_copy(update={"min_measurements": 8})}) == old


MARGIN = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7pc.yaml"


def test_margin_candidate_is_tf7_with_its_cut_raised_except_passes_7_and_8() -> None:
    """``..._tf7pc.yaml`` (docs/benchmarks/tracking.md, "Spending the margin"): tf7 with the classifier's cut at 0.03
    except passes 7 and 8 (tf7's 0.02), nothing else changed. On tracks the classifier never saw it keeps every track
    tf7 keeps, removes the same tracks of passes 7 and 8, and keeps more of the other passes' tracks."""
    tf7 = S.load_ml_seeds_config(shipped_config(CANDIDATE))
    new = S.load_ml_seeds_config(shipped_config(MARGIN))
    assert new.model_copy(update={"track_selection": tf7.track_selection}) == tf7
    sel = new.track_selection
    assert (sel.checkpoint, sel.cut, sel.pass_cuts) == (CKPT, 0.03, {7: 0.02, 8: 0.02})
    s, y, _, _ = track_classifier_on_held_out(CKPT, HELD_OUT)
    p = np.load(HELD_OUT)["features"][:, -1].astype(int)
    gone_tf7, gone_new = s >= tf7.track_selection.cuts(p), s >= sel.cuts(p)
    assert not (gone_new & ~gone_tf7).any()
    assert (gone_new[p >= 7] == gone_tf7[p >= 7]).all()
    assert (gone_tf7 & ~gone_new & (p < 7)).any()
    assert gone_new[y].mean() > 0.9


COMBINED = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml"
COMBINED_PC = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch_pc.yaml"


def test_combined_margin_variant_keeps_pass_3_at_the_old_cut() -> None:
    """``..._tf7_1branch_pc.yaml`` (integrator, twenty-first version): the registered tf7 + one-branch finder with the
    cut at 0.03 except passes 3, 7 and 8 (0.02: tf7pc's extra held-out fakes were pass-3 low-pT tracks), nothing else
    changed. On unseen tracks it removes exactly the same tracks of passes 3, 7 and 8 and no track the finder keeps."""
    old = S.load_ml_seeds_config(shipped_config(COMBINED))
    new = S.load_ml_seeds_config(shipped_config(COMBINED_PC))
    assert new.model_copy(update={"track_selection": old.track_selection}) == old
    sel = new.track_selection
    assert (sel.checkpoint, sel.cut, sel.pass_cuts) == (CKPT, 0.03, {3: 0.02, 7: 0.02, 8: 0.02})
    s, y, _, _ = track_classifier_on_held_out(CKPT, HELD_OUT)
    p = np.load(HELD_OUT)["features"][:, -1].astype(int)
    gone_old, gone_new = s >= old.track_selection.cuts(p), s >= sel.cuts(p)
    assert not (gone_new & ~gone_old).any()
    same = np.isin(p, [3, 7, 8])
    assert same.any() and (gone_new[same] == gone_old[same]).all()
    assert (gone_old & ~gone_new & ~same).any()
    assert gone_new[y].mean() > 0.9
