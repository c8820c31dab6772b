"""CPU smoke test of every shipped configs/jets config: train 1 epoch -> predict -> ONNX export.

The heavy published sizes of ParticleNet and ParT are shrunk with ``--set``-style overrides
(the architecture code is the same); everything runs on a few hundred mock jets.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from _boosted_fixtures import _one_torch_thread  # noqa: F401

from lhcml.data.mock import make_mock_file
from lhcml.tasks.boosted.substructure import add_substructure_to_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "jets"
SHRINK = {
    "particlenet": ["model.k=4", "model.conv_params=[[16,16],[16,16]]", "model.fc_sizes=[16]"],
    "part": ["model.embed_dims=[16,16]", "model.pair_embed_dims=[8]", "model.num_heads=2",
             "model.num_layers=1", "model.num_cls_layers=1"],
    "pfn": ["model.phi_sizes=[32,32]", "model.f_sizes=[32]"],
}  # fmt: skip
TRAINED = ["bdt_substructure", "jet_image_cnn", "pfn", "efn", "particlenet", "part", "lola",
           "pfn_adv", "pfn_disco"]  # fmt: skip


@pytest.fixture(scope="session")
def jet_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("jets_smoke")
    tr = make_mock_file(d / "train.h5", n_jets=240, kind="boosted", seed=21)
    va = make_mock_file(d / "val.h5", n_jets=120, kind="boosted", seed=22)
    for f in (tr, va):
        add_substructure_to_file(f, progress=False)
    return tr, va


def _overrides(name: str, tr: Path, va: Path, out: Path) -> list[str]:
    base = name.split("_")[0] if name.split("_")[0] in SHRINK else name
    return [
        f"data.train_files=[{tr}]", f"data.val_files=[{va}]", f"output_dir={out}",
        # decorrelation configs are binary (adversary n_classes: 2); the others run multi-class
        "data.classes=[qcd,top]" if "_" in name and not name.startswith("bdt") else "data.classes=[qcd,top,W]",
        "data.batch_size=80", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
        "validation.fractions={qcd: 1.0}", "model.n_estimators=5" if name.startswith("bdt") else "seed=1",
        *SHRINK.get(base, []),
    ]  # fmt: skip


def test_all_jet_configs_validate():
    from lhcml.config import load_config
    from lhcml.evaluation import EvaluateConfig
    from lhcml.train.config import load_train_config

    ev = load_config(EvaluateConfig, CONFIGS / "evaluate.yaml")
    assert ev.label_scheme == "boosted" and ev.signal == "top" and ev.mass_var == "mass"
    skip = ("base", "flow_inputs", "evaluate")
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem not in skip)
    assert {"bdt_substructure", "jet_image_cnn", "pfn", "efn", "particlenet", "part", "lola"} <= set(names)
    for n in names:
        cfg = load_train_config(CONFIGS / f"{n}.yaml")
        scheme = "quark_gluon" if n.startswith("qg_") else "boosted"
        assert cfg.data.label_scheme == scheme and cfg.output_dir.endswith(n)


@pytest.mark.parametrize("name", TRAINED)
def test_train_predict_export(name, jet_files, tmp_path):
    from lhcml.export import export_model, read_metadata
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    tr, va = jet_files
    cfg = load_train_config(CONFIGS / f"{name}.yaml", _overrides(name, tr, va, tmp_path / "run"))
    ckpt = train(cfg)
    tagger = cfg.resolved_tagger_name()
    (pred,) = predict(ckpt, [va], output_dir=tmp_path / "pred")
    with h5py.File(pred) as f:
        jets = f["jets"][:]
    outs = ("pqcd", "ptop") if cfg.data.classes == ["qcd", "top"] else ("pqcd", "ptop", "pW")
    probs = np.stack([jets[f"{tagger}_{o}"] for o in outs], 1)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.isfinite(probs).all() and probs.std(0).max() > 0
    # ONNX with a dynamic constituent axis, checked against torch/xgboost on the real jets
    rep = export_model(tmp_path / "run", tmp_path / "m.onnx", check_file=va, n_check=120, timing=False)  # run directory
    assert rep.max_abs_diff_real is not None and rep.max_abs_diff_real <= 1e-5
    assert read_metadata(tmp_path / "m.onnx")["tagger_name"] == tagger
    if name != "bdt_substructure":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
        shapes = {i.name: i.shape for i in sess.get_inputs()}
        assert isinstance(shapes["flow_features"][1], str)  # dynamic constituent axis
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_robustness_variation(jet_files, tmp_path):
    from lhcml.tasks.boosted.robustness import rejection_changes, write_varied_file

    _, va = jet_files
    out = write_varied_file(va, tmp_path / "varied.h5", seed=3, progress=False)
    with h5py.File(va) as f, h5py.File(out) as g:
        a, b = f["jets"][:], g["jets"][:]
        assert g["flow"]["valid"].sum() < f["flow"]["valid"].sum()  # lost constituents
        assert not np.allclose(a["Tau21_wta"], b["Tau21_wta"])  # substructure recomputed
    sig, bkg = a["R10TruthLabel"] == 1, a["R10TruthLabel"] == 0
    sig2, bkg2 = b["R10TruthLabel"] == 1, b["R10TruthLabel"] == 0
    rows = rejection_changes(
        {"tau32": (-a["Tau32_wta"][sig], -a["Tau32_wta"][bkg], None, None)},
        {"tau32": (-b["Tau32_wta"][sig2], -b["Tau32_wta"][bkg2], None, None)},
    )
    # the rejection at 50 % top efficiency counted directly: QCD jets above the signal median
    disc_s, disc_b = -a["Tau32_wta"][sig], -a["Tau32_wta"][bkg]
    direct = len(disc_b) / (disc_b > np.median(disc_s)).sum()
    assert rows[0]["tagger"] == "tau32" and rows[0]["rej_nominal"] == pytest.approx(direct, rel=0.05)
    assert rows[0]["rel_change"] == pytest.approx(rows[0]["rej_varied"] / rows[0]["rej_nominal"] - 1)
    with pytest.raises(ValueError, match="new file"):
        write_varied_file(va, va, progress=False)
