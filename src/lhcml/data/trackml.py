"""Events in the TrackML challenge layout: reader, CSV and HDF5 writers, the challenge's hit weights.

The layout (docs/tracking.md; docs/references.md §24) is the one of the TrackML Particle Tracking
Challenge: per event four tables,

- ``hits``: ``hit_id`` (1-based), ``x, y, z`` (mm), ``volume_id, layer_id, module_id``;
- ``cells``: ``hit_id, ch0, ch1, value`` (the pixels of a hit's cluster; optional);
- ``particles``: ``particle_id, vx, vy, vz`` (mm), ``px, py, pz`` (GeV), ``q``, ``nhits``;
- ``truth``: ``hit_id, particle_id, tx, ty, tz, tpx, tpy, tpz, weight``; noise hits have
  ``particle_id`` 0.

The same reader, :func:`read_event`, reads

1. a directory of ``event{N:09d}-{hits,cells,particles,truth}.csv`` files (a real TrackML
   ``train_*`` directory; ``.csv.gz`` too), or an lhcml ``tracking simulate`` output directory
   (its ``trackml/`` subdirectory, or its ``h5/`` shards when the CSV files were not written);
2. an lhcml HDF5 event file (:func:`write_events_h5`) or a directory of them.

Every problem with the input (a missing file or column, hits without truth rows, a truncated or
corrupt file) is one :mod:`lhcml.errors` exception naming the file, the column and the fix.

:func:`hit_weights` computes the per-hit weights of the challenge's score (phase 1): the weight of
a hit is the product of an order weight (position of the hit along its particle's trajectory,
ordered by ``|tz - vz|``; the first and last hits weigh more) and a transverse-momentum weight
(0.2 below 0.5 GeV rising linearly to 1 at 3 GeV), zero for noise hits and for particles with
fewer than 4 hits, normalised to a sum of 1 per event (docs/references.md §21).

This module is in the data layer: it imports only infrastructure and :mod:`lhcml.data`.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lhcml.atomic import atomic_path, prepare_output
from lhcml.errors import CorruptFileError, InputNotFoundError, SchemaError

#: the four tables of an event, in the order of the challenge's files
PARTS = ("hits", "cells", "particles", "truth")

#: columns and dtypes of each table (the dtypes the challenge's own loader uses)
COLUMNS: dict[str, dict[str, str]] = {
    "hits": {"hit_id": "i8", "x": "f4", "y": "f4", "z": "f4", "volume_id": "i4", "layer_id": "i4",
             "module_id": "i8"},
    "cells": {"hit_id": "i8", "ch0": "i4", "ch1": "i4", "value": "f4"},
    "particles": {"particle_id": "i8", "vx": "f4", "vy": "f4", "vz": "f4", "px": "f4", "py": "f4",
                  "pz": "f4", "q": "i4", "nhits": "i4"},
    "truth": {"hit_id": "i8", "particle_id": "i8", "tx": "f4", "ty": "f4", "tz": "f4", "tpx": "f4",
              "tpy": "f4", "tpz": "f4", "weight": "f4"},
}  # fmt: skip
#: units of the columns (the HDF5 files carry them as a JSON ``units`` attribute per dataset)
UNITS = {"x": "mm", "y": "mm", "z": "mm", "vx": "mm", "vy": "mm", "vz": "mm", "tx": "mm", "ty": "mm", "tz": "mm",
         "px": "GeV", "py": "GeV", "pz": "GeV", "tpx": "GeV", "tpy": "GeV", "tpz": "GeV", "q": "e"}  # fmt: skip

#: particle id of noise hits in ``truth``
NOISE_PARTICLE_ID = 0

#: file name of one table of one event
_NAME = re.compile(r"^event(\d+)-(hits|cells|particles|truth)\.csv(\.gz)?$")
#: format tag of lhcml's HDF5 event files
H5_FORMAT = "lhcml-trackml-1"

# --------------------------------------------------------------------------------------------
# the challenge's hit weights (docs/references.md §21)
# --------------------------------------------------------------------------------------------

#: order-weight proposal along a trajectory (first hits, middle, last hits)
ORDER_PROPOSAL = (10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0)
#: particles with fewer hits weigh zero; longer ones use the weights of this many hits
ORDER_MIN_HITS, ORDER_MAX_HITS = 4, 20
#: pT weight: ``PT_W_MIN`` below ``PT_INF``, linear up to ``PT_W_MAX`` at ``PT_SUP`` (GeV), 0 below ``PT_ZERO``
PT_ZERO, PT_INF, PT_SUP, PT_W_MIN, PT_W_MAX = 0.05, 0.5, 3.0, 0.2, 1.0


def order_weight_matrix() -> np.ndarray:
    """Order weights ``W[nhits, ihit]`` (rows ``nhits`` < 4 are zero; each used row sums to 1).

    The 9-point proposal is stretched over the ``nhits`` positions of a trajectory and linearly
    interpolated at each hit position, then normalised to a sum of 1 per trajectory.
    """
    w = np.zeros((ORDER_MAX_HITS + 1, ORDER_MAX_HITS))
    prop = np.asarray(ORDER_PROPOSAL)
    for n in range(ORDER_MIN_HITS, ORDER_MAX_HITS + 1):
        support = np.arange(len(prop)) * (n - 1) / (len(prop) - 1)
        row = np.interp(np.arange(n), support, prop)
        w[n, :n] = row / row.sum()
    return w


def pt_weight(pt: np.ndarray) -> np.ndarray:
    """The challenge's pT weight of particles with transverse momentum ``pt`` (GeV)."""
    return np.interp(np.asarray(pt, dtype=np.float64), [PT_ZERO, PT_INF, PT_SUP], [PT_W_MIN, PT_W_MIN, PT_W_MAX],
                     left=0.0, right=PT_W_MAX)  # fmt: skip


