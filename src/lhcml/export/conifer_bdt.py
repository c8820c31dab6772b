"""MV2-like BDTs (lhcml's xgboost ``mv2`` models) to FPGA firmware models with **conifer**.

conifer (Summers et al., JINST 15 (2020) P05026; ``docs/references.md §18``) converts the
booster's trees and compiles its C++ emulation backend with ``g++``: the same tree evaluation
as the firmware, in ``ap_fixed`` arithmetic (or ``float``). conifer's wheel ships no
``ap_fixed.h``; lhcml points it to the ap_types headers that hls4ml ships
(``XILINX_AP_INCLUDE``), and its JSON reader to the system's nlohmann-json headers
(Debian ``nlohmann-json3-dev``) — nothing is downloaded.

**Agreement with xgboost.** xgboost evaluates ``x < threshold`` in float32 and adds the leaf
values in float32: conifer's ``float`` backend repeats exactly that (differences only from the
order of the float32 additions, ~1e-6). With ``ap_fixed<W,I>`` the inputs and thresholds are
rounded onto one grid (conifer's C++ backend needs input and threshold types equal) and the
leaves onto the score grid, so (a) the score of a jet differs by at most the leaf rounding,
``n_trees * LSB_score / 2``, when no comparison changes, and (b) a jet whose feature lies within
one input LSB of a threshold on its path may take the other branch (a different leaf). The
agreement report gives both: the fraction of jets within (a) and the largest difference.
:func:`choose_precision` sets the integer bits from the largest threshold and the largest
possible score, and ``W`` from the caller (our choice: 24 bits by default, see the docs).

**Early stopping.** ``predict_bdt`` evaluates the trees up to the booster's ``best_iteration``;
the conversion uses the same slice.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import ConfigError
from lhcml.export.hls import Estimate, HlsConversionError, require_compiler

#: default total bits of the conifer ap_fixed types (our choice; see the docs' precision scan)
DEFAULT_BITS = 24
#: adder levels per 5 ns clock cycle (as lhcml.export.hls)
ADDS_PER_CYCLE = 2


@dataclass
class BdtConversion:
    """A compiled conifer model of an xgboost booster."""

    conifer_model: Any
    booster: Any  # the slice up to best_iteration
    output_dir: Path
    precision: str  # "float" or the input/threshold type
    score_precision: str
    feature_scale: np.ndarray  # powers of two applied to the inputs (a bit shift in firmware)
    n_classes: int
    n_trees: int  # per class
    max_depth: int

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Margins ``(n, n_classes)`` (``(n, 1)`` for a binary model) of the C++ emulation."""
        xs = np.asarray(x, dtype=np.float32).astype(np.float64) * self.feature_scale
        y = np.asarray(self.conifer_model.decision_function(np.ascontiguousarray(xs)))
        return y.reshape(len(x), -1).astype(np.float64)


@dataclass
class BdtAgreement:
    """conifer C++ emulation vs xgboost margins on ``n`` jets."""

    n: int
    precision: str
    max_abs_diff: float
    leaf_rounding_bound: float  # n_trees * LSB_score / 2 (0 for float)
    frac_within_bound: float
    argmax_agreement: float


def ap_include() -> str:
    """Directory of the ``ap_fixed.h`` headers hls4ml ships (used for conifer too)."""
    try:
        import hls4ml
    except ImportError:
        raise ConfigError("the conifer C++ emulation uses hls4ml's ap_types headers: pip install 'lhcml[trigger]'") from None
    path = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    if not (path / "ap_fixed.h").is_file():
        raise HlsConversionError(f"hls4ml's ap_types headers are missing ({path}); reinstall hls4ml")
    return str(path)


def _require_json_headers() -> None:
    if not any(Path(d, "nlohmann", "json.hpp").is_file() for d in ("/usr/include", "/usr/local/include")):
        raise HlsConversionError(
            "conifer's C++ backend needs the nlohmann-json headers (nlohmann/json.hpp), not found in "
            "/usr/include: install them (Debian: apt-get install nlohmann-json3-dev)"
        )


def sliced_booster(booster: Any) -> Any:
    """The trees ``predict_bdt`` uses: up to ``best_iteration`` when early stopping set it."""
    best = booster.attr("best_iteration")
    return booster[: int(best) + 1] if best is not None else booster


