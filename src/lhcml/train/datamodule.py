"""Streaming torch datasets over lhcml flat HDF5 files (docs/data.md) and a Lightning datamodule.

Input groups are generic: each entry of ``data.inputs`` names a top-level dataset of the file.

* a 1-D structured dataset (``jets``, ``photons``) gives a ``(B, F)`` float tensor of the listed
  variables;
* a 2-D structured dataset with a ``valid`` field (``tracks``, ``flow``) gives ``(B, N, F)`` and the
  mask ``"<group>_valid"`` ``(B, N)`` (True = real object);
* a plain (non-structured) N-D dataset (calorimeter images) is read whole as a float tensor
  ``(B, ...)``; its variable list must be ``null``.

Jets are read in chunks (``chunk_size`` rows of every group at once), shuffled within a chunk
(chunk order shuffled too) for training, and cut into batches. Batches carry ``"labels"`` (the
class index in ``data.classes`` order), ``"weights"`` (sample weights, 1 if no ``weight_field``) and
the per-object label fields requested by the model's heads as ``"<group>_<field>"``. Jets in no
class are dropped. With ``num_workers`` > 0 chunks are shared among workers. Under DDP every chunk
is cut into one contiguous block of rows per rank and each rank reads only its own block (not the
whole chunk); every rank uses the same number of labelled jets per chunk (the smallest of the
blocks' counts, from the label fields read once), so ranks see the same number of batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from numpy.lib import recfunctions as rfn
from torch.utils.data import IterableDataset

from lhcml.data.checks import open_h5, read_fields
from lhcml.data.cuts import Cuts
from lhcml.errors import ConfigError, CorruptFileError, SchemaError

__all__ = [
    "GroupSpec", "H5JetDataset", "LabelSpec", "compute_norm", "inspect_inputs", "norm_arrays",
    "open_h5", "read_rows", "stratified_length_order",
]  # fmt: skip
from lhcml.labels import LabelScheme


@dataclass(frozen=True)
class GroupSpec:
    """One input group: dataset name, variables (None for an image) and its kind."""

    name: str
    variables: tuple[str, ...] | None
    kind: str  # "jet" (B, F), "object" (B, N, F) + valid, "image" (B, ...)
    shape: tuple[int, ...] = ()  # per-jet shape of the tensor (without batch)

    @property
    def dim(self) -> int:
        """Feature size given to the model (``input_dims``): F, or the channel count of images."""
        return self.shape[-1] if self.kind != "image" else (self.shape[0] if self.shape else 1)


@dataclass(frozen=True)
class LabelSpec:
    """How class indices are made: an integer field, or the label scheme's cuts."""

    scheme: LabelScheme | None
    label_field: str | None = None
    cuts: tuple[Cuts, ...] = field(default=())

    @classmethod
    def build(cls, scheme: LabelScheme, label_field: str | None) -> LabelSpec:
        return cls(scheme, label_field, tuple(Cuts.from_list(list(cl.cuts)) for cl in scheme.classes))

    def jet_fields(self) -> list[str]:
        if self.label_field:
            return [self.label_field]
        return sorted({v for c in self.cuts for v in c.variables})

    def labels(self, jets: np.ndarray) -> np.ndarray:
        """Class index per jet (-1 for jets in no class)."""
        if self.label_field:
            lab = np.asarray(jets[self.label_field]).astype(np.int64)
            n = len(self.scheme.classes) if self.scheme else 0
            return np.where((lab >= 0) & (lab < n), lab, -1)
        out = np.full(len(jets), -1, dtype=np.int64)
        for i in reversed(range(len(self.cuts))):  # first matching class wins
            out[self.cuts[i](jets)] = i
        return out


