"""Quantised trigger networks to FPGA firmware models with **hls4ml**: bit-accurate C simulation,
agreement with the quantised PyTorch model, resource and latency estimates.

Route (hls4ml 1.3, torch 2.13). hls4ml's PyTorch front end traces the model with ``torch.fx``
and has handlers for ``torch.nn`` layers only: a Brevitas ``QuantLinear`` is "Unsupported layer"
in 1.3. Its QONNX front end (Brevitas -> ``export_qonnx`` -> ``qonnx`` cleanup -> hls4ml) does
convert Brevitas QAT models (tried here with qonnx 1.0 and onnxoptimizer 0.4: an 8 -> 16 -> 3
Brevitas MLP compiled in 5 s and agreed within the rounding of its unquantised biases, which
hls4ml gave its default ``ap_fixed<16,6>``, plus input-truncation flips), but it cannot
take the post-training-quantised (PTQ) models of :mod:`lhcml.models.quantized`, which are plain
``nn.Linear`` layers with input-quantising hooks and no ``Quant`` nodes. lhcml therefore uses one
route for both schemes: the network is *lowered* to a ``torch.nn`` ``Linear``/``ReLU`` sequence
whose weights and biases are the quantised values (exactly on their fixed-point grids), and
hls4ml's PyTorch front end is configured with the ``ap_fixed`` types read from the quantisers
(:func:`lowered_network`): for every layer the input, weight and bias types of the quantised
model, the ReLU outputs as ``ap_ufixed<W,I,AP_RND_CONV,AP_SAT>`` (Brevitas/PTQ round half to even
and saturate) and an accumulator wide enough to hold every product sum exactly.

**Agreement (exact).** With those types every operation of the firmware model is exact except
the quantisers, which round and saturate exactly as the PyTorch model does; the C simulation
therefore reproduces the quantised model's logits *bit for bit*. PyTorch computes in float32,
whose 24-bit mantissa can round a wide accumulator (weights and activations of 8 bits over 64
inputs already need 23 bits), and its normalisation can move an input across a fine (16-bit) LSB
boundary; the reference for the exact comparison is the same quantised model
evaluated in float64 (53 bits, enough for every accumulator this module accepts), and the float32
difference is reported beside it. :func:`check_agreement` asserts equality.

**Firmware input.** The FPGA receives the normalised features (the normalisation the model holds,
``(x - mean) / std``, runs upstream in the trigger's feature-building firmware or is folded into
the first layer by the user); the C simulation is fed ``model.normalise(raw)`` and its input type
is the first quantiser's ``ap_fixed<W,I,AP_RND_CONV,AP_SAT>``, so float inputs are quantised in the
C simulation exactly as by the model's input quantiser.

**Estimates, no vendor tool.** ``rule4ml`` (PyPI 0.2.0) would install TensorFlow 2.21, Keras 3
and torch-geometric and downgrade h5py (checked with ``pip install --dry-run``): not installed.
hls4ml's own reports need Vivado/Vitis synthesis. :func:`estimate_resources` is therefore an
analytic estimate (labelled so everywhere), with its rules in its docstring.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import shutil
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import ConfigError, LhcmlError

#: layer types the conversion accepts inside a model's ``net`` (a ``torch.nn.Sequential``)
SUPPORTED_LAYERS = ("QuantIdentity", "QuantLinear", "QuantReLU", "Identity", "Linear", "ReLU")
#: models whose computation is one ``net`` sequence of the layers above
SUPPORTED_MODELS = ("trigger_mlp", "trigger_deepsets")
#: clock of the estimates: 200 MHz, the hls4ml jet-substructure papers' clock (docs/references.md §18)
DEFAULT_CLOCK_NS = 5.0
#: widest accumulator accepted: float64's mantissa (the exact reference must be exact too)
MAX_ACCUM_BITS = 53


class HlsConversionError(LhcmlError, ValueError):
    """A model cannot be converted to an hls4ml firmware model (unsupported layer, no compiler)."""


@dataclass(frozen=True, order=True)
class FixedType:
    """``ap_fixed<W,I>`` (``signed``) or ``ap_ufixed<W,I>``; ``F = W - I`` fractional bits."""

    width: int
    integer: int
    signed: bool = True

    @property
    def frac(self) -> int:
        return self.width - self.integer

    def hls(self, quantising: bool = False) -> str:
        """hls4ml precision string; ``quantising``: round half to even and saturate (Brevitas)."""
        base = f"{'' if self.signed else 'u'}fixed<{self.width},{self.integer}"
        return base + (",RND_CONV,SAT>" if quantising else ">")


@dataclass
class DenseSpec:
    """One dense layer of the lowered network (the unit of the estimates)."""

    name: str
    n_in: int
    n_out: int
    n_mult: int  # non-zero quantised weights: the multiplications the firmware keeps
    input: FixedType
    weight: FixedType
    bias: FixedType
    accum: FixedType
    relu: FixedType | None  # the quantised ReLU after the layer, None for the output layer
    result: FixedType | None = None  # a quantiser on the layer's output (deep sets: rho's input)


@dataclass
class LoweredNetwork:
    """A quantised network as plain ``torch.nn`` layers plus the fixed-point types of each layer."""

    torch_net: Any  # torch.nn.Sequential of Linear/ReLU with the quantised weights
    input_type: FixedType
    layers: list[DenseSpec]
    scheme: str  # "qat" or "ptq"
    n_inputs: int
    n_outputs: int
    n_objects: int | None = None  # deep sets: constituent slots (inputs: N*F features + N flags)
    mul_type: FixedType | None = None  # deep sets: phi output times the valid flag


@dataclass
class Agreement:
    """C simulation vs the quantised PyTorch model on ``n`` jets."""

    n: int
    max_abs_diff_float64: float  # vs the float64 evaluation of the quantised model (exact: 0)
    max_abs_diff_float32: float  # vs the float32 evaluation (float32 rounding of the accumulator)
    output_lsb: float  # LSB of the logits' type
    exact: bool
    argmax_agreement: float  # fraction of jets with the same top class as the float32 model


@dataclass
class Estimate:
    """Analytic resource/latency estimate (no synthesis; see :func:`estimate_resources`)."""

    lut: int
    ff: int
    dsp: int
    bram18: int
    latency_cycles: int
    latency_ns: float
    ii_cycles: int
    clock_ns: float
    reuse_factor: int
    n_mult: int
    method: str = "analytic estimate (lhcml.export.hls.estimate_resources), not synthesis"
    per_layer: list[dict[str, Any]] = field(default_factory=list)


# -- checks -----------------------------------------------------------------------------------


def require_compiler() -> str:
    """Path of ``g++``, which hls4ml's and conifer's C simulation builds call by that name."""
    path = shutil.which("g++")
    if path is None:
        raise HlsConversionError(
            "the FPGA C simulation needs the system C++ compiler 'g++' (hls4ml's build_lib.sh and "
            "conifer call it by that name), which is not on PATH: install it (Debian: apt-get "
            "install g++) and run again"
        )
    return path


def check_supported(model: Any) -> list[tuple[str, Any]]:
    """``model.dataflow()`` (its layers input to output) if the model and every layer are supported
    by the conversion, else one :class:`HlsConversionError` naming what is not."""
    name = getattr(model, "registry_name", "") or type(model).__name__
    if name not in SUPPORTED_MODELS or not hasattr(model, "dataflow"):
        raise HlsConversionError(
            f"model '{name}' is not supported by lhcml's hls4ml conversion; supported models: "
            f"{', '.join(SUPPORTED_MODELS)}, built of the layers {', '.join(SUPPORTED_LAYERS)}"
        )
    flow = list(model.dataflow())
    for layer_name, layer in flow:
        kind = type(layer).__name__
        if kind not in SUPPORTED_LAYERS:
            raise HlsConversionError(
                f"layer {layer_name} ({kind}) of model '{name}' is not supported by lhcml's "
                f"hls4ml conversion; supported layers: {', '.join(SUPPORTED_LAYERS)}"
            )
        if kind in ("Linear", "QuantLinear") and getattr(layer, "bias", None) is None:
            raise HlsConversionError(f"layer {layer_name} ({kind}) has no bias; the conversion expects biases")
    return flow


# -- lowering ---------------------------------------------------------------------------------


def _pow2_exponent(scale: float, what: str) -> int:
    e = math.log2(scale)
    if abs(e - round(e)) > 1e-9:
        raise HlsConversionError(
            f"{what} has scale {scale}, not a power of two: its grid is not an ap_fixed type "
            "(use Brevitas's *FixedPoint quantisers, as lhcml.models.quantized does)"
        )
    return round(e)


def _brevitas_act_type(layer: Any, what: str) -> FixedType:
    q = layer.act_quant
    bits = int(q.bit_width())
    e = _pow2_exponent(float(q.scale().detach()), what)
    # integer code k in [-2^(W-1), 2^(W-1)) (signed) or [0, 2^W) times 2^e: ap_(u)fixed<W, W+e>
    return FixedType(bits, bits + e, bool(q.is_signed))


def _tensor_type(t: Any, bits: int, what: str) -> FixedType:
    """Smallest signed ``ap_fixed<bits, I>`` holding the values of ``t`` exactly."""
    v = t.detach().double().abs()
    vmax = float(v.max()) if v.numel() else 0.0
    if vmax == 0.0:
        return FixedType(bits, 1)
    from lhcml.models.quantized import integer_bits

    i = integer_bits(vmax)
    typ = FixedType(bits, i)
    scaled = t.detach().double() * 2.0**typ.frac
    if not bool((scaled == scaled.round()).all()) or float(scaled.abs().max()) > 2 ** (bits - 1):
        raise HlsConversionError(f"{what} is not on an ap_fixed<{bits},{i}> grid (is the model quantised?)")
    return typ


def _accum_type(inp: FixedType, w: FixedType, b: FixedType, n_in: int) -> FixedType:
    """Exact accumulator: fractional bits of the product (or bias), integer bits of the worst case."""
    frac = max(inp.frac + w.frac, b.frac)
    bound = n_in * 2.0 ** (inp.integer - (1 if inp.signed else 0)) * 2.0 ** (w.integer - 1) + 2.0 ** (b.integer - 1)
    integer = math.ceil(math.log2(bound)) + 1  # + sign
    return FixedType(integer + frac, integer)


def lowered_network(model: Any, n_objects: int | None = None) -> LoweredNetwork:
    """``model`` (a QAT or PTQ :mod:`lhcml.models.quantized` network) as ``torch.nn`` layers with
    quantised weights, plus the ``ap_fixed`` type of every tensor (see the module docstring).

    A deep-sets model (``n_objects`` constituent slots) becomes one network with two inputs, the
    ``N * F`` normalised constituent features and the ``N`` valid flags: φ as block-diagonal
    layers (the same weights for every slot, as the FPGA evaluates all slots in parallel), the
    flags expanded to φ's outputs by a 0/1 layer (``mexp``) and multiplied in (padded slots
    contribute 0, as ``masked_sum``), the sum over slots as a layer of ones (``pool``) whose
    output is rounded/saturated to ρ's input quantiser, then ρ and the classifier."""
    import torch

    children = check_supported(model)
    ptq = getattr(model, "ptq_spec", None)
    scheme = "ptq" if ptq is not None else ("qat" if getattr(model, "weight_bits", None) is not None else "float")
    if scheme == "float":
        raise HlsConversionError(
            "a floating-point model has no fixed-point types: convert its QAT version or its "
            "post-training-quantised copy (lhcml.models.quantized.post_training_quantise)"
        )
    model.eval()
    deepsets = (getattr(model, "registry_name", "") or type(model).__name__) == "trigger_deepsets"
    if deepsets and (n_objects is None or n_objects < 1):
        raise HlsConversionError("a deep-sets model needs the number of constituent slots (n_objects, e.g. 16)")
    layers: list[DenseSpec] = []
    modules: list[tuple[str, Any]] = []
    pending: FixedType | None = None  # type of the next dense layer's input
    input_type: FixedType | None = None
    pooled = not deepsets
    mul_type: FixedType | None = None
    for idx, (child, layer) in enumerate(children):
        kind = type(layer).__name__
        expand = n_objects if deepsets and child.startswith("phi.") else 1
        if not pooled and not child.startswith("phi."):
            pooled = True
            pool_in = layers[-1].relu
            if pool_in is None:
                raise HlsConversionError("phi of the deep-sets model does not end in a ReLU")
            if kind == "QuantIdentity":
                pool_out = _brevitas_act_type(layer, f"input quantiser {child}")
            else:
                nxt = next((n for n, m in children[idx:] if isinstance(m, torch.nn.Linear)), None)
                if ptq is None or nxt not in ptq:
                    raise HlsConversionError(f"rho's first layer {nxt} has no fixed-point input type")
                pool_out = FixedType(*(int(v) for v in ptq[nxt]["input"][:2]), bool(ptq[nxt]["input"][2]))
            h = layers[-1].n_out // n_objects
            one = FixedType(2, 2)
            mexp = torch.nn.Linear(n_objects, n_objects * h).double()
            pool = torch.nn.Linear(n_objects * h, h).double()
            with torch.no_grad():
                mexp.weight.copy_(torch.kron(torch.eye(n_objects, dtype=torch.float64), torch.ones(h, 1, dtype=torch.float64)))
                mexp.bias.zero_()
                pool.weight.copy_(torch.kron(torch.ones(1, n_objects, dtype=torch.float64), torch.eye(h, dtype=torch.float64)))
                pool.bias.zero_()
            mul_type = FixedType(pool_in.width + 1, pool_in.integer + 1)  # signed copy of the ReLU type
            modules += [("mexp", mexp), ("pool", pool)]
            layers.append(DenseSpec("pool", n_objects * h, h, n_objects * h, mul_type, one, one,
                                    _accum_type(mul_type, one, one, n_objects), None, pool_out))  # fmt: skip
            pending = pool_out
        if kind == "QuantIdentity":
            pending = _brevitas_act_type(layer, f"input quantiser {child}")
            if input_type is None and not layers:
                input_type = pending
            continue
        if kind == "Identity":
            continue
        if kind in ("QuantReLU", "ReLU"):
            if not layers:
                raise HlsConversionError(f"{child} ({kind}) before the first linear layer is not supported")
            if kind == "QuantReLU":
                layers[-1].relu = _brevitas_act_type(layer, f"ReLU quantiser {child}")
            else:  # PTQ: the next linear layer's input quantiser is the ReLU's output type
                nxt = next((n for n, m in children[idx + 1 :] if isinstance(m, torch.nn.Linear)), None)
                if nxt is None or nxt not in ptq:
                    raise HlsConversionError(f"float ReLU {child} has no quantised consumer (not a PTQ model?)")
                if expand > 1 and not nxt.startswith("phi."):
                    # phi's last ReLU feeds the sum over slots, quantised only at rho's input:
                    # the ReLU output stays exact (the accumulator's non-negative range)
                    acc_t = layers[-1].accum
                    layers[-1].relu = FixedType(acc_t.width - 1, acc_t.integer - 1, False)
                else:
                    w_, i_, s_ = ptq[nxt]["input"]
                    if s_:
                        raise HlsConversionError(f"the input of {nxt} after a ReLU is calibrated as signed")
                    layers[-1].relu = FixedType(int(w_), int(i_), False)
            modules.append((f"relu{len(layers)}", torch.nn.ReLU()))
            pending = layers[-1].relu
            continue
        # a linear layer
        n = len(layers) + 1
        if kind == "QuantLinear":
            qw = layer.quant_weight()
            w_bits = int(qw.bit_width)
            e_w = _pow2_exponent(float(qw.scale.detach()), f"weights of {child}")
            w_type = FixedType(w_bits, w_bits + e_w)
            weight = qw.value.detach().double()
            qb = layer.bias_quant(layer.bias)
            b_bits = int(qb.bit_width)
            b_type = FixedType(b_bits, b_bits + _pow2_exponent(float(qb.scale.detach()), f"bias of {child}"))
            bias = qb.value.detach().double()
        else:
            if ptq is None or child not in ptq:
                raise HlsConversionError(f"linear layer {child} has no fixed-point types (not quantised)")
            entry = ptq[child]
            weight = (layer.weight_orig * layer.weight_mask if hasattr(layer, "weight_mask") else layer.weight).detach().double()
            bias = layer.bias.detach().double()
            w_type = FixedType(int(entry["weight"][0]), int(entry["weight"][1]))
            b_type = FixedType(int(entry["bias"][0]), int(entry["bias"][1]))
            for t, typ, what in ((weight, w_type, "weights"), (bias, b_type, "bias")):
                scaled = t * 2.0**typ.frac
                if not bool((scaled == scaled.round()).all()):
                    raise HlsConversionError(f"{what} of {child} are not on their PTQ grid {typ.hls()}")
            w_, i_, s_ = entry["input"]
            pending = FixedType(int(w_), int(i_), bool(s_))
            if not layers:
                input_type = pending
        if pending is None:
            raise HlsConversionError(f"the input of linear layer {child} is not quantised")
        acc = _accum_type(pending, w_type, b_type, layer.in_features)
        if expand > 1:  # phi on every constituent slot: block-diagonal copies
            weight = torch.kron(torch.eye(expand, dtype=torch.float64), weight)
            bias = bias.repeat(expand)
        if acc.width > MAX_ACCUM_BITS:
            raise HlsConversionError(
                f"{child} needs a {acc.width}-bit accumulator for exact arithmetic (> {MAX_ACCUM_BITS}); "
                "use fewer bits"
            )
        lin = torch.nn.Linear(layer.in_features * expand, layer.out_features * expand).double()
        with torch.no_grad():
            lin.weight.copy_(weight)
            lin.bias.copy_(bias)
        modules.append((f"fc{n}", lin))
        layers.append(DenseSpec(f"fc{n}", layer.in_features * expand, layer.out_features * expand,
                                int((weight != 0).sum()), pending, w_type, b_type, acc, None))  # fmt: skip
        pending = None
    if input_type is None or not layers:
        raise HlsConversionError("the network has no quantised input or no linear layer")
    if layers[-1].relu is not None:
        raise HlsConversionError("the network ends in a ReLU; lhcml's trigger networks end in a linear layer (logits)")
    if not pooled:
        raise HlsConversionError("the deep-sets model has no rho/classifier after phi")
    if deepsets:
        names = [n for n, _ in modules]
        split = names.index("mexp")
        net = _DeepSetsFirmware(OrderedDict(modules), names[:split], names[split + 2 :])
    else:
        net = torch.nn.Sequential(OrderedDict(modules))
    return LoweredNetwork(net, input_type, layers, scheme, layers[0].n_in, layers[-1].n_out,
                          n_objects if deepsets else None, mul_type)  # fmt: skip


