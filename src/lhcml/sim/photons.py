"""Photon candidates: Pythia events (or single particles) -> calorimeter -> clusters -> tables.

:func:`simulate_photon_events` is the photon-kind entry point of the simulation
(``lhcml.sim.events.simulate_events`` dispatches ``gamma_jet``, ``h_gamgam``, ``dijet_photon``
(EM-filtered, :data:`EM_FILTER_DEFAULTS`) and ``dijet_photon_unfiltered`` here). It returns

* ``photons``: structured array :data:`lhcml.data.schema.PHOTON_DTYPE`, one row per cluster
  with E_T > ``min_pt_gev`` in ``|eta| < 1.37`` and no matched track (:func:`track_matched`):
  kinematics (MeV), the ATLAS shower shapes, ``etcone20``, ``eventDensity`` and
  ``etcone20_corrected`` (:mod:`lhcml.sim.clusters`), truth (``isPromptPhoton``, ``truthOrigin`` from
  :data:`lhcml.data.schema.PHOTON_TRUTH_ORIGIN`, ``truthPdgId``, ``truthE``, ``converted``),
  ``averageInteractionsPerCrossing`` (μ), ``actualInteractionsPerCrossing``, ``eventNumber``
  and the layer-image energies ``e_image_<layer>`` (to undo the normalisation);
* ``images_strips`` (56 x 4), ``images_middle`` (7 x 11), ``images_back`` (4 x 11),
  ``images_had`` (3 x 4), float32 ``(n, H, W)``, each normalised to its layer energy, and the
  pile-up-free twins ``images_<layer>_nopu`` (same cells, same noise, no pile-up);
* with ``raw_images=True`` also ``raw_<layer>`` and ``raw_<layer>_nopu`` in MeV.

Truth matching: the highest-energy hard-scatter final-state particle (before conversions)
within ΔR < 0.1 of the cluster. A photon whose parent is not a hadron (hard-process,
fragmentation or radiated photon) is ``prompt`` and the cluster ``isPromptPhoton = 1``; photons
from π0 / η decays are ``pi0`` / ``eta``; photons from other hadrons and hadrons themselves are
``otherHadron``; electrons ``electron``; no particle within ΔR < 0.1: ``other``.

Single particles (:func:`single_particles`, :func:`simulate_single`) give fast, exactly known
samples for tests and calibration (photons, π0 → γγ, η → γγ, charged pions, electrons, muons).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lhcml.data.schema import PHOTON_DTYPE, PHOTON_TRUTH_ORIGIN
from lhcml.errors import ConfigError
from lhcml.sim.calo_geometry import CaloGeometry, load_geometry
from lhcml.sim.calorimeter import pileup_cell_means, simulate_calorimeter
from lhcml.sim.clusters import IMAGE_LAYERS, build_clusters

#: masses (GeV) of the single particles we can make
_MASS = {22: 0.0, 111: 0.1349768, 221: 0.547862, 211: 0.13957039, -211: 0.13957039,
         11: 0.000511, -11: 0.000511, 13: 0.1056584, -13: 0.1056584, 2112: 0.939565, 130: 0.497611}
_CHARGE = {22: 0, 111: 0, 221: 0, 211: 1, -211: -1, 11: -1, -11: 1, 13: -1, -13: 1, 2112: 0, 130: 0}
#: branching fraction of eta -> gamma gamma (PDG); other eta decays are not simulated for singles
MATCH_DR = 0.1
PHOTON_PROCESSES = ("gamma_jet", "h_gamgam", "dijet_photon", "dijet_photon_unfiltered")


def _two_body_gammas(p4: np.ndarray, mass: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic decay into two massless photons; returns the two lab four-momenta ``(n, 4)``."""
    n = len(mass)
    cos_t = rng.uniform(-1, 1, n)
    sin_t = np.sqrt(1 - cos_t**2)
    ph = rng.uniform(0, 2 * np.pi, n)
    k = mass / 2
    d = np.column_stack([sin_t * np.cos(ph), sin_t * np.sin(ph), cos_t])
    q1 = np.column_stack([k[:, None] * d, k])
    q2 = np.column_stack([-k[:, None] * d, k])
    e = p4[:, 3]
    beta = p4[:, :3] / e[:, None]
    b2 = (beta**2).sum(1)
    gamma = 1 / np.sqrt(np.maximum(1 - b2, 1e-300))

    def boost(q):
        bp = (beta * q[:, :3]).sum(1)
        g2 = np.where(b2 > 0, (gamma - 1) / np.where(b2 > 0, b2, 1), 0.0)
        pvec = q[:, :3] + (g2 * bp + gamma * q[:, 3])[:, None] * beta
        return np.column_stack([pvec, gamma * (q[:, 3] + bp)])

    return boost(q1), boost(q2)


