"""Helpers shared by the tracking tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def simulated_ttbar_event(tmp_path_factory: pytest.TempPathFactory, name: str, seed: int) -> Path:
    """One tt-bar event at <mu> = 0 simulated by ACTS (``lhcml.sim.tracking``) into a new temporary folder."""
    pytest.importorskip("acts")
    from lhcml.sim.tracking import simulate_tracking

    out = tmp_path_factory.mktemp(name) / "mu0"
    simulate_tracking("ttbar", out, mu=0.0, events=1, seed=seed, progress=False)
    return out
