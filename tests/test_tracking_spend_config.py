"""ml_seeds_6pass_budget_quality_ext_spend.yaml (issue 14, tag h18d): the combined finder with more low-pT seeds
differs from ml_seeds_6pass_budget_quality_ext.yaml only where its header says."""

from __future__ import annotations

from lhcml.config import shipped_config
from lhcml.tasks.tracking import seed_filter as S
from lhcml.tasks.tracking.acts_reco import load_reco_config


def test_spend_finder_changes_only_the_stated_passes() -> None:
    old = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext.yaml"))
    new = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext_spend.yaml"))
    # everything but the further passes is the same: first two passes, track selection, hit recovery
    assert new.model_copy(update={"more_passes": []}) == old.model_copy(update={"more_passes": []})
    assert new.track_selection is not None and new.extend is not None
    p3, p4, fwd, strips = new.more_passes
    o3, o4, ofwd, ostrips = old.more_passes
    assert (p3.reco, p3.checkpoint) == (o3.reco, o3.checkpoint)
    assert (p3.cut, p3.max_per_spm, o3.cut, o3.max_per_spm) == (0.03, 3, 0.05, 2)
    assert p4.checkpoint == o4.checkpoint and (p4.cut, p4.max_per_spm, o4.cut, o4.max_per_spm) == (0.01, 3, 0.02, 2)
    assert fwd == ofwd
    assert strips.checkpoint is None and ostrips.checkpoint is None


def test_spend_reco_configs_change_only_the_stated_keys() -> None:
    p4_old = load_reco_config(shipped_config("tracking/ckf_pass4_budget.yaml"))
    p4_new = load_reco_config(shipped_config("tracking/ckf_pass4_budget_lowpt.yaml"))
    assert (p4_new.seeding.min_pt, p4_new.ckf.min_pt, tuple(p4_new.seeding.r_middle)) == (0.12, 0.12, (30.0, 120.0))
    assert (p4_old.seeding.min_pt, p4_old.seeding.r_middle) == (0.15, None)
    # r_max must stay below twice the helix radius at min_pt in the 2 T field (ACTS's grid)
    assert p4_new.seeding.r_max < 2 * p4_new.seeding.min_pt / (0.299792458 * p4_new.field_tesla) * 1000.0
    restored = p4_new.model_copy(update={"seeding": p4_new.seeding.model_copy(update={"min_pt": 0.15, "r_middle": None}),
                                         "ckf": p4_new.ckf.model_copy(update={"min_pt": 0.15})})
    assert restored == p4_old
    s_old = load_reco_config(shipped_config("tracking/ckf_pass5_strips_5hits.yaml"))
    s_new = load_reco_config(shipped_config("tracking/ckf_pass5_strips_4hits.yaml"))
    assert (s_new.ckf.min_measurements, s_new.ambiguity.n_measurements_min) == (4, 4)
    restored = s_new.model_copy(update={"ckf": s_new.ckf.model_copy(update={"min_measurements": 5}),
                                        "ambiguity": s_new.ambiguity.model_copy(update={"n_measurements_min": 5})})
    assert restored == s_old
