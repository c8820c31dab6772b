"""Chunked, atomic rewrite of a flat file with a per-chunk transform (private helper)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def rewrite_file(
    path: str | Path,
    output: str | Path | None,
    transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    chunk_size: int = 5000,
    progress: bool = True,
    desc: str = "rewrite",
    require: tuple[str, ...] = ("jets", "flow"),
) -> Path:
    """Stream ``path`` in chunks of per-jet datasets through ``transform`` into ``output``.

    Per-event datasets (``events``) are copied unchanged. The output is written under a
    temporary name and renamed when complete, so ``output`` may equal ``path`` (in-place update)
    and a crash leaves neither a partial output nor a damaged input.
    """
    from tqdm import tqdm

    from lhcml.data import schema
    from lhcml.data.h5 import H5Writer, open_h5, read_attrs
    from lhcml.errors import SchemaError

    path = Path(path)
    output = Path(output) if output is not None else path
    f = open_h5(path)  # missing, not HDF5, truncated, locked: one clear error
    attrs = read_attrs(path)
    with f:
        for need in require:
            if need not in f:
                raise SchemaError(
                    f"{path} has no '{need}' dataset (datasets: {', '.join(f)}); this step needs "
                    "large-R jets with their constituents (lhcml simulate top|qcd_boosted)"
                )
        n = len(f["jets"])
        per_event = [k for k in f if k in schema.PER_EVENT_DATASETS or len(f[k]) != n]
        with H5Writer(output, attrs=attrs) as writer:  # renamed onto ``output`` (may be ``path``) at close
            first = True
            for start in tqdm(range(0, n, chunk_size), disable=not progress, desc=desc):
                stop = min(start + chunk_size, n)
                batch = transform({k: f[k][start:stop] for k in f if k not in per_event})
                for k in per_event:
                    batch[k] = f[k][:] if first else f[k][:0]
                writer.append(batch)
                first = False
    return output
