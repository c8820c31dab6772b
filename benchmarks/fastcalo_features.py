"""What the CaloChallenge high-level classifier separates on: a per-feature diagnostic (issue 15).

For one reference (detailed) sample and one or more generators (``--checkpoint name=CKPT``,
sampled at the reference's incident energies and |η| as ``benchmarks/fastcalo.py`` does:
:func:`lhcml.tasks.fastcalo.dataset.generate_sample`, same seed), per high-level feature of the challenge
(:func:`lhcml.tasks.fastcalo.evaluate.features_of`: E_tot/E_inc, per layer the energy, the
centroids and widths in η and φ, the sparsity):

* the 1-D separation power (:func:`lhcml.metrics.fastcalo.separation_powers`);
* ``alone``: the AUC of the challenge's classifier
  (:func:`lhcml.tasks.fastcalo.evaluate.classifier_test` internals: same network, splits,
  isotonic calibration) trained on ``log10 E_inc`` and that feature only (E_inc is the condition:
  a feature without it mixes 1 and 260 GeV photons);
* ``left_out``: the AUC of the classifier on the full high-level input set
  (:func:`classifier_inputs` ``level="high"``) with that column removed, and with whole groups
  removed (all layer energies, all centroids, all widths, one layer's columns);
* ``full``: the full high-level set, the reference point of ``left_out``.

Each AUC is the mean and spread over ``--runs`` classifier runs (seeds ``--seed`` + k). Features
ranked by ``alone`` AUC. Results to ``--output`` (JSON) and tables on stdout.

Usage (docs/benchmarks/fastcalo.md, "Eleventh version")::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/fastcalo_features.py \\
        --reference WORK/showers_val/photon_discrete.h5 --binning WORK/showers/binning_photon.xml \\
        --checkpoint eta=RUNS/fm_strips_eta/checkpoints/best-epoch=499.ckpt --runs 3 --epochs 20 \\
        --output WORK/features.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _log(x: np.ndarray) -> np.ndarray:
    return np.log10(np.clip(x, 0, None) + 1e-8)


def feature_columns(feats: dict[str, np.ndarray], layers: list[str], coords: list[str]) -> dict[str, np.ndarray]:
    """Every high-level feature as one classifier column: the classifier's own transforms
    (log10 of energies), plus E_tot/E_inc and the sparsities, which its input set lacks."""
    cols: dict[str, np.ndarray] = {"E_ratio": feats["E_ratio"]}
    for n in layers:
        cols[f"E_{n}"] = _log(feats[f"E_{n}"])
    for c in coords:
        for n in layers:
            cols[f"centroid_{c}_{n}"] = feats[f"centroid_{c}_{n}"]
            cols[f"width_{c}_{n}"] = feats[f"width_{c}_{n}"]
    for n in layers:
        cols[f"sparsity_{n}"] = feats[f"sparsity_{n}"]
    return cols


def classifier_set(layers: list[str], coords: list[str]) -> list[str]:
    """The columns of ``classifier_inputs(level="high")`` after log10 E_inc, in its order."""
    names = [f"E_{n}" for n in layers]
    for c in coords:
        for n in layers:
            names += [f"centroid_{c}_{n}", f"width_{c}_{n}"]
    return names


def auc_of(xr: np.ndarray, xg: np.ndarray, runs: int, seed: int, epochs: int, patience: int) -> dict[str, float]:
    from lhcml.tasks.fastcalo.evaluate import train_classifier

    n = min(len(xr), len(xg))
    x = np.concatenate([xr[:n], xg[:n]]).astype(np.float32)
    y = np.concatenate([np.zeros(n), np.ones(n)])
    aucs = [train_classifier(x, y, seed + k, epochs, patience)["auc"] for k in range(runs)]
    return {"mean": float(np.mean(aucs)), "std": float(np.std(aucs, ddof=1)) if runs > 1 else 0.0,
            "runs": [float(a) for a in aucs]}  # fmt: skip


def diagnose(ref: Any, gen: Any, runs: int, seed: int, epochs: int, patience: int,
             groups_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """Separation, alone and left-out AUCs of every feature (module docstring)."""
    from lhcml.metrics import fastcalo as fm
    from lhcml.tasks.fastcalo.evaluate import features_of

    layers, coords = list(ref.binning.layer_names), list(ref.binning.coordinate_names)
    fr, fg = features_of(ref), features_of(gen)
    seps = fm.separation_powers(fr, fg)
    cr, cg = feature_columns(fr, layers, coords), feature_columns(fg, layers, coords)
    ler, leg = np.log10(ref.energies)[:, None], np.log10(gen.energies)[:, None]
    full_names = classifier_set(layers, coords)

    def mat(cols: dict[str, np.ndarray], loge: np.ndarray, names: list[str]) -> np.ndarray:
        return np.concatenate([loge] + [cols[k][:, None] for k in names], axis=1)

    def auc(names: list[str]) -> dict[str, float]:
        return auc_of(mat(cr, ler, names), mat(cg, leg, names), runs, seed, epochs, patience)

    out: dict[str, Any] = {"n_per_class": int(min(len(ref), len(gen))), "separation": seps}
    t0 = time.time()
    out["full"] = auc(full_names)
    out["E_inc_only"] = auc([])
    print(f"  full {out['full']['mean']:.3f}, E_inc only {out['E_inc_only']['mean']:.3f} ({time.time() - t0:.0f} s)",
          flush=True)  # fmt: skip
    out["alone"] = {}
    for k in cr:
        out["alone"][k] = auc([k])
        print(f"  alone {k}: {out['alone'][k]['mean']:.3f}", flush=True)
    groups = {"all layer energies": [f"E_{n}" for n in layers],
              "all centroids": [k for k in full_names if k.startswith("centroid_")],
              "all widths": [k for k in full_names if k.startswith("width_")]}  # fmt: skip
    for n in layers:
        groups[f"layer {n}"] = [k for k in full_names if k.endswith(f"_{n}")]
    out["left_out"] = {}
    left = dict(groups) if groups_only else {**{k: [k] for k in full_names}, **groups}
    for k, drop in left.items():
        out["left_out"][k] = auc([c for c in full_names if c not in drop])
        print(f"  left out {k}: {out['left_out'][k]['mean']:.3f}", flush=True)
    return out


def print_tables(name: str, res: dict[str, Any]) -> None:
    print(f"\n[{name}] full high-level AUC {res['full']['mean']:.3f} ± {res['full']['std']:.3f}; "
          f"log10 E_inc alone {res['E_inc_only']['mean']:.3f}")  # fmt: skip
    print("| feature | separation | AUC alone (+E_inc) | AUC full set without it |")
    print("|---|---|---|---|")
    for k in sorted(res["alone"], key=lambda k: -res["alone"][k]["mean"]):
        a = res["alone"][k]
        lo = res["left_out"].get(k)
        # "—": not left out alone (--groups-only, or E_ratio/sparsity: not in the classifier's set)
        los = f"{lo['mean']:.3f} ± {lo['std']:.3f}" if lo else "—"
        print(f"| {k} | {res['separation'].get(k, float('nan')):.3f} | {a['mean']:.3f} ± {a['std']:.3f} | {los} |")
    print("| group left out | | | AUC |")
    for k, v in res["left_out"].items():
        if k not in res["alone"]:
            print(f"| {k} | | | {v['mean']:.3f} ± {v['std']:.3f} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--binning", type=Path, required=True)
    ap.add_argument("--checkpoint", nargs="+", required=True, metavar="NAME=CKPT")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7, help="generation seed and first classifier seed")
    ap.add_argument("--max-showers", type=int, default=None)
    ap.add_argument("--groups-only", action="store_true", help="leave out groups only, not each column")
    ap.add_argument("--spot-readout", type=float, default=None, metavar="FRACTION",
                    help="read generated cells as the detailed simulation's energy spots (as benchmarks/fastcalo.py)")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args(argv)

    from lhcml.atomic import atomic_write_text
    from lhcml.data.calochallenge import read_binning, read_showers
    from lhcml.formatting import json_safe
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.tasks.fastcalo.readout import SpotReadout
    from lhcml.train.fastcalo import load_generator

    b = read_binning(args.binning)
    ref = read_showers(args.reference, b, max_showers=args.max_showers)
    results: dict[str, Any] = {"reference": str(args.reference), "n_reference": len(ref), "runs": args.runs,
                               "epochs": args.epochs, "seed": args.seed, "spot_readout": args.spot_readout,
                               "models": {}}  # fmt: skip
    readout = None if args.spot_readout is None else SpotReadout.from_geometry(fraction=args.spot_readout)
    for spec in args.checkpoint:
        name, _, ckpt = spec.partition("=")
        if not ckpt:
            raise SystemExit(f"--checkpoint takes NAME=CKPT, got {spec!r}")
        t0 = time.time()
        model, _ = load_generator(Path(ckpt))
        gen = generate_sample(model, ref, args.seed, readout=readout)
        print(f"[{name}] generated {len(gen)} showers", flush=True)
        results["models"][name] = diagnose(ref, gen, args.runs, args.seed, args.epochs, args.patience,
                                           args.groups_only)  # fmt: skip
        results["models"][name]["wall_s"] = time.time() - t0
        print_tables(name, results["models"][name])
        # after every model: a long run stopped half-way keeps what it measured
        atomic_write_text(args.output, json.dumps(json_safe(results), indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
