"""The ACTS side of the reconstruction service: configuration, inputs and the Sequencer's pieces.

:mod:`lhcml.tasks.tracking.acts_reco` (the service: ``run_ckf``, ``fit_candidates``,
``ckf_from_seeds``) assembles an ``acts.examples.Sequencer`` with one thread from the pieces here:

* the configuration (``configs/tracking/ckf.yaml``, values ACTS's own for the GenericDetector,
  ``docs/references.md §25``);
* the ACTS CSV of a sample (``OUT/acts/``) and its measurements read in file order
  (:func:`read_measurements_csv`; ACTS's ``CsvMeasurementReader`` would reorder them);
* Python ACTS algorithms that put measurements and proto-tracks on the whiteboard and collect
  the tracks at the end, and the ACTS algorithms of each stage (space points, grid triplet
  seeding, parameter estimation, CKF, greedy ambiguity resolution, Kalman fitter) configured
  as ACTS's example full chains configure them;
* seed triplets of proto-tracks (:func:`seed_triplets`) and the timing of each stage.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from lhcml.config import (
    StrictModel,
    coerce_config,
    shipped_configs_dir,
)
from lhcml.errors import ConfigError, InputNotFoundError, SchemaError

#: the shipped configuration of the baseline
DEFAULT_CONFIG = "tracking/ckf.yaml"

#: ACTS algorithm (timing.csv identifier) -> reconstruction stage; the rest is I/O glue
STAGES = {
    "Algorithm:CsvMeasurementsInOrder": "read",
    "Algorithm:MeasurementSubsetAll": "read",
    "Algorithm:MeasurementSubsetExcept": "read",
    "Algorithm:MeasurementSubsetOf": "space points",
    "Algorithm:SpacePointMaker": "space points",
    "Algorithm:GridTripletSeedingAlgorithm": "seeding",
    "Algorithm:TrackParamsEstimationAlgorithm": "parameter estimation",
    "Algorithm:ProtoTracksToSeeds": "parameter estimation",
    "Algorithm:ProtoTracksToParameters": "parameter estimation",
    "Algorithm:SeedsToProtoTracks": "classifier",
    "Algorithm:SeedSelector": "classifier",
    "Algorithm:TrackFindingAlgorithm": "ckf",
    "Algorithm:GreedyAmbiguityResolutionAlgorithm": "ambiguity resolution",
    "Algorithm:TrackFittingAlgorithm": "kalman fit",
    "Algorithm:TrackSelectorAlgorithm": "track selection",
}


# --------------------------------------------------------------------------------- configuration
class SeedingConfig(StrictModel):
    """Grid triplet seeding (ACTS ``GridTripletSeedingAlgorithm``); mm, GeV, degrees.

    Defaults: ACTS's full chain on this detector (docs/references.md §25, configs/tracking/ckf.yaml).
    """

    geometry_selection: str = "tracking/seeding-generic.json"
    r_max: float = 600.0
    delta_r: tuple[float, float] = (5.0, 270.0)
    collision_region: tuple[float, float] = (-150.0, 150.0)
    z_range: tuple[float, float] = (-2800.0, 2800.0)
    max_seeds_per_spm: int = 5
    sigma_scattering: float = 5.0
    rad_length_per_seed: float = 0.05
    min_pt: float = 0.4
    impact_max: float = 20.0
    #: largest |eta| of a seed (ACTS ``cotThetaMax = sinh(abs_eta_max)``); None: ACTS's default, 10.018 (|eta| = 3)
    abs_eta_max: float | None = Field(None, gt=0.0, le=6.0)
    #: radial range (mm) of a seed's middle space point; None: ACTS's default, 60-120 mm (which, in the
    #: pixel endcaps at |z| = 600-1500 mm, limits the seeds to |eta| below ~3.3)
    r_middle: tuple[float, float] | None = None

    @field_validator("r_middle")
    @classmethod
    def _r_middle_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 <= v[0] < v[1]:
            raise ValueError(f"r_middle must be [r_min, r_max] with 0 <= r_min < r_max (mm), got {list(v)}")
        return v
    #: particle hypothesis of the seeds' initial parameters, which the CKF and the fits follow (its mass in the
    #: multiple scattering and energy loss; an electron's also loses energy by bremsstrahlung); ACTS's chains: pion
    particle_hypothesis: Literal["pion", "electron", "muon", "kaon", "proton"] = "pion"
    initial_sigmas: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 0.0, 1.0)
    initial_sigma_qoverpt: float = 0.1
    initial_sigma_pt_rel: float = 0.1


class CkfStageConfig(StrictModel):
    """The combinatorial Kalman filter (ACTS ``TrackFindingAlgorithm``) and its track selection.

    Defaults: ACTS's CKF and track selection for this detector (docs/references.md §25).
    """

    chi2_cut_measurement: float = 15.0
    chi2_cut_outlier: float = 25.0
    #: compatible measurements per surface that branch a track (ACTS ``numMeasurementsCutOff``); at least 1
    max_branches: int = Field(2, ge=1)
    seed_deduplication: bool = True
    stay_on_seed: bool = True
    min_pt: float = 0.5
    abs_eta_max: float = 3.0
    loc0_max: float = 4.0
    min_measurements: int = 7
    max_holes: int = 2
    max_outliers: int = 2


class AmbiguityConfig(StrictModel):
    """Ambiguity resolution of the CKF's tracks (ACTS ``GreedyAmbiguityResolutionAlgorithm``).

    Defaults: ACTS's full chain (docs/references.md §25); ``none`` keeps every CKF track.
    """

    method: Literal["greedy", "none"] = "greedy"
    maximum_shared_hits: int = 3
    n_measurements_min: int = 7
    maximum_iterations: int = 1000000


class FitConfig(StrictModel):
    """Kalman fitter of proto-tracks and the space points that estimate initial parameters.

    Defaults: ACTS's ``addKalmanTracks`` (docs/references.md §25); all pixel volumes (7, 8, 9).
    """

    multiple_scattering: bool = True
    energy_loss: bool = True
    geometry_selection: str = "tracking/spacepoints-generic-pixels.json"


class CleanConfig(StrictModel):
    """Track selection of other finders' candidates after their Kalman fit (``clean_candidates``).

    Our choices (docs/benchmarks/tracking.md): the CKF's measurement chi2 cut turns measurements into
    outliers; a candidate needs the benchmark's 5 counted hits (not the CKF's 7: a candidate does not
    extend itself) and may have 5 holes (not 2: a candidate whose hits another candidate took has
    holes where the CKF, which collects every compatible hit, has measurements); the pT, |eta| and
    |d0| cuts are the CKF's.
    """

    min_measurements: int = 5
    max_holes: int = 5
    max_outliers: int = 2


class ActsRecoConfig(StrictModel):
    """Configuration of the ACTS reconstruction (``configs/tracking/ckf.yaml``)."""

    field_tesla: float = 2.0  # the simulation's uniform solenoid field (docs/references.md §24)
    seeding: SeedingConfig = SeedingConfig()
    ckf: CkfStageConfig = CkfStageConfig()
    ambiguity: AmbiguityConfig = AmbiguityConfig()
    fit: FitConfig = FitConfig()
    clean: CleanConfig = CleanConfig()


def load_reco_config(
    cfg: ActsRecoConfig | Mapping[str, Any] | str | Path | None = None,
) -> ActsRecoConfig:
    """The reconstruction config from an object, a mapping, a YAML path or ``None`` (the shipped one)."""
    return coerce_config(ActsRecoConfig, cfg, DEFAULT_CONFIG, "ACTS reconstruction config")


def _data_file(name: str) -> Path:
    """A data file named in the config: a path, or a name relative to the shipped ``configs/``."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_configs_dir() / name
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"geometry selection file '{name}' not found (neither a path nor under {shipped_configs_dir()})"
    )


