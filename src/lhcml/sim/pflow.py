"""Particle flow on topo-clusters with a realistic, imperfect charged-energy subtraction.

An eflowRec-like algorithm (ATLAS, EPJC 77 (2017) 466) on the topo-clusters of the jet
calorimeter (:mod:`lhcml.sim.jet_calo`, :mod:`lhcml.sim.topoclusters`):

Tracks
    Reconstructed tracks of quality (real or fake; material secondaries excluded) with
    :data:`SUB_PT_MIN` < pT < :data:`SUB_PT_MAX` GeV and ``|η| <`` :data:`SUB_ETA_MAX` are used for
    subtraction — from every vertex (ATLAS subtracts pileup tracks too, then drops their charged
    objects). Tracks matched to a true muon are not subtracted (a muon-identification proxy).
    Tracks of true electrons (an electron-identification proxy) are subtracted under the
    electron hypothesis at every pT (next paragraph), so the electron is counted once, as its
    charged object. (ATLAS instead leaves tracks matched to identified electrons out of particle
    flow, EPJC 77 (2017) 466, so the electron enters as cluster energy; we subtract and keep the
    track so that the ``flow`` constituents keep the electron's track and its kind. Before this
    fix electron tracks above 40 GeV were charged objects *and* left their cluster in place, and
    below 40 GeV the pion E/p under-subtracted them: electron energy counted up to twice.)
Matching
    The track is extrapolated to the calorimeter (bending in 2 T, :func:`lhcml.sim.jet_calo.bend_phi`)
    and matched to the nearest cluster within ``ΔR <`` :data:`MATCH_DR` having ``E/p >``
    :data:`MATCH_EOP_MIN` (EM scale).
Expected energy
    ``E_exp = ⟨E/p⟩ p`` with ``⟨E/p⟩`` the mean pion response of the calorimeter model
    (:func:`~lhcml.sim.jet_calo.pion_response`: Groom EM fraction, e/h) and its spread
    ``σ_exp`` (:func:`~lhcml.sim.jet_calo.pion_response_sigma`) — the *expected*, not the actual
    deposit, so the subtraction fluctuates as in ATLAS. Electron tracks: ``E/p = 1`` with the EM
    resolution of the region (:func:`expected_deposit`).
Split showers
    If ``(E_clus − E_exp)/σ_exp < −1``, further clusters within ``ΔR <`` :data:`MATCH_DR` are added,
    nearest first, until the significance reaches −1.
Subtraction
    If ``E_exp`` exceeds the matched clusters' energy, they are removed entirely; otherwise cells
    are removed in rings of increasing distance from the extrapolated track (cell by cell, the
    last one partially) until ``E_exp`` is taken away; a remnant below :data:`REMNANT_SIGMA` ·
    ``σ_exp`` is compatible with the shower fluctuation and removed too.
Objects
    Charged objects: the tracks compatible with the reconstructed primary vertex,
    ``|Δz0 · sinθ| <`` :data:`CHS_DZ0_SINTHETA` (charged-hadron subtraction), with the track
    momentum (pion mass; electron/muon mass for tracks of true electrons/muons); tracks above
    :data:`SUB_PT_MAX` are not flow objects (their calorimeter energy is kept, as ATLAS 2017),
    except electron and muon tracks.
    Neutral objects: the remaining clusters at the EM scale (as ATLAS EMPFlow; the jet
    calibration restores the hadronic scale), photon-like when EM-like (``p_EM > 0.5``).
Failures arise naturally: neutral energy inside a charged shower is subtracted with it, split
showers leave charged remnants, overlapping tracks share clusters.

Everything is vectorised over events, with the per-event matching/subtraction in numba.
"""

from __future__ import annotations

import awkward as ak
import numba
import numpy as np

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable, insert_per_event
from lhcml.sim.topoclusters import sum_cells

#: calorimeter coverage
CALO_ETA_MAX = 4.9
#: charged-hadron subtraction window (mm)
CHS_DZ0_SINTHETA = 2.0
#: tracks used for the energy subtraction (GeV; ATLAS 2017: 0.5-40 GeV, |eta| < 2.5)
SUB_PT_MIN, SUB_PT_MAX, SUB_ETA_MAX = 0.5, 40.0, 2.5
#: track-cluster matching: distance and minimum E/p (ATLAS: E/p > 0.1)
MATCH_DR = 0.2
MATCH_EOP_MIN = 0.1
#: split-shower recovery significance and remnant removal (ATLAS eflowRec: -1 and 1.5 sigma)
SPLIT_SIGNIFICANCE = -1.0
REMNANT_SIGMA = 1.5
#: phi granularity of the legacy towers of :func:`tower_sums` users (0.1 x 2pi/64)
N_PHI = 64

