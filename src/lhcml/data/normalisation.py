"""Streaming normalisation (mean, std) and class-weight dictionaries, as written by UPP.

``norm_dict.yaml``::

    jets:   {pt: {mean: ..., std: ...}, ...}
    tracks: {d0: {mean: ..., std: ...}, ...}     # over valid tracks only

``class_dict.yaml`` (UPP convention: weight = inverse class fraction, scaled so the most
populated class has weight 1; classes absent from the sample get 0)::

    jets:   {flavour_label: [w_0, w_1, ...]}
    tracks: {ftagTruthOriginLabel: [w_0, ..., w_7]}

Moments are combined chunk by chunk with Chan et al.'s parallel formula (exact and numerically
stable), so the result equals numpy's mean/std over the whole sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from lhcml.errors import SchemaError

log = logging.getLogger(__name__)


@dataclass
class RunningMoments:
    """Mean and (population) standard deviation accumulated over chunks."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: np.ndarray) -> None:
        """Add the values ``x`` (any shape; NaN values are an error)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size == 0:
            return
        nb = x.size
        mb = float(x.mean())
        m2b = float(((x - mb) ** 2).sum())
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta**2 * self.n * nb / n
        self.n = n

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else float("nan")


@dataclass
class NormAccumulator:
    """Per group, per variable :class:`RunningMoments`; padded groups use valid entries only."""

    variables: dict[str, list[str]]
    moments: dict[str, dict[str, RunningMoments]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.moments = {
            g: {v: RunningMoments() for v in vs if v != "valid"} for g, vs in self.variables.items()
        }

    def update(self, batch: dict[str, np.ndarray]) -> None:
        """Add one chunk (``{group: structured array}``)."""
        for group, mom in self.moments.items():
            arr = batch[group]
            if arr.ndim > 1:
                arr = arr[arr["valid"]]
            for var, m in mom.items():
                x = arr[var]
                if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
                    raise SchemaError(
                        f"variable '{var}' of '{group}' holds NaN/inf values; fix the input or "
                        "drop the variable from the preprocessing config"
                    )
                m.update(x)

    def result(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{group: {var: {mean, std}}}``.

        A constant variable (std 0) gets ``std: 1`` and a warning: it carries no information
        (e.g. a hit count that a detector never fills) but must not make the scaling divide by 0.
        """
        out: dict[str, dict[str, dict[str, float]]] = {}
        for group, mom in self.moments.items():
            out[group] = {}
            for var, m in mom.items():
                if m.n == 0:
                    raise SchemaError(f"no entries of '{group}.{var}' to compute its normalisation")
                std = m.std
                if std == 0:
                    log.warning(
                        "variable '%s.%s' is constant (%s) in the training file: it carries no "
                        "information (std set to 1); consider removing it from the inputs",
                        group, var, m.mean,
                    )  # fmt: skip
                    std = 1.0
                out[group][var] = {"mean": float(m.mean), "std": float(std)}
        return out


def class_weights(counts: np.ndarray) -> list[float]:
    """UPP class weights from class counts: ``(N / n_k) / min_k(N / n_k)``; 0 for empty classes."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return [0.0] * len(counts)
    w = np.zeros_like(counts)
    w[present] = counts.sum() / counts[present]
    w[present] /= w[present].min()
    return [round(float(x), 6) for x in w]


@dataclass
class ClassCounter:
    """Counts of integer label values per group and label variable (valid entries only)."""

    labels: dict[str, dict[str, int]]  # group -> {label var: number of classes}
    counts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = {
            g: {v: np.zeros(n, dtype=np.int64) for v, n in vs.items()}
            for g, vs in self.labels.items()
        }

    def update(self, batch: dict[str, np.ndarray]) -> None:
        for group, cnt in self.counts.items():
            arr = batch[group]
            if arr.ndim > 1:
                arr = arr[arr["valid"]]
            for var, c in cnt.items():
                x = np.asarray(arr[var]).astype(np.int64)
                x = x[(x >= 0) & (x < len(c))]
                c += np.bincount(x, minlength=len(c))

    def result(self) -> dict[str, dict[str, list[float]]]:
        return {g: {v: class_weights(c) for v, c in cnt.items()} for g, cnt in self.counts.items()}
