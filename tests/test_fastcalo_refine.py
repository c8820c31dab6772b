"""Classifier-refined sampling (SIR) of a fast-calo generator (issue 15, opt-in): the choice keeps candidate i with
probability w_i / sum w, a constant classifier leaves the generator's distribution alone, a trained classifier moves a
shifted generator towards the reference, the ONNX graph agrees with torch and runs in the simulation unchanged, and
bad inputs are one clear ConfigError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fastcalo_helpers import checkpoint_and_training_file

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.refine import (
    RefinementClassifier,
    check_candidates,
    check_power,
    load_refinement,
    sir_choice,
    sir_sampler,
)


def _binomial_close(count: int, n: int, p: float) -> None:
    assert abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p)), (count, n * p)


def test_sir_choice_keeps_the_heavier_candidate_in_proportion():
    n = 40000
    u = torch.from_numpy(np.random.default_rng(1).random(n).astype(np.float32))
    # w = 1 and 3 for every shower: the second kept 3/4 of the time; clipped at w_max = 2: 2/3
    logits = torch.log(torch.tensor([[1.0], [3.0]])).expand(2, n)
    idx = sir_choice(logits, u).numpy()
    _binomial_close(int((idx == 1).sum()), n, 0.75)
    idx = sir_choice(logits, u, w_max=2.0).numpy()
    _binomial_close(int((idx == 1).sum()), n, 2 / 3)
    # three candidates, weights 1 : 2 : 5, per-shower order shuffled (the choice follows the weight, not the slot)
    rng = np.random.default_rng(2)
    w = np.array([1.0, 2.0, 5.0])
    perm = np.stack([rng.permutation(3) for _ in range(n)], 1)
    idx = sir_choice(torch.from_numpy(np.log(w[perm]).astype(np.float32)), u).numpy()
    picked = w[perm[idx, np.arange(n)]]
    for wi in w:
        _binomial_close(int((picked == wi).sum()), n, wi / w.sum())
    # one candidate: always it
    assert (sir_choice(logits[:1], u).numpy() == 0).all()


def test_weight_power_sharpens_the_choice_in_proportion():
    """w = 1 and 3: with the weights squared the second is kept 9/10 of the time, with them to the power 1/2
    sqrt(3) / (1 + sqrt(3)); clipped at w_max = 2 first, then squared: 4/5. Power 1 is plain SIR, choice for choice."""
    n = 40000
    u = torch.from_numpy(np.random.default_rng(1).random(n).astype(np.float32))
    logits = torch.log(torch.tensor([[1.0], [3.0]])).expand(2, n)
    _binomial_close(int((sir_choice(logits, u, power=2.0).numpy() == 1).sum()), n, 0.9)
    _binomial_close(int((sir_choice(logits, u, power=0.5).numpy() == 1).sum()), n, 3**0.5 / (1 + 3**0.5))
    _binomial_close(int((sir_choice(logits, u, w_max=2.0, power=2.0).numpy() == 1).sum()), n, 0.8)
    rng = np.random.default_rng(3)
    lg = torch.from_numpy(rng.normal(0, 2, (5, n)).astype(np.float32))
    assert torch.equal(sir_choice(lg, u, power=1.0), sir_choice(lg, u))
    # a sharper choice keeps heavier candidates: the mean kept log-weight rises with the power
    kept = [float(lg[sir_choice(lg, u, power=b), torch.arange(n)].mean()) for b in (0.5, 1.0, 2.0, 4.0)]
    assert kept == sorted(kept) and kept[-1] - kept[0] > 0.8, kept
    for bad in (0, -1.0, float("nan"), float("inf"), "two", True, None):
        with pytest.raises(ConfigError, match="--weight-power must be a number > 0"):
            check_power(bad)
    assert check_power(2) == 2.0


def _tiny(tmp_path, n=400, data_seed=3):
    from lhcml.train.fastcalo import load_generator

    _, b, ckpt = checkpoint_and_training_file(tmp_path, data_seed=data_seed, noise_seed=5, n=n)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored["lhcml"]["config_yaml"] = "model: {name: fastcalo_fm}\n"  # as a trained checkpoint (lhcml export copies it)
    torch.save(stored, ckpt)
    model, _ = load_generator(ckpt)
    return model, b, ckpt


def _spread_classifier(tmp_path, model, b):
    """A refinement classifier (saved) whose weights differ between showers: an untrained net is near-constant."""
    clf = RefinementClassifier(b.layer_sizes, np.stack(b.voxel_centres()), model.cond_dim, (16, 16), b.sha256)
    torch.manual_seed(3)
    for p in clf.net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return clf, clf.save(tmp_path / "refiner.pt", {"val_auc": 0.5})


def _cli_export(onx, ckpt, pt, capsys, options, says):
    """``lhcml fastcalo refine-export`` with ``options``: exit 0, ``says`` printed; the graph's metadata."""
    import onnx

    from lhcml import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "refine-export", str(ckpt), str(pt), "-o", str(onx), *options])
    assert exc.value.code in (0, None) and says in capsys.readouterr().out
    return onx, {p.key: p.value for p in onnx.load(str(onx)).metadata_props}


