"""Calorimeter showers in the CaloChallenge layout: binning XML files and shower HDF5 files.

The Fast Calorimeter Simulation Challenge 2022 (docs/references.md §14) stores single-particle
showers as two HDF5 datasets,

* ``incident_energies``: ``(N, 1)`` float, MeV;
* ``showers``: ``(N, V)`` float, MeV, the flattened voxels, layer after layer,

and describes the voxelisation in a binning XML file::

    <Bins>
      <Particle name="photon" pid="22">
        <Layer id="0" r_edges="0,5,10,30,50,100,200,400,600" n_bin_alpha="1"/>
        ...

Each layer is a polar grid around the particle's extrapolated impact point: ``len(r_edges) - 1``
radial bins (mm) times ``n_bin_alpha`` angular bins of equal width in ``[-pi, pi)``; inside a
layer the voxel index runs over the radial bins fastest (``alpha_bin * n_r + r_bin``, as the
challenge's ``XMLHandler``); a layer with ``r_edges="0"`` has no voxels. Voxel centres in the
challenge's evaluation are ``x = r_mid cos(alpha_mid)`` ("eta" direction) and
``y = r_mid sin(alpha_mid)`` ("phi" direction), in mm.

lhcml's own showers (:mod:`lhcml.sim.fastcalo`) use the cells of the detailed photon calorimeter
instead of polar bins: per layer a fixed window of ``n_eta x n_phi`` cells centred on the cell
the shower axis crosses in that layer (the impact cell). A layer element then carries lhcml's
extension attributes instead of ``r_edges``::

    <Layer id="2" name="middle" lhcml_n_eta="7" lhcml_n_phi="11" lhcml_deta="0.025"
           lhcml_dphi="0.0245437"/>

with voxel index ``i_eta * n_phi + i_phi`` (η-major, the layout of lhcml's cell images) and
voxel centres at ``((i_eta - (n_eta - 1) / 2) deta, (i_phi - (n_phi - 1) / 2) dphi)`` from the
impact cell's centre. Layer ids follow ATLAS's calorimeter samplings as the challenge does
(1, 2, 3: EM barrel strips, middle, back; 12, 13: Tile). :func:`read_binning` accepts both kinds
(one particle per call); :func:`read_showers` returns a :class:`CaloSample` in GeV.

**Incident |η|** (lhcml's extension, optional): lhcml samples shot over an η range (``lhcml
fastcalo simulate --eta-range``) add a third dataset ``incident_eta`` ``(N, 1)`` float, the
particle's |η| (showers of particles at η < 0 are stored mirrored in η, so only |η| matters).
The challenge's files do not have it; :func:`read_showers` then returns ``eta = None``, and the
two standard datasets are unchanged, so the challenge's own readers still read lhcml's files.
Likewise ``incident_phi`` ``(N, 1)``: the particle's φ in radians (-π..π; the cells are fixed in
φ, so where inside its φ cell the particle hits is ``φ / Δφ mod 1``), ``phi = None`` without it.

Files written by lhcml (:func:`write_showers`) also carry attributes: ``particle``, ``pid``,
``binning_sha256`` (of the binning XML's bytes; :func:`read_showers` refuses a binning file with
another hash) and whatever the writer adds (``eta_min``, ``eta_max``, ``noise``, ...).
"""

from __future__ import annotations

import hashlib
import math
import xml.etree.ElementTree as ET  # noqa: S405 - parses local binning files (no entities, no network)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.errors import ConfigError, InputNotFoundError

#: the unit of the CaloChallenge files: MeV per GeV
MEV_PER_GEV = 1000.0
#: the two dataset names of the layout
ENERGY_KEY, SHOWER_KEY = "incident_energies", "showers"
#: lhcml's optional third dataset: the incident particle's |eta| ``(N, 1)`` (module docstring)
ETA_KEY = "incident_eta"
#: lhcml's optional fourth dataset: the incident particle's phi in radians ``(N, 1)`` (module docstring)
PHI_KEY = "incident_phi"
#: voxelisation kinds
POLAR, CELLS = "polar", "cells"


