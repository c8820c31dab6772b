"""``ml-seeds+ckf``: ACTS triplet seeding, a learned seed classifier, then the ACTS CKF on the kept seeds.

The ACTS baseline (``ckf``) spends ~75 % of its time at ⟨μ⟩ = 200 in the CKF following seeds
that mostly combine hits of several particles. Here ACTS's grid triplet seeding runs with more
seeds per middle space point than the baseline (``max_seeds_per_spm``, to recover the
1.5 < |η| < 2 region), the classifier of :mod:`lhcml.models.tracking.seed_filter` scores every
seed, and the CKF (with ACTS's seed deduplication: a seed whose space points a found track
already holds is skipped) runs only on the seeds above ``cut`` — at most ``max_per_spm`` per
middle space point — in decreasing score, so that the best seed of a particle is followed first.

Pieces:

* :func:`acts_seeds` -- ACTS seeding of one event (space points, ``GridTripletSeedingAlgorithm``,
  ``SeedsToProtoTracks``): the seeds as measurement-index triplets and the stage timings;
* :func:`write_seed_files` -- seed files with features and truth labels for training
  (``lhcml tracking write-seeds``; :func:`lhcml.models.tracking.seed_filter.seed_file`);
* :func:`select_seeds` -- the kept seeds, ranked;
* :func:`ml_seeds_ckf` -- the finder (``configs/tracking/ml_seeds.yaml``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from lhcml.atomic import atomic_write_bytes
from lhcml.config import StrictModel, coerce_config
from lhcml.errors import ConfigError, SchemaError
from lhcml.tasks.tracking.extend import ExtendConfig
from lhcml.tasks.tracking.track_quality import (
    TrackSelection,
    load_selection,
    pass_numbers,
    select_tracks,
    without_tracks,
)

#: the finder's shipped configuration
DEFAULT_CONFIG = "tracking/ml_seeds.yaml"


class MorePass(StrictModel):
    """A further pass of iterative tracking (after the second) on the hits every earlier pass left unused."""

    #: ACTS reconstruction config of the pass (a path, or the name of a shipped config)
    reco: str
    #: its seed classifier (checkpoint or run directory; its seeds then come with the finder's
    #: ``max_seeds_per_spm``); null: every ACTS seed of the pass
    checkpoint: str | None = None
    #: keep the pass's seeds with score >= cut
    cut: float = Field(0.05, ge=0.0, le=1.0)
    #: at most this many of its seeds per middle space point (best first; 0: no limit; needs ``checkpoint``)
    max_per_spm: int = Field(0, ge=0)


class MlSeedsConfig(StrictModel):
    """Configuration of ``ml-seeds+ckf`` (``configs/tracking/ml_seeds.yaml``)."""

    #: ACTS reconstruction config (a path; null: the shipped ``ckf.yaml``), seeding and CKF settings
    reco: str | None = None
    #: seeds per middle space point of ACTS's seeding (the baseline has 5)
    max_seeds_per_spm: int = Field(10, ge=1)
    #: the trained classifier: a checkpoint file or a training run directory (its best checkpoint)
    checkpoint: str
    #: keep seeds with score >= cut
    cut: float = Field(0.5, ge=0.0, le=1.0)
    #: keep at most this many seeds per middle space point (best first; 0: no limit)
    max_per_spm: int = Field(0, ge=0)
    #: ACTS's seed deduplication in the CKF (skip a seed whose space points a found track holds)
    seed_deduplication: bool = True
    #: iterative tracking: a second pass of ACTS seeding + CKF (+ ambiguity resolution) with this
    #: reconstruction config (a path) on the hits the first pass's tracks left unused, e.g. with a
    #: lower seeding pT; null: one pass
    second_pass: str | None = None
    #: the seed classifier of the second pass (checkpoint or run directory; its seeds then come with
    #: ``max_seeds_per_spm`` per middle space point, as for the first); null: every ACTS seed of the pass
    second_pass_checkpoint: str | None = None
    #: keep the second pass's seeds with score >= this cut
    second_pass_cut: float = Field(0.05, ge=0.0, le=1.0)
    #: keep at most this many of the second pass's seeds per middle space point (best first; 0: no
    #: limit); needs ``second_pass_checkpoint`` (the seeds are ranked by its scores)
    second_pass_max_per_spm: int = Field(0, ge=0)
    #: passes after the second, in order, each on the hits all earlier passes left unused (e.g. primaries
    #: below the second pass's pT, displaced tracks); needs ``second_pass``
    more_passes: list[MorePass] = Field(default_factory=list)
    #: with further passes: all passes in ONE ACTS Sequencer (the measurement container filled once, the
    #: event's truth and hit positions read once; each pass's hits left out by an algorithm between the
    #: passes) -- the same tracks as one Sequencer per pass (false: the fourteenth version's path), less CPU
    one_run: bool = True
    #: hit recovery after the last pass (:mod:`lhcml.tasks.tracking.extend`): each track takes the compatible
    #: hits that no track holds (stage ``extend``); null: off
    extend: ExtendConfig | None = None
    #: track-quality selection after the last pass, before ``extend`` (:mod:`lhcml.tasks.tracking.track_quality`:
    #: short tracks above a chi2/ndf ceiling removed); null: off
    track_selection: TrackSelection | None = None


def load_ml_seeds_config(cfg: MlSeedsConfig | Mapping[str, Any] | str | Path | None) -> MlSeedsConfig:
    """A validated config from a model, a mapping, a YAML path or ``None`` (the shipped one)."""
    return coerce_config(MlSeedsConfig, cfg, DEFAULT_CONFIG, "ml-seeds config")


def reco_config(cfg: MlSeedsConfig) -> Any:
    """The ACTS config of the finder: ``reco`` with its seeds per middle space point and deduplication."""
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    reco = load_reco_config(None if cfg.reco is None else _config_path(cfg.reco, "reco")).model_copy(deep=True)
    reco.seeding.max_seeds_per_spm = cfg.max_seeds_per_spm
    reco.ckf.seed_deduplication = cfg.seed_deduplication
    return reco


# ---------------------------------------------------------------------------------------- seeding
def acts_seeds(event_dir: str | Path, event_id: int, reco: Any) -> tuple[np.ndarray, dict[str, float]]:
    """ACTS's triplet seeds of one event: ``(n, 3)`` measurement indices (ACTS's order) and
    ``{stage: seconds}`` (read, space points, seeding; one thread)."""
    from lhcml.tasks.tracking.acts_reco import acts_files, run_chain, stage_seconds

    files = acts_files(event_dir)
    files.check(event_id)
    sink: dict[int, np.ndarray] = {}

    def build(chain: Any, _: Any) -> None:
        chain.seq.addAlgorithm(_ProtoCollector(chain.acts, chain.level, add_seed_protos(chain, reco), sink))

    _, timings = run_chain(files, [int(event_id)], build)
    return sink.get(int(event_id), np.zeros((0, 3), np.int64)), stage_seconds(timings)


def add_seed_protos(chain: Any, reco: Any) -> str:
    """ACTS's grid triplet seeding of ``reco`` and its seeds as proto-tracks of three measurements
    (``SeedsToProtoTracks``); returns their whiteboard key."""
    from lhcml.tasks.tracking.acts_reco import add_seeding

    acts = chain.acts
    conv = acts.examples.SeedsToProtoTracks.Config()
    conv.inputSeeds, conv.outputProtoTracks = add_seeding(chain, reco), chain.key("seed_protos")
    chain.seq.addAlgorithm(acts.examples.SeedsToProtoTracks(conv, chain.level))
    return chain.key("seed_protos")


class _ProtoCollector:
    """Reads a proto-track container of seeds into an ``(n, 3)`` array (per event)."""

    def __new__(cls, acts: Any, level: Any, key: str, sink: dict[int, np.ndarray]) -> Any:
        class ProtoCollector(acts.examples.IAlgorithm):
            def __init__(self) -> None:
                acts.examples.IAlgorithm.__init__(self, "ProtoCollector", level)
                self.inp = acts.examples.ReadDataHandle(self, acts.examples.ProtoTrackContainer, "ProtoTracks")
                self.inp.initialize(key)

            def execute(self, ctx: Any) -> Any:
                sink[ctx.eventNumber] = _triplets(self.inp(ctx.eventStore), ctx.eventNumber)
                return acts.examples.ProcessCode.SUCCESS

        return ProtoCollector()


def _triplets(protos: Any, event: int) -> np.ndarray:
    """``(n, 3)`` int64 measurement indices of a proto-track container of seeds.

    The bound ACTS vectors are read by index: iterating each one costs ~8 µs in pybind11, 2.5 s for
    the 300k seeds of a ⟨μ⟩ = 200 event, indexing 0.15 s (``map`` with ``len`` / ``itemgetter``: no Python
    frame per seed).
    """
    import operator

    tracks = list(protos)
    if any(map((3).__ne__, map(len, tracks))):
        raise SchemaError(f"ACTS seeds of event {event} are not all three measurements (strip space points in the "
                          "seeding's geometry selection?); the seed classifier scores pixel triplets")  # fmt: skip
    out = np.empty((len(tracks), 3), np.int64)
    for k in range(3):
        out[:, k] = np.fromiter(map(operator.itemgetter(k), tracks), np.int64, count=len(tracks))
    return out


def event_features(event_dir: str | Path, event_id: int, triplets: np.ndarray, field_tesla: float,
                   positions: Any = None) -> np.ndarray:
    """:func:`lhcml.models.tracking.seed_filter.seed_features` of an event's seeds (positions from its ACTS CSV,
    or ``positions``: :func:`lhcml.tasks.tracking.acts_chain.read_measurement_positions` of the event, read once)."""
    from lhcml.models.tracking.seed_filter import seed_features
    from lhcml.tasks.tracking.acts_reco import acts_files, read_measurement_positions

    meas = read_measurement_positions(acts_files(event_dir), event_id) if positions is None else positions
    return seed_features(meas["x"].to_numpy(float), meas["y"].to_numpy(float), meas["z"].to_numpy(float),
                         meas["geometry_id"].to_numpy(np.uint64), triplets, field_tesla)  # fmt: skip


def seed_labels(event_dir: str | Path, event_id: int, triplets: np.ndarray) -> np.ndarray:
    """1 where the seed's three measurements come from one particle (noise never), else 0.

    Raises
    ------
    SchemaError
        The event has no truth (seeds of real data cannot train the classifier).
    """
    from lhcml.data.trackml import read_event
    from lhcml.errors import InputNotFoundError

    try:
        ev = read_event(event_dir, event_id, parts=("hits", "truth"), check=False)
    except (FileNotFoundError, InputNotFoundError):
        ev = None
    truth = getattr(ev, "truth", None)
    if truth is None or "particle_id" not in truth.columns:
        raise SchemaError(f"event {event_id} of {event_dir} has no truth (particle_id per hit): seeds for training "
                          "need simulated events; write seeds without labels with --no-labels")  # fmt: skip
    pid = np.zeros(int(truth["hit_id"].max()) + 1, np.int64)
    pid[truth["hit_id"].to_numpy(np.int64)] = truth["particle_id"].to_numpy(np.int64)
    t = np.asarray(triplets, np.int64).reshape(-1, 3) + 1  # hit_id = measurement index + 1
    if t.size and t.max() >= len(pid):
        raise SchemaError(f"event {event_id}: seed hit ids beyond the truth table (max {int(t.max())}); "
                          "the ACTS CSV and the TrackML files are of different events")  # fmt: skip
    p = pid[t]
    return ((p[:, 0] != 0) & (p[:, 0] == p[:, 1]) & (p[:, 1] == p[:, 2])).astype(np.int8)


def write_seed_files(event_dir: str | Path, name: str, events: Sequence[int] | None = None,
                     max_seeds_per_spm: int = 10, labels: bool = True, progress: bool = True,
                     reco: Any = None) -> list[Path]:  # fmt: skip
    """Seed files of ``events`` (default: all) of a sample: ACTS's seeds with ``max_seeds_per_spm``,
    their features and (``labels``) truth labels, in ``<trackml dir>/seeds-<name>/``. ``reco``: the
    ACTS config whose seeding makes the seeds (a path or mapping; None: the shipped ``ckf.yaml``), so
    that the classifier of a finder with other seeding settings (minimum pT, |eta|) is trained on its seeds."""

    from tqdm import tqdm

    from lhcml.data.trackml import list_events
    from lhcml.models.tracking.seed_filter import FEATURE_NAMES
    from lhcml.tasks.tracking.acts_reco import acts_files, load_reco_config

    acts_files(event_dir)  # one clear error before any work
    ids = list(list_events(event_dir)) if events is None else [int(e) for e in events]
    reco = load_reco_config(reco).model_copy(deep=True)
    reco.seeding.max_seeds_per_spm = int(max_seeds_per_spm)
    out = []
    for e in tqdm(ids, desc=f"seeds {name}", unit="event", disable=not progress):
        triplets, _ = acts_seeds(event_dir, e, reco)
        arrays: dict[str, np.ndarray] = {
            "triplets": triplets, "features": event_features(event_dir, e, triplets, reco.field_tesla),
            "feature_names": np.asarray(FEATURE_NAMES), "max_seeds_per_spm": np.asarray(int(max_seeds_per_spm)),
        }  # fmt: skip
        if labels:
            arrays["y"] = seed_labels(event_dir, e, triplets)
        out.append(save_seed_file(event_dir, e, name, arrays))
    return out


def save_seed_file(event_dir: str | Path, event_id: int, name: str, arrays: dict[str, np.ndarray]) -> Path:
    """Write one event's seed arrays (``triplets``, ``features``, ``feature_names``, ``max_seeds_per_spm``
    and optionally ``y``) atomically as ``<trackml dir>/seeds-<name>/`` file of the event; returns its path."""
    import io

    from lhcml.data.trackml import read_event
    from lhcml.models.tracking.seed_filter import seed_file

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = seed_file(read_event(event_dir, event_id, parts=("hits",), check=False).source, event_id, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------- selection
def select_seeds(scores: np.ndarray, triplets: np.ndarray, cut: float, max_per_spm: int = 0) -> np.ndarray:
    """Indices of the kept seeds, best first: score >= ``cut``, at most ``max_per_spm`` per middle
    space point (0: no limit); ties keep ACTS's order (deterministic)."""
    scores = np.asarray(scores, np.float64)
    t = np.asarray(triplets, np.int64).reshape(-1, 3)
    if len(scores) != len(t):
        raise SchemaError(f"{len(scores)} scores for {len(t)} seeds; score every seed once")
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] >= cut]
    if max_per_spm > 0 and len(order):
        order = order[_rank_within(t[order, 1]) < max_per_spm]
    return order


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """Per element, how many earlier elements share its value (0 for the first of each value): a stable sort
    by value keeps each group's elements in their order, so the rank is the position within the group."""
    by = np.argsort(groups, kind="stable")
    g = groups[by]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    pos = np.arange(len(g)) - np.repeat(start, np.diff(np.r_[start, len(g)]))
    rank = np.empty(len(g), np.int64)
    rank[by] = pos
    return rank


