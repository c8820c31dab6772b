"""Decays of K0S and Λ in the detector (V0s: displaced tracks in light jets).

Pythia keeps K0S (310) and Λ/Λ̄ (±3122) stable (see :mod:`lhcml.sim.processes`); here each one
flies an exponential distance with its real proper decay length (cτ = 26.84 mm for K0S,
78.9 mm for Λ, PDG) and, if it decays inside the inner-detector cavity (r < 1150 mm,
|z| < 3512 mm), decays isotropically in its rest frame into

- K0S → π+π− (69.2 %) or π0π0 (30.7 %, normalised to 30.8 %),
- Λ → pπ− (63.9 %) or nπ0 (36.1 %), Λ̄ → p̄π+ / n̄π0,

with π0 → γγ at the same point (cτ = 25 nm). The mother stays in the table with
``final = False``; daughters are appended at the end of their event with the decay position
as production vertex, ``parent_pid`` = the mother's pid, a new truth vertex id, and origin
``otherSecondary`` — unless the mother came from a b/c-hadron or τ decay (then the daughters
inherit ``fromB``/``fromBC``/``fromC``/``fromTau``, as ATLAS's exclusive origin label), or from
pileup (``pileup``). Everything is vectorised over all V0s of all events.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.sim.generator import PARTICLE_FIELDS, FlatTable, insert_per_event, segment_max

#: proper decay lengths c*tau (mm), PDG
CTAU_K0S = 26.844
CTAU_LAMBDA = 78.90

M_PI = 0.13957039
M_PI0 = 0.1349768
M_P = 0.93827209
M_N = 0.93956542

BR_K0S_CHARGED = 0.692 / (0.692 + 0.3069)
BR_LAMBDA_CHARGED = 0.639 / (0.639 + 0.358)

#: inner-detector cavity (mm): V0s decaying outside it reach the calorimeter intact
DECAY_VOLUME_R = 1150.0
DECAY_VOLUME_Z = 3512.0

_HEAVY_ORIGINS = np.array(
    [TRUTH_ORIGIN["fromB"], TRUTH_ORIGIN["fromBC"], TRUTH_ORIGIN["fromC"], TRUTH_ORIGIN["fromTau"]]
)


def _two_body(parent_p4: np.ndarray, m1: np.ndarray, m2: np.ndarray, rng: np.random.Generator):
    """Isotropic two-body decays of ``parent_p4`` (n, 4: px, py, pz, e): daughter four-momenta."""
    n = len(parent_p4)
    mass = np.sqrt(np.maximum(parent_p4[:, 3] ** 2 - np.sum(parent_p4[:, :3] ** 2, axis=1), 0.0))
    mass = np.maximum(mass, m1 + m2 + 1e-9)
    pstar = np.sqrt(np.maximum((mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2), 0.0)) / (2 * mass)
    cos_t = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    dirs = np.column_stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])
    p1 = pstar[:, None] * dirs
    e1 = np.sqrt(pstar**2 + m1**2)
    e2 = np.sqrt(pstar**2 + m2**2)
    d1 = _boost(np.column_stack([p1, e1]), parent_p4, mass)
    d2 = _boost(np.column_stack([-p1, e2]), parent_p4, mass)
    return d1, d2


def _boost(p4: np.ndarray, parent_p4: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Boost rest-frame four-momenta ``p4`` into the frame where the parent has ``parent_p4``."""
    beta = parent_p4[:, :3] / parent_p4[:, 3:4]
    b2 = np.sum(beta**2, axis=1)
    gamma = parent_p4[:, 3] / mass
    bp = np.sum(beta * p4[:, :3], axis=1)
    g2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    p = p4[:, :3] + (g2 * bp + gamma * p4[:, 3])[:, None] * beta
    e = gamma * (p4[:, 3] + bp)
    return np.column_stack([p, e])


def decay_v0s(particles: ak.Array, rng: np.random.Generator) -> ak.Array:
    """Decay the final-state K0S and Λ/Λ̄ of ``particles`` in the detector.

    Parameters
    ----------
    particles
        Particle table (fields :data:`lhcml.sim.generator.PARTICLE_FIELDS`), one list per
        event, in the detector frame.
    rng
        Random generator (flight lengths, decay modes, angles).

    Returns
    -------
    ak.Array
        The same table with decayed V0s marked ``final = False`` and their daughters appended
        at the end of each event. Indices of existing particles are unchanged.
    """
    table = FlatTable.from_awkward(particles, list(PARTICLE_FIELDS))
    out = decay_v0s_flat(table, rng)
    return particles if out is table else out.to_awkward()


