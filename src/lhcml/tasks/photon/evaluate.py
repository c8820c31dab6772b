"""Photon-ID evaluation: fake rejection at fixed photon efficiency for cuts vs DNN vs CNN.

:func:`evaluate_photon_id` reads photon files with prediction columns (``<tagger>_pprompt``,
``<tagger>_pfake`` written by ``lhcml predict``), applies cut menus (:mod:`.cuts`), and computes

* per NN tagger: fake rejection ``1/eps_fake`` at 80 % and 90 % photon efficiency (binomial
  errors, :mod:`lhcml.metrics`), the ROC curve and the AUC; the discriminant is
  ``ln(p_prompt / p_fake)``;
* per cut menu: its photon efficiency and fake rejection on the test sample (each menu was
  optimised on the training sample for a target efficiency);
* rejection and efficiency in bins of E_T, ``|eta|`` and ``averageInteractionsPerCrossing``
  (fixed inclusive cut for the NNs at each working point);

and writes ``results.json``, figures and ``report.html`` (with :class:`lhcml.plots.report.HtmlReport`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_write_text
from lhcml.errors import SchemaError
from lhcml.formatting import json_safe, pm
from lhcml.tasks.photon.cuts import CutMenu

DEFAULT_BINS: dict[str, tuple[float, ...]] = {
    "pt": (20.0, 30.0, 40.0, 60.0, 100.0, 250.0),  # GeV
    "abs_eta": (0.0, 0.6, 0.8, 1.15, 1.37),
    "mu": (-0.5, 10.0, 30.0, 50.0, 70.0, 100.0, 150.0, 250.0),
}
WORKING_POINTS = (0.80, 0.90)


def load_photons(files: Sequence[str | Path], dataset: str = "photons") -> np.ndarray:
    """Concatenated photon tables of ``files`` (paths, globs or directories)."""
    from lhcml.data.checks import open_h5
    from lhcml.data.files import expand_inputs

    parts = []
    for p in expand_inputs(files, context="(photon files)"):
        with open_h5(p) as f:
            if dataset not in f:
                raise SchemaError(f"{p} has no '{dataset}' dataset (datasets: {', '.join(f)})")
            parts.append(f[dataset][:])
    return np.concatenate(parts)


def discriminant(photons: np.ndarray, tagger: str) -> np.ndarray:
    """``ln(p_prompt / p_fake)`` of a tagger's prediction columns."""
    names = photons.dtype.names or ()
    need = [f"{tagger}_pprompt", f"{tagger}_pfake"]
    missing = [n for n in need if n not in names]
    if missing:
        raise SchemaError(f"no prediction column(s) {missing}: run `lhcml predict` for tagger '{tagger}'")
    eps = 1e-12
    return np.log(np.maximum(photons[need[0]], eps)) - np.log(np.maximum(photons[need[1]], eps))


def _binvar(photons: np.ndarray, var: str) -> np.ndarray:
    if var == "pt":
        return photons["pt"] / 1e3
    if var == "abs_eta":
        return np.abs(photons["eta"])
    if var == "mu":
        return photons["averageInteractionsPerCrossing"].astype(float)
    return photons[var].astype(float)


def _binned_decision(passed: np.ndarray, sig: np.ndarray, x: np.ndarray, edges: Sequence[float]) -> list[dict]:
    from lhcml.metrics.working_points import efficiency_error, rejection_error

    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        b = (x >= lo) & (x < hi)
        ns, nb = int((b & sig).sum()), int((b & ~sig).sum())
        es = float(passed[b & sig].mean()) if ns else float("nan")
        eb = float(passed[b & ~sig].mean()) if nb else float("nan")
        rej = 1 / eb if nb and eb > 0 else float("inf") if nb else float("nan")
        out.append({
            "lo": lo, "hi": hi, "n_sig": ns, "n_bkg": nb, "sig_eff": es,
            "sig_eff_err": float(efficiency_error(es, ns)) if ns else float("nan"),
            "rejection": rej,
            "rejection_err": float(rejection_error(rej, nb)) if nb and np.isfinite(rej) else float("nan"),
        })  # fmt: skip
    return out


