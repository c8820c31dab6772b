"""Photon identification: cut menus, CNN training/prediction/ONNX via the shared trainer, PAED."""

from __future__ import annotations

import numpy as np
import pytest
from _photon_helpers import toy_pileup_library as _toy_pileup_library

from lhcml.errors import SchemaError
from lhcml.sim.photons import simulate_single
from lhcml.tasks.photon.cuts import LOOSE_VARIABLES, CutMenu, optimise_menu
from lhcml.tasks.photon.dataset import split_and_write


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small convolutions on a shared 2-core machine: one intra-op thread is ~40x faster."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _label(d, prompt: int):
    keep = d["photons"]["pt"] > 10_000
    out = {k: v[keep] for k, v in d.items()}
    out["photons"]["isPromptPhoton"] = prompt
    return out


@pytest.fixture(scope="module")
def photon_files(tmp_path_factory):
    rng = np.random.default_rng(21)
    g = _label(simulate_single(22, rng.uniform(20, 50, 260), 260, 21, eta=(-1.3, 1.3)), 1)
    p = _label(simulate_single(111, rng.uniform(20, 50, 260), 260, 22, eta=(-1.3, 1.3)), 0)
    merged = {k: np.concatenate([g[k], p[k]]) for k in g}
    return split_and_write(merged, tmp_path_factory.mktemp("photon"), seed=3)


def _photons(path):
    from lhcml.tasks.photon.evaluate import load_photons

    return load_photons([path])


def test_tight_cuts_reach_target_efficiency(photon_files, tmp_path):
    ph = _photons(photon_files["train"])
    sig = ph["isPromptPhoton"] == 1
    tight = optimise_menu(ph, sig, 0.85, min_entries=10_000, pt_edges_gev=(10.0, 1000.0))
    eff = tight.apply(ph)[sig].mean()
    assert abs(eff - 0.85) < 0.02, eff
    assert tight.achieved["background_efficiency"] < 0.6  # the strip cuts reject pi0s
    loose = optimise_menu(ph, sig, 0.97, variables=LOOSE_VARIABLES, name="loose", min_entries=10_000,
                          pt_edges_gev=(10.0, 1000.0))
    assert loose.apply(ph)[sig].mean() > eff
    assert loose.achieved["background_efficiency"] > tight.achieved["background_efficiency"]
    # round trip
    path = tight.save(tmp_path / "tight.yaml")
    again = CutMenu.load(path)
    np.testing.assert_array_equal(again.apply(ph), tight.apply(ph))
    # a table without the strip variables is refused with the field named
    from numpy.lib import recfunctions as rfn

    with pytest.raises(SchemaError, match="Eratio"):
        tight.apply(rfn.drop_fields(ph, "Eratio", usemask=False))


def test_cnn_train_predict_export_evaluate(photon_files, tmp_path):
    from lhcml.export.onnx import export_onnx
    from lhcml.tasks.photon.evaluate import evaluate_photon_id
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    cfg = load_train_config("configs/photon/cnn_had.yaml", [
        f"data.train_files=[{photon_files['train']}]", f"data.val_files=[{photon_files['val']}]",
        "data.batch_size=64", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "model.channels=[4, 8]", "model.dense=[16]", f"output_dir={tmp_path / 'cnn'}", "optimizer.lr=1e-3",
    ])  # fmt: skip
    best = train(cfg)
    (pred,) = predict(best, [photon_files["test"]], output_dir=tmp_path / "pred")
    ph = _photons(pred)
    assert {"photon_cnn_pprompt", "photon_cnn_pfake"} <= set(ph.dtype.names)
    np.testing.assert_allclose(ph["photon_cnn_pprompt"] + ph["photon_cnn_pfake"], 1.0, atol=1e-5)
    rep = export_onnx(best, tmp_path / "cnn.onnx", check_file=pred, n_check=50, timing=False)
    assert rep.max_abs_diff_random < 1e-5 and rep.max_abs_diff_real < 1e-5
    assert "images_had_features" in rep.inputs
    tr = _photons(photon_files["train"])
    menu = optimise_menu(tr, tr["isPromptPhoton"] == 1, 0.8, min_entries=10_000, name="tight80",
                         pt_edges_gev=(10.0, 1000.0))
    res = evaluate_photon_id([pred], {"photon_cnn": "CNN"}, tmp_path / "eval", menus=[menu],
                             bins={"pt": (10.0, 30.0, 60.0)})  # fmt: skip
    assert (tmp_path / "eval" / "report.html").is_file()
    w = res["taggers"]["photon_cnn"]["working_points"]["0.80"]
    sig = ph["isPromptPhoton"] == 1
    d = np.log(ph["photon_cnn_pprompt"]) - np.log(ph["photon_cnn_pfake"])
    passed_bkg = (d[~sig] > w["cut"]).mean()
    assert w["rejection"] == pytest.approx(1 / passed_bkg, rel=1e-6)
    roc = res["taggers"]["photon_cnn"]["roc"]
    assert np.all(np.diff(roc["bkg_eff"]) >= 0)  # more signal efficiency never rejects more
    c = res["cuts"]["tight80"]
    assert c["sig_eff"] == pytest.approx(menu.apply(ph)[sig].mean())


