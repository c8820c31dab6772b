"""A calorimeter for jets: EM and hadronic cells over |η| < 4.9, parametric showers, noise, pileup.

Geometry (``jet_calo_geometry.yaml``, documented there): two longitudinal compartments (EM,
hadronic), each a set of regular η × φ grids (EM barrel/end-cap 0.025 × 2π/256 — ATLAS's EM
middle-layer cells — Tile/HEC 0.1 × 2π/64, FCal 0.2125 × 2π/32), mirrored at negative η. Every cell has an index in
``0 .. N_CELLS - 1`` (:class:`CaloGeometry`).

EM samplings (option, ``jet_calo_geometry_samplings.yaml``, :func:`jet_geometry("em_samplings")
<jet_geometry>`): the EM barrel and end-cap in ATLAS's three longitudinal samplings — strips (0.025/8 ×
2π/64 in the barrel), middle (0.025 × 2π/256), back (0.05 × 2π/256) — the EM part of each shower shared
among them by its longitudinal profile over their depths (``depth_x0``; :func:`em_sampling_split`, no
extra random draws, so the same events deposit the same total energy). Cells of adjacent samplings
that overlap are neighbours (strips–middle, middle–back, back–hadronic; the inner wheel and FCal1, one
sampling, with the hadronic cells behind them). The strips' cells have ``layer`` 2 (EM compartment):
the topo-cluster splitting treats them as secondary, middle and back as primary (ATLAS
``CaloTopoClusterSplitter``, docs/references.md §30).

Showers (vectorised over all particles of all events):

* **Impact point**: the particle's direction from its production vertex projected onto the
  cylinder of radius ``radius_mm`` (η seen from the detector origin); charged particles bend in
  the 2 T field, ``Δφ = −q · asin(0.3 B R / 2 pT)`` (:func:`bend_phi`), and below
  ``pT = 0.3 B R / 2`` (0.45 GeV) they curl up and deposit nothing.
* **EM showers** (γ, e±; the π⁰ photons of jets): visible energy ``E (1 + σ z)`` with the EM
  terms of the region hit; longitudinal profile Γ(a, b) in X0 (Longo, PDG: ``b = 0.5``,
  ``t_max = ln(E/Ec) − 0.5``), the part beyond the EM depth (22 X0) leaks into the hadronic
  compartment; lateral Gaussian profile of width ``em_lateral_sigma``.
* **Hadron showers**: available energy (kinetic for baryons, E + m for antibaryons); EM
  fraction ``f_em`` drawn around Groom's mean ``1 − (E/E0)^(k−1)`` with spread
  ``em_fraction_sigma``; non-compensation: the hadronic part is seen at ``1/(e/h)``; sampling
  fluctuations with the hadronic terms of the region hit (Tile/HEC or FCal). Longitudinal: the
  shower starts at a depth ~ Exp(1 λ), then a Γ(shape, scale) profile in λ decides the fraction
  in the EM compartment (1.2 λ deep); lateral Gaussian of width ``had_lateral_sigma``.
* **Muons**: a minimum-ionising ``muon_mip_gev`` shared between the compartments. Neutrinos:
  nothing.

Each deposit is spread over a stencil of cells around the impact point in each compartment whose
size follows the lateral σ relative to the cell size (:func:`stencil_cells`: the cells overlapping
±2.5 σ around the impact point, at least the impact cell ±1; e.g. 10 × 10 fine EM cells for the EM
part of a hadron shower, 3–4 × 3–4 for an EM shower, 2–3 × 2–3 → 3 × 3 hadronic cells) — Gaussian integrals over the cells, renormalised to the
stencil (the remaining tails are folded back), summed per cell in compiled code. Until December
2026 the stencil was a fixed 3 × 3, which on the 0.025 cells would cut a hadron shower (σ = 0.045)
at ±0.0375.

Readout: Gaussian electronic noise per cell (``noise_gev``, every cell of every event); pileup
energy arrives with the pileup particles themselves (in-time pileup only); the readout subtracts
the mean pileup energy per cell, ``μ × m₁(|η| ring)``, with ``m₁`` (mean per interaction) and the
per-interaction variance ``s₁²`` measured on the pileup particles of the batch (as ATLAS derives
its pileup-noise tables from minimum-bias MC); fluctuations are kept. The total noise
``σ = σ_el ⊕ √μ s₁`` sets the topo-cluster thresholds (:mod:`lhcml.sim.topoclusters`).

The simulation chain deposits the showers a few events at a time (:func:`deposit_chunks`) and
draws the noise only where the topo-clustering can see it (:mod:`lhcml.sim.cell_noise`: a normal
for every cell with a deposit, the active empty cells as a Bernoulli process with tail values, a
value for an inactive empty cell only when a cluster takes it): each cell's value has the dense
readout's distribution, so for every statistical average this is the dense readout with another
random seed (since December 3 2026; ≈ 13 000 instead of 70 656 draws per tt̄ event at μ = 0).
The dense reference stays callable: :func:`readout_chunks` (the same numbers as
:func:`deposit_cells` + :func:`readout`, same random stream), used by
``simulate_topo_clusters(..., sparse_noise=False)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import yaml
from scipy.special import gammainc

from lhcml.errors import ConfigError
from lhcml.sim.cell_noise import sparse_noise_model
from lhcml.sim.generator import FlatTable

GEOMETRY_FILE = Path(__file__).with_name("jet_calo_geometry.yaml")
#: the same calorimeter with the EM part in three longitudinal samplings (strips / middle / back)
SAMPLINGS_FILE = Path(__file__).with_name("jet_calo_geometry_samplings.yaml")
#: the shipped geometries by name (:func:`jet_geometry`); the first is the default
GEOMETRIES = {"one_em_layer": GEOMETRY_FILE, "em_samplings": SAMPLINGS_FILE, "one_em_layer_primary": GEOMETRY_FILE}
#: the geometries whose one-layer EM cells also keep the part of their deposits in the virtual strips
#: (:data:`VIRTUAL_STRIPS_X0`): the topo-cluster splitter's primary maxima then use the rest (middle + back)
_VIRTUAL_STRIPS = ("one_em_layer_primary",)
#: depth (X0) and |η| coverage of ATLAS's EM strips (EMB1 / EME1, 4.3 X0: docs/references.md §6), the
#: virtual first sampling of the one-layer EM cells (``one_em_layer_primary``; as ``em_samplings``' strips)
VIRTUAL_STRIPS_X0 = (0.0, 4.3)
VIRTUAL_STRIPS_ETA = 2.5
_ACTIVE = ["one_em_layer"]
#: calorimeter coverage
CALO_ETA_MAX = 4.9
#: 0.3 · B[T] · R[m] / 2 (GeV) with B = 2 T, R = 1.5 m: the bending scale of charged particles
BEND_PT_GEV = 0.45
_NEUTRINOS = (12, 14, 16)

#: deposit kinds
EM, HADRON, MUON = 0, 1, 2


@dataclass(frozen=True)
class CaloGeometry:
    """Cells of the jet calorimeter (flat arrays over all ``n_cells`` cells) and its blocks."""

    radius: float
    em_depth_x0: float
    em_depth_lambda: float
    showers: dict
    # blocks (one regular grid each; both η sides of every YAML region)
    b_layer: np.ndarray
    b_eta_lo: np.ndarray
    b_eta_hi: np.ndarray
    b_n_eta: np.ndarray
    b_n_phi: np.ndarray
    b_offset: np.ndarray
    b_sampling: np.ndarray
    b_constant: np.ndarray
    b_noise: np.ndarray
    b_dead_lambda: np.ndarray  # dead material in front of a hadronic block (λ), 0 for EM blocks
    b_region: np.ndarray
    region_names: tuple
    # cells
    layer: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    noise: np.ndarray
    ring: np.ndarray  # (region, |η| bin) ring index: pileup profiles are averaged over φ and ±η
    n_rings: int
    nb_offsets: np.ndarray  # CSR neighbour lists (same compartment incl. corners, other compartment overlaps)
    nb_index: np.ndarray
    cos_phi: np.ndarray  # cos, sin of the cell φ (cluster barycentres)
    sin_phi: np.ndarray
    # longitudinal EM samplings (``em_sampling`` in the geometry file; absent: one EM layer). Depth rank
    # of each block: 0 strips, 1 middle (and every one-sampling EM region), 2 back, 3 hadronic; the EM
    # part of a shower is shared among the samplings at its η by its longitudinal profile over ``b_x0``
    b_rank: np.ndarray | None = None
    b_x0: np.ndarray | None = None  # (n_blocks, 2): depth range in X0 of each EM block
    # depth rank of every cell (its block's ``b_rank``, int8): the topo-cluster splitter walks the
    # samplings with it (a secondary maximum is vetoed by a primary one in any sampling before or
    # after it, reached through overlapping cells, :func:`lhcml.sim.topoclusters._topo_split`)
    rank: np.ndarray | None = None
    samplings: bool = False
    # one-layer EM cells that keep the part of their deposits in ATLAS's strips depth (VIRTUAL_STRIPS_X0,
    # |η| < VIRTUAL_STRIPS_ETA) beside their energy: the splitter's primary maxima use energy − that part
    virtual_strips: bool = False

    @property
    def n_cells(self) -> int:
        return len(self.eta)


@contextmanager
def jet_geometry(name: str | Path) -> Iterator[None]:
    """Within this block, :func:`load_geometry` without a path (the whole simulation chain) uses the
    shipped geometry ``name`` (:data:`GEOMETRIES`: ``"one_em_layer"``, the default, or
    ``"em_samplings"``, the EM part in strips / middle / back with ATLAS's primary and secondary maxima
    roles in the topo-cluster splitting, or ``"one_em_layer_primary"``, the default's cells whose
    splitter looks for primary maxima in the energy beyond the strips' depth, :data:`VIRTUAL_STRIPS_X0`).
    The calibration tables are derived on the default geometry.

    ``name`` may also be the path of a geometry YAML file in the shipped file's format (an option for
    what-ifs: one detector term changed at a time, e.g. a sampling term or ``e_over_h``; the shower
    draws do not depend on the values, so the same seed gives the same events and showers).

    Raises
    ------
    ConfigError
        For an unknown ``name`` that is not an existing ``.yaml`` file.
    """
    key = str(name)
    if key not in GEOMETRIES:
        path = Path(key)
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            raise ConfigError(f"unknown jet-calorimeter geometry '{name}'; valid: {', '.join(GEOMETRIES)} "
                              f"or the path of a geometry .yaml file")
        key = str(path.resolve())
    _ACTIVE.append(key)
    try:
        yield
    finally:
        _ACTIVE.pop()


def load_geometry(path: str | Path | None = None) -> CaloGeometry:
    """The jet-calorimeter geometry of ``path`` (default: the active shipped one, :func:`jet_geometry`;
    :data:`GEOMETRY_FILE` unless told otherwise)."""
    if path is not None:
        return _load_geometry(str(path))
    return _load_geometry(str(GEOMETRIES.get(_ACTIVE[-1], _ACTIVE[-1])), _ACTIVE[-1] in _VIRTUAL_STRIPS)


@functools.lru_cache(maxsize=6)
def _load_geometry(path: str, virtual_strips: bool = False) -> CaloGeometry:
    p = Path(path)
    try:
        cfg = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"jet calorimeter geometry {p} not found: restore it from the lhcml package") from exc
    regions = cfg.get("regions") if isinstance(cfg, dict) else None
    if not regions:
        raise ConfigError(f"{p}: no 'regions' list; see the shipped {GEOMETRY_FILE.name} for the format")
    blocks = []
    ring_off = 0
    for r_id, r in enumerate(regions):
        try:
            lo, hi, ne, nphi = float(r["eta_lo"]), float(r["eta_hi"]), int(r["n_eta"]), int(r["n_phi"])
            layer = int(r["layer"])
            terms = (float(r["sampling"]), float(r["constant"]), float(r["noise_gev"]), float(r.get("dead_lambda", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{p}: region {r!r} needs layer, eta_lo, eta_hi, n_eta, n_phi, sampling, "
                              f"constant, noise_gev (optional dead_lambda) ({exc})") from exc
        if terms[3] < 0 or (terms[3] > 0 and layer != 1):
            raise ConfigError(f"{p}: region {r.get('name')}: dead_lambda (dead material in front of a hadronic "
                              f"region, in interaction lengths) must be >= 0 and only on layer 1")
        if not (0 <= lo < hi <= CALO_ETA_MAX + 1e-9) or ne < 1 or nphi < 1 or layer not in (0, 1):
            raise ConfigError(f"{p}: region {r.get('name')} has an invalid range/granularity/layer")
        rank, x0 = _region_sampling(r, layer, p, float(cfg.get("em_depth_x0", 22.0)))
        for side in (-1, 1):
            blocks.append((layer, (-hi, -lo) if side < 0 else (lo, hi), ne, nphi, terms, r_id, side, ring_off, rank,
                           x0))
        ring_off += ne
    blocks.sort(key=lambda b: (b[0], b[8], b[1][0]))
    n_b = len(blocks)
    b_layer = np.array([b[0] for b in blocks], np.int64)
    b_lo = np.array([b[1][0] for b in blocks])
    b_hi = np.array([b[1][1] for b in blocks])
    b_ne = np.array([b[2] for b in blocks], np.int64)
    b_np = np.array([b[3] for b in blocks], np.int64)
    b_off = np.zeros(n_b + 1, np.int64)
    np.cumsum(b_ne * b_np, out=b_off[1:])
    layer, eta, phi, noise, ring, rank = [], [], [], [], [], []
    for i, b in enumerate(blocks):
        ne, nphi = b[2], b[3]
        deta = (b_hi[i] - b_lo[i]) / ne
        ie, ip = np.meshgrid(np.arange(ne), np.arange(nphi), indexing="ij")
        # cell layer: 0 EM, 1 hadronic, 2 EM strips (EM, secondary maxima in the topo-cluster splitting)
        layer.append(np.full(ne * nphi, STRIPS_LAYER if b[8] == 0 else b[0], np.int8))
        rank.append(np.full(ne * nphi, b[8], np.int8))
        eta.append(b_lo[i] + (ie.ravel() + 0.5) * deta)
        phi.append(-np.pi + (ip.ravel() + 0.5) * (2 * np.pi / nphi))
        noise.append(np.full(ne * nphi, b[4][2]))
        mirrored = ie.ravel() if b[6] > 0 else ne - 1 - ie.ravel()
        ring.append(b[7] + mirrored)
    layer_a = np.concatenate(layer)
    phi_a = np.concatenate(phi)
    cos_phi, sin_phi = _cos_sin(phi_a)
    b_rank = np.array([b[8] for b in blocks], np.int64)
    nb_off, nb_idx = _neighbours(b_rank, b_lo, b_hi, b_ne, b_np, b_off)
    return CaloGeometry(
        radius=float(cfg.get("radius_mm", 1500.0)),
        em_depth_x0=float(cfg.get("em_depth_x0", 22.0)),
        em_depth_lambda=float(cfg.get("em_depth_lambda", 1.2)),
        showers=dict(cfg.get("showers") or {}),
        b_layer=b_layer, b_eta_lo=b_lo, b_eta_hi=b_hi, b_n_eta=b_ne, b_n_phi=b_np, b_offset=b_off,
        b_sampling=np.array([b[4][0] for b in blocks]), b_constant=np.array([b[4][1] for b in blocks]),
        b_noise=np.array([b[4][2] for b in blocks]), b_dead_lambda=np.array([b[4][3] for b in blocks]),
        b_region=np.array([b[5] for b in blocks], np.int64),
        region_names=tuple(str(r.get("name", i)) for i, r in enumerate(regions)),
        layer=layer_a, eta=np.concatenate(eta), phi=phi_a, noise=np.concatenate(noise),
        ring=np.concatenate(ring).astype(np.int64), n_rings=ring_off,
        nb_offsets=nb_off, nb_index=nb_idx.astype(np.int32),  # int32: half the cache footprint in clustering
        cos_phi=cos_phi, sin_phi=sin_phi,
        b_rank=b_rank, b_x0=np.array([b[9] for b in blocks], np.float64).reshape(n_b, 2),
        samplings=any("em_sampling" in r for r in regions),
        rank=np.concatenate(rank),
        virtual_strips=bool(virtual_strips),
    )


#: depth ranks of the EM samplings (``em_sampling``) and of the hadronic compartment
EM_SAMPLINGS = {"strips": 0, "middle": 1, "back": 2}
HAD_RANK = 3
#: the cell ``layer`` code of the EM strips (EM compartment; secondary maxima, :mod:`lhcml.sim.topoclusters`)
STRIPS_LAYER = 2


def _region_sampling(r: dict, layer: int, p: Path, em_depth: float) -> tuple[int, tuple[float, float]]:
    """Depth rank and depth range (X0) of a geometry region: ``em_sampling`` (strips / middle / back,
    EM regions only; default middle) and ``depth_x0: [from, to]`` (default the whole EM depth)."""
    name = r.get("name")
    if layer == 1:
        if "em_sampling" in r or "depth_x0" in r:
            raise ConfigError(f"{p}: region {name}: em_sampling / depth_x0 apply to EM regions (layer 0) only")
        return HAD_RANK, (0.0, 0.0)
    samp = r.get("em_sampling", "middle")
    if samp not in EM_SAMPLINGS:
        raise ConfigError(f"{p}: region {name}: em_sampling must be one of {', '.join(EM_SAMPLINGS)}, got {samp!r}")
    d = r.get("depth_x0", [0.0, em_depth])
    try:
        x0 = (float(d[0]), float(d[1]))
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{p}: region {name}: depth_x0 must be [from, to] in X0, got {d!r}") from exc
    if not 0 <= x0[0] < x0[1]:
        raise ConfigError(f"{p}: region {name}: depth_x0 must be [from, to] with 0 <= from < to, got {d!r}")
    return EM_SAMPLINGS[samp], x0


@numba.njit(cache=True)
def _cos_sin(x):
    """Element-wise cos and sin in compiled code (the values the clustering kernels would compute)."""
    c, s = np.empty_like(x), np.empty_like(x)
    for i in range(x.shape[0]):
        c[i] = np.cos(x[i])
        s[i] = np.sin(x[i])
    return c, s


@numba.njit(cache=True)
def _phi_range(phi_lo, phi_hi, nphi, tol):
    """First and count of the φ bins (of ``nphi``) overlapping [phi_lo - tol, phi_hi + tol]."""
    w = 2 * np.pi / nphi
    a = int(np.floor((phi_lo - tol + np.pi) / w))
    b = int(np.floor((phi_hi + tol + np.pi) / w - 1e-9))
    return a, min(b - a + 1, nphi)


@numba.njit(cache=True)
def _neighbours(b_layer, b_lo, b_hi, b_ne, b_np, b_off):
    """CSR neighbour lists. ``b_layer``: the depth rank of each block (EM samplings, hadronic): cells of
    one rank touching (corners included), cells of two ranks overlapping in η × φ when no block of a rank
    between them covers the middle of their η overlap (adjacent samplings in depth)."""
    n_cells = b_off[-1]
    cap = 40
    tmp = np.full((n_cells, cap), -1, np.int64)
    cnt = np.zeros(n_cells, np.int64)
    eps = 1e-6
    for bi in range(len(b_layer)):
        deta = (b_hi[bi] - b_lo[bi]) / b_ne[bi]
        dphi = 2 * np.pi / b_np[bi]
        for ie in range(b_ne[bi]):
            e_lo = b_lo[bi] + ie * deta
            e_hi = e_lo + deta
            for ip in range(b_np[bi]):
                c = b_off[bi] + ie * b_np[bi] + ip
                p_lo = -np.pi + ip * dphi
                p_hi = p_lo + dphi
                for bj in range(len(b_layer)):
                    same = b_layer[bj] == b_layer[bi]
                    if not same and abs(b_layer[bj] - b_layer[bi]) > 1:
                        # a sampling in between at the middle of the η overlap: not adjacent in depth
                        mid = 0.5 * (max(e_lo, b_lo[bj]) + min(e_hi, b_hi[bj]))
                        r_lo = min(b_layer[bi], b_layer[bj])
                        r_hi = max(b_layer[bi], b_layer[bj])
                        between = False
                        for bk in range(len(b_layer)):
                            if r_lo < b_layer[bk] < r_hi and b_lo[bk] <= mid < b_hi[bk]:
                                between = True
                        if between:
                            continue
                    # same compartment: touching cells (incl. corners); other: overlapping cells
                    tol = eps if same else -eps
                    lo = e_lo - tol
                    hi = e_hi + tol
                    if b_hi[bj] < lo or b_lo[bj] > hi:
                        continue
                    dj = (b_hi[bj] - b_lo[bj]) / b_ne[bj]
                    j0 = max(int(np.floor((lo - b_lo[bj]) / dj)), 0)
                    j1 = min(int(np.floor((hi - b_lo[bj]) / dj)), b_ne[bj] - 1)
                    a, na = _phi_range(p_lo, p_hi, b_np[bj], tol)
                    for je in range(j0, j1 + 1):
                        for k in range(na):
                            jp = (a + k) % b_np[bj]
                            n = b_off[bj] + je * b_np[bj] + jp
                            if n == c:
                                continue
                            dup = False
                            for q in range(cnt[c]):
                                if tmp[c, q] == n:
                                    dup = True
                            if not dup and cnt[c] < cap:
                                tmp[c, cnt[c]] = n
                                cnt[c] += 1
    off = np.zeros(n_cells + 1, np.int64)
    for c in range(n_cells):
        off[c + 1] = off[c] + cnt[c]
    idx = np.empty(off[-1], np.int64)
    for c in range(n_cells):
        idx[off[c] : off[c + 1]] = tmp[c, : cnt[c]]
    return off, idx


def bend_phi(phi: np.ndarray, pt: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """φ at the calorimeter of a particle/track of ``pt`` (GeV) and ``charge`` (2 T, R = 1.5 m)."""
    s = np.clip(BEND_PT_GEV / np.maximum(pt, 1e-9), 0.0, 1.0)
    out = phi - np.sign(charge) * np.arcsin(s)
    return (out + np.pi) % (2 * np.pi) - np.pi


def locate(geo: CaloGeometry, layer: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Block index of (compartment, η) points; -1 outside the coverage (and for NaN): the block of
    the last lower edge at or below η among the compartment's blocks (sorted in η), up to the last
    block's upper edge."""
    return _locate(np.asarray(layer), np.asarray(eta, np.float64), _locate_key(geo), geo.b_eta_lo, geo.b_eta_hi)