def evaluate_arrays(
    photons: np.ndarray,
    taggers: Mapping[str, str],
    menus: Sequence[CutMenu] = (),
    working_points: Sequence[float] = WORKING_POINTS,
    bins: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """All numbers of the evaluation for one photon table (see the module docstring)."""
    from lhcml.metrics.classification import auc
    from lhcml.metrics.rejection import rejection_at_efficiency
    from lhcml.metrics.roc import roc_curve
    from lhcml.metrics.working_points import cut_at_efficiency

    sig = photons["isPromptPhoton"] == 1
    if sig.all() or not sig.any():
        raise SchemaError("evaluation needs prompt photons and fakes in the test sample")
    bins = dict(DEFAULT_BINS if bins is None else bins)
    res: dict[str, Any] = {"n_prompt": int(sig.sum()), "n_fake": int((~sig).sum()), "taggers": {}, "cuts": {}}
    for name, label in taggers.items():
        d = discriminant(photons, name)
        t: dict[str, Any] = {"label": label, "auc": float(auc(d[sig], d[~sig])), "working_points": {}, "binned": {}}
        for wp in working_points:
            rej, err = rejection_at_efficiency(d[sig], d[~sig], wp)
            cut = float(cut_at_efficiency(d[sig], wp))
            t["working_points"][f"{wp:.2f}"] = {"rejection": rej, "rejection_err": err, "cut": cut}
            passed = d > cut
            t["binned"][f"{wp:.2f}"] = {v: _binned_decision(passed, sig, _binvar(photons, v), e) for v, e in bins.items()}
        roc = roc_curve(d[sig], d[~sig], np.linspace(0.5, 0.99, 50))
        t["roc"] = {"sig_eff": roc.sig_eff.tolist(), "bkg_eff": roc.bkg_eff.tolist()}
        res["taggers"][name] = t
    for menu in menus:
        passed = menu.apply(photons)
        es = float(passed[sig].mean())
        eb = float(passed[~sig].mean())
        from lhcml.metrics.working_points import efficiency_error, rejection_error

        rej = 1 / eb if eb > 0 else float("inf")
        res["cuts"][f"{menu.name}"] = {
            "target": menu.target_efficiency, "sig_eff": es, "sig_eff_err": float(efficiency_error(es, int(sig.sum()))),
            "rejection": rej, "rejection_err": float(rejection_error(rej, int((~sig).sum()))) if eb > 0 else None,
            "binned": {v: _binned_decision(passed, sig, _binvar(photons, v), e) for v, e in bins.items()},
        }  # fmt: skip
    return res


def _figures(res: dict[str, Any], out: Path) -> list[tuple[Path, str]]:
    from lhcml.metrics.roc import RocCurve
    from lhcml.plots.roc import RocPlot

    figs = []
    plot = RocPlot(signal_label="Photon", ratio=False, label_lines=["prompt photons vs jet fakes"])
    for name, t in res["taggers"].items():
        se, be = np.array(t["roc"]["sig_eff"]), np.array(t["roc"]["bkg_eff"])
        plot.add(RocCurve(se, be, float(res["n_fake"]), np.zeros_like(se)), name, "fake", label=t["label"])
    if res["cuts"]:
        pts = sorted((c["sig_eff"], 1 / c["rejection"] if c["rejection"] else 0.0) for c in res["cuts"].values())
        se = np.array([p[0] for p in pts])
        be = np.array([max(p[1], 1e-9) for p in pts])
        plot.add(RocCurve(se, be, float(res["n_fake"]), np.zeros_like(se)), "cuts", "fake", label="cut-based menus")
    path = plot.save(out / "roc.png")
    figs.append((path, "Fake rejection vs photon efficiency"))
    return figs


def evaluate_photon_id(
    test_files: Sequence[str | Path],
    taggers: Mapping[str, str],
    output_dir: str | Path,
    menus: Sequence[CutMenu | str | Path] = (),
    working_points: Sequence[float] = WORKING_POINTS,
    bins: Mapping[str, Sequence[float]] | None = None,
    title: str = "Photon identification (lhcml open simulation)",
    extra_text: str | None = None,
) -> dict[str, Any]:
    """Evaluate taggers and cut menus on photon test files; write results, figures and a report.

    Parameters
    ----------
    test_files
        Photon files with prediction columns of every tagger.
    taggers
        ``{tagger_name: label}``.
    output_dir
        Where ``results.json``, ``roc.png`` and ``report.html`` go.
    menus
        Cut menus (objects or YAML files from :meth:`CutMenu.save`).

    Returns
    -------
    dict
        The results (as in ``results.json``).
    """
    from lhcml.plots.report import HtmlReport

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    menus = [m if isinstance(m, CutMenu) else CutMenu.load(m) for m in menus]
    photons = load_photons(test_files)
    res = evaluate_arrays(photons, taggers, menus, working_points, bins)
    res = json_safe(res)
    atomic_write_text(out / "results.json", json.dumps(res, indent=1))
    figs = _figures(res, out)
    rep = HtmlReport(title)
    rep.add_text(f"{res['n_prompt']} prompt photons, {res['n_fake']} fakes; files: {', '.join(map(str, test_files))}")
    if extra_text:
        rep.add_text(extra_text)
    rows = []
    for t in res["taggers"].values():
        row = [t["label"], t["auc"]]
        for wp in working_points:
            w = t["working_points"][f"{wp:.2f}"]
            row.append(pm(w["rejection"], w["rejection_err"]) if w["rejection"] else "-")
        rows.append(row)
    for name, c in res["cuts"].items():
        row = [f"cuts: {name}", "-"]
        for _ in working_points:
            row.append("")
        row[2 + min(range(len(working_points)), key=lambda i: abs(working_points[i] - c["target"]))] = (
            f"{c['rejection']:.3g} (eff {c['sig_eff']:.3f})" if c["rejection"] else "-"
        )
        rows.append(row)
    rep.add_table(rows, header=["tagger", "AUC", *[f"rejection @ {wp:.0%}" for wp in working_points]],
                  caption="Fake rejection at fixed photon efficiency (cuts: at the efficiency they reach)")
    for var in (bins or DEFAULT_BINS):
        brow = []
        for t in res["taggers"].values():
            for wp, bl in t["binned"].items():
                for b in bl[var]:
                    brow.append([t["label"], wp, f"[{b['lo']}, {b['hi']})", b["n_sig"], b["n_bkg"], b["sig_eff"], b["rejection"]])
        for name, c in res["cuts"].items():
            for b in c["binned"][var]:
                brow.append([f"cuts: {name}", c["target"], f"[{b['lo']}, {b['hi']})", b["n_sig"], b["n_bkg"], b["sig_eff"], b["rejection"]])
        rep.add_table(brow, header=["tagger", "WP", var, "n prompt", "n fake", "photon eff", "rejection"],
                      caption=f"Efficiency and rejection vs {var}")
    for path, cap in figs:
        rep.add_figure(path, cap)
    rep.write(out / "report.html")
    return res
