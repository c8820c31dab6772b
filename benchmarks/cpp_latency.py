"""Latency per jet of exported taggers at batch 1 on one thread: C++ (lhcml-infer) vs Python onnxruntime.

DL1r and the GN-style transformer are built with the hyperparameters of the shipped configs
(``configs/ftag/dl1r.yaml``, ``configs/ftag/gn.yaml``; untrained weights: latency does not depend
on their values), normalised on a mock training file (:func:`lhcml.data.mock.make_training_file`,
lzf-compressed, 40 track slots) and exported with ``lhcml.export.onnx.export_onnx``. Then, on the
same ``--n-jets`` jets, one at a time:

* **C++**: ``lhcml-infer MODEL IN OUT --batch 1 --threads 1 --timing``: the wall time of each call
  (input tensors wrapped around the jet's rows, ``Ort::Session::Run``, scores copied out);
* **Python**: ``InferenceSession.run`` of lhcml's own session (``lhcml.export.onnx.inference_session``: one
  intra-op thread) on the jet's arrays as lhcml's datamodule reads them.

Both feed a jet's track slots up to its last real track (the padding the graph masks anyway is
cut, as lhcml's datamodule and lhcml-infer do per batch), and both timings include that cut.

Both use ORT_ENABLE_ALL graph optimisation and ONNX Runtime from the same ``onnxruntime`` wheel
(C++: its ``libonnxruntime.so``; Python: the copy linked into its extension module). The first ``--warmup`` calls of each are dropped. Reported: median and p90
of the per-jet latency (wall clock), the mean, the median and p90 of the calling thread's CPU time
per jet (``CLOCK_THREAD_CPUTIME_ID`` / ``time.thread_time``: with one intra-op thread ONNX Runtime
computes on the calling thread, and CPU time does not count waiting for a core on a shared
machine), and the C++ program's end-to-end wall time per jet (process
start, model load, HDF5 read and output write included); the scores of the two agree to 1e-5
(:func:`lhcml.export.cpp.cpp_check`, asserted).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/cpp_latency.py [--n-jets 2000] [--warmup 20] [--models dl1r gn]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from lhcml.data.mock import make_training_file
from lhcml.export.cpp import build_infer, cpp_check, python_scores, read_scores, run_infer
from lhcml.export.onnx import export_onnx, inference_session
from lhcml.models import build_model
from lhcml.train.checkpoint import build_meta
from lhcml.train.config import load_train_config
from lhcml.train.datamodule import H5JetDataset, compute_norm, inspect_inputs, norm_arrays

ROOT = Path(__file__).resolve().parents[1]
TAGGER = {"dl1r": "DL1r", "gn": "GN2"}


def export(name: str, path: Path, tmp: Path) -> Path:
    """The config's architecture, normalised on ``path``, exported to ONNX (checked against torch)."""
    cfg = load_train_config(ROOT / "configs" / "ftag" / f"{name}.yaml")
    specs = inspect_inputs(path, cfg.data.inputs)
    variables = {g: list(s.variables) for g, s in specs.items()}
    torch.manual_seed(0)
    model = build_model(cfg.model.name, len(cfg.data.classes), {g: s.dim for g, s in specs.items()},
                        **cfg.model.hyperparameters())  # fmt: skip
    model.configure_inputs(variables)
    norm = compute_norm([path], specs)
    for g, (m, s) in norm_arrays(norm, specs).items():
        model.set_normalisation(g, m, s)
    meta = build_meta(cfg.to_yaml(), norm, cfg.data.classes, ["pb", "pc", "pu"], variables,
                      {g: list(s.shape) for g, s in specs.items()}, TAGGER[name])  # fmt: skip
    ckpt = tmp / f"{name}.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lhcml": meta}, ckpt)
    return export_onnx(ckpt, tmp / f"{name}.onnx", force=True, check_file=path, n_check=1000, timing=False).path


