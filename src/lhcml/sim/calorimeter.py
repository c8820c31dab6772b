"""Deposit particles into the calorimeter cells; electronic noise; pile-up kept separately.

:func:`simulate_calorimeter` takes the final-state particles of a batch of events (flat columns
with an event index, GeV/mm as :mod:`lhcml.sim.generator`) and returns a :class:`CaloEvents`
holding, per read-out layer, dense cell-energy grids ``(n_events, n_eta, n_phi)`` in MeV for

* ``hard``: the hard-scatter deposit (sampling fluctuations included),
* ``pileup``: the deposit of the pile-up (minimum-bias) particles,
* ``noise``: the electronic noise (Gaussian, ``noise_mev`` per cell of each layer),

so that ``total = hard + pileup - pileup_offset + noise`` and the pile-up-free twin
``nopu = hard + noise`` have the same noise: ``total - nopu`` is exactly the pile-up deposit minus
its subtracted mean.

Pile-up as the readout treats it on average: ATLAS's bipolar LAr pulse shaping and the per-cell
baseline correction remove the *average* pile-up energy of each cell, proportional to the average
number of interactions ⟨μ⟩, and keep its fluctuations (the actual number of interactions, the
energy of each). :func:`pileup_cell_means` measures the mean energy one minimum-bias interaction
leaves in each cell (per layer and η row; φ-symmetric) by depositing the pile-up library with the
same shower code; :func:`simulate_calorimeter` subtracts ``μ`` times it (``pileup_offset``) from
every cell. Pile-up-only events then have a mean cell energy ≈ 0 and an RMS growing as √μ.

Particles: photons and electrons shower electromagnetically, muons are MIPs, neutrinos are
invisible, every other stable particle showers hadronically (:mod:`lhcml.sim.showers`).
Charged particles with pT below ``field.min_pt_gev`` curl up in the solenoid and never reach
the calorimeter. Photons convert in the inner-detector material with probability
``1 - exp(-7/9 X/X0)`` (X/X0 growing with |eta|, ``calo_geometry.yaml: conversions``); the
electron and positron share the energy (``z ~ U(0.02, 0.98)``), start at the conversion radius
and are split in phi by the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lhcml.sim.calo_geometry import CaloGeometry, load_geometry
from lhcml.sim.showers import Spots, axis_positions, em_spots, hadron_spots, mip_spots

#: particles we never see in the calorimeter
INVISIBLE_PIDS = (12, 14, 16, 1000022, 1000039)
#: margin in eta beyond the layer coverage within which particles are still simulated
ETA_MARGIN = 0.3


@dataclass
class CaloEvents:
    """Cell energies (MeV) per read-out layer for a batch of events (see module docstring)."""

    geometry: CaloGeometry
    hard: dict[str, np.ndarray]
    pileup: dict[str, np.ndarray]
    noise: dict[str, np.ndarray]
    mu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: per layer, the subtracted mean pile-up energy (MeV), broadcastable to the cell grids
    #: (``(n_events, n_eta, 1)``: μ times the per-interaction mean of each η row); empty: none
    pileup_offset: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return next(iter(self.hard.values())).shape[0]

    def total(self, layer: str) -> np.ndarray:
        """Measured cell energies: hard scatter + pile-up - its mean (if subtracted) + noise."""
        out = self.hard[layer] + self.pileup[layer] + self.noise[layer]
        if layer in self.pileup_offset:
            out = out - self.pileup_offset[layer]
        return out

    def nopu(self, layer: str) -> np.ndarray:
        """The pile-up-free twin: hard scatter + the same noise."""
        return self.hard[layer] + self.noise[layer]


def _as_flat(particles: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    need = ("pid", "charge", "px", "py", "pz", "e", "vx", "vy", "vz")
    missing = [k for k in need if k not in particles]
    if missing:
        raise ValueError(f"particle table lacks field(s) {missing} (needs {list(need)})")
    return {k: np.asarray(particles[k]) for k in particles}


def convert_photons(
    p: dict[str, np.ndarray], geo: CaloGeometry, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Convert photons in the tracker material.

    Parameters
    ----------
    p
        Flat particle columns (``pid``, ``charge``, ``px``, ``py``, ``pz``, ``e``, ``vx``, ``vy``,
        ``vz`` and an ``index`` column identifying the original particle).

    Returns
    -------
    (particles, converted)
        The new table (converted photons replaced by an e+e- pair carrying the photon's
        ``index``) and, per input particle, whether it converted.
    """
    n = len(p["pid"])
    conv = np.zeros(n, dtype=bool)
    if not geo.conversions.enabled or n == 0:
        return p, conv
    pt = np.hypot(p["px"], p["py"])
    is_g = (p["pid"] == 22) & (p["e"] > 0.2) & (pt > 0)
    eta = np.arcsinh(np.divide(p["pz"], pt, out=np.zeros(n), where=pt > 0))
    prob = geo.conversions.probability(np.abs(eta))
    r_v = np.hypot(p["vx"], p["vy"])
    conv = is_g & (rng.random(n) < prob) & (r_v < geo.conversions.r_max_mm)
    if not conv.any():
        return p, conv
    idx = np.flatnonzero(conv)
    m = len(idx)
    r_conv = rng.uniform(np.maximum(r_v[idx], 30.0), geo.conversions.r_max_mm)
    phi = np.arctan2(p["py"][idx], p["px"][idx])
    s = r_conv - r_v[idx]  # transverse path from the production vertex
    cx = p["vx"][idx] + s * np.cos(phi)
    cy = p["vy"][idx] + s * np.sin(phi)
    cz = p["vz"][idx] + s * np.sinh(eta[idx])
    z = rng.uniform(0.02, 0.98, m)
    new = {}
    for k, v in p.items():
        a = v[idx]
        new[k] = np.concatenate([a, a])
    frac = np.concatenate([z, 1 - z])
    for k in ("px", "py", "pz", "e"):
        new[k] = new[k] * frac
    new["pid"] = np.concatenate([np.full(m, 11), np.full(m, -11)]).astype(p["pid"].dtype)
    new["charge"] = np.concatenate([np.full(m, -1), np.full(m, 1)]).astype(p["charge"].dtype)
    new["vx"] = np.concatenate([cx, cx])
    new["vy"] = np.concatenate([cy, cy])
    new["vz"] = np.concatenate([cz, cz])
    keep = ~conv
    out = {k: np.concatenate([v[keep], new[k]]) for k, v in p.items()}
    return out, conv


