"""ROOT -> HDF5 conversion: round trip on ntuples written here with uproot, and error paths."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.data.checks import check_file
from lhcml.data.convert import convert_root
from lhcml.data.h5 import H5Reader, read_attrs
from lhcml.errors import ConfigError, CorruptFileError, SchemaError

uproot = pytest.importorskip("uproot")
ak = pytest.importorskip("awkward")

N = 700


@pytest.fixture(scope="module")
def ntuple(tmp_path_factory):
    """A flat ntuple like ATLAS's: one entry per jet, vector<float> track branches."""
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 60, N)  # some jets with more than 40 tracks
    tot = int(counts.sum())
    jag = lambda x: ak.unflatten(x, counts)  # noqa: E731
    data = {
        "jet_pt": rng.uniform(20, 500, N).astype(np.float32),  # GeV: scaled in the config
        "jet_eta": rng.uniform(-2.5, 2.5, N).astype(np.float32),
        "jet_truthflav": rng.choice([0, 4, 5], N).astype(np.int32),
        "eventNumber": rng.integers(0, 10**9, N).astype(np.int64),
        "trk_d0": jag(rng.normal(0, 0.1, tot).astype(np.float32)),
        "trk_z0SinTheta": jag(rng.normal(0, 0.2, tot).astype(np.float32)),
        "trk_numberOfPixelHits": jag(rng.integers(0, 5, tot).astype(np.int32)),
    }
    path = tmp_path_factory.mktemp("root") / "ntuple.root"
    with uproot.recreate(path) as f:
        # a TTree with std::vector-like jagged branches, as ATLAS ntuples
        f.mktree(
            "nominal", {k: v.type if hasattr(v, "layout") else v.dtype for k, v in data.items()}
        )
        f["nominal"].extend(data)
        f["rntuple"] = data  # uproot writes dicts as RNTuple: supported too
    cfg = path.with_name("map.yaml")
    cfg.write_text(
        "tree: nominal\n"
        "datasets:\n"
        "  jets:\n"
        "    pt: {branch: jet_pt, scale: 1000.0}\n"
        "    HadronConeExclTruthLabelID: jet_truthflav\n"
        "step_size: 256\n"
    )
    return path, cfg, data, counts


