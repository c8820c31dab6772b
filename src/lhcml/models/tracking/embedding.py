"""Metric learning of a hit embedding (Amrouche et al. 2019; Exa.TrkX 2021): ``docs/references.md §23``.

An MLP maps each hit's features to a point of a low-dimensional space in which hits of the same
particle lie close together and hits of different particles far apart, so that an approximate
nearest-neighbour search (:mod:`lhcml.tasks.tracking.bucketing`) or a radius graph finds
track candidates. It is trained on pairs of hits with the contrastive hinge loss of Hadsell,
Chopra & LeCun (2006), as Exa.TrkX's metric-learning stage:

    L = mean_{true pairs} d²  +  mean_{false pairs} max(0, m − d)²

(``d``: Euclidean distance of the two embeddings, ``m``: the margin). The pairs of one event
(:func:`sample_pairs`) are: all same-particle pairs (subsampled), random pairs, and the *hard*
pairs — the ``k`` nearest neighbours of random query hits in the current embedding, labelled by
the truth (the false ones among them are the hard negatives Exa.TrkX mines from its radius graph).
Noise hits (``particle_id == 0``) are never a true pair.

Input: the raw hit features of :func:`hit_features` — ``r`` [mm], ``φ`` [rad], ``z`` [mm] and,
where the event has cells, the cell count and the summed cell value of the hit (the two
cell-shape features that need no module geometry; Exa.TrkX adds local directions computed from
the TrackML ``detectors.csv``, which the ACTS CSV output does not carry). ``φ`` enters the
network as ``(cos φ, sin φ)`` (continuous across ±π), with the hit's pseudorapidity from the origin
``asinh(z/r)`` beside it (the physics prior: a stiff track's hits share their direction); the
normalisation constants are buffers,
so the exported ONNX graph takes the raw features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lhcml.errors import SchemaError
from lhcml.models.layers import MLP, Normaliser

#: names of the raw features, in column order (the cell features only when the event has cells)
GEOMETRIC_FEATURES = ("r", "phi", "z")
CELL_FEATURES = ("cell_count", "cell_value")


def hit_features(event: Any, use_cells: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """``(features (N, F) float32, names)`` of the hits of a TrackML event, in the order of ``event.hits``.

    Parameters
    ----------
    event
        A :class:`lhcml.data.trackml.TrackMLEvent` (``.hits`` with ``hit_id, x, y, z``; ``.cells``
        with ``hit_id, value`` or empty/None).
    use_cells
        Add the cell count and summed cell value per hit; ``None``: when the event has cells.

    Raises
    ------
    SchemaError
        ``use_cells=True`` for an event without cells, or hits without coordinates.
    """
    hits = event.hits
    missing = [c for c in ("hit_id", "x", "y", "z") if c not in hits.columns]
    if missing:
        raise SchemaError(f"event {getattr(event, 'event_id', '?')}: hits lack column(s) {missing}")
    x, y, z = (hits[c].to_numpy(np.float64) for c in ("x", "y", "z"))
    cols = [np.hypot(x, y), np.arctan2(y, x), z]
    names = list(GEOMETRIC_FEATURES)
    cells = getattr(event, "cells", None)
    has_cells = cells is not None and len(cells) > 0
    if use_cells is None:
        use_cells = has_cells
    if use_cells:
        if not has_cells:
            raise SchemaError(
                f"event {getattr(event, 'event_id', '?')} has no cells: set use_cells: false "
                "(data.prepare) or simulate with cells"
            )
        hid = hits["hit_id"].to_numpy(np.int64)
        order = {h: i for i, h in enumerate(hid)}
        idx = np.fromiter((order.get(h, -1) for h in cells["hit_id"].to_numpy(np.int64)), np.int64, len(cells))
        ok = idx >= 0
        count = np.bincount(idx[ok], minlength=len(hid)).astype(np.float64)
        value = np.bincount(idx[ok], weights=cells["value"].to_numpy(np.float64)[ok], minlength=len(hid))
        cols += [count, value]
        names += list(CELL_FEATURES)
    return np.stack(cols, axis=1).astype(np.float32), names


def neighbour_pairs(particle_id: np.ndarray, distance: np.ndarray, window: int) -> np.ndarray:
    """Pairs ``(i, j)`` of hits of the same non-zero particle at most ``window`` steps apart when the
    particle's hits are ordered by ``distance`` (e.g. from the origin) -> ``(P, 2)`` int64."""
    pid = np.asarray(particle_id, np.int64)
    idx = np.flatnonzero(pid != 0)
    order = idx[np.lexsort((np.asarray(distance)[idx], pid[idx]))]
    out = [np.stack([order[:-w], order[w:]], axis=1)[pid[order[:-w]] == pid[order[w:]]]
           for w in range(1, int(window) + 1) if w < len(order)]  # fmt: skip
    return np.sort(np.concatenate(out), axis=1) if out else np.zeros((0, 2), np.int64)