def particle_spots(
    p: dict[str, np.ndarray], geo: CaloGeometry, rng: np.random.Generator, spot_scale: float = 1.0
) -> Spots:
    """Energy spots of all particles in ``p`` (``Spots.shower`` indexes the rows of ``p``);
    ``spot_scale`` multiplies the spot densities (pile-up uses ``pileup_spot_fraction``)."""
    n = len(p["pid"])
    if n == 0:
        return Spots.empty()
    px, py, pz, e = (np.asarray(p[k], dtype=np.float64) for k in ("px", "py", "pz", "e"))
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros(n), where=pt > 0))
    phi = np.arctan2(py, px)
    cosh = np.cosh(eta)
    a_eta, a_phi = axis_positions(
        eta, phi, p["charge"], pt, p["vx"], p["vy"], p["vz"], geo
    )
    apid = np.abs(np.asarray(p["pid"]))
    idx = np.arange(n)
    em = (apid == 22) | (apid == 11)
    mu = apid == 13
    had = ~em & ~mu & ~np.isin(apid, INVISIBLE_PIDS)
    # kinetic energy for baryons (the rest mass is not deposited), total energy otherwise
    m = np.asarray(p.get("m", np.zeros(n)), dtype=np.float64)
    baryon = (apid > 1000) & (apid < 10000)
    e_dep = np.where(baryon, np.maximum(e - m, 0.0), e)
    parts = [
        em_spots(e[em], idx[em], a_eta, a_phi, cosh[em], geo, rng, spot_scale=spot_scale),
        mip_spots(idx[mu], a_eta, a_phi, cosh[mu], geo, rng),
        hadron_spots(e_dep[had], p["charge"][had] != 0, idx[had], a_eta, a_phi, cosh[had], geo, rng,
                     spot_scale=spot_scale, kinetic_gev=np.maximum(e - m, 0.0)[had]),
    ]
    return Spots.concat(parts)


def _select_reaching(p: dict[str, np.ndarray], geo: CaloGeometry) -> np.ndarray:
    pt = np.hypot(p["px"], p["py"])
    n = len(pt)
    eta = np.arcsinh(np.divide(p["pz"], pt, out=np.full(n, 99.0), where=pt > 0))
    eta_max = max(lay.eta_max for lay in geo.readout_layers) + ETA_MARGIN
    charged = np.asarray(p["charge"]) != 0
    ok = (np.abs(eta) < eta_max) & ~np.isin(np.abs(p["pid"]), INVISIBLE_PIDS) & (p["e"] > 0)
    ok &= ~charged | (pt > geo.field.min_pt_gev)
    if "final" in p:
        ok &= np.asarray(p["final"], dtype=bool)
    return ok


