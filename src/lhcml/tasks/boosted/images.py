"""Jet images for plots and inspection (numpy API over :func:`lhcml.models.images.jet_images_torch`).

The jet-image CNN (``jet_image_cnn``) builds its images *inside the model* from the ``flow``
constituents, so training, prediction and the exported ONNX model all take constituents and no
image dataset is stored. This module gives the same images as numpy arrays (one
implementation: it calls the torch function) and the average image per class.
"""

from __future__ import annotations

import numpy as np


def jet_images(flow: np.ndarray, n_pixels: int = 40, half_width: float = 1.0) -> np.ndarray:
    """Preprocessed jet images ``(n_jets, n_pixels, n_pixels)`` (rows Δφ', columns Δη').

    Parameters
    ----------
    flow
        Structured constituent array ``(n_jets, N)`` with ``pt``, ``deta``, ``dphi``, ``valid``.
    n_pixels, half_width
        Image size and half-extent (see :mod:`lhcml.models.images`).
    """
    import torch

    from lhcml.errors import SchemaError
    from lhcml.models.images import jet_images_torch

    names = flow.dtype.names or ()
    missing = [f for f in ("pt", "deta", "dphi", "valid") if f not in names]
    if missing:
        raise SchemaError(f"flow lacks {missing} needed for jet images")
    valid = torch.as_tensor(np.asarray(flow["valid"], dtype=bool))

    def col(name: str) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(flow[name], dtype=np.float64))
        return torch.where(valid, x, torch.zeros_like(x))

    with torch.no_grad():
        img = jet_images_torch(col("pt"), col("deta"), col("dphi"), valid, n_pixels, half_width)
    return img[:, 0].numpy()


def average_images(images: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Mean image per class label ``{label: (H, W)}``."""
    return {int(c): images[labels == c].mean(axis=0) for c in np.unique(labels)}