def test_paed_reduces_pileup_error_and_exports(tmp_path):
    """The PAED trains through the trainer protocol, denoises a file with the normalisation
    constants of the file (no simulation geometry) and exports through the one export function."""
    import h5py
    import torch
    import yaml

    from lhcml.data.images import NOISE_ATTR, SIGNIFICANCE_ATTR, read_image_noise
    from lhcml.export import export_model, read_metadata
    from lhcml.tasks.photon.denoise import (
        PAEDConfig,
        denoise,
        denoise_file,
        load_paed,
        pileup_energy_error,
        read_pairs,
    )
    from lhcml.train.protocol import TRAINERS, resolve_artifact

    lib = _toy_pileup_library(40, 31)
    # the uncorrected in-time pile-up (no readout mean subtraction): a positive offset the PAED must
    # learn; after the mean subtraction only unpredictable fluctuations remain. mu = 60: the
    # learnable offset (~0.9 GeV in the 7 x 11 middle window) well above the fluctuations (~0.5 GeV);
    # at mu = 30 (0.46 vs 0.37 GeV) the best possible error ratio (~0.63) sat next to the 0.75 cut and
    # the test passed or failed with the random stream (0.69-0.92 over seeds 31-33). With pile-up
    # showered with all its spots, 12 epochs left the PAED under-trained on some streams (after/before
    # 0.85 / 0.50 / 0.64 for seeds 31 / 32 / 33); 25 epochs give 0.59 / 0.44 / 0.64, all well below
    # the 0.75 cut, so the test no longer depends on the seed it runs with
    d = simulate_single(22, 30.0, 320, 31, eta=(-1.2, 1.2), mu=60.0, pileup=lib, raw_images=True,
                        subtract_pileup_mean=False)
    keep = d["photons"]["pt"] > 15_000
    d = {k: v[keep] for k, v in d.items()}
    d["photons"]["isPromptPhoton"] = 1
    files = split_and_write(d, tmp_path / "data", seed=1, fractions=(0.7, 0.3, 0.0))
    cfg = PAEDConfig(train_files=[str(files["train"])], val_files=[str(files["val"])], layers=["middle", "back"],
                     model={"channels": 8, "latent_dim": 16}, batch_size=32, lr=3e-3, max_epochs=25,
                     output_dir=str(tmp_path / "paed"))  # fmt: skip
    path = TRAINERS["paed"].fit(cfg)
    assert resolve_artifact(tmp_path / "paed") == (TRAINERS["paed"], path)
    model, stored = load_paed(path)
    noise, significance = read_image_noise(files["train"])  # written by split_and_write
    assert stored.image_noise_mev == noise and stored.image_noise_significance == significance
    assert noise["middle"] > 0 and significance > 0
    x, y = read_pairs([files["val"]], ["middle", "back"])
    before = pileup_energy_error(x, y)
    after = pileup_energy_error(denoise(model, x), y)
    assert before["raw_middle"] > 100.0  # real pile-up in the window (MeV)
    assert after["raw_middle"] < 0.75 * before["raw_middle"], (before, after)
    assert sum(after.values()) < 0.8 * sum(before.values())
    assert model.encode({k: __import__("torch").from_numpy(v[:3]) for k, v in x.items()}).shape == (3, 32)
    check = export_model(tmp_path / "paed", tmp_path / "paed.onnx")  # the run directory
    assert check.max_abs_diff_random < 1e-4 and sorted(check.outputs) == ["denoised_back", "denoised_middle", "latent"]
    assert read_metadata(tmp_path / "paed.onnx")["model_name"] == "paed"
    with pytest.raises(FileExistsError):
        export_model(path, tmp_path / "paed.onnx")

    # denoise a file: every image normalised to unit sum or all zeros, other datasets copied
    den = denoise_file(path, files["val"], tmp_path / "den.h5")
    with h5py.File(den) as f, h5py.File(files["val"]) as fin:
        sums = f["images_middle"][:].sum(axis=(1, 2))
        assert np.all(np.isclose(sums, 1, atol=1e-4) | (sums == 0)) and (sums > 0).mean() > 0.9
        assert not np.array_equal(f["images_middle"][:], fin["images_middle"][:])
        np.testing.assert_array_equal(f["images_strips"][:], fin["images_strips"][:])  # not a PAED layer
    # a file without the constants and a PAED without stored ones: one clear error, nothing written
    bare = tmp_path / "bare.h5"
    with h5py.File(files["val"]) as fin, h5py.File(bare, "w") as fout:
        for name in fin:
            fin.copy(fin[name], fout, name=name)
    assert read_image_noise(bare) == (None, None)
    blob = torch.load(path, weights_only=True)
    c = yaml.safe_load(blob["config_yaml"])
    c["image_noise_mev"] = c["image_noise_significance"] = None
    torch.save({**blob, "config_yaml": yaml.safe_dump(c)}, tmp_path / "paed_bare.pt")
    denoise_file(tmp_path / "paed_bare.pt", files["val"], tmp_path / "den2.h5")  # the file's attributes suffice
    denoise_file(path, bare, tmp_path / "den3.h5")  # the PAED's stored constants suffice
    with pytest.raises(SchemaError, match=f"{NOISE_ATTR}.*{SIGNIFICANCE_ATTR}.*lhcml photon dataset"):
        denoise_file(tmp_path / "paed_bare.pt", bare, tmp_path / "den4.h5")
    assert not (tmp_path / "den4.h5").exists()


