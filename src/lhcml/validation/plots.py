"""Validation plots of a simulated sample (used by ``lhcml sim validate``, :mod:`lhcml.validation`).

From the flat files of a simulation directory: b/c-hadron transverse decay length, lifetime-
signed d0 and z0 significance by flavour, track multiplicity by flavour, track truth-origin
fractions by flavour, jet pT and η by flavour, large-R jet mass for top/W/Z/QCD (PNG files), plus
a per-class summary table.

What to look for: b-jets have a long positive tail in signed d0 significance (light jets are
nearly symmetric, with small tails from resolution, fakes and K0S/Λ decays); b-hadron Lxy has
a mean of a few mm at ttbar pT; b-jets have more tracks than light jets; top/W/Z masses peak
near 173/80/91 GeV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lhcml.data import schema
from lhcml.formatting import pm
from lhcml.plots.style import EXPERIMENT_LABEL as _LABEL
from lhcml.validation.checks import hadron_ctau

_ORIGIN_NAMES = list(schema.TRUTH_ORIGIN)


def make_plots(
    files: list[Path], out: Path, max_jets: int = 200_000
) -> tuple[list[tuple[str, Path]], list[dict[str, Any]], list[str]]:
    """The validation PNGs of the files that hold a ``jets`` dataset, written into ``out``.

    Returns ``(plots: [(title, png)], summary rows, notes)``.
    """
    from lhcml.data.h5 import H5Reader, open_h5

    with_jets = []
    for p in files:
        with open_h5(p) as f:
            if "jets" in f:
                with_jets.append(p)
    plots: list[tuple[str, Path]] = []
    summary: list[dict[str, Any]] = []
    notes: list[str] = []
    if not with_jets:
        return plots, summary, ["no 'jets' dataset: no jet plots"]
    out.mkdir(parents=True, exist_ok=True)
    reader = H5Reader(with_jets, batch_size=50_000)
    available = reader.variables()
    jets_fields = set(available.get("jets", []))
    if "HadronConeExclTruthLabelID" in jets_fields:
        want_j = [v for v in ("pt", "eta", "HadronConeExclTruthLabelID", "HadronConeExclTruthLabelLxy",
                                "HadronConeExclTruthLabelPt", "n_tracks")
                  if v in jets_fields]  # fmt: skip
        variables: dict[str, list[str]] = {"jets": want_j}
        trk_fields = set(available.get("tracks", []))
        want_t = [v for v in ("IP3D_signed_d0_significance", "IP3D_signed_z0_significance",
                              "ftagTruthOriginLabel", "valid") if v in trk_fields]  # fmt: skip
        if "valid" in want_t:
            variables["tracks"] = want_t
        data = reader.read(variables, num_jets=max_jets)
        plots += _flavour_plots(data, out, summary)
    if "R10TruthLabel" in jets_fields:
        data = reader.read({"jets": ["pt", "eta", "mass", "R10TruthLabel"]}, num_jets=max_jets)
        plots += _boosted_plots(data, out, summary)
    if {"truthJetPt", "truthJetEta"} <= jets_fields and "R10TruthLabel" not in jets_fields:
        want_r = ["pt", "truthJetPt", "truthJetEta"] + [v for v in ("averageInteractionsPerCrossing",) if v in jets_fields]
        data = reader.read({"jets": want_r}, num_jets=max_jets)
        jets_r = data["jets"]
        mu = float(np.mean(jets_r["averageInteractionsPerCrossing"])) if len(want_r) > 3 and len(jets_r) else None
        plots += _response_plots(jets_r, out, mu=mu)
    if not plots:
        notes.append(
            "no flavour (HadronConeExclTruthLabelID) or boosted (R10TruthLabel) jets found"
        )
    return plots, summary, notes


#: truth-pT bin edges (GeV) of the response/resolution plots
RESPONSE_PT_EDGES = (20, 25, 30, 40, 50, 60, 80, 100, 130, 170, 220, 270, 330, 450, 600)


def _response_plots(jets: np.ndarray, out: Path, eta_max: float = 0.8, mu: float | None = None) -> list[tuple[str, Path]]:
    """Jet response and JER vs truth pT (Gaussian core fits as the checks), with the reference
    points of the shipped table that apply at the sample's ⟨μ⟩ ``mu`` (all when unknown)."""
    from lhcml.validation.checks import jet_response
    from lhcml.validation.table import load_reference

    reco_min = float(np.min(jets["pt"])) / 1e3 if len(jets) else None
    edges = np.asarray(RESPONSE_PT_EDGES, dtype=float)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        r, j = jet_response(jets["pt"], jets["truthJetPt"], jets["truthJetEta"], (lo, hi), eta_max, reco_min)
        if r.n >= 50 and np.isfinite(r.value):
            rows.append((np.sqrt(lo * hi), r.value, r.error, j.value, j.error))
    if not rows:
        return []
    x, resp, resp_err, jer, jer_err = (np.array(c) for c in zip(*rows, strict=True))
    refs = [c for c in load_reference().checks if c.measure == "jet_response" and (mu is None or c.applies_to(mu))]
    made = []
    for name, y, e, output, what, ylab in (
        ("jes_vs_pt.png", resp, resp_err, "response", "response", "Response $p_T^{reco}/p_T^{truth}$"),
        ("jer_vs_pt.png", jer, jer_err, "jer", "energy resolution", "JER $\\sigma(R)/\\langle R \\rangle$"),
    ):
        fig, ax = _new_figure()
        ax.errorbar(x, y, yerr=e, fmt="o", color="k", label=f"{_LABEL}, |η| < {eta_max:g}")
        seen: set[str] = set()
        for c in refs:
            if c.output != output or c.bounds() is None:
                continue
            label = f"reference ({c.tag})" if c.tag not in seen else None
            seen.add(c.tag)
            lo_b, hi_b = c.bounds()
            xc = np.sqrt(c.params["pt_min"] * c.params["pt_max"])
            ax.errorbar([xc], [0.5 * (lo_b + hi_b)], yerr=[[0.5 * (hi_b - lo_b)]], fmt="s", color="tab:red",
                        mfc="none", capsize=4, label=label)  # fmt: skip
        ax.set_xscale("log")
        made.append((name, _finish(fig, ax, out / name, f"Small-R jet {what} vs truth $p_T$ (Gaussian core fit)",
                                   "Truth jet $p_T$ [GeV]", ylab)))  # fmt: skip
    return [("Jet response vs pT", made[0][1]), ("Jet energy resolution vs pT", made[1][1])]


