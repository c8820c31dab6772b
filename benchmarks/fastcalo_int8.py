"""int8 against float32 sampling graphs of a fast-calo generator (issue 15): classifier AUC and time per shower.

For each number of candidates ``k`` in ``--k`` the script

1. exports the distilled-SIR sampling graph (``lhcml fastcalo refine-export CKPT STUDENT --after CHAIN -k k``; k = 1:
   the chain alone, ``lhcml export`` with the chain) into ``--work`` unless it is there, and its int8 copy
   (``lhcml fastcalo quantize``, default calibration);
2. runs the graphs asked for in ``--auc`` (``f32:K`` / ``int8:K``) with onnxruntime at the conditions of
   ``--reference`` (energies, |eta|, phi of each detailed shower), every graph with the **same noise** (seed
   ``--seed``), so a float/int8 pair differs by the quantisation alone, and gives each the CaloChallenge classifier
   test against the reference (:func:`lhcml.tasks.fastcalo.evaluate.classifier_test`, low and high level, ``--runs``
   runs, ``--epochs``);
3. times every graph at 65 GeV, |eta| 0.225, batch 10^4, one thread, interleaved over ``--rounds`` rounds (median);
4. with ``--ablation``: which layers carry the loss. On the chain-alone graph (k = 1), each set of dense layers that
   share a weight (one layer of the network, every call of it) quantised alone, all of them with percentile
   calibration, and all of them after a SmoothQuant rescaling (activation channel j divided by
   s_j = max|X_j|^a / max|W_j|^(1-a), weight column j multiplied by it; a = 0.5, 0.8; a float-exact transform, checked):
   the stored check of each (per shower the largest layer-energy change, median and 99 %, and the layer split).

Prints one table and writes ``--json``. Usage (docs/benchmarks/fastcalo.md, thirty-fifth version)::

    OMP_NUM_THREADS=1 python benchmarks/fastcalo_int8.py M2.ckpt --after CHAIN.qmap.npz --student RD.pt \\
        --reference val1.h5 val31.h5 val32.h5 --k 1 4 6 8 --auc f32:4 int8:4 int8:8 --work DIR --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _generate(path: Path, ref, seed: int, batch: int = 10000) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    width = int(dict(sess.get_modelmeta().custom_metadata_map)["noise_dim"])
    rng = np.random.default_rng(seed)
    out = np.zeros(ref.showers.shape, np.float32)
    for s in range(0, len(ref), batch):
        sl = slice(s, min(s + batch, len(ref)))
        n = sl.stop - sl.start
        feed = {"incident_energy": ref.energies[sl].astype(np.float32).reshape(-1, 1),
                "noise": rng.standard_normal((n, width)).astype(np.float32)}  # fmt: skip
        if "eta" in names:
            feed["eta"] = np.abs(ref.eta[sl]).astype(np.float32).reshape(-1, 1)
        if "phi" in names:
            feed["phi"] = ref.phi[sl].astype(np.float32).reshape(-1, 1)
        out[sl] = sess.run(["showers"], feed)[0]
    return np.maximum(out, 0.0)


def _smooth(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], alpha: float) -> None:
    """SmoothQuant's rescaling of every dense layer of ``src`` (see the module text), written to ``dst``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from lhcml.export.quantize import dense_nodes

    proto = onnx.load(str(src))
    by_name = {n.name: n for n in proto.graph.node}
    gemms = [by_name[n] for n in dense_nodes(proto)]
    inputs = sorted({g.input[0] for g in gemms})
    aug = onnx.load(str(src))
    for t in inputs:
        aug.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(aug.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    amax = {t: 0.0 for t in inputs}
    for feed in feeds:
        for t, v in zip(inputs, sess.run(inputs, feed), strict=True):
            amax[t] = np.maximum(amax[t], np.abs(v).max(0))
    init = {i.name: i for i in proto.graph.initializer}
    groups: dict[str, list] = {}
    for g in gemms:
        groups.setdefault(g.input[1], []).append(g)
    for wname, members in groups.items():
        w = numpy_helper.to_array(init[wname]).astype(np.float64)  # (out, in): transB = 1, as torch exports Linear
        a = np.max([amax[g.input[0]] for g in members], axis=0)
        scale = np.clip(np.clip(a, 1e-5, None) ** alpha / np.clip(np.abs(w).max(0), 1e-5, None) ** (1 - alpha), 1e-3, 1e3)
        init[wname].CopyFrom(numpy_helper.from_array((w * scale[None, :]).astype(np.float32), wname))
        inv = f"{wname}_smooth_inv"
        proto.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inv))
        for g in members:
            out = f"{g.input[0]}_smooth_{g.name}"
            proto.graph.node.insert(list(proto.graph.node).index(g),
                                    helper.make_node("Mul", [g.input[0], inv], [out], name=f"{g.name}_smooth"))
            g.input[0] = out
    onnx.save(proto, str(dst))


