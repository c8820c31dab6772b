"""The compiled topo-clustering kernel (lhcml.sim.topoclusters) against a plain-Python reference.

The kernel is written for speed (a cell-state array that doubles as the label array, a threshold
pre-filter before the division, in-place marks while splitting); the reference below follows the
module doc step by step with sets, dicts and a deque. On random cell maps (noise + showers in both
compartments) of two geometries — the shipped one (EM cells 0.025 × 2π/256, a hadronic cell
overlapping 4 × 4 EM cells) and one with the earlier 0.05 × 2π/128 EM cells (2 × 2) — both must
give the same clusters, cell by cell, with the same numbering.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from lhcml.sim.jet_calo import load_geometry
from lhcml.sim.topoclusters import (
    GROW_SIGMA,
    SEED_SIGMA,
    SPLIT_E_GEV,
    SPLIT_MIN_NEIGHBOURS,
    _topo_batch,
)

#: a small calorimeter with the earlier EM granularity (0.05 × 2π/128) over |η| < 1
COARSE_GEOMETRY = """
radius_mm: 1500.0
regions:
  - {name: em, layer: 0, eta_lo: 0.0, eta_hi: 1.0, n_eta: 20, n_phi: 128, sampling: 0.1, constant: 0.007, noise_gev: 0.04}
  - {name: had, layer: 1, eta_lo: 0.0, eta_hi: 1.0, n_eta: 10, n_phi: 64, sampling: 0.5, constant: 0.03, noise_gev: 0.05}
