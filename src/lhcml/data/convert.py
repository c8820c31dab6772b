"""ROOT flat ntuples -> lhcml/ATLAS flat HDF5, streamed in chunks with uproot; and back out to
columnar files for weaver-core (:func:`export_columnar`: parquet or a ROOT TTree, GeV units).

Input: a TTree (or RNTuple) with one entry per jet; scalar branches for the jet (``jet_pt``), jagged branches
(``std::vector<float>`` or an uproot record ``trk.d0``) for its tracks (``trk_d0``). Output: the
layout of :mod:`lhcml.data.schema` (``jets`` 1-D, ``tracks`` ``(n_jets, 40)`` with ``valid``).

A YAML mapping (``--config map.yaml``) names the branch of each output variable::

    tree: nominal            # optional (the command line's --tree wins)
    datasets:
      jets:
        pt: {branch: jet_pt_GeV, scale: 1000.0}   # GeV -> MeV
        HadronConeExclTruthLabelID: jet_truthflav
      tracks:
        d0: trk_d0
    n_objects: {tracks: 40}
    defaults: true           # also take schema variables found under their usual names

With ``defaults`` (the default), a schema variable ``X`` of ``jets`` is found as ``X``,
``jet_X`` or ``jet.X``; of ``tracks`` as ``trk_X``, ``trk.X``, ``track_X``, ``tracks_X``,
``tracks.X``; of ``flow`` as ``flow_X``, ``flow.X``, ``constituent_X``.
Objects beyond ``n_objects`` are dropped (keep the input order: sort upstream).
With ``per_event: true`` the input has one entry per event instead: jet branches are vectors
(``vector<float>``), track branches vectors of vectors, scalar branches (``eventNumber``) are
copied to each jet.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from lhcml.config import StrictModel, read_yaml, validate_config
from lhcml.data import schema
from lhcml.data.h5 import H5Writer
from lhcml.errors import ConfigError, CorruptFileError, SchemaError

_SCHEMA = {
    "jets": {**dict(schema.LARGE_R_JET_FIELDS), **dict(schema.JET_FIELDS)},
    "tracks": dict(schema.TRACK_FIELDS),
    "flow": dict(schema.FLOW_FIELDS),
}
_PREFIXES = {
    "jets": ["", "jet_", "jet."],
    "tracks": ["trk_", "trk.", "track_", "tracks_", "tracks."],
    "flow": ["flow_", "flow.", "constituent_", "constituents_"],
}
_DEFAULT_SLOTS = {"tracks": schema.N_TRACKS, "flow": schema.N_FLOW}


class BranchSpec(StrictModel):
    """One output variable: its input branch and a scale factor (e.g. 1000 for GeV -> MeV)."""

    branch: str
    scale: float = 1.0


class ConvertConfig(StrictModel):
    """Mapping of ROOT branches to the flat-file variables."""

    tree: str | None = None
    datasets: dict[str, dict[str, str | BranchSpec]] = Field(default_factory=dict)
    n_objects: dict[str, int] = Field(default_factory=dict)
    defaults: bool = True
    step_size: int = 50_000
    per_event: bool = False


def load_convert_config(path: str | Path | None) -> ConvertConfig:
    """Read the YAML mapping (``None``: defaults only)."""
    if path is None:
        return ConvertConfig()
    return validate_config(ConvertConfig, read_yaml(path), source=Path(path).name)


def _resolve(
    cfg: ConvertConfig, branches: list[str], source: str
) -> dict[str, dict[str, BranchSpec]]:
    """``{dataset: {variable: BranchSpec}}`` from explicit entries and default names."""
    out: dict[str, dict[str, BranchSpec]] = {}
    for ds, mapping in cfg.datasets.items():
        for var, spec in mapping.items():
            spec = BranchSpec(branch=spec) if isinstance(spec, str) else spec
            if spec.branch not in branches:
                close = difflib.get_close_matches(spec.branch, branches, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise SchemaError(
                    f"{source}: branch '{spec.branch}' (mapped to {ds}.{var}) does not exist; "
                    f"{hint}branches: {', '.join(branches)}"
                )
            out.setdefault(ds, {})[var] = spec
    if cfg.defaults:
        taken = {s.branch for m in out.values() for s in m.values()}
        for ds, fields in _SCHEMA.items():
            for var in fields:
                if var in out.get(ds, {}):
                    continue
                for prefix in _PREFIXES[ds]:
                    name = prefix + var
                    if name in branches and name not in taken:
                        out.setdefault(ds, {})[var] = BranchSpec(branch=name)
                        taken.add(name)
                        break
    if "jets" not in out:
        raise SchemaError(
            f"{source}: no jet variables found (looked for schema names such as 'pt', 'jet_pt'); "
            f"map branches to variables in a --config YAML (datasets: jets: {{pt: my_branch}}). "
            f"Branches: {', '.join(branches)}"
        )
    return out


def _dtype_for(ds: str, var: str, arr: Any) -> np.dtype:
    if var in _SCHEMA.get(ds, {}):
        return np.dtype(_SCHEMA[ds][var])
    kind = np.asarray(arr).dtype.kind if not hasattr(arr, "layout") else None
    if kind is None:
        import awkward as ak

        kind = np.asarray(ak.flatten(arr, axis=None)).dtype.kind
    return np.dtype({"f": "f4", "b": "?", "u": "i8", "i": "i8"}.get(kind, "f4"))


def _pad(arr: Any, n: int) -> np.ndarray:
    import awkward as ak

    padded = ak.fill_none(ak.pad_none(arr, n, axis=1, clip=True), 0)
    return ak.to_numpy(padded)


def convert_root(
    input_path: str | Path,
    output_path: str | Path,
    tree: str | None = None,
    config: str | Path | ConvertConfig | None = None,
    progress: bool = True,
) -> Path:
    """Convert a ROOT ntuple (one entry per jet) to a flat HDF5 file, atomically.

    Parameters
    ----------
    input_path, output_path
        The ROOT file and the HDF5 file to write (``<out>.tmp`` then renamed).
    tree
        TTree name (default: the config's ``tree``, else the only tree in the file).
    config
        A :class:`ConvertConfig` or a YAML file with the branch mapping (see module docs).
    progress
        Show a progress bar.

    Returns
    -------
    Path
        The output file.
    """
    try:
        import uproot
    except ImportError as err:  # pragma: no cover - uproot is in the io extra
        raise ImportError("ROOT conversion needs uproot: pip install 'lhcml[io]'") from err
    cfg = config if isinstance(config, ConvertConfig) else load_convert_config(config)
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    try:
        rootfile = uproot.open(input_path)
    except Exception as err:  # noqa: BLE001 - uproot raises many types for bad files
        raise CorruptFileError(
            f"{input_path} is not a readable ROOT file ({type(err).__name__}: {err}); check the file"
        ) from None
    with rootfile:
        trees = [
            k.split(";")[0]
            for k, c in rootfile.classnames().items()
            if c in ("TTree", "TNtuple", "ROOT::RNTuple")
        ]
        name = tree or cfg.tree or (trees[0] if len(trees) == 1 else None)
        if name is None or name not in trees:
            what = f"no tree '{name}'" if name else "several trees and no --tree"
            raise SchemaError(
                f"{input_path}: {what}; trees in the file: {', '.join(trees) or 'none'}"
            )
        ttree = rootfile[name]
        branches = list(ttree.keys())
        mapping = _resolve(cfg, branches, f"{input_path}:{name}")
        slots = {ds: cfg.n_objects.get(ds, _DEFAULT_SLOTS.get(ds, 40)) for ds in mapping}
        wanted = sorted({s.branch for m in mapping.values() for s in m.values()})
        bar = _bar(progress, ttree.num_entries)
        with H5Writer(output_path, attrs={"source": input_path.name, "tree": name}) as writer:
            for chunk in ttree.iterate(wanted, step_size=cfg.step_size, library="ak"):
                if cfg.per_event:
                    chunk = _events_to_jets(chunk, mapping, f"{input_path}:{name}")
                writer.append(_convert_chunk(chunk, mapping, slots, f"{input_path}:{name}"))
                bar(len(chunk))
        bar(None)
    return Path(output_path)


def _bar(enabled: bool, total: int) -> Callable[[int | None], None]:
    if not enabled:
        return lambda n: None
    from tqdm.auto import tqdm

    pbar = tqdm(total=total, unit="jet", desc="convert")

    def update(n: int | None) -> None:
        if n is None:
            pbar.close()
        else:
            pbar.update(n)

    return update


def _get(chunk: Any, branch: str) -> Any:
    """A branch of an uproot chunk; ``a.b`` also finds field ``b`` of a record ``a`` (RNTuple)."""
    fields = chunk.fields
    if branch in fields:
        return chunk[branch]
    head, *rest = branch.split(".")
    out = chunk[head]
    for part in rest:
        out = out[part]
    return out


def _events_to_jets(chunk: Any, mapping: dict[str, dict[str, BranchSpec]], source: str) -> Any:
    """Per-event input (jet branches are vectors, track branches vectors of vectors) -> per jet.

    Scalar per-event branches mapped to jet variables (e.g. ``eventNumber``) are copied to
    every jet of the event.
    """
    import awkward as ak

    jet_branches = [s.branch for s in mapping["jets"].values()]
    jagged = [b for b in jet_branches if _get(chunk, b).ndim > 1]
    if not jagged:
        raise SchemaError(
            f"{source}: per_event is set but no jet branch is a vector (one entry per event "
            f"needs e.g. jet_pt as vector<float>)"
        )
    ref = _get(chunk, jagged[0])
    out = {}
    for b in dict.fromkeys(s.branch for m in mapping.values() for s in m.values()):
        a = _get(chunk, b)
        if a.ndim == 1:
            a = ak.broadcast_arrays(a, ref)[0]
        elif not np.array_equal(ak.to_numpy(ak.num(a, axis=1)), ak.to_numpy(ak.num(ref, axis=1))):
            raise SchemaError(
                f"{source}: branch '{b}' has a different number of jets per event than "
                f"'{jagged[0]}'"
            )
        out[b] = ak.flatten(a, axis=1)
    return ak.zip(out, depth_limit=1)


def _convert_chunk(
    chunk: Any, mapping: dict[str, dict[str, BranchSpec]], slots: dict[str, int], source: str
) -> dict[str, np.ndarray]:
    import awkward as ak

    n = len(chunk)
    out: dict[str, np.ndarray] = {}
    for ds, variables in mapping.items():
        arrays = {var: _get(chunk, spec.branch) for var, spec in variables.items()}
        jagged = {v: a for v, a in arrays.items() if a.ndim > 1}
        if ds == "jets":
            if jagged:
                v = next(iter(jagged))
                raise SchemaError(
                    f"{source}: jet variable '{v}' comes from the jagged branch "
                    f"'{variables[v].branch}'; the input must have one entry per jet"
                )
            fields = [(v, _dtype_for(ds, v, a)) for v, a in arrays.items()]
            table = np.zeros(n, dtype=_ordered(ds, fields))
            for v, a in arrays.items():
                table[v] = (
                    ak.to_numpy(a) * variables[v].scale
                    if variables[v].scale != 1
                    else ak.to_numpy(a)
                )
            out[ds] = table
            continue
        if not jagged:
            raise SchemaError(
                f"{source}: variables of '{ds}' must come from jagged (vector) branches"
            )
        counts = {v: ak.to_numpy(ak.num(a, axis=1)) for v, a in arrays.items()}
        ref_var, ref = next(iter(counts.items()))
        for v, c in counts.items():
            if not np.array_equal(c, ref):
                raise SchemaError(
                    f"{source}: branches '{variables[v].branch}' and '{variables[ref_var].branch}' "
                    f"of '{ds}' have different numbers of objects per jet"
                )
        m = slots[ds]
        fields = [(v, _dtype_for(ds, v, a)) for v, a in arrays.items() if v != "valid"]
        table = np.zeros((n, m), dtype=_ordered(ds, [*fields, ("valid", np.dtype("?"))]))
        valid = np.arange(m)[None, :] < np.minimum(ref, m)[:, None]
        for v, a in arrays.items():
            if v == "valid":
                continue
            x = _pad(a, m)
            table[v] = np.where(valid, x * variables[v].scale, 0)
        table["valid"] = valid
        out[ds] = table
    return out


def _ordered(ds: str, fields: list[tuple[str, np.dtype]]) -> np.dtype:
    """Schema fields in schema order, then extra fields in mapping order."""
    order = list(_SCHEMA.get(ds, {}))
    known = sorted((f for f in fields if f[0] in order), key=lambda f: order.index(f[0]))
    extra = [f for f in fields if f[0] not in order]
    return np.dtype(known + extra)


# --- the other direction: flat HDF5 -> columnar files for weaver-core ------------------------

#: output formats of :func:`export_columnar` and their file suffixes
EXPORT_FORMATS = {"parquet": (".parquet", ".pq"), "root": (".root",)}


def _to_gev(name: str, values: np.ndarray) -> np.ndarray:
    """MeV -> GeV (1/MeV -> 1/GeV) by the schema's unit of ``name``; other fields unchanged."""
    unit = schema.FIELD_UNITS.get(name)
    if unit == "MeV":
        return values * np.float32(1e-3)
    if unit == "1/MeV":
        return values * np.float32(1e3)
    return np.ascontiguousarray(values)  # a field of a structured array is a strided view


def export_columnar(
    input_path: str | Path,
    output_path: str | Path,
    fmt: str | None = None,
    tree: str = "Events",
    batch_size: int = 100_000,
    progress: bool = True,
) -> Path:
    """Write a flat HDF5 file as parquet or a ROOT TTree with one branch (column) per field.

    The layout weaver-core reads: one entry per jet; ``jet_<field>`` scalars from the jets
    dataset; ``<dataset>_<field>`` variable-length lists from each per-jet object dataset
    (``tracks``, ``flow``, ...; only ``valid`` objects, in the stored order; ROOT: with the
    counter branch ``n<dataset>``). Energies and momenta in GeV (fields the schema gives in MeV are
    divided by 1000, ``1/MeV`` multiplied), lengths in mm, angles in rad. Per-event datasets and
    non-scalar fields (images) are not written. Written atomically (temporary name, then rename).

    Parameters
    ----------
    input_path
        An lhcml (or ATLAS dumper) flat HDF5 file.
    output_path
        ``*.parquet`` or ``*.root``.
    fmt
        ``"parquet"`` or ``"root"`` (default: from the suffix of ``output_path``).
    tree
        TTree name (ROOT).
    batch_size
        Jets per read/write step (memory bound).
    """
    import awkward as ak
    import h5py

    from lhcml.atomic import atomic_path
    from lhcml.data.checks import open_h5, read_fields

    src, dst = Path(input_path), Path(output_path)
    if fmt is None:
        fmt = next((k for k, sfx in EXPORT_FORMATS.items() if dst.suffix.lower() in sfx), None)
        if fmt is None:
            raise ConfigError(
                f"cannot tell the output format of {dst.name}: name it *.parquet or *.root, or give "
                f"--to parquet|root"
            )
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown output format '{fmt}' (valid: {', '.join(EXPORT_FORMATS)})")
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:  # pragma: no cover - in the io extra
            raise ImportError("parquet output needs pyarrow: pip install 'lhcml[io]'") from err
    else:
        try:
            import uproot
        except ImportError as err:  # pragma: no cover - in the io extra
            raise ImportError("ROOT output needs uproot: pip install 'lhcml[io]'") from err
    with open_h5(src) as f, atomic_path(dst) as tmp:
        if "jets" not in f:
            raise SchemaError(f"{src} has no 'jets' dataset: not a flat jets file")
        n = len(f["jets"])
        objects = [
            g for g, d in f.items()
            if g != "jets" and g not in schema.PER_EVENT_DATASETS and isinstance(d, h5py.Dataset)
            and d.dtype.names and d.ndim == 2 and len(d) == n and "valid" in d.dtype.names
        ]  # fmt: skip

        def scalar(dt: np.dtype) -> list[str]:
            return [k for k in dt.names if dt.fields[k][0].shape == () and k != "valid"]

        jet_fields = scalar(f["jets"].dtype)
        obj_fields = {g: scalar(f[g].dtype) for g in objects}
        bar = _bar(progress, n)
        writer = None
        out_file = None
        try:
            if fmt == "root":
                out_file = uproot.recreate(tmp)
            for a in range(0, max(n, 1), batch_size):
                b = min(a + batch_size, n)
                jets = read_fields(f["jets"], jet_fields, a, b, src)
                cols: dict[str, Any] = {f"jet_{k}": _to_gev(k, jets[k]) for k in jet_fields}
                for g in objects:
                    arr = read_fields(f[g], [*obj_fields[g], "valid"], a, b, src)
                    valid = arr["valid"]
                    counts = valid.sum(axis=1)
                    rec = {k: ak.unflatten(_to_gev(k, arr[k][valid]), counts) for k in obj_fields[g]}
                    if fmt == "root":  # one record per dataset: branches g_<field> + counter n<g>
                        cols[g] = ak.zip(rec)
                    else:
                        cols.update({f"{g}_{k}": v for k, v in rec.items()})
                if fmt == "root":
                    if a == 0:  # a TTree (uproot's default for new trees may be an RNTuple)
                        ttree = out_file.mktree(tree, {
                            k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in cols.items()
                        })  # fmt: skip
                    ttree.extend(cols)
                else:
                    table = ak.to_arrow_table(ak.zip(cols, depth_limit=1), extensionarray=False)
                    if writer is None:
                        meta = {b"energy_unit": b"GeV", b"length_unit": b"mm", b"producer": b"lhcml"}
                        table = table.replace_schema_metadata(meta)
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table.cast(writer.schema))
                bar(b - a)
        finally:  # closed before atomic_path renames (or, on an error, removes) the file
            if writer is not None:
                writer.close()
            if out_file is not None:
                out_file.close()
            bar(None)
    return dst


__all__ = ["ConvertConfig", "BranchSpec", "EXPORT_FORMATS", "convert_root", "export_columnar",
           "load_convert_config", "ConfigError"]
