"""The in-situ-like residual of the large-R JMS (issue 12, sixteenth version of docs/benchmarks/sim_large_r.md).

After the truth-closed JMS, ``derive_insitu`` fits per calibrated-pT bin the factor that puts the W and top mass
peaks on 80.4 and 172.5 GeV; ``calibrate`` applies it after the JMS, interpolated in pT and in ln m. These tests
pin it on samples whose peaks are shifted by known amounts, and check that the default (``jms_target="truth"``)
and the shipped table are unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import lhcml.sim.large_r_calibration as cal
from lhcml.errors import ConfigError
from lhcml.estimators import gauss_core_peak

M_W, M_TOP = 80.4, 172.5


def _shift(pt: np.ndarray, particle: str) -> np.ndarray:
    """The known peak shift of the constructed sample: W 0.96 at 300 GeV rising linearly to 1.02 at 1300 GeV,
    top 0.975 everywhere."""
    if particle == "W":
        return 0.96 + 0.06 * (pt - 300.0) / 1000.0
    return np.full(len(pt), 0.975)


def _shifted(rng: np.random.Generator, n: int):
    """Calibrated W (label 2) and top (label 1) jets: symmetric truth peaks at the particle masses, a symmetric
    6 % resolution, and the peak scaled by :func:`_shift`; plus QCD jets (label 0) the residual must not use."""
    pt = rng.uniform(300, 1300, n)
    kind = rng.choice(3, n, p=[0.4, 0.4, 0.2])  # 0 QCD, 1 top, 2 W
    tm = np.where(kind == 1, M_TOP * rng.normal(1, 0.02, n), M_W * rng.normal(1, 0.03, n))
    tm = np.where(kind == 0, rng.uniform(60, 200, n), tm)
    shift = np.where(kind == 1, _shift(pt, "top"), np.where(kind == 2, _shift(pt, "W"), 0.7))
    m = tm * shift * rng.normal(1, 0.06, n)
    return pt, m, kind.astype(np.int8), tm


def test_residual_recovers_known_peak_shifts():
    pt, m, lab, tm = _shifted(np.random.default_rng(12), 60_000)
    res = cal.derive_insitu(pt, m, lab, tm)
    assert res["insitu_m"] == [M_W, M_TOP]
    t = {k: np.asarray(v, dtype=np.float64) for k, v in res.items()}
    for row, name in ((0, "W"), (1, "top")):
        s = t["insitu_row"] == row
        assert s.sum() >= 5  # the pT bins with enough jets
        # the factor of each bin undoes the shift at the bin's pT
        np.testing.assert_allclose(t["insitu"][s], 1.0 / _shift(t["insitu_pt"][s], name), rtol=0.006)
    f = cal.insitu_factors(pt, m, t)
    for code, m0, tol in ((2, M_W, 0.4), (1, M_TOP, 0.8)):
        for lo, hi in ((350, 450), (650, 800), (1000, 1300)):
            s = (lab == code) & (pt > lo) & (pt < hi)
            # before: the known shift; after: the peak on the particle mass
            assert gauss_core_peak(m[s] * f[s], n_sigma=1.5) == pytest.approx(m0, abs=tol)
    s = (lab == 2) & (pt > 350) & (pt < 450)
    assert gauss_core_peak(m[s], n_sigma=1.5) - M_W < -2.0  # the test can fail: the shift is there before


def test_interpolation_in_pt_and_ln_mass():
    t = {"insitu_m": np.array([M_W, M_TOP]), "insitu_pt": np.array([400.0, 800.0, 400.0, 800.0]),
         "insitu": np.array([1.00, 1.04, 1.03, 1.03]), "insitu_row": np.array([0.0, 0.0, 1.0, 1.0])}
    pt = np.array([600.0, 2000.0, 100.0, 600.0, 600.0, 600.0, 600.0])
    m = np.array([M_W, M_W, 60.0, 250.0, np.sqrt(M_W * M_TOP), M_TOP, 30.0])
    f = cal.insitu_factors(pt, m, t)
    # W anchor linear in pT (1.02 at 600), flat beyond its points; top anchor 1.03; halfway in ln m: 1.025
    np.testing.assert_allclose(f, [1.02, 1.04, 1.00, 1.03, 1.025, 1.03, 1.02], atol=1e-12)
    # interpolated in mu between two mu points, ones where a table has no residual
    two = {0.0: t, 100.0: {**t, "insitu": t["insitu"] + 0.02}}
    np.testing.assert_allclose(cal.insitu_factors(pt, m, two, mu=50.0), f + 0.01, atol=1e-12)
    np.testing.assert_allclose(cal.insitu_factors(pt, m, {0.0: {"pt": np.array([1.0])}}), 1.0)


def _derivation(rng: np.random.Generator, n: int):
    """Uncalibrated jets with a known pT response 0.92 and mass response 0.90 (tops 0.93): the truth-closed JMS
    puts the peaks of these symmetric truth masses near the particle masses already; the residual only mops up."""
    tpt = rng.uniform(300, 1300, n)
    kind = rng.choice(3, n, p=[0.4, 0.4, 0.2])
    tm = np.where(kind == 1, M_TOP * rng.normal(1, 0.03, n), M_W * rng.normal(1, 0.04, n))
    tm = np.where(kind == 0, rng.uniform(60, 200, n), tm)
    pt = tpt * 0.92 * rng.normal(1, 0.03, n)
    m = tm * np.where(kind == 1, 0.93, 0.90) * rng.normal(1, 0.05, n)
    return pt, m, tpt, tm, kind.astype(np.int8)


def test_default_unchanged_peak_target_adds_the_stage_and_round_trips(tmp_path):
    pt, m, tpt, tm, lab = _derivation(np.random.default_rng(5), 20_000)
    truth = cal.derive_calibration(pt, m, tpt, tm, labels=lab, jms_sample="resonance")
    assert cal.derive_calibration(pt, m, tpt, tm, labels=lab, jms_sample="resonance", jms_target="truth") == truth
    assert not any(k.startswith("insitu") for k in truth)
    peak = cal.derive_calibration(pt, m, tpt, tm, labels=lab, jms_sample="resonance", jms_target="peak")
    assert {k: v for k, v in peak.items() if not k.startswith("insitu")} == truth  # JES and JMS untouched
    # through the YAML file as benchmarks/sim_large_r.py writes it
    path = tmp_path / "t.yaml"
    path.write_text("# test\n" + yaml.safe_dump({"pflow": {0: truth, 60: peak}}, sort_keys=False,
                                                 default_flow_style=None, width=110))
    loaded = cal.calibration_table("pflow", path)
    assert sorted(loaded) == [0.0, 60.0] and "insitu" in loaded[60.0] and "insitu" not in loaded[0.0]
    pt_t, m_t = cal.calibrate(pt, m, "pflow", mu=0.0, table=loaded)
    pt_p, m_p = cal.calibrate(pt, m, "pflow", mu=60.0, table=loaded)
    np.testing.assert_array_equal(pt_t, pt_p)  # the residual touches the mass only
    np.testing.assert_allclose(m_p, m_t * cal.insitu_factors(pt_p, m_t, {0.0: loaded[60.0]}), rtol=1e-12)
    for code, m0, tol in ((2, M_W, 0.4), (1, M_TOP, 0.8)):
        s = (lab == code) & (pt_p > 550) & (pt_p < 650)
        assert gauss_core_peak(m_p[s], n_sigma=1.5) == pytest.approx(m0, abs=tol)


def test_shipped_table_has_no_residual():
    for ctype in cal.CONSTITUENTS:
        t = cal.calibration_table(ctype)
        assert t is not None and not any("insitu" in v for v in t.values())
        pt, m = np.array([400.0, 600.0, 900.0]), np.array([80.0, 170.0, 120.0])
        np.testing.assert_array_equal(cal.insitu_factors(pt, m, t, mu=60.0), 1.0)


def test_bad_options_give_one_config_error():
    pt, m, tpt, tm, lab = _derivation(np.random.default_rng(6), 6000)
    with pytest.raises(ConfigError, match="JMS target"):
        cal.derive_calibration(pt, m, tpt, tm, labels=lab, jms_target="mode")
    with pytest.raises(ConfigError, match="labels"):
        cal.derive_calibration(pt, m, tpt, tm, jms_target="peak")
    with pytest.raises(ConfigError, match="one entry per jet"):
        cal.derive_insitu(pt, m, lab[:-1], tm)
    no_w = np.where(lab == 2, 0, lab).astype(np.int8)
    with pytest.raises(ConfigError, match="W jets"):
        cal.derive_insitu(pt, m, no_w, tm)


def _run_benchmark(*args: str):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sim_large_r.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)


def test_benchmark_derive_insitu_keeps_the_base_and_closes_the_peaks(tmp_path):
    pt, m, tpt, tm, lab = _derivation(np.random.default_rng(8), 20_000)
    f = tmp_path / "jets_pflow_mu60_s1.npz"
    np.savez(f, pt=pt * 1e3, mass=m * 1e3, truthJetPt=tpt * 1e3, truthJetMass=tm * 1e3, R10TruthLabel=lab,
             eta=np.zeros(len(pt)))
    out = tmp_path / "insitu.yaml"
    r = _run_benchmark("--derive-insitu", str(f), "--table", str(out))
    assert r.returncode == 0, r.stderr
    new, shipped = cal.calibration_table("pflow", out), cal.calibration_table("pflow")
    assert sorted(new) == sorted(shipped)
    for mu in shipped:  # the base's JES/JMS kept; the residual only at the derived (type, μ)
        for k, v in shipped[mu].items():
            np.testing.assert_array_equal(new[mu][k], v)
        assert ("insitu" in new[mu]) == (mu == 60.0)
    pt_c, m_c = cal.calibrate(pt, m, "pflow", mu=60.0, table=new)
    for code, m0, tol in ((2, M_W, 0.5), (1, M_TOP, 1.0)):
        s = (lab == code) & (pt_c > 550) & (pt_c < 650)
        assert gauss_core_peak(m_c[s], n_sigma=1.5) == pytest.approx(m0, abs=tol)
    # no output table, or the shipped one as output: one clear error, exit 2, nothing written
    for extra in ((), ("--table", str(cal.TABLE_PATH))):
        r = _run_benchmark("--derive-insitu", str(f), *extra)
        assert r.returncode == 2 and "--table" in r.stderr and "Traceback" not in r.stderr
    r = _run_benchmark("--derive", "--jms-target", "mode")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_peak_variant_table_is_the_shipped_one_plus_the_residual():
    """The variant file must be re-derived whenever the shipped JES/JMS change (its residual sits on top of them):
    ``benchmarks/sim_large_r.py --derive-insitu``, as its header says."""
    for ctype in cal.CONSTITUENTS:
        shipped, peak = cal.calibration_table(ctype), cal.calibration_table(ctype, cal.PEAK_TABLE_PATH)
        assert sorted(peak) == sorted(shipped)
        for mu, t in shipped.items():
            for k, v in t.items():
                np.testing.assert_array_equal(peak[mu][k], v, err_msg=f"{ctype} mu {mu} {k}: JES/JMS differ from the "
                                              "shipped table; re-derive the variant's residual")
            r = peak[mu]
            assert list(r["insitu_m"]) == [M_W, M_TOP] and set(np.unique(r["insitu_row"])) == {0.0, 1.0}
            assert np.all(np.abs(r["insitu"] - 1.0) < 0.15)
