"""Interoperability with the ATLAS tools' files and with weaver-core.

* plugin-compressed HDF5 (LZ4 via hdf5plugin, as UPP and Salt write): read by lhcml without the
  caller importing hdf5plugin; ``predict -o DIR`` copies keep the LZ4 filter; lhcml writes LZ4;
* preprocessed files carry the class names as ``jets.attrs["flavour_label"]`` (UPP/Salt);
* ``pt_btagJes``/``eta_btagJes``/``absEta_btagJes`` (GN2 configs) exist and preprocess;
* ``lhcml convert --to root|parquet`` for weaver-core, round trip back to HDF5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import yaml

from lhcml.data import schema
from lhcml.data.h5 import H5Reader, H5Writer, write_h5
from lhcml.data.mock import make_mock_tables

LZ4_ID = 32004


def _lz4_file(path: Path, tables: dict[str, np.ndarray]) -> Path:
    """A file as UPP/Salt write it: every dataset LZ4-compressed through hdf5plugin."""
    with h5py.File(path, "w") as f:
        for name, arr in tables.items():
            f.create_dataset(name, data=arr, chunks=(min(100, len(arr)), *arr.shape[1:]), **hdf5plugin.LZ4())
        f["jets"].attrs["flavour_label"] = ["bjets", "cjets", "ujets"]
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def tables():
    return make_mock_tables(300, seed=3)


def test_lz4_file_read_by_lhcml_in_a_fresh_process(tables, tmp_path):
    path = _lz4_file(tmp_path / "upp.h5", tables)
    with h5py.File(path) as f:
        assert str(LZ4_ID) in f["jets"]._filters  # really LZ4, not a fallback
    # the reader and `lhcml inspect --values` in a process that never imports hdf5plugin itself
    code = (
        "import sys\n"
        "from lhcml.data.h5 import H5Reader\n"
        "d = H5Reader(sys.argv[1]).read({'jets': ['pt'], 'tracks': ['d0', 'valid']})\n"
        "print(len(d['jets']), float(d['jets']['pt'].sum()))\n"
    )
    res = _run("-c", code, str(path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    n, total = res.stdout.split()
    assert int(n) == len(tables["jets"])
    assert float(total) == pytest.approx(float(tables["jets"]["pt"].astype(np.float64).sum()), rel=1e-6)
    res = _run("-m", "lhcml", "inspect", str(path), "--values", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "d0" in res.stdout and "Traceback" not in res.stderr
    assert "lz4" in res.stdout and "unknown" not in res.stdout  # the filter named, not "unknown"


def test_predict_copy_keeps_the_lz4_filter(tables, tmp_path):
    """The copy `predict -o DIR` writes (train.predict.write_columns) of an LZ4 input."""
    from lhcml.train.predict import write_columns

    src = _lz4_file(tmp_path / "in.h5", tables)
    scores = np.linspace(0, 1, len(tables["jets"]), dtype=np.float32)
    dst = write_columns(src, tmp_path / "out" / "in.h5", {"tagger_pb": scores})
    with h5py.File(dst) as f:
        assert str(LZ4_ID) in f["jets"]._filters and str(LZ4_ID) in f["tracks"]._filters
        np.testing.assert_array_equal(f["jets"]["tagger_pb"], scores)
        np.testing.assert_array_equal(f["jets"]["pt"], tables["jets"]["pt"])
        np.testing.assert_array_equal(f["tracks"][:], tables["tracks"])


def test_lhcml_writes_lz4(tables, tmp_path):
    path = tmp_path / "lz4.h5"
    with H5Writer(path, compression="lz4") as w:
        w.append({"jets": tables["jets"], "tracks": tables["tracks"]})
    with h5py.File(path) as f:
        assert str(LZ4_ID) in f["jets"]._filters
    back = H5Reader(path).read({"jets": None, "tracks": None})
    np.testing.assert_array_equal(back["tracks"], tables["tracks"])
    with pytest.raises(ValueError, match="unknown compression 'lz5'.*lz4"):
        H5Writer(tmp_path / "x.h5", compression="lz5")


def test_btag_jes_names_and_flavour_label_attribute(tmp_path):
    """A GN2-style preprocessing (pt_btagJes, absEta_btagJes) runs; outputs carry the class names."""
    from lhcml.data.preprocess import PreprocessConfig, preprocess

    t = make_mock_tables(3000, seed=5)
    j = t["jets"]
    np.testing.assert_array_equal(j["pt_btagJes"], j["pt"])
    np.testing.assert_array_equal(j["absEta_btagJes"], np.abs(j["eta"]))
    assert schema.FIELD_UNITS["pt_btagJes"] == "MeV"
    write_h5(tmp_path / "ttbar.h5", t)
    classes = ["bjets", "cjets", "ujets"]
    cfg = PreprocessConfig.model_validate({
        "output_dir": str(tmp_path / "pp"), "classes": classes,
        "samples": {"ttbar": {"inputs": [str(tmp_path / "ttbar.h5")], "cuts": []}},
        "global_cuts": ["pt_btagJes > 20e3", "absEta_btagJes < 2.5"],
        "variables": {"jets": {"inputs": ["pt_btagJes", "absEta_btagJes"], "labels": ["HadronConeExclTruthLabelID"]},
                      "tracks": {"inputs": ["d0", "z0SinTheta"], "labels": ["ftagTruthOriginLabel"]}},
        "resampling": {"method": "none", "target": "ujets", "pt_bins": [20e3, 1e7], "abs_eta_bins": [0, 2.5]},
        "batch_size": 1000, "shuffle_buffer": 1000,
    })  # fmt: skip
    preprocess(cfg)
    files = sorted((tmp_path / "pp").glob("*.h5"))
    assert {p.name for p in files} >= {"train.h5", "val.h5", "test_ttbar.h5"}
    for p in files:
        with h5py.File(p) as f:
            # as Salt reads it: class i of the `flavour_label` field is the i-th name
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["jets"].attrs["flavour_label"]]
            assert names == classes, p.name
            lab = f["jets"]["flavour_label"]
            flav = f["jets"]["HadronConeExclTruthLabelID"]
            assert set(np.unique(lab)) <= {0, 1, 2}
            assert (flav[lab == 0] == 5).all() and (flav[lab == 2] == 0).all()
    norm = yaml.safe_load((tmp_path / "pp" / "norm_dict.yaml").read_text())
    assert "pt_btagJes" in norm["jets"] and "absEta_btagJes" in norm["jets"]


@pytest.mark.parametrize("fmt", ["root", "parquet"])
def test_convert_for_weaver_round_trip(tables, tmp_path, fmt):
    import awkward as ak

    src = tmp_path / "flat.h5"
    write_h5(src, {"jets": tables["jets"], "tracks": tables["tracks"]})
    out = tmp_path / f"weaver.{fmt}"
    res = _run("-m", "lhcml", "convert", str(src), str(out), "--to", fmt, "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    if fmt == "root":
        import uproot

        tree = uproot.open(out)["Events"]
        cols = tree.arrays(["jet_pt", "jet_HadronConeExclTruthLabelID", "tracks_d0", "tracks_qOverP", "ntracks"])
        assert tree.num_entries == len(tables["jets"])
    else:
        cols = ak.from_parquet(out)
    jets, trk = tables["jets"], tables["tracks"]
    valid = trk["valid"]
    # GeV units, one entry per jet, valid tracks only, in stored order
    np.testing.assert_allclose(ak.to_numpy(cols["jet_pt"]), jets["pt"] * 1e-3, rtol=1e-6)
    np.testing.assert_array_equal(ak.to_numpy(cols["jet_HadronConeExclTruthLabelID"]), jets["HadronConeExclTruthLabelID"])
    np.testing.assert_array_equal(ak.to_numpy(ak.num(cols["tracks_d0"])), valid.sum(axis=1))
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(cols["tracks_d0"])), trk["d0"][valid])  # mm stays mm
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(cols["tracks_qOverP"])), trk["qOverP"][valid] * 1e3, rtol=1e-6)
    if fmt != "root":
        return
    # ... and back to lhcml HDF5 with `lhcml convert` (GeV -> MeV mapped in its config)
    mapping = {"datasets": {
        "jets": {k: {"branch": f"jet_{k}", "scale": 1000.0} for k in jets.dtype.names
                 if schema.FIELD_UNITS.get(k) == "MeV"},
        "tracks": {k: {"branch": f"tracks_{k}", "scale": 1e-3 if schema.FIELD_UNITS.get(k) == "1/MeV" else 1000.0}
                   for k in trk.dtype.names if schema.FIELD_UNITS.get(k) in ("MeV", "1/MeV")},
    }}  # fmt: skip
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(mapping))
    back = tmp_path / "back.h5"
    res = _run("-m", "lhcml", "convert", str(out), str(back), "--config", "map.yaml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    with h5py.File(back) as f:
        bj, bt = f["jets"][:], f["tracks"][:]
    assert len(bj) == len(jets)
    for k in ("pt", "eta", "mass", "HadronConeExclTruthLabelID", "eventNumber", "pt_btagJes"):
        np.testing.assert_allclose(bj[k], jets[k], rtol=1e-6, err_msg=k)
    np.testing.assert_array_equal(bt["valid"], valid)
    for k in ("d0", "z0SinTheta", "pt", "qOverP", "ftagTruthOriginLabel"):
        np.testing.assert_allclose(bt[k][valid], trk[k][valid], rtol=1e-6, err_msg=k)


def test_convert_bad_format(tables, tmp_path):
    from lhcml.data.convert import export_columnar
    from lhcml.errors import ConfigError

    src = tmp_path / "flat.h5"
    write_h5(src, {"jets": tables["jets"]})
    with pytest.raises(ConfigError, match=r"name it \*.parquet or \*.root"):
        export_columnar(src, tmp_path / "out.csv", progress=False)
    with pytest.raises(ConfigError, match="unknown output format 'csv'"):
        export_columnar(src, tmp_path / "out.root", fmt="csv", progress=False)
    assert not list(tmp_path.glob("out*"))


def test_lhcml_trains_and_predicts_on_a_upp_style_file(tmp_path):
    """A file as UPP writes its training output (LZ4, `flavour_label` field and class-name
    attribute, no lhcml attributes): `train` and `predict -o DIR` run on it unchanged."""
    pytest.importorskip("lightning")
    from _train_mock import make_training_tables

    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    root = Path(__file__).resolve().parents[1]
    files = {}
    for split, n, seed in (("train", 400, 1), ("val", 200, 2)):
        t = make_training_tables(n, seed)
        with h5py.File(tmp_path / f"{split}.h5", "w") as f:
            f.attrs["unique_jets"] = n
            f.attrs["config"] = "{}"
            for name in ("jets", "tracks"):
                arr = t[name]
                f.create_dataset(name, data=arr, chunks=(100, *arr.shape[1:]), **hdf5plugin.LZ4())
            f["jets"].attrs["flavour_label"] = ["bjets", "cjets", "ujets"]
        files[split] = tmp_path / f"{split}.h5"
    cfg = {
        "base": str(root / "configs/ftag/dl1.yaml"),
        "data": {"train_files": [str(files["train"])], "val_files": [str(files["val"])], "norm_dict": None,
                 "batch_size": 100},
        "model": {"name": "dl1", "hidden": [16, 8]},
        "trainer": {"max_epochs": 1, "patience": None, "accelerator": "cpu", "enable_progress_bar": False},
        "output_dir": str(tmp_path / "run"),
    }  # fmt: skip
    (tmp_path / "dl1.yaml").write_text(yaml.safe_dump(cfg))
    ckpt = train(load_train_config(tmp_path / "dl1.yaml"))
    assert Path(ckpt).is_file()
    (out,) = predict(ckpt, [files["val"]], tagger_name="DL1", output_dir=tmp_path / "pred")
    with h5py.File(out) as f:
        assert str(LZ4_ID) in f["jets"]._filters
        p = np.stack([f["jets"][f"DL1_p{c}"] for c in ("b", "c", "u")], 1)
    assert p.shape == (200, 3) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
