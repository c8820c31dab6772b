"""Trigger-latency taggers: fixed-point quantised (QAT, PTQ) and pruned networks for FPGAs.

Two registered architectures, each either floating point (``weight_bits: null``) or trained with
quantisation-aware training (QAT) through **Brevitas** ``QuantLinear``/``QuantReLU``/
``QuantIdentity`` layers:

* ``trigger_mlp`` — a fully connected ReLU network on jet-level features: the hls4ml
  jet-substructure benchmark 16 → 64 → 32 → 32 → 5 (Duarte et al., JINST 13 (2018) P07027;
  Coelho et al., Nat. Mach. Intell. 3 (2021) 675; ``docs/references.md §16``) and, with other
  sizes, a DL1-size b-tagging MLP;
* ``trigger_deepsets`` — a deep-sets network ``ρ(Σ_i φ(p_i))`` (Zaheer et al. 2017, the PFN of
  Komiske et al.) on the leading constituents: the permutation-invariant, linear-in-N model
  class that JEDI-linear builds on, small enough for a trigger.

**Fixed-point grid (what hls4ml's** ``ap_fixed<W,I>`` **holds).** A value is stored in ``W``
bits of which ``I`` are integer bits including the sign: the step (LSB) is ``2^(I-W)`` and the
range ``[-2^(I-1), 2^(I-1) - 2^(I-W)]`` (unsigned ``ap_ufixed<W,I>``: ``[0, 2^I - 2^(I-W)]``).
Both schemes put every quantised tensor on such a grid:

* **QAT** uses Brevitas's fixed-point quantisers (``Int8WeightPerTensorFixedPoint``,
  ``Int8ActPerTensorFixedPoint``, ``Uint8ActPerTensorFixedPoint``,
  ``Int8BiasPerTensorFixedPointInternalScaling`` with the bit widths of the config): the scale
  is restricted to a power of two, so a ``W``-bit quantiser with scale ``2^-F`` *is*
  ``ap_fixed<W, W-F>``; the scale follows the tensor's maximum |value| (weights) or is learned
  from running statistics (activations). :func:`fixed_point_spec` reads the resulting
  ``(W, I)`` of every layer for the FPGA conversion.
* **PTQ** (:func:`post_training_quantise`) rounds a trained float model onto the grid: the
  integer bits of each tensor are the fewest that hold its largest |value| without overflow,
  ``I = floor(log2(max|v|)) + 2`` for signed tensors (``+ 1`` for unsigned ones), with
  ``max|v|`` over the weights (or biases) of a layer, or over a calibration sample for the
  inputs of each layer; rounding to nearest, ties to even (``AP_RND_CONV``), saturating at the
  range ends (``AP_SAT``). Choosing ``I`` from the maximum is the choice hls4ml's profiling
  tools recommend (no overflow); it costs fractional bits when a tensor has a long tail.

In both schemes the network input (after the normalisation held in the model), the weights and
biases of every layer and the inputs of every layer after the first (the ReLU outputs; for the
deep-sets model also the pooled sum) are quantised; the logits (the last layer's accumulator)
are not, as the FPGA's argmax/softmax reads the accumulator.

**Pruning** (``prune_sparsity > 0``): iterative magnitude pruning of every linear layer with
:mod:`torch.nn.utils.prune` (``l1_unstructured``), on the schedule of the hls4ml QKeras/pruning
papers (TensorFlow Model Optimization's ``PolynomialDecay``, Zhu & Gupta 2017): every
``prune_frequency`` training steps between ``prune_begin_step`` and ``prune_end_step`` each layer
is pruned to ``s(t) = s_f (1 - (1 - (t - t_0)/(t_1 - t_0))^3)``, and training continues with the
pruned weights held at zero; the masks are buffers, saved in checkpoints (resume keeps them).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lhcml.errors import ConfigError
from lhcml.models.base import JetClassificationHead, TaggerModel
from lhcml.models.layers import masked_sum
from lhcml.models.registry import register_model

#: smallest total bit width accepted (a sign bit and one magnitude bit)
MIN_BITS = 2


def _brevitas():
    try:
        import brevitas.nn as qnn
        import brevitas.quant as bq
    except ImportError:  # pragma: no cover - the trigger extra is part of `all`
        raise ConfigError(
            "quantisation-aware training needs Brevitas: pip install 'lhcml[trigger]'"
        ) from None
    return qnn, bq


def _check_bits(name: str, bits: int | None) -> int | None:
    if bits is None:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < MIN_BITS:
        raise ConfigError(
            f"model.{name} must be an integer >= {MIN_BITS} (total bits incl. the sign, as "
            f"ap_fixed<W,I>'s W) or null for floating point, got {bits!r}"
        )
    return bits


def _check_pruning(sparsity: float, begin: int, end: int, frequency: int) -> None:
    if not 0.0 <= float(sparsity) < 1.0:
        raise ConfigError(f"model.prune_sparsity must be in [0, 1), got {sparsity!r}")
    if sparsity > 0 and not (0 <= begin < end and frequency >= 1):
        raise ConfigError(
            "pruning needs 0 <= model.prune_begin_step < model.prune_end_step and "
            f"model.prune_frequency >= 1, got {begin}, {end}, {frequency}"
        )


def polynomial_sparsity(step: int, final: float, begin: int, end: int) -> float:
    """Target sparsity at training ``step``: TF-MOT's ``PolynomialDecay`` (power 3) from 0."""
    if step < begin:
        return 0.0
    frac = min(1.0, (step - begin) / (end - begin))
    return final * (1.0 - (1.0 - frac) ** 3)


