"""Boosted-tagging samples: the standard selection and flattening weights in (pT, mass).

* :func:`select_jets`: the top-tagging-benchmark style selection (leading large-R jets with
  ``550 < pT < 650`` GeV, ``|η| < 2``; configurable), optionally a mass window.
* :func:`flattening_weights`: per-jet weights that make each class's 2-D (pT, mass)
  distribution flat over the given bins (``target="flat"``) or equal to a reference class's
  (``target=<class index>``, e.g. the background pT reweighted to the signal's as in the ATLAS
  top-tagging open data). Weights are normalised to a mean of 1 per class; empty or out-of-range
  bins get weight 0, so jets outside the binning do not enter the training. Mass-decorrelated
  taggers are commonly trained with backgrounds flat in mass, so the network cannot learn the
  mass from the sample composition.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lhcml.errors import ConfigError

#: default binning (MeV) of the flattening weights
DEFAULT_PT_BINS = np.linspace(500e3, 700e3, 11)
DEFAULT_MASS_BINS = np.linspace(0.0, 300e3, 31)


def select_jets(
    jets: np.ndarray,
    pt_range: tuple[float, float] = (550e3, 650e3),
    abs_eta_max: float = 2.0,
    mass_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Boolean mask of the jets passing the boosted selection (MeV).

    Parameters
    ----------
    jets
        Large-R jets table (``pt``, ``eta``, ``mass``).
    pt_range
        Allowed pT range in MeV.
    abs_eta_max
        Maximum |η|.
    mass_range
        Optional mass window in MeV.
    """
    names = jets.dtype.names or ()
    need = ["pt", "eta"] + (["mass"] if mass_range is not None else [])
    missing = [n for n in need if n not in names]
    if missing:
        raise ConfigError(f"jets table lacks {missing} needed by the boosted selection")
    sel = (jets["pt"] > pt_range[0]) & (jets["pt"] < pt_range[1]) & (np.abs(jets["eta"]) < abs_eta_max)
    if mass_range is not None:
        sel &= (jets["mass"] > mass_range[0]) & (jets["mass"] < mass_range[1])
    return sel


def flattening_weights(
    pt: np.ndarray,
    mass: np.ndarray,
    labels: np.ndarray,
    pt_bins: Sequence[float] | np.ndarray = DEFAULT_PT_BINS,
    mass_bins: Sequence[float] | np.ndarray = DEFAULT_MASS_BINS,
    target: str | int = "flat",
    base_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per-jet weights flattening each class in (pT, mass), or matching a reference class.

    Parameters
    ----------
    pt, mass
        Jet pT and mass (same units as the bins, MeV by default).
    labels
        Integer class per jet.
    pt_bins, mass_bins
        Bin edges.
    target
        ``"flat"`` or the class index whose (pT, mass) distribution all classes are weighted to.
    base_weights
        Existing per-jet weights (e.g. ``mcEventWeight``) multiplied in.

    Returns
    -------
    np.ndarray
        ``(n_jets,)`` float32 weights, mean 1 over each class's jets inside the binning.
    """
    pt = np.asarray(pt, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    labels = np.asarray(labels)
    w0 = np.ones_like(pt) if base_weights is None else np.asarray(base_weights, dtype=np.float64)
    pt_bins, mass_bins = np.asarray(pt_bins, float), np.asarray(mass_bins, float)
    if np.any(np.diff(pt_bins) <= 0) or np.any(np.diff(mass_bins) <= 0):
        raise ConfigError("flattening bins must be strictly increasing")
    ipt = np.digitize(pt, pt_bins) - 1
    im = np.digitize(mass, mass_bins) - 1
    inside = (ipt >= 0) & (ipt < len(pt_bins) - 1) & (im >= 0) & (im < len(mass_bins) - 1)
    shape = (len(pt_bins) - 1, len(mass_bins) - 1)
    if target == "flat":
        ref = np.ones(shape)
    else:
        sel = (labels == int(target)) & inside
        if not sel.any():
            raise ConfigError(f"no jets of reference class {target} inside the flattening bins")
        ref, _, _ = np.histogram2d(pt[sel], mass[sel], [pt_bins, mass_bins], weights=w0[sel])
    out = np.zeros_like(pt)
    for c in np.unique(labels):
        sel = (labels == c) & inside
        if not sel.any():
            continue
        h, _, _ = np.histogram2d(pt[sel], mass[sel], [pt_bins, mass_bins], weights=w0[sel])
        ratio = np.divide(ref, h, out=np.zeros(shape), where=h > 0)
        wc = w0[sel] * ratio[ipt[sel], im[sel]]
        mean = wc.mean()
        out[sel] = wc / mean if mean > 0 else 0.0
    return out.astype(np.float32)


def add_flattening_weights(
    path: str | Path,
    output: str | Path | None = None,
    field: str = "flat_weight",
    target: str | int = "flat",
    pt_bins: Sequence[float] | np.ndarray = DEFAULT_PT_BINS,
    mass_bins: Sequence[float] | np.ndarray = DEFAULT_MASS_BINS,
    label_var: str = "R10TruthLabel",
    base_weight: str | None = None,
    progress: bool = True,
) -> Path:
    """Add a :func:`flattening_weights` field to the ``jets`` of a file (atomic rewrite).

    Use it as ``data.weight_field`` in a training config.
    """
    from numpy.lib import recfunctions as rfn

    from lhcml.data.h5 import open_h5
    from lhcml.errors import SchemaError
    from lhcml.tasks.boosted._io import rewrite_file

    with open_h5(path) as f:
        names = f["jets"].dtype.names
        need = ["pt", "mass", label_var] + ([base_weight] if base_weight else [])
        missing = [n for n in need if n not in names]
        if missing:
            raise SchemaError(f"{path}:jets lacks {missing} needed for flattening weights")
        jets = f["jets"].fields(need)[:]
    w = flattening_weights(
        jets["pt"], jets["mass"], jets[label_var], pt_bins, mass_bins, target,
        None if base_weight is None else jets[base_weight],
    )
    pos = [0]

    def transform(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        j = batch["jets"]
        n = len(j)
        keep = [x for x in j.dtype.names if x != field]
        j = rfn.repack_fields(j[keep])
        batch["jets"] = rfn.append_fields(j, field, w[pos[0] : pos[0] + n], usemask=False)
        pos[0] += n
        return batch

    return rewrite_file(path, output, transform, progress=progress, desc="weights", require=("jets",))
