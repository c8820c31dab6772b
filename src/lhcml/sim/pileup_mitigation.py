"""Constituent-level pileup mitigation: SoftKiller (Cacciari, Salam, Soyez, EPJC 75 (2015) 59).

Per event, the (η, φ) plane ``|η| <`` :data:`SK_ETA_MAX` is divided into square cells of size
:data:`SK_CELL` (0.4, the paper's recommended grid spacing); the pT cut is the median over all
cells (empty ones count as 0) of the largest constituent pT in each cell, so that after the cut
half the cells are empty. Every eligible constituent (anywhere in η) below the cut is removed.

ATLAS applies it to neutral objects after charged-hadron subtraction (the charged pileup is
already removed by the vertex association): :func:`softkiller` takes an ``eligible`` mask for
that; the cut is computed from the eligible constituents only. Everything is vectorised over
all constituents of all events.
"""

from __future__ import annotations

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
