"""``lhcml fastcalo evaluate``: generated vs reference showers, the CaloChallenge way.

:func:`evaluate_showers` computes, for a reference (detailed) and a generated sample in the
CaloChallenge layout with one binning file:

* the high-level features and their separation powers (:mod:`lhcml.metrics.fastcalo`): total
  and per-layer energy, ``E_gen/E_inc``, per-layer centroids and widths in both coordinates,
  sparsity; overlays of each in the HTML report;
* the **classifier test** (:func:`classifier_test`), as the challenge's evaluation: a fully
  connected network (two hidden layers of 512 LeakyReLU units, Adam at 2e-4, batches of 1000 or
  1/20 of the training split if smaller, the epoch with the lowest validation loss kept) trained to tell the two samples apart on
  60/20/20 train/validation/test splits; *low level*: ``log10 E_inc`` and the voxels divided by
  ``E_inc``; *high level*: ``log10 E_inc``, ``log10`` of the layer energies, the centroids and
  widths. Inputs are standardised with the training split's mean and spread (our choice: a
  per-input affine map the network could learn, which keeps Adam's step size sensible for
  centroids of order 0.01 in η). The test-split output is calibrated by isotonic regression on
  the validation split and gives the AUC and the JSD estimate ``(ln 2 - BCE) / ln 2``; mean and
  standard deviation over ``n_runs`` seeds (each seed: its own split, initialisation and batches);
* FPD and KPD (Kansal et al.) on the high-level features;
* the photon-ID shower shapes (Rη, Rφ, wη2, Eratio and the rest) from lhcml's own cluster code
  (:func:`lhcml.tasks.fastcalo.dataset.shower_shapes`; cell binnings only) with their
  separation powers;
* optionally the same per incident-energy bin (``energy_bins``): an interpolation check when the
  generator was trained on the discrete points and both samples are continuous or at an
  untrained energy.

Everything goes to ``OUTPUT/results.json`` and ``OUTPUT/report.html``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.data.calochallenge import Binning, CaloSample, read_binning, read_showers
from lhcml.errors import ConfigError
from lhcml.metrics import fastcalo as fm

#: the challenge's classifier (docs/references.md §14): hidden layers, width, learning rate, batch
CLASSIFIER_HIDDEN = (512, 512)
CLASSIFIER_LR = 2e-4
CLASSIFIER_BATCH = 1000
#: smaller samples than the challenge's (10^5 showers): the batch shrinks so that an epoch has at
#: least this many optimiser steps (our choice; with 1 000 showers a batch of 1 000 is one step per epoch)
MIN_STEPS_PER_EPOCH = 20
#: the shower shapes of photon ID compared (the others are in results.json too)
PHOTON_ID_SHAPES = ("Reta", "Rphi", "weta2", "Eratio", "DeltaE", "weta1", "wtots1", "fracs1", "f1", "f3", "Rhad1")


def features_of(sample: CaloSample, sparsity_threshold_gev: float = 0.0) -> dict[str, np.ndarray]:
    """High-level features of a sample (:func:`lhcml.metrics.fastcalo.high_level_features`)."""
    b = sample.binning
    return fm.high_level_features(sample.energies, sample.showers, b.layer_slices, b.layer_names,
                                  b.voxel_centres(), b.coordinate_names, sparsity_threshold_gev)  # fmt: skip


def classifier_inputs(sample: CaloSample, level: str, feats: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The classifier's inputs (module docstring): ``low`` (voxels) or ``high`` (features)."""
    e = np.asarray(sample.energies, np.float64)
    loge = np.log10(e)[:, None]
    if level == "low":
        return np.concatenate([loge, sample.showers / e[:, None]], axis=1).astype(np.float32)
    if level == "high":
        f = feats if feats is not None else features_of(sample)
        names = sample.binning.layer_names
        cols = [loge] + [np.log10(np.clip(f[f"E_{n}"], 0, None) + 1e-8)[:, None] for n in names]
        for c in sample.binning.coordinate_names:
            for n in names:
                cols += [f[f"centroid_{c}_{n}"][:, None], f[f"width_{c}_{n}"][:, None]]
        return np.concatenate(cols, axis=1).astype(np.float32)
    raise ConfigError(f"classifier level must be 'low' or 'high', got {level!r}")