# ----------------------------------------------------------------------------------- the inputs
@dataclass(frozen=True)
class ActsEventFiles:
    """The ACTS CSV directory of a sample and the file stems it uses."""

    directory: Path
    events: tuple[int, ...]

    def check(self, event_id: int) -> None:
        """Raise :class:`InputNotFoundError` if ``event_id`` has no measurements file."""
        if int(event_id) not in self.events:
            shown = ", ".join(str(e) for e in self.events[:10]) + (
                " ..." if len(self.events) > 10 else ""
            )
            raise InputNotFoundError(
                f"event {event_id} is not in {self.directory} (events there: {shown or 'none'}); "
                "pass one of those event numbers"
            )


def acts_files(event_dir: str | Path) -> ActsEventFiles:
    """The ACTS CSV of a sample written by ``lhcml tracking simulate`` (``EVENT_DIR/acts/``).

    Raises
    ------
    InputNotFoundError
        ``event_dir`` does not exist or has no ``acts/`` subdirectory with measurement files.
    """
    event_dir = Path(event_dir)
    if not event_dir.is_dir():
        raise InputNotFoundError(
            f"event directory {event_dir} does not exist; give the OUT of `lhcml tracking simulate`"
        )
    acts_dir = event_dir / "acts"
    if event_dir.name == "acts" and not acts_dir.is_dir():
        acts_dir = event_dir
    if not acts_dir.is_dir():
        raise InputNotFoundError(
            f"{event_dir} has no acts/ subdirectory: the ACTS reconstruction reads the ACTS CSV "
            "(measurements) that `lhcml tracking simulate` writes there; real TrackML files have no ACTS "
            "measurements, so run the ACTS CKF and Kalman fitter on samples made by `lhcml tracking simulate`"
        )
    events = sorted(int(p.name[5:14]) for p in acts_dir.glob("event?????????-measurements.csv"))
    if not events:
        raise InputNotFoundError(
            f"{acts_dir} holds no event*-measurements.csv files; rerun `lhcml tracking simulate` into {event_dir}"
        )
    return ActsEventFiles(acts_dir, tuple(events))


def read_measurement_positions(files: ActsEventFiles, event_id: int) -> pd.DataFrame:
    """Global position and geometry of each measurement of an event: ``hit_id, x, y, z, geometry_id``."""
    files.check(event_id)
    path = files.directory / f"event{int(event_id):09d}-measurements.csv"
    df = pd.read_csv(
        path, usecols=["measurement_id", "geometry_id", "global_x", "global_y", "global_z"]
    )
    return pd.DataFrame({"hit_id": df["measurement_id"].to_numpy(np.int64) + 1, "x": df["global_x"],
                         "y": df["global_y"], "z": df["global_z"], "geometry_id": df["geometry_id"]})  # fmt: skip


