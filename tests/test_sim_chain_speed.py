"""The jet chain's faster kernels give, bit for bit, what the previous ones gave.

Kept here as references only (frozen copies of the previous code):

* :func:`_reference_topo_grow` — the growth that listed the clustered cells by a scan of all labels
  (now :func:`lhcml.sim.topoclusters._topo_grow` takes them from a bit set);
* :func:`_reference_assemble` with :func:`_reference_cluster_sums` and :func:`_reference_keep_cells`
  — the cluster assembly that summed every cluster's cells and dropped the clusters with E <= 0 in
  separate passes after the clustering (now the kernel's emission does both,
  :func:`lhcml.sim.topoclusters._emit_kept`, and particle flow reuses the sums of the clusters it
  does not touch).

The comparisons run on tt̄ at μ = 0 and μ = 40 (the chain's own inputs) and on constructed cases.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from lhcml.sim import pflow
from lhcml.sim import topoclusters as tc
from lhcml.sim.generator import FlatTable
from lhcml.sim.jet_calo import (
    STENCIL_MAX_CELLS,
    _gauss_bins,
    _stencil,
    deposit_chunks,
    load_geometry,
    readout_chunks,
    shower_particles,
)

# --- frozen references ----------------------------------------------------------------------------


@numba.njit
def _reference_find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit
def _reference_topo_grow(seeds, seed_sig, nb_off, nb_idx, label, queue):
    if seeds.shape[0] == 0:
        return 0, seeds
    order = np.argsort(-seed_sig)
    seeds = seeds[order]
    ns = seeds.shape[0]
    parent = np.arange(ns)
    head = 0
    tail = 0
    for k in range(ns):
        label[seeds[k]] = 2 * k + 1
        queue[tail] = seeds[k]
        tail += 1
    while head < tail:
        c = queue[head]
        head += 1
        lc = label[c] >> 1
        ra = -1
        for j in range(nb_off[c], nb_off[c + 1]):
            m = nb_idx[j]
            v = label[m]
            if v < 0:
                g = -1 - v
                label[m] = 2 * lc + g
                queue[tail] = m
                tail += g
            elif (v & 1) == 1 and (v >> 1) != lc:
                if ra < 0:
                    ra = _reference_find(parent, lc)
                rb = _reference_find(parent, v >> 1)
                if ra < rb:
                    parent[rb] = ra
                elif rb < ra:
                    parent[ra] = rb
                    ra = rb
    root_id = np.full(ns, -1, np.int64)
    n_cl = 0
    for k in range(ns):
        r = _reference_find(parent, k)
        if root_id[r] == -1:
            root_id[r] = n_cl
            n_cl += 1
    seed_cl = np.empty(ns, np.int64)
    for k in range(ns):
        seed_cl[k] = root_id[_reference_find(parent, k)]
    cells = np.flatnonzero(label >= 0)
    for c in cells:
        label[c] = seed_cl[label[c] >> 1]
    return n_cl, cells


@numba.njit
def _reference_cluster_sums(cell_id, cell_energy, cell_cluster, n_clusters, g_eta, g_cos, g_sin, g_layer):
    out = np.zeros((6, n_clusters))
    for i in range(cell_id.shape[0]):
        c = cell_id[i]
        k = cell_cluster[i]
        e = cell_energy[i]
        out[0, k] += e
        if g_layer[c] == 0:
            out[1, k] += e
        if e > 0:
            out[2, k] += e
            out[3, k] += e * g_eta[c]
            out[4, k] += e * g_cos[c]
            out[5, k] += e * g_sin[c]
    return out


@numba.njit
def _reference_keep_cells(cell_id, cell_energy, cell_cluster, keep):
    new = np.empty(keep.shape[0], np.int64)
    n_keep = 0
    for q in range(keep.shape[0]):
        new[q] = n_keep
        if keep[q]:
            n_keep += 1
    n = 0
    for i in range(cell_cluster.shape[0]):
        if keep[cell_cluster[i]]:
            n += 1
    o_id = np.empty(n, cell_id.dtype)
    o_e = np.empty(n, cell_energy.dtype)
    o_cl = np.empty(n, np.int64)
    n_cells = np.zeros(n_keep, np.int64)
    j = 0
    for i in range(cell_cluster.shape[0]):
        q = cell_cluster[i]
        if keep[q]:
            o_id[j] = cell_id[i]
            o_e[j] = cell_energy[i]
            o_cl[j] = new[q]
            n_cells[new[q]] += 1
            j += 1
    return o_id, o_e, o_cl, n_cells


@numba.njit
def _reference_deposit(event, block, eta, phi, energy, sigma, pileup, b_lo, b_hi, b_ne, b_np, b_off, n_cells, total,
                       pile):
    """The previous ``jet_calo._deposit`` (φ column wrapped per cell)."""
    fe = np.empty(STENCIL_MAX_CELLS)
    fp = np.empty(STENCIL_MAX_CELLS)
    for i in range(eta.shape[0]):
        b = block[i]
        ne = b_ne[b]
        nphi = b_np[b]
        deta = (b_hi[b] - b_lo[b]) / ne
        dphi = 2 * np.pi / nphi
        ie = min(max(int(np.floor((eta[i] - b_lo[b]) / deta)), 0), ne - 1)
        ip = int(np.floor((phi[i] + np.pi) / dphi))
        je0, nje = _stencil(eta[i], sigma[i], b_lo[b], deta, ie)
        jp0, njp = _stencil(phi[i], sigma[i], -np.pi, dphi, ip)
        njp = min(njp, nphi)
        ip = ip % nphi
        _gauss_bins(eta[i], b_lo[b], deta, ne, je0, nje, sigma[i], fe)
        _gauss_bins(phi[i], -np.pi, dphi, -1, jp0, njp, sigma[i], fp)
        base = event[i] * n_cells + b_off[b]
        for k in range(nje):
            if fe[k] == 0.0:
                continue
            je = je0 + k
            ek = energy[i] * fe[k]
            for m in range(njp):
                jp = (jp0 + m) % nphi
                e = ek * fp[m]
                c = base + je * nphi + jp
                total[c] += e
                if pileup[i]:
                    pile[c] += e


def _reference_locate(geo, layer, eta):
    """The previous ``jet_calo.locate`` (numpy searchsorted per compartment)."""
    out = np.full(len(eta), -1, np.int64)
    for lay in (0, 1):
        bl = np.flatnonzero(geo.b_layer == lay)
        edges = np.append(geo.b_eta_lo[bl], geo.b_eta_hi[bl[-1]])
        m = layer == lay
        j = np.searchsorted(edges, eta[m], side="right") - 1
        ok = (j >= 0) & (j < len(bl))
        out[np.flatnonzero(m)[ok]] = bl[j[ok]]
    return out


def _reference_assemble(geo, cell_id, cell_cluster, cell_energy, counts, pv_z):
    """The previous ``_assemble``: (cluster table columns, counts, cell_id, cell_energy, cell_cluster)."""
    n_ev = len(counts)
    n_cl = int(np.sum(counts))
    cl_event = np.repeat(np.arange(n_ev), counts)
    s = _reference_cluster_sums(cell_id, cell_energy, cell_cluster, n_cl, geo.eta, geo.cos_phi, geo.sin_phi,
                                geo.layer)
    e, e_em, sw = s[0], s[1], s[2]
    eta0 = s[3] / np.maximum(sw, 1e-12)
    phi = np.arctan2(s[5], s[4])
    eta = np.arcsinh(np.sinh(eta0) - np.asarray(pv_z, float)[cl_event] / geo.radius)
    frac = np.clip(e_em / np.where(e > 0, e, 1.0), 0.0, 1.0)
    keep = (e > 0) & (sw > 0)
    cell_id, cell_energy, cell_cluster, n_cells = _reference_keep_cells(cell_id, cell_energy, cell_cluster, keep)
    e, eta, phi, frac, cl_event = e[keep], eta[keep], phi[keep], frac[keep], cl_event[keep]
    w, p_em = tc.lcw_weight(e, frac, geo)
    e_lcw = e * w
    cols = {"E": e_lcw, "pt": e_lcw / np.cosh(eta), "eta": eta, "phi": phi, "mass": np.zeros(len(e)), "E_em": e,
            "em_fraction": frac, "p_em": p_em, "n_cells": n_cells}
    return cols, np.bincount(cl_event, minlength=n_ev), cell_id, cell_energy, cell_cluster, int((~keep).sum())


# --- inputs --------------------------------------------------------------------------------------


def _chain_inputs(monkeypatch, mu: float, n: int, seed: int):
    """The inputs of the calorimeter and of particle flow in the simulation chain (tt̄)."""
    from lhcml.sim.events import simulate_events
    from lhcml.sim.pileup import build_pileup_library

    saved = {}
    topo_f, pf_f = tc.simulate_topo_clusters, pflow.build_pflow_flat

    def keep_topo(particles, pv_z, rng, mu=None, n_pileup=None, sparse_noise=True):
        saved["topo"] = (particles, pv_z, mu, n_pileup)
        return topo_f(particles, pv_z, rng, mu, n_pileup, sparse_noise)

    def keep_pf(*args, **kwargs):
        saved["pf"] = (args, kwargs)
        return pf_f(*args, **kwargs)

    monkeypatch.setattr(tc, "simulate_topo_clusters", keep_topo)
    monkeypatch.setattr(pflow, "build_pflow_flat", keep_pf)
    library = build_pileup_library(20, seed + 1) if mu > 0 else None
    simulate_events("ttbar", n, mu=mu, seed=seed, pileup=library)
    monkeypatch.setattr(tc, "simulate_topo_clusters", topo_f)
    monkeypatch.setattr(pflow, "build_pflow_flat", pf_f)
    return saved


def _states(energy, sigma):
    """Cell states (-2 above the growth threshold, else -1), seeds and their significances, as the
    kernels make them."""
    s = energy / sigma
    label = np.full(len(energy) + 1, -1, np.int32)
    label[:-1][np.abs(s) > tc.GROW_SIGMA] = -2
    seeds = np.flatnonzero(s > tc.SEED_SIGMA)
    return label, seeds, s[seeds]


def _both_grows(label, seeds, sig, geo):
    n = len(label)
    lab_new, lab_ref = label.copy(), label.copy()
    bits = np.zeros((n + 63) // 64, np.uint64)
    new = tc._topo_grow(seeds, sig, geo.nb_offsets, geo.nb_index, lab_new, np.empty(n, np.int32), bits)
    ref = _reference_topo_grow(seeds, sig, geo.nb_offsets, geo.nb_index, lab_ref, np.empty(n, np.int32))
    assert new[0] == ref[0] and np.array_equal(new[1], ref[1]) and np.array_equal(lab_new, lab_ref)
    assert not bits.any()  # the bit set is left cleared for the next event
    return new


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [0.0, 40.0])
def test_growth_equals_the_reference_on_ttbar_cell_maps(monkeypatch, mu):
    saved = _chain_inputs(monkeypatch, mu, 3, 606)
    particles, pv_z, mu_b, n_pu = saved["topo"]
    geo = load_geometry()
    rng = np.random.default_rng(8)
    deps = shower_particles(particles, rng, geo)
    sigma, chunks = readout_chunks(deps, len(particles), np.asarray(n_pu, float), float(mu_b), rng, geo)
    n_cells = 0
    for _, energy in chunks:
        for row in energy:
            n_cl, cells = _both_grows(*_states(row, sigma), geo)
            assert n_cl > 10
            n_cells += len(cells)
    assert n_cells > 3 * 3000


def test_growth_equals_the_reference_on_constructed_maps():
    """Seeds on the first and last cells and on 64-cell word boundaries of the bit set, no seed,
    and every cell above the growth threshold (the whole calorimeter one cluster)."""
    geo = load_geometry()
    n = geo.n_cells
    e = np.zeros(n)
    edge = np.array([0, 63, 64, 127, 128, n // 2, n - 65, n - 64, n - 1])
    e[edge] = 10.0
    _both_grows(*_states(e, geo.noise), geo)
    n_cl, cells = _both_grows(*_states(np.zeros(n), geo.noise), geo)
    assert n_cl == 0 and len(cells) == 0
    n_cl, cells = _both_grows(*_states(3.0 * geo.noise, geo.noise), geo)
    assert n_cl == 0  # above the growth threshold everywhere, no seed: nothing
    full = 5.0 * geo.noise
    n_cl, cells = _both_grows(*_states(full, geo.noise), geo)
    assert n_cl == 1 and np.array_equal(cells, np.arange(n))


@pytest.mark.parametrize("mu", [0.0, 40.0])
def test_clusters_and_particle_flow_equal_the_reference_assembly_on_ttbar(monkeypatch, mu):
    """The chain's topo-clusters (kept clusters and their sums made in the kernel's emission) equal
    the previous assembly on the same clustered cells, every field bit for bit, with and without
    the sparse readout; particle flow's neutral objects (sums reused for untouched clusters) equal a
    full recomputation from the cells."""
    saved = _chain_inputs(monkeypatch, mu, 10 if mu == 0 else 4, 707)
    particles, pv_z, mu_b, n_pu = saved["topo"]
    geo = load_geometry()
    dropped = 0
    for sparse in (True, False):
        new = tc.simulate_topo_clusters(particles, pv_z, np.random.default_rng(5), mu_b, n_pu, sparse_noise=sparse)
        # the previous path: every cluster out of the kernel, then the separate passes
        rng = np.random.default_rng(5)
        deps = shower_particles(particles, rng, geo)
        work = tc._TopoWork(len(particles), geo.n_cells)
        n_pu_f = np.asarray(n_pu, float)
        if sparse:
            noise, chunks = deposit_chunks(deps, len(particles), n_pu_f, float(mu_b), tc.GROW_SIGMA,
                                           tc.SEED_SIGMA, geo)
            for first, deposits in chunks:
                work.add_sparse(deposits, noise, rng, first, geo)
        else:
            sigma, chunks = readout_chunks(deps, len(particles), n_pu_f, float(mu_b), rng, geo)
            for first, energy in chunks:
                work.add(energy, sigma, first, geo)
        cols, counts, cell_id, cell_e, cell_cl, n_drop = _reference_assemble(geo, *work.result(), pv_z)
        dropped += n_drop
        assert np.array_equal(new.clusters.counts, counts)
        assert sorted(new.clusters.columns) == sorted(cols)
        for name, ref in cols.items():
            got = new.clusters[name]
            assert got.dtype == ref.dtype and np.array_equal(got, ref), name
        for got, ref in ((new.cell_id, cell_id), (new.cell_energy, cell_e), (new.cell_cluster, cell_cl)):
            assert got.dtype == ref.dtype and np.array_equal(got, ref)
        # the sums handed to particle flow are those of the cells
        ref_sums = _reference_cluster_sums(cell_id, cell_e, cell_cl, int(counts.sum()), geo.eta, geo.cos_phi,
                                           geo.sin_phi, geo.layer)
        assert np.array_equal(new.cluster_sums, ref_sums)
    assert dropped > 0  # the samples have clusters with E <= 0, which both paths drop
    # particle flow: the same objects with the clustering's sums reused and with every cluster resummed
    (particles_pf, tracks, pv_pf, _), kwargs = saved["pf"]
    out = pflow.build_pflow_flat(particles_pf, tracks, pv_pf, np.random.default_rng(1), **kwargs)
    topo = kwargs["topo"]
    no_sums = tc.TopoClusters(topo.clusters, topo.cell_id, topo.cell_energy, topo.cell_cluster, topo.geometry)
    ref = pflow.build_pflow_flat(particles_pf, tracks, pv_pf, np.random.default_rng(1),
                                 **{**kwargs, "topo": no_sums})
    assert np.array_equal(out.offsets, ref.offsets) and sorted(out.columns) == sorted(ref.columns)
    for name in ref.columns:
        assert out[name].dtype == ref[name].dtype and np.array_equal(out[name], ref[name]), name
    assert np.sum(out["kind"] <= pflow.KIND_NEUTRAL_HADRON) > 20  # neutral objects compared


def test_the_random_stream_after_clustering_is_unchanged(monkeypatch):
    """The chain's clustering (kept clusters, zeroed buffer) uses the batch generator exactly as the
    previous path: the generator's next draws agree."""
    saved = _chain_inputs(monkeypatch, 0.0, 4, 909)
    particles, pv_z, mu_b, n_pu = saved["topo"]
    geo = load_geometry()
    r_new = np.random.default_rng(12)
    tc.simulate_topo_clusters(particles, pv_z, r_new, mu_b, n_pu)
    r_ref = np.random.default_rng(12)
    deps = shower_particles(particles, r_ref, geo)
    work = tc._TopoWork(len(particles), geo.n_cells)
    noise, chunks = deposit_chunks(deps, len(particles), np.asarray(n_pu, float), float(mu_b), tc.GROW_SIGMA,
                                   tc.SEED_SIGMA, geo)
    for first, deposits in chunks:
        work.add_sparse(deposits, noise, r_ref, first, geo)
    assert np.array_equal(r_new.random(8), r_ref.random(8))


