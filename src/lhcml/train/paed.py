"""Training of the photon pile-up denoiser (PAED, :class:`lhcml.models.photon.PAED`).

Training pairs come from one simulation: every cluster has its image with pile-up
(``raw_<layer>``, MeV) and its pile-up-free twin (``raw_<layer>_nopu``: the same cells, the
same electronic noise, no pile-up), written by :func:`lhcml.tasks.photon.dataset.make_photon_dataset`
with ``raw_images=True``. The model maps the first to the second; the loss is the mean squared
error in units of ``energy_scale_mev``.

Why a compact Lightning loop here and not the tagger loop of :mod:`lhcml.train.trainer`: that
module is a classifier (labels, class weights, softmax outputs, rejection metrics) and its
datamodule yields inputs and class labels; image-to-image regression with targets taken from
other datasets of the file would need a second module and datamodule. The loop below is the
minimum for this one model (Lightning handles devices, checkpoints, early stopping, logging),
reading the paired images into memory. It is one of the trainers of
:data:`lhcml.train.protocol.TRAINERS` (``lhcml train configs/photon/paed.yaml``).

The per-cell noise of the image layers (needed to normalise denoised images) is read from the
training files' attributes (``image_noise_mev``, ``image_noise_significance``, written by the
simulation) unless the config gives it, and is stored with the weights, so applying the PAED
(:func:`lhcml.tasks.photon.denoise.denoise_file`) needs no simulation geometry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lhcml.atomic import atomic_path
from lhcml.config import StrictModel, load_config
from lhcml.data.images import read_image_noise
from lhcml.errors import CheckpointMismatchError, ConfigError, SchemaError


class PAEDModelConfig(StrictModel):
    """The PAED's architecture (``model:`` of the config); ``name`` selects this trainer."""

    name: Literal["paed"] = "paed"
    channels: int = Field(16, gt=0)
    latent_dim: int = Field(32, gt=0)
    energy_scale_mev: float = Field(1000.0, gt=0)


class PAEDConfig(StrictModel):
    """Configuration of :func:`train_paed` (``configs/photon/paed.yaml``)."""

    train_files: list[str]
    val_files: list[str]
    layers: list[str] = Field(default_factory=lambda: ["strips", "middle", "back"])
    model: PAEDModelConfig = Field(default_factory=PAEDModelConfig)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    max_epochs: int = Field(15, gt=0)
    patience: int | None = Field(4, ge=1)
    max_clusters: int | None = Field(None, gt=0)
    seed: int = 42
    output_dir: str = "runs/photon/paed"
    #: per-cell noise (MeV) of each image layer and the significance threshold used to
    #: normalise images; default: from the training files' attributes (written by the simulation)
    image_noise_mev: dict[str, float] | None = None
    image_noise_significance: float | None = Field(None, gt=0)


def load_paed_config(path: str | Path) -> PAEDConfig:
    """Load and validate a PAED config (``base:`` inheritance as every lhcml config)."""
    return load_config(PAEDConfig, path)


def read_pairs(files: list[str | Path], layers: list[str], max_clusters: int | None = None) -> tuple[dict, dict]:
    """``({raw_<layer>: (n, H, W)}, {raw_<layer>: nopu target})`` from photon files.

    Raises
    ------
    SchemaError
        If a file lacks the raw images (simulate with ``raw_images=True``).
    """
    from lhcml.data.checks import open_h5

    xs: dict[str, list[np.ndarray]] = {f"raw_{lay}": [] for lay in layers}
    ys: dict[str, list[np.ndarray]] = {f"raw_{lay}": [] for lay in layers}
    left = max_clusters if max_clusters is not None else np.inf
    for p in files:
        if left <= 0:
            break
        with open_h5(p) as f:
            for lay in layers:
                for name in (f"raw_{lay}", f"raw_{lay}_nopu"):
                    if name not in f:
                        raise SchemaError(
                            f"{p} has no dataset '{name}': simulate with raw_images=True "
                            "(make_photon_dataset(..., raw_images=True))"
                        )
            n = int(min(len(f[f"raw_{layers[0]}"]), left))
            for lay in layers:
                xs[f"raw_{lay}"].append(np.asarray(f[f"raw_{lay}"][:n], np.float32))
                ys[f"raw_{lay}"].append(np.asarray(f[f"raw_{lay}_nopu"][:n], np.float32))
            left -= n
    x = {k: np.concatenate(v) for k, v in xs.items()}
    y = {k: np.concatenate(v) for k, v in ys.items()}
    for k in x:
        if not (np.isfinite(x[k]).all() and np.isfinite(y[k]).all()):
            raise SchemaError(f"non-finite pixels in '{k}' of {files}")
    return x, y


def _module(model: Any, lr: float, scale: float):
    import lightning as L
    import torch

    class PAEDModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def _loss(self, batch):
            x, y = batch
            out = self.model(x)
            losses = [torch.mean(((out[k] - y[k]) / scale) ** 2) for k in y]
            return torch.stack(losses).mean()

        def training_step(self, batch, batch_idx):
            loss = self._loss(batch)
            self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(batch[1]))
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self._loss(batch), on_epoch=True, prog_bar=True, batch_size=len(batch[1]))

        def configure_optimizers(self):
            return torch.optim.Adam(self.model.parameters(), lr=lr)

    return PAEDModule()