def effective_weight(layer: nn.Module) -> Tensor:
    """The weight a linear layer applies: ``weight_orig * weight_mask`` when it is pruned (its
    ``weight`` attribute is refreshed only by a forward pass), else ``weight``."""
    if hasattr(layer, "weight_mask"):
        return layer.weight_orig * layer.weight_mask
    return layer.weight


class _QuantBlocks:
    """Builds the layers of one network: float (``nn``) or Brevitas fixed-point layers."""

    def __init__(self, weight_bits: int | None, act_bits: int | None) -> None:
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.quantised = weight_bits is not None

    def linear(self, a: int, b: int) -> nn.Module:
        if not self.quantised:
            return nn.Linear(a, b)
        qnn, bq = _brevitas()
        return qnn.QuantLinear(
            a, b, bias=True, weight_quant=bq.Int8WeightPerTensorFixedPoint,
            weight_bit_width=self.weight_bits, bias_quant=bq.Int8BiasPerTensorFixedPointInternalScaling,
            bias_bit_width=self.weight_bits, return_quant_tensor=False,
        )  # fmt: skip

    def relu(self) -> nn.Module:
        if not self.quantised:
            return nn.ReLU()
        qnn, bq = _brevitas()
        return qnn.QuantReLU(act_quant=bq.Uint8ActPerTensorFixedPoint, bit_width=self.act_bits,
                             return_quant_tensor=False)  # fmt: skip

    def identity(self) -> nn.Module:
        """Quantiser of a signed input (the network input, a pooled sum); identity in float."""
        if not self.quantised:
            return nn.Identity()
        qnn, bq = _brevitas()
        return qnn.QuantIdentity(act_quant=bq.Int8ActPerTensorFixedPoint, bit_width=self.act_bits,
                                 return_quant_tensor=False)  # fmt: skip

    def mlp(self, dims: Sequence[int], final_relu: bool, quantise_input: bool = True) -> nn.Sequential:
        layers: list[nn.Module] = [self.identity()] if quantise_input else []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(self.linear(a, b))
            if i < len(dims) - 2 or final_relu:
                layers.append(self.relu())
        return nn.Sequential(*layers)


