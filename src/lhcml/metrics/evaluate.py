"""The evaluation driver behind ``lhcml evaluate CONFIG``.

Reads prediction files (flat HDF5 with the tagger outputs written back as
``<tagger>_<output>`` columns, docs/data.md), computes every metric of :mod:`lhcml.metrics` per
sample and tagger, writes ``results.json`` / ``results.yaml`` (a machine-readable table) and the
plots. Works for any label scheme of ``labels.yaml``: flavour tagging (signal ``bjets``,
backgrounds ``cjets``/``ujets``, fractions f_c), boosted tagging (``top`` vs ``qcd``, with the
mass-decorrelation metrics when ``mass_var`` is set) and photon ID (``prompt`` vs ``fake`` in
the ``photons`` dataset).

Example config::

    label_scheme: flavour
    signal: bjets
    taggers: [GN2, {name: DL1r, fractions: {cjets: 0.018, ujets: 0.982}}]
    reference: DL1r
    fractions: {cjets: 0.2, ujets: 0.8}
    weight: mcEventWeight          # optional
    samples:
      - {name: ttbar, kind: ttbar, files: ["preds/ttbar_*.h5"]}
      - {name: zprime, kind: zprime, files: ["preds/zprime_*.h5"]}
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from lhcml.config import StrictModel, load_config
from lhcml.errors import ConfigError, CorruptFileError, SchemaError
from lhcml.metrics.classification import accuracy, auc
from lhcml.metrics.decorrelation import (
    DEFAULT_JSD_BINS,
    inverse_jsd_at_efficiency,
    mass_histograms_pass_fail,
)
from lhcml.metrics.discriminants import DEFAULT_FRACTIONS, discriminant
from lhcml.metrics.rejection import MODES, rejection_at_efficiency, rejection_vs_var
from lhcml.metrics.roc import roc_curve
from lhcml.metrics.significance import best_cut
from lhcml.metrics.working_points import DEFAULT_WORKING_POINTS, working_points

#: sample presets: pT range and rejection-vs-pT bins in GeV (ATLAS flavour-tagging conventions)
SAMPLE_PRESETS: dict[str, dict[str, Any]] = {
    "ttbar": {
        "pt_range": (20.0, 250.0),
        "pt_bins": [20, 30, 40, 60, 85, 110, 140, 175, 250],
        "text": "$t\\bar{t}$, $20 < p_\\mathrm{T} < 250$ GeV",
    },
    "zprime": {
        "pt_range": (250.0, 6000.0),
        "pt_bins": [250, 400, 600, 800, 1000, 1500, 2000, 3000, 4000, 6000],
        "text": "$Z'$, $250 < p_\\mathrm{T} < 6000$ GeV",
    },
    "generic": {"pt_range": None, "pt_bins": None, "text": ""},
}


class TaggerConfig(StrictModel):
    """One tagger to evaluate.

    ``name`` is the column prefix (``<name>_pb`` ...); ``score`` names a single column used
    directly as the discriminant instead (a BDT score, a cut-based tagger's output).
    """

    name: str
    label: str | None = None
    fractions: dict[str, float] | None = None
    score: str | None = None
    colour: str | None = None


class SampleConfig(StrictModel):
    """One test sample (files and its selection)."""

    name: str
    files: list[str] = Field(min_length=1)
    kind: Literal["ttbar", "zprime", "generic"] = "generic"
    pt_range: tuple[float, float] | None = None  # GeV
    abs_eta_max: float | None = None
    cuts: list[str] = Field(default_factory=list)
    pt_bins: list[float] | None = None  # GeV
    max_jets: int | None = Field(default=None, gt=0)
    text: str | None = None

    def resolved_pt_range(self) -> tuple[float, float] | None:
        """pT range in GeV: explicit, else the preset's."""
        return self.pt_range if self.pt_range is not None else SAMPLE_PRESETS[self.kind]["pt_range"]

    def resolved_pt_bins(self) -> list[float] | None:
        """Rejection-vs-pT bins in GeV: explicit, else the preset's."""
        return self.pt_bins if self.pt_bins is not None else SAMPLE_PRESETS[self.kind]["pt_bins"]


class BinnedVariable(StrictModel):
    """An extra variable to show rejection in bins of (as for pT), e.g. ``<μ>``.

    ``var`` is read from the evaluated dataset and multiplied by ``scale`` (file units to the
    units of ``bins``); ``label`` is the plot's x-axis label (default: ``var``).
    """

    var: str
    bins: list[float] = Field(min_length=2)
    label: str | None = None
    scale: float = 1.0

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b >= a for a, b in zip(v[1:], v[:-1], strict=False)):
            raise ValueError(f"bins must be strictly increasing, got {v}")
        return v


