"""Few-step students distilled from a flow-matching generator (lhcml.models.fastcalo.distill, issue 15)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from _fastcalo_helpers import fit_cfm, real_binning_fm_checkpoint, two_cell_showers

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.distill import distill, make_student
from lhcml.models.fastcalo.fm import CaloFlowMatching
from lhcml.train.fastcalo import save_student

LAYERS = [4, 6]
V = sum(LAYERS)
INIT = dict(n_voxels=V, layer_sizes=LAYERS, e_min_gev=1.0, e_max_gev=100.0, hidden=96, depth=2, steps=6,
            voxel_space="log", threshold_kev=1000.0, eta_range=[0.0, 1.37])  # fmt: skip


@pytest.fixture(scope="module")
def teacher():
    rng = np.random.default_rng(0)
    n = 3000
    x = two_cell_showers(rng, rng.uniform(0, 1, n))
    e = torch.full((n,), 10.0)
    eta = torch.from_numpy(rng.uniform(0.2, 0.3, n).astype(np.float32))
    torch.manual_seed(3)
    m = CaloFlowMatching(**INIT)
    m.prepare(e, x)
    fit_cfm(m, e, x, eta, steps=400)
    return m.eval(), e, eta


def test_the_student_learns_the_teachers_map_and_keeps_the_layer_energies(teacher):
    """A known answer: the student must reproduce the teacher's noise-to-shower map better than
    the teacher's own field with one Euler step (the naive one-step sampler), and its showers keep
    what the decoding guarantees — each layer sums to its generated layer energy — with the
    teacher's energy response."""
    m, e, eta = teacher
    student, hist = distill(m, e, eta, steps=1, epochs=12, batch_size=128, lr=1e-3, seed=1)
    assert student.steps == 1 and student.solver == "euler" and m.steps == 6 and m.solver == "midpoint"
    assert min(hist["val_loss"]) < 0.5 * hist["val_loss_naive"]
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    g = torch.Generator().manual_seed(5)
    noise = m.draw_noise(2000, g)
    ee, et = torch.full((2000,), 10.0), torch.full((2000,), 0.25)
    with torch.no_grad():
        xs = student.sample(ee, noise, et)
        xt = m.sample(ee, noise, et)
        e_layers = student.vars.decode_layers(student.integrate(ee, noise, et)[:, :2], ee)
    # energy conservation of the decoding: every layer's voxels sum to the generated layer energy
    np.testing.assert_allclose(xs[:, :4].sum(1), e_layers[:, 0], rtol=1e-5)
    np.testing.assert_allclose(xs[:, 4:].sum(1), e_layers[:, 1], rtol=1e-5)
    # the response of the teacher (the synthetic truth: 9 GeV of 10), within 2 %
    assert float(xs.sum(1).mean()) == pytest.approx(float(xt.sum(1).mean()), rel=0.02)
    assert float(xt.sum(1).mean()) == pytest.approx(9.0, rel=0.03)