@functools.lru_cache(maxsize=4)
def _classifier(checkpoint: str) -> Any:
    """The trained classifier of a checkpoint file or run directory (loaded once per process): a path from
    the working directory, or a shipped one named ``models/tracking/<name>.ckpt``
    (:func:`lhcml.train.tracking.load_tracking_classifier`)."""
    from lhcml.models.tracking.seed_filter import FEATURE_NAMES
    from lhcml.train.tracking import load_tracking_classifier

    return load_tracking_classifier(checkpoint, "seed_filter", FEATURE_NAMES, "seed", "configs/tracking/seed_filter.yaml")


class _SeedSelector:
    """Python ACTS algorithm between the seeding and the CKF: reads the seeds as proto-tracks of
    three measurements, ``choose(event_number, triplets) -> kept indices`` (best first), writes
    the kept ones (in that order) as a proto-track container."""

    def __new__(cls, acts: Any, level: Any, key: str, out: str, choose: Any) -> Any:
        class SeedSelector(acts.examples.IAlgorithm):
            def __init__(self) -> None:
                acts.examples.IAlgorithm.__init__(self, "SeedSelector", level)
                self.inp = acts.examples.ReadDataHandle(self, acts.examples.ProtoTrackContainer, "ProtoTracks")
                self.inp.initialize(key)
                self.out = acts.examples.WriteDataHandle(self, acts.examples.ProtoTrackContainer, "ProtoTracks")
                self.out.initialize(out)

            def execute(self, ctx: Any) -> Any:
                triplets = _triplets(self.inp(ctx.eventStore), ctx.eventNumber)
                container = acts.examples.ProtoTrackContainer()
                container.extend(list(map(acts.examples.ProtoTrack, triplets[choose(ctx.eventNumber, triplets)].tolist())))
                self.out(ctx, container)
                return acts.examples.ProcessCode.SUCCESS

        return SeedSelector()


