"""``lhcml simulate ... --calo fast:MODEL.onnx --spot-readout FRACTION`` (issue 15): the detailed
simulation's energy spots as the readout of the generated showers inside the simulation.

The generator is the template graph of ``tests/test_fastcalo_sim.py`` (E x the mean voxel
fractions of detailed 50 GeV photons x a log-normal factor): its mean fractions put many cells
of a few MeV around every shower, which the readout must re-read while keeping each layer's energy.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_fastcalo_sim import _template_onnx

from lhcml.errors import ConfigError


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from lhcml.data.calochallenge import parse_binning
    from lhcml.sim.fastcalo import detailed_showers, voxel_binning

    b = voxel_binning("photon")
    b = parse_binning(b.to_xml())
    out = detailed_showers("photon", np.full(100, 50.0), 5, binning=b, images=False)
    template = (out["showers"] / out["incident_energies"]).mean(axis=0)
    return _template_onnx(tmp_path_factory.mktemp("fastro") / "template.onnx", b, template)


def _photons(n: int, n_events: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(3.0), np.log(120.0), n))
    eta = rng.uniform(-1.2, 1.2, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pt = e / np.cosh(eta)
    z = np.zeros(n)
    p = {"pid": np.full(n, 22), "charge": z, "px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta),
         "e": e, "vx": z, "vy": z, "vz": z}  # fmt: skip
    return p, np.arange(n) % n_events


def test_the_readout_keeps_each_layers_energy_and_rereads_the_small_cells(template):
    """Same particles, same seed, with and without the readout: the generator's noise is drawn
    first, so the showers read out are the ones placed without it; every event keeps each layer's
    energy (float32), and the cells under the threshold (2.31 MeV) all but vanish."""
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.calorimeter import deposit
    from lhcml.sim.fastcalo import FastCalo
    from lhcml.sim.spot_readout import SpotReadout

    geo = load_geometry()
    p, event = _photons(40, 10, 3)
    plain = FastCalo.from_option(f"fast:{template}")
    read = FastCalo.from_option(f"fast:{template}@spot-readout=0.05")
    assert plain.spot_readout is None and read.spot_readout == 0.05
    assert plain.select(p).all()  # every photon gets a generated shower
    a, _ = deposit(p, event, 10, geo, np.random.default_rng(9), convert=False, fast=plain)
    b, _ = deposit(p, event, 10, geo, np.random.default_rng(9), convert=False, fast=read)
    thr_mev = SpotReadout.from_geometry(geo, 0.05).threshold_gev * 1e3
    assert thr_mev == pytest.approx(2.306, abs=0.01)
    small_a = small_b = changed = 0
    for lay in ("strips", "middle", "back"):
        ea, eb = a[lay].sum(axis=(1, 2), dtype=np.float64), b[lay].sum(axis=(1, 2), dtype=np.float64)
        assert ea.min() > 0
        np.testing.assert_allclose(eb, ea, rtol=2e-5)  # each event's layer energy, kept
        small_a += int(((a[lay] > 0) & (a[lay] < thr_mev)).sum())
        small_b += int(((b[lay] > 0) & (b[lay] < thr_mev)).sum())
        changed += int((~np.isclose(a[lay], b[lay], rtol=1e-3, atol=1e-3)).sum())
    assert small_a > 500  # the template's halo: many cells of a few MeV
    assert small_b < 0.1 * small_a, (small_a, small_b)
    assert changed > small_a // 2


def test_spot_readout_gives_the_same_fields_as_the_detailed_path(template):
    from lhcml.sim.photons import simulate_photon_events

    det = simulate_photon_events("gamma_jet", 40, 0.0, 11, min_pt_gev=10.0)
    fast = simulate_photon_events("gamma_jet", 40, 0.0, 11, min_pt_gev=10.0, calo=f"fast:{template}@spot-readout=0.05")
    assert set(fast) == set(det)
    for k in det:
        assert fast[k].dtype == det[k].dtype and fast[k].shape[1:] == det[k].shape[1:], k
    ph = fast["photons"]
    prompt = (ph["isPromptPhoton"] == 1) & (ph["truthE"] > 20e3) & ~ph["converted"]
    assert prompt.sum() >= 5
    assert 0.9 < np.median(ph["energy"][prompt] / ph["truthE"][prompt]) < 1.05


def test_the_cli_option_is_carried_in_the_calo_value(template, tmp_path):
    from lhcml.cli import main
    from lhcml.data.h5 import read_attrs
    from lhcml.sim.runner import read_manifest

    with pytest.raises(SystemExit) as exc:
        main(["simulate", "gamma_jet", "-n", "8", "--mu", "0", "-o", str(tmp_path / "run"), "--calo",
              f"fast:{template}", "--spot-readout", "0.05", "--quiet"])  # fmt: skip
    assert exc.value.code in (0, None)
    spec = f"fast:{template}@spot-readout=0.05"
    assert read_manifest(tmp_path / "run")["calo"] == spec
    assert read_attrs(sorted((tmp_path / "run").glob("gamma_jet_*.h5"))[0])["calo"] == spec


def test_bad_readout_values_are_one_clear_message(template, tmp_path, capsys):
    from lhcml.cli import main
    from lhcml.sim.fastcalo import FastCalo, calo_with_spot_readout

    for bad in ("1.5", "0", "-0.1", "nan"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["simulate", "gamma_jet", "-n", "5", "--mu", "0", "-o", str(tmp_path / "r1"), "--calo",
                  f"fast:{template}", "--spot-readout", bad, "--quiet"])  # fmt: skip
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "--spot-readout must be a fraction in (0, 1)" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "gamma_jet", "-n", "5", "--mu", "0", "-o", str(tmp_path / "r2"), "--spot-readout", "0.05"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "use it with --calo fast:MODEL.onnx" in err and "Traceback" not in err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()  # refused before any file
    with pytest.raises(ConfigError, match="fraction in"):
        FastCalo.from_option(f"fast:{template}@spot-readout=abc")
    with pytest.raises(ConfigError, match="already carries a spot readout"):
        calo_with_spot_readout(f"fast:{template}@spot-readout=0.1", 0.05)
    assert calo_with_spot_readout(f"fast:{template}", None) == f"fast:{template}"
