"""ONNX export of the generative fast-calorimeter models (a sampling graph with the noise as input).

The graph maps

* ``incident_energy`` ``(N, 1)`` float32, GeV,
* ``eta`` ``(N, 1)`` float32, the incident ``|η|`` — only for a model conditioned on it
  (``model.eta_range``; the metadata then carry ``eta_min``/``eta_max``, the trained range),
* ``phi`` ``(N, 1)`` float32, the incident φ in radians — only for a model with ``model.phi_cells``
  (the graph computes ``sin``/``cos`` of ``n φ`` itself), and
* ``noise`` ``(N, noise_dim)`` float32 (standard normal draws)

to ``showers`` ``(N, V)`` float32 GeV: :meth:`FastCaloGenerator.sample` in ``eval()`` mode, a
deterministic function of its inputs, so onnxruntime reproduces PyTorch exactly up to float
round-off (asserted on every export). The batch axis is dynamic. ``metadata_props``:
``model_name``, ``noise_dim``, ``n_voxels``, ``layer_sizes`` (JSON), ``e_min_gev``/``e_max_gev``
(the trained range), ``particle``, ``binning_sha256``, ``binning_xml`` (when known),
``lhcml_version`` (+ ``config_yaml`` from a checkpoint; ``graph: lean`` for the lean graph).
:mod:`lhcml.sim.fastcalo` runs such a file with onnxruntime alone (``lhcml simulate ... --calo
fast:MODEL.onnx``). ``lean=True`` writes a flow-matching model's sampling graph with precomputed
constants and fewer decoding operations (:mod:`lhcml.export.fastcalo_lean`), the same function,
checked against the same PyTorch sampler.

``lhcml export RUN_OR_CHECKPOINT OUT.onnx`` reaches :func:`export_checkpoint` through
:func:`lhcml.export.export_model` (trainer kind ``fastcalo``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.errors import ConfigError
from lhcml.export.onnx import ExportCheckError, ExportReport, _session, _timing

#: largest accepted |onnx - torch| per voxel, in units of the incident energy (our choice:
#: float32 round-off of a few MLP layers is ~1e-7 relative)
DEFAULT_ATOL = 1e-5
INPUT_NAMES = ("incident_energy", "noise")
#: the inputs of a graph of an eta-conditioned model
INPUT_NAMES_ETA = ("incident_energy", "eta", "noise")
OUTPUT_NAME = "showers"


def input_names(model: Any) -> tuple[str, ...]:
    """The graph's input names: with ``eta`` for a model conditioned on it, with ``phi`` (after
    ``eta``) for a model with ``phi_cells``."""
    names = INPUT_NAMES_ETA if getattr(model, "conditions_on_eta", False) else INPUT_NAMES
    if getattr(model, "conditions_on_phi", False):
        names = (*names[:-1], "phi", names[-1])
    return names


def _wrapper(model: Any) -> Any:
    import torch

    class SamplingGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, incident_energy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return self.model.sample(incident_energy.reshape(-1), noise)

    class EtaSamplingGraph(SamplingGraph):
        def forward(self, incident_energy: torch.Tensor, eta: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.model.sample(incident_energy.reshape(-1), noise, eta.reshape(-1))

    class EtaPhiSamplingGraph(SamplingGraph):
        def forward(self, incident_energy: torch.Tensor, eta: torch.Tensor, phi: torch.Tensor,  # type: ignore[override]
                    noise: torch.Tensor) -> torch.Tensor:  # fmt: skip
            return self.model.sample(incident_energy.reshape(-1), noise, eta.reshape(-1), phi.reshape(-1))

    class PhiSamplingGraph(SamplingGraph):
        def forward(self, incident_energy: torch.Tensor, phi: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.model.sample(incident_energy.reshape(-1), noise, None, phi.reshape(-1))

    on_eta, on_phi = getattr(model, "conditions_on_eta", False), getattr(model, "conditions_on_phi", False)
    if on_phi:
        return (EtaPhiSamplingGraph() if on_eta else PhiSamplingGraph()).eval()
    return (EtaSamplingGraph() if on_eta else SamplingGraph()).eval()


def _correction_module(correction: Any, model: Any) -> Any:
    """The quantile correction's torch module ``(showers, energy, eta) -> showers``
    (:meth:`lhcml.models.fastcalo.quantile_map.QuantileCorrection.torch_module`), checked against ``model``."""
    on_eta = bool(getattr(model, "conditions_on_eta", False))
    if not on_eta and any(c.condition == "eta_phase" for c in correction.chain()):
        raise ConfigError("a quantile correction conditioned on eta_phase needs a generator conditioned on |eta|")
    return correction.torch_module()


def _corrected(graph: Any, correction: Any, model: Any) -> Any:
    """``graph`` (a sampling graph, inputs as :func:`input_names`) followed by the quantile correction
    (:func:`_correction_module`)."""
    import torch

    on_eta = bool(getattr(model, "conditions_on_eta", False))
    module = _correction_module(correction, model)

    class CorrectedGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph, self.correction = graph, module

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            showers = self.graph(*inputs)
            return self.correction(showers, inputs[0].reshape(-1), inputs[1].reshape(-1) if on_eta else None)

    return CorrectedGraph().eval()


def check_inputs(model: Any, n: int, seed: int, noise_dim: int | None = None) -> tuple[np.ndarray, ...]:
    """Energies log-uniform over the trained range (both edges included), for an η-conditioned
    model |η| uniform over its range (both edges included), and standard-normal noise (``noise_dim`` columns,
    default the model's): the graph's inputs in order (:func:`input_names`)."""
    rng = np.random.default_rng(seed)
    lo, hi = math.log(model.e_min_gev), math.log(model.e_max_gev)
    e = np.exp(rng.uniform(lo, hi, size=n))
    e[0], e[-1] = model.e_min_gev, model.e_max_gev
    z = rng.standard_normal((n, model.noise_dim if noise_dim is None else int(noise_dim)))
    out = [e.astype(np.float32)[:, None]]
    if getattr(model, "conditions_on_eta", False):
        eta = rng.uniform(*model.eta_range, size=n)
        eta[0], eta[-1] = model.eta_range[1], model.eta_range[0]
        out.append(eta.astype(np.float32)[:, None])
    if getattr(model, "conditions_on_phi", False):
        out.append(rng.uniform(-math.pi, math.pi, size=n).astype(np.float32)[:, None])
    return (*out, z.astype(np.float32))


#: largest fraction of (shower, layer) pairs :func:`agreement` exempts as threshold flips (our choice)
MAX_FLIP_FRACTION = 0.01


def agreement(
    got: np.ndarray, ref: np.ndarray, energies: np.ndarray, threshold_gev: float, layer_sizes: list[int],
    atol: float,
) -> tuple[float, int]:  # fmt: skip
    """``(max |got - ref| / E_inc, exempt (shower, layer) pairs)`` of two runtimes' showers ``(N, V)``.

    A voxel a hair above the model's readout threshold in one runtime and a hair below in the
    other is zero on one side only (float round-off). Alone it is exempt when its value is the
    threshold's (to 1e-4); and since the decoding renormalises each layer to its generated energy,
    such a flip also rescales the rest of its layer (a layer of a few voxels near the threshold:
    by tens of per cent), so a (shower, layer) whose zero pattern differs while its energy agrees
    (to ``atol x E_inc``) is exempt too — at most :data:`MAX_FLIP_FRACTION` of the pairs (and 2),
    more is a real difference."""
    e = np.asarray(energies, np.float64).reshape(-1, 1)
    lo, hi = np.minimum(got, ref), np.maximum(got, ref)
    flip = (lo == 0) & (hi >= threshold_gev) & (hi <= threshold_gev * (1 + 1e-4)) if threshold_gev > 0 \
        else np.zeros(got.shape, bool)  # fmt: skip
    delta = np.where(flip, 0.0, np.abs(got - ref)) / e
    n_exempt = 0
    if threshold_gev > 0 and sum(layer_sizes) == got.shape[1]:
        edges = np.concatenate([[0], np.cumsum(layer_sizes)]).astype(int)
        pairs = []
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            pattern = ((got[:, a:b] == 0) != (ref[:, a:b] == 0)).any(axis=1)
            same_energy = np.abs(got[:, a:b].sum(1) - ref[:, a:b].sum(1)) <= atol * e[:, 0]
            pairs.append((a, b, np.flatnonzero(pattern & same_energy)))
        n_exempt = sum(len(rows) for *_, rows in pairs)
        if n_exempt <= max(2, MAX_FLIP_FRACTION * got.shape[0] * len(layer_sizes)):
            for a, b, rows in pairs:
                delta[rows, a:b] = 0.0
        else:
            n_exempt = 0
    return float(np.max(delta)), n_exempt


def export_generator(
    model: Any,
    path: str | Path,
    *,
    binning_file_sha256: str,
    particle: str,
    binning_xml: str | None = None,
    force: bool = False,
    atol: float = DEFAULT_ATOL,
    n_check: int = 256,
    seed: int = 0,
    timing: bool = True,
    extra_metadata: dict[str, str] | None = None,
    opset: int = 17,
    lean: bool = False,
    correction: Any = None,
    refiner: Any = None,
    candidates: int = 1,
    w_max: float | None = None,
    refiner_meta: dict[str, Any] | None = None,
    power: float = 1.0,
) -> ExportReport:
    """Export a :class:`~lhcml.models.fastcalo.base.FastCaloGenerator` as a sampling graph.

    Parameters
    ----------
    model
        The generator (put in ``eval()`` mode here).
    path
        The ``.onnx`` file to write (atomically; refused if it exists, unless ``force``).
    binning_file_sha256, particle
        The voxelisation the model was trained on (sha256 of the binning XML file) and the
        particle; stored in the metadata so the simulation refuses another binning.
    binning_xml
        The binning file's text, stored too (lets the simulation run without the file).
    correction
        A :class:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection` fitted for this model and sampler,
        applied inside the graph after sampling (metadata ``quantile_correction``); ``None`` (default): none.
    refiner, candidates, w_max
        Classifier-refined sampling (opt-in, :mod:`lhcml.models.fastcalo.refine`): a ``RefinementClassifier`` of
        this generator (after ``correction``) scoring ``candidates`` showers per requested one, one kept with
        probability ``w_i / sum_j w_j`` (``w`` clipped at ``w_max``); a classifier of stage ``raw`` scores the
        generator's candidates before ``correction`` and the chain runs on the kept shower only. The ``noise`` input then has
        ``candidates * noise_dim + 1`` columns (metadata ``noise_dim``; ``refinement``: k, w_max, ``refiner_meta``).
    power
        With ``refiner``: the weights' exponent, ``w_i^power / sum_j w_j^power`` (opt-in; 1, the default, is plain SIR
        and adds nothing to the graph; metadata ``refinement``'s ``weight_power``).
    atol
        Largest accepted ``|onnx - torch| / E_inc`` over ``n_check`` random showers (a voxel
        that float round-off puts on different sides of the model's readout threshold
        ``threshold_gev`` in the two runtimes is not counted).
    timing
        Measure onnxruntime's latency per shower at batch 1 and throughput at batch 1000 (one thread).
    lean
        Export :class:`lhcml.export.fastcalo_lean.LeanFlowMatchingGraph` (flow-matching models
        only) instead of the traced ``model.sample``; the agreement is checked against
        ``model.sample`` all the same.

    Returns
    -------
    ExportReport
        ``max_abs_diff_random`` in units of E_inc; ``latency_ms_per_jet`` / ``throughput_jets_per_s``
        per shower.

    Raises
    ------
    ExportCheckError
        onnxruntime and torch differ by more than ``atol``.
    """
    import onnx
    import torch

    from lhcml import __version__
    from lhcml.models.fastcalo.base import FastCaloGenerator

    if not isinstance(model, FastCaloGenerator):
        raise ConfigError(f"export_generator needs a FastCaloGenerator, got {type(model).__name__}")
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True (--force) to overwrite it")
    if binning_xml is not None:
        import hashlib

        if hashlib.sha256(binning_xml.encode("utf-8")).hexdigest() != binning_file_sha256:
            raise ConfigError(
                "binning_xml does not hash to binning_file_sha256: pass the text of the binning file itself"
            )
    model = model.eval()
    graph = _wrapper(model)  # the PyTorch sampler: the reference of the check
    exported = graph
    if lean:
        from lhcml.export.fastcalo_lean import lean_graph

        exported = lean_graph(model)
    raw_graph, raw_exported = graph, exported
    if correction is not None:
        correction.check_model(model)
        graph, exported = _corrected(graph, correction, model), _corrected(exported, correction, model)
    noise_dim = int(model.noise_dim)
    refine_props = {}
    if refiner is not None:
        from lhcml.models.fastcalo.refine import (
            check_candidates,
            check_classifier,
            check_power,
            sir_sampler,
        )

        k, w_max = check_candidates(candidates, w_max)
        power = check_power(power)
        check_classifier(refiner, model, binning_file_sha256)
        refiner = refiner.eval()
        stage = getattr(refiner, "stage", "corrected")
        if stage == "raw":
            # score the raw candidates, run the correction chain on the kept shower only
            if correction is None:
                raise ConfigError("a refinement classifier of stage 'raw' was distilled through a correction chain: "
                                  "pass that chain (--after)")  # fmt: skip
            post = _correction_module(correction, model)
            graph = sir_sampler(raw_graph, model, refiner, k, w_max, post=post, power=power)
            exported = sir_sampler(raw_exported, model, refiner, k, w_max, post=post, power=power)
        else:
            graph = sir_sampler(graph, model, refiner, k, w_max, power=power)
            exported = sir_sampler(exported, model, refiner, k, w_max, power=power)
        noise_dim = k * noise_dim + 1
        refine_props = {"refinement": json.dumps({"candidates": k, "w_max": w_max, "base_noise_dim": model.noise_dim,
                                                  "stage": stage, **({"weight_power": power} if power != 1.0 else {}),
                                                  **(refiner_meta or {})})}  # fmt: skip
    elif candidates != 1 or w_max is not None or power != 1.0:
        raise ConfigError("candidates / w_max / weight power need a refinement classifier (refiner)")
    names = input_names(model)
    inputs = check_inputs(model, max(int(n_check), 2), seed, noise_dim)
    e = inputs[0]
    eta_props = {}
    if getattr(model, "conditions_on_eta", False):
        eta_props = {"eta_min": repr(model.eta_range[0]), "eta_max": repr(model.eta_range[1])}
    props = {
        "model_name": model.registry_name,
        "noise_dim": str(noise_dim),
        "n_voxels": str(model.n_voxels),
        "layer_sizes": json.dumps(list(model.layer_sizes)),
        "e_min_gev": repr(model.e_min_gev),
        "e_max_gev": repr(model.e_max_gev),
        "particle": str(particle),
        "binning_sha256": str(binning_file_sha256),
        "lhcml_version": __version__,
        "inputs": json.dumps(
            {"incident_energy": "(N, 1) GeV", **({"eta": "(N, 1) |eta|"} if eta_props else {}),
             **({"phi": "(N, 1) phi (rad)"} if getattr(model, "conditions_on_phi", False) else {}),
             "noise": f"(N, {noise_dim}) standard normal"}
        ),
        **eta_props,
        "outputs": json.dumps({OUTPUT_NAME: f"(N, {model.n_voxels}) GeV"}),
        **({"binning_xml": binning_xml} if binning_xml is not None else {}),
        **({"graph": "lean"} if lean else {}),
        **({"quantile_correction": json.dumps({k: correction.meta.get(k) for k in (
            "format", "variable", "checkpoint", "training_file", "seed", "steps", "solver")})}
           if correction is not None else {}),
        **refine_props,
        **(extra_metadata or {}),
    }
    with atomic_path(path) as tmp:
        with torch.no_grad():
            torch.onnx.export(
                exported, tuple(torch.from_numpy(a[:2]) for a in inputs), str(tmp),
                input_names=list(names), output_names=[OUTPUT_NAME], opset_version=opset,
                dynamo=False, do_constant_folding=True,
                dynamic_axes={n: {0: "batch"} for n in (*names, OUTPUT_NAME)},
            )  # fmt: skip
        proto = onnx.load(str(tmp))
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        sess = _session(Path(tmp))
        got = sess.run([OUTPUT_NAME], dict(zip(names, inputs, strict=True)))[0]
        with torch.no_grad():
            ref = graph(*(torch.from_numpy(a) for a in inputs)).numpy()
        # the readout threshold: the model's own, or its variables' (flow, flow matching)
        thr = float(getattr(model, "threshold_gev", getattr(getattr(model, "vars", None), "threshold_gev", 0.0)))
        diff, _ = agreement(got, ref, e, thr, list(model.layer_sizes), atol)
        if not diff <= atol:
            raise ExportCheckError(
                f"onnxruntime and torch differ by {diff:.2e} x E_inc (> {atol:g}) for {model.registry_name}"
            )
        nan = float("nan")
        lat, thr = nan, nan
        if timing:
            big = check_inputs(model, 1000, seed + 1, noise_dim)
            lat, thr = _timing(sess, list(names), [a[:1] for a in big], list(big))
        del sess
    return ExportReport(path, diff, None, 0, lat, thr, list(names), [OUTPUT_NAME])


def export_checkpoint(
    checkpoint: str | Path, output: str | Path, *, force: bool = False, atol: float | None = None,
    timing: bool = True, lean: bool = False, correction: Any = None, refiner: Any = None, candidates: int = 1,
    w_max: float | None = None, refiner_meta: dict[str, Any] | None = None, power: float = 1.0,
) -> ExportReport:  # fmt: skip
    """Export a fast-calo training checkpoint (:func:`lhcml.train.fastcalo.load_generator`).

    ``atol`` defaults to the model's own ``onnx_atol`` where it declares one (the flow and flow
    matching solve in float32 and agree to 1e-4 x E_inc), else to ``DEFAULT_ATOL``.
    """
    from lhcml.train.fastcalo import load_generator

    model, meta = load_generator(checkpoint)
    if atol is None:
        atol = float(getattr(model, "onnx_atol", DEFAULT_ATOL))
    return export_generator(
        model, output, binning_file_sha256=meta["binning_sha256"], particle=meta["particle"],
        binning_xml=meta.get("binning_xml"), force=force, atol=atol,
        timing=timing, extra_metadata={"config_yaml": meta["config_yaml"]}, lean=lean, correction=correction,
        refiner=refiner, candidates=candidates, w_max=w_max, refiner_meta=refiner_meta, power=power,
    )  # fmt: skip
