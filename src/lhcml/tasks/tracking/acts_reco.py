"""The ACTS reconstruction service: seeding + CKF + ambiguity resolution, and Kalman fitting.

Reads the ACTS CSV that ``lhcml tracking simulate`` writes in ``OUT/acts/`` (measurements with
TrackML ``hit_id == measurement index + 1``; the GenericDetector in a 2 T solenoid) and runs
ACTS's own algorithms in an ``acts.examples.Sequencer`` with one thread (so the timings are time
per event per core):

* :func:`run_ckf` -- the baseline: space points, grid triplet seeding, track parameter estimation,
  the combinatorial Kalman filter (CKF) and greedy ambiguity resolution, with ACTS's settings for
  this detector (``configs/tracking/ckf.yaml``, ``docs/references.md §25``);
* :func:`fit_candidates` -- the ACTS Kalman fitter on proto-tracks of any finder (initial
  parameters estimated by ACTS from three pixel space points of the proto-track);
* :func:`ckf_from_seeds` -- the ACTS CKF started from external seeds (e.g. hit triplets of the
  bucketing);
* :func:`clean_candidates` -- any finder's candidates through the Kalman fitter (outliers at the
  CKF's chi2 cut), the CKF's track selection and ACTS's greedy ambiguity resolution;
* :func:`write_fitted_tracks` -- fitted tracks (perigee parameters and covariance, hit counts,
  chi2/ndf, truth match) to lhcml HDF5 (dataset ``fitted_tracks``, MeV and mm).

Candidates follow the finders' contract: per event a pair of int64 arrays ``(track_id, hit_id)``,
one row per (track, hit). The ACTS pieces (configuration, inputs, the Sequencer's algorithms) are
in :mod:`lhcml.tasks.tracking.acts_chain`. The truth match uses the TrackML truth of the event
(:func:`lhcml.data.trackml.read_event`): the majority particle of the track's hits and the
fraction of hits it left (ACTS and the TrackML challenge count noise hits as not matching).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lhcml.errors import InputNotFoundError, SchemaError
from lhcml.tasks.tracking.acts_chain import (  # noqa: F401  (the service's public names are re-exported)
    DEFAULT_CONFIG,
    STAGES,
    ActsEventFiles,
    ActsRecoConfig,
    Chain,
    ProtoTrackInput,
    TrackCollector,
    acts_files,
    add_ambiguity,
    add_ckf,
    add_kalman,
    add_param_estimation,
    add_protos_to_parameters,
    add_seeding,
    add_track_selection,
    load_reco_config,
    pixel_volumes,
    read_measurement_positions,
    read_measurements_csv,
    run_chain,
    seed_triplets,
    stage_seconds,
)

#: MeV per GeV: ACTS works in GeV, lhcml files in MeV
_GEV = 1000.0


# ------------------------------------------------------------------------------------ the results
@dataclass
class FittedTracks:
    """Tracks of one event at the perigee of the beam line (ACTS units: mm, rad, e/GeV).

    ``params`` is ``(n, 6)``: d0, z0, phi, theta, q/p, t; ``cov`` ``(n, 6, 6)``. ``truth_particle``
    is the majority particle (0: noise or no truth), ``truth_fraction`` its share of the hits.
    """

    event_id: int
    track_id: np.ndarray
    params: np.ndarray
    cov: np.ndarray
    nhits: np.ndarray
    nholes: np.ndarray
    noutliers: np.ndarray
    nshared: np.ndarray
    chi2: np.ndarray
    ndf: np.ndarray
    truth_particle: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    truth_fraction: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: seconds per stage of the ACTS run that made these tracks (one thread), ``{stage: s}``
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.track_id)

    @property
    def pt(self) -> np.ndarray:
        """Transverse momentum in GeV."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(np.sin(self.params[:, 3]) / self.params[:, 4])

    @property
    def eta(self) -> np.ndarray:
        """Pseudorapidity."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log(np.tan(self.params[:, 3] / 2))

    @property
    def charge(self) -> np.ndarray:
        """Charge sign."""
        return np.sign(self.params[:, 4]).astype(np.int8)


@dataclass
class CkfResult:
    """What :func:`run_ckf` returns: per event the candidates and the fitted tracks, and timings.

    ``candidates[event_id] = (track_id, hit_id)``; ``timings`` has one row per ACTS algorithm:
    ``algorithm``, ``stage``, ``seconds_per_event`` (CPU, one thread: time per event per core) and
    ``wall_seconds_per_event`` (ACTS's own wall-clock timing; larger on a busy machine).
    """

    candidates: dict[int, tuple[np.ndarray, np.ndarray]]
    tracks: dict[int, FittedTracks]
    timings: pd.DataFrame

    def time_per_event(self) -> float:
        """Seconds per event of the reconstruction (all stages, I/O glue excluded)."""
        t = self.timings
        return float(t.loc[t["stage"] != "other", "seconds_per_event"].sum())


# ------------------------------------------------------------------------------------ truth match
def _truth(event_dir: Path, event_id: int) -> pd.DataFrame | None:
    """The TrackML truth table of the event (``hit_id``, ``particle_id``, ...), or None if absent."""
    from lhcml.data.trackml import read_event

    try:
        return read_event(event_dir, event_id, parts=("hits", "truth"), check=False).truth
    except (FileNotFoundError, InputNotFoundError):
        return None


def has_parameters(params: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Tracks that carry perigee parameters: finite, q/p != 0 and a positive q/p variance (a fit whose
    extrapolation to the perigee failed keeps ACTS's zero-initialised parameters)."""
    p = np.asarray(params)[:, :5]
    return np.isfinite(p).all(axis=1) & (p[:, 4] != 0) & (np.asarray(cov)[:, 4, 4] > 0)


def truth_match(
    hit_lists: Sequence[Sequence[int]], truth: pd.DataFrame | None
) -> tuple[np.ndarray, np.ndarray]:
    """Majority particle of each track's hits (``hit_id`` lists) and the fraction of the hits it left.

    ACTS's matching as :func:`lhcml.metrics.tracking.match_tracks` computes it (noise hits count in
    the track's hits, never as its particle; 0 when all hits are noise). Without truth: zeros.
    """
    from lhcml.metrics.tracking import match_tracks

    n = len(hit_lists)
    pid = np.zeros(n, np.int64)
    frac = np.zeros(n, np.float32)
    lens = [len(h) for h in hit_lists]
    if truth is None or sum(lens) == 0:
        return pid, frac
    track_id = np.repeat(np.arange(n, dtype=np.int64), lens)
    hit_id = np.fromiter((h for hits in hit_lists for h in hits), np.int64, count=sum(lens))
    m = match_tracks(truth, track_id, hit_id).set_index("track_id")
    rows = m.index.to_numpy()
    pid[rows] = m["major_particle_id"].to_numpy(np.int64)
    frac[rows] = m["purity"].to_numpy(np.float32)
    return pid, frac


def _fitted(event_id: int, res: dict[str, Any], track_ids: np.ndarray, rows: np.ndarray,
            truth: pd.DataFrame | None) -> FittedTracks:  # fmt: skip
    hit_lists = [[h + 1 for h in res["hits"][r]] for r in rows]
    pid, frac = truth_match(hit_lists, truth)
    return FittedTracks(
        event_id=int(event_id), track_id=np.asarray(track_ids, np.int64), params=res["params"][rows],
        cov=res["cov"][rows], nhits=res["nhits"][rows], nholes=res["nholes"][rows],
        noutliers=res["noutliers"][rows], nshared=res["nshared"][rows], chi2=res["chi2"][rows],
        ndf=res["ndf"][rows], truth_particle=pid, truth_fraction=frac,
    )  # fmt: skip


def _candidates(res: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(track_id, hit_id)`` of the tracks of one event (track_id = index of the track)."""
    lens = [len(h) for h in res["hits"]]
    track_id = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    hit_id = np.fromiter((h + 1 for hits in res["hits"] for h in hits), np.int64, count=sum(lens))
    return track_id, hit_id


# ------------------------------------------------------------------------------------------ API
def run_ckf(
    event_dir: str | Path,
    events: Sequence[int] | None = None,
    cfg: ActsRecoConfig | Mapping[str, Any] | str | Path | None = None,
    exclude: Mapping[int, Any] | None = None,
    measurement_cache: dict[int, Any] | None = None,
) -> CkfResult:
    """ACTS's baseline on a sample: seeding, CKF and ambiguity resolution, one thread.

    Parameters
    ----------
    event_dir
        The OUT of ``lhcml tracking simulate`` (with ``acts/``).
    events
        Event numbers (default: all events of the sample).
    cfg
        :class:`ActsRecoConfig`, a mapping, a YAML path, or ``None`` for ``configs/tracking/ckf.yaml``.
    exclude
        Per event the measurement indices (TrackML ``hit_id`` - 1) that seeding and CKF must not
        use, e.g. the hits of a first pass's tracks (iterative tracking); ``None``: all hits.
    measurement_cache
        Per event the parsed measurements file, shared with another pass of the same finder call
        (:class:`lhcml.tasks.tracking.acts_chain.Chain`); ``None``: parsed here.

    Returns
    -------
    CkfResult
        Candidates ``(track_id, hit_id)`` and fitted tracks (CKF track parameters at the perigee,
        truth-matched) per event, and the time per event of each ACTS algorithm.
    """
    cfg = load_reco_config(cfg)
    files = acts_files(event_dir)
    events = list(files.events if events is None else events)
    for e in events:
        files.check(e)

    def build(chain: Chain, sink: dict[int, dict[str, Any]]) -> None:
        seeds = add_seeding(chain, cfg)
        params, est_seeds, _ = add_param_estimation(chain, cfg, seeds)
        tracks = add_ckf(chain, cfg, params, est_seeds)
        chain.seq.addAlgorithm(TrackCollector(chain.acts, chain.level, tracks, sink))

    sink, timings = run_chain(files, events, build, exclude, measurement_cache)
    candidates, fitted = {}, {}
    for e in events:
        res = sink[e]
        candidates[e] = _candidates(res)
        rows = np.arange(len(res["hits"]))
        fitted[e] = _fitted(e, res, rows, rows, _truth(Path(event_dir), e))
        fitted[e].timings = stage_seconds(timings)  # the mean over the events of the run
    return CkfResult(candidates, fitted, timings)


def _protos_from_candidates(
    candidates: tuple[np.ndarray, np.ndarray], n_measurements: int, what: str
) -> tuple[np.ndarray, list[list[int]]]:
    """Group ``(track_id, hit_id)`` into proto-tracks of measurement indices; check the hit ids."""
    track_id, hit_id = (np.asarray(a) for a in candidates)
    if track_id.shape != hit_id.shape or track_id.ndim != 1:
        raise SchemaError(f"{what} must be two 1-D arrays (track_id, hit_id) of equal length, "
                          f"got shapes {track_id.shape} and {hit_id.shape}")  # fmt: skip
    hit_id = hit_id.astype(np.int64)
    bad = hit_id[(hit_id < 1) | (hit_id > n_measurements)]
    if bad.size:
        raise SchemaError(
            f"{what} name hit ids that the event does not have: {np.unique(bad)[:10].tolist()} (the event's hit "
            f"ids are 1..{n_measurements}, TrackML hit_id = ACTS measurement index + 1); pass hit ids of this event"
        )
    order = np.argsort(track_id, kind="stable")
    ids, starts = np.unique(track_id[order], return_index=True)
    groups = np.split(hit_id[order] - 1, starts[1:]) if len(ids) else []
    return ids.astype(np.int64), [sorted(set(g.tolist())) for g in groups]


def _assign(states: list[list[int]], protos: list[list[int]]) -> np.ndarray:
    """Index of the proto-track each fitted track came from (its hits, outliers included, match best)."""
    by_hit: dict[int, list[int]] = {}
    for i, p in enumerate(protos):
        for h in p:
            by_hit.setdefault(h, []).append(i)
    out = np.full(len(states), -1, np.int64)
    taken: set[int] = set()
    for k, st in enumerate(states):
        s = set(st)
        cands = {i for h in st for i in by_hit.get(h, ())} - taken
        if not cands:
            continue
        best = max(cands, key=lambda i: (len(s & set(protos[i])) / len(s | set(protos[i])), -i))
        out[k] = best
        taken.add(best)
    return out


def _seedable_protos(
    files: ActsEventFiles,
    event_id: int,
    pairs: tuple[np.ndarray, np.ndarray],
    cfg: ActsRecoConfig,
    what: str,
    seeds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[list[int]], list[list[int]]]:
    """Proto-tracks of ``(track_id, hit_id)`` that can be seeded, their ids and their seed triplets.

    The triplets come from each proto-track's own pixel hits, or, with ``seeds`` (``(track_id,
    hit_id)`` with the same track ids), from the pixel hits of its seed, which then join the
    proto-track.
    """
    meas = read_measurement_positions(files, event_id)
    ids, protos = _protos_from_candidates(pairs, len(meas), what)
    radius = np.hypot(meas["x"].to_numpy(), meas["y"].to_numpy())
    gid = meas["geometry_id"].to_numpy(np.uint64)
    if seeds is None:
        triplets = seed_triplets(protos, gid, radius, pixel_volumes(cfg))
    else:
        sids, sprotos = _protos_from_candidates(seeds, len(meas), "seeds")
        by_id = dict(zip(sids.tolist(), seed_triplets(sprotos, gid, radius, pixel_volumes(cfg)), strict=True))
        triplets = [by_id.get(i) for i in ids.tolist()]
        protos = [p if t is None else sorted(set(p) | set(t)) for p, t in zip(protos, triplets, strict=True)]
    keep = [i for i, t in enumerate(triplets) if t is not None]
    return ids[keep], [protos[i] for i in keep], [triplets[i] for i in keep]  # type: ignore[misc]


def fit_candidates(
    event_dir: str | Path,
    event_id: int,
    candidates: tuple[np.ndarray, np.ndarray],
    cfg: ActsRecoConfig | Mapping[str, Any] | str | Path | None = None,
) -> FittedTracks:
    """Fit the proto-tracks of any finder with the ACTS Kalman fitter.

    Each candidate's initial parameters are ACTS's estimate from three of its pixel space points
    (:func:`lhcml.tasks.tracking.acts_chain.seed_triplets`, ``ProtoTracksToSeeds``, ``TrackParamsEstimationAlgorithm``); candidates
    with fewer than three pixel hits on distinct layers cannot be seeded and are not fitted (they
    are missing from the result, like failed fits).

    Parameters
    ----------
    event_dir, event_id
        The sample and the event.
    candidates
        ``(track_id, hit_id)`` int arrays, one row per (track, hit); hit order does not matter.
    cfg
        As :func:`run_ckf` (``fit`` section).

    Returns
    -------
    FittedTracks
        Fitted tracks at the perigee; ``track_id`` names the candidate each came from.

    Raises
    ------
    SchemaError
        A hit id that the event does not have.
    """
    cfg = load_reco_config(cfg)
    files = acts_files(event_dir)
    files.check(event_id)
    ids, protos, triplets = _seedable_protos(files, event_id, candidates, cfg, "candidates")
    event = {int(event_id): protos}

    def build(chain: Chain, sink: dict[int, dict[str, Any]]) -> None:
        chain.seq.addAlgorithm(ProtoTrackInput(chain.acts, chain.level, event, "input_protos"))
        chain.seq.addAlgorithm(
            ProtoTrackInput(chain.acts, chain.level, {int(event_id): triplets}, "seed_triplets")
        )
        params, _, seeded = add_protos_to_parameters(chain, cfg, "seed_triplets", "input_protos")
        tracks = add_kalman(chain, cfg, seeded, params)
        chain.seq.addAlgorithm(TrackCollector(chain.acts, chain.level, tracks, sink))

    return _run_fit(files, event_dir, event_id, build, ids, protos)[2]



def _run_fit(files, event_dir, event_id, build, ids, protos) -> tuple[dict[str, Any], np.ndarray, FittedTracks]:
    """Run the fitting chain ``build`` on one event; the collected result, the rows of the fitted
    tracks that belong to an input proto-track (with parameters) and those tracks, truth-matched."""
    sink, timings = run_chain(files, [event_id], build)
    res = sink[int(event_id)]
    which = _assign(res["states"], protos)
    rows = np.flatnonzero((which >= 0) & has_parameters(res["params"], res["cov"]))
    out = _fitted(event_id, res, ids[which[rows]], rows, _truth(Path(event_dir), event_id))
    out.timings = stage_seconds(timings)
    return res, rows, out

def clean_candidates(
    event_dir: str | Path,
    event_id: int,
    candidates: tuple[np.ndarray, np.ndarray],
    cfg: ActsRecoConfig | Mapping[str, Any] | str | Path | None = None,
    seeds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], FittedTracks]:
    """Candidates of any finder held to the CKF's standards: Kalman fit, track selection, ambiguity resolution.

    Each candidate is fitted as in :func:`fit_candidates`, but a measurement whose chi2 exceeds
    the CKF's ``chi2_cut_measurement`` (15) becomes an outlier (a measurement the CKF would not
    have added); ACTS's ``TrackSelectorAlgorithm`` then applies the CKF's pT, |eta| and |d0| cuts
    with the hit counts of the ``clean`` section (at least ``min_measurements`` measurements, at
    most ``max_holes`` holes and ``max_outliers`` outliers) and ACTS's greedy ambiguity resolution
    (``ambiguity`` section, ``clean.min_measurements``) removes tracks sharing more than
    ``maximum_shared_hits`` measurements. The cleaned
    candidates are the measurements (not the outliers) of the surviving tracks. ``seeds``
    (``(track_id, hit_id)``, e.g. :func:`lhcml.tasks.tracking.bucketing.pixel_seed_hits`) give each
    candidate the pixel triplet of its initial parameters, which joins its hits; without them the
    triplet is taken from the candidate's own pixel hits (candidates without three pixel layers
    are dropped).

    Returns
    -------
    candidates, tracks
        ``(track_id, hit_id)`` of the kept candidates (``track_id``: the input candidate's id) and
        their fitted tracks (truth-matched).
    """
    cfg = load_reco_config(cfg)
    files = acts_files(event_dir)
    files.check(event_id)
    ids, protos, triplets = _seedable_protos(files, event_id, candidates, cfg, "candidates", seeds)

    def build(chain: Chain, sink: dict[int, dict[str, Any]]) -> None:
        chain.seq.addAlgorithm(ProtoTrackInput(chain.acts, chain.level, {int(event_id): protos}, "input_protos"))
        chain.seq.addAlgorithm(ProtoTrackInput(chain.acts, chain.level, {int(event_id): triplets}, "seed_triplets"))
        params, _, seeded = add_protos_to_parameters(chain, cfg, "seed_triplets", "input_protos")
        tracks = add_kalman(chain, cfg, seeded, params, chi2_cut=cfg.ckf.chi2_cut_measurement)
        tracks = add_track_selection(chain, cfg, tracks, counts=cfg.clean)
        tracks = add_ambiguity(chain, cfg, tracks, n_measurements_min=cfg.clean.min_measurements)
        chain.seq.addAlgorithm(TrackCollector(chain.acts, chain.level, tracks, sink))

    res, rows, out = _run_fit(files, event_dir, event_id, build, ids, protos)
    lens = [len(res["hits"][r]) for r in rows]
    track_id = np.repeat(out.track_id, lens)
    hit_id = np.fromiter((h + 1 for r in rows for h in res["hits"][r]), np.int64, count=sum(lens))
    return (track_id, hit_id), out


def ckf_from_seeds(
    event_dir: str | Path,
    event_id: int,
    seeds: np.ndarray | tuple[np.ndarray, np.ndarray],
    cfg: ActsRecoConfig | Mapping[str, Any] | str | Path | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], FittedTracks]:
    """The ACTS CKF (and ambiguity resolution) started from external seeds.

    Parameters
    ----------
    seeds
        ``(n, k)`` hit ids per seed (e.g. triplets, k >= 3), or ``(seed_id, hit_id)`` arrays; at
        least three hits of a seed must be pixel hits on distinct layers (ACTS estimates the
        initial parameters from them).

    Returns
    -------
    candidates, tracks
        ``(track_id, hit_id)`` of the found tracks and the tracks themselves (truth-matched).
    """
    cfg = load_reco_config(cfg)
    files = acts_files(event_dir)
    files.check(event_id)
    if isinstance(seeds, tuple):
        pairs = seeds
    else:
        arr = np.asarray(seeds, np.int64)
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise SchemaError(
                f"seeds must be an (n, k >= 3) array of hit ids, got shape {arr.shape}"
            )
        pairs = (np.repeat(np.arange(len(arr)), arr.shape[1]), arr.ravel())
    _, protos, triplets = _seedable_protos(files, event_id, pairs, cfg, "seeds")

    def build(chain: Chain, sink: dict[int, dict[str, Any]]) -> None:
        chain.seq.addAlgorithm(
            ProtoTrackInput(chain.acts, chain.level, {int(event_id): protos}, "input_protos")
        )
        chain.seq.addAlgorithm(
            ProtoTrackInput(chain.acts, chain.level, {int(event_id): triplets}, "seed_triplets")
        )
        used = sorted({h for t in triplets for h in t})  # the triplets' space points only (ACTS searches them linearly)
        params, proto_seeds, _ = add_protos_to_parameters(
            chain, cfg, "seed_triplets", "input_protos", measurements={int(event_id): used}
        )
        tracks = add_ckf(chain, cfg, params, proto_seeds)
        chain.seq.addAlgorithm(TrackCollector(chain.acts, chain.level, tracks, sink))

    sink, timings = run_chain(files, [event_id], build)
    res = sink[int(event_id)]
    rows = np.arange(len(res["hits"]))
    tracks = _fitted(event_id, res, rows, rows, _truth(Path(event_dir), event_id))
    tracks.timings = stage_seconds(timings)
    return _candidates(res), tracks


# ---------------------------------------------------------------------------------------- output
#: the ``fitted_tracks`` dataset: xAOD TrackParticle names, MeV and mm (lhcml's file units)
FITTED_TRACK_FIELDS: list[tuple[str, Any]] = [
    ("eventNumber", "i8"),
    ("track_id", "i8"),
    ("d0", "f4"),
    ("z0", "f4"),
    ("phi", "f4"),
    ("theta", "f4"),
    ("qOverP", "f4"),  # 1/MeV
    ("pt", "f4"),  # MeV
    ("eta", "f4"),
    ("covariance", "f8", (5, 5)),  # d0, z0, phi, theta, q/p (mm, rad, 1/MeV)
    ("numberOfHits", "i2"),
    ("numberOfHoles", "i2"),
    ("numberOfOutliers", "i2"),
    ("numberOfSharedHits", "i2"),
    ("chiSquared", "f4"),
    ("numberDoF", "i2"),
    ("truthParticleId", "i8"),
    ("truthMatchProbability", "f4"),
    ("valid", "?"),
]


def fitted_track_records(tracks: FittedTracks) -> np.ndarray:
    """The tracks of one event as rows of :data:`FITTED_TRACK_FIELDS` (MeV, mm)."""
    out = np.zeros(len(tracks), dtype=np.dtype(FITTED_TRACK_FIELDS))
    scale = np.array([1.0, 1.0, 1.0, 1.0, 1.0 / _GEV])  # q/p: e/GeV -> 1/MeV
    out["eventNumber"] = tracks.event_id
    out["track_id"] = tracks.track_id
    for k, name in enumerate(("d0", "z0", "phi", "theta")):
        out[name] = tracks.params[:, k]
    out["qOverP"] = tracks.params[:, 4] / _GEV
    out["pt"] = tracks.pt * _GEV
    out["eta"] = tracks.eta
    out["covariance"] = tracks.cov[:, :5, :5] * scale[None, :, None] * scale[None, None, :]
    out["numberOfHits"] = tracks.nhits
    out["numberOfHoles"] = tracks.nholes
    out["numberOfOutliers"] = tracks.noutliers
    out["numberOfSharedHits"] = tracks.nshared
    out["chiSquared"] = tracks.chi2
    out["numberDoF"] = tracks.ndf
    if len(tracks.truth_particle) == len(tracks):
        out["truthParticleId"] = tracks.truth_particle
        out["truthMatchProbability"] = tracks.truth_fraction
    out["valid"] = has_parameters(tracks.params, tracks.cov)
    return out


def write_fitted_tracks(
    path: str | Path,
    tracks: Mapping[int, FittedTracks] | Iterable[FittedTracks],
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write fitted tracks of one or many events to lhcml HDF5 (dataset ``fitted_tracks``), atomically.

    Parameters
    ----------
    path
        Output ``.h5`` file.
    tracks
        ``{event_id: FittedTracks}`` or an iterable of :class:`FittedTracks`.
    attrs
        Extra file attributes (e.g. the finder and its config).
    """
    from lhcml.data.h5 import write_h5

    items = list(tracks.values()) if isinstance(tracks, Mapping) else list(tracks)
    rows = [fitted_track_records(t) for t in sorted(items, key=lambda t: t.event_id)]
    table = np.concatenate(rows) if rows else np.zeros(0, dtype=np.dtype(FITTED_TRACK_FIELDS))
    meta = {"perigee": "beam line at the origin", "qOverP_unit": "1/MeV", **dict(attrs or {})}
    return write_h5(path, {"fitted_tracks": table}, attrs=meta)
