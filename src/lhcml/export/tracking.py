"""ONNX export of the hit-level tracking models (trained by :mod:`lhcml.train.tracking`).

A model of :data:`lhcml.train.tracking.TRACKING_MODELS` is exportable when it provides
``onnx_signature()`` (input and output names, dynamic axes, a description of each) and
``example_inputs(n, seed)`` (realistic random inputs by name, for the check). The graph takes the
raw inputs (normalisation inside); ``metadata_props``: ``model_name``, ``lhcml_version``,
``config_yaml``, ``model_init_yaml``, ``inputs``, ``outputs``. onnxruntime is compared with torch
on ``n_check`` random inputs; ``latency_ms_per_jet``/``throughput_jets_per_s`` of the report are
per *hit* (batch of 1 hit and of 1000 hits, one thread).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.errors import ConfigError
from lhcml.export.onnx import ExportCheckError, ExportReport, _timing, inference_session

#: largest accepted |onnx - torch| (float32 round-off of an MLP; our choice)
DEFAULT_ATOL = 1e-4


def export_tracking_model(
    model: Any,
    path: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    force: bool = False,
    atol: float = DEFAULT_ATOL,
    n_check: int = 2000,
    timing: bool = True,
    opset: int = 17,
) -> ExportReport:
    """Export a tracking model to ``path`` (atomically; refused if it exists, unless ``force``).

    Raises
    ------
    ConfigError
        The model has no ONNX signature (not exportable).
    ExportCheckError
        onnxruntime and torch differ by more than ``atol``.
    """
    import onnx
    import torch

    from lhcml import __version__

    if not hasattr(model, "onnx_signature") or not hasattr(model, "example_inputs"):
        raise ConfigError(f"{type(model).__name__} has no ONNX signature: it cannot be exported")
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True (--force) to overwrite it")
    model = model.eval()
    sig = model.onnx_signature()
    names, outputs = list(sig["inputs"]), list(sig["outputs"])
    check = model.example_inputs(max(int(n_check), 2), 0)
    meta = dict(meta or {})
    props = {
        "model_name": str(meta.get("model_name", getattr(model, "registry_name", type(model).__name__))),
        "lhcml_version": __version__,
        "inputs": json.dumps({n: sig["description"].get(n, "") for n in names}),
        "outputs": json.dumps({n: sig["description"].get(n, "") for n in outputs}),
        **{k: str(meta[k]) for k in ("config_yaml", "model_init_yaml") if k in meta},
    }

    class _Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(names, args, strict=True)))

    graph = _Graph().eval()
    with atomic_path(path) as tmp:
        with torch.no_grad():
            torch.onnx.export(
                graph, tuple(check[n][:2] for n in names), str(tmp), input_names=names, output_names=outputs,
                opset_version=opset, dynamo=False, do_constant_folding=True, dynamic_axes=sig["dynamic_axes"],
            )  # fmt: skip
        proto = onnx.load(str(tmp))
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        sess = inference_session(Path(tmp))
        arrays = [check[n].numpy() for n in names]
        got = sess.run(outputs, dict(zip(names, arrays, strict=True)))
        with torch.no_grad():
            ref = graph(*(check[n] for n in names))
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        diff = max(float(np.max(np.abs(g - r.numpy()))) for g, r in zip(got, ref, strict=True))
        if not diff <= atol:
            raise ExportCheckError(f"onnxruntime and torch differ by {diff:.2e} (> {atol:g}) for {props['model_name']}")
        lat = thr = float("nan")
        if timing:
            big = model.example_inputs(1000, 1)
            lat, thr = _timing(sess, names, [big[n][:1].numpy() for n in names], [big[n].numpy() for n in names])
        del sess
    return ExportReport(path, diff, None, 0, lat, thr, names, outputs)


def export_checkpoint(
    checkpoint: str | Path, output: str | Path, *, force: bool = False, atol: float | None = None,
    timing: bool = True,
) -> ExportReport:  # fmt: skip
    """Export a tracking-model training checkpoint (:func:`lhcml.train.tracking.load_tracking_model`)."""
    from lhcml.train.tracking import load_tracking_model

    model, meta = load_tracking_model(checkpoint)
    if hasattr(model, "onnx_module"):  # a model whose ONNX inputs differ from its torch ones (the GNN edge classifiers)
        model = model.onnx_module()
    return export_tracking_model(model, output, meta=meta, force=force,
                                 atol=DEFAULT_ATOL if atol is None else atol, timing=timing)  # fmt: skip
