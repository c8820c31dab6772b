"""Fast-calorimeter data (issue 15): CaloChallenge layout, binning files, ``lhcml fastcalo simulate``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lhcml.cli import main
from lhcml.data.calochallenge import (
    parse_binning,
    read_binning,
    read_showers,
    write_binning,
    write_showers,
)
from lhcml.errors import ConfigError

#: the layer list of the challenge's dataset 1 photon binning (binning_dataset_1_photons.xml,
#: docs/references.md §14: 368 voxels in layers 0, 1, 2, 3, 12; empty layers have r_edges="0")
DS1_PHOTONS = """<?xml version="1.0" encoding="UTF-8"?>
<Bins>
  <Particle name="photon" pid="22">
    <Layer id="0" r_edges="0,5,10,30,50,100,200,400,600" n_bin_alpha="1"/>
    <Layer id="1" r_edges="0,2,4,6,8,10,12,15,20,30,40,50,70,90,120,150,200" n_bin_alpha="10"/>
    <Layer id="2" r_edges="0,2,5,10,15,20,25,30,40,50,60,80,100,130,160,200,250,300,350,400" n_bin_alpha="10"/>
    <Layer id="3" r_edges="0,50,100,200,400,600" n_bin_alpha="1"/>
    <Layer id="4" r_edges="0" n_bin_alpha="1"/>
    <Layer id="5" r_edges="0" n_bin_alpha="1"/>
    <Layer id="12" r_edges="0,100,200,400,1000,2000" n_bin_alpha="1"/>
    <Layer id="13" r_edges="0" n_bin_alpha="1"/>
  </Particle>
</Bins>
"""


def _challenge_file(path, n=30, seed=0):
    """A synthetic shower file exactly in the challenge's layout (no lhcml attributes)."""
    rng = np.random.default_rng(seed)
    e = 2.0 ** rng.integers(8, 23, n) * 1.0  # 256 MeV ... 4 TeV in powers of two, MeV
    showers = rng.exponential(1.0, (n, 368)) * (e[:, None] / 368)
    with h5py.File(path, "w") as f:
        f.create_dataset("incident_energies", data=e[:, None])
        f.create_dataset("showers", data=showers)
    return e, showers


def test_reads_a_challenge_dataset1_file(tmp_path):
    xml = tmp_path / "binning_dataset_1_photons.xml"
    xml.write_text(DS1_PHOTONS)
    e, showers = _challenge_file(tmp_path / "dataset_1_photons_1.hdf5")
    s = read_showers(tmp_path / "dataset_1_photons_1.hdf5", xml)
    b = s.binning
    assert b.kind == "polar" and b.n_voxels == 368 and b.layer_ids == (0, 1, 2, 3, 12)
    assert [sl.stop - sl.start for sl in b.layer_slices] == [8, 160, 190, 5, 5]
    np.testing.assert_allclose(s.energies, e / 1000)  # MeV -> GeV
    np.testing.assert_allclose(s.showers, showers / 1000, rtol=1e-6)
    assert s.showers.dtype == np.float32
    # voxel order inside a layer: alpha bins outer, radial bins inner (the challenge's XMLHandler)
    x, y = b.voxel_centres()
    k = b.layer_slices[1].start + 16 * 3 + 2  # layer 1: alpha bin 3, r bin 2 (r 4-6 mm)
    alpha = -np.pi + (3 + 0.5) * 2 * np.pi / 10
    assert x[k] == pytest.approx(5 * np.cos(alpha)) and y[k] == pytest.approx(5 * np.sin(alpha))
    assert x[0] == pytest.approx(2.5) and y[0] == pytest.approx(0.0)  # one alpha bin: centre at alpha = 0


def test_lhcml_layout_round_trip(tmp_path):
    from lhcml.sim.fastcalo import voxel_binning

    b = write_binning(voxel_binning("photon"), tmp_path / "binning.xml")
    assert b.kind == "cells" and b.n_voxels == 321 and b.layer_names == ("strips", "middle", "back", "had1", "had2")
    again = read_binning(tmp_path / "binning.xml")
    assert again == b and again.sha256 == b.sha256
    rng = np.random.default_rng(1)
    e = rng.uniform(1, 260, 25)
    sh = rng.exponential(0.1, (25, b.n_voxels)).astype(np.float32)
    write_showers(tmp_path / "s.h5", e, sh, b, {"noise": False})
    with h5py.File(tmp_path / "s.h5") as f:  # the challenge's layout on disk: MeV, (N, 1)
        assert f["incident_energies"].shape == (25, 1) and f["showers"].shape == (25, 321)
        np.testing.assert_allclose(f["incident_energies"][:, 0], e * 1000)
    s = read_showers(tmp_path / "s.h5", tmp_path / "binning.xml")
    np.testing.assert_allclose(s.energies, e)
    np.testing.assert_allclose(s.showers, sh, rtol=1e-6)
    assert s.attrs["particle"] == "photon" and not s.attrs["noise"]
    # cell voxel centres: middle layer window 7 x 11 centred on the impact cell, eta-major
    deta, dphi = b.voxel_centres()
    mid = b.layer_slice("middle")
    assert deta[mid][0] == pytest.approx(-3 * 0.025) and dphi[mid][0] == pytest.approx(-5 * 2 * np.pi / 256)
    assert deta[mid][5 * 11 + 10] == pytest.approx(2 * 0.025)