@dataclass(frozen=True)
class LayerBinning:
    """One calorimeter layer of a :class:`Binning`.

    ``kind`` is ``"polar"`` (``r_edges`` mm, ``n_alpha``) or ``"cells"`` (``n_eta`` x ``n_phi``
    cells of ``deta`` x ``dphi``).
    """

    id: int
    kind: str
    name: str = ""
    r_edges: tuple[float, ...] = ()
    n_alpha: int = 0
    n_eta: int = 0
    n_phi: int = 0
    deta: float = 0.0
    dphi: float = 0.0

    @property
    def n_voxels(self) -> int:
        if self.kind == POLAR:
            return max(len(self.r_edges) - 1, 0) * self.n_alpha
        return self.n_eta * self.n_phi

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_alpha, n_r)`` for polar layers, ``(n_eta, n_phi)`` for cell layers (voxel order)."""
        if self.kind == POLAR:
            return self.n_alpha, max(len(self.r_edges) - 1, 0)
        return self.n_eta, self.n_phi

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Voxel centres in voxel order: ``(x, y)`` mm (polar) or ``(Δη, Δφ)`` (cells)."""
        if self.kind == POLAR:
            r = np.asarray(self.r_edges, float)
            r_mid = 0.5 * (r[1:] + r[:-1])
            a_edges = np.linspace(-math.pi, math.pi, self.n_alpha + 1)
            a_mid = 0.5 * (a_edges[1:] + a_edges[:-1])
            aa, rr = np.meshgrid(a_mid, r_mid, indexing="ij")  # alpha outer, r inner
            return (rr * np.cos(aa)).ravel(), (rr * np.sin(aa)).ravel()
        de = (np.arange(self.n_eta) - 0.5 * (self.n_eta - 1)) * self.deta
        dp = (np.arange(self.n_phi) - 0.5 * (self.n_phi - 1)) * self.dphi
        ee, pp = np.meshgrid(de, dp, indexing="ij")
        return ee.ravel(), pp.ravel()

    def to_xml(self) -> ET.Element:
        attrs: dict[str, str] = {"id": str(self.id)}
        if self.kind == POLAR:
            attrs["r_edges"] = ",".join(f"{x:g}" for x in self.r_edges) or "0"
            attrs["n_bin_alpha"] = str(self.n_alpha)
        else:
            attrs.update(name=self.name, lhcml_n_eta=str(self.n_eta), lhcml_n_phi=str(self.n_phi),
                         lhcml_deta=repr(float(self.deta)), lhcml_dphi=repr(float(self.dphi)))
        return ET.Element("Layer", attrs)


