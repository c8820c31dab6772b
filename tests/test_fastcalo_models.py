"""The fast-calorimeter VAE and WGAN-GP, their training through lhcml's machinery and ONNX export.

Both models are trained with :func:`lhcml.train.fastcalo.fit_fastcalo` (the function behind
``lhcml train configs/fastcalo/{vae,gan}.yaml``) on a synthetic two-energy sample written in the
CaloChallenge layout with :mod:`lhcml.data.calochallenge`. The synthetic showers depend on the
incident energy as real ones do (our toy numbers): the response E_dep / E_inc falls from 0.95 at
2 GeV to 0.88 at 64 GeV (leakage), the resolution is 10 %/sqrt(E), and the longitudinal profile
moves deeper (the first layer's share of the deposit falls from 0.45 to 0.12, the last layer's
rises from 0.08 to 0.30). Criteria of "learns":

* **energy tracking**: at each energy the mean generated total energy agrees with the data's
  within 5 % (VAE) / 10 % (GAN, trained for seconds) -- the stated energy-conservation tolerance
  -- while a constant (the data's mean total energy over both energies) is off by 48 % at
  64 GeV and a factor 14 at 2 GeV, and the untrained model is off by at least 3x the trained
  model's error;
* **layer fractions** (VAE): the mean share of each layer agrees with the data's within 0.05
  at each energy (the data's shares move by 0.2-0.3 between the energies);

* **latent space** (VAE): showers decoded from the prior and from the data's posterior means
  have the same layer energies (within 0.03 of E_inc) at each energy;

plus determinism given the noise, ONNX == PyTorch (through ``lhcml export``), the checkpoint
round trip, an exact resume, ``lhcml tune`` on a fast-calo config, and one clear error for a
bad config, a foreign checkpoint and energies outside the trained range.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lhcml.data.calochallenge import Binning, LayerBinning, write_binning, write_showers
from lhcml.errors import CheckpointMismatchError, ConfigError

ENERGIES = (2.0, 64.0)
RESPONSE = {2.0: 0.95, 64.0: 0.88}
#: mean layer shares of the deposit at the two energies (three layers)
SHARES = {2.0: (0.45, 0.47, 0.08), 64.0: (0.12, 0.58, 0.30)}
LAYER_SHAPES = ((3, 3), (5, 5), (3, 3))
N_TRAIN, N_VAL = 2000, 600


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    e = np.repeat(np.asarray(ENERGIES), n // 2)
    resp = np.array([RESPONSE[x] for x in e])
    dep = e * np.clip(resp + 0.1 / np.sqrt(e) * rng.standard_normal(len(e)), 0.3, 1.2)
    shares = np.stack([rng.dirichlet(50 * np.asarray(SHARES[x])) for x in e])
    parts = []
    for k, (ne, nphi) in enumerate(LAYER_SHAPES):
        ie, ip = np.meshgrid(np.arange(ne) - (ne - 1) / 2, np.arange(nphi) - (nphi - 1) / 2, indexing="ij")
        prof = np.exp(-(ie**2 + ip**2).ravel() / 1.2)
        lat = rng.dirichlet(40 * prof / prof.sum(), size=len(e))
        parts.append(lat * (dep * shares[:, k])[:, None])
    return e, np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fastcalo")
    layers = tuple(
        LayerBinning(id=i + 1, kind="cells", name=nm, n_eta=s[0], n_phi=s[1], deta=0.025, dphi=0.0245)
        for i, (nm, s) in enumerate(zip(("strips", "middle", "back"), LAYER_SHAPES, strict=True))
    )
    binning = write_binning(Binning("photon", 22, layers), d / "binning.xml")
    for name, n, seed in (("train", N_TRAIN, 1), ("val", N_VAL, 2)):
        e, x = _synthetic(n, seed)
        write_showers(d / f"{name}.h5", e, x, binning)
    return {"dir": d, "binning": d / "binning.xml", "train": d / "train.h5", "val": d / "val.h5"}


def _config(sample: dict[str, Path], out: Path, model: dict, epochs: int, lr: float, batch: int) -> dict:
    return {
        "data": {"train_files": [str(sample["train"])], "val_files": [str(sample["val"])],
                 "binning": str(sample["binning"]), "batch_size": batch},
        "model": model,
        "optimizer": {"name": "adam", "lr": lr, "weight_decay": 0.0},
        "trainer": {"max_epochs": epochs, "patience": None, "accelerator": "cpu", "enable_progress_bar": False},
        "seed": 3,
        "output_dir": str(out),
    }  # fmt: skip


VAE = {"name": "fastcalo_vae", "latent_dim": 6, "hidden": [64, 32]}
GAN = {"name": "fastcalo_gan", "latent_dim": 16, "gen_hidden": [64, 128]}


def _fit(cfg: dict) -> Path:
    from lhcml.train.fastcalo import fastcalo_config_from_dict, fit_fastcalo

    return fit_fastcalo(fastcalo_config_from_dict(copy.deepcopy(cfg)))


@pytest.fixture(scope="module")
def vae_run(sample: dict[str, Path]) -> tuple[dict, Path]:
    cfg = _config(sample, sample["dir"] / "vae", VAE, epochs=12, lr=3e-3, batch=100)
    return cfg, _fit(cfg)


@pytest.fixture(scope="module")
def gan_run(sample: dict[str, Path]) -> tuple[dict, Path]:
    cfg = _config(sample, sample["dir"] / "gan", GAN, epochs=50, lr=4e-4, batch=100)
    return cfg, _fit(cfg)


def _data_means(sample: dict[str, Path]) -> dict[float, tuple[float, np.ndarray]]:
    from lhcml.data.calochallenge import read_showers

    s = read_showers(sample["val"], sample["binning"])
    out = {}
    for e0 in ENERGIES:
        m = s.energies == e0
        lay = s.layer_energies()[m]
        out[e0] = (float(s.showers[m].sum(1).mean()), (lay / lay.sum(1, keepdims=True)).mean(0))
    return out


def _model_means(model, n: int = 1000, seed: int = 7) -> dict[float, tuple[float, np.ndarray]]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for e0 in ENERGIES:
        x = model.generate(torch.full((n,), e0), generator=gen)
        lay = model.layer_energies(x).numpy()
        out[e0] = (float(x.sum(1).mean()), (lay / np.clip(lay.sum(1, keepdims=True), 1e-12, None)).mean(0))
    return out


def _energy_errors(means: dict, data: dict) -> np.ndarray:
    """|<E_gen> - <E_data>| / <E_data> at each energy."""
    return np.array([abs(means[e][0] - data[e][0]) / data[e][0] for e in ENERGIES])


def _untrained(run: tuple[dict, Path]):
    from lhcml.train.fastcalo import build_generator, load_generator

    model, meta = load_generator(run[1])
    torch.manual_seed(0)
    fresh = build_generator(meta["model_name"], yaml.safe_load(meta["model_init_yaml"]))
    from lhcml.data.calochallenge import read_showers

    s = read_showers(run[0]["data"]["train_files"][0], run[0]["data"]["binning"])
    fresh.prepare(torch.from_numpy(s.energies).float(), torch.from_numpy(s.showers))
    return model, fresh.eval()


@pytest.mark.parametrize("which", ["vae", "gan"])
def test_model_learns_energy_response(which: str, sample, vae_run, gan_run) -> None:
    run = vae_run if which == "vae" else gan_run
    tol = 0.05 if which == "vae" else 0.10
    data = _data_means(sample)
    model, fresh = _untrained(run)
    err = _energy_errors(_model_means(model), data)
    err_untrained = _energy_errors(_model_means(fresh), data)
    pooled = np.mean([data[e][0] for e in ENERGIES])
    err_constant = np.array([abs(pooled - data[e][0]) / data[e][0] for e in ENERGIES])
    assert np.all(err < tol), (which, err)
    assert err_constant.min() > 4 * tol
    assert err_untrained.max() > 3 * err.max(), (which, err, err_untrained)


def test_vae_layer_fractions_follow_the_energy(sample, vae_run) -> None:
    data = _data_means(sample)
    model, fresh = _untrained(vae_run)
    got = _model_means(model)
    for e0 in ENERGIES:
        assert np.max(np.abs(got[e0][1] - data[e0][1])) < 0.05, (e0, got[e0][1], data[e0][1])
    # the dependence on the energy is learned: the untrained model gives the same shares at both
    shift_data = data[64.0][1] - data[2.0][1]
    shift_gen = got[64.0][1] - got[2.0][1]
    assert np.all(np.abs(shift_gen - shift_data) < 0.07), (shift_gen, shift_data)


@pytest.mark.parametrize("which", ["vae", "gan"])
def test_showers_physical_and_deterministic_given_noise(which: str, vae_run, gan_run) -> None:
    from lhcml.train.fastcalo import load_generator

    model, _ = load_generator((vae_run if which == "vae" else gan_run)[1])
    e = torch.tensor([2.0, 5.0, 64.0, 64.0])
    z = torch.randn(4, model.noise_dim, generator=torch.Generator().manual_seed(1))
    a, b = model.sample(e, z), model.sample(e, z.clone())
    assert torch.equal(a, b) and a.shape == (4, model.n_voxels) and bool((a >= 0).all())
    g1 = model.generate(e, generator=torch.Generator().manual_seed(9))
    g2 = model.generate(e, generator=torch.Generator().manual_seed(9))
    assert torch.equal(g1, g2)
    assert not torch.equal(g1, model.generate(e, generator=torch.Generator().manual_seed(10)))
    with pytest.raises(ConfigError, match="outside the trained range"):
        model.generate(torch.tensor([100.0]))


def test_vae_latent_space(vae_run) -> None:
    from lhcml.data.calochallenge import read_showers
    from lhcml.train.fastcalo import load_generator

    model, _ = load_generator(vae_run[1])
    s = read_showers(vae_run[0]["data"]["val_files"][0], vae_run[0]["data"]["binning"])
    e, x = torch.from_numpy(s.energies).float(), torch.from_numpy(s.showers)
    with torch.no_grad():
        mu, logvar = model.encode(e, x)
        z = torch.randn(len(e), model.noise_dim, generator=torch.Generator().manual_seed(2))
        prior, posterior = model.decode(e, z), model.decode(e, mu)
    assert mu.shape == logvar.shape == (len(e), model.noise_dim)
    assert torch.equal(prior, model.sample(e, z))  # threshold 0: sample = decode of the noise
    # showers decoded from the prior and from the data's posterior means agree layer by layer at
    # each energy: the latent distribution of the data is the prior the generator samples (the
    # plain ELBO's property; a VAE with a too-weak KL term fails this)
    for e0 in ENERGIES:
        m = e == e0
        a = model.layer_energies(prior[m]).mean(0) / e0
        b = model.layer_energies(posterior[m]).mean(0) / e0
        assert torch.max(torch.abs(a - b)) < 0.03, (e0, a, b)


@pytest.mark.parametrize("which", ["vae", "gan"])
def test_onnx_matches_pytorch(which: str, vae_run, gan_run, tmp_path: Path) -> None:
    import onnxruntime as ort

    from lhcml.export import export_model
    from lhcml.export.fastcalo import export_generator
    from lhcml.train.fastcalo import load_generator

    run = vae_run if which == "vae" else gan_run
    model, meta = load_generator(run[1])
    rep = export_model(Path(run[0]["output_dir"]), tmp_path / "m.onnx", timing=False)  # `lhcml export` path
    assert rep.max_abs_diff_random < 1e-5
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    assert props["noise_dim"] == str(model.noise_dim) and props["particle"] == "photon"
    assert props["binning_sha256"] == meta["binning_sha256"] and float(props["e_max_gev"]) == 64.0
    e = np.array([[2.0], [7.5], [64.0]], np.float32)
    z = np.random.default_rng(4).standard_normal((3, model.noise_dim)).astype(np.float32)
    got = sess.run(["showers"], {"incident_energy": e, "noise": z})[0]
    ref = model.sample(torch.from_numpy(e[:, 0]), torch.from_numpy(z)).detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * 64)
    with pytest.raises(FileExistsError):
        export_generator(model, tmp_path / "m.onnx", binning_file_sha256=meta["binning_sha256"], particle="photon")


def test_checkpoint_round_trip_and_exact_resume(sample, vae_run, tmp_path: Path) -> None:
    from lhcml.train.checkpoint import read_checkpoint
    from lhcml.train.fastcalo import fastcalo_config_from_dict, fit_fastcalo, load_generator

    model, meta = load_generator(vae_run[1])
    ckpt = read_checkpoint(vae_run[1])
    state = {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert meta["kind"] == "fastcalo" and meta["model_name"] == "fastcalo_vae"

    small = dict(VAE, hidden=[16])
    straight = _config(sample, tmp_path / "a", small, epochs=3, lr=3e-3, batch=200)
    _fit(straight)
    crashed = _config(sample, tmp_path / "b", small, epochs=2, lr=3e-3, batch=200)
    _fit(crashed)  # "crash" after epoch 2: resume to epoch 3 with the full config
    crashed["trainer"]["max_epochs"] = 3
    fit_fastcalo(fastcalo_config_from_dict(crashed), resume=True)
    a = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    other = copy.deepcopy(crashed)
    other["model"]["latent_dim"] = 4
    with pytest.raises(CheckpointMismatchError, match="model.latent_dim: checkpoint 6 vs config 4"):
        fit_fastcalo(fastcalo_config_from_dict(other), resume=True)


def test_bad_config_and_foreign_checkpoint(sample, vae_run, tmp_path: Path) -> None:
    from lhcml.train.checkpoint import read_checkpoint
    from lhcml.train.fastcalo import load_generator
    from lhcml.train.protocol import load_trainable_config

    cfg = _config(sample, tmp_path / "x", VAE, epochs=1, lr=1e-3, batch=100)
    bad = copy.deepcopy(cfg)
    bad["data"]["batchsize"] = 10
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="batchsize"):
        load_trainable_config(path)
    bad = copy.deepcopy(cfg)
    bad["model"]["latent_dims"] = 3
    with pytest.raises(ConfigError, match="unknown hyperparameter 'model.latent_dims'.*latent_dim"):
        _fit(bad)
    bad = copy.deepcopy(cfg)
    bad["model"]["n_voxels"] = 3
    with pytest.raises(ConfigError, match="comes from the data"):
        _fit(bad)
    # a checkpoint whose tensors do not fit the model its metadata describes
    ckpt = read_checkpoint(vae_run[1])
    init = yaml.safe_load(ckpt["lhcml"]["model_init_yaml"])
    ckpt["lhcml"]["model_init_yaml"] = yaml.safe_dump({**init, "latent_dim": 3})
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointMismatchError, match="differ in shape"):
        load_generator(tmp_path / "other.ckpt")


def test_lhcml_tune_runs_a_fastcalo_config(sample, tmp_path: Path) -> None:
    """`lhcml tune` validates and trains fast-calo configs through the trainer protocol."""
    from lhcml.tune.cli import run_tune

    cfg = _config(sample, tmp_path / "unused", dict(VAE, hidden=[16]), epochs=1, lr=3e-3, batch=200)
    (tmp_path / "vae.yaml").write_text(yaml.safe_dump(cfg))
    space = {
        "study_name": "vae_tiny", "sampler": "random", "pruner": "none", "n_trials": 2, "seed": 7,
        "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "parameters": {"model.beta_kl": {"type": "float", "low": 0.5, "high": 1.0}},
    }  # fmt: skip
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    report = run_tune(tmp_path / "vae.yaml", tmp_path / "space.yaml", tmp_path / "study", progress=False)
    assert report.is_file()
    assert len(list((tmp_path / "study" / "trials").glob("trial_*/checkpoints/best-*.ckpt"))) == 2
    bad = dict(space, parameters={"model.beta_kll": {"type": "float", "low": 0.5, "high": 1.0}})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="beta_kll"):
        run_tune(tmp_path / "vae.yaml", tmp_path / "bad.yaml", tmp_path / "study2", progress=False)


def test_export_checkpoint_uses_the_models_own_tolerance(monkeypatch, tmp_path: Path) -> None:
    """`lhcml export` of a flow / flow-matching checkpoint checks onnxruntime against the model's
    ``onnx_atol`` (float32 ODE/spline solvers), a model without one against the default, and an
    explicit ``--atol`` wins over both."""
    import types

    import lhcml.export.fastcalo as fx
    import lhcml.train.fastcalo as tf

    meta = {"binning_sha256": "0" * 64, "particle": "photon", "config_yaml": ""}
    used: list[float] = []
    monkeypatch.setattr(fx, "export_generator", lambda model, out, **kw: used.append(kw["atol"]))
    for model, atol, want in [(types.SimpleNamespace(onnx_atol=1e-4), None, 1e-4),
                              (types.SimpleNamespace(), None, fx.DEFAULT_ATOL),
                              (types.SimpleNamespace(onnx_atol=1e-4), 3e-6, 3e-6)]:  # fmt: skip
        monkeypatch.setattr(tf, "load_generator", lambda ckpt, _m=model: (_m, meta))
        fx.export_checkpoint(tmp_path / "x.ckpt", tmp_path / "x.onnx", atol=atol, timing=False)
        assert used[-1] == want
