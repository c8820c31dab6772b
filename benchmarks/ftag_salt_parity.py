"""Peer parity: lhcml's GN-style tagger against ATLAS's Salt GN2 on the same lhcml files.

Both frameworks train on the same ``lhcml preprocess`` output (Salt reads ``train.h5``,
``val.h5``, ``norm_dict.yaml`` and ``class_dict.yaml`` unchanged: the interoperability claim),
with the same network size (``configs/ftag/bench_gn.yaml``: embedding 64, 3 layers, 4 heads),
inputs, epochs, batch size, optimiser (AdamW) and peak learning rate, and are evaluated on the
same test jets with lhcml's metrics: light and c rejection at 70 % b-efficiency with binomial
errors, ``D_b = ln(p_b / (f_c p_c + (1 - f_c) p_u))`` with ``f_c`` of
``configs/evaluate/ftag.yaml`` (0.2), and training jets/s (train jets × epochs / wall time of
the whole fit command, validation included, one thread each). ::

    nice -n 10 .venv/bin/python benchmarks/ftag_salt_parity.py --sim benchmarks/_work/salt/sim/ttbar \\
        --work benchmarks/_work/salt --seeds 1 2 --epochs 2

Runs (``--runs``):

``lhcml``
    lhcml GN with ``data.bucket_by_length`` and the flavour-mixed (stratified) batches (the
    bucketing default of ``configs/ftag/base.yaml``).
``lhcml_sorted``
    lhcml GN with the old plain sort by track multiplicity (``data.bucket_stratify=false``):
    nearly single-flavour batches, the behaviour the issue reported.
``lhcml_nobucket``
    lhcml GN without bucketing (random batches, padded to the longest jet of each batch): the
    default of ``configs/ftag/gn.yaml`` after this benchmark.
``lhcml_hf``
    ``lhcml`` with pairs of heavy-flavour tracks weighted 2 in the vertexing loss
    (``model.vertex_hf_weight=2``), as Salt's GN2 vertexing task does.
``lhcml_jetnorm``
    ``lhcml`` with the track-origin and vertexing losses normalised per jet, not per batch
    (``model.aux_loss_norm=jet``): tracks weigh the same in length buckets as in random batches.
``salt``
    Salt's GN2 config (``GN2.yaml`` shipped with salt-ml) scaled to the same size, trained with
    ``salt fit`` in a separate virtualenv (``--salt-env``; Salt is not an lhcml dependency).

Steps (``--steps``): ``preprocess`` (``configs/ftag/preprocess_salt_parity.yaml`` on ``--sim``),
``batches`` (flavour mix and padding of the training batches per batching mode, no training),
``train`` (each run × seed; finished runs are skipped), ``evaluate`` and ``table``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
STEPS = ("preprocess", "batches", "train", "evaluate", "table")
RUNS = ("lhcml", "lhcml_sorted", "lhcml_nobucket", "lhcml_hf", "lhcml_jetnorm", "salt")
LABELS = {
    "lhcml": "lhcml GN, flavour-mixed length buckets",
    "lhcml_sorted": "lhcml GN, plain length sort (before the fix)",
    "lhcml_nobucket": "lhcml GN, no bucketing (gn.yaml default)",
    "lhcml_hf": "lhcml GN, flavour-mixed buckets + HF vertexing pairs x2 (as Salt)",
    "lhcml_jetnorm": "lhcml GN, flavour-mixed buckets + per-jet aux-loss normalisation",
    "salt": "Salt GN2 (scaled to the same size)",
}
LHCML_OVERRIDES = {
    "lhcml": ["data.bucket_by_length=true", "data.bucket_stratify=true"],
    "lhcml_sorted": ["data.bucket_by_length=true", "data.bucket_stratify=false"],
    "lhcml_nobucket": ["data.bucket_by_length=false"],
    "lhcml_hf": [
        "data.bucket_by_length=true",
        "data.bucket_stratify=true",
        "model.vertex_hf_weight=2",
    ],
    "lhcml_jetnorm": [
        "data.bucket_by_length=true",
        "data.bucket_stratify=true",
        "model.aux_loss_norm=jet",
    ],
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def _n_jets(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return len(f["jets"])


def _single_thread_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = "1"
    return env


# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------
def step_preprocess(args: argparse.Namespace, work: Path) -> None:
    from lhcml.config import deep_merge, read_yaml
    from lhcml.data.preprocess import PreprocessConfig, preprocess

    raw = deep_merge(read_yaml(CONFIGS / "ftag" / "preprocess_salt_parity.yaml"), {
        "output_dir": str(work / "pre"),
        "samples": {"ttbar": {"inputs": [str(args.sim.resolve() / "ttbar_[0-9][0-9][0-9][0-9].h5")]}},
    })  # fmt: skip
    t0 = time.time()
    preprocess(PreprocessConfig.model_validate(raw))
    info = _read_json(work / "info.json")
    info.update(
        preprocess_s=time.time() - t0,
        n_shards=len(list(args.sim.glob("ttbar_[0-9][0-9][0-9][0-9].h5"))),
    )
    _write_json(work / "info.json", info)


def _lhcml_cmd(args: argparse.Namespace, work: Path, run: str, seed: int, out: Path) -> list[str]:
    pre = work / "pre"
    sets = [
        f"data.train_files=[{pre / 'train.h5'}]",
        f"data.val_files=[{pre / 'val.h5'}]",
        f"data.norm_dict={pre / 'norm_dict.yaml'}",
        f"loss.class_dict={pre / 'class_dict.yaml'}",  # track-origin weights, as Salt's GN2
        f"data.num_jets_val={args.val_jets}",
        f"data.batch_size={args.batch_size}",
        f"optimizer.lr={args.lr}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.patience=null",
        "trainer.enable_progress_bar=false",
        f"seed={seed}",
        f"output_dir={out}",
        f"tagger_name={run}_s{seed}",
        *LHCML_OVERRIDES[run],
    ]
    if args.train_jets:
        sets.append(f"data.num_jets_train={args.train_jets}")
    cmd = [sys.executable, "-m", "lhcml", "train", str(CONFIGS / "ftag" / "bench_gn.yaml")]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def step_batches(args: argparse.Namespace, work: Path) -> None:
    """Flavour mix and padding of the training batches for each batching mode (no training)."""
    import lhcml.train.datamodule as dm
    from lhcml.labels import get_scheme

    path = work / "pre" / "train.h5"
    n_jets = min(args.train_jets or _n_jets(path), _n_jets(path))
    specs = dm.inspect_inputs(path, {"jets": ["pt"], "tracks": ["d0"]})
    labels = dm.LabelSpec.build(
        get_scheme("flavour").subset(["bjets", "cjets", "ujets"]), "flavour_label"
    )
    modes = {
        "no bucketing": {},
        "plain length sort (before the fix)": {"bucket_by_length": True, "bucket_stratify": False},
        "flavour-mixed length buckets": {"bucket_by_length": True},
    }
    lines = [
        f"Batches of {args.batch_size} from the first {n_jets} training jets (one epoch, seed 1):",
        "",
        "| batching | largest class share per batch: mean / max | median binomial pull of the class counts "
        "| track slots per jet | valid / slots |",
        "|---|---|---|---|---|",
    ]
    for name, kw in modes.items():
        ds = dm.H5JetDataset([path], specs, labels, batch_size=args.batch_size, num_jets=n_jets,
                             shuffle=True, seed=1, **kw)  # fmt: skip
        share, pulls, slots, tracks = [], [], 0, 0
        batches = list(ds)
        frac = (
            np.bincount(np.concatenate([b["labels"].numpy() for b in batches]), minlength=3)
            / n_jets
        )
        for b in batches:
            n = len(b["labels"])
            counts = np.bincount(b["labels"].numpy(), minlength=3)
            share.append(counts.max() / n)
            pulls.append(np.max(np.abs(counts - n * frac) / np.sqrt(n * frac * (1 - frac))))
            slots += b["tracks"].shape[1] * n
            tracks += int(b["tracks_valid"].sum())
        lines.append(f"| {name} | {np.mean(share):.3f} / {np.max(share):.3f} | {np.median(pulls):.1f} | "
                     f"{slots / n_jets:.1f} | {tracks / slots:.2f} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    (work / "batches.md").write_text(text + "\n")


def _salt_config(args: argparse.Namespace, work: Path, seed: int, out: Path) -> dict[str, Any]:
    """Salt's shipped GN2 config (``salt/configs/tutorial.yaml``, ``name: GN2``) at bench_gn's size.

    Kept from Salt's GN2: the init net, the ``Transformer`` (gated dense updates, registers,
    output projection), global attention pooling, the three tasks and their loss weights (1, 0.5,
    1.5), ReLU, Salt's own LR schedule (1e-7 -> lr -> 1e-5; warm-up 10 % as lhcml's, see below). Changed: sizes to
    ``configs/ftag/bench_gn.yaml`` (embedding 64, 3 layers, 4 heads, task networks [64, 32], [64,
    32], [32, 16]), the inputs to lhcml's, class weights of both classification tasks from lhcml's
    ``class_dict.yaml`` (``use_class_dict``, as lhcml's ``loss.class_dict``), CPU, no logger.
    """
    import yaml

    from lhcml.config import read_yaml

    site = next((args.salt_env / "lib").glob("python3*/site-packages/salt/configs"))
    base = yaml.safe_load((site / "base.yaml").read_text())
    gn2 = yaml.safe_load((site / "tutorial.yaml").read_text())
    lh = read_yaml(CONFIGS / "ftag" / "bench_gn.yaml")["model"]
    inputs = read_yaml(CONFIGS / "ftag" / "gn.yaml")["data"]["inputs"]
    emb, pre = int(lh["embed_dim"]), work / "pre"
    model = gn2["model"]["model"]["init_args"]
    model["init_nets"][0]["dense_config"].update(
        output_size=emb, hidden_layers=list(lh["init_hidden"])
    )
    enc = model["encoder"]["init_args"]
    enc.update(embed_dim=emb, num_layers=int(lh["num_layers"]), out_dim=emb)
    enc["attn_kwargs"]["num_heads"] = int(lh["num_heads"])
    model["pool_net"]["init_args"]["input_size"] = emb
    jet, origin, vertex = model["tasks"]["init_args"]["modules"]
    jet["init_args"]["dense_config"] = {**jet["init_args"]["dense_config"], "input_size": emb,
                                       "hidden_layers": list(lh["jet_hidden"])}  # fmt: skip
    origin["init_args"]["dense_config"] = {**origin["init_args"]["dense_config"], "input_size": emb,
                                          "context_size": emb, "hidden_layers": list(lh["origin_hidden"])}  # fmt: skip
    vertex["init_args"]["dense_config"] = {**vertex["init_args"]["dense_config"], "input_size": 2 * emb,
                                          "context_size": emb, "hidden_layers": list(lh["vertex_hidden"])}  # fmt: skip
    for task in (jet, origin):
        task["init_args"]["use_class_dict"] = True
        task["init_args"]["loss"]["init_args"] = {"weight": None}
    origin["init_args"]["label"] = "ftagTruthOriginLabel"
    vertex["init_args"]["label"] = "ftagTruthVertexIndex"
    # peak lr as lhcml's; warm-up 10 % of the steps as lhcml's onecycle (GN2's 1 % is under two
    # steps at this scale, where torch's OneCycleLR divides by zero)
    gn2["model"]["lrs_config"].update(max=args.lr, pct_start=0.1)
    data = gn2["data"]
    data.update(
        input_map={"jets": "jets", "tracks": "tracks"},
        variables={"jets": list(inputs["jets"]), "tracks": list(inputs["tracks"])},
        train_file=str(pre / "train.h5"), val_file=str(pre / "val.h5"),
        test_file=str(pre / "test_ttbar.h5"), norm_dict=str(pre / "norm_dict.yaml"),
        class_dict=str(pre / "class_dict.yaml"), batch_size=args.batch_size, num_workers=0,
        persistent_workers=False, pin_memory=False, num_train=args.train_jets or -1,
        num_val=args.val_jets, num_test=-1,
    )  # fmt: skip
    trainer = base["trainer"]
    trainer.update(max_epochs=args.epochs, accelerator="cpu", devices=1, precision="32-true",
                   logger=False, default_root_dir=str(out), enable_progress_bar=False)  # fmt: skip
    trainer["callbacks"] = [c for c in trainer["callbacks"] if c["class_path"].startswith("salt.")]
    return {
        "seed_everything": seed,
        "name": "GN2",
        "model": gn2["model"],
        "data": data,
        "trainer": trainer,
    }


def _salt_fit_command(args: argparse.Namespace, work: Path, seed: int, out: Path) -> list[str]:
    import yaml

    cfg = out / "salt_gn2.yaml"
    cfg.write_text(yaml.safe_dump(_salt_config(args, work, seed, out), sort_keys=False))
    return [
        str(args.salt_env / "bin" / "salt"),
        "fit",
        "--config",
        str(cfg),
        "--force",
        "--log_suffix",
        "run",
    ]


def _salt_test_probs(args: argparse.Namespace, work: Path, out: Path) -> np.ndarray:
    """(n_test, 3) probabilities of a Salt run on the test jets (``salt test``: its best epoch)."""
    from lhcml.data.checks import open_h5

    run = out / "GN2_run"
    preds = sorted(run.glob("ckpts/*__test_*ttbar.h5"))
    if not preds:
        cmd = [str(args.salt_env / "bin" / "salt"), "test", "--config", str(run / "config.yaml"),
               "--data.test_file", str(work / "pre" / "test_ttbar.h5"), "--data.num_workers", "0",
               "--data.norm_dict", str(work / "pre" / "norm_dict.yaml")]  # fmt: skip
        with (out / "test.log").open("w") as log:
            res = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=_single_thread_env(), cwd=out
            )
        if res.returncode != 0:
            raise SystemExit(f"salt test failed:\n{(out / 'test.log').read_text()[-3000:]}")
        preds = sorted(run.glob("ckpts/*__test_*ttbar.h5"))
    with open_h5(preds[-1]) as f:  # Salt writes LZ4 (hdf5plugin): lhcml's reader opens it
        jets = f["jets"]
        return np.stack([jets[f"GN2_p{c}"] for c in "bcu"], axis=1).astype(np.float64)


def _train_one(args: argparse.Namespace, work: Path, run: str, seed: int) -> None:
    out = work / "train" / f"{run}_s{seed}"
    info_file = out / "bench.json"
    if _read_json(info_file).get("done"):
        _log(f"{run} seed {seed}: done before")
        return
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if run == "salt":
        cmd = _salt_fit_command(args, work, seed, out)
    else:
        cmd = _lhcml_cmd(args, work, run, seed, out)
    n_train = min(
        args.train_jets or _n_jets(work / "pre" / "train.h5"), _n_jets(work / "pre" / "train.h5")
    )
    _log(f"{run} seed {seed}: {n_train} jets x {args.epochs} epochs")
    t0, c0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with (out / "train.log").open("w") as log:
        res = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=_single_thread_env(), cwd=out
        )
    dt, c1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    if res.returncode != 0:
        tail = (out / "train.log").read_text()[-3000:]
        raise SystemExit(f"{run} seed {seed} failed (exit {res.returncode}):\n{tail}")
    info = {"done": True, "wall_s": dt, "train_jets": n_train, "epochs": args.epochs,
            "jets_per_s": n_train * args.epochs / dt, "cpu_s": cpu,
            "jets_per_cpu_s": n_train * args.epochs / cpu, "command": " ".join(cmd)}  # fmt: skip
    _write_json(info_file, info)
    _log(f"{run} seed {seed}: {dt:.0f} s, {info['jets_per_s']:.0f} jets/s")


def step_train(args: argparse.Namespace, work: Path) -> None:
    for seed in args.seeds:
        for run in args.runs:
            _train_one(args, work, run, seed)


def _lhcml_probs(work: Path, run: str, seed: int) -> np.ndarray:
    """(n_test, 3) probabilities of an lhcml run on the test jets (its best-val-loss checkpoint)."""
    import h5py

    from lhcml.train.predict import predict

    out = work / "train" / f"{run}_s{seed}"
    ckpts = sorted((out / "checkpoints").glob("best*.ckpt"))
    if not ckpts:
        raise SystemExit(f"no best checkpoint in {out / 'checkpoints'}")
    pred = out / "pred"
    name = f"{run}_s{seed}"
    target = pred / "test_ttbar.h5"
    if not target.exists():
        predict(ckpts[-1], [work / "pre" / "test_ttbar.h5"], tagger_name=name, output_dir=pred)
    with h5py.File(target, "r") as f:
        jets = f["jets"]
        return np.stack([jets[f"{name}_p{c}"] for c in "bcu"], axis=1).astype(np.float64)


def _rejections(probs: np.ndarray, labels: np.ndarray, fc: float, eff: float) -> dict[str, Any]:
    from lhcml.metrics.discriminants import d_b
    from lhcml.metrics.rejection import rejection_at_efficiency

    disc = d_b(probs[:, 0], probs[:, 1], probs[:, 2], fc=fc)
    out = {}
    for name, lab in (("ujets", 2), ("cjets", 1)):
        r, e = rejection_at_efficiency(disc[labels == 0], disc[labels == lab], eff)
        out[name] = [float(r), float(e)]
    return out


def step_evaluate(args: argparse.Namespace, work: Path) -> None:
    import h5py

    from lhcml.config import read_yaml

    fc = float(read_yaml(CONFIGS / "evaluate" / "ftag.yaml")["fractions"]["cjets"])
    with h5py.File(work / "pre" / "test_ttbar.h5", "r") as f:
        labels = np.asarray(f["jets"]["flavour_label"])
    results = _read_json(work / "results.json")
    for seed in args.seeds:
        for run in args.runs:
            key = f"{run}_s{seed}"
            if not _read_json(work / "train" / key / "bench.json").get("done"):
                continue
            if run == "salt":
                probs = _salt_test_probs(args, work, work / "train" / key)
            else:
                probs = _lhcml_probs(work, run, seed)
            if len(probs) != len(labels):
                raise SystemExit(f"{key}: {len(probs)} predictions for {len(labels)} test jets")
            res = _rejections(probs, labels, fc, args.eff)
            res.update(_read_json(work / "train" / key / "bench.json"))
            res.pop("command", None)
            results[key] = res
            _log(
                f"{key}: light {res['ujets'][0]:.1f} ± {res['ujets'][1]:.1f}, c {res['cjets'][0]:.2f} ± {res['cjets'][1]:.2f}"
            )
    results["_test"] = {
        "fc": fc,
        "eff": args.eff,
        "n": {c: int((labels == i).sum()) for i, c in enumerate("bcu")},
    }
    _write_json(work / "results.json", results)


def step_table(args: argparse.Namespace, work: Path) -> str:
    from lhcml.plots.report import format_value_error

    results = _read_json(work / "results.json")
    test = results.get("_test", {})
    lines = [
        f"Test: {test.get('n')} b/c/light tt̄ jets; D_b with f_c = {test.get('fc')}, "
        f"{100 * float(test.get('eff', args.eff)):.0f} % b-efficiency; rejection ± binomial error.",
        "",
        "| run | seed | light rej. | c rej. | train jets | epochs | wall s | train jets/s | jets/CPU-s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for run in args.runs:
        rows = [
            (int(k.rsplit("_s", 1)[1]), v)
            for k, v in results.items()
            if k.rsplit("_s", 1)[0] == run
        ]
        for seed, v in sorted(rows):
            lines.append(
                f"| {LABELS[run]} | {seed} | {format_value_error(*v['ujets'])} | "
                f"{format_value_error(*v['cjets'])} | {v['train_jets']} | {v['epochs']} | "
                f"{v['wall_s']:.0f} | {v['jets_per_s']:.0f} | "
                + (f"{v['jets_per_cpu_s']:.0f} |" if "jets_per_cpu_s" in v else "n/a |")
            )
        if rows:
            u = np.array([v["ujets"][0] for _, v in rows])
            c = np.array([v["cjets"][0] for _, v in rows])
            s = np.array([v["jets_per_s"] for _, v in rows])
            summary.append((run, len(rows), u.mean(), u.std(ddof=1) if len(u) > 1 else np.nan,
                            c.mean(), c.std(ddof=1) if len(c) > 1 else np.nan, s.mean()))  # fmt: skip
    lines += ["", "| run | seeds | light rej. (mean, seed spread) | c rej. (mean, seed spread) | train jets/s |",
              "|---|---|---|---|---|"]  # fmt: skip
    for run, n, um, us, cm, cs, sp in summary:
        spread_u = f" ± {us:.1f}" if np.isfinite(us) else ""
        spread_c = f" ± {cs:.2f}" if np.isfinite(cs) else ""
        lines.append(
            f"| {LABELS[run]} | {n} | {um:.1f}{spread_u} | {cm:.2f}{spread_c} | {sp:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    (work / "table.md").write_text(table + "\n")
    return table


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "salt")
    ap.add_argument(
        "--sim",
        type=Path,
        default=ROOT / "benchmarks" / "_work" / "salt" / "sim" / "ttbar",
        help="directory of `lhcml simulate ttbar` shards",
    )
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (GN2's 5e-4)")
    ap.add_argument("--train-jets", type=int, default=None, help="training jets (default all)")
    ap.add_argument("--val-jets", type=int, default=10000)
    ap.add_argument("--eff", type=float, default=0.70)
    ap.add_argument(
        "--salt-env",
        type=Path,
        default=Path("/work/saltenv"),
        help="virtualenv with salt-ml (its bin/salt is used)",
    )
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    funcs = {
        "preprocess": step_preprocess,
        "batches": step_batches,
        "train": step_train,
        "evaluate": step_evaluate,
        "table": step_table,
    }
    for s in STEPS:
        if s in args.steps:
            t0 = time.time()
            _log(f"step {s}")
            funcs[s](args, work)
            _log(f"step {s} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