def test_cli_photon_cuts(photon_files, tmp_path):
    from typer.testing import CliRunner

    from lhcml.cli import app

    out = tmp_path / "loose.yaml"
    res = CliRunner().invoke(app, ["photon", "cuts", str(photon_files["train"]), str(out), "--target", "0.95",
                                   "--menu", "loose"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert CutMenu.load(out).variables == LOOSE_VARIABLES
    bad = CliRunner().invoke(app, ["photon", "cuts", str(photon_files["train"]), str(out), "--menu", "medium"])
    assert bad.exit_code != 0 and "tight or loose" in bad.output


@pytest.mark.parametrize("name", ["photon_cnn", "photon_resnet", "paed"])
def test_image_models_do_not_depend_on_input_order(name):
    """A model rebuilt from metadata with the groups in another order computes the same function."""
    import torch

    from lhcml.models.registry import build_model

    dims = {"images_strips": 56, "images_middle": 7, "images_back": 4}
    if name == "paed":
        dims = {k.replace("images_", "raw_"): v for k, v in dims.items()}
    a = build_model(name, 0 if name == "paed" else 2, dims)
    b = build_model(name, 0 if name == "paed" else 2, dict(reversed(list(dims.items()))))
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    shapes = {"strips": (56, 4), "middle": (7, 11), "back": (4, 11)}
    x = {k: torch.rand(3, *shapes[k.split("_")[1]]) * 100 for k in dims}
    key = "latent" if name == "paed" else "logits"
    if name == "paed":
        for p in a.parameters():  # non-trivial decoder (it starts as the identity)
            torch.nn.init.normal_(p, std=0.05)
        b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x)[key], b(x)[key])


def test_split_by_event_keeps_events_whole_and_agrees_between_samples(tmp_path):
    """groups=eventNumber: every event's candidates land in one split, and two samples holding
    different subsets of the same events put their common events in the same split."""
    import h5py

    from lhcml.tasks.photon.dataset import group_split

    def events_in(path):
        with h5py.File(path, "r") as f:
            return set(f["photons"]["eventNumber"].tolist())

    rng = np.random.default_rng(5)
    events = np.repeat(np.arange(400), 3)  # three candidates per event
    photons = np.zeros(events.size, dtype=[("eventNumber", "i8"), ("pt", "f4")])
    photons["eventNumber"] = events
    photons["pt"] = rng.uniform(20, 100, events.size)
    files = split_and_write({"photons": photons}, tmp_path / "a", seed=1, groups=events)
    seen = {name: events_in(path) for name, path in files.items()}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert sum(len(v) for v in seen.values()) == 400
    assert 0.5 < len(seen["train"]) / 400 < 0.7  # 60 % of the events, binomial spread ~2.4 %
    sub = rng.choice(400, 150, replace=False)  # another sample: only some of the events
    which = group_split(sub)
    for name, k in (("train", 0), ("val", 1), ("test", 2)):
        assert set(sub[which == k].tolist()) <= seen[name]