def _tree_stats(booster: Any) -> tuple[float, float, int, int, int, int]:
    """(max |threshold|, max |score| bound, n_classes, trees per class, max depth, total nodes)."""
    dump = [json.loads(t) for t in booster.get_dump(dump_format="json")]
    cfg = json.loads(booster.save_config())
    n_classes = max(1, int(cfg["learner"]["learner_model_param"]["num_class"]))
    thr, leaf_max, depth, nodes = 0.0, np.zeros(n_classes), 0, 0

    def walk(node: dict, d: int) -> tuple[float, int, int]:
        nonlocal thr
        if "leaf" in node:
            return abs(float(node["leaf"])), d, 1
        thr = max(thr, abs(float(node["split_condition"])))
        m, dd, n = 0.0, d, 1
        for c in node["children"]:
            cm, cd, cn = walk(c, d + 1)
            m, dd, n = max(m, cm), max(dd, cd), n + cn
        return m, dd, n

    for i, tree in enumerate(dump):
        m, d, n = walk(tree, 0)
        leaf_max[i % n_classes] += m
        depth, nodes = max(depth, d), nodes + n
    # + the base margin: a logit of the base score, |logit(p)| < 10 for p in (5e-5, 1 - 5e-5) (our bound)
    score = float(leaf_max.max()) + 10.0
    return thr, score, n_classes, len(dump) // n_classes, depth, nodes


def base_margin(booster: Any) -> np.ndarray:
    """xgboost's base margin per class, measured: the margin of one jet minus its leaf values.

    conifer 1.11 takes the logit of xgboost's ``base_score``, right for ``binary:logistic`` but
    not for xgboost 3's multi-class models, which store the base *margin* per class (the logit
    of a value > 1 is NaN); measuring it holds for every objective and version.
    """
    import xgboost as xgb

    x0 = np.zeros((1, booster.num_features()), dtype=np.float32)
    dm = xgb.DMatrix(x0, feature_names=booster.feature_names)
    margin = np.asarray(booster.predict(dm, output_margin=True), dtype=np.float64).reshape(-1)
    leaf_ids = np.asarray(booster.predict(dm, pred_leaf=True)).reshape(-1).astype(int)
    dump = [json.loads(t) for t in booster.get_dump(dump_format="json")]

    def value(node: dict, nid: int) -> float | None:
        if node["nodeid"] == nid:
            return float(node["leaf"])
        for c in node.get("children", []):
            v = value(c, nid)
            if v is not None:
                return v
        return None

    n_out = len(margin)
    sums = np.zeros(n_out)
    for k, (tree, nid) in enumerate(zip(dump, leaf_ids, strict=True)):
        sums[k % n_out] += value(tree, int(nid))
    return margin - sums


def feature_scales(model: Any) -> np.ndarray:
    """Scale every feature (and its thresholds) by ``2^-k`` so that its largest |threshold| lies in
    ``[0.5, 1)``; modifies the conifer ``model`` in place and returns the scales.

    conifer's C++ backend has one input type for all features; lhcml's jet features span MeV
    momenta to ratios in [0, 1], so one ``ap_fixed<W,I>`` sized for the largest would leave the
    small ones a few fractional bits. A power-of-two scale is exact in floating point (xgboost's
    decisions do not change) and a free bit shift in firmware.
    """
    tmax = np.zeros(model.n_features)
    for trees in model.trees:
        for tree in trees:
            for f, t in zip(tree.feature, tree.threshold, strict=True):
                if f >= 0:
                    tmax[f] = max(tmax[f], abs(float(t)))
    k = np.where(tmax > 0, np.floor(np.log2(np.where(tmax > 0, tmax, 1.0))) + 1, 0)
    scale = 2.0**-k
    for trees in model.trees:
        for tree in trees:
            tree.threshold = [float(t) * scale[f] if f >= 0 else t for f, t in zip(tree.feature, tree.threshold, strict=True)]
    return scale


