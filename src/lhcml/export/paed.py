"""ONNX export of the photon pile-up denoiser (PAED; trained by :mod:`lhcml.train.paed`).

Inputs ``raw_<layer>`` ``(batch, H, W)`` in MeV; outputs ``denoised_<layer>`` (MeV) and
``latent``; the batch axis is dynamic. ``metadata_props`` as for the taggers: ``model_name``
(``paed``), ``lhcml_version``, ``config_yaml``, ``inputs``, ``outputs``. Checked against torch
with onnxruntime (images compared in units of ``energy_scale_mev``). Called through
:func:`lhcml.export.export_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.export.onnx import ExportCheckError, ExportReport


def export_paed_onnx(paed_path: str | Path, output: str | Path, force: bool = False, atol: float = 1e-4,
                     n_check: int = 64, seed: int = 0) -> ExportReport:
    """Export the PAED to ONNX (inputs ``raw_<layer>`` (batch, H, W) in MeV, outputs
    ``denoised_<layer>`` and ``latent``) and check onnxruntime against torch.

    Returns
    -------
    ExportReport
        ``max_abs_diff_random``: images in units of ``energy_scale_mev``, latent absolute (no
        real-input check, no timing).
    """
    import onnx
    import onnxruntime as ort
    import torch
    import yaml

    from lhcml import __version__
    from lhcml.train.paed import load_paed

    output = Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass force=True to overwrite")
    model, cfg = load_paed(paed_path)
    groups = list(model.groups)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *xs):
            res = self.model(dict(zip(groups, xs, strict=True)))
            return (*[res[g] for g in groups], res["latent"])

    wrapper = Wrapper().eval()
    rng = np.random.default_rng(seed)
    shapes = [model.image_shapes[g] for g in groups]
    arrays = [np.abs(rng.normal(0, 300.0, size=(n_check, *s))).astype(np.float32) for s in shapes]
    out_names = [f"denoised_{g[len('raw_'):]}" for g in groups] + ["latent"]
    with atomic_path(output) as tmp:
        torch.onnx.export(
            wrapper, tuple(torch.from_numpy(a[:2]) for a in arrays), str(tmp), input_names=groups,
            output_names=out_names, opset_version=17, dynamo=False,
            dynamic_axes={n: {0: "batch"} for n in [*groups, *out_names]},
        )  # fmt: skip
        proto = onnx.load(str(tmp))
        props = {
            "model_name": "paed", "lhcml_version": __version__,
            "config_yaml": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
            "inputs": json.dumps({g: {"group": g, "shape": list(model.image_shapes[g])} for g in groups}),
            "outputs": json.dumps(out_names),
        }  # fmt: skip
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, dict(zip(groups, arrays, strict=True)))
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(*[torch.from_numpy(a) for a in arrays])]
        scale = cfg.model.energy_scale_mev
        diff = max(float(np.max(np.abs(g - r))) / (scale if k < len(groups) else 1.0)
                   for k, (g, r) in enumerate(zip(got, ref, strict=True)))
        if diff > atol:
            raise ExportCheckError(f"onnxruntime and torch differ by {diff:.2e} (> {atol}) for the PAED {paed_path}")
        del sess
    nan = float("nan")
    return ExportReport(output, diff, None, 0, nan, nan, groups, out_names)
