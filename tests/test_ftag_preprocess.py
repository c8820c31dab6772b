"""Preprocessing (UPP-style): resampling, splits, streaming, normalisation, class weights, errors."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import yaml

from lhcml.data.h5 import write_h5
from lhcml.data.mock import make_mock_tables
from lhcml.data.normalisation import class_weights
from lhcml.data.preprocess import PreprocessConfig, load_preprocess_config, preprocess
from lhcml.data.resampling import allocate_multiplicities, bin_jets, target_counts
from lhcml.errors import ConfigError, SchemaError

PT_BINS = [20e3, 30e3, 45e3, 70e3, 110e3, 170e3, 250e3, 400e3, 700e3, 1.5e6]
ETA_BINS = [0.0, 0.8, 1.6, 2.5]
CLASSES = ["bjets", "cjets", "ujets"]


def _sample(path, seed, pt_scale):
    t = make_mock_tables(4000, seed=seed)
    j = t["jets"]
    rng = np.random.default_rng(seed)
    flav = j["HadronConeExclTruthLabelID"]
    # make the class spectra differ: harder, more central b-jets; forward light jets
    j["pt"] = pt_scale * np.where(flav == 5, 20e3 + rng.exponential(70e3, len(j)), j["pt"])
    j["eta"] = np.where(
        flav == 5, np.clip(rng.normal(0, 0.9, len(j)), -2.45, 2.45), rng.uniform(-2.5, 2.5, len(j))
    )
    write_h5(path, t)
    return t


def _cfg(tmp, out, **over):
    cfg = {
        "output_dir": str(out),
        "classes": CLASSES,
        "samples": {
            "ttbar": {"inputs": [str(tmp / "ttbar.h5")], "cuts": ["pt < 250e3"]},
            "zprime": {"inputs": [str(tmp / "zprime.h5")], "cuts": ["pt > 250e3"]},
        },
        "global_cuts": ["pt > 20e3", "abs(eta) < 2.5"],
        "variables": {
            "jets": {"inputs": ["pt", "eta"], "labels": ["HadronConeExclTruthLabelID"]},
            "tracks": {
                "inputs": ["d0", "z0SinTheta", "IP3D_signed_d0_significance", "ptfrac"],
                "labels": ["ftagTruthOriginLabel", "ftagTruthVertexIndex"],
            },
        },
        "resampling": {"method": "countup", "target": "ujets", "pt_bins": PT_BINS,
                       "abs_eta_bins": ETA_BINS},
        "batch_size": 1500,
        "shuffle_buffer": 2500,
    }  # fmt: skip
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return PreprocessConfig.model_validate(cfg)


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ftag_prep")
    tables = {
        "ttbar": _sample(tmp / "ttbar.h5", 1, 1.0),
        "zprime": _sample(tmp / "zprime.h5", 2, 6.0),
    }
    return tmp, tables


@pytest.fixture(scope="session")
def countup(inputs):
    tmp, _ = inputs
    cfg = _cfg(tmp, tmp / "countup")
    return cfg, preprocess(cfg)


def _hist(jets, label):
    b = bin_jets(jets["pt"], np.abs(jets["eta"]), PT_BINS, ETA_BINS)
    n = (len(PT_BINS) - 1) * (len(ETA_BINS) - 1)
    w = jets["weight"] if "weight" in jets.dtype.names else np.ones(len(jets))
    ok = b >= 0
    return np.array(
        [np.bincount(b[ok & (label == c)], w[ok & (label == c)], minlength=n) for c in range(3)]
    )


def _chi2_ndf(h1, h2):
    """Shape chi2/ndf between two histograms (normalised), over bins filled in either."""
    n1, n2 = h1.sum(), h2.sum()
    m = (h1 + h2) > 0
    chi2 = ((h1 / n1 - h2 / n2) ** 2 / (h1 / n1**2 + h2 / n2**2 + 1e-30))[m].sum()
    return chi2 / max(m.sum() - 1, 1)


def _selected_input(tables, split_res, sample_cuts=True):
    """Jets of the inputs passing the config's cuts and in a class, for residues split_res."""
    out = []
    for name, t in tables.items():
        j = t["jets"]
        m = np.isin(j["eventNumber"] % 10, split_res) & (j["pt"] > 20e3) & (np.abs(j["eta"]) < 2.5)
        m &= (j["pt"] < 250e3) if name == "ttbar" else (j["pt"] > 250e3)
        m &= np.isin(j["HadronConeExclTruthLabelID"], [5, 4, 0])
        out.append(j[m])
    return np.concatenate(out)