@dataclass(frozen=True)
class Binning:
    """The voxelisation of one particle's showers (see the module docstring).

    Attributes
    ----------
    particle, pid
        Particle name and PDG id as the XML file gives them.
    layers
        The layers with voxels, in voxel order (layers without voxels are dropped).
    sha256
        Hash of the XML file's bytes (``""`` when built in memory and not yet written).
    attrs
        Extra attributes of the ``Particle`` element (e.g. ``eta_min``).
    """

    particle: str
    pid: int
    layers: tuple[LayerBinning, ...]
    sha256: str = ""
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.layers[0].kind if self.layers else POLAR

    @property
    def n_voxels(self) -> int:
        return sum(lay.n_voxels for lay in self.layers)

    @property
    def layer_ids(self) -> tuple[int, ...]:
        return tuple(lay.id for lay in self.layers)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(lay.name or f"layer{lay.id}" for lay in self.layers)

    @property
    def layer_sizes(self) -> list[int]:
        """Voxels per layer, in voxel order (the models' ``layer_sizes``)."""
        return [lay.n_voxels for lay in self.layers]

    @property
    def layer_slices(self) -> tuple[slice, ...]:
        """One slice of voxel indices per layer."""
        edges = np.concatenate([[0], np.cumsum(self.layer_sizes)]).astype(int)
        return tuple(slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True))

    def layer(self, name_or_id: str | int) -> LayerBinning:
        for lay in self.layers:
            if lay.id == name_or_id or (lay.name and lay.name == name_or_id):
                return lay
        raise ConfigError(f"binning of {self.particle} has no layer {name_or_id!r} (layers: {self.layer_names})")

    def layer_slice(self, name_or_id: str | int) -> slice:
        lay = self.layer(name_or_id)
        return self.layer_slices[self.layers.index(lay)]

    @property
    def coordinate_names(self) -> tuple[str, str]:
        return ("eta", "phi") if self.kind == CELLS else ("x", "y")

    def voxel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Per voxel (in voxel order) its centre: ``(Δη, Δφ)`` for cell binnings, ``(x, y)`` mm for polar."""
        parts = [lay.centres() for lay in self.layers]
        if not parts:
            return np.zeros(0), np.zeros(0)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def to_xml(self) -> str:
        """The binning as XML text (the challenge's format, plus lhcml attributes for cell layers)."""
        root = ET.Element("Bins")
        p = ET.SubElement(root, "Particle", {"name": self.particle, "pid": str(self.pid), **self.attrs})
        for lay in self.layers:
            p.append(lay.to_xml())
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{what}: {value!r} is not a number") from None


def parse_binning(text: str | bytes, particle: str | None = None, *, source: str = "<string>") -> Binning:
    """Parse binning XML text (see :func:`read_binning`)."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    try:
        root = ET.fromstring(raw)  # noqa: S314 - local files, no external entities resolved
    except ET.ParseError as err:
        raise ConfigError(f"{source} is not a valid binning XML file ({err})") from None
    parts = [p for p in root.iter("Particle")]
    if root.tag != "Bins" or not parts:
        raise ConfigError(f"{source} is not a CaloChallenge binning file (needs <Bins><Particle ...><Layer .../>)")
    names = [p.attrib.get("name", "") for p in parts]
    if particle is None:
        if len(parts) > 1:
            raise ConfigError(f"{source} describes several particles {names}; choose one with particle=")
        node = parts[0]
    else:
        found = [p for p in parts if p.attrib.get("name") == particle]
        if not found:
            raise ConfigError(f"{source} has no particle '{particle}' (it has {names})")
        node = found[0]
    layers = []
    for el in node.iter("Layer"):
        where = f"{source}: Layer id={el.attrib.get('id', '?')}"
        if "id" not in el.attrib:
            raise ConfigError(f"{source}: a Layer element has no id attribute")
        lid = int(_float(el.attrib["id"], where))
        if "lhcml_n_eta" in el.attrib:
            lay = LayerBinning(
                id=lid, kind=CELLS, name=el.attrib.get("name", ""),
                n_eta=int(_float(el.attrib["lhcml_n_eta"], where)), n_phi=int(_float(el.attrib.get("lhcml_n_phi", "x"), where)),
                deta=_float(el.attrib.get("lhcml_deta", "x"), where), dphi=_float(el.attrib.get("lhcml_dphi", "x"), where),
            )  # fmt: skip
        elif "r_edges" in el.attrib:
            edges = tuple(_float(s, where) for s in el.attrib["r_edges"].split(",") if s.strip())
            if any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
                raise ConfigError(f"{where}: r_edges must increase, got {edges}")
            lay = LayerBinning(id=lid, kind=POLAR, name=el.attrib.get("name", ""), r_edges=edges,
                               n_alpha=int(_float(el.attrib.get("n_bin_alpha", "1"), where)))
        else:
            raise ConfigError(f"{where} has neither r_edges (CaloChallenge) nor lhcml_n_eta (lhcml cells)")
        if lay.n_voxels > 0:
            layers.append(lay)
    if not layers:
        raise ConfigError(f"{source}: particle '{node.attrib.get('name')}' has no layer with voxels")
    kinds = {lay.kind for lay in layers}
    if len(kinds) > 1:
        raise ConfigError(f"{source} mixes polar and cell layers; one kind per particle")
    extra = {k: v for k, v in node.attrib.items() if k not in ("name", "pid")}
    return Binning(
        particle=node.attrib.get("name", ""), pid=int(_float(node.attrib.get("pid", "0"), source)),
        layers=tuple(layers), sha256=hashlib.sha256(raw).hexdigest(), attrs=extra,
    )  # fmt: skip


def read_binning(path: str | Path, particle: str | None = None) -> Binning:
    """Read a binning XML file: the challenge's polar binning or lhcml's cell windows.

    Parameters
    ----------
    path
        The XML file (e.g. the challenge's ``binning_dataset_1_photons.xml``).
    particle
        Particle name when the file describes several.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"binning file {path} does not exist")
    return parse_binning(path.read_bytes(), particle, source=str(path))


def write_binning(binning: Binning, path: str | Path) -> Binning:
    """Write ``binning`` as XML (atomically); returns it with the file's ``sha256``."""
    text = binning.to_xml()
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return parse_binning(text.encode(), binning.particle, source=str(path))


@dataclass
class CaloSample:
    """Showers of one particle type: ``energies`` ``[N]`` GeV, ``showers`` ``[N, V]`` GeV float32,
    ``eta`` ``[N]`` the incident |η| (``None`` when the file has no ``incident_eta``), ``phi``
    ``[N]`` the incident φ in radians (``None`` when the file has no ``incident_phi``)."""

    energies: np.ndarray
    showers: np.ndarray
    binning: Binning
    attrs: dict[str, Any] = field(default_factory=dict)
    eta: np.ndarray | None = None
    phi: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.energies)

    def subset(self, index: np.ndarray | slice) -> CaloSample:
        eta = None if self.eta is None else self.eta[index]
        phi = None if self.phi is None else self.phi[index]
        return CaloSample(self.energies[index], self.showers[index], self.binning, dict(self.attrs), eta, phi)

    def layer_energies(self) -> np.ndarray:
        """``[N, n_layers]`` GeV: the energy in each layer."""
        return np.stack([self.showers[:, s].sum(axis=1) for s in self.binning.layer_slices], axis=1)


