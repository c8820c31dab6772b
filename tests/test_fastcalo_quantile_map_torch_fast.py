"""The cheaper ONNX formulation of the quantile correction's torch module (issue 15, h27b): every table lookup a
``torch.gather`` along one row (ONNX GatherElements instead of Gather, which onnxruntime runs several times slower per
element), each layer's value spread over its cells by Expand + Concat instead of an index gather.

* on a fitted five-pass chain like the simulation's generator's (plain with |eta| nodes -> layer_energy ->
  eta_phase on one layer -> shower_width -> the layer-energy pass) the module, in torch and as an exported ONNX graph
  run by onnxruntime, is NumPy's map (float32 rounding), including energies between nodes, |eta| outside the nodes
  and empty showers; the ONNX graph gives the torch module's showers;
* the exported chain has no Gather over the (N, V) cells left (the formulation before commit f7ec7fa had dozens,
  and gave bit-identical showers: docs/benchmarks/fastcalo.md, twenty-sixth version);
* the cheaper lookups of the thirty-first version (a clamp-free search for a power-of-two number of levels that keeps
  its last look, the level index in closed form, arithmetic instead of Where with a per-cell condition) give the
  general searches' showers, and the exported graph has no per-cell Where left; 16 and 20 levels both give NumPy's map.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lhcml.models.fastcalo.quantile_map import QuantileCorrection

SIZES = [3, 6, 2]
GEOM = dict(cell_deta=[0.003, 0.025, 0.05], cell_neta=[3, 3, 1])


def _showers(rng, e, spread):
    """``(N, 11)`` GeV: per layer a share of ``0.95 E`` (``N(0.3, .05)``, the rest, a log-normal ~0.03), inside it
    Dirichlet shares with ``spread``; about 15 % of the cells emptied."""
    n = len(e)
    f0 = np.clip(rng.normal(0.3, 0.05, n), 0.05, 0.8)
    f2 = 0.03 * np.exp(rng.normal(0.0, 0.5, n))
    out = np.empty((n, 11))
    for (a, b), f in zip(((0, 3), (3, 9), (9, 11)), (f0, 1.0 - f0 - f2, f2), strict=True):
        out[:, a:b] = rng.dirichlet(np.full(b - a, spread), n) * f[:, None]
    out[rng.random(out.shape) < 0.15] = 0.0
    return (out * 0.95 * e[:, None]).astype(np.float32)


def _chain(seed: int = 81) -> QuantileCorrection:
    rng = np.random.default_rng(seed)
    e = np.repeat([10.0, 30.0, 100.0], 1500)
    eta = rng.uniform(0.0, 1.3, len(e))
    gen, ref = _showers(rng, e, 0.7), _showers(rng, e, 1.5)
    kw = dict(gen_eta=eta, ref_eta=eta)
    c = QuantileCorrection.fit(gen, e, ref, e, SIZES, eta_bins=2, **kw)
    c = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="layer_energy", after=c, eta_bins=2, **kw)
    c = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="eta_phase", condition_bins=4, condition_layers=[1],
                               after=c, eta_bins=2, **kw, **GEOM)  # fmt: skip
    c = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="shower_width", after=c, eta_bins=2, **kw, **GEOM)
    c = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="layers", after=c, eta_bins=2, **kw)
    assert [(p.level, p.condition) for p in c.chain()] == [
        ("cells", None), ("cells", "layer_energy"), ("cells", "eta_phase"), ("cells", "shower_width"), ("layers", None)]
    return c


class _Chain(torch.nn.Module):
    def __init__(self, modules):
        super().__init__()
        self.ms = torch.nn.ModuleList(modules)

    def forward(self, s, e, eta):
        for m in self.ms:
            s = m(s, e, eta)
        return s


def _inputs(seed: int = 82, n: int = 3000):
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(5.0), np.log(150.0), n))  # between and beyond the nodes
    e[:3] = [10.0, 30.0, 100.0]  # on the nodes
    eta = rng.uniform(0.0, 1.4, n)
    x = _showers(rng, e, 1.0)
    x[:5] = 0.0  # empty showers
    return (torch.as_tensor(x), torch.as_tensor(e, dtype=torch.float32), torch.as_tensor(eta, dtype=torch.float32))


@pytest.fixture(scope="module")
def chain():
    return _chain()


def test_the_module_is_numpys_map_in_torch(chain):
    x, e, eta = _inputs()
    with torch.no_grad():
        got = chain.torch_module()(x, e, eta)
    assert (got - x).abs().max() > 1e-2 * e.min()  # the chain changes something
    want_np = chain.apply(x.numpy(), e.numpy(), eta.numpy())
    assert np.abs(got.numpy() - want_np).max() / e.min().item() < 5e-4


def _export(module, path, x, e, eta):
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = module

        def forward(self, s, en, et):
            return self.m(s, en, et)

    torch.onnx.export(Wrap().eval(), (x[:2], e[:2], eta[:2]), str(path), input_names=["showers", "energy", "eta"],
                      output_names=["out"], opset_version=17, dynamo=False, do_constant_folding=True,
                      dynamic_axes={n: {0: "batch"} for n in ("showers", "energy", "eta", "out")})  # fmt: skip
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {"showers": x.numpy(), "energy": e.numpy(), "eta": eta.numpy()}
    return onnx.load(str(path)), sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})[0]


def test_the_onnx_graph_is_the_module_without_cell_gathers(chain, tmp_path):
    x, e, eta = _inputs(83)
    module = chain.torch_module()
    proto, got = _export(module, tmp_path / "new.onnx", x, e, eta)
    with torch.no_grad():
        want = module(x, e, eta).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(e.max()))
    want_np = chain.apply(x.numpy(), e.numpy(), eta.numpy())
    assert np.abs(got - want_np).max() / e.min().item() < 5e-4
    assert _n_ops(proto, "GatherElements") > 20  # every table lookup one row's GatherElements
    assert _cell_gathers(proto) == 0


def _n_ops(proto, op):
    return sum(n.op_type == op for n in proto.graph.node)


def _cell_gathers(proto) -> int:
    """Gathers whose index has the cells' axis (V = 11; the layer pass's L = 3 is no cell axis)."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.value_info}
    return sum(n.op_type == "Gather" and sum(SIZES) in shapes.get(n.input[1], []) for n in proto.graph.node)