def _graph(model):
    from lhcml.export.fastcalo import _wrapper

    return _wrapper(model.eval())


def test_constant_classifier_gives_the_generators_distribution(tmp_path):
    model, b, _ = _tiny(tmp_path)
    clf = RefinementClassifier(b.layer_sizes, np.stack(b.voxel_centres()), model.cond_dim, (8,))
    torch.nn.init.zeros_(clf.net[-1].weight)  # logit = bias: every candidate the same weight
    k, n, d = 3, 3000, model.noise_dim
    sir = sir_sampler(_graph(model), model, clf, k)
    rng = np.random.default_rng(4)
    e = torch.full((n, 1), 20.0)
    eta = torch.from_numpy(rng.uniform(0, 1.3, (n, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.standard_normal((n, k * d + 1)).astype(np.float32))
    with torch.no_grad():
        out = sir(e, eta, noise).numpy()
        cands = np.stack([_graph(model)(e, eta, noise[:, j * d:(j + 1) * d]).numpy() for j in range(k)])
    # every output shower is one of its own candidates, whole (the generator's layer energies kept; float32
    # round-off only: the candidates run as one batch of k x n)
    dist = np.abs(cands - out[None]).max(2) / 20.0
    assert (dist.min(0) < 1e-5).all()
    chosen = dist.argmin(0)
    counts = np.bincount(chosen, minlength=k)
    for c in counts:
        _binomial_close(int(c), n, 1 / k)
    # the same distribution as the first candidate's (total energy, a layer share): two-sample KS
    from scipy.stats import ks_2samp

    for f in (lambda x: x.sum(1), lambda x: x[:, : b.layer_sizes[0]].sum(1) / x.sum(1)):
        assert ks_2samp(f(out), f(cands[0])).pvalue > 1e-3


def test_refinement_moves_a_shifted_generator_towards_the_reference(tmp_path, capsys):
    """The 'detailed' file is the generator's own showers resampled with weights exp(1.5 z), z the standardised
    E_ratio at each energy (a shifted distribution on the same support): the classifier learns it, its weights
    move the held-out E_ratio onto the reference, and SIR with 4 candidates moves the mean E_ratio towards it."""
    from lhcml import cli
    from lhcml.data.calochallenge import read_showers, write_showers
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.tasks.fastcalo.evaluate import features_of
    from lhcml.tasks.fastcalo.refine import generate_refined_sample

    model, b, ckpt = _tiny(tmp_path, n=400)
    rng = np.random.default_rng(6)
    n_pool, n = 24000, 6000
    e = np.repeat([5.0, 50.0], n_pool // 2)
    eta = rng.uniform(0.0, 1.3, n_pool)
    with torch.no_grad():
        x = model.generate(torch.as_tensor(e, dtype=torch.float32), torch.Generator().manual_seed(8),
                           eta=torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    ratio = x.sum(1) / e
    z = np.zeros(n_pool)
    for ev in (5.0, 50.0):
        m = e == ev
        z[m] = (ratio[m] - ratio[m].mean()) / ratio[m].std()
    keep = np.concatenate([rng.choice(np.flatnonzero(e == ev), n // 2, replace=False,
                                      p=np.exp(1.5 * z[e == ev]) / np.exp(1.5 * z[e == ev]).sum())
                           for ev in (5.0, 50.0)])  # fmt: skip
    write_showers(tmp_path / "train.h5", e[keep], x[keep], b, {}, eta=eta[keep])
    out = tmp_path / "refiner.pt"
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "refine", str(ckpt), str(tmp_path / "train.h5"), "-o", str(out), "--epochs", "15"])
    assert exc.value.code in (0, None)
    text = capsys.readouterr().out
    assert "held-out AUC" in text and "E_ratio: separation power" in text
    clf, meta = load_refinement(out)
    assert meta["val_auc"] > 0.57  # a real difference, learnt (the best possible here: about 0.65)
    check = meta["reweighting_check"]["E_ratio"]
    assert check["weighted"] < 0.75 * check["unweighted"]
    ref = read_showers(tmp_path / "train.h5", b)
    base = generate_sample(model, ref, 11)
    refined, idx = generate_refined_sample(model, ref, 11, clf, 4)
    assert np.bincount(idx, minlength=4).min() > 0
    r, g0, g4 = (features_of(s)["E_ratio"].mean() for s in (ref, base, refined))
    assert g0 < g4 < r and abs(g4 - r) < 0.9 * abs(g0 - r), (r, g0, g4)  # paired: candidate 0 is the base sample


def test_onnx_graph_agrees_with_torch_and_runs_in_the_simulation(tmp_path, capsys):
    import onnxruntime as ort

    from lhcml.export.fastcalo import check_inputs
    from lhcml.sim.fastcalo import OnnxShowerModel

    model, b, ckpt = _tiny(tmp_path)
    clf, pt = _spread_classifier(tmp_path, model, b)
    onx, meta = _cli_export(tmp_path / "refined.onnx", ckpt, pt, capsys, ["-k", "3", "--w-max", "20"], "3 candidates")
    k, d = 3, model.noise_dim
    assert int(meta["noise_dim"]) == k * d + 1 and '"candidates": 3' in meta["refinement"]
    inputs = check_inputs(model, 200, 9, k * d + 1)
    sess = ort.InferenceSession(str(onx), providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], inputs, strict=True)))[0]
    sir = sir_sampler(_graph(model), model, load_refinement(pt)[0], k, 20.0)
    with torch.no_grad():
        want = sir(*(torch.from_numpy(a) for a in inputs)).numpy()
    e = inputs[0]
    np.testing.assert_allclose(got / e, want / e, rtol=0, atol=1e-4)
    # the choice is not trivial: more than one candidate slot is used
    with torch.no_grad():
        slot0 = _graph(model)(*(torch.from_numpy(a) for a in inputs[:-1]), torch.from_numpy(inputs[-1][:, :d])).numpy()
    same = (np.abs(want - slot0).max(1) / e[:, 0] < 1e-5).sum()
    assert 0 < same < len(want)
    # lhcml.sim.fastcalo runs it unchanged (noise_dim from the metadata)
    sim = OnnxShowerModel(str(onx), b)
    showers = sim.generate(np.full(50, 30.0), np.random.default_rng(1), eta=np.full(50, 0.5))
    assert showers.shape == (50, b.n_voxels) and np.isfinite(showers).all()


