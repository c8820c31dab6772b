"""The CaloFlow-like normalising flow and the flow-matching generator (issue 15).

Each model is trained for a few seconds on a synthetic two-energy shower sample (2 and 100 GeV)
whose physics depends on the energy the way real showers do: a deeper longitudinal profile and
more leakage out of the back (lower response) at high energy, a resolution of 10 %/sqrt(E).
The tests check that the models *learn* that dependence (the untrained model, whose
standardisation is fitted to the pooled sample, cannot), that the flow's exact held-out
likelihood improves, the flow's x -> z -> x round trip, determinism given the noise, energy
conservation (each layer's voxels sum to the generated layer energy, to float precision; with a
readout threshold, unless the whole layer fell below it) and
ONNX == PyTorch through :func:`lhcml.export.fastcalo.export_generator`. The flow-matching
variant of ``configs/fastcalo/fm_strips.yaml`` (voxels in log space with explicit zeros, the first
layer generated around its maximum) gets the same checks plus its representation's round trip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lhcml.errors import ConfigError, SchemaError
from lhcml.models.fastcalo.flow import CaloFlow, CaloFlowVariables
from lhcml.models.fastcalo.fm import CaloFlowMatching, roll_strips, strip_max_shift

LAYERS = [3, 8, 8, 2]
V = sum(LAYERS)
ENERGIES = (2.0, 100.0)
#: synthetic response E_dep / E_inc: leakage grows with energy (our toy numbers)
RESPONSE = {2.0: 0.97, 100.0: 0.90}


def synthetic_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` showers at 2 and 100 GeV (half each): energy-dependent longitudinal profile,
    response and resolution; lateral profiles peaked at each layer's central voxel."""
    rng = np.random.default_rng(seed)
    e = np.repeat(np.asarray(ENERGIES, np.float32), n // 2)
    resp = np.array([RESPONSE[float(x)] for x in e])
    e_dep = e * np.clip(resp + 0.1 / np.sqrt(e) * rng.standard_normal(len(e)), 0.05, 1.4)
    depth = np.log(e)[:, None] / np.log(100.0)  # 0 at 1 GeV, 1 at 100 GeV
    centre = np.array([0.0, 1.5, 1.0, -1.0])  # log-weights of the layers at low energy
    slope = np.array([-1.5, 0.0, 1.0, 1.5])  # ... shifted deeper with energy
    alpha = 30.0 * np.exp(centre + slope * depth)
    frac = np.stack([rng.dirichlet(a) for a in alpha])
    showers = []
    for k, size in enumerate(LAYERS):
        profile = np.exp(-np.abs(np.arange(size) - (size - 1) / 2))
        lat = rng.dirichlet(20 * profile / profile.sum() * size, size=len(e))
        showers.append(lat * (e_dep * frac[:, k])[:, None])
    return torch.from_numpy(e), torch.from_numpy(np.concatenate(showers, axis=1).astype(np.float32))


def train(model: torch.nn.Module, e: torch.Tensor, x: torch.Tensor, steps: int, lr: float, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model.prepare(e, x)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(e), (256,))
        loss = torch.stack(list(model.loss_terms(e[idx], x[idx], "model").values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def response_mismatch(model: torch.nn.Module, seed: int = 5) -> float:
    """Largest |mean generated response - data response| at the two energies, in units of the
    data's resolution (0.1/sqrt(E))."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for e0 in ENERGIES:
        e = torch.full((2000,), e0)
        r = (model.generate(e, generator=gen).sum(1) / e).mean().item()
        worst = max(worst, abs(r - RESPONSE[e0]) / (0.1 / np.sqrt(e0)))
    return worst


def profile_mismatch(model: torch.nn.Module, e_val: torch.Tensor, x_val: torch.Tensor, seed: int = 6) -> float:
    """Largest |mean generated - mean data| layer fraction of the deposited energy, over both energies."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for e0 in ENERGIES:
        sel = e_val == e0
        data = model.layer_energies(x_val[sel])
        fake = model.layer_energies(model.generate(e_val[sel], generator=gen))
        d = (data / data.sum(1, keepdim=True)).mean(0) - (fake / fake.sum(1, keepdim=True)).mean(0)
        worst = max(worst, d.abs().max().item())
    return worst


def small_flow() -> CaloFlow:
    torch.manual_seed(1)
    return CaloFlow(V, LAYERS, 1.0, 200.0, layer_transforms=3, layer_hidden=32, voxel_transforms=3, voxel_hidden=48)


def small_fm() -> CaloFlowMatching:
    torch.manual_seed(2)
    return CaloFlowMatching(V, LAYERS, 1.0, 200.0, hidden=128, depth=3, steps=8, solver="midpoint")


def small_fm_strips(**kw) -> CaloFlowMatching:
    """As ``configs/fastcalo/fm_strips.yaml``: log voxel space, first layer (3 x 1) aligned."""
    torch.manual_seed(2)
    return CaloFlowMatching(V, LAYERS, 1.0, 200.0, hidden=128, depth=3, steps=8, solver="midpoint",
                            voxel_space="log", align_max_shift=1, align_n_phi=1, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    e, x = synthetic_showers(4000, seed=11)
    ev, xv = synthetic_showers(2000, seed=12)
    return {"e": e, "x": x, "e_val": ev, "x_val": xv}


@pytest.fixture(scope="module")
def flow_pair(data):
    """(untrained but prepared, trained) flows and the held-out log-likelihood of each."""
    untrained = small_flow()
    untrained.prepare(data["e"], data["x"])
    untrained.eval()
    trained = small_flow()
    train(trained, data["e"], data["x"], steps=250, lr=5e-3)
    return untrained, trained


@pytest.fixture(scope="module")
def fm_pair(data):
    untrained = small_fm()
    untrained.prepare(data["e"], data["x"])
    untrained.eval()
    trained = small_fm()
    train(trained, data["e"], data["x"], steps=500, lr=2e-3)
    return untrained, trained


@pytest.fixture(scope="module")
def fm_strips_pair(data):
    untrained = small_fm_strips()
    untrained.prepare(data["e"], data["x"])
    untrained.eval()
    trained = small_fm_strips()
    train(trained, data["e"], data["x"], steps=500, lr=2e-3)
    return untrained, trained


@pytest.mark.parametrize("which", ["flow", "fm", "fm_strips"])
def test_model_learns_energy_dependence(which, data, request):
    untrained, trained = request.getfixturevalue(f"{which}_pair")
    r_before, r_after = response_mismatch(untrained), response_mismatch(trained)
    p_before = profile_mismatch(untrained, data["e_val"], data["x_val"])
    p_after = profile_mismatch(trained, data["e_val"], data["x_val"])
    # the total energy follows E_inc: mean response within one resolution unit at 2 and 100 GeV
    assert r_after < 1.0, (r_before, r_after)
    assert r_after < r_before / 2, (r_before, r_after)
    # the longitudinal profile follows E_inc: layer fractions within 0.03 (untrained: ~0.1 off)
    assert p_after < 0.03 and p_after < p_before / 2, (p_before, p_after)


def test_flow_heldout_likelihood_improves(flow_pair, data):
    untrained, trained = flow_pair
    torch.manual_seed(3)
    with torch.no_grad():
        before = sum(lp.mean().item() for lp in untrained.log_prob(data["e_val"], data["x_val"]))
        after = sum(lp.mean().item() for lp in trained.log_prob(data["e_val"], data["x_val"]))
    # exact log-likelihood of the 25 standardised variables, per shower
    assert after > before + 10.0, (before, after)


def test_flow_round_trip(flow_pair, data):
    _, flow = flow_pair
    e, x = data["e_val"][:500], flow.vars.dequantise(data["x_val"][:500])
    with torch.no_grad():
        x_u, x_v, e_layers = flow.vars.encode(e, x)
        z = flow.latent(e, x_u, x_v, e_layers)
        x_u2, x_v2, e_layers2 = flow.sample_variables(e, z)
        # and the other way: noise -> x -> z
        z0 = flow.draw_noise(500, torch.Generator().manual_seed(4))
        z1 = flow.latent(e, *flow.sample_variables(e, z0))
    torch.testing.assert_close(x_u2, x_u, atol=1e-4, rtol=0)
    torch.testing.assert_close(x_v2, x_v, atol=1e-4, rtol=0)
    torch.testing.assert_close(e_layers2, e_layers, atol=0, rtol=1e-4)
    torch.testing.assert_close(z1, z0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("which", ["flow", "fm", "fm_strips"])
def test_determinism_and_energy_conservation(which, request):
    _, model = request.getfixturevalue(f"{which}_pair")
    e = torch.tensor([1.5, 2.0, 30.0, 100.0, 190.0] * 40)
    noise = model.draw_noise(len(e), torch.Generator().manual_seed(7))
    with torch.no_grad():
        a, b = model.sample(e, noise), model.sample(e, noise.clone())
        c = model.sample(e, model.draw_noise(len(e), torch.Generator().manual_seed(8)))
        n_layers = model.n_layers
        if which == "flow":
            _, _, e_layers = model.sample_variables(e, noise)
        else:
            e_layers = model.vars.decode_layers(model.integrate(e, noise)[:, :n_layers], e)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert bool((a >= 0).all()) and bool(torch.isfinite(a).all())
    # stated tolerance: each layer's voxels sum to the generated layer energy to 1e-5 (relative)
    torch.testing.assert_close(model.layer_energies(a), e_layers, rtol=1e-5, atol=1e-6)
    # and no shower deposits more than u0_max x E_inc (the variables' bound)
    assert bool((a.sum(1) <= model.vars.u0_max * e * (1 + 1e-5)).all())
    # with the configs' 1 MeV readout threshold: no voxel in (0, 1 MeV); a layer keeps its
    # generated energy unless all its voxels fell below the threshold (then it reads 0)
    model.vars.threshold_gev = 1e-3
    try:
        with torch.no_grad():
            t = model.sample(e, noise)
    finally:
        model.vars.threshold_gev = 1e-6
    assert not bool(((t > 0) & (t < 1e-3)).any())
    lay = model.layer_energies(t)
    torch.testing.assert_close(torch.where(lay > 0, lay, e_layers), e_layers, rtol=1e-5, atol=1e-6)
    assert bool((e_layers[lay == 0] < 1e-3 * max(LAYERS)).all())


#: the shipped configs of this module's smoke test
CONFIGS = ("flow", "fm", "fm_strips", "fm_strips_eta")


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory) -> dict:
    """The shipped configs (``configs/fastcalo/{flow,fm,fm_strips,fm_strips_eta}.yaml``) trained for one epoch by ``lhcml
    train``'s function on the synthetic sample written in the CaloChallenge layout."""
    from lhcml.data.calochallenge import Binning, LayerBinning, write_binning, write_showers
    from lhcml.train.protocol import load_trainable_config

    d = tmp_path_factory.mktemp("fastcalo_flows")
    shapes = ((3, 1), (2, 4), (2, 4), (2, 1))  # (n_eta, n_phi) per layer: LAYERS voxels
    layers = tuple(LayerBinning(id=k + 1, kind="cells", name=f"l{k}", n_eta=ne, n_phi=nphi, deta=0.025,
                                dphi=0.0245) for k, (ne, nphi) in enumerate(shapes))  # fmt: skip
    binning = write_binning(Binning("photon", 22, layers), d / "binning.xml")
    for name, n, seed in (("train", 1000, 21), ("val", 400, 22)):
        e, x = synthetic_showers(n, seed)
        # each shower's |eta| (incident_eta) for fm_strips_eta; the energy-only configs ignore it
        eta = np.random.default_rng(seed).uniform(0.0, 1.37, n)
        write_showers(d / f"{name}.h5", e.numpy(), x.numpy(), binning, eta=eta)
    out = {"binning": binning, "val": d / "val.h5"}
    # the flow with fewer transforms than its config (2 + 2 instead of 6 + 4): tracing the
    # config's sampling graph for ONNX takes minutes (benchmarks/fastcalo.py exports it)
    # fm_strips: the synthetic first layer is 3 x 1 cells (lhcml's strips: 57 x 3, shift up to 4)
    smaller = {"flow": ["model.layer_transforms=2", "model.voxel_transforms=2"], "fm": [],
               "fm_strips": ["model.align_n_phi=1", "model.align_max_shift=1"],
               "fm_strips_eta": ["model.align_n_phi=1", "model.align_max_shift=1"]}  # fmt: skip
    for which in CONFIGS:
        trainer, cfg = load_trainable_config(f"configs/fastcalo/{which}.yaml", [
            f"data.train_files=[{d / 'train.h5'}]", f"data.val_files=[{d / 'val.h5'}]",
            f"data.binning={d / 'binning.xml'}", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            f"output_dir={d / which}", *smaller[which]])  # fmt: skip
        out[which] = trainer.fit(cfg)
    return out


@pytest.mark.parametrize("which", CONFIGS)
def test_config_train_sample_evaluate_export(which, config_runs, tmp_path):
    """Each shipped config: train (one epoch) -> sample -> evaluate (the CaloChallenge
    evaluation) -> export, with onnxruntime == PyTorch on energies over the trained range (and,
    for fm_strips_eta, |eta| over its range as the graph's 'eta' input)."""
    import onnxruntime as ort

    from lhcml.data.calochallenge import CaloSample, read_showers
    from lhcml.export.fastcalo import export_generator
    from lhcml.tasks.fastcalo.evaluate import evaluate_showers
    from lhcml.train.fastcalo import load_generator

    model, meta = load_generator(config_runs[which])
    assert meta["model_name"] == f"fastcalo_{which.split('_')[0]}" and bool(model.prepared)
    assert model.conditions_on_eta == (which == "fm_strips_eta")
    ref = read_showers(config_runs["val"], config_runs["binning"])
    eta = torch.from_numpy(ref.eta) if model.conditions_on_eta else None
    gen = model.generate(torch.from_numpy(ref.energies), generator=torch.Generator().manual_seed(1), eta=eta).numpy()
    res = evaluate_showers(ref, CaloSample(ref.energies, gen, ref.binning), ref.binning, None, n_runs=1,
                           epochs=2, levels=("high",), shower_shapes=False)  # fmt: skip
    assert 0.0 <= res["classifier"]["high"]["auc"]["mean"] <= 1.0 and np.isfinite(res["fpd"]["value"])
    path = tmp_path / f"{which}.onnx"
    # the flow inverts float32 spline transforms: agreement to its onnx_atol = 1e-4 x E_inc
    export_generator(model, path, binning_file_sha256=ref.binning.sha256, particle="photon", timing=False,
                     atol=getattr(model, "onnx_atol", 1e-5))  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    e = torch.tensor([1.5, 3.0, 50.0, 150.0] * 8)
    noise = model.draw_noise(len(e), torch.Generator().manual_seed(9))
    feed = {"incident_energy": e[:, None].numpy(), "noise": noise.numpy()}
    cond = ()
    if model.conditions_on_eta:
        cond = (torch.linspace(0.0, 1.37, len(e)),)
        feed["eta"] = cond[0][:, None].numpy()
    assert {i.name for i in sess.get_inputs()} == set(feed)
    (out,) = sess.run(None, feed)
    with torch.no_grad():
        ref_out = model.sample(e, noise, *cond).numpy()
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-4 * float(e.max()))


def sparse_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic showers with empty voxels (cells under 30 MeV emptied) and a few voxels in
    (0, 1 MeV), as real ones: the readout threshold matters."""
    e, x = synthetic_showers(n, seed)
    x = torch.where(x < 0.03, torch.zeros_like(x), x)
    g = torch.Generator().manual_seed(seed)
    tiny = (torch.rand(x.shape, generator=g) < 0.05) & (x == 0)
    return e, torch.where(tiny, 5e-4 * torch.rand(x.shape, generator=g), x)


@pytest.mark.parametrize("energy_standardisation", [False, True])
def test_strips_representation_round_trip(energy_standardisation):
    """fm_strips' representation (log voxel shares with explicit zeros, first layer rolled to its
    maximum) decodes detailed showers back exactly: voxels under the 1 MeV readout threshold read
    0, every other voxel its energy times the layer's renormalisation (the sub-threshold energy
    spread over the layer, as the generator's post-processing does), to 1e-4 relative."""
    e, x = sparse_showers(2000, seed=31)
    # the first layer's maximum off its centre voxel in a third of the showers each way
    x[:, :3] = torch.cat([x[:700, :3].roll(1, 1), x[700:1400, :3].roll(-1, 1), x[1400:, :3]])
    model = small_fm_strips(dequant_kev=0.0, threshold_kev=1000.0, energy_standardisation=energy_standardisation)
    model.prepare(e, x)
    with torch.no_grad():
        t = model.target(e, x)  # (N, L + V + 1): layer variables, voxels, shift
        nl, nv = model.n_layers, model.n_voxels
        shift = torch.round(t[:, -1]).long()
        e_layers = model.vars.decode_layers(t[:, :nl], e)
        back = model.unalign(model.vars.decode_voxels(t[:, nl:nl + nv], e_layers, e), shift)
    kept = torch.where(x >= 1e-3, x, torch.zeros_like(x))
    scale = model.layer_energies(x) / model.layer_energies(kept).clamp(min=1e-30)
    expect = kept * (scale @ model.vars.assign.T)
    assert bool(((x > 0) & (x < 1e-3)).any())  # the sample has sub-threshold voxels
    assert torch.equal(back > 0, expect > 0)
    torch.testing.assert_close(back, expect, rtol=1e-4, atol=1e-7)
    # the shift variable is the offset of the first layer's maximum from its centre voxel
    first = x[:, :LAYERS[0]]
    torch.testing.assert_close(shift, first.argmax(1) - 1)
    assert set(shift.tolist()) == {-1, 0, 1}  # all three positions occur in the sample


def test_strips_representation_round_trips_detailed_showers(tmp_path):
    """The same round trip on lhcml's detailed photons (57 x 3 strips, ``fm_strips.yaml``'s
    settings, with and without the energy-dependent standardisation): voxels >= 1 MeV back to 1e-4
    relative or 10 keV (1 % of the threshold; the float32 logit of a layer share near 1 costs
    ~1e-7 E_inc in a small layer) after the layer renormalisation, and the photon-ID strip shapes
    unchanged."""
    from lhcml.data.calochallenge import read_binning, read_showers
    from lhcml.tasks.fastcalo.dataset import shower_shapes, simulate_fastcalo

    paths = simulate_fastcalo(tmp_path, "photon", 96, "discrete", seed=5, showers_per_shard=96, progress=False)
    b = read_binning(paths["binning"])
    s = read_showers(paths["showers"], b)
    e, x = torch.from_numpy(s.energies.astype(np.float32)), torch.from_numpy(np.clip(s.showers, 0, None))
    kept = torch.where(x >= 1e-3, x, torch.zeros_like(x))
    for flag in (False, True):
        model = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, u0_max=2.0,
                                 dequant_kev=0.0, threshold_kev=1000.0, voxel_space="log",
                                 energy_standardisation=flag, align_max_shift=4, align_n_phi=3)  # fmt: skip
        model.prepare(e, x)
        with torch.no_grad():
            t = model.target(e, x)
            nl, nv = model.n_layers, model.n_voxels
            e_layers = model.vars.decode_layers(t[:, :nl], e)
            back = model.unalign(model.vars.decode_voxels(t[:, nl:nl + nv], e_layers, e), torch.round(t[:, -1]).long())
        expect = kept * ((model.layer_energies(x) / model.layer_energies(kept).clamp(min=1e-30)) @ model.vars.assign.T)
        assert torch.equal(back > 0, expect > 0)
        torch.testing.assert_close(back, expect, rtol=1e-4, atol=1e-5)
    # the strip shapes of the decoded showers are those of the thresholded detailed ones
    # (removing the < 1 MeV voxels itself moves ΔE by up to ~1 MeV)
    ref, out = shower_shapes(expect.numpy(), b), shower_shapes(back.numpy(), b)
    for k in ("Eratio", "DeltaE", "weta1", "wtots1", "f1"):
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-3, atol=1e-3, err_msg=k)


