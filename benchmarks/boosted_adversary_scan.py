"""λ / warm-up scan of the adversarial (pivot) mass decorrelation of the PFN; prints a table.

Uses the train/val/test split written by ``benchmarks/boosted_taggers.py`` (``--work``)::

    python benchmarks/boosted_adversary_scan.py --data runs/bench --work runs/adv_scan \
        --lambdas 0.1 0.3 0.6 1 3 --warmup 150 --epochs 10 --batch-size 64

Each row: AUC, R50 (QCD rejection at 50 % top efficiency) and 1/JSD50 of the QCD mass on the
test file, for the checkpoint the trainer selects (lowest ``val_loss``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "jets"


def train_and_score(config: str, files: dict[str, Path], work: Path, epochs: int, overrides: list[str],
                    tag: str) -> tuple[dict[str, float], float]:  # fmt: skip
    """Train ``configs/jets/<config>.yaml`` on ``files``, predict the test file, score it:
    ``({auc, r50, inv_jsd50}, training seconds)`` (top vs QCD, discriminant ln(p_top/p_qcd))."""
    from lhcml.data.h5 import open_h5
    from lhcml.metrics.classification import auc
    from lhcml.metrics.discriminants import discriminant
    from lhcml.tasks.boosted.frontier import frontier_point
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    cfg = load_train_config(CONFIGS / f"{config}.yaml", [
        f"data.train_files=[{files['train']}]", f"data.val_files=[{files['val']}]",
        f"output_dir={work / 'runs' / tag}", f"trainer.max_epochs={epochs}", "trainer.patience=null",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"tagger_name={tag}", *overrides,
    ])  # fmt: skip
    t0 = time.perf_counter()
    ckpt = train(cfg)
    dt = time.perf_counter() - t0
    (pred,) = predict(ckpt, [files["test"]], output_dir=work / "pred" / tag)
    with open_h5(pred) as f:
        j = f["jets"][:]
    sig, bkg = j["R10TruthLabel"] == 1, j["R10TruthLabel"] == 0
    d = discriminant({"top": j[f"{tag}_ptop"], "qcd": j[f"{tag}_pqcd"]}, "top", {"qcd": 1.0})
    r50, ijsd = frontier_point(d, sig, bkg, j["mass"].astype(np.float64))
    return {"auc": float(auc(d[sig], d[bkg])), "r50": r50, "inv_jsd50": ijsd}, dt


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with train.h5, val.h5, test.h5")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 0.6, 1.0, 3.0])
    ap.add_argument("--warmup", type=int, default=150, help="adversary warm-up steps")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = {k: args.data / f"{k}.h5" for k in ("train", "val", "test")}
    common = [f"data.batch_size={args.batch_size}", f"seed={args.seed}"]
    runs = [("pfn", "pfn", [])]
    for lam in args.lambdas:
        tag = f"pfn_adv{lam:g}".replace(".", "p")
        runs.append((tag, "pfn_adv", [
            f"extra_losses=[{{name: adversary, weight: 1.0, grl_lambda: {lam}, n_classes: 2, "
            f"warmup_steps: {args.warmup}}}]"
        ]))  # fmt: skip
    print(f"{'tagger':16s} {'AUC':>6s} {'R50':>7s} {'1/JSD50':>8s} {'train s':>8s}")
    for tag, cfg, ov in runs:
        m, dt = train_and_score(cfg, files, args.work, args.epochs, common + ov, tag)
        print(f"{tag:16s} {m['auc']:6.3f} {m['r50']:7.2f} {m['inv_jsd50']:8.2f} {dt:8.0f}", flush=True)


if __name__ == "__main__":
    main()