def same_particle_pairs(particle_id: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """All unordered pairs ``(i, j)``, ``i < j``, of hits with the same non-zero ``particle_id`` -> ``(P, 2)`` int64.

    ``keep`` (bool per hit): only hits with ``keep`` take part (e.g. particles above a pT cut).
    """
    pid = np.asarray(particle_id, dtype=np.int64)
    ok = pid != 0
    if keep is not None:
        ok &= np.asarray(keep, bool)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(pid[idx], kind="stable")]
    _, start, size = np.unique(pid[order], return_index=True, return_counts=True)
    out = []
    for s in np.unique(size[size >= 2]):
        groups = order[start[size == s][:, None] + np.arange(s)[None, :]]  # (G, s)
        a, b = np.triu_indices(s, k=1)
        out.append(np.stack([groups[:, a].ravel(), groups[:, b].ravel()], axis=1))
    if not out:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(out)
    return np.sort(pairs, axis=1)


class HitEmbedding(nn.Module):
    """MLP embedding of hits (Exa.TrkX's metric-learning network; ``docs/references.md §23``).

    Parameters
    ----------
    feature_names
        Names of the raw input columns (:func:`hit_features`); ``phi`` becomes ``(cos, sin)``.
    embedding_dim
        Size of the embedding (Exa.TrkX: 8; our default 8).
    hidden
        Hidden layer sizes (Exa.TrkX: 4 × 1024; our CPU default 3 × 128).
    act
        Activation (Exa.TrkX: tanh).
    margin
        Margin ``m`` of the hinge term in embedding units (Exa.TrkX: 1).
    n_pos, n_random, n_query, k_hard
        Pairs per training event: same-particle pairs (subsampled), random pairs, and the ``k_hard``
        nearest neighbours of ``n_query`` random hits (our choices).
    recall_k
        Neighbours counted by the validation recall (:func:`neighbour_recall`; our choice).
    direction_skip, direction_scale
        The first 3 embedding coordinates are the hit's direction from the origin times a learned
        scale (initial value ``direction_scale``, our choice: a direction difference of ~0.03 rad, the
        spacing of neighbouring hits at ⟨μ⟩ = 50, becomes ~1, the margin) and
        the MLP gives the other ``embedding_dim − 3``: the network starts from the bucketing's
        geometric space (Amrouche et al. raise the purity of geometric buckets by metric learning)
        and learns what separates the hits beyond their direction (curvature, vertex z, noise).
        ``False``: a plain MLP as Exa.TrkX's.
    """

    def __init__(
        self,
        feature_names: list[str] | tuple[str, ...] = GEOMETRIC_FEATURES,
        embedding_dim: int = 8,
        hidden: list[int] | tuple[int, ...] = (128, 128, 128),
        act: str = "tanh",
        margin: float = 1.0,
        n_pos: int = 20_000,
        n_random: int = 20_000,
        n_query: int = 500,
        k_hard: int = 20,
        recall_k: int = 10,
        direction_skip: bool = True,
        direction_scale: float = 30.0,
    ) -> None:
        super().__init__()
        names = list(feature_names)
        if not {"r", "phi", "z"} <= set(names):
            raise ValueError(f"feature_names {names} need 'r', 'phi' and 'z'")
        if embedding_dim < 1 or margin <= 0 or min(n_pos, n_random, n_query, k_hard, recall_k) < 1:
            raise ValueError("embedding_dim, margin, n_pos, n_random, n_query, k_hard and recall_k must be positive")
        self.feature_names = names
        self.embedding_dim = int(embedding_dim)
        self.margin = float(margin)
        self.n_pos, self.n_random, self.n_query, self.k_hard = int(n_pos), int(n_random), int(n_query), int(k_hard)
        self.recall_k = int(recall_k)
        self._phi, self._r, self._z = names.index("phi"), names.index("r"), names.index("z")
        n_in = len(names) + 2
        self.norm = Normaliser(n_in)
        self.direction_skip = bool(direction_skip)
        if self.direction_skip and self.embedding_dim <= 3:
            raise ValueError("direction_skip needs embedding_dim > 3 (3 dimensions hold the hit direction)")
        n_out = self.embedding_dim - 3 if self.direction_skip else self.embedding_dim
        self.net = MLP(n_in, n_out, list(hidden), act=act)
        # learned scale of the direction coordinates (log, so that it stays positive)
        self.log_direction_scale = nn.Parameter(torch.tensor(float(np.log(direction_scale))))

    def expand(self, x: Tensor) -> Tensor:
        """Raw features ``(N, F)`` -> network inputs ``(N, F + 2)`` before normalising: ``φ`` as
        ``(cos φ, sin φ)``, and the hit's pseudorapidity seen from the origin, ``asinh(z / r)``
        appended (the direction along which a stiff track's hits line up)."""
        phi = x[:, self._phi]
        c = x[:, self._z] / x[:, self._r].clamp(min=1e-3)
        eta = torch.sign(c) * torch.log(c.abs() + torch.sqrt(c * c + 1))  # asinh (no ONNX asinh export in torch)
        rest = [x[:, : self._phi], torch.stack([torch.cos(phi), torch.sin(phi)], dim=1), x[:, self._phi + 1 :],
                eta[:, None]]  # fmt: skip
        return torch.cat(rest, dim=1)

    @torch.no_grad()
    def set_normalisation(self, features: np.ndarray) -> None:
        """Mean and std of the expanded features of the training hits (``(N, F)`` raw)."""
        e = self.expand(torch.as_tensor(features, dtype=torch.float32)).double()
        std = e.std(dim=0)
        self.norm.set(e.mean(dim=0).float(), torch.where(std > 0, std, torch.ones_like(std)).float())

    def forward(self, features: Tensor) -> Tensor:
        """Embedding ``(N, embedding_dim)`` of raw hit features ``(N, F)``."""
        learned = self.net(self.norm(self.expand(features)))
        if not self.direction_skip:
            return learned
        r, phi, z = features[:, self._r], features[:, self._phi], features[:, self._z]
        rho = torch.sqrt(r * r + z * z).clamp(min=1e-3)
        direction = torch.stack([torch.cos(phi) * r / rho, torch.sin(phi) * r / rho, z / rho], dim=1)
        return torch.cat([torch.exp(self.log_direction_scale) * direction, learned], dim=1)

    def onnx_signature(self) -> dict[str, Any]:
        """Input/output names, dynamic axes and a description for :mod:`lhcml.export.tracking`."""
        return {
            "inputs": ["features"],
            "outputs": ["embedding"],
            "dynamic_axes": {"features": {0: "hits"}, "embedding": {0: "hits"}},
            "description": {"features": f"(N, {len(self.feature_names)}) {self.feature_names} [mm, rad]",
                            "embedding": f"(N, {self.embedding_dim})"},
        }  # fmt: skip

    def example_inputs(self, n: int, seed: int = 0) -> dict[str, Tensor]:
        """``n`` random hits in the tracker's range (r 30–1000 mm, |z| < 3000 mm; cells 1–8, value 0–1)
        for the ONNX check."""
        rng = np.random.default_rng(seed)
        cols = {"r": rng.uniform(30, 1000, n), "phi": rng.uniform(-np.pi, np.pi, n), "z": rng.uniform(-3000, 3000, n),
                "cell_count": rng.integers(1, 9, n).astype(float), "cell_value": rng.uniform(0, 1, n)}  # fmt: skip
        x = np.stack([cols[c] for c in self.feature_names], axis=1).astype(np.float32)
        return {"features": torch.from_numpy(x)}


