"""Post-training static int8 quantisation of an exported ONNX graph's dense layers (onnxruntime.quantization).

What a C++ or trigger user of an exported network does to buy CPU time: the weights of the dense layers are stored as
int8 (symmetric, one scale per output channel) and their input activations as uint8 with a scale and zero point
fixed once from a **calibration** sample (the range each activation takes there: ``minmax``, or the 99.999th
percentile of its magnitude: ``percentile``); onnxruntime then runs those layers as integer matrix products
(``QDQ`` format, fused by onnxruntime into ``QLinearMatMul``/``MatMulInteger`` kernels; VNNI on CPUs that have it)
and everything else in float32.

Static, not dynamic, quantisation on purpose: dynamic quantisation takes each activation's range from the batch being
run, so a row's output would depend on the other rows of its batch; here every scale is a constant of the file and a
row's output is a function of that row alone (:func:`lhcml.export.fastcalo_int8.quantize_shower_graph` checks
it on every file it writes).

Which layers: by default every ``Gemm`` node (what ``torch.onnx.export`` writes for ``nn.Linear`` on a 2-D input) whose
weight is an initializer with both dimensions >= ``min_dim`` — the learned dense layers. Other matrix products (e.g.
a fixed 0/1 matrix that sums cells per layer) stay float32: quantising them would change sums that must be exact.
``skip`` removes nodes by name (e.g. the first layer of each network, whose input mixes quantities of different
scales).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.errors import ConfigError

#: calibration methods offered (onnxruntime.quantization.CalibrationMethod)
METHODS = ("minmax", "percentile")
#: the metadata key a quantised graph carries (JSON)
META_KEY = "quantization"


def dense_nodes(proto: Any, min_dim: int = 16) -> list[str]:
    """Names of the ``Gemm`` nodes of ``proto`` whose weight (input B) is a 2-D initializer with both dimensions
    >= ``min_dim``, in graph order."""
    init = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    out = []
    for node in proto.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 2:
            continue
        dims = init.get(node.input[1])
        if dims is not None and len(dims) == 2 and min(dims) >= min_dim:
            out.append(node.name)
    return out


def first_layers(proto: Any, nodes: Sequence[str]) -> list[str]:
    """Those of ``nodes`` whose input A is not computed by another of ``nodes`` through element-wise activations
    alone: the first dense layer of each network (and of each repeated call of it)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    chosen = set(nodes)
    firsts = []
    for node in proto.graph.node:
        if node.name not in chosen:
            continue
        name, first = node.input[0], True
        for _ in range(8):  # walk back through a few element-wise ops (activation, bias, ...)
            p = producer.get(name)
            if p is None:
                break
            if p.name in chosen:
                first = False
                break
            if p.op_type not in ("Relu", "Sigmoid", "Mul", "Tanh", "LeakyRelu", "Elu", "Gelu", "Add", "Identity"):
                break
            name = p.input[0]
        if first:
            firsts.append(node.name)
    return firsts


class _Reader:
    """An onnxruntime ``CalibrationDataReader`` over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._it = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - called by some onnxruntime versions only
        pass


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def quantize_graph(
    src: str | Path, dst: str | Path, calibration: Iterable[dict[str, np.ndarray]], *, nodes: Sequence[str] | None = None,
    skip: Sequence[str] = (), method: str = "minmax", min_dim: int = 16, force: bool = False,
    extra_metadata: dict[str, Any] | None = None, check: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write ``dst``: ``src`` with its dense layers statically quantised to int8 (weights per channel, symmetric;
    activations uint8, ranges from ``calibration``, a sequence of input feeds of ``src``).

    ``nodes`` (default :func:`dense_nodes`) minus ``skip`` are quantised. ``src``'s metadata is copied and
    :data:`META_KEY` added (scheme, method, nodes, calibration rows, ``src``'s sha256, ``extra_metadata``).
    ``dst`` is written atomically and refused if it exists (unless ``force``). ``check``, if given, is called with
    the quantised graph's path before ``dst`` is written; what it returns is stored under ``check`` in that metadata,
    and an exception from it leaves no ``dst``. Returns that metadata as a dict.

    Raises :class:`ConfigError` for a graph that is already quantised, one without dense layers, an unknown method,
    an empty calibration, or a graph onnxruntime cannot load."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} exists; pass --force to overwrite it")
    try:
        proto = onnx.load(str(src))
    except Exception as err:  # noqa: BLE001 - onnx raises several types for a bad file
        raise ConfigError(f"{src} is not a readable ONNX file ({err}); export the model again") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_KEY in meta or any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise ConfigError(f"{src} is already quantised; quantise the float32 graph it was made from")
    chosen = list(dense_nodes(proto, min_dim) if nodes is None else nodes)
    unknown = sorted(set(skip) - set(chosen))
    if unknown:
        raise ConfigError(f"--skip names nodes that are not dense layers of {src}: {unknown[:3]}")
    chosen = [n for n in chosen if n not in set(skip)]
    if not chosen:
        raise ConfigError(f"{src} has no dense (Gemm) layer with both dimensions >= {min_dim} to quantise")
    feeds = list(calibration)
    rows = sum(int(next(iter(f.values())).shape[0]) for f in feeds) if feeds else 0
    if rows == 0:
        raise ConfigError("the calibration sample is empty; give at least one row")
    info = {"scheme": "int8 static (QDQ): weights int8 symmetric per channel, activations uint8",
            "method": method, "nodes": chosen, "calibration_rows": rows, "source_sha256": sha256_file(src),
            **(extra_metadata or {})}  # fmt: skip
    calib = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
    extra = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with tempfile.TemporaryDirectory() as tmpdir, atomic_path(dst) as tmp:
        work = Path(tmpdir) / "q.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime logs a pre-processing hint on the root logger at every call
        try:
            quantize_static(str(src), str(work), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                            op_types_to_quantize=["Gemm"], activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_quantize=chosen, calibrate_method=calib,
                            extra_options=extra)  # fmt: skip
        except ValueError as err:  # the calibrator's histogram of an activation that is not finite
            raise ConfigError(f"calibrating {src} failed ({err}): an activation is not finite over the calibration "
                              "sample; use --method minmax") from None
        finally:
            root.setLevel(level)
        if check is not None:
            info["check"] = check(work)
        out = onnx.load(str(work))
        del out.metadata_props[:]
        for k, v in {**meta, META_KEY: json.dumps(info)}.items():
            entry = out.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(out)
        onnx.save(out, str(tmp))
    return info


__all__ = ["META_KEY", "METHODS", "dense_nodes", "first_layers", "quantize_graph", "sha256_file"]
