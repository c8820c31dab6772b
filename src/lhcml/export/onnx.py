"""Export trained NN taggers to ONNX, check them with onnxruntime and time them.

The exported graph takes **raw** features (the normalisation is folded into the graph) and
returns the class probabilities, one output per class named like the prediction columns:

* inputs: ``jet_features`` ``(batch, F_jet)``; ``track_features`` ``(batch, n_tracks, F_trk)`` and
  ``track_valid`` ``(batch, n_tracks)`` bool (True = real track); generally
  ``<group without trailing s>_features`` / ``_valid``. Batch and object axes are dynamic.
* outputs: ``<tagger>_<output>`` (e.g. ``GN2_pb``, ``GN2_pc``, ``GN2_pu``), each ``(batch,)``.
* ``metadata_props``: ``tagger_name``, ``lhcml_version``, ``config_yaml``, ``norm_yaml``,
  ``inputs`` (JSON: input name -> group and variable list), ``outputs`` (JSON list),
  ``class_names`` (JSON list), ``model_name``.

:func:`export_onnx` refuses to overwrite an existing file unless ``force``; it writes to a
temporary name and renames, checks onnxruntime against torch to ``atol`` (default 1e-5) on random
inputs and, if given, on real jets from a file, and measures latency (batch 1, one thread) and
throughput (batch 1000). The MV2-like BDT (an xgboost model file) is exported as an
``ai.onnx.ml`` ``TreeEnsembleClassifier`` with the same input/output names and metadata, checked
against xgboost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.errors import LhcmlError


class ExportCheckError(LhcmlError, RuntimeError):
    """onnxruntime and torch disagree beyond the tolerance."""


def input_names(group: str) -> tuple[str, str]:
    """ONNX input names of a group: (``<singular>_features``, ``<singular>_valid``)."""
    base = group[:-1] if group.endswith("s") and len(group) > 1 else group
    return f"{base}_features", f"{base}_valid"


@dataclass
class ExportReport:
    """What :func:`export_onnx` did and measured."""

    path: Path
    max_abs_diff_random: float
    max_abs_diff_real: float | None
    n_real_jets: int
    latency_ms_per_jet: float  # batch 1, one thread
    throughput_jets_per_s: float  # batch 1000, one thread
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def _wrapper(model: Any, groups: list[str], kinds: dict[str, str]) -> Any:
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            inputs: dict[str, torch.Tensor] = {}
            i = 0
            for g in groups:
                inputs[g] = tensors[i]
                i += 1
                if kinds[g] == "object":
                    inputs[f"{g}_valid"] = tensors[i]
                    i += 1
            probs = torch.softmax(self.model(inputs)["logits"], dim=-1)
            return tuple(probs[:, k] for k in range(probs.shape[1]))

    return Wrapper().eval()


def _random_inputs(
    groups: list[str], kinds: dict[str, str], shapes: dict[str, list[int]], norm: dict, batch: int,
    n_obj: int, seed: int,
) -> list[np.ndarray]:  # fmt: skip
    rng = np.random.default_rng(seed)
    out = []
    for g in groups:
        if kinds[g] == "image":
            out.append(rng.normal(size=(batch, *shapes[g])).astype(np.float32))
            continue
        mean = np.array([v["mean"] for v in norm[g].values()], np.float32)
        std = np.array([v["std"] for v in norm[g].values()], np.float32)
        if kinds[g] == "jet":
            out.append((mean + std * rng.normal(size=(batch, len(mean)))).astype(np.float32))
        else:
            x = (mean + std * rng.normal(size=(batch, n_obj, len(mean)))).astype(np.float32)
            valid = np.arange(n_obj)[None, :] < rng.integers(0, n_obj + 1, size=(batch, 1))
            valid[0] = False  # a jet without objects
            valid[-1] = True
            x[~valid] = rng.normal(size=(int((~valid).sum()), len(mean))) * 1e3  # garbage padding
            out.append(x)
            out.append(valid)
    return out


def _real_inputs(path: str | Path, specs: dict, groups: list[str], n: int) -> list[np.ndarray]:
    from lhcml.train.datamodule import H5JetDataset

    ds = H5JetDataset([path], specs, labels=None, batch_size=n, num_jets=n)
    batch = next(iter(ds))
    out = []
    for g in groups:
        out.append(batch[g].numpy())
        if specs[g].kind == "object":
            out.append(batch[f"{g}_valid"].numpy())
    return out


def inference_session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads, one inter-op thread,
    warnings off: the session every lhcml check and benchmark evaluates an exported file with."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


_session = inference_session  # the old private name, still imported by tests


def _compare(sess: Any, wrapper: Any, names: list[str], arrays: list[np.ndarray]) -> float:
    import torch

    feed = dict(zip(names, arrays, strict=True))
    onnx_out = sess.run(None, feed)
    with torch.inference_mode():
        torch_out = wrapper(*[torch.from_numpy(a) for a in arrays])
    return max(float(np.max(np.abs(o - t.numpy()))) if o.size else 0.0 for o, t in zip(onnx_out, torch_out, strict=True))


def _timing(sess: Any, names: list[str], arrays_1: list[np.ndarray], arrays_k: list[np.ndarray]) -> tuple[float, float]:
    feed1 = dict(zip(names, arrays_1, strict=True))
    feedk = dict(zip(names, arrays_k, strict=True))
    for _ in range(10):
        sess.run(None, feed1)
    t, n = time.perf_counter(), 0
    while n < 200 and time.perf_counter() - t < 1.0:
        sess.run(None, feed1)
        n += 1
    latency_ms = (time.perf_counter() - t) / n * 1e3
    sess.run(None, feedk)
    t, n = time.perf_counter(), 0
    while n < 5 and time.perf_counter() - t < 2.0:
        sess.run(None, feedk)
        n += 1
    throughput = n * len(arrays_k[0]) / (time.perf_counter() - t)
    return latency_ms, throughput


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    force: bool = False,
    check_file: str | Path | None = None,
    n_check: int = 1000,
    atol: float = 1e-5,
    opset: int = 17,
    timing: bool = True,
) -> ExportReport:
    """Export a training checkpoint to ONNX, verify it and time it.

    Parameters
    ----------
    checkpoint
        A ``.ckpt`` written by ``lhcml train``, or an mv2 model file (``.json``, exported as an
        ``ai.onnx.ml`` tree ensemble by :func:`export_bdt_onnx`).
    output
        The ``.onnx`` file to write.
    force
        Overwrite ``output`` if it exists (otherwise ``FileExistsError``).
    check_file
        A flat file whose first ``n_check`` jets are used for the torch/onnxruntime comparison.
    atol
        Largest allowed absolute difference of the probabilities.
    opset
        ONNX opset.
    timing
        Measure latency and throughput (one CPU thread).

    Returns
    -------
    ExportReport
    """
    import onnx
    import torch
    import yaml

    from lhcml import __version__
    from lhcml.train.checkpoint import load_tagger, meta_variables
    from lhcml.train.predict import _specs_for

    checkpoint, output = Path(checkpoint), Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass force=True (--force) to overwrite it")
    if checkpoint.suffix == ".json":
        return export_bdt_onnx(checkpoint, output, check_file, n_check, atol, timing)
    model, meta = load_tagger(checkpoint)
    variables = meta_variables(meta)
    shapes = yaml.safe_load(meta["input_shapes_yaml"])
    norm = yaml.safe_load(meta["norm_yaml"]) or {}
    groups = list(model.input_groups)
    kinds = {g: ("image" if variables[g] is None else ("object" if len(shapes[g]) == 2 else "jet")) for g in groups}
    names, dyn = [], {}
    for g in groups:
        feat, valid = input_names(g)
        names.append(feat)
        dyn[feat] = {0: "batch"}
        if kinds[g] == "object":
            names.append(valid)
            dyn[feat] = {0: "batch", 1: f"n_{g}"}
            dyn[valid] = {0: "batch", 1: f"n_{g}"}
    tagger = meta["tagger_name"]
    out_names = [f"{tagger}_{o}" for o in meta["outputs"]]
    for o in out_names:
        dyn[o] = {0: "batch"}
    wrapper = _wrapper(model, groups, kinds)
    n_obj = {g: shapes[g][0] for g in groups if kinds[g] == "object"}
    example = _random_inputs(groups, kinds, shapes, norm, 4, max(n_obj.values(), default=1), seed=0)
    with atomic_path(output) as tmp:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, tuple(torch.from_numpy(a) for a in example), str(tmp),
                input_names=names, output_names=out_names, dynamic_axes=dyn,
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )  # fmt: skip
        proto = onnx.load(str(tmp))
        props = {
            "tagger_name": tagger,
            "model_name": yaml.safe_load(meta["config_yaml"])["model"]["name"],
            "lhcml_version": __version__,
            "config_yaml": meta["config_yaml"],
            "norm_yaml": meta["norm_yaml"],
            "inputs": json.dumps({n: {"group": g, "variables": variables[g]} for g in groups for n in input_names(g)[: 2 if kinds[g] == "object" else 1]}),
            "outputs": json.dumps(out_names),
            "class_names": json.dumps(meta["class_names"]),
        }
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

        sess = _session(tmp)
        # random inputs, with an object count different from the traced one (dynamic axes)
        rnd = _random_inputs(groups, kinds, shapes, norm, 64, max(1, max(n_obj.values(), default=1) - 7), seed=1)
        diff_rnd = _compare(sess, wrapper, names, rnd)
        diff_real, n_real = None, 0
        if check_file is not None:
            specs = _specs_for(Path(check_file), checkpoint, meta)
            real = _real_inputs(check_file, specs, groups, n_check)
            n_real = len(real[0])
            diff_real = _compare(sess, wrapper, names, real)
        worst = max(diff_rnd, diff_real or 0.0)
        if not np.isfinite(worst) or worst > atol:
            raise ExportCheckError(
                f"onnxruntime and torch disagree by {worst:.3g} (> {atol:g}) for {checkpoint}"
            )
        lat, thr = float("nan"), float("nan")
        if timing:
            one = _random_inputs(groups, kinds, shapes, norm, 1, max(n_obj.values(), default=1), seed=2)
            one = [a if a.dtype != bool else np.ones_like(a) for a in one]  # full jet
            k = _random_inputs(groups, kinds, shapes, norm, 1000, max(n_obj.values(), default=1), seed=3)
            lat, thr = _timing(sess, names, one, k)
        del sess
    return ExportReport(output, diff_rnd, diff_real, n_real, lat, thr, names, out_names)


def _bdt_graph(booster: Any, tagger: str, outputs: list[str], opset: int = 17) -> Any:
    """An ``ai.onnx.ml.TreeEnsembleClassifier`` graph equal to a multi:softprob booster."""
    from onnx import TensorProto, helper

    cfg = json.loads(booster.save_config())["learner"]["learner_model_param"]
    k = int(cfg["num_class"])
    raw = cfg["base_score"]
    base = json.loads(raw) if raw.strip().startswith("[") else [float(raw)] * k
    names = list(booster.feature_names)
    best = booster.attr("best_iteration")
    n_rounds = int(best) + 1 if best is not None else booster.num_boosted_rounds()
    trees = [json.loads(t) for t in booster.get_dump(dump_format="json")][: n_rounds * k]
    a: dict[str, list] = {key: [] for key in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "class_treeids", "class_nodeids", "class_ids", "class_weights",
    )}  # fmt: skip
    for t, tree in enumerate(trees):
        stack = [tree]
        while stack:
            node = stack.pop()
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(node["nodeid"])
            if "leaf" in node:
                for key, v in (("nodes_featureids", 0), ("nodes_values", 0.0), ("nodes_modes", "LEAF"),
                               ("nodes_truenodeids", 0), ("nodes_falsenodeids", 0),
                               ("nodes_missing_value_tracks_true", 0)):  # fmt: skip
                    a[key].append(v)
                a["class_treeids"].append(t)
                a["class_nodeids"].append(node["nodeid"])
                a["class_ids"].append(t % k)
                a["class_weights"].append(float(node["leaf"]))
                continue
            a["nodes_featureids"].append(names.index(node["split"]))
            a["nodes_values"].append(float(np.float32(node["split_condition"])))
            a["nodes_modes"].append("BRANCH_LT")
            a["nodes_truenodeids"].append(node["yes"])
            a["nodes_falsenodeids"].append(node["no"])
            a["nodes_missing_value_tracks_true"].append(int(node["missing"] == node["yes"]))
            stack.extend(node["children"])
    ens = helper.make_node(
        "TreeEnsembleClassifier", ["jet_features"], ["label", "probabilities"], domain="ai.onnx.ml",
        classlabels_int64s=list(range(k)), post_transform="SOFTMAX", base_values=[float(b) for b in base], **a,
    )  # fmt: skip
    nodes = [ens]
    for i, o in enumerate(outputs):
        idx = helper.make_tensor(f"idx_{i}", TensorProto.INT64, [], [i])
        nodes.append(helper.make_node("Constant", [], [f"idx_{i}_c"], value=idx))
        nodes.append(helper.make_node("Gather", ["probabilities", f"idx_{i}_c"], [f"{tagger}_{o}"], axis=1))
    graph = helper.make_graph(
        nodes, f"{tagger}_bdt",
        [helper.make_tensor_value_info("jet_features", TensorProto.FLOAT, ["batch", len(names)])],
        [helper.make_tensor_value_info(f"{tagger}_{o}", TensorProto.FLOAT, ["batch"]) for o in outputs],
    )  # fmt: skip
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 3)]
    )


def export_bdt_onnx(
    model_file: Path, output: Path, check_file: str | Path | None = None, n_check: int = 1000,
    atol: float = 1e-5, timing: bool = True,
) -> ExportReport:  # fmt: skip
    """Export an mv2 model file (xgboost) as an ONNX tree ensemble (same I/O names and metadata).

    Checked against xgboost's own predictions on random and (optionally) real jets.
    """
    import onnx
    import yaml

    from lhcml import __version__
    from lhcml.models.bdt import load_bdt, predict_bdt
    from lhcml.train.predict import _specs_for

    booster, meta = load_bdt(model_file)
    tagger = meta["tagger_name"]
    variables = yaml.safe_load(meta["variables_yaml"])
    proto = _bdt_graph(booster, tagger, meta["outputs"])
    props = {
        "tagger_name": tagger, "model_name": "mv2", "lhcml_version": __version__,
        "config_yaml": meta["config_yaml"], "norm_yaml": meta["norm_yaml"],
        "inputs": json.dumps({"jet_features": {"group": "jets", "variables": variables["jets"]}}),
        "outputs": json.dumps([f"{tagger}_{o}" for o in meta["outputs"]]),
        "class_names": json.dumps(meta["class_names"]),
    }  # fmt: skip
    for key, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, v
    onnx.checker.check_model(proto)
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
        sess = _session(tmp)

        def diff(x: np.ndarray, sess: Any = sess) -> float:
            got = np.stack(sess.run(None, {"jet_features": x}), 1)
            return float(np.max(np.abs(got - predict_bdt(booster, x))))

        rng = np.random.default_rng(1)
        xr = np.stack([rng.choice(np.asarray([-1.0, 0.0, 1.0, 10.0, 1e3, 1e5], np.float32), 64)
                       * rng.uniform(0.5, 2, 64).astype(np.float32) for _ in variables["jets"]], 1)  # fmt: skip
        d_rnd, d_real, n_real = diff(xr.astype(np.float32)), None, 0
        if check_file is not None:
            specs = _specs_for(Path(check_file), model_file, meta)
            x = _real_inputs(check_file, specs, ["jets"], n_check)[0]
            n_real, d_real = len(x), diff(x)
        worst = max(d_rnd, d_real or 0.0)
        if not np.isfinite(worst) or worst > atol:
            raise ExportCheckError(f"onnxruntime and xgboost disagree by {worst:.3g} (> {atol:g}) for {model_file}")
        lat, thr = float("nan"), float("nan")
        if timing:
            lat, thr = _timing(sess, ["jet_features"], [xr[:1]], [np.resize(xr, (1000, xr.shape[1]))])
        del sess
    return ExportReport(output, d_rnd, d_real, n_real, lat, thr, ["jet_features"], json.loads(props["outputs"]))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dictionary."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
