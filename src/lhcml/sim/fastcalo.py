"""Fast calorimeter simulation: voxelised single-particle showers and generated showers in the cells.

**Voxelisation** (:func:`voxel_binning`, our choice, docs/fastcalo.md): the detailed photon
calorimeter's own cells. Per read-out layer a fixed window of ``n_eta x n_phi`` cells
(:data:`VOXEL_WINDOWS`) centred on that layer's *impact cell*, the cell the particle's shower
axis (:func:`lhcml.sim.showers.axis_positions`, bending included) crosses at the layer's
radius. Strips 57 x 3 (Δη x Δφ = 0.178 x 0.29), middle 7 x 11 (0.175 x 0.27, the photon-ID
image), back 5 x 11, the two Tile samplings 3 x 3 (0.3 x 0.3, covering the ±0.12 box of R_had):
321 voxels, the size of the challenge's dataset 1 (368 photon voxels). The binning is written
as a CaloChallenge binning XML with lhcml's cell attributes (:mod:`lhcml.data.calochallenge`).
Showers of particles at η < 0 are mirrored in η (the barrel is symmetric), so voxel η always
points to larger |η|; charged particles of the opposite charge to the trained one are mirrored
in φ (they bend the other way).

**Training data** (:func:`detailed_showers`, ``lhcml fastcalo simulate``): single particles
from the origin (the beam-spot centre), φ uniform, η uniform in ``eta_range`` (0.20-0.25 by
default, as the ATLAS samples of docs/references.md §9 and dataset 1 of §14), through the
detailed simulation (:func:`lhcml.sim.calorimeter.deposit`: GFlash-like showers, sampling
fluctuations). Photons are shot *at the calorimeter surface*: no conversions in the tracker
material (as dataset 1; the inner-detector simulation converts photons before the calorimeter
and the e+e- pair is a pair of electrons, see :func:`FastCalo.split`). The voxels are stored
without and with the electronic noise of every cell (the same shower), and the photon-ID cell
images and shower shapes (:func:`lhcml.sim.clusters.build_clusters`, seeded on the impact cell)
of the noisy showers.

**Generated showers in the simulation** (:class:`FastCalo`, ``lhcml simulate gamma_jet --calo
fast:MODEL.onnx``): an ONNX sampling graph (``incident_energy`` ``(N, 1)`` GeV, for a model
conditioned on η also ``eta`` ``(N, 1)`` — each particle's |η| — and ``noise`` ``(N, noise_dim)``
in, ``showers`` ``(N, V)`` GeV out; lhcml.export.fastcalo) run with onnxruntime. Particles of the
trained type with an energy inside the trained range and ``|eta| < acceptance`` (and, for an
η-conditioned model, inside its trained |η| range) get a generated shower placed into the cells around their impact cells
(:func:`place_voxels`) instead of the detailed shower; all other particles (hadrons, pile-up,
particles outside the trained energy range) keep the detailed simulation, as ATLAS's AtlFast3
chooses a tool per particle. Noise, pile-up, clustering and the dataset fields are unchanged.
With ``--spot-readout FRACTION`` (the option of ``lhcml fastcalo generate``; carried in the
``--calo`` value as ``fast:MODEL.onnx@spot-readout=FRACTION``, so the manifest and every shard
record it) the generated showers are read out as the detailed simulation's energy spots
(:class:`lhcml.sim.spot_readout.SpotReadout` of the simulation's geometry: cells under the
``FRACTION`` quantile of one spot's energy become one spot or nothing, each layer keeps its
generated energy) before they are placed into the cells. With ``--impact-eta``
(``fast:MODEL.onnx@impact-eta``, opt-in) an η-conditioned generator is given the |η| where the shower axis
crosses the strips instead of the direction's |η| (:attr:`FastCalo.impact_eta`): the two differ for a vertex
displaced along the beam, and the generator reads the impact position inside its cells from that |η|.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lhcml.data.calochallenge import CELLS, Binning, LayerBinning, parse_binning
from lhcml.errors import ConfigError
from lhcml.sim.calo_geometry import CaloGeometry, load_geometry
from lhcml.sim.calorimeter import CaloEvents

#: particle name -> PDG id of the single-particle samples
PARTICLES: dict[str, int] = {"photon": 22, "electron": 11, "pi0": 111, "pion": 211}
#: the seed's energies: log-spaced 1-260 GeV (docs/references.md §9, ATLAS talk), 16 points (our
#: choice of the number: >= 15 asked)
ENERGY_POINTS_GEV: tuple[float, ...] = tuple(float(x) for x in np.round(np.geomspace(1.0, 260.0, 16), 4))
#: energy range of the continuous (log-uniform) sample
ENERGY_RANGE_GEV = (1.0, 260.0)
#: |eta| range of the single particles (docs/references.md §9 / §14: ATLAS and dataset 1)
ETA_RANGE = (0.20, 0.25)
#: (n_eta, n_phi) cells per layer, centred on the layer's impact cell (our choice, module docstring)
VOXEL_WINDOWS: dict[str, tuple[int, int]] = {
    "strips": (57, 3), "middle": (7, 11), "back": (5, 11), "had1": (3, 3), "had2": (3, 3),
}  # fmt: skip
#: layer ids as ATLAS calorimeter samplings (CaloChallenge dataset 1 uses the same numbers)
LAYER_IDS: dict[str, int] = {"presampler": 0, "strips": 1, "middle": 2, "back": 3, "had1": 12, "had2": 13}
#: the energy at which the detailed simulation time per shower is quoted (docs/references.md §9)
TIMING_ENERGY_GEV = 65.0


def particle_pid(particle: str) -> int:
    """PDG id of a particle name of :data:`PARTICLES`."""
    if particle not in PARTICLES:
        raise ConfigError(f"unknown particle '{particle}' (valid: {', '.join(PARTICLES)})")
    return PARTICLES[particle]


def voxel_binning(
    particle: str = "photon",
    geometry: CaloGeometry | None = None,
    windows: dict[str, tuple[int, int]] | None = None,
    eta_range: tuple[float, float] = ETA_RANGE,
) -> Binning:
    """The cell-window voxelisation of the detailed calorimeter (module docstring)."""
    geo = geometry or load_geometry()
    windows = dict(VOXEL_WINDOWS if windows is None else windows)
    layers = []
    for name, (h, w) in windows.items():
        lay = geo.layer(name)
        if not lay.readout:
            raise ConfigError(f"voxel layer '{name}' has no cells in this geometry (enable it or drop it)")
        if h < 1 or w < 1 or h % 2 == 0 or w % 2 == 0:
            raise ConfigError(f"voxel window of '{name}' must be odd x odd cells (centred), got {h} x {w}")
        layers.append(LayerBinning(id=LAYER_IDS.get(name, 100 + len(layers)), kind=CELLS, name=name,
                                   n_eta=h, n_phi=w, deta=lay.deta, dphi=lay.dphi))  # fmt: skip
    pid = particle_pid(particle)
    b = Binning(particle=particle, pid=pid, layers=tuple(layers),
                attrs={"eta_min": f"{eta_range[0]:g}", "eta_max": f"{eta_range[1]:g}", "geometry": geo.name})  # fmt: skip
    return parse_binning(b.to_xml())


def _check_cells(binning: Binning, geo: CaloGeometry) -> list[Any]:
    """The geometry layer of each binning layer (cell binnings only)."""
    if binning.kind != CELLS:
        raise ConfigError(
            f"binning of '{binning.particle}' is a polar (r, alpha) CaloChallenge binning; placing showers "
            f"into lhcml's cells needs an lhcml cell binning (lhcml fastcalo simulate writes one)"
        )
    out = []
    for b in binning.layers:
        lay = geo.layer(b.name)
        if abs(lay.deta - b.deta) > 1e-9 or abs(lay.dphi - b.dphi) > 1e-9:
            raise ConfigError(
                f"binning layer '{b.name}' has cells {b.deta:g} x {b.dphi:g} but the calorimeter "
                f"{lay.deta:g} x {lay.dphi:g}; use a binning made for this geometry"
            )
        out.append(lay)
    return out


def impact_cells(
    eta: np.ndarray, phi: np.ndarray, charge: np.ndarray, pt_gev: np.ndarray,
    vx: np.ndarray, vy: np.ndarray, vz: np.ndarray, binning: Binning, geo: CaloGeometry,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Impact cell ``(i_eta, i_phi)`` of each particle in each binning layer, ``(n, n_layers)``.

    ``i_eta`` is -1 where the axis misses the layer's coverage.
    """
    from lhcml.sim.showers import axis_positions

    lays = _check_cells(binning, geo)
    a_eta, a_phi = axis_positions(np.asarray(eta, float), np.asarray(phi, float), np.asarray(charge, float),
                                  np.asarray(pt_gev, float), np.asarray(vx, float), np.asarray(vy, float),
                                  np.asarray(vz, float), geo)  # fmt: skip
    names = [x.name for x in geo.layers]
    ie = np.stack([lay.eta_index(a_eta[:, names.index(lay.name)]) for lay in lays], axis=1)
    ip = np.stack([lay.phi_index(a_phi[:, names.index(lay.name)]) for lay in lays], axis=1)
    return ie, ip