"""


def _reference_event(e, sigma, geo):
    """4-2-0 clusters with splitting, as the module doc states them; returns {cell: cluster} and
    the number of clusters, plus how many proto-cluster merges and splits happened."""
    nb = [geo.nb_index[geo.nb_offsets[c] : geo.nb_offsets[c + 1]].tolist() for c in range(len(e))]
    sig = e / sigma
    seeds = sorted(np.flatnonzero(sig > SEED_SIGMA).tolist(), key=lambda c: -sig[c])
    # growth: proto-clusters from the seeds, breadth first; a grown cell (|E|/σ > 2) touching
    # another proto-cluster's grown cell merges the two
    proto = {c: k for k, c in enumerate(seeds)}
    merged = {k: {k} for k in range(len(seeds))}  # proto-cluster -> set of protos merged with it
    n_merges = 0
    queue = deque(seeds)
    while queue:
        c = queue.popleft()
        for m in nb[c]:
            if m not in proto:
                proto[m] = proto[c]
                if abs(sig[m]) > GROW_SIGMA:
                    queue.append(m)
            elif abs(sig[m]) > GROW_SIGMA and merged[proto[m]] is not merged[proto[c]]:
                union = merged[proto[c]] | merged[proto[m]]
                for k in union:
                    merged[k] = union
                n_merges += 1
    # clusters numbered in the order of their highest seed
    number = {}
    for k in range(len(seeds)):
        number.setdefault(min(merged[k]), len(number))
    cluster = {c: number[min(merged[k])] for c, k in proto.items()}
    n_cl = len(number)
    # splitting at local maxima
    next_id, n_splits = n_cl, 0
    for k in range(n_cl):
        members = sorted(c for c, q in cluster.items() if q == k)
        inside = set(members)

        def maximum(c, layers, inside=inside):
            around = [m for m in nb[c] if m in inside]
            return len(around) >= SPLIT_MIN_NEIGHBOURS and not any(
                e[m] > e[c] for m in around if geo.layer[m] in layers)

        primary = [c for c in members if geo.layer[c] == 0 and e[c] > SPLIT_E_GEV and maximum(c, (0,))]
        secondary = [c for c in members if geo.layer[c] == 1 and e[c] > SPLIT_E_GEV and maximum(c, (0, 1))
                     and not any(m in primary for m in nb[c] if m in inside)]
        maxima = sorted(primary + secondary, key=lambda c: -e[c])
        if len(maxima) < 2:
            continue
        new = {c: (k if q == 0 else next_id + q - 1) for q, c in enumerate(maxima)}
        queue = deque(maxima)
        while queue:
            c = queue.popleft()
            for m in nb[c]:
                if m in inside and m not in new:
                    new[m] = new[c]
                    queue.append(m)
        cluster.update(new)
        next_id += len(maxima) - 1
        n_splits += 1
    return cluster, next_id, n_merges, n_splits


def _cell_map(geo, rng, n_showers=40):
    """Noise everywhere plus showers of 1-60 GeV: EM-like (narrow, in the EM cells) and
    hadron-like (wide, shared between the compartments), some close enough to touch."""
    e = geo.noise * rng.standard_normal(geo.n_cells)
    centre_eta = rng.uniform(-0.9, 0.9, n_showers)
    centre_phi = rng.uniform(-np.pi, np.pi, n_showers)
    # pairs of nearby showers: clusters that merge and then split
    centre_eta[1::2] = centre_eta[::2][: len(centre_eta[1::2])] + rng.normal(0, 0.08, len(centre_eta[1::2]))
    centre_phi[1::2] = centre_phi[::2][: len(centre_phi[1::2])] + rng.normal(0, 0.08, len(centre_phi[1::2]))
    energy = rng.uniform(1.0, 60.0, n_showers)
    hadronic = rng.random(n_showers) < 0.5
    for eta0, phi0, en, had in zip(centre_eta, centre_phi, energy, hadronic, strict=True):
        width = 0.045 if had else 0.015
        dphi = (geo.phi - phi0 + np.pi) % (2 * np.pi) - np.pi
        profile = np.exp(-0.5 * ((geo.eta - eta0) ** 2 + dphi**2) / width**2)
        for layer, share in ((0, 0.4 if had else 0.95), (1, 0.6 if had else 0.05)):
            m = geo.layer == layer
            e[m] += en * share * profile[m] / profile[m].sum()
    return e


@pytest.mark.parametrize("grid", ["shipped 0.025 EM cells", "0.05 EM cells"])
def test_topo_kernel_equals_the_reference_implementation(grid, tmp_path):
    if grid == "shipped 0.025 EM cells":
        geo = load_geometry()
    else:
        path = tmp_path / "coarse.yaml"
        path.write_text(COARSE_GEOMETRY)
        geo = load_geometry(str(path))
    rng = np.random.default_rng(20261203)
    energy = np.stack([_cell_map(geo, rng) for _ in range(2)])
    sigma = geo.noise.copy()
    cell, cl, cell_e, counts = _topo_batch(energy, sigma, geo)
    first_cluster = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ev = np.repeat(np.arange(len(counts)), counts)[cl]
    lab = cl - first_cluster[ev]  # cluster number inside its event
    merges = splits = 0
    for i in range(len(energy)):
        cluster, n_cl, n_merges, n_splits = _reference_event(energy[i], sigma, geo)
        merges, splits = merges + n_merges, splits + n_splits
        assert counts[i] == n_cl
        mine = ev == i
        # the kernel's cells: grouped by cluster, increasing cell index inside a cluster
        ref = sorted(cluster.items(), key=lambda item: (item[1], item[0]))
        np.testing.assert_array_equal(cell[mine], [c for c, _ in ref])
        np.testing.assert_array_equal(lab[mine], [q for _, q in ref])
        np.testing.assert_array_equal(cell_e[mine], energy[i, cell[mine]])
    # the maps exercise what the kernel does differently: merging proto-clusters and splitting
    assert merges > 0 and splits > 0
    assert counts.min() > 10


def test_a_calorimeter_above_threshold_everywhere_is_one_cluster(tmp_path):
    """Every cell a seed (the growth queue holds all cells: its last slot is used) and no cell above
    the 0.5 GeV splitting threshold: one cluster with every cell, as the reference gives."""
    path = tmp_path / "coarse.yaml"
    path.write_text(COARSE_GEOMETRY)
    geo = load_geometry(str(path))
    energy = (5.0 * geo.noise)[None, :].copy()
    cell, cl, cell_e, counts = _topo_batch(energy, geo.noise.copy(), geo)
    assert counts.tolist() == [1]
    np.testing.assert_array_equal(cell, np.arange(geo.n_cells))
    np.testing.assert_array_equal(cl, np.zeros(geo.n_cells))
    cluster, n_cl, _, _ = _reference_event(energy[0], geo.noise, geo)
    assert n_cl == 1 and len(cluster) == geo.n_cells