def _locate_key(geo: CaloGeometry) -> np.ndarray:
    """The compartment of each block for :func:`locate`, -1 for the EM strips and back blocks (with
    samplings, an EM point is located in the middle sampling and the one-sampling regions)."""
    if geo.b_rank is None:
        return geo.b_layer
    return np.where((geo.b_rank == 1) | (geo.b_rank == HAD_RANK), geo.b_layer, -1)


def locate_sampling(geo: CaloGeometry, rank: int, eta: np.ndarray) -> np.ndarray:
    """Block index of the EM sampling of depth ``rank`` (:data:`EM_SAMPLINGS`) at ``eta``; -1 where the
    sampling is absent."""
    eta = np.asarray(eta, np.float64)
    key = np.where(geo.b_rank == rank, 0, -1)
    return _locate(np.zeros(len(eta), np.int64), eta, key, geo.b_eta_lo, geo.b_eta_hi)


@numba.njit(cache=True)
def _locate(layer, eta, b_layer, b_lo, b_hi):
    """:func:`locate` in compiled code (the edges at or below each point counted: a handful)."""
    out = np.full(eta.shape[0], -1, np.int64)
    for lay in (0, 1):  # (key -1: not located)
        bl = np.flatnonzero(b_layer == lay)
        nb = bl.shape[0]
        if nb == 0:
            continue
        edges = np.empty(nb + 1)
        edges[:nb] = b_lo[bl]
        edges[nb] = b_hi[bl[nb - 1]]
        for i in range(eta.shape[0]):
            if layer[i] != lay:
                continue
            x = eta[i]
            # number of edges <= x (edges sorted): searchsorted(edges, x, side="right"); NaN: none
            j = -1
            for q in range(nb + 1):
                j += edges[q] <= x
            if 0 <= j < nb:
                out[i] = bl[j]
    return out