def _deepsets_firmware_class() -> Any:
    import torch

    class DeepSetsFirmware(torch.nn.Module):
        """φ (block-diagonal) -> × expanded valid flags -> Σ over slots -> ρ -> logits."""

        def __init__(self, modules: OrderedDict, phi: list[str], rest: list[str]) -> None:
            super().__init__()
            for name, m in modules.items():
                self.add_module(name, m)
            self.phi_names, self.rest_names = phi, rest

        def forward(self, x: Any, valid: Any) -> Any:
            for name in self.phi_names:
                x = getattr(self, name)(x)
            x = self.pool(x * self.mexp(valid))
            for name in self.rest_names:
                x = getattr(self, name)(x)
            return x

    return DeepSetsFirmware


def _DeepSetsFirmware(modules: OrderedDict, phi: list[str], rest: list[str]) -> Any:  # noqa: N802
    return _deepsets_firmware_class()(modules, phi, rest)


# -- conversion -------------------------------------------------------------------------------


def hls_config(lowered: LoweredNetwork, reuse_factor: int = 1, backend: str = "Vitis") -> dict[str, Any]:
    """hls4ml configuration (``config_from_pytorch_model``, layer granularity) with the exact
    fixed-point types of ``lowered`` on every layer."""
    if reuse_factor < 1:
        raise ConfigError(f"reuse_factor must be >= 1, got {reuse_factor}")
    import hls4ml

    strategy = "Latency" if reuse_factor == 1 else "Resource"
    widest = max(s.accum for s in lowered.layers)
    shape: Any = (lowered.n_inputs,)
    if lowered.n_objects is not None:
        shape = [(lowered.n_inputs,), (lowered.n_objects,)]
    cfg = hls4ml.utils.config_from_pytorch_model(
        copy.deepcopy(lowered.torch_net).float(), input_shape=shape, granularity="name",
        backend=backend, default_precision=widest.hls(), default_reuse_factor=reuse_factor,
    )  # fmt: skip
    cfg["Model"]["Strategy"] = strategy
    names = cfg["LayerName"]
    known = {s.name for s in lowered.layers} | {"mexp", "mul"}
    inputs = [k for k in names if k not in known and not k.startswith("relu")]
    if len(inputs) != (1 if lowered.n_objects is None else 2):
        raise HlsConversionError(f"hls4ml's configuration has input layers {inputs}")
    names[inputs[0]]["Precision"] = {"result": lowered.input_type.hls(quantising=True)}
    if lowered.n_objects is not None:  # the valid flags (0/1), their expansion and the product
        one = FixedType(2, 2).hls()
        names[inputs[1]]["Precision"] = {"result": one}
        names["mexp"]["Precision"] = {"weight": one, "bias": one, "accum": FixedType(8, 8).hls(), "result": one}
        names["mul"]["Precision"] = {"result": lowered.mul_type.hls()}
    for spec in lowered.layers:
        result = spec.result.hls(quantising=True) if spec.result is not None else spec.accum.hls()
        names[spec.name]["Precision"] = {"weight": spec.weight.hls(), "bias": spec.bias.hls(),
                                         "accum": spec.accum.hls(), "result": result}  # fmt: skip
        names[spec.name]["ReuseFactor"] = reuse_factor
        names[spec.name]["Strategy"] = strategy
        if spec.relu is not None:
            names[f"relu{spec.name[2:]}"]["Precision"] = {"result": spec.relu.hls(quantising=True)}
    return cfg


