"""``lhcml fastcalo simulate``: single-particle shower samples for the generative fast calorimeter.

A run simulates ``n`` single particles (:func:`lhcml.sim.fastcalo.detailed_showers`) in shards
through :func:`lhcml.sim.runner.run_simulation` (deterministic per shard seed, resumable: a killed
run restarts at the first missing shard; local processes or Dask) and then merges the shards into

* ``<particle>_<energies>.h5``: CaloChallenge layout without electronic noise;
* ``<particle>_<energies>_noise.h5``: the same showers with the electronic noise of every cell;
* ``<particle>_<energies>_images.h5``: lhcml's photon-ID layout (``photons`` table with the
  shower shapes, ``images_<layer>`` normalised, ``raw_<layer>`` MeV) of the noisy showers;
* ``binning_<particle>.xml``: the voxelisation (:func:`lhcml.sim.fastcalo.voxel_binning`).

This module also gives the evaluation its lhcml-cluster-code shower shapes
(:func:`shower_shapes`): it is the fast-calorimeter task's one client of the simulation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.data.calochallenge import Binning, read_binning, write_binning, write_showers
from lhcml.errors import ConfigError


def sample_paths(output_dir: str | Path, particle: str, energies: str, run: str | None = None) -> dict[str, Path]:
    """The files of a sample in ``output_dir`` (``run``: the runner's process name, which names
    the shard folder, so samples of another η range never share shards)."""
    out = Path(output_dir)
    stem = f"{particle}_{energies}"
    return {
        "binning": out / f"binning_{particle}.xml",
        "showers": out / f"{stem}.h5",
        "showers_noise": out / f"{stem}_noise.h5",
        "images": out / f"{stem}_images.h5",
        "shards": out / "shards" / (stem if run is None else run),
    }


def simulate_fastcalo(
    output_dir: str | Path,
    particle: str = "photon",
    n_showers: int = 2000,
    energies: str = "discrete",
    seed: int = 1,
    showers_per_shard: int = 500,
    workers: int = 1,
    cluster: str | None = None,
    progress: bool = True,
    eta_range: tuple[float, float] | None = None,
) -> dict[str, Path]:
    """Simulate and write a shower sample (module docstring); returns its file paths.

    Parameters
    ----------
    particle
        ``photon``, ``electron``, ``pi0`` or ``pion`` (:data:`lhcml.sim.fastcalo.PARTICLES`).
    energies
        ``discrete`` (the 16 log-spaced points 1-260 GeV), ``continuous`` (log-uniform 1-260 GeV)
        or a fixed energy in GeV (e.g. ``65``).
    eta_range
        |η| range of the particles, drawn uniformly (default :data:`lhcml.sim.fastcalo.ETA_RANGE`,
        0.20-0.25 as ATLAS's samples); each shower's |η| is written as ``incident_eta``. The
        binning file records the range, so samples of different ranges go to different folders.
    """
    from lhcml.sim.fastcalo import (
        ETA_RANGE,
        check_eta_range,
        run_name,
        shower_event_fn,
        voxel_binning,
    )
    from lhcml.sim.runner import run_simulation

    if n_showers < 1:
        raise ConfigError(f"--showers must be >= 1, got {n_showers}")
    eta_range = check_eta_range(ETA_RANGE if eta_range is None else eta_range)
    name = run_name(particle, energies, eta_range)
    paths = sample_paths(output_dir, particle, energies, None if eta_range == ETA_RANGE else name)
    binning = voxel_binning(particle, eta_range=eta_range)
    if paths["binning"].exists():
        old = read_binning(paths["binning"])
        if old.sha256 != binning.sha256:
            raise ConfigError(f"{paths['binning']} holds another binning (or another eta range); use a new "
                              "output directory")
    binning = write_binning(binning, paths["binning"])
    shards = run_simulation(name, n_showers, 0.0, seed, paths["shards"], events_per_shard=showers_per_shard,
                            workers=workers, cluster=cluster, event_fn=shower_event_fn, progress=progress)  # fmt: skip
    merge_shards(shards, binning, paths, {"energies": energies, "seed": int(seed)}, eta_range)
    return paths


def merge_shards(shards: list[Path], binning: Binning, paths: dict[str, Path], attrs: dict[str, Any],
                 eta_range: tuple[float, float] | None = None) -> None:  # fmt: skip
    """Concatenate the shard files into the CaloChallenge and image-layout files (atomically)."""
    from lhcml.data.checks import open_h5
    from lhcml.data.h5 import write_h5
    from lhcml.sim.fastcalo import ETA_RANGE

    eta_range = ETA_RANGE if eta_range is None else eta_range

    parts: dict[str, list[np.ndarray]] = {}
    for s in shards:
        with open_h5(s) as f:
            for k in f:
                parts.setdefault(k, []).append(np.asarray(f[k][...]))
    tab = {k: np.concatenate(v) for k, v in parts.items()}
    e = tab["incident_energies"][:, 0] / 1e3
    common = {**attrs, "eta_min": eta_range[0], "eta_max": eta_range[1], "lhcml_layout": "calochallenge"}
    # |eta| of each shower: shards of this version carry incident_eta, older ones the truth table
    eta = tab["incident_eta"][:, 0] if "incident_eta" in tab else np.abs(tab["truth"]["eta"])
    # phi of each shower (where inside its phi cell the particle hits): the truth table's in every version
    phi = tab["incident_phi"][:, 0] if "incident_phi" in tab else np.asarray(tab["truth"]["phi"], np.float64)
    for key, noise in (("showers", False), ("showers_noise", True)):
        write_showers(paths[key], e, tab[key] / 1e3, binning, {**common, "noise": noise}, eta=eta, phi=phi)
    images = {k: v for k, v in tab.items() if k == "photons" or k.startswith(("images_", "raw_"))}
    if images:
        write_h5(paths["images"], images, attrs={**attrs, "particle": binning.particle, "units": "MeV"})


def shower_shapes(showers_gev: np.ndarray, binning: Binning) -> dict[str, np.ndarray]:
    """Photon-ID shower shapes of voxelised showers from lhcml's cluster code
    (:func:`lhcml.sim.fastcalo.shower_shapes`); cell binnings only."""
    from lhcml.sim.fastcalo import shower_shapes as _shapes

    return _shapes(showers_gev, binning)


def time_detailed(particle: str = "photon", energy_gev: float = 65.0, n: int = 200, seed: int = 1,
                  output: str | Path | None = None) -> dict[str, float]:  # fmt: skip
    """Detailed-simulation time per shower (:func:`lhcml.sim.fastcalo.time_detailed_shower`),
    optionally written as JSON (the denominator of the fast models' speed-up)."""
    import os
    import platform

    from lhcml import __version__
    from lhcml.atomic import atomic_write_text
    from lhcml.sim.fastcalo import time_detailed_shower

    res: dict[str, Any] = time_detailed_shower(particle, energy_gev, n, seed)
    res.update(particle=particle, energy_gev=float(energy_gev), lhcml_version=__version__,
               machine=f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    if output is not None:
        atomic_write_text(output, json.dumps(res, indent=2) + "\n")
    return res


def reference_eta(sample: Any, rng: np.random.Generator, source: str = "the reference") -> np.ndarray:
    """Each shower's |η| to generate a reference sample's twin with an η-conditioned model: the
    file's ``incident_eta``, or, for files written before it existed (one η slice, e.g. 0.20-0.25),
    draws uniform in the file's ``eta_min``-``eta_max`` attributes (as the sample was simulated)."""
    if sample.eta is not None:
        return np.asarray(sample.eta, np.float64)
    lo, hi = sample.attrs.get("eta_min"), sample.attrs.get("eta_max")
    if lo is None or hi is None:
        raise ConfigError(
            f"{source} has neither incident_eta nor eta_min/eta_max attributes, but the model is conditioned on "
            "|eta|: use showers from lhcml fastcalo simulate (--eta-range) or an energy-only model"
        )
    return rng.uniform(float(lo), float(hi), len(sample))


def reference_phi(sample: Any, rng: np.random.Generator) -> np.ndarray:
    """Each shower's φ (rad) to generate a reference sample's twin with a model told φ
    (``model.phi_cells``): the file's ``incident_phi``, or, for files without it (the
    CaloChallenge's, lhcml's before it was stored), uniform draws in -π..π, as the detailed photons
    are shot (the position inside the φ cell of the reference shower is then unknown)."""
    if sample.phi is not None:
        return np.asarray(sample.phi, np.float64)
    return rng.uniform(-np.pi, np.pi, len(sample))


def generate_like(
    model: str | Path, reference: str | Path, output: str | Path, binning: str | Path | None = None,
    seed: int = 1, max_showers: int | None = None, spot_readout: float | None = None,
    quantile_correction: str | Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Generate showers with an exported model (ONNX, onnxruntime, one thread) at the incident
    energies (and, for an η-conditioned model, the |η|: :func:`reference_eta`) of a reference file
    and write them in the CaloChallenge layout.

    ``binning``: the binning XML (default: the one stored in the model); ``spot_readout``: read the
    generated cells as the detailed simulation's energy spots
    (:class:`lhcml.tasks.fastcalo.readout.SpotReadout` with this quantile, e.g. 0.05); ``quantile_correction``:
    a :class:`lhcml.models.fastcalo.quantile_map.QuantileCorrection` file applied to the generated showers first
    (it must be fitted for the exported model's sampler: not checked here, the graph does not say). Returns
    ``{"output", "n", "s_per_shower"}`` (generation wall time per shower at batch 4096).
    """
    import time

    from lhcml.data.calochallenge import read_showers
    from lhcml.sim.fastcalo import OnnxShowerModel
    from lhcml.tasks.fastcalo.readout import SpotReadout

    readout = None if spot_readout is None else SpotReadout.from_geometry(fraction=spot_readout)
    corr = None
    if quantile_correction is not None:
        from lhcml.models.fastcalo.quantile_map import QuantileCorrection

        corr = QuantileCorrection.load(quantile_correction)
    b = read_binning(binning) if binning is not None else None
    gen = OnnxShowerModel(str(model), b)
    ref = read_showers(reference, gen.binning, max_showers=max_showers)
    if gen.particle != ref.binning.particle:
        raise ConfigError(f"model {model} generates {gen.particle}s but {reference} holds {ref.binning.particle}s")
    rng = np.random.default_rng(seed)
    eta = reference_eta(ref, rng, str(reference)) if gen.conditions_on_eta else ref.eta
    phi = reference_phi(ref, rng) if gen.conditions_on_phi else ref.phi
    t0 = time.perf_counter()
    showers = gen.generate(ref.energies, rng, eta=eta if gen.conditions_on_eta else None,
                           phi=phi if gen.conditions_on_phi else None)  # fmt: skip
    if corr is not None:
        if tuple(corr.layer_sizes) != tuple(gen.binning.layer_sizes):
            raise ConfigError(f"quantile correction {quantile_correction} is for layers of {list(corr.layer_sizes)} "
                              f"voxels, {model} generates {list(gen.binning.layer_sizes)}")  # fmt: skip
        showers = corr.apply(showers, ref.energies, eta)
    if readout is not None:
        showers = readout.apply(showers, gen.binning.layer_slices, np.random.default_rng([seed, 2]))
    dt = time.perf_counter() - t0
    write_showers(output, ref.energies, showers, gen.binning,
                  {"generator": str(model), "model_name": gen.meta.get("model_name", ""), "seed": int(seed),
                   **({} if spot_readout is None else {"spot_readout": float(spot_readout)}),
                   **({} if quantile_correction is None else {"quantile_correction": str(quantile_correction)})},
                  eta=eta, phi=phi)  # fmt: skip
    return {"output": str(output), "n": len(ref), "s_per_shower": dt / max(len(ref), 1)}


def generate_sample(model: Any, reference: Any, seed: int, batch: int = 5000, threshold_gev: float = 0.0,
                    readout: Any = None, correction: Any = None) -> Any:
    """A :class:`~lhcml.data.calochallenge.CaloSample` generated in memory by a trained (torch) generator
    ``model`` at the ``reference`` sample's energies (and, for an eta-conditioned model, its |eta|:
    :func:`reference_eta`);
    for a model with ``phi_cells``, its φ: :func:`reference_phi`); voxels below ``threshold_gev`` set to zero (a readout threshold on the generated showers);
    ``readout``: a :class:`lhcml.tasks.fastcalo.readout.SpotReadout` applied to the generated showers
    (its random numbers seeded by ``seed``), ``None``: the generator's showers as they come; ``correction``: a
    :class:`lhcml.models.fastcalo.quantile_map.QuantileCorrection` applied to the generated showers first
    (before the threshold and the readout; ``None``: none)."""
    import torch

    from lhcml.data.calochallenge import CaloSample

    g = torch.Generator().manual_seed(seed)
    e = torch.as_tensor(reference.energies, dtype=torch.float32)
    eta = phi = None
    if model.conditions_on_eta:
        eta = torch.as_tensor(reference_eta(reference, np.random.default_rng(seed)), dtype=torch.float32)
    if model.conditions_on_phi:
        phi = torch.as_tensor(reference_phi(reference, np.random.default_rng([seed, 1])), dtype=torch.float32)
    parts = [model.generate(e[i : i + batch], generator=g, eta=None if eta is None else eta[i : i + batch],
                            phi=None if phi is None else phi[i : i + batch]).numpy()
             for i in range(0, len(e), batch)]  # fmt: skip
    showers = np.concatenate(parts).astype(np.float32)
    if correction is not None:
        showers = correction.apply(showers, reference.energies, reference.eta if eta is None else eta.numpy())
    showers[showers < threshold_gev] = 0.0
    if readout is not None:
        showers = readout.apply(showers, reference.binning.layer_slices, np.random.default_rng([seed, 2]))
    return CaloSample(energies=reference.energies.copy(), showers=showers,
                      binning=reference.binning, eta=None if eta is None else eta.numpy().astype(np.float64),
                      phi=None if phi is None else phi.numpy().astype(np.float64))  # fmt: skip


def _loaded_for(path: str | Path, model: Any) -> Any:
    """The correction file ``path`` (``--after``), checked against the generator it is to extend."""
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection

    corr = QuantileCorrection.load(path)
    corr.check_model(model, source=f"--after {path}")
    return corr


def _geometry(binning: Binning, condition: str | None) -> dict[str, list[Any]]:
    """The cell geometry a conditional correction needs (``eta_phase``: the layers' η cell widths; ``shower_width``:
    those and the layers' numbers of η cells), ``{}`` for the others."""
    if condition == "eta_phase":
        return {"cell_deta": [lay.deta for lay in binning.layers]}
    if condition == "shower_width":
        return {"cell_deta": [lay.deta for lay in binning.layers], "cell_neta": [lay.n_eta for lay in binning.layers]}
    return {}


def _strips(binning: Binning, level: str, variable: str, phase_bins: int = 1,
            phase_from: str = "impact", phase_population: str = "all",
            eta_max: float | None = None, eta_min: float | None = None,
            layer: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The strip pass's layer (the binning's finest in η, or the one named ``layer``), its number of η cells and what
    it maps; ``{}`` for the other levels."""
    if level != "strips":
        return {}
    if layer is None:
        i = min(range(len(binning.layers)), key=lambda j: binning.layers[j].deta)
    else:
        (i,) = _layer_indices(binning, [layer], "the strip pass")
    out: dict[str, Any] = {"strip_layer": i, "strip_n_eta": int(binning.layers[i].n_eta), "strip_variable": variable}
    if phase_bins > 1:
        out["strip_phase_bins"] = int(phase_bins)
        out["strip_phase_from"] = phase_from
    if phase_population != "all":  # checked by the fit (only a core pass in phase bins takes "own")
        out["strip_phase_population"] = phase_population
    if eta_max is not None:  # checked by the fit (only an fside pass takes it)
        out["strip_eta_max"] = eta_max
    if eta_min is not None:  # the same
        out["strip_eta_min"] = eta_min
    if variable == "recentre" or phase_bins > 1:  # the impact's phase in the strip needs the strips' eta width
        out["cell_deta"] = [lay.deta for lay in binning.layers]
    return out


def _layer_indices(binning: Binning, names: Sequence[str] | None,
                   what: str = "the conditional correction") -> list[int] | None:  # fmt: skip
    """Indices of the binning layers named in ``names`` (``None``: ``None``); an unknown name is one ConfigError."""
    if names is None:
        return None
    layers = list(binning.layer_names)
    bad = [n for n in names if n not in layers]
    if bad:
        raise ConfigError(f"unknown layer(s) {bad} for {what}; the binning's layers: {layers}")
    return [layers.index(n) for n in names]


def fit_quantile_correction(
    checkpoint: str | Path, showers: str | Path, output: str | Path | None = None, *, binning: str | Path | None = None,
    variable: str = "energy_layers", n_quantiles: int = 32, eta_bins: int = 1, min_count: int = 20, seed: int = 101,
    max_showers: int | None = None, condition: str | None = None, condition_bins: int = 3, second_pass: bool = False,
    condition_layers: Sequence[str] | None = None, after: str | Path | None = None, level: str = "cells",
    strip_variable: str = "prominence", strip_phase_bins: int = 1, strip_phase_from: str = "impact",
    strip_phase_population: str = "all", strip_eta_max: float | None = None, strip_eta_min: float | None = None,
    strip_layer: str | None = None,
) -> tuple[Any, Path]:  # fmt: skip
    """``lhcml fastcalo quantile-map``: fit a :class:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection` of
    the generator in ``checkpoint`` onto the detailed showers of ``showers`` (its **training** file: the
    generator's own showers are drawn at that file's conditions, noise seed ``seed``) and write it to ``output``
    (default :func:`~lhcml.models.fastcalo.quantile_map.correction_path` beside the checkpoint, where
    ``benchmarks/fastcalo.py --quantile-correction`` finds it). ``binning``: the binning XML (default: the one
    stored in the checkpoint). ``condition`` / ``condition_bins``: a conditional correction (each voxel's map per
    bin of its layer's energy fraction; :class:`~lhcml.models.fastcalo.quantile_map.QuantileCorrection`), ``None``
    (default): the plain one; ``second_pass``: the conditional map fitted after the plain one (both in the file);
    ``level="layers"``: a plain map of the showers' layer energies (the total kept) instead of the cells;
    ``level="strips"``: the strip pass (:mod:`lhcml.models.fastcalo.strip_pass`) on the binning's layer with the finest
    η cells, mapping ``strip_variable`` (the second maximum's ``prominence`` or ``height``, the ``core``'s side share
    in ``strip_phase_bins`` bins of ``strip_phase_from``, each bin's map over ``strip_phase_population``,
    ``recentre``, or ``fside``, left alone at ``|η| >= strip_eta_max`` and ``|η| < strip_eta_min`` if given);
    ``strip_layer``: the binning layer's name the strip pass maps instead (e.g. ``middle``: an fside pass then maps the
    middle layer's η outer share, ``1 - R_eta``'s). Returns ``(correction, path)``."""
    from lhcml.data.calochallenge import parse_binning, read_binning, read_showers
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection, correction_path
    from lhcml.train.fastcalo import load_generator

    path = Path(output) if output is not None else correction_path(checkpoint)
    if path.resolve() == Path(checkpoint).resolve():  # before any work
        raise ConfigError(f"{path} is the checkpoint itself: write the correction to another file")
    model, meta = load_generator(checkpoint)
    if binning is None and not meta.get("binning_xml"):
        raise ConfigError(f"{checkpoint} stores no binning: pass the binning XML it was trained with (--binning)")
    b = read_binning(binning) if binning is not None else parse_binning(meta["binning_xml"], source=str(checkpoint))
    ref = read_showers(showers, b, max_showers=max_showers)
    gen = generate_sample(model, ref, seed)
    info = {"checkpoint": str(checkpoint), "training_file": str(showers), "seed": int(seed),
            "steps": getattr(model, "steps", None), "solver": getattr(model, "solver", None)}  # fmt: skip
    corr = QuantileCorrection.fit(gen.showers, gen.energies, ref.showers, ref.energies, b.layer_sizes,
                                  gen_eta=gen.eta, ref_eta=ref.eta, variable=variable, n_quantiles=n_quantiles,
                                  eta_bins=eta_bins, min_count=min_count, meta=info, condition=condition,
                                  condition_bins=condition_bins, second_pass=second_pass,
                                  condition_layers=_layer_indices(b, condition_layers),
                                  after=None if after is None else _loaded_for(after, model), level=level,
                                  **_geometry(b, condition), **_strips(b, level, strip_variable, strip_phase_bins, strip_phase_from,
                                                                        strip_phase_population, strip_eta_max,
                                                                        strip_eta_min, strip_layer))  # fmt: skip
    return corr, corr.save(path)


__all__ = ["fit_quantile_correction", "generate_like", "generate_sample", "merge_shards", "reference_eta", "reference_phi", "sample_paths", "shower_shapes", "simulate_fastcalo", "time_detailed"]