def test_countup_matches_target_spectrum(countup, inputs):
    cfg, out = countup
    with h5py.File(out["train"]) as f:
        jets = f["jets"][:]
    h = _hist(jets, jets["flavour_label"])
    # before: b-jets have a very different (pT, |eta|) spectrum from light jets
    _, tables = inputs
    orig = _selected_input(tables, list(range(8)))
    lab = np.select([orig["HadronConeExclTruthLabelID"] == f for f in (5, 4, 0)], [0, 1, 2], -1)
    h0 = _hist(orig, lab)
    assert _chi2_ndf(h0[0], h0[2]) > 20
    # after: every class follows the target (light) histogram; countup hits it bin by bin
    assert _chi2_ndf(h[0], h[2]) < 0.5
    assert _chi2_ndf(h[1], h[2]) < 0.5
    # the target class is written once per jet; the others are upsampled to the same count
    counts = np.bincount(jets["flavour_label"], minlength=3)
    assert counts[2] == h0[2][h0[2] > 0].sum()
    assert abs(counts[0] - counts[2]) <= 0.2 * counts[2]  # bins without b-jets stay empty
    assert np.all(jets["weight"] == 1)


def test_pdf_and_none_methods(inputs):
    tmp, _ = inputs
    out = preprocess(_cfg(tmp, tmp / "pdf", resampling={"method": "pdf"}), stages=["train"])
    with h5py.File(out["train"]) as f:
        jets = f["jets"][:]
    h = _hist(jets, jets["flavour_label"])
    assert _chi2_ndf(h[0], h[2]) < 3  # statistical sampling: looser than countup
    out = preprocess(_cfg(tmp, tmp / "none", resampling={"method": "none"}), stages=["train"])
    with h5py.File(out["train"]) as f:
        jets = f["jets"][:]
    hw = _hist(jets, jets["flavour_label"])  # weighted
    t = hw[2] / hw[2].sum()
    for c in (0, 1):
        m = hw[c] > 0
        np.testing.assert_allclose((hw[c] / hw[c].sum())[m], t[m] / t[m].sum(), rtol=1e-4)
    assert np.unique(jets["weight"][jets["flavour_label"] == 2]).tolist() == [1.0]


def test_split_disjoint_and_complete(countup, inputs):
    _, out = countup
    _, tables = inputs
    with h5py.File(out["train"]) as f:
        tr = f["jets"][:]
    with h5py.File(out["val"]) as f:
        va = f["jets"][:]
    assert set(np.unique(tr["eventNumber"] % 10)) <= set(range(8))
    assert set(np.unique(va["eventNumber"] % 10)) == {8}
    for sample in ("ttbar", "zprime"):
        with h5py.File(out[f"test_{sample}"]) as f:
            te = f["jets"][:]
            assert f["tracks"].shape == (len(te), 40)
            # all input fields are kept in the test files
            assert set(tables[sample]["jets"].dtype.names) <= set(te.dtype.names)
            assert set(tables[sample]["tracks"].dtype.names) == set(f["tracks"].dtype.names)
        assert set(np.unique(te["eventNumber"] % 10)) == {9}
        exp = _selected_input({sample: tables[sample]}, [9])
        key = lambda a: np.sort(a["eventNumber"] * 1e7 + np.round(a["pt"]))  # noqa: E731
        np.testing.assert_array_equal(key(te), key(exp))
        flav = np.array([5, 4, 0])[te["flavour_label"]]
        np.testing.assert_array_equal(flav, te["HadronConeExclTruthLabelID"])
    # no event in two splits
    assert not set(tr["eventNumber"]) & set(va["eventNumber"])


