"""Helpers shared by the fast-calorimeter tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


def strip_showers(rng: np.random.Generator, e: np.ndarray, prof: np.ndarray) -> np.ndarray:
    """Showers of the strip-pass tests: a strip profile ``prof`` (n, n_eta) split randomly over two φ rows, then four
    other layers' cells holding 60 % of the strip energy on average, all times the incident energy ``e``."""
    n, n_eta = prof.shape
    t = rng.uniform(0.3, 0.7, (n, n_eta))
    strips = np.stack([prof * t, prof * (1 - t)], axis=2).reshape(n, -1)
    other = rng.dirichlet(np.ones(4), n) * 0.6 * rng.uniform(0.8, 1.2, n)[:, None]
    return (np.concatenate([strips, other], axis=1) * e[:, None]).astype(np.float32)


def strip_sample(seed: int, n: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """The strip-pass tests' conditions: n showers at 10 GeV and n at 100 GeV, |η| uniform in 0.2–1.3."""
    rng = np.random.default_rng(seed)
    e = np.repeat([10.0, 100.0], n)
    return rng, e, rng.uniform(0.2, 1.3, 2 * n)


def two_cell_showers(rng: np.random.Generator, phase: np.ndarray) -> torch.Tensor:
    """Synthetic showers (10 voxels): a first layer of 4 cells whose two central cells share 0.9 of its
    energy as the impact position inside a cell says (``phase`` 0: all in cell 1, 1: all in cell 2; as
    the detailed middle layer's centroid), the outer two 0.05 each, 5 % jitter, normalised to 4; a
    second layer of 6 cells, Dirichlet(30), normalised to 5."""
    n = len(phase)
    first = np.zeros((n, 4))
    first[:, 0] = 0.05
    first[:, 1] = 0.9 * (1 - phase) + 0.02
    first[:, 2] = 0.9 * phase + 0.02
    first[:, 3] = 0.05
    first *= rng.uniform(0.95, 1.05, (n, 4))
    second = rng.dirichlet(np.full(6, 30.0), size=n)
    x = np.concatenate([4.0 * first / first.sum(1, keepdims=True), 5.0 * second], 1)
    return torch.from_numpy(x.astype(np.float32))


def fit_cfm(model: Any, e: torch.Tensor, x: torch.Tensor, eta: torch.Tensor, steps: int, lr: float = 2e-3,
            seed: int = 0, batch: int = 256, phi: torch.Tensor | None = None) -> Any:  # fmt: skip
    """Train a small η-conditioned flow-matching model on ``(e, x, eta)`` for ``steps`` Adam steps of
    ``batch`` showers drawn with torch's global generator seeded by ``seed``; returns it in train mode.
    ``phi``: each shower's φ, given to the model (one with ``phi_cells``) beside ``eta``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    torch.manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(e), (batch,))
        cond = {"eta": eta[idx]} if phi is None else {"eta": eta[idx], "phi": phi[idx]}
        loss = model.loss_terms(e[idx], x[idx], "model", **cond)["cfm"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def tiny_fm_overrides(d: Path, out: str, align_max_shift: int, *extra: str) -> list[str]:
    """``--set`` overrides that train a flow-matching config in a second on the sample ``d/t.h5`` (binning
    ``d/b.xml``) into ``d/out``: one epoch, a 16-wide one-block network, two solver steps."""
    return [f"data.train_files=[{d / 't.h5'}]", f"data.val_files=[{d / 't.h5'}]", f"data.binning={d / 'b.xml'}",
            f"output_dir={d / out}", "trainer.max_epochs=1", f"model.align_max_shift={align_max_shift}",
            "model.hidden=16", "model.depth=1", "model.steps=2", "data.batch_size=32", "data.e_min_gev=1.0",
            "data.e_max_gev=100.0", *extra]  # fmt: skip


def assert_train_exits_2(config: str, overrides: list[str], message: str, out_dir: Path, capsys: Any) -> None:
    """``lhcml train config --set ...`` ends with exit code 2, ``message`` on stderr, no traceback and no
    checkpoint in ``out_dir``."""
    from lhcml.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", config, *[a for o in overrides for a in ("--set", o)]])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out_dir / "checkpoints").exists()


def random_photon_showers(n_voxels: int, n: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random barrel photon showers for a model's ``prepare``: energies log-uniform in 1-260 GeV, |eta|
    uniform in 0-1.37, voxel shares Dirichlet(0.3) times the energy (numpy generator seeded 0; ``e, eta, x``)."""
    rng = np.random.default_rng(0)
    e = torch.from_numpy(np.exp(rng.uniform(0, np.log(260.0), n)).astype(np.float32))
    eta = torch.from_numpy(rng.uniform(0, 1.37, n).astype(np.float32))
    x = torch.from_numpy(rng.dirichlet(np.full(n_voxels, 0.3), size=n).astype(np.float32)) * e[:, None]
    return e, eta, x


def real_binning_fm_checkpoint(tmp_path: Path) -> tuple[Any, Any, Path]:
    """A tiny flow-matching checkpoint on the detailed calorimeter's binning, conditioned on |eta|."""
    import yaml

    from lhcml.data.calochallenge import write_binning
    from lhcml.models.fastcalo.fm import CaloFlowMatching
    from lhcml.sim.fastcalo import voxel_binning

    b = write_binning(voxel_binning("photon"), tmp_path / "binning_photon.xml")
    torch.manual_seed(0)
    init = dict(n_voxels=b.n_voxels, layer_sizes=list(b.layer_sizes), e_min_gev=1.0, e_max_gev=260.0, hidden=16,
                depth=1, steps=4, eta_range=[0.0, 1.37])  # fmt: skip
    m = CaloFlowMatching(**init)
    m.prepare(torch.full((8,), 10.0), torch.rand(8, b.n_voxels) * (10.0 / b.n_voxels))
    meta = {"format_version": 1, "kind": "fastcalo", "model_name": "fastcalo_fm", "model_init_yaml": yaml.safe_dump(init),
            "particle": "photon", "binning_sha256": b.sha256, "binning_xml": b.to_xml()}  # fmt: skip
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"lhcml": meta, "state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}}, ckpt)
    return m, b, ckpt


def photon_fm_model(**kw: Any) -> Any:
    """A tiny flow-matching photon model on the shipped binning with strip ratios (options overridable)."""
    from lhcml.models.fastcalo.fm import CaloFlowMatching
    from lhcml.sim.fastcalo import voxel_binning

    b = voxel_binning("photon")
    opts = dict(hidden=16, depth=1, steps=2, voxel_space="log", threshold_kev=1000.0, eta_range=(0.0, 1.37),
                align_max_shift=4, align_n_phi=3, strip_ratios=True)  # fmt: skip
    opts.update(kw)
    return CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, **opts)


