"""`lhcml sim validate` report and the simulate/sim validate/inspect command line."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.testing import CliRunner

from lhcml.cli import app
from lhcml.data.mock import make_mock_file
from lhcml.validation import validate_simulation

FLAVOUR_PNGS = {"jet_pt.png", "jet_eta.png", "hadron_lxy.png", "track_multiplicity.png",
                "sd0.png", "sz0.png", "track_origin.png"}  # fmt: skip


def _referenced(page):
    text = page.read_text()
    return set(re.findall(r'href="([^"]+\.png)"', text)), text


def test_validation_report_on_mock_samples(tmp_path):
    make_mock_file(tmp_path / "ftag" / "ttbar_0000.h5", n_jets=2000, seed=1)
    page = validate_simulation(tmp_path / "ftag", tmp_path / "report")
    refs, text = _referenced(page)
    assert refs == FLAVOUR_PNGS
    assert all((tmp_path / "report" / p).stat().st_size > 5000 for p in refs)
    assert text.count("data:image/png;base64,") == len(FLAVOUR_PNGS)  # self-contained
    assert "bjets" in text and "frac |sd0|&gt;3" in text and "ATLAS Simulation" not in text
    make_mock_file(tmp_path / "boosted" / "top_0000.h5", n_jets=500, kind="boosted")
    page = validate_simulation(tmp_path / "boosted")
    refs, text = _referenced(page)
    assert refs == {"large_r_mass.png", "large_r_pt.png"} and "median mass" in text
    with pytest.raises(FileNotFoundError, match="no flat files"):
        validate_simulation(tmp_path / "report")


@pytest.mark.slow
def test_cli_simulate_validate_inspect(tmp_path):
    pytest.importorskip("pythia8mc")
    out = tmp_path / "sim"
    runner = CliRunner()
    lib = tmp_path / "lib.h5"
    res = runner.invoke(app, ["sim", "make-pileup", str(lib), "--events", "20", "--seed", "2", "--quiet"])
    assert res.exit_code == 0 and lib.exists(), res.output
    res = runner.invoke(app, ["simulate", "ttbar", "--events", "4", "--mu", "2", "--seed", "4",
                              "--events-per-shard", "4", "--output", str(out), "--quiet",
                              "--pileup-library", str(lib)])  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["pileup"]["file"] == str(lib) and manifest["mu"] == 2.0
    assert not (out / "pileup_minbias.h5").exists()
    assert sorted(p.name for p in out.glob("*.h5")) == ["ttbar_0000.h5"]
    res = runner.invoke(app, ["sim", "validate", str(out), "--output", str(tmp_path / "val")])
    assert res.exit_code == 0, res.output
    refs, _ = _referenced(tmp_path / "val" / "index.html")
    assert {"jet_pt.png", "sd0.png", "track_origin.png"} <= refs
    res = runner.invoke(app, ["inspect", str(out / "ttbar_0000.h5")])
    assert (
        res.exit_code == 0 and "tracks: shape" in res.output and "events: shape (4,)" in res.output
    )
    res = runner.invoke(
        app, ["simulate", "ttbarr", "--events", "1", "--output", str(tmp_path / "x")]
    )
    assert res.exit_code != 0 and "did you mean 'ttbar'" in str(res.exception)


def test_hadron_ctau_estimator_recovers_mock_lifetimes():
    """The mock draws Lxy ~ Exp(c*tau * pT/m): the estimator must give back c*tau."""
    from lhcml.data.mock import make_mock_tables
    from lhcml.validation import hadron_ctau

    jets = make_mock_tables(20_000, seed=3)["jets"]
    flav = jets["HadronConeExclTruthLabelID"]
    for f, true in ((5, 0.455), (4, 0.20)):
        ctau, err, n = hadron_ctau(jets[flav == f], f)
        assert n > 3000 and abs(ctau - true) < 4 * err and err < 0.03 * true