class PublishedValue(StrictModel):
    """A published rejection to show next to lhcml's numbers in the report (for context only:
    a different detector and simulation)."""

    label: str
    working_point: float = Field(gt=0, lt=1)
    rejection: dict[str, float]
    source: str
    sample: str | None = None  # None: shown for every sample


class EvaluateConfig(StrictModel):
    """Configuration of ``lhcml evaluate``."""

    title: str | None = None
    label_scheme: str = "flavour"
    dataset: str = "jets"
    signal: str = "bjets"
    backgrounds: list[str] | None = None
    taggers: list[TaggerConfig] = Field(min_length=1)
    reference: str | None = None
    fractions: dict[str, float] | None = None
    discriminant: Literal["auto", "log_ratio", "probability"] = "auto"
    working_points: list[float] = Field(default_factory=lambda: list(DEFAULT_WORKING_POINTS))
    weight: str | None = None
    pt_var: str = "pt"
    pt_scale: float = 1e-3  # file units (MeV) -> GeV
    rejection_vs_pt_wp: float | None = None  # default: the WP closest to 77 %
    rejection_vs_pt_modes: list[Literal["fixed_cut", "flat_per_bin"]] = Field(
        default_factory=lambda: list(MODES)
    )
    rejection_vs: list[BinnedVariable] = Field(default_factory=list)  # e.g. averageInteractionsPerCrossing
    fixed_sig_effs: list[float] = Field(default_factory=lambda: [0.3, 0.5])
    roc_sig_eff: tuple[float, float, int] = (0.4, 1.0, 121)
    significance: Literal["ams", "asimov", "s_over_sqrt_b", "s_over_sqrt_s_plus_b"] | None = None
    mass_var: str | None = None
    mass_scale: float = 1e-3  # MeV -> GeV
    mass_bins: int | list[float] = DEFAULT_JSD_BINS
    samples: list[SampleConfig] = Field(min_length=1)
    published: list[PublishedValue] = Field(default_factory=list)
    output_dir: str = "evaluation"
    plots: bool = True
    plot_format: Literal["png", "svg", "pdf"] = "png"

    @field_validator("taggers", mode="before")
    @classmethod
    def _names_to_taggers(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v

    @field_validator("working_points", "fixed_sig_effs")
    @classmethod
    def _effs_in_range(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not 0 < e < 1]
        if bad:
            raise ValueError(f"efficiencies must be in (0, 1), got {bad}")
        return v

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        from lhcml.labels import get_scheme

        scheme = get_scheme(self.label_scheme)
        scheme.get(self.signal)
        for b in self.backgrounds or []:
            scheme.get(b)
        names = [t.name for t in self.taggers]
        if len(set(names)) != len(names):
            raise ValueError(f"tagger names must be unique, got {names}")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference tagger '{self.reference}' is not among the taggers {names}")
        for fr in [self.fractions, *(t.fractions for t in self.taggers)]:
            for k in fr or {}:
                scheme.get(k)
        rvars = [v.var for v in self.rejection_vs]
        if len(set(rvars)) != len(rvars) or self.pt_var in rvars:
            raise ValueError(
                f"rejection_vs variables must be unique and differ from pt_var '{self.pt_var}' "
                f"(rejection vs pT is always made from pt_bins), got {rvars}"
            )
        snames = [s.name for s in self.samples]
        if len(set(snames)) != len(snames):
            raise ValueError(f"sample names must be unique, got {snames}")
        return self


# --------------------------------------------------------------------------------------------
# reading


def expand_files(patterns: list[str]) -> list[Path]:
    """Expand glob patterns (sorted, de-duplicated); error if a pattern matches nothing.

    Parameters
    ----------
    patterns : list[str]
        Paths or glob patterns.

    Returns
    -------
    list[Path]
        The files.

    Raises
    ------
    ConfigError
        If a pattern matches no file.
    """
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(os.path.expanduser(pat)))
        if not hits:
            raise ConfigError(f"no file matches '{pat}' (check the path in the evaluate config)")
        out.extend(Path(h) for h in hits)
    return list(dict.fromkeys(out))


