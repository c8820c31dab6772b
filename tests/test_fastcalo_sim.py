"""``lhcml simulate gamma_jet --calo fast:MODEL.onnx`` (issue 15): generated showers in the simulation.

Two generators: a *template* graph built here with ``onnx.helper`` (showers = E x the mean
voxel fractions of detailed photons x a log-normal factor from the noise: the right energy
response and shape on average, for the physics checks) and a tiny untrained ``fastcalo_vae``
exported by :func:`lhcml.export.fastcalo.export_generator`.
"""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.errors import ConfigError

N_EVENTS = 60


def _template_onnx(path, binning, template, e_range=(1.0, 260.0), noise_dim=4):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    v = binning.n_voxels
    w = np.zeros((noise_dim, 1), np.float32)
    w[0, 0] = 0.05  # 5 % log-normal spread of the shower's energy
    nodes = [
        helper.make_node("MatMul", ["noise", "w"], ["z"]),
        helper.make_node("Exp", ["z"], ["scale"]),
        helper.make_node("Mul", ["incident_energy", "scale"], ["e_scaled"]),
        helper.make_node("Mul", ["e_scaled", "template"], ["raw"]),
        helper.make_node("Relu", ["raw"], ["showers"]),
    ]
    graph = helper.make_graph(
        nodes, "template_generator",
        [helper.make_tensor_value_info("incident_energy", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", noise_dim])],
        [helper.make_tensor_value_info("showers", TensorProto.FLOAT, ["N", v])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(template.astype(np.float32)[None, :], "template")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"model_name": "template", "noise_dim": str(noise_dim), "n_voxels": str(v), "e_min_gev": repr(e_range[0]),
            "e_max_gev": repr(e_range[1]), "particle": "photon", "binning_sha256": binning.sha256,
            "binning_xml": binning.to_xml()}  # fmt: skip
    for k, val in meta.items():
        model.metadata_props.add(key=k, value=val)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def template_model(tmp_path_factory):
    from lhcml.data.calochallenge import parse_binning
    from lhcml.sim.fastcalo import detailed_showers, voxel_binning

    b = voxel_binning("photon")
    b = parse_binning(b.to_xml())  # sha256 of exactly the text stored in the model
    out = detailed_showers("photon", np.full(200, 50.0), 3, binning=b, images=False)
    template = (out["showers"] / out["incident_energies"]).mean(axis=0)  # mean voxel fractions
    return _template_onnx(tmp_path_factory.mktemp("fast") / "template.onnx", b, template), b, template


def test_fast_calo_gives_the_same_fields_and_sensible_energies(template_model):
    from lhcml.sim.photons import simulate_photon_events

    path, _, template = template_model
    det = simulate_photon_events("gamma_jet", N_EVENTS, 0.0, 11, min_pt_gev=10.0)
    fast = simulate_photon_events("gamma_jet", N_EVENTS, 0.0, 11, min_pt_gev=10.0, calo=f"fast:{path}")
    assert set(fast) == set(det)
    for k in det:
        assert fast[k].dtype == det[k].dtype and fast[k].shape[1:] == det[k].shape[1:], k
    for sample in (det, fast):
        ph = sample["photons"]
        prompt = (ph["isPromptPhoton"] == 1) & (ph["truthE"] > 20e3) & ~ph["converted"]
        assert prompt.sum() >= 5
        r = ph["energy"][prompt] / ph["truthE"][prompt]
        assert 0.9 < np.median(r) < 1.05, np.median(r)
    # the generated showers are the template (3 x 7 cluster core / window sum of the template):
    ph = fast["photons"]
    prompt = (ph["isPromptPhoton"] == 1) & (ph["truthE"] > 20e3) & (ph["truthE"] < 260e3) & ~ph["converted"]
    assert np.median(ph["Reta"][prompt]) == pytest.approx(np.median(det["photons"]["Reta"][
        (det["photons"]["isPromptPhoton"] == 1) & ~det["photons"]["converted"]]), abs=0.03)
    # the template has no shower-to-shower shape fluctuation: Reta spreads far less than detailed showers'
    assert np.std(ph["Reta"][prompt]) < np.std(det["photons"]["Reta"][det["photons"]["isPromptPhoton"] == 1])


def test_errors_are_one_clear_message(template_model, tmp_path, capsys):
    from lhcml.cli import main
    from lhcml.data.calochallenge import write_binning
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning

    path, b, _ = template_model
    model = OnnxShowerModel(str(path))
    with pytest.raises(ConfigError, match="outside the trained range 1-260 GeV"):
        model.generate(np.array([50.0, 400.0]), np.random.default_rng(0))
    other = write_binning(voxel_binning("photon", windows={"strips": (57, 3), "middle": (11, 7), "back": (5, 11),
                                                            "had1": (3, 3), "had2": (3, 3)}), tmp_path / "other.xml")
    with pytest.raises(ConfigError, match="binning mismatch"):
        OnnxShowerModel(str(path), other)
    with pytest.raises(ConfigError, match="does not exist"):
        OnnxShowerModel(str(tmp_path / "missing.onnx"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "gamma_jet", "-n", "5", "--mu", "0", "-o", str(tmp_path / "run"),
              "--calo", f"fast:{path}:{tmp_path / 'other.xml'}", "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "binning mismatch" in err and "Traceback" not in err
    assert not list((tmp_path / "run").glob("*.h5")) if (tmp_path / "run").exists() else True
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "ttbar", "-n", "5", "--mu", "0", "-o", str(tmp_path / "run2"), "--calo", f"fast:{path}"])
    assert exc.value.code == 2 and "photon processes only" in capsys.readouterr().err


def test_runner_shards_record_the_fast_calo(template_model, tmp_path):
    from lhcml.data.h5 import read_attrs
    from lhcml.sim.runner import read_manifest, run_simulation

    path, _, _ = template_model
    files = run_simulation("dijet_photon", 20, 0.0, 3, tmp_path / "run", events_per_shard=20, progress=False,
                           calo=f"fast:{path}")  # fmt: skip
    assert read_attrs(files[0])["calo"] == f"fast:{path}"
    assert read_manifest(tmp_path / "run")["calo"] == f"fast:{path}"


def test_export_generator_model_runs_in_the_simulation(tmp_path):
    """A tiny (untrained) VAE through the exporter: the metadata and graph the simulation reads."""
    import torch

    from lhcml.export.fastcalo import export_generator
    from lhcml.models.registry import get_model_class
    from lhcml.sim.fastcalo import FastCalo, voxel_binning

    torch.manual_seed(0)
    b = voxel_binning("photon")
    model = get_model_class("fastcalo_vae")(n_voxels=b.n_voxels, layer_sizes=b.layer_sizes, e_min_gev=1.0,
                                       e_max_gev=260.0, latent_dim=4, hidden=(16,))  # fmt: skip
    export_generator(model, tmp_path / "vae.onnx", binning_file_sha256=b.sha256, particle="photon",
                     binning_xml=b.to_xml(), timing=False, n_check=8)  # fmt: skip
    fast = FastCalo.from_option(f"fast:{tmp_path / 'vae.onnx'}")
    showers = fast.models[22].generate(np.array([1.0, 65.0, 260.0]), np.random.default_rng(1))
    assert showers.shape == (3, b.n_voxels) and (showers >= 0).all() and np.isfinite(showers).all()


def test_generate_like_writes_showers_at_the_reference_energies(template_model, tmp_path):
    from lhcml.data.calochallenge import read_showers, write_showers
    from lhcml.tasks.fastcalo.dataset import generate_like

    path, b, template = template_model
    e = np.array([2.0, 65.0, 200.0])
    write_showers(tmp_path / "ref.h5", e, np.zeros((3, b.n_voxels)), b)
    res = generate_like(path, tmp_path / "ref.h5", tmp_path / "gen.h5")
    g = read_showers(tmp_path / "gen.h5", b)
    assert res["n"] == 3 and np.allclose(g.energies, e)
    ratio = g.showers.sum(1) / (e * template.sum())
    assert np.all(np.abs(np.log(ratio)) < 0.3)  # the template's energy, times exp(0.05 x noise)
