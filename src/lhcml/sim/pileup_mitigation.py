"""Constituent-level pileup mitigation of jet inputs: SoftKiller and constituent subtraction.

SoftKiller (Cacciari, Salam, Soyez, EPJC 75 (2015) 59): per event, the (η, φ) plane ``|η| <``
:data:`SK_ETA_MAX` is divided into square cells of size :data:`SK_CELL` (0.4, the paper's
recommended grid spacing); the pT cut is the median over all cells (empty ones count as 0) of the
largest constituent pT in each cell, so that after the cut half the cells are empty. Every
eligible constituent (anywhere in η) below the cut is removed.

Constituent subtraction (:func:`constituent_subtraction`; Berta et al., JHEP 06 (2014) 092, in
the event-wide form of JHEP 08 (2019) 175): ghosts carrying the event's median pT density ρ
times their area are paired with the constituents by increasing distance up to ΔR_max, and the
smaller pT of each pair is subtracted from both. ATLAS runs it before SoftKiller ("CSSK") on the
neutral inputs of its large-R jets; :func:`mitigate` applies either chain (``docs/references.md
§29``).

ATLAS applies both to neutral objects after charged-hadron subtraction (the charged pileup is
already removed by the vertex association): the functions take an ``eligible`` mask for that;
ρ and the SoftKiller cut are computed from the eligible constituents only. SoftKiller is
vectorised over all constituents of all events; the subtraction is a compiled loop per event.
"""

from __future__ import annotations

import numba
import numpy as np

from lhcml.errors import ConfigError

#: grid cell size in η and (approximately) φ: 0.4 as recommended by the SoftKiller paper
SK_CELL = 0.4
#: |η| range of the grid (our choice: up to the reach of R = 0.8 jets with |η| < 2, where the
#: minimum-bias density is roughly flat in η)
SK_ETA_MAX = 2.8


def softkiller_cut(
    eta: np.ndarray,
    phi: np.ndarray,
    pt: np.ndarray,
    event: np.ndarray,
    n_events: int,
    cell: float = SK_CELL,
    eta_max: float = SK_ETA_MAX,
) -> np.ndarray:
    """The SoftKiller pT cut of each event (same unit as ``pt``).

    Parameters
    ----------
    eta, phi, pt, event
        Flat constituent arrays and the event index of each constituent.
    n_events
        Number of events (events without constituents get a cut of 0).
    cell, eta_max
        Grid spacing and |η| range of the grid.
    """
    if cell <= 0 or eta_max <= 0:
        raise ConfigError(f"SoftKiller grid: cell ({cell}) and eta_max ({eta_max}) must be > 0")
    n_eta = max(1, int(round(2 * eta_max / cell)))
    n_phi = max(1, int(round(2 * np.pi / cell)))
    eta = np.asarray(eta, dtype=np.float64)
    ok = np.abs(eta) < eta_max
    ie = np.minimum(((eta[ok] + eta_max) / (2 * eta_max) * n_eta).astype(np.int64), n_eta - 1)
    ip = (np.floor((np.asarray(phi, dtype=np.float64)[ok] + np.pi) / (2 * np.pi) * n_phi).astype(np.int64)) % n_phi
    n_cells = n_eta * n_phi
    key = np.asarray(event, dtype=np.int64)[ok] * n_cells + ie * n_phi + ip
    cmax = np.zeros(n_events * n_cells)
    np.maximum.at(cmax, key, np.asarray(pt, dtype=np.float64)[ok])
    return np.median(cmax.reshape(n_events, n_cells), axis=1)


