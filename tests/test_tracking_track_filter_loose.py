"""The track classifier retrained on a loose finder's tracks (issue 14, tag h19c): ``models/tracking/track_filter_loose.ckpt``
(``configs/tracking/track_filter_loose.yaml``; tracks of ``configs/tracking/ml_seeds_loose_tracks.yaml``) and the
candidate finder that uses it (docs/benchmarks/tracking_fakes.md, nineteenth version)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tracking_helpers import shipped_track_filter, track_classifier_on_held_out

from lhcml.config import shipped_config
from lhcml.errors import ConfigError
from lhcml.tasks.tracking import seed_filter as S
from lhcml.tasks.tracking.acts_reco import load_reco_config

CKPT = "models/tracking/track_filter_loose.ckpt"
#: tracks the classifier never saw: the loose finder's fitted tracks of validation event train_mu200 17 (every fake,
#: 1 000 real tracks drawn with seed 0; features and ACTS-matching labels as in its track files)
HELD_OUT = Path(__file__).parent / "data" / "tracks_loose_train_mu200_17.npz"


def test_loose_classifier_loads_safely_and_matches_its_training_config() -> None:
    """The checkpoint is small, weights and metadata only (weights_only=True), the track_filter model on the finder's
    features, trained by configs/tracking/track_filter_loose.yaml on the tracks-loose files of train_mu200 0-9."""
    _, stored, train = shipped_track_filter(CKPT, "tracking/track_filter_loose.yaml", "loose")
    assert stored["data"]["train_events"] == train["data"]["train_events"] == [list(range(10))]


def test_loose_classifier_beats_a_constant_on_held_out_tracks() -> None:
    """On tracks it never saw, the classifier's log-loss is far below the best constant's (the entropy of the fake
    fraction), its ROC area is high, and at the candidate finder's cut (0.05) it removes nearly all fakes and few
    real tracks."""
    s, y, loss_ratio, auc = track_classifier_on_held_out(CKPT, HELD_OUT)
    assert loss_ratio < 0.5
    assert auc > 0.95
    gone = s >= 0.05
    assert gone[y].mean() > 0.9 and gone[~y].mean() < 0.03


def test_a_checkpoint_of_other_track_features_is_refused(tmp_path) -> None:
    """The checkpoint keeps its feature list: the same weights with one feature renamed (a feature the finder does
    not compute) or the features reordered are one ConfigError naming both lists, not a silent misreading."""
    import io

    import torch
    import yaml

    from lhcml.config import resolve_model_path
    from lhcml.tasks.tracking.track_quality import track_classifier

    raw = torch.load(resolve_model_path(CKPT), map_location="cpu", weights_only=True)
    init = yaml.safe_load(raw["lhcml"]["model_init_yaml"])
    names = list(init["feature_names"])
    for k, bad in enumerate([[*names[:-1], "n_shared_hits"], [names[1], names[0], *names[2:]]]):
        meta = {**raw["lhcml"], "model_init_yaml": yaml.safe_dump({**init, "feature_names": bad})}
        buf = io.BytesIO()
        torch.save({"state_dict": raw["state_dict"], "lhcml": meta}, buf)
        path = tmp_path / f"other_features_{k}.ckpt"
        path.write_bytes(buf.getvalue())
        with pytest.raises(ConfigError, match="trained on the track features"):
            track_classifier(str(path))


def test_candidate_is_the_strips_finder_with_the_retrained_classifier_at_005() -> None:
    """ml_seeds_6pass_budget_quality_ext_spend_strips_retrained.yaml differs from the strips candidate only in its
    track selection's checkpoint and cut."""
    from lhcml.tasks.tracking.track_quality import TrackSelection

    strips = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext_spend_strips.yaml"))
    new = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext_spend_strips_retrained.yaml"))
    assert new.track_selection == TrackSelection(checkpoint=CKPT, cut=0.05)
    assert strips.track_selection == TrackSelection(checkpoint="models/tracking/track_filter.ckpt", cut=0.03)
    assert new.model_copy(update={"track_selection": strips.track_selection}) == strips


def test_loose_track_finder_is_the_strips_finder_with_the_blocked_loosenings() -> None:
    """ml_seeds_loose_tracks.yaml (the classifier's training tracks): the strips candidate without selection, with 4
    seeds per middle space point at seed cuts 0.02 / 0.005 in passes 3-4 and 7-measurement tracks in passes 2, 4 and
    forward; its new pass configs differ from the strips finder's only in min_measurements (8 -> 7)."""
    strips = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext_spend_strips.yaml"))
    loose = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_loose_tracks.yaml"))
    assert loose.track_selection is None
    passes = [loose.more_passes[0].model_copy(update={"cut": 0.03, "max_per_spm": 3}),
              loose.more_passes[1].model_copy(update={"reco": strips.more_passes[1].reco, "cut": 0.01, "max_per_spm": 3}),
              loose.more_passes[2].model_copy(update={"reco": strips.more_passes[2].reco}), loose.more_passes[3]]  # fmt: skip
    assert (loose.more_passes[0].cut, loose.more_passes[0].max_per_spm) == (0.02, 4)
    assert (loose.more_passes[1].cut, loose.more_passes[1].max_per_spm) == (0.005, 4)
    restored = loose.model_copy(update={"second_pass": strips.second_pass, "more_passes": passes,
                                        "track_selection": strips.track_selection})  # fmt: skip
    assert restored == strips
    for old_name, new_name in [(strips.second_pass, loose.second_pass), (strips.more_passes[1].reco, loose.more_passes[1].reco),
                               (strips.more_passes[2].reco, loose.more_passes[2].reco)]:  # fmt: skip
        old, new = load_reco_config(shipped_config(old_name)), load_reco_config(shipped_config(new_name))
        assert old_name != new_name and old.ckf.min_measurements == 8 and new.ckf.min_measurements == 7
        assert new.model_copy(update={"ckf": new.ckf.model_copy(update={"min_measurements": 8})}) == old