def strip_impact_eta(
    eta: np.ndarray, phi: np.ndarray, charge: np.ndarray, pt_gev: np.ndarray,
    vx: np.ndarray, vy: np.ndarray, vz: np.ndarray, binning: Binning, geo: CaloGeometry,
) -> np.ndarray:  # fmt: skip
    """η where each particle's shower axis crosses the binning layer with the finest η cells (the strips),
    ``(n,)``: the η a particle from the origin would need to hit the same point there (for one from the
    origin, its own η)."""
    from lhcml.sim.showers import axis_positions

    lays = _check_cells(binning, geo)
    finest = min(lays, key=lambda lay: lay.deta)
    a_eta, _ = axis_positions(np.asarray(eta, float), np.asarray(phi, float), np.asarray(charge, float),
                              np.asarray(pt_gev, float), np.asarray(vx, float), np.asarray(vy, float),
                              np.asarray(vz, float), geo)  # fmt: skip
    return a_eta[:, [x.name for x in geo.layers].index(finest.name)]


def _window(b: LayerBinning, lay: Any, ie: np.ndarray, ip: np.ndarray, flip_eta: np.ndarray, flip_phi: np.ndarray):
    """Cell indices ``(ii (n, h), jj (n, w), inside (n, h))`` of each window in voxel order."""
    h, w = b.n_eta, b.n_phi
    de = np.arange(h) - h // 2
    dp = np.arange(w) - w // 2
    ii = ie[:, None] + np.where(flip_eta[:, None], -de[None, :], de[None, :])
    jj = np.mod(ip[:, None] + np.where(flip_phi[:, None], -dp[None, :], dp[None, :]), lay.n_phi)
    inside = (ie[:, None] >= 0) & (ii >= 0) & (ii < lay.n_eta)
    return np.clip(ii, 0, lay.n_eta - 1), jj, inside


