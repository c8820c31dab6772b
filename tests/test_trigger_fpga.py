"""FPGA conversion of the trigger models: hls4ml C simulation and conifer C++ emulation.

One hls4ml compile per scheme (QAT, PTQ) and one conifer compile, shared by module fixtures
(each compile is g++ on generated C++: the bulk of this file's run time).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lhcml.export import hls
from lhcml.export.conifer_bdt import check_bdt_agreement, convert_bdt, estimate_bdt, xgboost_margins
from lhcml.models.quantized import TriggerDeepSets, TriggerMLP, post_training_quantise

N_FEAT, N_CLASSES = 16, 5


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable 5-class data: the class is the argmax of 5 fixed projections (raw units, MeV-like
    offsets so that the model's normalisation matters)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEAT)).astype(np.float32)
    proj = np.random.default_rng(99).normal(size=(N_FEAT, N_CLASSES))
    y = (x @ proj).argmax(1)
    return (x * 30e3 + 50e3).astype(np.float32), y


def _train(model: TriggerMLP, x: np.ndarray, y: np.ndarray, steps: int = 60) -> TriggerMLP:
    torch.manual_seed(0)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    model.set_normalisation("jets", xt.mean(0).tolist(), xt.std(0).tolist())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model({"jets": xt})["logits"], yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _data(400, 1)


@pytest.fixture(scope="module")
def qat_conv(tmp_path_factory, data):
    torch.set_num_threads(1)
    x, y = data
    model = _train(TriggerMLP(N_CLASSES, {"jets": N_FEAT}, hidden=[16, 8], weight_bits=6, act_bits=6), x, y)
    conv = hls.convert_to_hls(model, tmp_path_factory.mktemp("qat") / "prj")
    return model, conv


N_SLOTS, N_CONST_FEAT = 6, 3


def _constituents(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, N_SLOTS, N_CONST_FEAT)) * 20e3).astype(np.float32)
    valid = rng.random((n, N_SLOTS)) < 0.6
    valid[:, 0] = True
    x[~valid] = 7e5  # garbage in the padded slots: must not matter
    return {"flow": x, "flow_valid": valid}


@pytest.fixture(scope="module")
def ptq_deepsets_conv(tmp_path_factory):
    """Post-training-quantised deep sets: the PTQ lowering and the masked sum over slots."""
    model = TriggerDeepSets(N_CLASSES, {"flow": N_CONST_FEAT}, phi_sizes=[8, 8], rho_sizes=[8]).eval()
    calib = _constituents(300, 6)
    flat = calib["flow"][calib["flow_valid"]]
    model.set_normalisation("flow", flat.mean(0).tolist(), flat.std(0).tolist())
    q = post_training_quantise(model, 8, [{k: torch.as_tensor(v) for k, v in calib.items()}])
    conv = hls.convert_to_hls(q, tmp_path_factory.mktemp("ptq") / "prj", n_objects=N_SLOTS)
    return q, conv


def test_qat_csim_bit_exact(qat_conv) -> None:
    model, conv = qat_conv
    x, y = _data(300, 2)  # jets the model was not trained on
    agree = hls.check_agreement(conv, model, {"jets": x})  # raises unless bit-exact
    assert agree.exact and agree.n == 300 and agree.max_abs_diff_float64 == 0.0
    # the quantised model learned (C simulation is not a constant): beats the 1/5 of a guess
    logits = conv.predict(hls.firmware_inputs(model, {"jets": x}))
    assert (logits.argmax(1) == y).mean() > 0.6
    # the firmware types are the quantisers': 6-bit inputs/weights, ReLU outputs unsigned
    assert conv.lowered.input_type.width == 6 and conv.lowered.input_type.signed
    assert all(s.weight.width == 6 for s in conv.lowered.layers)
    assert all(not s.relu.signed for s in conv.lowered.layers[:-1])


def test_csim_detects_a_wrong_type(qat_conv) -> None:
    """The agreement check can fail: the same firmware fed inputs off by one input LSB."""
    model, conv = qat_conv
    x, _ = _data(200, 3)
    xf = hls.firmware_inputs(model, {"jets": x}) + 2.0**-conv.lowered.input_type.frac
    diff = np.abs(conv.predict(xf) - hls.reference_logits(model, {"jets": x}))
    assert diff.max() > 0


def test_ptq_deepsets_csim_bit_exact(ptq_deepsets_conv) -> None:
    model, conv = ptq_deepsets_conv
    inputs = _constituents(300, 7)
    agree = hls.check_agreement(conv, model, inputs)  # raises unless bit-exact
    assert agree.exact and conv.lowered.scheme == "ptq" and conv.lowered.n_objects == N_SLOTS
    # padded slots do not matter in the firmware either (the valid flags gate them)
    x, valid = hls.firmware_inputs(model, inputs)
    moved = inputs["flow"].copy()
    moved[~inputs["flow_valid"]] = -3e5
    x2, _ = hls.firmware_inputs(model, {"flow": moved, "flow_valid": inputs["flow_valid"]})
    np.testing.assert_array_equal(conv.predict((x, valid)), conv.predict((x2, valid)))


def test_estimates_follow_bits_pruning_and_reuse(data) -> None:
    x, _ = data
    f = TriggerMLP(N_CLASSES, {"jets": N_FEAT}, hidden=[16, 8]).eval()
    f.set_normalisation("jets", x.mean(0).tolist(), x.std(0).tolist())
    calib = [{"jets": torch.as_tensor(x)}]
    e6 = hls.estimate_resources(hls.lowered_network(post_training_quantise(f, 6, calib)))
    e16 = hls.estimate_resources(hls.lowered_network(post_training_quantise(f, 16, calib)))
    assert e6.dsp == 0 and e16.dsp > 0  # narrow products in LUTs, wide ones in DSPs
    assert e6.lut > 0 and e6.latency_ns == e6.latency_cycles * 5.0 and e6.ii_cycles == 1
    e6r = hls.estimate_resources(hls.lowered_network(post_training_quantise(f, 6, calib)), reuse_factor=4)
    assert e6r.ii_cycles == 4 and e6r.latency_cycles > e6.latency_cycles and e6r.lut < e6.lut
    f.prune_to(0.5)
    e6p = hls.estimate_resources(hls.lowered_network(post_training_quantise(f, 6, calib)))
    assert e6p.n_mult < e6.n_mult


def test_csd_digits() -> None:
    assert hls.csd_digits(np.array([0, 1, 3, 7, 15, 85, -7, 127])).tolist() == [0, 1, 2, 2, 2, 4, 2, 2]


def test_unsupported_model_and_layer() -> None:
    from lhcml.models.registry import build_model

    pfn = build_model("pfn", N_CLASSES, {"flow": 4})
    with pytest.raises(hls.HlsConversionError, match="'pfn'.*supported models: trigger_mlp, trigger_deepsets"):
        hls.lowered_network(pfn)
    ds = TriggerDeepSets(N_CLASSES, {"flow": 4}, weight_bits=6, act_bits=6)
    with pytest.raises(hls.HlsConversionError, match="number of constituent slots"):
        hls.lowered_network(ds)
    m = TriggerMLP(N_CLASSES, {"jets": N_FEAT}, hidden=[8], weight_bits=6, act_bits=6)
    m.net[2] = torch.nn.Sigmoid()
    with pytest.raises(hls.HlsConversionError, match=r"net\.2 \(Sigmoid\).*supported layers: QuantIdentity"):
        hls.lowered_network(m)
    with pytest.raises(hls.HlsConversionError, match="floating-point model"):
        hls.lowered_network(TriggerMLP(N_CLASSES, {"jets": N_FEAT}, hidden=[8]))


def test_missing_compiler(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no g++
    m = TriggerMLP(N_CLASSES, {"jets": N_FEAT}, hidden=[8], weight_bits=6, act_bits=6).eval()
    with pytest.raises(hls.HlsConversionError, match="g\\+\\+.*install"):
        hls.convert_to_hls(m, tmp_path / "prj")
    assert not (tmp_path / "prj").exists()


def test_conifer_matches_xgboost(tmp_path) -> None:
    import xgboost as xgb

    # MV2-like: multi-class softprob with early stopping, features of very different scales
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 6)).astype(np.float32) * np.array([1, 1, 3, 10, 1e3, 1e5], np.float32)
    y = (x[:, 0] + x[:, 4] / 1e3 > 0.5).astype(int) + (x[:, 5] > 5e4).astype(int)
    d_tr, d_va = xgb.DMatrix(x[:2000], y[:2000]), xgb.DMatrix(x[2000:], y[2000:])
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1},
                        d_tr, 40, evals=[(d_va, "v")], early_stopping_rounds=3, verbose_eval=False)  # fmt: skip
    conv = convert_bdt(booster, tmp_path / "prj", precision=24)
    agree = check_bdt_agreement(conv, x[2000:])  # raises below 99 % within the rounding bound
    assert agree.frac_within_bound >= 0.99 and agree.argmax_agreement >= 0.99
    # the margins themselves, not only the class: most jets within the leaf-rounding bound
    ref = xgboost_margins(conv.booster, x[2000:])
    assert np.median(np.abs(conv.decision_function(x[2000:]) - ref)) <= agree.leaf_rounding_bound
    est = estimate_bdt(conv)
    assert est.dsp == 0 and est.lut > 0 and est.latency_cycles >= 3