def block_terms(geo: CaloGeometry, layer: int, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sampling and constant terms of the compartment ``layer`` at ``eta`` (edge values outside)."""
    b = locate(geo, np.full(len(eta), layer), np.clip(eta, -CALO_ETA_MAX + 1e-9, CALO_ETA_MAX - 1e-9))
    return geo.b_sampling[b], geo.b_constant[b]


def groom_em_fraction(energy: np.ndarray, geo: CaloGeometry) -> np.ndarray:
    """Mean EM fraction of a hadron shower, ``1 − (E/E0)^(k−1)`` (Groom), clipped to [0, 1]."""
    s = geo.showers
    e0, k = float(s.get("groom_e0_gev", 1.0)), float(s.get("groom_k", 0.82))
    return np.clip(1.0 - (np.maximum(energy, 1e-6) / e0) ** (k - 1.0), 0.0, 1.0)


def dead_material_loss(geo: CaloGeometry, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the fraction of a hadron shower lost in the dead material in front of
    the hadronic compartment at ``eta`` (shower start ~ Exp(1 λ), Γ profile; see the module doc)."""
    s = geo.showers
    shape, scale = float(s.get("had_profile_shape", 1.5)), float(s.get("had_profile_scale", 1.0))
    b = locate(geo, np.ones(len(eta), np.int64), np.clip(eta, -CALO_ETA_MAX + 1e-9, CALO_ETA_MAX - 1e-9))
    dead = geo.b_dead_lambda[b]
    mean, sd = np.zeros(len(eta)), np.zeros(len(eta))
    t = (np.arange(4000) + 0.5) * 0.005  # shower-start depth grid (λ), weights Exp(1)
    w = np.exp(-t) * 0.005
    w /= w.sum()
    for d in np.unique(dead[dead > 0]):
        f = gammainc(shape, np.maximum(geo.em_depth_lambda + d - t, 0.0) / scale) - gammainc(
            shape, np.maximum(geo.em_depth_lambda - t, 0.0) / scale)
        m1 = float(np.sum(w * f))
        mean[dead == d] = m1
        sd[dead == d] = np.sqrt(max(float(np.sum(w * f * f)) - m1 * m1, 0.0))
    return mean, sd


def pion_response(energy: np.ndarray, geo: CaloGeometry, eta: np.ndarray | None = None) -> np.ndarray:
    """Mean EM-scale response ⟨E_vis/E⟩ = f̄ + (1 − f̄)/(e/h) of a hadron shower of ``energy``;
    with ``eta``, times the mean fraction surviving the dead material there."""
    f = groom_em_fraction(energy, geo)
    r = f + (1.0 - f) / float(geo.showers.get("e_over_h", 1.36))
    if eta is not None:
        r = r * (1.0 - dead_material_loss(geo, np.asarray(eta, float))[0])
    return r


def pion_response_sigma(energy: np.ndarray, eta: np.ndarray, geo: CaloGeometry) -> np.ndarray:
    """Expected spread of E_vis/E for a hadron: EM-fraction fluctuation ⊕ dead-material loss ⊕
    sampling terms."""
    eh = float(geo.showers.get("e_over_h", 1.36))
    sf = float(geo.showers.get("em_fraction_sigma", 0.11))
    a, c = block_terms(geo, 1, eta)
    r0 = pion_response(energy, geo)
    _, sd_dead = dead_material_loss(geo, np.asarray(eta, float))
    r = pion_response(energy, geo, eta)
    e = np.maximum(energy, 1e-6)
    return np.sqrt((sf * (1.0 - 1.0 / eh)) ** 2 + (r0 * sd_dead) ** 2 + r**2 * (a**2 / e + c**2))


@dataclass
class ParticleDeposits:
    """Per-particle shower energies (GeV, EM scale) before they are spread over cells."""

    event: np.ndarray
    eta: np.ndarray  # at the calorimeter, from the detector origin
    phi: np.ndarray
    e_layer: np.ndarray  # (n, 2): visible energy in the EM / hadronic compartment
    kind: np.ndarray  # EM / HADRON / MUON
    pileup: np.ndarray  # bool
    em_split: np.ndarray | None = None  # (n, 3): share of the EM-compartment energy in strips / middle / back
    em_strips: np.ndarray | None = None  # (n,): share of it in the virtual strips (geometry virtual_strips)


def shower_particles(particles: FlatTable, rng: np.random.Generator, geo: CaloGeometry | None = None) -> ParticleDeposits:
    """Visible energy of every final-state particle in each compartment (see the module doc).

    ``particles`` needs ``pid, charge, px, py, pz, e, m, vz`` and optionally ``final``,
    ``is_pileup`` (GeV, mm).
    """
    geo = geo or load_geometry()
    s = geo.showers
    cols = particles.columns
    pid = cols["pid"]
    a = np.abs(pid)
    px, py, pz = cols["px"], cols["py"], cols["pz"]
    pt = np.hypot(px, py)
    q = cols["charge"]
    sel = (a != _NEUTRINOS[0]) & (a != _NEUTRINOS[1]) & (a != _NEUTRINOS[2]) & ~((q != 0) & (pt < BEND_PT_GEV))
    sel &= pt > 0
    if "final" in cols:
        sel &= cols["final"].astype(bool)
    idx = np.flatnonzero(sel)
    a, pt, q = a[idx], pt[idx], q[idx]
    sinh_eta = pz[idx] / pt
    eta = np.arcsinh(sinh_eta + cols["vz"][idx] / geo.radius)
    ok = np.abs(eta) < CALO_ETA_MAX
    idx, a, pt, q, eta = idx[ok], a[ok], pt[ok], q[ok], eta[ok]
    phi = bend_phi(np.arctan2(py[idx], px[idx]), pt, q)
    e = cols["e"][idx]
    m = cols["m"][idx]
    kind = np.where((a == 22) | (a == 11), EM, np.where(a == 13, MUON, HADRON)).astype(np.int8)
    baryon = (a > 1000) & (a < 10000)
    avail = np.where(baryon & (pid[idx] > 0), e - m, np.where(baryon & (pid[idx] < 0), e + m, e))
    avail = np.maximum(avail, 0.0)
    n = len(idx)
    z = rng.standard_normal(n)
    # --- EM showers
    a_em, c_em = block_terms(geo, 0, eta)
    b_had = locate(geo, np.ones(n, np.int64), np.clip(eta, -CALO_ETA_MAX + 1e-9, CALO_ETA_MAX - 1e-9))
    a_h, c_h = geo.b_sampling[b_had], geo.b_constant[b_had]  # block_terms(geo, 1, eta)
    is_em = kind == EM
    is_h = kind == HADRON
    res = np.where(is_em, np.sqrt(a_em**2 / np.maximum(avail, 1e-6) + c_em**2),
                   np.sqrt(a_h**2 / np.maximum(avail, 1e-6) + c_h**2))
    # --- hadron showers: EM fraction and non-compensation
    f_mean = groom_em_fraction(avail, geo)
    f_em = np.clip(f_mean + float(s.get("em_fraction_sigma", 0.11)) * rng.standard_normal(n), 0.0, 1.0)
    eh = float(s.get("e_over_h", 1.36))
    scale = np.where(is_h, f_em + (1.0 - f_em) / eh, 1.0)
    vis = np.maximum(avail * scale * (1.0 + res * z), 0.0)
    mu_e = float(s.get("muon_mip_gev", 2.0))
    vis = np.where(kind == MUON, np.minimum(avail, mu_e), vis)
    # --- longitudinal split
    b = float(s.get("longo_b", 0.5))
    t_max = np.maximum(np.log(np.maximum(avail, 1e-3) / float(s.get("critical_energy_gev", 0.022))) - 0.5, 0.0)
    # (the incomplete-Γ profiles are evaluated only for the particles that use them)
    f0 = np.full(n, float(s.get("muon_em_fraction", 0.3)))
    f0[is_em] = gammainc(b * t_max[is_em] + 1.0, b * geo.em_depth_x0)  # Γ(a, b) CDF at the EM depth
    t0 = rng.exponential(1.0, n)
    shape, hscale = float(s.get("had_profile_shape", 1.5)), float(s.get("had_profile_scale", 1.0))
    f_had_layer = gammainc(shape, np.maximum(geo.em_depth_lambda - t0[is_h], 0.0) / hscale)
    f0[is_h] = f_had_layer
    # dead material between the compartments (cryostat): the part of a hadron shower developing in
    # it is lost; its depth fluctuates with the shower start, a per-hadron constant-like term
    dead = geo.b_dead_lambda[b_had]
    f_dead = np.zeros(n)
    hd = is_h & (dead > 0)
    f_dead[hd] = gammainc(shape, np.maximum(geo.em_depth_lambda + dead[hd] - t0[hd], 0.0) / hscale) \
        - f_had_layer[(dead > 0)[is_h]]
    e_layer = np.stack([vis * f0, vis * (1.0 - f0 - f_dead)], axis=1)
    pileup = cols["is_pileup"][idx].astype(bool) if "is_pileup" in cols else np.zeros(n, bool)
    c_sig = float(s.get("had_centroid_sigma", 0.0))
    if c_sig > 0:
        eta, phi = centroid_shift(eta, phi, is_h, avail, c_sig)
    split = strips = None
    if geo.samplings:
        split = em_sampling_split(geo, eta, kind, b * t_max + 1.0, b, t0, shape, hscale)
    elif geo.virtual_strips:
        strips = virtual_strips_share(geo, eta, kind, b * t_max + 1.0, b, t0, shape, hscale)
    deps = ParticleDeposits(particles.event[idx], eta, phi, e_layer, kind, pileup, split, strips)
    if s.get("photon_conversion"):
        deps = convert_photons(deps, a == 22, pt, geo.radius, s["photon_conversion"])
    return deps


#: keys of the ``photon_conversion`` option (``showers`` of the geometry file)
CONVERSION_KEYS = ("central", "endcap", "r_min_mm", "r_max_mm", "e_min_gev")
#: 0.3 · B[T] with B = 2 T: GeV per metre of radius of curvature
_BEND_GEV_PER_M = 0.6


def convert_photons(deps: ParticleDeposits, photon: np.ndarray, pt: np.ndarray, radius_mm: float,
                    opt: dict) -> ParticleDeposits:
    """Photon conversions upstream of the calorimeter (the ``photon_conversion`` option of the geometry's
    ``showers``; absent: no call, the default). A photon of ``e_min_gev`` or more converts with the
    probability ``central`` at η = 0 rising linearly in |η| to ``endcap`` at |η| = 2.5 (constant beyond), at a
    radius uniform in ``r_min_mm`` … ``r_max_mm``; the pair shares its deposit as x, 1 − x (x uniform, the
    nearly flat Bethe–Heitler spectrum) and each e± is bent in the 2 T field from the conversion radius to
    the calorimeter radius, Δφ ≈ ±(R − r)² / (2 ρ R) with ρ = pT / (0.3 B) (opposite charges, opposite
    sides); an e± that curls up before the calorimeter (2ρ < R − r) deposits nothing. Random numbers
    from a stream of their own, seeded by the deposits themselves, so every other draw is unchanged."""
    unknown = set(opt) - set(CONVERSION_KEYS)
    missing = set(CONVERSION_KEYS[:4]) - set(opt)
    if unknown or missing:
        raise ConfigError(f"photon_conversion: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}; "
                          f"valid: {', '.join(CONVERSION_KEYS)}")
    p0, p1 = float(opt["central"]), float(opt["endcap"])
    r_lo, r_hi = float(opt["r_min_mm"]), float(opt["r_max_mm"])
    if not (0 <= p0 <= 1 and 0 <= p1 <= 1 and 0 <= r_lo <= r_hi < radius_mm):
        raise ConfigError("photon_conversion: probabilities in [0, 1] and 0 <= r_min_mm <= r_max_mm < the "
                          "calorimeter radius needed")
    n = len(deps.eta)
    total = deps.e_layer.sum(axis=1)
    rng = np.random.default_rng((n, int(np.sum(total) * 1000.0) % (2**32), 0xC0417))
    u = rng.random((3, n))
    prob = p0 + (p1 - p0) * np.minimum(np.abs(deps.eta) / 2.5, 1.0)
    conv = photon & (total > 0) & (pt * np.cosh(deps.eta) >= float(opt.get("e_min_gev", 1.0))) & (u[0] < prob)
    ci = np.flatnonzero(conv)
    rep = np.repeat(np.arange(n), np.where(conv, 2, 1))
    first = np.ones(len(rep), bool)
    first[1:] = rep[1:] != rep[:-1]
    pos = np.searchsorted(rep, ci)  # the first of each pair
    x = u[1, ci]
    r_c = (r_lo + (r_hi - r_lo) * u[2, ci]) / 1000.0
    big_r = radius_mm / 1000.0
    phi = deps.phi[rep].copy()
    frac = np.ones(len(rep))
    for k, share, sign in ((pos, x, 1.0), (pos + 1, 1.0 - x, -1.0)):
        rho = np.maximum(share * pt[ci], 1e-9) / _BEND_GEV_PER_M
        reach = 2.0 * rho > big_r - r_c
        dphi = sign * (big_r - r_c) ** 2 / (2.0 * rho * big_r)
        phi[k] = np.mod(phi[k] + np.where(reach, dphi, 0.0) + np.pi, 2.0 * np.pi) - np.pi
        frac[k] = np.where(reach, share, 0.0)
    split = None if deps.em_split is None else deps.em_split[rep]
    strips = None if deps.em_strips is None else deps.em_strips[rep]
    return ParticleDeposits(deps.event[rep], deps.eta[rep], phi, deps.e_layer[rep] * frac[:, None], deps.kind[rep],
                            deps.pileup[rep], split, strips)


def centroid_shift(eta: np.ndarray, phi: np.ndarray, move: np.ndarray, energy: np.ndarray,
                   sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Shower-by-shower displacement of the deposit centroid of the particles ``move`` (hadron showers):
    a Gaussian of ``sigma`` in η and in φ (the ``had_centroid_sigma`` option of the geometry's
    ``showers``; absent or 0: no call, the default). Its random numbers come from a stream of their own,
    seeded by the particles themselves (their count and summed ``energy``), so every other draw of the
    chain — showers, noise, pileup — stays that of the same seed without the option."""
    if sigma < 0:
        raise ConfigError(f"had_centroid_sigma must be >= 0, got {sigma:g}")
    seed = (len(eta), int(np.sum(energy) * 1000.0) % (2**32), 0xCE47)
    z = np.random.default_rng(seed).standard_normal((2, len(eta)))
    eta = np.where(move, np.clip(eta + sigma * z[0], -CALO_ETA_MAX + 1e-6, CALO_ETA_MAX - 1e-6), eta)
    phi = np.where(move, np.mod(phi + sigma * z[1] + np.pi, 2.0 * np.pi) - np.pi, phi)
    return eta, phi


def _depth_share(geo: CaloGeometry, kind, em_a, em_b, t0, shape, hscale, lo, hi) -> np.ndarray:
    """The part of each particle's longitudinal profile between the depths ``lo`` and ``hi`` (X0; see
    :func:`em_sampling_split`), not normalised."""
    lam_per_x0 = geo.em_depth_lambda / geo.em_depth_x0
    f = hi - lo  # muons
    f = np.where(kind == EM, gammainc(em_a, em_b * hi) - gammainc(em_a, em_b * lo), f)
    fh = gammainc(shape, np.maximum(hi * lam_per_x0 - t0, 0.0) / hscale) - gammainc(
        shape, np.maximum(lo * lam_per_x0 - t0, 0.0) / hscale)
    return np.maximum(np.where(kind == HADRON, fh, f), 0.0)


def virtual_strips_share(geo: CaloGeometry, eta, kind, em_a, em_b, t0, shape, hscale) -> np.ndarray:
    """Share of each particle's EM-compartment energy in the virtual strips of the one-layer geometry
    (depth :data:`VIRTUAL_STRIPS_X0` of the EM depth, |η| < :data:`VIRTUAL_STRIPS_ETA`; 0 elsewhere): the
    profile integrals of :func:`em_sampling_split` over the strips' depth and the whole EM depth (no
    random draws). The rest is what ATLAS's middle and back samplings would see."""
    lo, hi = VIRTUAL_STRIPS_X0
    part = _depth_share(geo, kind, em_a, em_b, t0, shape, hscale, lo, hi)
    whole = _depth_share(geo, kind, em_a, em_b, t0, shape, hscale, 0.0, geo.em_depth_x0)
    share = np.divide(part, whole, out=np.zeros(len(part)), where=whole > 0)
    return np.where(np.abs(eta) < VIRTUAL_STRIPS_ETA, np.clip(share, 0.0, 1.0), 0.0)


