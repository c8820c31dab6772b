"""``lhcml evaluate``: rejection in bins of extra variables (``rejection_vs``), e.g. ⟨μ⟩."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from metrics_mock import write_predictions

from lhcml.config import validate_config
from lhcml.errors import ConfigError, SchemaError
from lhcml.evaluation import EvaluateConfig, evaluate
from lhcml.metrics import discriminant, rejection_vs_var

MU = "averageInteractionsPerCrossing"


@pytest.fixture(scope="module")
def mu_files(tmp_path_factory):
    """A μ = 0 sample with a good tagger and a μ = 60 sample where the same tagger is worse."""
    d = tmp_path_factory.mktemp("mu_preds")
    files = []
    for mu, sep, seed in ((0.0, 2.0, 1), (60.0, 0.8, 2)):
        f = write_predictions(d / f"mu{int(mu)}.h5", "boosted", 3000, seed=seed, taggers={"T": sep})
        with h5py.File(f, "r+") as h:
            jets = h["jets"][:]
            jets[MU] = mu
            h["jets"][...] = jets
        files.append(f)
    return files


def _spec(files, **over):
    spec = {
        "label_scheme": "boosted", "signal": "top", "backgrounds": ["qcd"], "fractions": {"qcd": 1.0},
        "taggers": ["T"], "working_points": [0.5],
        "rejection_vs": [{"var": MU, "bins": [-0.5, 30, 90], "label": r"$\langle\mu\rangle$"}],
        "samples": [{"name": "mix", "files": [str(f) for f in files]}], "plots": False,
    }  # fmt: skip
    spec.update(over)
    return spec


def test_rejection_vs_mu_matches_direct_call(mu_files, tmp_path):
    res = evaluate(validate_config(EvaluateConfig, _spec(mu_files, plots=True)), tmp_path)
    s = res["samples"]["mix"]
    got = s["taggers"]["T"]["rejection_vs"][MU]["qcd"]
    assert set(got) == {"fixed_cut", "flat_per_bin"}
    # direct: the same binned rejection on the concatenated files
    jets = np.concatenate([h5py.File(f, "r")["jets"][:] for f in mu_files])
    disc = discriminant({"top": jets["T_ptop"], "qcd": jets["T_pqcd"]}, "top", {"qcd": 1.0})
    sig, bkg = jets["R10TruthLabel"] == 1, jets["R10TruthLabel"] == 0
    for mode in ("fixed_cut", "flat_per_bin"):
        ref = rejection_vs_var(disc[sig], disc[bkg], jets[MU][sig], jets[MU][bkg], [-0.5, 30, 90], 0.5, mode)
        np.testing.assert_allclose(got[mode]["rejection"], ref.rejection, rtol=1e-9)
        # the tagger is worse in the μ = 60 sample: the rejection falls with μ
        assert got[mode]["rejection"][0] > 2 * got[mode]["rejection"][1]
    plots = [p["path"] for p in s["plots"]]
    for mode in ("fixed_cut", "flat_per_bin"):
        assert f"plots/mix_rej_vs_{MU}_qcd_{mode}.png" in plots
        assert (tmp_path / f"plots/mix_rej_vs_{MU}_qcd_{mode}.png").stat().st_size > 1000
    assert "rejection_vs" in (tmp_path / "results.json").read_text()


def test_rejection_vs_errors(mu_files, tmp_path):
    with pytest.raises(ConfigError, match="strictly increasing"):
        validate_config(EvaluateConfig, _spec(mu_files, rejection_vs=[{"var": MU, "bins": [0, 50, 20]}]))
    with pytest.raises(ConfigError, match="unique"):
        validate_config(EvaluateConfig, _spec(mu_files, rejection_vs=[{"var": "pt", "bins": [0, 1]}]))
    cfg = validate_config(EvaluateConfig, _spec(mu_files, rejection_vs=[{"var": "nPV", "bins": [0, 1]}]))
    with pytest.raises(SchemaError, match="lacks nPV"):
        evaluate(cfg, tmp_path)
