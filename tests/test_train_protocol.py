"""One trainer protocol and one export entry point: dispatch by config and by model file.

The end-to-end runs of each kind through the protocol and :func:`lhcml.export.export_model` are
in ``test_train_smoke.py`` (every shipped flavour-tagging config: Lightning taggers and the
MV2 BDT) and ``test_photon_id.py::test_paed_reduces_pileup_error_and_exports`` (the PAED).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lhcml.errors import ConfigError
from lhcml.train.protocol import (
    TRAINERS,
    Trainable,
    load_trainable_config,
    resolve_artifact,
    trainer_for_artifact,
    trainer_for_model,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_registry_holds_every_kind_and_each_follows_the_protocol() -> None:
    assert set(TRAINERS) == {"lightning", "bdt", "paed", "fastcalo", "tracking"}
    for kind, trainer in TRAINERS.items():
        assert isinstance(trainer, Trainable) and trainer.kind == kind
    from lhcml.export.model import EXPORTERS

    assert set(EXPORTERS) == set(TRAINERS)  # one exporter per kind


@pytest.mark.parametrize(
    ("config", "kind", "schema"),
    [
        ("ftag/gn.yaml", "lightning", "TrainConfig"),
        ("ftag/mv2.yaml", "bdt", "TrainConfig"),
        ("jets/particlenet.yaml", "lightning", "TrainConfig"),
        ("photon/cnn.yaml", "lightning", "TrainConfig"),
        ("photon/paed.yaml", "paed", "PAEDConfig"),
        ("fastcalo/vae.yaml", "fastcalo", "FastCaloTrainConfig"),
        ("fastcalo/gan.yaml", "fastcalo", "FastCaloTrainConfig"),
        ("tracking/embedding.yaml", "tracking", "TrackingTrainConfig"),
    ],
)
def test_shipped_configs_dispatch_by_model_name(config: str, kind: str, schema: str) -> None:
    trainer, cfg = load_trainable_config(CONFIGS / config)
    assert trainer is TRAINERS[kind] and type(cfg).__name__ == schema
    assert trainer_for_model(cfg.model.name) is trainer


def test_overrides_and_bad_configs(tmp_path: Path) -> None:
    _, cfg = load_trainable_config(CONFIGS / "photon/paed.yaml", ["model.channels=4", "max_epochs=2"])
    assert cfg.model.channels == 4 and cfg.max_epochs == 2
    bad = tmp_path / "x.yaml"
    bad.write_text("model: {channels: 4}\ntrain_files: [a.h5]\n")
    with pytest.raises(ConfigError, match="model.name"):
        load_trainable_config(bad)
    with pytest.raises(ConfigError, match="latent_dimm"):  # validated with the PAED's schema
        load_trainable_config(CONFIGS / "photon/paed.yaml", ["model.latent_dimm=3"])


def test_artifacts_map_to_their_trainer(tmp_path: Path) -> None:
    assert trainer_for_artifact("run/checkpoints/best-epoch=03.ckpt") is TRAINERS["lightning"]
    assert trainer_for_artifact("run/checkpoints/mv2.json") is TRAINERS["bdt"]
    assert trainer_for_artifact("runs/photon/paed/paed.pt") is TRAINERS["paed"]
    with pytest.raises(ConfigError, match="no lhcml model file"):
        trainer_for_artifact("model.onnx")
    # a run directory: its model file is found; an empty one or a missing path is a clear error
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no trained model"):
        resolve_artifact(run)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_artifact(tmp_path / "nothing")
    (run / "checkpoints" / "best-epoch=01.ckpt").write_bytes(b"")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resolve_artifact(run) == (TRAINERS["lightning"], run / "checkpoints" / "best-epoch=01.ckpt")
    (run / "checkpoints" / "best-epoch=02.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="several best checkpoints"):
        resolve_artifact(run)


def _cli(capsys, *args: str) -> tuple[int, str]:
    """``lhcml ARGS`` in this process with the console script's error handler: (status, stderr)."""
    from lhcml.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def test_cli_export_and_predict_errors(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _cli(capsys, "export", str(empty), str(tmp_path / "m.onnx"))
    assert code == 2 and "holds no trained model" in err
    paed = tmp_path / "paed.pt"
    paed.write_bytes(b"")
    code, err = _cli(capsys, "predict", str(paed), str(tmp_path / "x.h5"))
    assert code == 2 and "not a tagger" in err


def test_cli_trains_and_exports_the_paed_through_the_generic_verbs(tmp_path: Path, capsys) -> None:
    """``lhcml train configs/photon/paed.yaml`` picks the PAED trainer; ``lhcml export RUN_DIR``
    its exporter (tiny paired images written here: the dispatch is under test, not the physics)."""
    import h5py
    import numpy as np

    from lhcml.data.images import image_noise_attrs
    from lhcml.export import read_metadata

    rng = np.random.default_rng(0)
    files = []
    for split in ("train", "val"):
        clean = rng.exponential(200.0, size=(48, 7, 11)).astype(np.float32)
        path = tmp_path / f"{split}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("raw_middle_nopu", data=clean)
            f.create_dataset("raw_middle", data=clean + rng.normal(0, 50, clean.shape).astype(np.float32))
            f.attrs.update(image_noise_attrs({"middle": 25.0}, 3.0))
        files.append(path)
    run = tmp_path / "paed"
    code, err = _cli(capsys, "train", str(CONFIGS / "photon/paed.yaml"), "--set", f"train_files=[{files[0]}]",
                     "--set", f"val_files=[{files[1]}]", "--set", "layers=[middle]", "--set", "max_epochs=1",
                     "--set", "model.channels=4", "--set", "model.latent_dim=4", "--set", "batch_size=16",
                     "--set", f"output_dir={run}")  # fmt: skip
    assert code == 0, err
    assert (run / "paed.pt").is_file()
    code, err = _cli(capsys, "export", str(run), str(tmp_path / "paed.onnx"))
    assert code == 0, err
    assert read_metadata(tmp_path / "paed.onnx")["model_name"] == "paed"
    code, err = _cli(capsys, "train", str(CONFIGS / "photon/paed.yaml"), "--devices", "2",
                     "--set", f"output_dir={tmp_path / 'other'}")  # fmt: skip
    assert code == 2 and "one device" in err
