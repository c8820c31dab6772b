"""Reading prediction files for ``lhcml evaluate``: file patterns, tagger-column discovery and
the selection of a sample's rows (one pass per file, only the needed columns)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lhcml.errors import CorruptFileError, SchemaError
from lhcml.evaluation.config import EvaluateConfig, SampleConfig, TaggerConfig


def expand_files(patterns: list[str], sample: str = "") -> list[Path]:
    """The files of a sample: :func:`lhcml.data.files.expand_inputs` (``~``, globs, directories,
    sorted, de-duplicated).

    Raises
    ------
    InputNotFoundError
        If a pattern matches no file (a :class:`ConfigError`).
    """
    from lhcml.data.files import expand_inputs

    where = f"of sample '{sample}' in the evaluate config" if sample else "in the evaluate config"
    return expand_inputs(patterns, context=where)


def tagger_columns(cfg: EvaluateConfig, tagger: TaggerConfig, names: tuple[str, ...],
                   source: Path) -> list[str]:
    """The columns of ``tagger`` among ``names`` (its score, or its ``<name>_<output>`` columns).

    Raises
    ------
    SchemaError
        If the score column or the signal-class column is missing (naming what ``source`` has).
    """
    from lhcml.labels import get_scheme

    if tagger.score is not None:
        if tagger.score not in names:
            raise SchemaError(
                f"score column '{tagger.score}' of tagger '{tagger.name}' is missing in {source} "
                f"(dataset '{cfg.dataset}' has: {', '.join(names)})"
            )
        return [tagger.score]
    scheme = get_scheme(cfg.label_scheme)
    wanted = [f"{tagger.name}_{c.output}" for c in scheme.classes]
    cols = [c for c in wanted if c in names]
    sig_col = f"{tagger.name}_{scheme.get(cfg.signal).output}"
    if sig_col not in cols:
        avail = sorted(n for n in names if "_p" in n)
        raise SchemaError(
            f"tagger '{tagger.name}': column '{sig_col}' is missing in {source} "
            f"(dataset '{cfg.dataset}'); available tagger columns: {', '.join(avail) or 'none'}. "
            "Run `lhcml predict` for this tagger or fix the tagger name."
        )
    return cols


def read_sample(cfg: EvaluateConfig, sample: SampleConfig) -> tuple[np.ndarray, list[Path]]:
    """Read the needed columns of a sample's files and apply its selection.

    Parameters
    ----------
    cfg : EvaluateConfig
        The config.
    sample : SampleConfig
        The sample.

    Returns
    -------
    tuple[np.ndarray, list[Path]]
        Structured array of the selected rows (only the needed fields) and the files read.

    Raises
    ------
    SchemaError
        If a file lacks the dataset, a needed variable or a tagger's columns.
    CorruptFileError
        If a file cannot be opened as HDF5.
    """
    from lhcml.data.cuts import Cuts
    from lhcml.data.h5 import open_h5
    from lhcml.labels import get_scheme

    scheme = get_scheme(cfg.label_scheme)
    files = expand_files(sample.files, sample.name)
    cuts = Cuts.from_list(sample.cuts)
    parts: list[np.ndarray] = []
    read_files: list[Path] = []
    n_read = 0
    columns: list[str] | None = None
    for path in files:
        with open_h5(path) as f:
            if cfg.dataset not in f:
                raise SchemaError(
                    f"{path} has no dataset '{cfg.dataset}' (has: {', '.join(f.keys())}); "
                    "set 'dataset' in the evaluate config"
                )
            ds = f[cfg.dataset]
            names = ds.dtype.names or ()
            needed = [scheme.label_var]
            if sample.resolved_pt_range() is not None or sample.resolved_pt_bins() is not None:
                needed.append(cfg.pt_var)
            if sample.abs_eta_max is not None:
                needed.append("eta")
            if cfg.weight:
                needed.append(cfg.weight)
            if cfg.mass_var:
                needed.append(cfg.mass_var)
            needed += [v.var for v in cfg.rejection_vs]
            needed += cuts.variables
            missing = [v for v in dict.fromkeys(needed) if v not in names]
            if missing:
                raise SchemaError(
                    f"{path} dataset '{cfg.dataset}' lacks {', '.join(missing)} "
                    f"needed by the evaluate config (available: {', '.join(names)})"
                )
            tag_cols: list[str] = []
            for t in cfg.taggers:
                tag_cols += tagger_columns(cfg, t, names, path)
            cols = list(dict.fromkeys(needed + tag_cols))
            if columns is None:
                columns = cols
            elif cols != columns:
                extra = sorted(set(columns) ^ set(cols))
                raise SchemaError(
                    f"{path} has a different set of tagger columns than {files[0]} "
                    f"(differs in: {', '.join(extra)}); evaluate files from the same prediction run"
                )
            n = ds.shape[0]
            if sample.max_jets is not None:
                n = min(n, max(sample.max_jets - n_read, 0))
            try:
                arr = ds.fields(columns)[:n]
            except (OSError, RuntimeError) as err:
                raise CorruptFileError(f"cannot read {path}:{cfg.dataset} ({err})") from None
        arr = np.asarray(arr)
        mask = cuts(arr) if cuts else np.ones(len(arr), bool)
        pt_range = sample.resolved_pt_range()
        if pt_range is not None:
            pt = arr[cfg.pt_var] * cfg.pt_scale
            mask &= (pt >= pt_range[0]) & (pt < pt_range[1])
        if sample.abs_eta_max is not None:
            mask &= np.abs(arr["eta"]) < sample.abs_eta_max
        parts.append(arr[mask])
        read_files.append(path)
        n_read += n
        if sample.max_jets is not None and n_read >= sample.max_jets:
            break
    data = np.concatenate(parts) if parts else np.zeros(0)
    for t in cfg.taggers:
        for c in tagger_columns(cfg, t, data.dtype.names, files[0]):
            bad = ~np.isfinite(data[c])
            if bad.any():
                raise SchemaError(
                    f"tagger column '{c}' has {int(bad.sum())} non-finite values in sample "
                    f"'{sample.name}'; check the prediction step"
                )
    return data, read_files
