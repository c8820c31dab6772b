"""int8 sampling graphs of the fast-calorimeter generators (issue 15, opt-in): ``lhcml fastcalo quantize``.

An exported shower graph (:mod:`lhcml.export.fastcalo`: the plain sampler, with its correction chain, or with
classifier-refined sampling) spends most of its time in the dense layers of the generator's network (and of the
refinement classifier): 2-step midpoint sampling of a 3 x 512 network is four passes of four matrix products per
candidate. :func:`quantize_shower_graph` quantises those layers to int8 with a static calibration
(:func:`lhcml.export.quantize.quantize_graph`) drawn from the graph's own trained ranges — energies log-uniform over
``e_min_gev``–``e_max_gev``, |η| uniform over ``eta_min``–``eta_max``, φ uniform, standard-normal noise — and leaves
every other operation (the decoding, the per-layer sums, the correction chain's maps, the SIR choice) in float32.

Every file it writes is checked on a held-out sample of the same ranges against the float32 graph with the same
inputs, and the result is stored in its metadata (``quantization`` → ``check``):

* **row independence** (required): the showers of one batch equal those of the same rows run in batches of 7, up to
  float32 round-off (:data:`BATCH_ATOL`; onnxruntime's float kernels depend on the batch size, so the float graphs
  themselves differ by ~1e-7 between batchings);
* the per-layer energies: per shower the largest ``|ΔE_layer| / E_inc`` over its layers (median and 99th percentile
  over showers), each layer's mean energy fraction in both graphs, the largest ``|Δ voxel| / E_inc``, and the
  fraction of showers that differ at all; a median above :data:`WARN_LAYER_DEV` is reported as a likely loss of
  fidelity (``likely_fidelity_loss``).

The check does not judge fidelity: a quantised generator is a different generator and is measured as one (the
CaloChallenge classifier test, ``benchmarks/fastcalo_int8.py``). The graph keeps its inputs, outputs and metadata,
so ``lhcml simulate ... --calo fast:MODEL_INT8.onnx`` runs it as any other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import ConfigError
from lhcml.export.quantize import dense_nodes, first_layers, quantize_graph

#: ONNX metadata a shower graph must carry (as lhcml.sim.fastcalo.META_KEYS, plus the layer sizes)
_NEEDED = ("noise_dim", "n_voxels", "e_min_gev", "e_max_gev", "layer_sizes")
#: batch size of the row-independence check's second run (our choice: not a divisor of the first)
ODD_BATCH = 7
#: median per-shower layer-energy deviation (x E_inc) above which the check reports a likely loss of fidelity (our
#: choice: the 720-epoch m2 generator's chain's int8 graph deviates by 2.7e-2 and its classifier AUC goes 0.63 -> 0.89,
#: docs/benchmarks/fastcalo.md, thirty-fifth version; float32 round-off is ~1e-6)
WARN_LAYER_DEV = 2e-3
#: largest accepted 90th percentile over rows of max |Δ voxel| / E_inc between two batchings of the same rows: float32
#: round-off (onnxruntime's float kernels depend on the batch size, so the float graphs themselves differ by ~1e-7;
#: a dynamic, batch-dependent quantisation would differ by ~1e-3)
BATCH_ATOL = 1e-5


def open_graph(path: Path) -> Any:
    """An onnxruntime session of a graph file, one thread; an unreadable file is a ConfigError."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        raise ConfigError(f"{path} is not a loadable ONNX model ({err}); export it again with lhcml export") from None