def hit_weights(truth: pd.DataFrame, particles: pd.DataFrame, source: str = "the event") -> np.ndarray:
    """Per-hit weights of the TrackML score, in the row order of ``truth`` (sum 1 per event).

    Parameters
    ----------
    truth
        Columns ``hit_id``, ``particle_id``, ``tz``.
    particles
        Columns ``particle_id``, ``vz``, ``px``, ``py``, ``nhits``.
    source
        Where the tables come from (for error messages).

    Returns
    -------
    np.ndarray
        float64 weights; 0 for noise hits, for hits of particles not in ``particles`` and of
        particles with ``nhits < 4``.

    Raises
    ------
    SchemaError
        A column is missing, or a particle has more truth hits than its ``nhits`` says.
    """
    _require(truth, ("hit_id", "particle_id", "tz"), "truth", source)
    _require(particles, ("particle_id", "vz", "px", "py", "nhits"), "particles", source)
    pid = truth["particle_id"].to_numpy(np.int64)
    ppid = particles["particle_id"].to_numpy(np.int64)
    order = np.argsort(ppid, kind="stable")
    sorted_pid = ppid[order]
    pos = np.clip(np.searchsorted(sorted_pid, pid), 0, max(len(ppid) - 1, 0))
    known = (pid != NOISE_PARTICLE_ID) & (len(ppid) > 0)
    if len(ppid):
        known &= sorted_pid[pos] == pid
    row = order[pos] if len(ppid) else np.zeros(len(pid), dtype=np.int64)
    vz = particles["vz"].to_numpy(np.float64)
    w_pt = pt_weight(np.hypot(particles["px"].to_numpy(np.float64), particles["py"].to_numpy(np.float64)))
    nh = particles["nhits"].to_numpy(np.int64)
    w = np.zeros(len(pid))
    if not known.any():
        return w
    idx = np.flatnonzero(known)
    dz = np.abs(truth["tz"].to_numpy(np.float64)[idx] - vz[row[idx]])
    # rank of |tz - vz| within each particle (ties share the average rank, as pandas' rank), from 0
    ranks = pd.Series(dz).groupby(pid[idx]).rank(method="average").to_numpy() - 1.0
    ihit = np.floor(ranks).astype(np.int64)
    nhits = nh[row[idx]]
    bad = (ihit >= nhits) & (nhits >= ORDER_MIN_HITS)
    if bad.any():
        p = int(pid[idx][np.flatnonzero(bad)[0]])
        raise SchemaError(
            f"{source}: particle {p} has more hits in 'truth' than its 'nhits' in 'particles' says; "
            "recompute the column nhits of particles from the truth table (count of truth rows per particle_id)"
        )
    matrix = order_weight_matrix()
    ok = (nhits >= ORDER_MIN_HITS) & (ihit < ORDER_MAX_HITS)
    w_order = np.zeros(len(idx))
    w_order[ok] = matrix[np.minimum(nhits[ok], ORDER_MAX_HITS), ihit[ok]]
    w[idx] = w_order * w_pt[row[idx]]
    total = w.sum()
    return w / total if total > 0 else w


