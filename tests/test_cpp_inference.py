"""lhcml-infer (cpp/): exported DL1r and GN taggers evaluated from C++ with ONNX Runtime's C++ API
give Python onnxruntime's scores to 1e-5 on the same jets of an lhcml file (lzf, and LZ4 as UPP
and Salt write); bad inputs (an ONNX
file without lhcml's metadata, a variable missing from the file, an unreadable file) exit with
code 2 and one message, writing nothing.

The binary is built once per module (CMake, build/cpp/release, ~25 s from scratch on 2 cores). A
missing toolchain (cmake, g++, libhdf5-dev, nlohmann-json3-dev, the ORT headers of
cpp/fetch_deps.sh) makes the fixture raise, so every test here FAILS instead of skipping.
"""

from __future__ import annotations

import h5py
import numpy as np
import onnx
import pytest
import torch
import yaml
from numpy.lib import recfunctions as rfn

from lhcml.data.h5 import write_h5
from lhcml.data.mock import BASELINE_VARS, make_training_tables
from lhcml.export.cpp import (
    CppInferError,
    build_infer,
    cpp_check,
    python_scores,
    read_scores,
    run_infer,
)
from lhcml.export.onnx import export_onnx, read_metadata
from lhcml.models import build_model
from lhcml.train.checkpoint import build_meta

N_JETS = 300
DL1R_JETS = ["pt", "eta", *BASELINE_VARS]  # configs/ftag/dl1r.yaml
GN_JETS = ["pt", "eta"]
# GN2-like track inputs, with integer fields (u1 hit counts, i1 lepton ID) that the C++ reader
# converts to float as lhcml's datamodule does
GN_TRACKS = ["IP3D_signed_d0_significance", "IP3D_signed_z0_significance", "ptfrac", "dr", "qOverP",
             "d0Uncertainty", "z0SinThetaUncertainty", "numberOfPixelHits", "numberOfSCTHits", "leptonID"]  # fmt: skip
HYPER = {
    "dl1": dict(hidden=[32, 16, 8]),
    "gn": dict(embed_dim=16, num_heads=2, num_layers=2, init_hidden=[16], jet_hidden=[16],
               origin_hidden=[16], vertex_hidden=[16]),  # fmt: skip
}


def _norm(tables: dict, variables: dict) -> dict:
    """Mean/std of each input over real objects, as lhcml's preprocessing computes them."""
    out = {}
    for g, names in variables.items():
        t = tables[g]
        rows = t[t["valid"]] if "valid" in (t.dtype.names or ()) else t
        out[g] = {v: {"mean": float(np.mean(rows[v].astype(np.float64))),
                      "std": float(np.std(rows[v].astype(np.float64)) or 1.0)} for v in names}  # fmt: skip
    return out


def _export(tmp, tables, name: str):
    torch.manual_seed(0)
    variables = {"jets": DL1R_JETS} if name == "dl1" else {"tracks": GN_TRACKS, "jets": GN_JETS}
    model = build_model(name, 3, {g: len(v) for g, v in variables.items()}, **HYPER[name])
    model.configure_inputs(variables)
    norm = _norm(tables, variables)
    for g, nv in norm.items():
        model.set_normalisation(g, [x["mean"] for x in nv.values()], [x["std"] for x in nv.values()])
    cfg = {"data": {"inputs": variables, "label_scheme": "flavour", "classes": ["bjets", "cjets", "ujets"]},
           "model": {"name": name, **HYPER[name]}, "loss": {"head_weights": {}}}  # fmt: skip
    shapes = {"jets": [len(variables["jets"])]} | ({"tracks": [40, len(GN_TRACKS)]} if name == "gn" else {})
    tagger = "DL1r" if name == "dl1" else "GN2"
    meta = build_meta(yaml.safe_dump(cfg), norm, ["bjets", "cjets", "ujets"], ["pb", "pc", "pu"], variables, shapes, tagger)
    ckpt = tmp / f"{name}.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lhcml": meta}, ckpt)
    out = tmp / f"{tagger}.onnx"
    export_onnx(ckpt, out, timing=False)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cpp")
    binary = build_infer()  # raises (test error, not skip) when the toolchain is missing
    tables = make_training_tables(N_JETS, seed=3)
    data = write_h5(tmp / "jets.h5", tables)  # lhcml's default compression: lzf
    models = {"dl1r": _export(tmp, tables, "dl1"), "gn": _export(tmp, tables, "gn")}
    return {"tmp": tmp, "binary": binary, "data": data, "tables": tables, "models": models}