def graph_inputs(session: Any, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` input rows of a shower graph inside its trained ranges (read from its metadata): energies log-uniform,
    |η| and φ uniform, standard-normal noise; seeded by ``seed``."""
    meta = dict(session.get_modelmeta().custom_metadata_map)
    rng = np.random.default_rng(seed)
    lo, hi = math.log(float(meta["e_min_gev"])), math.log(float(meta["e_max_gev"]))
    feed = {}
    for i in session.get_inputs():
        if i.name == "incident_energy":
            feed[i.name] = np.exp(rng.uniform(lo, hi, (n, 1))).astype(np.float32)
        elif i.name == "eta":
            feed[i.name] = rng.uniform(float(meta["eta_min"]), float(meta["eta_max"]), (n, 1)).astype(np.float32)
        elif i.name == "phi":
            feed[i.name] = rng.uniform(-math.pi, math.pi, (n, 1)).astype(np.float32)
        elif i.name == "noise":
            feed[i.name] = rng.standard_normal((n, int(meta["noise_dim"]))).astype(np.float32)
        else:
            raise ConfigError(f"the graph has an input {i.name!r} a shower graph does not take; export it with lhcml")
    return feed


def compare(float_path: str | Path, int8_path: str | Path, n: int = 2048, seed: int = 1) -> dict[str, Any]:
    """Run both graphs on the same ``n`` rows (:func:`graph_inputs`, ``seed``) and compare: row independence of the
    int8 graph (``row_independent``: the 90th percentile over 64 rows of ``max |Δ voxel| / E_inc`` between a batch
    and batches of 7 is at most :data:`BATCH_ATOL`; ``batch_dev_p90``, ``batch_dev_max``), per shower the largest
    ``|ΔE_layer| / E_inc`` over its layers (median and 99th percentile over showers: ``layer_energy_dev_median``,
    ``layer_energy_dev_p99``), each layer's mean energy fraction in both graphs (``layer_fraction_float``,
    ``layer_fraction_int8``: a shift of the layer split), the largest ``|Δ voxel| / E_inc`` and the fraction of
    showers that differ at all."""
    f_sess, q_sess = open_graph(Path(float_path)), open_graph(Path(int8_path))
    feed = graph_inputs(f_sess, n, seed)
    ref = f_sess.run(["showers"], feed)[0]
    got = q_sess.run(["showers"], feed)[0]
    m = min(n, 64)
    parts = [q_sess.run(["showers"], {k: v[s:min(s + ODD_BATCH, m)] for k, v in feed.items()})[0]
             for s in range(0, m, ODD_BATCH)]  # fmt: skip
    e = feed["incident_energy"][:, :1].astype(np.float64)
    batch_dev = np.max(np.abs(np.concatenate(parts) - got[:m]), axis=1) / e[:m, 0]
    sizes = [int(s) for s in json.loads(f_sess.get_modelmeta().custom_metadata_map["layer_sizes"])]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    layers = list(zip(edges[:-1], edges[1:], strict=True))
    f_ref = np.stack([ref[:, a:b].sum(1) for a, b in layers], 1) / e
    f_got = np.stack([got[:, a:b].sum(1) for a, b in layers], 1) / e
    d_layer = np.max(np.abs(f_got - f_ref), axis=1)
    p90 = float(np.quantile(batch_dev, 0.9))
    med = float(np.median(d_layer))
    return {"rows": int(n), "seed": int(seed), "row_independent": bool(p90 <= BATCH_ATOL), "batch_dev_p90": p90,
            "batch_dev_max": float(np.max(batch_dev)), "likely_fidelity_loss": bool(med > WARN_LAYER_DEV),
            "layer_energy_dev_median": med,
            "layer_energy_dev_p99": float(np.quantile(d_layer, 0.99)),
            "layer_fraction_float": [round(float(v), 5) for v in f_ref.mean(0)],
            "layer_fraction_int8": [round(float(v), 5) for v in f_got.mean(0)],
            "voxel_dev_max": float(np.max(np.abs(got - ref) / e)),
            "showers_differing": float(np.mean(np.any(got != ref, axis=1)))}  # fmt: skip


def quantize_shower_graph(
    src: str | Path, dst: str | Path, *, calibration: int = 4096, seed: int = 0, method: str = "minmax",
    keep_first_float: bool = False, n_check: int = 2048, force: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write ``dst``: the shower graph ``src`` with its dense layers in int8 (see the module's text).

    ``calibration`` rows (seed ``seed``) fix the activation ranges; ``keep_first_float`` leaves the first dense layer
    of each network in float32. Returns the ``quantization`` metadata (with ``check``: :func:`compare` on
    ``n_check`` held-out rows, seed ``seed + 1``). Raises :class:`ConfigError` for a file that is not an lhcml shower
    graph or is already quantised, and when the int8 graph's rows are not independent (nothing is written then)."""
    import onnx

    src = Path(src)
    if not src.is_file():
        raise ConfigError(f"{src} does not exist; export a shower graph first (lhcml export / lhcml fastcalo refine-export)")
    if calibration < 1:
        raise ConfigError(f"--calibration {calibration}: give at least one calibration row")
    sess = open_graph(src)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    missing = [k for k in _NEEDED if k not in meta]
    if missing:
        raise ConfigError(f"{src} lacks the shower-graph metadata {missing}: it is not a graph written by lhcml's "
                          "fast-calorimeter export (lhcml export / lhcml fastcalo refine-export)")  # fmt: skip
    feed = graph_inputs(sess, int(calibration), seed)
    chunk = 512
    feeds = [{k: v[s:s + chunk] for k, v in feed.items()} for s in range(0, int(calibration), chunk)]
    proto = onnx.load(str(src))
    nodes = dense_nodes(proto)
    skip = first_layers(proto, nodes) if keep_first_float else []

    def check(path: Path) -> dict[str, Any]:
        res = compare(src, path, n_check, seed + 1)
        if not res["row_independent"]:
            raise ConfigError(f"the int8 graph of {src} gives a row other showers in another batch (90 % of rows within "
                              f"{res['batch_dev_p90']:.1e} x E_inc, more than float round-off {BATCH_ATOL:g}); not "
                              "written (a static quantisation should not depend on the batch: report this)")  # fmt: skip
        return res

    return quantize_graph(src, dst, feeds, nodes=nodes, skip=skip, method=method, force=force, check=check,
                          extra_metadata={"calibration_seed": int(seed), "keep_first_float": bool(keep_first_float),
                                          "calibration_ranges": "the graph's trained E, |eta|; phi uniform; N(0,1) noise"})  # fmt: skip


def time_graph(path: str | Path, batch: int = 10000, rounds: int = 3, seed: int = 11) -> float:
    """Median milliseconds per shower of a shower graph at ``batch`` rows, one thread, 65 GeV, |η| 0.225 (as
    ``benchmarks/fastcalo_refine.py``)."""
    import time

    sess = open_graph(Path(path))
    feed = graph_inputs(sess, batch, seed)
    feed["incident_energy"][:] = 65.0
    if "eta" in feed:
        feed["eta"][:] = 0.225
    sess.run(None, {k: v[: min(batch, 1000)] for k, v in feed.items()})
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) / batch * 1e3)
    return float(np.median(times))


__all__ = ["compare", "graph_inputs", "open_graph", "quantize_shower_graph", "time_graph"]
