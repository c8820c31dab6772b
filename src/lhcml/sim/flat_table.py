"""Jagged tables as flat numpy columns + per-event counts, and their Awkward round trips.

The simulation chain (:mod:`lhcml.sim.events`) passes :class:`FlatTable` objects between its
stages; :func:`to_awkward` / :func:`to_flat` convert at the public boundaries without copies
where the layout allows. Helpers for per-event segments (:func:`offsets_of`, :func:`event_ids`,
:func:`segment_max`, :func:`insert_per_event`) live here too.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numba
import numpy as np


def to_awkward(columns: dict[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    """Jagged record array (one list per event) from flat columns and per-event counts.

    The layout (list offsets over a record of numpy columns) is built directly, without copies.
    """
    counts = np.asarray(counts, dtype=np.int64)
    offsets = offsets_of(counts)
    n = int(offsets[-1])
    contents = []
    for name, col in columns.items():
        col = np.asarray(col)
        if len(col) != n:
            raise ValueError(f"column '{name}' has {len(col)} rows, the counts add up to {n}")
        contents.append(ak.contents.NumpyArray(col))
    record = ak.contents.RecordArray(contents, list(columns), length=n)
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def _leaf(content: Any) -> np.ndarray | None:
    """The numpy buffer of a plain (non-option, non-indexed) awkward leaf, else ``None``."""
    if isinstance(content, ak.contents.NumpyArray) and content.data.ndim == 1:
        return np.asarray(content.data)
    return None


def _list_layout(array: Any) -> tuple[np.ndarray, Any] | None:
    """``(offsets, record content)`` of a jagged record array stored as offsets, else ``None``."""
    layout = ak.to_layout(array) if isinstance(array, ak.Array) else array
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.RecordArray):
        return np.asarray(layout.offsets.data).astype(np.int64, copy=False), layout.content
    return None


def to_flat(array: ak.Array, fields: list[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flat numpy columns and per-event counts of a jagged record array.

    Plain layouts (offsets over a record of numpy leaves, as built by :func:`to_awkward`) are read
    without copies; anything else goes through ``ak.flatten``.
    """
    fields = fields or list(array.fields)
    direct = _list_layout(array)
    if direct is not None:
        offs, rec = direct
        cols = {}
        for f in fields:
            leaf = _leaf(rec.content(f)) if f in rec.fields else None
            if leaf is None:
                break
            cols[f] = leaf[offs[0] : offs[-1]]
        else:
            return cols, np.diff(offs)
    counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
    flat = ak.flatten(array, axis=1)
    return {f: ak.to_numpy(flat[f]) for f in fields}, counts


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """Offsets (length n+1) of a jagged layout with these counts."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


class FlatTable:
    """A jagged table (one list of rows per event) as flat numpy columns + per-event counts.

    The simulation chain passes these between its stages (no Awkward round trips); use
    :meth:`to_awkward` / :meth:`from_awkward` at the public boundaries.

    Parameters
    ----------
    columns
        Flat columns, all of the same length ``counts.sum()``, rows grouped by event.
    counts
        Rows per event.
    """

    __slots__ = ("columns", "counts", "_offsets", "_events")

    def __init__(self, columns: dict[str, np.ndarray], counts: np.ndarray) -> None:
        self.columns = dict(columns)
        self.counts = np.asarray(counts, dtype=np.int64)
        self._offsets: np.ndarray | None = None
        self._events: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def offsets(self) -> np.ndarray:
        """Offsets (length ``n_events + 1``) of each event's first row."""
        if self._offsets is None:
            self._offsets = offsets_of(self.counts)
        return self._offsets

    @property
    def event(self) -> np.ndarray:
        """Event index of every row."""
        if self._events is None:
            self._events = event_ids(self.counts)
        return self._events

    def select(self, mask: np.ndarray) -> FlatTable:
        """The rows where ``mask`` is true (per-event order kept)."""
        idx = np.flatnonzero(mask)
        counts = np.bincount(self.event[idx], minlength=len(self))
        return FlatTable({k: v[idx] for k, v in self.columns.items()}, counts)

    def to_awkward(self) -> ak.Array:
        """The table as a jagged Awkward record array."""
        return to_awkward(self.columns, self.counts)

    @classmethod
    def from_awkward(cls, array: ak.Array, fields: list[str] | None = None) -> FlatTable:
        """Flat table of a jagged Awkward record array (``fields``: default all)."""
        cols, counts = to_flat(array, fields)
        return cls(cols, counts)


@numba.njit(cache=True)
def _interleave(a, a_off, b, b_off, out):
    """Per event ``e``: ``a[a_off[e]:a_off[e+1]]`` then ``b[b_off[e]:b_off[e+1]]`` into ``out``."""
    pos = 0
    for ev in range(a_off.shape[0] - 1):
        n = a_off[ev + 1] - a_off[ev]
        out[pos : pos + n] = a[a_off[ev] : a_off[ev + 1]]
        pos += n
        n = b_off[ev + 1] - b_off[ev]
        out[pos : pos + n] = b[b_off[ev] : b_off[ev + 1]]
        pos += n


def insert_per_event(first: FlatTable, second: FlatTable) -> FlatTable:
    """Per event, the rows of ``first`` followed by those of ``second`` (``ak.concatenate(axis=1)``).

    Both tables need the same columns and events; the dtypes of ``first`` are kept.
    """
    total = int(first.counts.sum() + second.counts.sum())
    cols = {}
    for k, a in first.columns.items():
        out = np.empty(total, dtype=a.dtype)
        _interleave(a, first.offsets, second.columns[k].astype(a.dtype, copy=False), second.offsets, out)
        cols[k] = out
    return FlatTable(cols, first.counts + second.counts)


@numba.njit(cache=True)
def segment_max(values, offsets, empty_value):
    """Maximum of ``values`` in each segment ``offsets[i]:offsets[i+1]`` (``empty_value`` if empty)."""
    n = offsets.shape[0] - 1
    out = np.full(n, empty_value, dtype=np.int64)
    for i in range(n):
        if offsets[i + 1] > offsets[i]:
            m = values[offsets[i]]
            for j in range(offsets[i] + 1, offsets[i + 1]):
                if values[j] > m:
                    m = values[j]
            out[i] = m
    return out


def event_ids(counts: np.ndarray) -> np.ndarray:
    """For each flat entry, the index of its event."""
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)
