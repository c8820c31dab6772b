"""Classifier-refined sampling with the scoring moved in front of the correction chain (issue 15, opt-in):
``lhcml fastcalo refine-distill`` learns a corrected-stage classifier's logit of the chain's output from the raw
shower; the exported graph scores the raw candidates, keeps one and runs the chain on it only, and keeps the same
showers as the corrected-stage graph; a wrong chain, stage or file is one clear ConfigError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fastcalo_helpers import checkpoint_and_training_file

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.refine import (
    RefinementClassifier,
    load_refinement,
    sir_choice,
    sir_sampler,
)


def _setup(tmp_path, capsys):
    """A tiny generator, a plain per-cell correction fitted on a 'detailed' file unlike it, and a teacher that
    scores the corrected showers: a linear function of the standardised features (so a smooth target)."""
    from lhcml import cli
    from lhcml.data.calochallenge import read_showers
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.tasks.fastcalo.refine import file_sha256, model_condition
    from lhcml.train.fastcalo import load_generator

    _, b, ckpt = checkpoint_and_training_file(tmp_path, data_seed=3, noise_seed=5, n=3000)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored["lhcml"]["config_yaml"] = "model: {name: fastcalo_fm}\n"  # as a trained checkpoint
    torch.save(stored, ckpt)
    qmap = tmp_path / "chain.qmap.npz"
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--quantiles", "8", "-o", str(qmap)])
    assert exc.value.code in (0, None)
    capsys.readouterr()
    model, _ = load_generator(ckpt)
    corr = QuantileCorrection.load(qmap)
    ref = read_showers(tmp_path / "train.h5", b)
    fixed = generate_sample(model, ref, 77, correction=corr)
    teacher = RefinementClassifier(b.layer_sizes, np.stack(b.voxel_centres()), model.cond_dim, (), b.sha256)
    cond = torch.as_tensor(model_condition(model, fixed))
    with torch.no_grad():
        x = teacher.features(torch.as_tensor(fixed.showers), torch.as_tensor(fixed.energies.astype(np.float32)), cond)
        teacher.mean.copy_(x.mean(0))
        sd = x.std(0)
        teacher.std.copy_(torch.where(sd > 0, sd, torch.ones_like(sd)))
        g = torch.Generator().manual_seed(2)
        teacher.net[0].weight.copy_(torch.randn(teacher.net[0].weight.shape, generator=g) / np.sqrt(x.shape[1]))
        teacher.net[0].bias.zero_()
    tpath = teacher.save(tmp_path / "teacher.pt", {"training_file": "t.h5", "val_auc": 0.6, "after": str(qmap),
                                                   "after_sha256": file_sha256(qmap)})  # fmt: skip
    return model, b, ckpt, qmap, corr, tpath


def _graph(model):
    from lhcml.export.fastcalo import _wrapper

    return _wrapper(model.eval())


def test_distilled_scoring_before_the_chain_keeps_the_teachers_showers(tmp_path, capsys):
    import onnxruntime as ort

    from lhcml import cli
    from lhcml.export.fastcalo import _corrected, check_inputs

    model, b, ckpt, qmap, corr, tpath = _setup(tmp_path, capsys)
    student_path = tmp_path / "student.pt"
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "refine-distill", str(ckpt), str(tpath), str(tmp_path / "train.h5"), "--after",
                  str(qmap), "-o", str(student_path), "--rounds", "3", "--epochs", "40"])  # fmt: skip
    assert exc.value.code in (0, None)
    text = capsys.readouterr().out
    assert "held-out R^2" in text and "3-candidate choices agree" in text
    student, meta = load_refinement(student_path)
    assert student.stage == "raw" and meta["n_showers"] == 9000
    # the student learns the teacher's logit of the corrected shower from the raw one (a constant has R^2 = 0)
    assert meta["val_r2"] > 0.9 and meta["val_corr"] > 0.95, meta
    assert meta["val_choice_agreement_k3"] > 0.85, meta

    # the exported graph: k raw candidates scored by the student, the chain on the kept one only
    onx = tmp_path / "raw_sir.onnx"
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "refine-export", str(ckpt), str(student_path), "--after", str(qmap), "-o", str(onx),
                  "-k", "3"])  # fmt: skip
    assert exc.value.code in (0, None)
    k, d = 3, model.noise_dim
    inputs = check_inputs(model, 600, 9, k * d + 1)
    sess = ort.InferenceSession(str(onx), providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], inputs, strict=True)))[0]
    e, eta = inputs[0], inputs[1]
    t = [torch.from_numpy(a) for a in inputs]
    with torch.no_grad():  # by hand: raw candidates, the student's logits, the choice, then NumPy's chain
        raw = np.stack([_graph(model)(t[0], t[1], t[2][:, j * d:(j + 1) * d]).numpy() for j in range(k)])
        c = model.condition(t[0][:, 0], t[1][:, 0], None)
        lg = torch.stack([student(torch.from_numpy(raw[j]), t[0][:, 0], c) for j in range(k)])
        u = 0.5 * (1.0 + torch.erf(t[2][:, -1] / np.sqrt(2.0)))
        idx = sir_choice(lg, u).numpy()
    kept = raw[idx, np.arange(len(e))]
    want = corr.apply(kept, e[:, 0], eta[:, 0])
    assert len(np.unique(idx)) == k  # the choice is not trivial
    np.testing.assert_allclose(got / e, want / e, rtol=0, atol=5e-4)
    # the same showers as the corrected-stage graph of the teacher (every candidate through the chain), but for
    # the few choices where the student's weights put the uniform in another candidate's slice
    teacher, _ = load_refinement(tpath)
    full = sir_sampler(_corrected(_graph(model), corr, model), model, teacher, k)
    with torch.no_grad():
        ref = full(*t).numpy()
    same = np.abs(ref - got).max(1) / e[:, 0] < 1e-3
    assert same.mean() > 0.85, same.mean()


def test_raw_stage_misuse_is_one_clear_error(tmp_path, capsys):
    from lhcml import cli
    from lhcml.export.fastcalo import _correction_module
    from lhcml.tasks.fastcalo.refine import distill_refiner, export_refined

    model, b, ckpt, qmap, corr, tpath = _setup(tmp_path, capsys)
    student = RefinementClassifier(b.layer_sizes, np.stack(b.voxel_centres()), model.cond_dim, (4,), b.sha256,
                                   stage="raw", chain_sha256="ab" * 32)  # fmt: skip
    spath = student.save(tmp_path / "student.pt")
    # the raw stage needs the chain after the choice, the corrected stage must not get one
    with pytest.raises(ConfigError, match="stage 'raw'"):
        sir_sampler(_graph(model), model, student, 2)
    teacher, _ = load_refinement(tpath)
    with pytest.raises(ConfigError, match="stage 'raw'"):
        sir_sampler(_graph(model), model, teacher, 2, post=_correction_module(corr, model))
    # the export needs the very chain the student was distilled through
    with pytest.raises(ConfigError, match="pass the correction chain it was distilled through with --after"):
        export_refined(ckpt, spath, tmp_path / "x.onnx", candidates=2)
    with pytest.raises(ConfigError, match="is not the correction chain this refinement classifier was distilled"):
        export_refined(ckpt, spath, tmp_path / "x.onnx", after=qmap, candidates=2)
    assert not (tmp_path / "x.onnx").exists()
    # a raw-stage file is no teacher; a teacher trained after another chain is refused; rounds must be >= 1
    with pytest.raises(ConfigError, match="scores raw showers already"):
        distill_refiner(ckpt, spath, tmp_path / "train.h5", tmp_path / "s2.pt", after=qmap)
    t2 = RefinementClassifier(b.layer_sizes, np.stack(b.voxel_centres()), model.cond_dim, (4,), b.sha256)
    t2path = t2.save(tmp_path / "t2.pt", {"after": "elsewhere.npz", "after_sha256": "cd" * 32})
    with pytest.raises(ConfigError, match="trained after another correction chain"):
        distill_refiner(ckpt, t2path, tmp_path / "train.h5", tmp_path / "s2.pt", after=qmap)
    with pytest.raises(ConfigError, match="--rounds must be an integer >= 1"):
        distill_refiner(ckpt, tpath, tmp_path / "train.h5", tmp_path / "s2.pt", after=qmap, rounds=0)
    assert not (tmp_path / "s2.pt").exists()
    # through the CLI: exit status 2, one line naming the fix, nothing written
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "refine-export", str(ckpt), str(spath), "-o", str(tmp_path / "y.onnx")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--after" in err and "Traceback" not in err and not (tmp_path / "y.onnx").exists()
    # a file of an unknown stage (a newer lhcml), and an older file without the key (read as 'corrected')
    blob = torch.load(spath, weights_only=True)
    blob["config"]["stage"] = "halfway"
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(ConfigError, match="unknown stage 'halfway'"):
        load_refinement(tmp_path / "future.pt")
    del blob["config"]["stage"], blob["config"]["chain_sha256"]
    torch.save(blob, tmp_path / "old.pt")
    assert load_refinement(tmp_path / "old.pt")[0].stage == "corrected"