def test_cleared_deposit_buffer_gives_the_same_clusters_and_is_all_zero():
    """``clear``: the kernel leaves the deposit buffer all zeros (so the next chunk is not zeroed
    again) and clusters exactly as without it."""
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.processes import get_process

    particles = PythiaGenerator(get_process("ttbar"), 21).init().generate(5).flat("particles")
    geo = load_geometry()
    res = []
    for clear in (False, True):
        rng = np.random.default_rng(3)
        deps = shower_particles(particles, rng, geo)
        noise, chunks = deposit_chunks(deps, len(particles), np.zeros(len(particles)), 0.0, tc.GROW_SIGMA,
                                       tc.SEED_SIGMA, geo, chunk=2, cleared=clear)
        work = tc._TopoWork(len(particles), geo.n_cells, with_sums=True, geo=geo)
        for first, deposits in chunks:
            work.add_sparse(deposits, noise, rng, first, geo, clear=clear)
            assert np.all(deposits == 0.0) == clear
        res.append(work.result())
    for a, b in zip(*res, strict=True):
        assert np.array_equal(a, b)
    assert res[0][3].sum() > 50


def test_subtraction_marks_every_cluster_it_changes(monkeypatch):
    """Particle flow recomputes only the clusters the subtraction marks changed: every cluster
    whose cells differ after the subtraction is marked (tt̄, μ = 0)."""
    saved = _chain_inputs(monkeypatch, 0.0, 6, 808)
    args = []
    kernel = pflow._subtract

    def keep(*a):
        args.append([x.copy() if isinstance(x, np.ndarray) else x for x in a])
        return kernel(*a)

    monkeypatch.setattr(pflow, "_subtract", keep)
    (particles, tracks, pv_z, _), kwargs = saved["pf"]
    pflow.build_pflow_flat(particles, tracks, pv_z, np.random.default_rng(1), **kwargs)
    (a,) = args
    before = a[7].copy()
    changed = np.zeros_like(a[18])
    kernel(*a[:7], a[7], *a[8:18], changed, a[19])
    cc_off = a[3]
    diff = np.array([not np.array_equal(a[7][cc_off[q]:cc_off[q + 1]], before[cc_off[q]:cc_off[q + 1]])
                     for q in range(len(cc_off) - 1)])
    assert diff.sum() > 10
    assert np.all(changed[diff])
    assert changed.sum() < len(changed)  # untouched clusters exist, so the reuse matters


