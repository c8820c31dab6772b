"""The eighth pass seeded on every pixel layer (``configs/tracking/ckf_pass8_pixels_lowpt_allpix.yaml``) and the finder
that runs it, ``ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix.yaml`` (issue 14, tag h20c): the
forward secondaries whose pixel hits lie on the outer three endcap disks, which ACTS's seeding layers leave out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tracking_helpers import simulated_ttbar_event

pytest.importorskip("acts")

from lhcml.config import shipped_config, shipped_configs_dir  # noqa: E402
from lhcml.data.trackml import read_event  # noqa: E402
from lhcml.tasks.tracking import seed_filter as S  # noqa: E402
from lhcml.tasks.tracking.acts_reco import load_reco_config  # noqa: E402

ALLPIX = "tracking/ckf_pass8_pixels_lowpt_allpix.yaml"
PASS8 = "tracking/ckf_pass8_pixels_lowpt.yaml"
FINDER = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix.yaml"
REGISTERED = "tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml"


def layers(selection: str) -> set[tuple[int, int | None]]:
    return {(d["volume"], d.get("layer")) for d in json.loads((shipped_configs_dir() / selection).read_text())}


def test_finder_is_the_registered_one_with_pass8_replaced() -> None:
    """Every pass, classifier, cut, selection and hit recovery of ml-seeds+ckf-8pass-quality; only pass 8's reco
    differs."""
    old, new = (S.load_ml_seeds_config(shipped_config(f)) for f in (REGISTERED, FINDER))
    assert new.more_passes[:-1] == old.more_passes[:-1]
    assert old.more_passes[-1].reco == PASS8 and new.more_passes[-1].reco == ALLPIX
    assert new.more_passes[-1].model_copy(update={"reco": PASS8}) == old.more_passes[-1]
    assert new.model_copy(update={"more_passes": old.more_passes}) == old


def test_pass_differs_from_pass8_in_its_layers_and_origin_window_only() -> None:
    """The seeding space points are every pixel volume (a superset of pass 8's seeding layers, which hold 4 of the 7
    disks per endcap); the doublets' origins may lie within |z| < 1000 mm (pass 8: 300 mm); nothing else changes."""
    new, old = load_reco_config(shipped_config(ALLPIX)), load_reco_config(shipped_config(PASS8))
    assert layers(new.seeding.geometry_selection) == {(7, None), (8, None), (9, None)}
    old_layers = layers(old.seeding.geometry_selection)
    assert {v for v, _ in old_layers} == {7, 8, 9} and len({ly for v, ly in old_layers if v == 9}) == 4
    assert new.seeding.collision_region == (-1000.0, 1000.0)
    assert old.seeding.collision_region == (-300.0, 300.0)
    keys = ("geometry_selection", "collision_region")
    assert new.seeding.model_copy(update={k: getattr(old.seeding, k) for k in keys}) == old.seeding
    assert new.model_copy(update={"seeding": old.seeding}) == old


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    return simulated_ttbar_event(tmp_path_factory, "pixels_allpix", 7)


def test_seeds_reach_the_outer_disks(event) -> None:
    """On a simulated tt-bar event the pass seeds on the outer endcap disks (|z| > 1000 mm), which pass 8 never does;
    with no limit of seeds per middle space point (ACTS keeps the best max_seeds_per_spm + 1 of each, so more
    candidates displace some of pass 8's) nearly every seed of pass 8 is one of the pass's, which only adds layers and
    origins (not all: ACTS skips top points by their sorted cot(theta), which the added points shift; 99.5 % here)."""
    hits = read_event(event, 0, parts=("hits",), check=False).hits.set_index("hit_id")
    z = hits["z"].abs()

    def seeds(cfg: str, spm: int | None = None) -> np.ndarray:
        reco = load_reco_config(shipped_config(cfg)).model_copy(deep=True)
        if spm is not None:
            reco.seeding.max_seeds_per_spm = spm
        triplets, _ = S.acts_seeds(event, 0, reco)
        return triplets

    old, new = seeds(PASS8), seeds(ALLPIX)
    outer = lambda t: (z.loc[t.ravel() + 1].to_numpy().reshape(-1, 3) > 1000.0).any(axis=1)  # noqa: E731
    assert len(old) > 50 and not outer(old).any()
    assert outer(new).sum() >= 5
    old_all, new_all = seeds(PASS8, 1000), seeds(ALLPIX, 1000)
    assert len(new_all) > len(old_all) > len(old)
    kept = set(map(tuple, new_all.tolist()))
    assert np.mean([tuple(t) in kept for t in old_all.tolist()]) > 0.98