def _flips(n: int, flip_eta: np.ndarray | None, flip_phi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    fe = np.zeros(n, bool) if flip_eta is None else np.asarray(flip_eta, bool)
    fp = np.zeros(n, bool) if flip_phi is None else np.asarray(flip_phi, bool)
    return fe, fp


def extract_voxels(
    grids: dict[str, np.ndarray], event: np.ndarray, ie: np.ndarray, ip: np.ndarray, binning: Binning,
    geo: CaloGeometry, flip_eta: np.ndarray | None = None, flip_phi: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Voxels ``(n, V)`` (grid units) of the windows around the impact cells ``ie, ip`` (:func:`impact_cells`).

    ``grids[layer]`` are ``(n_events, n_eta, n_phi)`` cell grids; ``event`` the row of each shower.
    """
    lays = _check_cells(binning, geo)
    event = np.asarray(event, np.int64)
    fe, fp = _flips(len(event), flip_eta, flip_phi)
    out = []
    for k, (b, lay) in enumerate(zip(binning.layers, lays, strict=True)):
        ii, jj, inside = _window(b, lay, ie[:, k], ip[:, k], fe, fp)
        g = grids[lay.name][event[:, None, None], ii[:, :, None], jj[:, None, :]]
        out.append(np.where(inside[:, :, None], g, 0.0).reshape(len(event), -1))
    return np.concatenate(out, axis=1).astype(np.float32)


def place_voxels(
    grids: dict[str, np.ndarray], event: np.ndarray, ie: np.ndarray, ip: np.ndarray, voxels: np.ndarray,
    binning: Binning, geo: CaloGeometry, flip_eta: np.ndarray | None = None, flip_phi: np.ndarray | None = None,
) -> None:  # fmt: skip
    """Add ``voxels`` ``(n, V)`` into ``grids`` (in place) around the impact cells: the inverse of
    :func:`extract_voxels` (voxels beyond the layer's η coverage are lost, as the detailed
    simulation loses energy there)."""
    lays = _check_cells(binning, geo)
    event = np.asarray(event, np.int64)
    fe, fp = _flips(len(event), flip_eta, flip_phi)
    for k, (b, lay, sl) in enumerate(zip(binning.layers, lays, binning.layer_slices, strict=True)):
        ii, jj, inside = _window(b, lay, ie[:, k], ip[:, k], fe, fp)
        v = voxels[:, sl].reshape(len(event), b.n_eta, b.n_phi)
        ev3 = np.broadcast_to(event[:, None, None], v.shape)
        ii3 = np.broadcast_to(ii[:, :, None], v.shape)
        jj3 = np.broadcast_to(jj[:, None, :], v.shape)
        ok = np.broadcast_to(inside[:, :, None], v.shape)
        grid = grids[lay.name]
        np.add.at(grid, (ev3[ok], ii3[ok], jj3[ok]), v[ok].astype(grid.dtype))


# ------------------------------------------------------------------------------------------------
# detailed single-particle showers (the training data)
# ------------------------------------------------------------------------------------------------


def shower_energies(mode: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Incident energies (GeV): ``discrete`` (the :data:`ENERGY_POINTS_GEV` in turn, shuffled),
    ``continuous`` (log-uniform in :data:`ENERGY_RANGE_GEV`) or a number (fixed energy)."""
    if mode == "discrete":
        pts = np.asarray(ENERGY_POINTS_GEV)
        return rng.permutation(pts[np.arange(n) % len(pts)])
    if mode == "continuous":
        lo, hi = ENERGY_RANGE_GEV
        return np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    try:
        e = float(mode)
    except ValueError:
        raise ConfigError(f"energies must be 'discrete', 'continuous' or a number in GeV, got {mode!r}") from None
    if not (e > 0 and math.isfinite(e)):
        raise ConfigError(f"a fixed energy must be positive (GeV), got {mode!r}")
    return np.full(n, e)


def detailed_showers(
    particle: str,
    energies_gev: np.ndarray,
    seed: int,
    *,
    eta_range: tuple[float, float] = ETA_RANGE,
    geometry: CaloGeometry | None = None,
    binning: Binning | None = None,
    batch_size: int = 100,
    images: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, np.ndarray]:
    """Single particles through the detailed calorimeter, voxelised (module docstring).

    Returns
    -------
    dict
        ``incident_energies`` ``(n, 1)`` MeV; ``incident_eta`` ``(n, 1)`` |η|; ``incident_phi`` ``(n, 1)`` φ (rad); ``showers``
        ``(n, V)`` MeV without noise and ``showers_noise`` with the electronic noise; ``truth`` (``energy`` MeV, ``eta``, ``phi``);
        with ``images``, the photon-ID layout of the noisy showers: ``photons`` (kinematics and
        shower shapes, :data:`lhcml.data.schema.PHOTON_DTYPE`), ``images_<layer>`` (normalised)
        and ``raw_<layer>`` (MeV).
    """
    from lhcml.sim.calorimeter import deposit, electronic_noise
    from lhcml.sim.photons import single_particles

    geo = geometry or load_geometry()
    binning = binning or voxel_binning(particle, geo, eta_range=eta_range)
    pid = particle_pid(particle)
    energies_gev = np.asarray(energies_gev, float)
    n_all = len(energies_gev)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_all, batch_size):
        e = energies_gev[start:start + batch_size]
        m = len(e)
        rng = np.random.default_rng([int(seed), start, 0xFA57CA10])  # per batch: resumable, order-free
        eta = rng.uniform(*eta_range, m)
        phi = rng.uniform(-np.pi, np.pi, m)
        cols, ev = single_particles(pid, e, eta, phi, rng, 0.0)
        cells, _ = deposit(cols, ev, m, geo, rng, convert=False)
        noise = electronic_noise(m, geo, rng)
        noisy = {k: cells[k] + noise[k] for k in cells}
        charge = {22: 0, 111: 0, 11: -1, 211: 1}[pid]
        pt = e / np.cosh(eta)
        z = np.zeros(m)
        ie, ip = impact_cells(eta, phi, np.full(m, charge), pt, z, z, z, binning, geo)
        rows = np.arange(m)
        out = {
            "incident_energies": (e * 1e3)[:, None],
            "showers": extract_voxels(cells, rows, ie, ip, binning, geo),
            "showers_noise": extract_voxels(noisy, rows, ie, ip, binning, geo),
            "incident_eta": np.abs(eta)[:, None],
            "incident_phi": phi[:, None],
        }
        truth = np.zeros(m, dtype=[("energy", "f8"), ("eta", "f4"), ("phi", "f4")])
        truth["energy"], truth["eta"], truth["phi"] = e * 1e3, eta, phi
        out["truth"] = truth
        if images:
            zero = {k: np.zeros_like(v) for k, v in cells.items()}
            calo = CaloEvents(geo, cells, zero, noise, np.zeros(m))
            out.update(_image_layout(calo, ie[:, list(binning.layer_names).index("middle")],
                                     ip[:, list(binning.layer_names).index("middle")], e, pid))  # fmt: skip
        parts.append(out)
        if progress is not None:
            progress(m)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _image_layout(calo: Any, ic: np.ndarray, jc: np.ndarray, e_gev: np.ndarray, pid: int) -> dict[str, np.ndarray]:
    """Photon-ID layout (table + images) of clusters seeded on the impact middle cells."""
    from lhcml.data.schema import PHOTON_DTYPE
    from lhcml.sim.clusters import IMAGE_LAYERS, build_clusters

    m = len(ic)
    cl = build_clusters(calo, raw_images=True, seeds=(np.arange(m), np.maximum(ic, 0), jc))
    tab = np.zeros(m, dtype=PHOTON_DTYPE)
    for name in PHOTON_DTYPE.names:
        if name in cl:
            tab[name] = cl[name]
    tab["truthE"] = e_gev * 1e3
    tab["truthPdgId"] = pid
    tab["isPromptPhoton"] = int(pid == 22)
    out = {"photons": tab}
    for lay in IMAGE_LAYERS:
        out[f"images_{lay}"] = cl[f"images_{lay}"]
        out[f"raw_{lay}"] = cl[f"raw_{lay}"]
    return out


def shower_shapes(
    showers_gev: np.ndarray, binning: Binning, geometry: CaloGeometry | None = None,
    eta: float = 0.2251, batch_size: int = 500,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Photon-ID shower shapes (:data:`lhcml.sim.clusters.SHOWER_SHAPES`) of voxelised showers.

    Each shower is placed (:func:`place_voxels`) into an empty, noise-free calorimeter around the
    impact cells of a photon from the origin at ``eta`` (default: inside 0.20-0.25), φ = 0.0123
    (inside a middle cell), and :func:`lhcml.sim.clusters.build_clusters` runs seeded on the
    middle impact cell: detailed and generated showers get exactly the same treatment.
    """
    from lhcml.sim.clusters import SHOWER_SHAPES, build_clusters

    geo = _shape_geometry(geometry or load_geometry())
    one = np.ones(1)
    ie, ip = impact_cells(np.full(1, eta), np.full(1, 0.0123), 0 * one, 50 * one, 0 * one, 0 * one, 0 * one,
                          binning, geo)  # fmt: skip
    k_mid = list(binning.layer_names).index("middle")
    res: dict[str, list[np.ndarray]] = {k: [] for k in (*SHOWER_SHAPES, "energy", "pt", "eta")}
    showers_gev = np.asarray(showers_gev, np.float32)
    for start in range(0, len(showers_gev), batch_size):
        v = showers_gev[start:start + batch_size] * np.float32(1e3)
        m = len(v)
        grids = {lay.name: np.zeros((m, lay.n_eta, lay.n_phi), np.float32) for lay in geo.readout_layers}
        rows = np.arange(m)
        place_voxels(grids, rows, np.repeat(ie, m, 0), np.repeat(ip, m, 0), v, binning, geo)
        calo = _NoiseFreeCalo(geo, grids, grids, grids, np.zeros(m))
        cl = build_clusters(calo, seeds=(rows, np.full(m, ie[0, k_mid]), np.full(m, ip[0, k_mid])))
        for k in res:
            res[k].append(np.asarray(cl[k], np.float64))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in res.items()}


#: |eta| coverage of the calorimeter in which :func:`shower_shapes` places showers (our choice: the
#: cell edges of every layer are multiples of its cell size from 0, so trimming keeps them; a
#: single shower near |eta| = 0.2 never reaches 0.7)
SHAPE_ETA_MAX = 0.7


def _shape_geometry(geo: CaloGeometry) -> CaloGeometry:
    import dataclasses

    lays = tuple(dataclasses.replace(x, eta_max=min(x.eta_max, SHAPE_ETA_MAX)) if x.readout else x for x in geo.layers)
    return geo.with_changes(layers=lays)


class _NoiseFreeCalo(CaloEvents):
    """Cells holding one deposit only (no pile-up, no noise): ``total`` and ``nopu`` return ``hard``
    without the two full-grid additions per call."""

    def total(self, layer: str) -> np.ndarray:
        return self.hard[layer]

    def nopu(self, layer: str) -> np.ndarray:
        return self.hard[layer]


def time_detailed_shower(
    particle: str = "photon", energy_gev: float = TIMING_ENERGY_GEV, n: int = 200, seed: int = 1,
    geometry: CaloGeometry | None = None,
) -> dict[str, float]:  # fmt: skip
    """Wall time (s) per shower of the detailed simulation at one energy, voxelisation included.

    Returns ``{"s_per_shower", "s_per_shower_deposit_only", "n"}``: the full
    :func:`detailed_showers` without the image layout, and the calorimeter deposit alone
    (:func:`lhcml.sim.calorimeter.deposit`, the part a fast model replaces).
    """
    from lhcml.sim.calorimeter import deposit
    from lhcml.sim.photons import single_particles

    geo = geometry or load_geometry()
    e = np.full(n, float(energy_gev))
    detailed_showers(particle, e[:10], seed, geometry=geo, images=False)  # warm caches
    t0 = time.perf_counter()
    detailed_showers(particle, e, seed, geometry=geo, images=False)
    t1 = time.perf_counter()
    rng = np.random.default_rng(seed)
    cols, ev = single_particles(particle_pid(particle), e, rng.uniform(*ETA_RANGE, n), rng.uniform(-3, 3, n), rng)
    t2 = time.perf_counter()
    deposit(cols, ev, n, geo, rng, convert=False)
    t3 = time.perf_counter()
    return {"s_per_shower": (t1 - t0) / n, "s_per_shower_deposit_only": (t3 - t2) / n, "n": float(n)}


# ------------------------------------------------------------------------------------------------
# the sharded run (lhcml.sim.runner)
# ------------------------------------------------------------------------------------------------

#: name of a fastcalo run's "process" in the runner: ``fastcalo-<particle>-<energies>``
RUN_PREFIX = "fastcalo"


#: separator of the η range in a run name (``fastcalo-photon-discrete-eta0_1.37``)
_ETA_TAG = "-eta"


def check_eta_range(eta_range: tuple[float, float], geometry: CaloGeometry | None = None) -> tuple[float, float]:
    """Validate a |η| range of single particles: ``0 <= lo < hi <=`` the barrel photon acceptance."""
    geo = geometry or load_geometry()
    try:
        lo, hi = (float(x) for x in eta_range)
    except (TypeError, ValueError):
        raise ConfigError(f"an eta range is two numbers lo,hi, got {eta_range!r}") from None
    if not (0.0 <= lo < hi <= geo.acceptance_eta_max + 1e-9):
        raise ConfigError(
            f"eta range {lo:g}-{hi:g} must satisfy 0 <= lo < hi <= {geo.acceptance_eta_max:g} (the barrel "
            "photon acceptance of the detailed calorimeter); e.g. --eta-range 0,1.37"
        )
    return lo, hi


def run_name(particle: str, energies: str, eta_range: tuple[float, float] = ETA_RANGE) -> str:
    """The runner's process name of a shower sample (carries the particle, the energy mode and,
    when it is not :data:`ETA_RANGE`, the |η| range: ``fastcalo-photon-discrete-eta0_1.37``)."""
    particle_pid(particle)
    shower_energies(energies, 1, np.random.default_rng(0))  # validates the mode
    lo, hi = check_eta_range(eta_range)
    tag = "" if (lo, hi) == ETA_RANGE else f"{_ETA_TAG}{lo:g}_{hi:g}"
    return f"{RUN_PREFIX}-{particle}-{energies}{tag}"


def parse_run_name(process: str) -> tuple[str, str, tuple[float, float]]:
    """``(particle, energies, eta_range)`` of a :func:`run_name`."""
    try:
        prefix, particle, rest = process.split("-", 2)
    except ValueError:
        prefix = ""
    if prefix != RUN_PREFIX:
        raise ConfigError(f"'{process}' is not a fastcalo run name (fastcalo-<particle>-<energies>[-eta<lo>_<hi>])")
    energies, tag, eta = rest.rpartition(_ETA_TAG) if _ETA_TAG in rest else (rest, "", "")
    if not tag:
        return particle, energies, ETA_RANGE
    lo, _, hi = eta.partition("_")
    try:
        return particle, energies, (float(lo), float(hi))
    except ValueError:
        raise ConfigError(f"'{process}': bad eta range '{eta}' (expected -eta<lo>_<hi>)") from None


def shower_event_fn(
    process: str, n_events: int, mu: float, seed: int, pileup: Any = None, progress: Any = None
) -> dict[str, np.ndarray]:
    """Event function of :func:`lhcml.sim.runner.run_simulation` for shower shards."""
    particle, energies, eta_range = parse_run_name(process)
    rng = np.random.default_rng([int(seed), 0xE4E])
    e = shower_energies(energies, int(n_events), rng)
    return detailed_showers(particle, e, int(seed), eta_range=eta_range,
                            progress=progress if callable(progress) else None)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# generated showers (ONNX) inside the simulation
# ------------------------------------------------------------------------------------------------

#: ONNX metadata keys read by :class:`OnnxShowerModel` (written by lhcml.export.fastcalo)
META_KEYS = ("noise_dim", "n_voxels", "e_min_gev", "e_max_gev", "particle", "binning_sha256")


class OnnxShowerModel:
    """An exported shower generator run with onnxruntime (one CPU thread by default).

    Parameters
    ----------
    path
        The ``.onnx`` file (inputs ``incident_energy`` ``(N, 1)`` GeV and ``noise`` ``(N, noise_dim)``,
        output ``showers`` ``(N, V)`` GeV; metadata :data:`META_KEYS`).
    binning
        The voxelisation the model was trained on; its sha256 must equal the model's
        ``binning_sha256``. ``None``: the binning XML stored in the model's metadata
        (``binning_xml``), if any.
    """

    def __init__(self, path: str, binning: Binning | None = None, threads: int = 1) -> None:
        from pathlib import Path

        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - onnxruntime is a core dependency
            raise ConfigError(f"--calo fast needs onnxruntime ({err}); pip install onnxruntime") from None
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"fast-calorimeter model {p} does not exist (export one with lhcml export)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise ConfigError(f"{p} is not a loadable ONNX model ({err})") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise ConfigError(f"{p} lacks fast-calorimeter metadata {missing}; export it with lhcml.export.fastcalo")
        names_in = {i.name for i in self.session.get_inputs()}
        if names_in - {"phi"} not in ({"incident_energy", "noise"}, {"incident_energy", "eta", "noise"}):
            raise ConfigError(f"{p} has inputs {sorted(names_in)}; a shower generator takes incident_energy, "
                              "noise, (eta-conditioned) eta and (model.phi_cells) phi")  # fmt: skip
        #: whether the graph takes each particle's phi (input 'phi', a model with phi_cells)
        self.conditions_on_phi = "phi" in names_in
        #: trained |eta| range of an eta-conditioned model (input 'eta'), else None
        self.eta_range: tuple[float, float] | None = None
        if "eta" in names_in:
            if "eta_min" not in meta or "eta_max" not in meta:
                raise ConfigError(f"{p} takes eta but lacks the eta_min/eta_max metadata; export it with lhcml export")
            self.eta_range = (float(meta["eta_min"]), float(meta["eta_max"]))
        self.path = str(p)
        self.meta = meta
        self.noise_dim = int(meta["noise_dim"])
        self.n_voxels = int(meta["n_voxels"])
        self.e_min_gev = float(meta["e_min_gev"])
        self.e_max_gev = float(meta["e_max_gev"])
        self.particle = str(meta["particle"])
        if binning is None:
            if "binning_xml" not in meta:
                raise ConfigError(f"{p} carries no binning; pass the binning XML it was trained with (fast:MODEL.onnx:BINNING.xml)")
            binning = parse_binning(meta["binning_xml"], source=f"{p} metadata")
        if binning.sha256 != meta["binning_sha256"] or binning.n_voxels != self.n_voxels:
            raise ConfigError(
                f"binning mismatch: {p} was trained on a binning with sha256 {meta['binning_sha256'][:12]}... "
                f"({self.n_voxels} voxels), the binning given has {binning.sha256[:12]}... "
                f"({binning.n_voxels} voxels); pass the binning file the model was trained with"
            )
        self.binning = binning

    @property
    def conditions_on_eta(self) -> bool:
        """Whether the graph takes each particle's |eta| (input ``eta``)."""
        return self.eta_range is not None

    def in_range(self, energies_gev: np.ndarray, eta: np.ndarray | None = None) -> np.ndarray:
        """Which particles the model may shower: energy inside the trained range and, for an
        η-conditioned model given ``eta``, |η| inside the trained η range."""
        e = np.asarray(energies_gev, float)
        slack = 1e-5 * self.e_max_gev
        ok = (e >= self.e_min_gev - slack) & (e <= self.e_max_gev + slack)
        if self.eta_range is not None and eta is not None:
            a = np.abs(np.asarray(eta, float))
            ok &= (a >= self.eta_range[0] - 1e-4) & (a <= self.eta_range[1] + 1e-4)
        return ok

    def generate(
        self, energies_gev: np.ndarray, rng: np.random.Generator, batch_size: int = 4096, eta: np.ndarray | None = None,
        phi: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Showers ``(n, V)`` GeV (float32) for incident energies in GeV (and, for an η-conditioned
        model, each particle's ``eta``; for a graph with a ``phi`` input, each particle's ``phi`` in
        rad); refuses energies or |η| outside the trained ranges, ``eta`` for an energy-only model and
        no ``eta`` for an η-conditioned one, and likewise ``phi``."""
        e = np.asarray(energies_gev, np.float64).reshape(-1)
        if self.conditions_on_phi != (phi is not None):
            raise ConfigError(f"{self.path} " + ("takes each particle's phi (input 'phi'): pass phi" if self.conditions_on_phi
                                                 else "has no 'phi' input: do not pass phi"))  # fmt: skip
        ph = None if phi is None else np.asarray(phi, np.float64).reshape(-1)
        if ph is not None and (len(ph) != len(e) or not np.all(np.isfinite(ph))):
            raise ConfigError(f"{len(ph)} phi values for {len(e)} energies (one finite phi each)")
        if self.eta_range is None and eta is not None:
            raise ConfigError(f"{self.path} is conditioned on the energy only (no 'eta' input): do not pass eta")
        if self.eta_range is not None and eta is None:
            raise ConfigError(f"{self.path} is conditioned on (E, |eta|): pass each particle's eta")
        a = None if eta is None else np.abs(np.asarray(eta, np.float64).reshape(-1))
        if a is not None and len(a) != len(e):
            raise ConfigError(f"{len(a)} eta values for {len(e)} energies")
        bad = ~self.in_range(e, a)
        if bad.any():
            lo, hi = self.eta_range or (0.0, 0.0)
            raise ConfigError(
                f"{bad.sum()} particles outside the trained range {self.e_min_gev:g}-{self.e_max_gev:g} GeV"
                + ("" if a is None else f", |eta| {lo:g}-{hi:g}")
                + f" of {self.path} (e.g. {e[bad][0]:g} GeV"
                + ("" if a is None else f", |eta| {a[bad][0]:.3g}")
                + "); generate inside it or train on a wider range"
            )
        out = np.zeros((len(e), self.n_voxels), np.float32)
        for s in range(0, len(e), batch_size):
            eb = e[s:s + batch_size].astype(np.float32)[:, None]
            z = rng.standard_normal((len(eb), self.noise_dim)).astype(np.float32)
            feed = {"incident_energy": eb, "noise": z}
            if a is not None:
                feed["eta"] = a[s:s + batch_size].astype(np.float32)[:, None]
            if ph is not None:
                feed["phi"] = ph[s:s + batch_size].astype(np.float32)[:, None]
            out[s:s + len(eb)] = self.session.run(["showers"], feed)[0]
        return np.maximum(out, 0.0)


#: how a ``--calo fast:...`` value carries the spot readout's fraction (``--spot-readout``)
SPOT_READOUT_TAG = "@spot-readout="


def split_spot_readout(spec: str) -> tuple[str, float | None]:
    """``(fast:MODEL... without the readout, its fraction or None)`` of a ``--calo fast:`` value;
    a fraction that is not a number in (0, 1) is one :class:`ConfigError`."""
    head, tag, tail = spec.partition(SPOT_READOUT_TAG)
    if not tag:
        return spec, None
    try:
        fraction = float(tail)
    except ValueError:
        fraction = float("nan")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--spot-readout must be a fraction in (0, 1) (e.g. 0.05), got {tail!r}")
    return head, fraction


#: how a ``--calo fast:...`` value asks for the impact |η| as an η-conditioned generator's condition
#: (``--impact-eta``); it comes before a spot readout's tag: ``fast:MODEL.onnx@impact-eta@spot-readout=F``
IMPACT_ETA_TAG = "@impact-eta"


def split_impact_eta(spec: str) -> tuple[str, bool]:
    """``(fast:MODEL... without the tag, whether it carried IMPACT_ETA_TAG)`` of a ``--calo fast:`` value
    whose spot-readout tag (if any) is already split off."""
    if spec.endswith(IMPACT_ETA_TAG):
        return spec[: -len(IMPACT_ETA_TAG)], True
    return spec, False


def calo_with_impact_eta(calo: str | None, impact_eta: bool) -> str:
    """The ``--calo`` value that also carries ``--impact-eta`` (``False``: ``calo`` unchanged); refuses a
    detailed calorimeter (it has no generator to condition)."""
    calo = "detailed" if calo is None else calo
    if not impact_eta:
        return calo
    spec = parse_calo_option(calo)
    if spec is None:
        raise ConfigError("--impact-eta conditions generated showers only: use it with --calo fast:MODEL.onnx")
    head, fraction = split_spot_readout(spec)
    head = split_impact_eta(head)[0] + IMPACT_ETA_TAG
    return head if fraction is None else f"{head}{SPOT_READOUT_TAG}{fraction:g}"


def parse_calo_option(value: str | None) -> str | None:
    """Validate ``--calo``: ``detailed`` (or None) -> None;
    ``fast:MODEL.onnx[:BINNING.xml][@impact-eta][@spot-readout=F]`` -> itself."""
    if value is None or value == "detailed":
        return None
    if not value.startswith("fast:") or len(value) <= 5:
        raise ConfigError(f"--calo must be 'detailed' or 'fast:MODEL.onnx[:BINNING.xml]', got {value!r}")
    head, _ = split_impact_eta(split_spot_readout(value)[0])
    if len(head) <= 5:
        raise ConfigError(f"--calo must be 'detailed' or 'fast:MODEL.onnx[:BINNING.xml]', got {value!r}")
    return value


def calo_with_spot_readout(calo: str | None, fraction: float | None) -> str:
    """The ``--calo`` value that also carries ``--spot-readout fraction`` (``None``: ``calo`` unchanged).

    Raises :class:`ConfigError` for a fraction outside (0, 1) and for a readout without
    ``--calo fast:MODEL.onnx`` (the detailed showers are read out as they are)."""
    calo = "detailed" if calo is None else calo
    if fraction is None:
        return calo
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"--spot-readout must be a fraction in (0, 1) (e.g. 0.05), got {fraction!r}")
    spec = parse_calo_option(calo)
    if spec is None:
        raise ConfigError("--spot-readout applies to generated showers only: use it with --calo fast:MODEL.onnx")
    head, old = split_spot_readout(spec)
    if old is not None and old != float(fraction):
        raise ConfigError(f"--calo {calo!r} already carries a spot readout of {old:g}, --spot-readout gives {fraction:g}")
    return f"{head}{SPOT_READOUT_TAG}{float(fraction):g}"


@dataclass
class FastCalo:
    """The generated-shower replacement of the detailed simulation for some particles (module docstring).

    Built from ``--calo fast:MODEL.onnx[:BINNING.xml]`` with :meth:`from_option`; ``models`` maps
    a PDG id to its :class:`OnnxShowerModel` (the particle the model was trained on; a photon
    model serves photons, an electron model e±, mirrored in φ for the other charge).
    """

    models: dict[int, OnnxShowerModel]
    acceptance_eta: float = 1.37
    #: ``--spot-readout``: the quantile of one detailed spot's energy under which generated cells
    #: are read as whole spots (:class:`lhcml.sim.spot_readout.SpotReadout`); None: as generated
    spot_readout: float | None = None
    #: ``--impact-eta``: an η-conditioned generator gets the |η| where the shower axis crosses the layer with
    #: the finest η cells (the strips) instead of the |η| of the particle's direction. The generators are
    #: trained on particles from the origin, where the two agree, and read the impact position inside the
    #: cells from that |η| (``model.eta_cells``); from a vertex displaced along the beam (σ_z = 35 mm) the
    #: direction's |η| misses the strips' impact by ~0.02/cosh η (6-7 strip cells), so the generated
    #: shower's position inside its strip and middle cells is unrelated to the real one (issue 15, h25a)
    impact_eta: bool = False

    @classmethod
    def from_option(cls, value: str) -> FastCalo:
        spec = parse_calo_option(value)
        if spec is None:
            raise ConfigError("FastCalo.from_option needs 'fast:MODEL.onnx[:BINNING.xml]'")
        spec, fraction = split_spot_readout(spec)
        spec, impact_eta = split_impact_eta(spec)
        models: dict[int, OnnxShowerModel] = {}
        for item in spec[5:].split(","):
            path, _, bin_path = item.partition(":")
            binning = None
            if bin_path:
                from lhcml.data.calochallenge import read_binning

                binning = read_binning(bin_path)
            model = OnnxShowerModel(path, binning)
            models[particle_pid(model.particle)] = model
        return cls(models, spot_readout=fraction, impact_eta=impact_eta)

    def select(self, p: dict[str, np.ndarray]) -> np.ndarray:
        """Rows of the flat particle table ``p`` that get a generated shower."""
        apid = np.abs(np.asarray(p["pid"]))
        pt = np.hypot(p["px"], p["py"])
        eta = np.arcsinh(np.divide(p["pz"], pt, out=np.full(len(pt), 99.0), where=pt > 0))
        out = np.zeros(len(apid), bool)
        for pid, model in self.models.items():
            out |= (apid == abs(pid)) & model.in_range(p["e"], eta) & (np.abs(eta) < self.acceptance_eta)
        return out

    def deposit(
        self, p: dict[str, np.ndarray], event: np.ndarray, grids: dict[str, np.ndarray], geo: CaloGeometry,
        rng: np.random.Generator,
    ) -> None:  # fmt: skip
        """Generate showers for the particles ``p`` (all selected by :meth:`select`) and add them
        to ``grids`` (MeV, in place)."""
        apid = np.abs(np.asarray(p["pid"]))
        readout = None
        if self.spot_readout is not None:
            from lhcml.sim.spot_readout import SpotReadout

            readout = SpotReadout.from_geometry(geo, fraction=self.spot_readout)  # the simulation's own spots
        for pid, model in self.models.items():
            sel = apid == abs(pid)
            if not sel.any():
                continue
            q = {k: np.asarray(v)[sel] for k, v in p.items()}
            px, py, pz = (np.asarray(q[k], float) for k in ("px", "py", "pz"))
            pt = np.hypot(px, py)
            eta = np.arcsinh(pz / pt)
            phi = np.arctan2(py, px)
            charge = np.asarray(q["charge"], float)
            ie, ip = impact_cells(eta, phi, charge, pt, q["vx"], q["vy"], q["vz"], model.binning, geo)
            trained_charge = {11: -1.0, 211: 1.0}.get(pid, 0.0)
            flip_phi = (charge * trained_charge) < 0
            # an eta-conditioned model gets each particle's |eta| (the direction's, as the impact cells, or with
            # --impact-eta the impact's at the finest eta cells); one with phi_cells its phi (the direction's;
            # mirrored where the window is mirrored in phi)
            eta_in, flip_eta = np.abs(eta), eta < 0
            if self.impact_eta and model.conditions_on_eta:
                at = strip_impact_eta(eta, phi, charge, pt, q["vx"], q["vy"], q["vz"], model.binning, geo)
                # the window is mirrored by the impact's sign, so the mirrored impact sits at |at|; kept inside
                # the trained |eta| range (a direction inside it may hit just outside)
                eta_in, flip_eta = np.clip(np.abs(at), *model.eta_range), at < 0
            phi_in = np.where(flip_phi, -phi, phi) if model.conditions_on_phi else None
            showers = model.generate(q["e"], rng, eta=eta_in if model.conditions_on_eta else None, phi=phi_in)
            if readout is not None:  # after the generator's noise: the showers read out are those generated
                showers = readout.apply(showers, model.binning.layer_slices, rng)
            showers = showers * np.float32(1e3)
            place_voxels(grids, np.asarray(event)[sel], ie, ip, showers, model.binning, geo,
                         flip_eta=flip_eta, flip_phi=flip_phi)  # fmt: skip


def fast_calo_cache(value: str | None) -> FastCalo | None:
    """:class:`FastCalo` of a ``--calo`` value, loaded once per process (shards reuse it)."""
    spec = parse_calo_option(value)
    if spec is None:
        return None
    if spec not in _FAST_CACHE:
        _FAST_CACHE[spec] = FastCalo.from_option(spec)
    return _FAST_CACHE[spec]


_FAST_CACHE: dict[str, FastCalo] = {}