def assert_trains_samples_exports(m: Any, tmp_path: Path, tag: str, check: Any = None) -> None:
    """``m`` (:func:`photon_fm_model`) prepared on random showers has a finite loss, samples non-negative finite
    showers, and exports to both ONNX graphs (traced and lean; agreement with PyTorch asserted by the export) that
    onnxruntime samples from; ``check(m, binning)`` runs after the preparation."""
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning

    b = voxel_binning("photon")
    torch.manual_seed(0)
    e, eta, x = random_photon_showers(b.n_voxels)
    m.prepare(e, x, eta=eta)
    if check is not None:
        check(m, b)
    assert torch.isfinite(m.loss_terms(e[:32], x[:32], "model", eta=eta[:32])["cfm"])
    m.eval()
    with torch.no_grad():
        s = m.generate(e[:8], generator=torch.Generator().manual_seed(1), eta=eta[:8])
    assert torch.all(s >= 0) and torch.isfinite(s).all()
    for lean in (False, True):
        path = tmp_path / f"{tag}_{lean}.onnx"
        export_generator(m, path, binning_file_sha256=b.sha256, particle="photon", binning_xml=b.to_xml(),
                         timing=False, n_check=64, atol=1e-4, lean=lean)  # fmt: skip
        out = OnnxShowerModel(str(path)).generate(np.full(4, 50.0), np.random.default_rng(0), eta=np.full(4, 1.2))
        assert out.shape == (4, b.n_voxels) and np.all(np.isfinite(out))


def write_photon_sample(tmp_path: Path, layers: Any, e: torch.Tensor, x: torch.Tensor) -> Path:
    """A tiny photon training file ``t.h5`` (showers ``e``, ``x`` on the binning of ``layers``, written as ``b.xml``;
    η uniform in the barrel, φ uniform) in ``tmp_path``, which is returned."""
    from lhcml.data.calochallenge import Binning, write_binning, write_showers

    b = write_binning(Binning("photon", 22, layers), tmp_path / "b.xml")
    eta = np.random.default_rng(5).uniform(0.0, 1.37, len(e))
    phi = np.random.default_rng(6).uniform(-np.pi, np.pi, len(e))
    write_showers(tmp_path / "t.h5", e.numpy(), x.numpy(), b, eta=eta, phi=phi)
    return tmp_path


def assert_init_from_refused(config: str, runs: list[tuple[Path, list[str]]], message: str) -> None:
    """Each (output folder, overrides) training run, started from a checkpoint of another representation, is refused
    with one CheckpointMismatchError naming ``message`` and leaves no checkpoint behind."""
    from lhcml.errors import CheckpointMismatchError
    from lhcml.train.protocol import load_trainable_config

    for out_dir, overrides in runs:
        trainer, cfg = load_trainable_config(config, overrides)
        with pytest.raises(CheckpointMismatchError, match=message):
            trainer.fit(cfg)
        assert not list(out_dir.glob("checkpoints/*.ckpt"))


