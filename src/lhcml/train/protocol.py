"""One trainer protocol for every trainable model: Lightning taggers, BDTs and the PAED denoiser.

A :class:`Trainable` knows one kind of model end to end on the training side: its config schema,
how to fit it (``fit(cfg) -> artifact``: the file that holds the trained model), which files are
its artifacts, how to load one and how to run it on a batch. ``lhcml train CONFIG`` reads the
config, picks the trainer from ``model.name`` with :func:`trainer_for_model` and calls ``fit``;
``lhcml predict`` and :func:`lhcml.export.export_model` pick the trainer of a model file with
:func:`trainer_for_artifact`. The choice goes through the explicit registry :data:`TRAINERS`,
never through import strings from a config.

=========  ====================================  =================================  ==============
kind       models (``model.name``)               artifact                           trained by
=========  ====================================  =================================  ==============
lightning  the taggers of the model registry     ``checkpoints/best-*.ckpt``        :mod:`lhcml.train.trainer`
bdt        :data:`lhcml.models.bdt.BDT_MODELS`   ``checkpoints/mv2.json`` (xgboost) :mod:`lhcml.train.bdt`
paed       ``paed``                              ``paed.pt``                        :mod:`lhcml.train.paed`
fastcalo   ``fastcalo_*`` generators             ``checkpoints/best-*.ckpt``        :mod:`lhcml.train.fastcalo`
tracking   ``TRACKING_MODELS`` (hit level)       ``checkpoints/best-*.ckpt``        :mod:`lhcml.train.tracking`
=========  ====================================  =================================  ==============

Export is a later stage than training, so it is not a method here: :func:`lhcml.export.export_model`
keeps one exporter per :attr:`Trainable.kind` and finds the kind with :func:`trainer_for_artifact`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from lhcml.errors import ConfigError


@runtime_checkable
class Trainable(Protocol):
    """What every trainer of :data:`TRAINERS` provides."""

    #: registry key (``lightning``, ``bdt``, ``paed``); also the key of the exporters
    kind: str

    def handles_model(self, name: str) -> bool:
        """Whether ``model.name`` of a config is trained by this trainer."""

    def load_config(self, data: dict[str, Any], source: str) -> Any:
        """Validate a config mapping (``base:`` already resolved, overrides applied)."""

    def fit(self, cfg: Any, *, resume: bool = False, devices: int | None = None,
            strategy: str | None = None, epoch_hooks: list | None = None) -> Path:
        """Train; return the artifact (best checkpoint or model file) inside ``cfg.output_dir``."""

    def owns(self, artifact: Path) -> bool:
        """Whether ``artifact`` (an existing file) is a model file of this trainer."""

    def find_artifact(self, run_dir: Path) -> Path | None:
        """The trained model in a training output directory, or ``None`` if it holds none."""

    def load(self, artifact: Path) -> tuple[Any, dict[str, Any]]:
        """``(model ready for inference, metadata)`` of an artifact."""

    def predict(self, model: Any, batch: Any) -> Any:
        """The model's outputs for one batch (class probabilities for the taggers)."""


def _no_device_options(kind: str, devices: int | None, strategy: str | None) -> None:
    if devices not in (None, 1) or strategy not in (None, "auto"):
        raise ConfigError(f"--devices/--strategy do not apply to the {kind} trainer (it runs on one device)")


class _OwnMetaCheckpoints:
    """Trainers whose artefact is the best Lightning checkpoint carrying their own lhcml metadata.

    A subclass says how to read that metadata (``read_meta``: None when the checkpoint is not
    theirs); owning an artefact and finding it in a run directory follow from it.
    """

    def read_meta(self, artifact: Path) -> dict[str, Any] | None:
        raise NotImplementedError

    def owns(self, artifact: Path) -> bool:
        return artifact.suffix == ".ckpt" and self.read_meta(artifact) is not None

    def find_artifact(self, run_dir: Path) -> Path | None:
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
        if len(best) != 1 or not self.owns(best[0]):
            return None  # several: the Lightning trainer names them in its error
        return best[0]


class FastCaloTrainer(_OwnMetaCheckpoints):
    """The generative fast-calorimeter models (:func:`lhcml.train.fastcalo.fit_fastcalo`)."""

    kind: ClassVar[str] = "fastcalo"

    def handles_model(self, name: str) -> bool:
        from lhcml.train.fastcalo import is_fastcalo_model

        return is_fastcalo_model(name)

    def load_config(self, data: dict[str, Any], source: str) -> Any:
        from lhcml.train.fastcalo import fastcalo_config_from_dict

        return fastcalo_config_from_dict(data, source)

    def fit(self, cfg: Any, *, resume: bool = False, devices: int | None = None,
            strategy: str | None = None, epoch_hooks: list | None = None) -> Path:
        from lhcml.train.fastcalo import fit_fastcalo

        return fit_fastcalo(cfg, resume=resume, devices=devices, strategy=strategy, epoch_hooks=epoch_hooks)

    def read_meta(self, artifact: Path) -> dict[str, Any] | None:
        from lhcml.train.fastcalo import read_fastcalo_meta

        return read_fastcalo_meta(artifact)

    def load(self, artifact: Path) -> tuple[Any, dict[str, Any]]:
        from lhcml.train.fastcalo import load_generator

        return load_generator(artifact)

    def predict(self, model: Any, batch: Any) -> Any:
        """Showers ``(N, V)`` GeV for ``batch["energy_gev"]`` ``(N,)`` (noise from ``batch.get("generator")``)."""
        import torch

        return model.generate(torch.as_tensor(batch["energy_gev"]), batch.get("generator")).numpy()