class TriggerModel(TaggerModel):
    """Common part of the trigger taggers: bit widths, pruning, the quantised networks."""

    def _setup_quantisation(self, weight_bits: int | None, act_bits: int | None) -> _QuantBlocks:
        weight_bits = _check_bits("weight_bits", weight_bits)
        act_bits = _check_bits("act_bits", act_bits)
        if (weight_bits is None) != (act_bits is None):
            raise ConfigError("model.weight_bits and model.act_bits are both set (QAT) or both null (float)")
        self.weight_bits, self.act_bits = weight_bits, act_bits
        return _QuantBlocks(weight_bits, act_bits)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The state, with every Brevitas activation scale even before its statistics are
        collected (Brevitas leaves them out of a fresh model's state, so a freshly built model
        would not match the keys of its own checkpoints)."""
        if self.weight_bits is None:
            return super().state_dict(*args, **kwargs)
        import brevitas.config as bconfig

        old, bconfig._FULL_STATE_DICT = bconfig._FULL_STATE_DICT, True
        try:
            return super().state_dict(*args, **kwargs)
        finally:
            bconfig._FULL_STATE_DICT = old

    @torch.no_grad()
    def refresh_pruned_weights(self) -> None:
        """Set every pruned layer's ``weight`` to ``weight_orig * weight_mask`` now (torch's
        pruning does it before each forward pass only; a loaded model would show stale weights
        to code that reads ``layer.weight`` before calling the model, e.g. a firmware converter)."""
        for layer in self.linear_layers():
            if hasattr(layer, "weight_mask"):
                layer.weight = layer.weight_orig * layer.weight_mask

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.refresh_pruned_weights()
        return result

    def _setup_pruning(self, sparsity: float, begin: int, end: int, frequency: int) -> None:
        _check_pruning(sparsity, begin, end, frequency)
        self.prune_sparsity, self.prune_begin_step = float(sparsity), int(begin)
        self.prune_end_step, self.prune_frequency = int(end), int(frequency)
        self.register_buffer("prune_step", torch.zeros((), dtype=torch.long))
        if self.prune_sparsity > 0:
            from torch.nn.utils import prune

            for layer in self.linear_layers():
                prune.identity(layer, "weight")  # weight = weight_orig * weight_mask (a buffer)

    def dataflow(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of the quantisers and layers, input to output (the FPGA's order)."""
        out = []
        for part in self._dataflow_parts:
            seq = self.get_submodule(part)
            out += [(f"{part}.{n}", m) for n, m in seq.named_children()]
        return out

    def linear_layers(self) -> list[nn.Module]:
        """Every (quantised) linear layer, input to output."""
        return [m for _, m in self.dataflow() if isinstance(m, nn.Linear)]

    def _classifier(self, in_dim: int, n_classes: int, blocks: _QuantBlocks) -> None:
        """The jet-classification head: one (quantised) linear layer to the logits."""
        head = JetClassificationHead(in_dim, n_classes)
        head.net = nn.Sequential(blocks.linear(in_dim, n_classes))
        self.heads["jet_classification"] = head

    def sparsity(self) -> float:
        """Fraction of zero weights over all linear layers."""
        weights = [effective_weight(layer) for layer in self.linear_layers()]
        return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)

    @torch.no_grad()
    def _prune_tick(self) -> None:
        """Advance the pruning schedule by one training step; prune when it is due."""
        if self.prune_sparsity <= 0 or not self.training:
            return
        step = int(self.prune_step)
        self.prune_step += 1
        due = self.prune_begin_step <= step <= self.prune_end_step and (
            (step - self.prune_begin_step) % self.prune_frequency == 0 or step == self.prune_end_step
        )
        if due:
            self.prune_to(polynomial_sparsity(step, self.prune_sparsity, self.prune_begin_step,
                                              self.prune_end_step))  # fmt: skip

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Prune every linear layer to ``sparsity`` (its smallest-|w| weights; never un-prunes)."""
        from torch.nn.utils import prune

        for layer in self.linear_layers():
            n_zero = int((effective_weight(layer) == 0).sum())
            extra = int(round(sparsity * layer.weight.numel())) - n_zero
            if extra > 0:
                prune.l1_unstructured(layer, "weight", amount=extra)

    def quantisation(self) -> dict[str, Any]:
        """``{"scheme": "float"|"qat"|"ptq", "weight_bits", "act_bits"}`` of this model."""
        scheme = getattr(self, "ptq_bits", None)
        if scheme is not None:
            return {"scheme": "ptq", "weight_bits": scheme, "act_bits": scheme}
        return {"scheme": "float" if self.weight_bits is None else "qat",
                "weight_bits": self.weight_bits, "act_bits": self.act_bits}  # fmt: skip


@register_model("trigger_mlp")
class TriggerMLP(TriggerModel):
    """Fully connected ReLU network on jet-level features, float or fixed-point (QAT).

    Parameters
    ----------
    n_classes, input_dims
        Number of classes; ``{"jets": n_features}``.
    hidden
        Hidden layer sizes: hls4ml jet-substructure benchmark ``[64, 32, 32]`` (§16); DL1r
        ``[256, 128, 60, 48, 36, 24, 12, 6]`` (ATL-PHYS-PUB-2017-013).
    weight_bits, act_bits
        Total bits (``W`` of ``ap_fixed<W,I>``) of weights/biases and of activations; both
        null: floating point.
    prune_sparsity, prune_begin_step, prune_end_step, prune_frequency
        Final sparsity of every linear layer and the polynomial-decay schedule (training steps).
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        hidden: Sequence[int] = (64, 32, 32),
        weight_bits: int | None = None,
        act_bits: int | None = None,
        prune_sparsity: float = 0.0,
        prune_begin_step: int = 0,
        prune_end_step: int = 1000,
        prune_frequency: int = 100,
    ) -> None:
        super().__init__(n_classes, input_dims, required=("jets",))
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ConfigError(f"trigger_mlp needs at least one hidden layer of size >= 1 (model.hidden), got {hidden}")
        blocks = self._setup_quantisation(weight_bits, act_bits)
        self.net = blocks.mlp([input_dims["jets"], *hidden], final_relu=True)
        self._classifier(hidden[-1], n_classes, blocks)
        self._dataflow_parts = ("net", "heads.jet_classification.net")
        self._setup_pruning(prune_sparsity, prune_begin_step, prune_end_step, prune_frequency)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self._prune_tick()
        return {"logits": self.heads["jet_classification"](self.net(self.normalise(inputs)["jets"]))}


