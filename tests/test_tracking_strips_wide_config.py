"""ml_seeds_6pass_budget_quality_ext_spend_strips.yaml (issue 14, tag h18e): the spend finder with a strip pass that
seeds more differs from ml_seeds_6pass_budget_quality_ext_spend.yaml only in the strip pass's seeding."""

from __future__ import annotations

from lhcml.config import shipped_config
from lhcml.tasks.tracking import seed_filter as S
from lhcml.tasks.tracking.acts_reco import load_reco_config


def test_strips_wide_finder_changes_only_the_strip_pass_seeding() -> None:
    old = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext_spend.yaml"))
    new = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext_spend_strips.yaml"))
    assert new.model_copy(update={"more_passes": []}) == old.model_copy(update={"more_passes": []})
    assert new.more_passes[:-1] == old.more_passes[:-1]
    strips, ostrips = new.more_passes[-1], old.more_passes[-1]
    assert (strips.reco, ostrips.reco) == ("tracking/ckf_pass5_strips_4hits_wide.yaml",
                                            "tracking/ckf_pass5_strips_4hits.yaml")
    assert strips.model_copy(update={"reco": ostrips.reco}) == ostrips
    s_old = load_reco_config(shipped_config("tracking/ckf_pass5_strips_4hits.yaml"))
    s_new = load_reco_config(shipped_config("tracking/ckf_pass5_strips_4hits_wide.yaml"))
    assert (s_new.seeding.max_seeds_per_spm, tuple(s_new.seeding.collision_region)) == (2, (-300.0, 300.0))
    assert (s_old.seeding.max_seeds_per_spm, tuple(s_old.seeding.collision_region)) == (1, (-150.0, 150.0))
    restored = s_new.model_copy(update={"seeding": s_new.seeding.model_copy(
        update={"max_seeds_per_spm": 1, "collision_region": s_old.seeding.collision_region})})
    assert restored == s_old