def test_norm_dict_matches_numpy(countup):
    _, out = countup
    norm = yaml.safe_load(out["norm_dict"].read_text())
    with h5py.File(out["train"]) as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    valid = tracks[tracks["valid"]]
    for var in ("d0", "z0SinTheta", "IP3D_signed_d0_significance", "ptfrac"):
        x = valid[var].astype(np.float64)
        assert norm["tracks"][var]["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-12)
        assert norm["tracks"][var]["std"] == pytest.approx(x.std(), rel=1e-9)
        # a mean over all slots (padding included) would differ
        assert norm["tracks"][var]["std"] != pytest.approx(tracks[var].astype(float).std(), rel=1e-3)
    assert norm["jets"]["pt"]["mean"] == pytest.approx(jets["pt"].astype(float).mean(), rel=1e-9)
    assert set(norm) == {"jets", "tracks"} and "ftagTruthOriginLabel" not in norm["tracks"]


def test_class_weights(countup):
    _, out = countup
    cd = yaml.safe_load(out["class_dict"].read_text())
    with h5py.File(out["train"]) as f:
        lab = f["jets"]["flavour_label"]
        tracks = f["tracks"][:]
    origin = tracks["ftagTruthOriginLabel"][tracks["valid"]]
    n = np.bincount(origin, minlength=8).astype(float)
    w = np.where(n > 0, n.sum() / np.maximum(n, 1), 0)
    np.testing.assert_allclose(cd["tracks"]["ftagTruthOriginLabel"], w / w[n > 0].min(), rtol=1e-5)
    nl = np.bincount(lab, minlength=3)
    np.testing.assert_allclose(cd["jets"]["flavour_label"], nl.max() / nl, rtol=1e-5)
    assert "ftagTruthVertexIndex" not in cd["tracks"]  # not a class label
    assert class_weights([10, 20, 0, 40]) == [4.0, 2.0, 0.0, 1.0]


def test_streaming_equals_in_memory(inputs, countup):
    """Chunk size and shuffle buckets change the order only, never the content."""
    tmp, _ = inputs
    cfg_small, out_small = countup
    big = _cfg(tmp, tmp / "inmem", batch_size=10**6, shuffle_buffer=10**7)
    out_big = preprocess(big, stages=["train", "norm"])
    with h5py.File(out_small["train"]) as a, h5py.File(out_big["train"]) as b:
        ja, jb = a["jets"][:], b["jets"][:]
        ta, tb = a["tracks"][:], b["tracks"][:]
    oa = np.lexsort((ja["pt"], ja["eventNumber"]))
    ob = np.lexsort((jb["pt"], jb["eventNumber"]))
    np.testing.assert_array_equal(ja[oa], jb[ob])
    np.testing.assert_array_equal(ta[oa], tb[ob])
    assert not np.array_equal(ja["eventNumber"], ja["eventNumber"][oa])  # it is shuffled
    na = yaml.safe_load(out_small["norm_dict"].read_text())
    nb = yaml.safe_load(out_big["norm_dict"].read_text())
    for g in na:
        for v in na[g]:
            assert na[g][v]["mean"] == pytest.approx(nb[g][v]["mean"], rel=1e-9, abs=1e-12)
            assert na[g][v]["std"] == pytest.approx(nb[g][v]["std"], rel=1e-9)


def test_report_and_resume(countup, inputs):
    cfg, out = countup
    assert (out["report"] / "pt.png").stat().st_size > 1000
    assert (out["report"] / "abs_eta.png").is_file()
    mtime = os.path.getmtime(out["train"])
    preprocess(cfg)  # same config: every stage is skipped
    assert os.path.getmtime(out["train"]) == mtime
    assert not list(out["train"].parent.glob("*.tmp*"))


def test_allocation_exact():
    rng = np.random.default_rng(0)
    avail = np.array([5, 0, 3, 10])
    want = target_counts(np.array([1.0, 1.0, 2.0, 1.0]), 40, avail)
    assert want.sum() == 40 and want[1] == 0
    off, m = allocate_multiplicities(avail, want, "countup", rng)
    for b in range(4):
        mb = m[off[b] : off[b + 1]]
        assert mb.sum() == want[b]
        if len(mb):
            assert mb.max() - mb.min() <= 1  # countup uses jets as evenly as possible


def test_bad_config_errors(inputs, tmp_path):
    tmp, _ = inputs
    good = _cfg(tmp, tmp_path / "x").model_dump()
    bad = dict(good)
    bad["resampeling"] = bad.pop("resampling")
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="did you mean 'resampling'"):
        load_preprocess_config(p)
    bad = dict(good, classes=["bjets", "zjets"])
    with pytest.raises(ConfigError, match="zjets"):
        load_preprocess_config(_dump(tmp_path / "c.yaml", bad))
    bad = dict(good, split={"train": [0, 1], "val": [1], "test": [9]})
    with pytest.raises(ConfigError, match="residue 1"):
        load_preprocess_config(_dump(tmp_path / "s.yaml", bad))
    cfg = _cfg(tmp, tmp_path / "y", variables={
        "jets": {"inputs": ["pt"]}, "tracks": {"inputs": ["d0Significance"]}})  # fmt: skip
    with pytest.raises(SchemaError, match="'d0Significance'.*ttbar.h5|ttbar.h5.*'d0Significance'"):
        preprocess(cfg)
    assert not (tmp_path / "y" / "train.h5").exists()
    cfg = _cfg(tmp, tmp_path / "z", samples={"ttbar": {"inputs": [str(tmp / "nope*.h5")]}})
    with pytest.raises(ConfigError, match="no file matches .* of sample"):
        preprocess(cfg)


def _dump(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_configs_validate_and_tiny_runs(inputs, tmp_path):
    from pathlib import Path

    cfg_dir = Path(__file__).resolve().parents[1] / "configs" / "ftag"
    for name in ("preprocess.yaml", "preprocess_dl1.yaml", "preprocess_tiny.yaml"):
        cfg = load_preprocess_config(cfg_dir / name)
        assert cfg.classes == CLASSES
    dl1 = load_preprocess_config(cfg_dir / "preprocess_dl1.yaml")
    assert "IP3D_llr" in dl1.variables["jets"].inputs and dl1.resampling.method == "countup"
    tmp, _ = inputs
    data = load_preprocess_config(cfg_dir / "preprocess_tiny.yaml").model_dump()
    data["output_dir"] = str(tmp_path / "tiny")
    data["samples"] = {"ttbar": {"inputs": [str(tmp / "ttbar.h5")]}}
    tiny = PreprocessConfig.model_validate(data)
    out = preprocess(tiny)
    norm = yaml.safe_load(out["norm_dict"].read_text())
    assert set(norm["tracks"]) == set(tiny.variables["tracks"].inputs)
    with h5py.File(out["train"]) as f:
        assert f["tracks"].dtype.names[-1] == "valid" or "valid" in f["tracks"].dtype.names