def test_particle_flow_groups_unsorted_cells_as_before():
    """Cells not grouped by cluster (a hand-made TopoClusters: the clusters' cell blocks in reverse
    order) are sorted by cluster first: the objects equal those of the same clusters given grouped."""
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.processes import get_process

    particles = PythiaGenerator(get_process("ttbar"), 31).init().generate(3).flat("particles")
    pv_z = np.zeros(len(particles))
    topo = tc.simulate_topo_clusters(particles, pv_z, np.random.default_rng(2), 0.0)
    perm = np.argsort(-topo.cell_cluster, kind="stable")  # each cluster's cells keep their order
    shuffled = tc.TopoClusters(topo.clusters, topo.cell_id[perm], topo.cell_energy[perm], topo.cell_cluster[perm],
                               topo.geometry)
    a = pflow.build_pflow_flat(particles, None, pv_z, np.random.default_rng(1), topo=topo)
    b = pflow.build_pflow_flat(particles, None, pv_z, np.random.default_rng(1), topo=shuffled)
    assert isinstance(a, FlatTable) and len(a["E"]) > 20
    for name in a.columns:
        assert np.array_equal(a[name], b[name]), name


def test_locate_equals_the_reference_including_edges_and_non_finite_values():
    from lhcml.sim.jet_calo import locate

    geo = load_geometry()
    rng = np.random.default_rng(4)
    edges = np.concatenate([geo.b_eta_lo, geo.b_eta_hi])
    eta = np.concatenate([rng.uniform(-6.0, 6.0, 20000), edges, np.nextafter(edges, -9.0), np.nextafter(edges, 9.0),
                          [np.nan, np.inf, -np.inf, 0.0, -0.0]])
    for layer in (rng.integers(0, 2, len(eta)), np.zeros(len(eta), np.int64), np.ones(len(eta), np.int64)):
        got, ref = locate(geo, layer, eta), _reference_locate(geo, layer, eta)
        assert got.dtype == ref.dtype and np.array_equal(got, ref)
    assert np.all(locate(geo, np.zeros(3, np.int64), np.array([np.nan, 5.0, -5.0])) == -1)