def ml_seeds_ckf(event_dir: str | Path, event_id: int, cfg: Any = None) -> dict[str, Any]:
    """The finder ``ml-seeds+ckf``: ACTS seeding, the seed classifier, the ACTS CKF on the kept seeds.

    One ACTS run (the measurements are read once): space points, ACTS's grid triplet seeding,
    the seeds handed to Python as measurement triplets (``SeedsToProtoTracks``), scored and
    selected there (:func:`select_seeds`), handed back as seeds through ACTS's
    ``ProtoTracksToParameters`` (an index table instead of ``ProtoTracksToSeeds``'s linear search;
    :func:`lhcml.tasks.tracking.acts_chain.add_triplet_seeds`), parameters from ACTS's
    ``TrackParamsEstimationAlgorithm``, then the CKF and the ambiguity resolution of ``reco``.
    The tracks are those of ACTS's seeds ``triplets[keep]`` through
    :func:`lhcml.tasks.tracking.acts_reco.ckf_from_seeds` (tested), without its second run.

    Returns the finders' contract (``track_id``, ``hit_id``, ``timings``, ``fitted``); the timings
    are ACTS's per stage, ``classifier`` being the hand-over of the seeds to Python, their features,
    scores and selection; ``n_seeds`` / ``n_kept`` give the seeds before and after; with several passes
    in one run (``one_run``), ``pass_first_track_id[k]`` is the first track id of pass k + 1 (a pass's tracks
    have ids from its entry up to the next one's).

    With ``second_pass`` (iterative tracking, ``configs/tracking/ml_seeds_score.yaml``) a second ACTS
    run with that reconstruction config (e.g. a lower seeding pT, |eta| < 4), and the classifier
    ``second_pass_checkpoint`` if given, sees only the hits this pass's tracks left unused; its
    tracks are appended and its time is the stage ``second pass``. Each of ``more_passes`` then
    runs the same way on the hits all earlier passes left (stages ``third pass``, ...;
    ``configs/tracking/ml_seeds_3pass.yaml``).
    """
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    c = load_ml_seeds_config(cfg)
    reco = reco_config(c)
    # the second pass's config and classifier are read before any work (one clear error for a bad one)
    reco2, model2 = None, None
    if c.second_pass_max_per_spm and c.second_pass_checkpoint is None:
        raise ConfigError("second_pass_max_per_spm ranks the second pass's seeds by a classifier: "
                          "give second_pass_checkpoint too (or set second_pass_max_per_spm: 0)")  # fmt: skip
    if c.second_pass is not None:
        reco2 = load_reco_config(_config_path(c.second_pass, "second_pass")).model_copy(deep=True)
        if c.second_pass_checkpoint is not None:
            model2 = _classifier(str(c.second_pass_checkpoint))
            reco2.seeding.max_seeds_per_spm = c.max_seeds_per_spm
    if c.more_passes and c.second_pass is None:
        raise ConfigError("more_passes run after the second pass: give second_pass too (or drop more_passes)")
    more = []
    for k, extra in enumerate(c.more_passes, start=3):
        if extra.max_per_spm and extra.checkpoint is None:
            raise ConfigError(f"more_passes[{k - 3}]: max_per_spm ranks the pass's seeds by a classifier: give its "
                              "checkpoint too (or set max_per_spm: 0)")  # fmt: skip
        reco_k = load_reco_config(_config_path(extra.reco, f"more_passes[{k - 3}].reco")).model_copy(deep=True)
        model_k = None if extra.checkpoint is None else _classifier(str(extra.checkpoint))
        if model_k is not None:
            reco_k.seeding.max_seeds_per_spm = c.max_seeds_per_spm
        more.append((_PASS_NAMES.get(k, f"pass {k}"), reco_k, model_k, extra))
    if c.extend is not None and c.extend.min_hits_after:
        n_passes = 1 + (reco2 is not None) + len(more)
        beyond = sorted(k for k in c.extend.min_hits_after if k > n_passes)
        if beyond:
            raise ConfigError(f"extend.min_hits_after: pass {beyond[0]}, but the finder has {n_passes} pass(es)")
        if n_passes > 1 and not c.one_run:
            raise ConfigError("extend.min_hits_after needs each track's pass: run the passes with one_run: true")
    model = _classifier(str(c.checkpoint))
    load_selection(c.track_selection)  # its classifier read before any work (one clear error for a bad one)
    if c.one_run and reco2 is not None:
        from lhcml.tasks.tracking.acts_reco import acts_files, read_measurement_positions

        passes = [(None, reco, model, c.cut, c.max_per_spm), ("second pass", reco2, model2, c.second_pass_cut,
                  c.second_pass_max_per_spm)] + [(st, r, m, e.cut, e.max_per_spm) for st, r, m, e in more]  # fmt: skip
        # the hit positions read once, for the seed features of every pass and for the hit recovery
        positions = read_measurement_positions(acts_files(event_dir), int(event_id))
        defer = c.extend.min_hits_after if c.extend is not None and c.extend.defer_short else None
        found = _passes_in_one_run(event_dir, int(event_id), passes, positions, defer)
        if defer:
            found = _drop_deferred(found, defer)
        return _extended(select_tracks(found, c.track_selection), event_dir, int(event_id), c.extend,
                         positions)  # fmt: skip
    cache: dict[int, Any] = {}  # the event's measurements file, parsed once for both passes of this call
    track_id, hit_id, fitted, info = _ml_pass(event_dir, int(event_id), reco, model, c.cut, c.max_per_spm,
                                              measurement_cache=cache)  # fmt: skip
    timings = dict(fitted.timings)
    if reco2 is not None:
        track_id, hit_id, fitted, timings = _second_pass(event_dir, int(event_id), reco2, model2, c.second_pass_cut,
                                                         track_id, hit_id, fitted, timings, cache,
                                                         c.second_pass_max_per_spm)  # fmt: skip
        for stage, reco_k, model_k, extra in more:
            track_id, hit_id, fitted, timings = _second_pass(event_dir, int(event_id), reco_k, model_k, extra.cut,
                                                             track_id, hit_id, fitted, timings, cache,
                                                             extra.max_per_spm, stage)  # fmt: skip
    return _extended(select_tracks({"track_id": track_id, "hit_id": hit_id, "timings": timings, "fitted": fitted,
                                    "n_seeds": info.get("n_seeds", 0), "n_kept": info.get("n_kept", 0)},
                                   c.track_selection), event_dir, int(event_id), c.extend)  # fmt: skip


