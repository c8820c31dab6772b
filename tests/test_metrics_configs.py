"""The shipped evaluate configs (configs/evaluate/*.yaml) validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from lhcml.config import load_config
from lhcml.evaluation import EvaluateConfig
from lhcml.labels import get_scheme

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "evaluate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_evaluate_config_validates(path):
    cfg = load_config(EvaluateConfig, path)
    scheme = get_scheme(cfg.label_scheme)
    assert cfg.signal in [c.name for c in scheme.classes]
    assert cfg.reference in [t.name for t in cfg.taggers]


def test_configs_found():
    assert {p.stem for p in CONFIGS} >= {"ftag", "ctag", "boosted_top", "photon"}
