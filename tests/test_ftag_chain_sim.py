"""Cross-stage check on the real simulation: baseline taggers separate b- from light-jets."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from lhcml.data.h5 import write_h5  # noqa: E402
from lhcml.metrics.classification import auc  # noqa: E402
from lhcml.sim.events import simulate_events  # noqa: E402
from lhcml.tasks.ftag.baselines import apply_baselines, fit_baselines  # noqa: E402


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ftag_chain")
    tables = simulate_events("ttbar", 300, mu=0.0, seed=21)
    jets, tracks = tables["jets"], tables["tracks"]
    even = jets["eventNumber"] % 2 == 0
    fit = write_h5(d / "fit.h5", {"jets": jets[even], "tracks": tracks[even]})
    test = write_h5(d / "test.h5", {"jets": jets[~even], "tracks": tracks[~even]})
    return fit, test


def test_baselines_separate_b_from_light_on_simulated_jets(sim_files, tmp_path):
    fit, test = sim_files
    templates = fit_baselines([fit], tmp_path / "templates.h5")
    (out,) = apply_baselines(templates, [test], output_dir=tmp_path / "applied")
    with h5py.File(out, "r") as f:
        jets = f["jets"][:]
    flav = jets["HadronConeExclTruthLabelID"]
    b, light = flav == 5, flav == 0
    assert b.sum() > 50 and light.sum() > 50
    eps = 1e-10
    for tagger, min_auc in (("IP2D", 0.75), ("IP3D", 0.75), ("SV1", 0.65)):
        d = np.log((jets[f"{tagger}_pb"] + eps) / (jets[f"{tagger}_pu"] + eps))
        a = auc(d[b], d[light])
        assert a > min_auc, f"{tagger}: AUC(b vs light) = {a:.3f}"
    # a secondary vertex is found far more often in b-jets than in light jets
    has_sv = jets["SV1_NGTinSvx"] >= 2
    assert has_sv[b].mean() > 0.5 > 3 * has_sv[light].mean()