def _ablation(chain: Path, work: Path, calibration: int) -> list[dict]:
    """The chain-alone graph quantised layer by layer, with percentile calibration and after SmoothQuant."""
    import onnx

    from lhcml.export.fastcalo_int8 import compare, graph_inputs, open_graph
    from lhcml.export.quantize import dense_nodes, quantize_graph

    proto = onnx.load(str(chain))
    by_name = {n.name: n for n in proto.graph.node}
    nodes = dense_nodes(proto)
    layers: dict[str, list[str]] = {}
    for n in nodes:
        layers.setdefault(by_name[n].input[1], []).append(n)
    feed = graph_inputs(open_graph(chain), calibration, 0)
    feeds = [{k: v[s:s + 512] for k, v in feed.items()} for s in range(0, calibration, 512)]
    variants: list[tuple[str, Path, list[str], str]] = [
        (f"layer {i} ({w}) alone", chain, ns, "minmax") for i, (w, ns) in enumerate(layers.items())]
    variants.append(("all, percentile 99.999", chain, nodes, "percentile"))
    out = []
    for alpha in (0.5, 0.8):
        smoothed = work / f"chain_k1_smooth{alpha}.onnx"
        _smooth(chain, smoothed, feeds, alpha)
        exact = compare(chain, smoothed, 512, 3)
        if exact["voxel_dev_max"] > 1e-4:
            raise SystemExit(f"the SmoothQuant rescaling changed the float graph ({exact['voxel_dev_max']:.1e} x E_inc)")
        variants.append((f"all, SmoothQuant a = {alpha}", smoothed, dense_nodes(onnx.load(str(smoothed))), "minmax"))
    for i, (name, src, ns, method) in enumerate(variants):
        q = work / f"chain_k1_ablation{i}.onnx"
        quantize_graph(src, q, feeds, nodes=ns, method=method, force=True)
        out.append({"variant": name, "layers": len(ns), "check": compare(chain, q, 2048, 1)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="the generator (its sampler checkpoint)")
    ap.add_argument("--after", type=Path, required=True, help="the correction chain (.qmap.npz)")
    ap.add_argument("--student", type=Path, help="raw-stage refinement classifier (refine-distill; needed for k > 1)")
    ap.add_argument("--reference", type=Path, nargs="+", required=True, help="detailed validation file(s)")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4, 8], help="candidates per graph (1: the chain alone)")
    ap.add_argument("--auc", nargs="*", default=[], help="graphs to measure, as f32:K or int8:K (default: none)")
    ap.add_argument("--runs", type=int, default=2, help="classifier runs per graph and level")
    ap.add_argument("--epochs", type=int, default=20, help="classifier epochs")
    ap.add_argument("--seed", type=int, default=7, help="noise seed of the generated showers (also the classifier's)")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (0: no timing)")
    ap.add_argument("--calibration", type=int, default=4096, help="int8 calibration rows")
    ap.add_argument("--work", type=Path, required=True, help="folder for the graphs")
    ap.add_argument("--ablation", action="store_true", help="which layers carry the int8 loss (chain alone, k = 1)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.ablation and 1 not in args.k:
        ap.error("--ablation quantises the chain-alone graph: add 1 to --k")
    if args.student is None and any(k > 1 for k in args.k):
        ap.error("--k above 1 needs --student (the distilled classifier of refine-distill)")

    import onnx

    from lhcml.data.calochallenge import CaloSample, concat_samples, parse_binning, read_showers
    from lhcml.export.fastcalo import export_checkpoint
    from lhcml.export.fastcalo_int8 import quantize_shower_graph, time_graph
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection
    from lhcml.tasks.fastcalo.evaluate import classifier_test
    from lhcml.tasks.fastcalo.refine import export_refined

    args.work.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, Path] = {}
    checks: dict[str, dict] = {}
    for k in sorted(set(args.k)):
        f32 = args.work / ("chain_k1.onnx" if k == 1 else f"student_k{k}.onnx")
        if not f32.exists():
            if k == 1:
                export_checkpoint(args.checkpoint, f32, timing=False, correction=QuantileCorrection.load(args.after))
            else:
                export_refined(args.checkpoint, args.student, f32, after=args.after, candidates=k)
        q = f32.with_name(f32.stem + "_int8.onnx")
        if not q.exists():
            quantize_shower_graph(f32, q, calibration=args.calibration)
        info = json.loads({p.key: p.value for p in onnx.load(str(q)).metadata_props}["quantization"])
        checks[f"int8:{k}"] = info["check"]
        graphs[f"f32:{k}"], graphs[f"int8:{k}"] = f32, q
    unknown = [a for a in args.auc if a not in graphs]
    if unknown:
        ap.error(f"--auc {unknown}: not among the graphs {sorted(graphs)} (add the k to --k)")
    rows = {name: {"graph": name, "file": str(p)} for name, p in graphs.items()}
    for name, c in checks.items():
        rows[name]["check"] = c
    if args.auc:
        from lhcml.train.fastcalo import load_generator

        _, meta = load_generator(args.checkpoint)
        binning = parse_binning(meta["binning_xml"], source=str(args.checkpoint))
        ref = concat_samples([read_showers(p, binning) for p in args.reference])
        print(f"{len(ref)} reference showers", flush=True)
        for name in args.auc:
            t0 = time.time()
            gen = CaloSample(energies=ref.energies, showers=_generate(graphs[name], ref, args.seed), binning=ref.binning,
                             eta=ref.eta, phi=ref.phi)  # fmt: skip
            row = rows[name]
            row["generation_s"] = round(time.time() - t0, 1)
            for level in ("low", "high"):
                res = classifier_test(ref, gen, level, n_runs=args.runs, seed=args.seed, epochs=args.epochs)
                row[f"auc_{level}"] = res["auc"]
                row[f"auc_{level}_runs"] = [r["auc"] for r in res["runs"]]
            row["n_per_class"] = int(len(ref))
            print(f"  {name}: AUC {row['auc_low']['mean']:.3f} / {row['auc_high']['mean']:.3f}", flush=True)
    if args.rounds > 0:
        times: dict[str, list[float]] = {n: [] for n in graphs}
        for _ in range(args.rounds):
            for name, p in graphs.items():
                times[name].append(time_graph(p, rounds=1))
        for name in graphs:
            rows[name]["ms_per_shower"] = float(np.median(times[name]))

    ablation = _ablation(graphs["f32:1"], args.work, args.calibration) if args.ablation else []
    for r in ablation:
        c = r["check"]
        print(f"  ablation {r['variant']}: {r['layers']} layers in int8; largest layer-energy change per shower median "
              f"{c['layer_energy_dev_median']:.1e}, 99 % {c['layer_energy_dev_p99']:.1e} x E_inc; layer split "
              f"{c['layer_fraction_float'][:3]} -> {c['layer_fraction_int8'][:3]}", flush=True)

    def fmt(row: dict, key: str) -> str:
        v = row.get(key)
        return "-" if v is None else f"{v['mean']:.3f} ± {v['std']:.3f}"

    print()
    print("| graph | AUC low | AUC high | ms / shower (batch 10^4, 1 thread) | int8 check: dE_layer/E_inc p99 |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        ms = row.get("ms_per_shower")
        c = row.get("check")
        dev = "-" if c is None else f"{c['layer_energy_dev_p99']:.1e}"
        print(f"| {name} | {fmt(row, 'auc_low')} | {fmt(row, 'auc_high')} | {'-' if ms is None else f'{ms:.3f}'} | "
              f"{dev} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": list(rows.values()),
                                         "ablation": ablation,
                                         "machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d %H:%M")},
                                        indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