def sample_pairs(
    emb: Tensor, particle_id: Tensor, pos_pairs: Tensor, model: HitEmbedding, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``(pairs (P, 2), truth (P,) bool)``: subsampled true pairs, random pairs and hard pairs."""
    n = emb.shape[0]
    g = generator
    parts = []
    if len(pos_pairs):
        take = torch.randperm(len(pos_pairs), generator=g)[: model.n_pos]
        parts.append(pos_pairs[take])
    parts.append(torch.randint(0, n, (model.n_random, 2), generator=g))
    q = torch.randperm(n, generator=g)[: model.n_query]
    k = min(model.k_hard + 1, n)
    with torch.no_grad():
        nn_idx = torch.cdist(emb[q].detach(), emb.detach()).topk(k, largest=False).indices  # (Q, k)
    parts.append(torch.stack([q[:, None].expand_as(nn_idx).reshape(-1), nn_idx.reshape(-1)], dim=1))
    pairs = torch.cat(parts)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pa, pb = particle_id[pairs[:, 0]], particle_id[pairs[:, 1]]
    return pairs, (pa == pb) & (pa != 0)


def contrastive_loss(emb: Tensor, pairs: Tensor, truth: Tensor, margin: float) -> Tensor:
    """Hadsell et al. contrastive loss: mean d² over true pairs + mean max(0, m − d)² over false pairs."""
    d = (emb[pairs[:, 0]] - emb[pairs[:, 1]]).pow(2).sum(dim=1).clamp(min=1e-12).sqrt()
    zero = emb.sum() * 0.0
    pos = d[truth].pow(2).mean() if bool(truth.any()) else zero
    neg = (margin - d[~truth]).clamp(min=0).pow(2).mean() if bool((~truth).any()) else zero
    return pos + neg


def neighbour_recall(points: Tensor, particle_id: Tensor, k: int, queries: Tensor, chunk: int = 256) -> float:
    """Same-particle neighbour recall at ``k``: over the ``queries`` (hit indices on particles with
    ≥ 2 hits), found same-particle hits among the ``k`` nearest others / ``Σ min(k, n_particle − 1)``.

    ``points``: ``(N, D)`` embedding or geometric coordinates.
    """
    pid = particle_id
    uniq, inv, counts = torch.unique(pid, return_inverse=True, return_counts=True)
    n_same = counts[inv] - 1
    found = 0
    want = 0
    kk = min(k + 1, points.shape[0])
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        d = torch.cdist(points[q], points)
        d[torch.arange(len(q)), q] = float("inf")  # a hit is not its own neighbour
        nb = d.topk(kk - 1, largest=False).indices
        same = (pid[nb] == pid[q][:, None]) & (pid[q][:, None] != 0)
        found += int(same.sum())
        want += int(torch.clamp(n_same[q], max=k).sum())
    return found / want if want else float("nan")