def em_sampling_split(geo: CaloGeometry, eta, kind, em_a, em_b, t0, shape, hscale) -> np.ndarray:
    """(n, 3) shares of each particle's EM-compartment energy in the strips, middle and back samplings
    at its η: its longitudinal profile integrated over each present sampling's depth range
    (``depth_x0``), renormalised over the present samplings (no random draws). EM showers: the Γ(a, b)
    profile in X0 (``em_a``, ``em_b``); hadrons: the Γ(shape, hscale) profile in λ from the shower
    start ``t0`` (λ), depths converted with ``em_depth_lambda / em_depth_x0``; muons: uniform in depth."""
    n = len(eta)
    out = np.zeros((n, 3))
    for rank in range(3):
        blk = locate_sampling(geo, rank, eta)
        ok = blk >= 0
        if not ok.any():
            continue
        lo, hi = geo.b_x0[np.maximum(blk, 0), 0], geo.b_x0[np.maximum(blk, 0), 1]
        out[:, rank] = np.where(ok, _depth_share(geo, kind, em_a, em_b, t0, shape, hscale, lo, hi), 0.0)
    tot = out.sum(axis=1)
    out[tot > 0] /= tot[tot > 0, None]
    out[tot <= 0] = (0.0, 1.0, 0.0)
    return out