def softkiller(
    eta: np.ndarray,
    phi: np.ndarray,
    pt: np.ndarray,
    event: np.ndarray,
    n_events: int,
    eligible: np.ndarray | None = None,
    cell: float = SK_CELL,
    eta_max: float = SK_ETA_MAX,
) -> np.ndarray:
    """Boolean mask of the constituents SoftKiller keeps.

    ``eligible`` (default: all) marks the constituents subject to the cut (e.g. neutral objects
    after charged-hadron subtraction); the others are always kept and do not enter the cut.
    Returns the keep mask; the per-event cut is :func:`softkiller_cut`.
    """
    pt = np.asarray(pt, dtype=np.float64)
    event = np.asarray(event, dtype=np.int64)
    elig = np.ones(len(pt), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    cut = softkiller_cut(np.asarray(eta)[elig], np.asarray(phi)[elig], pt[elig], event[elig], n_events, cell,
                         eta_max)
    return ~elig | (pt >= cut[event])


# --------------------------------------------------------------------------------------------
# Constituent subtraction (event-wide) and CSSK
# --------------------------------------------------------------------------------------------

#: maximal particle-ghost distance ΔR_max of the constituent subtraction: 0.25, ATLAS's
#: ``ConstituentSubtractorTool`` default (``MaxDeltaR``; ``docs/references.md §29``)
CS_DR_MAX = 0.25
#: exponent α of the particle-ghost distance ``pT_i^α · ΔR`` (larger α: softer particles are
#: subtracted first): 1, ATLAS's ``ConstituentSubtractorTool`` default (``Alpha``; §29)
CS_ALPHA = 1.0
#: ghost area A_g (η × φ): 0.01, as ATLAS's tool and the fastjet-contrib default (§29)
CS_GHOST_AREA = 0.01
#: |η| range of the ghosts; constituents outside keep their pT (our choice: the calorimeter's
#: coverage, with the ρ measured in |η| < 2 applied flat in η — only |η| < 2.8 matters for
#: R = 0.8 jets with |η| < 2; ATLAS's tool places them up to |η| = 10 with one ρ, §29)
CS_ETA_MAX = 4.9
#: pileup-mitigation methods of large-R jet inputs: ``"sk"`` SoftKiller alone, ``"cssk"``
#: constituent subtraction followed by SoftKiller (ATLAS's CSSK)
METHODS = ("sk", "cssk")


@numba.njit(cache=True)
def _cs_kernel(eta, phi, pt, offsets, rho, n_eta, n_phi, eta_max, dr_max, alpha):  # pragma: no cover - compiled
    """Subtracted pT of every particle (0 = removed); flat arrays grouped by event via ``offsets``."""
    out = pt.copy()
    d_eta = 2.0 * eta_max / n_eta
    d_phi = 2.0 * np.pi / n_phi
    g_pt0 = d_eta * d_phi  # ghost area: times rho per event
    k_eta = int(np.ceil(dr_max / d_eta)) + 1
    k_phi = min(int(np.ceil(dr_max / d_phi)) + 1, n_phi // 2)
    ghost = np.empty(n_eta * n_phi)
    for ev in range(len(offsets) - 1):
        lo, hi = offsets[ev], offsets[ev + 1]
        if hi == lo or rho[ev] <= 0.0:
            continue
        # candidate pairs within dr_max
        cap = (hi - lo) * (2 * k_eta + 1) * (2 * k_phi + 1)
        dist = np.empty(cap)
        pi_ = np.empty(cap, dtype=np.int64)
        pg = np.empty(cap, dtype=np.int64)
        n = 0
        for i in range(lo, hi):
            if pt[i] <= 0.0 or abs(eta[i]) >= eta_max + dr_max:
                continue
            ie0 = int(np.floor((eta[i] + eta_max) / d_eta))
            ip0 = int(np.floor((phi[i] + np.pi) / d_phi))
            w = pt[i] ** alpha
            for ie in range(ie0 - k_eta, ie0 + k_eta + 1):
                if ie < 0 or ie >= n_eta:
                    continue
                de = eta[i] - (-eta_max + (ie + 0.5) * d_eta)
                for jp in range(ip0 - k_phi, ip0 + k_phi + 1):
                    ip = jp % n_phi
                    dp = phi[i] - (-np.pi + (ip + 0.5) * d_phi)
                    dp = (dp + np.pi) % (2.0 * np.pi) - np.pi
                    dr = np.sqrt(de * de + dp * dp)
                    if dr < dr_max:
                        dist[n] = w * dr
                        pi_[n] = i
                        pg[n] = ie * n_phi + ip
                        n += 1
        order = np.argsort(dist[:n], kind="mergesort")
        for m in range(n):
            ghost[pg[order[m]]] = rho[ev] * g_pt0
        for m in range(n):
            i = pi_[order[m]]
            g = pg[order[m]]
            if out[i] <= 0.0 or ghost[g] <= 0.0:
                continue
            if out[i] > ghost[g]:
                out[i] -= ghost[g]
                ghost[g] = 0.0
            else:
                ghost[g] -= out[i]
                out[i] = 0.0
    return out


def constituent_subtraction(
    eta: np.ndarray,
    phi: np.ndarray,
    pt: np.ndarray,
    event: np.ndarray,
    n_events: int,
    rho: np.ndarray,
    eligible: np.ndarray | None = None,
    dr_max: float = CS_DR_MAX,
    alpha: float = CS_ALPHA,
    ghost_area: float = CS_GHOST_AREA,
    eta_max: float = CS_ETA_MAX,
) -> np.ndarray:
    """Event-wide constituent subtraction: the subtracted pT of every constituent (0 = removed).

    Berta, Spousta, Miller, Leitner, JHEP 06 (2014) 092 in its event-wide form (Berta, Masetti,
    Miller, Spousta, JHEP 08 (2019) 175): ghosts on a regular grid of cells of area ≈
    ``ghost_area`` over ``|η| < eta_max`` (the cell count rounded so the grid tiles the range
    exactly), each carrying ``ρ · A_cell`` of pT; every (constituent, ghost) pair closer than
    ``dr_max`` in ΔR is visited in order of increasing ``pT^alpha · ΔR`` and, while both still
    have pT, ``min(pT_i, pT_g)`` is subtracted from both. Constituents are massless here (the
    calorimeter clusters and neutral objects), so no ρ_m term; their direction is unchanged.

    Parameters
    ----------
    eta, phi, pt, event, n_events
        Flat constituent arrays, the event index of each constituent (grouped by event, as
        :class:`~lhcml.sim.generator.FlatTable` stores them), and the number of events.
    rho
        pT density per event (same unit as ``pt`` per unit η × φ), e.g.
        :func:`lhcml.sim.pflow.pileup_density_flat` of the eligible constituents.
    eligible
        Constituents subject to the subtraction (default: all); the others keep their pT and
        take no ghost pT.
    dr_max, alpha, ghost_area, eta_max
        :data:`CS_DR_MAX`, :data:`CS_ALPHA`, :data:`CS_GHOST_AREA`, :data:`CS_ETA_MAX`.
    """
    if not dr_max > 0 or not ghost_area > 0 or not eta_max > 0 or not alpha >= 0:
        raise ConfigError(f"constituent subtraction: dr_max ({dr_max}), ghost_area ({ghost_area}) and eta_max "
                          f"({eta_max}) must be > 0 and alpha ({alpha}) >= 0")
    pt = np.asarray(pt, dtype=np.float64)
    event = np.asarray(event, dtype=np.int64)
    rho = np.asarray(rho, dtype=np.float64)
    if rho.shape != (n_events,):
        raise ConfigError(f"constituent subtraction: rho has shape {rho.shape}, expected ({n_events},) (one per event)")
    if len(event) and np.any(np.diff(event) < 0):
        raise ConfigError("constituent subtraction: constituents must be grouped by event (event index non-decreasing)")
    elig = np.ones(len(pt), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    idx = np.flatnonzero(elig)
    offsets = np.searchsorted(event[idx], np.arange(n_events + 1))
    n_eta = max(1, int(round(2 * eta_max / np.sqrt(ghost_area))))
    n_phi = max(1, int(round(2 * np.pi / np.sqrt(ghost_area))))
    sub = _cs_kernel(np.asarray(eta, np.float64)[idx], np.asarray(phi, np.float64)[idx], pt[idx],
                     offsets.astype(np.int64), rho, n_eta, n_phi, float(eta_max), float(dr_max), float(alpha))
    out = pt.copy()
    out[idx] = sub
    return out


def mitigate(table, method: str, eligible: np.ndarray):
    """The constituents of ``table`` after the pileup mitigation ``method`` (:data:`METHODS`).

    ``table``: a :class:`~lhcml.sim.generator.FlatTable` of jet inputs (``eta, phi, pt, px, py,
    pz, E`` in GeV); ``eligible``: the constituents subject to the mitigation (the neutral ones —
    charged ones passed the primary-vertex association). ``"sk"``: :func:`softkiller`;
    ``"cssk"``: :func:`constituent_subtraction` with ρ the median pT density of the eligible
    constituents (:func:`lhcml.sim.pflow.pileup_density_flat`: |η| < 2, patches 0.5 × 0.52, as
    ATLAS's grid-median estimator of 0.5 in |y| < 2, §29), the four-momenta of the subtracted
    constituents scaled, those reaching 0 removed, then :func:`softkiller`.
    """
    from lhcml.sim.pflow import pileup_density_flat

    if method not in METHODS:
        raise ConfigError(f"unknown pileup mitigation '{method}'; valid: {', '.join(METHODS)}")
    n_ev = len(table)
    eligible = np.asarray(eligible, dtype=bool)
    if method == "cssk":
        elig_table = table.select(eligible)
        rho = pileup_density_flat(elig_table)
        pt = table["pt"]
        new_pt = constituent_subtraction(table["eta"], table["phi"], pt, table.event, n_ev, rho, eligible,
                                         CS_DR_MAX, CS_ALPHA, CS_GHOST_AREA, CS_ETA_MAX)
        scale = np.where(pt > 0, new_pt / np.maximum(pt, 1e-300), 0.0)
        cols = {k: table[k] for k in table.columns}
        for k in ("px", "py", "pz", "E", "pt"):
            cols[k] = table[k] * scale
        keep = new_pt > 0
        table = type(table)(cols, table.counts).select(keep)
        eligible = eligible[keep]
    keep = softkiller(table["eta"], table["phi"], table["pt"], table.event, n_ev, eligible=eligible)
    return table.select(keep)