@dataclass
class HlsConversion:
    """A compiled hls4ml firmware model of a quantised lhcml network."""

    hls_model: Any
    lowered: LoweredNetwork
    output_dir: Path
    reuse_factor: int
    clock_ns: float

    def predict(self, x_normalised: Any) -> np.ndarray:
        """Logits of the C simulation for normalised features ``(n, n_inputs)`` (deep sets: the
        pair ``(features (n, N*F), valid flags (n, N))`` of :func:`firmware_inputs`)."""
        arrays = list(x_normalised) if isinstance(x_normalised, tuple) else [x_normalised]
        arrays = [np.ascontiguousarray(np.asarray(a, dtype=np.float64)) for a in arrays]
        x = arrays[0]
        if x.ndim != 2 or x.shape[1] != self.lowered.n_inputs or len(arrays) != (1 if self.lowered.n_objects is None else 2):
            raise ConfigError(f"C simulation input must be (n, {self.lowered.n_inputs}) (+ valid flags for deep sets), got {x.shape}")
        y = np.asarray(self.hls_model.predict(arrays[0] if len(arrays) == 1 else arrays), dtype=np.float64)
        return y.reshape(len(x), self.lowered.n_outputs)


def convert_to_hls(
    model: Any,
    output_dir: str | Path,
    *,
    reuse_factor: int = 1,
    clock_ns: float = DEFAULT_CLOCK_NS,
    part: str = "xcvu13p-flga2577-2-e",
    backend: str = "Vitis",
    n_objects: int | None = None,
) -> HlsConversion:
    """Write the hls4ml project of a quantised network to ``output_dir`` and compile its C simulation.

    Parameters
    ----------
    model
        A QAT (Brevitas) or PTQ ``trigger_mlp`` of :mod:`lhcml.models.quantized`.
    output_dir
        hls4ml project directory (created; must not exist or be empty).
    reuse_factor
        hls4ml reuse factor: 1 = fully parallel (``Latency`` strategy), > 1 ``Resource``.
    clock_ns
        Target clock period (5 ns = 200 MHz, the hls4ml jet-substructure papers' clock).
    part
        FPGA part written into the project (VU13P, hls4ml's default family for L1T studies; only
        a vendor synthesis would use it).
    backend
        hls4ml backend whose templates are written (``Vitis`` or ``Vivado``); the C simulation
        needs only ``g++`` and the ap_types headers hls4ml ships.
    n_objects
        Deep-sets models: the number of constituent slots of the firmware (e.g. 16).
    """
    require_compiler()
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new hls4ml project directory")
    if backend not in ("Vitis", "Vivado"):
        raise ConfigError(f"backend must be 'Vitis' or 'Vivado', got {backend!r}")
    lowered = lowered_network(model, n_objects)
    try:
        import hls4ml
    except ImportError:
        raise ConfigError("the FPGA conversion needs hls4ml: pip install 'lhcml[trigger]'") from None
    net = copy.deepcopy(lowered.torch_net).float()
    log = io.StringIO()  # hls4ml prints its topology and progress with print()
    with contextlib.redirect_stdout(log):
        config = hls_config(lowered, reuse_factor, backend)
        hls_model = hls4ml.converters.convert_from_pytorch_model(
            net, hls_config=config, output_dir=str(out),
            backend=backend, io_type="io_parallel", part=part, clock_period=clock_ns,
            project_name="lhcml_trigger",
        )  # fmt: skip
        _check_types(hls_model, lowered)
        try:
            hls_model.compile()
        except Exception as err:  # hls4ml raises a bare Exception when g++ fails
            raise HlsConversionError(f"the C simulation of {out} did not compile with g++: {err}") from None
    return HlsConversion(hls_model, lowered, out, reuse_factor, clock_ns)


