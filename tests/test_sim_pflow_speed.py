"""The particle-flow subtraction kernel gives, bit for bit, what the plain per-track version gave.

:func:`lhcml.sim.pflow.subtract_tracks` searches the clusters in an η window and re-sums only the
clusters whose cells changed; :func:`_reference_subtract_tracks` below is the previous kernel
(every cluster of the event scanned per track, every matched cluster re-summed), kept here as the
reference only.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from lhcml.sim import pflow
from lhcml.sim.pflow import (
    MATCH_DR,
    MATCH_EOP_MIN,
    REMNANT_SIGMA,
    SPLIT_SIGNIFICANCE,
    _dphi,
    _sift_down,
    subtract_tracks,
)


@numba.njit
def _reference_subtract_tracks(cl_off, cl_eta, cl_phi, cc_off, cell_eta, cell_phi, cell_e, t_off, t_eta, t_phi, t_p,
                               t_eexp, t_sexp, match_dr, eop_min, split_sig, remnant_sigma):
    n_cl = cl_eta.shape[0]
    cur = np.zeros(n_cl)
    for c in range(n_cl):
        s = 0.0
        for j in range(cc_off[c], cc_off[c + 1]):
            s += cell_e[j]
        cur[c] = s
    matched = np.full(t_eta.shape[0], -1, np.int64)
    removed = np.zeros(t_eta.shape[0])
    dr2max = match_dr * match_dr
    for ev in range(cl_off.shape[0] - 1):
        c0, c1 = cl_off[ev], cl_off[ev + 1]
        if c1 == c0:
            continue
        d2 = np.empty(c1 - c0)
        for t in range(t_off[ev], t_off[ev + 1]):
            best = -1
            bd = dr2max
            for c in range(c0, c1):
                de = cl_eta[c] - t_eta[t]
                if de * de >= dr2max:
                    d2[c - c0] = np.inf
                    continue
                dp = _dphi(cl_phi[c], t_phi[t])
                d2[c - c0] = de * de + dp * dp
                if d2[c - c0] < bd and cur[c] > eop_min * t_p[t]:
                    bd = d2[c - c0]
                    best = c
            if best < 0:
                continue
            matched[t] = best
            eexp = t_eexp[t]
            sexp = max(t_sexp[t], 1e-6)
            use = np.zeros(c1 - c0, np.bool_)
            use[best - c0] = True
            etot = cur[best]
            if (etot - eexp) / sexp < split_sig:
                order = np.argsort(d2)
                for q in order:
                    c = c0 + q
                    if d2[q] >= dr2max:
                        break
                    if use[q] or cur[c] <= 0:
                        continue
                    use[q] = True
                    etot += cur[c]
                    if (etot - eexp) / sexp >= split_sig:
                        break
            if etot <= eexp:
                for q in range(c1 - c0):
                    if use[q]:
                        c = c0 + q
                        for j in range(cc_off[c], cc_off[c + 1]):
                            cell_e[j] = 0.0
                        removed[t] += cur[c]
                        cur[c] = 0.0
                continue
            n_c = 0
            for q in range(c1 - c0):
                if use[q]:
                    c = c0 + q
                    n_c += cc_off[c + 1] - cc_off[c]
            cidx = np.empty(n_c, np.int64)
            cd = np.empty(n_c)
            k = 0
            for q in range(c1 - c0):
                if use[q]:
                    c = c0 + q
                    for j in range(cc_off[c], cc_off[c + 1]):
                        if cell_e[j] <= 0:
                            continue
                        cidx[k] = j
                        de = cell_eta[j] - t_eta[t]
                        dp = _dphi(cell_phi[j], t_phi[t])
                        cd[k] = de * de + dp * dp
                        k += 1
            n_c = k
            left = eexp
            heap = np.arange(n_c)
            for q in range(n_c // 2 - 1, -1, -1):
                _sift_down(heap, cd, q, n_c)
            n_h = n_c
            while n_h > 0:
                q = heap[0]
                n_h -= 1
                heap[0] = heap[n_h]
                _sift_down(heap, cd, 0, n_h)
                j = cidx[q]
                if cell_e[j] <= 0:
                    continue
                if cell_e[j] <= left:
                    left -= cell_e[j]
                    cell_e[j] = 0.0
                else:
                    cell_e[j] -= left
                    left = 0.0
                    break
            removed[t] = eexp - left
            rem = 0.0
            for q in range(c1 - c0):
                if use[q]:
                    c = c0 + q
                    s = 0.0
                    for j in range(cc_off[c], cc_off[c + 1]):
                        s += cell_e[j]
                    cur[c] = s
                    rem += s
            if rem < remnant_sigma * sexp:
                for q in range(c1 - c0):
                    if use[q]:
                        c = c0 + q
                        for j in range(cc_off[c], cc_off[c + 1]):
                            cell_e[j] = 0.0
                        removed[t] += cur[c]
                        cur[c] = 0.0
    return matched, removed


def _both(args):
    """(matched, removed, cell energies) of the new kernel and of the reference on copies of ``args``."""
    out = []
    for kernel in (subtract_tracks, _reference_subtract_tracks):
        a = list(args)
        a[6] = np.array(args[6], dtype=np.float64)
        matched, removed = kernel(*a)
        out.append((matched, removed, a[6]))
    return out


def _assert_identical(new, ref):
    for x, y, name in zip(new, ref, ("matched", "removed", "cell energies"), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{name} differ"


def _clusters(specs):
    """Kernel inputs of events made of clusters ``(eta, phi, [cell energies], [cell eta offsets])``."""
    cl_off, cl_eta, cl_phi, cc_off, c_eta, c_phi, c_e = [0], [], [], [0], [], [], []
    for event in specs:
        for eta, phi, energies, offsets in event:
            cl_eta.append(eta)
            cl_phi.append(phi)
            c_e += energies
            c_eta += [eta + o for o in offsets]
            c_phi += [phi] * len(energies)
            cc_off.append(len(c_e))
        cl_off.append(len(cl_eta))
    return [np.array(cl_off), np.array(cl_eta), np.array(cl_phi), np.array(cc_off), np.array(c_eta),
            np.array(c_phi), np.array(c_e)]


def _tracks(per_event):
    """Kernel track inputs: per event a list of ``(eta, phi, p, E_exp, sigma_exp)``."""
    t_off = np.cumsum([0] + [len(ev) for ev in per_event])
    rows = np.array([t for ev in per_event for t in ev], dtype=np.float64).reshape(-1, 5)
    return [t_off, rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy(), rows[:, 3].copy(), rows[:, 4].copy(),
            MATCH_DR, MATCH_EOP_MIN, SPLIT_SIGNIFICANCE, REMNANT_SIGMA]


def test_constructed_events_split_shower_with_equal_distances_and_cell_subtraction():
    cells = _clusters([
        # event 0: a 3 GeV cluster at the track, two 8 GeV clusters exactly 0.1 away on either
        # side in eta (equal distances: the order of the split-shower search is a tie), one far away
        [(0.0, 0.0, [2.0, 1.0], [0.0, 0.02]), (0.1, 0.0, [5.0, 3.0], [0.0, 0.02]),
         (-0.1, 0.0, [6.0, 2.0], [0.0, -0.02]), (2.0, 1.0, [9.0], [0.0])],
        # event 1: no clusters (its track finds nothing)
        [],
        # event 2: a wide 30 GeV cluster, two tracks subtract cell by cell (nearest first);
        # a second cluster across the phi = pi seam
        [(0.5, 0.3, [6.0, 5.0, 7.0, 4.0, 8.0], [0.0, 0.03, -0.03, 0.06, -0.06]),
         (0.5, np.pi - 0.01, [4.0, 4.0], [0.0, 0.01])],
    ])
    trk = _tracks([
        [(0.0, 0.0, 20.0, 12.0, 2.0)],
        [(0.0, 0.0, 5.0, 3.0, 1.0)],
        [(0.5, 0.3, 10.0, 7.0, 1.5), (0.52, 0.3, 8.0, 5.0, 1.2), (0.5, -np.pi + 0.01, 6.0, 4.5, 1.0)],
    ])
    new, ref = _both(cells + trk)
    _assert_identical(new, ref)
    matched, removed, e = new
    # event 0: the 3 GeV cluster is matched, one (and only one) 8 GeV cluster completes the split
    # shower (11 GeV, significance -0.5), and 11 < 12 GeV expected removes both entirely
    assert matched[0] == 0 and removed[0] == 11.0
    assert e[:2].sum() == 0.0 and sorted([e[2:4].sum(), e[4:6].sum()]) == [0.0, 8.0] and e[6] == 9.0
    # event 1: nothing to match
    assert matched[1] == -1 and removed[1] == 0.0
    # event 2: the first track takes 7 GeV from the cells nearest to it, the second 5 GeV; the
    # third track (phi across the seam) matches the second cluster
    assert matched[2] == 4 and matched[3] == 4 and matched[4] == 5
    assert removed[2] == pytest.approx(7.0) and removed[3] == pytest.approx(5.0)
    assert e[7:12].sum() == pytest.approx(30.0 - 12.0)
    assert e[7] == 0.0  # the central cell went first


def _capture_pflow_inputs(monkeypatch, mu: float, n: int, seed: int):
    """Run the simulation chain on a small tt̄ sample and keep the inputs of particle flow."""
    from lhcml.sim.events import simulate_events
    from lhcml.sim.pileup import build_pileup_library

    saved = []
    original = pflow.build_pflow_flat

    def keep(*args, **kwargs):
        saved.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(pflow, "build_pflow_flat", keep)
    library = build_pileup_library(20, seed + 1) if mu > 0 else None
    simulate_events("ttbar", n, mu=mu, seed=seed, pileup=library)
    monkeypatch.setattr(pflow, "build_pflow_flat", original)
    assert len(saved) == 1
    return saved[0]


@pytest.mark.parametrize("mu", [0.0, 40.0])
def test_particle_flow_on_ttbar_equals_the_reference_kernel(monkeypatch, mu):
    (particles, tracks, pv_z, _rng), kwargs = _capture_pflow_inputs(monkeypatch, mu, 6 if mu else 12, 808)
    kernel_args = []
    new_kernel = pflow._subtract

    def keep_args(*args):
        kernel_args.append([a.copy() if isinstance(a, np.ndarray) else a for a in args])
        return new_kernel(*args)

    def reference(cl_off, cl_eta, cl_phi, cc_off, cell_id, g_eta, g_phi, cell_e, *rest):
        # the reference kernel on the gathered cell directions; every cluster marked changed, so
        # the neutral objects' sums are all recomputed from the cells
        *args, changed, _e_clusters = rest
        changed[:] = True
        return _reference_subtract_tracks(cl_off, cl_eta, cl_phi, cc_off, g_eta[cell_id], g_phi[cell_id], cell_e,
                                          *args)

    monkeypatch.setattr(pflow, "_subtract", keep_args)
    new = pflow.build_pflow_flat(particles, tracks, pv_z, np.random.default_rng(1), **kwargs)
    monkeypatch.setattr(pflow, "_subtract", reference)
    ref = pflow.build_pflow_flat(particles, tracks, pv_z, np.random.default_rng(1), **kwargs)
    # every field of every flow object, bit for bit
    assert np.array_equal(new.offsets, ref.offsets)
    assert sorted(new.columns) == sorted(ref.columns)
    for name in ref.columns:
        assert new[name].dtype == ref[name].dtype and np.array_equal(new[name], ref[name]), name
    # the kernel itself: matches, removed energies and the cells after subtraction
    (k_args,) = kernel_args
    cl_off, cl_eta, cl_phi, cc_off, cell_id, g_eta, g_phi, *rest = k_args
    args = [cl_off, cl_eta, cl_phi, cc_off, g_eta[cell_id], g_phi[cell_id], *rest[:-2]]
    # the cluster energies handed to the kernel are its own sums of the cells
    e_clusters = rest[-1]
    cell_e0 = rest[0]
    assert np.array_equal(e_clusters, [pflow._cluster_sum(cc_off, cell_e0, q) for q in range(len(cc_off) - 1)])
    new_k, ref_k = _both(args)
    _assert_identical(new_k, ref_k)
    matched, removed, cell_e = new_k
    # the sample exercises the kernel: most subtracted tracks match, energy is taken away
    assert np.mean(matched >= 0) > 0.3 and removed.sum() > 0
    assert cell_e.sum() < np.asarray(args[6]).sum()