def test_deposits_equal_the_reference_with_pileup_and_across_phi():
    """The cell sums of the deposit kernel (φ columns wrapped once per deposit) equal the previous
    kernel's, total and pile-up-only, on tt̄ + pile-up particles and on deposits at φ = ±π."""
    from lhcml.sim import jet_calo as jc
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.processes import get_process

    geo = load_geometry()
    particles = PythiaGenerator(get_process("ttbar"), 41).init().generate(3).flat("particles")
    deps = shower_particles(particles, np.random.default_rng(6), geo)
    pileup = np.random.default_rng(7).random(len(deps.eta)) < 0.3
    phi = deps.phi.copy()
    phi[:40] = np.where(np.arange(40) % 2 == 0, np.pi - 1e-4, -np.pi + 1e-4)  # stencils across the seam
    deps = jc.ParticleDeposits(deps.event, deps.eta, phi, deps.e_layer, deps.kind, pileup)
    n = geo.n_cells * len(particles)
    for m, blk, sig, e in jc._layer_deposits(deps, geo):
        args = (deps.event[m], blk, deps.eta[m], deps.phi[m], e, sig, deps.pileup[m], geo.b_eta_lo, geo.b_eta_hi,
                geo.b_n_eta, geo.b_n_phi, geo.b_offset, geo.n_cells)
        got, ref = (np.zeros(n), np.zeros(n)), (np.zeros(n), np.zeros(n))
        jc._deposit(*args, *got)
        _reference_deposit(*args, *ref)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
        assert got[1].sum() > 0 and got[0].sum() > got[1].sum()