def inspect_inputs(path: str | Path, inputs: Mapping[str, Sequence[str] | None]) -> dict[str, GroupSpec]:
    """Check that ``path`` has every input group and variable; return the group specs.

    Raises
    ------
    SchemaError
        A group or variable is missing (the message lists what is available) or has a bad shape.
    """
    specs = {}
    with open_h5(path) as f:
        for g, names in inputs.items():
            if g not in f:
                raise SchemaError(
                    f"input group '{g}' not in {path} (datasets: {', '.join(f.keys())}); "
                    "fix data.inputs or the file"
                )
            ds = f[g]
            fields = ds.dtype.names
            if fields is None:
                if names is not None:
                    raise SchemaError(
                        f"'{g}' in {path} is a plain array (image); set data.inputs.{g}: null"
                    )
                specs[g] = GroupSpec(g, None, "image", tuple(ds.shape[1:]))
                continue
            if names is None:
                raise SchemaError(f"'{g}' in {path} is a structured dataset: list its variables")
            missing = [v for v in names if v not in fields]
            if missing:
                avail = ", ".join(x for x in fields if x != "valid")
                raise SchemaError(
                    f"variable(s) {missing} of group '{g}' not in {path} (available: {avail})"
                )
            if ds.ndim == 1:
                specs[g] = GroupSpec(g, tuple(names), "jet", (len(names),))
            elif ds.ndim == 2:
                if "valid" not in fields:
                    raise SchemaError(f"'{g}' in {path} is 2-D but has no 'valid' field")
                specs[g] = GroupSpec(g, tuple(names), "object", (ds.shape[1], len(names)))
            else:
                raise SchemaError(f"structured dataset '{g}' in {path} has {ds.ndim} dims (1 or 2)")
    return specs


#: per-object tables that carry labels, weights and prediction columns, by preference
MAIN_TABLES = ("jets", "photons")


def main_table(f: h5py.File) -> str:
    """The per-object table of an open file: ``jets``, or ``photons`` for photon candidates."""
    for name in MAIN_TABLES:
        if name in f:
            return name
    raise SchemaError(f"{f.filename} has none of the tables {MAIN_TABLES} (datasets: {', '.join(f.keys())})")


def _floats(arr: np.ndarray, names: Sequence[str]) -> np.ndarray:
    sub = rfn.repack_fields(arr[list(names)])
    return rfn.structured_to_unstructured(sub, dtype=np.float32)


def _field_array(x: np.ndarray) -> np.ndarray:
    """Integer/bool fields as int64 (class targets), others as float32."""
    x = np.asarray(x)
    return x.astype(np.int64) if x.dtype.kind in "iub" else x.astype(np.float32)


def read_rows(
    f: h5py.File,
    start: int,
    stop: int,
    specs: Mapping[str, GroupSpec],
    labels: LabelSpec | None = None,
    weight_field: str | None = None,
    label_fields: Mapping[str, Sequence[str]] | None = None,
    source: str = "",
) -> dict[str, np.ndarray]:
    """Read rows ``[start, stop)`` of every group into float arrays (and labels, weights).

    Non-finite values in valid entries raise :class:`SchemaError` naming the variable.
    """
    out: dict[str, np.ndarray] = {}
    main = main_table(f)
    jet_extra: list[str] = []
    if labels is not None:
        jet_extra += labels.jet_fields()
    if weight_field:
        jet_extra.append(weight_field)
    for g, spec in specs.items():
        ds = f[g]
        if spec.kind == "image":
            out[g] = np.asarray(read_fields(ds, None, start, stop, source or f.filename), dtype=np.float32)
            if not np.isfinite(out[g]).all():
                raise SchemaError(f"non-finite values in image '{g}' of {source or f.filename} (rows {start}-{stop})")
            continue
        fields = list(spec.variables or ())
        if spec.kind == "object":
            fields.append("valid")
        fields += [x for x in (label_fields or {}).get(g, []) if x not in fields]
        if g == main:
            fields += [x for x in jet_extra if x not in fields]
        raw = read_fields(ds, fields, start, stop, source or f.filename)
        x = _floats(raw, spec.variables)
        if spec.kind == "object":
            valid = np.asarray(raw["valid"], dtype=bool)
            out[f"{g}_valid"] = valid
            bad = ~np.isfinite(x) & valid[..., None]
        else:
            bad = ~np.isfinite(x)
        if bad.any():
            var = spec.variables[int(np.nonzero(bad.reshape(-1, bad.shape[-1]).any(0))[0][0])]
            raise SchemaError(
                f"non-finite values in '{g}.{var}' of {source or f.filename} (rows {start}-{stop}); "
                "replace defaults/NaN in preprocessing"
            )
        out[g] = x
        for lf in (label_fields or {}).get(g, []):
            out[f"{g}_{lf}"] = _field_array(raw[lf])
        if g == main and jet_extra:
            jet_table = raw
    if jet_extra and main not in specs:
        jet_table = read_fields(f[main], jet_extra, start, stop, source or f.filename)
    if labels is not None:
        out["labels"] = labels.labels(jet_table)
    if weight_field:
        out["weights"] = np.asarray(jet_table[weight_field], dtype=np.float32)
    for g, lfs in (label_fields or {}).items():
        if g not in specs:
            raw = read_fields(f[g], list(lfs), start, stop, source or f.filename)
            for lf in lfs:
                out[f"{g}_{lf}"] = _field_array(raw[lf])
    return out


