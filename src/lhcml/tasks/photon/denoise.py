"""PAED workflow: train the pile-up denoising autoencoder, apply it, export it (seed 003).

Training pairs come from one simulation: every cluster has its image with pile-up
(``raw_<layer>``, MeV) and its pile-up-free twin (``raw_<layer>_nopu``: the same cells, the
same electronic noise, no pile-up), written by :func:`lhcml.tasks.photon.dataset.make_photon_dataset`
with ``raw_images=True``. The model (:class:`lhcml.models.photon.PAED`) maps the first to the
second; the loss is the mean squared error in units of ``energy_scale_mev``.

Why a compact Lightning loop here and not ``lhcml train``: the shared trainer's module is a
classifier (labels, class weights, softmax outputs, rejection metrics) and its datamodule
yields inputs and class labels; image-to-image regression with targets taken from other
datasets of the file would need a second module and datamodule inside ``lhcml.train``. The
loop below is the minimum for this one model (Lightning handles devices, checkpoints, early
stopping, logging), reading the paired images into memory.

After denoising, :func:`denoise_file` writes a copy of a photon file whose ``images_<layer>``
are the denoised images normalised as in :mod:`lhcml.sim.clusters`, so a CNN trained with
``lhcml train`` is evaluated on them with ``lhcml predict`` unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from lhcml.atomic import atomic_path
from lhcml.config import StrictModel, load_config
from lhcml.errors import CheckpointMismatchError, ConfigError, SchemaError


class PAEDModelConfig(StrictModel):
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


def pileup_energy_error(pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over clusters of ``|sum(pred) - sum(target)|`` per layer image (MeV).

    With ``pred`` = the image with pile-up this is the mean pile-up energy in the window; a
    good denoiser makes it small.
    """
    return {k: float(np.mean(np.abs(pred[k].sum(axis=(1, 2)) - target[k].sum(axis=(1, 2))))) for k in target}


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
    return build_model("paed", 0, dims, **cfg.model.model_dump())


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


def denoise_file(paed_path: str | Path, src: str | Path, dst: str | Path, geometry: Any = None) -> Path:
    """Copy photon file ``src`` to ``dst`` with ``images_<layer>`` replaced by the denoised,
    normalised images of the PAED's layers (atomic write).
    """
    import h5py

    from lhcml.data.checks import open_h5
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.clusters import layer_noise_mev, normalise_images

    model, cfg = load_paed(paed_path)
    geo = geometry or load_geometry()
    x, _ = read_pairs([src], cfg.layers)
    den = denoise(model, x)
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ConfigError("denoise_file writes a new file: dst must differ from src")
    with atomic_path(dst) as tmp:
        with open_h5(src) as fin, h5py.File(tmp, "w") as fout:
            for k, v in fin.attrs.items():
                fout.attrs[k] = v
            fout.attrs["denoised_by"] = str(paed_path)
            for name in fin:
                lay = name[len("images_"):] if name.startswith("images_") else None
                if lay in cfg.layers:
                    img, _ = normalise_images(den[f"raw_{lay}"], layer_noise_mev(geo, lay),
                                              geo.clustering.noise_significance)
                    fout.create_dataset(name, data=img, compression="lzf")
                else:
                    fin.copy(fin[name], fout, name=name)
    return dst


def export_paed_onnx(paed_path: str | Path, output: str | Path, force: bool = False, atol: float = 1e-4,
                     n_check: int = 64, seed: int = 0) -> dict[str, float]:
    """Export the PAED to ONNX (inputs ``raw_<layer>`` (batch, H, W) in MeV, outputs
    ``denoised_<layer>`` and ``latent``) and check onnxruntime against torch.

    Returns
    -------
    dict
        ``{"max_abs_diff": ...}``: images in units of ``energy_scale_mev``, latent absolute.
    """
    import onnxruntime as ort
    import torch

    output = Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass force=True to overwrite")
    model, cfg = load_paed(paed_path)
    groups = list(model.groups)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *xs):
            res = self.model(dict(zip(groups, xs, strict=True)))
            return (*[res[g] for g in groups], res["latent"])

    wrapper = Wrapper().eval()
    rng = np.random.default_rng(seed)
    shapes = [model.image_shapes[g] for g in groups]
    arrays = [np.abs(rng.normal(0, 300.0, size=(n_check, *s))).astype(np.float32) for s in shapes]
    out_names = [f"denoised_{g[len('raw_'):]}" for g in groups] + ["latent"]
    with atomic_path(output) as tmp:
        torch.onnx.export(
            wrapper, tuple(torch.from_numpy(a[:2]) for a in arrays), str(tmp), input_names=groups,
            output_names=out_names, opset_version=17, dynamo=False,
            dynamic_axes={n: {0: "batch"} for n in [*groups, *out_names]},
        )  # fmt: skip
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, dict(zip(groups, arrays, strict=True)))
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(*[torch.from_numpy(a) for a in arrays])]
        scale = cfg.model.energy_scale_mev
        diff = max(float(np.max(np.abs(g - r))) / (scale if k < len(groups) else 1.0)
                   for k, (g, r) in enumerate(zip(got, ref, strict=True)))
        if diff > atol:
            raise RuntimeError(f"onnxruntime and torch differ by {diff:.2e} (> {atol}) for the PAED")
        del sess
    return {"max_abs_diff": diff}