@dataclass
class CellEnergies:
    """Dense cell energies of a batch after readout (GeV, EM scale, mean pileup subtracted)."""

    energy: np.ndarray  # (n_events, n_cells)
    sigma: np.ndarray  # (n_cells,) total noise: electronic ⊕ pileup
    truth: np.ndarray  # (n_events, n_cells) deposited energy before noise / pileup subtraction
    geometry: CaloGeometry


#: the deposit stencil covers at least this many lateral σ on each side of the impact point
#: (our choice: ≥ 98.8 % of a Gaussian per axis, ≥ 97.5 % in η × φ; :func:`stencil_cells`)
STENCIL_N_SIGMA = 2.5
#: most cells of a stencil along one axis (guards the buffers; 0.045 on 0.025 cells needs 10, on the
#: 0.025/8 strips 73)
STENCIL_MAX_CELLS = 80


@numba.njit(cache=True)
def _stencil(x, sigma, lo, width, i0):
    """First bin and number of bins of the stencil along one axis: the bins overlapping
    ``[x − 2.5 σ, x + 2.5 σ]``, and at least the impact bin ``i0`` and its two neighbours."""
    a = min(int(math.floor((x - STENCIL_N_SIGMA * sigma - lo) / width)), i0 - 1)
    b = max(int(math.floor((x + STENCIL_N_SIGMA * sigma - lo) / width)), i0 + 1)
    n = min(b - a + 1, STENCIL_MAX_CELLS)
    if n < b - a + 1:  # (not reached with the shipped widths) keep it centred on the impact bin
        a = i0 - n // 2
    return a, n