def test_weight_power_in_the_onnx_graph_and_the_cli(tmp_path, capsys):
    """refine-export --weight-power 3: the graph keeps what sir_select keeps with the same logits, uniforms and power
    (not what power 1 keeps), records the power, and a power <= 0 is one message, exit code 2, no file."""
    import onnxruntime as ort

    from lhcml import cli
    from lhcml.export.fastcalo import check_inputs
    from lhcml.models.fastcalo.refine import uniform_from_normal

    model, b, ckpt = _tiny(tmp_path)
    clf, pt = _spread_classifier(tmp_path, model, b)
    onx, meta = _cli_export(tmp_path / "sharp.onnx", ckpt, pt, capsys, ["-k", "4", "--weight-power", "3"],
                            "weights to the power 3")  # fmt: skip
    assert '"weight_power": 3.0' in meta["refinement"]
    k, d, n = 4, model.noise_dim, 400
    inputs = check_inputs(model, n, 12, k * d + 1)
    sess = ort.InferenceSession(str(onx), providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], inputs, strict=True)))[0]
    t = [torch.from_numpy(a) for a in inputs]
    with torch.no_grad():
        cands = np.stack([_graph(model)(*t[:-1], t[-1][:, j * d:(j + 1) * d]).numpy() for j in range(k)])
        e = t[0].reshape(-1)
        cond = model.condition(e, t[1].reshape(-1), None)
        logits = torch.stack([clf(torch.from_numpy(c), e, cond).reshape(-1) for c in cands])
    u = uniform_from_normal(t[-1][:, -1])
    want3 = sir_choice(logits, u, power=3.0).numpy()
    want1 = sir_choice(logits, u).numpy()
    kept = (np.abs(cands - got[None]).max(2) / inputs[0][:, 0]).argmin(0)
    assert (kept == want3).mean() > 0.99  # float32 round-off may flip a choice at a cdf edge
    assert float(logits.std(0).median()) > 0.05, logits.std(0).median()  # weights that differ within a shower
    assert (want3 != want1).sum() > 10  # the power changed choices
    for bad in ("0", "-2", "nan"):
        out = tmp_path / f"bad{bad}.onnx"
        with pytest.raises(SystemExit) as exc:
            cli.main(["fastcalo", "refine-export", str(ckpt), str(pt), "-o", str(out), "-k", "4", "--weight-power", bad])
        assert exc.value.code == 2 and not out.exists()
        err = capsys.readouterr().err
        assert "--weight-power must be a number > 0" in err and "Traceback" not in err