def _flavour_classes() -> list[tuple[int, str, str, str]]:
    """(label value, name, plot label, colour) from the label registry."""
    from lhcml.labels import get_scheme

    scheme = get_scheme("flavour")
    out = []
    for c in scheme.classes:
        value = int(float(c.cuts[0].split("==")[1]))
        out.append((value, c.name, c.label, c.colour))
    return out


def _boosted_classes() -> list[tuple[int, str, str, str]]:
    from lhcml.labels import get_scheme

    scheme = get_scheme("boosted")
    return [
        (int(float(c.cuts[0].split("==")[1])), c.name, c.label, c.colour) for c in scheme.classes
    ]


def _new_figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.5), dpi=100)
    return fig, ax


def _finish(
    fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str, logy: bool = False
) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.text(0.02, 0.97, _LABEL, transform=ax.transAxes, va="top", fontsize=9, style="italic")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(frameon=False, fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _hist_by_class(
    values: dict[str, tuple[np.ndarray, str, str]],
    bins: np.ndarray,
    path: Path,
    title: str,
    xlabel: str,
    logy: bool,
) -> Path | None:
    if not any(len(v[0]) for v in values.values()):
        return None
    fig, ax = _new_figure()
    for _, (x, label, colour) in values.items():
        x = x[np.isfinite(x)]
        if len(x) == 0:
            continue
        w = np.full(len(x), 1.0 / len(x))
        ax.hist(np.clip(x, bins[0], bins[-1]), bins=bins, weights=w, histtype="step", lw=1.5,
                label=f"{label} ({len(x)})", color=colour)  # fmt: skip
    return _finish(fig, ax, path, title, xlabel, "Normalised entries", logy)


def _flavour_plots(
    data: dict[str, np.ndarray], out: Path, summary: list[dict[str, Any]]
) -> list[tuple[str, Path]]:
    jets = data["jets"]
    tracks = data.get("tracks")
    flav = jets["HadronConeExclTruthLabelID"]
    classes = [c for c in _flavour_classes() if (flav == c[0]).any()]
    plots: list[tuple[str, Path]] = []

    def per_class(fn):
        return {name: (fn(flav == v), label, colour) for v, name, label, colour in classes}

    p = _hist_by_class(per_class(lambda s: jets["pt"][s] / 1e3), np.linspace(20, 400, 39),
                       out / "jet_pt.png", "Jet $p_T$ by flavour", "Jet $p_T$ [GeV]", True)  # fmt: skip
    plots.append(("Jet pT by flavour", p))
    p = _hist_by_class(per_class(lambda s: jets["eta"][s]), np.linspace(-2.5, 2.5, 26),
                       out / "jet_eta.png", "Jet $\\eta$ by flavour", "Jet $\\eta$", False)  # fmt: skip
    plots.append(("Jet eta by flavour", p))
    if "HadronConeExclTruthLabelLxy" in (jets.dtype.names or ()):
        lxy = {name: (jets["HadronConeExclTruthLabelLxy"][flav == v], label, colour)
               for v, name, label, colour in classes if v in (4, 5)}  # fmt: skip
        p = _hist_by_class(lxy, np.linspace(0, 40, 41), out / "hadron_lxy.png",
                           "Labelling b/c-hadron transverse decay length",
                           "$L_{xy}$ of the labelling hadron [mm]", True)  # fmt: skip
        if p is not None:
            plots.append(("b/c-hadron Lxy", p))
    if tracks is not None:
        valid = tracks["valid"]
        ntrk = valid.sum(axis=1)
        p = _hist_by_class(per_class(lambda s: ntrk[s].astype(float)), np.arange(-0.5, 41.5, 1.0),
                           out / "track_multiplicity.png", "Tracks per jet by flavour",
                           "Number of tracks (40-slot cap)", False)  # fmt: skip
        plots.append(("Track multiplicity", p))
        for var, fname, lab in (
            ("IP3D_signed_d0_significance", "sd0.png", "Signed $d_0$ significance"),
            ("IP3D_signed_z0_significance", "sz0.png", "Signed $z_0 \\sin\\theta$ significance"),
        ):
            if var not in (tracks.dtype.names or ()):
                continue
            vals = per_class(lambda s, var=var: tracks[var][s][valid[s]])
            p = _hist_by_class(vals, np.linspace(-20, 40, 121), out / fname, f"{lab} by flavour",
                               lab, True)  # fmt: skip
            plots.append((lab.replace("$", ""), p))
        if "ftagTruthOriginLabel" in (tracks.dtype.names or ()):
            plots.append(
                (
                    "Track truth origin",
                    _origin_plot(tracks, flav, classes, out / "track_origin.png"),
                )
            )
    for v, name, _, _ in classes:
        s = flav == v
        row: dict[str, Any] = {"class": name, "jets": int(s.sum())}
        if tracks is not None:
            val = tracks["valid"][s]
            row["mean tracks"] = f"{val.sum(1).mean():.2f}" if s.any() else "-"
            if "IP3D_signed_d0_significance" in (tracks.dtype.names or ()):
                sd0 = tracks["IP3D_signed_d0_significance"][s][val]
                row["frac |sd0|>3"] = f"{np.mean(np.abs(sd0) > 3):.3f}" if len(sd0) else "-"
        if "HadronConeExclTruthLabelLxy" in (jets.dtype.names or ()) and v in (4, 5):
            row["mean Lxy [mm]"] = f"{np.nanmean(jets['HadronConeExclTruthLabelLxy'][s]):.2f}"
            if "HadronConeExclTruthLabelPt" in (jets.dtype.names or ()):
                ctau, err, _ = hadron_ctau(jets[s], v)
                row["c*tau from Lxy [mm]"] = pm(ctau, err) if np.isfinite(ctau) else "-"
        ref = _REFERENCE.get(v)
        if ref:
            row["reference"] = ref
        summary.append(row)
    return [(t, p) for t, p in plots if p is not None]


#: reference notes shown beside the per-flavour summary
_REFERENCE = {
    5: "c*tau ≈ 0.47 mm (PDG B+/B0/Bs/Λb mix 0.44-0.49); tracks ~8-10 (UNVERIFIED, docs/references.md §4)",
    4: "c*tau 0.06-0.31 mm (PDG Λc, D0 0.12, Ds 0.15, D+ 0.31); tracks ~6-8 (UNVERIFIED)",
    0: "tracks ~4-6 (UNVERIFIED, docs/references.md §4); small symmetric sd0 tails",
}


def _origin_plot(tracks: np.ndarray, flav: np.ndarray, classes: list, path: Path) -> Path:
    fig, ax = _new_figure()
    n_cls = len(classes)
    width = 0.8 / max(n_cls, 1)
    x = np.arange(len(_ORIGIN_NAMES))
    for i, (v, _, label, colour) in enumerate(classes):
        s = flav == v
        o = tracks["ftagTruthOriginLabel"][s][tracks["valid"][s]]
        frac = np.bincount(
            o.astype(int).clip(0, len(_ORIGIN_NAMES) - 1), minlength=len(_ORIGIN_NAMES)
        )
        frac = frac / max(frac.sum(), 1)
        ax.bar(x + (i - (n_cls - 1) / 2) * width, frac, width, label=label, color=colour)
    ax.set_xticks(x, _ORIGIN_NAMES, rotation=30, ha="right")
    return _finish(fig, ax, path, "Track truth origin by jet flavour", "", "Fraction of tracks")


def _boosted_plots(
    data: dict[str, np.ndarray], out: Path, summary: list[dict[str, Any]]
) -> list[tuple[str, Path]]:
    jets = data["jets"]
    lab = jets["R10TruthLabel"]
    classes = [c for c in _boosted_classes() if (lab == c[0]).any()]
    vals = {
        name: (jets["mass"][lab == v] / 1e3, label, colour) for v, name, label, colour in classes
    }
    p = _hist_by_class(vals, np.linspace(0, 300, 61), out / "large_r_mass.png",
                       "Large-R jet mass", "Jet mass [GeV]", False)  # fmt: skip
    p2 = _hist_by_class(
        {name: (jets["pt"][lab == v] / 1e3, label, colour) for v, name, label, colour in classes},
        np.linspace(0, 1500, 61), out / "large_r_pt.png", "Large-R jet $p_T$", "Jet $p_T$ [GeV]", True,
    )  # fmt: skip
    for v, name, _, _ in classes:
        m = jets["mass"][lab == v] / 1e3
        summary.append(
            {"class": name, "jets": int(len(m)), "median mass [GeV]": f"{np.median(m):.1f}"}
        )
    return [(t, q) for t, q in (("Large-R jet mass", p), ("Large-R jet pT", p2)) if q is not None]


