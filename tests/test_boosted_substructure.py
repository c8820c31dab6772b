"""Substructure observables on hand-built jets with known answers, and against FastJet."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from _boosted_fixtures import boosted_mock_file, boosted_mock_tables  # noqa: F401

from lhcml.errors import SchemaError
from lhcml.tasks.boosted.substructure import (
    SUBSTRUCTURE_FIELDS,
    add_substructure_to_file,
    compute_substructure,
)

N = 8


def _jets(particles: list[list[tuple[float, float, float]]], n_slots: int = N):
    """Padded arrays from lists of massless (pt, eta, phi) particles."""
    n = len(particles)
    pt, eta, phi = np.zeros((n, n_slots)), np.zeros((n, n_slots)), np.zeros((n, n_slots))
    valid = np.zeros((n, n_slots), dtype=bool)
    for j, parts in enumerate(particles):
        for i, (p, e, f) in enumerate(parts):
            pt[j, i], eta[j, i], phi[j, i], valid[j, i] = p, e, f, True
    energy = pt * np.cosh(eta)
    return pt, eta, phi, energy, valid


def test_single_particle_jet():
    pt, eta, phi, e, valid = _jets([[(300e3, 0.4, 1.0)]])
    e[0, 0] = np.hypot(e[0, 0], 5e3)  # a massive constituent: jet mass = its mass
    out = compute_substructure(pt, eta, phi, e, valid)
    assert out["Tau1_wta"][0] == 0.0 and out["Tau21_wta"][0] == 0.0
    assert out["ECF2"][0] == 0.0 and out["D2"][0] == 0.0 and out["Split12"][0] == 0.0
    assert out["mass_constituents"][0] == pytest.approx(5e3, rel=1e-3)
    assert out["mSoftDrop"][0] == pytest.approx(5e3, rel=1e-3)


def test_two_equal_prongs_exact():
    p, d = 200e3, 0.4
    pt, eta, phi, e, valid = _jets([[(p, 0.3, 0.5 - d / 2), (p, 0.3, 0.5 + d / 2)]])
    out = compute_substructure(pt, eta, phi, e, valid, radius=1.0)
    m_exact = np.sqrt(2 * p * p * (1 - np.cos(d)))  # massless, same η
    assert out["mass_constituents"][0] == pytest.approx(m_exact, rel=1e-5)
    assert out["Tau2_wta"][0] == pytest.approx(0.0, abs=1e-7)
    assert out["Tau21_wta"][0] < 1e-6
    # WTA axis on one prong: τ1 = p·d / (2p·R)
    assert out["Tau1_wta"][0] == pytest.approx(d / 2, rel=1e-5)
    assert out["Split12"][0] == pytest.approx(p * d, rel=1e-5)
    assert out["ECF2"][0] == pytest.approx(p * p * d, rel=1e-5)
    # symmetric prongs pass soft drop: groomed mass = full mass
    assert out["mSoftDrop"][0] == pytest.approx(m_exact, rel=1e-5)


def test_three_prong_ecf_c2_d2_by_hand():
    parts = [(100e3, 0.0, 0.0), (150e3, 0.3, 0.1), (80e3, -0.1, 0.35)]
    pt, eta, phi, e, valid = _jets([parts])
    out = compute_substructure(pt, eta, phi, e, valid)
    p = np.array([x[0] for x in parts])
    xy = np.array([[x[1], x[2]] for x in parts])
    d = {(i, j): np.linalg.norm(xy[i] - xy[j]) for i in range(3) for j in range(3)}
    for beta, suffix in ((1, ""), (2, "_beta2")):
        e1 = p.sum()
        e2 = sum(p[i] * p[j] * d[i, j] ** beta for i in range(3) for j in range(i + 1, 3))
        e3 = p.prod() * (d[0, 1] * d[0, 2] * d[1, 2]) ** beta
        assert out[f"ECF2{suffix}" if suffix else "ECF2"][0] == pytest.approx(e2, rel=1e-5)
        assert out[f"ECF3{suffix}" if suffix else "ECF3"][0] == pytest.approx(e3, rel=1e-5)
        assert out[f"C2{suffix}"][0] == pytest.approx(e3 * e1 / e2**2, rel=1e-5)
        assert out[f"D2{suffix}"][0] == pytest.approx(e3 * e1**3 / e2**3, rel=1e-5)
    assert out["ECF1"][0] == pytest.approx(p.sum(), rel=1e-6)
    # three prongs, three axes: τ3 = 0
    assert out["Tau3_wta"][0] == pytest.approx(0.0, abs=1e-7)


def test_soft_drop_removes_soft_wide_particle():
    core = [(300e3, 0.0, 0.0), (250e3, 0.0, 0.1)]
    soft = (10e3, 0.0, 0.8)  # z = 10/560 < 0.1
    pt, eta, phi, e, valid = _jets([core + [soft], core])
    out = compute_substructure(pt, eta, phi, e, valid)
    assert out["mSoftDrop"][0] == pytest.approx(out["mass_constituents"][1], rel=1e-5)
    assert out["mass_constituents"][0] > 1.5 * out["mSoftDrop"][0]


def test_track_multiplicity_and_invariances():
    rng = np.random.default_rng(3)
    n, k = 6, 30
    pt = rng.exponential(20e3, (n, k))
    eta, phi = rng.normal(0, 0.3, (n, k)), rng.normal(0, 0.3, (n, k))
    e = pt * np.cosh(eta)
    valid = np.arange(k)[None, :] < rng.integers(2, k, (n, 1))
    charge = rng.integers(-1, 2, (n, k))
    ref = compute_substructure(pt, eta, phi, e, valid, charge)
    assert np.array_equal(ref["nChargedConstituents"], ((charge != 0) & valid).sum(1))
    perm = rng.permutation(k)
    junk = np.where(valid, pt, np.nan)  # NaN in padded slots must not matter
    out = compute_substructure(junk[:, perm], eta[:, perm], phi[:, perm], e[:, perm], valid[:, perm], charge[:, perm])
    for f in SUBSTRUCTURE_FIELDS:
        np.testing.assert_allclose(out[f], ref[f], rtol=2e-4, atol=1e-6, err_msg=f)


def test_against_fastjet():
    fastjet = pytest.importorskip("fastjet")
    rng = np.random.default_rng(7)
    n, k = 4, 25
    pt = rng.exponential(10e3, (n, k))
    eta, phi = rng.normal(0, 0.3, (n, k)), rng.normal(0, 0.3, (n, k))
    e = pt * np.cosh(eta) * 1.02  # slightly massive constituents: rapidity != η
    valid = np.ones((n, k), dtype=bool)
    out = compute_substructure(pt, eta, phi, e, valid)
    for j in range(n):
        pjs = [
            fastjet.PseudoJet(pt[j, i] * np.cos(phi[j, i]), pt[j, i] * np.sin(phi[j, i]),
                              pt[j, i] * np.sinh(eta[j, i]), e[j, i])
            for i in range(k)
        ]  # fmt: skip
        big_r = 10.0  # no beam merging: d_ij / d_iB as our exclusive clustering
        cs = fastjet.ClusterSequence(pjs, fastjet.JetDefinition(fastjet.kt_algorithm, big_r))
        assert out["Split12"][j] == pytest.approx(np.sqrt(cs.exclusive_dmerge(1)) * big_r, rel=1e-4)
        assert out["Split23"][j] == pytest.approx(np.sqrt(cs.exclusive_dmerge(2)) * big_r, rel=1e-4)
        ca = fastjet.ClusterSequence(pjs, fastjet.JetDefinition(fastjet.cambridge_algorithm, big_r))
        jet = ca.inclusive_jets()[0]
        j1, j2 = fastjet.PseudoJet(), fastjet.PseudoJet()
        while jet.has_parents(j1, j2):
            if min(j1.pt(), j2.pt()) / (j1.pt() + j2.pt()) > 0.1:
                break
            jet = j1 if j1.pt() >= j2.pt() else j2
            j1, j2 = fastjet.PseudoJet(), fastjet.PseudoJet()
        assert out["mSoftDrop"][j] == pytest.approx(jet.m(), rel=1e-4)
        assert out["mass_constituents"][j] == pytest.approx(ca.inclusive_jets()[0].m(), rel=1e-4)


def test_physics_on_mock_prongs(boosted_mock_tables):  # noqa: F811
    flow, jets = boosted_mock_tables["flow"], boosted_mock_tables["jets"]
    from lhcml.tasks.boosted.substructure import substructure_from_flow

    out = substructure_from_flow(flow)
    lab = jets["R10TruthLabel"]
    # three-prong tops have smaller τ32 than one-prong QCD; two-prong W/Z smaller τ21
    assert np.median(out["Tau32_wta"][lab == 1]) < np.median(out["Tau32_wta"][lab == 0]) - 0.1
    assert np.median(out["Tau21_wta"][lab >= 2]) < np.median(out["Tau21_wta"][lab == 0]) - 0.05


def test_bad_inputs():
    pt, eta, phi, e, valid = _jets([[(1e3, 0, 0), (2e3, 0.1, 0)]])
    bad = pt.copy()
    bad[0, 0] = np.nan
    with pytest.raises(SchemaError, match="pt"):
        compute_substructure(bad, eta, phi, e, valid)
    with pytest.raises(SchemaError, match="shape"):
        compute_substructure(pt, eta[:, :3], phi, e, valid)


def test_add_to_file_atomic(tmp_path, boosted_mock_file):  # noqa: F811
    import shutil

    path = tmp_path / "f.h5"
    shutil.copy(boosted_mock_file, path)
    add_substructure_to_file(path, progress=False, chunk_size=70)
    with h5py.File(path) as f:
        names = f["jets"].dtype.names
        assert set(SUBSTRUCTURE_FIELDS) <= set(names) and "R10TruthLabel" in names
        assert len(f["jets"]) == len(f["flow"])
        n_events = len(f["events"])
    with h5py.File(boosted_mock_file) as f:
        assert n_events == len(f["events"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]
    # no flow: clear error, input untouched
    no_flow = tmp_path / "noflow.h5"
    with h5py.File(path) as f, h5py.File(no_flow, "w") as g:
        g["jets"] = f["jets"][:]
    before = no_flow.read_bytes()
    with pytest.raises(SchemaError, match="flow"):
        add_substructure_to_file(no_flow, progress=False)
    assert no_flow.read_bytes() == before


def test_cli_substructure_and_weights(tmp_path, boosted_mock_file):  # noqa: F811
    import shutil

    from typer.testing import CliRunner

    from lhcml.cli import app

    path = tmp_path / "c.h5"
    shutil.copy(boosted_mock_file, path)
    res = CliRunner().invoke(app, ["jets", "substructure", str(path)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["jets", "weights", str(path), "--field", "w_flat"])
    assert res.exit_code == 0, res.output
    with h5py.File(path) as f:
        jets = f["jets"][:]
    assert "D2" in jets.dtype.names and "w_flat" in jets.dtype.names
    inside = jets["w_flat"] > 0
    assert inside.any() and np.isclose(jets["w_flat"][inside & (jets["R10TruthLabel"] == 0)].mean(), 1.0, rtol=1e-4)