def choose_precision(booster: Any, bits: int = DEFAULT_BITS) -> tuple[str, str]:
    """``(input/threshold type, score type)``: inputs and thresholds, scaled by
    :func:`feature_scales` into (-1, 1), as ``ap_fixed<bits, 2>`` (a sign bit and one bit of
    headroom: inputs beyond every threshold saturate and take the same branches); the score with
    the fewest integer bits holding the largest possible |sum of leaves|; round to nearest and
    saturate (``AP_RND_CONV``, ``AP_SAT``)."""
    from lhcml.models.quantized import integer_bits

    if bits < 4:
        raise ConfigError(f"conifer total bits must be >= 4, got {bits}")
    _, score, *_ = _tree_stats(sliced_booster(booster))
    i_in, i_s = 2, integer_bits(score)  # inputs scaled by feature_scales: |threshold| < 1
    if i_in >= bits or i_s >= bits:
        raise ConfigError(
            f"{bits} bits cannot hold the BDT's thresholds (need {i_in} integer bits) and scores "
            f"({i_s}); use more bits"
        )
    return f"ap_fixed<{bits},{i_in},AP_RND_CONV,AP_SAT>", f"ap_fixed<{bits},{i_s},AP_RND_CONV,AP_SAT>"


def convert_bdt(
    booster: Any,
    output_dir: str | Path,
    *,
    precision: str | int = DEFAULT_BITS,
    clock_ns: float = 5.0,
) -> BdtConversion:
    """Convert an xgboost booster to a conifer model and compile its C++ emulation.

    Parameters
    ----------
    booster
        ``xgboost.Booster`` (an lhcml ``mv2`` model: :func:`lhcml.models.bdt.load_bdt`).
    output_dir
        conifer project directory (must not exist or be empty).
    precision
        ``"float"`` (xgboost's float32 arithmetic) or the total bits of the ap_fixed types
        (:func:`choose_precision`).
    clock_ns
        Clock period written into the project (5 ns = 200 MHz).
    """
    require_compiler()
    _require_json_headers()
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new conifer project directory")
    try:
        import conifer
    except ImportError:
        raise ConfigError("the BDT conversion needs conifer: pip install 'lhcml[trigger]'") from None
    os.environ["XILINX_AP_INCLUDE"] = ap_include()
    sliced = sliced_booster(booster)
    if precision == "float":
        p_in = p_score = "float"
    elif isinstance(precision, int) and not isinstance(precision, bool):
        p_in, p_score = choose_precision(sliced, precision)
    else:
        raise ConfigError(f"precision must be 'float' or a number of bits, got {precision!r}")
    _, _, n_classes, n_trees, depth, _ = _tree_stats(sliced)
    cfg = conifer.backends.cpp.auto_config()
    cfg.update({"InputPrecision": p_in, "ThresholdPrecision": p_in, "ScorePrecision": p_score,
                "OutputDir": str(out), "ProjectName": "lhcml_bdt"})  # fmt: skip
    cfg.pop("Precision", None)
    logs = io.StringIO()
    conifer_log = logging.getLogger("conifer")
    level = conifer_log.level
    conifer_log.setLevel(logging.ERROR)  # version and missing-bundled-header warnings (handled here)
    try:
        with contextlib.redirect_stdout(logs):
            model = conifer.converters.convert_from_xgboost(sliced, cfg)
            model.init_predict = base_margin(sliced).tolist()
            scale = feature_scales(model) if precision != "float" else np.ones(model.n_features)
            try:
                model.compile()
            except Exception as err:
                raise HlsConversionError(f"conifer's C++ emulation in {out} did not compile: {err}") from None
    finally:
        conifer_log.setLevel(level)
    return BdtConversion(model, sliced, out, p_in, p_score, scale, n_classes, n_trees, depth)


def xgboost_margins(booster: Any, x: np.ndarray) -> np.ndarray:
    """xgboost's margins (before softmax/sigmoid), ``(n, n_classes)`` or ``(n, 1)``."""
    import xgboost as xgb

    m = booster.predict(xgb.DMatrix(np.asarray(x, dtype=np.float32), feature_names=booster.feature_names),
                        output_margin=True)  # fmt: skip
    return np.asarray(m, dtype=np.float64).reshape(len(x), -1)


def _lsb(ap_type: str) -> float:
    w, i = (int(v) for v in ap_type.split("<")[1].split(",")[:2])
    return 2.0 ** (i - w)