# --------------------------------------------------------------------------------------------
# the event and its checks
# --------------------------------------------------------------------------------------------


@dataclass
class TrackMLEvent:
    """One event: the four TrackML tables as pandas DataFrames (``cells``, ``particles`` and
    ``truth`` are ``None`` when the input has no such table, e.g. a challenge test event)."""

    event_id: int
    hits: pd.DataFrame
    cells: pd.DataFrame | None = None
    particles: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None
    source: str = field(default="", repr=False)

    def table(self, part: str) -> pd.DataFrame | None:
        """The table named ``part`` (one of :data:`PARTS`)."""
        return getattr(self, part)


def _require(df: pd.DataFrame, columns: Iterable[str], part: str, source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{source}: the {part} table has no column {', '.join(repr(c) for c in missing)} "
            f"(it has {', '.join(map(str, df.columns)) or 'none'}); the TrackML layout needs "
            f"{', '.join(COLUMNS[part])}: rewrite the file with these columns (docs/tracking.md)"
        )


def _typed(df: pd.DataFrame, part: str, source: str) -> pd.DataFrame:
    """``df`` with the layout's columns (in order, extra ones kept after them) and dtypes."""
    _require(df, COLUMNS[part], part, source)
    cols = COLUMNS[part]
    sub = df[list(cols)]
    if len(sub) and sub.isna().to_numpy().any():
        bad = [c for c in cols if sub[c].isna().any()]
        raise CorruptFileError(
            f"{source}: the {part} table has empty values in column {bad[0]!r} (a truncated or corrupt "
            "file); re-copy or re-create it"
        )
    try:
        out = df.astype({c: cols[c] for c in cols})
    except (ValueError, TypeError) as err:
        raise CorruptFileError(
            f"{source}: the {part} table has values that are not numbers ({err}); re-copy or re-create the file"
        ) from None
    extra = [c for c in df.columns if c not in cols]
    return out[[*cols, *extra]].reset_index(drop=True)