# ----------------------------------------------------------------------------------------- ACTS
def _acts() -> Any:
    try:
        import acts
        import acts.examples
        import acts.examples.json  # noqa: F401  (readJsonGeometryList)
    except ImportError as err:  # pragma: no cover - the tracking extra installs it
        raise ImportError(
            f"the ACTS reconstruction needs pyacts ({err}); install it with `pip install lhcml[tracking]`"
        ) from None
    return acts


@functools.lru_cache(maxsize=1)
def _geometry() -> tuple[Any, Any]:
    """The GenericDetector (ACTS's default configuration) and its tracking geometry, built once."""
    acts = _acts()
    detector = acts.examples.GenericDetector()
    return detector, detector.trackingGeometry()


def _field(cfg: ActsRecoConfig) -> Any:
    acts = _acts()
    return acts.ConstantBField(acts.Vector3(0.0, 0.0, cfg.field_tesla * acts.UnitConstants.T))


class Chain:
    """One ``Sequencer`` over consecutive events of a sample, one thread, timing into a temp dir."""

    def __init__(self, files: ActsEventFiles, first: int, n: int, tmp: Path,
                 exclude: Mapping[int, Iterable[int]] | None = None,
                 measurement_cache: dict[int, Any] | None = None):  # fmt: skip
        """``exclude``: per event the measurement indices that space points and the CKF must not see
        (a second pass on the hits a first pass left unused); None: all measurements.
        ``measurement_cache``: per event the parsed measurements file (:func:`read_measurements_csv`),
        filled on first read and reused by later chains of the same finder call (iterative tracking
        reads each event's file once); None: parse it every time."""
        acts = _acts()
        self.acts = acts
        self.level = acts.logging.WARNING
        self.tmp = tmp
        #: suffix of the whiteboard keys the ``add_*`` builders write (several passes in one Sequencer,
        #: :func:`lhcml.tasks.tracking.seed_filter.ml_seeds_ckf`); "" for one pass
        self.tag = ""
        self.seq = acts.examples.Sequencer(
            events=n, skip=first, numThreads=1, logLevel=self.level, outputDir=str(tmp),
            outputTimingFile="timing.csv", trackFpes=False,
        )  # fmt: skip
        self.seq.addAlgorithm(CsvMeasurements(acts, self.level, files.directory, measurement_cache))
        self.seq.addAlgorithm(MeasurementSubsetAll(acts, self.level, exclude))

    def key(self, name: str) -> str:
        """The whiteboard key ``name`` of the pass being built (``name`` + :attr:`tag`)."""
        return name + self.tag

    def spacepoints(self, selection: str, key: str, measurements: str = "measurement_subset") -> str:
        acts = self.acts
        key, measurements = self.key(key), self.key(measurements)
        _, geometry = _geometry()
        alg = acts.examples.SpacePointMaker(
            level=self.level, inputMeasurements=measurements, outputSpacePoints=key,
            trackingGeometry=geometry,
            geometrySelection=acts.examples.json.readJsonGeometryList(str(_data_file(selection))),
        )  # fmt: skip
        self.seq.addAlgorithm(alg)
        return key

    def run(self) -> pd.DataFrame:
        """Run the chain; per algorithm the CPU and the wall-clock seconds per event.

        ACTS times each algorithm in wall-clock time; on a shared machine a single-threaded job
        also waits for the CPU, so each algorithm's wall time is scaled by the CPU share of the
        whole run (process CPU time / wall time) to give time per event per core.
        """
        wall0, cpu0 = time.perf_counter(), time.process_time()
        self.seq.run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        share = min(1.0, cpu / wall) if wall > 0 else 1.0
        timing = pd.read_csv(self.tmp / "timing.csv")
        per_event = timing["time_perevent_s"].to_numpy(float)
        return pd.DataFrame(
            {
                "algorithm": timing["identifier"],
                "seconds_per_event": per_event * share,
                "wall_seconds_per_event": per_event,
            }
        )


#: bound parameters of a measurement (ACTS ``BoundIndices``) and their CSV value/variance columns
_BOUND = (("local0", "var_local0"), ("local1", "var_local1"), ("phi", "var_phi"), ("theta", "var_theta"),
          (None, None), ("time", "var_time"))  # fmt: skip