def test_save_load_and_export_the_student(teacher, tmp_path):
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning
    from lhcml.train.fastcalo import load_generator

    m, e, eta = teacher
    student = make_student(m, steps=2)
    ckpt = tmp_path / "teacher.ckpt"
    meta = {"format_version": 1, "kind": "fastcalo", "model_name": "fastcalo_fm",
            "model_init_yaml": yaml.safe_dump(INIT), "particle": "photon", "binning_sha256": "x"}  # fmt: skip
    torch.save({"lhcml": meta, "state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}}, ckpt)
    path = save_student(student, ckpt, tmp_path / "student.ckpt")
    back, back_meta = load_generator(path)
    assert back.steps == 2 and back.solver == "euler"
    assert yaml.safe_load(back_meta["model_init_yaml"])["steps"] == 2
    noise = m.draw_noise(50, torch.Generator().manual_seed(0))
    ee, et = torch.full((50,), 10.0), torch.full((50,), 0.25)
    with torch.no_grad():
        np.testing.assert_array_equal(back.sample(ee, noise, et), student.sample(ee, noise, et))
    # a student of the real binning exports with onnxruntime agreement asserted inside
    b = voxel_binning("photon")
    torch.manual_seed(0)
    big = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, steps=8, eta_range=(0.0, 1.37))
    big.prepare(torch.full((8,), 10.0), torch.rand(8, b.n_voxels) * (10.0 / b.n_voxels))
    export_generator(make_student(big, 1).eval(), tmp_path / "one.onnx", binning_file_sha256=b.sha256,
                     particle="photon", binning_xml=b.to_xml(), timing=False, n_check=16, atol=1e-4)  # fmt: skip
    onnx = OnnxShowerModel(str(tmp_path / "one.onnx"))
    out = onnx.generate(np.full(4, 20.0), np.random.default_rng(0), eta=np.full(4, 0.2))
    assert out.shape == (4, b.n_voxels) and np.isfinite(out).all()


def test_bad_students_give_one_clear_message(teacher, tmp_path):
    m, _, _ = teacher
    with pytest.raises(ConfigError, match="steps >= 1"):
        make_student(m, steps=0)
    with pytest.raises(ConfigError, match="flow-matching generator"):
        make_student(torch.nn.Linear(2, 2), steps=1)
    bad = tmp_path / "bad.ckpt"
    torch.save({"lhcml": {"kind": "tagger"}, "state_dict": {}}, bad)
    with pytest.raises(ConfigError, match="not a fast-calorimeter checkpoint"):
        save_student(make_student(m, 1), bad, tmp_path / "s.ckpt")


def test_distill_command_writes_a_student_that_loads_and_tracks_its_teacher(tmp_path, capsys):
    """`lhcml fastcalo distill`: the student checkpoint loads with 1 Euler step, its held-out loss is
    below the untrained one-step map's, and it reproduces the teacher's layer energies on average; a
    file without the |eta| the teacher is conditioned on gives one message, exit 2, and no output."""
    from lhcml.cli import main
    from lhcml.data.calochallenge import write_showers
    from lhcml.train.fastcalo import load_generator

    m, b, ckpt = real_binning_fm_checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    n = 600
    e = np.exp(rng.uniform(np.log(2.0), np.log(200.0), n))
    x = rng.random((n, b.n_voxels)) * (e[:, None] / b.n_voxels)
    write_showers(tmp_path / "train.h5", e, x, b, eta=rng.uniform(0.0, 1.3, n), phi=rng.uniform(-3, 3, n))
    out = tmp_path / "student.ckpt"
    with pytest.raises(SystemExit) as exc:
        main(["fastcalo", "distill", str(ckpt), str(tmp_path / "train.h5"), "-o", str(out), "--steps", "1",
              "--epochs", "4"])  # fmt: skip
    text = capsys.readouterr().out
    assert exc.value.code in (0, None) and "held-out loss" in text and out.is_file()
    student, meta = load_generator(out)
    assert student.steps == 1 and student.solver == "euler" and meta["binning_sha256"] == b.sha256
    val = [float(t) for t in re.findall(r"held-out loss ([0-9.]+) .*untrained: ([0-9.]+)", text)[0]]
    assert val[0] < val[1]
    # a narrower student (--hidden): its own network, trained from scratch, the teacher's standardisation
    narrow = tmp_path / "narrow.ckpt"
    with pytest.raises(SystemExit) as exc:
        main(["fastcalo", "distill", str(ckpt), str(tmp_path / "train.h5"), "-o", str(narrow), "--epochs", "6",
              "--hidden", "8"])  # fmt: skip
    assert exc.value.code in (0, None)
    losses = [float(v) for v in re.findall(r"val ([0-9.]+)", capsys.readouterr().out)]
    small, small_meta = load_generator(narrow)
    assert yaml.safe_load(small_meta["model_init_yaml"])["hidden"] == 8 and small.steps == 1
    assert sum(p.numel() for p in small.velocity.parameters()) < sum(p.numel() for p in student.velocity.parameters())
    assert losses[-1] < losses[0]  # it learns the map
    for name, buf in m.vars.state_dict().items():
        torch.testing.assert_close(small.vars.state_dict()[name], buf)
    # no |eta| in the file: one clear message, exit 2, nothing written
    write_showers(tmp_path / "noeta.h5", e, x, b)
    bad_out = tmp_path / "bad.ckpt"
    with pytest.raises(SystemExit) as exc:
        main(["fastcalo", "distill", str(ckpt), str(tmp_path / "noeta.h5"), "-o", str(bad_out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "incident_eta" in err and "Traceback" not in err
    assert not bad_out.exists()
