"""Topological cell clustering (4-2-0) with splitting, EM scale and a local hadronic calibration.

The ATLAS algorithm (EPJC 77 (2017) 490), on the cells of :mod:`lhcml.sim.jet_calo`:

* **Seeds**: cells with significance ``E/σ > 4`` (``σ`` = electronic ⊕ pileup noise of the cell),
  in decreasing significance.
* **Growth**: neighbours (same compartment incl. corners, overlapping cells of the other
  compartment) are added; those with ``|E|/σ > 2`` are grown further; two proto-clusters that
  touch through a ``|E|/σ > 2`` cell are merged. Perimeter cells (threshold 0: any energy) go to the
  first cluster that reaches them.
* **Splitting** (as ATLAS's ``CaloTopoClusterSplitter``, ``docs/references.md §26``): local maxima
  have ``E > 0.5 GeV`` and at least four neighbours in the cluster. *Primary* maxima are EM-compartment
  cells (ATLAS: EMB2/EMB3, EME2/EME3, FCal0) with no EM neighbour in the cluster above them (cells
  of the other compartment neither make nor prevent a primary maximum); *secondary* maxima are
  hadronic cells (ATLAS: Tile, HEC, FCal1/2) above all their neighbours in the cluster and not
  overlapping a primary maximum (the same shower seen in both compartments) — overlapping directly or,
  walked sampling by sampling, through the cells of the samplings between (with ``em_samplings`` a
  hadronic maximum behind the back sampling is vetoed by a middle maximum in front of it, as ATLAS's
  splitter does, ``docs/references.md §30``; since December 4, 2026, thirteenth version of
  ``docs/benchmarks/sim_large_r.md``; on one EM layer the walk changes nothing). A cluster with two or more maxima is split by regrowing from
  the maxima (largest first) inside the cluster; a cell reached by two maxima goes to the first
  (ATLAS shares it with geometric weights — a simplification, our choice). Until December 2026
  maxima were compared with the neighbours of *both* compartments: an EM maximum in front of a
  larger (4× wider) hadronic cell never counted, so hadron-rich W/top prongs stayed one cluster
  (``docs/benchmarks/sim_large_r.md``, "Fifth version"). Since the sixth version the EM cells
  have ATLAS's EMB2/EME2 size, 0.025 × 2π/256 (were 0.05 × 2π/128); a hadronic cell overlaps 4 × 4
  of them, and the neighbour lists map the two compartments by overlap, whatever their sizes.
  With ``jet_geometry("one_em_layer_primary")`` (:mod:`lhcml.sim.jet_calo`, an option) the one-layer EM
  cells keep the part of their deposits in ATLAS's strips depth (0–4.3 X0, |η| < 2.5, from each
  particle's longitudinal profile, no extra random draws); the primary maxima are then found in the
  rest (threshold and EM-neighbour comparison), as ATLAS's splitter looks in EMB2/EMB3 only; the
  readout noise and mean-pileup subtraction stay with that rest (the middle cell's noise). Cluster
  energies, growth and the 4-2-0 thresholds are unchanged.
* **Kinematics**: energy = sum of the cell energies (EM scale); direction = energy-weighted
  barycentre of the positive cells (φ averaged on the circle), seen from the detector origin and
  then corrected to the primary vertex (``sinh η' = sinh η − z_PV / R``); clusters with E ≤ 0 are
  dropped. ``em_fraction`` = fraction of the energy in the EM compartment.
* **Local hadronic calibration (LCW-like)**: a cluster is EM-like with probability
  ``p_EM = clip((em_fraction − 0.8) / 0.15, 0, 1)`` (a depth classifier; our choice, EM showers put
  > 95 % of their energy in the EM compartment); hadronic clusters are weighted by the inverse
  mean pion response of the calorimeter model, ``1 / (f̄ + (1 − f̄)/(e/h))`` at the cluster's
  estimated true energy (known e/h and Groom EM fraction, :func:`lhcml.sim.jet_calo.pion_response`);
  weight ``w = p_EM + (1 − p_EM) w_had``. Out-of-cluster and dead-material corrections are not
  modelled (the jet calibration absorbs them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from lhcml.sim.cell_noise import NO_VALUE, PENDING, SparseNoise, finish_values, read_event
from lhcml.sim.generator import FlatTable
from lhcml.sim.jet_calo import CaloGeometry, CellEnergies, pion_response
from lhcml.sim.prefetch import prefetch

SEED_SIGMA = 4.0
GROW_SIGMA = 2.0
PERIMETER_SIGMA = 0.0
#: local-maximum energy for cluster splitting (GeV; ATLAS 500 MeV)
SPLIT_E_GEV = 0.5
#: a local maximum needs at least this many same-compartment neighbours in its cluster (ATLAS: 4)
SPLIT_MIN_NEIGHBOURS = 4
#: EM-like classification of clusters by their EM-compartment fraction (our choice)
EM_LIKE_LO, EM_LIKE_HI = 0.80, 0.95


#: queue entries ahead of the current one whose neighbour lists are prefetched (our choice)
PREFETCH_AHEAD = 12


@numba.njit(cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(cache=True)
def _mark_bit(bits, c):
    bits[c >> 6] |= np.uint64(1) << np.uint64(c & 63)


@numba.njit(cache=True)
def _take_bits(bits, n):
    """The ``n`` cells marked in the bit set ``bits`` (one bit per cell), increasing; clears them.
    (A scan of n_cells / 64 words instead of one of the n_cells labels.)"""
    cells = np.empty(n, np.int64)
    j = 0
    one = np.uint64(1)
    for w in range(bits.shape[0]):
        x = bits[w]
        if x == 0:
            continue
        bits[w] = 0
        base = w << 6
        while x != 0:
            cells[j] = base + trailing_zeros(x)
            j += 1
            x &= x - one
    return cells


@numba.njit(cache=True)
def _topo_grow(seeds, seed_sig, nb_off, nb_idx, label, queue, bits):
    """Cluster one event from its ``seeds`` (cells above the seed threshold, increasing index, and
    their significances ``seed_sig``). ``label`` (n_cells) holds the cell states on entry, -2 for
    a cell with ``|E|/σ`` above the growth threshold and -1 otherwise, and the cluster of every
    clustered cell on return (the state array doubles as the label array: one random read per
    neighbour visit, and no reset between events — the next event's scan rewrites it). ``bits``
    (uint64, ⌈n_cells / 64⌉, all 0 on entry and on return) marks the labelled cells, so that they
    are listed without a scan of all labels. The growth of :func:`_topo_event` (before splitting):
    returns the number of clusters and the clustered cells (increasing), ``label`` holding their
    clusters."""
    if seeds.shape[0] == 0:
        return 0, seeds
    order = np.argsort(-seed_sig)
    seeds = seeds[order]
    ns = seeds.shape[0]
    parent = np.arange(ns)
    head = 0
    tail = 0
    n_lab = ns
    # while growing, a labelled cell holds 2 × proto-cluster + (1 if it grows further)
    for k in range(ns):
        label[seeds[k]] = 2 * k + 1
        _mark_bit(bits, seeds[k])
        queue[tail] = seeds[k]
        tail += 1
    while head < tail:
        c = queue[head]
        head += 1
        if head + 2 * PREFETCH_AHEAD < tail:
            prefetch(nb_off, queue[head + 2 * PREFETCH_AHEAD])
        if head + PREFETCH_AHEAD < tail:
            prefetch(nb_idx, nb_off[queue[head + PREFETCH_AHEAD]])
        lc = label[c] >> 1
        ra = -1  # root of lc's proto-cluster, looked up at the first contact with another one
        for j in range(nb_off[c], nb_off[c + 1]):
            m = nb_idx[j]
            v = label[m]
            if v < 0:  # unlabelled: joins lc; queued (without a branch) if it grows further
                g = -1 - v
                label[m] = 2 * lc + g
                _mark_bit(bits, m)
                n_lab += 1
                queue[tail] = m
                tail += g
            elif (v & 1) == 1 and (v >> 1) != lc:
                if ra < 0:
                    ra = _find(parent, lc)
                if parent[v >> 1] == ra:
                    continue  # already in lc's set (the union would change nothing)
                rb = _find(parent, v >> 1)
                # the union keeps the smaller root (the partition, not the tree, decides the result)
                if ra < rb:
                    parent[rb] = ra
                elif rb < ra:
                    parent[ra] = rb
                    ra = rb
    # compact numbering of the merged clusters, in order of their highest seed
    root_id = np.full(ns, -1, np.int64)
    n_cl = 0
    for k in range(ns):
        r = _find(parent, k)
        if root_id[r] == -1:
            root_id[r] = n_cl
            n_cl += 1
    seed_cl = np.empty(ns, np.int64)  # the compact cluster of each seed's proto-cluster
    for k in range(ns):
        seed_cl[k] = root_id[_find(parent, k)]
    cells = _take_bits(bits, n_lab)
    for c in cells:
        label[c] = seed_cl[label[c] >> 1]
    return n_cl, cells


@numba.njit(cache=True)
def _primary_behind(c, nb_off, nb_idx, rank, new_label, scratch):
    """Whether a primary maximum (``new_label`` -2) lies among the cells overlapping secondary maximum
    ``c`` two or more samplings before or after it, reached sampling by sampling through overlapping
    cells (the neighbours of a cell in an adjacent sampling are the cells overlapping it,
    :func:`lhcml.sim.jet_calo._neighbours`); the adjacent samplings themselves are :func:`_topo_split`'s
    direct test. ``scratch``: a free buffer of at least n_cells + 1 entries (the walk's fronts)."""
    cap = scratch.shape[0] // 2
    for step in (-1, 1):
        # the first front: c's neighbours one sampling further in this direction
        n_f = 0
        for j in range(nb_off[c], nb_off[c + 1]):
            m = nb_idx[j]
            if (rank[m] - rank[c]) * step > 0 and n_f < cap:
                scratch[n_f] = m
                n_f += 1
        while n_f > 0:
            # the next front: cells one sampling further, overlapping a cell of this front (duplicates skipped
            # within a front by a linear scan: fronts hold tens of cells)
            n_n = 0
            for q in range(n_f):
                f = scratch[q]
                for j in range(nb_off[f], nb_off[f + 1]):
                    m = nb_idx[j]
                    if (rank[m] - rank[f]) * step <= 0:
                        continue
                    if new_label[m] == -2:
                        return True
                    dup = False
                    for r in range(n_n):
                        if scratch[cap + r] == m:
                            dup = True
                            break
                    if not dup and n_n < cap:
                        scratch[cap + n_n] = m
                        n_n += 1
            for r in range(n_n):
                scratch[r] = scratch[cap + r]
            n_f = n_n
    return False


@numba.njit(cache=True)
def _topo_split(e, cells, n_cl, nb_off, nb_idx, layer, split_e, min_nb, label, queue, new_label, strips, has_s,
                rank):
    """Split the ``n_cl`` clusters of ``cells`` (their clusters in ``label``) at their local maxima
    (:func:`_topo_event`); ``new_label`` all -1 on entry and on return. Returns the number of
    clusters after splitting. ``has_s``: ``strips`` (n_cells) holds the part of each EM cell's
    energy in the virtual strips (:attr:`lhcml.sim.jet_calo.CaloGeometry.virtual_strips`); the
    primary maxima are then found in ``e − strips`` (ATLAS's middle + back: threshold and comparison
    with the EM neighbours), all else (secondary maxima, the order of regrowth) uses ``e``. ``rank``
    (n_cells): the depth rank of each cell (:attr:`lhcml.sim.jet_calo.CaloGeometry.rank`); a secondary
    maximum is vetoed by a primary maximum among the cells that overlap it in the samplings before and
    after it, walked sampling by sampling (ATLAS's splitter, docs/references.md §30): with the EM
    samplings a hadronic maximum behind the back sampling is vetoed by a middle maximum in front of it.
    On one EM layer every primary cell overlaps the hadronic cells directly, so the walk adds nothing."""
    # ---- splitting at local maxima
    cl_start = np.zeros(n_cl + 1, np.int64)
    for c in cells:
        cl_start[label[c] + 1] += 1
    for k in range(n_cl):
        cl_start[k + 1] += cl_start[k]
    fill = cl_start[:-1].copy()
    by_cl = np.empty(cells.shape[0], np.int64)
    for c in cells:
        by_cl[fill[label[c]]] = c
        fill[label[c]] += 1
    next_id = n_cl
    maxima = np.empty(cells.shape[0], np.int64)
    cand = np.empty(cells.shape[0], np.int64)
    for k in range(n_cl):
        mem = by_cl[cl_start[k] : cl_start[k + 1]]
        # local maxima (ATLAS CaloTopoClusterSplitter): E > split_e and at least min_nb
        # neighbours in the cluster (any compartment). Primary (layer 0: the EM compartment; with EM
        # samplings its middle and back): no layer-0 neighbour in the cluster above it (cells of other
        # samplings neither make nor prevent a primary maximum). Secondary (layer 1, hadronic, and 2,
        # the EM strips): no neighbour in the cluster above it, and no primary maximum among the
        # cells it overlaps, directly or through the samplings between (_primary_behind). Primary maxima are marked -2 in
        # the scratch new_label.
        # candidates (E > split_e), in the cluster's cell order, then primaries before secondaries
        n_cand = 0
        for c in mem:
            x = e[c] - strips[c] if has_s and layer[c] == 0 else e[c]
            if x > split_e:
                cand[n_cand] = c
                n_cand += 1
        if n_cand < 2:
            continue  # fewer than two maxima: nothing to split
        for q in range(min(n_cand, PREFETCH_AHEAD)):  # the neighbour lists the maxima tests read
            prefetch(nb_idx, nb_off[cand[q]])
        n_max = 0
        for q in range(n_cand):
            c = cand[q]
            if q + PREFETCH_AHEAD < n_cand:
                prefetch(nb_idx, nb_off[cand[q + PREFETCH_AHEAD]])
            if layer[c] != 0:
                continue
            is_max = True
            n_nb = 0
            ec = e[c] - strips[c] if has_s else e[c]
            for j in range(nb_off[c], nb_off[c + 1]):
                m = nb_idx[j]
                if label[m] == k:
                    n_nb += 1
                    if layer[m] == 0 and (e[m] - strips[m] if has_s else e[m]) > ec:
                        is_max = False
                        break
            if is_max and n_nb >= min_nb:
                maxima[n_max] = c
                new_label[c] = -2
                n_max += 1
        n_keep = n_max
        for q in range(n_cand):
            c = cand[q]
            if layer[c] == 0:
                continue
            is_max = True
            n_nb = 0
            for j in range(nb_off[c], nb_off[c + 1]):
                m = nb_idx[j]
                if label[m] == k:
                    n_nb += 1
                    if e[m] > e[c] or new_label[m] == -2:
                        is_max = False
                        break
            if is_max and n_nb >= min_nb:
                is_max = not _primary_behind(c, nb_off, nb_idx, rank, new_label, queue)
            if is_max and n_nb >= min_nb:
                maxima[n_keep] = c
                n_keep += 1
        for q in range(n_max):
            new_label[maxima[q]] = -1
        n_max = n_keep
        if n_max < 2:
            continue
        mx = maxima[:n_max].copy()
        mx = mx[np.argsort(-e[mx])]
        # regrow from the maxima inside the cluster; a reached cell's label holds -3 - new cluster
        # (its membership test and its visited mark in one read), restored below
        h = 0
        t = 0
        for q in range(mx.shape[0]):
            lab = k if q == 0 else next_id + q - 1
            label[mx[q]] = -3 - lab
            queue[t] = mx[q]
            t += 1
        while h < t:
            c = queue[h]
            h += 1
            if h + 2 * PREFETCH_AHEAD < t:
                prefetch(nb_off, queue[h + 2 * PREFETCH_AHEAD])
            if h + PREFETCH_AHEAD < t:
                prefetch(nb_idx, nb_off[queue[h + PREFETCH_AHEAD]])
            lc = label[c]
            for j in range(nb_off[c], nb_off[c + 1]):
                m = nb_idx[j]
                v = label[m]
                hit = v == k  # an unreached member: takes lc and is queued (without a branch)
                label[m] = lc if hit else v
                queue[t] = m
                t += hit
        for c in mem:
            if label[c] <= -3:
                label[c] = -3 - label[c]
        next_id += mx.shape[0] - 1
    return next_id


@numba.njit(cache=True)
def _topo_event(e, seeds, seed_sig, nb_off, nb_idx, layer, split_e, min_nb, label, queue, new_label, bits, rank):
    """Cluster one event from its ``seeds`` (cells above the seed threshold, increasing index, and
    their significances ``seed_sig``): :func:`_topo_grow`, then :func:`_topo_split`. ``label``
    (n_cells) holds the cell states on entry, -2 for a cell with ``|E|/σ`` above the growth
    threshold and -1 otherwise, and the cluster of every clustered cell on return.
    ``new_label`` (n_cells) is a scratch buffer, all -1 on entry and on return; ``bits`` that of
    :func:`_topo_grow`. Returns the number of clusters and the clustered cells (increasing)."""
    n_cl, cells = _topo_grow(seeds, seed_sig, nb_off, nb_idx, label, queue, bits)
    if n_cl == 0:
        return 0, cells
    return _topo_split(e, cells, n_cl, nb_off, nb_idx, layer, split_e, min_nb, label, queue, new_label, e,
                       False, rank), cells


@numba.njit(cache=True)
def _grow(a, k, cap):
    out = np.empty(cap, a.dtype)
    out[:k] = a[:k]
    return out


@numba.njit(cache=True)
def _topo_fill(energy, sigma, nb_off, nb_idx, layer, seed_t, grow_t, split_e, min_nb, first, counts, work, seed_sig,
               seed_buf, bits, o_cell, o_cl, o_e, k, n_done, with_sums, g_eta, g_cos, g_sin, o_sum, o_n, rank):
    """Topo-cluster the events of ``energy`` (events ``first …`` of the batch): their clustered
    cells are appended at ``k`` to the flat outputs ``o_*`` (cell, cluster of the batch — the
    ``n_done`` clusters of the earlier events come first — and energy), grouped by cluster (cells
    in increasing index inside a cluster), and ``counts`` gets the number of clusters per event. ``work`` (3, n_cells + 1) int32 (cell state / label, queue, new
    label: row 2 all -1), ``seed_sig``, ``seed_buf`` and ``bits`` (all 0) are scratch buffers reused from call to
    call. ``with_sums``: only the clusters kept by :func:`_assemble` (E > 0 and a positive cell)
    are emitted, with their sums (:func:`_emit_kept`: ``o_sum``, ``o_n``). Returns the outputs
    (grown when full), the new ``k`` and the new ``n_done``."""
    n_ev, n = energy.shape
    label = work[0]
    queue = work[1]
    new_label = work[2]
    # |E| above min(thresholds) × σ, a hair low: a necessary condition for E/σ (as rounded) to
    # pass either threshold, so the division is done only where it can matter, with the same result
    pre = np.minimum(grow_t, seed_t) * sigma * (1.0 - 1e-9)
    for i in range(n_ev):
        # one pass: the state of every cell (-2 above the growth threshold, else -1) and the seeds
        ns = 0
        for c in range(n):
            x = energy[i, c]
            st = -1
            if abs(x) > pre[c]:
                s = x / sigma[c]
                if abs(s) > grow_t:
                    st = -2
                if s > seed_t:
                    seed_buf[ns] = c
                    seed_sig[ns] = s
                    ns += 1
            label[c] = st
        n_cl, cl = _topo_event(energy[i], seed_buf[:ns], seed_sig[:ns], nb_off, nb_idx, layer, split_e, min_nb,
                               label, queue, new_label, bits, rank)
        o_cell, o_cl, o_e, k, n_cl, o_sum, o_n = _emit_event(energy[i], cl, n_cl, label, n_done, o_cell, o_cl, o_e, k,
                                                             with_sums, layer, g_eta, g_cos, g_sin, o_sum, o_n)
        counts[first + i] = n_cl
        n_done += n_cl
    return o_cell, o_cl, o_e, k, n_done, o_sum, o_n


@numba.njit(cache=True)
def _emit(e, cl, n_cl, label, n_done, o_cell, o_cl, o_e, k):
    """Append the clustered cells ``cl`` of one event (clusters in ``label``) at ``k`` to the flat
    outputs, grouped by cluster (increasing cell index inside each); returns them and the new ``k``."""
    if n_cl == 0:
        return o_cell, o_cl, o_e, k
    m = cl.shape[0]
    cap = o_cell.shape[0]
    if k + m > cap:
        cap = max(2 * cap, k + m)
        o_cell = _grow(o_cell, k, cap)
        o_cl = _grow(o_cl, k, cap)
        o_e = _grow(o_e, k, cap)
    # counting sort by cluster (stable: increasing cell index inside each cluster)
    start = np.zeros(n_cl + 1, np.int64)
    for c in cl:
        start[label[c] + 1] += 1
    for q in range(n_cl):
        start[q + 1] += start[q]
    for c in cl:
        j = k + start[label[c]]
        start[label[c]] += 1
        o_cell[j] = c
        o_cl[j] = n_done + label[c]
        o_e[j] = e[c]
    return o_cell, o_cl, o_e, k + m


@numba.njit(cache=True)
def _emit_kept(e, cl, n_cl, label, n_done, o_cell, o_cl, o_e, k, layer, g_eta, g_cos, g_sin, o_sum, o_n):
    """:func:`_emit` of the clusters that :func:`_assemble` keeps (E > 0 and a positive cell),
    numbered over the kept ones, with their sums (rows of :func:`_cluster_sums`: Σ E, Σ E(EM),
    Σ w, Σ w η, Σ w cos φ, Σ w sin φ, w = max(E, 0)) into ``o_sum[:, n_done …]`` and their number
    of cells into ``o_n``. The sums add each cluster's cells in increasing index, the order in
    which :func:`_cluster_sums` meets them in the emitted cells, so they are the same numbers.
    Returns the outputs (grown when full), the new ``k`` and the number of kept clusters."""
    if n_cl == 0:
        return o_cell, o_cl, o_e, k, 0, o_sum, o_n
    cap_cl = o_n.shape[0]
    if n_done + n_cl > cap_cl:
        cap_cl = max(2 * cap_cl, n_done + n_cl)
        o_n = _grow(o_n, n_done, cap_cl)
        grown = np.empty((6, cap_cl))
        grown[:, :n_done] = o_sum[:, :n_done]
        o_sum = grown
    m = cl.shape[0]
    cap = o_cell.shape[0]
    if k + m > cap:
        cap = max(2 * cap, k + m)
        o_cell = _grow(o_cell, k, cap)
        o_cl = _grow(o_cl, k, cap)
        o_e = _grow(o_e, k, cap)
    # counting sort by cluster (stable: increasing cell index inside each cluster) into o_cell, o_e
    # (as _emit), keeping the clusters' bounds for the pass below (no scan of o_cl for them)
    start = np.zeros(n_cl + 1, np.int64)
    for c in cl:
        start[label[c] + 1] += 1
    for q in range(n_cl):
        start[q + 1] += start[q]
    fill = start[:-1].copy()
    for c in cl:
        j = k + fill[label[c]]
        fill[label[c]] += 1
        o_cell[j] = c
        o_e[j] = e[c]
    # per cluster: the sums; the kept ones moved down (only after a dropped one) and numbered
    w = k
    n_keep = 0
    for q in range(n_cl):
        a = k + start[q]
        b = k + start[q + 1]
        s0, s1, s2, s3, s4, s5 = sum_cells(o_cell, o_e, a, b, g_eta, g_cos, g_sin, layer)
        if not (s0 > 0 and s2 > 0):
            continue
        r = n_done + n_keep
        o_sum[0, r] = s0
        o_sum[1, r] = s1
        o_sum[2, r] = s2
        o_sum[3, r] = s3
        o_sum[4, r] = s4
        o_sum[5, r] = s5
        o_n[r] = b - a
        if w != a:  # a cluster before it was dropped: move down
            for i in range(a, b):
                o_cell[w + i - a] = o_cell[i]
                o_e[w + i - a] = o_e[i]
        for i in range(w, w + b - a):
            o_cl[i] = r
        w += b - a
        n_keep += 1
    return o_cell, o_cl, o_e, w, n_keep, o_sum, o_n


@numba.njit(cache=True)
def _emit_event(e, cl, n_cl, label, n_done, o_cell, o_cl, o_e, k, with_sums, layer, g_eta, g_cos, g_sin, o_sum, o_n):
    """:func:`_emit_kept` if ``with_sums`` else :func:`_emit`; returns the outputs, the new ``k`` and
    the number of clusters emitted."""
    if with_sums:
        return _emit_kept(e, cl, n_cl, label, n_done, o_cell, o_cl, o_e, k, layer, g_eta, g_cos, g_sin, o_sum, o_n)
    o_cell, o_cl, o_e, k = _emit(e, cl, n_cl, label, n_done, o_cell, o_cl, o_e, k)
    return o_cell, o_cl, o_e, k, n_cl, o_sum, o_n


@numba.njit(cache=True)
def _topo_fill_sparse(deposits, nb_off, nb_idx, layer, seed_t, split_e, min_nb, first, counts, work, seed_sig,
                      seed_buf, bits, o_cell, o_cl, o_e, k, n_done, mark, touched, noise32, sub, has_sub, sigma, grow_t,
                      lo_cdf, p_active, seed_cdf, p_max, rng, with_sums, g_eta, g_cos, g_sin, o_sum, o_n, clear,
                      strips, has_s, rank):
    """:func:`_topo_fill` with the sparse readout (:mod:`lhcml.sim.cell_noise`): ``deposits``
    (n_events, n_cells) holds the deposited energy on entry and, on return, the read-out value of
    every cell that got one (0 elsewhere). Per event: :func:`~lhcml.sim.cell_noise.read_event`
    (cells with a deposit, active empty cells), their states and the seeds, the growth, a value
    for each clustered cell without one (:func:`~lhcml.sim.cell_noise.finish_values`, before the
    splitting reads the energies), the splitting. ``work`` rows 0 and 2 all -1, ``bits`` and ``mark`` all 0
    on entry and on return (reset cell by cell: the state of every untouched cell is -1).
    ``clear``: ``deposits`` is left all zeros instead (every cell that got a value is a touched
    or a clustered one), ready for the next chunk's deposits. ``has_s``: ``strips`` (as ``deposits``)
    holds the virtual strips' part of the deposits, for the primary maxima (:func:`_topo_split`);
    with ``clear`` it is left all zeros too (a cell with a strips' part has a deposit: it is touched)."""
    n_ev, n = deposits.shape
    label = work[0]
    queue = work[1]
    new_label = work[2]
    pre = min(grow_t, seed_t) * sigma * (1.0 - 1e-9)  # as _topo_fill
    for i in range(n_ev):
        e = deposits[i]
        nt = read_event(e, mark, touched, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, seed_cdf, p_max,
                        rng)
        ns = 0
        for q in range(nt):  # the states of the touched cells (increasing: the seeds in index order)
            c = touched[q]
            if mark[c] == PENDING:  # active, cannot seed (cell_noise.read_event)
                label[c] = -2
                continue
            x = e[c]
            if abs(x) > pre[c]:
                s = x / sigma[c]
                if abs(s) > grow_t:
                    label[c] = -2
                if s > seed_t:
                    seed_buf[ns] = c
                    seed_sig[ns] = s
                    ns += 1
        n_cl, cl = _topo_grow(seed_buf[:ns], seed_sig[:ns], nb_off, nb_idx, label, queue, bits)
        if n_cl > 0:
            # the clustered cells without a value (perimeter cells, pending active cells), before splitting
            finish_values(e, cl, mark, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, rng)
            n_cl = _topo_split(e, cl, n_cl, nb_off, nb_idx, layer, split_e, min_nb, label, queue, new_label,
                               strips[i] if has_s else e, has_s, rank)
        o_cell, o_cl, o_e, k, n_cl, o_sum, o_n = _emit_event(e, cl, n_cl, label, n_done, o_cell, o_cl, o_e, k,
                                                             with_sums, layer, g_eta, g_cos, g_sin, o_sum, o_n)
        counts[first + i] = n_cl
        n_done += n_cl
        for q in range(nt):
            c = touched[q]
            if clear or mark[c] == PENDING:
                e[c] = 0.0  # (PENDING: never valued, its kept uniform)
            if clear and has_s:
                strips[i, c] = 0.0
            label[c] = -1
            mark[c] = NO_VALUE
        for c in cl:
            label[c] = -1
            mark[c] = NO_VALUE
            if clear:
                e[c] = 0.0
    return o_cell, o_cl, o_e, k, n_done, o_sum, o_n


class _TopoWork:
    """Scratch and output buffers of :func:`_topo_fill` for one batch (allocated once, not per
    chunk of events: fresh memory costs page faults). ``with_sums``: the kernels emit only the
    clusters that :func:`_assemble` keeps, with their sums (:func:`_emit_kept`; :meth:`result`
    then also returns them); else every cluster (the form the reference tests compare)."""

    def __init__(self, n_events: int, n_cells: int, cells_per_event: int = 16000, with_sums: bool = False,
                 geo: CaloGeometry | None = None):
        self.counts = np.zeros(n_events, np.int64)
        # one spare entry: the branchless queues write one slot past the last queued cell
        self.work = np.full((3, n_cells + 1), -1, np.int32)
        self.seed_sig = np.empty(n_cells)
        self.seed_buf = np.empty(n_cells, np.int64)
        self.bits = np.zeros((n_cells + 1 + 63) // 64, np.uint64)
        cap = max(n_events * cells_per_event, 1 << 12)  # grown when needed
        self.out = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap))
        self.k = 0
        self.n_done = 0  # clusters of the events done
        self.mark = self.touched = None  # the sparse readout's scratch (add_sparse)
        self.with_sums = bool(with_sums)
        if self.with_sums and geo is None:
            raise ValueError("_TopoWork(with_sums=True) needs the geometry")
        cap_cl = max(n_events * 256, 1 << 10) if self.with_sums else 1
        self.sums = (np.empty((6, cap_cl)), np.empty(cap_cl, np.int64))
        self.g = (geo.eta, geo.cos_phi, geo.sin_phi) if self.with_sums else (np.zeros(1),) * 3

    def add(self, energy: np.ndarray, sigma: np.ndarray, first: int, geo: CaloGeometry) -> None:
        *out, self.k, self.n_done, o_sum, o_n = _topo_fill(
            energy, sigma, geo.nb_offsets, geo.nb_index, geo.layer, SEED_SIGMA, GROW_SIGMA, SPLIT_E_GEV,
            SPLIT_MIN_NEIGHBOURS, first, self.counts, self.work, self.seed_sig, self.seed_buf, self.bits, *self.out,
            self.k, self.n_done, self.with_sums, *self.g, *self.sums, _cell_rank(geo))
        self.out = tuple(out)
        self.sums = (o_sum, o_n)

    def add_sparse(self, deposits: np.ndarray, noise: SparseNoise, rng: np.random.Generator, first: int,
                   geo: CaloGeometry, clear: bool = False, strips: np.ndarray | None = None) -> None:
        """Read out (sparsely) and cluster the events of ``deposits`` (:func:`_topo_fill_sparse`; do not
        mix with :meth:`add` on one instance: it needs the states of untouched cells at -1).
        ``clear``: ``deposits`` is all zeros on return, not the read-out values. ``strips``: the
        virtual strips' part of the deposits (same shape), for the splitter's primary maxima."""
        if (noise.grow_sigma, noise.seed_sigma) != (GROW_SIGMA, SEED_SIGMA):
            raise ValueError(f"the sparse readout was built for thresholds {noise.grow_sigma}, {noise.seed_sigma}; "
                             f"the clustering's are {GROW_SIGMA}, {SEED_SIGMA}: build it with those")
        if self.mark is None:
            self.mark = np.zeros(len(self.seed_buf), np.int8)
            self.touched = np.empty(len(self.seed_buf), np.int64)
        *out, self.k, self.n_done, o_sum, o_n = _topo_fill_sparse(
            deposits, geo.nb_offsets, geo.nb_index, geo.layer, SEED_SIGMA, SPLIT_E_GEV, SPLIT_MIN_NEIGHBOURS, first,
            self.counts, self.work, self.seed_sig, self.seed_buf, self.bits, *self.out, self.k, self.n_done,
            self.mark, self.touched, noise.noise32, noise.sub, noise.has_sub, noise.sigma, noise.grow_sigma,
            noise.lo_cdf, noise.p_active, noise.seed_cdf, noise.p_max, rng, self.with_sums, *self.g, *self.sums,
            bool(clear), deposits if strips is None else strips, strips is not None, _cell_rank(geo))
        self.out = tuple(out)
        self.sums = (o_sum, o_n)

    def result(self):
        """(cell, cluster of the batch, cell energy) of the clustered cells and the clusters per event;
        with ``with_sums`` also the sums (6, n_clusters) and the number of cells of each cluster."""
        res = (*(o[: self.k] for o in self.out), self.counts)
        if self.with_sums:
            res += (self.sums[0][:, : self.n_done], self.sums[1][: self.n_done])
        return res


def _cell_rank(geo: CaloGeometry) -> np.ndarray:
    """The depth rank of every cell (:attr:`CaloGeometry.rank`); one rank for all (no walk) if the
    geometry was built without it."""
    return geo.rank if geo.rank is not None else np.zeros(geo.n_cells, np.int8)


def _topo_batch(energy, sigma, geo: CaloGeometry):
    """:func:`_topo_fill` on all events of a dense ``energy`` (n_events, n_cells)."""
    w = _TopoWork(energy.shape[0], energy.shape[1])
    w.add(energy, sigma, 0, geo)
    return w.result()


@dataclass
class TopoClusters:
    """Topo-clusters of a batch and their cells.

    ``clusters``: :class:`FlatTable` per event with ``E, pt, eta, phi, mass`` (GeV; LCW scale),
    ``E_em`` (EM scale), ``em_fraction``, ``p_em``, ``n_cells``; directions from the primary vertex.
    ``cell_*``: the cells of all kept clusters (flat), ``cell_cluster`` indexing the flat rows of
    ``clusters``. ``cluster_sums``: (6, n_clusters) the sums of :func:`_cluster_sums` over these
    cells (EM scale), set only by the clustering itself, whose cells are grouped by cluster
    (``n_cells`` each, in storage order): particle flow then takes the cluster energies and the
    sums of the clusters it leaves untouched from it; ``None`` (any other maker) when not known.
    """

    clusters: FlatTable
    cell_id: np.ndarray
    cell_energy: np.ndarray
    cell_cluster: np.ndarray
    geometry: CaloGeometry
    cluster_sums: np.ndarray | None = None


@numba.njit(cache=True, inline="always")
def in_em_compartment(layer):
    """Whether a cell of ``layer`` counts in the cluster's EM energy: layer 0 (EM) and 2 (the EM
    strips of the samplings geometry), not 1 (hadronic); the one definition of the sums' second row."""
    return layer != 1


@numba.njit(cache=True, inline="always")
def add_cell_to_sums(out, k, c, e, g_eta, g_cos, g_sin, g_layer):
    """Add cell ``c`` of energy ``e`` to column ``k`` of the cluster sums ``out`` (rows: Σ E,
    Σ E(EM compartment), Σ w, Σ w η, Σ w cos φ, Σ w sin φ with w = max(E, 0)), for cells met in any
    cluster order (:func:`_cluster_sums`); :func:`sum_cells` makes the same sums over one cluster's
    cells held together (the emission, particle flow's re-summation)."""
    out[0, k] += e
    if in_em_compartment(g_layer[c]):
        out[1, k] += e
    if e > 0:
        out[2, k] += e
        out[3, k] += e * g_eta[c]
        out[4, k] += e * g_cos[c]
        out[5, k] += e * g_sin[c]


@numba.njit(cache=True, inline="always")
def sum_cells(cell_id, cell_e, a, b, g_eta, g_cos, g_sin, g_layer):
    """The six cluster sums of :func:`add_cell_to_sums` over the cells ``a .. b − 1`` of one
    cluster (``cell_id``, ``cell_e``), added in that order — the same numbers, bit for bit. The
    sums are kept in registers: accumulating into a (6, n) array in memory instead costs ≈ 40 ns
    per cell (particle flow's re-summation, 37 → 5 ms per 200 tt̄ events)."""
    s0 = s1 = s2 = s3 = s4 = s5 = 0.0
    for i in range(a, b):
        c = cell_id[i]
        x = cell_e[i]
        s0 += x
        # without a branch: a skipped term is added as ±0.0, which leaves every sum unchanged (each
        # starts at +0.0 and so is never −0.0: x + y is −0.0 only for x = y = −0.0)
        s1 += x if in_em_compartment(g_layer[c]) else 0.0
        w = x if x > 0 else 0.0
        s2 += w
        s3 += w * g_eta[c]
        s4 += w * g_cos[c]
        s5 += w * g_sin[c]
    return s0, s1, s2, s3, s4, s5


@numba.njit(cache=True)
def _cluster_sums(cell_id, cell_energy, cell_cluster, n_clusters, g_eta, g_cos, g_sin, g_layer):
    """One pass over the cells: Σ E, Σ E(EM compartment), and Σ w, Σ w η, Σ w cos φ, Σ w sin φ
    with w = max(E, 0), per cluster."""
    out = np.zeros((6, n_clusters))
    for i in range(cell_id.shape[0]):
        add_cell_to_sums(out, cell_cluster[i], cell_id[i], cell_energy[i], g_eta, g_cos, g_sin, g_layer)
    return out


def cluster_kinematics(geo: CaloGeometry, cell_id, cell_energy, cell_cluster, n_clusters, cl_event, pv_z):
    """E (EM scale), η, φ (from the primary vertex), EM fraction of clusters from their cells."""
    s = _cluster_sums(np.asarray(cell_id, np.int64), np.asarray(cell_energy, np.float64),
                      np.asarray(cell_cluster, np.int64), int(n_clusters), geo.eta, geo.cos_phi, geo.sin_phi,
                      geo.layer)
    return kinematics_from_sums(geo, s, cl_event, pv_z)


def kinematics_from_sums(geo: CaloGeometry, s: np.ndarray, cl_event, pv_z):
    """:func:`cluster_kinematics` from the cluster sums ``s`` (6, n_clusters) of :func:`_cluster_sums`
    (element by element: a subset of clusters gives the same numbers as the whole)."""
    e, e_em, sw = s[0], s[1], s[2]
    eta0 = s[3] / np.maximum(sw, 1e-12)
    phi = np.arctan2(s[5], s[4])
    eta = np.arcsinh(np.sinh(eta0) - np.asarray(pv_z, float)[cl_event] / geo.radius)
    frac = np.clip(e_em / np.where(e > 0, e, 1.0), 0.0, 1.0)
    return e, eta, phi, frac, sw


def lcw_weight(e_em: np.ndarray, em_fraction: np.ndarray, geo: CaloGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Local hadronic calibration weight and EM-likeness of clusters (see the module doc)."""
    p_em = np.clip((em_fraction - EM_LIKE_LO) / (EM_LIKE_HI - EM_LIKE_LO), 0.0, 1.0)
    # hadronic weight at the estimated true energy (fixed point of E = E_em / R(E))
    e_true = np.maximum(e_em, 1e-3)
    for _ in range(4):
        e_true = np.maximum(e_em, 1e-3) / pion_response(e_true, geo)
    w_had = 1.0 / pion_response(e_true, geo)
    return p_em + (1.0 - p_em) * w_had, p_em


def topo_cluster(cells: CellEnergies, pv_z: np.ndarray) -> TopoClusters:
    """4-2-0 topo-clusters of every event of ``cells`` (directions from ``pv_z``, mm)."""
    geo = cells.geometry
    return _assemble(geo, *_topo_batch(cells.energy, cells.sigma, geo), pv_z)


@numba.njit(cache=True)
def _keep_cells(cell_id, cell_energy, cell_cluster, keep):
    """The cells of the kept clusters (order unchanged), their clusters renumbered over the kept
    ones, and the number of cells of each kept cluster."""
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


def _assemble(geo: CaloGeometry, cell_id, cell_cluster, cell_energy, counts, pv_z, sums=None,
              n_cells=None) -> TopoClusters:
    """:class:`TopoClusters` from the clustered cells of :func:`_topo_batch` (all events): the
    clusters with E > 0 and a positive cell are kept. ``sums``, ``n_cells``: the clusters are those
    already kept, with their sums and sizes (``_TopoWork(with_sums=True)``, :func:`_emit_kept`)."""
    n_ev = len(counts)
    n_cl = int(np.sum(counts))
    cl_event = np.repeat(np.arange(n_ev), counts)
    if sums is None:
        s = _cluster_sums(np.asarray(cell_id, np.int64), np.asarray(cell_energy, np.float64),
                          np.asarray(cell_cluster, np.int64), n_cl, geo.eta, geo.cos_phi, geo.sin_phi, geo.layer)
        keep = (s[0] > 0) & (s[2] > 0)
        # renumber the kept clusters
        cell_id, cell_energy, cell_cluster, n_cells = _keep_cells(cell_id, cell_energy, cell_cluster, keep)
        sums, cl_event = s[:, keep], cl_event[keep]
    e, eta, phi, frac, _ = kinematics_from_sums(geo, sums, cl_event, pv_z)
    w, p_em = lcw_weight(e, frac, geo)
    e_lcw = e * w
    table = FlatTable(
        {
            "E": e_lcw,
            "pt": e_lcw / np.cosh(eta),
            "eta": eta,
            "phi": phi,
            "mass": np.zeros(len(e)),
            "E_em": e,
            "em_fraction": frac,
            "p_em": p_em,
            "n_cells": n_cells,
        },
        np.bincount(cl_event, minlength=n_ev),
    )
    return TopoClusters(table, cell_id, cell_energy, cell_cluster, geo, sums)


def calibrated_clusters(topo: TopoClusters) -> FlatTable:
    """The seam for large-R jets / TCCs: LCW topo-clusters with ``pt, eta, phi, E, mass (=0),
    em_fraction`` (GeV) and ``px, py, pz`` per event."""
    c = topo.clusters
    pt, eta, phi = c["pt"], c["eta"], c["phi"]
    return FlatTable(
        {"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "E": c["E"], "pt": pt,
         "eta": eta, "phi": phi, "mass": c["mass"], "em_fraction": c["em_fraction"]},
        c.counts,
    )


def simulate_topo_clusters(
    particles: FlatTable,
    pv_z: np.ndarray,
    rng: np.random.Generator,
    mu: float | None = None,
    n_pileup: np.ndarray | None = None,
    sparse_noise: bool = True,
) -> TopoClusters:
    """Jet calorimeter + topo-clustering of a batch of events (:class:`TopoClusters`).

    ``mu``/``n_pileup``: mean and actual pileup interactions per event; ``None`` measures the mean
    pileup energy per cell on the batch itself (equivalent when the batch shares one μ).
    ``sparse_noise``: the readout noise drawn only where the clustering can see it
    (:mod:`lhcml.sim.cell_noise`: the same distribution per cell, another random stream); ``False``:
    one normal draw per cell and event (:func:`lhcml.sim.jet_calo.readout_chunks`, the dense
    reference, equal to :func:`topo_cluster` on :func:`lhcml.sim.jet_calo.simulate_cells`).
    """
    from lhcml.sim.jet_calo import deposit_chunks, load_geometry, readout_chunks, shower_particles

    if mu is None:
        has_pu = "is_pileup" in particles.columns and bool(np.any(particles["is_pileup"]))
        mu = 1.0 if has_pu else 0.0
        n_pileup = np.full(len(particles), mu)
    n_ev = len(particles)
    if n_pileup is None:
        n_pileup = np.full(n_ev, mu)
    geo = load_geometry()
    deps = shower_particles(particles, rng, geo)
    work = _TopoWork(n_ev, geo.n_cells, with_sums=True, geo=geo)
    # the cells of a few events at a time, clustered while they are in the CPU cache
    if sparse_noise:
        # the kernel leaves the buffer all zeros (clear): it is not zeroed again for the next chunk
        noise, chunks = deposit_chunks(deps, n_ev, np.asarray(n_pileup, float), float(mu), GROW_SIGMA, SEED_SIGMA,
                                       geo, cleared=True, with_strips=True)
        for first, deposits, strips in chunks:
            work.add_sparse(deposits, noise, rng, first, geo, clear=True, strips=strips)
    else:
        sigma, chunks = readout_chunks(deps, n_ev, np.asarray(n_pileup, float), float(mu), rng, geo)
        for first, energy in chunks:
            work.add(energy, sigma, first, geo)
    cell_id, cell_cluster, cell_energy, counts, sums, n_cells = work.result()
    return _assemble(geo, cell_id, cell_cluster, cell_energy, counts, pv_z, sums, n_cells)


def topo_clusters(
    particles: FlatTable,
    pv_z: np.ndarray,
    rng: np.random.Generator,
    mu: float | None = None,
    n_pileup: np.ndarray | None = None,
) -> FlatTable:
    """Calibrated (LCW) topo-clusters per event: ``px, py, pz, E, pt, eta, phi, mass (=0),
    em_fraction`` (GeV) — the calorimeter-cluster seam of large-R jets and TCCs."""
    return calibrated_clusters(simulate_topo_clusters(particles, pv_z, rng, mu, n_pileup))