def _n_rows(path: str | Path) -> int:
    with open_h5(path) as f:
        first = next(iter(f.keys()), None)
        if first is None:
            raise CorruptFileError(f"{path} holds no datasets")
        tables = [t for t in MAIN_TABLES if t in f]
        return int(f[tables[0]].shape[0] if tables else f[first].shape[0])


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class H5JetDataset(IterableDataset):
    """Batches of jets streamed from flat HDF5 files (see the module docstring).

    Parameters
    ----------
    files
        Input files (all must have the same groups and variables).
    specs
        Input groups, from :func:`inspect_inputs`.
    labels
        How to compute labels; None for unlabelled prediction (no ``"labels"`` key, no jets
        dropped).
    batch_size, chunk_size, num_jets
        Batch size, rows read at a time, total jets to use (None: all).
    shuffle, seed
        Shuffle chunk order and rows within chunks, reproducibly per epoch (:meth:`set_epoch`).
    weight_field, label_fields
        Jets field with sample weights; per-object label fields ``{group: [field]}``.
    bucket_by_length
        With ``shuffle``: order the shuffled jets of each chunk by their number of valid objects,
        cut them into batches and shuffle the order of the batches. Batches then hold jets of
        similar multiplicity, so the padding trimmed per batch is almost all of it (tt̄ jets
        carry ~10 tracks in 40 slots; the transformer's cost grows with the slots and the
        track-pair vertexing head's with their square). Every jet is still seen once per epoch.
    bucket_stratify
        With ``bucket_by_length`` and labels: order each class by multiplicity on its own and
        interleave the classes by quantile (:func:`stratified_length_order`), so every batch
        holds the chunk's class fractions (to ±1 jet) and jets at the same multiplicity
        quantile of their own class. A plain sort by multiplicity (False) makes batches nearly
        single-class, because the classes differ in multiplicity (b-jets carry more tracks):
        it cost the GN-style tagger ~10 % in c-rejection (docs/benchmarks/ftag.md, "Parity
        with Salt GN2").
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        specs: Mapping[str, GroupSpec],
        labels: LabelSpec | None,
        batch_size: int = 1000,
        chunk_size: int = 100_000,
        num_jets: int | None = None,
        shuffle: bool = False,
        seed: int = 42,
        weight_field: str | None = None,
        label_fields: Mapping[str, Sequence[str]] | None = None,
        bucket_by_length: bool = False,
        bucket_stratify: bool = True,
    ) -> None:
        super().__init__()
        self.bucket_by_length = bucket_by_length
        self.bucket_stratify = bucket_stratify
        self.files = [str(p) for p in files]
        self.specs = dict(specs)
        self.labels = labels
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.num_jets = num_jets
        self.shuffle = shuffle
        self.seed = seed
        self.weight_field = weight_field
        self.label_fields = {k: list(v) for k, v in (label_fields or {}).items()}
        self.epoch = 0
        self._chunks: list[tuple[int, int, int]] | None = None
        self._chunk_counts: list[int] | None = None
        self._counts_world = 1

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling seed for a new epoch."""
        self.epoch = epoch

    def chunks(self) -> list[tuple[int, int, int]]:
        """``(file index, start, stop)`` of every chunk, up to ``num_jets`` rows."""
        if self._chunks is None:
            chunks, left = [], self.num_jets if self.num_jets is not None else math.inf
            for i, p in enumerate(self.files):
                n = _n_rows(p)
                for s in range(0, n, self.chunk_size):
                    if left <= 0:
                        break
                    e = int(min(s + self.chunk_size, n, s + left))
                    chunks.append((i, s, e))
                    left -= e - s
            self._chunks = chunks
        return self._chunks

    def rank_block(self, chunk: tuple[int, int, int], rank: int, world: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``chunk`` that rank ``rank`` of ``world`` reads."""
        _, s, e = chunk
        n = e - s
        return s + (rank * n) // world, s + ((rank + 1) * n) // world

    def _labelled_counts(self, world: int = 1) -> list[int]:
        """Labelled jets per chunk; under DDP the smallest count of the chunk's rank blocks."""
        if self._chunk_counts is None or self._counts_world != world:
            counts = []
            for chunk in self.chunks():
                i, s, e = chunk
                blocks = [self.rank_block(chunk, r, world) for r in range(world)]
                if self.labels is None:
                    counts.append(min(b - a for a, b in blocks))
                    continue
                with open_h5(self.files[i]) as f:  # label fields only, once
                    jets = read_fields(f[main_table(f)], self.labels.jet_fields(), s, e, self.files[i])
                good = self.labels.labels(jets) >= 0
                counts.append(min(int(good[a - s : b - s].sum()) for a, b in blocks))
            self._chunk_counts, self._counts_world = counts, world
        return self._chunk_counts

    def class_counts(self) -> np.ndarray:
        """Number of jets per class (optionally weighted) over the dataset."""
        if self.labels is None:
            raise ConfigError("class counts need labels")
        n = len(self.labels.scheme.classes)
        counts = np.zeros(n)
        for i, s, e in self.chunks():
            with open_h5(self.files[i]) as f:
                fields = self.labels.jet_fields() + ([self.weight_field] if self.weight_field else [])
                jets = read_fields(f[main_table(f)], fields, s, e, self.files[i])
            lab = self.labels.labels(jets)
            w = np.asarray(jets[self.weight_field], float) if self.weight_field else np.ones(len(lab))
            counts += np.bincount(lab[lab >= 0], weights=w[lab >= 0], minlength=n)
        return counts

    def __len__(self) -> int:
        rank, world = _dist_info()
        return sum(math.ceil(c / self.batch_size) for c in self._labelled_counts(world))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rank, world = _dist_info()
        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = list(self.chunks())
        order = rng.permutation(len(chunks)) if self.shuffle else np.arange(len(chunks))
        handles: dict[int, h5py.File] = {}
        try:
            for k, ci in enumerate(order):
                chunk_rng = np.random.default_rng([self.seed, self.epoch, int(ci)])
                if k % nworkers != wid:
                    continue
                fi = chunks[ci][0]
                s, e = self.rank_block(chunks[ci], rank, world) if world > 1 else chunks[ci][1:]
                if fi not in handles:
                    handles[fi] = open_h5(self.files[fi])
                arrays = read_rows(
                    handles[fi], s, e, self.specs, self.labels, self.weight_field,
                    self.label_fields, source=self.files[fi],
                )  # fmt: skip
                keep = np.arange(e - s)
                if self.labels is not None:
                    keep = keep[arrays["labels"] >= 0]
                if self.shuffle:
                    keep = keep[chunk_rng.permutation(len(keep))]
                if world > 1:  # the same number of jets on every rank (their blocks' minimum)
                    keep = keep[: self._labelled_counts(world)[ci]]
                starts = np.arange(0, len(keep), self.batch_size)
                if self.shuffle and self.bucket_by_length:
                    n_obj = _n_objects(arrays, self.specs)
                    if n_obj is not None:
                        mix = self.bucket_stratify and "labels" in arrays
                        strata = arrays["labels"][keep] if mix else None
                        keep = keep[stratified_length_order(n_obj[keep], strata)]
                        starts = starts[chunk_rng.permutation(len(starts))]
                for b in starts:
                    idx = keep[b : b + self.batch_size]
                    batch = {k2: torch.from_numpy(np.ascontiguousarray(v[idx])) for k2, v in arrays.items()}
                    _trim_objects(batch, self.specs)
                    if "weights" not in batch:
                        batch["weights"] = torch.ones(len(idx))
                    yield batch
        finally:
            for h in handles.values():
                h.close()


def stratified_length_order(n_obj: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """Order of jets for length bucketing: by multiplicity, each stratum interleaved by quantile.

    Without ``strata``: a stable sort by ``n_obj``. With ``strata`` (the class of each jet): the
    jets of each class are sorted by ``n_obj`` on their own, the k-th of n jets of a class gets
    the quantile ``(k + 1/2) / n``, and all jets are ordered by that quantile. Any run of B
    consecutive jets then holds each class's share of the input to within one jet, and jets at
    the same multiplicity quantile of their own class (so batches cut from the order stay short
    without being single-class). Ties are kept in input order (stable), so shuffle the input first.
    """
    n_obj = np.asarray(n_obj)
    if strata is None:
        return np.argsort(n_obj, kind="stable")
    strata = np.asarray(strata)
    by_class = np.lexsort((n_obj, strata))  # class-major, multiplicity-minor, stable
    cls, first, count = np.unique(strata[by_class], return_index=True, return_counts=True)
    rank = np.arange(len(by_class)) - np.repeat(first, count)
    q = np.empty(len(by_class))
    q[by_class] = (rank + 0.5) / np.repeat(count, count)
    return np.argsort(q, kind="stable")


def _n_objects(arrays: Mapping[str, np.ndarray], specs: Mapping[str, GroupSpec]) -> np.ndarray | None:
    """Valid objects per jet, summed over the object groups (None if there are none)."""
    n = None
    for g, spec in specs.items():
        key = f"{g}_valid"
        if spec.kind == "object" and key in arrays:
            c = np.asarray(arrays[key]).sum(axis=1)
            n = c if n is None else n + c
    return n


def _trim_objects(batch: dict[str, torch.Tensor], specs: Mapping[str, GroupSpec]) -> None:
    """Drop the object slots that are padding in every jet of the batch (in place).

    The models mask padded slots, so their outputs do not depend on the number of slots; the
    cost of attention and of the track-pair vertexing head grows with it (N and N²), and files
    pad to a fixed 40 tracks while the batches of tt̄ jets rarely hold more than ~20.
    """
    for g, spec in specs.items():
        if spec.kind != "object" or f"{g}_valid" not in batch:
            continue
        valid = batch[f"{g}_valid"]
        full = valid.shape[1]
        used = torch.nonzero(valid.any(dim=0))
        n = max(int(used[-1]) + 1 if len(used) else 1, 1)
        if n == full:
            continue
        for k in [g, f"{g}_valid", *(k for k in batch if k.startswith(f"{g}_"))]:
            t = batch[k]
            if t.ndim >= 2 and t.shape[1] == full:
                batch[k] = t[:, :n].contiguous()


def compute_norm(
    files: Sequence[str | Path], specs: Mapping[str, GroupSpec], max_jets: int = 100_000
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and std of every input variable over valid objects (``norm_dict.yaml`` layout).

    Used when the config gives no ``norm_dict``; a constant variable gets std 1.
    """
    with open_h5(files[0]) as f:
        n = min(max_jets, _n_rows(files[0]))
        arrays = read_rows(f, 0, n, {g: s for g, s in specs.items() if s.kind != "image"}, source=str(files[0]))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for g, spec in specs.items():
        if spec.kind == "image":
            continue
        x = arrays[g]
        if spec.kind == "object":
            x = x[arrays[f"{g}_valid"]]
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        mean = x.mean(0) if len(x) else np.zeros(x.shape[-1])
        std = x.std(0) if len(x) else np.ones(x.shape[-1])
        std = np.where(std > 0, std, 1.0)
        out[g] = {v: {"mean": float(m), "std": float(s)} for v, m, s in zip(spec.variables, mean, std, strict=True)}
    return out


def norm_arrays(
    norm: Mapping[str, Mapping[str, Mapping[str, float]]], specs: Mapping[str, GroupSpec]
) -> dict[str, tuple[list[float], list[float]]]:
    """Per-group (mean, std) lists in variable order; missing variables raise ``SchemaError``."""
    out = {}
    for g, spec in specs.items():
        if spec.kind == "image":
            continue
        if g not in norm:
            raise SchemaError(f"norm dict has no group '{g}' (groups: {', '.join(norm)})")
        missing = [v for v in spec.variables if v not in norm[g]]
        if missing:
            raise SchemaError(f"norm dict has no entry for {g} variable(s) {missing}; re-run preprocessing")
        out[g] = (
            [float(norm[g][v]["mean"]) for v in spec.variables],
            [float(norm[g][v]["std"]) for v in spec.variables],
        )
    return out


def collate_identity(batch: Any) -> Any:
    """Batches are built by the dataset; the loader passes them through."""
    return batch
