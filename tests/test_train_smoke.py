"""CPU smoke test train -> predict -> export for every shipped flavour-tagging config.

Tiny files (a few hundred jets), one epoch, small hidden sizes through ``--set``-style
overrides. Each run checks: a weights_only-loadable checkpoint with the config/norm inside,
prediction columns that are probabilities, the in-file predictions equal to onnxruntime's on
the same jets, and onnxruntime == torch to 1e-5 (random and real jets).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from _train_mock import make_training_file

from lhcml.errors import CheckpointMismatchError, SchemaError
from lhcml.train.config import load_train_config
from lhcml.train.predict import predict
from lhcml.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ftag"
SMALL = {
    "dl1": ["model.hidden=[16,8]"],
    "dl1r": ["model.hidden=[16,8]"],
    "rnnip": ["model.lstm_hidden=8", "model.dense=[8]"],
    "dips": ["model.phi_hidden=[16,16]", "model.f_hidden=[16]",
             # also exercise cut-based labels (labels.yaml) and balanced class weights
             "data.label_field=null", "loss.class_weights=balanced"],  # fmt: skip
    "gn": ["model.embed_dim=16", "model.num_heads=2", "model.num_layers=1", "model.init_hidden=[16]",
           "model.jet_hidden=[16]", "model.origin_hidden=[16]", "model.vertex_hidden=[16]"],  # fmt: skip
    "mv2": ["model.n_estimators=30", "model.max_depth=3"],
}


@pytest.fixture(scope="session")
def ftag_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ftag_train")
    class_dict = {"jets": {"flavour_label": [1.0, 2.0, 0.5]}, "tracks": {"ftagTruthOriginLabel": [float(i) for i in range(1, 9)]}}
    (d / "class_dict.yaml").write_text(yaml.safe_dump(class_dict))
    return {
        "dir": d,
        "class_dict": d / "class_dict.yaml",
        "train": make_training_file(d / "train.h5", 500, seed=1),
        "val": make_training_file(d / "val.h5", 200, seed=2),
        "test": make_training_file(d / "test.h5", 200, seed=3),
    }


def overrides(files, name: str, out: Path, extra: list[str] = ()) -> list[str]:
    return [
        f"data.train_files=[{files['train']}]",
        f"data.val_files=[{files['val']}]",
        "data.norm_dict=null",
        "data.batch_size=100",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"output_dir={out}",
        f"loss.class_dict={files['class_dict']}" if "class_dict" in files else "loss.class_dict=null",
        *SMALL[name],
        *extra,
    ]


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", ["dl1", "dl1r", "rnnip", "dips", "gn", "mv2"])
def test_train_predict_export(name, ftag_files, tmp_path, one_thread):
    """Through the trainer protocol (as ``lhcml train``) and the one export function (as ``lhcml export``)."""
    from lhcml.train.protocol import TRAINERS, train_from_config

    cfg = load_train_config(CONFIGS / f"{name}.yaml", overrides(ftag_files, name, tmp_path / "run"))
    best = train_from_config(CONFIGS / f"{name}.yaml", overrides(ftag_files, name, tmp_path / "run"))
    assert best.is_file()
    kind = "bdt" if name == "mv2" else "lightning"
    assert TRAINERS[kind].owns(best) and TRAINERS[kind].find_artifact(tmp_path / "run") == best
    tagger = cfg.resolved_tagger_name()
    (pred,) = predict(best, [ftag_files["test"]], output_dir=tmp_path / "pred")
    with h5py.File(pred) as f, h5py.File(ftag_files["test"]) as fin:
        jets = f["jets"][:]
        # a copy with the columns added (rnnip_p* of the mock file are replaced)
        assert set(fin["jets"].dtype.names) | {f"{tagger}_pb", f"{tagger}_pc", f"{tagger}_pu"} == set(jets.dtype.names)
        assert list(f) == list(fin)
        np.testing.assert_array_equal(f["tracks"][:], fin["tracks"][:])
    probs = np.stack([jets[f"{tagger}_{o}"] for o in ("pb", "pc", "pu")], 1)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert np.all(probs > 0) and probs.std(0).max() > 0  # jet-dependent outputs
    if name == "mv2":  # physics sanity: the BDT gives b-jets a larger p_b than light jets
        b, light = jets["flavour_label"] == 0, jets["flavour_label"] == 2
        assert jets["mv2_pb"][b].mean() > 1.5 * jets["mv2_pb"][light].mean()
    if name != "mv2":
        ckpt = torch.load(best, map_location="cpu", weights_only=True)
        stored = yaml.safe_load(ckpt["lhcml"]["config_yaml"])
        assert stored["model"]["name"] == cfg.model.name
        assert ckpt["lhcml"]["class_names"] == ["bjets", "cjets", "ujets"]
        assert (tmp_path / "run" / "norm_dict.yaml").is_file()
        sd = ckpt["state_dict"]
        # class weights from class_dict.yaml (dips sets class_weights: balanced, which wins)
        if name != "dips":
            assert sd["model.heads.jet_classification.class_weights"].tolist() == [1.0, 2.0, 0.5]
        if name == "gn":
            assert sd["model.heads.track_origin.class_weights"].tolist() == [float(i) for i in range(1, 9)]
    assert (tmp_path / "run" / "config.yaml").is_file()

    from lhcml.export import export_model
    from lhcml.export.onnx import _session, input_names, read_metadata

    onnx_path = tmp_path / f"{name}.onnx"
    rep = export_model(tmp_path / "run", onnx_path, check_file=ftag_files["test"], n_check=200)  # the run directory
    assert rep.max_abs_diff_random < 1e-5 and rep.max_abs_diff_real < 1e-5 and rep.n_real_jets == 200
    assert rep.latency_ms_per_jet > 0 and rep.throughput_jets_per_s > 0
    meta = read_metadata(onnx_path)
    assert meta["tagger_name"] == tagger and yaml.safe_load(meta["config_yaml"])["model"]["name"] == cfg.model.name
    # the predictions written into the file are what the ONNX model gives on the raw file content
    sess = _session(onnx_path)
    with h5py.File(ftag_files["test"]) as f:
        feed = {}
        for g, variables in cfg.data.inputs.items():
            arr = f[g][:]
            feat, valid = input_names(g)
            feed[feat] = np.stack([arr[v] for v in variables], -1).astype(np.float32)
            if g == "tracks":
                feed[valid] = arr["valid"]
    onnx_probs = np.stack(sess.run([f"{tagger}_{o}" for o in ("pb", "pc", "pu")], feed), 1)
    np.testing.assert_allclose(onnx_probs, probs, atol=1e-5)


def test_predict_mismatches(ftag_files, tmp_path, one_thread):
    from lhcml.data.h5 import write_h5

    cfg = load_train_config(CONFIGS / "dips.yaml", overrides(ftag_files, "dips", tmp_path / "run"))
    best = train(cfg)
    # a file without one of the checkpoint's track variables
    with h5py.File(ftag_files["test"]) as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    names = [n for n in tracks.dtype.names if n != "numberOfPixelHoles"]
    bad = write_h5(tmp_path / "bad.h5", {"jets": jets, "tracks": tracks[names]})
    with pytest.raises(CheckpointMismatchError, match="numberOfPixelHoles"):
        predict(best, [ftag_files["test"], bad], output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before writing anything
    # a checkpoint from another config
    other = load_train_config(CONFIGS / "dips.yaml", overrides(ftag_files, "dips", tmp_path / "x", ["model.phi_hidden=[8]"]))
    with pytest.raises(CheckpointMismatchError, match="phi_hidden"):
        predict(best, [ftag_files["test"]], output_dir=tmp_path / "o2", config=other)
    gn = load_train_config(CONFIGS / "gn.yaml", overrides(ftag_files, "gn", tmp_path / "y"))
    with pytest.raises(CheckpointMismatchError, match="data.inputs"):
        predict(best, [ftag_files["test"]], output_dir=tmp_path / "o3", config=gn)
    # in-place prediction keeps the file valid and adds the columns
    inplace = write_h5(tmp_path / "inplace.h5", {"jets": jets, "tracks": tracks})
    predict(best, [inplace], tagger_name="DIPSx")
    with h5py.File(inplace) as f:
        assert "DIPSx_pb" in f["jets"].dtype.names and len(f["jets"]) == len(jets)
    # export refuses to overwrite
    from lhcml.export.onnx import export_onnx

    export_onnx(best, tmp_path / "m.onnx", timing=False)
    with pytest.raises(FileExistsError, match="--force"):
        export_onnx(best, tmp_path / "m.onnx", timing=False)
    export_onnx(best, tmp_path / "m.onnx", timing=False, force=True)


def test_nan_input_is_a_clear_error(ftag_files, tmp_path):
    from lhcml.data.h5 import write_h5

    with h5py.File(ftag_files["train"]) as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    tracks["ptfrac"][3, 0] = np.nan
    tracks["valid"][3, 0] = True
    p = write_h5(tmp_path / "nan.h5", {"jets": jets, "tracks": tracks})
    cfg = load_train_config(CONFIGS / "dips.yaml", overrides({"train": p, "val": p}, "dips", tmp_path / "r"))
    with pytest.raises(SchemaError, match="tracks.ptfrac"):
        train(cfg)


def test_cli_train_predict_export(ftag_files, tmp_path, one_thread):
    from typer.testing import CliRunner

    from lhcml.cli import app

    run = CliRunner()
    sets = [x for o in overrides(ftag_files, "dips", tmp_path / "run") for x in ("--set", o)]
    r = run.invoke(app, ["train", str(CONFIGS / "dips.yaml"), *sets])
    assert r.exit_code == 0, r.output
    best = Path(r.output.strip().splitlines()[-1])
    assert best.is_file() and best.parent == tmp_path / "run" / "checkpoints"
    r = run.invoke(app, ["predict", str(best), str(ftag_files["test"]), "-o", str(tmp_path / "p"), "--tagger", "DIPS"])
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "p" / "test.h5") as f:
        assert "DIPS_pu" in f["jets"].dtype.names
    r = run.invoke(app, ["export", str(best), str(tmp_path / "d.onnx"), "--check-file", str(ftag_files["test"])])
    assert r.exit_code == 0 and "max |onnx - torch|" in r.output, r.output
    r = run.invoke(app, ["export", str(best), str(tmp_path / "d.onnx")])
    assert r.exit_code != 0 and "--force" in str(r.exception)