def read_measurements_csv(
    path: Path,
) -> tuple[np.ndarray, list[list[int]], list[list[float]], list[list[float]]]:
    """Geometry ids, bound indices, values and variances of the measurements of an ACTS CSV file, in
    file order (row ``i`` is ``measurement_id`` ``i``, TrackML ``hit_id`` ``i + 1``).

    ``local_key`` is the bit mask ACTS's ``CsvMeasurementWriter`` writes as one character (bit
    ``k + 1`` set: bound parameter ``k`` measured).
    """
    df = pd.read_csv(path, dtype={"local_key": str}, keep_default_na=False)
    if not np.array_equal(df["measurement_id"].to_numpy(), np.arange(len(df))):
        raise SchemaError(
            f"{path}: measurement_id is not 0..n-1 in file order; rewrite it with `lhcml tracking simulate`"
        )
    codes, uniques = pd.factorize(df["local_key"])  # the few distinct keys converted once, not per row
    keys = np.array([int(k) if k.isdigit() else ord(k) for k in uniques], np.int64)[codes]
    n = len(df)
    indices: list[list[int]] = [[]] * n
    values: list[list[float]] = [[]] * n
    variances: list[list[float]] = [[]] * n
    for key in np.unique(keys).tolist():
        rows = np.flatnonzero(keys == key)
        idx = [k for k in range(6) if key & (1 << (k + 1)) and _BOUND[k][0] is not None]
        vals = np.column_stack([df[_BOUND[k][0]].to_numpy(np.float64)[rows] for k in idx]).tolist()
        var = np.column_stack([df[_BOUND[k][1]].to_numpy(np.float64)[rows] for k in idx]).tolist()
        if len(rows) == n:  # one kind of measurement (the usual case): the lists as they are
            indices, values, variances = [idx] * n, vals, var
            break
        for r, v, w in zip(rows.tolist(), vals, var, strict=True):
            indices[r], values[r], variances[r] = idx, v, w
    return df["geometry_id"].to_numpy(np.uint64), indices, values, variances


class CsvMeasurements:
    """Reads ``event{N}-measurements.csv`` into the ``measurements`` container in file order.

    ACTS's ``CsvMeasurementReader`` sorts the rows by geometry id with an unstable sort, so two
    measurements on one module can swap places and the container index is then not the file's
    ``measurement_id`` (measured here on the GenericDetector: the TrackML ``hit_id`` of such hits
    would point at the other measurement). Filling the container row by row keeps
    ``index == measurement_id == hit_id - 1``. ``cache`` (a dict, per event number): the parsed
    file is kept there and not parsed again (0.5 s of a ⟨μ⟩ = 200 event; the ACTS container itself
    lives on the whiteboard of one run and is rebuilt each time).
    """

    def __new__(cls, acts: Any, level: Any, directory: Path, cache: dict[int, Any] | None = None) -> Any:
        geo = acts.GeometryIdentifier

        class CsvMeasurementsInOrder(acts.examples.IAlgorithm):
            def __init__(self) -> None:
                acts.examples.IAlgorithm.__init__(self, "CsvMeasurementsInOrder", level)
                self.out = acts.examples.WriteDataHandle(
                    self, acts.examples.MeasurementContainer, "Measurements"
                )
                self.out.initialize("measurements")

            def execute(self, ctx: Any) -> Any:
                path = directory / f"event{ctx.eventNumber:09d}-measurements.csv"
                if cache is None:
                    parsed = read_measurements_csv(path)
                else:
                    parsed = cache.get(ctx.eventNumber)
                    if parsed is None:
                        parsed = cache[ctx.eventNumber] = read_measurements_csv(path)
                gids, indices, values, variances = parsed
                meas = acts.examples.MeasurementContainer()
                meas.reserve(len(gids))
                for g, i, v, var in zip(gids.tolist(), indices, values, variances, strict=True):
                    meas.emplaceMeasurement(geo(g), i, v, var)
                self.out(ctx, meas)
                return acts.examples.ProcessCode.SUCCESS

        return CsvMeasurementsInOrder()


def _measurement_subset(acts: Any, level: Any, name: str, key: str,
                        select: Callable[[int, int], Iterable[int]]) -> Any:
    """One ACTS algorithm ``name`` writing ``MeasurementSubset(measurements, select(event, n))`` under ``key``
    (``n``: the event's number of measurements): the one body of the three subsets below."""

    class MeasurementSubsetAlgorithm(acts.examples.IAlgorithm):
        def __init__(self) -> None:
            acts.examples.IAlgorithm.__init__(self, name, level)
            self.inp = acts.examples.ReadDataHandle(self, acts.examples.MeasurementContainer, "Measurements")
            self.inp.initialize("measurements")
            self.out = acts.examples.WriteDataHandle(self, acts.examples.MeasurementSubset, "Subset")
            self.out.initialize(key)

        def execute(self, ctx: Any) -> Any:
            meas = self.inp(ctx.eventStore)
            index = select(int(ctx.eventNumber), len(meas))
            self.out(ctx, acts.examples.MeasurementSubset(meas, np.asarray(index, np.int64).tolist()))
            return acts.examples.ProcessCode.SUCCESS

    return MeasurementSubsetAlgorithm()


class MeasurementSubsetAll:
    """All measurements of the event as the ``measurement_subset`` that space points and CKF read,
    except (``exclude``, per event) the given measurement indices."""

    def __new__(cls, acts: Any, level: Any, exclude: Mapping[int, Iterable[int]] | None = None) -> Any:
        skip = {int(e): np.asarray(sorted(set(int(i) for i in v)), np.int64) for e, v in (exclude or {}).items()}

        def select(event: int, n: int) -> np.ndarray:
            index = np.arange(n, dtype=np.int64)
            return np.setdiff1d(index, skip[event], assume_unique=True) if event in skip else index

        return _measurement_subset(acts, level, "MeasurementSubsetAll", "measurement_subset", select)