def _check_types(hls_model: Any, lowered: LoweredNetwork) -> None:
    """The hls4ml model holds the types lhcml configured (hls4ml renames/inserts layers freely)."""
    want = {s.name: s for s in lowered.layers}
    for layer in hls_model.get_layers():
        spec = want.pop(layer.name, None)
        if spec is None:
            continue
        got = {k: str(v.precision) for k, v in layer.get_layer_precision().items()}
        for part, typ in (("weight", spec.weight), ("bias", spec.bias), ("accum", spec.accum)):
            have = next((v for k, v in got.items() if k.endswith(f"{part}_t")), "")
            if not have.startswith(typ.hls()[:-1] + ","):
                raise HlsConversionError(
                    f"hls4ml gave layer {layer.name} the {part} type {have!r}, lhcml configured {typ.hls()}"
                )
    if want:
        raise HlsConversionError(f"hls4ml's model has no layer(s) {sorted(want)} (hls4ml renamed them?)")


# -- agreement --------------------------------------------------------------------------------


def reference_logits(model: Any, inputs: dict[str, Any], dtype: str = "float64") -> np.ndarray:
    """Logits of the quantised PyTorch ``model`` in ``dtype`` (float64: the exact reference)."""
    import torch

    m = copy.deepcopy(model).eval()
    tdt = torch.float64 if dtype == "float64" else torch.float32
    m = m.to(tdt)
    with torch.no_grad():
        return m({k: torch.as_tensor(v).to(tdt) if torch.as_tensor(v).is_floating_point() else torch.as_tensor(v)
                  for k, v in inputs.items()})["logits"].double().numpy()  # fmt: skip