def stencil_cells(x, sigma: float, lo: float, width: float) -> tuple[int, int]:
    """First cell index and number of cells of a deposit's stencil along one axis (η or φ; cells of
    ``width`` from ``lo``): the cells overlapping ``x ± 2.5 σ``, at least the impact cell ±1."""
    i0 = int(math.floor((x - lo) / width))
    return _stencil(float(x), float(sigma), float(lo), float(width), i0)


#: erf tabulated for :func:`_erf_tab` at ``t = k h``, ``h = 1/ERF_TABLE_STEPS``, ``0 ≤ t ≤`` 6
#: (beyond 6, ``1 − erf(t) < 2.2e-17`` and erf rounds to 1 in float64), with its derivative times h
ERF_TABLE_STEPS = 256
_ERF_T = np.arange(6 * ERF_TABLE_STEPS + 2) / ERF_TABLE_STEPS
_ERF_V = np.array([math.erf(t) for t in _ERF_T])
_ERF_D = 2.0 / math.sqrt(math.pi) * np.exp(-_ERF_T * _ERF_T) / ERF_TABLE_STEPS
_ERF_LAST = len(_ERF_T) - 1


@numba.njit(cache=True)
def _erf_tab(x):
    """erf(x) by cubic Hermite interpolation of the table (values and derivatives at steps of
    1/256): absolute error < 5e-12 (``tests/test_sim_deposit_erf.py``; the interpolation bound
    h⁴/384 · max|erf⁗| = 3.5e-12), odd, 1 beyond 6; ≈ 5 ns against ≈ 14 ns for ``math.erf``."""
    u = abs(x) * ERF_TABLE_STEPS
    if not u < _ERF_LAST:  # (NaN falls through to the libm erf)
        return math.erf(x) if u != u else math.copysign(1.0, x)
    i = int(u)
    s = u - i
    y0 = _ERF_V[i]
    y1 = _ERF_V[i + 1]
    d0 = _ERF_D[i]
    d1 = _ERF_D[i + 1]
    r = y0 + s * (d0 + s * (3.0 * (y1 - y0) - 2.0 * d0 - d1 + s * (2.0 * (y0 - y1) + d0 + d1)))
    return r if x >= 0 else -r


@numba.njit(cache=True)
def _gauss_bins(x, lo, width, n_bins, j0, n, sigma, out):
    """Fractions of a Gaussian (mean x, width sigma) in bins ``j0 .. j0 + n − 1`` (of width
    ``width`` starting at ``lo``) into ``out[0 .. n − 1]``; bins outside ``[0, n_bins)`` get 0
    (n_bins < 0: periodic); normalised to the stencil (the tails beyond it are folded back)."""
    tot = 0.0
    inv = 1.0 / (sigma * math.sqrt(2.0))
    lo_cdf = _erf_tab((lo + j0 * width - x) * inv)  # neighbouring bins share their edge erf
    for k in range(n):
        j = j0 + k
        hi_cdf = _erf_tab((lo + (j + 1) * width - x) * inv)
        f = 0.5 * (hi_cdf - lo_cdf)
        lo_cdf = hi_cdf
        if n_bins >= 0 and (j < 0 or j >= n_bins):
            f = 0.0
        out[k] = f
        tot += f
    if tot <= 0:
        for k in range(n):
            out[k] = 0.0
        out[min(max(int(math.floor((x - lo) / width)) - j0, 0), n - 1)] = 1.0
    else:
        for k in range(n):
            out[k] /= tot


@numba.njit(cache=True)
def _deposit(event, block, eta, phi, energy, sigma, pileup, b_lo, b_hi, b_ne, b_np, b_off, n_cells, total, pile):
    """:func:`_deposit_parts` without a second part."""
    none = np.zeros(1)
    _deposit_parts(event, block, eta, phi, energy, sigma, pileup, b_lo, b_hi, b_ne, b_np, b_off, n_cells, total, pile,
                   none, none, False)