class MeasurementSubsetExcept:
    """All measurements of the event except those ``exclude(event_number)`` names, computed when the
    event runs, as a ``MeasurementSubset`` under ``key``: a later pass of iterative tracking in the same
    Sequencer as the earlier ones, whose tracks (collected earlier in the same event) it leaves out."""

    def __new__(cls, acts: Any, level: Any, key: str, exclude: Any) -> Any:
        def select(event: int, n: int) -> np.ndarray:
            ex = exclude(event)
            skip = np.unique(np.asarray(ex if isinstance(ex, np.ndarray) else list(ex), np.int64))
            return np.setdiff1d(np.arange(n, dtype=np.int64), skip, assume_unique=True)

        return _measurement_subset(acts, level, "MeasurementSubsetExcept", key, select)


class MeasurementSubsetOf:
    """The measurements of given indices (per event) as a ``MeasurementSubset`` under ``key``."""

    def __new__(cls, acts: Any, level: Any, indices: Mapping[int, Sequence[int]], key: str) -> Any:
        return _measurement_subset(acts, level, "MeasurementSubsetOf", key, lambda event, n: indices.get(event, ()))


class ProtoTrackInput:
    """Proto-tracks given from Python (per event lists of measurement indices) onto the whiteboard."""

    def __new__(
        cls, acts: Any, level: Any, protos: Mapping[int, Sequence[Sequence[int]]], key: str
    ) -> Any:
        class ProtoTrackInput(acts.examples.IAlgorithm):
            def __init__(self) -> None:
                acts.examples.IAlgorithm.__init__(self, f"ProtoTrackInput:{key}", level)
                self.out = acts.examples.WriteDataHandle(
                    self, acts.examples.ProtoTrackContainer, "ProtoTracks"
                )
                self.out.initialize(key)

            def execute(self, ctx: Any) -> Any:
                container = acts.examples.ProtoTrackContainer()
                for hits in protos.get(ctx.eventNumber, ()):
                    track = acts.examples.ProtoTrack()
                    track.extend([int(h) for h in hits])
                    container.append(track)
                self.out(ctx, container)
                return acts.examples.ProcessCode.SUCCESS

        return ProtoTrackInput()


class TrackCollector:
    """Reads a track container at the end of the chain into numpy arrays (per event)."""

    def __new__(cls, acts: Any, level: Any, key: str, sink: dict[int, dict[str, Any]]) -> Any:
        isl = acts.examples.IndexSourceLink

        class TrackCollector(acts.examples.IAlgorithm):
            def __init__(self) -> None:
                acts.examples.IAlgorithm.__init__(self, "TrackCollector", level)
                self.inp = acts.examples.ReadDataHandle(
                    self, acts.examples.ConstTrackContainer, "Tracks"
                )
                self.inp.initialize(key)

            def execute(self, ctx: Any) -> Any:
                tracks = self.inp(ctx.eventStore)
                hits, states = [], []
                index_of = isl.fromSourceLink
                for t in tracks:
                    meas, allsl = [], []
                    for st in t.trackStatesReversed:  # each flag asked once (pybind11 calls dominate)
                        flags = st.typeFlags
                        if flags.isMeasurement:
                            idx = index_of(st.uncalibratedSourceLink).index()
                            allsl.append(idx)
                            meas.append(idx)
                        elif flags.isOutlier:
                            allsl.append(index_of(st.uncalibratedSourceLink).index())
                    hits.append(meas[::-1])
                    states.append(allsl)
                n = len(tracks)
                sink[ctx.eventNumber] = {
                    "hits": hits, "states": states,
                    "params": np.array(tracks.parameters, dtype=np.float64).reshape(n, 6),
                    "cov": np.array(tracks.covariance, dtype=np.float64).reshape(n, 6, 6),
                    "nhits": np.array(tracks.nMeasurements, dtype=np.int32),
                    "nholes": np.array(tracks.nHoles, dtype=np.int32),
                    "noutliers": np.array(tracks.nOutliers, dtype=np.int32),
                    "nshared": np.array(tracks.nSharedHits, dtype=np.int32),
                    "chi2": np.array(tracks.chi2, dtype=np.float32),
                    "ndf": np.array(tracks.ndf, dtype=np.int32),
                }  # fmt: skip
                return acts.examples.ProcessCode.SUCCESS

        return TrackCollector()


def add_param_estimation(
    chain: Chain, cfg: ActsRecoConfig, seeds: str, protos: str | None = None
) -> tuple[str, str, str]:
    """ACTS ``TrackParamsEstimationAlgorithm`` on seeds (and the proto-tracks aligned with them)."""
    acts, u = chain.acts, chain.acts.UnitConstants
    _, geometry = _geometry()
    s = cfg.seeding
    sig = s.initial_sigmas
    k = chain.key
    extra = {"inputProtoTracks": protos, "outputProtoTracks": k("estimated_protos")} if protos else {}
    alg = acts.examples.TrackParamsEstimationAlgorithm(
        level=chain.level, inputSeeds=seeds, outputTrackParameters=k("estimatedparameters"),
        outputSeeds=k("estimatedseeds"), trackingGeometry=geometry, magneticField=_field(cfg), **extra,
        initialSigmas=[sig[0] * u.mm, sig[1] * u.mm, sig[2] * u.degree, sig[3] * u.degree,
                       sig[4] * u.e / u.GeV, sig[5] * u.ns],
        initialSigmaQoverPt=s.initial_sigma_qoverpt * u.e / u.GeV, initialSigmaPtRel=s.initial_sigma_pt_rel,
        initialVarInflation=[1.0] * 6, particleHypothesis=getattr(acts.ParticleHypothesis, s.particle_hypothesis),
    )  # fmt: skip
    chain.seq.addAlgorithm(alg)
    return k("estimatedparameters"), k("estimatedseeds"), k("estimated_protos")