def firmware_inputs(model: Any, inputs: dict[str, Any]) -> np.ndarray:
    """The normalised features the firmware receives (float64)."""
    import torch

    m = copy.deepcopy(model).eval().double()
    with torch.no_grad():
        x = m.normalise({k: torch.as_tensor(v).double() if torch.as_tensor(v).is_floating_point()
                         else torch.as_tensor(v) for k, v in inputs.items()})  # fmt: skip
    group = m.input_groups[0]
    if f"{group}_valid" in inputs:  # deep sets: flattened slots + the valid flags
        feats = x[group].numpy()
        return feats.reshape(len(feats), -1), np.asarray(inputs[f"{group}_valid"], dtype=np.float64)
    return x[group].numpy()


def check_agreement(conv: HlsConversion, model: Any, inputs: dict[str, Any], require_exact: bool = True) -> Agreement:
    """Compare the C simulation with the quantised model on ``inputs`` (raw features, e.g.
    ``{"jets": array (n, 16)}``); with ``require_exact`` raise if any logit differs from the
    float64 evaluation (the module docstring explains why equality is expected)."""
    x = firmware_inputs(model, inputs)
    y_hls = conv.predict(x)
    x = x[0] if isinstance(x, tuple) else x
    y64 = reference_logits(model, inputs, "float64")
    y32 = reference_logits(model, inputs, "float32")
    d64 = float(np.abs(y_hls - y64).max()) if len(x) else 0.0
    d32 = float(np.abs(y_hls - y32).max()) if len(x) else 0.0
    agree = Agreement(
        n=len(x), max_abs_diff_float64=d64, max_abs_diff_float32=d32,
        output_lsb=2.0 ** -conv.lowered.layers[-1].accum.frac, exact=d64 == 0.0,
        argmax_agreement=float((y_hls.argmax(1) == y32.argmax(1)).mean()) if len(x) else 1.0,
    )  # fmt: skip
    if require_exact and not agree.exact:
        raise HlsConversionError(
            f"hls4ml C simulation differs from the quantised model by up to {d64:g} "
            f"({d64 / agree.output_lsb:.1f} LSB of the logits) on {len(x)} jets; expected bit-exact"
        )
    return agree


