"""Schema and integrity checks of flat HDF5 files, with one clear message per problem.

:func:`check_file` is the full check (structure, required variables, dtypes, NaN/inf values);
:func:`check_structure` is the light version the reader runs when it opens a file.
Every error names the file, the dataset, the variable and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the HDF5 filter plugins (LZ4 of UPP/Salt files, Zstd, ...)
import numpy as np

from lhcml.data import schema
from lhcml.errors import CorruptFileError, SchemaError, is_lock_error, locked_error

#: float fields that may legitimately hold NaN (undefined for some objects)
DEFAULT_ALLOW_NAN: tuple[str, ...] = (
    "HadronConeExclTruthLabelPt",
    "HadronConeExclTruthLabelLxy",
    "HadronConeExclTruthLabelDR",
    "truthPt",
    "truthMass",
)

# dtype kind expected for each known field, per dataset name
_JET_LIKE = {**dict(schema.LARGE_R_JET_FIELDS), **dict(schema.JET_FIELDS)}
EXPECTED_FIELDS: dict[str, dict[str, str]] = {
    "jets": _JET_LIKE,
    "tracks": dict(schema.TRACK_FIELDS),
    "flow": dict(schema.FLOW_FIELDS),
    "constituents": dict(schema.FLOW_FIELDS),
    "events": dict(schema.EVENT_FIELDS),
}
#: datasets holding padded objects: 2-D with a boolean ``valid`` field
PADDED_DATASETS = ("tracks", "flow", "constituents")

_KIND_NAMES = {"f": "floating-point", "i": "integer", "u": "integer", "b": "boolean"}


def _kind(dtype: np.dtype | str) -> str:
    k = np.dtype(dtype).kind
    return "i" if k == "u" else k


def _suggest(name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def open_h5(path: str | Path) -> h5py.File:
    """Open an HDF5 file read-only, turning low-level failures into clear errors.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    IsADirectoryError
        The path is a directory (e.g. one named ``x.h5``).
    PermissionError
        The file is not readable by this user.
    FileLockedError
        Another process has the file open for writing (HDF5's file lock).
    CorruptFileError
        The file is not HDF5 (e.g. a ROOT file) or is truncated/corrupt.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"input {path} is a directory, not an HDF5 file; give the files inside it "
            f"(e.g. '{path}/*.h5')"
        )
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist; check the path or glob pattern")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except PermissionError:
        raise PermissionError(
            f"input file {path} is not readable by this user; fix its permissions "
            f"(chmod u+r) or read a copy"
        ) from None
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as err:
        if is_lock_error(err):
            raise locked_error(path) from None
        is_h5 = False
    if not is_h5:
        hint = (
            "it is a ROOT file: convert it with `lhcml convert IN.root OUT.h5`"
            if head[:4] == b"root"
            else "re-create the file with lhcml (or the training-dataset-dumper)"
        )
        raise CorruptFileError(f"{path} is not an HDF5 file (first bytes {head[:4]!r}); {hint}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        if is_lock_error(err):
            raise locked_error(path) from None
        raise CorruptFileError(
            f"{path} is truncated or corrupt and cannot be opened ({err}); "
            f"re-copy or re-create it (an interrupted copy or job leaves such files)"
        ) from None


def read_error(path: str | Path, dataset: str, rows: tuple[int, int], err: OSError) -> OSError:
    """The error to raise when rows of a dataset cannot be read (one wording for every reader).

    A chunk that does not decode (truncated, corrupt, or compressed with a filter that is not
    loaded) becomes :class:`CorruptFileError` naming the file, the dataset and the rows; a held
    lock becomes :class:`FileLockedError`; file-system errors (permissions, ...) are returned
    unchanged.
    """
    if is_lock_error(err):
        return locked_error(path)
    if isinstance(err, (PermissionError, FileNotFoundError, IsADirectoryError)):
        return err
    lo, hi = rows
    return CorruptFileError(
        f"{path}: dataset '{dataset}' rows {lo}-{hi} cannot be read ({err}); the file is "
        f"truncated or corrupt, or compressed with a filter that is not available. Check it with "
        f"`lhcml inspect --check {path}` and re-copy or re-create it"
    )


def read_fields(dset: h5py.Dataset, fields: list[str] | None, lo: int, hi: int, path: str | Path | None = None) -> np.ndarray:
    """``dset.fields(fields)[lo:hi]`` (all fields if ``None``) with :func:`read_error`'s messages."""
    try:
        return dset[lo:hi] if fields is None else dset.fields(list(fields))[lo:hi]
    except OSError as err:
        raise read_error(path or dset.file.filename, dset.name.lstrip("/"), (lo, hi), err) from None


def datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    """Top-level datasets of an open file (groups such as ``cutBookkeeper`` are skipped)."""
    return {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}


def check_structure(
    f: h5py.File,
    required: dict[str, list[str] | None] | None = None,
    jets_name: str = "jets",
) -> None:
    """Light checks on an open file: datasets present, first dimensions, fields, dtypes, shapes.

    Parameters
    ----------
    f
        An open ``h5py.File``.
    required
        ``{dataset: [variables]}`` that must exist (``None`` as the list: only the dataset).
    jets_name
        Name of the per-jet dataset whose length the other per-jet datasets must share.

    Raises
    ------
    SchemaError
        With one message naming the file, dataset, variable and the fix.
    """
    fname = f.filename
    dsets = datasets(f)
    if not dsets:
        raise SchemaError(f"{fname} holds no top-level datasets; expected at least '{jets_name}'")
    for name, var_list in (required or {}).items():
        if name not in dsets:
            fmt = f.attrs.get("format", "")
            if str(fmt.decode() if isinstance(fmt, bytes) else fmt).startswith("lhcml-pileup"):
                raise SchemaError(
                    f"{fname} is a pileup (minimum-bias) library, not a file of jets; select the "
                    f"shards only, e.g. with the pattern 'DIR/<process>_*.h5' instead of 'DIR/*.h5'"
                )
            raise SchemaError(
                f"{fname} has no dataset '{name}'; {_suggest(name, dsets)}"
                f"datasets in the file: {', '.join(dsets)}"
            )
        names = dsets[name].dtype.names or ()
        for var in var_list or []:
            if var not in names:
                raise SchemaError(
                    f"{fname}: dataset '{name}' has no variable '{var}'; {_suggest(var, names)}"
                    f"available: {', '.join(names)}. Fix the variable list in your config or "
                    f"add the variable when making the file"
                )
    # first dimensions of per-jet datasets agree
    per_jet = {k: d for k, d in dsets.items() if k not in schema.PER_EVENT_DATASETS}
    if jets_name in per_jet:
        n = per_jet[jets_name].shape[0] if per_jet[jets_name].shape else 0
        bad = {k: d.shape for k, d in per_jet.items() if (d.shape[:1] or (0,))[0] != n}
        if bad:
            shapes = ", ".join(f"'{k}' {d.shape}" for k, d in per_jet.items())
            raise SchemaError(
                f"{fname}: the first dimensions of the per-jet datasets disagree ({shapes}); every "
                f"dataset must have one row per '{jets_name}' row. The file was written "
                f"inconsistently: re-create it"
            )
    for name, d in dsets.items():
        if d.dtype.names is None:
            continue  # plain arrays (images) carry no field schema
        if name in PADDED_DATASETS:
            if d.ndim != 2:
                raise SchemaError(
                    f"{fname}: dataset '{name}' has shape {d.shape} but padded objects must be "
                    f"2-D (n_jets, n_slots); re-create the file with padding and a 'valid' field"
                )
            if "valid" not in d.dtype.names:
                raise SchemaError(
                    f"{fname}: dataset '{name}' has no boolean 'valid' field marking real "
                    f"objects; add it (True = real object) when making the file"
                )
        elif name == jets_name and d.ndim != 1:
            raise SchemaError(
                f"{fname}: dataset '{name}' has shape {d.shape} but must be 1-D (one row per jet)"
            )
        expected = EXPECTED_FIELDS.get(name, {})
        for var in d.dtype.names:
            if var not in expected:
                continue
            want, got = _kind(expected[var]), _kind(d.dtype[var])
            if d.dtype[var].shape != () or want != got:
                raise SchemaError(
                    f"{fname}: dataset '{name}' variable '{var}' has dtype {d.dtype[var]} but lhcml "
                    f"expects a {_KIND_NAMES.get(want, want)} scalar ({np.dtype(expected[var])}); "
                    f"fix the dtype when writing the file"
                )


def check_values(
    f: h5py.File,
    variables: dict[str, list[str] | None] | None = None,
    allow_nan: Iterable[str] = DEFAULT_ALLOW_NAN,
    block_rows: int = 50_000,
) -> None:
    """Read the float variables block by block; raise on NaN/inf (only ``valid`` objects).

    Reading every block also detects truncated data chunks (``CorruptFileError``).
    """
    allow = set(allow_nan)
    dsets = datasets(f)
    groups = variables if variables is not None else {k: None for k in dsets}
    for name, var_list in groups.items():
        d = dsets[name]
        if d.dtype.names is None:
            continue
        names = var_list if var_list is not None else list(d.dtype.names)
        floats = [v for v in names if d.dtype[v].kind == "f" and v not in allow]
        if not floats:
            continue
        read = floats + (["valid"] if "valid" in d.dtype.names and d.ndim > 1 else [])
        for lo in range(0, d.shape[0], block_rows):
            hi = min(lo + block_rows, d.shape[0])
            block = read_fields(d, read, lo, hi, f.filename)
            valid = block["valid"] if "valid" in read else None
            for var in floats:
                x = block[var]
                bad = ~np.isfinite(x)
                if valid is not None:
                    bad &= valid
                if bad.any():
                    first = np.argwhere(bad)[0]
                    row = lo + int(first[0])
                    where = f"row {row}" + (f", slot {int(first[1])}" if len(first) > 1 else "")
                    raise SchemaError(
                        f"{f.filename}: dataset '{name}' variable '{var}' has {int(bad.sum())} "
                        f"NaN/inf values in rows {lo}-{hi} (first at {where}); fix the values "
                        f"upstream, select them away with a cut, or allow NaN for '{var}' "
                        f"(allow_nan)"
                    )


def check_file(
    path: str | Path,
    required: dict[str, list[str] | None] | None = None,
    allow_nan: Iterable[str] = DEFAULT_ALLOW_NAN,
    values: bool = True,
    jets_name: str = "jets",
) -> None:
    """Check a flat HDF5 file against the lhcml/ATLAS layout; raise one clear error if bad.

    Parameters
    ----------
    path
        The file.
    required
        ``{dataset: [variables]}`` the caller needs; ``None`` checks only what is present.
    allow_nan
        Float variables where NaN/inf is allowed (e.g. the label-hadron pT of light jets).
    values
        Also read the float variables (of ``required``, or all) to find NaN/inf and truncated
        data chunks. For 2-D datasets only ``valid`` entries are checked.
    jets_name
        The per-jet dataset.

    Raises
    ------
    FileNotFoundError, CorruptFileError, SchemaError
        Missing file; not HDF5, truncated or corrupt; missing variable (with the closest match),
        wrong dtype/shape, disagreeing first dimensions, NaN/inf where not allowed.
    """
    with open_h5(path) as f:
        try:
            check_structure(f, required, jets_name=jets_name)
            if values:
                check_values(f, required, allow_nan)
        except (KeyError, RuntimeError) as err:  # h5py raises these on broken object headers
            raise CorruptFileError(f"{path} is corrupt ({err}); re-copy or re-create it") from None
