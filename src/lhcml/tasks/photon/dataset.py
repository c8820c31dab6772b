"""Photon-ID datasets: prompt photons (γ+jet, H→γγ) and jet fakes (dijets) in train/val/test files.

:func:`make_photon_dataset` simulates the processes with
:func:`lhcml.sim.photons.simulate_photon_events`, keeps the truth-matched prompt photons of the
signal processes and the non-prompt candidates of the background process, mixes and shuffles
them and writes ``photon_train.h5``, ``photon_val.h5`` and ``photon_test.h5`` (atomic writes,
datasets ``photons`` + ``images_<layer>`` + ``images_<layer>_nopu`` (+ ``raw_*``)).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import ConfigError

SIGNAL_PROCESSES = ("gamma_jet", "h_gamgam")
BACKGROUND_PROCESSES = ("dijet_photon", "dijet_photon_unfiltered")


def select_candidates(data: Mapping[str, np.ndarray], process: str) -> dict[str, np.ndarray]:
    """Prompt photons from signal processes, fakes from background processes."""
    prompt = data["photons"]["isPromptPhoton"] == 1
    if process in SIGNAL_PROCESSES:
        keep = prompt
    elif process in BACKGROUND_PROCESSES:
        keep = ~prompt
    else:
        raise ConfigError(
            f"unknown photon process '{process}' (signal: {SIGNAL_PROCESSES}, background: {BACKGROUND_PROCESSES})"
        )
    return {k: v[keep] for k, v in data.items()}


def group_uniform(groups: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per entry from a hash of its group (splitmix64 of the integer): the same
    group always gets the same number, whatever else the sample holds."""
    z = np.asarray(groups).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def group_split(groups: np.ndarray, edges: tuple[float, float] = (0.6, 0.8)) -> np.ndarray:
    """0/1/2 (train/val/test) per entry from a hash of its group (:func:`group_uniform` cut at the
    cumulative ``edges``): the same group always lands in the same split, whatever else the
    sample holds."""
    return np.searchsorted(np.asarray(edges), group_uniform(groups), side="right")


def split_and_write(
    data: Mapping[str, np.ndarray],
    output_dir: str | Path,
    seed: int,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    prefix: str = "photon",
    geometry: Any = None,
    groups: np.ndarray | None = None,
    split: np.ndarray | None = None,
) -> dict[str, Path]:
    """Shuffle and write ``<prefix>_{train,val,test}.h5``; returns the paths by split name.

    The files' attributes record the images' normalisation constants (per-cell noise of each
    layer of ``geometry``, default the shipped calorimeter, and the significance threshold:
    :mod:`lhcml.data.images`), so the PAED and other later stages need no simulation geometry.

    With ``groups`` (one integer per candidate, e.g. its ``eventNumber``) the split is decided per
    group by a hash of the group (:func:`group_split`), not by ``seed``: all candidates of an event
    land in one split, and two samples of the same events (detailed and fast showers) split alike.
    ``split`` (0/1/2 = train/val/test per candidate, e.g. one fold of
    :func:`lhcml.tasks.photon.folds.fold_split`) gives the split directly and overrides both.
    """
    from lhcml.data.h5 import write_h5
    from lhcml.data.images import image_noise_attrs
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.clusters import IMAGE_LAYERS, layer_noise_mev

    geo = geometry or load_geometry()
    attrs = {"content": "photon candidates",
             **image_noise_attrs({lay: layer_noise_mev(geo, lay) for lay in IMAGE_LAYERS},
                                 geo.clustering.noise_significance)}  # fmt: skip

    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ConfigError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(data["photons"])
    if n < 3:
        raise ConfigError(f"only {n} photon candidates: simulate more events")
    which = None  # 0/1/2 per candidate, when the split is not the seed's shuffle
    if split is not None:
        which = np.asarray(split)
        if which.shape != (n,) or not np.isin(which, (0, 1, 2)).all():
            raise ConfigError(f"split must hold 0/1/2 (train/val/test) for each of the {n} candidates")
    elif groups is not None:
        which = group_split(np.asarray(groups), (fractions[0], fractions[0] + fractions[1]))
    if which is not None:
        pieces = {name: np.flatnonzero(which == k) for k, name in enumerate(("train", "val", "test"))}
    else:
        order = np.random.default_rng(seed).permutation(n)
        bounds = np.cumsum([0, *(int(round(f * n)) for f in fractions[:2])])
        pieces = {"train": order[bounds[0]:bounds[1]], "val": order[bounds[1]:bounds[2]], "test": order[bounds[2]:]}
    out = {}
    for split, idx in pieces.items():
        idx = np.sort(idx)
        path = Path(output_dir) / f"{prefix}_{split}.h5"
        write_h5(path, {k: v[idx] for k, v in data.items()}, attrs=attrs)
        out[split] = path
    return out


def make_photon_dataset(
    output_dir: str | Path,
    n_events: Mapping[str, int],
    mu: float = 0.0,
    seed: int = 1,
    pileup: Any = None,
    raw_images: bool = False,
    min_pt_gev: float = 20.0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    progress: bool = False,
    em_filter_et_gev: float | str | None = "process",
) -> dict[str, Path]:
    """Simulate and write a photon-ID dataset.

    Parameters
    ----------
    output_dir
        Where the three files go.
    n_events
        Events per process, e.g. ``{"gamma_jet": 5000, "dijet_photon": 5000}``.
    mu, pileup
        Pile-up level and library (:class:`lhcml.sim.pileup.PileupLibrary`).
    seed
        Base seed (process ``k`` uses ``seed + k``).
    raw_images
        Also store MeV images (needed to train the PAED denoiser).
    em_filter_et_gev
        JF17-style EM generator filter for the background processes
        (:func:`lhcml.sim.photons.em_filter`): ``"process"`` (default) uses each process's own
        (17 GeV for ``dijet_photon``, none for ``dijet_photon_unfiltered``), a number overrides it,
        ``None`` switches it off.

    Returns
    -------
    dict[str, Path]
        ``{"train": ..., "val": ..., "test": ...}``.
    """
    from lhcml.sim.photons import simulate_photon_events

    parts = []
    for k, (proc, n) in enumerate(n_events.items()):
        filt = em_filter_et_gev if proc in BACKGROUND_PROCESSES else None
        data = simulate_photon_events(proc, int(n), mu, seed + k, pileup, progress or None,
                                      min_pt_gev=min_pt_gev, raw_images=raw_images, em_filter_et_gev=filt)
        parts.append(select_candidates(data, proc))
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return split_and_write(merged, output_dir, seed, fractions)
