"""Own JES/JMS tables for TCCs with a non-default treatment of pileup tracks (``"tcc~pv_only"`` entries,
lhcml.sim.large_r_calibration.tcc_variant_key; the opt-in file TCC_PV_ONLY_TABLE_PATH)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from lhcml.errors import ConfigError


def _variant_file_tables(key, path):
    """The tables of an opt-in variant file: its own entry only (no plain ``tcc`` entry to take by mistake), at
    μ = 0, 60, 140, two-dimensional, with factors in the shipped tables' physical ranges."""
    from lhcml.sim.large_r_calibration import calibration_table

    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {key}
    t = calibration_table(key, path)
    assert t is not None and sorted(t) == [0.0, 60.0, 140.0]
    for mu, e in t.items():
        assert {"x_jms", "row_jms"} <= set(e) and len(e["jms"]) >= 10, mu
        assert np.all(np.diff(e["pt"]) > 0) and len(e["pt"]) == len(e["jes"]) >= 8, mu
        assert np.all((e["jes"] > 0.85) & (e["jes"] < 1.3)), (mu, e["jes"])
        assert np.all((e["jms"] > 0.9) & (e["jms"] < 2.5)), (mu, e["jms"])
    return t


def test_variant_keys():
    from lhcml.sim.large_r_calibration import calibration_table, tcc_variant_key

    assert tcc_variant_key("tcc", "remove") == "tcc"
    assert tcc_variant_key("tcc", "pv_only") == "tcc~pv_only"
    assert tcc_variant_key("tcc+cssk", "share_return") == "tcc~share_return+cssk"
    # the shipped file has no variant entry: tcc~pv_only runs without a table path stay on the TCC tables
    assert calibration_table("tcc") is not None and calibration_table("tcc~pv_only") is None
    for bad in ("clusters~pv_only", "tcc~remove", "tcc~bogus"):
        with pytest.raises(ConfigError, match="TREATMENT one of pv_only, share_return, share_subtract"):
            calibration_table(bad)


def test_pv_only_table_file_is_a_physical_two_dimensional_table_at_every_mu():
    """The opt-in file holds the pv_only tables only (no plain ``tcc`` entry to take by mistake), at μ = 0, 60, 140,
    two-dimensional, with factors in the shipped tables' physical ranges; its flat raw response makes the
    μ = 140 W/Z/top JMS no larger than the default's there (the reason for the variant)."""
    from lhcml.sim.large_r_calibration import TABLE_PATH, TCC_PV_ONLY_TABLE_PATH, calibration_table

    t = _variant_file_tables("tcc~pv_only", TCC_PV_ONLY_TABLE_PATH)
    default = calibration_table("tcc", TABLE_PATH)[140.0]
    wzt_v, wzt_d = t[140.0]["row_jms"] >= 2, default["row_jms"] >= 2
    assert np.median(t[140.0]["jms"][wzt_v]) < np.median(default["jms"][wzt_d])


def test_derive_from_reads_variant_file_names(tmp_path):
    """``--derive --save`` names a variant's jets ``jets_tcc~pv_only_mu60_s1.npz``: ``--derive-from`` keys them by
    the whole type (the type holds an underscore)."""
    from _scripts import load_benchmark

    bench = load_benchmark("sim_large_r.py")
    j = {k: np.arange(3.0) for k in bench.SAVED_FIELDS}
    for name in ("jets_tcc~pv_only_mu60_s1.npz", "jets_tcc_mu60_s1.npz"):
        np.savez(tmp_path / name, **j)
    got = bench._saved_derivation_jets(sorted(tmp_path.glob("*.npz")))
    assert sorted(got) == [("tcc", 60.0), ("tcc~pv_only", 60.0)]
    with pytest.raises(SystemExit, match="not a --derive --save file"):
        np.savez(tmp_path / "jets_tcc_s1.npz", **j)
        bench._saved_derivation_jets([tmp_path / "jets_tcc_s1.npz"])


def test_variant_uses_its_own_table_and_the_default_keeps_its_own(tmp_path, monkeypatch):
    """A table file with a ``tcc`` entry (JMS 1) and a ``tcc~pv_only`` entry (JMS 2): on the same events the
    pv_only jets are calibrated with their entry (mass ×2 against the default's), the default with ``tcc`` and
    a treatment without its own entry (share_return) falls back to ``tcc``; at μ = 0 the treatments build the
    same jets (no pileup tracks), so the mass ratios are the factors."""
    pytest.importorskip("fastjet")
    from _scripts import load_benchmark

    import lhcml.sim.large_r_calibration as cal

    def flat(jms):
        pts = [100.0, 300.0, 600.0, 1000.0, 2000.0]
        return {0: {"pt": pts, "jes": [1.0] * 5, "pt_jms": pts, "jms": [jms] * 5}}

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"tcc": flat(1.0), "tcc~pv_only": flat(2.0)}))
    monkeypatch.setattr(cal, "TABLE_PATH", path)
    bench = load_benchmark("sim_large_r.py")
    out = bench.simulate_types("wz", 25, 0.0, 33, None, ["tcc", "tcc~pv_only", "tcc~share_return"])
    a = out["tcc"]["jets"]
    assert len(a) >= 4
    for variant, factor in (("tcc~pv_only", 2.0), ("tcc~share_return", 1.0)):
        b = out[variant]["jets"]
        assert len(b) == len(a)
        np.testing.assert_array_equal(b["eventNumber"], a["eventNumber"])
        np.testing.assert_allclose(np.median(b["mass"] / a["mass"]), factor, rtol=0.02)
        np.testing.assert_allclose(np.median(b["pt"] / a["pt"]), 1.0, rtol=0.01)


def test_share_subtract_table_file_is_a_physical_two_dimensional_table_at_every_mu():
    """The opt-in share_subtract file (h29d) holds its own entry only, at μ = 0, 60, 140, two-dimensional, with
    factors in the shipped tables' physical ranges; at μ = 0 only the few hard-scatter tracks failing the vertex
    association are treated differently, so its JES there is the default's within 0.5 % (same events, same
    derivation), while at μ = 140 the returned pileup shares leave a smaller correction than the default's."""
    from lhcml.sim.large_r_calibration import (
        TABLE_PATH,
        TCC_SHARE_SUBTRACT_TABLE_PATH,
        calibration_table,
    )

    t = _variant_file_tables("tcc~share_subtract", TCC_SHARE_SUBTRACT_TABLE_PATH)
    default = calibration_table("tcc", TABLE_PATH)
    pts = np.array([300.0, 450.0, 600.0, 900.0])
    jes = {mu: (np.interp(pts, t[mu]["pt"], t[mu]["jes"]), np.interp(pts, default[mu]["pt"], default[mu]["jes"]))
           for mu in (0.0, 140.0)}
    np.testing.assert_allclose(*jes[0.0], rtol=0.005)
    assert np.all(jes[140.0][0] < jes[140.0][1]), jes[140.0]
