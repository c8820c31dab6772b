"""Trigger-latency models (issue 16): QAT/PTQ fixed-point networks, pruning, the trigger chain.

Measured on a 3-class task that a 16-16 MLP separates to 98.5 % in float (labels = argmax of a
fixed linear map of 16 Gaussian features): PTQ at 3 bits 74 %, QAT at 3 bits 87 % (300 steps;
the test trains 150). The tolerances below are stated where they are used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from lhcml.errors import ConfigError
from lhcml.models.quantized import (
    effective_weight,
    fixed_point,
    fixed_point_spec,
    integer_bits,
    polynomial_sparsity,
    post_training_quantise,
)
from lhcml.models.registry import build_model

N_FEAT, N_CLASSES, STEPS = 16, 3, 150


def _linear_task(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEAT, generator=g)
    w = torch.randn(N_FEAT, N_CLASSES, generator=torch.Generator().manual_seed(99))
    return {"jets": x, "labels": (x @ w).argmax(1)}


def _set_task(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Constituent sets (8 slots, 4 features, 3-8 valid): the class is the tercile of the sum of
    feature 0 over the valid constituents (permutation invariant, separable by a deep set)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, 4, generator=g)
    n_valid = torch.randint(3, 9, (n,), generator=g)
    valid = torch.arange(8)[None, :] < n_valid[:, None]
    s = (x[..., 0] * valid).sum(1)
    labels = (s > -0.8).long() + (s > 0.8).long()
    return {"flow": x, "flow_valid": valid, "labels": labels}


def _fit(model: torch.nn.Module, data: dict[str, torch.Tensor], steps: int = STEPS, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    n = len(data["labels"])
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (256,))
        batch = {k: v[idx] for k, v in data.items()}
        loss = torch.nn.functional.cross_entropy(model(batch)["logits"], batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def _accuracy(model: torch.nn.Module, data: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float((model(data)["logits"].argmax(1) == data["labels"]).float().mean())


def _constant(data: dict[str, torch.Tensor]) -> float:
    """Accuracy of always answering the most frequent class."""
    return float(torch.bincount(data["labels"]).max()) / len(data["labels"])


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    train, test = _linear_task(4000, 1), _linear_task(2000, 2)
    torch.manual_seed(0)
    flt = _fit(build_model("trigger_mlp", N_CLASSES, {"jets": N_FEAT}, hidden=[16, 16]), train)
    torch.manual_seed(0)
    qat3 = _fit(build_model("trigger_mlp", N_CLASSES, {"jets": N_FEAT}, hidden=[16, 16],
                            weight_bits=3, act_bits=3), train)  # fmt: skip
    return {"train": train, "test": test, "float": flt, "qat3": qat3}


# -- the fixed-point grid -------------------------------------------------------------------


def test_fixed_point_is_the_nearest_ap_fixed_value_ties_to_even_saturating():
    # ap_fixed<5,2>: values k * 2^-3 for k in [-16, 15]; enumerate the grid and compare
    bits, ibits = 5, 2
    grid = np.arange(-16, 16) * 2.0**-3
    x = np.concatenate([np.linspace(-3, 3, 2001), grid + 2.0**-4])  # includes every tie
    got = fixed_point(torch.tensor(x, dtype=torch.float64), bits, ibits).numpy()
    ref = []
    for v in x:
        d = np.abs(v - grid)
        cand = grid[np.isclose(d, d.min())]  # one value, or two at a tie
        ref.append(cand[np.isclose((cand / 2.0**-3) % 2, 0)][0] if len(cand) > 1 else cand[0])  # ties: even step
    ref = np.array(ref)
    assert np.array_equal(got, ref)
    assert got.min() == -2.0 and got.max() == 2.0 - 2.0**-3  # saturated, not wrapped
    u = fixed_point(torch.tensor([-1.0, 0.3, 9.0]), 4, 1, signed=False)
    assert u.tolist() == [0.0, 0.25, 2.0 - 0.125]  # ap_ufixed<4,1>


@pytest.mark.parametrize("v", [0.01, 0.5, 0.99, 1.0, 1.01, 3.7, 100.0])
def test_integer_bits_hold_the_maximum_and_no_fewer_do(v):
    i = integer_bits(v)
    assert v < 2 ** (i - 1) and v >= 2 ** (i - 2)  # signed: one bit fewer would overflow
    iu = integer_bits(v, signed=False)
    assert v < 2**iu and v >= 2 ** (iu - 1)


def test_qat_weights_lie_on_the_reported_fixed_point_grid(trained):
    model = trained["qat3"]
    spec = fixed_point_spec(model)
    layers = dict(model.dataflow())
    assert list(spec) == ["net.1", "net.3", "heads.jet_classification.net.0"]
    for name, entry in spec.items():
        w_bits, i_bits, _ = entry["weight"]
        assert w_bits == 3
        q = layers[name].quant_weight().value.detach()
        steps = q / 2.0 ** (i_bits - w_bits)
        assert torch.equal(steps, steps.round())  # on the ap_fixed<3, I> grid
        assert steps.min() >= -4 and steps.max() <= 3
    assert spec["net.1"]["input"][2] is True and spec["net.3"]["input"][2] is False  # ReLU outputs unsigned


# -- learning, PTQ vs float, QAT vs PTQ ---------------------------------------------------------


def test_quantised_mlp_learns(trained):
    acc = _accuracy(trained["qat3"], trained["test"])
    assert acc > _constant(trained["test"]) + 0.3, acc


def test_quantised_deepsets_learns_and_is_permutation_invariant():
    train, test = _set_task(3000, 1), _set_task(1000, 2)
    torch.manual_seed(0)
    m = _fit(build_model("trigger_deepsets", 3, {"flow": 4}, phi_sizes=[16, 16], rho_sizes=[16],
                         weight_bits=6, act_bits=6), train)  # fmt: skip
    acc = _accuracy(m, test)
    assert acc > _constant(test) + 0.25, acc
    perm = torch.randperm(8)
    shuffled = {**test, "flow": test["flow"][:, perm], "flow_valid": test["flow_valid"][:, perm]}
    noise = {**test, "flow": torch.where(test["flow_valid"][..., None], test["flow"], torch.randn_like(test["flow"]))}
    with torch.no_grad():
        ref = m(test)["logits"]
        assert torch.allclose(m(shuffled)["logits"], ref, atol=1e-5)  # order of the constituents
        assert torch.equal(m(noise)["logits"], ref)  # content of padded slots


def test_ptq_at_16_bits_agrees_with_float_and_at_4_bits_does_not(trained):
    flt, test = trained["float"], trained["test"]
    with torch.no_grad():
        ref = flt(test)["logits"]
        q16 = post_training_quantise(flt, 16, [trained["train"]])(test)["logits"]
        q4 = post_training_quantise(flt, 4, [trained["train"]])(test)["logits"]
    scale = float(ref.abs().max())
    # 16 bits: steps of 2^(I-16) ~ 1e-4 of each tensor's range, three layers -> < 0.5 % of the logit range
    assert float((q16 - ref).abs().max()) < 5e-3 * scale
    assert float((q16.argmax(1) == ref.argmax(1)).float().mean()) > 0.995
    # 4 bits: steps of 1/8 of the range: the logits move by > 5 % of their range and decisions change
    assert float((q4 - ref).abs().max()) > 5e-2 * scale
    assert float((q4.argmax(1) == ref.argmax(1)).float().mean()) < 0.99
    assert flt.quantisation()["scheme"] == "float"  # the float model itself is untouched


def test_qat_beats_ptq_at_3_bits(trained):
    ptq3 = post_training_quantise(trained["float"], 3, [trained["train"]])
    acc_ptq, acc_qat = _accuracy(ptq3, trained["test"]), _accuracy(trained["qat3"], trained["test"])
    assert acc_qat > acc_ptq + 0.03, (acc_qat, acc_ptq)


# -- pruning ------------------------------------------------------------------------------------


def test_pruning_reaches_the_configured_sparsity_and_keeps_pruned_weights_at_zero():
    assert polynomial_sparsity(0, 0.6, 0, 20) == 0.0 and polynomial_sparsity(20, 0.6, 0, 20) == 0.6
    assert polynomial_sparsity(10, 0.6, 0, 20) == pytest.approx(0.6 * (1 - 0.5**3))
    torch.manual_seed(0)
    m = build_model("trigger_mlp", N_CLASSES, {"jets": N_FEAT}, hidden=[16, 16], weight_bits=6, act_bits=6,
                    prune_sparsity=0.6, prune_begin_step=0, prune_end_step=20, prune_frequency=5)  # fmt: skip
    data = _linear_task(1000, 3)
    _fit(m, data, steps=21)
    for layer in m.linear_layers():
        assert abs(float((layer.weight == 0).float().mean()) - 0.6) <= 1 / layer.weight.numel() + 1e-9
    zeros = [layer.weight == 0 for layer in m.linear_layers()]
    _fit(m, data, steps=10, seed=1)  # training goes on after the schedule: pruned weights stay 0
    assert all(bool((effective_weight(layer)[z] == 0).all()) for layer, z in zip(m.linear_layers(), zeros, strict=True))
    q = build_model("trigger_mlp", N_CLASSES, {"jets": N_FEAT}, hidden=[16, 16], weight_bits=6, act_bits=6,
                    prune_sparsity=0.6, prune_begin_step=0, prune_end_step=20, prune_frequency=5)  # fmt: skip
    q.load_state_dict(m.state_dict())  # masks are buffers: a rebuilt model holds the same zeros
    assert q.sparsity() == pytest.approx(m.sparsity())


# -- config errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hyper", "words"),
    [
        ({"weight_bits": 1, "act_bits": 1}, ["model.weight_bits", ">= 2"]),
        ({"weight_bits": 6, "act_bits": None}, ["both set"]),
        ({"prune_sparsity": 1.0}, ["prune_sparsity", "[0, 1)"]),
    ],
)
def test_bad_hyperparameters_give_one_config_error(hyper, words):
    with pytest.raises(ConfigError) as err:
        build_model("trigger_mlp", 5, {"jets": 16}, **hyper)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_unknown_key_and_bad_bits_in_configs_are_one_clear_message(tmp_path, capsys):
    from lhcml.cli import main
    from lhcml.models.registry import get_model_class
    from lhcml.train.config import check_hyperparameters

    with pytest.raises(ConfigError, match="did you mean 'weight_bits'"):
        check_hyperparameters(get_model_class("trigger_mlp"), {"weight_bit": 4}, "trigger_mlp")
    scan = tmp_path / "scan.yaml"
    for text, words in (({"bits": [1, 8], "models": {"m": {"config": "x.yaml", "test_files": ["t.h5"]}}}, ">= 2"),
                        ({"bitz": [8], "models": {}}, "bitz")):  # fmt: skip
        scan.write_text(yaml.safe_dump(text))
        with pytest.raises(SystemExit) as ex:
            main(["trigger", "scan", str(scan), str(tmp_path / "out")])
        assert ex.value.code == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # nothing written before the config is valid


# -- the chain: dataset -> train (lhcml train machinery) -> checkpoint -> resume -> load ----------


def test_trigger_dataset_train_checkpoint_resume_round_trip(tmp_path):
    from lhcml.data.mock import make_mock_file
    from lhcml.tasks.trigger.dataset import SUBSTRUCTURE_16, make_trigger_file
    from lhcml.train import load_train_config, train
    from lhcml.train.checkpoint import load_tagger, read_checkpoint

    src = make_mock_file(tmp_path / "boosted.h5", n_jets=600, n_tracks=24, seed=3, kind="boosted")
    out = make_trigger_file(src, tmp_path / "trigger.h5", n_constituents=8, progress=False)
    import h5py

    with h5py.File(out) as f:
        jets, flow = f["jets"][:], f["flow"][:]
    with h5py.File(src) as f:
        raw = f["flow"][:]
    assert flow.shape == (600, 8) and set(SUBSTRUCTURE_16) <= set(jets.dtype.names)
    # zlogz and C1(beta=0) of one jet, by hand from its constituents
    pt = raw["pt"][0][raw["valid"][0]].astype(np.float64)
    z = pt / pt.sum()
    assert jets["zlogz"][0] == pytest.approx(float((z * np.log(z)).sum()), rel=1e-5)
    assert jets["C1_b0"][0] == pytest.approx(0.5 * (1 - float((z**2).sum())), rel=1e-5)
    assert np.all(np.diff(np.where(flow["valid"], flow["ptrel"], -1), axis=1) <= 0)  # leading first
    run = tmp_path / "run"
    overrides = [f"data.train_files=[{out}]", f"data.val_files=[{out}]", "data.classes=[qcd,top,W,Z]",
                 "trainer.max_epochs=1", "trainer.enable_progress_bar=false", f"output_dir={run}",
                 "model.prune_end_step=6", "model.prune_frequency=2", "data.batch_size=128",
                 "data.label_scheme=boosted"]  # fmt: skip
    cfg = load_train_config("configs/trigger/jet_substructure_mlp_qat.yaml", overrides)
    train(cfg)
    first = read_checkpoint(run / "checkpoints" / "last.ckpt")
    cfg2 = load_train_config("configs/trigger/jet_substructure_mlp_qat.yaml", [*overrides[:3], "trainer.max_epochs=2", *overrides[4:]])
    best = train(cfg2, resume=True)
    second = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert first["epoch"] == 0 and second["epoch"] == 1  # resumed, not restarted
    model, meta = load_tagger(run / "checkpoints" / "last.ckpt")
    assert model.quantisation() == {"scheme": "qat", "weight_bits": 6, "act_bits": 6}
    assert model.sparsity() == pytest.approx(0.5, abs=0.02)  # the pruning masks came back
    state = {k[len("model."):]: v for k, v in second["state_dict"].items() if k.startswith("model.")}
    assert int(state["prune_step"]) == 2 * math.ceil(600 / 128)  # the schedule counted both epochs
    assert best.is_file()
