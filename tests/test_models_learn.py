"""Every shipped training config *learns*: through the real trainer, on separable mock data.

A smoke test that checks that outputs vary passes for a model that learned nothing; these tests
train each shipped config (shrunk with ``--set``-style overrides: tiny layers, a few epochs, a
few hundred jets) and require the signal-vs-background AUC of its predictions on a statistically
independent test file to beat a constant classifier (AUC 0.5) by a clear margin.

Data: :func:`lhcml.data.mock.make_mock_tables` (``ftag``: heavy-flavour jets carry displaced
tracks; ``boosted``: top jets have three-prong constituents and a mass peak), with the derived
training variables of ``tests/_train_mock.py`` for the flavour taggers. The quark/gluon configs
train on the boosted mock relabelled as gluon = QCD, quark = top: the mock has no quark/gluon
physics, so this checks that the configs (their label scheme, classes and validation) learn a
separable problem, not quark/gluon physics. The photon shower-shape DNN trains on single photons
and π0 from lhcml's calorimeter simulation (no photon mock exists); the photon image CNNs are listed
in ``NOT_COVERED`` with the reason.

Thresholds (our choice): AUC > 0.70 for b vs light, top vs QCD and prompt vs fake photons. The mock samples are
separable far beyond that (a cut on one variable reaches more), and every config's tiny version
reaches > 0.8 in a few epochs (docs/benchmarks/hardening.md lists the measured values); an
untrained or broken model sits at 0.5 ± 0.03 for these sample sizes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from _train_mock import make_training_file

from lhcml.data.h5 import write_h5
from lhcml.data.mock import make_mock_tables
from lhcml.metrics.classification import auc

ROOT = Path(__file__).resolve().parents[1]
#: minimum AUC of signal vs background on the independent test file (see the module docstring)
MIN_AUC = 0.70

_TRACKS = ["data.batch_size=32", "optimizer.lr=1e-2"]
FTAG = {  # config -> overrides that make it tiny
    "dl1": ["model.hidden=[32,16]"],
    "dl1r": ["model.hidden=[32,16]"],
    # the track-based taggers need more, smaller steps than the jet-variable ones on this budget
    "rnnip": ["model.lstm_hidden=16", "model.dense=[16]", *_TRACKS],
    "dips": ["model.phi_hidden=[32,32]", "model.f_hidden=[32]", *_TRACKS],
    "gn": [*_TRACKS, "model.embed_dim=32", "model.num_heads=2", "model.num_layers=1", "model.init_hidden=[32]",
           "model.jet_hidden=[32]", "model.origin_hidden=[16]", "model.vertex_hidden=[16]"],  # fmt: skip
    "bench_gn": [*_TRACKS, "model.embed_dim=32", "model.num_heads=2", "model.num_layers=1", "model.init_hidden=[32]",
                 "model.jet_hidden=[32]", "model.origin_hidden=[16]", "model.vertex_hidden=[16]"],  # fmt: skip
    "mv2": ["model.n_estimators=60", "model.max_depth=3"],
}
_PFN = ["model.phi_sizes=[32,32]", "model.f_sizes=[32]"]
_PNET = ["model.k=8", "model.conv_params=[[32,32]]", "model.fc_sizes=[32]", "model.dropout=0.0"]
_PART = ["model.embed_dims=[32,32]", "model.pair_embed_dims=[16,16]", "model.num_heads=2", "model.num_layers=1",
         "model.num_cls_layers=1", "model.ffn_ratio=2", "model.dropout=0.0", "data.num_jets_train=600"]  # fmt: skip
JETS = {
    "pfn": _PFN,
    "pfn_adv": _PFN,
    "pfn_disco": _PFN,
    "qg_pfn": _PFN,
    "efn": [*_PFN, "optimizer.lr=1e-2"],
    "particlenet": _PNET,
    "particlenet_adv": _PNET,
    "particlenet_disco": _PNET,
    "qg_particlenet": _PNET,
    "part": _PART,
    "part_adv": _PART,
    "part_disco": [*_PART, "data.num_jets_train=1200"],  # the DisCo term (weight 10) needs more steps
    "lola": ["model.n_combinations=10", "model.fc_sizes=[32]"],
    "jet_image_cnn": ["model.n_pixels=20", "model.conv_blocks=[[8],[8]]", "model.kernel_size=3", "model.fc_sizes=[32]"],
    "bdt_substructure": ["model.n_estimators=60", "model.max_depth=3"],
}
#: epochs per config (default 3); the graph/transformer taggers separate the mock in two epochs
EPOCHS = {"rnnip": 5, "dips": 5, "gn": 4, "bench_gn": 4, "efn": 4, "lola": 2} | {
    n: 2 for n in JETS if n.startswith(("part", "particlenet", "qg_particlenet"))
}
PHOTON = {"dnn": ["model.hidden=[32,32]", "data.batch_size=32", "optimizer.lr=3e-3"]}
#: configs in configs/ that are not training configs of a tagger (or train elsewhere)
NOT_TRAINING = {"ftag/base.yaml", "ftag/preprocess.yaml", "ftag/preprocess_dl1.yaml", "ftag/preprocess_tiny.yaml",
                "ftag/preprocess_salt_parity.yaml",
                "jets/base.yaml", "jets/flow_inputs.yaml", "jets/evaluate.yaml", "photon/base.yaml",
                # the PAED denoiser (own trainer): tests/test_photon_id.py requires it to reduce the
                # pile-up energy error by > 25 %
                "photon/paed.yaml"}  # fmt: skip
#: training configs without a learning test here, and why (reported, to be closed)
NOT_COVERED: set[str] = set()
#: image taggers: learn on separable images (see :func:`separable_photon_files`)
PHOTON_IMAGES = {"cnn": [], "cnn_had": [], "cnn_nopu": [], "resnet": []}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ftag_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("learn_ftag")
    return {k: make_training_file(d / f"{k}.h5", n, seed=s) for k, n, s in (("train", 1200, 31), ("val", 300, 32), ("test", 600, 33))}


def _boosted_file(path: Path, n: int, seed: int, qg: bool) -> Path:
    t = make_mock_tables(n, kind="boosted", seed=seed)
    if qg:  # relabel: gluon = QCD, quark = top (see the module docstring); W/Z get no parton label
        lab = t["jets"]["R10TruthLabel"]
        parton = np.select([lab == 0, lab == 1], [21, 2], 0).astype(np.int8)
        t["jets"]["PartonTruthLabelID"] = parton  # a large-R field since the trigger's q/g classes
    return write_h5(path, t)


@pytest.fixture(scope="module")
def jets_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("learn_jets")
    from lhcml.tasks.boosted.substructure import add_substructure_to_file

    files = {
        qg: {k: _boosted_file(d / f"{k}_{qg}.h5", n, s, qg) for k, n, s in (("train", 1200, 41), ("val", 300, 42), ("test", 600, 43))}
        for qg in (False, True)
    }  # fmt: skip
    for f in files[False].values():  # the substructure BDT's inputs (lhcml jets substructure)
        add_substructure_to_file(f, progress=False)
    return files


def _train_and_auc(config: Path, files: dict[str, Path], extra: list[str], out: Path, epochs: int):
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    cfg = load_train_config(config, [
        f"data.train_files=[{files['train']}]", f"data.val_files=[{files['val']}]", "data.norm_dict=null",
        "loss.class_dict=null", "data.batch_size=100", f"trainer.max_epochs={epochs}", "trainer.patience=null",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.precision=32-true",
        f"output_dir={out / 'run'}", "seed=3", *extra,
    ])  # fmt: skip
    best = train(cfg)
    (pred,) = predict(best, [files["test"]], output_dir=out / "pred")
    with h5py.File(pred) as f:
        jets = f["jets"][:]
    return cfg, jets


@pytest.mark.parametrize("name", sorted(FTAG))
def test_flavour_tagger_learns(name, ftag_files, tmp_path):
    cfg, jets = _train_and_auc(ROOT / "configs/ftag" / f"{name}.yaml", ftag_files, FTAG[name], tmp_path, EPOCHS.get(name, 3))
    t = cfg.resolved_tagger_name()
    disc = np.log(jets[f"{t}_pb"] + 1e-6) - np.log(jets[f"{t}_pu"] + 1e-6)
    b, light = jets["flavour_label"] == 0, jets["flavour_label"] == 2
    value = auc(disc[b], disc[light])
    print(f"{name}: b-vs-light AUC {value:.3f}")
    assert value > MIN_AUC, f"{name}: AUC {value:.3f}"


@pytest.mark.parametrize("name", sorted(JETS))
def test_jet_tagger_learns(name, jets_files, tmp_path):
    qg = name.startswith("qg_")
    cfg, jets = _train_and_auc(ROOT / "configs/jets" / f"{name}.yaml", jets_files[qg], JETS[name], tmp_path, EPOCHS.get(name, 3))
    t = cfg.resolved_tagger_name()
    sig_name, bkg_name = ("quark", "gluon") if qg else ("top", "qcd")
    from lhcml.labels import get_scheme

    scheme = get_scheme(cfg.data.label_scheme)
    p_sig, p_bkg = jets[f"{t}_{scheme.get(sig_name).output}"], jets[f"{t}_{scheme.get(bkg_name).output}"]
    disc = np.log(p_sig + 1e-6) - np.log(p_bkg + 1e-6)
    lab = jets["R10TruthLabel"]
    value = auc(disc[lab == 1], disc[lab == 0])
    print(f"{name}: {sig_name}-vs-{bkg_name} AUC {value:.3f}")
    assert value > MIN_AUC, f"{name}: AUC {value:.3f}"


@pytest.fixture(scope="module")
def photon_files(tmp_path_factory):
    """Simulated single photons (prompt) and π0 (fake), 20-50 GeV, |η| < 1.3 (the calorimeter
    simulation of lhcml.sim.photons; lhcml.data.mock has no photon candidates)."""
    from lhcml.sim.photons import simulate_single
    from lhcml.tasks.photon.dataset import split_and_write

    rng = np.random.default_rng(21)
    parts = []
    for pdg, prompt, seed in ((22, 1, 21), (111, 0, 22)):
        d = simulate_single(pdg, rng.uniform(20, 50, 300), 300, seed, eta=(-1.3, 1.3))
        keep = d["photons"]["pt"] > 10_000
        d = {k: v[keep] for k, v in d.items()}
        d["photons"]["isPromptPhoton"] = prompt
        parts.append(d)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return split_and_write(merged, tmp_path_factory.mktemp("learn_photon"), seed=3)


def _photon_auc(name: str, files: dict, overrides: list[str], tmp_path: Path) -> float:
    """Train configs/photon/NAME.yaml on FILES through the real trainer; prompt-vs-fake test AUC."""
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train

    cfg = load_train_config(ROOT / "configs/photon" / f"{name}.yaml", [
        f"data.train_files=[{files['train']}]", f"data.val_files=[{files['val']}]",
        "trainer.max_epochs=4", "trainer.patience=null", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", f"output_dir={tmp_path / 'run'}", "seed=3", *overrides,
    ])  # fmt: skip
    (pred,) = predict(train(cfg), [files["test"]], output_dir=tmp_path / "pred")
    with h5py.File(pred) as f:
        ph = f["photons"][:]
    t = cfg.resolved_tagger_name()
    disc = np.log(ph[f"{t}_pprompt"] + 1e-6) - np.log(ph[f"{t}_pfake"] + 1e-6)
    prompt = ph["isPromptPhoton"] == 1
    return auc(disc[prompt], disc[~prompt])


@pytest.mark.parametrize("name", sorted(PHOTON))
def test_photon_tagger_learns(name, photon_files, tmp_path):
    value = _photon_auc(name, photon_files, PHOTON[name], tmp_path)
    print(f"{name}: prompt-vs-fake AUC {value:.3f}")
    assert value > MIN_AUC, f"{name}: AUC {value:.3f}"


@pytest.fixture(scope="module")
def separable_photon_files(photon_files, tmp_path_factory):
    """The simulated photon files made separable for the image taggers: every fake candidate
    gets a second shower, a copy of its own image shifted by three cells in φ (two photons, as
    from a π0, but resolved in every layer). On the raw simulated γ/π0 images a tiny CNN reaches
    only AUC 0.63-0.72 with 350 training photons, too close to a constant for a stable test."""
    import shutil

    out = tmp_path_factory.mktemp("learn_photon_sep")
    files = {}
    for split, src in photon_files.items():
        dst = out / Path(src).name
        shutil.copy(src, dst)
        with h5py.File(dst, "r+") as f:
            fake = f["photons"]["isPromptPhoton"][:] == 0
            for name in [k for k in f if k.startswith("images_")]:
                img = f[name][:]
                img[fake] = img[fake] + np.roll(img[fake], 3, axis=-1)
                f[name][...] = img
        files[split] = dst
    return files


@pytest.mark.parametrize("name", sorted(PHOTON_IMAGES))
def test_photon_image_tagger_learns(name, separable_photon_files, tmp_path):
    overrides = ["data.batch_size=32", "optimizer.lr=1e-3", *PHOTON_IMAGES[name]]
    value = _photon_auc(name, separable_photon_files, overrides, tmp_path)
    print(f"{name}: prompt-vs-fake AUC on separable images {value:.3f}")
    assert value > MIN_AUC, f"{name}: AUC {value:.3f}"


def test_every_shipped_training_config_is_covered():
    """A new training config needs a learning test (or an entry saying why it has none)."""
    found = {f"{p.parent.name}/{p.name}" for d in ("ftag", "jets", "photon") for p in (ROOT / "configs" / d).glob("*.yaml")}
    covered = {f"ftag/{n}.yaml" for n in FTAG} | {f"jets/{n}.yaml" for n in JETS} | {f"photon/{n}.yaml" for n in (*PHOTON, *PHOTON_IMAGES)}
    assert found - NOT_TRAINING - NOT_COVERED == covered
