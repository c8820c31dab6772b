"""The one-layer EM geometry whose topo-cluster splitter finds primary maxima in the energy beyond the
strips' depth (``jet_geometry("one_em_layer_primary")``, issue 12, docs/benchmarks/sim_large_r.md,
eleventh version): the virtual strips' share, the constructed pile-up-photon event, and the readout's
random stream."""

from __future__ import annotations

import numpy as np
import pytest

import lhcml.sim.jet_calo as jc
import lhcml.sim.topoclusters as tc
from lhcml.sim.generator import FlatTable


def _photons(energies, etas, phis, pileup) -> FlatTable:
    e, eta, phi = (np.asarray(x, float) for x in (energies, etas, phis))
    pt = e / np.cosh(eta)
    n = len(e)
    cols = {"pid": np.full(n, 22, np.int32), "charge": np.zeros(n, np.int8), "px": pt * np.cos(phi),
            "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "e": e, "m": np.zeros(n), "vz": np.zeros(n),
            "is_pileup": np.asarray(pileup, bool)}
    return FlatTable(cols, np.array([n]))


def _n_clusters(geometry: str, e_soft: float) -> tuple[int, np.ndarray]:
    """Clusters of a 50 GeV photon and a second photon of ``e_soft`` 0.075 away in η (pile-up), through
    the chain's sparse readout at μ = 0 (electronic noise only, fixed seed)."""
    t = _photons([50.0, e_soft], [0.5125, 0.5875], [0.5, 0.5], [False, True])
    with jc.jet_geometry(geometry):
        topo = tc.simulate_topo_clusters(t, np.zeros(1), np.random.default_rng(1), mu=0.0)
    return int(topo.clusters.counts[0]), np.sort(np.asarray(topo.clusters["E"]))


def test_virtual_strips_share_is_the_samplings_strips_share():
    """Per particle, the share in the virtual strips equals the strips' share of the em_samplings
    geometry (same profile integrals, same depths) where ATLAS has strips, and is 0 beyond |η| = 2.5."""
    with jc.jet_geometry("one_em_layer_primary"):
        prim = jc.load_geometry()
    with jc.jet_geometry("em_samplings"):
        samp = jc.load_geometry()
    assert prim.virtual_strips and not prim.samplings and prim.n_cells == jc.load_geometry().n_cells
    assert not jc.load_geometry().virtual_strips  # the default
    px, pz = np.array([1.0, 10.0, 100.0, 50.0, 5.0, 10.0]), np.array([0.3, 3.0, 30.0, 15.0, 10.0, 90.0])
    m = np.array([0, 0, 0, 0.13957, 0.13957, 0])
    t = FlatTable({"pid": np.array([22, 22, 22, 211, 211, 22], np.int32), "charge": np.array([0, 0, 0, 1, 1, 0], np.int8),
                   "px": px, "py": np.zeros(6), "pz": pz, "e": np.sqrt(px**2 + pz**2 + m**2), "m": m,
                   "vz": np.zeros(6)}, np.array([6]))
    d_p = jc.shower_particles(t, np.random.default_rng(4), prim)
    d_s = jc.shower_particles(t, np.random.default_rng(4), samp)
    assert d_p.em_strips is not None and d_s.em_strips is None and d_p.em_split is None
    central = np.abs(d_p.eta) < 2.5
    assert d_p.em_strips[central] == pytest.approx(d_s.em_split[central, 0], abs=1e-12)
    assert np.all(d_p.em_strips[~central] == 0.0) and (~central).any()
    # photons: a softer shower peaks earlier, a larger share in the strips
    assert d_p.em_strips[0] > d_p.em_strips[1] > d_p.em_strips[2] > 0.02


def _outcome(geometry: str) -> tuple[bool, bool]:
    """(the 1.5 GeV pile-up photon splits the 50 GeV photon's cluster, a 20 GeV photon there is split
    off as its own ≈ 20 GeV cluster)."""
    _, e_hard = _n_clusters(geometry, 20.0)
    return _n_clusters(geometry, 1.5)[0] > 1, bool(np.any(np.abs(e_hard - 20.0) < 2.0))


