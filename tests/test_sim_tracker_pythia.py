"""The tracker on a tiny Pythia tt̄ sample: physics sanity on real generator output."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from lhcml.data.schema import TRUTH_ORIGIN

pytest.importorskip("pythia8mc")


@pytest.fixture(scope="session")
def ttbar_tracks():
    from lhcml.sim.decays import decay_v0s
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.tracker import simulate_tracks

    rng = np.random.default_rng(7)
    parts = decay_v0s(PythiaGenerator("ttbar", seed=7).init().generate(30).particles, rng)
    return parts, simulate_tracks(parts, np.random.default_rng(8))


def test_heavy_flavour_tracks_are_displaced(ttbar_tracks):
    _, tracks = ttbar_tracks
    f = ak.flatten(tracks)
    origin = ak.to_numpy(f.origin)
    sig = np.abs(ak.to_numpy(f.d0 / f.d0Uncertainty))
    hf = np.isin(origin, [TRUTH_ORIGIN["fromB"], TRUTH_ORIGIN["fromBC"]])
    prim = origin == TRUTH_ORIGIN["primary"]
    assert hf.sum() > 50 and prim.sum() > 500
    assert np.median(sig[hf]) > 3 * np.median(sig[prim])
    assert np.mean(sig[prim] > 3) < 0.06  # tails and beam-spot spread only
    # b-hadron decay products are produced away from the beam line, primaries are not
    r = ak.to_numpy(f.truthProductionRadius)
    assert np.median(r[hf]) > 0.3 and np.median(r[prim]) < 0.05


def test_multiplicity_and_finiteness(ttbar_tracks):
    parts, tracks = ttbar_tracks
    n = ak.to_numpy(ak.num(tracks))
    assert 30 < n.mean() < 200
    f = ak.flatten(tracks)
    for field in ("pt", "eta", "phi", "d0", "z0", "d0Uncertainty", "z0SinThetaUncertainty", "qOverP"):
        assert np.all(np.isfinite(ak.to_numpy(f[field]))), field
    assert np.all(ak.to_numpy(f.pt) > 0.5) and np.all(np.abs(ak.to_numpy(f.eta)) < 2.5)
    # every real track points back to a stable charged particle of its event
    real = f[f.particle_index >= 0]
    evt = np.repeat(np.arange(len(tracks)), n)[ak.to_numpy(f.particle_index >= 0)]
    flat = ak.flatten(parts)
    offs = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(parts)))])
    gidx = offs[evt] + ak.to_numpy(real.particle_index)
    assert np.all(ak.to_numpy(flat.final)[gidx])
    np.testing.assert_array_equal(ak.to_numpy(flat.pid)[gidx], ak.to_numpy(real.truthPdgId))
