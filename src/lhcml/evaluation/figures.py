"""The plots of ``lhcml evaluate`` (one sample at a time): ROC curves with ratio panels,
discriminant distributions with the working points, rejection vs pT and other variables, the
R50 vs 1/JSD50 frontier and the mass-sculpting plots. Draws the results of
:mod:`lhcml.evaluation.sample_metrics` with the figure classes of :mod:`lhcml.plots`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lhcml.evaluation.config import SAMPLE_PRESETS, EvaluateConfig, SampleConfig
from lhcml.evaluation.sample_metrics import mass_bins
from lhcml.metrics.decorrelation import mass_histograms_pass_fail


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
                _, _, edges = mass_histograms_pass_fail(ds, db, mb, 0.5, mass_bins(cfg), ws, wb)
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
