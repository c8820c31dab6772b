"""The lean ONNX sampling graph of flow-matching shower generators (lhcml.export.fastcalo_lean, issue 15).

The lean graph must compute the function of ``model.sample`` (the PyTorch sampler): the export
asserts onnxruntime's agreement with it, and the tests check it on the real photon binning
(5 layers, 321 voxels, the strips 57 x 3 generated around their maximum) for the shipped
configuration (one Euler step, log voxels, |η| and φ conditions with their cell phases) and for
the other branches (midpoint steps, logit voxels, energy-dependent standardisation, energy only).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lhcml.errors import ConfigError

SHIPPED = dict(hidden=32, depth=3, steps=1, solver="euler", u0_max=2.0, voxel_space="log", threshold_kev=1000.0,
               align_max_shift=4, align_n_phi=3, eta_range=[0.0, 1.37], eta_cells=[0.025, 0.05, 0.003125],
               phi_cells=[0.0245436926, 0.0981747704])  # fmt: skip
OTHER = dict(hidden=24, depth=2, steps=3, solver="midpoint", u0_max=2.0, voxel_space="logit", threshold_kev=1000.0,
             energy_standardisation=True)  # fmt: skip


@pytest.fixture(scope="module")
def photons():
    from lhcml.sim.fastcalo import detailed_showers, voxel_binning

    b = voxel_binning("photon")
    e = np.exp(np.random.default_rng(0).uniform(np.log(2.0), np.log(200.0), 150))
    out = detailed_showers("photon", e, 4, binning=b, images=False)
    return b, torch.from_numpy(out["incident_energies"].reshape(-1).astype(np.float32)), torch.from_numpy(out["showers"].astype(np.float32))


def _model(photons, init, seed=0):
    from lhcml.models.fastcalo.fm import CaloFlowMatching

    b, e, x = photons
    torch.manual_seed(seed)
    m = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, **init)
    m.prepare(e, x)
    with torch.no_grad():  # a velocity of a trained model's size: the state moves away from the noise
        for p in m.velocity.parameters():
            p.mul_(3.0)
    return m.eval()


def _wide_where(model: onnx.ModelProto) -> int:
    """Where nodes whose output is wider than one column (a whole layer of voxels)."""
    g = onnx.shape_inference.infer_shapes(model).graph
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(g.value_info) + list(g.output)}  # fmt: skip
    return sum(1 for n in g.node if n.op_type == "Where" and (dims.get(n.output[0]) or [0, None])[-1] != 1)


@pytest.mark.parametrize("init", [SHIPPED, OTHER], ids=["one_step_eta_phi_aligned", "midpoint_logit_energy_std"])
def test_lean_graph_is_the_pytorch_sampler(photons, init, tmp_path):
    from lhcml.export.fastcalo import _wrapper, check_inputs, export_generator
    from lhcml.export.fastcalo_lean import lean_graph

    b = photons[0]
    m = _model(photons, init)
    inputs = [torch.from_numpy(a) for a in check_inputs(m, 3000, 1)]
    with torch.no_grad():
        ref = _wrapper(m)(*inputs)
        got = lean_graph(m)(*inputs)
        state = m.integrate(inputs[0].reshape(-1), inputs[-1], *(a.reshape(-1) for a in inputs[1:-1]))
    e = inputs[0]
    assert float(((got - ref).abs() / e).max()) < 1e-5
    # the branches the check has to exercise: voxels under the threshold, and (aligned) shifted strips
    assert 0.05 < float((ref == 0).float().mean()) < 0.95
    if init.get("align_max_shift"):
        assert float((torch.round(state[:, -1]) != 0).float().mean()) > 0.3
    # the export asserts onnxruntime against model.sample (1e-4 x E_inc) for both graphs
    kw = dict(binning_file_sha256=b.sha256, particle="photon", binning_xml=b.to_xml(), timing=False, n_check=512,
              atol=1e-4)  # fmt: skip
    export_generator(m, tmp_path / "traced.onnx", **kw)
    export_generator(m, tmp_path / "lean.onnx", lean=True, **kw)
    lean = onnx.load(str(tmp_path / "lean.onnx"))
    traced = onnx.load(str(tmp_path / "traced.onnx"))
    assert {p.key: p.value for p in lean.metadata_props}["graph"] == "lean"
    assert [i.name for i in lean.graph.input] == [i.name for i in traced.graph.input]
    # what made the traced graph slow is gone: Where over whole layers, Expand of the strip indices
    assert _wide_where(traced) >= 2
    assert not {"Where", "Expand"} & {n.op_type for n in lean.graph.node}
    # the two graphs in onnxruntime, on the same inputs, and each layer's energy kept
    feeds = {i.name: a.numpy() for i, a in zip(traced.graph.input, inputs, strict=True)}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    out = {k: ort.InferenceSession(str(tmp_path / f"{k}.onnx"), so, providers=["CPUExecutionProvider"])
           .run(None, feeds)[0] for k in ("lean", "traced")}  # fmt: skip
    assert float(np.max(np.abs(out["lean"] - out["traced"]) / feeds["incident_energy"])) < 1e-4
    # the simulation's fast path (--calo fast:MODEL.onnx) runs the lean file as the traced one
    from lhcml.sim.fastcalo import OnnxShowerModel

    e_sim = np.array([2.0, 65.0, 250.0])
    cond = {"eta": np.array([0.1, 0.7, 1.3]) if m.conditions_on_eta else None,
            "phi": np.array([-3.0, 0.2, 2.9]) if m.conditions_on_phi else None}  # fmt: skip
    sim = {k: OnnxShowerModel(str(tmp_path / f"{k}.onnx")).generate(e_sim, np.random.default_rng(4), **cond)
           for k in ("lean", "traced")}  # fmt: skip
    assert np.all(np.abs(sim["lean"] - sim["traced"]).max(1) <= 1e-4 * e_sim)
    e_inc = feeds["incident_energy"][:, 0]
    for sl in b.layer_slices:  # each layer's energy that of the sampler (to 1e-5 of E_inc: float32 round-off)
        assert np.all(np.abs(out["lean"][:, sl].sum(1) - ref[:, sl].sum(1).numpy()) <= 1e-5 * e_inc)


def test_lean_graph_refuses_other_generators(photons, tmp_path):
    from lhcml.export.fastcalo import export_generator
    from lhcml.models.registry import get_model_class

    b = photons[0]
    vae = get_model_class("fastcalo_vae")(n_voxels=b.n_voxels, layer_sizes=b.layer_sizes, e_min_gev=1.0,
                                          e_max_gev=260.0, latent_dim=4, hidden=(16,))  # fmt: skip
    with pytest.raises(ConfigError, match="lean sampling graph is built for flow-matching generators"):
        export_generator(vae, tmp_path / "vae.onnx", binning_file_sha256=b.sha256, particle="photon", timing=False,
                         lean=True)  # fmt: skip
    assert not (tmp_path / "vae.onnx").exists()


def test_agreement_exempts_threshold_flips_only():
    """The export check's comparison: a voxel one runtime keeps at the threshold and the other
    drops renormalises its layer (same layer energy) — exempt; other differences are not."""
    from lhcml.export.fastcalo import agreement

    layers, thr = [3, 2], 1e-3
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.01, 0.02, (400, 5)).astype(np.float32)
    e = np.full(400, 10.0)
    got = ref.copy()
    # shower 7: layer 0 of ref keeps a third voxel that got drops; each keeps the layer's energy
    ref[7, :3] = [0.012, 0.012, 0.0011]
    got[7, :3] = [0.01255, 0.01255, 0.0]
    assert agreement(got, ref, e, thr, layers, 1e-4) == (0.0, 1)
    assert agreement(got, ref, e, 0.0, layers, 1e-4)[0] > 1e-4  # no threshold: a real difference
    # a layer whose energy differs is not a flip
    bad = got.copy()
    bad[9, 3:] = [0.0, ref[9, 3]]
    assert agreement(bad, ref, e, thr, layers, 1e-4)[0] > 1e-4
    # nor are flips in more than 1 % of the (shower, layer) pairs: a wrong threshold, not round-off
    many = got.copy()
    for i in range(20, 40):
        ref_i = ref[i, :3].sum()
        many[i, :3] = [ref_i / 2, ref_i / 2, 0.0]
    diff, exempt = agreement(many, ref, e, thr, layers, 1e-4)
    assert diff > 1e-4 and exempt == 0


def test_export_check_knows_a_flow_matching_models_threshold(photons, tmp_path, monkeypatch):
    """The threshold of a flow-matching model sits in its variables (model.vars): the check must use it."""
    import lhcml.export.fastcalo as fc

    seen = []
    real = fc.agreement
    monkeypatch.setattr(fc, "agreement", lambda *a, **k: seen.append(a[3]) or real(*a, **k))
    m = _model(photons, SHIPPED)
    fc.export_generator(m, tmp_path / "m.onnx", binning_file_sha256=photons[0].sha256, particle="photon",
                        timing=False, n_check=64, atol=1e-4, lean=True)  # fmt: skip
    assert seen == [pytest.approx(1e-3)]


def test_cli_export_lean_writes_the_lean_graph_and_refuses_other_kinds(tmp_path, capsys):
    """`lhcml export CKPT OUT --lean`: a flow-matching checkpoint gets the lean graph (metadata
    ``graph: lean``), which generates what the traced export generates; a model of another kind
    (PAED weights) gets one message, exit 2, and no file."""
    import yaml

    from lhcml.cli import main
    from lhcml.export import read_metadata
    from lhcml.models.fastcalo.fm import CaloFlowMatching
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning

    b = voxel_binning("photon")
    init = dict(n_voxels=b.n_voxels, layer_sizes=list(b.layer_sizes), e_min_gev=1.0, e_max_gev=260.0, hidden=16,
                depth=1, steps=2)  # fmt: skip
    torch.manual_seed(0)
    m = CaloFlowMatching(**init)
    m.prepare(torch.full((8,), 10.0), torch.rand(8, b.n_voxels) * (10.0 / b.n_voxels))
    meta = {"format_version": 1, "kind": "fastcalo", "model_name": "fastcalo_fm", "model_init_yaml": yaml.safe_dump(init),
            "particle": "photon", "binning_sha256": b.sha256, "binning_xml": b.to_xml(),
            "config_yaml": yaml.safe_dump({"model": {"name": "fastcalo_fm", **init}})}  # fmt: skip
    ckpt = tmp_path / "fm.ckpt"
    torch.save({"lhcml": meta, "state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}}, ckpt)
    for name, extra in (("lean", ["--lean"]), ("traced", [])):
        with pytest.raises(SystemExit) as exc:
            main(["export", str(ckpt), str(tmp_path / f"{name}.onnx"), *extra])
        assert exc.value.code in (0, None), capsys.readouterr().err
    assert read_metadata(tmp_path / "lean.onnx").get("graph") == "lean"
    assert read_metadata(tmp_path / "traced.onnx").get("graph") != "lean"
    e = np.array([5.0, 65.0, 200.0])
    out = {k: OnnxShowerModel(str(tmp_path / f"{k}.onnx")).generate(e, np.random.default_rng(7)) for k in ("lean", "traced")}
    assert np.all(np.abs(out["lean"] - out["traced"]).max(1) <= 1e-4 * e)
    paed = tmp_path / "paed.pt"
    paed.write_bytes(b"")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["export", str(paed), str(tmp_path / "paed.onnx"), "--lean"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--lean applies to flow-matching shower generators" in err and "Traceback" not in err
    assert not (tmp_path / "paed.onnx").exists()