def _extended(out: dict[str, Any], event_dir: str | Path, event_id: int, cfg: ExtendConfig | None,
              positions: Any = None) -> dict[str, Any]:  # fmt: skip
    """The finder's result with :func:`lhcml.tasks.tracking.extend.extend_event` applied (``extend``; None: as it
    is): the tracks' added hits in ``hit_id``, the step's CPU as stage ``extend``, ``n_extended`` hits added
    (``fitted`` keeps the passes' fits); ``positions``: the event's measurement positions if already read."""
    if cfg is None:
        return out
    import time

    from lhcml.tasks.tracking.extend import extend_event

    c0 = time.process_time()
    t, h, info = extend_event(event_dir, event_id, out["track_id"], out["hit_id"], cfg, positions)
    timings = {**out["timings"], "extend": time.process_time() - c0}
    res = {**out, "track_id": t, "hit_id": h, "timings": timings, "n_extended": info["added"]}
    return _drop_short(res, cfg.min_hits_after) if cfg.min_hits_after else res


def _drop_short(out: dict[str, Any], min_hits_after: dict[int, int]) -> dict[str, Any]:
    """The finder's result without the tracks that hold fewer hits than ``min_hits_after[pass]`` after the hit
    recovery (:func:`lhcml.tasks.tracking.extend.short_after_recovery`; ``fitted`` too, track ids unchanged),
    ``n_short`` added."""
    from lhcml.tasks.tracking.extend import short_after_recovery

    t = np.asarray(out["track_id"], np.int64)
    gone = short_after_recovery(t, pass_numbers(out, t), min_hits_after)
    return {**without_tracks(out, gone), "n_short": len(gone)}