def _tagger_columns(cfg: EvaluateConfig, tagger: TaggerConfig, names: tuple[str, ...],
                    source: Path) -> list[str]:
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
    import h5py

    from lhcml.data.cuts import Cuts
    from lhcml.labels import get_scheme

    scheme = get_scheme(cfg.label_scheme)
    files = expand_files(sample.files)
    cuts = Cuts.from_list(sample.cuts)
    parts: list[np.ndarray] = []
    read_files: list[Path] = []
    n_read = 0
    columns: list[str] | None = None
    for path in files:
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise CorruptFileError(f"cannot open {path} as HDF5 ({err}); is it truncated?") from None
        with f:
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
                tag_cols += _tagger_columns(cfg, t, names, path)
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
        for c in _tagger_columns(cfg, t, data.dtype.names, files[0]):
            bad = ~np.isfinite(data[c])
            if bad.any():
                raise SchemaError(
                    f"tagger column '{c}' has {int(bad.sum())} non-finite values in sample "
                    f"'{sample.name}'; check the prediction step"
                )
    return data, read_files


# --------------------------------------------------------------------------------------------
# metrics


def _fractions(cfg: EvaluateConfig, tagger: TaggerConfig, present: list[str]) -> dict[str, float]:
    if tagger.fractions is not None:
        return dict(tagger.fractions)
    if cfg.fractions is not None:
        return dict(cfg.fractions)
    if cfg.label_scheme == "flavour" and cfg.signal in DEFAULT_FRACTIONS:
        return dict(DEFAULT_FRACTIONS[cfg.signal])
    bkg_present = [c for c in present if c != cfg.signal]
    if len(bkg_present) == 1:
        return {bkg_present[0]: 1.0}
    raise ConfigError(
        f"tagger '{tagger.name}' has outputs for several backgrounds ({', '.join(bkg_present)}): "
        "give 'fractions' (background class -> fraction, summing to 1) in the evaluate config"
    )


def tagger_discriminant(
    cfg: EvaluateConfig, tagger: TaggerConfig, data: np.ndarray
) -> tuple[np.ndarray, str]:
    """The discriminant of one tagger and a description of how it was built.

    Parameters
    ----------
    cfg : EvaluateConfig
        The config.
    tagger : TaggerConfig
        The tagger.
    data : np.ndarray
        Structured array with the tagger's columns.

    Returns
    -------
    tuple[np.ndarray, str]
        (discriminant, description such as ``ln(pb/(0.2 pc + 0.8 pu))``).
    """
    from lhcml.labels import get_scheme

    if tagger.score is not None:
        return np.asarray(data[tagger.score], dtype=np.float64), tagger.score
    scheme = get_scheme(cfg.label_scheme)
    names = data.dtype.names or ()
    probs = {
        c.name: data[f"{tagger.name}_{c.output}"]
        for c in scheme.classes
        if f"{tagger.name}_{c.output}" in names
    }
    sig_out = scheme.get(cfg.signal).output
    mode = cfg.discriminant
    if mode == "auto":
        mode = "log_ratio" if len(probs) > 1 else "probability"
    if mode == "probability":
        return np.asarray(probs[cfg.signal], dtype=np.float64), f"{tagger.name}_{sig_out}"
    fr = _fractions(cfg, tagger, list(probs))
    desc = " + ".join(f"{v:g} {scheme.get(k).output}" for k, v in fr.items() if v)
    return discriminant(probs, cfg.signal, fr), f"ln({sig_out} / ({desc}))"