#: object kinds (match FLOW_DTYPE flags)
KIND_PHOTON, KIND_NEUTRAL_HADRON, KIND_CHARGED_HADRON, KIND_ELECTRON, KIND_MUON = 0, 1, 2, 3, 4

_M_PI = 0.13957039
_M_E = 0.000511
_M_MU = 0.1056584


def tower_sums(key: np.ndarray, energy: np.ndarray, n_keys: int, dense: bool | None = None):
    """Occupied tower keys (sorted) and the summed energy of each.

    ``dense`` (default: when ``n_keys`` is at most 4 × the number of deposits) sums on the full
    grid of ``n_keys`` towers instead of sorting the keys; both give identical sums (each adds
    the deposits of a tower in input order).
    """
    if dense is None:
        dense = n_keys <= 4 * len(key)
    if dense:
        ukey = np.flatnonzero(np.bincount(key, minlength=n_keys))
        return ukey, np.bincount(key, weights=energy, minlength=n_keys)[ukey]
    ukey, inv = np.unique(key, return_inverse=True)
    return ukey, np.bincount(inv, weights=energy, minlength=len(ukey))


def build_pflow(
    particles: ak.Array,
    tracks: ak.Array | None,
    primary_vertex_z: np.ndarray,
    rng: np.random.Generator,
    mu: float | None = None,
) -> ak.Array:
    """Particle-flow objects per event.

    Parameters
    ----------
    particles
        Particle table (:data:`lhcml.sim.generator.PARTICLE_FIELDS`), detector frame, GeV/mm.
    tracks
        Reconstructed tracks per event with at least ``pt`` (GeV), ``eta``, ``phi``, ``charge``
        (or ``qOverP``), ``z0`` (mm, w.r.t. the beam-line origin) and ``particle_index`` (index
        into the event's particle list, -1 for fakes); ``d0``, ``z0SinTheta`` (or ``z0``),
        ``d0Uncertainty``, ``z0SinThetaUncertainty`` are carried when present. ``None``: no
        tracker (every cluster is a neutral object).
    primary_vertex_z
        Reconstructed primary-vertex z per event (mm).
    rng
        Random generator (showers and noise).
    mu
        Mean pileup of the batch (``None``: measured from the pileup particles).

    Returns
    -------
    ak.Array
        Per event, objects with fields ``px, py, pz, E, pt, eta, phi`` (GeV), ``charge``,
        ``kind`` (``KIND_*``), ``d0, z0SinTheta, d0Uncertainty, z0SinThetaUncertainty`` (mm,
        0 for neutrals) and ``track_index`` (index into the event's tracks, -1 for neutrals).
    """
    flat_tracks = None if tracks is None else FlatTable.from_awkward(tracks)
    fields = [f for f in ("final", "pid", "px", "py", "pz", "e", "m", "vz", "charge", "is_pileup")
              if f in ak.fields(particles)]
    table = FlatTable.from_awkward(particles, fields)
    return build_pflow_flat(table, flat_tracks, primary_vertex_z, rng, mu=mu).to_awkward()


@numba.njit(cache=True)
def _dphi(a, b):
    d = a - b
    while d > np.pi:
        d -= 2 * np.pi
    while d < -np.pi:
        d += 2 * np.pi
    return d


@numba.njit(cache=True)
def _sift_down(heap, key, i, n):
    """Restore the min-heap order (by ``key``, then index) of ``heap[:n]`` below position ``i``."""
    while True:
        lo = i
        for ch in (2 * i + 1, 2 * i + 2):
            if ch < n and (key[heap[ch]] < key[heap[lo]] or (key[heap[ch]] == key[heap[lo]] and heap[ch] < heap[lo])):
                lo = ch
        if lo == i:
            return
        heap[i], heap[lo] = heap[lo], heap[i]
        i = lo


#: radii (η-φ distance from the track) tried in turn for the cells that can be subtracted first
#: (a cost device of :func:`subtract_tracks`; the result does not depend on them)
RING_RADII = (0.05, 0.1, 0.2)