def _drop_deferred(out: dict[str, Any], min_hits_after: dict[int, int]) -> dict[str, Any]:
    """The finder's result without the deferred short tracks that share a hit with a later pass's track
    (:func:`lhcml.tasks.tracking.extend.deferred_overlaps`), ``n_deferred_dropped`` added."""
    from lhcml.tasks.tracking.extend import deferred_overlaps

    gone = deferred_overlaps(out["track_id"], out["hit_id"], pass_numbers(out, out["track_id"]), min_hits_after)
    return {**without_tracks(out, gone), "n_deferred_dropped": len(gone)}


def _ml_pass(event_dir: str | Path, event_id: int, reco: Any, model: Any, cut: float, max_per_spm: int,
             exclude: Mapping[int, Any] | None = None, measurement_cache: dict[int, Any] | None = None,
             ) -> tuple[np.ndarray, np.ndarray, Any, dict[str, int]]:  # fmt: skip
    """One ACTS run of seeding -> classifier -> CKF (:func:`ml_seeds_ckf`) on the event's hits except
    ``exclude`` (per event, measurement indices); ``(track_id, hit_id, fitted, {n_seeds, n_kept})``.
    ``measurement_cache``: the parsed measurements shared with the other pass (:func:`run_chain`)."""
    from lhcml.tasks.tracking.acts_chain import TrackCollector, add_triplet_seeds
    from lhcml.tasks.tracking.acts_reco import (
        _candidates,
        _fitted,
        _truth,
        acts_files,
        add_ckf,
        run_chain,
        stage_seconds,
    )

    files = acts_files(event_dir)
    files.check(event_id)
    info: dict[str, int] = {}

    def choose(_: int, triplets: np.ndarray) -> np.ndarray:
        info["n_seeds"] = len(triplets)
        if not len(triplets):
            info["n_kept"] = 0
            return np.zeros(0, np.int64)
        feats = event_features(event_dir, event_id, triplets, reco.field_tesla)
        keep = select_seeds(model.score(feats), triplets, cut, max_per_spm)
        info["n_kept"] = len(keep)
        return keep

    def build(chain: Any, sink: dict[int, dict[str, Any]]) -> None:
        acts = chain.acts
        chain.seq.addAlgorithm(_SeedSelector(acts, chain.level, add_seed_protos(chain, reco), "kept_seed_protos",
                                             choose))  # fmt: skip
        params, kept_seeds = add_triplet_seeds(chain, reco, "kept_seed_protos", "spacepoints")
        tracks = add_ckf(chain, reco, params, kept_seeds)
        chain.seq.addAlgorithm(TrackCollector(acts, chain.level, tracks, sink))

    sink, timings = run_chain(files, [event_id], build, exclude, measurement_cache)
    res = sink[event_id]
    rows = np.arange(len(res["hits"]))
    fitted = _fitted(event_id, res, rows, rows, _truth(Path(event_dir), event_id))
    fitted.timings = stage_seconds(timings)
    track_id, hit_id = (np.asarray(a, np.int64) for a in _candidates(res))
    return track_id, hit_id, fitted, info