def python_latency(model: Path, path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread-CPU seconds per ``InferenceSession.run`` call, one jet at a time, for the
    first ``n`` jets."""
    import json

    from lhcml.export.onnx import read_metadata

    inputs = json.loads(read_metadata(model)["inputs"])
    variables = {v["group"]: v["variables"] for v in inputs.values()}
    batch = next(iter(H5JetDataset([path], inspect_inputs(path, variables), labels=None, batch_size=n, num_jets=n)))
    sess = inference_session(model, threads=1)
    masks = {i.name: i.type == "tensor(bool)" for i in sess.get_inputs()}
    arrays = {k: batch[f"{inputs[k]['group']}_valid" if m else inputs[k]["group"]].numpy() for k, m in masks.items()}
    groups = {k: inputs[k]["group"] for k in masks}
    valid = {g: arrays[k] for k, g in groups.items() if masks[k]}
    out, cpu = np.empty(n), np.empty(n)
    for i in range(n):
        t, c = time.perf_counter(), time.thread_time()
        # the jet's slots up to its last real object, as lhcml-infer (and lhcml's datamodule) trim them
        used = {g: int(np.flatnonzero(v[i])[-1]) + 1 if v[i].any() else 1 for g, v in valid.items()}
        feed = {k: a[i : i + 1, : used[groups[k]]] if groups[k] in used else a[i : i + 1] for k, a in arrays.items()}
        sess.run(None, feed)
        cpu[i] = time.thread_time() - c
        out[i] = time.perf_counter() - t
    return out, cpu


def stats(t: np.ndarray, cpu: np.ndarray, warmup: int) -> dict:
    us, cus = t[warmup:] * 1e6, cpu[warmup:] * 1e6
    return {"median": float(np.median(us)), "p90": float(np.percentile(us, 90)), "mean": float(us.mean()),
            "cpu median": float(np.median(cus)), "cpu p90": float(np.percentile(cus, 90)), "n": len(us)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jets", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=20, help="first calls dropped from the statistics")
    ap.add_argument("--models", nargs="*", default=["dl1r", "gn"], choices=sorted(TAGGER))
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.n_jets + args.warmup
    import onnxruntime

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"onnxruntime {onnxruntime.__version__}, 1 thread, batch 1; {args.n_jets} jets (+{args.warmup} warm-up)")  # fmt: skip
    t0 = time.perf_counter()
    binary = build_infer()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = make_training_file(tmp / "jets.h5", n, seed=11)
        for name in args.models:
            model = export(name, path, tmp)
            check = cpp_check(model, path, tmp / f"{name}_check.h5", n_jets=n, atol=1e-5, binary=binary)
            t = time.perf_counter()
            run_infer(model, path, tmp / f"{name}_b1.h5", batch=1, threads=1, max_jets=n, timing=True, force=True, binary=binary)
            wall = time.perf_counter() - t
            with h5py.File(tmp / f"{name}_b1.h5", "r") as f:
                cpp_t, cpp_c = f["run_seconds"][()], f["run_cpu_seconds"][()]
            b1, _, _ = read_scores(tmp / f"{name}_b1.h5")
            ref, _ = python_scores(model, path, n)
            assert np.max(np.abs(b1 - ref)) <= 1e-5, "batch-1 C++ scores differ from Python's"
            py_t, py_c = python_latency(model, path, n)
            for impl, tt, cc in (("C++ lhcml-infer", cpp_t, cpp_c), ("Python onnxruntime", py_t, py_c)):
                rows.append({"model": TAGGER[name], "impl": impl, **stats(tt, cc, args.warmup),
                             "e2e": wall / n * 1e6 if impl.startswith("C++") else float("nan"),
                             "diff": check.max_abs_diff})  # fmt: skip
    print("| model | runtime | median µs/jet | p90 µs/jet | mean µs/jet | CPU median µs/jet | CPU p90 µs/jet | jets "
          "| C++ end-to-end µs/jet | max abs diff C++ - Python |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e2e = f"{r['e2e']:.0f}" if np.isfinite(r["e2e"]) else ""
        print(f"| {r['model']} | {r['impl']} | {r['median']:.1f} | {r['p90']:.1f} | {r['mean']:.1f} | {r['cpu median']:.1f} "
              f"| {r['cpu p90']:.1f} | {r['n']} | {e2e} | {r['diff']:.2g} |")  # fmt: skip
    print(f"wall time {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
