"""Flat HDF5 layer: writer/reader round trips, atomicity, streaming, cuts, checks."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.data import schema
from lhcml.data.checks import DEFAULT_ALLOW_NAN, check_file
from lhcml.data.cuts import Cut, Cuts
from lhcml.data.h5 import H5Reader, H5Writer, read_attrs, temp_path, write_h5
from lhcml.data.mock import make_mock_file, make_mock_tables
from lhcml.errors import ConfigError, CorruptFileError, SchemaError

N_JETS = 3000


@pytest.fixture(scope="session")
def mock_tables():
    return make_mock_tables(N_JETS, seed=7)


@pytest.fixture(scope="session")
def mock_path(tmp_path_factory, mock_tables):
    path = tmp_path_factory.mktemp("data") / "mock.h5"
    return write_h5(path, mock_tables)


def _random_structured(rng, dtype, shape):
    arr = np.zeros(shape, dtype=dtype)
    for name in dtype.names:
        dt = dtype[name]
        if dt.kind == "f":
            arr[name] = rng.normal(0, 1e3, shape)
        elif dt.kind == "b":
            arr[name] = rng.random(shape) < 0.5
        else:
            info = np.iinfo(dt)
            arr[name] = rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    return arr


def test_round_trip_every_schema_dtype(tmp_path):
    rng = np.random.default_rng(1)
    tables = {
        "jets": _random_structured(rng, schema.JET_DTYPE, 257),
        "tracks": _random_structured(rng, schema.TRACK_DTYPE, (257, 40)),
        "flow": _random_structured(rng, schema.FLOW_DTYPE, (257, 7)),
        "events": _random_structured(rng, schema.EVENT_DTYPE, 100),
    }
    for comp in ("lzf", "gzip", None):
        path = write_h5(tmp_path / f"rt_{comp}.h5", tables, attrs={"seed": 3}, compression=comp)
        back = H5Reader(path, batch_size=50).read({"jets": None, "tracks": None, "flow": None})
        for k in ("jets", "tracks", "flow"):
            assert back[k].dtype == tables[k].dtype
            np.testing.assert_array_equal(back[k], tables[k])
        events = H5Reader(path, jets_name="events").read({"events": None})["events"]
        np.testing.assert_array_equal(events, tables["events"])
    attrs = read_attrs(path)
    assert attrs["energy_unit"] == "MeV" and attrs["length_unit"] == "mm" and attrs["seed"] == 3


def test_streaming_writer_appends_and_same_input_gives_identical_bytes(tmp_path, mock_tables):
    paths = []
    for name in ("a.h5", "b.h5"):
        with H5Writer(tmp_path / name) as w:
            for lo in range(0, N_JETS, 700):
                w.append({k: v[lo : lo + 700] for k, v in mock_tables.items() if k != "events"})
        paths.append(tmp_path / name)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    back = H5Reader(paths[0]).read()
    np.testing.assert_array_equal(back["tracks"], mock_tables["tracks"])


def test_exception_mid_write_leaves_no_file(tmp_path, mock_tables):
    out = tmp_path / "partial.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with H5Writer(out) as w:
            w.append({"jets": mock_tables["jets"][:10], "tracks": mock_tables["tracks"][:10]})
            assert temp_path(out).exists() and not out.exists()
            raise RuntimeError("boom")
    assert not out.exists() and not temp_path(out).exists()
    # a schema error inside append is also cleaned up
    with pytest.raises(SchemaError, match="first dimensions disagree"):
        with H5Writer(out) as w:
            w.append({"jets": mock_tables["jets"][:10], "tracks": mock_tables["tracks"][:9]})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("batch_size", [128, 1000, 5000])
def test_stream_batches_selection_and_cuts_match_numpy(mock_path, mock_tables, batch_size):
    cuts = ["pt > 30e3", "abs(eta) < 1.5", "eventNumber % 10 <= 7"]
    variables = {"jets": ["pt", "HadronConeExclTruthLabelID"], "tracks": ["d0", "valid"]}
    reader = H5Reader(mock_path, batch_size=batch_size)
    batches = list(reader.stream(variables, cuts))
    assert all(len(b["jets"]) <= batch_size for b in batches)
    got = {k: np.concatenate([b[k] for b in batches]) for k in variables}
    j = mock_tables["jets"]
    mask = (j["pt"] > 30e3) & (np.abs(j["eta"]) < 1.5) & (j["eventNumber"] % 10 <= 7)
    assert 0 < mask.sum() < len(j)
    assert got["jets"].dtype.names == ("pt", "HadronConeExclTruthLabelID")
    assert got["tracks"].dtype.names == ("d0", "valid")
    np.testing.assert_array_equal(got["jets"]["pt"], j["pt"][mask])
    np.testing.assert_array_equal(got["tracks"]["d0"], mock_tables["tracks"]["d0"][mask])
    # num_jets and start
    part = reader.read(variables, cuts, num_jets=101, start=500)
    ref = np.flatnonzero(mask[500:])[:101] + 500
    np.testing.assert_array_equal(part["jets"]["pt"], j["pt"][ref])


def test_reader_over_many_files_and_glob(tmp_path, mock_tables):
    for i in range(3):
        write_h5(
            tmp_path / f"s_{i}.h5",
            {k: v[i * 1000 : (i + 1) * 1000] for k, v in mock_tables.items() if k != "events"},
        )
    reader = H5Reader(str(tmp_path / "s_*.h5"), batch_size=333)
    assert reader.n_jets == N_JETS and len(reader.files) == 3
    back = reader.read({"jets": ["pt"]}, start=1500)
    np.testing.assert_array_equal(back["jets"]["pt"], mock_tables["jets"]["pt"][1500:])
    est = reader.estimate_n_jets(["HadronConeExclTruthLabelID == 5"], n_sample=3000)
    true = int((mock_tables["jets"]["HadronConeExclTruthLabelID"] == 5).sum())
    assert abs(est - true) < 0.1 * true
    s = reader.sample(200, {"jets": ["pt", "HadronConeExclTruthLabelID"]}, ["pt > 25e3"], seed=3)
    assert len(s["jets"]) == 200 and (s["jets"]["pt"] > 25e3).all()
    assert len(np.unique(s["jets"]["pt"])) == 200  # no replacement
    assert np.isin(s["jets"]["pt"], mock_tables["jets"]["pt"]).all()
    with pytest.raises(FileNotFoundError, match="no file matches"):
        H5Reader(str(tmp_path / "nothing_*.h5")).n_jets  # noqa: B018


def test_cut_parser():
    arr = np.array(
        [(1.0, -3.0, 15), (25e3, 0.5, 5)], dtype=[("pt", "f4"), ("eta", "f4"), ("n", "i4")]
    )
    assert Cuts.from_list(["pt > 20e3"])(arr).tolist() == [False, True]
    assert Cuts.from_list(["abs(eta) < 2.5"])(arr).tolist() == [False, True]
    assert Cuts.from_list(["n % 10 == 5"])(arr).tolist() == [True, True]
    assert Cuts.from_list(["n != 5", "pt >= 1"])(arr).tolist() == [True, False]
    assert Cut.parse("eta>=-1.5e0").value == -1.5
    for bad, match in [("pt => 5", "unknown operator '=>'"), ("pt = 5", "unknown operator '='"),
                       ("sqrt(pt) < 5", "unknown function 'sqrt'"), ("pt > abc", "cannot parse"),
                       ("__import__('os') > 1", "cannot parse")]:  # fmt: skip
        with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
            Cuts.from_list([bad])
    with pytest.raises(SchemaError, match="did you mean 'eta'"):
        Cuts.from_list(["abs(etta) < 1"])(arr)


def test_reader_unknown_cut_variable_and_missing_variable(mock_path):
    reader = H5Reader(mock_path)
    with pytest.raises(SchemaError, match="did you mean 'HadronConeExclTruthLabelID'"):
        reader.read({"jets": ["pt"]}, cuts=["HadronConeExclTruthLabelId == 5"])
    with pytest.raises(
        SchemaError, match=r"tracks' has no variable 'd0Uncertanty'.*did you mean 'd0Uncertainty'"
    ):
        reader.read({"tracks": ["d0Uncertanty"]})


def test_check_file_passes_on_mock_and_boosted(mock_path, tmp_path):
    check_file(mock_path, {"jets": ["pt", "eta"], "tracks": ["d0", "valid"]})
    check_file(make_mock_file(tmp_path / "b.h5", n_jets=50, kind="boosted"))


def test_check_missing_variable_suggests(mock_path):
    with pytest.raises(SchemaError) as err:
        check_file(mock_path, {"tracks": ["z0SinThetaa"]})
    msg = str(err.value)
    assert "mock.h5" in msg and "'tracks'" in msg and "did you mean 'z0SinTheta'" in msg
    with pytest.raises(SchemaError, match="no dataset 'trakcs'.*did you mean 'tracks'"):
        check_file(mock_path, {"trakcs": ["d0"]})


def test_check_truncated_file(mock_path, tmp_path):
    data = mock_path.read_bytes()
    for frac in (0.5, 0.95):
        bad = tmp_path / f"trunc_{frac}.h5"
        bad.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(CorruptFileError, match="truncated or corrupt"):
            check_file(bad)
        with pytest.raises(CorruptFileError, match=bad.name):
            H5Reader(bad).read()


def test_check_not_hdf5(tmp_path):
    txt = tmp_path / "notes.h5"
    txt.write_text("hello\n")
    with pytest.raises(CorruptFileError, match="not an HDF5 file"):
        check_file(txt)
    root = tmp_path / "ntuple.h5"
    root.write_bytes(b"root\x00\x00\xf4" + bytes(100))
    with pytest.raises(CorruptFileError, match="lhcml convert"):
        check_file(root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_file(tmp_path / "missing.h5")


def test_check_nan_only_in_valid_entries(tmp_path, mock_tables):
    tables = {k: v[:100].copy() for k, v in mock_tables.items() if k != "events"}
    # NaN in padded (invalid) slots and in allowed jet fields is fine
    tables["tracks"]["d0"][~tables["tracks"]["valid"]] = np.nan
    tables["jets"]["HadronConeExclTruthLabelPt"][:5] = np.nan
    ok = write_h5(tmp_path / "ok.h5", tables)
    check_file(ok)
    tables["tracks"]["d0"][17, 0] = np.inf
    assert tables["tracks"]["valid"][17, 0]
    bad = write_h5(tmp_path / "bad.h5", tables)
    with pytest.raises(SchemaError, match=r"'tracks' variable 'd0' has 1 NaN/inf.*row 17, slot 0"):
        check_file(bad)
    check_file(bad, allow_nan=[*DEFAULT_ALLOW_NAN, "d0"])


def test_check_mismatched_first_dimension_and_dtype(tmp_path, mock_tables):
    import h5py

    path = tmp_path / "mismatch.h5"
    with h5py.File(path, "w") as f:
        f["jets"] = mock_tables["jets"][:100]
        f["tracks"] = mock_tables["tracks"][:90]
    with pytest.raises(
        SchemaError, match=r"first dimensions.*disagree.*'jets' \(100,\).*'tracks' \(90, 40\)"
    ):
        check_file(path)
    with pytest.raises(SchemaError, match="first dimensions"):
        H5Reader(path).read()
    path2 = tmp_path / "dtype.h5"
    jets = np.zeros(10, dtype=[("pt", "f4"), ("HadronConeExclTruthLabelID", "f4")])
    with h5py.File(path2, "w") as f:
        f["jets"] = jets
        f["tracks"] = np.zeros((10, 40), dtype=[("d0", "f4")])
    with pytest.raises(
        SchemaError, match="'HadronConeExclTruthLabelID' has dtype float32.*integer"
    ):
        check_file(path2, {"jets": ["pt"]})
    with h5py.File(path2, "w") as f:
        f["jets"] = np.zeros(10, dtype=[("pt", "f4")])
        f["tracks"] = np.zeros((10, 40), dtype=[("d0", "f4")])
    with pytest.raises(SchemaError, match="no boolean 'valid' field"):
        check_file(path2)


def test_mock_layout_consistency(mock_tables):
    # (the mock's flavour separation is what it was built with; that models learn from it is
    # tested through the real trainer in tests/test_models_learn.py)
    j, t = mock_tables["jets"], mock_tables["tracks"]
    flav = j["HadronConeExclTruthLabelID"]
    assert np.isnan(j["HadronConeExclTruthLabelLxy"][flav == 0]).all()  # no hadron, no decay length
    # padding after the real tracks, zeros in padding, n_tracks consistent
    np.testing.assert_array_equal(t["valid"].sum(1), np.minimum(j["n_tracks"], 40))
    assert (t["d0"][~t["valid"]] == 0).all()