def _clean(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def evaluate_sample(cfg: EvaluateConfig, sample: SampleConfig, data: np.ndarray) -> dict[str, Any]:
    """All metrics of one sample (no plots, no I/O).

    Parameters
    ----------
    cfg : EvaluateConfig
        The config.
    sample : SampleConfig
        The sample.
    data : np.ndarray
        Selected rows from :func:`read_sample`.

    Returns
    -------
    dict
        JSON-friendly results; also holds the arrays needed for plots under the private key
        ``_arrays`` (removed before writing).
    """
    from lhcml.labels import get_scheme

    scheme = get_scheme(cfg.label_scheme)
    from lhcml.data.cuts import Cuts

    masks = {c.name: Cuts.from_list(list(c.cuts))(data) for c in scheme.classes}
    n_jets = {k: int(m.sum()) for k, m in masks.items() if m.any()}
    if n_jets.get(cfg.signal, 0) == 0:
        raise SchemaError(
            f"sample '{sample.name}' has no {cfg.signal} ({scheme.label_var} selection) after its "
            f"cuts; classes present: {n_jets or 'none'}"
        )
    if cfg.backgrounds is not None:
        bkgs = [b for b in cfg.backgrounds if n_jets.get(b, 0) > 0]
        if not bkgs:
            raise SchemaError(f"sample '{sample.name}' has none of the backgrounds {cfg.backgrounds}")
    else:
        bkgs = [c.name for c in scheme.classes if c.name != cfg.signal and n_jets.get(c.name, 0)]
    if not bkgs:
        raise SchemaError(f"sample '{sample.name}' has no background jets, only {cfg.signal}")
    w = np.asarray(data[cfg.weight], dtype=np.float64) if cfg.weight else None
    if w is not None and not np.all(np.isfinite(w)):
        raise SchemaError(f"weight column '{cfg.weight}' has non-finite values in '{sample.name}'")
    ws = None if w is None else w[masks[cfg.signal]]
    wb = {b: None if w is None else w[masks[b]] for b in bkgs}
    pt_gev = data[cfg.pt_var] * cfg.pt_scale if cfg.pt_var in (data.dtype.names or ()) else None
    mass = (
        np.asarray(data[cfg.mass_var], dtype=np.float64) * cfg.mass_scale if cfg.mass_var else None
    )
    grid = np.linspace(*cfg.roc_sig_eff[:2], int(cfg.roc_sig_eff[2]))
    wp_for_pt = cfg.rejection_vs_pt_wp
    if wp_for_pt is None:
        wp_for_pt = min(cfg.working_points, key=lambda e: abs(e - 0.77))
    pt_bins = sample.resolved_pt_bins()
    out: dict[str, Any] = {
        "n_jets": n_jets,
        "sum_weights": (
            {k: float(w[m].sum()) for k, m in masks.items() if m.any()} if w is not None else None
        ),
        "backgrounds": bkgs,
        "taggers": {},
        "_arrays": {"disc": {}, "masks": masks, "w": w, "pt": pt_gev, "mass": mass, "rocs": {},
                    "binned": {}, "binned_vs": {}},
    }
    labels_int = np.full(len(data), -1)
    for i, c in enumerate(scheme.classes):
        labels_int[masks[c.name]] = i
    for t in cfg.taggers:
        disc, desc = tagger_discriminant(cfg, t, data)
        ds = disc[masks[cfg.signal]]
        db = {b: disc[masks[b]] for b in bkgs}
        res: dict[str, Any] = {"label": t.label or t.name, "discriminant": desc}
        wps = working_points(ds, db, cfg.working_points, ws, wb)
        res["working_points"] = [wp.to_dict() for wp in wps]
        res["auc"] = {b: _clean(auc(ds, db[b], ws, wb[b])) for b in bkgs}
        res["rejection_at"] = {}
        for e in cfg.fixed_sig_effs:
            entry = {}
            for b in bkgs:
                r, err = rejection_at_efficiency(ds, db[b], e, ws, wb[b])
                entry[b] = {"rejection": _clean(r), "rejection_err": _clean(err)}
            res["rejection_at"][f"{e:g}"] = entry
        rocs = {b: roc_curve(ds, db[b], grid, ws, wb[b]) for b in bkgs}
        res["roc"] = {b: r.to_dict() for b, r in rocs.items()}
        out["_arrays"]["rocs"][t.name] = rocs
        if pt_gev is not None and pt_bins:
            res["rejection_vs_pt"] = {}
            out["_arrays"]["binned"][t.name] = {}
            for b in bkgs:
                res["rejection_vs_pt"][b] = {}
                for mode in cfg.rejection_vs_pt_modes:
                    br = rejection_vs_var(
                        ds, db[b], pt_gev[masks[cfg.signal]], pt_gev[masks[b]], pt_bins,
                        wp_for_pt, mode, ws, wb[b],
                    )
                    res["rejection_vs_pt"][b][mode] = br.to_dict()
                    out["_arrays"]["binned"][t.name][(b, mode)] = br
        if cfg.rejection_vs:
            # the extra binned variables (e.g. <μ>): same working point and modes as for pT
            res["rejection_vs"] = {}
            out["_arrays"]["binned_vs"][t.name] = {}
            for rv in cfg.rejection_vs:
                x = np.asarray(data[rv.var], dtype=np.float64) * rv.scale
                res["rejection_vs"][rv.var] = {}
                for b in bkgs:
                    res["rejection_vs"][rv.var][b] = {}
                    for mode in cfg.rejection_vs_pt_modes:
                        br = rejection_vs_var(
                            ds, db[b], x[masks[cfg.signal]], x[masks[b]], rv.bins, wp_for_pt, mode,
                            ws, wb[b],
                        )
                        res["rejection_vs"][rv.var][b][mode] = br.to_dict()
                        out["_arrays"]["binned_vs"][t.name][(rv.var, b, mode)] = br
        if mass is not None:
            res["decorrelation"] = {}
            for b in bkgs:
                r50, r50_err = rejection_at_efficiency(ds, db[b], 0.5, ws, wb[b])
                inv = inverse_jsd_at_efficiency(
                    ds, db[b], mass[masks[b]], 0.5, _mass_bins(cfg), ws, wb[b]
                )
                res["decorrelation"][b] = {
                    "r50": _clean(r50), "r50_err": _clean(r50_err), "inv_jsd50": _clean(inv),
                    "mass_bins": cfg.mass_bins,
                }
        if cfg.significance is not None:
            # event classification: weights are the expected yields; all backgrounds together
            all_b = np.concatenate([db[b] for b in bkgs])
            all_wb = None if w is None else np.concatenate([wb[b] for b in bkgs])
            best = best_cut(ds, all_b, ws, all_wb, metric=cfg.significance)
            res["significance"] = {"metric": cfg.significance,
                                   **{k: _clean(v) for k, v in best.items()}}
        # multi-class accuracy when the tagger has an output for every class present
        if t.score is None:
            present = [c for c in scheme.classes if n_jets.get(c.name)]
            names = data.dtype.names or ()
            if all(f"{t.name}_{c.output}" in names for c in present) and len(present) > 1:
                sel = np.isin(labels_int, [scheme.classes.index(c) for c in present])
                probs = np.stack([data[f"{t.name}_{c.output}"][sel] for c in present], axis=1)
                lab = np.searchsorted(
                    [scheme.classes.index(c) for c in present], labels_int[sel]
                )
                res["accuracy"] = _clean(accuracy(probs, lab, None if w is None else w[sel]))
        out["_arrays"]["disc"][t.name] = disc
        out["taggers"][t.name] = res
    return out


def _mass_bins(cfg: EvaluateConfig) -> int | np.ndarray:
    return cfg.mass_bins if isinstance(cfg.mass_bins, int) else np.asarray(cfg.mass_bins, float)


# --------------------------------------------------------------------------------------------
# plots


def make_plots(cfg: EvaluateConfig, sample: SampleConfig, res: dict[str, Any],
               out_dir: Path) -> list[dict[str, str]]:
    """Write the plots of one sample; return ``[{"path": relative path, "caption": ...}]``.

    Parameters
    ----------
    cfg : EvaluateConfig
        The config.
    sample : SampleConfig
        The sample.
    res : dict
        Output of :func:`evaluate_sample` (with ``_arrays``).
    out_dir : Path
        Output folder (plots go to ``out_dir/plots``).

    Returns
    -------
    list[dict[str, str]]
        The written plots.
    """
    from lhcml.labels import get_scheme
    from lhcml.plots.histograms import HistogramPlot, mass_sculpting_plot
    from lhcml.plots.rejection_vs_var import FrontierPlot, RejectionVsVarPlot
    from lhcml.plots.roc import RocPlot

    scheme = get_scheme(cfg.label_scheme)
    arrays = res["_arrays"]
    sig = scheme.get(cfg.signal)
    bkgs = res["backgrounds"]
    blabel = {b: scheme.get(b).label for b in bkgs}
    text = sample.text if sample.text is not None else SAMPLE_PRESETS[sample.kind]["text"]
    lines = [t for t in [text or sample.name] if t]
    ext = cfg.plot_format
    pdir = out_dir / "plots"
    written: list[dict[str, str]] = []
    tlabel = {t.name: t.label or t.name for t in cfg.taggers}
    tcolour = {t.name: t.colour for t in cfg.taggers}

    def rec(path: Path, caption: str) -> None:
        written.append({"path": path.relative_to(out_dir).as_posix(), "caption": caption})

    roc = RocPlot(sig.label.replace("-jets", "-jet"), cfg.reference, blabel, label_lines=lines)
    for t in cfg.taggers:
        for b in bkgs:
            roc.add(arrays["rocs"][t.name][b], t.name, b, tlabel[t.name], tcolour[t.name])
    p = roc.save(pdir / f"{sample.name}_roc.{ext}")
    rec(p, f"{sample.name}: background rejection vs {sig.label} efficiency"
        + (f", ratio to {cfg.reference}" if cfg.reference else ""))

    for t in cfg.taggers:
        disc = arrays["disc"][t.name]
        h = HistogramPlot(bins=60, xlabel=f"{tlabel[t.name]} discriminant", logy=True,
                          label_lines=lines)
        w = arrays["w"]
        for c in [cfg.signal, *bkgs]:
            m = arrays["masks"][c]
            h.add(disc[m], scheme.get(c).label, None if w is None else w[m],
                  colour=scheme.get(c).colour)
        for wp in res["taggers"][t.name]["working_points"]:
            if wp["cut"] is not None:
                h.add_line(wp["cut"], f"{wp['target_eff']:.0%}")
        p = h.save(pdir / f"{sample.name}_disc_{t.name}.{ext}")
        rec(p, f"{sample.name}: {tlabel[t.name]} discriminant per class with the working points")

    if arrays["binned"]:
        for b in bkgs:
            for mode in cfg.rejection_vs_pt_modes:
                rp = RejectionVsVarPlot(background_label=blabel[b], signal_label=sig.label,
                                        label_lines=lines, logy=True)
                for t in cfg.taggers:
                    rp.add(arrays["binned"][t.name][(b, mode)], tlabel[t.name], tcolour[t.name])
                p = rp.save(pdir / f"{sample.name}_rej_vs_pt_{b}_{mode}.{ext}")
                rec(p, f"{sample.name}: {blabel[b]} rejection vs pT ({mode.replace('_', ' ')})")

    if arrays["binned_vs"]:
        for rv in cfg.rejection_vs:
            for b in bkgs:
                for mode in cfg.rejection_vs_pt_modes:
                    rp = RejectionVsVarPlot(xlabel=rv.label or rv.var, background_label=blabel[b],
                                            signal_label=sig.label, label_lines=lines, logy=True)
                    for t in cfg.taggers:
                        rp.add(arrays["binned_vs"][t.name][(rv.var, b, mode)], tlabel[t.name],
                               tcolour[t.name])
                    p = rp.save(pdir / f"{sample.name}_rej_vs_{rv.var}_{b}_{mode}.{ext}")
                    rec(p, f"{sample.name}: {blabel[b]} rejection vs {rv.label or rv.var} "
                        f"({mode.replace('_', ' ')})")

    if arrays["mass"] is not None:
        from lhcml.metrics.working_points import cut_at_efficiency

        mass, w, masks = arrays["mass"], arrays["w"], arrays["masks"]
        for b in bkgs:
            fp = FrontierPlot(label_lines=[*lines, f"background: {blabel[b]}"])
            for t in cfg.taggers:
                d = res["taggers"][t.name]["decorrelation"][b]
                fp.add(d["r50"] or np.nan, d["inv_jsd50"] or np.nan, tlabel[t.name],
                       tcolour[t.name])
                disc = arrays["disc"][t.name]
                ds = disc[masks[cfg.signal]]
                ws = None if w is None else w[masks[cfg.signal]]
                cut = float(cut_at_efficiency(ds, 0.5, ws))
                mb, db = mass[masks[b]], disc[masks[b]]
                wb = None if w is None else w[masks[b]]
                _, _, edges = mass_histograms_pass_fail(ds, db, mb, 0.5, _mass_bins(cfg), ws, wb)
                ok = db >= cut
                mp = mass_sculpting_plot(
                    mb[ok], mb[~ok], edges, None if wb is None else wb[ok],
                    None if wb is None else wb[~ok], label_lines=[*lines, tlabel[t.name]],
                )
                p = mp.save(pdir / f"{sample.name}_mass_{t.name}_{b}.{ext}")
                rec(p, f"{sample.name}: {blabel[b]} mass passing/failing the 50% cut of "
                    f"{tlabel[t.name]}")
            p = fp.save(pdir / f"{sample.name}_frontier_{b}.{ext}")
            rec(p, f"{sample.name}: R50 vs 1/JSD50 ({blabel[b]})")
    return written


# --------------------------------------------------------------------------------------------
# driver


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def evaluate(cfg: EvaluateConfig, output_dir: str | Path | None = None,
             config_text: str | None = None) -> dict[str, Any]:
    """Evaluate all samples and taggers; write ``results.json``, ``results.yaml`` and plots.

    Parameters
    ----------
    cfg : EvaluateConfig
        Validated config.
    output_dir : str | Path | None, optional
        Output folder (default ``cfg.output_dir``).
    config_text : str | None, optional
        The YAML text of the config, stored for the report.

    Returns
    -------
    dict
        The results (as written to ``results.json``).
    """
    from tqdm import tqdm

    from lhcml import __version__

    out_dir = Path(output_dir or cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "title": cfg.title,
        "lhcml_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "config": cfg.model_dump(mode="json"),
        "config_yaml": config_text or yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "conventions": {
            "discriminant": "ln((p_s + 1e-10) / (sum_i f_i p_i + 1e-10)) (atlas-ftag-tools)",
            "pass": "D >= cut; cut = weighted (1 - eff) quantile of the signal discriminant",
            "errors": "binomial, sqrt(eps (1 - eps) / N_eff), rejection error rej^2 sigma(eps)",
            "jsd": "base-2 JSD of normalised background mass histograms passing/failing the "
            "50% signal-efficiency cut; bins: mass_bins equal-width over the background range",
        },
        "samples": {},
    }
    for sample in tqdm(cfg.samples, desc="evaluate", disable=len(cfg.samples) < 2):
        data, files = read_sample(cfg, sample)
        res = evaluate_sample(cfg, sample, data)
        res["files"] = [str(f) for f in files]
        res["plots"] = make_plots(cfg, sample, res, out_dir) if cfg.plots else []
        res.pop("_arrays")
        results["samples"][sample.name] = res
    _write_atomic(out_dir / "results.json", json.dumps(results, indent=1, allow_nan=False))
    _write_atomic(out_dir / "results.yaml", yaml.safe_dump(results, sort_keys=False))
    return results


def evaluate_from_file(config_path: str | Path, output_dir: str | Path | None = None) -> dict:
    """Load an evaluate config file and run :func:`evaluate`.

    Parameters
    ----------
    config_path : str | Path
        YAML config.
    output_dir : str | Path | None, optional
        Overrides ``output_dir`` of the config.

    Returns
    -------
    dict
        The results.
    """
    cfg = load_config(EvaluateConfig, config_path)
    return evaluate(cfg, output_dir, Path(config_path).read_text())
