"""``lhcml evaluate``: end to end on mock prediction files, against direct metric calls."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import yaml
from metrics_mock import write_predictions

from lhcml.config import validate_config
from lhcml.errors import ConfigError, CorruptFileError, SchemaError
from lhcml.evaluation import EvaluateConfig, evaluate
from lhcml.metrics import auc, d_b, inverse_jsd_at_efficiency, rejection_vs_var, working_points


@pytest.fixture(scope="module")
def ftag_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ftag_preds")
    return [write_predictions(d / f"ttbar_{i}.h5", "ftag", 2500, seed=10 + i) for i in range(2)]


def _cfg(files, **over):
    base = {
        "signal": "bjets",
        "taggers": ["GOOD", "REF"],
        "reference": "REF",
        "fractions": {"cjets": 0.2, "ujets": 0.8},
        "samples": [{"name": "ttbar", "kind": "ttbar", "files": [str(f) for f in files]}],
        "plots": False,
    }
    base.update(over)
    return validate_config(EvaluateConfig, base, "test.yaml")


def _read(files, dataset="jets"):
    parts = []
    for f in files:
        with h5py.File(f, "r") as h:
            parts.append(h[dataset][:])
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def ftag_results(ftag_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("ftag_eval")
    return evaluate(_cfg([str(ftag_files[0].parent / "ttbar_*.h5")], weight="mcEventWeight"),
                    out), out


def test_results_match_direct_metric_calls(ftag_files, ftag_results):
    res, out = ftag_results
    jets = _read(ftag_files)
    pt = jets["pt"] / 1e3
    jets = jets[(pt >= 20) & (pt < 250)]  # the ttbar preset selection
    lab, w = jets["HadronConeExclTruthLabelID"], jets["mcEventWeight"].astype(float)
    sample = res["samples"]["ttbar"]
    assert sample["n_jets"]["bjets"] == int((lab == 5).sum())
    assert sample["backgrounds"] == ["cjets", "ujets", "taujets"]
    assert len(sample["files"]) == 2
    for tagger in ("GOOD", "REF"):
        disc = d_b(jets[f"{tagger}_pb"], jets[f"{tagger}_pc"], jets[f"{tagger}_pu"], fc=0.2)
        sig = lab == 5
        bkg = {"cjets": lab == 4, "ujets": lab == 0, "taujets": lab == 15}
        wps = working_points(disc[sig], {b: disc[m] for b, m in bkg.items()},
                             [0.6, 0.7, 0.77, 0.85], w[sig], {b: w[m] for b, m in bkg.items()})
        got = sample["taggers"][tagger]
        for mine, ref in zip(got["working_points"], wps, strict=True):
            assert mine["cut"] == pytest.approx(ref.cut, rel=1e-12)
            for b in bkg:
                assert mine["backgrounds"][b]["rejection"] == pytest.approx(ref.rejection[b])
                assert mine["backgrounds"][b]["rejection_err"] == pytest.approx(
                    ref.rejection_err[b])
        assert got["auc"]["ujets"] == pytest.approx(auc(disc[sig], disc[bkg["ujets"]], w[sig],
                                                        w[bkg["ujets"]]))
        br = rejection_vs_var(disc[sig], disc[bkg["ujets"]], pt[(pt >= 20) & (pt < 250)][sig],
                              pt[(pt >= 20) & (pt < 250)][bkg["ujets"]],
                              [20, 30, 40, 60, 85, 110, 140, 175, 250], 0.77, "flat_per_bin",
                              w[sig], w[bkg["ujets"]])
        stored = got["rejection_vs_pt"]["ujets"]["flat_per_bin"]["rejection"]
        # infinite rejections (no background passes) are stored as null
        np.testing.assert_allclose(np.array(stored, float),
                                   np.where(np.isinf(br.rejection), np.nan, br.rejection),
                                   rtol=1e-12)
    # the better tagger has higher light rejection at every WP, and a ratio > 1 in the ROC
    good, ref = sample["taggers"]["GOOD"], sample["taggers"]["REF"]
    for g, r in zip(good["working_points"], ref["working_points"], strict=True):
        assert g["backgrounds"]["ujets"]["rejection"] > r["backgrounds"]["ujets"]["rejection"]
    assert good["accuracy"] > ref["accuracy"] > 0.25
    # results.json and results.yaml hold the same table
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["samples"]["ttbar"]["taggers"]["GOOD"]["working_points"] == \
        good["working_points"]
    assert yaml.safe_load((out / "results.yaml").read_text())["samples"] == on_disk["samples"]
    assert not list(out.glob(".*tmp*"))


def test_weights_enter_the_working_point_cuts(ftag_files, ftag_results, tmp_path):
    """A working point's cut reaches its target b-efficiency counted with the configured weights:
    with ``weight: mcEventWeight`` the weighted efficiency, without it the plain one."""
    from lhcml.metrics.discriminants import discriminant

    res_w, _ = ftag_results
    res = evaluate(_cfg(ftag_files), tmp_path)
    jets = _read(ftag_files)
    disc = discriminant({c: jets[f"GOOD_p{c[0]}"] for c in ("bjets", "cjets", "ujets")}, "bjets",
                        {"cjets": 0.2, "ujets": 0.8})  # fmt: skip
    b = jets["HadronConeExclTruthLabelID"] == 5
    w = jets["mcEventWeight"].astype(float)
    for result, weights in ((res, np.ones_like(w)), (res_w, w)):
        wp = result["samples"]["ttbar"]["taggers"]["GOOD"]["working_points"][0]
        passed = weights[b & (disc > wp["cut"])].sum() / weights[b].sum()
        assert passed == pytest.approx(wp["target_eff"], abs=0.01)
    assert res["samples"]["ttbar"]["taggers"]["GOOD"]["working_points"][0]["cut"] != \
        res_w["samples"]["ttbar"]["taggers"]["GOOD"]["working_points"][0]["cut"]


def test_missing_tagger_column(ftag_files, tmp_path):
    with pytest.raises(SchemaError) as err:
        evaluate(_cfg(ftag_files, taggers=["GOOD", "GN3"], reference=None), tmp_path)
    msg = str(err.value)
    assert "GN3_pb" in msg and str(ftag_files[0]) in msg and "GOOD_pb" in msg
    assert not (tmp_path / "results.json").exists()


def test_config_errors(ftag_files, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'working_points'"):
        _cfg(ftag_files, working_point=[0.7])
    with pytest.raises(ConfigError, match="reference tagger 'DL1r'"):
        _cfg(ftag_files, reference="DL1r")
    with pytest.raises(ConfigError, match="unknown class 'light'"):
        _cfg(ftag_files, fractions={"light": 1.0})
    with pytest.raises(ConfigError, match="no file matches"):
        evaluate(_cfg([tmp_path / "nothing_*.h5"]), tmp_path)
    with pytest.raises(ConfigError, match="sum to 1"):
        evaluate(_cfg(ftag_files, fractions={"cjets": 0.2, "ujets": 0.7}), tmp_path)
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(CorruptFileError, match="corrupt.h5"):
        evaluate(_cfg([bad]), tmp_path)


def test_boosted_decorrelation(tmp_path):
    f = write_predictions(tmp_path / "boosted.h5", "boosted", 6000, seed=3,
                          taggers={"FLAT": 0.7, "SCULPT": 0.7}, sculpt="SCULPT")
    spec = {
        "label_scheme": "boosted", "signal": "top", "taggers": ["FLAT", "SCULPT"],
        "mass_var": "mass", "mass_bins": [0, 20, 40, 60, 80, 100, 125, 150, 200, 250, 300],
        "samples": [{"name": "boosted", "files": [str(f)]}], "plots": False,
    }
    with pytest.raises(ConfigError, match="give 'fractions'"):
        evaluate(validate_config(EvaluateConfig, spec), tmp_path)
    spec.update(fractions={"qcd": 1.0}, backgrounds=["qcd"])
    res = evaluate(validate_config(EvaluateConfig, spec), tmp_path)
    t = res["samples"]["boosted"]["taggers"]
    assert t["FLAT"]["decorrelation"]["qcd"]["inv_jsd50"] > 3 * t["SCULPT"]["decorrelation"][
        "qcd"]["inv_jsd50"]
    assert set(t["FLAT"]["rejection_at"]) == {"0.3", "0.5"}
    assert t["FLAT"]["rejection_at"]["0.5"]["qcd"]["rejection"] == pytest.approx(
        t["FLAT"]["decorrelation"]["qcd"]["r50"])
    # direct call
    jets = _read([f])
    lab = jets["R10TruthLabel"]
    from lhcml.metrics import discriminant

    probs = {"top": jets["FLAT_ptop"], "qcd": jets["FLAT_pqcd"]}
    disc = discriminant(probs, "top", {"qcd": 1.0})
    inv = inverse_jsd_at_efficiency(disc[lab == 1], disc[lab == 0], jets["mass"][lab == 0] / 1e3,
                                    0.5, np.array(spec["mass_bins"], float))
    assert t["FLAT"]["decorrelation"]["qcd"]["inv_jsd50"] == pytest.approx(inv)


def test_photon_scheme_and_score_column(tmp_path):
    f = write_predictions(tmp_path / "photons.h5", "photon", 3000, seed=4,
                          taggers={"CNN": 2.0, "BDT": 1.0})
    spec = {
        "label_scheme": "photon", "dataset": "photons", "signal": "prompt",
        "weight": "mcEventWeight", "significance": "ams",
        "taggers": ["CNN", {"name": "BDTscore", "score": "BDT_pprompt"}], "reference": "BDTscore",
        "working_points": [0.8, 0.9],
        "samples": [{"name": "gamma", "files": [str(f)], "pt_bins": [25, 50, 100, 500]}],
        "output_dir": str(tmp_path / "out"),
    }
    res = evaluate(validate_config(EvaluateConfig, spec))
    s = res["samples"]["gamma"]
    assert s["backgrounds"] == ["fake"]
    assert s["taggers"]["CNN"]["discriminant"].startswith("ln(pprompt")
    assert s["taggers"]["BDTscore"]["discriminant"] == "BDT_pprompt"
    assert s["taggers"]["CNN"]["auc"]["fake"] > s["taggers"]["BDTscore"]["auc"]["fake"] > 0.5
    assert all((tmp_path / "out" / p["path"]).is_file() for p in s["plots"])
    # best-cut AMS with the weights as yields, consistent with a direct call
    z = s["taggers"]["CNN"]["significance"]
    from lhcml.metrics import ams

    assert z["metric"] == "ams" and z["significance"] == pytest.approx(ams(z["s"], z["b"]))
    assert z["significance"] > ams(s["n_jets"]["prompt"], s["n_jets"]["fake"])
    with pytest.raises(SchemaError, match="no dataset 'jets'"):
        evaluate(validate_config(EvaluateConfig, {**spec, "dataset": "jets"}))


def test_cli_evaluate_and_report(ftag_files, tmp_path):
    from typer.testing import CliRunner

    from lhcml.cli import app

    cfg = {
        "signal": "bjets", "taggers": ["GOOD", "REF"], "reference": "REF",
        "samples": [{"name": "ttbar", "kind": "ttbar", "files": [str(ftag_files[0])],
                     "max_jets": 1500}],
        "plots": False, "output_dir": str(tmp_path / "ev"),
    }
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["evaluate", str(path)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert sum(res["samples"]["ttbar"]["n_jets"].values()) <= 1500
    assert "signal: bjets" in res["config_yaml"]
    assert (tmp_path / "ev" / "report.html").is_file()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "ev"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "GOOD" in (tmp_path / "r.html").read_text()
