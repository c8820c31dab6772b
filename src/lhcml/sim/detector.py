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


@dataclass(frozen=True)
class EndCapDisk:
    """A silicon disk at ``±z`` covering ``r_min < r < r_max`` (mm)."""

    name: str
    kind: str
    z: float
    r_min: float
    r_max: float
    hits_per_layer: int


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
class Tails:
    tail_fraction: float
    tail_scale: float
    wide_fraction: float
    wide_scale: float
    shared_hit_factor: float


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
    near_track_fraction: float
    near_track_dr: float
    pt_slope: float
    d0_sigma: float
    z0_sigma: float
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
            ``section=dict(field=value, ...)`` to change some fields of a section, or
            ``field=value`` for a top-level field. Unknown names raise :class:`ConfigError`.

        Examples
        --------
        >>> p = default_detector_params().with_updates(tails=dict(tail_fraction=0.0))
        >>> p.tails.tail_fraction
        0.0
        """
        changes: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in sections.items():
            if key not in names:
                raise ConfigError(f"unknown detector parameter section '{key}'{_suggest(key, names)}")
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                sub = {f.name for f in dataclasses.fields(current)}
                for k in value:
                    if k not in sub:
                        raise ConfigError(f"unknown detector parameter '{key}.{k}'{_suggest(k, sub)}")
                merged = {**dataclasses.asdict(current), **value}
                changes[key] = _build(type(current), merged, f"{key}", "with_updates")
            else:
                changes[key] = value
        return dataclasses.replace(self, **changes)


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
    for frac in (p.tails.tail_fraction, p.tails.wide_fraction, p.shared_hits.split_probability,
                 p.shared_hits.lost_probability, p.fakes.near_track_fraction):
        if not 0.0 <= frac <= 1.0:
            raise bad(f"fractions and probabilities must be in [0, 1], got {frac}")
    if p.tails.tail_fraction + p.tails.wide_fraction > 1.0:
        raise bad("tails: tail_fraction + wide_fraction must be <= 1")
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
