"""Baseline taggers: IP3D separation, SV1/JetFitter on hand-built jets, soft muon, fit/apply files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from lhcml.data import schema
from lhcml.data.h5 import write_h5
from lhcml.data.mock import make_mock_file
from lhcml.errors import CorruptFileError, SchemaError
from lhcml.tasks.ftag.baselines import apply_baselines, fit_baselines, load_templates
from lhcml.tasks.ftag.jetfitter import find_jetfitter
from lhcml.tasks.ftag.soft_muon import soft_muon_variables
from lhcml.tasks.ftag.sv_finder import SV1Config, find_sv1
from lhcml.tasks.ftag.tracks import perigee_from_vertex

M_PI = 139.57039


# ------------------------------------------------------------------ hand-built jets
def _decay(mass, p_parent, n, rng, m_d=M_PI):
    """n-body decay products (isotropic-ish in the rest frame) boosted along ``p_parent``."""
    ps = rng.normal(0, 1, (n, 3))
    ps -= ps.mean(axis=0)
    lo, hi = 0.0, mass
    for _ in range(80):  # scale the rest-frame momenta so the products' energy equals the mass
        s = 0.5 * (lo + hi)
        e = np.sqrt(((ps * s) ** 2).sum(1) + m_d**2).sum()
        lo, hi = (s, hi) if e < mass else (lo, s)
    ps *= s
    e = np.sqrt((ps**2).sum(1) + m_d**2)
    pm = np.linalg.norm(p_parent)
    beta = pm / np.hypot(pm, mass)
    g = 1 / np.sqrt(1 - beta**2)
    u = p_parent / pm
    pl = ps @ u
    return ps + np.outer((g - 1) * pl + g * beta * e, u)


def _jet(vertices, rng, smear=True):
    """One jet whose tracks come from ``[(position, [(px, py, pz, q), ...]), ...]``."""
    trk = schema.empty(schema.TRACK_DTYPE, 40)
    k = 0
    ptot = np.zeros(3)
    for pos, parts in vertices:
        pos = np.asarray(pos, dtype=float)
        for px, py, pz, q in parts:
            d0, z0, phi, th = perigee_from_vertex(pos, np.array(px), np.array(py), np.array(pz), np.array(q))
            pt, p = np.hypot(px, py), np.sqrt(px * px + py * py + pz * pz)
            sd = np.hypot(0.01, 70.0 / pt)
            sz = 2 * sd
            trk["d0"][k] = d0 + (rng.normal(0, sd) if smear else 0)
            trk["z0SinTheta"][k] = z0 * np.sin(th) + (rng.normal(0, sz) if smear else 0)
            trk["phi"][k], trk["eta"][k] = phi, -np.log(np.tan(th / 2))
            trk["qOverP"][k], trk["pt"][k] = q / p, pt
            trk["d0Uncertainty"][k], trk["z0SinThetaUncertainty"][k] = sd, sz
            trk["phiUncertainty"][k] = trk["thetaUncertainty"][k] = 1e-4
            r = np.hypot(pos[0], pos[1])
            trk["numberOfInnermostPixelLayerHits"][k] = int(r < 33)
            trk["numberOfNextToInnermostPixelLayerHits"][k] = int(r < 50)
            trk["numberOfPixelHits"][k], trk["numberOfSCTHits"][k] = 3, 8
            trk["valid"][k] = True
            ptot += [px, py, pz]
            k += 1
    jet = schema.empty(schema.JET_DTYPE, 1)
    jet["pt"] = np.hypot(ptot[0], ptot[1])
    jet["phi"] = np.arctan2(ptot[1], ptot[0])
    jet["eta"] = np.arcsinh(ptot[2] / jet["pt"][0])
    return jet, trk[None]


P_JET = np.array([40e3, 10e3, 20e3])
U_JET = P_JET / np.linalg.norm(P_JET)


def _prompt(rng, n=4):
    return [(*(rng.normal(0, 1, 3) * 1500 + U_JET * 5000), rng.choice([-1, 1])) for _ in range(n)]


def _mass(p):
    e = np.sqrt((p**2).sum(1) + M_PI**2).sum()
    return np.sqrt(e**2 - (p.sum(0) ** 2).sum())


# ------------------------------------------------------------------------ SV1 / JetFitter
def test_sv1_finds_displaced_vertex():
    rng = np.random.default_rng(3)
    n_found, dist, dm = 0, [], []
    for _ in range(5):
        vtx = U_JET * rng.uniform(2, 8)
        mom = _decay(3000.0, P_JET * 0.6, 3, rng)
        jet, trk = _jet([(vtx, [(*p, q) for p, q in zip(mom, (1, -1, 1), strict=True)]), ((0, 0, 0), _prompt(rng))], rng)
        sv = find_sv1(jet, trk)
        if sv["SV1_NGTinSvx"][0] == 3:
            n_found += 1
            pos = np.array([sv["SV1_x"][0], sv["SV1_y"][0], sv["SV1_z"][0]])
            dist.append(np.linalg.norm(pos - vtx) / np.linalg.norm(vtx))
            dm.append(sv["SV1_masssvx"][0] / _mass(mom) - 1)
            assert sv["SV1_trackInVertex"][0, :3].all() and not sv["SV1_trackInVertex"][0, 3:].any()
            assert sv["SV1_L3d"][0] == pytest.approx(np.linalg.norm(pos), rel=1e-4)
            assert sv["SV1_significance3d"][0] > 5
            assert 0 < sv["SV1_efracsvx"][0] < 1
    assert n_found >= 4
    assert max(dist) < 0.08  # relative to the flight distance (2-8 mm)
    assert max(np.abs(dm)) < 0.03


def test_sv1_vetoes_k0s_but_finds_it_without_veto():
    rng = np.random.default_rng(5)
    vtx = U_JET * 30.0
    mom = _decay(497.611, U_JET * 8000, 2, rng)
    jet, trk = _jet([(vtx, [(*mom[0], 1), (*mom[1], -1)]), ((0, 0, 0), _prompt(rng))], rng)
    assert find_sv1(jet, trk)["SV1_NGTinSvx"][0] == 0
    no_veto = SV1Config(k0s_window=0, lambda_window=0, conversion_mass_max=0)
    sv = find_sv1(jet, trk, no_veto)
    assert sv["SV1_NGTinSvx"][0] == 2
    assert sv["SV1_masssvx"][0] == pytest.approx(497.6, abs=10)


def test_sv1_material_veto():
    rng = np.random.default_rng(8)
    vtx = U_JET * (50.5 / np.hypot(U_JET[0], U_JET[1]))  # on the B-layer radius
    mom = _decay(1500.0, U_JET * 6000, 2, rng)
    jet, trk = _jet([(vtx, [(*mom[0], 1), (*mom[1], -1)]), ((0, 0, 0), _prompt(rng))], rng)
    # far displaced tracks: open the d0, z0 cuts so that only the material veto can reject the pair
    assert find_sv1(jet, trk, SV1Config(d0_max=30.0))["SV1_NGTinSvx"][0] == 0
    assert find_sv1(jet, trk, SV1Config(d0_max=30.0, z0sintheta_max=30.0, material_window=0.0))["SV1_NGTinSvx"][0] == 2


def test_prompt_jets_rarely_have_vertices():
    rng = np.random.default_rng(11)
    jets, trks = zip(*[_jet([((0, 0, 0), _prompt(rng, 8))], rng) for _ in range(150)], strict=True)
    jets, trks = np.concatenate(jets), np.concatenate(trks)
    assert np.mean(find_sv1(jets, trks)["SV1_NGTinSvx"] > 0) < 0.05
    jf = find_jetfitter(jets, trks)
    assert np.mean(jf["JetFitter_nVTX"] > 0) < 0.05
    assert np.mean(jf["JetFitter_nVTX"] + jf["JetFitter_nSingleTracks"] > 0) < 0.15


def test_jetfitter_b_to_c_chain():
    rng = np.random.default_rng(21)
    good = 0
    for _ in range(4):
        db = rng.uniform(2, 4)
        mb = _decay(2500.0, P_JET * 0.6, 2, rng)
        mc = _decay(1800.0, P_JET * 0.4, 3, rng)
        jet, trk = _jet(
            [(U_JET * db, [(*mb[0], 1), (*mb[1], -1)]),
             (U_JET * (db + 4), [(*mc[0], 1), (*mc[1], -1), (*mc[2], 1)]),
             ((0, 0, 0), _prompt(rng))], rng)  # fmt: skip
        jf = find_jetfitter(jet, trk)
        n_disp = jf["JetFitter_nTracksAtVtx"][0] + jf["JetFitter_nSingleTracks"][0]
        axis = np.array([np.sin(jf["JetFitter_theta"][0]) * np.cos(jf["JetFitter_phi"][0]),
                         np.sin(jf["JetFitter_theta"][0]) * np.sin(jf["JetFitter_phi"][0]),
                         np.cos(jf["JetFitter_theta"][0])])  # fmt: skip
        if jf["JetFitter_nVTX"][0] >= 1 and n_disp >= 4 and np.arccos(axis @ U_JET) < 0.02:
            good += 1
            assert jf["JetFitter_mass"][0] > 1500
            assert jf["JetFitter_significance3d"][0] > 5
    assert good >= 3


def test_soft_muon_variables():
    rng = np.random.default_rng(2)
    jet, trk = _jet([((0, 0, 0), _prompt(rng, 3))], rng)
    assert soft_muon_variables(jet, trk)["SMT_hasMuon"][0] == 0
    assert soft_muon_variables(jet, trk)["SMT_mu_pt"][0] == -1
    trk["leptonID"][0, 1] = -13
    trk["leptonID"][0, 2] = 11  # an electron is ignored
    out = soft_muon_variables(jet, trk)
    mu = trk[0, 1]
    p = np.array([np.cos(mu["phi"]), np.sin(mu["phi"]), np.sinh(mu["eta"])]) * mu["pt"]
    th = 2 * np.arctan(np.exp(-jet["eta"][0]))
    u = np.array([np.sin(th) * np.cos(jet["phi"][0]), np.sin(th) * np.sin(jet["phi"][0]), np.cos(th)])
    assert out["SMT_hasMuon"][0] == 1
    assert out["SMT_mu_pt"][0] == pytest.approx(mu["pt"])
    assert out["SMT_mu_pTrel"][0] == pytest.approx(np.linalg.norm(p - (p @ u) * u), rel=1e-4)
    assert out["SMT_mu_d0"][0] == pytest.approx(mu["d0"])


# --------------------------------------------------------------------- fit / apply on files
@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ftag_bl")
    train = make_mock_file(tmp / "train.h5", n_jets=2500, seed=1)
    test = make_mock_file(tmp / "test.h5", n_jets=1500, seed=2)
    tmpl = fit_baselines([train], tmp / "templates.h5")
    orig = tmp / "test_orig.h5"
    shutil.copy(test, orig)
    apply_baselines(tmpl, [test])
    return tmp, tmpl, test, orig


def _auc(sig, bkg):
    s = np.concatenate([sig, bkg])
    r = np.argsort(np.argsort(s, kind="stable"), kind="stable") + 1.0
    return (r[: len(sig)].sum() - len(sig) * (len(sig) + 1) / 2) / (len(sig) * len(bkg))


def test_ip3d_separates_b_from_light(fitted):
    _, _, test, _ = fitted
    with h5py.File(test) as f:
        j = f["jets"][:]
    fl = j["HadronConeExclTruthLabelID"]
    assert _auc(j["IP3D_llr"][fl == 5], j["IP3D_llr"][fl == 0]) > 0.7
    assert _auc(j["IP2D_llr"][fl == 5], j["IP2D_llr"][fl == 0]) > 0.7
    for t in ("IP2D", "IP3D", "SV1"):
        np.testing.assert_allclose(j[f"{t}_pb"] + j[f"{t}_pc"] + j[f"{t}_pu"], 1, rtol=1e-5)


def test_outputs_written_back_and_rereadable(fitted):
    _, tmpl, test, orig = fitted
    with h5py.File(test) as f, h5py.File(orig) as g:
        j, j0 = f["jets"][:], g["jets"][:]
        np.testing.assert_array_equal(f["tracks"][:], g["tracks"][:])
        assert set(f) == set(g)
        assert f.attrs["energy_unit"] == "MeV"
    for name in j0.dtype.names:
        np.testing.assert_array_equal(j[name], j0[name])
    for name in ("IP3D_pb", "IP3D_llr", "SV1_masssvx", "SV1_N2Tpair", "JetFitter_mass",
                 "JetFitter_nVTX", "SMT_mu_pTrel"):  # fmt: skip
        assert name in j.dtype.names
        assert np.all(np.isfinite(j[name]))
    has = j["SV1_NGTinSvx"] > 0
    assert np.all(j["SV1_masssvx"][~has] == -1) and np.all(j["SV1_masssvx"][has] > 0)
    # templates round trip, and re-applying replaces (not duplicates) the columns
    ip, svt, _ = load_templates(tmpl)
    assert ip.counts2d.sum() > 0 and svt.counts.sum() > 0
    apply_baselines(tmpl, [test], taggers=("IP3D",))
    with h5py.File(test) as f:
        j2 = f["jets"][:]
    assert sorted(j2.dtype.names) == sorted(j.dtype.names)
    np.testing.assert_array_equal(j2["IP3D_pb"], j["IP3D_pb"])


def test_bad_inputs(fitted, tmp_path):
    tmp, tmpl, test, _ = fitted
    with h5py.File(test) as f:
        jets, tracks = f["jets"][:10], f["tracks"][:10]
    keep = [n for n in tracks.dtype.names if n != "d0Uncertainty"]
    bad = write_h5(tmp_path / "bad.h5", {"jets": jets, "tracks": tracks[keep]})
    with pytest.raises(SchemaError, match="d0Uncertainty"):
        apply_baselines(tmpl, [bad])
    with pytest.raises(CorruptFileError, match="not a baseline-templates file"):
        apply_baselines(test, [bad])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*lhcml-tmp*"))
