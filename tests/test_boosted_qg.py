"""Quark/gluon sample (``lhcml simulate qg``): constituents, labels, and a constituent tagger on it.

One tiny Pythia sample (150 events, ~50 jets with 500 < pT < 550 GeV, no pile-up) is shared.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from _boosted_fixtures import _one_torch_thread  # noqa: F401

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "jets"


@pytest.fixture(scope="session")
def qg_sample(tmp_path_factory):
    from lhcml.data.h5 import write_h5
    from lhcml.sim.events import simulate_events

    tables = simulate_events("qg", 150, mu=0.0, seed=3)
    path = write_h5(tmp_path_factory.mktemp("qg") / "qg.h5", tables)
    return tables, path


def test_qg_flow_aligned_with_jets(qg_sample):
    from lhcml.data.schema import FLOW_DTYPE, JET_DTYPE
    from lhcml.sim.events import N_FLOW_SMALL_R

    t, _ = qg_sample
    jets, flow = t["jets"], t["flow"]
    assert jets.dtype == JET_DTYPE and flow.dtype == FLOW_DTYPE
    assert flow.shape == (len(jets), N_FLOW_SMALL_R) and len(jets) >= 20
    # the q/g window of the process: 500 < pT < 550 GeV, |eta| < 2.1
    assert (jets["pt"] > 500e3).all() and (jets["pt"] < 550e3).all() and (np.abs(jets["eta"]) < 2.1).all()
    v = flow["valid"]
    assert v.any(1).all() and v.sum(1).max() < N_FLOW_SMALL_R  # nothing truncated at this pT
    # valid slots first, ordered by decreasing pT
    assert not (~v[:, :-1] & v[:, 1:]).any()
    assert (np.diff(flow["pt"], axis=1)[v[:, 1:]] <= 0).all()
    # the jet is its summed constituent four-momentum scaled by one calibration factor k per jet
    # (area subtraction 1 − ρ·πR²/pT, < 2 % at 500 GeV, then the JES numerical inversion 1/R):
    # the direction is kept, and k·R(pT) lies within the area-subtraction band
    from lhcml.sim.jet_calibration import jes_response, load_table

    ptc = np.where(v, flow["pt"].astype(np.float64), 0.0)
    cons = np.stack([(ptc * np.cos(flow["phi"])).sum(1), (ptc * np.sin(flow["phi"])).sum(1),
                     (ptc * np.sinh(flow["eta"])).sum(1), np.where(v, flow["energy"], 0.0).sum(1)], 1)
    pt, eta, phi = (jets[k].astype(np.float64) for k in ("pt", "eta", "phi"))
    jet = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), jets["energy"]], 1)
    k = jet[:, 3] / cons[:, 3]
    np.testing.assert_allclose(jet, cons * k[:, None], atol=2e-4 * jets["energy"].max())
    table = load_table()
    response = jes_response(table, np.hypot(cons[:, 0], cons[:, 1]) / 1e3, eta) if table else np.ones(len(k))
    assert (k * response > 0.975).all() and (k * response < 1 + 1e-4).all()
    # deta/dphi are relative to the jet axis, and constituents lie inside R = 0.4 (± the small
    # shift of the axis by soft constituents)
    dr = np.hypot(flow["deta"], flow["dphi"])[v]
    assert dr.max() < 0.45


def test_qg_labels_and_multiplicity(qg_sample):
    from lhcml.labels import get_scheme

    t, _ = qg_sample
    jets, flow = t["jets"], t["flow"]
    lab = jets["PartonTruthLabelID"]
    gluon, quark = lab == 21, (lab > 0) & (lab < 21)
    assert (gluon | quark).mean() > 0.9 and gluon.sum() >= 5 and quark.sum() >= 5
    scheme = get_scheme("quark_gluon")
    assert [c.name for c in scheme.classes] == ["gluon", "quark"]
    # physics: gluons radiate more (C_A/C_F = 9/4), so gluon jets have more constituents
    n = flow["valid"].sum(1)
    assert n[gluon].mean() > 1.2 * n[quark].mean()


def test_qg_configs_train_predict(qg_sample, tmp_path):
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    t, path = qg_sample
    cfg = load_train_config(CONFIGS / "qg_particlenet.yaml")
    assert cfg.data.label_scheme == "quark_gluon" and cfg.data.classes == ["gluon", "quark"]
    assert cfg.validation.signal == "quark" and cfg.model.name == "particlenet"
    cfg = load_train_config(
        CONFIGS / "qg_pfn.yaml",
        [f"data.train_files=[{path}]", f"data.val_files=[{path}]", f"output_dir={tmp_path / 'run'}",
         "data.batch_size=16", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
         "trainer.accelerator=cpu", "model.phi_sizes=[16,16]", "model.f_sizes=[16]", "seed=1"],
    )  # fmt: skip
    ckpt = train(cfg)
    (pred,) = predict(ckpt, [path], output_dir=tmp_path / "pred")
    with h5py.File(pred) as f:
        jets = f["jets"][:]
    p = np.stack([jets["qg_pfn_pg"], jets["qg_pfn_pq"]], 1)
    assert len(p) == len(t["jets"]) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert p.std(0).max() > 0  # the output depends on the jet