class TrackingTrainer(_OwnMetaCheckpoints):
    """The hit-level tracking models (:func:`lhcml.train.tracking.fit_tracking`)."""

    kind: ClassVar[str] = "tracking"

    def handles_model(self, name: str) -> bool:
        from lhcml.train.tracking import is_tracking_model

        return is_tracking_model(name)

    def load_config(self, data: dict[str, Any], source: str) -> Any:
        from lhcml.train.tracking import tracking_config_from_dict

        return tracking_config_from_dict(data, source)

    def fit(self, cfg: Any, *, resume: bool = False, devices: int | None = None,
            strategy: str | None = None, epoch_hooks: list | None = None) -> Path:
        from lhcml.train.tracking import fit_tracking

        return fit_tracking(cfg, resume=resume, devices=devices, strategy=strategy, epoch_hooks=epoch_hooks)

    def read_meta(self, artifact: Path) -> dict[str, Any] | None:
        from lhcml.train.tracking import read_tracking_meta

        return read_tracking_meta(artifact)

    def load(self, artifact: Path) -> tuple[Any, dict[str, Any]]:
        from lhcml.train.tracking import load_tracking_model

        return load_tracking_model(artifact)

    def predict(self, model: Any, batch: Any) -> Any:
        """The model's output for one event's inputs (``batch``: its ``forward`` arguments by name)."""
        import torch

        with torch.inference_mode():
            return model(**{k: torch.as_tensor(v) for k, v in batch.items()}).numpy()


class LightningTrainer:
    """The NN taggers of :mod:`lhcml.models.registry` (:func:`lhcml.train.trainer.train_lightning`)."""

    kind: ClassVar[str] = "lightning"

    def handles_model(self, name: str) -> bool:
        from lhcml.models.bdt import BDT_MODELS
        from lhcml.train.fastcalo import is_fastcalo_model
        from lhcml.train.tracking import is_tracking_model

        return name not in BDT_MODELS and name != "paed" and not is_fastcalo_model(name) and not is_tracking_model(name)

    def load_config(self, data: dict[str, Any], source: str) -> Any:
        from lhcml.train.config import config_from_dict

        return config_from_dict(data, source)

    def fit(self, cfg: Any, *, resume: bool = False, devices: int | None = None,
            strategy: str | None = None, epoch_hooks: list | None = None) -> Path:
        from lhcml.train.trainer import train_lightning

        return train_lightning(cfg, resume=resume, devices=devices, strategy=strategy, epoch_hooks=epoch_hooks)

    def owns(self, artifact: Path) -> bool:
        return artifact.suffix == ".ckpt"

    def find_artifact(self, run_dir: Path) -> Path | None:
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
        if len(best) > 1:
            raise ConfigError(f"{run_dir} holds several best checkpoints ({', '.join(p.name for p in best)}): name one")
        return best[0] if best else None

    def load(self, artifact: Path) -> tuple[Any, dict[str, Any]]:
        from lhcml.train.checkpoint import load_tagger

        return load_tagger(artifact)

    def predict(self, model: Any, batch: Any) -> Any:
        import torch

        with torch.inference_mode():
            return torch.softmax(model(batch)["logits"].float(), dim=-1).numpy()


class BDTTrainer:
    """The xgboost BDTs of :mod:`lhcml.models.bdt` (:func:`lhcml.train.bdt.fit_bdt`)."""

    kind: ClassVar[str] = "bdt"

    def handles_model(self, name: str) -> bool:
        from lhcml.models.bdt import BDT_MODELS

        return name in BDT_MODELS

    def load_config(self, data: dict[str, Any], source: str) -> Any:
        from lhcml.train.config import config_from_dict

        return config_from_dict(data, source)

    def fit(self, cfg: Any, *, resume: bool = False, devices: int | None = None,
            strategy: str | None = None, epoch_hooks: list | None = None) -> Path:
        from lhcml.train.bdt import fit_bdt

        _no_device_options(self.kind, devices, strategy)
        return fit_bdt(cfg, resume=resume)

    def owns(self, artifact: Path) -> bool:
        return artifact.suffix == ".json"

    def find_artifact(self, run_dir: Path) -> Path | None:
        from lhcml.models.bdt import BDT_MODELS

        hits = [run_dir / "checkpoints" / f"{m}.json" for m in BDT_MODELS]
        return next((p for p in hits if p.is_file()), None)

    def load(self, artifact: Path) -> tuple[Any, dict[str, Any]]:
        from lhcml.models.bdt import load_bdt

        return load_bdt(artifact)

    def predict(self, model: Any, batch: Any) -> Any:
        from lhcml.models.bdt import predict_bdt

        return predict_bdt(model, batch["jets"].numpy())