@numba.njit(cache=True)
def _insert_sorted(vals, n, v):
    """Insert ``v`` into the ascending ``vals[:n]`` (a handful of entries); returns ``n + 1``."""
    i = n
    while i > 0 and vals[i - 1] > v:
        vals[i] = vals[i - 1]
        i -= 1
    vals[i] = v
    return n + 1


@numba.njit(cache=True)
def _cluster_sum(cc_off, cell_e, c):
    """Energy of cluster ``c``: its cells summed in storage order (every sum of the kernel is this one)."""
    s = 0.0
    for j in range(cc_off[c], cc_off[c + 1]):
        s += cell_e[j]
    return s


@numba.njit(cache=True)
def subtract_tracks(cl_off, cl_eta, cl_phi, cc_off, cell_eta, cell_phi, cell_e, t_off, t_eta, t_phi, t_p, t_eexp,
                    t_sexp, match_dr, eop_min, split_sig, remnant_sigma):
    """eflowRec-like subtraction, in place on ``cell_e`` (cells grouped by cluster: ``cc_off``;
    ``cell_eta``, ``cell_phi`` per cell). See :func:`_subtract`, which it runs."""
    changed = np.zeros(cl_eta.shape[0], np.bool_)
    return _subtract(cl_off, cl_eta, cl_phi, cc_off, np.arange(cell_e.shape[0]), cell_eta, cell_phi, cell_e, t_off,
                     t_eta, t_phi, t_p, t_eexp, t_sexp, match_dr, eop_min, split_sig, remnant_sigma, changed,
                     np.empty(0))


