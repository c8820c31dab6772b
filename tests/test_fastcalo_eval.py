"""CaloChallenge evaluation (issue 15): separation power, classifier test, FPD/KPD, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lhcml.data.calochallenge import CaloSample
from lhcml.metrics import fastcalo as fm


@pytest.fixture(scope="module")
def detailed():
    """600 detailed photon showers, log-uniform 1-260 GeV, in lhcml's cell binning."""
    import torch

    from lhcml.sim.fastcalo import detailed_showers, shower_energies, voxel_binning

    torch.set_num_threads(1)
    b = voxel_binning("photon")
    e = shower_energies("continuous", 600, np.random.default_rng(7))
    out = detailed_showers("photon", e, 7, binning=b, images=False)
    return CaloSample(e, out["showers"] / 1000, b)


def test_separation_power_definition():
    h = np.array([1.0, 2.0, 3.0, 0.0])
    assert fm.separation_power(h, 2 * h) == pytest.approx(0.0)  # identical after normalisation
    assert fm.separation_power([1, 1, 0, 0], [0, 0, 3, 1]) == pytest.approx(1.0)  # disjoint
    # by hand: a = (0.5, 0.5), b = (1, 0): 1/2 [0.25/1.5 + 0.25/0.5] = 1/3
    assert fm.separation_power([1, 1], [1, 0]) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=20000)
    assert fm.feature_separation(x, x.copy()) == 0.0
    assert fm.feature_separation(x, x + 50) > 0.95


def test_classifier_jsd_limits():
    y = np.array([0, 0, 1, 1])
    assert fm.classifier_jsd(y, np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(1.0, abs=1e-5)
    assert fm.classifier_jsd(y, np.full(4, 0.5)) == pytest.approx(0.0, abs=1e-12)


def test_frechet_agrees_with_scipy_and_gaussians_of_known_distance():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    c1 = a @ a.T + np.eye(5)
    b = rng.normal(size=(5, 5))
    c2 = b @ b.T + np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # reference: the Fréchet distance written with two symmetric square roots
    s1 = linalg.sqrtm(c1).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(s1 @ c2 @ s1).real)
    assert fm.frechet_gaussian(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)
    # diagonal Gaussians: FD = |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2, known exactly
    mu = np.array([0.3, -0.2, 0.0, 0.1])
    sig = np.array([1.0, 1.5, 0.7, 1.0])
    truth = np.sum(mu**2) + np.sum((1 - sig) ** 2)
    x = rng.normal(size=(20000, 4))
    y = mu + sig * rng.normal(size=(20000, 4))
    val, err = fm.fpd(x, y, normalise=False, num_batches=5, seed=3)
    assert abs(val - truth) < max(4 * err, 0.01), (val, err, truth)
    val0, err0 = fm.fpd(x, rng.normal(size=(20000, 4)), normalise=False, num_batches=5, seed=3)
    assert abs(val0) < max(4 * err0, 0.003)  # same distribution: the 1/N extrapolation removes the bias


def test_kpd_is_the_unbiased_cubic_kernel_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 3)), rng.normal(0.5, 1.0, size=(30, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    kxx = np.mean([k(x[i], x[j]) for i in range(40) for j in range(40) if i != j])
    kyy = np.mean([k(y[i], y[j]) for i in range(30) for j in range(30) if i != j])
    kxy = np.mean([k(x[i], y[j]) for i in range(40) for j in range(30)])
    assert fm.mmd2_poly_unbiased(x, y) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10)
    same = fm.kpd(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)), batch_size=1000, seed=1)
    diff = fm.kpd(rng.normal(size=(4000, 3)), rng.normal(0.3, 1.0, size=(4000, 3)), batch_size=1000, seed=1)
    assert abs(same[0]) < 3 * same[1] + 1e-3
    assert diff[0] > 10 * abs(same[0]) and diff[0] > 5 * diff[1]


def test_classifier_half_vs_half_and_trivially_different(detailed):
    from lhcml.tasks.fastcalo.evaluate import classifier_test

    a, b = detailed.subset(slice(0, 300)), detailed.subset(slice(300, 600))
    same = classifier_test(a, b, "low", n_runs=5, epochs=10, seed=1)
    assert same["auc"]["n"] == 5 and len(same["runs"]) == 5
    assert abs(same["auc"]["mean"] - 0.5) < 0.08, same["auc"]
    assert same["jsd"]["mean"] < 0.1
    # "generated" showers whose middle-layer core sits 2 cells off the impact cell in phi
    sl = b.binning.layer_slice("middle")
    moved = b.showers.copy()
    moved[:, sl] = np.roll(moved[:, sl].reshape(-1, 7, 11), 2, axis=2).reshape(len(moved), -1)
    bad = CaloSample(b.energies, moved, b.binning)
    for level, auc_min in (("high", 0.99), ("low", 0.93)):
        diff = classifier_test(a, bad, level, n_runs=2, epochs=10, seed=1)
        assert diff["auc"]["mean"] > auc_min and diff["jsd"]["mean"] > 0.4, (level, diff["auc"])

def test_evaluate_writes_report_with_shower_shapes(detailed, tmp_path):
    from lhcml.tasks.fastcalo.evaluate import evaluate_showers

    a, b = detailed.subset(slice(0, 300)), detailed.subset(slice(300, 600))
    res = evaluate_showers(a, b, a.binning, tmp_path / "ev", n_runs=2, epochs=3, levels=("high",),
                           energy_bins=[1, 10, 260])  # fmt: skip
    on_disk = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert on_disk["classifier"]["high"]["auc"]["n"] == 2
    seps = res["separation_powers"]
    assert {"E_tot", "E_ratio", "E_middle", "centroid_eta_middle", "width_phi_strips", "sparsity_back"} <= set(seps)
    assert max(seps.values()) < 0.2  # two halves of one sample
    shapes = res["shower_shapes"]
    assert {"Reta", "Rphi", "weta2", "Eratio"} <= set(shapes)
    # photons in lhcml's calorimeter: Reta near 0.95, weta2 near 0.01 (the cluster code's values)
    assert 0.85 < shapes["Reta"]["mean_reference"] < 1.0 and 0.006 < shapes["weta2"]["mean_reference"] < 0.014
    assert len(res["energy_bins"]) == 2
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "Classifier test" in html and "Rphi" in html and "<img" in html