def test_strip_roll_exact_and_centres_the_maximum():
    g = torch.Generator().manual_seed(32)
    strips = torch.rand(500, 57, 3, generator=g) ** 8  # one dominant strip per shower
    strips[:10] = 0.0  # empty layers: no shift
    shift = strip_max_shift(strips, 4)
    rolled = roll_strips(strips, shift)
    assert torch.equal(roll_strips(rolled, -shift), strips)  # exact inverse
    assert bool((shift[:10] == 0).all()) and int(shift.abs().max()) <= 4
    inside = (strips.sum(2).argmax(1) - 28).abs() <= 4
    assert bool((rolled.sum(2)[inside].argmax(1) == 28).all())  # the maximum sits at the centre


def test_log_space_narrows_bimodal_voxels():
    """Why ``voxel_space: log``: a voxel empty in 30 % of the showers has a standardisation width
    of several e-folds in CaloFlow's logit variables (the empty ones sit at logit(1e-6)), far
    less with explicit zeros just under the threshold."""
    e, x = sparse_showers(4000, seed=33)
    g = torch.Generator().manual_seed(34)
    x[:, 5] = torch.where(torch.rand(len(x), generator=g) < 0.3, torch.zeros(len(x)), x[:, 5] + 0.01)
    widths: dict[str, float] = {}
    for space in ("logit", "log"):
        v = CaloFlowVariables(LAYERS, u0_max=1.5, threshold_kev=1000.0, voxel_space=space)
        v.fit(e, x, torch.Generator().manual_seed(0))
        widths[space] = float(v.v_std[5])
    # here 5.3 -> 3.7 e-folds; lhcml's strips 2-6 cells from the core: 3-4 -> ~2
    assert widths["log"] < 0.75 * widths["logit"], widths