def add_ckf(chain: Chain, cfg: ActsRecoConfig, params: str, seeds: str) -> str:
    """The CKF as ACTS's ``addCKFTracks`` builds it, then the ambiguity resolution; returns the tracks key."""
    acts = chain.acts
    _, geometry = _geometry()
    field_ = _field(cfg)
    c = cfg.ckf
    selector = _track_selector(chain, cfg)
    finder = acts.examples.TrackFindingAlgorithm(
        level=chain.level,
        measurementSelectorCfg=acts.MeasurementSelector.Config(
            [(acts.GeometryIdentifier(), ([], [c.chi2_cut_measurement], [c.chi2_cut_outlier], [c.max_branches]))]
        ),
        inputMeasurements=chain.key("measurement_subset"), inputInitialTrackParameters=params,
        inputSeeds=seeds if (c.seed_deduplication or c.stay_on_seed) else "",
        outputTracks=chain.key("ckf_tracks"),
        findTracks=acts.examples.TrackFindingAlgorithm.makeTrackFinderFunction(geometry, field_, chain.level),
        findTracksBrem=acts.examples.TrackFindingAlgorithm.makeBremTrackFinderFunction(geometry, field_, chain.level),
        trackingGeometry=geometry, magneticField=field_, trackSelectorCfg=selector, twoWay=True,
        seedDeduplication=c.seed_deduplication, stayOnSeed=c.stay_on_seed,
    )  # fmt: skip
    chain.seq.addAlgorithm(finder)
    return add_ambiguity(chain, cfg, chain.key("ckf_tracks"))


def _track_selector(chain: Chain, cfg: ActsRecoConfig, counts: CkfStageConfig | CleanConfig | None = None) -> Any:
    """ACTS ``TrackSelector.Config``: the CKF's pT, |eta|, |d0| cuts and the hit counts of ``counts``
    (default: the CKF's, ``ckf`` section)."""
    acts, u, c = chain.acts, chain.acts.UnitConstants, cfg.ckf
    n = counts or c
    return acts.TrackSelector.Config(
        ptMin=c.min_pt * u.GeV, absEtaMax=c.abs_eta_max, loc0Min=-c.loc0_max * u.mm, loc0Max=c.loc0_max * u.mm,
        minMeasurements=n.min_measurements, maxHoles=n.max_holes, maxOutliers=n.max_outliers,
    )  # fmt: skip


def add_track_selection(chain: Chain, cfg: ActsRecoConfig, tracks: str, counts: CleanConfig | None = None) -> str:
    """ACTS ``TrackSelectorAlgorithm`` on any track container (hit counts of ``counts``, else the CKF's)."""
    sel = chain.acts.examples.TrackSelectorAlgorithm.Config()
    sel.inputTracks, sel.outputTracks = tracks, f"{tracks}_selected"
    sel.selectorConfig = _track_selector(chain, cfg, counts)
    chain.seq.addAlgorithm(chain.acts.examples.TrackSelectorAlgorithm(sel, chain.level))
    return f"{tracks}_selected"


def add_ambiguity(chain: Chain, cfg: ActsRecoConfig, tracks: str, n_measurements_min: int | None = None) -> str:
    """ACTS ``GreedyAmbiguityResolutionAlgorithm`` (``ambiguity`` section; ``none``: the tracks as they are)."""
    if cfg.ambiguity.method == "none":
        return tracks
    a = cfg.ambiguity
    chain.seq.addAlgorithm(
        chain.acts.examples.GreedyAmbiguityResolutionAlgorithm(
            level=chain.level, inputTracks=tracks, outputTracks=f"{tracks}_ambi",
            maximumSharedHits=a.maximum_shared_hits,
            nMeasurementsMin=a.n_measurements_min if n_measurements_min is None else n_measurements_min,
            maximumIterations=a.maximum_iterations,
        )
    )  # fmt: skip
    return f"{tracks}_ambi"