def test_soft_pileup_photon_no_longer_splits_but_a_hard_one_does():
    """The ninth version's mechanism: a 1.5 GeV pile-up photon 0.075 from a 50 GeV photon makes a primary
    maximum (0.57 GeV > 0.5 GeV) in the one-layer cell; beyond the strips' depth it holds ≈ 0.34 GeV and
    the cluster stays one, with the photon's energy in it. A 20 GeV photon still splits it. The same
    cells and energies are clustered either way (only the splitting differs)."""
    n_one, e_one = _n_clusters("one_em_layer", 1.5)
    n_prim, e_prim = _n_clusters("one_em_layer_primary", 1.5)
    assert (n_one, n_prim) == (2, 1)
    assert e_prim[0] == pytest.approx(e_one.sum(), rel=1e-9)
    assert e_prim[0] == pytest.approx(51.5, rel=0.05)
    assert _outcome("one_em_layer") == (True, True)
    assert _outcome("one_em_layer_primary") == (False, True)


@pytest.mark.parametrize("depth, expect", [((0.0, 1e-6), (True, True)), ((0.0, 22.0), (False, False))])
def test_a_broken_strips_share_breaks_the_splitting(monkeypatch, depth, expect):
    """Controls that fail the test above: no strips depth (share 0) is the old one-layer splitting (the
    soft photon splits the cluster again); the whole EM depth as 'strips' (share 1) leaves no primary
    energy, so the 20 GeV photon no longer makes a maximum either."""
    monkeypatch.setattr(jc, "VIRTUAL_STRIPS_X0", depth)
    assert _outcome("one_em_layer_primary") == expect


def test_readout_random_stream_and_clustered_cells_are_unchanged():
    """On a pile-up event the option draws no random numbers of its own: the generator ends in the same
    state, the clustered cells and their read-out energies are the same; only the splitting differs."""
    rng = np.random.default_rng(11)
    n = 60
    e = rng.uniform(0.5, 3.0, n)
    eta = np.concatenate([rng.normal(0.4, 0.1, n - 10), rng.uniform(-2.4, 2.4, 10)])
    phi = rng.normal(0.3, 0.1, n)
    t = _photons(np.append(e, 80.0), np.append(eta, 0.4), np.append(phi, 0.3), np.append(np.ones(n, bool), False))
    out = {}
    for g in ("one_em_layer", "one_em_layer_primary"):
        r = np.random.default_rng(7)
        with jc.jet_geometry(g):
            topo = tc.simulate_topo_clusters(t, np.zeros(1), r, mu=1.0, n_pileup=np.ones(1))
        order = np.argsort(topo.cell_id, kind="stable")
        out[g] = (r.bit_generator.state, topo.cell_id[order], topo.cell_energy[order], topo.clusters.counts[0])
    (s1, c1, e1, n1), (s2, c2, e2, n2) = out.values()
    assert s1 == s2
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(e1, e2)
    assert n2 <= n1  # fewer pile-up maxima


def test_the_strips_buffer_is_cleared_between_chunks():
    """Events in the second readout chunk see only their own strips' part: a 3 GeV photon next to a 50 GeV
    one (event 8) is split as when clustered alone, after eight events with a 60 GeV photon on its cell
    (whose strips' part, left over, would swallow its primary energy)."""
    hard = _photons([60.0], [0.5875], [0.5], [False])
    probe = _photons([50.0, 3.0], [0.5125, 0.5875], [0.5, 0.5], [False, False])
    cols = {k: np.concatenate([hard[k]] * jc.READOUT_CHUNK + [probe[k]]) for k in probe.columns}
    batch = FlatTable(cols, np.array([1] * jc.READOUT_CHUNK + [2]))
    with jc.jet_geometry("one_em_layer_primary"):
        alone = tc.simulate_topo_clusters(probe, np.zeros(1), np.random.default_rng(2), mu=0.0)
        both = tc.simulate_topo_clusters(batch, np.zeros(len(batch)), np.random.default_rng(2), mu=0.0)
    last = np.asarray(both.clusters["E"])[-both.clusters.counts[-1]:]
    assert np.any(np.abs(np.asarray(alone.clusters["E"]) - 3.0) < 0.5)  # the 3 GeV photon split off
    assert np.any(np.abs(last - 3.0) < 0.5)