def single_particles(
    pid: int,
    energy_gev: float | np.ndarray,
    eta: float | np.ndarray,
    phi: float | np.ndarray,
    rng: np.random.Generator,
    vz_mm: float | np.ndarray = 0.0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One particle per event (π0 and η decayed to γγ), as flat columns with an event index.

    Parameters
    ----------
    pid
        PDG id: 22, 111, 221, ±211, ±11, ±13, 2112, 130.
    energy_gev, eta, phi, vz_mm
        Per event (scalars broadcast); the number of events is the broadcast length.

    Returns
    -------
    (particles, event)
        Columns ``pid, charge, px, py, pz, e, m, vx, vy, vz, final, parent_pid, is_pileup``
        (GeV, mm) and the event index of each particle.
    """
    if pid not in _MASS:
        raise ConfigError(f"single particle pid {pid} not supported (valid: {sorted(_MASS)})")
    e, eta, phi, vz = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, float)) for x in (energy_gev, eta, phi, vz_mm)))
    n = len(e)
    m = np.full(n, _MASS[pid])
    p = np.sqrt(np.maximum(e**2 - m**2, 0.0))
    pt = p / np.cosh(eta)
    p4 = np.column_stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), e])
    if pid in (111, 221):
        g1, g2 = _two_body_gammas(p4, m, rng)
        mom = np.concatenate([g1, g2])
        ev = np.concatenate([np.arange(n), np.arange(n)])
        order = np.argsort(ev, kind="stable")
        mom, ev = mom[order], ev[order]
        k = len(ev)
        cols = {
            "pid": np.full(k, 22, np.int32), "charge": np.zeros(k, np.int8),
            "px": mom[:, 0], "py": mom[:, 1], "pz": mom[:, 2], "e": mom[:, 3], "m": np.zeros(k),
            "parent_pid": np.full(k, pid, np.int32),
        }
    else:
        ev = np.arange(n)
        cols = {
            "pid": np.full(n, pid, np.int32), "charge": np.full(n, _CHARGE[pid], np.int8),
            "px": p4[:, 0], "py": p4[:, 1], "pz": p4[:, 2], "e": p4[:, 3], "m": m,
            "parent_pid": np.zeros(n, np.int32),
        }
    k = len(ev)
    cols.update(vx=np.zeros(k), vy=np.zeros(k), vz=vz[ev], final=np.ones(k, bool), is_pileup=np.zeros(k, bool))
    return cols, ev


def _truth_match(
    clusters: dict[str, np.ndarray], hard: dict[str, np.ndarray], hard_event: np.ndarray, converted: np.ndarray
) -> dict[str, np.ndarray]:
    """Leading hard-scatter particle within ΔR < 0.1 of each cluster -> origin labels."""
    n = len(clusters["eta"])
    out = {
        "truthOrigin": np.full(n, PHOTON_TRUTH_ORIGIN["other"], np.int8),
        "truthPdgId": np.zeros(n, np.int32),
        "truthE": np.zeros(n, np.float32),
        "converted": np.zeros(n, bool),
    }
    if n == 0 or len(hard["pid"]) == 0:
        out["isPromptPhoton"] = np.zeros(n, np.int8)
        return out
    px, py, pz, e = (np.asarray(hard[k], float) for k in ("px", "py", "pz", "e"))
    pt = np.hypot(px, py)
    ok = (pt > 0) & np.asarray(hard.get("final", np.ones(len(pt), bool)), bool)
    ok &= ~np.isin(np.abs(hard["pid"]), (12, 14, 16))
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pt), where=pt > 0))
    phi = np.arctan2(py, px)
    order = np.argsort(hard_event, kind="stable")
    ev_sorted = hard_event[order]
    starts = np.searchsorted(ev_sorted, clusters["event"], side="left")
    stops = np.searchsorted(ev_sorted, clusters["event"], side="right")
    for c in range(n):  # loop over clusters (few per event), vectorised over particles
        idx = order[starts[c]:stops[c]]
        idx = idx[ok[idx]]
        if len(idx) == 0:
            continue
        dphi = np.mod(phi[idx] - clusters["phi"][c] + np.pi, 2 * np.pi) - np.pi
        dr2 = (eta[idx] - clusters["eta"][c]) ** 2 + dphi**2
        near = idx[dr2 < MATCH_DR**2]
        if len(near) == 0:
            continue
        lead = near[np.argmax(e[near])]
        pid = int(hard["pid"][lead])
        parent = abs(int(hard["parent_pid"][lead])) if "parent_pid" in hard else 0
        out["truthPdgId"][c] = pid
        out["truthE"][c] = e[lead] * 1e3
        out["converted"][c] = bool(converted[lead])
        if pid == 22:
            if parent == 111:
                origin = "pi0"
            elif parent == 221:
                origin = "eta"
            elif parent > 100:
                origin = "otherHadron"
            else:
                origin = "prompt"
        elif abs(pid) == 11:
            origin = "electron"
        else:
            origin = "otherHadron"
        out["truthOrigin"][c] = PHOTON_TRUTH_ORIGIN[origin]
    out["isPromptPhoton"] = (out["truthOrigin"] == PHOTON_TRUTH_ORIGIN["prompt"]).astype(np.int8)
    return out


#: track-match veto (our choice, documented in docs/photon.md): a cluster with a charged
#: hard-scatter particle of pT > ``TRACK_VETO_PT_GEV`` and momentum above
#: ``TRACK_VETO_MIN_P_OVER_E`` times the cluster energy (E/p < 10) within |Δη| < 0.05 and
#: |Δφ| < 0.1 of it at the middle layer (the particle's extrapolated position, bending included)
#: has a matched track and is an electron (or hadron) candidate, not a photon candidate, as in
#: ATLAS's electron/photon ambiguity resolution. Conversion e+e- are not in the hard-scatter list:
#: converted photons are kept.
TRACK_VETO_PT_GEV = 2.0
TRACK_VETO_MIN_P_OVER_E = 0.1
TRACK_VETO_DETA = 0.05
TRACK_VETO_DPHI = 0.1


def track_matched(
    clusters: dict[str, np.ndarray], hard: dict[str, np.ndarray], hard_event: np.ndarray, geo: CaloGeometry
) -> np.ndarray:
    """Per cluster: a charged hard-scatter particle (a track) points at it (see :data:`TRACK_VETO_PT_GEV`)."""
    from lhcml.sim.showers import axis_positions

    n = len(clusters["eta"])
    out = np.zeros(n, bool)
    if n == 0 or len(hard["pid"]) == 0:
        return out
    px, py, pz = (np.asarray(hard[k], float) for k in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    q = np.asarray(hard["charge"])
    sel = (q != 0) & (pt > TRACK_VETO_PT_GEV) & np.asarray(hard.get("final", np.ones(len(pt), bool)), bool)
    if not sel.any():
        return out
    idx = np.flatnonzero(sel)
    eta = np.arcsinh(pz[idx] / pt[idx])
    zeros = np.zeros(len(idx))
    vx, vy, vz = (np.asarray(hard.get(k, zeros), float)[idx] if k in hard else zeros for k in ("vx", "vy", "vz"))
    a_eta, a_phi = axis_positions(eta, np.arctan2(py[idx], px[idx]), q[idx], pt[idx], vx, vy, vz, geo)
    j = [lay.name for lay in geo.layers].index("middle")
    t_eta, t_phi, t_ev = a_eta[:, j], a_phi[:, j], np.asarray(hard_event)[idx]
    t_p = np.hypot(pt[idx], pz[idx]) * 1e3  # MeV, as the cluster energy
    order = np.argsort(t_ev, kind="stable")
    starts = np.searchsorted(t_ev[order], clusters["event"], side="left")
    stops = np.searchsorted(t_ev[order], clusters["event"], side="right")
    for c in range(n):  # loop over clusters (few per event), vectorised over tracks
        k = order[starts[c]:stops[c]]
        dphi = np.mod(t_phi[k] - clusters["phi"][c] + np.pi, 2 * np.pi) - np.pi
        near = (np.abs(t_eta[k] - clusters["eta"][c]) < TRACK_VETO_DETA) & (np.abs(dphi) < TRACK_VETO_DPHI)
        out[c] = bool(np.any(near & (t_p[k] > TRACK_VETO_MIN_P_OVER_E * clusters["energy"][c])))
    return out


def _assemble(
    clusters: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    event_numbers: np.ndarray,
    mu: float,
    n_pu: np.ndarray,
    weights: np.ndarray,
    min_pt_gev: float,
    raw_images: bool,
) -> dict[str, np.ndarray]:
    keep = (clusters["pt"] > min_pt_gev * 1e3) & ~clusters.get("track_matched", np.zeros(len(clusters["pt"]), bool))
    n = int(keep.sum())
    tab = np.zeros(n, dtype=PHOTON_DTYPE)
    ev = clusters["event"][keep]
    for name in PHOTON_DTYPE.names:
        if name in clusters:
            tab[name] = clusters[name][keep]
        elif name in truth:
            tab[name] = truth[name][keep]
    tab["eventNumber"] = event_numbers[ev]
    tab["averageInteractionsPerCrossing"] = mu
    tab["actualInteractionsPerCrossing"] = n_pu[ev]
    tab["mcEventWeight"] = weights[ev]
    out = {"photons": tab}
    for lay in IMAGE_LAYERS:
        out[f"images_{lay}"] = clusters[f"images_{lay}"][keep]
        out[f"images_{lay}_nopu"] = clusters[f"images_{lay}_nopu"][keep]
        if raw_images:
            out[f"raw_{lay}"] = clusters[f"raw_{lay}"][keep]
            out[f"raw_{lay}_nopu"] = clusters[f"raw_{lay}_nopu"][keep]
    return out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _split_pileup(cols: dict[str, np.ndarray], event: np.ndarray):
    pu = np.asarray(cols.get("is_pileup", np.zeros(len(event), bool)), bool)
    hard = {k: v[~pu] for k, v in cols.items()}
    pile = {k: v[pu] for k, v in cols.items()}
    return hard, event[~pu], pile, event[pu]


def simulate_particles(
    cols: dict[str, np.ndarray],
    event: np.ndarray,
    n_events: int,
    rng: np.random.Generator,
    *,
    mu: float = 0.0,
    n_pu: np.ndarray | None = None,
    event_numbers: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    geometry: CaloGeometry | None = None,
    min_pt_gev: float = 0.0,
    raw_images: bool = False,
    pileup: Any = None,
    track_veto: bool = True,
    fast: Any = None,
) -> dict[str, np.ndarray]:
    """Calorimeter + clustering + truth for a batch of flat particles (hard and ``is_pileup``).

    ``track_veto``: drop clusters with a matched track (:func:`track_matched`; electron or hadron
    candidates, not photon candidates). ``fast``: a :class:`lhcml.sim.fastcalo.FastCalo` giving
    generated showers to the hard-scatter particles it selects (``--calo fast:MODEL.onnx``).

    ``pileup`` is the :class:`lhcml.sim.pileup.PileupLibrary` the ``is_pileup`` particles came
    from: with ``mu > 0`` its mean energy per cell times ``mu`` is subtracted from the cells, as
    the readout does on average (:func:`lhcml.sim.calorimeter.pileup_cell_means`); ``None``
    leaves the pile-up deposit uncorrected.

    Returns the same datasets as :func:`simulate_photon_events`.
    """
    geo = geometry or load_geometry()
    hard, hev, pile, pev = _split_pileup(cols, np.asarray(event, np.int64))
    pu_mean = pileup_cell_means(pileup, geo) if (pileup is not None and mu > 0) else None
    calo, converted = simulate_calorimeter(hard, hev, n_events, rng, pile, pev, geo, mu, pu_mean, fast=fast)
    clusters = build_clusters(calo, raw_images=raw_images)
    truth = _truth_match(clusters, hard, hev, converted)
    if track_veto:
        clusters["track_matched"] = track_matched(clusters, hard, hev, geo)
    event_numbers = np.arange(n_events) if event_numbers is None else np.asarray(event_numbers)
    n_pu = np.zeros(n_events, np.int64) if n_pu is None else np.asarray(n_pu)
    weights = np.ones(n_events) if weights is None else np.asarray(weights)
    return _assemble(clusters, truth, event_numbers, mu, n_pu, weights, min_pt_gev, raw_images)


def simulate_single(
    pid: int,
    energy_gev: float | np.ndarray,
    n: int,
    seed: int,
    *,
    eta: float | tuple[float, float] = (-1.2, 1.2),
    mu: float = 0.0,
    pileup: Any = None,
    geometry: CaloGeometry | None = None,
    raw_images: bool = False,
    batch_size: int = 200,
    subtract_pileup_mean: bool = True,
    track_veto: bool = True,
) -> dict[str, np.ndarray]:
    """Single-particle events (one particle per event, φ uniform, η fixed or uniform in a range).

    Parameters
    ----------
    pid, energy_gev
        Particle type (see :func:`single_particles`) and energy (scalar or per event).
    n, seed
        Number of events and random seed.
    eta
        A value or an ``(lo, hi)`` range.
    mu, pileup
        Pile-up level and a :class:`lhcml.sim.pileup.PileupLibrary` (needed when ``mu > 0``).
    subtract_pileup_mean
        Subtract the mean pile-up energy per cell as the readout does (default); ``False`` leaves
        the in-time pile-up as a positive offset (studies of the uncorrected deposit).
    track_veto
        Drop clusters with a matched track (:func:`track_matched`); ``False`` keeps hadron clusters.

    Returns
    -------
    dict
        As :func:`simulate_photon_events` (all clusters with E_T > 2.5 GeV, i.e. no extra cut).
    """
    if mu > 0 and pileup is None:
        raise ConfigError("mu > 0 needs a pileup library (lhcml.sim.pileup.build_pileup_library)")
    rng = np.random.default_rng(seed)
    energies = np.broadcast_to(np.asarray(energy_gev, float), (n,))
    parts = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        et = rng.uniform(*eta, m) if isinstance(eta, tuple) else np.full(m, float(eta))
        ph = rng.uniform(-np.pi, np.pi, m)
        vz = rng.normal(0.0, 35.0, m)
        cols, ev = single_particles(pid, energies[start:start + m], et, ph, rng, vz)
        n_pu = np.zeros(m, np.int64)
        if mu > 0:
            cols, ev, n_pu = _overlay_flat(cols, ev, m, mu, pileup, rng)
        parts.append(
            simulate_particles(cols, ev, m, rng, mu=mu, n_pu=n_pu, event_numbers=np.arange(start, start + m),
                               geometry=geometry, raw_images=raw_images,
                               pileup=pileup if subtract_pileup_mean else None, track_veto=track_veto)
        )
    return _concat(parts)


def _overlay_flat(cols, ev, n_events, mu, pileup, rng):
    """Overlay pile-up on flat single-particle columns through ``PileupLibrary.overlay``."""
    import awkward as ak

    from lhcml.sim.generator import PARTICLE_FIELDS, to_awkward, to_flat

    n = len(ev)
    full = {}
    for k, dt in PARTICLE_FIELDS.items():
        if k in cols:
            full[k] = np.asarray(cols[k]).astype(dt)
        elif k == "status":
            full[k] = np.ones(n, dt)
        elif k == "vertex_index":
            full[k] = np.zeros(n, dt)
        elif k == "hf_hadron":
            full[k] = np.full(n, -1, dt)
        elif k == "origin":
            full[k] = np.full(n, 2, dt)
        else:
            full[k] = np.zeros(n, dt)
    arr = to_awkward(full, np.bincount(ev, minlength=n_events))
    arr, n_pu = pileup.overlay(arr, mu, rng)
    flat, counts = to_flat(ak.Array(arr), list(PARTICLE_FIELDS))
    return flat, np.repeat(np.arange(n_events), counts), n_pu


def pileup_noise_per_cell(
    pileup: Any,
    mu: float,
    n_events: int,
    seed: int,
    *,
    geometry: CaloGeometry | None = None,
    eta_max: float = 0.7,
) -> dict[str, float]:
    """Pile-up noise: RMS (MeV) of the cell energies of pile-up-only events, per read-out sampling.

    ``n_events`` events with ``Poisson(mu)`` interactions from ``pileup`` (a
    :class:`lhcml.sim.pileup.PileupLibrary`) and no hard scatter, the readout's mean pile-up
    subtraction on and the electronic noise off, over the cells with ``|eta| < eta_max`` (0.7 by
    default, our choice: the central barrel). Add the electronic noise (``Layer.noise_mev``) in
    quadrature for the total noise ATLAS quotes per cell.
    """
    if mu <= 0 or n_events <= 0:
        raise ConfigError(f"pileup_noise_per_cell needs mu > 0 and n_events > 0 (got {mu}, {n_events})")
    geo = (geometry or load_geometry()).without_noise()
    rng = np.random.default_rng(seed)
    cols, ev = single_particles(22, np.full(n_events, 1e-3), np.zeros(n_events), np.zeros(n_events), rng)
    cols, ev, _ = _overlay_flat(cols, ev, n_events, mu, pileup, rng)
    hard, hev, pile, pev = _split_pileup(cols, ev)
    hard = {k: v[:0] for k, v in hard.items()}  # no hard scatter at all
    calo, _ = simulate_calorimeter(hard, hev[:0], n_events, rng, pile, pev, geo, mu, pileup_cell_means(pileup, geo))
    out = {}
    for lay in geo.readout_layers:
        cells = calo.total(lay.name)
        central = np.abs(lay.eta_centre(np.arange(cells.shape[1]))) < eta_max
        out[lay.name] = float(cells[:, central].astype(np.float64).std())
    return out

#: JF17-style generator filter (ATLAS's dijet samples for photon fakes keep events with a
#: particle-level jet above 17 GeV found with a small sliding window; here, as asked for photon
#: fakes, the window sums only the EM particles -- photons and electrons, i.e. pi0/eta decay photons
#: and prompt photons): the particles are binned on a grid of ``EM_FILTER_CELL`` x 2pi/105 cells and
#: every ``EM_FILTER_WINDOW`` x ``EM_FILTER_WINDOW`` block (0.12 x 0.12) is a window; window centres
#: must lie in |eta| < ``EM_FILTER_ETA_MAX`` (the barrel acceptance 1.37 plus a margin). Our
#: choices, documented in docs/photon.md.
EM_FILTER_CELL = 0.06
EM_FILTER_NPHI = 105  # 2 pi / 105 = 0.0598 ~ EM_FILTER_CELL
EM_FILTER_WINDOW = 2
EM_FILTER_ETA_MAX = 1.45
#: default filter threshold (GeV) per photon process; processes not listed are unfiltered
#: (``dijet_photon_unfiltered`` is the same Pythia process without the filter). 17 GeV as JF17,
#: below the 20 GeV photon-candidate threshold (a cluster collects a little more than the window).
EM_FILTER_DEFAULTS: dict[str, float] = {"dijet_photon": 17.0}


def em_window_et(cols: dict[str, np.ndarray], event: np.ndarray, n_events: int) -> np.ndarray:
    """Largest EM E_T (GeV) in a 0.12 x 0.12 window per event (see :data:`EM_FILTER_CELL`).

    Parameters
    ----------
    cols
        Flat final-state particles (``pid``, ``px``, ``py``, ``pz``; GeV).
    event
        Event index of each particle (0..n_events-1).
    """
    px, py, pz = (np.asarray(cols[k], float) for k in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pt), where=pt > 0))
    phi = np.arctan2(py, px)
    apid = np.abs(np.asarray(cols["pid"]))
    w = EM_FILTER_WINDOW
    lo = EM_FILTER_ETA_MAX + 0.5 * w * EM_FILTER_CELL  # the grid covers every window around a centre
    n_eta = int(np.ceil(2 * lo / EM_FILTER_CELL))
    em = ((apid == 22) | (apid == 11)) & (pt > 0) & (np.abs(eta) < lo)
    ie = np.floor((eta[em] + lo) / EM_FILTER_CELL).astype(np.int64)
    ip = np.floor((phi[em] + np.pi) / (2 * np.pi) * EM_FILTER_NPHI).astype(np.int64) % EM_FILTER_NPHI
    ev = np.asarray(event, np.int64)[em]
    grid = np.bincount((ev * n_eta + ie) * EM_FILTER_NPHI + ip, weights=pt[em],
                       minlength=n_events * n_eta * EM_FILTER_NPHI).reshape(n_events, n_eta, EM_FILTER_NPHI)
    win = sum(np.roll(grid[:, a:n_eta - w + 1 + a, :], -b, axis=2) for a in range(w) for b in range(w))
    centre = -lo + (np.arange(n_eta - w + 1) + 0.5 * w) * EM_FILTER_CELL  # eta of each window's centre
    win = win[:, np.abs(centre) < EM_FILTER_ETA_MAX, :]
    return win.reshape(n_events, -1).max(axis=1) if win.size else np.zeros(n_events)


def em_filter(cols: dict[str, np.ndarray], event: np.ndarray, n_events: int, et_min_gev: float) -> np.ndarray:
    """JF17-style EM filter: events whose :func:`em_window_et` exceeds ``et_min_gev`` (bool per event)."""
    return em_window_et(cols, event, n_events) > et_min_gev


def simulate_photon_events(
    process: str,
    n_events: int,
    mu: float,
    seed: int,
    pileup: Any = None,
    progress: bool | Callable[[int], Any] | None = None,
    *,
    batch_size: int = 50,
    min_pt_gev: float = 20.0,
    geometry: CaloGeometry | None = None,
    raw_images: bool = False,
    em_filter_et_gev: float | str | None = "process",
    calo: str | None = None,
) -> dict[str, np.ndarray]:
    """Simulate photon candidates from a Pythia process (see the module docstring).

    Parameters
    ----------
    process
        ``gamma_jet``, ``h_gamgam`` (prompt photons) or ``dijet_photon`` (π0/η/hadron fakes).
    n_events
        Hard-scatter events to generate.
    mu
        Mean pile-up; Poisson(μ) minimum-bias events from ``pileup`` are overlaid per event.
    seed
        Random seed (``< 900000000``); the same seed gives the same arrays.
    pileup
        A :class:`lhcml.sim.pileup.PileupLibrary`; if ``None`` and ``mu > 0`` one is generated.
    progress
        ``True`` for a tqdm bar, or a callable receiving the number of events just finished.
    batch_size
        Events per calorimeter batch (memory ~ 1.5 MB per event).
    min_pt_gev
        Keep clusters with E_T above this.
    geometry
        Calorimeter description (default: the shipped one).
    raw_images
        Also return un-normalised images (MeV).
    em_filter_et_gev
        Keep only events passing :func:`em_filter` at this E_T (enriches photon-like fakes in
        dijets; the calorimeter is simulated for passing events only). ``"process"`` (default):
        the process's own threshold (:data:`EM_FILTER_DEFAULTS`: 17 GeV for ``dijet_photon``,
        none for ``dijet_photon_unfiltered`` and the prompt-photon processes); ``None``: no filter.
    calo
        ``None`` or ``"detailed"``: the detailed showers; ``"fast:MODEL.onnx[:BINNING.xml]"``:
        generated showers for the particles the model was trained on (:mod:`lhcml.sim.fastcalo`).

    Returns
    -------
    dict[str, np.ndarray]
        ``photons`` and the image datasets (module docstring).
    """
    import awkward as ak

    from lhcml.sim.decays import decay_v0s
    from lhcml.sim.generator import PARTICLE_FIELDS, PythiaGenerator, to_flat
    from lhcml.sim.processes import get_process

    proc = get_process(process)
    if proc.kind != "photon":
        raise ConfigError(
            f"process '{process}' is not a photon process (photon processes: {', '.join(PHOTON_PROCESSES)})"
        )
    if n_events <= 0:
        raise ConfigError(f"n_events must be positive, got {n_events}")
    if not np.isfinite(mu) or mu < 0:
        raise ConfigError(f"mu must be a finite number >= 0, got {mu}")
    if mu > 0 and pileup is None:
        from lhcml.sim.events import DEFAULT_LIBRARY_SIZE
        from lhcml.sim.pileup import build_pileup_library

        pileup = build_pileup_library(DEFAULT_LIBRARY_SIZE, (int(seed) * 7919 + 17) % 900_000_000)
    if isinstance(em_filter_et_gev, str):
        if em_filter_et_gev != "process":
            raise ConfigError(f"em_filter_et_gev must be a number, None or 'process', got {em_filter_et_gev!r}")
        em_filter_et_gev = EM_FILTER_DEFAULTS.get(process)
    geo = geometry or load_geometry()
    from lhcml.sim.fastcalo import fast_calo_cache

    fast = fast_calo_cache(calo)  # a bad model or binning fails here, before any event
    gen = PythiaGenerator(proc, int(seed)).init()
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=n_events, desc=f"simulate {process}", unit="evt")
    parts = []
    done = 0
    while done < n_events:
        n = min(batch_size, n_events - done)
        rng = np.random.default_rng([int(seed), done, 0xCA10])
        evs = gen.generate(n)
        particles = evs.particles[evs.particles.final]
        particles = decay_v0s(particles, rng)
        particles = particles[particles.final]
        weights = np.asarray(evs.weights)
        numbers = np.arange(done, done + n) + int(seed) * 10_000_000
        if em_filter_et_gev is not None:
            c0, k0 = to_flat(ak.Array(particles), ["pid", "px", "py", "pz"])
            ok = em_filter(c0, np.repeat(np.arange(n), k0), n, float(em_filter_et_gev))
            particles, weights, numbers = particles[ok], weights[ok], numbers[ok]
        m = len(particles)
        done += n
        if bar is not None:
            bar.update(n)
        elif callable(progress):
            progress(n)
        if m == 0:
            continue
        n_pu = np.zeros(m, np.int64)
        if mu > 0:
            particles, n_pu = pileup.overlay(particles, float(mu), rng)
        cols, counts = to_flat(ak.Array(particles), list(PARTICLE_FIELDS))
        ev = np.repeat(np.arange(m), counts)
        parts.append(
            simulate_particles(cols, ev, m, rng, mu=float(mu), n_pu=n_pu, event_numbers=numbers,
                               weights=weights, geometry=geo, min_pt_gev=min_pt_gev,
                               raw_images=raw_images, pileup=pileup, fast=fast)
        )
    if bar is not None:
        bar.close()
    if not parts:
        rng = np.random.default_rng(0)
        cols, ev = single_particles(22, 1.0, 0.0, 0.0, rng)
        empty = simulate_particles(cols, ev, 1, rng, geometry=geo, min_pt_gev=1e9, raw_images=raw_images)
        return empty
    return _concat(parts)
