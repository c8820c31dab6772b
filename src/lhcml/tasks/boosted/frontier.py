"""Decorrelation frontier: background rejection at 50 % signal efficiency vs 1/JSD50.

For each tagger (nominal, adversarially trained and DisCo-trained at several λ) and for the
DDT-τ21 and plain-τ21 baselines, :func:`frontier_points` computes R50 and 1/JSD50 of the
background mass distribution (:mod:`lhcml.metrics.decorrelation`, binning convention
there: 50 equal bins over the background mass range unless edges are given) from prediction
files. :func:`frontier_plot` draws them with :class:`lhcml.plots.rejection_vs_var.FrontierPlot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lhcml.errors import SchemaError

if TYPE_CHECKING:
    from lhcml.tasks.boosted.ddt import DDT


def read_predictions(
    files: Sequence[str | Path], fields: Sequence[str], dataset: str = "jets"
) -> np.ndarray:
    """Concatenate ``fields`` of ``dataset`` from prediction files (paths, globs or directories;
    clear error if a field is missing)."""
    from numpy.lib import recfunctions as rfn

    from lhcml.data.files import expand_inputs
    from lhcml.data.h5 import open_h5

    parts = []
    for p in expand_inputs(files, context="(prediction files)"):
        with open_h5(p) as f:
            names = f[dataset].dtype.names
            missing = [x for x in fields if x not in names]
            if missing:
                raise SchemaError(
                    f"{p}:{dataset} lacks {missing} (run `lhcml predict` / `lhcml jets "
                    "substructure` first)"
                )
            parts.append(rfn.repack_fields(f[dataset].fields(list(fields))[:]))
    return np.concatenate(parts)


def frontier_point(
    disc: np.ndarray, is_sig: np.ndarray, is_bkg: np.ndarray, mass: np.ndarray,
    weights: np.ndarray | None = None, bins: int | np.ndarray = 50,
) -> tuple[float, float]:
    """``(R50, 1/JSD50)`` of one discriminant (larger = more signal-like).

    1/JSD50 is NaN when no background jet passes (or fails) the 50 % cut.
    """
    from lhcml.metrics.decorrelation import inverse_jsd_at_efficiency, r50

    w = np.ones_like(disc, dtype=np.float64) if weights is None else np.asarray(weights, np.float64)
    rej = r50(disc[is_sig], disc[is_bkg], w[is_sig], w[is_bkg])
    try:
        ijsd = inverse_jsd_at_efficiency(
            disc[is_sig], disc[is_bkg], mass[is_bkg], 0.5, bins, w[is_sig], w[is_bkg]
        )
    except ValueError:  # no background jet passes (or fails) the cut: undefined
        ijsd = float("nan")
    return float(rej), float(ijsd)


def frontier_points(
    files: Sequence[str | Path],
    taggers: Mapping[str, str],
    signal: str = "top",
    background: str = "qcd",
    mass_var: str = "mass",
    weight_var: str | None = None,
    baselines: bool = True,
    bins: int | np.ndarray = 50,
    ddt: DDT | None = None,
    ddt_fit_range: tuple[float, float] = (1.5, 4.0),
) -> list[dict[str, float | str]]:
    """R50 and 1/JSD50 per tagger (and the τ21 / DDT-τ21 baselines) from prediction files.

    Parameters
    ----------
    files
        Prediction files (``jets`` with ``<prefix>_<output>`` columns and the mass).
    taggers
        ``{label: column prefix}``, e.g. ``{"PFN": "pfn", "PFN DisCo λ=10": "pfn_disco10"}``.
    signal, background
        Classes of the ``boosted`` label scheme.
    mass_var, weight_var
        Jet fields for the mass (MeV) and the per-jet weight.
    baselines
        Add τ21 and DDT-τ21 (needs ``Tau21_wta`` from ``lhcml jets substructure``).
    ddt
        A DDT fitted beforehand, e.g. by :func:`fit_ddt_files` on a large independent background
        sample (recommended); ``None``: fitted on the background of ``files`` in ``ddt_fit_range``.
    """
    from lhcml.labels import get_scheme
    from lhcml.metrics.discriminants import discriminant
    from lhcml.tasks.boosted.ddt import fit_ddt

    scheme = get_scheme("boosted")
    sig_c, bkg_c = scheme.get(signal), scheme.get(background)
    cols = [f"{p}_{o}" for p in taggers.values() for o in (sig_c.output, bkg_c.output)]
    fields = [scheme.label_var, mass_var, "pt", *cols]
    if weight_var:
        fields.append(weight_var)
    if baselines:
        fields.append("Tau21_wta")
    data = read_predictions(files, list(dict.fromkeys(fields)))
    lab = data[scheme.label_var]
    sig_val = int(sig_c.cuts[0].split("==")[1])
    bkg_val = int(bkg_c.cuts[0].split("==")[1])
    is_sig, is_bkg = lab == sig_val, lab == bkg_val
    w = data[weight_var] if weight_var else None
    mass = np.asarray(data[mass_var], dtype=np.float64)
    rows = []
    for label, prefix in taggers.items():
        probs = {signal: data[f"{prefix}_{sig_c.output}"], background: data[f"{prefix}_{bkg_c.output}"]}
        disc = discriminant(probs, signal, {background: 1.0})
        r, j = frontier_point(disc, is_sig, is_bkg, mass, w, bins)
        rows.append({"tagger": label, "r50": r, "inv_jsd50": j})
    if baselines:
        tau21 = np.asarray(data["Tau21_wta"], dtype=np.float64)
        r, j = frontier_point(-tau21, is_sig, is_bkg, mass, w, bins)
        rows.append({"tagger": "τ21", "r50": r, "inv_jsd50": j})
        if ddt is None:
            ddt = fit_ddt(tau21[is_bkg], mass[is_bkg], data["pt"][is_bkg], None if w is None else w[is_bkg],
                          fit_range=ddt_fit_range)  # fmt: skip
        d = ddt.discriminant(tau21, mass, data["pt"])
        ok = np.isfinite(d)
        r, j = frontier_point(
            np.where(ok, d, -np.inf), is_sig, is_bkg, mass, w, bins
        )
        rows.append({"tagger": f"DDT τ21 (M={ddt.slope:.3f})", "r50": r, "inv_jsd50": j,
                     "ddt_slope": ddt.slope, "ddt_chi2_ndf": ddt.chi2 / max(ddt.ndf, 1)})  # fmt: skip
    return rows


def fit_ddt_files(
    files: Sequence[str | Path],
    background: str = "qcd",
    fit_range: tuple[float, float] = (1.5, 4.0),
    weight_var: str | None = None,
    mass_var: str = "mass",
) -> DDT:
    """Fit the DDT slope on the ``background`` jets of ``files`` (``Tau21_wta``, mass, pT).

    Parameters
    ----------
    files
        Flat files with ``jets`` holding ``Tau21_wta`` (``lhcml jets substructure``).
    background
        Class of the ``boosted`` label scheme the fit uses.
    fit_range
        ρ' range of the linear fit.
    weight_var, mass_var
        Jets fields for the per-jet weight and the mass (MeV).
    """
    from lhcml.labels import get_scheme
    from lhcml.tasks.boosted.ddt import fit_ddt

    scheme = get_scheme("boosted")
    bkg_val = int(scheme.get(background).cuts[0].split("==")[1])
    fields = [scheme.label_var, mass_var, "pt", "Tau21_wta"] + ([weight_var] if weight_var else [])
    data = read_predictions(files, list(dict.fromkeys(fields)))
    data = data[data[scheme.label_var] == bkg_val]
    w = None if weight_var is None else data[weight_var]
    return fit_ddt(data["Tau21_wta"], data[mass_var], data["pt"], w, fit_range=fit_range)


def frontier_plot(rows: Sequence[Mapping[str, float | str]], path: str | Path) -> Path:
    """Draw the R50 vs 1/JSD50 frontier of :func:`frontier_points` rows and save it."""
    from lhcml.plots.rejection_vs_var import FrontierPlot

    plot = FrontierPlot()
    markers = {"τ21": "s", "DDT": "D"}
    for row in rows:
        name = str(row["tagger"])
        marker = next((m for k, m in markers.items() if name.startswith(k)), "o")
        plot.add(float(row["r50"]), float(row["inv_jsd50"]), name, marker=marker)
    return plot.save(path)
