"""PAED workflow (seed 003): apply the pile-up denoising autoencoder to photon files.

The model is :class:`lhcml.models.photon.PAED`; it is trained by :mod:`lhcml.train.paed`
(``lhcml train configs/photon/paed.yaml`` or ``lhcml photon paed``) and exported by
:func:`lhcml.export.export_model`. The names of that workflow stay importable from here.

:func:`denoise_file` writes a copy of a photon file whose ``images_<layer>`` are the denoised
images, normalised as the simulation normalises them (:func:`lhcml.data.images.normalise_images`),
so a CNN trained with ``lhcml train`` is evaluated on them with ``lhcml predict`` unchanged. The
normalisation constants (per-cell noise, significance threshold) come from the file's attributes
(written by the simulation), else from the values stored with the PAED at training time, else
one clear error: nothing here needs the simulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.data.images import NOISE_ATTR, SIGNIFICANCE_ATTR, normalise_images, read_image_noise
from lhcml.errors import ConfigError, SchemaError
from lhcml.export.paed import export_paed_onnx
from lhcml.train.paed import (
    PAEDConfig,
    PAEDModelConfig,
    build_paed,
    denoise,
    fit_paed,
    load_paed,
    load_paed_config,
    read_pairs,
    train_paed,
)

__all__ = [
    "PAEDConfig",
    "PAEDModelConfig",
    "build_paed",
    "denoise",
    "denoise_file",
    "export_paed_onnx",
    "fit_paed",
    "load_paed",
    "load_paed_config",
    "pileup_energy_error",
    "read_pairs",
    "train_paed",
]


def pileup_energy_error(pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over clusters of ``|sum(pred) - sum(target)|`` per layer image (MeV).

    With ``pred`` = the image with pile-up this is the mean pile-up energy in the window; a
    good denoiser makes it small.
    """
    return {k: float(np.mean(np.abs(pred[k].sum(axis=(1, 2)) - target[k].sum(axis=(1, 2))))) for k in target}


def image_noise_for(src: str | Path, cfg: PAEDConfig) -> tuple[dict[str, float], float]:
    """The normalisation constants for the images of ``src``: the file's attributes, else those
    stored with the PAED (``cfg``).

    Raises
    ------
    SchemaError
        If neither gives the noise of every layer of the PAED and the significance.
    """
    noise, significance = read_image_noise(src)
    noise = noise if noise is not None else cfg.image_noise_mev
    significance = significance if significance is not None else cfg.image_noise_significance
    missing = [lay for lay in cfg.layers if lay not in (noise or {})]
    if missing or significance is None:
        raise SchemaError(
            f"{src} has no image-normalisation constants ({NOISE_ATTR} for layers {missing or cfg.layers}, "
            f"{SIGNIFICANCE_ATTR}) and the PAED does not store them: write the file with "
            "`lhcml photon dataset` (it records them), or set image_noise_mev "
            "({layer: noise per cell in MeV}) and image_noise_significance in the PAED config and train again"
        )
    return noise, significance


def denoise_file(paed_path: str | Path, src: str | Path, dst: str | Path) -> Path:
    """Copy photon file ``src`` to ``dst`` with ``images_<layer>`` replaced by the denoised,
    normalised images of the PAED's layers (atomic write; constants: :func:`image_noise_for`).
    """
    import h5py

    from lhcml.data.checks import open_h5

    model, cfg = load_paed(paed_path)
    noise, significance = image_noise_for(src, cfg)
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
                    img, _ = normalise_images(den[f"raw_{lay}"], noise[lay], significance)
                    fout.create_dataset(name, data=img, compression="lzf")
                else:
                    fin.copy(fin[name], fout, name=name)
    return dst
