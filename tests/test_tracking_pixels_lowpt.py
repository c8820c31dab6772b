"""The low-pT pixel pass (``configs/tracking/ckf_pass8_pixels_lowpt.yaml``) and the finder that runs it eighth,
``ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml`` (issue 14, tag h19f): pixel seeds from 0.06 GeV
for the pixel-seedable particles below every other pass's pT."""

from __future__ import annotations

import numpy as np
import pytest
from _tracking_helpers import ttbar_event_with_volumes

pytest.importorskip("acts")

from lhcml.config import shipped_config  # noqa: E402
from lhcml.data.trackml import read_event  # noqa: E402
from lhcml.tasks.tracking import seed_filter as S  # noqa: E402
from lhcml.tasks.tracking.acts_reco import (  # noqa: E402
    load_reco_config,
    run_ckf,
)

LOWPT = "tracking/ckf_pass8_pixels_lowpt.yaml"
PASS4 = "tracking/ckf_pass4_budget_lowpt.yaml"


def test_finder_is_the_registered_one_plus_one_pass() -> None:
    """The eight-pass finder runs ml-seeds+ckf-7pass-quality's passes, selection and hit recovery unchanged, then the
    low-pT pixel pass with pass 4's seed classifier, cut and seeds per middle space point."""
    old = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_7pass_budget_quality_ext_spend_strips_lowpt.yaml"))
    new = S.load_ml_seeds_config(
        shipped_config("tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml"))
    assert new.more_passes[:-1] == old.more_passes and len(new.more_passes) == len(old.more_passes) + 1
    assert new.model_copy(update={"more_passes": old.more_passes}) == old
    last, pass4 = new.more_passes[-1], old.more_passes[1]
    assert pass4.reco == PASS4
    assert last.reco == LOWPT
    assert (last.checkpoint, last.cut, last.max_per_spm) == (pass4.checkpoint, pass4.cut, pass4.max_per_spm)


def test_pass_differs_from_pass4_in_pt_radius_and_spans_within_acts_limits() -> None:
    """Only the pT, the seeding radius and the seeds' span differ from pass 4; the seeding radius obeys ACTS's grid
    limit (r_max <= twice the helix radius of min_pt) and still holds every pixel layer (r < 175 mm) and the middle
    space points."""
    low, p4 = load_reco_config(shipped_config(LOWPT)), load_reco_config(shipped_config(PASS4))
    s = low.seeding
    assert s.min_pt < p4.seeding.min_pt and low.ckf.min_pt == s.min_pt
    helix_radius_mm = s.min_pt / (0.299792458 * low.field_tesla) * 1000.0
    assert 175.0 < s.r_max <= 2.0 * helix_radius_mm
    assert s.r_middle is not None and s.r_middle[1] < s.r_max
    assert s.delta_r[1] < p4.seeding.delta_r[1]
    keys = ("min_pt", "r_max", "delta_r")
    assert s.model_copy(update={k: getattr(p4.seeding, k) for k in keys}) == p4.seeding
    assert low.ckf.model_copy(update={"min_pt": p4.ckf.min_pt}) == p4.ckf
    assert (low.ambiguity, low.fit, low.clean) == (p4.ambiguity, p4.fit, p4.clean)


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    out, _, _ = ttbar_event_with_volumes(tmp_path_factory, "pixels_lowpt", 33)
    return out


def test_pass_finds_particles_below_pass4_pt(event) -> None:
    """On all hits of a simulated tt-bar event (seed 33: 62 particles below 0.12 GeV) the low-pT pass's tracks are nearly all pure, and some are of particles
    below pass 4's 0.12 GeV, which pass 4's settings find none of."""
    out = event
    ev = read_event(out, 0, parts=("particles", "truth"))
    pid = ev.truth.sort_values("hit_id")["particle_id"].to_numpy()
    parts = ev.particles.set_index("particle_id")
    pt = np.hypot(parts["px"], parts["py"])

    def pure_particles(config: str) -> tuple[set[int], float]:
        res = run_ckf(out, [0], shipped_config(config))
        t, h = (np.asarray(a, np.int64) for a in res.candidates[0])
        found, fracs = set(), []
        for k in np.unique(t):
            vals, counts = np.unique(pid[h[t == k] - 1], return_counts=True)
            frac = counts.max() / counts.sum()
            fracs.append(frac)
            if frac >= 0.5 and vals[np.argmax(counts)] != 0:
                found.add(int(vals[np.argmax(counts)]))
        return found, float(np.mean(fracs)) if fracs else 0.0

    low, purity = pure_particles(LOWPT)
    assert purity > 0.8
    below = {p for p in low if p in pt.index and pt[p] < 0.12}
    assert len(below) >= 2
    p4, _ = pure_particles(PASS4)
    assert not below & p4