def test_energy_standardisation_gives_unit_width_per_energy():
    """``energy_standardisation``: at each incident energy the voxel variables have about unit
    width (the global standardisation leaves them far narrower at one energy than over the sample)."""
    e, x = sparse_showers(4000, seed=35)
    widths = {}
    for flag in (False, True):
        v = CaloFlowVariables(LAYERS, u0_max=1.5, threshold_kev=1000.0, voxel_space="log", energy_standardisation=flag)
        v.fit(e, x, torch.Generator().manual_seed(0))
        _, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1))
        widths[flag] = torch.stack([x_v[e == e0].std(0) for e0 in ENERGIES])  # (2 energies, V)
    assert float(widths[False].min()) < 0.5  # some voxel is narrow at one energy
    # energy-dependent scales: unit width at each energy (up to the variance floor, 0.25)
    assert float((widths[True] - 1).abs().median()) < 0.1
    assert float(widths[True].min()) > 0.25 and float(widths[True].max()) < 4.0


def test_bad_inputs(data):
    flow = small_flow()
    with pytest.raises(ConfigError, match="prepare"):
        flow.loss_terms(data["e"][:8], data["x"][:8], "model")
    with pytest.raises(SchemaError, match="u0_max"):
        flow.prepare(data["e"][:8], data["x"][:8] * 2.0)
    with pytest.raises(SchemaError, match="showers"):
        flow.prepare(data["e"][:8], data["x"][:8, :5])
    with pytest.raises(ConfigError, match="solver"):
        CaloFlowMatching(V, LAYERS, 1.0, 200.0, solver="rk4")
    with pytest.raises(ConfigError, match="voxel_space"):
        CaloFlowMatching(V, LAYERS, 1.0, 200.0, voxel_space="sqrt")
    with pytest.raises(ConfigError, match="57 x 3"):  # 3 voxels are not n_eta x 3 strips with a +-4 search
        CaloFlowMatching(V, LAYERS, 1.0, 200.0, align_max_shift=4, align_n_phi=3)
    flow.prepare(data["e"], data["x"])
    with pytest.raises(ConfigError, match="trained range"):
        flow.generate(torch.tensor([500.0]))


def test_rqs_agrees_with_zuko():
    """The flows' spline (:func:`lhcml.models.fastcalo.flow._rqs_class`) is zuko's RQS."""
    from zuko.transforms import MonotonicRQSTransform

    from lhcml.models.fastcalo.flow import _rqs_class

    g = torch.Generator().manual_seed(10)
    # float64: zuko's own float32 inverse is only good to ~1e-3 in the steep bins of such splines
    w, h, d = (torch.randn(64, 5, k, generator=g, dtype=torch.float64) * 3 for k in (8, 8, 7))
    x = torch.randn(64, 5, generator=g, dtype=torch.float64) * 3
    ours, ref = _rqs_class()(w, h, d), MonotonicRQSTransform(w, h, d)
    y, ladj = ours.call_and_ladj(x)
    y_ref, ladj_ref = ref.call_and_ladj(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ladj, ladj_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.inv(y_ref), x, rtol=1e-8, atol=1e-8)