def test_wrong_binning_file_gives_one_clear_error(tmp_path, capsys):
    from lhcml.sim.fastcalo import voxel_binning

    b = write_binning(voxel_binning("photon"), tmp_path / "binning.xml")
    write_showers(tmp_path / "s.h5", np.ones(3), np.zeros((3, 321)), b)
    ds1 = tmp_path / "ds1.xml"
    ds1.write_text(DS1_PHOTONS)
    with pytest.raises(ConfigError, match="368 voxels per shower"):
        read_showers(tmp_path / "s.h5", ds1)
    # same voxel count, other binning (another window shape): refused by the stored hash
    other = write_binning(voxel_binning("photon", windows={"strips": (57, 3), "middle": (11, 7), "back": (5, 11),
                                                            "had1": (3, 3), "had2": (3, 3)}), tmp_path / "other.xml")
    assert other.n_voxels == 321 and other.sha256 != b.sha256
    with pytest.raises(ConfigError, match="another binning file"):
        read_showers(tmp_path / "s.h5", tmp_path / "other.xml")
    with pytest.raises(ConfigError, match="not a valid binning XML"):
        parse_binning("<Bins><Particle", source="x.xml")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["fastcalo", "evaluate", str(tmp_path / "s.h5"), str(tmp_path / "s.h5"), "--binning", str(ds1),
              "-o", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and "368 voxels" in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    assert not (tmp_path / "ev" / "results.json").exists()


def test_place_and_extract_are_inverse():
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.fastcalo import extract_voxels, impact_cells, place_voxels, voxel_binning

    geo = load_geometry()
    b = voxel_binning("photon", geo)
    rng = np.random.default_rng(3)
    n = 6
    eta = np.array([0.22, -0.22, 1.0, -1.2, 0.01, 0.6])  # windows inside every layer's coverage
    phi = np.array([3.13, -3.13, 0.0, 1.0, -2.0, 0.5])  # two windows wrap around phi = pi
    ie, ip = impact_cells(eta, phi, np.zeros(n), np.full(n, 50.0), np.zeros(n), np.zeros(n), np.zeros(n), b, geo)
    assert (ie >= 0).all()
    v = rng.exponential(1.0, (n, b.n_voxels)).astype(np.float32)
    grids = {lay.name: np.zeros((n, lay.n_eta, lay.n_phi), np.float32) for lay in geo.readout_layers}
    flip = eta < 0
    place_voxels(grids, np.arange(n), ie, ip, v, b, geo, flip_eta=flip, flip_phi=flip)
    back = extract_voxels(grids, np.arange(n), ie, ip, b, geo, flip_eta=flip, flip_phi=flip)
    np.testing.assert_allclose(back, v, rtol=1e-6)
    # mirrored: the first voxel of a flipped shower sits at the high-eta end of its window
    k = b.layers.index(b.layer("middle"))
    i0 = ie[1, k] + 3
    j0 = (ip[1, k] + 5) % 256
    assert grids["middle"][1, i0, j0] == pytest.approx(v[1, b.layer_slice("middle").start])


def test_fastcalo_simulate_sharded_deterministic_and_physical(tmp_path):
    from lhcml.sim.fastcalo import ENERGY_POINTS_GEV
    from lhcml.tasks.fastcalo.dataset import simulate_fastcalo

    a = simulate_fastcalo(tmp_path / "a", "photon", 64, "discrete", seed=5, showers_per_shard=32, progress=False)
    s = read_showers(a["showers"], a["binning"])
    sn = read_showers(a["showers_noise"], a["binning"])
    assert len(s) == 64 and len(ENERGY_POINTS_GEV) >= 15
    assert set(np.round(s.energies, 3)) <= set(np.round(ENERGY_POINTS_GEV, 3))
    assert min(ENERGY_POINTS_GEV) == 1.0 and max(ENERGY_POINTS_GEV) == 260.0
    # physics: the window holds the shower (sampling fluctuations 10 %/sqrt(E)), the middle layer most of it
    hi = s.energies > 20
    ratio = s.showers[hi].sum(1) / s.energies[hi]
    assert 0.93 < ratio.mean() < 1.02 and ratio.std() < 0.05
    frac = s.layer_energies()[hi] / s.showers[hi].sum(1, keepdims=True)
    assert frac[:, 1].mean() > 0.7 and frac[:, 0].mean() > 0.02  # middle, strips
    assert (s.showers >= 0).all() and (sn.showers < 0).any()  # noise makes negative cells
    # the noise sample is the same showers plus the cells' electronic noise (10 MeV in the strips)
    d = (sn.showers - s.showers)[:, s.binning.layer_slice("strips")] * 1000
    assert 8 < d.std() < 12
    with h5py.File(a["images"]) as f:
        assert f["images_middle"].shape == (64, 7, 11) and f["photons"].shape == (64,)
        assert np.all(f["photons"]["truthPdgId"] == 22)
    # deterministic and resumable: a second run with a deleted shard gives the same arrays
    b = simulate_fastcalo(tmp_path / "b", "photon", 64, "discrete", seed=5, showers_per_shard=32, progress=False)
    first = sorted((b["shards"]).glob("*.h5"))[0]
    first.unlink()
    b = simulate_fastcalo(tmp_path / "b", "photon", 64, "discrete", seed=5, showers_per_shard=32, progress=False)
    s2 = read_showers(b["showers"], b["binning"])
    np.testing.assert_array_equal(s.showers, s2.showers)
    np.testing.assert_array_equal(s.energies, s2.energies)


def test_energy_modes():
    from lhcml.sim.fastcalo import shower_energies

    rng = np.random.default_rng(0)
    c = shower_energies("continuous", 5000, rng)
    assert c.min() >= 1 and c.max() <= 260
    # log-uniform: half of the sample below the geometric mean sqrt(260) GeV
    assert abs((c < np.sqrt(260)).mean() - 0.5) < 0.03
    assert np.all(shower_energies("65", 3, rng) == 65.0)
    with pytest.raises(ConfigError, match="discrete"):
        shower_energies("many", 3, rng)
