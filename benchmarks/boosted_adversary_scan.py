"""Decorrelation frontier of the PFN (nominal, DisCo and adversary λ scans, several seeds) with
the τ21 / DDT-τ21 baselines; prints a table (mean ± spread over the seeds).

Uses the train/val/test split written by ``benchmarks/boosted_taggers.py`` (``--work``)::

    python benchmarks/boosted_adversary_scan.py --data runs/bench --work runs/adv_scan \
        --lambdas 0.1 0.3 0.6 1 3 --warmup 150 --epochs 10 --batch-size 64

    # full frontier, two seeds, results kept in (and resumed from) --work/results.json:
    python benchmarks/boosted_adversary_scan.py --data DATA --work WORK --seeds 1 2 \
        --disco 1 10 50 --lambdas 0.3 1 3 --warmup 150 --epochs 6 --batch-size 64

Each row: AUC, R50 (QCD rejection at 50 % top efficiency) and 1/JSD50 of the QCD mass on the
test file, for the checkpoint the trainer selects (lowest ``val_loss``). Every trained row uses
the same batch size, epochs and seed list. The DDT slope is fitted on the QCD jets of the
*training* file (independent of the test jets), in the ρ' ranges of ``--ddt-ranges``; a DDT
fitted on the test QCD jets themselves (the convention of ``boosted_taggers.py``) is added for
comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "jets"


def train_and_score(config: str, files: dict[str, Path], work: Path, epochs: int, overrides: list[str],
                    tag: str, run: str | None = None) -> tuple[dict[str, float], float]:  # fmt: skip
    """Train ``configs/jets/<config>.yaml`` on ``files``, predict the test file, score it:
    ``({auc, r50, inv_jsd50, checkpoint}, training seconds)`` (top vs QCD, discriminant
    ln(p_top/p_qcd)). ``tag``: column prefix; ``run``: run/prediction folder name (default ``tag``)."""
    from lhcml.data.h5 import open_h5
    from lhcml.metrics.classification import auc
    from lhcml.metrics.discriminants import discriminant
    from lhcml.tasks.boosted.frontier import frontier_point
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    run = run or tag
    cfg = load_train_config(CONFIGS / f"{config}.yaml", [
        f"data.train_files=[{files['train']}]", f"data.val_files=[{files['val']}]",
        f"output_dir={work / 'runs' / run}", f"trainer.max_epochs={epochs}", "trainer.patience=null",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"tagger_name={tag}", *overrides,
    ])  # fmt: skip
    t0 = time.perf_counter()
    ckpt = train(cfg)
    dt = time.perf_counter() - t0
    (pred,) = predict(ckpt, [files["test"]], output_dir=work / "pred" / run)
    with open_h5(pred) as f:
        j = f["jets"][:]
    sig, bkg = j["R10TruthLabel"] == 1, j["R10TruthLabel"] == 0
    d = discriminant({"top": j[f"{tag}_ptop"], "qcd": j[f"{tag}_pqcd"]}, "top", {"qcd": 1.0})
    r50, ijsd = frontier_point(d, sig, bkg, j["mass"].astype(np.float64))
    return {"auc": float(auc(d[sig], d[bkg])), "r50": r50, "inv_jsd50": ijsd, "checkpoint": Path(ckpt).name}, dt


def trained_rows(disco: list[float], lambdas: list[float], warmup: int) -> list[tuple[str, str, list[str]]]:
    """``(tag, config, overrides)`` of the PFN rows: nominal, DisCo at each λ, adversary at each λ."""
    rows = [("pfn", "pfn", [])]
    for lam in disco:
        rows.append((f"pfn_disco{lam:g}".replace(".", "p"), "pfn_disco", [
            f"extra_losses=[{{name: disco, weight: {lam}, signal_class: 1, background_classes: [0]}}]"
        ]))  # fmt: skip
    for lam in lambdas:
        rows.append((f"pfn_adv{lam:g}".replace(".", "p"), "pfn_adv", [
            f"extra_losses=[{{name: adversary, weight: 1.0, grl_lambda: {lam}, n_classes: 2, "
            f"warmup_steps: {warmup}}}]"
        ]))  # fmt: skip
    return rows


def baselines(files: dict[str, Path], ranges: list[tuple[float, float]]) -> list[dict]:
    """τ21 and DDT-τ21 frontier points on the test file: DDT fitted on the training file's QCD
    jets for each ρ' range, and on the test QCD jets (1.5-4.0) for comparison."""
    from lhcml.tasks.boosted.frontier import fit_ddt_files, frontier_points

    out = []
    for lo, hi in ranges:
        ddt = fit_ddt_files([files["train"]], fit_range=(lo, hi))
        rows = frontier_points([files["test"]], {}, ddt=ddt)
        if not out:
            out.append(rows[0])  # plain τ21 once
        r = rows[1]
        r.update(tagger=f"DDT τ21, train-QCD fit {lo:g}-{hi:g} (M={ddt.slope:.3f} ± {ddt.slope_err:.3f})",
                 ddt_chi2_ndf=ddt.chi2 / max(ddt.ndf, 1))  # fmt: skip
        out.append(r)
    rows = frontier_points([files["test"]], {})  # DDT fitted on the test QCD jets, 1.5-4.0
    rows[1]["tagger"] = f"DDT τ21, test-QCD fit 1.5-4 (M={rows[1]['ddt_slope']:.3f})"
    out.append(rows[1])
    return out