@numba.njit(cache=True)
def _deposit_parts(event, block, eta, phi, energy, sigma, pileup, b_lo, b_hi, b_ne, b_np, b_off, n_cells, total,
                   pile, energy2, out2, has2):
    """Add each deposit over its stencil (:func:`stencil_cells` in η and in φ, from its lateral σ
    and its block's cell size) into ``total`` (and ``pile`` if pileup); if ``has2``, ``energy2`` (a part
    of each deposit) over the same stencil into ``out2``."""
    fe = np.empty(STENCIL_MAX_CELLS)
    fp = np.empty(STENCIL_MAX_CELLS)
    col = np.empty(STENCIL_MAX_CELLS, np.int64)  # the φ column of each stencil bin (wrapped once per deposit)
    for i in range(eta.shape[0]):
        b = block[i]
        ne = b_ne[b]
        nphi = b_np[b]
        deta = (b_hi[b] - b_lo[b]) / ne
        dphi = 2 * np.pi / nphi
        ie = min(max(int(np.floor((eta[i] - b_lo[b]) / deta)), 0), ne - 1)
        ip = int(np.floor((phi[i] + np.pi) / dphi))
        je0, nje = _stencil(eta[i], sigma[i], b_lo[b], deta, ie)
        jp0, njp = _stencil(phi[i], sigma[i], -np.pi, dphi, ip)
        njp = min(njp, nphi)  # never wrap onto itself in φ
        ip = ip % nphi
        _gauss_bins(eta[i], b_lo[b], deta, ne, je0, nje, sigma[i], fe)
        _gauss_bins(phi[i], -np.pi, dphi, -1, jp0, njp, sigma[i], fp)
        base = event[i] * n_cells + b_off[b]
        for m in range(njp):
            col[m] = (jp0 + m) % nphi
        pu = pileup[i]
        for k in range(nje):
            if fe[k] == 0.0:
                continue
            je = je0 + k
            ek = energy[i] * fe[k]
            row = base + je * nphi
            for m in range(njp):
                e = ek * fp[m]
                c = row + col[m]
                total[c] += e
                if pu:
                    pile[c] += e
            if has2:
                ek2 = energy2[i] * fe[k]
                for m in range(njp):
                    out2[row + col[m]] += ek2 * fp[m]


def _layer_deposits(deps: ParticleDeposits, geo: CaloGeometry):
    """Per compartment: the deposits with energy there, their block and lateral width, in the
    particles' order (the order of the per-cell sums)."""
    s = geo.showers
    out = []
    slots = [(0, None), (1, None)] if deps.em_split is None else [(0, 0), (0, 1), (0, 2), (1, None)]
    for lay, rank in slots:
        e = deps.e_layer[:, lay] if rank is None else deps.e_layer[:, 0] * deps.em_split[:, rank]
        m = np.flatnonzero(e > 0)
        blk = locate(geo, np.full(len(m), lay), deps.eta[m]) if rank is None else locate_sampling(geo, rank,
                                                                                                  deps.eta[m])
        ok = blk >= 0
        m, blk = m[ok], blk[ok]
        sig = np.where(deps.kind[m] == EM, float(s.get("em_lateral_sigma", 0.012)),
                       float(s.get("had_lateral_sigma", 0.045)))
        out.append((m, blk, sig, e[m]))
    return out


def _strips_energies(deps: ParticleDeposits, layers) -> list:
    """Per row of :func:`_layer_deposits`: the virtual strips' part of each deposit's energy (the EM
    compartment of a ``virtual_strips`` geometry), else ``None``."""
    if deps.em_strips is None:
        return [None] * len(layers)
    return [deps.em_strips[m] * e if i == 0 else None for i, (m, _, _, e) in enumerate(layers)]


def _deposit_layers(deps, layers, geo, picks, first: int, total, pile, with_pile: bool, strips=None,
                    strips_e=None) -> None:
    """:func:`_deposit` of the deposits ``picks[layer]`` (rows of :func:`_layer_deposits`; ``None``:
    all) of each compartment, events counted from ``first``; with ``strips`` (flat, as ``total``) also
    the virtual strips' part of them (``strips_e``, :func:`_strips_energies`)."""
    none = np.zeros(1)
    for i, ((m, blk, sig, e), k) in enumerate(zip(layers, picks, strict=True)):
        if k is None:
            k = np.arange(len(m))
        if len(k) == 0:
            continue
        mk = m[k]
        e2 = strips_e[i] if strips is not None else None
        _deposit_parts(deps.event[mk] - first, blk[k], deps.eta[mk], deps.phi[mk], e[k], sig[k],
                       deps.pileup[mk] & with_pile, geo.b_eta_lo, geo.b_eta_hi, geo.b_n_eta, geo.b_n_phi, geo.b_offset,
                       geo.n_cells, total, pile, none if e2 is None else e2[k], none if e2 is None else strips,
                       e2 is not None)


def deposit_cells(deps: ParticleDeposits, n_events: int, geo: CaloGeometry | None = None):
    """Spread the deposits over their stencils (Gaussian lateral profile integrated over the cells,
    renormalised to the stencil, whose size follows σ / cell size: :func:`stencil_cells`); returns dense (n_events, n_cells) total and pileup-only sums
    (``None`` without pileup particles)."""
    geo = geo or load_geometry()
    nc = geo.n_cells
    total = np.zeros(n_events * nc)
    has_pu = bool(deps.pileup.any())
    pile = np.zeros(n_events * nc) if has_pu else np.zeros(1)
    layers = _layer_deposits(deps, geo)
    _deposit_layers(deps, layers, geo, (None,) * len(layers), 0, total, pile, has_pu)
    return total.reshape(n_events, nc), (pile.reshape(n_events, nc) if has_pu else None)


def _pileup_terms(s1_cell, s2_cell, n_ev: int, n_pileup: np.ndarray, mu: float, geo: CaloGeometry):
    """Mean pileup energy to subtract per cell (``μ m₁``) and the pileup variance per cell
    (``μ s₁²``) from the per-cell sums of the pileup-only energy and its square over the batch;
    ``None, zeros`` without pileup."""
    nc = geo.n_cells
    if s1_cell is None or not (mu > 0 and n_ev > 0 and float(np.sum(n_pileup)) > 0):
        return None, np.zeros(nc)
    n_mean = float(np.mean(n_pileup))
    cells_per_ring = np.bincount(geo.ring, minlength=geo.n_rings) * n_ev
    s1 = np.bincount(geo.ring, weights=s1_cell, minlength=geo.n_rings)
    s2 = np.bincount(geo.ring, weights=s2_cell, minlength=geo.n_rings)
    mean_cell = s1 / np.maximum(cells_per_ring, 1)
    var_cell = np.maximum(s2 / np.maximum(cells_per_ring, 1) - mean_cell**2, 0.0)
    m1 = mean_cell / n_mean  # per interaction
    v1 = var_cell / n_mean
    return mu * m1[geo.ring], mu * v1[geo.ring]


def readout(
    total: np.ndarray,
    pileup_only: np.ndarray | None,
    n_pileup: np.ndarray,
    mu: float,
    rng: np.random.Generator,
    geo: CaloGeometry | None = None,
) -> CellEnergies:
    """Electronic noise, mean-pileup subtraction and the total noise of each cell.

    ``n_pileup``: actual pileup interactions per event (``μ`` is their mean).
    """
    geo = geo or load_geometry()
    n_ev, nc = total.shape
    # electronic noise (float32 draws: 2x faster, ample precision for a noise term)
    energy = geo.noise.astype(np.float32) * rng.standard_normal((n_ev, nc), dtype=np.float32)
    energy = energy.astype(np.float64)
    energy += total
    s1 = s2 = None
    if pileup_only is not None:
        s1, s2 = pileup_only.sum(axis=0), (pileup_only**2).sum(axis=0)
    sub, var_pu = _pileup_terms(s1, s2, n_ev, n_pileup, mu, geo)
    if sub is not None:
        energy -= sub
    sigma = np.sqrt(geo.noise**2 + var_pu)
    return CellEnergies(energy, sigma, total, geo)


#: events read out together by :func:`readout_chunks` (their cells stay in the CPU cache; our choice)
READOUT_CHUNK = 8


@numba.njit(cache=True)
def _add_noise(energy, z, noise32, sub, has_sub):
    """``energy += float64(noise32 · z) (− sub)`` in place, as :func:`readout`'s array operations."""
    n_ev, nc = energy.shape
    for i in range(n_ev):
        for c in range(nc):
            x = np.float64(noise32[c] * z[i, c]) + energy[i, c]
            if has_sub:
                x -= sub[c]
            energy[i, c] = x
    return energy