@register_model("trigger_deepsets")
class TriggerDeepSets(TriggerModel):
    """Deep sets ``ρ(Σ_i φ(p_i))`` over the valid constituents, float or fixed-point (QAT).

    φ is applied to every constituent slot (the FPGA processes all ``N`` slots in parallel);
    padded slots are zeroed before the sum, so the output does not depend on their content or
    on the order of the constituents.

    Parameters
    ----------
    phi_sizes
        Layer sizes of φ (the last is the latent dimension; ReLU after every layer).
    rho_sizes
        Hidden sizes of ρ (then a linear layer to the classes).
    weight_bits, act_bits, prune_*
        As :class:`TriggerMLP`.
    """

    def __init__(
        self,
        n_classes: int,
        input_dims: Mapping[str, int],
        phi_sizes: Sequence[int] = (32, 32, 32),
        rho_sizes: Sequence[int] = (32,),
        weight_bits: int | None = None,
        act_bits: int | None = None,
        prune_sparsity: float = 0.0,
        prune_begin_step: int = 0,
        prune_end_step: int = 1000,
        prune_frequency: int = 100,
    ) -> None:
        super().__init__(n_classes, input_dims, required=("flow",))
        phi, rho = [int(s) for s in phi_sizes], [int(s) for s in rho_sizes]
        if not phi or min(phi + rho, default=1) < 1:
            raise ConfigError(f"trigger_deepsets needs phi_sizes (>= 1 layer) and positive sizes, got {phi}, {rho}")
        blocks = self._setup_quantisation(weight_bits, act_bits)
        self.phi = blocks.mlp([input_dims["flow"], *phi], final_relu=True)
        self.rho = blocks.mlp([phi[-1], *rho], final_relu=True)  # its input: the pooled sum
        self._classifier(rho[-1] if rho else phi[-1], n_classes, blocks)
        self._dataflow_parts = ("phi", "rho", "heads.jet_classification.net")
        self._setup_pruning(prune_sparsity, prune_begin_step, prune_end_step, prune_frequency)

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self._prune_tick()
        x = self.normalise(inputs)
        valid = inputs["flow_valid"]
        return {"logits": self.heads["jet_classification"](self.rho(masked_sum(self.phi(x["flow"]), valid)))}


# -- post-training quantisation -------------------------------------------------------------


def integer_bits(max_abs: float, signed: bool = True) -> int:
    """Fewest integer bits ``I`` (incl. the sign if ``signed``) whose range holds ``max_abs``.

    ``max_abs < 2^(I-1)`` (signed) or ``< 2^I`` (unsigned); 1 (signed) / 0 (unsigned) for zero.
    ``I`` may exceed ``W`` or be negative (a tensor of large or small values; hls4ml allows both).
    """
    if not math.isfinite(max_abs):
        raise ValueError(f"cannot choose integer bits for a non-finite maximum {max_abs}")
    if max_abs <= 0:
        return 1 if signed else 0
    return math.floor(math.log2(max_abs)) + (2 if signed else 1)


def fixed_point(x: Tensor, bits: int, int_bits: int, signed: bool = True) -> Tensor:
    """``x`` on the ``ap_fixed<bits, int_bits, AP_RND_CONV, AP_SAT>`` grid (``ap_ufixed`` if not
    ``signed``): round to nearest, ties to even, saturate at the range ends."""
    lsb = 2.0 ** (int_bits - bits)
    if signed:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    return torch.clamp(torch.round(x / lsb), lo, hi) * lsb