def read_showers(
    path: str | Path, binning: Binning | str | Path, *, max_showers: int | None = None, particle: str | None = None
) -> CaloSample:
    """Read a CaloChallenge-layout shower file (lhcml's or the challenge's own).

    Parameters
    ----------
    path
        HDF5 file with ``incident_energies`` ``(N, 1)`` and ``showers`` ``(N, V)`` in MeV (and,
        lhcml's extension, optionally ``incident_eta`` ``(N, 1)`` and ``incident_phi`` ``(N, 1)``:
        returned as ``eta`` and ``phi``).
    binning
        A :class:`Binning` or the binning XML file describing the voxels.
    max_showers
        Read only the first ``max_showers`` showers.

    Raises
    ------
    ConfigError
        The binning does not fit the file: another number of voxels, or (lhcml files) another
        binning hash than the one the file was written with.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"shower file {path} does not exist")
    if not isinstance(binning, Binning):
        binning = read_binning(binning, particle)
    from lhcml.data.checks import open_h5

    with open_h5(path) as f:
        missing = [k for k in (ENERGY_KEY, SHOWER_KEY) if k not in f]
        if missing:
            raise ConfigError(f"{path} lacks dataset(s) {missing}: not a CaloChallenge shower file "
                              f"(needs '{ENERGY_KEY}' (N, 1) and '{SHOWER_KEY}' (N, voxels), MeV)")
        sh = f[SHOWER_KEY]
        if sh.ndim != 2 or sh.shape[1] != binning.n_voxels:
            raise ConfigError(
                f"{path}: showers have shape {sh.shape} but the binning ({binning.particle}, "
                f"{binning.n_voxels} voxels in layers {list(binning.layer_ids)}) describes "
                f"{binning.n_voxels} voxels per shower; pass the binning file the showers were made with"
            )
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        want = attrs.get("binning_sha256")
        if want and binning.sha256 and want != binning.sha256:
            raise ConfigError(
                f"{path} was written with another binning file (sha256 {want[:12]}...) than the one "
                f"given (sha256 {binning.sha256[:12]}...); pass the binning file written beside it"
            )
        n = sh.shape[0] if max_showers is None else min(int(max_showers), sh.shape[0])
        e = np.asarray(f[ENERGY_KEY][:n], np.float64).reshape(-1)
        showers = np.asarray(sh[:n], np.float32)
        eta = np.asarray(f[ETA_KEY][:n], np.float64).reshape(-1) if ETA_KEY in f else None
        phi = np.asarray(f[PHI_KEY][:n], np.float64).reshape(-1) if PHI_KEY in f else None
    if len(e) != n:
        raise ConfigError(f"{path}: {ENERGY_KEY} has {len(e)} rows for {n} showers")
    if eta is not None and (len(eta) != n or not np.all(np.isfinite(eta)) or np.any(eta < 0)):
        raise ConfigError(f"{path}: {ETA_KEY} must hold one |eta| >= 0 per shower ({n}); rewrite the file "
                          "with lhcml fastcalo simulate")
    if phi is not None and (len(phi) != n or not np.all(np.isfinite(phi))):
        raise ConfigError(f"{path}: {PHI_KEY} must hold one finite phi (radians) per shower ({n}); rewrite the "
                          "file with lhcml fastcalo simulate")
    return CaloSample(e / MEV_PER_GEV, showers / np.float32(MEV_PER_GEV), binning, attrs, eta, phi)


def concat_samples(samples: list[CaloSample]) -> CaloSample:
    """One sample made of ``samples`` in order (several detailed files read as one reference).

    Every sample must have the same binning (its hash, or the same voxels when a hash is missing) and
    either all or none of them an ``eta`` (and a ``phi``); the result keeps the first sample's ``attrs``.

    Raises
    ------
    ConfigError
        No sample, another binning, or ``eta`` / ``phi`` in some samples only.
    """
    if not samples:
        raise ConfigError("concat_samples needs at least one sample")
    first = samples[0]
    for k, s in enumerate(samples[1:], 1):
        b0, b = first.binning, s.binning
        same = b.sha256 == b0.sha256 if (b.sha256 and b0.sha256) else b.n_voxels == b0.n_voxels
        if not same or b.n_voxels != b0.n_voxels:
            raise ConfigError(f"sample {k} has another binning ({b.n_voxels} voxels, sha256 {str(b.sha256)[:12]}...) "
                              f"than sample 0 ({b0.n_voxels} voxels, sha256 {str(b0.sha256)[:12]}...)")  # fmt: skip
    extra = {}
    for key in ("eta", "phi"):
        have = [getattr(s, key) is not None for s in samples]
        if any(have) and not all(have):
            raise ConfigError(f"{key} is stored in samples {[i for i, h in enumerate(have) if h]} only; "
                              f"concatenate samples that all have it or none")  # fmt: skip
        extra[key] = np.concatenate([getattr(s, key) for s in samples]) if all(have) else None
    return CaloSample(np.concatenate([s.energies for s in samples]), np.concatenate([s.showers for s in samples]),
                      first.binning, dict(first.attrs), extra["eta"], extra["phi"])  # fmt: skip


def write_showers(
    path: str | Path, energies_gev: np.ndarray, showers_gev: np.ndarray, binning: Binning,
    attrs: dict[str, Any] | None = None, eta: np.ndarray | None = None, phi: np.ndarray | None = None,
) -> Path:  # fmt: skip
    """Write showers in the CaloChallenge layout (MeV), atomically, with the binning's hash.

    ``binning`` must have been written (or read) so that its ``sha256`` is set; ``eta`` (the
    incident |η| per shower, optional) goes into lhcml's extra dataset ``incident_eta``, ``phi``
    (the incident φ in radians, optional) into ``incident_phi``.
    """
    import h5py

    energies_gev = np.asarray(energies_gev, np.float64).reshape(-1)
    showers_gev = np.asarray(showers_gev)
    if showers_gev.ndim != 2 or showers_gev.shape[1] != binning.n_voxels or len(showers_gev) != len(energies_gev):
        raise ConfigError(f"showers {showers_gev.shape} and energies {energies_gev.shape} do not fit "
                          f"the binning ({binning.n_voxels} voxels)")
    if eta is not None:
        eta = np.abs(np.asarray(eta, np.float64).reshape(-1))
        if len(eta) != len(energies_gev):
            raise ConfigError(f"{len(eta)} eta values for {len(energies_gev)} showers")
    if phi is not None:
        phi = np.asarray(phi, np.float64).reshape(-1)
        if len(phi) != len(energies_gev) or not np.all(np.isfinite(phi)):
            raise ConfigError(f"{len(phi)} phi values for {len(energies_gev)} showers (one finite phi per shower)")
    with atomic_path(path, ".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(ENERGY_KEY, data=(energies_gev * MEV_PER_GEV)[:, None])
            f.create_dataset(SHOWER_KEY, data=(showers_gev * MEV_PER_GEV).astype(np.float32),
                             compression="gzip", compression_opts=4, chunks=(min(1000, max(len(energies_gev), 1)), binning.n_voxels))
            if eta is not None:
                f.create_dataset(ETA_KEY, data=eta[:, None])
            if phi is not None:
                f.create_dataset(PHI_KEY, data=phi[:, None])
            f.attrs.update({"particle": binning.particle, "pid": binning.pid, "binning_sha256": binning.sha256,
                            "units": "MeV", **(attrs or {})})
    return Path(path)


__all__ = [
    "Binning",
    "CaloSample",
    "LayerBinning",
    "concat_samples",
    "parse_binning",
    "read_binning",
    "read_showers",
    "write_binning",
    "write_showers",
]
