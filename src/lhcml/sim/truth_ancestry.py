"""Truth ancestry of the Pythia event record (numba kernels on the flattened record).

Used by :class:`lhcml.sim.generator.PythiaGenerator` to label every particle:

- ``origin`` follows ATLAS's ``ftagTruthOriginLabel`` (:data:`lhcml.data.schema.TRUTH_ORIGIN`):
  a particle whose ancestry (through decays) reaches a weakly decaying b-hadron is ``fromB``,
  through a c-hadron that itself comes from a b-hadron ``fromBC``, a c-hadron only ``fromC``, a
  τ lepton ``fromTau``; otherwise ``primary``;
- ``hf_hadron``: index of the heavy-flavour ancestor;
- ``vertex_index``: 0 = hard-scatter primary vertex; every other distinct production position
  (clustered within :data:`VERTEX_MERGE_DISTANCE`) gets its own id 1, 2, ... per event;
- the last copies of t, W, Z, H and their decay quarks (large-R truth labels).
"""

from __future__ import annotations

import numba
import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN

#: production vertices closer than this (mm) are the same truth vertex (as ATLAS truth merging)
VERTEX_MERGE_DISTANCE = 0.1

ORIGIN_PRIMARY = TRUTH_ORIGIN["primary"]
ORIGIN_FROM_B = TRUTH_ORIGIN["fromB"]
ORIGIN_FROM_BC = TRUTH_ORIGIN["fromBC"]
ORIGIN_FROM_C = TRUTH_ORIGIN["fromC"]
ORIGIN_FROM_TAU = TRUTH_ORIGIN["fromTau"]