def test_prefetch_is_a_hint_only_and_rejects_what_it_cannot_address():
    """:func:`lhcml.sim.prefetch.prefetch` (the growth and splitting prefetch neighbour lists with it)
    changes nothing: a compiled walk that prefetches every element ahead, beyond the end included,
    returns the plain sum of every dtype the kernels use; a 2-d array or a float index is refused
    at compile time instead of being addressed wrongly."""
    from numba.core.errors import TypingError

    from lhcml.sim.prefetch import prefetch

    @numba.njit
    def walk(a, ahead):
        s = 0.0
        for i in range(a.shape[0]):
            prefetch(a, i + ahead)  # up to `ahead` past the end: a hint never faults
            s += a[i]
        return s

    @numba.njit
    def plain(a):
        s = 0.0
        for i in range(a.shape[0]):
            s += a[i]
        return s

    rng = np.random.default_rng(4)
    for dtype in (np.int32, np.int64, np.float32, np.float64):
        a = (rng.random(1000) * 100).astype(dtype)
        before = a.copy()
        assert walk(a, 12) == walk(a, 0) == plain(a) == pytest.approx(float(np.sum(a, dtype=np.float64)))
        assert np.array_equal(a, before)

    @numba.njit
    def bad_2d(a):
        prefetch(a, 0)

    @numba.njit
    def bad_index(a):
        prefetch(a, 0.5)

    with pytest.raises(TypingError):
        bad_2d(np.zeros((3, 3)))
    with pytest.raises(TypingError):
        bad_index(np.zeros(3))
