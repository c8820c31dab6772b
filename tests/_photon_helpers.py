"""Helpers shared by the calorimeter/photon tests (not a test module)."""

from __future__ import annotations

import numpy as np


def toy_pileup_library(n_events: int, seed: int):
    """A minimum-bias-like library built from single particles (fast, exact): ~40 particles per
    interaction, half photons half charged pions, pT ~ 0.2 + Exp(0.4) GeV, flat in |eta| < 2."""
    from lhcml.sim.pileup import PileupLibrary

    rng = np.random.default_rng(seed)
    counts = rng.poisson(40, n_events)
    n = int(counts.sum())
    pid = np.where(rng.random(n) < 0.5, 22, rng.choice([211, -211], n)).astype(np.int32)
    charge = np.sign(pid).astype(np.int8) * (np.abs(pid) == 211)
    pt = 0.2 + rng.exponential(0.4, n)
    eta = rng.uniform(-2, 2, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    m = np.where(pid == 22, 0.0, 0.1396)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    cols = {
        "pid": pid, "charge": charge, "px": px, "py": py, "pz": pz, "e": np.sqrt(px**2 + py**2 + pz**2 + m**2),
        "m": m, "vx": np.zeros(n), "vy": np.zeros(n), "vz": np.zeros(n), "t": np.zeros(n),
        "parent_pid": np.zeros(n, np.int32), "vertex_index": np.zeros(n, np.int16),
    }  # fmt: skip
    return PileupLibrary({k: np.asarray(v) for k, v in cols.items()}, counts, seed)
