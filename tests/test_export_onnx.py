"""ONNX export: dynamic axes, masking in the graph, normalisation folded in, metadata, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from lhcml.export.onnx import ExportCheckError, _session, export_onnx, read_metadata
from lhcml.models import build_model
from lhcml.train.checkpoint import build_meta

TRACKS = ["IP3D_signed_d0_significance", "IP3D_signed_z0_significance", "ptfrac", "dr"]
JETS = ["pt", "eta"]
HYPER = {
    "gn": dict(embed_dim=16, num_heads=2, num_layers=2, init_hidden=[16], jet_hidden=[16],
               origin_hidden=[16], vertex_hidden=[16]),  # fmt: skip
    "dips": dict(phi_hidden=[16, 16], f_hidden=[16]),
}


def _checkpoint(tmp_path, name: str):
    """A checkpoint in the training layout, written directly (no training needed)."""
    torch.manual_seed(0)
    variables = {"tracks": TRACKS} | ({"jets": JETS} if name == "gn" else {})
    dims = {g: len(v) for g, v in variables.items()}
    model = build_model(name, 3, dims, **HYPER[name])
    model.configure_inputs(variables)
    norm = {"tracks": {v: {"mean": 0.5 * i, "std": 1.0 + i} for i, v in enumerate(TRACKS)}}
    norm |= {"jets": {"pt": {"mean": 5e4, "std": 3e4}, "eta": {"mean": 0.0, "std": 1.2}}} if name == "gn" else {}
    for g, nv in norm.items():
        model.set_normalisation(g, [x["mean"] for x in nv.values()], [x["std"] for x in nv.values()])
    cfg = {"data": {"inputs": variables, "label_scheme": "flavour", "classes": ["bjets", "cjets", "ujets"]},
           "model": {"name": name, **HYPER[name]}, "loss": {"head_weights": {}}}  # fmt: skip
    meta = build_meta(yaml.safe_dump(cfg), norm, ["bjets", "cjets", "ujets"], ["pb", "pc", "pu"],
                      variables, {"tracks": [40, 4], "jets": [2]} if name == "gn" else {"tracks": [40, 4]}, name.upper())  # fmt: skip
    path = tmp_path / f"{name}.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lhcml": meta}, path)
    model.eval()
    model.with_aux = False
    return path, model


@pytest.mark.parametrize("name", ["gn", "dips"])
def test_export_matches_torch_on_raw_inputs(tmp_path, name):
    ckpt, model = _checkpoint(tmp_path, name)
    out = tmp_path / f"{name}.onnx"
    rep = export_onnx(ckpt, out, timing=False)
    assert rep.max_abs_diff_random < 1e-5
    sess = _session(out)
    assert {i.name for i in sess.get_inputs()} == {"track_features", "track_valid"} | ({"jet_features"} if name == "gn" else set())
    assert [o.name for o in sess.get_outputs()] == [f"{name.upper()}_pb", f"{name.upper()}_pc", f"{name.upper()}_pu"]
    rng = np.random.default_rng(3)
    for b, n in ((1, 1), (3, 13), (5, 57)):  # dynamic batch and track axes
        feed = {
            "track_features": (rng.normal(size=(b, n, 4)) * 3).astype(np.float32),
            "track_valid": rng.random((b, n)) < 0.7,
        }
        if name == "gn":
            feed["jet_features"] = np.stack([rng.uniform(2e4, 2e5, b), rng.uniform(-2.5, 2.5, b)], 1).astype(np.float32)
        got = np.stack(sess.run(None, feed), 1)
        with torch.inference_mode():
            inputs = {"tracks": torch.from_numpy(feed["track_features"]), "tracks_valid": torch.from_numpy(feed["track_valid"])}
            if name == "gn":
                inputs["jets"] = torch.from_numpy(feed["jet_features"])
            ref = torch.softmax(model(inputs)["logits"], -1).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)
        # padded slots do not matter inside the ONNX graph either
        feed["track_features"][~feed["track_valid"]] = 1e4
        np.testing.assert_allclose(np.stack(sess.run(None, feed), 1), got, atol=1e-5)
    meta = read_metadata(out)
    assert meta["tagger_name"] == name.upper()
    assert json.loads(meta["inputs"])["track_features"]["variables"] == TRACKS
    assert json.loads(meta["class_names"]) == ["bjets", "cjets", "ujets"]
    assert yaml.safe_load(meta["norm_yaml"])["tracks"]["dr"]["std"] == 4.0


def test_export_refuses_overwrite_and_detects_disagreement(tmp_path, monkeypatch):
    ckpt, _ = _checkpoint(tmp_path, "dips")
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    with pytest.raises(FileExistsError, match="--force"):
        export_onnx(ckpt, out, timing=False)
    assert out.read_text() == "keep me"
    # a tolerance no float32 graph can meet -> clear error, and the old file is untouched
    with pytest.raises(ExportCheckError, match="disagree"):
        export_onnx(ckpt, out, force=True, timing=False, atol=-1.0)
    assert out.read_text() == "keep me"
    assert not list(tmp_path.glob(".m.onnx.*"))  # no temporary (lhcml.atomic) left