def decay_v0s_flat(particles: FlatTable, rng: np.random.Generator) -> FlatTable:
    """:func:`decay_v0s` on a :class:`~lhcml.sim.generator.FlatTable` (same draws, same result)."""
    cols = dict(particles.columns)
    n_ev = len(particles)
    evt = particles.event
    apid = np.abs(cols["pid"])
    cand = np.nonzero(cols["final"] & ((apid == 310) | (apid == 3122)))[0]
    if len(cand) == 0:
        return particles
    pid = cols["pid"][cand]
    is_k = np.abs(pid) == 310
    p3 = np.column_stack([cols["px"][cand], cols["py"][cand], cols["pz"][cand]])
    e = cols["e"][cand]
    mass = np.where(cols["m"][cand] > 0, cols["m"][cand], np.where(is_k, 0.497611, 1.115683))
    pabs = np.linalg.norm(p3, axis=1)
    ctau = np.where(is_k, CTAU_K0S, CTAU_LAMBDA)
    length = rng.exponential(1.0, len(cand)) * ctau * pabs / mass  # lab flight length
    unit = p3 / np.maximum(pabs, 1e-12)[:, None]
    dec = np.column_stack([cols["vx"][cand], cols["vy"][cand], cols["vz"][cand]]) + length[:, None] * unit
    inside = (np.hypot(dec[:, 0], dec[:, 1]) < DECAY_VOLUME_R) & (np.abs(dec[:, 2]) < DECAY_VOLUME_Z)
    u_mode = rng.uniform(size=len(cand))
    charged_mode = np.where(is_k, u_mode < BR_K0S_CHARGED, u_mode < BR_LAMBDA_CHARGED)

    keep = np.nonzero(inside)[0]
    cand, pid, is_k, charged_mode = cand[keep], pid[keep], is_k[keep], charged_mode[keep]
    dec = dec[keep]
    t_dec = cols["t"][cand] + length[keep] * e[keep] / np.maximum(pabs[keep], 1e-12)
    parent_p4 = np.column_stack([p3[keep], e[keep]])
    sign = np.sign(pid)
    # daughter 1 / daughter 2 ids and masses per mode
    pid1 = np.where(is_k, np.where(charged_mode, 211, 111), np.where(charged_mode, 2212, 2112) * sign)
    pid2 = np.where(is_k, np.where(charged_mode, -211, 111), np.where(charged_mode, -211 * sign, 111))
    m1 = np.where(is_k, np.where(charged_mode, M_PI, M_PI0), np.where(charged_mode, M_P, M_N))
    m2 = np.where(charged_mode, M_PI, M_PI0)
    d1, d2 = _two_body(parent_p4, m1, m2, rng)

    dpid = np.concatenate([pid1, pid2]).astype(np.int32)
    dp4 = np.concatenate([d1, d2])
    dm = np.concatenate([m1, m2])
    mother = np.concatenate([cand, cand])
    # pi0 -> gamma gamma at the decay point
    pi0 = np.nonzero(dpid == 111)[0]
    if len(pi0):
        g1, g2 = _two_body(dp4[pi0], np.zeros(len(pi0)), np.zeros(len(pi0)), rng)
        stable = np.nonzero(dpid != 111)[0]
        dpid = np.concatenate([dpid[stable], np.full(2 * len(pi0), 22, dtype=np.int32)])
        dp4 = np.concatenate([dp4[stable], g1, g2])
        dm = np.concatenate([dm[stable], np.zeros(2 * len(pi0))])
        mother = np.concatenate([mother[stable], mother[pi0], mother[pi0]])

    charge = np.zeros(len(dpid), dtype=np.int8)
    charge[dpid == 211] = 1
    charge[dpid == -211] = -1
    charge[dpid == 2212] = 1
    charge[dpid == -2212] = -1
    # position of each daughter: its mother's decay point
    m_of = np.searchsorted(cand, mother)  # the decaying V0 (row of ``cand``) of each daughter
    mother_origin = cols["origin"][mother]
    origin = np.where(
        np.isin(mother_origin, _HEAVY_ORIGINS), mother_origin, np.int8(TRUTH_ORIGIN["otherSecondary"])
    ).astype(np.int8)
    is_pu = cols["is_pileup"][mother]
    origin[is_pu] = TRUTH_ORIGIN["pileup"]
    # new vertex ids: per event, max existing id + 1 + rank of the decaying V0
    dev = evt[mother]
    max_vid = segment_max(cols["vertex_index"], particles.offsets, -1)
    v0_rank = np.zeros(len(cand), dtype=np.int64)
    cand_ev = evt[cand]
    order = np.argsort(cand_ev, kind="stable")
    first = np.searchsorted(cand_ev[order], cand_ev[order])
    v0_rank[order] = np.arange(len(cand)) - first
    vertex = (max_vid[dev] + 1 + v0_rank[m_of]).astype(np.int32)

    final = cols["final"].copy()
    final[cand] = False
    status = cols["status"].copy()
    status[cand] = -np.abs(status[cand])
    cols["final"] = final
    cols["status"] = status

    order_d = np.argsort(dev, kind="stable")
    new = {
        "pid": dpid,
        "charge": charge,
        "px": dp4[:, 0],
        "py": dp4[:, 1],
        "pz": dp4[:, 2],
        "e": dp4[:, 3],
        "m": dm,
        "vx": dec[m_of, 0],
        "vy": dec[m_of, 1],
        "vz": dec[m_of, 2],
        "t": t_dec[m_of],
        "status": np.full(len(dpid), 91, dtype=np.int32),
        "final": np.ones(len(dpid), dtype=bool),
        "parent_pid": cols["pid"][mother].astype(np.int32),
        "origin": origin,
        "hf_hadron": cols["hf_hadron"][mother],
        "vertex_index": vertex,
        "is_pileup": is_pu,
    }
    new = {k: np.asarray(v)[order_d].astype(PARTICLE_FIELDS[k]) for k, v in new.items()}
    new_counts = np.bincount(dev, minlength=n_ev)
    return insert_per_event(FlatTable(cols, particles.counts), FlatTable(new, new_counts))