# --------------------------------------------------------------------------------------------
# pdg-id helpers
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _heaviest_quark(pid: int) -> int:
    """Heaviest quark flavour of a hadron pdg id; 0 for non-hadrons, -1 for quarkonia."""
    a = abs(pid) % 10000
    if a < 100:
        return 0
    q3 = (a // 10) % 10
    if q3 == 0:  # diquark
        return 0
    q2 = (a // 100) % 10
    q1 = (a // 1000) % 10
    if q1 == 0:  # meson q2 q3
        if q2 == q3:
            return -1  # quarkonium (hidden flavour)
        return q2
    return q1


@numba.njit(cache=True)
def _hadron_flavour_array(pid: np.ndarray) -> np.ndarray:
    out = np.zeros(pid.shape[0], dtype=np.int8)
    for i in range(pid.shape[0]):
        out[i] = _heaviest_quark(pid[i])
    return out


def hadron_flavour(pid: np.ndarray) -> np.ndarray:
    """Heaviest quark flavour of each hadron (5 b, 4 c, ...; 0 non-hadron, -1 quarkonium)."""
    return _hadron_flavour_array(np.ascontiguousarray(pid, dtype=np.int32))


# --------------------------------------------------------------------------------------------
# ancestry kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _weak_hf(offsets, pid, mother1, mother2, flav):
    """Flags of weakly decaying b/c hadrons and last-copy taus (no same-kind child)."""
    n = pid.shape[0]
    has_b_child = np.zeros(n, dtype=np.bool_)
    has_c_child = np.zeros(n, dtype=np.bool_)
    has_tau_child = np.zeros(n, dtype=np.bool_)
    for ev in range(offsets.shape[0] - 1):
        o = offsets[ev]
        for g in range(o, offsets[ev + 1]):
            for m in (mother1[g], mother2[g]):
                if m <= 0:
                    continue
                gm = o + m
                if flav[g] == 5:
                    has_b_child[gm] = True
                elif flav[g] == 4:
                    has_c_child[gm] = True
                if abs(pid[g]) == 15:
                    has_tau_child[gm] = True
    weak_b = np.zeros(n, dtype=np.bool_)
    weak_c = np.zeros(n, dtype=np.bool_)
    last_tau = np.zeros(n, dtype=np.bool_)
    for g in range(n):
        weak_b[g] = flav[g] == 5 and not has_b_child[g]
        weak_c[g] = flav[g] == 4 and not has_c_child[g] and not has_b_child[g]
        last_tau[g] = abs(pid[g]) == 15 and not has_tau_child[g]
    return weak_b, weak_c, last_tau


@numba.njit(cache=True)
def _ancestry(offsets, pid, status, mother1, weak_b, weak_c, last_tau):
    """Origin label, heavy-flavour ancestor and parent pid of every particle."""
    n = pid.shape[0]
    origin = np.full(n, ORIGIN_PRIMARY, dtype=np.int8)
    hf = np.full(n, -1, dtype=np.int32)
    parent_pid = np.zeros(n, dtype=np.int32)
    c_from_b = np.zeros(n, dtype=np.bool_)
    for ev in range(offsets.shape[0] - 1):
        o = offsets[ev]
        for g in range(o, offsets[ev + 1]):
            m = mother1[g]
            if m > 0:
                parent_pid[g] = pid[o + m]
            found_b = -1
            found_c = -1
            found_tau = False
            cur = g
            for _ in range(256):
                st = abs(status[cur])
                if st < 91 or st > 99:  # not produced in a particle decay: stop
                    break
                m = mother1[cur]
                if m <= 0:
                    break
                gm = o + m
                if weak_b[gm]:
                    found_b = m
                    break
                if weak_c[gm] and found_c < 0:
                    found_c = m
                if last_tau[gm]:
                    found_tau = True
                cur = gm
            if found_b >= 0 and found_c >= 0:
                origin[g] = ORIGIN_FROM_BC
                hf[g] = found_b
            elif found_b >= 0:
                origin[g] = ORIGIN_FROM_B
                hf[g] = found_b
            elif found_c >= 0:
                origin[g] = ORIGIN_FROM_C
                hf[g] = found_c
            elif found_tau:
                origin[g] = ORIGIN_FROM_TAU
            if weak_c[g] and found_b >= 0:
                c_from_b[g] = True
    return origin, hf, parent_pid, c_from_b


@numba.njit(cache=True)
def assign_vertices(offsets, vx, vy, vz, merge_distance, first_id):
    """Truth vertex ids per event: 0 for the origin, distinct ids for other positions.

    Positions are relative to the event's primary vertex (before the beam-spot shift).
    ``first_id[ev]`` is the first id given to a displaced vertex of event ``ev``.
    """
    n = vx.shape[0]
    out = np.zeros(n, dtype=np.int32)
    d2 = merge_distance * merge_distance
    buf = np.empty((256, 3))
    for ev in range(offsets.shape[0] - 1):
        nv = 0
        for g in range(offsets[ev], offsets[ev + 1]):
            x = vx[g]
            y = vy[g]
            z = vz[g]
            if x * x + y * y + z * z < d2:
                out[g] = 0
                continue
            found = -1
            for k in range(nv):
                dx = buf[k, 0] - x
                dy = buf[k, 1] - y
                dz = buf[k, 2] - z
                if dx * dx + dy * dy + dz * dz < d2:
                    found = k
                    break
            if found < 0:
                if nv == buf.shape[0]:
                    nb = np.empty((2 * nv, 3))
                    nb[:nv] = buf
                    buf = nb
                buf[nv, 0] = x
                buf[nv, 1] = y
                buf[nv, 2] = z
                found = nv
                nv += 1
            out[g] = first_id[ev] + found
    return out


@numba.njit(cache=True)
def _resonances(offsets, pid, daughter1, daughter2):
    """Last copies of t, W, Z, H with up to three decay quarks (global indices, -1 = none)."""
    n = pid.shape[0]
    out_idx = np.full(n, -1, dtype=np.int64)
    out_q = np.full((n, 3), -1, dtype=np.int64)
    nout = 0
    for ev in range(offsets.shape[0] - 1):
        o = offsets[ev]
        for g in range(o, offsets[ev + 1]):
            a = abs(pid[g])
            if a != 6 and a != 23 and a != 24 and a != 25:
                continue
            d1 = daughter1[g]
            d2 = daughter2[g]
            if d1 <= 0:
                continue
            if d2 < d1:
                d2 = d1
            same = False
            for d in range(d1, d2 + 1):
                if pid[o + d] == pid[g]:
                    same = True
            if same:
                continue  # not the last copy
            nq = 0
            for d in range(d1, d2 + 1):
                gd = o + d
                ad = abs(pid[gd])
                if ad >= 1 and ad <= 5 and nq < 3:
                    out_q[nout, nq] = gd
                    nq += 1
                elif ad == 24 and a == 6:
                    # follow the W to its last copy, then take its decay quarks
                    w = gd
                    for _ in range(64):
                        e1 = daughter1[w]
                        e2 = daughter2[w]
                        if e1 <= 0:
                            break
                        if e2 < e1:
                            e2 = e1
                        nxt = -1
                        for e in range(e1, e2 + 1):
                            if pid[o + e] == pid[w]:
                                nxt = o + e
                        if nxt < 0:
                            break
                        w = nxt
                    e1 = daughter1[w]
                    e2 = daughter2[w]
                    if e2 < e1:
                        e2 = e1
                    if e1 > 0:
                        for e in range(e1, e2 + 1):
                            ae = abs(pid[o + e])
                            if ae >= 1 and ae <= 5 and nq < 3:
                                out_q[nout, nq] = o + e
                                nq += 1
            out_idx[nout] = g
            nout += 1
    return out_idx[:nout], out_q[:nout]
