"""Per-sample, per-tagger metrics of ``lhcml evaluate``: discriminants, working points with
errors, AUC, ROC curves, rejection vs pT and other variables, mass decorrelation, significance,
accuracy. Pure computation on the arrays read by :mod:`lhcml.evaluation.inputs` (no I/O, no plots);
every number comes from the metric functions of :mod:`lhcml.metrics`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lhcml.errors import ConfigError, SchemaError
from lhcml.evaluation.config import EvaluateConfig, SampleConfig, TaggerConfig
from lhcml.formatting import json_safe
from lhcml.metrics.classification import accuracy, auc
from lhcml.metrics.decorrelation import inverse_jsd_at_efficiency
from lhcml.metrics.discriminants import DEFAULT_FRACTIONS, discriminant
from lhcml.metrics.rejection import rejection_at_efficiency, rejection_vs_var
from lhcml.metrics.roc import roc_curve
from lhcml.metrics.significance import best_cut
from lhcml.metrics.working_points import working_points


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


#: metric values for strict JSON (non-finite -> None): the one helper, lhcml.formatting.json_safe
_clean = json_safe


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
                    ds, db[b], mass[masks[b]], 0.5, mass_bins(cfg), ws, wb[b]
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


def mass_bins(cfg: EvaluateConfig) -> int | np.ndarray:
    """The JSD mass binning of ``cfg``: a bin count or the bin edges (GeV)."""
    return cfg.mass_bins if isinstance(cfg.mass_bins, int) else np.asarray(cfg.mass_bins, float)