@numba.njit(cache=True)
def _add_squares(s1, s2, pile):
    """Column sums of ``pile`` and of its square added row by row (the order of ``ndarray.sum(axis=0)``)."""
    for i in range(pile.shape[0]):
        for c in range(pile.shape[1]):
            x = pile[i, c]
            s1[c] += x
            s2[c] += x * x


class _ChunkPlan:
    """What :func:`readout_chunks` and :func:`deposit_chunks` share: the deposits in event order,
    the chunk bounds, and the mean pileup subtracted and the total noise per cell (measured on the
    pileup deposits of the batch, a few events at a time)."""

    def __init__(self, deps: ParticleDeposits, n_events: int, n_pileup: np.ndarray, mu: float, geo: CaloGeometry,
                 chunk: int):
        if chunk < 1:
            raise ConfigError(f"readout chunk must be >= 1 event, got {chunk}")
        nc = geo.n_cells
        order = np.argsort(deps.event, kind="stable") if np.any(np.diff(deps.event) < 0) else None
        if order is not None:
            deps = ParticleDeposits(deps.event[order], deps.eta[order], deps.phi[order], deps.e_layer[order],
                                    deps.kind[order], deps.pileup[order],
                                    None if deps.em_split is None else deps.em_split[order],
                                    None if deps.em_strips is None else deps.em_strips[order])
        self.deps, self.geo, self.chunk = deps, geo, chunk
        self.layers = _layer_deposits(deps, geo)
        self.strips_e = _strips_energies(deps, self.layers)
        self.ev_of = [deps.event[m] for m, *_ in self.layers]
        bounds = np.arange(0, n_events + chunk, chunk)
        bounds[-1] = min(bounds[-1], n_events)
        self.bounds = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        s1 = s2 = None
        if bool(deps.pileup.any()) and mu > 0:
            s1, s2 = np.zeros(nc), np.zeros(nc)
            pile_buf = np.empty(chunk * nc)
            for lo, hi in self.bounds:
                pile = pile_buf[: (hi - lo) * nc]
                pile.fill(0.0)
                # pileup deposits only, in the particles' order: the dense pileup-only sums
                self.deposit(pile, lo, hi, pileup_only=True)
                _add_squares(s1, s2, pile.reshape(hi - lo, nc))
        self.sub, var_pu = _pileup_terms(s1, s2, n_events, n_pileup, mu, geo)
        self.sigma = np.sqrt(geo.noise**2 + var_pu)

    def deposit(self, out: np.ndarray, lo: int, hi: int, pileup_only: bool = False, strips=None) -> None:
        """Add the deposits of events ``lo .. hi − 1`` (all, or the pileup ones) into the flat ``out``
        (and their virtual strips' part into the flat ``strips`` if given)."""
        picks = []
        for (m, *_), ev in zip(self.layers, self.ev_of, strict=True):
            a, b = np.searchsorted(ev, (lo, hi))
            picks.append(a + np.flatnonzero(self.deps.pileup[m[a:b]]) if pileup_only else np.arange(a, b))
        _deposit_layers(self.deps, self.layers, self.geo, picks, lo, out, np.zeros(1), False, strips, self.strips_e)

    def deposit_chunks(self, cleared: bool = False, with_strips: bool = False):
        """``(first, deposited energy (≤ chunk, n_cells))`` per chunk, one buffer reused.
        ``cleared``: the consumer sets the buffer back to all zeros before it asks for the next
        chunk (:func:`lhcml.sim.topoclusters._topo_fill_sparse` with ``clear``), so it is not
        zeroed here again. ``with_strips``: ``(first, energy, strips)``, ``strips`` the virtual
        strips' part of the deposits (same shape, its own buffer, ``cleared`` as ``energy``) or ``None``
        when the deposits carry none (:attr:`CaloGeometry.virtual_strips`)."""
        nc = self.geo.n_cells
        # one buffer reused from chunk to chunk (fresh memory for every chunk costs page faults)
        e_buf = np.zeros(self.chunk * nc)
        has_s = with_strips and self.deps.em_strips is not None
        s_buf = np.zeros(self.chunk * nc) if has_s else None
        for lo, hi in self.bounds:
            energy = e_buf[: (hi - lo) * nc]
            if not cleared:
                energy.fill(0.0)
            strips = None
            if has_s:
                strips = s_buf[: (hi - lo) * nc]
                if not cleared:
                    strips.fill(0.0)
            self.deposit(energy, lo, hi, strips=strips)
            if with_strips:
                yield lo, energy.reshape(hi - lo, nc), None if strips is None else strips.reshape(hi - lo, nc)
            else:
                yield lo, energy.reshape(hi - lo, nc)


def readout_chunks(deps: ParticleDeposits, n_events: int, n_pileup: np.ndarray, mu: float,
                   rng: np.random.Generator, geo: CaloGeometry | None = None, chunk: int = READOUT_CHUNK):
    """:func:`deposit_cells` + :func:`readout` a few events at a time: the same cell energies
    (the same noise draws in the same order, the same sums) without the dense arrays of the batch.

    Returns the total noise per cell and an iterator over ``(first_event, energy)`` with
    ``energy`` of shape ``(≤ chunk, n_cells)``, one buffer reused from item to item (copy it to
    keep it); the iterator draws the noise as it goes, so it must be consumed before ``rng`` is
    used again. (The dense reference of the chain's sparse readout, :func:`deposit_chunks`.)
    """
    geo = geo or load_geometry()
    nc = geo.n_cells
    plan = _ChunkPlan(deps, n_events, n_pileup, mu, geo, chunk)
    noise32 = geo.noise.astype(np.float32)
    sub_arr = plan.sub if plan.sub is not None else np.zeros(nc)

    def chunks():
        z_buf = np.empty(chunk * nc, np.float32)
        for lo, energy in plan.deposit_chunks():
            n = energy.shape[0]
            z = z_buf[: n * nc].reshape(n, nc)
            rng.standard_normal(dtype=np.float32, out=z)  # the same draws as a fresh (n, nc) array
            yield lo, _add_noise(energy, z, noise32, sub_arr, plan.sub is not None)

    return plan.sigma, chunks()


def deposit_chunks(deps: ParticleDeposits, n_events: int, n_pileup: np.ndarray, mu: float, grow_sigma: float,
                   seed_sigma: float, geo: CaloGeometry | None = None, chunk: int = READOUT_CHUNK,
                   cleared: bool = False, with_strips: bool = False):
    """The deposits of a few events at a time and the noise model of the sparse readout.

    Returns the :class:`lhcml.sim.cell_noise.SparseNoise` of the batch (its ``sigma`` is
    :func:`readout_chunks`'s total noise; ``grow_sigma``, ``seed_sigma``: the clustering's growth and
    seed thresholds) and
    an iterator over ``(first_event, deposited energy (≤ chunk, n_cells))``, one buffer reused.
    The noise is then drawn event by event where the clustering can see it
    (:func:`lhcml.sim.cell_noise.read_event`): the same distribution per cell as
    :func:`readout_chunks`, far fewer draws. ``cleared``: the consumer leaves the buffer all zeros
    after each chunk (:meth:`_ChunkPlan.deposit_chunks`). ``with_strips``: items ``(first, energy,
    strips)`` with the virtual strips' part of the deposits (``None`` without; :meth:`_ChunkPlan.deposit_chunks`).
    """
    geo = geo or load_geometry()
    plan = _ChunkPlan(deps, n_events, n_pileup, mu, geo, chunk)
    return (sparse_noise_model(geo.noise, plan.sigma, plan.sub, grow_sigma, seed_sigma),
            plan.deposit_chunks(cleared, with_strips))


def simulate_cells(
    particles: FlatTable,
    rng: np.random.Generator,
    mu: float = 0.0,
    n_pileup: np.ndarray | None = None,
    geo: CaloGeometry | None = None,
) -> CellEnergies:
    """The whole calorimeter simulation of a batch: showers → cells → readout."""
    geo = geo or load_geometry()
    deps = shower_particles(particles, rng, geo)
    total, pile = deposit_cells(deps, len(particles), geo)
    if n_pileup is None:
        n_pileup = np.full(len(particles), mu)
    return readout(total, pile, np.asarray(n_pileup, float), float(mu), rng, geo)