def check_bdt_agreement(conv: BdtConversion, x: np.ndarray, require: bool = True) -> BdtAgreement:
    """Compare the C++ emulation with xgboost on raw jet features ``x`` ``(n, n_features)``.

    With ``require``: the float backend must agree to ``1e-5 (1 + |margin|)`` on every jet
    (float32 summation order); the ap_fixed backend within the leaf-rounding bound on at least
    99 % of the jets (the rest: branch flips of jets within one input LSB of a threshold) and
    with the same top class on at least 99 %.
    """
    ref = xgboost_margins(conv.booster, x)
    got = conv.decision_function(x)
    if got.shape != ref.shape:
        raise HlsConversionError(f"conifer returned shape {got.shape}, xgboost {ref.shape}")
    diff = np.abs(got - ref)
    if conv.precision == "float":
        bound = 0.0
        within = diff <= 1e-5 * (1.0 + np.abs(ref))
    else:
        bound = conv.n_trees * _lsb(conv.score_precision) / 2
        within = diff <= bound + _lsb(conv.score_precision)
    frac = float(within.all(axis=1).mean()) if len(x) else 1.0
    top = (got.argmax(1) == ref.argmax(1)) if ref.shape[1] > 1 else ((got[:, 0] > 0) == (ref[:, 0] > 0))
    agree = BdtAgreement(len(x), conv.precision, float(diff.max()) if len(x) else 0.0, bound, frac,
                         float(top.mean()) if len(x) else 1.0)  # fmt: skip
    if require:
        need = 1.0 if conv.precision == "float" else 0.99
        if frac < need or (conv.precision != "float" and agree.argmax_agreement < 0.99):
            raise HlsConversionError(
                f"conifer ({conv.precision}) and xgboost disagree: {frac:.2%} of {len(x)} jets within "
                f"the bound {bound:g} (need {need:.0%}), top class agrees for {agree.argmax_agreement:.2%}, "
                f"largest difference {agree.max_abs_diff:g}"
            )
    return agree


def estimate_bdt(conv: BdtConversion, clock_ns: float = 5.0) -> Estimate:
    """Analytic resource/latency estimate of conifer's fully parallel BDT (no synthesis).

    Rules (our choice, order of magnitude): every internal node is one comparator of the input
    width (one LUT per bit, carry chain) and one registered bit; every tree selects its leaf with
    a multiplexer of ``(leaves - 1)`` 2:1 muxes of the score width (two bits per LUT6); the trees
    of a class are summed by an adder tree (one LUT per score bit per adder). No multiplications:
    no DSPs (conifer's design; Summers et al. 2020). Latency: one cycle of comparisons, one of leaf
    selection, ``ceil(log2(n_trees) / ADDS_PER_CYCLE)`` of additions, one output register; II = 1.
    """
    thr, _, n_classes, n_trees, depth, nodes = _tree_stats(conv.booster)
    w_in = 32 if conv.precision == "float" else int(conv.precision.split("<")[1].split(",")[0])
    w_s = 32 if conv.precision == "float" else int(conv.score_precision.split("<")[1].split(",")[0])
    n_tot_trees = n_trees * n_classes
    leaves = (nodes + n_tot_trees) // 2  # a binary tree has (nodes + 1) / 2 leaves
    internal = nodes - leaves
    lut = internal * w_in + math.ceil((leaves - n_tot_trees) * w_s / 2) + (n_trees - 1) * n_classes * w_s
    ff = internal + n_tot_trees * w_s + n_classes * w_s
    cycles = 3 + math.ceil(math.log2(max(n_trees, 2)) / ADDS_PER_CYCLE)
    return Estimate(lut=int(lut), ff=int(ff), dsp=0, bram18=0, latency_cycles=cycles, latency_ns=cycles * clock_ns,
                    ii_cycles=1, clock_ns=clock_ns, reuse_factor=1, n_mult=0,
                    method="analytic estimate (lhcml.export.conifer_bdt.estimate_bdt), not synthesis",
                    per_layer=[{"trees_per_class": n_trees, "classes": n_classes, "max_depth": depth,
                                "internal_nodes": internal, "leaves": leaves}])  # fmt: skip
