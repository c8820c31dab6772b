"""What-if options of the jet calorimeter (issue 12, the large-R resolution budget): a geometry YAML file
given by path (``jet_geometry(PATH)``, ``sim_large_r.py --jet-geometry PATH``) and the hadron-shower
centroid fluctuation ``had_centroid_sigma``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable
from lhcml.sim.jet_calo import (
    EM,
    GEOMETRY_FILE,
    HADRON,
    centroid_shift,
    jet_geometry,
    load_geometry,
    shower_particles,
)

ROOT = Path(__file__).resolve().parents[1]


def _mixed_gun(n: int, rng: np.random.Generator) -> FlatTable:
    """Alternating 50 GeV electrons and charged pions at 0.2 < η < 1.0, one per event."""
    pid = np.where(np.arange(n) % 2 == 0, 11, 211).astype(np.int32)
    m = np.where(pid == 11, 0.000511, 0.13957)
    eta, phi = rng.uniform(0.2, 1.0, n), rng.uniform(-np.pi, np.pi, n)
    pt = np.sqrt(50.0**2 - m**2) / np.cosh(eta)
    cols = {"pid": pid, "charge": np.where(pid == 11, -1, 1).astype(np.int8), "px": pt * np.cos(phi),
            "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "e": np.full(n, 50.0), "m": m, "vz": np.zeros(n)}
    return FlatTable(cols, np.ones(n, np.int64))


def _variant(tmp_path: Path, name: str, extra: str = "") -> Path:
    """The shipped geometry with ``extra`` appended to its ``showers`` block."""
    text = GEOMETRY_FILE.read_text()
    anchor = "  muon_em_fraction: 0.3"
    assert text.count(anchor) == 1
    p = tmp_path / name
    p.write_text(text.replace(anchor, anchor + ("\n  " + extra if extra else "")))
    return p


def test_a_geometry_file_by_path_is_used_by_the_whole_chain_and_a_copy_changes_nothing(tmp_path):
    gun = _mixed_gun(400, np.random.default_rng(5))
    ref = shower_particles(gun, np.random.default_rng(6))
    with jet_geometry(_variant(tmp_path, "copy.yaml")):
        same = shower_particles(gun, np.random.default_rng(6))
    for k in ("eta", "phi", "e_layer", "kind"):
        np.testing.assert_array_equal(getattr(same, k), getattr(ref, k))
    hot = _variant(tmp_path, "hot.yaml").read_text().replace("e_over_h: 1.36", "e_over_h: 2.0")
    (tmp_path / "eh2.yaml").write_text(hot)
    with jet_geometry(str(tmp_path / "eh2.yaml")):
        assert load_geometry().showers["e_over_h"] == 2.0
        low = shower_particles(gun, np.random.default_rng(6))
    assert load_geometry().showers["e_over_h"] == 1.36  # restored after the block
    h = ref.kind == HADRON
    assert low.e_layer[h].sum() < 0.9 * ref.e_layer[h].sum()  # stronger non-compensation: less seen
    np.testing.assert_array_equal(low.e_layer[~h], ref.e_layer[~h])  # same draws: electrons unchanged


def test_an_unknown_geometry_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown jet-calorimeter geometry"):
        with jet_geometry(tmp_path / "missing.yaml"):
            pass
    (tmp_path / "notyaml.txt").write_text("x")
    with pytest.raises(ConfigError, match="unknown jet-calorimeter geometry"):
        with jet_geometry(tmp_path / "notyaml.txt"):
            pass
    bad = tmp_path / "bad.yaml"
    bad.write_text("showers: {}\n")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sim_large_r.py"), "--jet-geometry", str(bad),
                        "--events", "1"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert "no 'regions' list" in r.stderr and "Traceback" not in r.stderr


def test_centroid_fluctuation_moves_hadron_showers_only_by_the_configured_sigma(tmp_path):
    gun = _mixed_gun(6000, np.random.default_rng(7))
    ref = shower_particles(gun, np.random.default_rng(8))
    with jet_geometry(_variant(tmp_path, "c03.yaml", "had_centroid_sigma: 0.03")):
        moved = shower_particles(gun, np.random.default_rng(8))
        again = shower_particles(gun, np.random.default_rng(8))
    np.testing.assert_array_equal(moved.eta, again.eta)  # deterministic: its own stream, seeded by the particles
    np.testing.assert_array_equal(moved.e_layer, ref.e_layer)  # every other draw unchanged
    h, e = ref.kind == HADRON, ref.kind == EM
    assert h.sum() > 2500 and e.sum() > 2500
    np.testing.assert_array_equal(moved.eta[e], ref.eta[e])
    np.testing.assert_array_equal(moved.phi[e], ref.phi[e])
    deta = moved.eta[h] - ref.eta[h]
    dphi = np.mod(moved.phi[h] - ref.phi[h] + np.pi, 2 * np.pi) - np.pi
    for d in (deta, dphi):
        assert abs(d.mean()) < 0.003
        assert d.std() == pytest.approx(0.03, rel=0.05)
    assert abs(np.corrcoef(deta, dphi)[0, 1]) < 0.05  # independent in η and φ
    with pytest.raises(ConfigError, match="had_centroid_sigma"):
        centroid_shift(ref.eta, ref.phi, h, np.ones(len(h)), -0.01)


def _photon_gun(n: int, pt: float, rng: np.random.Generator) -> FlatTable:
    eta, phi = rng.uniform(-0.3, 0.3, n), rng.uniform(-3.0, 3.0, n)
    cols = {"pid": np.full(n, 22, np.int32), "charge": np.zeros(n, np.int8), "px": pt * np.cos(phi),
            "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "e": pt * np.cosh(eta), "m": np.zeros(n),
            "vz": np.zeros(n)}
    return FlatTable(cols, np.ones(n, np.int64))


def test_photon_conversions_split_and_bend_the_pair_by_the_known_amount(tmp_path):
    """Every photon converts at r = 500 mm: two deposits per photon, the photon's energy shared, each
    bent by (R − r)² / (2 ρ R) to opposite sides (R = 1.5 m, ρ = x pT / 0.6 GeV/m); a pair member that
    curls up deposits nothing. Probability 0: the deposits of the default."""
    gun = _photon_gun(3000, 10.0, np.random.default_rng(9))
    ref = shower_particles(gun, np.random.default_rng(10))
    opt = "photon_conversion: {central: 1.0, endcap: 1.0, r_min_mm: 500.0, r_max_mm: 500.0}"
    with jet_geometry(_variant(tmp_path, "conv.yaml", opt)):
        conv = shower_particles(gun, np.random.default_rng(10))
    assert len(conv.eta) == 2 * len(ref.eta)
    np.testing.assert_array_equal(conv.event[0::2], ref.event)
    np.testing.assert_array_equal(conv.event[1::2], ref.event)
    e1, e2 = conv.e_layer[0::2].sum(axis=1), conv.e_layer[1::2].sum(axis=1)
    e0 = ref.e_layer.sum(axis=1)
    reach = (e1 > 0) & (e2 > 0)
    np.testing.assert_allclose((e1 + e2)[reach], e0[reach], rtol=1e-12)
    x = e1[reach] / e0[reach]
    assert 0.4 < x.mean() < 0.6 and x.std() == pytest.approx(1 / np.sqrt(12), rel=0.1)  # uniform share
    dphi1 = np.mod(conv.phi[0::2] - ref.phi + np.pi, 2 * np.pi) - np.pi
    dphi2 = np.mod(conv.phi[1::2] - ref.phi + np.pi, 2 * np.pi) - np.pi
    pt1 = x * np.hypot(gun["px"], gun["py"])[reach]
    np.testing.assert_allclose(dphi1[reach], 1.0**2 / (2 * pt1 / 0.6 * 1.5), rtol=1e-9)
    assert np.all(dphi1[reach] > 0) and np.all(dphi2[reach] < 0)
    np.testing.assert_array_equal(conv.eta[0::2], ref.eta)
    # curling: 2ρ < R − r, i.e. x pT < 0.3 GeV: the soft member leaves nothing, the other keeps its share
    lost = ~reach
    assert lost.sum() > 0 and np.all(np.minimum(e1, e2)[lost] == 0)
    assert np.all(np.maximum(e1, e2)[lost] < e0[lost])
    none = "photon_conversion: {central: 0.0, endcap: 0.0, r_min_mm: 500.0, r_max_mm: 500.0}"
    with jet_geometry(_variant(tmp_path, "none.yaml", none)):
        same = shower_particles(gun, np.random.default_rng(10))
    np.testing.assert_array_equal(same.phi, ref.phi)
    np.testing.assert_array_equal(same.e_layer, ref.e_layer)
    bad = "photon_conversion: {central: 0.2, endcap: 0.4, r_min_mm: 50.0, r_max: 800.0}"
    with jet_geometry(_variant(tmp_path, "bad.yaml", bad)):
        with pytest.raises(ConfigError, match="photon_conversion"):
            shower_particles(gun, np.random.default_rng(10))
