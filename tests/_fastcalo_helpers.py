"""Helpers shared by the fast-calorimeter tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def two_cell_showers(rng: np.random.Generator, phase: np.ndarray) -> torch.Tensor:
    """Synthetic showers (10 voxels): a first layer of 4 cells whose two central cells share 0.9 of its
    energy as the impact position inside a cell says (``phase`` 0: all in cell 1, 1: all in cell 2; as
    the detailed middle layer's centroid), the outer two 0.05 each, 5 % jitter, normalised to 4; a
    second layer of 6 cells, Dirichlet(30), normalised to 5."""
    n = len(phase)
    first = np.zeros((n, 4))
    first[:, 0] = 0.05
    first[:, 1] = 0.9 * (1 - phase) + 0.02
    first[:, 2] = 0.9 * phase + 0.02
    first[:, 3] = 0.05
    first *= rng.uniform(0.95, 1.05, (n, 4))
    second = rng.dirichlet(np.full(6, 30.0), size=n)
    x = np.concatenate([4.0 * first / first.sum(1, keepdims=True), 5.0 * second], 1)
    return torch.from_numpy(x.astype(np.float32))


def fit_cfm(model: Any, e: torch.Tensor, x: torch.Tensor, eta: torch.Tensor, steps: int, lr: float = 2e-3,
            seed: int = 0, batch: int = 256, phi: torch.Tensor | None = None) -> Any:  # fmt: skip
    """Train a small η-conditioned flow-matching model on ``(e, x, eta)`` for ``steps`` Adam steps of
    ``batch`` showers drawn with torch's global generator seeded by ``seed``; returns it in train mode.
    ``phi``: each shower's φ, given to the model (one with ``phi_cells``) beside ``eta``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    torch.manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(e), (batch,))
        cond = {"eta": eta[idx]} if phi is None else {"eta": eta[idx], "phi": phi[idx]}
        loss = model.loss_terms(e[idx], x[idx], "model", **cond)["cfm"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model
