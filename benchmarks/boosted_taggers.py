"""Boosted top tagging on lhcml-simulated jets: every shipped tagger, decorrelation, robustness.

Steps (all through the public lhcml functions, i.e. what the CLI does):

1. merge ``lhcml simulate top`` and ``lhcml simulate qcd_boosted`` shards, shuffle, split
   60/20/20 (``--split``) into train/val/test flat files and add the substructure fields;
2. train every ``configs/jets`` tagger (``lhcml train``; budget below), predict the test file;
3. AUC, accuracy, 1/εB at εS = 0.3 and 0.5 and 1/JSD50 (METRICS' functions);
4. decorrelation frontier: PFN nominal, DisCo and adversary at several λ, τ21 and DDT-τ21;
5. robustness: the test file with varied constituents (``lhcml jets vary``: 10 % pT smearing,
   0.01 angular smearing, 3 % constituent loss) and, if given, a sample at another ⟨μ⟩.

Usage::

    python benchmarks/boosted_taggers.py --top SIMDIR_TOP --qcd SIMDIR_QCD --work runs/bench_boosted \
        [--epochs 4] [--models pfn efn ...] [--mu-top DIR --mu-qcd DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from lhcml.config import read_yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "jets"
# ParticleNet / ParT at the published sizes need hours on 2 shared CPU cores: shrunk with the
# overrides of benchmarks/cpu_model_sizes.yaml (shared with boosted_multiclass.py)
SHRINK: dict[str, list[str]] = read_yaml(Path(__file__).with_name("cpu_model_sizes.yaml"))
#: extra overrides for every NN tagger (``--bucket``: data.bucket_by_length=true)
NN_EXTRA: list[str] = []
MODELS = ["bdt_substructure", "efn", "pfn", "lola", "jet_image_cnn", "particlenet", "part"]


def merge_split(dirs: list[str], work: Path, seed: int = 0, max_jets: int | None = None,
                fractions: tuple[float, float] = (0.6, 0.2), reuse: bool = False) -> dict[str, Path]:  # fmt: skip
    """Merge shards of several simulation outputs, shuffle, split train/val/test, add substructure.

    ``fractions``: training and validation fractions (the rest is test). ``reuse``: keep
    existing ``train/val/test.h5`` in ``work`` (the split is deterministic for a given seed).
    """
    if reuse and all((work / f"{n}.h5").exists() for n in ("train", "val", "test")):
        return {n: work / f"{n}.h5" for n in ("train", "val", "test")}
    from lhcml.data.files import expand_inputs
    from lhcml.data.h5 import write_h5
    from lhcml.tasks.boosted.substructure import add_substructure_to_file

    jets, flow = [], []
    for d in dirs:
        for f in expand_inputs(d):  # the directory's *.h5 files, sorted
            if "pileup" in f.name:
                continue
            with h5py.File(f) as h:
                jets.append(h["jets"][:])
                flow.append(h["flow"][:])
    jets, flow = np.concatenate(jets), np.concatenate(flow)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(jets))[:max_jets]
    jets, flow = jets[order], flow[order]
    n = len(jets)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    cuts = {"train": (0, a), "val": (a, b), "test": (b, n)}
    out = {}
    for name, (a, b) in cuts.items():
        p = work / f"{name}.h5"
        write_h5(p, {"jets": jets[a:b], "flow": flow[a:b]})
        add_substructure_to_file(p, progress=False)
        out[name] = p
    return out


def metrics(path: Path, prefix: str) -> dict[str, float]:
    """AUC, accuracy, R30, R50, 1/JSD50 of a tagger's top-vs-QCD outputs in a prediction file."""
    from lhcml.metrics.classification import auc
    from lhcml.metrics.discriminants import discriminant
    from lhcml.metrics.rejection import rejection_at_efficiency
    from lhcml.tasks.boosted.frontier import frontier_point

    with h5py.File(path) as f:
        j = f["jets"][:]
    lab = j["R10TruthLabel"]
    sig, bkg = lab == 1, lab == 0
    d = discriminant({"top": j[f"{prefix}_ptop"], "qcd": j[f"{prefix}_pqcd"]}, "top", {"qcd": 1.0})
    acc = float(np.mean((j[f"{prefix}_ptop"] > j[f"{prefix}_pqcd"]) == sig)) if (sig | bkg).all() else float("nan")
    r50, ijsd = frontier_point(d, sig, bkg, j["mass"].astype(float))  # 1/JSD50 NaN when undefined
    return {
        "auc": float(auc(d[sig], d[bkg])),
        "accuracy": acc,
        "r30": float(rejection_at_efficiency(d[sig], d[bkg], 0.3)[0]),
        "r50": r50,
        "inv_jsd50": ijsd,
    }


