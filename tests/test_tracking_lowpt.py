"""The third pass that accepts 7-measurement tracks without holes (``configs/tracking/ckf_pass3_budget_7hits.yaml``) and
the six-pass finder that runs it (``configs/tracking/ml_seeds_6pass_budget_fwd_strips_lowpt.yaml``; issue 14,
docs/benchmarks/tracking_lowpt.md)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("acts")

from lhcml.config import shipped_config  # noqa: E402
from lhcml.tasks.tracking import seed_filter as S  # noqa: E402
from lhcml.tasks.tracking.acts_reco import load_reco_config, run_ckf  # noqa: E402

PASS3 = "tracking/ckf_pass3_budget.yaml"
PASS3_7 = "tracking/ckf_pass3_budget_7hits.yaml"


def test_lowpt_finder_is_the_six_pass_finder_with_the_7hit_third_pass() -> None:
    """Only the third pass's reco config differs from ml_seeds_6pass_budget_fwd_strips.yaml (same classifier, cut and
    seeds per middle space point; every other pass unchanged), and that config differs from ckf_pass3_budget.yaml
    only in the track selection's measurements (8 -> 7) and holes (2 -> 0)."""
    six = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips.yaml"))
    low = S.load_ml_seeds_config(
        shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips_lowpt.yaml")
    )
    assert low.model_copy(update={"more_passes": six.more_passes}) == six
    assert len(low.more_passes) == len(six.more_passes)
    changed = [
        k for k, (a, b) in enumerate(zip(low.more_passes, six.more_passes, strict=True)) if a != b
    ]
    assert (
        changed == [0] and six.more_passes[0].reco == PASS3 and low.more_passes[0].reco == PASS3_7
    )
    assert low.more_passes[0].model_copy(update={"reco": PASS3}) == six.more_passes[0]
    old, new = load_reco_config(shipped_config(PASS3)), load_reco_config(shipped_config(PASS3_7))
    assert (old.ckf.min_measurements, old.ckf.max_holes) == (8, 2)
    assert (new.ckf.min_measurements, new.ckf.max_holes) == (7, 0)
    patched = old.model_copy(
        update={"ckf": old.ckf.model_copy(update={"min_measurements": 7, "max_holes": 0})}
    )
    assert patched == new


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    from lhcml.sim.tracking import simulate_tracking

    out = tmp_path_factory.mktemp("lowpt") / "mu0"
    simulate_tracking("ttbar", out, mu=0.0, events=1, seed=31, progress=False)
    return out


def test_7hit_pass_adds_hole_free_7_measurement_tracks(event) -> None:
    """On a simulated tt-bar event, the third pass as shipped before makes no track below 8 measurements; the 7-hit
    version adds pure 7-measurement tracks, has no track with a hole, and keeps nearly all the old tracks' particles
    (no hole allowed drops a few 8-hit tracks with holes: 3 of 150 on this event)."""
    res8 = run_ckf(event, [0], load_reco_config(shipped_config(PASS3)))
    res7 = run_ckf(event, [0], load_reco_config(shipped_config(PASS3_7)))
    f8, f7 = res8.tracks[0], res7.tracks[0]
    assert len(f8) > 20 and f8.nhits.min() >= 8
    assert f7.nhits.min() == 7 and f7.nholes.max() == 0
    short = f7.nhits == 7
    assert short.sum() >= 2
    # real particles' tracks, not random combinations
    assert np.mean(f7.truth_fraction[short] >= 6 / 7) > 0.8
    good8 = set(f8.truth_particle[f8.truth_fraction > 0.5].tolist()) - {0}
    good7 = set(f7.truth_particle[f7.truth_fraction > 0.5].tolist()) - {0}
    # no hole allowed costs almost none of the 8-hit tracks
    assert len(good8 - good7) <= 0.05 * len(good8)
    assert len(good7 - good8) >= 2  # the 7-hit tracks' particles (3 on this event)