def deposit(
    particles: dict[str, np.ndarray],
    event: np.ndarray,
    n_events: int,
    geo: CaloGeometry,
    rng: np.random.Generator,
    convert: bool = True,
    spot_scale: float = 1.0,
    fast: Any = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Dense cell energies (MeV) per read-out layer from flat particles of ``n_events`` events.

    ``fast`` (a :class:`lhcml.sim.fastcalo.FastCalo`, ``--calo fast:MODEL.onnx``): the particles it
    selects (after conversions) get generated showers instead of the detailed ones.

    Returns
    -------
    (cells, converted)
        ``cells[layer]`` is ``(n_events, n_eta, n_phi)`` float32; ``converted`` flags, per input
        particle, photons that converted.
    """
    p = _as_flat(particles)
    n_in = len(p["pid"])
    event = np.asarray(event, dtype=np.int64)
    sel = _select_reaching(p, geo)
    sub = {k: v[sel] for k, v in p.items()}
    sub["index"] = np.flatnonzero(sel)
    sub["event"] = event[sel]
    converted = np.zeros(n_in, dtype=bool)
    if convert:
        sub, conv = convert_photons(sub, geo, rng)
        converted[np.flatnonzero(sel)[conv]] = True
        # e+e- that curl up do not reach the calorimeter
        ok = _select_reaching({**sub, "final": np.ones(len(sub["pid"]), bool)}, geo)
        sub = {k: v[ok] for k, v in sub.items()}
    generated = None
    if fast is not None:
        chosen = fast.select(sub)
        generated = {k: v[chosen] for k, v in sub.items()}
        sub = {k: v[~chosen] for k, v in sub.items()}
    spots = particle_spots(sub, geo, rng, spot_scale)
    ev = sub["event"][spots.shower]
    out: dict[str, np.ndarray] = {}
    for j, lay in enumerate(geo.layers):
        if not lay.readout:
            continue
        s = spots.layer == j
        cell = lay.cell_index(spots.eta[s], spots.phi[s])
        ok = cell >= 0
        flat = ev[s][ok] * lay.n_cells + cell[ok]
        grid = np.bincount(flat, weights=spots.energy[s][ok], minlength=n_events * lay.n_cells)
        out[lay.name] = grid.reshape(n_events, lay.n_eta, lay.n_phi).astype(np.float32)
    if generated is not None and len(generated["pid"]):
        fast.deposit(generated, generated["event"], out, geo, rng)
    return out, converted


def electronic_noise(n_events: int, geo: CaloGeometry, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Gaussian noise (MeV) in every read-out cell."""
    out = {}
    for lay in geo.readout_layers:
        shape = (n_events, lay.n_eta, lay.n_phi)
        if lay.noise_mev > 0:
            out[lay.name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(lay.noise_mev))
        else:
            out[lay.name] = np.zeros(shape, dtype=np.float32)
    return out


#: interactions deposited to measure the mean pile-up energy per cell (our choice: the per-row
#: mean of the middle layer is then known to ~1 %, of the strips to a few %)
PILEUP_MEAN_INTERACTIONS = 2000
#: interactions deposited together in one grid while measuring it (memory: one dense grid)
_PILEUP_MEAN_CHUNK = 250
#: cache of :func:`pileup_cell_means`: id(library) -> (weakref to it, geometry, seed, means)
_PILEUP_MEAN_CACHE: dict[int, tuple[Any, CaloGeometry, int, dict[str, np.ndarray]]] = {}


def pileup_cell_means(
    library: Any, geo: CaloGeometry | None = None, seed: int = 0,
    n_interactions: int = PILEUP_MEAN_INTERACTIONS,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Mean energy (MeV) one pile-up interaction leaves per cell, per read-out layer and η row.

    Library events (a :class:`lhcml.sim.pileup.PileupLibrary`, drawn in turn until
    ``n_interactions``) are placed at beam-spot vertices and deposited with the pile-up shower
    settings of :func:`simulate_calorimeter`, ``_PILEUP_MEAN_CHUNK`` interactions per grid; the
    sum is averaged over φ (the deposit is φ-symmetric), symmetrised in ±η and smoothed over
    ±0.05 in η (a moving average; our choice, against the statistical noise of the fine strips).
    Results are cached per library object, geometry and seed.

    Returns
    -------
    dict[str, np.ndarray]
        ``layer -> (n_eta,)`` float64 MeV per interaction per cell.
    """
    import weakref

    from scipy import ndimage

    from lhcml.sim.generator import beam_spot_sigmas

    geo = geo or load_geometry()
    hit = _PILEUP_MEAN_CACHE.get(id(library))
    if hit is not None and hit[0]() is library and hit[1] == geo and hit[2] == seed:
        return hit[3]
    n_lib = len(library)
    if n_lib == 0:
        raise ValueError("the pileup library is empty; build it with more events")
    rng = np.random.default_rng([int(seed), 0x9E11])
    cols = library.columns
    offsets = library.offsets
    sums = {lay.name: np.zeros(lay.n_eta) for lay in geo.readout_layers}
    sxy, sz = beam_spot_sigmas()
    done = 0
    while done < n_interactions:
        k = min(_PILEUP_MEAN_CHUNK, n_interactions - done)
        draw = np.arange(done, done + k) % n_lib
        lens = library.counts[draw]
        inter = np.repeat(np.arange(k), lens)
        first = np.cumsum(lens) - lens  # position of each interaction's first row in the chunk
        rows = offsets[draw][inter] + np.arange(int(lens.sum())) - first[inter]
        part = {name: np.asarray(cols[name])[rows] for name in ("pid", "charge", "px", "py", "pz", "e", "m")}
        vtx = [rng.normal(0, sxy, k), rng.normal(0, sxy, k), rng.normal(0, sz, k)]
        for j, name in enumerate(("vx", "vy", "vz")):
            part[name] = np.asarray(cols[name], np.float64)[rows] + vtx[j][inter]
        cells, _ = deposit(part, np.zeros(len(rows), np.int64), 1, geo, rng,
                           spot_scale=geo.em_material.pileup_spot_fraction)
        for name, grid in cells.items():
            sums[name] += grid[0].astype(np.float64).sum(axis=1)
        done += k
    out = {}
    for lay in geo.readout_layers:
        row = sums[lay.name] / (n_interactions * lay.n_phi)
        row = 0.5 * (row + row[::-1])
        width = max(1, int(round(0.1 / lay.deta)))
        out[lay.name] = ndimage.uniform_filter1d(row, width, mode="nearest")
    _PILEUP_MEAN_CACHE[id(library)] = (weakref.ref(library), geo, seed, out)
    return out


def simulate_calorimeter(
    hard: dict[str, np.ndarray],
    hard_event: np.ndarray,
    n_events: int,
    rng: np.random.Generator,
    pileup: dict[str, np.ndarray] | None = None,
    pileup_event: np.ndarray | None = None,
    geo: CaloGeometry | None = None,
    mu: np.ndarray | None = None,
    pileup_mean: dict[str, np.ndarray] | None = None,
    fast: Any = None,
) -> tuple[CaloEvents, np.ndarray]:
    """Simulate the calorimeter response of a batch of events.

    Parameters
    ----------
    hard
        Flat hard-scatter particle columns (GeV, mm): ``pid``, ``charge``, ``px``, ``py``,
        ``pz``, ``e``, ``m``, ``vx``, ``vy``, ``vz`` (``final`` optional).
    hard_event
        Event index (0..n_events-1) of each hard-scatter particle.
    pileup, pileup_event
        The same for the overlaid pile-up particles (None: no pile-up).
    geo
        Calorimeter description (default: the shipped ``calo_geometry.yaml``).
    mu
        Per-event average pile-up level ⟨μ⟩ (scalar or per event).
    pileup_mean
        :func:`pileup_cell_means` of the pile-up library: when given, ``mu`` times it is
        subtracted from every cell (``CaloEvents.pileup_offset``), as the readout does on average.
    fast
        A :class:`lhcml.sim.fastcalo.FastCalo`: generated showers for the hard-scatter particles
        it selects (pile-up keeps the detailed showers).

    Returns
    -------
    (CaloEvents, converted)
        The cell grids and, per hard-scatter particle, the photon-conversion flag.
    """
    geo = geo or load_geometry()
    cells, converted = deposit(hard, hard_event, n_events, geo, rng, fast=fast)
    if pileup is not None and len(pileup.get("pid", ())):
        pu_cells, _ = deposit(pileup, pileup_event, n_events, geo, rng,
                              spot_scale=geo.em_material.pileup_spot_fraction)
    else:
        pu_cells = {k: np.zeros_like(v) for k, v in cells.items()}
    noise = electronic_noise(n_events, geo, rng)
    mu_arr = np.zeros(n_events) if mu is None else np.broadcast_to(np.asarray(mu, float), (n_events,))
    offset = {}
    if pileup_mean is not None:
        for name, row in pileup_mean.items():
            if name in cells:
                offset[name] = (mu_arr[:, None, None] * np.asarray(row)[None, :, None]).astype(np.float32)
    return CaloEvents(geo, cells, pu_cells, noise, mu_arr.copy(), offset), converted