def add_seeding(chain: Chain, cfg: ActsRecoConfig) -> str:
    from acts.examples.reconstruction import (
        SeedFilterConfigArg,
        SeedFinderConfigArg,
        SeedFinderOptionsArg,
        SeedingAlgorithmConfigArg,
        SpacePointGridConfigArg,
        addGridTripletSeeding,
    )

    u = chain.acts.UnitConstants
    s = cfg.seeding
    spacepoints = chain.spacepoints(s.geometry_selection, "spacepoints")
    return addGridTripletSeeding(
        chain.seq, spacepoints, SeedingAlgorithmConfigArg(),
        SeedFinderConfigArg(
            r=(None, s.r_max * u.mm), deltaR=(s.delta_r[0] * u.mm, s.delta_r[1] * u.mm),
            collisionRegion=(s.collision_region[0] * u.mm, s.collision_region[1] * u.mm),
            z=(s.z_range[0] * u.mm, s.z_range[1] * u.mm), maxSeedsPerSpM=s.max_seeds_per_spm,
            sigmaScattering=s.sigma_scattering, radLengthPerSeed=s.rad_length_per_seed,
            minPt=s.min_pt * u.GeV, impactMax=s.impact_max * u.mm,
            cotThetaMax=None if s.abs_eta_max is None else float(np.sinh(s.abs_eta_max)),
            rMinMiddle=None if s.r_middle is None else s.r_middle[0] * u.mm,
            rMaxMiddle=None if s.r_middle is None else s.r_middle[1] * u.mm,
        ),
        SeedFinderOptionsArg(bFieldInZ=cfg.field_tesla * u.T, beamPos=(0.0, 0.0)),
        SeedFilterConfigArg(), SpacePointGridConfigArg(), chain.level, outputSeeds=chain.key("seeds"),
    )  # fmt: skip


def add_protos_to_parameters(
    chain: Chain, cfg: ActsRecoConfig, seed_protos: str, protos: str,
    measurements: Mapping[int, Sequence[int]] | None = None,
) -> tuple[str, str, str]:
    """ACTS's estimate of initial parameters from a seed triplet of each proto-track.

    ``seed_protos`` holds three pixel hits per proto-track (:func:`seed_triplets`), ``protos`` the
    proto-tracks themselves in the same order; ACTS makes seeds of the triplets
    (``ProtoTracksToSeeds``) and estimates parameters and covariance as for its own seeds
    (``TrackParamsEstimationAlgorithm``, the seeding config's initial sigmas). Returns the keys of
    the parameters, the seeds and the proto-tracks that got parameters (aligned). ``measurements``
    (per event the measurement indices of the triplets) limits the space points to those: ACTS's
    ``ProtoTracksToSeeds`` finds each triplet's space points by a linear search, so with all pixel
    space points of a ⟨μ⟩ = 200 event it takes ~10 s for 40k triplets (docs/benchmarks/tracking.md,
    eleventh version).
    """
    acts = chain.acts
    if measurements is None:
        spacepoints = chain.spacepoints(cfg.fit.geometry_selection, "pixel_spacepoints")
    else:
        chain.seq.addAlgorithm(MeasurementSubsetOf(acts, chain.level, measurements, chain.key("seed_measurements")))
        spacepoints = chain.spacepoints(cfg.fit.geometry_selection, "seed_spacepoints", "seed_measurements")
    to_seeds = acts.examples.ProtoTracksToSeeds.Config()
    to_seeds.inputProtoTracks = seed_protos
    to_seeds.inputSpacePoints = spacepoints
    to_seeds.outputSeeds = chain.key("proto_seeds")
    to_seeds.outputProtoTracks = chain.key("proto_seed_triplets")
    chain.seq.addAlgorithm(acts.examples.ProtoTracksToSeeds(to_seeds, chain.level))
    return add_param_estimation(chain, cfg, chain.key("proto_seeds"), protos=protos)


def add_triplet_seeds(chain: Chain, cfg: ActsRecoConfig, triplets: str, spacepoints: str) -> tuple[str, str]:
    """ACTS seeds of proto-tracks of exactly three space points, and their initial parameters.

    The same seeds and parameters as :func:`add_protos_to_parameters` gives for such triplets, but
    ACTS's ``ProtoTracksToParameters`` finds the space points through an index table, where
    ``ProtoTracksToSeeds`` searches the space-point container linearly for each measurement
    (3.6 s per ⟨μ⟩ = 200 event for 48k seeds; docs/benchmarks/tracking.md, eleventh version). Only
    its seeds are used (space points sorted by radius, ``FirstThree``): the parameters and
    covariances come from ``TrackParamsEstimationAlgorithm`` with the seeding config's initial
    sigmas, as for every other ACTS seed here. ``spacepoints`` must hold every measurement of the
    triplets. Returns the keys of the parameters and of the seeds aligned with them.
    """
    acts = chain.acts
    _, geometry = _geometry()
    conv = acts.examples.ProtoTracksToParameters.Config()
    conv.inputProtoTracks, conv.inputSpacePoints = triplets, spacepoints
    k = chain.key
    conv.outputSeeds, conv.outputProtoTracks, conv.outputParameters = k("triplet_seeds"), k("triplet_protos"), k("triplet_params")
    conv.spacePointSelection = acts.examples.SeedSpacePointSelection.FirstThree
    conv.geometry, conv.magneticField = geometry, _field(cfg)
    chain.seq.addAlgorithm(acts.examples.ProtoTracksToParameters(conv, chain.level))
    params, seeds, _ = add_param_estimation(chain, cfg, k("triplet_seeds"))
    return params, seeds


def pixel_volumes(cfg: ActsRecoConfig) -> set[int]:
    """Volumes of the space points that estimate initial parameters (the fit's geometry selection)."""
    path = _data_file(cfg.fit.geometry_selection)
    entries = json.loads(path.read_text(encoding="utf-8"))
    return {int(e["volume"]) for e in entries}