def train_classifier(x: np.ndarray, y: np.ndarray, seed: int, epochs: int, patience: int) -> dict[str, float]:
    import torch
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score
    from torch import nn

    rng = np.random.default_rng(seed)
    n = len(y)
    perm = rng.permutation(n)
    n_tr, n_va = int(0.6 * n), int(0.2 * n)
    tr, va, te = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
    mu = x[tr].mean(0)
    sd = x[tr].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    xs = ((x - mu) / sd).astype(np.float32)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = xs.shape[1]
    for h in CLASSIFIER_HIDDEN:
        layers += [nn.Linear(width, h), nn.LeakyReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    net = nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=CLASSIFIER_LR)
    lossf = nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(xs), torch.from_numpy(y.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    best, best_state, since = math.inf, None, 0
    batch = max(min(CLASSIFIER_BATCH, len(tr) // MIN_STEPS_PER_EPOCH), 1)
    for _ in range(int(epochs)):
        net.train()
        order = torch.from_numpy(tr)[torch.randperm(len(tr), generator=gen)]
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            opt.zero_grad()
            loss = lossf(net(xt[idx]).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vl = float(lossf(net(xt[va]).squeeze(1), yt[va]))
        if vl < best - 1e-6:
            best, since = vl, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        p_va = torch.sigmoid(net(xt[va]).squeeze(1)).numpy()
        p_te = torch.sigmoid(net(xt[te]).squeeze(1)).numpy()
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p_va, y[va])
    p_cal = iso.predict(p_te)
    return {"auc": float(roc_auc_score(y[te], p_cal)), "auc_raw": float(roc_auc_score(y[te], p_te)),
            "jsd": fm.classifier_jsd(y[te], p_cal), "val_loss": float(best), "n_test": int(len(te))}  # fmt: skip


def classifier_test(
    reference: CaloSample, generated: CaloSample, level: str = "low", *, n_runs: int = 5, seed: int = 1,
    epochs: int = 50, patience: int = 10,
    features: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The challenge's classifier test (module docstring): AUC and JSD, mean and spread over runs.

    The two samples are cut to the same size (the smaller one), so the classes are balanced.
    """
    if n_runs < 1:
        raise ConfigError(f"n_runs must be >= 1, got {n_runs}")
    n = min(len(reference), len(generated))
    if n < 50:
        raise ConfigError(f"the classifier test needs at least 50 showers per sample, got {n}")
    fr, fg = features if features is not None else (None, None)
    xr = classifier_inputs(reference, level, fr)[:n]
    xg = classifier_inputs(generated, level, fg)[:n]
    x = np.concatenate([xr, xg])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    runs = [train_classifier(x, y, seed + k, epochs, patience) for k in range(n_runs)]
    return {"level": level, "n_per_class": int(n), "runs": runs,
            "auc": fm.summary([r["auc"] for r in runs]), "jsd": fm.summary([r["jsd"] for r in runs])}  # fmt: skip


def _matrix(feats: dict[str, np.ndarray]) -> np.ndarray:
    keys = [k for k in feats if not k.startswith("sparsity_") and k != "E_inc"]
    m, _ = fm.feature_matrix(feats, keys)
    return m


def _overlay_grid(path: Path, names: list[str], ref: dict[str, np.ndarray], gen: dict[str, np.ndarray],
                  seps: dict[str, float], labels: tuple[str, str], ncols: int = 4) -> Path:  # fmt: skip
    """One figure of normalised step histograms (reference vs generated), a panel per feature,
    each titled with its separation power."""
    from matplotlib.figure import Figure

    from lhcml.plots.style import colour, save_figure

    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.06, top=0.94, hspace=0.45, wspace=0.3)
    for ax, k in zip(axes, names, strict=False):
        edges = fm.feature_bins(ref[k], gen[k])
        for i, (vals, lab) in enumerate(((ref[k], labels[0]), (gen[k], labels[1]))):
            h = fm.histogram(vals, edges)
            ax.stairs(h / max(h.sum(), 1.0), edges, color=colour(i), label=lab)
        if edges[0] > 0 and edges[-1] / edges[0] > 100:
            ax.set_xscale("log")
        ax.set_title(f"{k}  (S = {seps[k]:.3f})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if names:
        axes[0].legend(fontsize=7)
    return save_figure(fig, path, dpi=80)


def evaluate_showers(
    reference: str | Path | CaloSample,
    generated: str | Path | CaloSample,
    binning: str | Path | Binning | None,
    output_dir: str | Path | None = None,
    *,
    n_runs: int = 5,
    epochs: int = 50,
    seed: int = 1,
    levels: tuple[str, ...] = ("low", "high"),
    max_showers: int | None = None,
    shower_shapes: bool = True,
    energy_bins: list[float] | None = None,
    sparsity_threshold_gev: float = 0.0,
    labels: tuple[str, str] = ("detailed", "generated"),
    progress: bool = False,
) -> dict[str, Any]:
    """Compare generated with reference showers (module docstring); returns the results dict and
    writes ``results.json`` and ``report.html`` (with the overlays) to ``output_dir`` if given."""
    if binning is None:
        raise ConfigError("--binning is required: the binning XML file describing the voxels")
    b = binning if isinstance(binning, Binning) else read_binning(binning)
    ref = reference if isinstance(reference, CaloSample) else read_showers(reference, b, max_showers=max_showers)
    gen = generated if isinstance(generated, CaloSample) else read_showers(generated, b, max_showers=max_showers)
    if ref.binning.n_voxels != gen.binning.n_voxels:
        raise ConfigError("reference and generated samples have different voxelisations")

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    fr, fg = features_of(ref, sparsity_threshold_gev), features_of(gen, sparsity_threshold_gev)
    res: dict[str, Any] = {"n_reference": len(ref), "n_generated": len(gen), "particle": b.particle,
                           "binning_sha256": b.sha256, "labels": list(labels)}  # fmt: skip
    res["separation_powers"] = fm.separation_powers(fr, fg)
    seps = res["separation_powers"]
    res["separation_summary"] = {"mean": float(np.mean(list(seps.values()))), "max": float(max(seps.values())),
                                 "worst": max(seps, key=seps.get)}  # fmt: skip
    say("separation powers done")
    mr, mg = _matrix(fr), _matrix(fg)
    res["fpd"] = dict(zip(("value", "error"), fm.fpd(mr, mg, seed=seed), strict=True))
    res["kpd"] = dict(zip(("value", "error"), fm.kpd(mr, mg, seed=seed), strict=True))
    say(f"FPD {res['fpd']['value']:.4g}, KPD {res['kpd']['value']:.4g}")
    res["classifier"] = {}
    for level in levels:
        res["classifier"][level] = classifier_test(ref, gen, level, n_runs=n_runs, seed=seed, epochs=epochs,
                                                   features=(fr, fg))  # fmt: skip
        c = res["classifier"][level]
        say(f"classifier {level}: AUC {c['auc']['mean']:.4f} +- {c['auc']['std']:.4f}")
    shapes_r = shapes_g = None
    if shower_shapes and b.kind == "cells":
        from lhcml.tasks.fastcalo.dataset import shower_shapes as _shapes

        shapes_r, shapes_g = _shapes(ref.showers, b), _shapes(gen.showers, b)
        res["shower_shapes"] = {
            k: {"separation_power": fm.feature_separation(shapes_r[k], shapes_g[k]),
                "mean_reference": float(np.mean(shapes_r[k])), "mean_generated": float(np.mean(shapes_g[k]))}
            for k in PHOTON_ID_SHAPES if k in shapes_r
        }  # fmt: skip
        say("shower shapes done")
    elif shower_shapes:
        res["shower_shapes"] = "not computed: polar (CaloChallenge) binning; needs an lhcml cell binning"
    if energy_bins:
        res["energy_bins"] = _per_energy(fr, fg, energy_bins)
    if output_dir is not None:
        _write(Path(output_dir), res, fr, fg, shapes_r, shapes_g, labels)
    return res


def _per_energy(fr: dict[str, np.ndarray], fg: dict[str, np.ndarray], edges: list[float]) -> list[dict[str, Any]]:
    """Separation powers of E_ratio and the layer energies per incident-energy bin (interpolation)."""
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sr = (fr["E_inc"] >= lo) & (fr["E_inc"] < hi)
        sg = (fg["E_inc"] >= lo) & (fg["E_inc"] < hi)
        row: dict[str, Any] = {"e_lo_gev": lo, "e_hi_gev": hi, "n_reference": int(sr.sum()), "n_generated": int(sg.sum())}
        if sr.sum() >= 20 and sg.sum() >= 20:
            for k in [k for k in fr if k == "E_ratio" or (k.startswith("E_") and k not in ("E_inc", "E_tot"))]:
                row[f"sep_{k}"] = fm.feature_separation(fr[k][sr], fg[k][sg])
            row["E_ratio_mean_reference"] = float(fr["E_ratio"][sr].mean())
            row["E_ratio_mean_generated"] = float(fg["E_ratio"][sg].mean())
        out.append(row)
    return out


def _write(out: Path, res: dict[str, Any], fr, fg, shapes_r, shapes_g, labels) -> None:
    from lhcml.atomic import atomic_write_text
    from lhcml.formatting import pm
    from lhcml.plots.report import HtmlReport

    out.mkdir(parents=True, exist_ok=True)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(res, indent=2, default=float) + "\n")
    rep = HtmlReport(f"Fast calorimeter evaluation: {res['particle']} ({labels[1]} vs {labels[0]})")
    rep.add_text(f"{res['n_reference']} {labels[0]} and {res['n_generated']} {labels[1]} showers; "
                 f"binning sha256 {res['binning_sha256'][:12]}...")  # fmt: skip
    rep.add_heading("Classifier test")
    rows = [[lvl, pm(c["auc"]["mean"], c["auc"]["std"]), pm(c["jsd"]["mean"], c["jsd"]["std"]), c["auc"]["n"],
             c["n_per_class"]] for lvl, c in res["classifier"].items()]  # fmt: skip
    rep.add_table(rows, header=["level", "AUC", "JSD", "runs", "showers per class"])
    rep.add_heading("FPD / KPD (high-level features)")
    rep.add_table([["FPD", res["fpd"]["value"], res["fpd"]["error"]], ["KPD", res["kpd"]["value"], res["kpd"]["error"]]],
                  header=["metric", "value", "error"])  # fmt: skip
    rep.add_heading("Separation powers")
    seps = res["separation_powers"]
    rep.add_table([[k, v] for k, v in sorted(seps.items(), key=lambda kv: -kv[1])], header=["feature", "separation power"])
    groups = {"energies": [k for k in seps if k.startswith("E_")], "centroids": [k for k in seps if k.startswith("centroid_")],
              "widths": [k for k in seps if k.startswith("width_")], "sparsity": [k for k in seps if k.startswith("sparsity_")]}  # fmt: skip
    for group, names in groups.items():
        if names:
            rep.add_figure(_overlay_grid(figs / f"{group}.png", names, fr, fg, seps, labels), caption=group)
    if isinstance(res.get("shower_shapes"), dict):
        rep.add_heading("Photon-ID shower shapes (lhcml cluster code)")
        shapes = res["shower_shapes"]
        rep.add_table([[k, v["separation_power"], v["mean_reference"], v["mean_generated"]] for k, v in shapes.items()],
                      header=["shape", "separation power", f"mean {labels[0]}", f"mean {labels[1]}"])  # fmt: skip
        sep_s = {k: v["separation_power"] for k, v in shapes.items()}
        rep.add_figure(_overlay_grid(figs / "shower_shapes.png", list(shapes), shapes_r, shapes_g, sep_s, labels),
                       caption="photon-ID shower shapes")  # fmt: skip
    if res.get("energy_bins"):
        rep.add_heading("Per incident-energy bin (interpolation)")
        rep.add_table(res["energy_bins"])
    rep.write(out / "report.html")


__all__ = ["classifier_inputs", "classifier_test", "evaluate_showers", "features_of", "train_classifier"]
