"""int8 shower graphs (issue 15, opt-in, ``lhcml fastcalo quantize``): only the learned dense layers are quantised
(the per-layer sums stay float32), a row's shower does not depend on its batch, the showers stay close to the float
graph's when the calibration covers the trained range and move far when it does not, the simulation's ONNX runner
takes the file, and bad inputs are one clear error with no file written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _fastcalo_helpers import photon_fm_model


@pytest.fixture(scope="module")
def float_graph(tmp_path_factory):
    """A small η-conditioned flow-matching photon model (two 32-wide hidden layers) exported as a float32 graph."""
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import voxel_binning

    d = tmp_path_factory.mktemp("int8")
    b = voxel_binning("photon")
    torch.manual_seed(3)
    m = photon_fm_model(hidden=32, depth=2, steps=2, solver="midpoint")
    m.prepare(torch.full((16,), 20.0), torch.rand(16, b.n_voxels) * (20.0 / b.n_voxels))
    path = d / "float.onnx"
    export_generator(m, path, binning_file_sha256=b.sha256, particle="photon", binning_xml=b.to_xml(), timing=False)
    return path


def _cli(args, capsys):
    from lhcml import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_int8_graph_quantises_the_dense_layers_only_and_stays_close(float_graph, tmp_path, capsys):
    import onnx

    from lhcml.export.quantize import sha256_file
    from lhcml.sim.fastcalo import OnnxShowerModel

    out = tmp_path / "int8.onnx"
    code, text, err = _cli(["fastcalo", "quantize", str(float_graph), "-o", str(out), "--calibration", "1024",
                            "--no-timing"], capsys)  # fmt: skip
    assert code in (0, None), err
    assert "rows independent of the batch" in text
    proto, ref = onnx.load(str(out)), onnx.load(str(float_graph))
    meta = {p.key: p.value for p in proto.metadata_props}
    ref_meta = {p.key: p.value for p in ref.metadata_props}
    assert all(meta[k] == v for k, v in ref_meta.items())  # every float metadata key kept
    info = json.loads(meta["quantization"])
    assert info["source_sha256"] == sha256_file(float_graph) and info["calibration_rows"] == 1024
    # 2 midpoint steps = 4 network calls x 3 dense layers; each quantised Gemm reads dequantised int8 weights
    assert len(info["nodes"]) == 12
    producer = {o: n for n in proto.graph.node for o in n.output}
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    assert sorted(n.name for n in gemms) == sorted(info["nodes"])
    for n in gemms:
        assert all(producer[i].op_type == "DequantizeLinear" for i in n.input[:2]), n.name
    # the per-layer sums (MatMul with a fixed 0/1 matrix) stay float32
    matmuls = [n for n in proto.graph.node if n.op_type == "MatMul"]
    assert matmuls and all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                           for n in matmuls for i in n.input)  # fmt: skip
    # close to the float graph, but not the same graph
    c = info["check"]
    assert c["row_independent"] is True and c["batch_dev_p90"] < 1e-5, c
    assert c["likely_fidelity_loss"] is False and len(c["layer_fraction_int8"]) == 5, c
    assert c["showers_differing"] > 0.5, c
    assert c["layer_energy_dev_p99"] < 1e-3, c
    # the simulation's runner takes it and runs the file as it is (the same noise draws as its generate())
    model = OnnxShowerModel(str(out))
    e, eta = np.array([5.0, 65.0, 200.0]), np.array([0.1, 0.7, 1.3])
    showers = model.generate(e, np.random.default_rng(4), eta=eta)
    z = np.random.default_rng(4).standard_normal((3, model.noise_dim)).astype(np.float32)
    direct = model.session.run(["showers"], {"incident_energy": e.astype(np.float32)[:, None],
                                             "eta": eta.astype(np.float32)[:, None], "noise": z})[0]  # fmt: skip
    np.testing.assert_array_equal(showers, np.maximum(direct, 0.0))
    with pytest.raises(Exception, match="outside the trained range"):
        model.generate(np.array([300.0]), np.random.default_rng(4), eta=np.array([0.5]))


def test_rows_do_not_depend_on_the_batch(float_graph, tmp_path):
    from lhcml.export.fastcalo_int8 import graph_inputs, open_graph, quantize_shower_graph

    out = tmp_path / "q.onnx"
    quantize_shower_graph(float_graph, out, calibration=512)
    sess = open_graph(out)
    feed = graph_inputs(sess, 40, 9)
    whole = sess.run(["showers"], feed)[0]
    singles = np.concatenate([sess.run(["showers"], {k: v[i:i + 1] for k, v in feed.items()})[0] for i in range(40)])
    # float32 round-off only (onnxruntime's float kernels depend on the batch size); one int8 step is ~1e-3
    dev = np.max(np.abs(whole - singles), axis=1) / feed["incident_energy"][:, 0]
    assert np.quantile(dev, 0.9) < 1e-5, dev


def test_the_check_sees_a_batch_dependent_quantisation(float_graph, tmp_path):
    """onnxruntime's dynamic quantisation takes each activation's range from the batch: the check must flag it."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lhcml.export.fastcalo_int8 import compare

    dyn = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(float_graph), str(dyn), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    assert any(n.op_type == "DynamicQuantizeLinear" for n in onnx.load(str(dyn)).graph.node)
    res = compare(float_graph, dyn, 256, 2)
    assert res["row_independent"] is False and res["batch_dev_p90"] > 1e-4, res