def check_event(event: TrackMLEvent) -> TrackMLEvent:
    """Check the relations between the tables of ``event``; return it.

    Hit ids are unique; every hit has exactly one truth row and every truth row a hit; every
    ``particle_id`` in truth other than 0 (noise) is in particles; every cell belongs to a hit.

    Raises
    ------
    SchemaError
        Naming the table, the first offending id and how to fix the file.
    """
    src = event.source or f"event {event.event_id}"
    hid = event.hits["hit_id"].to_numpy()
    if len(np.unique(hid)) != len(hid):
        raise SchemaError(f"{src}: hit_id is not unique in the hits table; each hit needs its own id")
    if event.truth is not None:
        tid = event.truth["hit_id"].to_numpy()
        no_truth = np.setdiff1d(hid, tid)
        if len(no_truth):
            raise SchemaError(
                f"{src}: {len(no_truth)} hits have no row in the truth table (first hit_id {int(no_truth[0])}); "
                "every hit needs one truth row (noise hits with particle_id 0): add the rows or read the event "
                "without truth (parts=('hits', 'cells'))"
            )
        if len(tid) != len(hid) or len(np.setdiff1d(tid, hid)):
            extra = np.setdiff1d(tid, hid)
            what = f"hit_id {int(extra[0])} is not in the hits table" if len(extra) else "hit ids repeat"
            raise SchemaError(f"{src}: the truth table does not match the hits table ({what}); re-create the files")
        if event.particles is not None:
            tp = event.truth["particle_id"].to_numpy()
            unknown = np.setdiff1d(tp[tp != NOISE_PARTICLE_ID], event.particles["particle_id"].to_numpy())
            if len(unknown):
                raise SchemaError(
                    f"{src}: particle_id {int(unknown[0])} of the truth table is not in the particles table "
                    f"({len(unknown)} such particles); add the particles or mark their hits as noise (particle_id 0)"
                )
    if event.cells is not None and len(event.cells):
        orphan = np.setdiff1d(event.cells["hit_id"].to_numpy(), hid)
        if len(orphan):
            raise SchemaError(
                f"{src}: the cells table has cells of hit_id {int(orphan[0])}, which is not in the hits table; "
                "re-create the files"
            )
    return event


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _csv_dir(path: Path) -> Path | None:
    """The directory of event CSV files that ``path`` stands for, or None."""
    if not path.is_dir():
        return None
    for cand in (path / "trackml", path):
        if cand.is_dir() and any(_NAME.match(p.name) for p in cand.iterdir()):
            return cand
    return None


def _h5_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    for cand in (path / "h5", path):
        if cand.is_dir():
            # hidden names are the atomic writer's temporaries of shards still being written
            files = sorted(f for f in cand.glob("*.h5") if not f.name.startswith("."))
            if files:
                return files
    return []


def _csv_files(directory: Path) -> dict[int, dict[str, Path]]:
    out: dict[int, dict[str, Path]] = {}
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = p
    return out


def _not_found(path: Path) -> InputNotFoundError:
    return InputNotFoundError(
        f"{path} holds no TrackML events: give a directory of event{{N:09d}}-hits.csv (and cells, particles, "
        "truth) files, an `lhcml tracking simulate` output directory, or its HDF5 files"
    )