# -- estimates --------------------------------------------------------------------------------

#: a product goes to a DSP48 slice when both operands are wider than this (Vivado HLS maps
#: narrower products to LUTs; DSP usage of the hls4ml jet MLP falls to ~0 below ~10 bits,
#: Duarte et al. 2018, docs/references.md §18)
DSP_MIN_BITS = 10
#: adder levels of the accumulation tree that fit one 5 ns clock cycle (our choice)
ADDS_PER_CYCLE = 2


def csd_digits(values: np.ndarray) -> np.ndarray:
    """Number of non-zero digits of each integer in canonical signed-digit form (non-adjacent form)."""
    v = np.abs(np.asarray(values, dtype=np.int64))
    out = np.zeros(v.shape, dtype=np.int64)
    while np.any(v):
        odd = (v & 1) == 1
        # NAF digit: +-1 where odd (choose -1 when v = 3 mod 4, which clears the next bit too)
        digit = np.where(odd, 2 - (v & 3), 0)
        out += odd
        v = (v - digit) >> 1
    return out


def estimate_resources(
    lowered: LoweredNetwork, reuse_factor: int = 1, clock_ns: float = DEFAULT_CLOCK_NS
) -> Estimate:
    """Analytic FPGA resource and latency estimate of a lowered network (no synthesis).

    Rules (our choice unless cited; order-of-magnitude, not a substitute for Vivado/Vitis):

    * multiplications: the non-zero quantised weights ``M`` of each layer (HLS removes products
      with a constant zero, so pruning and weights rounded to 0 save them); with reuse factor
      ``R`` each multiplier is used ``R`` times, ``ceil(M / R)`` multipliers;
    * a product of a ``b_x``-bit input and a ``b_w``-bit weight is a DSP48 if both widths exceed
      :data:`DSP_MIN_BITS`; otherwise it is a constant-coefficient shift-and-add multiplier:
      ``d - 1`` adders for a weight with ``d`` non-zero digits in its canonical signed-digit
      (CSD) form, counted from the actual quantised weights;
    * accumulation: one adder per product; every adder is ``b_x + b_w`` bits wide at one LUT per
      bit (carry chain); synthesis trims and merges adders, so this errs high;
    * flip-flops: the pipeline registers at the layer boundaries, ``n_out * W_acc`` per layer,
      plus the registered inputs ``n_in * b_x`` of each layer;
    * BRAM: none for ``R = 1`` (weights in fabric); for ``R > 1`` (Resource strategy) the weights,
      ``M * b_w`` bits in 18 Kb blocks;
    * latency per layer: ``R`` cycles of multiplication plus ``ceil(log2(fan_in) / ADDS_PER_CYCLE)``
      adder-tree cycles (``fan_in``: the most non-zero weights of one output; a deep-sets φ or
      slot sum sees one slot's inputs or the ``N`` slots), plus one cycle for the quantised ReLU;
      initiation interval ``R`` (hls4ml's io_parallel pipeline).
    """
    if reuse_factor < 1:
        raise ConfigError(f"reuse_factor must be >= 1, got {reuse_factor}")
    lut = ff = dsp = bram = cycles = n_mult_total = 0
    per_layer = []
    linears = dict(lowered.torch_net.named_children())
    for s in lowered.layers:
        lin = linears[s.name]
        n_mult = max(1, math.ceil(s.n_mult / reuse_factor))
        wide = s.input.width > DSP_MIN_BITS and s.weight.width > DSP_MIN_BITS
        l_dsp = n_mult if wide else 0
        ints = np.rint(lin.weight.detach().double().numpy() * 2.0**s.weight.frac).astype(np.int64)
        digits = csd_digits(ints[ints != 0])
        adders = s.n_mult if wide else int(digits.sum())  # (d - 1) per multiplier + 1 accumulation
        l_lut = math.ceil(adders * (s.input.width + s.weight.width) / reuse_factor)
        l_ff = s.n_out * s.accum.width + s.n_in * s.input.width
        l_bram = 0 if reuse_factor == 1 else math.ceil(s.n_mult * s.weight.width / 18432)
        fan_in = int((ints != 0).sum(axis=1).max()) if ints.size else 1  # products summed per output
        l_cyc = reuse_factor + math.ceil(math.log2(max(fan_in, 2)) / ADDS_PER_CYCLE) + (1 if s.relu else 0)
        per_layer.append({"layer": s.name, "n_in": s.n_in, "n_out": s.n_out, "n_mult": s.n_mult,
                          "input": s.input.hls(), "weight": s.weight.hls(), "accum": s.accum.hls(),
                          "lut": l_lut, "ff": l_ff, "dsp": l_dsp, "bram18": l_bram, "cycles": l_cyc})  # fmt: skip
        lut, ff, dsp, bram, cycles = lut + l_lut, ff + l_ff, dsp + l_dsp, bram + l_bram, cycles + l_cyc
        n_mult_total += s.n_mult
        if s.name == "pool":  # deep sets: the valid-flag gating before the sum, one LUT per bit
            g_lut, g_ff = s.n_in * s.input.width, s.n_in * s.input.width
            per_layer.insert(len(per_layer) - 1, {"layer": "valid gating", "lut": g_lut, "ff": g_ff, "cycles": 1})
            lut, ff, cycles = lut + g_lut, ff + g_ff, cycles + 1
    return Estimate(lut=lut, ff=ff, dsp=dsp, bram18=bram, latency_cycles=cycles, latency_ns=cycles * clock_ns,
                    ii_cycles=reuse_factor, clock_ns=clock_ns, reuse_factor=reuse_factor,
                    n_mult=n_mult_total, per_layer=per_layer)  # fmt: skip


def report_dict(conv: HlsConversion, agreement: Agreement, estimate: Estimate) -> dict[str, Any]:
    """JSON-able summary of one conversion (the ``lhcml trigger convert`` report)."""
    return {
        "hls_project": str(conv.output_dir),
        "scheme": conv.lowered.scheme,
        "input_type": conv.lowered.input_type.hls(quantising=True),
        "layers": [{"name": s.name, "n_in": s.n_in, "n_out": s.n_out, "input": s.input.hls(),
                    "weight": s.weight.hls(), "bias": s.bias.hls(), "accum": s.accum.hls(),
                    "relu": s.relu.hls(quantising=True) if s.relu else None} for s in conv.lowered.layers],  # fmt: skip
        "agreement": asdict(agreement),
        "estimate": asdict(estimate),
        "compiler": os.path.basename(require_compiler()),
    }
