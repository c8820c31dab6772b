"""Flat HDF5 files: an atomic, streaming writer and a fast streaming reader.

Layout (docs/data.md, the ATLAS training-dataset-dumper layout): top-level structured datasets
with a shared first dimension (``jets`` 1-D, ``tracks`` ``(n_jets, 40)`` with ``valid``, ...);
per-event tables (``events``) have one row per event. Files carry the unit attributes of
:data:`lhcml.data.schema.FILE_ATTRS`; every dataset carries a JSON ``units`` attribute.

The writer writes ``<name>.tmp`` and renames it (:func:`lhcml.atomic.commit`) on a successful
close, so a crashed job never leaves a partial output. The reader reads contiguous row blocks with ``dset.fields(names)[a:b]``
(no fancy indexing), so only the requested variables are decoded.

This is the one reading path for flat files: :class:`H5Reader` streams them, :func:`open_h5` (from
:mod:`lhcml.data.checks`, re-exported here) opens one file for direct access with one clear error
for a missing, non-HDF5, truncated or locked file, and :func:`read_fields` reads rows of a dataset
with the same errors for chunks that do not decode. Every stage reads flat files through them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from lhcml.atomic import commit, prepare_output
from lhcml.data import schema
from lhcml.data.checks import check_structure, datasets, open_h5, read_fields
from lhcml.data.cuts import Cuts
from lhcml.data.files import expand_inputs
from lhcml.errors import SchemaError

Variables = Mapping[str, list[str] | None]

#: target size of one chunk in bytes (HDF5's default chunk cache is 1 MiB)
CHUNK_BYTES = 1 << 20


#: HDF5 filter plugins (registered by ``import hdf5plugin`` in :mod:`lhcml.data`) writable by name;
#: UPP and Salt write LZ4. Values: the hdf5plugin class and its HDF5 filter id.
PLUGIN_FILTERS = {"lz4": ("LZ4", 32004), "zstd": ("Zstd", 32015), "blosc": ("Blosc", 32001),
                  "bitshuffle": ("Bitshuffle", 32008)}  # fmt: skip


def compression_kwargs(compression: str | h5py.Dataset | None, opts: Any = None) -> dict[str, Any]:
    """``create_dataset`` keywords for a compression named ``lzf``, ``gzip``, one of
    :data:`PLUGIN_FILTERS` or ``None``, or for the compression of an existing dataset (plugin
    filters included, which h5py reports as "unknown" and cannot copy by name)."""
    import hdf5plugin

    if isinstance(compression, h5py.Dataset):
        filters = compression._filters
        for name in ("gzip", "lzf"):
            if name in filters:
                return {"compression": name, "compression_opts": compression.compression_opts}
        for name, (_, fid) in PLUGIN_FILTERS.items():
            if str(fid) in filters:
                return dict(getattr(hdf5plugin, PLUGIN_FILTERS[name][0])())
        return {"compression": None}
    if compression in PLUGIN_FILTERS:
        return dict(getattr(hdf5plugin, PLUGIN_FILTERS[compression][0])())
    return {"compression": compression, "compression_opts": opts if compression == "gzip" else None}


def units_of(dtype: np.dtype) -> dict[str, str]:
    """Units of the fields of a structured dtype (dimensionless fields are left out)."""
    return {n: schema.FIELD_UNITS[n] for n in dtype.names or () if n in schema.FIELD_UNITS}


def _attr_value(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    if v is None:
        return "None"
    return v


def temp_path(path: str | Path) -> Path:
    """The temporary name a flat file is written under before its atomic rename.

    A fixed name (``<path>.tmp``), unlike the per-process names of
    :func:`lhcml.atomic.temp_path`: ``simulate`` finds and removes the partial shards of a
    killed run by this name, and preprocessing's resumable stages by ``<path>.tmp-*``.
    """
    path = Path(path)
    return path.with_name(path.name + ".tmp")


class H5Writer:
    """Streaming writer of a flat HDF5 file (context manager).

    Parameters
    ----------
    path
        Output file. Written as ``<path>.tmp`` and renamed on a successful ``close``.
    attrs
        Extra file attributes (added to :data:`schema.FILE_ATTRS`); dicts/lists are stored as JSON.
    compression
        ``"lzf"`` (fast, default), ``"gzip"``, a plugin filter (``"lz4"``, as UPP and Salt write;
        ``"zstd"``, ``"blosc"``, ``"bitshuffle"``) or ``None``.
    compression_opts
        gzip level.
    chunk_rows
        Rows per chunk for 1-D datasets; 2-D datasets use fewer rows so a chunk stays ~1 MiB.
    overwrite
        Replace an existing ``path``; otherwise raise ``FileExistsError``.
    dataset_attrs
        Attributes of individual datasets, e.g. ``{"jets": {"flavour_label": ["bjets", ...]}}``
        (the class names, as UPP writes them and Salt reads them).

    Examples
    --------
    >>> with H5Writer("out.h5") as w:            # doctest: +SKIP
    ...     for batch in batches:
    ...         w.append({"jets": batch["jets"], "tracks": batch["tracks"]})
    """

    def __init__(
        self,
        path: str | Path,
        attrs: Mapping[str, Any] | None = None,
        compression: str | None = "lzf",
        compression_opts: int | None = None,
        chunk_rows: int = 1000,
        overwrite: bool = True,
        dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if compression not in ("lzf", "gzip", None, *PLUGIN_FILTERS):
            valid = ", ".join(["lzf", "gzip", *PLUGIN_FILTERS, "None"])
            raise ValueError(f"unknown compression '{compression}' (valid: {valid})")
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.attrs = {**schema.FILE_ATTRS, **(attrs or {})}
        self.compression = compression
        self.compression_opts = compression_opts if compression == "gzip" else None
        self.chunk_rows = chunk_rows
        self.overwrite = overwrite
        self.dataset_attrs = {k: dict(v) for k, v in (dataset_attrs or {}).items()}
        self._file: h5py.File | None = None
        self._rows: dict[str, int] = {}
        self._dtypes: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> H5Writer:
        """Create the temporary file."""
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"{self.path} exists; remove it or pass overwrite=True")
        prepare_output(self.path)
        # track_times=False everywhere + fixed attrs: same inputs give bit-identical files
        self._file = h5py.File(self.tmp, "w", libver=("earliest", "v110"), track_order=False)
        for k, v in self.attrs.items():
            self._file.attrs[k] = _attr_value(v)
        return self

    def __enter__(self) -> H5Writer:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def close(self) -> Path:
        """Finish the file: check the datasets agree, close, and rename atomically."""
        if self._file is None:
            raise RuntimeError("H5Writer.close() called on a writer that is not open")
        try:
            if not self._rows:
                raise SchemaError(f"nothing was written to {self.path}: append at least one batch")
            for name, n in self._rows.items():
                self._file[name].resize(n, axis=0)  # drop the zero rows up to the chunk boundary
            self._file.close()
        except BaseException:
            self.abort()
            raise
        self._file = None
        try:
            commit(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file (no partial output is ever left)."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - already failing; cleanup must not mask the error
                pass
            self._file = None
        self.tmp.unlink(missing_ok=True)

    # -- writing -----------------------------------------------------------------------------
    def _create(self, name: str, arr: np.ndarray) -> None:
        assert self._file is not None
        row_bytes = max(1, arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=int)))
        rows = int(max(1, min(self.chunk_rows, CHUNK_BYTES // row_bytes)))
        ds = self._file.create_dataset(
            name,
            shape=(0, *arr.shape[1:]),
            maxshape=(None, *arr.shape[1:]),
            dtype=arr.dtype,
            chunks=(rows, *arr.shape[1:]),
            **compression_kwargs(self.compression, self.compression_opts),
            shuffle=False,
            track_times=False,
        )
        units = units_of(arr.dtype)
        if units:
            ds.attrs["units"] = json.dumps(units)
        for k, v in self.dataset_attrs.get(name, {}).items():
            ds.attrs[k] = v
        self._dtypes[name] = (arr.dtype, arr.shape[1:])
        self._rows[name] = 0

    def append(self, batch: Mapping[str, np.ndarray]) -> None:
        """Append rows to every dataset; the per-jet datasets must have equal lengths.

        The first call fixes the datasets, dtypes and object-axis shapes.
        """
        if self._file is None:
            raise RuntimeError("H5Writer is not open: use `with H5Writer(path) as w:`")
        batch = {k: np.asarray(v) for k, v in batch.items()}
        if self._rows and set(batch) != set(self._rows):
            raise SchemaError(
                f"batch for {self.path} has datasets {sorted(batch)} but the file has "
                f"{sorted(self._rows)}; every append must write all datasets"
            )
        lengths = {k: len(v) for k, v in batch.items() if k not in schema.PER_EVENT_DATASETS}
        if len(set(lengths.values())) > 1:
            raise SchemaError(
                f"batch for {self.path}: first dimensions disagree ({lengths}); every per-jet "
                f"dataset needs one row per jet"
            )
        for name, arr in batch.items():
            if name not in self._rows:
                self._create(name, arr)
            dtype, shape = self._dtypes[name]
            if arr.shape[1:] != shape:
                raise SchemaError(
                    f"batch for {self.path}: dataset '{name}' has object shape {arr.shape[1:]}, "
                    f"the file has {shape}"
                )
            if arr.dtype != dtype:
                if arr.dtype.names != dtype.names:
                    raise SchemaError(
                        f"batch for {self.path}: dataset '{name}' fields {arr.dtype.names} differ "
                        f"from the file's {dtype.names}"
                    )
                arr = arr.astype(dtype)
            ds = self._file[name]
            n0, n1 = self._rows[name], self._rows[name] + len(arr)
            # the extent always ends on a chunk boundary while writing, the rows after the data
            # zero-filled, so that no chunk is compressed with rows we did not write (the part of a
            # partial edge chunk beyond the extent is not guaranteed to be initialised: the same
            # data were once stored in different bytes by two processes); close() sets the extent
            rows = ds.chunks[0]
            padded = -(-n1 // rows) * rows
            if padded != ds.shape[0]:
                ds.resize(padded, axis=0)
            ds[n0:n1] = arr
            if padded > n1:
                ds[n1:padded] = np.zeros((padded - n1, *shape), dtype=dtype)
            self._rows[name] = n1


def write_h5(
    path: str | Path,
    tables: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    compression: str | None = "lzf",
    overwrite: bool = True,
) -> Path:
    """Write ``{dataset: structured array}`` to ``path`` atomically; return the path."""
    with H5Writer(path, attrs=attrs, compression=compression, overwrite=overwrite) as w:
        w.append(tables)
    return Path(path)


def read_attrs(path: str | Path) -> dict[str, Any]:
    """File attributes as Python values (JSON strings decoded)."""
    with open_h5(path) as f:
        out = {}
        for k, v in f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            elif isinstance(v, np.generic):
                v = v.item()
            out[k] = v
        return out


def _select(arr: np.ndarray, names: list[str]) -> np.ndarray:
    """A packed copy of ``arr`` with only ``names`` (in that order)."""
    if list(arr.dtype.names) == names:
        return arr
    out = np.empty(arr.shape, dtype=[(n, arr.dtype[n]) for n in names])
    for n in names:
        out[n] = arr[n]
    return out


class H5Reader:
    """Stream flat HDF5 files (one or many, or a glob) in batches of jets.

    Parameters
    ----------
    paths
        A file, a glob pattern (``"dir/*.h5"``), a directory (its ``*.h5`` files) or a list of
        them (:func:`lhcml.data.files.expand_inputs`); read in the given order.
    batch_size
        Jets read per block (a yielded batch has at most this many jets, fewer after cuts).
    jets_name
        The per-jet dataset that cuts and ``num_jets`` refer to.
    check
        Run the light schema check (:func:`lhcml.data.checks.check_structure`) on open.

    Notes
    -----
    The constructor does no I/O; files are opened when first needed.
    """

    def __init__(
        self,
        paths: str | Path | list[str | Path],
        batch_size: int = 100_000,
        jets_name: str = "jets",
        check: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.paths = paths
        self.batch_size = int(batch_size)
        self.jets_name = jets_name
        self.check = check
        self._files: list[Path] | None = None
        self._lengths: list[int] | None = None

    @property
    def files(self) -> list[Path]:
        """The input files (glob patterns expanded, sorted)."""
        if self._files is None:
            self._files = expand_inputs(self.paths)
        return self._files

    def _open(self, path: Path, variables: Variables | None = None) -> h5py.File:
        f = open_h5(path)
        if self.check:
            try:
                check_structure(f, {self.jets_name: None, **(variables or {})}, self.jets_name)
            except BaseException:
                f.close()
                raise
        return f

    @property
    def lengths(self) -> list[int]:
        """Number of jets in each file."""
        if self._lengths is None:
            out = []
            for p in self.files:
                with self._open(p) as f:
                    out.append(int(f[self.jets_name].shape[0]))
            self._lengths = out
        return self._lengths

    @property
    def n_jets(self) -> int:
        """Total number of jets in all files (before cuts)."""
        return sum(self.lengths)

    def __len__(self) -> int:
        return self.n_jets

    def variables(self) -> dict[str, list[str]]:
        """``{dataset: [fields]}`` of the per-jet datasets of the first file."""
        with self._open(self.files[0]) as f:
            return {
                k: list(d.dtype.names or ())
                for k, d in datasets(f).items()
                if k not in schema.PER_EVENT_DATASETS
            }

    def _plan(self, f: h5py.File, variables: Variables | None, cuts: Cuts) -> dict[str, list[str]]:
        """Fields to read per dataset: the requested ones plus the jets' cut variables."""
        dsets = datasets(f)
        if variables is None:
            per_event = self.jets_name in schema.PER_EVENT_DATASETS
            variables = {
                k: None
                for k in dsets
                if (k == self.jets_name) or (not per_event and k not in schema.PER_EVENT_DATASETS)
            }
        plan = {}
        for name, vs in variables.items():
            if name in schema.PER_EVENT_DATASETS and name != self.jets_name:
                raise SchemaError(
                    f"'{name}' has one row per event, not per jet, and cannot be streamed with "
                    f"'{self.jets_name}'; read it with h5py or H5Reader(..., jets_name='{name}')"
                )
            plan[name] = list(dsets[name].dtype.names) if vs is None else list(vs)
        if cuts:
            if self.jets_name not in dsets:
                raise SchemaError(
                    f"{f.filename} has no dataset '{self.jets_name}' to apply cuts to"
                )
            cuts(np.empty(0, dtype=dsets[self.jets_name].dtype))  # unknown variable: clear error
            jets = plan.setdefault(self.jets_name, [])
            plan[self.jets_name] = jets + [v for v in cuts.variables if v not in jets]
        return plan

    def stream(
        self,
        variables: Variables | None = None,
        cuts: list[str] | Cuts | None = None,
        num_jets: int | None = None,
        start: int = 0,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{dataset: structured array}`` batches of jets passing ``cuts``.

        Parameters
        ----------
        variables
            ``{dataset: [fields]}``; a ``None`` list means all fields; ``None`` means every
            per-jet dataset with all fields.
        cuts
            Cut strings on the jets dataset (see :mod:`lhcml.data.cuts`), e.g. ``["pt > 20e3"]``.
        num_jets
            Stop after this many selected jets (default: all).
        start
            Index of the first jet to read, counted over the concatenated files.
        """
        cuts = Cuts.from_list(cuts)
        remaining = np.inf if num_jets is None else int(num_jets)
        if remaining <= 0:
            return
        offset = 0
        for path, n in zip(self.files, self.lengths, strict=True):
            lo = max(0, start - offset)
            offset += n
            if lo >= n:
                continue
            want = None if variables is None else dict(variables)
            with self._open(path, want) as f:
                plan = self._plan(f, want, cuts)
                requested = (
                    {k: list(v) for k, v in plan.items()}
                    if variables is None
                    else {
                        k: (list(plan[k]) if v is None else list(v)) for k, v in variables.items()
                    }
                )
                if variables is None and cuts:
                    requested[self.jets_name] = list(datasets(f)[self.jets_name].dtype.names)
                dsets = {k: f[k] for k in plan}
                for a in range(lo, n, self.batch_size):
                    b = min(a + self.batch_size, n)
                    batch = {k: read_fields(d, plan[k], a, b, path) for k, d in dsets.items()}
                    if cuts:
                        mask = cuts(batch[self.jets_name])
                        if not mask.all():
                            batch = {k: v[mask] for k, v in batch.items()}
                    out = {k: _select(batch[k], requested[k]) for k in requested}
                    m = len(out[next(iter(out))]) if out else 0
                    if m > remaining:
                        out = {k: v[: int(remaining)] for k, v in out.items()}
                        m = int(remaining)
                    if m:
                        yield out
                    remaining -= m
                    if remaining <= 0:
                        return

    def read(
        self,
        variables: Variables | None = None,
        cuts: list[str] | Cuts | None = None,
        num_jets: int | None = None,
        start: int = 0,
    ) -> dict[str, np.ndarray]:
        """Everything :meth:`stream` yields, concatenated."""
        parts = list(self.stream(variables, cuts, num_jets, start))
        if not parts:
            # empty selection: return empty arrays with the right dtypes
            with self._open(self.files[0]) as f:
                plan = self._plan(f, variables, Cuts.from_list(cuts))
                dsets = datasets(f)
                names = (
                    plan
                    if variables is None
                    else {k: plan[k] if v is None else list(v) for k, v in variables.items()}
                )
                return {
                    k: np.empty((0, *dsets[k].shape[1:]), dtype=[(n, dsets[k].dtype[n]) for n in v])
                    for k, v in names.items()
                }
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def estimate_n_jets(self, cuts: list[str] | Cuts | None, n_sample: int = 100_000) -> int:
        """Estimate how many jets pass ``cuts`` from blocks spread over all files."""
        cuts = Cuts.from_list(cuts)
        if not cuts:
            return self.n_jets
        per_file = max(1, n_sample // len(self.files))
        passed = seen = 0
        for path, n in zip(self.files, self.lengths, strict=True):
            if n == 0:
                continue
            with self._open(path, {self.jets_name: cuts.variables}) as f:
                d = f[self.jets_name]
                m = min(n, per_file)
                # a few contiguous blocks evenly spaced through the file
                n_blocks = min(10, m)
                size = max(1, m // n_blocks)
                for s in np.linspace(0, n - size, n_blocks).astype(int):
                    block = read_fields(d, cuts.variables, int(s), int(s) + size, path)
                    passed += int(cuts(block).sum())
                    seen += len(block)
        return int(round(self.n_jets * passed / max(seen, 1)))

    def sample(
        self,
        n: int,
        variables: Variables | None = None,
        cuts: list[str] | Cuts | None = None,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        """A random sample of ``n`` jets passing ``cuts`` (without replacement).

        Random jet indices are drawn, sorted, and read block by block (contiguous reads);
        if fewer than ``n`` jets pass the cuts, all passing jets are returned.
        """
        rng = np.random.default_rng(seed)
        cuts = Cuts.from_list(cuts)
        order = rng.permutation(self.n_jets)
        out: list[dict[str, np.ndarray]] = []
        got = 0
        bounds = np.cumsum([0, *self.lengths])
        # draw in rounds so a tight cut only costs extra rounds
        pos = 0
        while got < n and pos < len(order):
            take = np.sort(order[pos : pos + max(2 * (n - got), 1000)])
            pos += len(take)
            for i, path in enumerate(self.files):
                idx = take[(take >= bounds[i]) & (take < bounds[i + 1])] - bounds[i]
                if len(idx) == 0:
                    continue
                with self._open(path, None if variables is None else dict(variables)) as f:
                    plan = self._plan(f, variables, cuts)
                    for a in range(0, self.lengths[i], self.batch_size):
                        sel = idx[(idx >= a) & (idx < a + self.batch_size)]
                        if len(sel) == 0:
                            continue
                        b = int(sel[-1]) + 1
                        batch = {k: read_fields(f[k], v, a, b, path)[sel - a] for k, v in plan.items()}
                        if cuts:
                            mask = cuts(batch[self.jets_name])
                            batch = {k: v[mask] for k, v in batch.items()}
                        if variables is not None:
                            batch = {
                                k: batch[k] if v is None else _select(batch[k], list(v))
                                for k, v in variables.items()
                            }
                        out.append(batch)
                        got += len(
                            batch[self.jets_name if self.jets_name in batch else next(iter(batch))]
                        )
        if not out:
            return self.read(variables, cuts, num_jets=0)
        cat = {k: np.concatenate([p[k] for p in out]) for k in out[0]}
        keep = np.sort(rng.permutation(len(cat[next(iter(cat))]))[:n])
        return {k: v[keep] for k, v in cat.items()}


def describe(path: str | Path, values: bool = False) -> str:
    """A human-readable summary of a flat file: attributes, datasets, fields, dtypes, units, n.

    With ``values``, also the mean and range of each numeric field (of ``valid`` objects).
    """
    lines = [str(path)]
    with open_h5(path) as f:
        for k, v in f.attrs.items():
            lines.append(f"  @{k} = {v.decode() if isinstance(v, bytes) else v}")
        for name, d in datasets(f).items():
            units = json.loads(d.attrs["units"]) if "units" in d.attrs else {}
            extra = " (per event)" if name in schema.PER_EVENT_DATASETS else ""
            plugin = next((k for k, (_, fid) in PLUGIN_FILTERS.items() if str(fid) in d._filters), None)
            lines.append(f"  {name}: shape {d.shape}{extra}, {plugin or d.compression or 'uncompressed'}")
            names = d.dtype.names or ()
            block = d[: min(d.shape[0], 10_000)] if values and names else None
            valid = block["valid"] if block is not None and "valid" in names else None
            for field in names:
                unit = units.get(field, schema.FIELD_UNITS.get(field, "")) if units else ""
                row = f"    {field:<40s} {str(d.dtype[field]):<8s} {unit:<6s}"
                if block is not None and d.dtype[field].kind in "fiub":
                    x = block[field] if valid is None else block[field][valid]
                    x = x.astype(np.float64)
                    if x.size:
                        row += f" mean {np.nanmean(x):.4g} [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]"
                lines.append(row.rstrip())
        for k, grp in f.items():
            if isinstance(grp, h5py.Group):
                lines.append(f"  {k}/ (group, metadata)")
    return "\n".join(lines)
