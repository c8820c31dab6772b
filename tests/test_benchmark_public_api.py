"""Benchmarks use lhcml's public API (issue 11): no underscore names imported from lhcml, and the
public entry points they need (:func:`lhcml.sim.events.simulate_batch`,
:func:`lhcml.train.config.raw_train_config`) do what the private ones did."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml

from lhcml.errors import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
#: benchmarks that still import a private name, with the owner's reason (to be emptied)
PRIVATE_OK = {"sim_leptons.py": "lhcml.sim.leptons internals (_ID_COLUMN, _pt_eta_phi); not yet public"}


def _private_imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lhcml"):
            out += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return out


def test_benchmarks_import_no_private_lhcml_names():
    found = {p.name: _private_imports(p) for p in sorted(BENCH.glob("*.py"))}
    assert {"sim_speed.py", "tune_scaling.py", "sim_jets.py"} <= set(found)
    bad = {k: v for k, v in found.items() if v and k not in PRIVATE_OK}
    assert not bad, f"benchmarks import private lhcml names: {bad}"


def test_raw_train_config_merges_bases_and_overrides(tmp_path):
    from lhcml.train.config import config_from_dict, load_train_config, raw_train_config

    base = Path(__file__).resolve().parents[1] / "configs" / "ftag" / "dl1.yaml"
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"base": str(base), "trainer": {"max_epochs": 3}}))
    raw = raw_train_config(tmp_path / "child.yaml", ["optimizer.lr=0.005"])
    assert isinstance(raw, dict) and raw["trainer"]["max_epochs"] == 3 and raw["optimizer"]["lr"] == 0.005
    assert "model" in raw  # the base's sections are merged in
    assert config_from_dict(raw) == load_train_config(tmp_path / "child.yaml", ["optimizer.lr=0.005"])
    with pytest.raises(ConfigError):
        raw_train_config(tmp_path / "missing.yaml")


def test_simulate_batch_equals_simulate_events():
    from lhcml.sim.events import simulate_batch, simulate_events
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.processes import get_process

    ref = simulate_events("ttbar", 6, mu=0.0, seed=3)
    gen = PythiaGenerator(get_process("ttbar"), 3).init()
    rng = np.random.default_rng([3, 0, 0xD37EC7])  # simulate_events' first batch
    out = simulate_batch("ttbar", gen, 6, 0.0, rng, first_event=0, seed=3)
    assert set(out) == set(ref) and len(ref["jets"]) > 0
    for k in ref:
        assert out[k].dtype == ref[k].dtype and out[k].tobytes() == ref[k].tobytes(), k  # NaN fields: bytes
    with pytest.raises(ConfigError, match="pileup library"):
        simulate_batch("ttbar", gen, 2, 50.0, rng)
