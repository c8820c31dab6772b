"""Calorimeter cell images in flat files: normalisation and the per-cell noise it needs.

Photon files hold per-layer images ``images_<layer>`` ``(n, H, W)``, each divided by its own
energy sum where that sum is significant (more than ``significance`` times the noise of the
summed cells), else all zeros. Whoever writes such a file (the simulation,
:func:`lhcml.tasks.photon.dataset.make_photon_dataset`) stores the constants of that
normalisation in the file attributes, so later stages (the PAED denoiser, a user's own files)
normalise the same way without the simulation's geometry:

* ``image_noise_mev``: JSON mapping layer name -> noise per cell (MeV);
* ``image_noise_significance``: the significance threshold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lhcml.errors import SchemaError

#: file attributes holding the normalisation constants of the images
NOISE_ATTR = "image_noise_mev"
SIGNIFICANCE_ATTR = "image_noise_significance"


def normalise_images(img: np.ndarray, sigma_cell_mev: float, significance: float) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, H, W)`` divided by their sums where the sum exceeds ``significance`` times the
    noise of the summed cells (else zeros); returns ``(normalised float32, sums)``."""
    s = img.sum(axis=(1, 2)).astype(np.float64)
    thr = significance * sigma_cell_mev * math.sqrt(img.shape[1] * img.shape[2])
    ok = s > max(thr, 1e-6)
    normed = np.where(ok[:, None, None], img / np.where(ok, s, 1.0)[:, None, None], 0.0)
    return normed.astype(np.float32), s


def image_noise_attrs(noise_mev: dict[str, float], significance: float) -> dict[str, str | float]:
    """The file attributes that record the image normalisation constants."""
    return {NOISE_ATTR: json.dumps({k: float(v) for k, v in noise_mev.items()}), SIGNIFICANCE_ATTR: float(significance)}


def read_image_noise(path: str | Path) -> tuple[dict[str, float] | None, float | None]:
    """``(noise per cell by layer in MeV, significance)`` from a file's attributes; ``None`` where
    an attribute is absent.

    Raises
    ------
    SchemaError
        If ``image_noise_mev`` is present but not a JSON mapping of numbers.
    """
    from lhcml.data.checks import open_h5

    with open_h5(path) as f:
        raw = f.attrs.get(NOISE_ATTR)
        sig = f.attrs.get(SIGNIFICANCE_ATTR)
    noise = None
    if raw is not None:
        try:
            noise = {str(k): float(v) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, AttributeError):
            raise SchemaError(f"{path}: attribute '{NOISE_ATTR}' must be a JSON mapping layer -> MeV, got {raw!r}") from None
    return noise, (float(sig) if sig is not None else None)