def test_bad_inputs_are_config_errors(tmp_path):
    model, b, ckpt = _tiny(tmp_path)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="--candidates must be an integer >= 1"):
            check_candidates(k)
    with pytest.raises(ConfigError, match="--w-max must be a number > 1"):
        check_candidates(2, 0.5)
    other = RefinementClassifier([b.layer_sizes[0], 3], np.zeros((2, b.layer_sizes[0] + 3)), model.cond_dim, (4,))
    with pytest.raises(ConfigError, match="another binning"):
        sir_sampler(_graph(model), model, other, 2)
    clf = RefinementClassifier(b.layer_sizes, np.stack(b.voxel_centres()), model.cond_dim, (4,), "0" * 64)
    from lhcml.export.fastcalo import export_checkpoint

    with pytest.raises(ConfigError, match="binning"):
        export_checkpoint(ckpt, tmp_path / "x.onnx", refiner=clf, candidates=2, timing=False)
    with pytest.raises(ConfigError, match="--candidates must be an integer >= 1"):
        export_checkpoint(ckpt, tmp_path / "x.onnx", refiner=clf, candidates=0, timing=False)
    with pytest.raises(ConfigError, match="need a refinement classifier"):
        export_checkpoint(ckpt, tmp_path / "x.onnx", candidates=2, timing=False)
    (tmp_path / "junk.pt").write_bytes(b"not a file")
    with pytest.raises(ConfigError, match="not a refinement file") as bad:
        load_refinement(tmp_path / "junk.pt")
    assert "weights_only" not in str(bad.value)  # no advice to load untrusted files unsafely


def test_temperature_recovers_an_overconfident_scale():
    """Logits of N(+-1, 1) classes are 2x; scaled by 6 (an overconfident classifier) the fitted temperature is 3."""
    from lhcml.train.fastcalo_refine import fit_temperature

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100000)
    x = (2 * y - 1) + rng.standard_normal(len(y))
    assert abs(fit_temperature(2 * x, y) - 1.0) < 0.05
    assert abs(fit_temperature(6 * 2 * x, y) - 6.0) < 0.3


def test_the_benchmarks_bad_options_are_one_usage_error_before_anything_loads(tmp_path, capsys):
    """benchmarks/fastcalo_refine.py: a weight power <= 0, a malformed --cascade, a cascade without a student or with
    --no-auc are each one argparse error (exit code 2) naming the option, before a file is opened (none exists here)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks/fastcalo_refine.py"
    spec = importlib.util.spec_from_file_location("fastcalo_refine_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = [str(tmp_path / "none.ckpt"), "--after", "a", "--teacher", "t", "--reference", "r", "--work", str(tmp_path)]
    cases = [(["--weight-power", "0"], "--weight-power takes numbers > 0"),
             (["--weight-power", "1", "-2"], "--weight-power takes numbers > 0"),
             (["--student", "s", "--cascade", "4x2"], "--cascade takes K:M"),
             (["--cascade", "4:2"], "needs --student"),
             (["--student", "s", "--cascade", "4:2", "--no-auc"], "drop --no-auc")]  # fmt: skip
    for extra, msg in cases:
        with pytest.raises(SystemExit) as exc:
            mod.main(base + extra)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and msg in err and "Traceback" not in err, (extra, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # the labels and graph names: power 1 is the plain row (the old names), another power is marked in both
    assert mod._label({"variant": "student", "k": 7, "power": 1.0}) == "student"
    assert mod._label({"variant": "student", "k": 7, "power": 2.0}) == "student (w^2)"
    assert mod._name({"variant": "student", "k": 7, "power": 1.0}) == "student_k7"
    assert mod._name({"variant": "teacher", "k": 5, "power": 1.5}) == "teacher_k5_w1.5"
