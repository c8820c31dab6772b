"""The quantile-corrected sampling graph in the simulation (issue 15, ``lhcml simulate --calo fast:MODEL``).

``lhcml fastcalo quantile-map CKPT TRAIN.h5 --onnx OUT.onnx`` exports the sampler with the per-cell correction
inside the graph; the simulation's fast path loads it unchanged (same inputs, outputs and metadata as the plain
export), so no simulation code knows about the correction. Checked here on a tiny eta-conditioned checkpoint:

* the simulation's generator (``FastCalo.from_option``) gives, for the same noise, the plain graph's showers
  mapped by ``QuantileCorrection.apply`` (to float32 rounding) -- not the plain showers -- with every layer's
  energy kept (the default ``energy_layers`` variable);
* ``simulate_photon_events(..., calo="fast:corrected.onnx")`` gives the detailed path's fields, dtypes and
  shapes; on the same events the (untrained, window-filling) plain graph yields no unconverted photon candidate,
  the graph corrected onto detailed showers compact clusters with a detailed-like R_eta again.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fastcalo_helpers import real_binning_fm_checkpoint

N_EVENTS = 40
N_REF = 60


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    from lhcml import cli
    from lhcml.data.calochallenge import write_showers
    from lhcml.export.fastcalo import export_checkpoint
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection, correction_path
    from lhcml.sim.fastcalo import detailed_showers

    tmp = tmp_path_factory.mktemp("corr")
    m, b, ckpt = real_binning_fm_checkpoint(tmp)  # tiny and untrained: its showers are nothing like photons'
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored["lhcml"]["config_yaml"] = "model: {name: fastcalo_fm}\n"  # as a trained checkpoint (lhcml export copies it)
    torch.save(stored, ckpt)
    # the reference: detailed photon showers at three energies over the barrel
    e = np.repeat([10.0, 40.0, 160.0], N_REF)
    ref = detailed_showers("photon", e, 4, eta_range=(0.0, 1.3), binning=b, images=False)
    write_showers(tmp / "train.h5", e, ref["showers"], b, {}, eta=ref["incident_eta"][:, 0])
    corrected = tmp / "corrected.onnx"
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp / "train.h5"), "--quantiles", "8",
                  "--onnx", str(corrected)])  # fmt: skip
    assert exc.value.code in (0, None)
    plain = tmp / "plain.onnx"
    export_checkpoint(ckpt, plain, timing=False)
    return plain, corrected, QuantileCorrection.load(correction_path(ckpt)), b


def test_the_simulation_generator_applies_the_correction(graphs):
    from lhcml.sim.fastcalo import FastCalo

    plain_path, corr_path, corr, b = graphs
    plain = FastCalo.from_option(f"fast:{plain_path}").models[22]
    fixed = FastCalo.from_option(f"fast:{corr_path}").models[22]
    assert fixed.conditions_on_eta and fixed.noise_dim == plain.noise_dim
    e = np.array([2.0, 5.0, 20.0, 50.0, 120.0, 250.0] * 20)
    eta = np.linspace(-1.3, 1.3, len(e))
    x = plain.generate(e, np.random.default_rng(3), eta=eta)
    y = fixed.generate(e, np.random.default_rng(3), eta=eta)  # the same noise
    want = np.maximum(corr.apply(x, e, np.abs(eta)), 0.0)
    assert np.abs(want - x).max(axis=1).min() > 0.05  # the correction changes every shower ...
    np.testing.assert_allclose(y, want, rtol=0, atol=5e-4 * e.min())  # ... and the simulation's graph applies it
    for sl in b.layer_slices:  # energy_layers: each layer's energy kept
        np.testing.assert_allclose(y[:, sl].sum(1), x[:, sl].sum(1), rtol=1e-4, atol=1e-4)


def test_simulated_events_with_the_corrected_graph(graphs):
    """The same Pythia events through the plain and the corrected graph: the untrained generator spreads a shower
    over the whole window, so no unconverted photon is reconstructed; mapped cell by cell onto the detailed showers
    (layer energies kept: half the photon's energy, as this generator makes them) they become compact photon
    clusters again."""
    from lhcml.sim.photons import simulate_photon_events

    plain_path, corr_path, _, _ = graphs
    det = simulate_photon_events("gamma_jet", N_EVENTS, 0.0, 11, min_pt_gev=10.0)
    plain = simulate_photon_events("gamma_jet", N_EVENTS, 0.0, 11, min_pt_gev=10.0, calo=f"fast:{plain_path}")
    fixed = simulate_photon_events("gamma_jet", N_EVENTS, 0.0, 11, min_pt_gev=10.0, calo=f"fast:{corr_path}")
    assert set(fixed) == set(det)
    for k in det:
        assert fixed[k].dtype == det[k].dtype and fixed[k].shape[1:] == det[k].shape[1:], k
    assert (~det["photons"]["converted"]).sum() >= 3
    assert (~plain["photons"]["converted"]).sum() == 0
    ph = fixed["photons"][~fixed["photons"]["converted"]]
    assert len(ph) >= 3
    assert np.median(ph["Reta"]) > 0.9  # detailed photons: ~0.96
    assert 0.35 < np.median(ph["energy"] / ph["truthE"]) < 0.65  # the generator's layer energies, kept