def summarise(values: list[float]) -> str:
    """``mean ± s`` (s: sample standard deviation over the seeds; ``mean`` alone for one seed)."""
    from lhcml.formatting import pm

    v = np.asarray(values, dtype=np.float64)
    return pm(v.mean(), v.std(ddof=1) if len(v) > 1 else None, digits_without_error=3)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with train.h5, val.h5, test.h5")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--lambdas", type=float, nargs="*", default=[0.1, 0.3, 0.6, 1.0, 3.0],
                    help="adversary (gradient-reversal) strengths")  # fmt: skip
    ap.add_argument("--disco", type=float, nargs="*", default=[], help="DisCo weights λ (none by default)")
    ap.add_argument("--warmup", type=int, default=150, help="adversary warm-up steps")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--ddt-ranges", type=float, nargs="+", default=[1.5, 4.0, 2.0, 4.5],
                    help="pairs lo hi of rho' ranges for the DDT fit on the training QCD jets")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = {k: args.data / f"{k}.h5" for k in ("train", "val", "test")}
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "results.json"  # one entry per (tag, seed): the scan resumes from it
    done: dict[str, dict] = json.loads(store.read_text()) if store.exists() else {}
    rows = trained_rows(args.disco, args.lambdas, args.warmup)
    print(f"{'tagger':16s} {'seed':>4s} {'AUC':>6s} {'R50':>7s} {'1/JSD50':>8s} {'train s':>8s}  checkpoint")
    for seed in args.seeds:
        common = [f"data.batch_size={args.batch_size}", f"seed={seed}"]
        for tag, cfg, ov in rows:
            key = f"{tag}/seed{seed}/e{args.epochs}/b{args.batch_size}/w{args.warmup}"
            if key not in done:
                m, dt = train_and_score(cfg, files, args.work, args.epochs, common + ov, tag, f"{tag}_s{seed}")
                done[key] = {**m, "train_s": dt}
                from lhcml.atomic import atomic_write_text

                atomic_write_text(store, json.dumps(done, indent=1))
            m = done[key]
            print(f"{tag:16s} {seed:4d} {m['auc']:6.3f} {m['r50']:7.2f} {m['inv_jsd50']:8.2f} {m['train_s']:8.0f}  "
                  f"{m['checkpoint']}", flush=True)  # fmt: skip

    print(f"\nfrontier ({len(args.seeds)} seed(s): mean ± standard deviation over seeds)")
    print(f"{'tagger':58s} {'AUC':>14s} {'R50':>14s} {'1/JSD50':>14s}")
    points = []
    for tag, _, _ in rows:
        ms = [done[f"{tag}/seed{s}/e{args.epochs}/b{args.batch_size}/w{args.warmup}"] for s in args.seeds]
        print(f"{tag:58s} {summarise([m['auc'] for m in ms]):>14s} {summarise([m['r50'] for m in ms]):>14s} "
              f"{summarise([m['inv_jsd50'] for m in ms]):>14s}")  # fmt: skip
        points.append({"tagger": tag, "r50": float(np.mean([m["r50"] for m in ms])),
                       "inv_jsd50": float(np.mean([m["inv_jsd50"] for m in ms]))})  # fmt: skip
    r = args.ddt_ranges
    for b in baselines(files, [(r[i], r[i + 1]) for i in range(0, len(r) - 1, 2)]):
        extra = f"  (χ²/ndf {b['ddt_chi2_ndf']:.1f})" if "ddt_chi2_ndf" in b else ""
        print(f"{b['tagger']:58s} {'':>14s} {b['r50']:14.3g} {b['inv_jsd50']:14.3g}{extra}")
        points.append(b)
    from lhcml.tasks.boosted.frontier import frontier_plot

    print(f"plot: {frontier_plot(points, args.work / 'frontier.png')}")


if __name__ == "__main__":
    main()