#: timing stage of each pass after the first
_PASS_NAMES = {2: "second pass", 3: "third pass", 4: "fourth pass", 5: "fifth pass"}


def _config_path(name: str, what: str) -> Path:
    """A config named by a path, else by its name among the shipped configs (e.g. ``tracking/ckf_pass2.yaml``)."""
    from lhcml.config import shipped_config

    if Path(name).is_file():
        return Path(name)
    try:
        return shipped_config(name)
    except ConfigError:
        raise ConfigError(f"{what}: {name} is neither a file nor a shipped config (e.g. tracking/ckf_pass2.yaml)") from None


def _second_pass(event_dir: str | Path, event_id: int, reco: Any, model: Any, cut: float, track_id: np.ndarray,
                 hit_id: np.ndarray, fitted: Any, timings: dict[str, float],
                 measurement_cache: dict[int, Any] | None = None, max_per_spm: int = 0,
                 stage: str = "second pass") -> tuple[np.ndarray, np.ndarray, Any, dict[str, float]]:  # fmt: skip
    """ACTS seeding (+ the classifier ``model`` at ``cut``, at most ``max_per_spm`` seeds per middle
    space point, if given) + CKF with ``reco`` on the hits that the earlier passes' tracks
    ``(track_id, hit_id)`` left unused; all tracks together (this pass's track ids after the earlier
    ones), their fitted tracks concatenated, and the timings with this pass's sum as ``stage``."""
    from lhcml.tasks.tracking.acts_reco import run_ckf, stage_seconds

    exclude = {event_id: np.unique(hit_id) - 1}
    if model is None:
        result = run_ckf(event_dir, [event_id], reco, exclude=exclude, measurement_cache=measurement_cache)
        t2, h2 = (np.asarray(a, np.int64) for a in result.candidates[event_id])
        f2, seconds = result.tracks[event_id], stage_seconds(result.timings)
    else:
        t2, h2, f2, _ = _ml_pass(event_dir, event_id, reco, model, cut, max_per_spm, exclude, measurement_cache)
        seconds = f2.timings
    return _append(track_id, hit_id, fitted, t2, h2, f2, {**timings, stage: float(sum(seconds.values()))})


