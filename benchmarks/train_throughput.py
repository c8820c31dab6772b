"""Training throughput (jets/s, CPU) of every flavour tagger and ONNX latency/throughput.

Models are built with the hyperparameters of the shipped configs (``configs/ftag/*.yaml``) and
trained on a mock training file (tests/_train_mock.py layout) with the configs' batch size.
Reported per model:

* ``train jets/s``: forward + backward + AdamW step on batches already in memory (wall clock),
  and per CPU-second of the process (``train jets/CPU-s``, less sensitive to a shared machine);
* ``read jets/s``: the streaming HDF5 dataset alone (chunked read, float conversion, batching);
* ONNX (onnxruntime, 1 thread): latency per jet at batch 1 and throughput at batch 1000, plus the
  largest |onnx - torch| difference on the mock jets.
* ``mv2``: xgboost training time for the configured number of rounds (no early stopping).

Usage::

    python benchmarks/train_throughput.py [--n-jets 4000] [--steps 5] [--threads 1] [--models dl1 gn ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lhcml.data.mock import make_training_file
from lhcml.labels import get_scheme
from lhcml.models import build_model
from lhcml.train.checkpoint import build_meta
from lhcml.train.config import load_train_config
from lhcml.train.datamodule import (
    H5JetDataset,
    LabelSpec,
    compute_norm,
    inspect_inputs,
    norm_arrays,
)

ROOT = Path(__file__).resolve().parents[1]


def bench_model(name: str, path: Path, steps: int, tmp: Path) -> dict:
    cfg = load_train_config(ROOT / "configs" / "ftag" / f"{name}.yaml")
    specs = inspect_inputs(path, cfg.data.inputs)
    labels = LabelSpec.build(get_scheme("flavour").subset(cfg.data.classes), cfg.data.label_field)
    bs = cfg.data.batch_size
    row: dict = {"model": name, "batch": bs}
    # data pipeline alone
    ds = H5JetDataset([path], specs, labels, batch_size=bs, shuffle=True, weight_field="weight",
                      label_fields={"tracks": ["ftagTruthOriginLabel", "ftagTruthVertexIndex"]} if name == "gn" else None)  # fmt: skip
    t = time.perf_counter()
    batches = list(ds)
    n = sum(len(b["labels"]) for b in batches)
    row["read jets/s"] = n / (time.perf_counter() - t)
    if cfg.model.name == "mv2":
        import xgboost as xgb

        x = np.concatenate([b["jets"].numpy() for b in batches])
        y = np.concatenate([b["labels"].numpy() for b in batches])
        p = cfg.model.hyperparameters()
        t, c = time.perf_counter(), time.process_time()
        xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist",
                   "max_depth": p.get("max_depth", 6), "eta": p.get("learning_rate", 0.1)},
                  xgb.DMatrix(x, label=y), num_boost_round=100)  # fmt: skip
        dt = time.perf_counter() - t
        row["train jets/s"] = len(x) / dt  # a full 100-round fit
        row["train jets/CPU-s"] = len(x) / (time.process_time() - c)
        row["note"] = f"100 boosting rounds on {len(x)} jets: {dt:.2f} s"
        return row
    variables = {g: list(s.variables) for g, s in specs.items()}
    model = build_model(cfg.model.name, 3, {g: s.dim for g, s in specs.items()}, **cfg.model.hyperparameters())
    model.configure_inputs(variables)
    norm = compute_norm([path], specs)
    for g, (m, s) in norm_arrays(norm, specs).items():
        model.set_normalisation(g, m, s)
    if cfg.loss.head_weights:
        model.set_head_weights(cfg.loss.head_weights)
    row["params"] = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(b):
        out = model(b)
        loss = torch.stack(list(model.losses(out, b).values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    t, c, n = time.perf_counter(), time.process_time(), 0
    for i in range(steps):
        b = batches[i % len(batches)]
        step(b)
        n += len(b["labels"])
    row["train jets/s"] = n / (time.perf_counter() - t)
    row["train jets/CPU-s"] = n / (time.process_time() - c)
    # ONNX: write a checkpoint in the training layout and export it
    meta = build_meta(cfg.to_yaml(), norm, cfg.data.classes, ["pb", "pc", "pu"], variables,
                      {g: list(s.shape) for g, s in specs.items()}, name)  # fmt: skip
    ckpt = tmp / f"{name}.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lhcml": meta}, ckpt)
    from lhcml.export.onnx import export_onnx

    rep = export_onnx(ckpt, tmp / f"{name}.onnx", force=True, check_file=path, n_check=1000)
    row["onnx ms/jet (b=1)"] = rep.latency_ms_per_jet
    row["onnx jets/s (b=1000)"] = rep.throughput_jets_per_s
    row["max abs diff onnx-torch"] = max(rep.max_abs_diff_random, rep.max_abs_diff_real or 0)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jets", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    ap.add_argument("--models", nargs="*", default=["dl1", "dl1r", "rnnip", "dips", "gn", "mv2"])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = make_training_file(tmp / "train.h5", args.n_jets, seed=7)
        rows = [bench_model(m, path, args.steps, tmp) for m in args.models]
    cols = ["model", "params", "batch", "read jets/s", "train jets/s", "train jets/CPU-s", "onnx ms/jet (b=1)", "onnx jets/s (b=1000)", "max abs diff onnx-torch", "note"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) and c.startswith("max") else (f"{v:,.3f}" if isinstance(v, float) and v < 10 else (f"{v:,.0f}" if isinstance(v, (int, float)) else str(v))))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
