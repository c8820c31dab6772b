"""``benchmarks/fastcalo_rebuild.py`` (issue 15): the documented rebuild of the fast-calo models as one resumable plan.

The plan must stay runnable as the CLI and the configs change: every ``lhcml`` command in it exists with the options
it passes, the training configs chain into each other the way the plan reads their checkpoints, a step is skipped
exactly when its files exist (a training step resumes from ``last.ckpt``), and the merge of two samples is their
concatenation, shower by shower.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.main import get_command

from lhcml.cli import app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rebuild():
    spec = importlib.util.spec_from_file_location("fastcalo_rebuild", REPO / "benchmarks/fastcalo_rebuild.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fastcalo_rebuild"] = mod
    spec.loader.exec_module(mod)
    return mod


def _resolve(words):
    """The click command a ``lhcml`` word list names and the remaining arguments."""
    cmd = get_command(app)
    rest = list(words)
    while rest and hasattr(cmd, "commands") and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def test_every_lhcml_step_names_a_command_and_options_it_has(rebuild):
    steps = rebuild.plan()
    lhcml_steps = [s for s in steps if s.cmd and s.cmd[0] == "lhcml"]
    assert len(lhcml_steps) >= 35  # 8 samples, 3 trainings, 3 x (sampler + 7 passes + refiner + distillation)
    for s in lhcml_steps:
        cmd, rest = _resolve(s.cmd[1:])
        assert not hasattr(cmd, "commands"), f"{s.name}: `lhcml {' '.join(s.cmd[1:3])}` is a group, not a command"
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        unknown = [w for w in rest if w.startswith("--") and w not in opts]
        assert not unknown, f"{s.name}: `lhcml ... {cmd.name}` has no option {unknown}"
        if s.resume is not None:
            assert "--resume" in opts
    # the benchmark steps call the shipped scripts with options they define
    scripts = {"benchmarks/fastcalo_refine.py", "benchmarks/fastcalo_int8.py"}
    called = {s.cmd[1] for s in steps if s.cmd and s.cmd[1:2] and s.cmd[1].startswith("benchmarks/")}
    assert called == scripts, called
    for script in scripts:
        text = (REPO / script).read_text(encoding="utf-8")
        for s in steps:
            if s.cmd and s.cmd[1:2] == [script]:
                for w in s.cmd:
                    if w.startswith("--"):
                        assert f'"{w}"' in text, (s.name, w)


def test_training_configs_chain_as_the_plan_reads_them(rebuild):
    from lhcml.train.protocol import load_trainable_config

    cfg = {g: load_trainable_config(REPO / c, [])[1] for g, (c, _) in rebuild.GENERATORS.items()}
    ckpt = {g: str(p) for g, (_, p) in rebuild.GENERATORS.items()}
    # each continuation starts from the checkpoint the plan makes the previous generator's sampler from
    assert cfg["ft1"].init_from == ckpt["m2"] and cfg["ft2"].init_from == ckpt["ft1"]
    # the continuations write where the plan looks; the 720-epoch run is redirected with --set output_dir
    for g in ("ft1", "ft2"):
        assert str(Path(ckpt[g]).parents[1]) == cfg[g].output_dir
    train = next(s for s in rebuild.plan() if s.name == "train_m720")
    assert f"output_dir={Path(ckpt['m2']).parents[1]}" in train.cmd
    # every training and validation file a config reads is written by a sample step
    written = {str(p) for s in rebuild.plan() if s.stage == "samples" for p in s.outputs}
    for g, c in cfg.items():
        for f in (*c.data.train_files, *c.data.val_files):
            assert str(f) in written, (g, f)


def test_steps_are_skipped_exactly_when_their_files_exist(rebuild, tmp_path, capsys):
    steps = {s.name: s for s in rebuild.plan()}
    assert not any(s.done(tmp_path) for s in steps.values())
    # a training step resumes once its last checkpoint exists, and is done only with the checkpoint the next reads
    train = steps["train_ft1"]
    assert "--resume" not in train.command(tmp_path)
    (tmp_path / train.resume).parent.mkdir(parents=True)
    (tmp_path / train.resume).touch()
    assert train.command(tmp_path)[-1] == "--resume" and not train.done(tmp_path)
    # the last pass writes the chain file and its ONNX graph: one of them is not enough
    p8 = steps["ft1_p8"]
    assert len(p8.outputs) == 2
    (tmp_path / p8.outputs[0]).parent.mkdir(parents=True)
    (tmp_path / p8.outputs[0]).touch()
    assert not p8.done(tmp_path)
    (tmp_path / p8.outputs[1]).touch()
    assert p8.done(tmp_path)
    assert rebuild.main(["--list", "--stages", "ft1", "--root", str(tmp_path)]) == 0
    rows = {ln.split()[0]: ln.split()[2] for ln in capsys.readouterr().out.splitlines()[1:]}
    assert rows["ft1_p8"] == "done" and rows["train_ft1"] == "to" and rows["ft1_p7"] == "to"
    assert set(rows) == {n for n, s in steps.items() if s.stage == "ft1"}
    # one generator: its own steps of the chosen stages and the samples, nothing of the others
    assert rebuild.main(["--list", "--generators", "m2", "--stages", "samples", "m720", "m2", "measure",
                         "--root", str(tmp_path)]) == 0  # fmt: skip
    names = {ln.split()[0] for ln in capsys.readouterr().out.splitlines()[1:]}
    assert {"sample3301", "train80k", "train_m720", "m2_p8", "m2_distill", "m2_auc121k", "m2_timing"} <= names
    assert not [n for n in names if n.startswith(("ft1", "ft2", "train_ft"))]


def test_merge_is_the_concatenation_of_the_samples(rebuild, tmp_path):
    import h5py

    from lhcml.tasks.fastcalo.dataset import simulate_fastcalo

    a = simulate_fastcalo(tmp_path / "a", "photon", 12, "discrete", seed=5, showers_per_shard=6, progress=False,
                          eta_range=(0.0, 1.37))  # fmt: skip
    b = simulate_fastcalo(tmp_path / "b", "photon", 8, "discrete", seed=6, showers_per_shard=8, progress=False,
                          eta_range=(0.0, 1.37))  # fmt: skip
    rebuild._merge([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")()
    merged = tmp_path / "ab" / a["showers"].name
    for key in ("showers", "showers_noise"):
        parts = []
        for f in (a[key], b[key], tmp_path / "ab" / a[key].name):
            with h5py.File(f, "r") as h:
                parts.append({k: h[k][...] for k in ("incident_energies", "incident_eta", "showers")})
        assert len(parts[2]["showers"]) == 20
        for k in parts[2]:
            np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), parts[2][k], err_msg=k)
    assert (tmp_path / "ab" / a["binning"].name).read_bytes() == a["binning"].read_bytes()
    assert merged.exists()
