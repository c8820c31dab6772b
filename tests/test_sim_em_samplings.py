"""The jet calorimeter's EM part in three longitudinal samplings (``jet_geometry("em_samplings")``):
geometry, energy sharing by the longitudinal profile, and the strips as secondary maxima in the
topo-cluster splitting (issue 12, docs/benchmarks/sim_large_r.md, ninth version)."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable
from lhcml.sim.jet_calo import (
    EM_SAMPLINGS,
    HAD_RANK,
    STRIPS_LAYER,
    CellEnergies,
    deposit_cells,
    jet_geometry,
    load_geometry,
    shower_particles,
)


def _samplings():
    with jet_geometry("em_samplings"):
        return load_geometry()


def _cell_rank(geo) -> np.ndarray:
    return np.repeat(geo.b_rank, np.diff(geo.b_offset))


def _particles(pid: int, energies, etas, phis, pileup=None) -> FlatTable:
    """One event with one particle of ``pid`` per entry (photons, electrons or charged pions)."""
    e, eta, phi = (np.asarray(x, float) for x in (energies, etas, phis))
    n = len(e)
    m = {22: 0.0, 11: 0.000511, 211: 0.13957}[pid]
    pt = np.sqrt(e**2 - m**2) / np.cosh(eta)
    cols = {"pid": np.full(n, pid, np.int32), "charge": np.full(n, 0 if pid == 22 else 1, np.int8),
            "px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "e": e, "m": np.full(n, m),
            "vz": np.zeros(n), "is_pileup": np.zeros(n, bool) if pileup is None else np.asarray(pileup)}
    return FlatTable(cols, np.array([n]))


def test_geometry_option_selects_the_samplings_and_the_default_stays():
    one = load_geometry()
    geo = _samplings()
    assert not one.samplings and geo.samplings and load_geometry() is one  # the block restored the default
    rank = _cell_rank(geo)
    assert set(np.unique(geo.layer[rank == EM_SAMPLINGS["strips"]])) == {STRIPS_LAYER}
    # ATLAS's granularities at |eta| = 0.5: strips 0.025/8 x 2pi/64, middle 0.025 x 2pi/256, back 0.05 x 2pi/256
    blk = np.searchsorted(geo.b_offset, np.arange(geo.n_cells), side="right") - 1
    deta = (geo.b_eta_hi - geo.b_eta_lo) / geo.b_n_eta
    for name, (w_eta, n_phi) in {"strips": (0.003125, 64), "middle": (0.025, 256), "back": (0.05, 256)}.items():
        c = np.flatnonzero((rank == EM_SAMPLINGS[name]) & (np.abs(geo.eta - 0.5) < 0.03))[0]
        assert (deta[blk[c]], geo.b_n_phi[blk[c]]) == (pytest.approx(w_eta), n_phi)
    # neighbours: symmetric, and only between samplings adjacent in depth
    off, idx = geo.nb_offsets, geo.nb_index
    src = np.repeat(np.arange(geo.n_cells), np.diff(off))
    pairs = set(zip(src.tolist(), idx.tolist(), strict=True))
    assert all((b, a) in pairs for a, b in list(pairs)[:: max(1, len(pairs) // 20000)])
    links = set(zip(rank[src].tolist(), rank[idx].tolist(), strict=True))
    assert links == {(0, 0), (1, 1), (2, 2), (3, 3), (0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (1, 3), (3, 1)}
    # middle-hadronic links only where there is no back sampling (the inner wheel, FCal)
    mh = (rank[src] == 1) & (rank[idx] == HAD_RANK)
    assert np.abs(geo.eta[src[mh]]).min() > 2.5 - 1e-9
    with pytest.raises(ConfigError, match="valid: one_em_layer, em_samplings"):
        with jet_geometry("three_layers"):
            pass


def test_em_energy_is_shared_by_the_longitudinal_profile_and_the_total_is_unchanged():
    """The same particles with the same random numbers deposit the same total energy in both
    geometries; photons put a larger share in the strips at low energy (shower maximum earlier)
    and in the back at high energy; hadrons start late and leave little in the strips."""
    one, geo = load_geometry(), _samplings()
    rank = _cell_rank(geo)
    shares = {}
    for pid, e in ((22, 1.0), (22, 10.0), (22, 100.0), (211, 50.0)):
        n = 300 if pid == 211 else 1  # hadrons: many showers (the start depth fluctuates)
        t = _particles(pid, [e] * n, [0.31] * n, [0.2] * n)
        tot_one, _ = deposit_cells(shower_particles(t, np.random.default_rng(5), one), 1, one)
        tot, _ = deposit_cells(shower_particles(t, np.random.default_rng(5), geo), 1, geo)
        assert tot.sum() == pytest.approx(tot_one.sum(), rel=1e-12)
        shares[(pid, e)] = [tot[0, rank == r].sum() / tot.sum() for r in range(4)]
    s1, s10, s100 = shares[(22, 1.0)], shares[(22, 10.0)], shares[(22, 100.0)]
    assert s1[0] > s10[0] > s100[0] > 0.02  # strips
    assert s1[2] < s10[2] < s100[2] < 0.05  # back
    assert s100[1] > 0.85  # middle
    assert shares[(211, 50.0)][0] < 0.02 < 0.1 < shares[(211, 50.0)][1]


def _two_photons(geo, e_soft: float, deta: float = 0.075):
    """A 50 GeV photon and a soft pile-up photon ``deta`` away in η, noise-free cell energies with the
    electronic-noise thresholds of ``geo``."""
    t = _particles(22, [50.0, e_soft], [0.5125, 0.5125 + deta], [0.5, 0.5], pileup=[False, True])
    total, _ = deposit_cells(shower_particles(t, np.random.default_rng(3), geo), 1, geo)
    return CellEnergies(total, geo.noise.copy(), total.copy(), geo)


def test_a_soft_pileup_photon_splits_a_cluster_in_one_em_layer_but_not_with_samplings(monkeypatch):
    """A 1.5 GeV pile-up photon 0.075 from a 50 GeV photon: one topo-cluster. With one EM layer its
    middle-sized cell holds 0.57 GeV, a primary maximum above 0.5 GeV, and the cluster is split in two
    (the old behaviour, still the default geometry); with samplings about 40 % of its energy lies in the
    strips, its middle cell holds 0.34 GeV and the cluster stays one, with the pile-up energy in it."""
    import lhcml.sim.topoclusters as tc

    one, geo = load_geometry(), _samplings()
    n_split = {}
    for name, g in (("one", one), ("samplings", geo)):
        cells = _two_photons(g, 1.5)
        n_split[name] = tc.topo_cluster(cells, np.zeros(1)).clusters.counts[0]
        with monkeypatch.context() as m:
            m.setattr(tc, "SPLIT_E_GEV", 1e9)  # no splitting: the topological clusters alone
            assert tc.topo_cluster(cells, np.zeros(1)).clusters.counts[0] == 1
    assert n_split == {"one": 2, "samplings": 1}
    topo = tc.topo_cluster(_two_photons(geo, 1.5), np.zeros(1))
    assert topo.clusters["E_em"][0] == pytest.approx(51.5, rel=0.05)
    # a second hard shower there still splits it with samplings (its middle cells are maxima)
    assert tc.topo_cluster(_two_photons(geo, 20.0), np.zeros(1)).clusters.counts[0] == 2


def test_strips_maxima_are_secondary_and_count_as_em():
    """On a constructed cell map (samplings geometry), ATLAS's secondary rule for the strips: a strip
    cell larger than every neighbour, including the middle maximum behind it, is dropped as a maximum
    because it overlaps that primary maximum — one cluster; a 0.8 GeV strip cell in front of a small
    middle cell two cells away overlaps no primary maximum and splits the cluster. The strips' energy
    counts as EM-compartment energy (EM fraction 1)."""
    from lhcml.sim.topoclusters import topo_cluster

    geo = _samplings()
    rank = _cell_rank(geo)

    def cell(r, eta, phi):
        return int(np.argmin(np.abs(geo.eta - eta) + np.abs(geo.phi - phi) + 100 * (rank != r)))

    def front(c):  # the strip cells overlapping cell c of the middle sampling
        nb = geo.nb_index[geo.nb_offsets[c] : geo.nb_offsets[c + 1]]
        return [int(x) for x in nb if rank[x] == 0]

    a, mid, far = (cell(1, x, 0.5) for x in (0.5125, 0.5375, 0.5625))  # middle cells in a row in η
    sigma = np.full(geo.n_cells, 0.05)
    e = np.zeros((1, geo.n_cells))
    e[0, [a, mid, far]] = [3.0, 0.3, 0.3]
    e[0, front(a)[3]] = 3.5  # a strip maximum on the primary maximum a
    topo = topo_cluster(CellEnergies(e, sigma, e.copy(), geo), np.zeros(1))
    assert topo.clusters.counts[0] == 1
    assert topo.clusters["E_em"][0] == pytest.approx(7.1)
    assert topo.clusters["em_fraction"][0] == pytest.approx(1.0)
    e[0, front(far)[3]] = 0.8  # a strip maximum on no primary maximum
    topo = topo_cluster(CellEnergies(e, sigma, e.copy(), geo), np.zeros(1))
    assert topo.clusters.counts[0] == 2


def test_a_hadronic_maximum_behind_an_em_maximum_is_vetoed_through_the_back_sampling():
    """ATLAS's splitter walks the samplings: a secondary (hadronic) maximum is dropped when a primary
    maximum lies among the cells overlapping it in any sampling before it, reached sampling by sampling
    (docs/references.md §30). On a constructed cell map (samplings geometry, σ = 0.05 GeV): a 3 GeV middle
    maximum, 0.2 GeV back cells and a 2 GeV hadronic cell behind them. The hadronic cell does not overlap
    the middle cell directly (the back lies between) but through the back cells: vetoed, one cluster. The
    same hadronic cell 0.1 further in η, joined to the middle maximum by 0.3 GeV middle cells, has no
    primary maximum in front of it: kept, two clusters. (Before the walk the first map gave two clusters.)"""
    from lhcml.sim.topoclusters import topo_cluster

    geo = _samplings()
    rank = _cell_rank(geo)
    assert np.array_equal(geo.rank, rank)

    def cell(r, eta, phi):
        return int(np.argmin(np.abs(geo.eta - eta) + np.abs(geo.phi - phi) + 100 * (rank != r)))

    def overlapping(c, r):  # the cells of depth rank r overlapping cell c (an adjacent sampling)
        nb = geo.nb_index[geo.nb_offsets[c] : geo.nb_offsets[c + 1]]
        return [int(x) for x in nb if rank[x] == r]

    sigma = np.full(geo.n_cells, 0.05)
    a = cell(EM_SAMPLINGS["middle"], 0.5125, 0.5)
    counts = {}
    for name, had_eta, chain in (("behind", 0.55, ()), ("beside", 0.65, (0.5375, 0.5625, 0.5875, 0.6125))):
        e = np.zeros((1, geo.n_cells))
        e[0, a] = 3.0
        for x in chain:
            e[0, cell(EM_SAMPLINGS["middle"], x, 0.5)] = 0.3
        h = cell(HAD_RANK, had_eta, 0.5)
        back = overlapping(h, EM_SAMPLINGS["back"])
        e[0, h] = 2.0
        e[0, back] = 0.2
        assert a not in overlapping(h, EM_SAMPLINGS["middle"])  # no direct overlap: the back lies between
        behind = {m for b in back for m in overlapping(b, EM_SAMPLINGS["middle"])}
        assert (a in behind) == (name == "behind")
        counts[name] = topo_cluster(CellEnergies(e, sigma, e.copy(), geo), np.zeros(1)).clusters.counts[0]
    assert counts == {"behind": 1, "beside": 2}


def test_bad_sampling_keys_are_config_errors(tmp_path):
    row = "{name: X, layer: %d, eta_lo: 0, eta_hi: 1, n_eta: 2, n_phi: 4, sampling: 0.1, constant: 0, noise_gev: 0.1%s}"
    for text, match in ((row % (1, ", em_sampling: strips"), "EM regions"),
                        (row % (0, ", em_sampling: presampler"), "em_sampling must be one of strips, middle, back"),
                        (row % (0, ", depth_x0: [5, 2]"), "depth_x0 must be")):
        bad = tmp_path / "geo.yaml"
        bad.write_text(f"regions:\n  - {text}\n  - {row % (1, '')}\n")
        with pytest.raises(ConfigError, match=match):
            load_geometry(str(bad))