def _calibrate(model: TriggerModel, batches: Iterable[Mapping[str, Tensor]]) -> dict[str, tuple[float, float]]:
    """``{linear layer name: (min, max)}`` of every linear layer's input over ``batches``."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    seen: dict[str, tuple[float, float]] = {}

    def hook(mod: nn.Module, args: tuple[Tensor, ...]) -> None:
        # padded constituent slots enter φ as zeros (normalise() zeroes them): inside any range
        x = args[0]
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        old = seen.get(names[mod], (lo, hi))
        seen[names[mod]] = (min(old[0], lo), max(old[1], hi))

    handles = [m.register_forward_pre_hook(hook) for m in names]
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ConfigError("post-training quantisation needs at least one calibration batch")
    return seen


def post_training_quantise(
    model: TriggerModel, bits: int, calibration: Iterable[Mapping[str, Tensor]]
) -> TriggerModel:
    """A copy of the float ``model`` with post-training fixed-point quantisation at ``bits``.

    Weights and biases of every linear layer are rounded onto ``ap_fixed<bits, I>`` grids with
    ``I`` from their maximum |value|; the input of every linear layer is quantised by a forward
    pre-hook on the grid chosen from its range over the ``calibration`` batches (unsigned where
    the calibration input is never negative: the ReLU outputs); see the module docstring. The
    chosen ``(W, I)`` per tensor are in ``copy.ptq_spec``. The copy is for evaluation and FPGA
    conversion (its hooks are not saved in checkpoints: rebuild it from the float checkpoint).
    """
    _check_bits("bits", bits)
    if model.weight_bits is not None:
        raise ConfigError("post-training quantisation starts from a floating-point model (weight_bits: null)")
    q = copy.deepcopy(model)
    q.eval()
    ranges = _calibrate(q, calibration)
    spec: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for name, layer in q.dataflow():
            if not isinstance(layer, nn.Linear):
                continue
            lo, hi = ranges[name]
            signed = lo < 0
            entry = {"input": (bits, integer_bits(max(abs(lo), abs(hi)), signed), signed)}
            w = layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight
            w_i = integer_bits(float(w.abs().max()))
            w.copy_(fixed_point(w, bits, w_i))
            entry["weight"] = (bits, w_i, True)
            if layer.bias is not None:
                b_i = integer_bits(float(layer.bias.abs().max()))
                layer.bias.copy_(fixed_point(layer.bias, bits, b_i))
                entry["bias"] = (bits, b_i, True)
            spec[name] = entry
            w_in, i_in, s_in = entry["input"]
            layer.register_forward_pre_hook(
                lambda mod, args, w_in=w_in, i_in=i_in, s_in=s_in: (fixed_point(args[0], w_in, i_in, s_in),)
            )
    q.ptq_bits = bits
    q.ptq_spec = spec
    return q


def fixed_point_spec(model: TriggerModel) -> dict[str, dict[str, tuple[int, int, bool]]]:
    """``{linear layer: {"input"|"weight"|"bias": (W, I, signed)}}``: the fixed-point types of a
    PTQ copy (:func:`post_training_quantise`) or of a QAT model (read from Brevitas's power-of-two
    scales after training, in eval mode); the FPGA conversion configures its precisions from it."""
    if getattr(model, "ptq_spec", None) is not None:
        return copy.deepcopy(model.ptq_spec)
    if model.weight_bits is None:
        raise ConfigError("a floating-point model has no fixed-point types (quantise it first)")
    model.eval()
    model.refresh_pruned_weights()
    out: dict[str, dict[str, tuple[int, int, bool]]] = {}
    prev_act: tuple[int, int, bool] | None = None
    for name, m in model.dataflow():
        kind = type(m).__name__
        if kind in ("QuantIdentity", "QuantReLU"):
            scale = float(m.act_quant.scale().detach())
            signed = kind == "QuantIdentity"
            w = int(m.act_quant.bit_width())
            prev_act = (w, w + round(math.log2(scale)), signed)
        elif kind == "QuantLinear":
            qw = m.quant_weight()
            ws, wb = float(qw.scale.detach()), int(qw.bit_width)
            entry: dict[str, tuple[int, int, bool]] = {"weight": (wb, wb + round(math.log2(ws)), True)}
            if prev_act is not None:
                entry["input"] = prev_act
            if m.bias is not None:
                qb = m.bias_quant(m.bias)
                bs, bb = float(qb.scale.detach()), int(qb.bit_width)
                entry["bias"] = (bb, bb + round(math.log2(bs)), True)
            out[name] = entry
            prev_act = None
    return out