def test_a_calibration_that_misses_the_range_is_seen_by_the_check(float_graph, tmp_path):
    """Calibrated on noise a tenth as wide as the sampler draws, the activations of real draws saturate: the check
    shows a per-layer energy deviation far beyond the full-range calibration's (so its numbers can flag a bad file)."""
    from lhcml.export.fastcalo_int8 import compare, graph_inputs, open_graph
    from lhcml.export.quantize import quantize_graph

    sess = open_graph(float_graph)
    good = graph_inputs(sess, 1024, 0)
    bad = {k: v.copy() for k, v in good.items()}
    bad["noise"] *= 0.1
    res = {}
    for name, feed in (("good", good), ("bad", bad)):
        out = tmp_path / f"{name}.onnx"
        quantize_graph(float_graph, out, [feed])
        res[name] = compare(float_graph, out, 1024, 5)
    assert res["bad"]["layer_energy_dev_p99"] > 10 * res["good"]["layer_energy_dev_p99"], res


def test_keep_first_float_leaves_each_networks_first_layer(float_graph, tmp_path):
    import onnx

    from lhcml.export.fastcalo_int8 import quantize_shower_graph
    from lhcml.export.quantize import dense_nodes, first_layers

    proto = onnx.load(str(float_graph))
    nodes = dense_nodes(proto)
    firsts = first_layers(proto, nodes)
    # the velocity network's first Linear, once per network call (4 calls)
    assert len(firsts) == 4 and all("velocity.0" in n for n in firsts), firsts
    info = quantize_shower_graph(float_graph, tmp_path / "q.onnx", calibration=256, keep_first_float=True)
    assert sorted(info["nodes"]) == sorted(set(nodes) - set(firsts))


def test_bad_inputs_are_one_clear_error_and_write_nothing(float_graph, tmp_path, capsys):
    from lhcml.export.fastcalo_int8 import quantize_shower_graph

    out = tmp_path / "x.onnx"
    q = tmp_path / "q.onnx"
    quantize_shower_graph(float_graph, q, calibration=256)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    plain = tmp_path / "plain.onnx"  # a valid ONNX graph without the shower metadata
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(plain), dynamo=False)
    cases = [
        ([str(q)], "already quantised"),
        ([str(garbage)], "not a loadable ONNX model"),
        ([str(tmp_path / "missing.onnx")], "does not exist"),
        ([str(plain)], "lacks the shower-graph metadata"),
        ([str(float_graph), "--method", "entropy"], "unknown calibration method"),
        ([str(float_graph), "--calibration", "0"], "at least one calibration row"),
    ]
    for args, message in cases:
        code, _, err = _cli(["fastcalo", "quantize", *args, "-o", str(out), "--no-timing"], capsys)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    code, _, err = _cli(["fastcalo", "quantize", str(float_graph), "-o", str(q), "--no-timing"], capsys)
    assert code == 2 and "exists" in err


def test_a_calibration_that_is_not_finite_is_one_clear_error(tmp_path):
    """quantize_graph on a graph whose dense layer reads exp(x): 1e3 overflows, the percentile calibrator cannot
    histogram it, and the error says so (no traceback of onnxruntime's, no file)."""
    from lhcml.errors import ConfigError
    from lhcml.export.quantize import quantize_graph

    class ExpLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(16, 16)

        def forward(self, x):
            return self.lin(torch.exp(x))

    src, dst = tmp_path / "exp.onnx", tmp_path / "exp_int8.onnx"
    torch.onnx.export(ExpLinear(), (torch.zeros(2, 16),), str(src), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})  # fmt: skip
    feed = {"x": np.full((8, 16), 1e3, np.float32)}
    with pytest.raises(ConfigError, match="not finite over the calibration sample"):
        quantize_graph(src, dst, [feed], method="percentile")
    assert not dst.exists()


def test_a_large_layer_energy_change_is_flagged(float_graph, tmp_path, capsys, monkeypatch):
    """The check's verdict reaches the user: with the warning threshold below the small network's change, the command
    still writes the file but says on stderr that the layer energies moved (the m2 chain's case)."""
    import lhcml.export.fastcalo_int8 as fi

    out = tmp_path / "flagged.onnx"
    code, _, err = _cli(["fastcalo", "quantize", str(float_graph), "-o", str(out), "--calibration", "256",
                         "--no-timing"], capsys)  # fmt: skip
    assert code in (0, None) and "warning" not in err
    monkeypatch.setattr(fi, "WARN_LAYER_DEV", 0.0)
    code, _, err = _cli(["fastcalo", "quantize", str(float_graph), "-o", str(out), "--calibration", "256",
                         "--no-timing", "--force"], capsys)  # fmt: skip
    assert code in (0, None) and "warning: int8 moves this generator's layer energies" in err, err
    assert out.exists()
