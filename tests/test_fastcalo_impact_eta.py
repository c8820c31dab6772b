"""``--calo fast:MODEL.onnx@impact-eta`` (``lhcml simulate --impact-eta``; issue 15, h25a): an η-conditioned
generator reads where inside its cells the shower starts from the |η| it is given (``model.eta_cells``). It was
trained on particles from the origin, where the direction's |η| is the impact's; from a vertex displaced along
the beam the direction's |η| misses the strips' impact by several strip cells, so the generated shower sits in
its cells as if the photon had hit elsewhere. With the option the generator gets the impact's |η| at the strips.

The probe generator puts all of E into the strips' impact cell when the photon hits the lower half of its
strip (phase < 0.5, read from sin of 2 pi |η| / 0.003125 as the condition does) and into the next strip outwards
in |η| when it hits the upper half, as a detailed shower's centroid follows the impact position.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.base import FastCaloGenerator

W_STRIP = 0.003125
R_STRIPS_MM = 1500.0  # calo_geometry.yaml: the strips' radius


class _EtaProbe(FastCaloGenerator):
    """E in the strips' impact cell (phase < 0.5) or in the next strip outwards in |η| (phase > 0.5)."""

    registry_name = "eta_probe"

    def __init__(self, binning) -> None:
        super().__init__(binning.n_voxels, binning.layer_sizes, 1.0, 260.0, eta_range=(0.0, 1.37),
                         eta_cells=[W_STRIP])  # fmt: skip
        self.noise_dim = 1
        names = list(binning.layer_names)
        lay = binning.layers[names.index("strips")]
        start = sum(binning.layer_sizes[: names.index("strips")])
        centre = start + (lay.n_eta // 2) * lay.n_phi + lay.n_phi // 2
        hot = torch.zeros(2, binning.n_voxels)
        hot[0, centre], hot[1, centre + lay.n_phi] = 1.0, 1.0  # voxel rows run outwards in |eta|
        self.register_buffer("hot", hot)

    def sample(self, energy_gev, noise, eta=None, phi=None):
        c = self.condition(energy_gev, eta, phi)
        upper = (c[:, 2:3] < 0).float()  # sin(2 pi phase) < 0: phase in (0.5, 1)
        return energy_gev.reshape(-1, 1) * ((1 - upper) * self.hot[:1] + upper * self.hot[1:]) + 0.0 * noise[:, :1]

    def loss_terms(self, energy_gev, showers, phase):  # pragma: no cover - never trained
        return {}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import voxel_binning

    b = voxel_binning("photon")
    path = tmp_path_factory.mktemp("impact") / "probe.onnx"
    export_generator(_EtaProbe(b).eval(), path, binning_file_sha256=b.sha256, particle="photon",
                     binning_xml=b.to_xml(), timing=False, n_check=8)  # fmt: skip
    return path, b


def _photons(eta_impact: np.ndarray, vz: np.ndarray) -> dict[str, np.ndarray]:
    """Photons (50 GeV) from (0, 0, vz) whose straight line crosses the strips' radius at ``eta_impact``."""
    sinh_dir = (R_STRIPS_MM * np.sinh(eta_impact) - vz) / R_STRIPS_MM
    eta = np.arcsinh(sinh_dir)
    phi = np.linspace(-2.5, 2.5, len(eta))
    pt = 50.0 / np.cosh(eta)
    z = np.zeros(len(eta))
    return {"pid": np.full(len(eta), 22), "e": np.full(len(eta), 50.0), "px": pt * np.cos(phi), "py": pt * np.sin(phi),
            "pz": pt * np.sinh(eta), "charge": z, "vx": z, "vy": z, "vz": np.asarray(vz, float)}  # fmt: skip


def _deposit(path, p: dict[str, np.ndarray], impact: bool) -> dict[str, np.ndarray]:
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.fastcalo import FastCalo

    geo = load_geometry()
    fast = FastCalo.from_option(f"fast:{path}" + ("@impact-eta" if impact else ""))
    assert fast.impact_eta is impact and fast.select(p).all()
    n = len(p["e"])
    grids = {lay.name: np.zeros((n, lay.n_eta, lay.n_phi), np.float32) for lay in geo.readout_layers}
    fast.deposit(p, np.arange(n), grids, geo, np.random.default_rng(0))
    return grids


# impact positions inside their strips (phase) at both signs of eta, from vertices 48-56 mm off the origin:
# the direction's phase is in the other half of the strip for every photon (checked below)
CELLS = np.array([70, -150, 260, -330, 400])
PHASE = np.array([0.25, 0.3, 0.75, 0.8, 0.2])
VZ = np.array([55.0, -55.0, -48.0, 49.0, 56.0])


def test_impact_eta_puts_the_generated_shower_where_the_axis_hits_the_strips(probe):
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.fastcalo import impact_cells

    path, b = probe
    geo = load_geometry()
    eta_imp = np.sign(CELLS) * (np.abs(CELLS) + PHASE) * W_STRIP
    p = _photons(eta_imp, VZ)
    eta_dir = np.arcsinh(p["pz"] / np.hypot(p["px"], p["py"]))
    dir_upper = (np.abs(eta_dir) / W_STRIP) % 1.0 > 0.5
    assert np.all(dir_upper != (PHASE > 0.5))  # the direction's |eta| says the other half for every photon
    z = np.zeros(len(eta_imp))
    phi = np.arctan2(p["py"], p["px"])
    ie, ip = impact_cells(eta_dir, phi, z, np.hypot(p["px"], p["py"]), z, z, p["vz"], b, geo)
    k = list(b.layer_names).index("strips")
    outwards = np.where(eta_imp > 0, 1, -1)

    def hot_cells(grids):
        s = grids["strips"]
        return [tuple(int(x) for x in np.unravel_index(np.argmax(s[i]), s[i].shape)) for i in range(len(s))]

    for impact, half_upper in ((True, PHASE > 0.5), (False, dir_upper)):
        grids = _deposit(path, p, impact)
        expect = [(int(ie[i, k] + (outwards[i] if half_upper[i] else 0)), int(ip[i, k])) for i in range(len(p["e"]))]
        assert hot_cells(grids) == expect, impact
        np.testing.assert_allclose(grids["strips"].sum(axis=(1, 2)), 50e3, rtol=1e-5)


def test_from_the_origin_the_option_changes_nothing(probe):
    path, _ = probe
    eta_imp = np.sign(CELLS) * (np.abs(CELLS) + PHASE) * W_STRIP
    p = _photons(eta_imp, np.zeros(len(CELLS)))
    a, b = _deposit(path, p, False), _deposit(path, p, True)
    for lay in a:
        np.testing.assert_array_equal(a[lay], b[lay])


def test_an_impact_outside_the_trained_eta_range_is_kept_inside(probe):
    """A direction just inside |eta| < 1.37 from a vertex 60 mm off hits the strips at |eta| > 1.37: the generator
    gets the range's edge instead of refusing the event."""
    path, _ = probe
    eta_imp = np.array([1.3745, -1.3745])
    p = _photons(eta_imp, np.array([60.0, -60.0]))
    assert np.all(np.abs(np.arcsinh(p["pz"] / np.hypot(p["px"], p["py"]))) < 1.37)
    grids = _deposit(path, p, True)
    np.testing.assert_allclose(grids["strips"].sum(axis=(1, 2)), 50e3, rtol=1e-5)


def test_the_option_travels_in_the_calo_value_with_the_spot_readout(probe):
    from lhcml.sim.fastcalo import (
        FastCalo,
        calo_with_impact_eta,
        calo_with_spot_readout,
        parse_calo_option,
    )

    path, _ = probe
    plain = f"fast:{path}"
    assert calo_with_impact_eta(plain, False) == plain
    both = calo_with_spot_readout(calo_with_impact_eta(plain, True), 0.05)
    assert both == f"{plain}@impact-eta@spot-readout=0.05"
    assert calo_with_impact_eta(calo_with_spot_readout(plain, 0.05), True) == both  # either order, one spelling
    assert calo_with_impact_eta(both, True) == both
    assert parse_calo_option(both) == both
    fast = FastCalo.from_option(both)
    assert fast.impact_eta and fast.spot_readout == 0.05
    assert not FastCalo.from_option(plain).impact_eta
    with pytest.raises(ConfigError, match="--impact-eta conditions generated showers only"):
        calo_with_impact_eta("detailed", True)
    with pytest.raises(ConfigError, match="--calo must be"):
        parse_calo_option("fast:@impact-eta")


def test_an_axis_that_crosses_eta_zero_is_mirrored_by_the_impact(probe):
    """A photon going to eta < 0 from a vertex 55 mm up the beam hits the strips at eta > 0: the window is mirrored
    (or not) by the impact's sign, so the shower's upper half of the strip lies outwards on the impact's side."""
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.fastcalo import impact_cells

    path, b = probe
    eta_imp = np.array([1.7 * W_STRIP, -2.7 * W_STRIP])  # upper halves of strips 1 and -3
    p = _photons(eta_imp, np.array([55.0, -55.0]))
    eta_dir = np.arcsinh(p["pz"] / np.hypot(p["px"], p["py"]))
    assert np.all(np.sign(eta_dir) != np.sign(eta_imp))
    z = np.zeros(2)
    ie, ip = impact_cells(eta_dir, np.arctan2(p["py"], p["px"]), z, np.hypot(p["px"], p["py"]), z, z, p["vz"],
                          b, load_geometry())  # fmt: skip
    k = list(b.layer_names).index("strips")
    s = _deposit(path, p, True)["strips"]
    for i, step in enumerate((1, -1)):
        assert np.unravel_index(np.argmax(s[i]), s[i].shape) == (ie[i, k] + step, ip[i, k])