def _cell_wheres(proto) -> int:
    """Where nodes whose condition has the cells' axis (one condition per cell: onnxruntime's slow path)."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.value_info}
    return sum(n.op_type == "Where" and shapes.get(n.input[0], [])[-1:] == [sum(SIZES)] for n in proto.graph.node)


def _lookups(module, fast: bool):
    """Switch every cell map of ``module`` to the cheap lookups (``fast``) or to the general binary searches."""
    n = 0
    for m in module.modules():
        if hasattr(m, "pow2"):
            m.pow2 = m.cosine = fast
            n += 1
    return n


def test_the_cheap_lookups_give_the_general_searches_showers(chain, tmp_path):
    """The clamp-free power-of-two search that keeps its last look, the closed-form level index and the arithmetic
    instead of per-cell Where (thirty-first version) are the same map: on 3 000 showers between, on and beyond the nodes (and empty
    ones) every cell equals the general searches' to float32 rounding, no cell is emptied or filled differently; the
    exported graph has no Where with a per-cell condition left (the general formulation has dozens)."""
    x, e, eta = _inputs(84)
    module = chain.torch_module()
    assert _lookups(module, False) == 5  # the four cell passes and the layer pass's map (L = 3 "cells")
    with torch.no_grad():
        general = module(x, e, eta).numpy()
    proto_general, _ = _export(module, tmp_path / "general.onnx", x, e, eta)
    _lookups(module, True)
    with torch.no_grad():
        cheap = module(x, e, eta).numpy()
    proto_cheap, got = _export(module, tmp_path / "cheap.onnx", x, e, eta)
    assert np.isfinite(cheap).all()
    np.testing.assert_array_equal(cheap == 0, general == 0)
    np.testing.assert_allclose(cheap, general, rtol=1e-5, atol=1e-7 * float(e.max()))
    np.testing.assert_allclose(got, cheap, rtol=1e-5, atol=1e-7 * float(e.max()))
    assert _cell_wheres(proto_general) > 20
    assert _cell_wheres(proto_cheap) == 0


@pytest.mark.parametrize("n_quantiles", [16, 20])
def test_the_module_is_numpys_map_for_any_number_of_levels(n_quantiles):
    """A power-of-two number of levels takes the cheap search, another the general one: both are NumPy's map."""
    rng = np.random.default_rng(85)
    e = np.repeat([10.0, 30.0, 100.0], 1500)
    gen, ref = _showers(rng, e, 0.7), _showers(rng, e, 1.5)
    c = QuantileCorrection.fit(gen, e, ref, e, SIZES, n_quantiles=n_quantiles)
    c = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="layer_energy", after=c, n_quantiles=n_quantiles)
    x, en, eta = _inputs(86)
    module = c.torch_module()
    assert [m.pow2 for m in module.modules() if hasattr(m, "pow2")] == [n_quantiles == 16] * 2
    with torch.no_grad():
        got = module(x, en, eta).numpy()
    want = c.apply(x.numpy(), en.numpy())
    assert np.abs(got - x.numpy()).max() > 1e-2 * en.min().item()
    assert np.abs(got - want).max() / en.min().item() < 5e-4