class PAEDTrainer:
    """The photon pile-up denoiser (:func:`lhcml.train.paed.fit_paed`)."""

    kind: ClassVar[str] = "paed"

    def handles_model(self, name: str) -> bool:
        return name == "paed"

    def load_config(self, data: dict[str, Any], source: str) -> Any:
        from lhcml.config import validate_config
        from lhcml.train.paed import PAEDConfig

        return validate_config(PAEDConfig, data, source=source)

    def fit(self, cfg: Any, *, resume: bool = False, devices: int | None = None,
            strategy: str | None = None, epoch_hooks: list | None = None) -> Path:
        from lhcml.train.paed import fit_paed

        _no_device_options(self.kind, devices, strategy)
        if epoch_hooks:
            raise ConfigError("the PAED trainer takes no epoch hooks (it is not tuned by lhcml tune)")
        return fit_paed(cfg, resume=resume)

    def owns(self, artifact: Path) -> bool:
        return artifact.suffix == ".pt"

    def find_artifact(self, run_dir: Path) -> Path | None:
        path = run_dir / "paed.pt"
        return path if path.is_file() else None

    def load(self, artifact: Path) -> tuple[Any, dict[str, Any]]:
        from lhcml.train.paed import load_paed

        model, cfg = load_paed(artifact)
        return model, {"config": cfg, "model_name": "paed"}

    def predict(self, model: Any, batch: Any) -> Any:
        from lhcml.train.paed import denoise

        return denoise(model, batch)


#: the trainers, by kind (explicit; order = lookup order)
TRAINERS: dict[str, Trainable] = {
    t.kind: t for t in (BDTTrainer(), PAEDTrainer(), FastCaloTrainer(), TrackingTrainer(), LightningTrainer())
}


def trainer_for_model(name: str) -> Trainable:
    """The trainer of ``model.name`` (a BDT name, ``paed``, else a Lightning tagger)."""
    return next(t for t in TRAINERS.values() if t.handles_model(name))


def trainer_for_artifact(path: str | Path) -> Trainable:
    """The trainer whose model files look like ``path`` (by suffix: ``.ckpt``, ``.json``, ``.pt``).

    Raises
    ------
    ConfigError
        If no trainer writes files like ``path``.
    """
    path = Path(path)
    for t in TRAINERS.values():
        if t.owns(path):
            return t
    raise ConfigError(
        f"{path} is no lhcml model file: expected a Lightning checkpoint (.ckpt), a BDT model "
        "(.json) or PAED weights (.pt), or a training output directory"
    )


def resolve_artifact(run_or_artifact: str | Path) -> tuple[Trainable, Path]:
    """``(trainer, model file)`` for a model file or a training output directory.

    Raises
    ------
    FileNotFoundError
        If the path does not exist, or a directory holds no trained model.
    """
    path = Path(run_or_artifact)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (a model file or a training output directory)")
    if path.is_dir():
        found = [(t, a) for t in TRAINERS.values() if (a := t.find_artifact(path)) is not None]
        if not found:
            raise FileNotFoundError(
                f"{path} holds no trained model (checkpoints/best-*.ckpt, checkpoints/mv2.json or paed.pt)"
            )
        return found[0]
    return trainer_for_artifact(path), path


def load_trainable_config(path: str | Path, overrides: list[str] | None = None) -> tuple[Trainable, Any]:
    """Read a training config of any kind (``base:``, ``--set``), pick its trainer by
    ``model.name`` and validate it with that trainer's schema."""
    from lhcml.train.config import _resolve_raw, apply_overrides

    path = Path(path)
    data = apply_overrides(_resolve_raw(path), overrides or [])
    return validate_trainable_config(data, path.name)


def validate_trainable_config(data: dict[str, Any], source: str) -> tuple[Trainable, Any]:
    """``(trainer, validated config)`` of a config mapping of any kind, by its ``model.name``
    (what ``lhcml tune`` validates its base and trial configs with)."""
    model = data.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if not isinstance(name, str):
        raise ConfigError(f"{source}: 'model.name' is missing (a model of the registry, 'mv2' or 'paed')")
    trainer = trainer_for_model(name)
    return trainer, trainer.load_config(data, source)


def train_from_config(path: str | Path, overrides: list[str] | None = None, *, resume: bool = False,
                      devices: int | None = None, strategy: str | None = None) -> Path:
    """``lhcml train CONFIG``: load any training config and fit it with its trainer; returns the artifact."""
    trainer, cfg = load_trainable_config(path, overrides)
    return trainer.fit(cfg, resume=resume, devices=devices, strategy=strategy)