@numba.njit(cache=True)
def _subtract(cl_off, cl_eta, cl_phi, cc_off, cell_id, g_eta, g_phi, cell_e, t_off, t_eta, t_phi, t_p, t_eexp,
              t_sexp, match_dr, eop_min, split_sig, remnant_sigma, changed, e_clusters):
    """eflowRec-like subtraction, in place on ``cell_e`` (cells grouped by cluster: ``cc_off``; the
    η, φ of cell ``j`` are ``g_eta[cell_id[j]]``, ``g_phi[cell_id[j]]``, looked up only for the
    cells of matched clusters). ``changed`` (bool per cluster, all False on entry) marks every
    cluster whose cells the subtraction may have changed. ``e_clusters``: the energy of every
    cluster, its cells summed in storage order (the clustering's sums), or empty (summed here).

    Per event (``cl_off``/``t_off`` offsets; tracks in the order to process), each track is
    matched to the nearest cluster (current energy) within ``match_dr`` with ``E/p > eop_min``;
    returns the matched cluster of each track (-1 none) and the energy removed for it.

    Cost: the clusters of an event are searched in a window of η around the track (sorted once
    per event, ties in distance resolved to the lower cluster index as a scan in storage order
    does); a cluster's energy is re-summed only when a cell of it changed, always in storage
    order, so every sum is the one a full re-summation gives, bit for bit; the nearest-first heap
    holds only the cells within the first of :data:`RING_RADII` that contains more than the
    expected energy (the others are never reached). The output equals that of the plain version
    (every cluster scanned and every matched cluster re-summed per track), which
    ``tests/test_sim_pflow_speed.py`` keeps as its reference.
    """
    n_cl = cl_eta.shape[0]
    if e_clusters.shape[0] == n_cl:
        cur = e_clusters.copy()
    else:
        cur = np.zeros(n_cl)
        for c in range(n_cl):
            cur[c] = _cluster_sum(cc_off, cell_e, c)
    matched = np.full(t_eta.shape[0], -1, np.int64)
    removed = np.zeros(t_eta.shape[0])
    dr2max = match_dr * match_dr
    # the η window is widened by a margin; the exact test below decides, as in a full scan
    win = match_dr + 1e-9
    use = np.zeros(n_cl, np.bool_)
    touched = np.zeros(n_cl, np.bool_)
    ring_radii = np.array(RING_RADII)
    n_r = ring_radii.shape[0]
    r2s = np.empty(n_r)
    for ir in range(n_r):
        r2s[ir] = ring_radii[ir] * ring_radii[ir]  # (as r * r in the loop of the previous kernel)
    e_in = np.zeros(n_r)
    # work buffers for the cells of an event (allocated once, not per track)
    n_max = 0
    for ev in range(cl_off.shape[0] - 1):
        n_max = max(n_max, cc_off[cl_off[ev + 1]] - cc_off[cl_off[ev]])
    cidx = np.empty(n_max, np.int64)
    ccl = np.empty(n_max, np.int64)
    cd = np.empty(n_max)
    heap = np.empty(n_max, np.int64)
    for ev in range(cl_off.shape[0] - 1):
        c0, c1 = cl_off[ev], cl_off[ev + 1]
        if c1 == c0 or t_off[ev + 1] == t_off[ev]:
            continue
        by_eta = c0 + np.argsort(cl_eta[c0:c1])
        s_eta = cl_eta[by_eta]
        cand_c = np.empty(c1 - c0, np.int64)
        cand_d = np.empty(c1 - c0)
        used = np.empty(c1 - c0, np.int64)
        for t in range(t_off[ev], t_off[ev + 1]):
            lo = np.searchsorted(s_eta, t_eta[t] - win)
            hi = np.searchsorted(s_eta, t_eta[t] + win, side="right")
            best = -1
            bd = dr2max
            n_cand = 0
            for i in range(lo, hi):
                c = by_eta[i]
                de = cl_eta[c] - t_eta[t]
                if de * de >= dr2max:
                    continue
                dp = _dphi(cl_phi[c], t_phi[t])
                d2 = de * de + dp * dp
                if d2 < dr2max:
                    cand_c[n_cand] = c
                    cand_d[n_cand] = d2
                    n_cand += 1
                if cur[c] > eop_min * t_p[t] and (d2 < bd or (d2 == bd and best >= 0 and c < best)):
                    bd = d2
                    best = c
            if best < 0:
                continue
            matched[t] = best
            eexp = t_eexp[t]
            sexp = max(t_sexp[t], 1e-6)
            used[0] = best
            n_used = 1
            use[best] = True
            etot = cur[best]
            if (etot - eexp) / sexp < split_sig:
                # further clusters, nearest first
                order = np.argsort(cand_d[:n_cand], kind="mergesort")
                tie = False
                for i in range(1, n_cand):
                    if cand_d[order[i]] == cand_d[order[i - 1]]:
                        tie = True
                if tie:
                    # equal distances: the order of a full argsort over the event's clusters
                    d2all = np.empty(c1 - c0)
                    for c in range(c0, c1):
                        de = cl_eta[c] - t_eta[t]
                        if de * de >= dr2max:
                            d2all[c - c0] = np.inf
                            continue
                        dp = _dphi(cl_phi[c], t_phi[t])
                        d2all[c - c0] = de * de + dp * dp
                    full = np.argsort(d2all)
                    n_cand = 0
                    for q in full:
                        if d2all[q] >= dr2max:
                            break
                        cand_c[n_cand] = c0 + q
                        n_cand += 1
                    order = np.arange(n_cand)
                for i in order:
                    c = cand_c[i]
                    if use[c] or cur[c] <= 0:
                        continue
                    use[c] = True
                    n_used = _insert_sorted(used, n_used, c)
                    etot += cur[c]
                    if (etot - eexp) / sexp >= split_sig:
                        break
            if etot <= eexp:
                # the expected energy exceeds the clusters: remove them entirely
                for u in range(n_used):
                    c = used[u]
                    use[c] = False
                    changed[c] = True
                    for j in range(cc_off[c], cc_off[c + 1]):
                        cell_e[j] = 0.0
                    removed[t] += cur[c]
                    cur[c] = 0.0
                continue
            # cell-by-cell subtraction in rings of increasing distance from the track
            k = 0
            for u in range(n_used):
                c = used[u]
                for j in range(cc_off[c], cc_off[c + 1]):
                    if cell_e[j] <= 0:
                        continue  # nothing to take (negative noise, or already subtracted)
                    cidx[k] = j
                    ccl[k] = c
                    g = cell_id[j]
                    de = g_eta[g] - t_eta[t]
                    dp = _dphi(g_phi[g], t_phi[t])
                    cd[k] = de * de + dp * dp
                    k += 1
            n_c = k
            left = eexp
            # nearest first: a binary heap on the distance pops only the cells the expected
            # energy uses up (a full sort of every matched cluster's cells per track is not needed).
            # Only the cells within the smallest of RING_RADII that holds more than the expected
            # energy can be popped (the nearest-first order never reaches the others), so they
            # alone enter the heap: the same cells in the same order
            need = eexp * (1.0 + 1e-9)  # far above the rounding of the running subtraction
            n_h = n_c
            # the energy within each radius, all radii in one pass (each sum adds its cells in the
            # same order as a pass per radius would)
            e_in[:] = 0.0
            for q in range(n_c):
                d = cd[q]
                x = cell_e[cidx[q]]
                for ir in range(n_r):
                    if d < r2s[ir]:
                        e_in[ir] += x
            for ir in range(n_r):
                if e_in[ir] > need:
                    r2 = r2s[ir]
                    n_h = 0
                    for q in range(n_c):
                        if cd[q] < r2:
                            heap[n_h] = q
                            n_h += 1
                    break
            if n_h == n_c:
                for q in range(n_c):
                    heap[q] = q
            for q in range(n_h // 2 - 1, -1, -1):
                _sift_down(heap, cd, q, n_h)
            while n_h > 0:
                q = heap[0]
                n_h -= 1
                heap[0] = heap[n_h]
                _sift_down(heap, cd, 0, n_h)
                j = cidx[q]
                if cell_e[j] <= 0:
                    continue
                touched[ccl[q]] = True
                changed[ccl[q]] = True
                if cell_e[j] <= left:
                    left -= cell_e[j]
                    cell_e[j] = 0.0
                else:
                    cell_e[j] -= left
                    left = 0.0
                    break
            removed[t] = eexp - left
            rem = 0.0
            for u in range(n_used):
                c = used[u]
                if touched[c]:
                    cur[c] = _cluster_sum(cc_off, cell_e, c)
                    touched[c] = False
                rem += cur[c]
            full_remnant = rem < remnant_sigma * sexp
            for u in range(n_used):
                c = used[u]
                use[c] = False
                if full_remnant:
                    # remnant compatible with the shower fluctuation: removed
                    changed[c] = True
                    for j in range(cc_off[c], cc_off[c + 1]):
                        cell_e[j] = 0.0
                    removed[t] += cur[c]
                    cur[c] = 0.0
    return matched, removed


@numba.njit(cache=True)
def _group_cells(cell_cluster, cell_energy, n_cl):
    """Whether the cells are grouped by cluster (non-decreasing cluster index, all within
    ``0 .. n_cl − 1``) and, if so, the offsets of each cluster's cells and a copy of their energies."""
    off = np.zeros(n_cl + 1, np.int64)
    e = np.empty(cell_energy.shape[0])
    prev = 0
    for i in range(cell_cluster.shape[0]):
        q = cell_cluster[i]
        if q < prev or q >= n_cl:
            return False, off, e
        off[q + 1] += 1
        e[i] = cell_energy[i]
        prev = q
    for q in range(n_cl):
        off[q + 1] += off[q]
    return True, off, e


@numba.njit(cache=True)
def _resum_clusters(s, changed, cc_off, cell_id, cell_e, g_eta, g_cos, g_sin, g_layer):
    """Recompute the sums ``s`` (rows of :func:`lhcml.sim.topoclusters._cluster_sums`) of the
    ``changed`` clusters from their cells (grouped: ``cc_off``), in storage order as
    ``_cluster_sums`` adds them."""
    for q in range(changed.shape[0]):
        if not changed[q]:
            continue
        s[0, q], s[1, q], s[2, q], s[3, q], s[4, q], s[5, q] = sum_cells(cell_id, cell_e, cc_off[q], cc_off[q + 1],
                                                                         g_eta, g_cos, g_sin, g_layer)


def expected_deposit(p: np.ndarray, eta_calo: np.ndarray, is_electron: np.ndarray, geo=None):
    """Expected EM-scale calorimeter energy of tracks of momentum ``p`` (GeV) and its spread.

    Pion hypothesis: ``⟨E/p⟩ = (f̄ + (1 − f̄)/(e/h)) (1 − ⟨f_dead⟩)`` (:func:`lhcml.sim.jet_calo.pion_response`,
    the mean dead-material loss included as in an E/p measured on single pions) with :func:`~lhcml.sim.jet_calo.pion_response_sigma`; electron hypothesis (``is_electron``):
    ``E/p = 1`` with the EM terms of the region, ``σ/E = a/√E ⊕ c``.
    """
    from lhcml.sim.jet_calo import block_terms, load_geometry, pion_response, pion_response_sigma

    geo = geo or load_geometry()
    p = np.asarray(p, np.float64)
    a_em, c_em = block_terms(geo, 0, eta_calo)
    e_sig = np.sqrt(a_em**2 / np.maximum(p, 1e-6) + c_em**2)
    e_exp = np.where(is_electron, 1.0, pion_response(p, geo, eta_calo)) * p
    s_exp = np.where(is_electron, e_sig, pion_response_sigma(p, eta_calo, geo)) * p
    return e_exp, s_exp


def build_pflow_flat(
    particles: FlatTable,
    tracks: FlatTable | None,
    primary_vertex_z: np.ndarray,
    rng: np.random.Generator,
    mu: float | None = None,
    n_pileup: np.ndarray | None = None,
    topo=None,
    track_ips: dict[str, np.ndarray] | None = None,
) -> FlatTable:
    """:func:`build_pflow` on flat tables.

    ``topo``: the batch's :class:`lhcml.sim.topoclusters.TopoClusters` when already simulated
    (else the calorimeter is simulated here with ``mu``/``n_pileup``). ``track_ips``: the tracks'
    impact parameters w.r.t. the reconstructed hard-scatter vertex
    (:func:`lhcml.sim.vertexing.impact_parameters`, one row per track): the charged-hadron
    subtraction then uses their ``z0SinTheta`` and the charged objects carry their ``d0``,
    ``z0SinTheta`` and uncertainties (the simulation chain passes them); without them,
    ``(z0 − z_PV) sinθ`` from the beam-line ``z0`` and the tracks' own ``d0``.
    """
    from lhcml.sim.jet_calo import bend_phi
    from lhcml.sim.topoclusters import (
        cluster_kinematics,
        kinematics_from_sums,
        lcw_weight,
        simulate_topo_clusters,
    )

    n_ev = len(particles)
    pv_z = np.asarray(primary_vertex_z, dtype=np.float64)
    if topo is None:
        topo = simulate_topo_clusters(particles, pv_z, rng, mu, n_pileup)
    geo = topo.geometry
    clusters = topo.clusters
    n_cl = int(clusters.counts.sum())
    # cells grouped by cluster (as topo_cluster makes them; else sorted here)
    sums = getattr(topo, "cluster_sums", None)
    if sums is not None and sums.shape == (6, n_cl) and int(np.sum(clusters["n_cells"])) == len(topo.cell_id):
        # the clustering's own output (the sums are set by it alone): grouped, n_cells per cluster
        grouped = True
        cc_off = np.zeros(n_cl + 1, np.int64)
        np.cumsum(clusters["n_cells"], out=cc_off[1:])
        cell_e = np.array(topo.cell_energy, np.float64)  # a copy: subtracted in place
    else:
        sums = None
        # one pass: the grouping checked, the offsets counted and the energies copied
        grouped, cc_off, cell_e = _group_cells(np.asarray(topo.cell_cluster),
                                               np.asarray(topo.cell_energy, np.float64), n_cl)
    if grouped:
        cell_id = np.asarray(topo.cell_id, np.int64)
    else:
        order = np.argsort(topo.cell_cluster, kind="stable")
        cell_id = topo.cell_id[order].astype(np.int64)
        cell_e = topo.cell_energy[order].astype(np.float64)
        cc_off = np.zeros(n_cl + 1, np.int64)
        np.cumsum(np.bincount(topo.cell_cluster, minlength=n_cl), out=cc_off[1:])
    changed = np.zeros(n_cl, np.bool_)  # clusters whose cells the subtraction changed
    cl_event = clusters.event
    # cluster barycentres at the calorimeter, from the detector origin (as the cells)
    cl_eta0 = np.arcsinh(np.sinh(clusters["eta"]) + pv_z[cl_event] / geo.radius)

    trk_cols: dict[str, np.ndarray] = {}
    trk_evt = np.zeros(0, dtype=np.int64)
    if tracks is not None:
        offs_p = particles.offsets
        pid = particles["pid"]
        tflat = tracks.columns
        fields = set(tflat)
        evt_t = tracks.event
        pidx = tflat["particle_index"].astype(np.int64)
        real = pidx >= 0
        t_pt = tflat["pt"].astype(np.float64)
        t_eta = tflat["eta"].astype(np.float64)
        t_phi = tflat["phi"].astype(np.float64)
        t_q = tflat["charge"].astype(np.int8) if "charge" in fields else np.sign(tflat["qOverP"]).astype(np.int8)
        sin_t = 1.0 / np.cosh(t_eta)
        ip_cols: dict[str, np.ndarray] = {}
        if track_ips is not None:
            ip_cols = {name: np.asarray(track_ips[name], dtype=np.float64)
                       for name in ("z0SinTheta", "d0", "d0Uncertainty", "z0SinThetaUncertainty")}
            if any(len(v) != len(t_pt) for v in ip_cols.values()):
                raise ConfigError(f"track_ips has {len(ip_cols['d0'])} rows for {len(t_pt)} tracks; pass "
                                  "lhcml.sim.vertexing.impact_parameters of the same tracks")
        if "z0" in fields:
            z0 = tflat["z0"].astype(np.float64)
            dz0st = ip_cols["z0SinTheta"] if ip_cols else (z0 - pv_z[evt_t]) * sin_t
        elif ip_cols:
            dz0st = ip_cols["z0SinTheta"]
            z0 = pv_z[evt_t] + dz0st / sin_t
        else:
            z0 = pv_z[evt_t] + tflat["z0SinTheta"].astype(np.float64) / sin_t
            dz0st = tflat["z0SinTheta"].astype(np.float64)
        quality = np.ones(len(t_pt), dtype=bool)
        if "origin" in fields:
            # material secondaries (conversions, hadronic interactions): their parent's energy
            # is in the calorimeter, they are neither subtracted nor flow objects
            quality &= real | (tflat["origin"] == 1)
        tpid = np.zeros(len(t_pt), dtype=np.int32)
        tpid[real] = np.abs(pid[offs_p[evt_t[real]] + pidx[real]])
        # ---- subtraction (electrons: the electron hypothesis at every pT, see the module doc)
        is_e = tpid == 11
        sub = quality & (t_pt > SUB_PT_MIN) & ((t_pt < SUB_PT_MAX) | is_e) & (np.abs(t_eta) < SUB_ETA_MAX)
        sub &= tpid != 13
        s_idx = np.flatnonzero(sub)
        s_idx = s_idx[np.lexsort((-t_pt[s_idx], evt_t[s_idx]))]  # per event, by decreasing pT
        p = t_pt[s_idx] * np.cosh(t_eta[s_idx])
        eta_calo = np.arcsinh(np.sinh(t_eta[s_idx]) + z0[s_idx] / geo.radius)
        phi_calo = bend_phi(t_phi[s_idx], t_pt[s_idx], t_q[s_idx])
        t_off = np.zeros(n_ev + 1, np.int64)
        np.cumsum(np.bincount(evt_t[s_idx], minlength=n_ev), out=t_off[1:])
        e_exp, s_exp = expected_deposit(p, eta_calo, is_e[s_idx], geo)
        _subtract(clusters.offsets, cl_eta0, clusters["phi"], cc_off, cell_id, geo.eta, geo.phi, cell_e, t_off,
                  eta_calo, phi_calo, p, e_exp, s_exp, MATCH_DR, MATCH_EOP_MIN, SPLIT_SIGNIFICANCE, REMNANT_SIGMA,
                  changed, sums[0] if sums is not None else np.empty(0))
        # ---- charged objects
        keep = quality & (np.abs(dz0st) < CHS_DZ0_SINTHETA) & ~((t_pt >= SUB_PT_MAX) & (tpid != 13) & (tpid != 11))
        k = np.flatnonzero(keep)
        kind = np.full(len(k), KIND_CHARGED_HADRON, dtype=np.int8)
        kind[tpid[k] == 11] = KIND_ELECTRON
        kind[tpid[k] == 13] = KIND_MUON
        mass = np.where(kind == KIND_ELECTRON, _M_E, np.where(kind == KIND_MUON, _M_MU, _M_PI))

        def opt(name: str) -> np.ndarray:
            if name in ip_cols:
                return ip_cols[name][k]
            return tflat[name][k].astype(np.float64) if name in fields else np.zeros(len(k))

        pt_k, eta_k, phi_k = t_pt[k], t_eta[k], t_phi[k]
        tpx = pt_k * np.cos(phi_k)
        tpy = pt_k * np.sin(phi_k)
        tpz = pt_k * np.sinh(eta_k)
        trk_cols = {
            "px": tpx, "py": tpy, "pz": tpz, "E": np.sqrt(tpx**2 + tpy**2 + tpz**2 + mass**2),
            "pt": pt_k, "eta": eta_k, "phi": phi_k, "charge": t_q[k], "kind": kind,
            "d0": opt("d0"), "z0SinTheta": dz0st[k], "d0Uncertainty": opt("d0Uncertainty"),
            "z0SinThetaUncertainty": opt("z0SinThetaUncertainty"),
            "track_index": (k - tracks.offsets[evt_t[k]]).astype(np.int32),
        }
        trk_evt = evt_t[k]

    # ---- neutral objects: the remaining clusters (EM scale); the sums of the clusters the
    # subtraction left alone are those of the clustering (the same cells in the same order)
    if sums is not None:
        s = np.array(sums, np.float64)
        _resum_clusters(s, changed, cc_off, cell_id, cell_e, geo.eta, geo.cos_phi, geo.sin_phi, geo.layer)
        e, eta, phi, frac, sw = kinematics_from_sums(geo, s, cl_event, pv_z)
    else:
        cell_cl = np.repeat(np.arange(n_cl), np.diff(cc_off))
        e, eta, phi, frac, sw = cluster_kinematics(geo, cell_id, cell_e, cell_cl, n_cl, cl_event, pv_z)
    ok = (e > 0) & (sw > 0)
    _, p_em = lcw_weight(e[ok], frac[ok], geo)
    t_e, t_eta_n, t_phi_n, t_ev = e[ok], eta[ok], phi[ok], cl_event[ok]
    t_pt_n = t_e / np.cosh(t_eta_n)
    n_n = len(t_e)
    tow_cols = {
        "px": t_pt_n * np.cos(t_phi_n), "py": t_pt_n * np.sin(t_phi_n), "pz": t_pt_n * np.sinh(t_eta_n), "E": t_e,
        "pt": t_pt_n, "eta": t_eta_n, "phi": t_phi_n, "charge": np.zeros(n_n, dtype=np.int8),
        "kind": np.where(p_em > 0.5, KIND_PHOTON, KIND_NEUTRAL_HADRON).astype(np.int8),
        "d0": np.zeros(n_n), "z0SinTheta": np.zeros(n_n), "d0Uncertainty": np.zeros(n_n),
        "z0SinThetaUncertainty": np.zeros(n_n), "track_index": np.full(n_n, -1, dtype=np.int32),
    }
    # ---- merge per event (tracks first, then neutral clusters)
    neutrals = FlatTable(tow_cols, np.bincount(t_ev, minlength=n_ev))
    if not trk_cols:
        return neutrals
    trk_cols = {c: trk_cols[c].astype(np.result_type(trk_cols[c], tow_cols[c]), copy=False) for c in tow_cols}
    return insert_per_event(FlatTable(trk_cols, np.bincount(trk_evt, minlength=n_ev)), neutrals)


#: patches for the median pileup-density estimate: |eta| < RHO_ETA_MAX, RHO_N_ETA x RHO_N_PHI
RHO_ETA_MAX = 2.0
RHO_N_ETA = 8
RHO_N_PHI = 12


def pileup_density(objects: ak.Array) -> np.ndarray:
    """Median transverse-momentum density ρ (GeV per unit η×φ area) of each event.

    The ATLAS-style estimate of the diffuse (pileup + underlying event) energy density: the
    median over :data:`RHO_N_ETA` × :data:`RHO_N_PHI` patches in ``|η| <`` :data:`RHO_ETA_MAX`
    of the summed object pT divided by the patch area (the hard jets occupy few patches, so the
    median is insensitive to them). Jets are then corrected by ``pT → pT − ρ·A``.
    """
    return pileup_density_flat(FlatTable.from_awkward(objects, ["eta", "phi", "pt"]))


def pileup_density_flat(objects: FlatTable) -> np.ndarray:
    """:func:`pileup_density` of a flat object table."""
    n_ev = len(objects)
    eta = objects["eta"]
    phi = objects["phi"]
    pt = objects["pt"]
    ev = objects.event
    ok = np.abs(eta) < RHO_ETA_MAX
    ie = np.minimum(((eta[ok] + RHO_ETA_MAX) / (2 * RHO_ETA_MAX) * RHO_N_ETA).astype(np.int64), RHO_N_ETA - 1)
    ip = np.minimum(((phi[ok] + np.pi) / (2 * np.pi) * RHO_N_PHI).astype(np.int64), RHO_N_PHI - 1)
    n_patch = RHO_N_ETA * RHO_N_PHI
    key = ev[ok] * n_patch + ie * RHO_N_PHI + ip
    sums = np.bincount(key, weights=pt[ok], minlength=n_ev * n_patch).reshape(n_ev, n_patch)
    area = (2 * RHO_ETA_MAX / RHO_N_ETA) * (2 * np.pi / RHO_N_PHI)
    return np.median(sums, axis=1) / area