def list_events(path: str | Path) -> list[int]:
    """The event ids available at ``path`` (CSV directory, simulate output, HDF5 file or directory), sorted."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist; check the path")
    d = _csv_dir(path)
    if d is not None:
        return sorted(k for k, v in _csv_files(d).items() if "hits" in v)
    files = _h5_files(path)
    if not files:
        raise _not_found(path)
    ids: list[int] = []
    for f in files:
        ids.extend(int(e) for e in _h5_index(f)["event_id"])
    return sorted(ids)


def _read_csv(path: Path, part: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CorruptFileError(f"{path} is empty (a truncated copy?); re-copy or re-create it") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, zlib.error, OSError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise CorruptFileError(
            f"{path} cannot be parsed as the {part} table ({type(err).__name__}: {err}); the file is truncated or "
            "corrupt: re-copy or re-create it"
        ) from None
    return _typed(df, part, str(path))


def read_event(
    path: str | Path, event_id: int, parts: Sequence[str] = PARTS, check: bool = True
) -> TrackMLEvent:
    """Read event ``event_id`` from ``path`` (see the module docstring for what ``path`` may be).

    Parameters
    ----------
    path
        A directory of TrackML CSV files, an ``lhcml tracking simulate`` output directory, an
        lhcml HDF5 event file or a directory of them.
    event_id
        The event number (the ``N`` of ``event{N:09d}-hits.csv``).
    parts
        Tables to read (``hits`` is always read); the others are ``None``. A requested table
        that the input lacks is an error, except ``cells`` (optional in the layout: ``None``).
    check
        Check the relations between the tables (:func:`check_event`).

    Raises
    ------
    InputNotFoundError
        No such path or event, or a requested table's file is missing.
    SchemaError
        A missing column; hits without truth rows; truth particles missing from particles.
    CorruptFileError
        A truncated or corrupt file.
    """
    path = Path(path).expanduser()
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r}; choose from {', '.join(PARTS)}")
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist; check the path")
    event_id = int(event_id)
    d = _csv_dir(path)
    if d is not None:
        files = _csv_files(d).get(event_id, {})
        if "hits" not in files:
            raise InputNotFoundError(
                f"{d} has no event {event_id} (no event{event_id:09d}-hits.csv); `lhcml.data.trackml.list_events` "
                "lists the events there"
            )
        tables: dict[str, pd.DataFrame | None] = {}
        for part in ("hits", *[p for p in parts if p != "hits"]):
            f = files.get(part)
            if f is None:
                if part == "cells":  # optional in the layout (smeared-only detectors have no cells)
                    tables[part] = None
                    continue
                raise InputNotFoundError(
                    f"{d / f'event{event_id:09d}-{part}.csv'} does not exist; the event has no {part} table: "
                    f"copy the file, or read only the tables there (parts=...)"
                )
            tables[part] = _read_csv(f, part)
        ev = TrackMLEvent(event_id, source=str(d / f"event{event_id:09d}"), **tables)  # type: ignore[arg-type]
    else:
        files_h5 = _h5_files(path)
        if not files_h5:
            raise _not_found(path)
        ev = None
        for f in files_h5:
            index = _h5_index(f)
            hit = np.flatnonzero(index["event_id"] == event_id)
            if len(hit):
                ev = _read_h5_event(f, index, int(hit[0]), parts)
                break
        if ev is None:
            raise InputNotFoundError(f"{path} has no event {event_id}; `lhcml.data.trackml.list_events` lists them")
    return check_event(ev) if check else ev


# --------------------------------------------------------------------------------------------
# writing: CSV and HDF5
# --------------------------------------------------------------------------------------------


def event_stem(event_id: int) -> str:
    """``event{N:09d}`` (the challenge's file prefix)."""
    return f"event{int(event_id):09d}"


def _fmt(df: pd.DataFrame, part: str) -> pd.DataFrame:
    return _typed(df, part, f"the {part} table being written")[list(COLUMNS[part])]


def write_csv(df: pd.DataFrame, dest: str | Path) -> Path:
    """Write ``df`` as a plain CSV file (header line, no quotes, no index) atomically.

    Floats are written as float32 in their shortest round-trip form (the layout's precision; the
    ACTS readers read float32 too), integers exactly, strings as they are. pyarrow's CSV writer
    does the formatting (ten times faster than pandas' ``float_format``).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    dest = Path(dest)
    prepare_output(dest)
    cols = {}
    for c in df.columns:
        v = df[c].to_numpy()
        cols[str(c)] = v.astype(np.float32) if v.dtype.kind == "f" else v
    table = pa.table(cols)
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        fh.write((",".join(map(str, df.columns)) + "\n").encode())
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return dest


def write_event_csv(directory: str | Path, event: TrackMLEvent) -> list[Path]:
    """Write ``event`` as ``event{N:09d}-{part}.csv`` files in ``directory`` (each atomically, :func:`write_csv`)."""
    directory = Path(directory)
    out = []
    for part in PARTS:
        df = event.table(part)
        if df is None:
            continue
        out.append(write_csv(_fmt(df, part), directory / f"{event_stem(event.event_id)}-{part}.csv"))
    return out


def _structured(df: pd.DataFrame, part: str, event_id: int) -> np.ndarray:
    cols = COLUMNS[part]
    arr = np.empty(len(df), dtype=[("event_id", "i8"), *[(c, t) for c, t in cols.items()]])
    arr["event_id"] = event_id
    for c in cols:
        arr[c] = df[c].to_numpy()
    return arr


def write_events_h5(path: str | Path, events: Sequence[TrackMLEvent], attrs: dict[str, Any] | None = None) -> Path:
    """Write ``events`` to one HDF5 file atomically (lhcml's flat layout: structured datasets).

    Datasets ``hits``, ``cells``, ``particles``, ``truth`` hold the rows of all events one after
    the other, each with an ``event_id`` column and the layout's columns; ``events`` holds per
    event ``event_id`` and the first row and row count in each table (``<part>_start``,
    ``<part>_count``; count -1: the event has no such table). Each dataset carries a JSON
    ``units`` attribute; the file carries ``format`` and ``attrs`` (JSON for dicts and lists).
    """
    import h5py

    path = Path(path)
    prepare_output(path)
    index = np.zeros(len(events), dtype=[("event_id", "i8"), *[(f"{p}_{k}", "i8") for p in PARTS for k in ("start", "count")]])
    blocks: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
    starts = dict.fromkeys(PARTS, 0)
    for i, ev in enumerate(events):
        index["event_id"][i] = ev.event_id
        for p in PARTS:
            df = ev.table(p)
            index[f"{p}_start"][i] = starts[p]
            if df is None:
                index[f"{p}_count"][i] = -1
                continue
            arr = _structured(_fmt(df, p), p, ev.event_id)
            blocks[p].append(arr)
            index[f"{p}_count"][i] = len(arr)
            starts[p] += len(arr)
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = H5_FORMAT
        for k, v in (attrs or {}).items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v
        ds = f.create_dataset("events", data=index)
        ds.attrs["units"] = json.dumps({})
        for p in PARTS:
            dtype = [("event_id", "i8"), *COLUMNS[p].items()]
            data = np.concatenate(blocks[p]) if blocks[p] else np.zeros(0, dtype=dtype)
            ds = f.create_dataset(p, data=data, compression="lzf" if len(data) else None, chunks=True if len(data) else None)
            ds.attrs["units"] = json.dumps({c: UNITS[c] for c in COLUMNS[p] if c in UNITS})
    return path


def _h5_index(path: Path) -> np.ndarray:
    from lhcml.data.checks import open_h5, read_fields

    with open_h5(path) as f:
        if f.attrs.get("format") != H5_FORMAT or "events" not in f:
            raise SchemaError(
                f"{path} is not an lhcml TrackML event file (format {f.attrs.get('format')!r}, expected "
                f"{H5_FORMAT!r}); write it with lhcml.data.trackml.write_events_h5 or `lhcml tracking simulate`"
            )
        ds = f["events"]
        return read_fields(ds, None, 0, ds.shape[0], path)


def _read_h5_event(path: Path, index: np.ndarray, row: int, parts: Sequence[str]) -> TrackMLEvent:
    from lhcml.data.checks import open_h5, read_fields

    rec = index[row]
    tables: dict[str, pd.DataFrame | None] = {}
    with open_h5(path) as f:
        for p in ("hits", *[q for q in parts if q != "hits"]):
            n = int(rec[f"{p}_count"])
            if n < 0:
                if p == "cells":
                    tables[p] = None
                    continue
                raise InputNotFoundError(
                    f"{path}: event {int(rec['event_id'])} has no {p} table; read only the tables there (parts=...)"
                )
            if p not in f:
                raise SchemaError(f"{path} has no dataset {p!r}; re-create the file with `lhcml tracking simulate`")
            lo = int(rec[f"{p}_start"])
            arr = read_fields(f[p], None, lo, lo + n, path)
            df = pd.DataFrame({c: arr[c] for c in arr.dtype.names if c != "event_id"})
            tables[p] = _typed(df, p, f"{path}:{p}")
    return TrackMLEvent(int(rec["event_id"]), source=f"{path}:event {int(rec['event_id'])}", **tables)  # type: ignore[arg-type]
