"""Helpers shared by the fast-calorimeter tests."""

from __future__ import annotations

from typing import Any

import torch


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
