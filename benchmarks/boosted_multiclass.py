"""Multi-class boosted tagging benchmark: t / W / Z / H→bb / QCD large-R jets, 250-1500 GeV.

Runs the whole chain on the wide-pT boosted processes (``top_wide``, ``wz_wide``, ``hbb_wide``,
``qcd_wide``: pT-hat 200-1700 GeV with Pythia's pT-hat bias, jets 250 < pT < 1500 GeV, |η| < 2,
signal jets only when the t/W/Z/H and its decay quarks are contained) and trains the shipped
``configs/jets`` taggers as five-class classifiers [qcd, top, W, Z, Hbb]::

    nice -n 15 python benchmarks/boosted_multiclass.py --work benchmarks/_work/boosted_mc \\
        --events top_wide=6500 wz_wide=14000 hbb_wide=5500 qcd_wide=3000
    python benchmarks/boosted_multiclass.py --work benchmarks/_work/boosted_mc --steps table

Steps (``--steps``, in this order; each skips what it already finished):

``simulate``
    ``lhcml simulate <process> --mu 0`` for the four processes (``WORK/sim/<process>``,
    resumable shard by shard).
``split``
    Complete shards merged, at most ``--max-per-class`` jets per class, shuffled, split 60/20/20
    into ``WORK/data/{train,val,test}.h5``; substructure observables added; per-class
    flattening weights ``flat_weight`` (:func:`lhcml.tasks.boosted.samples.flattening_weights`:
    every class flat in pT over ``--pt-bins`` and, with ``--mass-bins N > 1``, also in mass;
    jets outside 250-1500 GeV or 0-300 GeV get weight 0; ``--base-weight mcEventWeight``
    multiplies in Pythia's bias weight, off by default because it leaves an effective sample size
    of ~1/7 of the QCD jets).
``train``
    The ``--models`` (default bdt_substructure pfn particlenet part) from the shipped configs
    with ``--set``-style overrides: five classes, ``data.weight_field=flat_weight``,
    ParticleNet/ParT shrunk as in ``benchmarks/boosted_taggers.py``, ``--epochs MODEL=N``,
    optional ``--minutes MODEL=MIN`` time budget (stops after the last epoch that fits).
``predict``
    Every trained model's ``<model>_p{qcd,top,W,Z,H}`` into ``WORK/pred/test.h5``.
``evaluate``
    ``lhcml.evaluation`` once per signal class s ∈ {top, W, Z, Hbb} with
    D_s = ln(p_s / p_qcd) (AUC, 1/εB(QCD) at εS = 0.3/0.5, ROC with ratio panels, rejection vs pT,
    multi-class accuracy, HTML report) and once for W vs Z (D = ln(p_W / p_Z)), unweighted (the
    sampled spectra; ``--eval-weight flat_weight`` for flat pT); plus the row-normalised
    confusion matrix (``WORK/eval/confusion.png``).
``table``
    Prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_update_json
from lhcml.config import read_yaml
from lhcml.formatting import pm
from lhcml.sim.runner import finished_shards
from lhcml.train.budget import TimeBudget

ROOT = Path(__file__).resolve().parents[1]
#: ParticleNet/ParT sizes for a 2-core CPU (shared with boosted_taggers.py)
SHRINK: dict[str, list[str]] = read_yaml(ROOT / "benchmarks" / "cpu_model_sizes.yaml")

CONFIGS = ROOT / "configs" / "jets"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


STEPS = ("simulate", "split", "train", "predict", "evaluate", "table")
PROCESSES = ("top_wide", "wz_wide", "hbb_wide", "qcd_wide")
CLASSES = ("qcd", "top", "W", "Z", "Hbb")  # R10TruthLabel 0..4, labels.yaml scheme `boosted`
OUTPUTS = ("pqcd", "ptop", "pW", "pZ", "pH")
SIGNALS = ("top", "W", "Z", "Hbb")
MODELS = ("bdt_substructure", "pfn", "efn", "lola", "particlenet", "part", "jet_image_cnn")
LABELS = {"bdt_substructure": "BDT (substructure)", "pfn": "PFN", "efn": "EFN", "lola": "LoLa",
          "particlenet": "ParticleNet (shrunk)", "part": "ParT (shrunk)", "jet_image_cnn": "Jet-image CNN"}  # fmt: skip
PT_BINS_REPORT = [250, 400, 600, 900, 1500]
#: networks trained on length-bucketed batches by default: those without BatchNorm. In a
#: bucketed batch every jet has about the same constituent multiplicity (which tracks pT and the
#: class), so the BatchNorm of LoLa, ParticleNet, ParT and the CNN normalises with per-batch
#: statistics in training that differ from the running statistics it uses in validation; their
#: validation loss rose from the second epoch on (docs/benchmarks/boosted_multiclass.md)
BUCKET = ("pfn", "efn")


def _kv(items: list[str], cast: Any = int) -> dict[str, Any]:
    out = {}
    for it in items:
        key, _, val = it.partition("=")
        if not val:
            raise SystemExit(f"expected KEY=VALUE, got '{it}'")
        out[key] = cast(val)
    return out


# ------------------------------------------------------------------------------------------------
def step_simulate(args: argparse.Namespace, work: Path) -> None:
    seeds = {p: 21 + i for i, p in enumerate(PROCESSES)}
    for proc in PROCESSES:
        n = args.events.get(proc, 0)
        if n <= 0:
            continue
        out = work / "sim" / proc
        cmd = [str(ROOT / ".venv" / "bin" / "lhcml"), "simulate", proc, "-n", str(n), "-o", str(out), "--mu", "0",
               "--seed", str(seeds[proc]), "--events-per-shard", str(args.shard), "--quiet"]  # fmt: skip
        _log(" ".join(cmd[1:]))
        t0 = time.time()
        subprocess.run(cmd, check=True)
        atomic_update_json(work / "sim" / "timing.json", {proc: {"events": n, "wall_s": time.time() - t0}})


def _load(work: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    jets, flow = [], []
    for proc in PROCESSES:
        shards = finished_shards(work / "sim" / proc, proc)
        if not shards:
            raise SystemExit(f"no complete shards of {proc} in {work / 'sim' / proc}: run --steps simulate")
        for f in shards:
            with h5py.File(f) as h:
                j = h["jets"][:]
                keep = j["R10TruthLabel"] == 0 if proc == "qcd_wide" else np.ones(len(j), bool)
                jets.append(j[keep])
                flow.append(h["flow"][:][keep])
    return np.concatenate(jets), np.concatenate(flow)


def step_split(args: argparse.Namespace, work: Path) -> None:
    from lhcml.data.h5 import write_h5
    from lhcml.tasks.boosted.samples import add_flattening_weights
    from lhcml.tasks.boosted.substructure import add_substructure_to_file

    data = work / "data"
    if (data / "summary.json").exists():
        _log("split: done before")
        return
    data.mkdir(parents=True, exist_ok=True)
    jets, flow = _load(work)
    rng = np.random.default_rng(args.seed)
    lab = jets["R10TruthLabel"]
    keep = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(lab == c)
        keep.append(rng.permutation(idx)[: args.max_per_class])
    order = rng.permutation(np.concatenate(keep))
    jets, flow = jets[order], flow[order]
    n = len(jets)
    cuts = {"train": (0, int(0.6 * n)), "val": (int(0.6 * n), int(0.8 * n)), "test": (int(0.8 * n), n)}
    pt_bins = np.asarray(args.pt_bins, float) * 1e3
    mass_bins = np.linspace(0.0, 300e3, args.mass_bins + 1)
    summary: dict[str, Any] = {"pt_bins_gev": args.pt_bins, "mass_bins": args.mass_bins}
    for name, (a, b) in cuts.items():
        p = data / f"{name}.h5"
        write_h5(p, {"jets": jets[a:b], "flow": flow[a:b]})
        add_substructure_to_file(p, progress=False)
        add_flattening_weights(p, pt_bins=pt_bins, mass_bins=mass_bins, base_weight=args.base_weight, progress=False)
        lb = jets["R10TruthLabel"][a:b]
        summary[name] = {c: int((lb == i).sum()) for i, c in enumerate(CLASSES)}
    for i, c in enumerate(CLASSES):
        pt = jets["pt"][jets["R10TruthLabel"] == i] / 1e3
        summary.setdefault("pt_gev", {})[c] = [float(np.min(pt)), float(np.median(pt)), float(np.max(pt))]
        summary.setdefault("n_total", {})[c] = int(len(pt))
    (data / "summary.json").write_text(json.dumps(summary, indent=1))
    _log(f"split: {summary}")


def _train_one(args: argparse.Namespace, work: Path, model: str) -> None:
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train

    run = work / "train" / model
    info_file = run / "bench.json"
    if _read_json(info_file).get("best"):
        _log(f"train {model}: done before")
        return
    if run.exists():
        shutil.rmtree(run)
    data = work / "data"
    epochs = args.epochs.get(model, 1 if model == "bdt_substructure" else args.default_epochs)
    overrides = [
        f"data.train_files=[{data / 'train.h5'}]", f"data.val_files=[{data / 'val.h5'}]",
        f"data.classes=[{','.join(CLASSES)}]", "data.weight_field=flat_weight",
        "validation.signal=top", "validation.fractions={qcd: 1.0}",
        f"output_dir={run}", f"trainer.max_epochs={epochs}", "trainer.patience=null",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"tagger_name={model}",
        *SHRINK.get(model, []),
        *(["data.bucket_by_length=true"] if model in args.bucket else []),
        *([f"seed={args.train_seed}"] if args.train_seed is not None else []),
        *[o.split(":", 1)[1] for o in args.override if o.split(":", 1)[0] == model],
    ]  # fmt: skip
    cfg = load_train_config(CONFIGS / f"{model}.yaml", overrides)
    summary = _read_json(data / "summary.json")
    n_train = sum(summary["train"].values())
    n_train = min(cfg.data.num_jets_train or n_train, n_train)
    _log(f"train {model}: {n_train} jets, {epochs} epochs")
    budget = TimeBudget(args.minutes[model] * 60 if model in args.minutes else None)
    t0 = time.time()
    best = train(cfg, epoch_hooks=[budget])
    dt = time.time() - t0
    epochs_run = epochs
    metrics = run / "logs" / "metrics.csv"
    if metrics.exists():
        import csv

        with metrics.open() as fh:
            done = {r["epoch"] for r in csv.DictReader(fh) if r.get("epoch") and r.get("val_loss")}
        epochs_run = len(done) or epochs
    n_params = None
    if model != "bdt_substructure":
        from lhcml.train.predict import load_any

        _, net, _ = load_any(Path(best))
        n_params = int(sum(p.numel() for p in net.parameters()))
    info = {"best": str(best), "train_jets": n_train, "epochs": epochs_run, "wall_s": dt,
            "jets_per_s": n_train * (1 if model == "bdt_substructure" else epochs_run) / dt,
            "stopped_by_budget": budget.stopped_at, "n_params": n_params,
            "overrides": overrides[12:]}  # fmt: skip
    atomic_update_json(info_file, info)
    _log(f"train {model}: {dt:.0f} s, {epochs_run} epochs -> {best}")


def step_train(args: argparse.Namespace, work: Path) -> None:
    for m in args.models:
        _train_one(args, work, m)


def step_predict(args: argparse.Namespace, work: Path) -> None:
    from lhcml.train.predict import predict

    pred = work / "pred"
    pred.mkdir(exist_ok=True)
    test = pred / "test.h5"
    done = _read_json(pred / "done.json")
    if not test.exists():
        shutil.copy(work / "data" / "test.h5", test)
        done = {}
        (pred / "done.json").unlink(missing_ok=True)
    for m in args.models:
        best = _read_json(work / "train" / m / "bench.json").get("best")
        if not best or done.get(m) == best:
            continue
        _log(f"predict {m}")
        # ParT's pairwise features at batch 2000 need > 10 GB: small batches for the graph/attention nets
        predict(best, [test], tagger_name=m, batch_size=128 if m in ("part", "particlenet") else 2000)
        atomic_update_json(pred / "done.json", {m: best})


def _present(work: Path) -> list[str]:
    import h5py

    with h5py.File(work / "pred" / "test.h5") as h:
        names = set(h["jets"].dtype.names)
    return [m for m in MODELS if f"{m}_pqcd" in names]


def _eval_raw(work: Path, models: list[str], signal: str, background: str, weight: str | None) -> dict[str, Any]:
    return {
        "title": f"lhcml multi-class boosted benchmark: {signal} vs {background} (D = ln(p_{signal} / p_{background}))",
        "label_scheme": "boosted",
        "signal": signal,
        "backgrounds": [background],
        "fractions": {background: 1.0},
        "taggers": [{"name": m, "label": LABELS[m]} for m in models],
        "reference": "bdt_substructure" if "bdt_substructure" in models else models[0],
        "working_points": [0.3, 0.5, 0.7],
        "fixed_sig_effs": [0.3, 0.5],
        "rejection_vs_pt_wp": 0.5,
        "rejection_vs_pt_modes": ["flat_per_bin"],
        "weight": weight,
        "samples": [{"name": "wide", "files": [str(work / "pred" / "test.h5")], "pt_range": [250, 1500],
                     "pt_bins": PT_BINS_REPORT, "text": "Large-R jets, $250 < p_\\mathrm{T} < 1500$ GeV, $|\\eta| < 2$"}],
        "output_dir": str(work / "eval" / f"{signal}_vs_{background}"),
    }  # fmt: skip


def confusion(work: Path, models: list[str], weight: str | None) -> dict[str, list[list[float]]]:
    """Row-normalised (optionally weighted) confusion matrices; plot them side by side."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with h5py.File(work / "pred" / "test.h5") as h:
        j = h["jets"][:]
    lab = j["R10TruthLabel"].astype(int)
    w = np.ones(len(j)) if weight is None else j[weight].astype(float)
    out = {}
    fig, axes = plt.subplots(1, len(models), figsize=(3.3 * len(models), 3.4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        pred = np.argmax(np.stack([j[f"{m}_{o}"] for o in OUTPUTS], axis=1), axis=1)
        cm = np.zeros((len(CLASSES), len(CLASSES)))
        np.add.at(cm, (lab, pred), w)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1e-12)
        out[m] = cm.round(4).tolist()
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for a in range(len(CLASSES)):
            for b in range(len(CLASSES)):
                ax.text(b, a, f"{cm[a, b]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if cm[a, b] > 0.5 else "black")
        ax.set_xticks(range(len(CLASSES)), CLASSES, fontsize=8)
        ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_title(LABELS[m], fontsize=9)
    axes[0][0].set_ylabel("true", fontsize=8)
    fig.tight_layout()
    fig.savefig(work / "eval" / "confusion.png", dpi=90)
    plt.close(fig)
    return out


def step_evaluate(args: argparse.Namespace, work: Path) -> None:
    import yaml

    from lhcml.evaluation import EvaluateConfig, evaluate
    from lhcml.plots.report import build_report

    models = _present(work)
    (work / "eval").mkdir(exist_ok=True)
    pairs = [(s, "qcd") for s in SIGNALS] + [("W", "Z")]
    for s, b in pairs:
        raw = _eval_raw(work, models, s, b, args.eval_weight)
        _log(f"evaluate {s} vs {b}")
        evaluate(EvaluateConfig.model_validate(raw), config_text=yaml.safe_dump(raw, sort_keys=False))
        build_report(raw["output_dir"])
    cms = confusion(work, models, args.eval_weight)
    (work / "eval" / "confusion.json").write_text(json.dumps(cms, indent=1))


def _fmt(x: float | None, err: float | None = None, d: int = 1) -> str:
    if x is None or not np.isfinite(x):
        return "∞"  # no weighted background jet passes the cut
    return pm(x, err) if err is not None and np.isfinite(err) and err > 0 else f"{x:.{d}f}"


def step_table(args: argparse.Namespace, work: Path) -> str:
    if args.combine:
        text = seeds_table(args.combine)
        (work / "tables_seeds.md").write_text(text + "\n")
        return text
    lines: list[str] = []
    summary = _read_json(work / "data" / "summary.json")
    lines += ["| class | jets (train / val / test) | pT min / median / max (GeV) |", "|---|---|---|"]
    for c in CLASSES:
        pt = summary["pt_gev"][c]
        lines.append(f"| {c} | {summary['train'][c]} / {summary['val'][c]} / {summary['test'][c]} | "
                     f"{pt[0]:.0f} / {pt[1]:.0f} / {pt[2]:.0f} |")  # fmt: skip
    models = [m for m in MODELS if (work / "eval" / "top_vs_qcd" / "results.json").exists()
              and m in _read_json(work / "eval" / "top_vs_qcd" / "results.json")["samples"]["wide"]["taggers"]]  # fmt: skip
    lines += ["", "| model | parameters | epochs | training wall time (s) | training jets/s |", "|---|---|---|---|---|"]
    for m in models:
        b = _read_json(work / "train" / m / "bench.json")
        lines.append(f"| {LABELS[m]} | {b.get('n_params') or '(400 trees max, early stopping)'} | {b['epochs']} | "
                     f"{b['wall_s']:.0f} | {b['jets_per_s']:.0f} |")  # fmt: skip
    res = {f"{s}_vs_{bk}": _read_json(work / "eval" / f"{s}_vs_{bk}" / "results.json")["samples"]["wide"]["taggers"]
           for s, bk in [(s, "qcd") for s in SIGNALS] + [("W", "Z")]}  # fmt: skip
    head = "| model | accuracy (5 classes) | " + " | ".join(f"{s}: AUC / R30 / R50" for s in SIGNALS) + " | W vs Z AUC |"
    lines += ["", head, "|---" * (3 + len(SIGNALS)) + "|"]
    for m in models:
        cells = []
        for s in SIGNALS:
            t = res[f"{s}_vs_qcd"][m]
            r30 = t["rejection_at"]["0.3"]["qcd"]
            r50 = t["rejection_at"]["0.5"]["qcd"]
            cells.append(f"{t['auc']['qcd']:.3f} / {_fmt(r30['rejection'], r30['rejection_err'])} / "
                         f"{_fmt(r50['rejection'], r50['rejection_err'])}")  # fmt: skip
        acc = res["top_vs_qcd"][m].get("accuracy")
        wz = res["W_vs_Z"][m]["auc"]["Z"]
        lines.append(f"| {LABELS[m]} | {_fmt(acc, d=3)} | " + " | ".join(cells) + f" | {wz:.3f} |")
    lines += ["", "Top: 1/εB(QCD) at εS = 0.5 in bins of pT (GeV; working point per bin):", ""]
    lines += ["| model | " + " | ".join(f"{a}-{b}" for a, b in zip(PT_BINS_REPORT[:-1], PT_BINS_REPORT[1:], strict=True)) + " |",
              "|---" * len(PT_BINS_REPORT) + "|"]  # fmt: skip
    for m in models:
        br = res["top_vs_qcd"][m]["rejection_vs_pt"]["qcd"]["flat_per_bin"]
        vals = br.get("rejection") or br.get("values")
        errs = br.get("rejection_err") or br.get("errors") or [None] * len(vals)
        lines.append(f"| {LABELS[m]} | " + " | ".join(_fmt(v, e) for v, e in zip(vals, errs, strict=True)) + " |")
    cm_file = work / "eval" / "confusion.json"
    if cm_file.exists():
        for m, cm in json.loads(cm_file.read_text()).items():
            lines += ["", f"Confusion matrix, {LABELS[m]} (rows: true class, row-normalised):", "",
                      "| true \\ predicted | " + " | ".join(CLASSES) + " |", "|---" * (len(CLASSES) + 1) + "|"]  # fmt: skip
            lines += [f"| {c} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for c, row in zip(CLASSES, cm, strict=True)]
    text = "\n".join(lines)
    print(text)
    (work / "tables.md").write_text(text + "\n")
    return text


def _mean_sd(values: list[float], d: int = 3) -> str:
    """``mean ± s`` over seeds (s: sample standard deviation), ``∞`` entries counted apart."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    inf = len(values) - len(v)
    if not len(v):
        return "∞"
    txt = f"{v.mean():.{d}f}" if len(v) == 1 or v.std() == 0 else pm(v.mean(), v.std(ddof=1))
    return txt + (f" ({inf}× ∞)" if inf else "")


def seeds_table(dirs: list[Path]) -> str:
    """Mean ± standard deviation over work directories trained with different ``--train-seed``:
    accuracy, AUC per signal class, W vs Z AUC, R50 per signal class, best epoch."""
    res = []
    for w in dirs:
        res.append({f"{s}_vs_{bk}": _read_json(w / "eval" / f"{s}_vs_{bk}" / "results.json")["samples"]["wide"]["taggers"]
                    for s, bk in [(s, "qcd") for s in SIGNALS] + [("W", "Z")]})  # fmt: skip
    models = [m for m in MODELS if all(m in r["top_vs_qcd"] for r in res)]
    lines = [f"Mean ± standard deviation over {len(dirs)} training seeds ({', '.join(str(d) for d in dirs)}):", "",
             "| model | accuracy | " + " | ".join(f"{s} AUC" for s in SIGNALS) + " | W vs Z AUC |",
             "|---" * (3 + len(SIGNALS)) + "|"]  # fmt: skip
    for m in models:
        cells = [_mean_sd([r["top_vs_qcd"][m].get("accuracy") for r in res])]
        cells += [_mean_sd([r[f"{s}_vs_qcd"][m]["auc"]["qcd"] for r in res]) for s in SIGNALS]
        cells.append(_mean_sd([r["W_vs_Z"][m]["auc"]["Z"] for r in res]))
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    lines += ["", "| model | " + " | ".join(f"{s} R50" for s in SIGNALS) + " | best epochs (per seed) |",
              "|---" * (2 + len(SIGNALS)) + "|"]  # fmt: skip
    for m in models:
        cells = [_mean_sd([r[f"{s}_vs_qcd"][m]["rejection_at"]["0.5"]["qcd"]["rejection"] for r in res], 1)
                 for s in SIGNALS]  # fmt: skip
        best = [Path(_read_json(w / "train" / m / "bench.json").get("best", "")).stem for w in dirs]
        ep = [b.split("epoch=")[1] if "epoch=" in b else "—" for b in best]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {' / '.join(ep)} |")
    text = "\n".join(lines)
    print(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "boosted_mc", help="work directory")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run (default all)")
    ap.add_argument("--events", nargs="*", default=["top_wide=6500", "wz_wide=14000", "hbb_wide=5500", "qcd_wide=3000"],
                    metavar="PROCESS=N", help="events per process (simulate)")  # fmt: skip
    ap.add_argument("--shard", type=int, default=1000, help="events per shard")
    ap.add_argument("--max-per-class", type=int, default=5000, help="jets per class at most (split)")
    ap.add_argument("--pt-bins", type=float, nargs="+", default=list(np.linspace(250, 1500, 11)),
                    help="flattening pT bin edges in GeV (split)")  # fmt: skip
    ap.add_argument("--mass-bins", type=int, default=1,
                    help="flattening mass bins over 0-300 GeV (1: flat in pT only, mass window 0-300 GeV)")
    ap.add_argument("--base-weight", default=None,
                    help="jets field multiplied into the flattening weights, e.g. mcEventWeight (split; default none)")
    ap.add_argument("--eval-weight", default=None,
                    help="jets field weighting the evaluation, e.g. flat_weight (default none: the sampled spectra)")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed (split)")
    ap.add_argument("--models", nargs="+", default=["bdt_substructure", "pfn", "particlenet", "part"], choices=MODELS)
    ap.add_argument("--default-epochs", type=int, default=5, help="epochs of every network without --epochs")
    ap.add_argument("--epochs", nargs="*", default=[], metavar="MODEL=N", help="epochs per model")
    ap.add_argument("--minutes", nargs="*", default=[], metavar="MODEL=MIN", help="training time budget per model")
    ap.add_argument("--override", nargs="*", default=[], metavar="MODEL:KEY=VALUE",
                    help="extra --set override for one model, e.g. part:model.num_layers=2")  # fmt: skip
    ap.add_argument("--bucket", nargs="*", default=list(BUCKET), choices=MODELS, metavar="MODEL",
                    help="networks trained with length-bucketed batches (default: those without BatchNorm)")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="training seed of every model (initialisation, batch order; default: the configs' 42)")
    ap.add_argument("--combine", nargs="*", type=Path, default=[], metavar="WORK",
                    help="table: mean ± standard deviation over these work directories (one per training seed)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.events = _kv(args.events)
    args.epochs = _kv(args.epochs)
    args.minutes = _kv(args.minutes, float)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    funcs = {"simulate": step_simulate, "split": step_split, "train": step_train, "predict": step_predict,
             "evaluate": step_evaluate, "table": step_table}  # fmt: skip
    for s in STEPS:
        if s in args.steps:
            t0 = time.time()
            _log(f"step {s}")
            funcs[s](args, work)
            _log(f"step {s} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