def train_predict(name: str, files: dict[str, Path], work: Path, epochs: int, extra: list[str] | None = None,
                  tag: str | None = None) -> tuple[str, Path, float, int, Path]:  # fmt: skip
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    tag = tag or name
    base = name.split("_")[0] if name.split("_")[0] in SHRINK else name
    ov = [
        f"data.train_files=[{files['train']}]", f"data.val_files=[{files['val']}]",
        f"output_dir={work / 'runs' / tag}", f"trainer.max_epochs={epochs}", "trainer.patience=null",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"tagger_name={tag}",
        *SHRINK.get(base, []), *(NN_EXTRA if name != "bdt_substructure" else []), *(extra or []),
    ]  # fmt: skip
    cfg = load_train_config(CONFIGS / f"{name}.yaml", ov)
    with h5py.File(files["train"]) as f:
        n_train = len(f["jets"])
    t0 = time.perf_counter()
    ckpt = train(cfg)
    dt = time.perf_counter() - t0
    (pred,) = predict(ckpt, [files["test"]], output_dir=work / "pred" / tag)
    return tag, pred, dt, n_train * epochs, Path(ckpt)


def robustness_mu(top: str, qcd: str, work: Path, ckpts: dict[str, Path], results: dict) -> None:
    """Evaluate the trained taggers on a sample simulated at another <mu>; print R50 changes."""
    from lhcml.train.predict import predict

    mu_dir = work / "mu"
    mu_dir.mkdir(exist_ok=True)
    mu_files = merge_split([top, qcd], mu_dir)  # all three splits are test jets here
    with h5py.File(mu_files["train"]) as f:
        mu = float(np.mean(f["jets"]["averageInteractionsPerCrossing"][:]))
    print(f"\nrobustness (sample at <mu> = {mu:.0f}, {sum(len(h5py.File(p)['jets']) for p in mu_files.values())} jets):")
    for m, ck in ckpts.items():
        rows = []
        for name, p in mu_files.items():
            (pv,) = predict(ck, [p], output_dir=mu_dir / "pred" / m / name)
            rows.append(pv)
        # concatenate the three parts for the statistics
        jets = np.concatenate([h5py.File(p)["jets"][:] for p in rows])
        tmp = mu_dir / f"pred_{m}.h5"
        from lhcml.data.h5 import write_h5

        write_h5(tmp, {"jets": jets})
        mv = metrics(tmp, m)
        results[m]["r50_mu"] = mv["r50"]
        results[m]["auc_mu"] = mv["auc"]
        print(f"  {m:18s} R50 {results[m]['r50']:.2f} -> {mv['r50']:.2f} ({mv['r50'] / results[m]['r50'] - 1:+.1%}), "
              f"AUC {results[m]['auc']:.4f} -> {mv['auc']:.4f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--top", required=True)
    ap.add_argument("--qcd", required=True)
    ap.add_argument("--work", default="runs/bench_boosted")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-jets", type=int, default=None)
    ap.add_argument("--split", nargs=2, type=float, default=[0.6, 0.2], help="train and val fractions")
    ap.add_argument("--reuse-split", action="store_true", help="keep existing train/val/test.h5 in --work")
    ap.add_argument("--bucket", action="store_true", help="data.bucket_by_length=true for the NN taggers")
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--disco", nargs="*", type=float, default=[1.0, 10.0, 50.0])
    ap.add_argument("--adv", nargs="*", type=float, default=[0.3, 1.0])  # λ >= 3 collapsed the PFN
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mu-top", default=None, help="top sample at another <mu> (robustness)")
    ap.add_argument("--mu-qcd", default=None, help="QCD sample at another <mu> (robustness)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.bucket:
        NN_EXTRA.append("data.bucket_by_length=true")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = merge_split([args.top, args.qcd], work, max_jets=args.max_jets, fractions=tuple(args.split),
                        reuse=args.reuse_split)  # fmt: skip
    with h5py.File(files["test"]) as f:
        lab = f["jets"]["R10TruthLabel"][:]
    with h5py.File(files["train"]) as f:
        n_tr = len(f["jets"])
    print(f"jets: train {n_tr}, test {len(lab)} (top {int((lab == 1).sum())}, qcd {int((lab == 0).sum())})")

    results: dict[str, dict] = {}
    preds: dict[str, Path] = {}
    ckpts: dict[str, Path] = {}
    for m in args.models:
        tag, pred, dt, seen, ckpts[m] = train_predict(m, files, work, args.epochs)
        preds[tag] = pred
        results[tag] = {**metrics(pred, tag), "train_s": dt, "train_jets_per_s": seen / dt}
        print(f"{tag:18s} " + " ".join(f"{k}={v:.4g}" for k, v in results[tag].items()), flush=True)

    # decorrelation frontier with PFN (nominal, DisCo and adversary λ scans), τ21 and DDT
    from lhcml.tasks.boosted.frontier import frontier_plot, frontier_points

    taggers = {"PFN": "pfn"} if "pfn" in preds else {}
    for lam in args.disco:
        tag = f"pfn_disco{lam:g}".replace(".", "p")
        _, preds[tag], _, _, _ = train_predict("pfn_disco", files, work, args.epochs, [f"extra_losses=[{{name: disco, weight: {lam}, signal_class: 1, background_classes: [0]}}]"], tag)
        taggers[f"PFN DisCo λ={lam:g}"] = tag
    for lam in args.adv:
        tag = f"pfn_adv{lam:g}".replace(".", "p")
        # warm-up as the shipped pfn_adv.yaml (200 steps): without it the checkpoint selection
        # keeps an epoch before the adversary acted (docs/benchmarks/boosted.md, pivot section)
        _, preds[tag], _, _, _ = train_predict("pfn_adv", files, work, args.epochs, [f"extra_losses=[{{name: adversary, weight: 1.0, grl_lambda: {lam}, n_classes: 2, warmup_steps: 200}}]"], tag)
        taggers[f"PFN adversary λ={lam:g}"] = tag
    # all predictions into one file for the frontier
    merged = work / "pred_all.h5"
    from numpy.lib import recfunctions as rfn

    from lhcml.data.h5 import write_h5

    with h5py.File(files["test"]) as f:
        base = f["jets"][:]
        flow = f["flow"][:]
    cols = {}
    for tag, p in preds.items():
        with h5py.File(p) as f:
            j = f["jets"][:]
        for c in j.dtype.names:
            if c.startswith(tag + "_"):
                cols[c] = j[c]
    write_h5(merged, {"jets": rfn.append_fields(base, list(cols), list(cols.values()), usemask=False), "flow": flow})
    rows = frontier_points([merged], taggers)
    frontier_plot(rows, work / "frontier.png")
    print("\nfrontier (R50 vs 1/JSD50, 50 mass bins over the QCD mass range):")
    for r in rows:
        print(f"  {r['tagger']:28s} R50={r['r50']:8.2f} 1/JSD50={r['inv_jsd50']:8.2f}")

    # robustness: varied constituents
    from lhcml.tasks.boosted.robustness import write_varied_file
    from lhcml.train.predict import predict

    varied = write_varied_file(files["test"], work / "test_varied.h5", seed=5, progress=False)
    print("\nrobustness (test sample with varied constituents):")
    for m in args.models:
        (pv,) = predict(ckpts[m], [varied], output_dir=work / "pred_varied" / m)
        mv = metrics(pv, m)
        results[m]["r50_varied"] = mv["r50"]
        results[m]["auc_varied"] = mv["auc"]
        print(f"  {m:18s} R50 {results[m]['r50']:.2f} -> {mv['r50']:.2f} ({mv['r50'] / results[m]['r50'] - 1:+.1%}), "
              f"AUC {results[m]['auc']:.4f} -> {mv['auc']:.4f}")  # fmt: skip
    if args.mu_top and args.mu_qcd:
        robustness_mu(args.mu_top, args.mu_qcd, work, ckpts, results)
    (work / "results.json").write_text(json.dumps({"taggers": results, "frontier": rows}, indent=1))
    print(f"\nresults: {work / 'results.json'}; frontier plot: {work / 'frontier.png'}")


if __name__ == "__main__":
    sys.exit(main())
