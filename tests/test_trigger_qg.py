"""t/W/Z/q/g classes of the trigger jet-substructure task (issue 16): the large-R parton label on
a tiny Pythia sample, the generalised ECF ratios against a hand computation, and
``lhcml trigger dataset`` writing the five classes and the benchmark's 16 inputs.

One tiny sample (60 ``qcd_wide`` + 30 ``top_wide`` + 60 ``wz_wide`` events, no pile-up) is shared.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest


@pytest.fixture(scope="module")
def boosted_file(tmp_path_factory):
    from lhcml.data.h5 import write_h5
    from lhcml.sim.events import simulate_events

    jets, flow = [], []
    for proc, n, seed in (("qcd_wide", 60, 5), ("top_wide", 30, 6), ("wz_wide", 60, 7)):
        t = simulate_events(proc, n, mu=0.0, seed=seed)
        jets.append(t["jets"])
        flow.append(t["flow"])
    path = tmp_path_factory.mktemp("qg") / "boosted.h5"
    return write_h5(path, {"jets": np.concatenate(jets), "flow": np.concatenate(flow)})


def test_large_r_parton_label_on_qcd_jets(boosted_file):
    with h5py.File(boosted_file) as f:
        jets = f["jets"][:]
    qcd = jets[jets["R10TruthLabel"] == 0]
    lab = qcd["PartonTruthLabelID"]
    assert len(qcd) >= 40
    assert np.all(
        (lab == -1) | ((lab >= 1) & (lab <= 6)) | (lab == 21)
    )  # |pdg id| of a parton or none
    assert np.mean(lab != -1) > 0.9  # a 250+ GeV jet has a hard parton within R = 0.8
    q, g = np.isin(lab, [1, 2, 3, 4, 5]).sum(), (lab == 21).sum()
    # dijets at 250-1500 GeV: both quark and gluon jets, gluons neither absent nor everything
    assert 0.2 < g / (q + g) < 0.9, (q, g)
    # a top jet's hardest parton within R is a quark (b or a W-decay quark) more often than a gluon
    top = jets["PartonTruthLabelID"][jets["R10TruthLabel"] == 1]
    assert np.mean(np.isin(top, [1, 2, 3, 4, 5])) > 0.7


def test_generalized_ecf_ratios_by_hand():
    from lhcml.tasks.boosted.substructure import compute_substructure, generalized_ecf_ratios

    # three massless constituents at (y, phi) = (0, 0), (0.3, 0), (0, 0.4): ΔR12 = 0.3, ΔR13 = 0.4,
    # ΔR23 = 0.5; z = 0.5, 0.3, 0.2
    pt = np.array([[500.0, 300.0, 200.0, 0.0]])
    eta = np.array([[0.0, 0.3, 0.0, 0.0]])
    phi = np.array([[0.0, 0.0, 0.4, 0.0]])
    valid = np.array([[True, True, True, False]])
    r = generalized_ecf_ratios(pt, eta, phi, pt * np.cosh(eta), valid)
    z, d = (0.5, 0.3, 0.2), {(0, 1): 0.3, (0, 2): 0.4, (1, 2): 0.5}
    for b in (1, 2):
        e2 = sum(z[i] * z[j] * d[i, j] ** b for i, j in d)
        e3_1, e3_2, e3_3 = (
            0.03 * 0.3**b,
            0.03 * (0.3 * 0.4) ** b,
            0.03 * 0.3 * 0.4 * 0.5,
        )  # 3e3 at α = 1
        assert r[f"M2_b{b}"][0] == pytest.approx(e3_1 / e2, rel=1e-5)
        assert r[f"N2_b{b}"][0] == pytest.approx(e3_2 / e2**2, rel=1e-5)
        assert r[f"D2_a1_b{b}"][0] == pytest.approx(e3_3 / e2 ** (3 / b), rel=1e-5)
    # D2 at α = β = 1 is the usual D2
    assert r["D2_a1_b1"][0] == pytest.approx(
        compute_substructure(pt, eta, phi, pt * np.cosh(eta), valid)["D2"][0], rel=1e-5
    )
    # two constituents: no 3-point correlation
    r2 = generalized_ecf_ratios(pt[:, :2], eta[:, :2], phi[:, :2], pt[:, :2], valid[:, :2])
    assert r2["N2_b1"][0] == 0.0 and r2["M2_b2"][0] == 0.0


def test_trigger_dataset_writes_five_classes(boosted_file, tmp_path, capsys):
    from lhcml.cli import main
    from lhcml.tasks.trigger.dataset import HLS4ML_16

    with pytest.raises(SystemExit) as ex:
        main(
            [
                "trigger",
                "dataset",
                str(boosted_file),
                "-o",
                str(tmp_path / "out"),
                "--constituents",
                "8",
            ]
        )
    assert ex.value.code in (0, None)
    with h5py.File(tmp_path / "out" / boosted_file.name) as f, h5py.File(boosted_file) as g:
        jets, src = f["jets"][:], g["jets"][:]
    lab = jets["jssTruthLabel"]
    assert set(np.unique(lab)) <= {-1, 0, 1, 2, 3, 4} and {0, 1, 2, 3, 4} <= set(np.unique(lab))
    # the classes follow the truth: t/W/Z from R10TruthLabel, q/g from the QCD jets' parton
    np.testing.assert_array_equal(lab[src["R10TruthLabel"] == 1], 0)
    qcd = src["R10TruthLabel"] == 0
    np.testing.assert_array_equal(lab[qcd & (src["PartonTruthLabelID"] == 21)], 4)
    np.testing.assert_array_equal(lab[qcd & (src["PartonTruthLabelID"] == 5)], -1)  # b: no class
    for k in HLS4ML_16:
        assert np.all(np.isfinite(jets[k])), k
    np.testing.assert_allclose(jets["D2_a1_b1"], jets["D2"], rtol=1e-4)
    # N2 < 1 and M2 <= 1 by construction (products of the smallest angles, R = 0.8 jets)
    assert np.all(jets["M2_b1"] <= 1.0) and np.median(jets["N2_b2"]) < 1.0