@pytest.mark.parametrize("name", ["dl1r", "gn"])
def test_cpp_scores_equal_python_onnxruntime(setup, name):
    model, data, tmp = setup["models"][name], setup["data"], setup["tmp"]
    with h5py.File(data, "r") as f:
        assert f["jets"].compression == "lzf" and f["tracks"].compression == "lzf"  # read via hdf5-plugin-lzf
    # batches of 64: four full batches and a partial one
    rep = cpp_check(model, data, tmp / f"{name}_scores.h5", batch=64, atol=1e-5, binary=setup["binary"])
    assert rep.n_jets == N_JETS
    assert rep.outputs == [f"{'DL1r' if name == 'dl1r' else 'GN2'}_{o}" for o in ("pb", "pc", "pu")]
    assert rep.max_abs_diff <= 1e-5
    np.testing.assert_allclose(rep.cpp_scores.sum(1), 1.0, atol=1e-5)  # class probabilities
    assert rep.cpp_scores.std(0).min() > 1e-3  # scores vary from jet to jet: the comparison is not trivial
    _, _, attrs = read_scores(tmp / f"{name}_scores.h5")
    meta = read_metadata(model)
    assert attrs["lhcml_version"] == meta["lhcml_version"] and attrs["tagger_name"] == meta["tagger_name"]
    assert attrs["class_names"] == meta["class_names"]
    # batch 1 (the latency setting) gives the same scores
    run_infer(model, data, tmp / f"{name}_b1.h5", batch=1, max_jets=25, binary=setup["binary"])
    b1, _, _ = read_scores(tmp / f"{name}_b1.h5")
    assert b1.shape == (25, 3)
    np.testing.assert_allclose(b1, rep.python_scores[:25], atol=1e-5, rtol=0)


def test_padded_tracks_do_not_matter(setup):
    """Garbage in the padded track slots changes neither C++ nor Python scores (masking in the graph)."""
    tmp, tables = setup["tmp"], setup["tables"]
    tracks = tables["tracks"].copy()
    pad = ~tracks["valid"]
    for v in ("IP3D_signed_d0_significance", "ptfrac", "dr", "qOverP"):
        tracks[v][pad] = 1e4
    tracks["numberOfPixelHits"][pad] = 200
    path = write_h5(tmp / "garbage_pad.h5", {"jets": tables["jets"], "tracks": tracks})
    model = setup["models"]["gn"]
    run_infer(model, path, tmp / "pad.h5", batch=50, binary=setup["binary"])
    got, _, _ = read_scores(tmp / "pad.h5")
    ref, _ = python_scores(model, setup["data"])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_model_without_lhcml_metadata_exits_2(setup):
    tmp = setup["tmp"]
    proto = onnx.load(str(setup["models"]["gn"]))
    del proto.metadata_props[:]  # an ONNX file from another lhcml version / not from lhcml
    bare = tmp / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(CppInferError, match="lacks the lhcml metadata") as err:
        run_infer(bare, setup["data"], tmp / "bare_scores.h5", binary=setup["binary"])
    assert err.value.returncode == 2
    assert "lhcml export" in str(err.value) and "lhcml_version" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp / "bare_scores.h5").exists()
    assert not list(tmp.glob(".bare_scores.h5.tmp*"))


def test_missing_variable_exits_2(setup):
    tmp, tables = setup["tmp"], setup["tables"]
    tracks = rfn.drop_fields(tables["tracks"], "IP3D_signed_z0_significance", usemask=False)
    path = write_h5(tmp / "no_z0.h5", {"jets": tables["jets"], "tracks": tracks})
    with pytest.raises(CppInferError, match=r"IP3D_signed_z0_significance.*of group 'tracks' not in") as err:
        run_infer(setup["models"]["gn"], path, tmp / "no_z0_scores.h5", binary=setup["binary"])
    assert err.value.returncode == 2
    assert not (tmp / "no_z0_scores.h5").exists()
    # the jet-level DL1r model does not need tracks: it still runs on that file
    run_infer(setup["models"]["dl1r"], path, tmp / "dl1r_no_z0.h5", binary=setup["binary"])
    # a missing group is named too
    path = write_h5(tmp / "no_tracks.h5", {"jets": tables["jets"]})
    with pytest.raises(CppInferError, match="input group 'tracks' not in") as err:
        run_infer(setup["models"]["gn"], path, tmp / "x.h5", binary=setup["binary"])
    assert err.value.returncode == 2


def test_unreadable_inputs_and_existing_output_exit_2(setup):
    tmp, b = setup["tmp"], setup["binary"]
    text = tmp / "notes.h5"
    text.write_text("not hdf5")
    cases = [
        ((setup["models"]["gn"], text), "not an HDF5 file"),
        ((setup["models"]["gn"], tmp / "absent.h5"), "cannot read the input file"),
        ((text, setup["data"]), "cannot load .* as an ONNX model"),
    ]
    for (model, data), msg in cases:
        with pytest.raises(CppInferError, match=msg) as err:
            run_infer(model, data, tmp / "never.h5", binary=b)
        assert err.value.returncode == 2
        assert not (tmp / "never.h5").exists()
    keep = tmp / "keep.h5"
    keep.write_text("keep me")
    with pytest.raises(CppInferError, match="--force") as err:
        run_infer(setup["models"]["dl1r"], setup["data"], keep, binary=b)
    assert err.value.returncode == 2 and keep.read_text() == "keep me"


def test_lz4_files_of_upp_and_salt(setup):
    """Files compressed with LZ4 (HDF5 filter 32004, as UPP and Salt write) read through Debian's
    hdf5-filter-plugin give the same scores as the lzf file."""
    tmp = setup["tmp"]
    path = write_h5(tmp / "lz4.h5", setup["tables"], compression="lz4")
    with h5py.File(path, "r") as f:
        assert "32004" in f["tracks"]._filters
    run_infer(setup["models"]["gn"], path, tmp / "lz4_scores.h5", batch=100, binary=setup["binary"])
    got, _, _ = read_scores(tmp / "lz4_scores.h5")
    ref, _ = python_scores(setup["models"]["gn"], setup["data"])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
