"""Few-step students distilled from a flow-matching shower generator (issue 15, generation speed).

The flow-matching generator (:mod:`lhcml.models.fastcalo.fm`) integrates its velocity field with
a fixed number of solver steps (``steps: 8``, midpoint: 16 network evaluations per shower). Its
ODE maps each noise vector ``z`` deterministically to a shower state ``x_1 = Phi(z | c)``; a
*student* with the teacher's architecture and ``k`` Euler steps (``k`` = 1 or 2: 1 or 2 network
evaluations) is trained to reproduce that map, ``|Phi_student(z | c) - Phi_teacher(z | c)|^2`` on
the standardised state, over pairs ``(z, c, Phi_teacher(z | c))`` drawn at the training showers'
conditions — knowledge distillation of a deterministic sampler (Luhman & Luhman,
arXiv:2101.02388: a deterministic multi-step teacher, mean squared error on its outputs, the
student initialised with the teacher's weights), which Liu et al. (arXiv:2209.03003) also apply to
rectified flows, whose straight paths make the one-step map easier to learn
(docs/references.md §34).

The student is a :class:`~lhcml.models.fastcalo.fm.CaloFlowMatching` with ``steps = k``,
``solver: euler``: the same sampling graph with fewer network evaluations, the same decoding (each
layer's voxels sum to its generated energy exactly), exported and timed like any fast-calo model
(:func:`lhcml.train.fastcalo.save_student` writes a checkpoint :func:`lhcml.train.fastcalo.load_generator`
reads; ``lhcml fastcalo distill`` does both from the command line).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor

from lhcml.errors import ConfigError


def teacher_pairs(
    teacher: Any, energy_gev: Tensor, eta: Tensor | None = None, phi: Tensor | None = None,
    generator: torch.Generator | None = None, batch: int = 4096,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``(noise (N, D), teacher state x_1 (N, D))`` at the given conditions, one noise draw each."""
    noise = teacher.draw_noise(len(energy_gev), generator)
    out = []
    with torch.no_grad():
        for i in range(0, len(energy_gev), batch):
            sl = slice(i, i + batch)
            out.append(teacher.integrate(energy_gev[sl], noise[sl], None if eta is None else eta[sl],
                                         None if phi is None else phi[sl]))  # fmt: skip
    return noise, torch.cat(out)


def make_student(teacher: Any, steps: int = 1) -> Any:
    """A copy of ``teacher`` sampling with ``steps`` Euler steps (its weights as the starting point)."""
    if steps < 1:
        raise ConfigError(f"a distilled student needs steps >= 1, got {steps}")
    if not hasattr(teacher, "integrate") or not hasattr(teacher, "solver"):
        raise ConfigError(f"distillation needs a flow-matching generator (fastcalo_fm), got {type(teacher).__name__}")
    student = copy.deepcopy(teacher)
    student.steps = int(steps)
    student.solver = "euler"
    return student


def distill(
    teacher: Any, energy_gev: Tensor, eta: Tensor | None = None, phi: Tensor | None = None, *,
    steps: int = 1, pairs_per_condition: int = 1, epochs: int = 10, batch_size: int = 256, lr: float = 2e-4,
    seed: int = 0, val_fraction: float = 0.1, time_budget_s: float | None = None, log: Any = None,
    student: Any = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train a ``steps``-step student on the teacher's noise-to-shower map (module docstring).

    ``energy_gev`` ``(N,)`` (and ``eta``, ``phi`` for a model conditioned on them): the conditions
    of the pairs (the training showers'), each used ``pairs_per_condition`` times with fresh noise.
    Adam at ``lr``, cosine to ``lr / 100`` over ``epochs``; a ``val_fraction`` of the pairs held
    out; the student of the epoch with the lowest held-out loss is returned (eval mode) with
    ``{"train_loss", "val_loss" per epoch, "val_loss_naive" (the teacher's own field integrated with the
    student's Euler steps, untrained), "pairs", "wall_s", "epochs_run"}``.
    ``time_budget_s``: stop after the last epoch projected to end within it. ``student``: a model to
    train instead of the teacher's copy (e.g. a narrower network, :func:`lhcml.train.fastcalo.distill_checkpoint`
    ``hidden``); its ``steps`` and ``solver`` are set to ``steps`` Euler steps.
    """
    t0 = time.monotonic()
    g = torch.Generator().manual_seed(seed)
    teacher = teacher.eval()
    rep = max(1, int(pairs_per_condition))
    e = energy_gev.reshape(-1).repeat(rep)
    et = None if eta is None else eta.reshape(-1).repeat(rep)
    ph = None if phi is None else phi.reshape(-1).repeat(rep)
    z, x1 = teacher_pairs(teacher, e, et, ph, g)
    n = len(e)
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(val_fraction * n))
    val, tr = perm[:n_val], perm[n_val:]

    def cond(idx: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return e[idx], None if et is None else et[idx], None if ph is None else ph[idx]

    student = make_student(teacher if student is None else student, steps)

    def run(model: Any, idx: Tensor) -> Tensor:
        c = cond(idx)
        return model.integrate(c[0], z[idx], c[1], c[2])

    def val_loss(model: Any) -> float:
        with torch.no_grad():
            out = [run(model, val[i:i + 4096]) for i in range(0, n_val, 4096)]
        return float((torch.cat(out) - x1[val]).square().mean())

    naive = make_student(teacher, steps)  # the teacher's own field with `steps` Euler steps, untrained
    history: dict[str, Any] = {"pairs": n, "val_loss_naive": val_loss(naive.eval()), "train_loss": [],
                               "val_loss": []}  # fmt: skip
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    n_batches = max(1, len(tr) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches, eta_min=lr / 100)
    best, best_state = float("inf"), copy.deepcopy(student.state_dict())
    for ep in range(epochs):
        student.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        total = 0.0
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss = (run(student, idx) - x1[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        student.eval()
        vl = val_loss(student)
        history["train_loss"].append(total / n_batches)
        history["val_loss"].append(vl)
        if vl < best:
            best, best_state = vl, copy.deepcopy(student.state_dict())
        if log is not None:
            log(f"epoch {ep}: train {total / n_batches:.5f} val {vl:.5f} ({time.monotonic() - t0:.0f} s)")
        elapsed = time.monotonic() - t0
        history["epochs_run"] = ep + 1
        if time_budget_s is not None and elapsed * (ep + 2) / (ep + 1) > time_budget_s:
            break
    student.load_state_dict(best_state)
    history["wall_s"] = time.monotonic() - t0
    return student.eval(), history


__all__ = ["distill", "make_student", "teacher_pairs"]