def rewrite_npz(src: Path, dst: Path, **changes: Any) -> Path:
    """Copy the ``.npz`` file ``src`` to ``dst`` with arrays replaced (or dropped where the value is ``None``):
    the bad-file tests' way of making one broken file at a time."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return dst


def checkpoint_and_training_file(tmp_path: Path, data_seed: int, noise_seed: int, n: int = 400) -> tuple[Any, Any, Path]:
    """A tiny real-binning generator checkpoint (:func:`real_binning_fm_checkpoint`) and ``tmp_path/train.h5``, a
    "detailed" sample unlike it: its own showers at 5 and 50 GeV over the barrel, each cell scaled by a log-normal
    factor, so that a quantile correction fitted on it has work to do."""
    import torch

    from lhcml.data.calochallenge import write_showers

    m, b, ckpt = real_binning_fm_checkpoint(tmp_path)
    rng = np.random.default_rng(data_seed)
    e = np.repeat([5.0, 50.0], n // 2)
    eta = rng.uniform(0.0, 1.3, n)
    with torch.no_grad():
        x = m.eval().generate(torch.as_tensor(e, dtype=torch.float32), torch.Generator().manual_seed(noise_seed),
                              eta=torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    write_showers(tmp_path / "train.h5", e, x * rng.lognormal(0.3, 0.2, x.shape).astype(np.float32), b, {}, eta=eta)
    return m, b, ckpt


def corrected_onnx_matches_apply(tmp_path: Path, capsys: Any, extra_args: list[str], data_seed: int,
                                 n: int) -> tuple[Any, dict[str, str]]:  # fmt: skip
    """``lhcml fastcalo quantile-map CKPT train.h5 --quantiles 8 EXTRA --onnx OUT`` on
    :func:`checkpoint_and_training_file`: asserts that onnxruntime's corrected showers are the correction's
    ``apply()`` on the PyTorch sampler's showers for the same noise (float32 rounding) and that it corrects
    something; returns the fitted correction and the graph's metadata for the caller's own checks."""
    import onnx
    import onnxruntime as ort
    import pytest
    import torch

    from lhcml import cli
    from lhcml.export.fastcalo import check_inputs
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection, correction_path
    from lhcml.train.fastcalo import load_generator

    _, _, ckpt = checkpoint_and_training_file(tmp_path, data_seed=data_seed, noise_seed=5, n=n)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored["lhcml"]["config_yaml"] = "model: {name: fastcalo_fm}\n"  # as a trained checkpoint (lhcml export copies it)
    torch.save(stored, ckpt)
    out = tmp_path / "corrected.onnx"
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--quantiles", "8", *extra_args,
                  "--onnx", str(out)])  # fmt: skip
    assert exc.value.code in (0, None) and "with the correction" in capsys.readouterr().out
    model, _ = load_generator(ckpt)
    corr = QuantileCorrection.load(correction_path(ckpt))
    inputs = check_inputs(model, 64, 3)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], inputs, strict=True)))[0]
    with torch.no_grad():
        plain = model.sample(torch.from_numpy(inputs[0][:, 0]), torch.from_numpy(inputs[-1]),
                             torch.from_numpy(inputs[1][:, 0])).numpy()  # fmt: skip
    want = corr.apply(plain, inputs[0][:, 0], inputs[1][:, 0])
    assert np.abs(want - plain).max() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-4 * float(inputs[0].min()))
    return corr, {p.key: p.value for p in onnx.load(str(out)).metadata_props}


def assert_reloaded_chain_agrees(corr: Any, saved: Path, x: np.ndarray, ee: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """A correction chain needing each shower's |eta| (|eta| nodes, an eta_phase, layer-energy or strip pass): the file ``saved``
    reloads to the same map, its torch module (the ONNX graph's) agrees with NumPy within float32 rounding, and
    applying it without |eta| is one ConfigError. Returns the chain's showers."""
    from lhcml.errors import ConfigError
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

    back = QuantileCorrection.load(saved)
    want = corr.apply(x, ee, eta)
    np.testing.assert_array_equal(back.apply(x, ee, eta), want)
    with torch.no_grad():
        got = back.torch_module()(torch.as_tensor(x), torch.as_tensor(ee, dtype=torch.float32),
                                  torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    assert np.abs(got - want).max() / ee.min() < 5e-4
    with pytest.raises(ConfigError, match="give each shower's eta"):
        back.apply(x, ee)
    return want


def assert_bounded_pass_round_trips(corr: Any, x: np.ndarray, e: np.ndarray, eta: np.ndarray, expected: np.ndarray,
                                    inside: np.ndarray, path: Path) -> Any:  # fmt: skip
    """A pass bounded in |eta| (``strip_eta_min`` / ``strip_eta_max``) saved and loaded applies as before, its torch
    module agrees with NumPy within 1e-5 of the largest energy, and the showers outside the bound come out of the
    graph exactly as they went in. Returns the loaded pass."""
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

    back = QuantileCorrection.load(corr.save(path))
    np.testing.assert_array_equal(back.apply(x, e, eta), expected)
    with torch.no_grad():
        got = back.torch_module()(torch.as_tensor(x), torch.as_tensor(e, dtype=torch.float32),
                                  torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    assert np.abs(got - expected).max() / e.max() < 1e-5
    np.testing.assert_array_equal(got[~inside], x[~inside])  # exactly, in the graph too
    return back