def test_root_round_trip(ntuple, tmp_path):
    path, cfg, data, counts = ntuple
    out = convert_root(path, tmp_path / "out.h5", config=cfg, progress=False)
    check_file(
        out, {"jets": ["pt", "eta", "HadronConeExclTruthLabelID"], "tracks": ["d0", "valid"]}
    )
    back = H5Reader(out).read()
    jets, tracks = back["jets"], back["tracks"]
    assert len(jets) == N and tracks.shape == (N, 40)
    np.testing.assert_allclose(jets["pt"], data["jet_pt"] * 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(jets["eta"], data["jet_eta"])  # default name jet_<var>
    np.testing.assert_array_equal(jets["eventNumber"], data["eventNumber"])  # default name <var>
    np.testing.assert_array_equal(jets["HadronConeExclTruthLabelID"], data["jet_truthflav"])
    assert jets.dtype["HadronConeExclTruthLabelID"] == np.int8  # schema dtype
    np.testing.assert_array_equal(tracks["valid"].sum(1), np.minimum(counts, 40))
    for i in (0, 1, int(np.argmax(counts))):
        k = min(counts[i], 40)
        np.testing.assert_array_equal(tracks["d0"][i, :k], ak.to_numpy(data["trk_d0"][i])[:k])
        assert (tracks["d0"][i, k:] == 0).all()
    np.testing.assert_array_equal(
        tracks["numberOfPixelHits"][0, : min(counts[0], 40)],
        ak.to_numpy(data["trk_numberOfPixelHits"][0])[:40],
    )
    assert read_attrs(out)["tree"] == "nominal"
    out2 = convert_root(path, tmp_path / "out2.h5", tree="rntuple", config=cfg, progress=False)
    back2 = H5Reader(out2).read()
    for k in ("jets", "tracks"):
        np.testing.assert_array_equal(back2[k], back[k])


def test_convert_errors(ntuple, tmp_path):
    path, cfg, _, _ = ntuple
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  jets:\n    pt: jet_ptt\n")
    with pytest.raises(SchemaError, match="branch 'jet_ptt'.*did you mean 'jet_pt'"):
        convert_root(path, tmp_path / "o.h5", tree="nominal", config=bad, progress=False)
    bad.write_text("dataset: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'dataset'.*did you mean 'datasets'"):
        convert_root(path, tmp_path / "o.h5", tree="nominal", config=bad, progress=False)
    with pytest.raises(SchemaError, match="no tree 'CollectionTree'.*nominal, rntuple"):
        convert_root(path, tmp_path / "o.h5", tree="CollectionTree", progress=False)
    notroot = tmp_path / "x.root"
    notroot.write_text("not root")
    with pytest.raises(CorruptFileError, match="not a readable ROOT file"):
        convert_root(notroot, tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.tmp").exists()


def test_cli_convert_and_inspect(ntuple, tmp_path):
    from typer.testing import CliRunner

    from lhcml.cli import app

    path, cfg, _, _ = ntuple
    out = tmp_path / "cli.h5"
    res = CliRunner().invoke(
        app, ["convert", str(path), str(out), "--tree", "nominal", "--config", str(cfg), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["inspect", str(out), "--check"])
    assert res.exit_code == 0, res.output
    assert "jets: shape (700,)" in res.output and "tracks: shape (700, 40)" in res.output
    assert "pt" in res.output and "MeV" in res.output and "check: OK" in res.output


def test_per_event_ntuple(tmp_path):
    """One entry per event: jet vectors and track vectors-of-vectors, scalar eventNumber."""
    rng = np.random.default_rng(9)
    n_ev = 50
    n_jets = rng.integers(0, 5, n_ev)
    n_trk = rng.integers(0, 45, int(n_jets.sum()))
    trk_d0 = ak.unflatten(
        ak.unflatten(rng.normal(0, 0.1, int(n_trk.sum())).astype(np.float32), n_trk), n_jets
    )
    data = {
        "eventNumber": np.arange(n_ev, dtype=np.int64) + 1000,
        "jet_pt": ak.unflatten(
            rng.uniform(20e3, 1e5, int(n_jets.sum())).astype(np.float32), n_jets
        ),
        "trk_d0": trk_d0,
    }
    path = tmp_path / "events.root"
    with uproot.recreate(path) as f:
        f["CollectionTree"] = data
    cfg = tmp_path / "ev.yaml"
    cfg.write_text("per_event: true\nstep_size: 7\n")
    out = convert_root(path, tmp_path / "ev.h5", config=cfg, progress=False)
    back = H5Reader(out).read()
    assert len(back["jets"]) == n_jets.sum()
    np.testing.assert_array_equal(
        back["jets"]["eventNumber"], np.repeat(data["eventNumber"], n_jets)
    )
    np.testing.assert_array_equal(back["jets"]["pt"], ak.to_numpy(ak.flatten(data["jet_pt"])))
    np.testing.assert_array_equal(back["tracks"]["valid"].sum(1), np.minimum(n_trk, 40))
    flat = ak.flatten(trk_d0, axis=1)
    j = int(np.argmax(n_trk))
    np.testing.assert_array_equal(back["tracks"]["d0"][j, :40], ak.to_numpy(flat[j])[:40])


def test_record_branches(tmp_path):
    """Tracks stored as a record (``trk.d0`` in an RNTuple, ``trk_d0`` in a TTree) are found."""
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 50, 60)
    d0 = rng.normal(0, 0.1, int(counts.sum())).astype(np.float32)
    trk = ak.zip(
        {
            "d0": ak.unflatten(d0, counts),
            "numberOfPixelHits": ak.unflatten((d0 > 0).astype(np.int32), counts),
        }
    )
    pt = rng.uniform(2e4, 1e5, 60).astype(np.float32)
    path = tmp_path / "rec.root"
    with uproot.recreate(path) as f:
        f["rn"] = {"jet_pt": pt, "trk": trk}
        f.mktree("tt", {"jet_pt": np.float32, "trk": trk.type})
        f["tt"].extend({"jet_pt": pt, "trk": trk})
    for tree in ("rn", "tt"):
        back = H5Reader(
            convert_root(path, tmp_path / f"{tree}.h5", tree=tree, progress=False)
        ).read()
        np.testing.assert_array_equal(back["jets"]["pt"], pt)
        assert back["tracks"].dtype.names == ("d0", "numberOfPixelHits", "valid")
        k = min(int(counts[0]), 40)
        np.testing.assert_array_equal(back["tracks"]["d0"][0, :k], d0[:k])
        np.testing.assert_array_equal(back["tracks"]["valid"].sum(1), np.minimum(counts, 40))