def _append(track_id: np.ndarray, hit_id: np.ndarray, fitted: Any, t2: np.ndarray, h2: np.ndarray, f2: Any,
            timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, Any, dict[str, float]]:  # fmt: skip
    """A later pass's tracks ``(t2, h2, f2)`` after the earlier ones (track ids after theirs), the fitted
    tracks concatenated, with ``timings``."""
    import dataclasses

    offset = int(track_id.max()) + 1 if len(track_id) else 0
    merged = {}
    for f in dataclasses.fields(fitted):
        a, b = getattr(fitted, f.name), getattr(f2, f.name)
        if f.name == "track_id":
            b = np.asarray(b) + offset
        merged[f.name] = np.concatenate([np.asarray(a), np.asarray(b)]) if isinstance(a, np.ndarray) else a
    merged["timings"] = timings
    return (np.concatenate([track_id, t2 + offset]), np.concatenate([hit_id, h2]),
            dataclasses.replace(fitted, **merged), timings)  # fmt: skip


def _passes_in_one_run(event_dir: str | Path, event_id: int, passes: list[tuple[Any, ...]],
                       positions: Any = None, defer: Mapping[int, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """All passes of :func:`ml_seeds_ckf` in one ACTS Sequencer (``one_run``): the measurements are read
    and put into ACTS's container once, then per pass ``(stage, reco, model, cut, max_per_spm)`` (stage
    None for the first) its seeding (+ classifier) + CKF + ambiguity resolution under keys of its own
    (:meth:`lhcml.tasks.tracking.acts_chain.Chain.key`), its tracks collected, and the next pass's
    measurements all but the hits of every earlier pass's tracks
    (:class:`~lhcml.tasks.tracking.acts_chain.MeasurementSubsetExcept`) -- the hits the one-Sequencer-per-pass
    path excludes, so the same tracks (tested). The truth and the hit positions are read once. Timings:
    the first pass's stages, then each later pass's sum as its stage (from the rows of the Sequencer's
    timing table between the passes' subset algorithms). ``positions``: the event's
    :func:`~lhcml.tasks.tracking.acts_chain.read_measurement_positions` if the caller has read them (else read here
    when the first seeds are scored). The tracks' truth (majority particle, purity) is matched once for all passes
    together (a track's match depends on its own hits only). ``defer`` (``extend.defer_short``: 1-based pass ->
    minimum): the tracks of such a pass with fewer measurements do not take their hits from the later passes."""
    import dataclasses
    import itertools
    import tempfile

    from lhcml.tasks.tracking.acts_chain import (
        Chain,
        MeasurementSubsetExcept,
        TrackCollector,
        _stage_table,
        add_triplet_seeds,
    )
    from lhcml.tasks.tracking.acts_reco import (
        _candidates,
        _fitted,
        _truth,
        acts_files,
        add_ckf,
        add_param_estimation,
        add_seeding,
        read_measurement_positions,
        stage_seconds,
        truth_match,
    )

    files = acts_files(event_dir)
    files.check(event_id)
    info: dict[str, int] = {}
    positions = {} if positions is None else {"meas": positions}
    sinks: list[dict[int, dict[str, Any]]] = [{} for _ in passes]
    flat: dict[tuple[int, int], np.ndarray] = {}  # (event, pass): its tracks' measurement indices, flattened once

    def used_before(k: int) -> Any:
        def hits(event: int) -> np.ndarray:
            for j in range(k):
                if (event, j) not in flat:
                    tracks = sinks[j][event]["hits"]
                    if defer and j + 1 in defer:  # the pass's short tracks leave their hits to the later passes
                        tracks = [t for t in tracks if len(t) >= defer[j + 1]]
                    flat[event, j] = np.fromiter(itertools.chain.from_iterable(tracks), np.int64)
            return np.unique(np.concatenate([flat[event, j] for j in range(k)]))

        return hits

    def chooser(k: int, reco: Any, model: Any, cut: float, max_per_spm: int) -> Any:
        def choose(_: int, triplets: np.ndarray) -> np.ndarray:
            if k == 0:
                info["n_seeds"] = len(triplets)
            if not len(triplets):
                keep = np.zeros(0, np.int64)
            else:
                if "meas" not in positions:
                    positions["meas"] = read_measurement_positions(files, event_id)
                feats = event_features(event_dir, event_id, triplets, reco.field_tesla, positions["meas"])
                keep = select_seeds(model.score(feats), triplets, cut, max_per_spm)
            if k == 0:
                info["n_kept"] = len(keep)
            return keep

        return choose

    with tempfile.TemporaryDirectory(prefix="lhcml-acts-") as tmp:
        chain = Chain(files, event_id, 1, Path(tmp), None, {})
        acts = chain.acts
        for k, (_, reco, model, cut, max_per_spm) in enumerate(passes):
            chain.tag = "" if k == 0 else f"_pass{k + 1}"
            if k:
                chain.seq.addAlgorithm(MeasurementSubsetExcept(acts, chain.level, chain.key("measurement_subset"),
                                                               used_before(k)))  # fmt: skip
            if model is None:  # every ACTS seed of the pass (run_ckf's chain)
                seeds = add_seeding(chain, reco)
                params, est_seeds, _ = add_param_estimation(chain, reco, seeds)
                tracks = add_ckf(chain, reco, params, est_seeds)
            else:
                chain.seq.addAlgorithm(_SeedSelector(acts, chain.level, add_seed_protos(chain, reco),
                                                     chain.key("kept_seed_protos"),
                                                     chooser(k, reco, model, cut, max_per_spm)))  # fmt: skip
                params, kept = add_triplet_seeds(chain, reco, chain.key("kept_seed_protos"), chain.key("spacepoints"))
                tracks = add_ckf(chain, reco, params, kept)
            chain.seq.addAlgorithm(TrackCollector(acts, chain.level, tracks, sinks[k]))
        rows = chain.run()
    starts = [0] + np.flatnonzero(rows["algorithm"].to_numpy() == "Algorithm:MeasurementSubsetExcept").tolist()
    if len(starts) != len(passes):
        raise RuntimeError(f"ACTS timing table with {len(starts) - 1} pass boundaries for {len(passes)} passes")
    ends = starts[1:] + [len(rows)]
    seconds = [stage_seconds(_stage_table([(rows.iloc[a:b].reset_index(drop=True), 1)])) for a, b in zip(starts, ends, strict=True)]
    track_id = hit_id = fitted = None
    timings: dict[str, float] = {}
    first_ids: list[int] = []  # pass k's tracks have ids >= first_ids[k] (and below the next pass's)
    for k, (stage, *_rest) in enumerate(passes):
        res = sinks[k][event_id]
        r = np.arange(len(res["hits"]))
        f = _fitted(event_id, res, r, r, None)  # truth matched below, once for all passes
        t, h = (np.asarray(a, np.int64) for a in _candidates(res))
        if k == 0:
            f.timings = timings = dict(seconds[0])
            track_id, hit_id, fitted = t, h, f
            first_ids.append(0)
        else:
            first_ids.append(int(track_id.max()) + 1 if len(track_id) else 0)  # _append's offset
            track_id, hit_id, fitted, timings = _append(track_id, hit_id, fitted, t, h, f,
                                                        {**timings, stage: float(sum(seconds[k].values()))})  # fmt: skip
    pid, frac = truth_match([[h + 1 for h in hits] for k in range(len(passes)) for hits in sinks[k][event_id]["hits"]],
                            _truth(Path(event_dir), event_id))  # fmt: skip
    fitted = dataclasses.replace(fitted, truth_particle=pid, truth_fraction=frac)
    return {"track_id": track_id, "hit_id": hit_id, "timings": timings, "fitted": fitted,
            "n_seeds": info.get("n_seeds", 0), "n_kept": info.get("n_kept", 0),
            "pass_first_track_id": first_ids}  # fmt: skip