def seed_triplets(protos: Sequence[Sequence[int]], geometry_id: np.ndarray, radius: np.ndarray,
                  pixel_volumes: set[int]) -> list[list[int] | None]:  # fmt: skip
    """Three pixel measurements per proto-track on distinct layers, spread along it (or ``None``).

    As ACTS's ``SeedSpacePointSelection.SpreadTriplet``: of the proto-track's pixel measurements
    on distinct (volume, layer), sorted by radius, the innermost, the middle and the outermost.
    ``geometry_id``/``radius`` are indexed by measurement index.
    """
    gid = np.asarray(geometry_id, np.uint64)
    volume = (gid >> np.uint64(56)).astype(np.int64)
    layer = ((gid >> np.uint64(36)) & np.uint64(0xFFF)).astype(np.int64)
    out: list[list[int] | None] = []
    for p in protos:
        idx = np.asarray([h for h in p if volume[h] in pixel_volumes], np.int64)
        if len(idx) == 0:
            out.append(None)
            continue
        idx = idx[np.argsort(radius[idx], kind="stable")]
        _, first = np.unique(volume[idx] * 10000 + layer[idx], return_index=True)
        idx = idx[np.sort(first)]  # the innermost measurement of each layer
        if len(idx) < 3:
            out.append(None)
            continue
        out.append([int(idx[0]), int(idx[len(idx) // 2]), int(idx[-1])])
    return out


def add_kalman(chain: Chain, cfg: ActsRecoConfig, protos: str, params: str, chi2_cut: float = float("inf")) -> str:
    """The ACTS Kalman fitter as ``addKalmanTracks`` builds it (perigee at the origin); measurements
    whose chi2 exceeds ``chi2_cut`` become outliers (default: none)."""
    acts = chain.acts
    _, geometry = _geometry()
    fit = acts.examples.makeKalmanFitterFunction(
        geometry, _field(cfg), multipleScattering=cfg.fit.multiple_scattering, energyLoss=cfg.fit.energy_loss,
        reverseFilteringMomThreshold=0.0, reverseFilteringCovarianceScaling=100.0,
        freeToBoundCorrection=acts.examples.FreeToBoundCorrection(False), chi2Cut=float(chi2_cut),
        useJosephFormulation=False, level=chain.level,
    )  # fmt: skip
    alg = acts.examples.TrackFittingAlgorithm(
        level=chain.level, inputMeasurements="measurements", inputProtoTracks=protos,
        inputInitialTrackParameters=params, inputClusters="", outputTracks=chain.key("kf_tracks"), pickTrack=-1,
        fit=fit, calibrator=acts.examples.makePassThroughCalibrator(),
        referenceSurface=acts.Surface.createPerigee(acts.Vector3(0, 0, 0)),
    )  # fmt: skip
    chain.seq.addAlgorithm(alg)
    return chain.key("kf_tracks")


def _runs(events: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs ``(first, n)`` of sorted event numbers (one Sequencer each)."""
    out: list[tuple[int, int]] = []
    for e in sorted(set(int(e) for e in events)):
        if out and out[-1][0] + out[-1][1] == e:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((e, 1))
    return out


def _stage_table(parts: list[tuple[pd.DataFrame, int]]) -> pd.DataFrame:
    """Event-weighted mean time per event of each algorithm over several Sequencer runs."""
    rows: dict[str, list[float]] = {}
    total = sum(n for _, n in parts)
    for df, n in parts:
        for alg, sec, wall in zip(
            df["algorithm"], df["seconds_per_event"], df["wall_seconds_per_event"], strict=True
        ):
            acc = rows.setdefault(alg, [0.0, 0.0])
            acc[0] += float(sec) * n / total
            acc[1] += float(wall) * n / total
    return pd.DataFrame({"algorithm": list(rows), "stage": [STAGES.get(a, "other") for a in rows],
                         "seconds_per_event": [v[0] for v in rows.values()],
                         "wall_seconds_per_event": [v[1] for v in rows.values()]})  # fmt: skip


def stage_seconds(timings: pd.DataFrame) -> dict[str, float]:
    """``{stage: seconds per event}`` of a timing table (I/O glue left out)."""
    t = timings[timings["stage"] != "other"]
    return {
        str(k): float(v)
        for k, v in t.groupby("stage", sort=False)["seconds_per_event"].sum().items()
    }


def run_chain(
    files: ActsEventFiles,
    events: Sequence[int],
    build: Any,
    exclude: Mapping[int, Iterable[int]] | None = None,
    measurement_cache: dict[int, Any] | None = None,
) -> tuple[dict[int, dict[str, Any]], pd.DataFrame]:
    """Run ``build(chain, sink)`` on every consecutive run of ``events``; collect tracks and timings.
    ``exclude``: per event the measurement indices the chain must not use; ``measurement_cache``:
    parsed measurement files shared with other runs of the same finder call (:class:`Chain`)."""
    sink: dict[int, dict[str, Any]] = {}
    parts = []
    for first, n in _runs(events):
        with tempfile.TemporaryDirectory(prefix="lhcml-acts-") as tmp:
            chain = Chain(files, first, n, Path(tmp), exclude, measurement_cache)
            build(chain, sink)
            parts.append((chain.run(), n))
    return sink, _stage_table(parts)