class _PairDataset:
    def __init__(self, x: dict, y: dict) -> None:
        self.x, self.y = x, y
        self.n = len(next(iter(x.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return {k: v[i] for k, v in self.x.items()}, {k: v[i] for k, v in self.y.items()}


def build_paed(cfg: PAEDConfig):
    """The PAED model for ``cfg`` (no weights)."""
    from lhcml.models.registry import build_model

    dims = {f"raw_{lay}": 1 for lay in cfg.layers}
    return build_model("paed", 0, dims, **cfg.model.model_dump(exclude={"name"}))


def train_paed(cfg: PAEDConfig, progress: bool = True) -> Path:
    """Train the PAED on paired images; returns ``<output_dir>/paed.pt`` (weights + config).

    Refuses to overwrite an existing run (choose another ``output_dir``).
    """
    import lightning as L
    import torch
    import yaml
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    out = Path(cfg.output_dir)
    final = out / "paed.pt"
    if final.exists():
        raise ConfigError(f"{final} exists: choose another output_dir or remove it")
    cfg = with_image_noise(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    x_tr, y_tr = read_pairs(cfg.train_files, cfg.layers, cfg.max_clusters)
    x_va, y_va = read_pairs(cfg.val_files, cfg.layers, cfg.max_clusters)
    model = build_paed(cfg)
    module = _module(model, cfg.lr, cfg.model.energy_scale_mev)
    dl_tr = torch.utils.data.DataLoader(_PairDataset(x_tr, y_tr), batch_size=cfg.batch_size, shuffle=True)
    dl_va = torch.utils.data.DataLoader(_PairDataset(x_va, y_va), batch_size=cfg.batch_size)
    callbacks: list[Any] = [ModelCheckpoint(dirpath=out / "checkpoints", monitor="val_loss", mode="min", save_top_k=1)]
    if cfg.patience:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience))
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs, accelerator="auto", devices=1, callbacks=callbacks,
        logger=CSVLogger(save_dir=out, name="logs", version=""), enable_progress_bar=progress,
        enable_model_summary=False, log_every_n_steps=10,
    )  # fmt: skip
    trainer.fit(module, dl_tr, dl_va)
    best = callbacks[0].best_model_path
    if best:
        state = torch.load(best, weights_only=True, map_location="cpu")["state_dict"]
        module.load_state_dict(state)
    with atomic_path(final) as tmp:
        torch.save({"state_dict": model.state_dict(), "config_yaml": yaml.safe_dump(cfg.model_dump(mode="json"))}, tmp)
    return final


def load_paed(path: str | Path):
    """``(model, cfg)`` from a file written by :func:`train_paed` (``weights_only`` loading)."""
    import torch
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"PAED weights {path} do not exist (train with train_paed first)")
    blob = torch.load(path, weights_only=True, map_location="cpu")
    cfg = PAEDConfig.model_validate(yaml.safe_load(blob["config_yaml"]))
    model = build_paed(cfg)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise CheckpointMismatchError(f"{path} does not match its stored PAED config: {err}") from None
    return model.eval(), cfg


def denoise(model: Any, images: dict[str, np.ndarray], batch_size: int = 2048) -> dict[str, np.ndarray]:
    """Apply the PAED to ``{raw_<layer>: (n, H, W)}`` images (MeV); returns denoised MeV images."""
    import torch

    n = len(next(iter(images.values())))
    out: dict[str, list[np.ndarray]] = {k: [] for k in images}
    model.eval()
    with torch.no_grad():
        for s in range(0, n, batch_size):
            res = model({k: torch.from_numpy(np.ascontiguousarray(v[s:s + batch_size])) for k, v in images.items()})
            for k in images:
                out[k].append(res[k].numpy())
    return {k: np.concatenate(v) if v else np.zeros_like(images[k]) for k, v in out.items()}


def with_image_noise(cfg: PAEDConfig) -> PAEDConfig:
    """``cfg`` with ``image_noise_mev``/``image_noise_significance`` filled from the attributes of
    its first training file where the config leaves them unset (the values travel with the weights).
    Files without the attributes leave them unset; :func:`lhcml.tasks.photon.denoise.denoise_file`
    then needs them from the file it denoises."""
    if cfg.image_noise_mev is not None and cfg.image_noise_significance is not None:
        return cfg
    noise, significance = read_image_noise(cfg.train_files[0])
    return cfg.model_copy(update={
        "image_noise_mev": cfg.image_noise_mev if cfg.image_noise_mev is not None else noise,
        "image_noise_significance": (cfg.image_noise_significance if cfg.image_noise_significance is not None
                                     else significance),
    })  # fmt: skip


def fit_paed(cfg: PAEDConfig, resume: bool = False, progress: bool = True) -> Path:
    """:func:`train_paed` behind the trainer protocol (no ``--resume``: train again)."""
    if resume:
        raise ConfigError("--resume is not supported for the PAED; train it again in a new output_dir")
    return train_paed(cfg, progress=progress)
