"""Helpers shared by the tracking tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def simulated_ttbar_event(tmp_path_factory: pytest.TempPathFactory, name: str, seed: int) -> Path:
    """One tt-bar event at <mu> = 0 simulated by ACTS (``lhcml.sim.tracking``) into a new temporary folder."""
    pytest.importorskip("acts")
    from lhcml.sim.tracking import simulate_tracking

    out = tmp_path_factory.mktemp(name) / "mu0"
    simulate_tracking("ttbar", out, mu=0.0, events=1, seed=seed, progress=False)
    return out


def ttbar_event_with_volumes(tmp_path_factory: pytest.TempPathFactory, name: str, seed: int) -> tuple[Path, Any, Any]:
    """:func:`simulated_ttbar_event`, its measurements (``lhcml.tasks.tracking.acts_reco.read_measurement_positions``)
    and the ACTS volume of each measurement (index = hit_id - 1)."""
    import numpy as np

    from lhcml.tasks.tracking.acts_reco import acts_files, read_measurement_positions

    out = simulated_ttbar_event(tmp_path_factory, name, seed)
    meas = read_measurement_positions(acts_files(out), 0)
    volume = (meas["geometry_id"].to_numpy(np.uint64) >> np.uint64(56)).astype(np.int64)
    return out, meas, volume


def shipped_track_filter(checkpoint: str, train_config: str, tracks: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A shipped track classifier checked against the config that trains it (small file, weights only, the config's
    model, seed and track files, the finder's features): ``(model, stored config, training config)``."""
    import torch
    import yaml

    from lhcml.config import resolve_bases, resolve_model_path, shipped_config
    from lhcml.models.tracking.track_filter import TRACK_FEATURE_NAMES, TrackClassifier
    from lhcml.tasks.tracking.track_quality import track_classifier

    path = resolve_model_path(checkpoint)
    assert path.stat().st_size < 50_000
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "lhcml"} and raw["lhcml"]["model_name"] == "track_filter"
    stored = yaml.safe_load(raw["lhcml"]["config_yaml"])
    train = resolve_bases(shipped_config(train_config))
    assert stored["model"] == train["model"] and stored["seed"] == train["seed"] == 42
    assert stored["data"]["prepare"] == train["data"]["prepare"] == {"tracks": tracks}
    model = track_classifier(checkpoint)
    assert isinstance(model, TrackClassifier) and list(model.feature_names) == list(TRACK_FEATURE_NAMES)
    return model, stored, train


def track_classifier_on_held_out(checkpoint: str, path: Path) -> tuple[Any, Any, float, float]:
    """A shipped track classifier on a held-out track sample (``features``, ``feature_names``, ``y``; the finder's
    features): ``(scores, fake labels, log-loss / the best constant's, ROC area)``."""
    import numpy as np

    from lhcml.models.tracking.track_filter import TRACK_FEATURE_NAMES
    from lhcml.tasks.tracking.track_quality import track_classifier

    data = np.load(path)
    assert list(data["feature_names"]) == list(TRACK_FEATURE_NAMES)
    x, y = data["features"], data["y"].astype(bool)
    assert 50 < y.sum() < len(y) - 500
    s = np.clip(track_classifier(checkpoint).score(x), 1e-7, 1 - 1e-7)
    p = y.mean()
    constant = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    loss = -np.mean(np.where(y, np.log(s), np.log(1 - s)))
    ranks = np.argsort(np.argsort(s)) + 1  # ROC area from the ranks (Mann-Whitney)
    auc = (ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())
    return s, y, float(loss / constant), float(auc)
