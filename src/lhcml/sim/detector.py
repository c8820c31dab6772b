"""Parameters of the parametric ATLAS-like inner detector, loaded from one documented YAML file.

The numbers live in ``detector_params.yaml`` next to this module (each with a comment citing its
source or saying "our choice"). :func:`load_detector_params` turns that file, or a user's copy of
it, into a frozen, typed :class:`DetectorParams`; an unknown or missing key is a
:class:`~lhcml.errors.ConfigError` naming the key and the file.

Examples
--------
>>> from lhcml.sim.detector import default_detector_params
>>> p = default_detector_params()
>>> p.field_tesla
2.0
>>> [layer.radius for layer in p.barrel_layers][:4]
[33.0, 50.5, 88.5, 122.5]
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lhcml.errors import ConfigError

#: conversion: radius of curvature [mm] = pT [GeV] / (C_CURV · B [T] · |q|)
C_CURV = 0.299792458e-3  # GeV / (T · mm)


@dataclass(frozen=True)
class BeamSpot:
    """Gaussian luminous region (mm)."""

    sigma_xy: float
    sigma_z: float


@dataclass(frozen=True)
class BarrelLayer:
    """A cylindrical silicon layer at ``radius`` covering ``|z| < half_length`` (mm)."""

    name: str
    kind: str
    radius: float
    half_length: float
    hits_per_layer: int
    n_phi_modules: int
    n_z_modules: int
    phi_overlap: float


@dataclass(frozen=True)
class EndCapDisk:
    """A silicon disk at ``±z`` covering ``r_min < r < r_max`` (mm)."""

    name: str
    kind: str
    z: float
    r_min: float
    r_max: float
    hits_per_layer: int
    n_phi_modules: int
    n_r_modules: int
    phi_overlap: float


@dataclass(frozen=True)
class HitEfficiency:
    ibl: float
    pixel: float
    sct: float


@dataclass(frozen=True)
class Acceptance:
    pt_min: float
    pt_min_true: float
    eta_max: float
    min_si_hits: int
    min_pixel_hits: int
    max_abs_d0: float
    max_abs_z0: float


@dataclass(frozen=True)
class Efficiency:
    eta_edges: tuple[float, ...]
    eta_values: tuple[float, ...]
    pt_edges: tuple[float, ...]
    pt_values: tuple[float, ...]
    pt_reference: float
    radius_points: tuple[float, ...]
    radius_values: tuple[float, ...]
    muon_factor: float
    electron_factor: float


@dataclass(frozen=True)
class Resolution:
    d0_a: float
    d0_b: float
    z0st_a: float
    z0st_b: float
    phi_a: float
    phi_b: float
    cot_a: float
    cot_b: float
    qoverp_a: float
    qoverp_b: float
    qoverp_eta_slope: float


@dataclass(frozen=True)
class Modules:
    """Dead-module fractions per layer kind, their placement seed and hand-placed dead modules."""

    dead_fraction_ibl: float
    dead_fraction_pixel: float
    dead_fraction_sct: float
    dead_seed: int
    dead_modules: tuple[str, ...]


@dataclass(frozen=True)
class TailScales:
    """Width multipliers of the core resolution, one per track parameter."""

    d0: float
    z0: float
    phi: float
    theta: float
    qoverp: float


@dataclass(frozen=True)
class MaterialTails:
    elastic_to_inelastic: float
    q_transfer: float


@dataclass(frozen=True)
class DenseCoreTails:
    probability_per_shared_hit: float
    scale: TailScales


@dataclass(frozen=True)
class PatternTails:
    rate: float
    density_rate: float
    scale: TailScales


@dataclass(frozen=True)
class Tails:
    """Non-Gaussian resolution tails, one block per physical source."""

    density_radius: float
    material: MaterialTails
    dense_core: DenseCoreTails
    pattern_recognition: PatternTails


@dataclass(frozen=True)
class SharedHits:
    ibl_drphi: float
    ibl_dz: float
    pixel_drphi: float
    pixel_dz: float
    sct_drphi: float
    sct_dz: float
    split_probability: float
    lost_probability: float


@dataclass(frozen=True)
class Material:
    radii: tuple[float, ...]
    interaction_lengths: tuple[float, ...]
    radiation_lengths: tuple[float, ...]
    hadron_p_min: float
    secondaries_mean: float
    secondary_energy_fraction: float
    secondary_pt_kick: float
    photon_e_min: float


@dataclass(frozen=True)
class Fakes:
    base_rate: float
    density_rate: float
    density_radius: float
    occupancy_rate: float
    spread: float
    pt_slope: float
    d0_sigma: float
    z0_sigma: float
    hit_probability_pixel: float
    hit_probability_sct: float
    uncertainty_scale: float


@dataclass(frozen=True)
class LeptonID:
    electron_efficiency: float
    electron_pt_min: float
    conversion_electron_efficiency: float
    muon_efficiency: float
    muon_p_min: float
    hadron_as_electron: float
    hadron_as_muon: float


@dataclass(frozen=True)
class AssociationParams:
    cone_a: float
    cone_b: float
    cone_c: float
    max_abs_d0: float
    max_abs_z0sintheta: float
    min_si_hits: int
    max_si_holes: int
    max_pixel_holes: int
    pv_vertex_radius: float


@dataclass(frozen=True)
class Vertexing:
    """Primary-vertex finder settings (:mod:`lhcml.sim.vertexing`)."""

    track_pt_min: float
    track_max_abs_d0: float
    track_min_si_hits: int
    track_max_pixel_holes: int
    seed_window: float
    fit_window: float
    annealing_temperatures: tuple[float, ...]
    chi2_cut: float
    removal_chi2_cut: float
    min_tracks: int
    max_vertices: int
    hs_match_window: float


@dataclass(frozen=True)
class DetectorParams:
    """All parameters of the parametric tracker (see ``detector_params.yaml`` for sources)."""

    beam_spot: BeamSpot
    field_tesla: float
    barrel_layers: tuple[BarrelLayer, ...]
    end_cap_disks: tuple[EndCapDisk, ...]
    hit_efficiency: HitEfficiency
    modules: Modules
    acceptance: Acceptance
    efficiency: Efficiency
    resolution: Resolution
    tails: Tails
    shared_hits: SharedHits
    material: Material
    fakes: Fakes
    lepton_id: LeptonID
    association: AssociationParams
    vertexing: Vertexing

    def with_updates(self, **sections: Any) -> DetectorParams:
        """A copy with whole sections or nested fields replaced.

        Parameters
        ----------
        **sections
            ``section=dict(field=value, ...)`` to change some fields of a section (nested
            sections merge the same way: ``tails=dict(material=dict(q_transfer=0.2))``), or
            ``field=value`` for a top-level field. Unknown names raise :class:`ConfigError`.

        Examples
        --------
        >>> p = default_detector_params().with_updates(tails=dict(pattern_recognition=dict(rate=0.0)))
        >>> p.tails.pattern_recognition.rate
        0.0
        """
        changes: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in sections.items():
            if key not in names:
                raise ConfigError(f"unknown detector parameter section '{key}'{_suggest(key, names)}")
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                merged = _merge(dataclasses.asdict(current), value, current, key)
                changes[key] = _build(type(current), merged, f"{key}", "with_updates")
            else:
                changes[key] = value
        return dataclasses.replace(self, **changes)


def _merge(base: dict, update: dict, current: Any, where: str) -> dict:
    """``base`` (asdict of ``current``) with ``update`` merged in, nested sections recursively."""
    sub = {f.name for f in dataclasses.fields(current)}
    out = dict(base)
    for k, v in update.items():
        if k not in sub:
            raise ConfigError(f"unknown detector parameter '{where}.{k}'{_suggest(k, sub)}")
        inner = getattr(current, k)
        if isinstance(v, dict) and dataclasses.is_dataclass(inner):
            out[k] = _merge(base[k], v, inner, f"{where}.{k}")
        else:
            out[k] = v
    return out


def _suggest(key: str, choices: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(sorted(choices))})"


def _convert(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"bad value for '{where}' in {source}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, v, f"{where}[{i}]", source) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"bad value for '{where}' in {source}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"bad value for '{where}' in {source}: expected an integer, got {value!r}")
        return int(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"bad value for '{where}' in {source}: expected a string, got {value!r}")
        return value
    if isinstance(tp, types.UnionType):  # pragma: no cover - not used by the schema
        return value
    return value


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"bad value for '{where or cls.__name__}' in {source}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in fields:
            full = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown key '{full}' in {source}{_suggest(str(key), fields)}")
    kwargs = {}
    for name in fields:
        full = f"{where}.{name}" if where else name
        if name not in data:
            raise ConfigError(f"missing required key '{full}' in {source}")
        kwargs[name] = _convert(hints[name], data[name], full, source)
    return cls(**kwargs)


def _check(p: DetectorParams, source: str) -> None:
    """Physics-level consistency checks that a typo would break."""

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{msg} in {source}")

    e = p.efficiency
    if len(e.eta_edges) != len(e.eta_values) or len(e.pt_edges) != len(e.pt_values):
        raise bad("efficiency: *_edges and *_values must have the same length")
    if len(e.radius_points) != len(e.radius_values):
        raise bad("efficiency: radius_points and radius_values must have the same length")
    for name in ("eta_edges", "pt_edges", "radius_points"):
        v = getattr(e, name)
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise bad(f"efficiency.{name} must be strictly increasing")
    m = p.material
    if not (len(m.radii) == len(m.interaction_lengths) == len(m.radiation_lengths)):
        raise bad("material: radii, interaction_lengths and radiation_lengths must have the same length")
    for layer in (*p.barrel_layers, *p.end_cap_disks):
        if layer.kind not in ("pixel", "sct"):
            raise bad(f"layer '{layer.name}': kind must be 'pixel' or 'sct', got '{layer.kind}'")
    radii = [layer.radius for layer in p.barrel_layers]
    if radii != sorted(radii):
        raise bad("barrel_layers must be ordered by increasing radius")
    if p.barrel_layers[0].kind != "pixel":
        raise bad("the innermost barrel layer must be a pixel layer (the IBL)")
    t, mo, f = p.tails, p.modules, p.fakes
    for name, frac in (("tails.dense_core.probability_per_shared_hit", t.dense_core.probability_per_shared_hit),
                       ("tails.pattern_recognition.rate", t.pattern_recognition.rate),
                       ("shared_hits.split_probability", p.shared_hits.split_probability),
                       ("shared_hits.lost_probability", p.shared_hits.lost_probability),
                       ("modules.dead_fraction_ibl", mo.dead_fraction_ibl),
                       ("modules.dead_fraction_pixel", mo.dead_fraction_pixel),
                       ("modules.dead_fraction_sct", mo.dead_fraction_sct),
                       ("fakes.hit_probability_pixel", f.hit_probability_pixel),
                       ("fakes.hit_probability_sct", f.hit_probability_sct)):
        if not 0.0 <= frac <= 1.0:
            raise bad(f"{name} must be in [0, 1], got {frac}")
    for name, v in (("tails.material.elastic_to_inelastic", t.material.elastic_to_inelastic),
                    ("tails.material.q_transfer", t.material.q_transfer),
                    ("tails.pattern_recognition.density_rate", t.pattern_recognition.density_rate),
                    ("fakes.base_rate", f.base_rate), ("fakes.density_rate", f.density_rate)):
        if v < 0:
            raise bad(f"{name} must be >= 0, got {v}")
    for blk in ("dense_core", "pattern_recognition"):
        sc = getattr(t, blk).scale
        for k, v in dataclasses.asdict(sc).items():
            if v < 1.0:
                raise bad(f"tails.{blk}.scale.{k} must be >= 1 (a tail is wider than the core), got {v}")
    for layer in (*p.barrel_layers, *p.end_cap_disks):
        nw = layer.n_z_modules if isinstance(layer, BarrelLayer) else layer.n_r_modules
        if layer.n_phi_modules < 1 or nw < 1:
            raise bad(f"layer '{layer.name}': module counts must be >= 1")
        if not 0.0 <= layer.phi_overlap < 1.0:
            raise bad(f"layer '{layer.name}': phi_overlap must be in [0, 1), got {layer.phi_overlap}")
    layers = {layer.name: layer for layer in (*p.barrel_layers, *p.end_cap_disks)}
    for spec in mo.dead_modules:
        parts = spec.split("/")
        ok = len(parts) == 3 and parts[0] in layers and parts[1].isdigit() and parts[2].isdigit()
        if ok:
            layer = layers[parts[0]]
            nw = layer.n_z_modules if isinstance(layer, BarrelLayer) else layer.n_r_modules
            ok = int(parts[1]) < layer.n_phi_modules and int(parts[2]) < nw
        if not ok:
            raise bad(f"modules.dead_modules entry '{spec}' must be 'LAYER/phi_index/z_or_ring_index' with "
                      f"LAYER one of {sorted(layers)} and indices inside its module grid")
    if p.field_tesla <= 0:
        raise bad(f"field_tesla must be positive, got {p.field_tesla}")


def load_detector_params(path: str | Path | None = None) -> DetectorParams:
    """Load detector parameters from a YAML file (default: the shipped ``detector_params.yaml``).

    Parameters
    ----------
    path
        A YAML file with the same keys as the shipped one, or ``None`` for the shipped defaults.

    Returns
    -------
    DetectorParams
        Frozen and typed; consistent (table lengths, probabilities in [0, 1], ordered layers).

    Raises
    ------
    ConfigError
        Unknown or missing key, wrong type or inconsistent tables, naming the key and the file.
    """
    if path is None:
        text = resources.files("lhcml.sim").joinpath("detector_params.yaml").read_text()
        source = "detector_params.yaml (shipped)"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"detector parameter file '{path}' does not exist")
        text = path.read_text()
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None
    params = _build(DetectorParams, data, "", source)
    _check(params, source)
    return params


@lru_cache(maxsize=1)
def default_detector_params() -> DetectorParams:
    """The shipped parameters (loaded once and cached; the object is immutable)."""
    return load_detector_params(None)
