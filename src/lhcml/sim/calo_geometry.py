"""Calorimeter geometry and response: loader of ``calo_geometry.yaml`` into frozen dataclasses.

The geometry is an ATLAS-like LAr barrel (presampler optional, strips, middle, back) followed by
dead material and two Tile-like hadronic samplings. Each layer is a regular (eta, phi) grid:
``n_eta = 2 * round(eta_max / deta)`` cells in eta starting at ``-eta_max`` and ``n_phi`` cells
covering ``[-pi, pi)``. Cells are indexed ``(ieta, iphi)`` and flattened as
``ieta * n_phi + iphi``.

Depths are given in X0 and lambda_int at eta = 0; along a straight path from the beam line they
grow as ``cosh(eta)`` (:meth:`CaloGeometry.depth_boundaries`).

Examples
--------
>>> geo = load_geometry()
>>> geo.layer("middle").n_eta, geo.layer("middle").n_phi
(112, 256)
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lhcml.errors import ConfigError

TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class Layer:
    """One calorimeter sampling (or a dead-material slab when ``kind == 'dead'``)."""

    name: str
    kind: str  # "em", "had" or "dead"
    enabled: bool
    deta: float
    n_phi: int
    eta_max: float
    radius_mm: float
    thickness_x0: float
    thickness_lambda: float
    noise_mev: float

    @property
    def readout(self) -> bool:
        """True if the layer has cells (enabled and not dead material)."""
        return self.enabled and self.kind in ("em", "had")

    @property
    def dphi(self) -> float:
        return TWO_PI / self.n_phi

    @property
    def n_eta(self) -> int:
        return 2 * int(round(self.eta_max / self.deta))

    @property
    def n_cells(self) -> int:
        return self.n_eta * self.n_phi

    @property
    def eta_lo(self) -> float:
        """Lower eta edge of cell 0 (``-n_eta/2 * deta``)."""
        return -0.5 * self.n_eta * self.deta

    def eta_index(self, eta: np.ndarray) -> np.ndarray:
        """Cell index in eta (int64); -1 outside the layer's coverage."""
        i = np.floor((np.asarray(eta, dtype=np.float64) - self.eta_lo) / self.deta).astype(np.int64)
        return np.where((i >= 0) & (i < self.n_eta), i, -1)

    def phi_index(self, phi: np.ndarray) -> np.ndarray:
        """Cell index in phi (int64), wrapping around 2 pi."""
        p = np.mod(np.asarray(phi, dtype=np.float64) + np.pi, TWO_PI)
        return np.minimum(np.floor(p / self.dphi).astype(np.int64), self.n_phi - 1)

    def cell_index(self, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Flat cell index ``ieta * n_phi + iphi``; -1 outside the coverage."""
        ie = self.eta_index(eta)
        ip = self.phi_index(phi)
        return np.where(ie >= 0, ie * self.n_phi + ip, -1)

    def eta_centre(self, ieta: np.ndarray) -> np.ndarray:
        return self.eta_lo + (np.asarray(ieta) + 0.5) * self.deta

    def phi_centre(self, iphi: np.ndarray) -> np.ndarray:
        return -np.pi + (np.mod(np.asarray(iphi), self.n_phi) + 0.5) * self.dphi


@dataclass(frozen=True)
class Resolution:
    em_stochastic: float
    em_constant: float
    had_stochastic: float
    had_constant: float


@dataclass(frozen=True)
class EMMaterial:
    x0_mm: float
    critical_energy_mev: float
    z_eff: float
    moliere_radius_mm: float
    lambda_over_x0: float
    spots_per_gev: float
    min_spots: int
    pileup_spot_fraction: float


@dataclass(frozen=True)
class HadronParams:
    fem_e0_gev: float
    fem_m: float
    fem_sigma: float
    h_over_e: float
    tmax_a_lambda: float
    tmax_b_lambda: float
    alpha: float
    lateral_core_lambda: float
    lateral_tail_lambda: float
    lateral_core_fraction: float
    em_lateral_scale: float
    spots_per_gev: float
    min_spots: int


@dataclass(frozen=True)
class MipParams:
    mev_per_x0: float
    landau_width: float


@dataclass(frozen=True)
class FieldParams:
    bfield_t: float
    min_pt_gev: float


@dataclass(frozen=True)
class ConversionParams:
    enabled: bool
    x0_eta0: float
    x0_slope: float
    r_max_mm: float

    def material_x0(self, abs_eta: np.ndarray) -> np.ndarray:
        """Inner-detector material in X0 traversed up to r_max at ``|eta|`` (along the path)."""
        return self.x0_eta0 + self.x0_slope * np.asarray(abs_eta)

    def probability(self, abs_eta: np.ndarray) -> np.ndarray:
        """Conversion probability ``1 - exp(-7/9 X/X0)``."""
        return 1.0 - np.exp(-7.0 / 9.0 * self.material_x0(abs_eta))


@dataclass(frozen=True)
class ClusteringParams:
    seed_window: tuple[int, int]
    energy_window: tuple[int, int]
    seed_et_gev: float
    image_window: tuple[int, int]
    noise_significance: float
    second_max_noise_sigma: float


@dataclass(frozen=True)
class CaloGeometry:
    """The full calorimeter description (see module docstring)."""

    name: str
    layers: tuple[Layer, ...]
    acceptance_eta_max: float
    resolution: Resolution
    em_material: EMMaterial
    hadron: HadronParams
    mip: MipParams
    field: FieldParams
    conversions: ConversionParams
    clustering: ClusteringParams

    def layer(self, name: str) -> Layer:
        """The layer called ``name``; a :class:`ConfigError` lists the valid names otherwise."""
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise ConfigError(
            f"unknown calorimeter layer '{name}' (valid: {', '.join(x.name for x in self.layers)})"
        )

    @property
    def readout_layers(self) -> tuple[Layer, ...]:
        return tuple(lay for lay in self.layers if lay.readout)

    @property
    def em_layers(self) -> tuple[Layer, ...]:
        return tuple(lay for lay in self.readout_layers if lay.kind == "em")

    @property
    def had_layers(self) -> tuple[Layer, ...]:
        return tuple(lay for lay in self.readout_layers if lay.kind == "had")

    def depth_boundaries(self, unit: str = "x0") -> np.ndarray:
        """Cumulative layer boundaries at eta = 0, shape ``(n_layers + 1,)``, in X0 or lambda."""
        if unit not in ("x0", "lambda"):
            raise ValueError(f"unit must be 'x0' or 'lambda', got {unit!r}")
        t = [lay.thickness_x0 if unit == "x0" else lay.thickness_lambda for lay in self.layers]
        return np.concatenate([[0.0], np.cumsum(t)])

    @property
    def em_depth_x0(self) -> float:
        """Total depth of the EM calorimeter (all em-kind layers) at eta = 0 in X0."""
        return float(sum(lay.thickness_x0 for lay in self.layers if lay.kind == "em"))

    def with_changes(self, **changes: Any) -> CaloGeometry:
        """A copy with top-level fields replaced (e.g. ``resolution=...``); for studies and tests."""
        return dataclasses.replace(self, **changes)

    def without_noise(self) -> CaloGeometry:
        """A copy with zero electronic noise in every layer."""
        return self.with_changes(
            layers=tuple(dataclasses.replace(lay, noise_mev=0.0) for lay in self.layers)
        )


def _build(cls: type, data: Any, where: str) -> Any:
    """Construct a frozen dataclass from a mapping, with errors naming the bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{where}' in the calorimeter geometry must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(fields)})"
            raise ConfigError(f"unknown key '{where}.{key}' in the calorimeter geometry{hint}")
    missing = [k for k in fields if k not in data]
    if missing:
        raise ConfigError(f"missing key(s) {missing} in '{where}' of the calorimeter geometry")
    kwargs = {}
    for k, f in fields.items():
        v = data[k]
        if f.type in ("tuple[int, int]",):
            v = tuple(int(x) for x in v)
        elif f.type == "int":
            v = int(v)
        elif f.type == "float":
            v = float(v)
        elif f.type == "bool":
            v = bool(v)
        kwargs[k] = v
    return cls(**kwargs)


def geometry_from_dict(raw: dict[str, Any]) -> CaloGeometry:
    """Validate a geometry mapping (as in ``calo_geometry.yaml``) and build a :class:`CaloGeometry`."""
    if not isinstance(raw, dict):
        raise ConfigError("the calorimeter geometry must be a mapping at top level")
    top = {f.name for f in dataclasses.fields(CaloGeometry)}
    for key in raw:
        if key not in top:
            close = difflib.get_close_matches(key, list(top), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(sorted(top))})"
            raise ConfigError(f"unknown key '{key}' in the calorimeter geometry{hint}")
    missing = sorted(top - set(raw))
    if missing:
        raise ConfigError(f"missing key(s) {missing} in the calorimeter geometry")
    layers = tuple(_build(Layer, x, f"layers[{i}]") for i, x in enumerate(raw["layers"]))
    names = [lay.name for lay in layers]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate layer names in the calorimeter geometry: {names}")
    for lay in layers:
        if lay.kind not in ("em", "had", "dead"):
            raise ConfigError(f"layer '{lay.name}': kind must be em, had or dead, got {lay.kind!r}")
        if lay.deta <= 0 or lay.n_phi <= 0 or lay.eta_max <= 0 or lay.thickness_x0 < 0:
            raise ConfigError(f"layer '{lay.name}': deta, n_phi, eta_max must be > 0")
    for req in ("strips", "middle", "back"):
        if req not in names or not layers[names.index(req)].readout:
            raise ConfigError(f"the calorimeter geometry needs an enabled '{req}' layer")
    if not any(lay.readout and lay.kind == "had" for lay in layers):
        raise ConfigError("the calorimeter geometry needs at least one enabled 'had' layer")
    geo = CaloGeometry(
        name=str(raw["name"]),
        layers=layers,
        acceptance_eta_max=float(raw["acceptance_eta_max"]),
        resolution=_build(Resolution, raw["resolution"], "resolution"),
        em_material=_build(EMMaterial, raw["em_material"], "em_material"),
        hadron=_build(HadronParams, raw["hadron"], "hadron"),
        mip=_build(MipParams, raw["mip"], "mip"),
        field=_build(FieldParams, raw["field"], "field"),
        conversions=_build(ConversionParams, raw["conversions"], "conversions"),
        clustering=_build(ClusteringParams, raw["clustering"], "clustering"),
    )
    return geo


@lru_cache(maxsize=4)
def _load_default() -> CaloGeometry:
    text = resources.files("lhcml.sim").joinpath("calo_geometry.yaml").read_text()
    return geometry_from_dict(yaml.safe_load(text))


def load_geometry(path: str | Path | None = None) -> CaloGeometry:
    """Load the calorimeter geometry (the shipped ``calo_geometry.yaml`` when ``path`` is None).

    Parameters
    ----------
    path
        A YAML file with the same keys as the shipped one.

    Returns
    -------
    CaloGeometry
        Frozen description; use :meth:`CaloGeometry.with_changes` for variations.
    """
    if path is None:
        return _load_default()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calorimeter geometry file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return geometry_from_dict(raw)
