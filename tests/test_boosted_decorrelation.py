"""Mass decorrelation: DisCo/adversary losses, gradient reversal, DDT, flattening weights, frontier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _boosted_fixtures import _one_torch_thread  # noqa: F401

from lhcml.errors import ConfigError
from lhcml.metrics.decorrelation import distance_correlation
from lhcml.tasks.boosted.ddt import fit_ddt, rho_prime
from lhcml.tasks.boosted.frontier import frontier_point
from lhcml.tasks.boosted.samples import flattening_weights, select_jets
from lhcml.train.decorrelation import (
    DisCoLoss,
    MassAdversary,
    distance_correlation_torch,
    grad_reverse,
)
from lhcml.train.extra_losses import build_extra_loss, list_extra_losses


def test_registered_as_extra_losses():
    assert {"disco", "adversary"} <= set(list_extra_losses())
    assert isinstance(build_extra_loss("disco", 5.0, signal_class=1), DisCoLoss)
    with pytest.raises(ConfigError, match="bad options"):
        build_extra_loss("adversary", 1.0, n_bin=3)
    with pytest.raises(ConfigError, match="mode"):
        MassAdversary(mode="kde")


def test_torch_dcor_matches_metrics():
    g = np.random.default_rng(0)
    x = g.normal(size=300)
    y = x**2 + 0.3 * g.normal(size=300)
    w = g.uniform(0.2, 2.0, 300)
    ref = distance_correlation(x, y, w, squared=True)
    got = distance_correlation_torch(torch.tensor(x), torch.tensor(y), torch.tensor(w)).item()
    assert got == pytest.approx(ref, rel=1e-5)
    indep = distance_correlation_torch(torch.tensor(x), torch.tensor(g.normal(size=300))).item()
    assert indep < 0.05 < got


def test_gradient_reversal():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (grad_reverse(x, 3.0) ** 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-6.0, -12.0]))


def _toy(n: int = 600, seed: int = 0):
    """Signal/background toy where a feature is strongly correlated with the background mass."""
    g = np.random.default_rng(seed)
    labels = (g.random(n) < 0.5).astype(np.int64)
    mass = np.where(labels == 1, g.normal(170, 15, n), g.exponential(60, n) + 20)
    f1 = np.where(labels == 1, 1.0, 0.0) + g.normal(0, 1.0, n)  # mass-independent information
    f2 = mass / 100 + g.normal(0, 0.2, n)  # mass proxy
    x = torch.tensor(np.stack([f1, f2], 1), dtype=torch.float32)
    return x, torch.tensor(labels), torch.tensor(mass * 1e3, dtype=torch.float32)


def _train(extra: torch.nn.Module | None, steps: int = 150):
    torch.manual_seed(0)
    x, labels, mass = _toy()
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    params = list(net.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.Adam(params, lr=0.02)
    batch = {"labels": labels, "jets_mass": mass, "weights": torch.ones(len(labels))}
    for _ in range(steps):
        out = {"logits": net(x)}
        loss = torch.nn.functional.cross_entropy(out["logits"], labels)
        if extra is not None:
            loss = loss + extra.weight * extra(out, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        p = torch.softmax(net(x), 1)[:, 1].numpy()
    bkg = labels.numpy() == 0
    return distance_correlation(mass.numpy()[bkg], p[bkg]), p, labels.numpy()


def test_disco_reduces_mass_correlation():
    dcor_nominal, _, _ = _train(None)
    dcor_disco, p, lab = _train(DisCoLoss(weight=20.0, signal_class=1, background_classes=[0]))
    assert dcor_nominal > 0.3
    assert dcor_disco < 0.5 * dcor_nominal
    # still a classifier (the mass-independent feature is kept)
    from lhcml.metrics.classification import auc

    assert auc(p[lab == 1], p[lab == 0]) > 0.65


def test_adversary_reduces_mass_correlation():
    dcor_nominal, _, _ = _train(None)
    adv = MassAdversary(weight=1.0, grl_lambda=20.0, n_classes=2, n_bins=8, mass_min=20e3,
                        mass_max=300e3, hidden=[16])  # fmt: skip
    dcor_adv, _, _ = _train(adv, steps=200)
    assert dcor_adv < 0.8 * dcor_nominal


def test_adversary_learns_mass_gmm():
    torch.manual_seed(0)
    _, labels, mass = _toy()
    adv = MassAdversary(mode="gmm", n_components=3, grl_lambda=0.0, n_classes=2, mass_scale=100e3)
    logits = torch.stack([mass / 1e5, -mass / 1e5], 1)  # a score that encodes the mass
    batch = {"labels": labels, "jets_mass": mass}
    opt = torch.optim.Adam(adv.parameters(), lr=0.03)
    first = adv({"logits": logits}, batch).item()
    for _ in range(150):
        loss = adv({"logits": logits}, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


def test_ddt_recovers_slope_and_decorrelates():
    g = np.random.default_rng(1)
    n = 20000
    pt = g.uniform(500e3, 700e3, n)
    mass = g.uniform(20e3, 250e3, n)
    rho = rho_prime(mass, pt)
    tau21 = 0.3 + 0.08 * rho + g.normal(0, 0.05, n)
    ddt = fit_ddt(tau21, mass, pt)
    assert ddt.slope == pytest.approx(0.08, abs=0.005)
    assert ddt.intercept == pytest.approx(0.3, abs=0.02)
    sel = (rho > 1.5) & (rho < 4)
    t2 = ddt.transform(tau21, mass, pt)
    assert abs(np.corrcoef(rho[sel], t2[sel])[0, 1]) < 0.03 < np.corrcoef(rho[sel], tau21[sel])[0, 1]
    with pytest.raises(ConfigError, match="DDT fit"):
        fit_ddt(tau21[:3], mass[:3], pt[:3])
    # fit quality: a straight profile has χ²/ndf ≈ 1, a turning one (as our QCD below ρ' ≈ 2) not
    assert ddt.ndf == 18 and ddt.chi2 / ddt.ndf < 2 and 0 < ddt.slope_err < 0.002
    bent = fit_ddt(0.7 - 0.05 * (rho - 2) ** 2 + g.normal(0, 0.05, n), mass, pt)
    assert bent.chi2 / bent.ndf > 20


def test_ddt_fitted_on_separate_sample(tmp_path):
    from lhcml.data.h5 import write_h5
    from lhcml.tasks.boosted.frontier import fit_ddt_files, frontier_points

    g = np.random.default_rng(7)
    dt = [("pt", "f4"), ("mass", "f4"), ("R10TruthLabel", "i1"), ("Tau21_wta", "f4"), ("x_ptop", "f4"),
          ("x_pqcd", "f4")]  # fmt: skip

    def sample(n, seed_slope):
        a = np.zeros(n, dt)
        a["R10TruthLabel"] = g.random(n) < 0.3
        a["pt"] = g.uniform(550e3, 650e3, n)
        a["mass"] = np.where(a["R10TruthLabel"] == 1, g.normal(172e3, 15e3, n), g.uniform(20e3, 250e3, n))
        a["Tau21_wta"] = 0.9 + seed_slope * rho_prime(a["mass"], a["pt"]) + g.normal(0, 0.05, n)
        a["x_ptop"] = np.clip(0.5 * a["R10TruthLabel"] + 0.5 * g.random(n), 0, 1)
        a["x_pqcd"] = 1 - a["x_ptop"]
        return a

    big = write_h5(tmp_path / "qcd_big.h5", {"jets": sample(20000, -0.1)})
    test = write_h5(tmp_path / "test.h5", {"jets": sample(600, -0.3)})  # another slope: must not be used
    ddt = fit_ddt_files([big])
    assert ddt.slope == pytest.approx(-0.1, abs=0.005)
    rows = {r["tagger"]: r for r in frontier_points([test], {"X": "x"}, ddt=ddt)}
    row = rows["DDT τ21 (M=-0.100)"]
    assert row["ddt_slope"] == ddt.slope and "τ21" in rows and "X" in rows
    own = [r for r in frontier_points([test], {"X": "x"}) if r["tagger"].startswith("DDT")][0]
    assert own["ddt_slope"] < -0.2  # fitted on the test file's background instead


def test_flattening_weights_flat_and_to_target():
    g = np.random.default_rng(2)
    n = 40000
    labels = g.integers(0, 2, n)
    pt = np.where(labels == 1, g.normal(600e3, 30e3, n), g.exponential(60e3, n) + 520e3)
    mass = np.where(labels == 1, g.normal(170e3, 20e3, n), g.exponential(50e3, n))
    pb, mb = np.linspace(550e3, 650e3, 5), np.linspace(0, 250e3, 6)
    w = flattening_weights(pt, mass, labels, pb, mb)
    for c in (0, 1):
        s = labels == c
        h, _, _ = np.histogram2d(pt[s], mass[s], [pb, mb], weights=w[s])
        filled = np.histogram2d(pt[s], mass[s], [pb, mb])[0] > 0
        np.testing.assert_allclose(h[filled], h[filled].mean(), rtol=1e-6)
        inside = (pt[s] > pb[0]) & (pt[s] < pb[-1]) & (mass[s] > mb[0]) & (mass[s] < mb[-1])
        assert w[s][inside].mean() == pytest.approx(1.0, rel=1e-5) and (w[s][~inside] == 0).all()
    wt = flattening_weights(pt, mass, labels, pb, mb, target=1)
    h0 = np.histogram2d(pt[labels == 0], mass[labels == 0], [pb, mb], weights=wt[labels == 0])[0]
    h1 = np.histogram2d(pt[labels == 1], mass[labels == 1], [pb, mb], weights=wt[labels == 1])[0]
    both = (h0 > 0) & (h1 > 0)
    np.testing.assert_allclose(h0[both] / h0[both].sum(), h1[both] / h1[both].sum(), rtol=1e-4)


def test_selection(boosted_jets=None):
    from lhcml.data.mock import make_mock_tables

    jets = make_mock_tables(200, kind="boosted", seed=3)["jets"]
    sel = select_jets(jets, (560e3, 640e3), 1.5, (50e3, 250e3))
    assert sel.any() and not sel.all()
    assert (jets["pt"][sel] > 560e3).all() and (np.abs(jets["eta"][sel]) < 1.5).all()


def test_frontier_point_orders_sculpting():
    g = np.random.default_rng(4)
    n = 6000
    is_sig = g.random(n) < 0.5
    mass = np.where(is_sig, g.normal(170, 15, n), g.exponential(60, n) + 20)
    info = is_sig + g.normal(0, 0.8, n)
    sculpting = info + mass / 60  # uses the mass
    clean = info
    r_s, j_s = frontier_point(sculpting, is_sig, ~is_sig, mass)
    r_c, j_c = frontier_point(clean, is_sig, ~is_sig, mass)
    assert j_c > 3 * j_s  # less sculpting: larger 1/JSD50
    assert r_s > r_c  # the mass helps the rejection


def test_adversary_warmup_detaches_classifier():
    adv = MassAdversary(n_classes=2, grl_lambda=5.0, warmup_steps=1, hidden=[8])
    adv.train()
    _, labels, mass = _toy(50)
    batch = {"labels": labels, "jets_mass": mass}
    for step in range(2):
        logits = torch.zeros(50, 2, requires_grad=True)
        adv({"logits": logits}, batch).backward()
        if step == 0:  # pre-training step: only the adversary learns
            assert logits.grad is None or float(logits.grad.abs().sum()) == 0.0
        else:  # afterwards the classifier receives the reversed gradient
            assert float(logits.grad.abs().sum()) > 0.0
    assert int(adv.steps) == 2


def test_adversary_validation_value_is_classifier_objective():
    # train mode: the adversary's loss (minimised by the adversary); eval mode: −λ·L_adv, so the
    # monitored val_loss = L_clf − λ·w·L_adv rises when the classifier leaks the mass
    adv = MassAdversary(n_classes=2, grl_lambda=3.0, hidden=[8])
    _, labels, mass = _toy(80)
    batch = {"labels": labels, "jets_mass": mass}
    logits = torch.stack([mass / 1e5, -mass / 1e5], 1)
    adv.train()
    train_value = adv({"logits": logits}, batch).item()
    adv.eval()
    with torch.no_grad():
        assert adv({"logits": logits}, batch).item() == pytest.approx(-3.0 * train_value, rel=1e-6)
    assert int(adv.steps) == 1  # evaluation does not advance the warm-up counter
    # during the warm-up the classifier is not penalised: nothing is added to val_loss
    warm = MassAdversary(n_classes=2, grl_lambda=3.0, hidden=[8], warmup_steps=5).eval()
    with torch.no_grad():
        assert warm({"logits": logits}, batch).item() == 0.0
