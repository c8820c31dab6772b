"""The registry of track finders: name -> ``finder(event_dir, event_id, cfg) -> candidates``.

Every finder takes the OUT directory of ``lhcml tracking simulate`` (or a directory of TrackML
files, for the finders that read only hits), an event number and its configuration (``None``:
the finder's shipped default; else a YAML path or a mapping), and returns the candidates of the
event as a mapping ``{"track_id": int64 array, "hit_id": int64 array, "timings": {stage: s}}``
(one row per (track, hit); a hit may belong to several tracks; ``timings`` is the time of each
stage for this event with one thread, optional; a finder that fits its tracks, as the CKF, adds
``"fitted"``: :class:`lhcml.tasks.tracking.acts_reco.FittedTracks`). ``lhcml tracking reconstruct --method NAME``,
``lhcml tracking evaluate`` and ``benchmarks/tracking.py`` find finders here only (never by an
import string). Other finders are added by one line each in :data:`FINDERS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.errors import ConfigError
from lhcml.tasks.tracking import bucketing as _bucketing
from lhcml.tasks.tracking import gnn_pipeline as _gnn
from lhcml.tasks.tracking import seed_filter as _seed_filter

#: what a finder returns: ``track_id``, ``hit_id`` (int64 arrays) and ``timings`` ({stage: seconds})
Candidates = Mapping[str, Any]
Finder = Callable[[Path, int, Any], Candidates]


def ckf(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ACTS seeding + combinatorial Kalman filter + ambiguity resolution (``configs/tracking/ckf.yaml``)."""
    from lhcml.tasks.tracking.acts_reco import run_ckf, stage_seconds

    result = run_ckf(event_dir, [int(event_id)], cfg)
    track_id, hit_id = result.candidates[int(event_id)]
    return {"track_id": np.asarray(track_id, np.int64), "hit_id": np.asarray(hit_id, np.int64),
            "timings": stage_seconds(result.timings), "fitted": result.tracks[int(event_id)]}  # fmt: skip


def ckf_fast(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """The CKF with ACTS's particle-gun seeding, one seed per middle space point (``configs/tracking/ckf_fast.yaml``)."""
    from lhcml.config import shipped_config

    return ckf(event_dir, event_id, shipped_config("tracking/ckf_fast.yaml") if cfg is None else cfg)


def _ml_seeds_shipped(name: str, event_dir: str | Path, event_id: int, cfg: Any) -> Candidates:
    """ml-seeds+ckf with ``cfg``, or (None) the shipped ``configs/tracking/<name>``."""
    from lhcml.config import shipped_config

    return _seed_filter.ml_seeds_ckf(event_dir, event_id, shipped_config(f"tracking/{name}") if cfg is None else cfg)


def ml_seeds_2pass(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf, then a second ACTS seeding + CKF pass with a lower pT and a wider |eta| on the
    hits its tracks left unused (iterative tracking; ``configs/tracking/ml_seeds_score.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_score.yaml", event_dir, event_id, cfg)


def ml_seeds_2pass_budget(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-2pass within the CKF's CPU budget and fake rate at ⟨μ⟩ = 200: shorter seed doublets in
    both passes, a second pass restricted to prompt seeds, one seed per middle space point, one CKF branch
    per surface and 8 measurements per track (``configs/tracking/ml_seeds_2pass_budget.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_2pass_budget.yaml", event_dir, event_id, cfg)


def ml_seeds_3pass(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-2pass, then passes for primaries at 0.1-0.2 GeV and for displaced tracks on the hits
    the earlier passes left unused (``configs/tracking/ml_seeds_3pass.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_3pass.yaml", event_dir, event_id, cfg)


def ml_seeds_3pass_budget(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-2pass-budget with a lean third pass for 0.1-0.2 GeV primaries, within the CKF's CPU time
    and fake rate at ⟨μ⟩ = 200 on validation events (``configs/tracking/ml_seeds_3pass_budget.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_3pass_budget.yaml", event_dir, event_id, cfg)


def ml_seeds_4pass_budget(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-3pass-budget with the third pass's own classifier and a lean fourth pass for displaced tracks
    (|d0| < 80 mm) down to 0.15 GeV on the hits the first three left, all in one ACTS run, within the CKF's CPU time
    and fake rate at ⟨μ⟩ = 200 on held-out events (``configs/tracking/ml_seeds_4pass_budget.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_4pass_budget.yaml", event_dir, event_id, cfg)


def ml_seeds_6pass_budget(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-4pass-budget's passes with the third and fourth passes' own classifiers, shorter seeds in the first
    two, a fifth pass seeded from all pixel endcap disks (the forward edge) and a sixth seeded in the short strips
    (particles made beyond the pixels), all in one ACTS run, within the CKF's CPU time and fake rate at ⟨μ⟩ = 200 on
    held-out events (``configs/tracking/ml_seeds_6pass_budget_fwd_strips_lean.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_6pass_budget_fwd_strips_lean.yaml", event_dir, event_id, cfg)


def ml_seeds_6pass_quality(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-6pass-budget with looser passes (CKF chi2 25/35 in the first three, 7 measurements and 3 seeds per
    middle space point in the third, seeds from 0.12 GeV in the fourth, 4 measurements in the strip pass), the learned
    track-quality selection after the last pass (:mod:`lhcml.tasks.tracking.track_quality`) and the hit recovery
    (:mod:`lhcml.tasks.tracking.extend`), within the CKF's CPU time and below its fake rate at ⟨μ⟩ = 200 on held-out
    events (``configs/tracking/ml_seeds_6pass_budget_quality_ext_spend.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_6pass_budget_quality_ext_spend.yaml", event_dir, event_id, cfg)


def ml_seeds_7pass_quality(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-6pass-quality with more strip seeds (2 per middle space point, origins within |z| < 300 mm) and a
    seventh, low-pT strip pass (seeds from 0.16 GeV in the short strips) for the secondaries made in the detector's
    material, within the CKF's CPU time and below its fake rate at ⟨μ⟩ = 200 on held-out events
    (``configs/tracking/ml_seeds_7pass_budget_quality_ext_spend_strips_lowpt.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_7pass_budget_quality_ext_spend_strips_lowpt.yaml", event_dir, event_id, cfg)


def ml_seeds_8pass_quality(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-7pass-quality with an eighth, low-pT pixel pass (pixel seeds from 0.06 GeV, spans to 45 mm, the
    displaced pass's origin windows and seed classifier) for the pixel-seedable particles below every other pass's
    pT, within the CKF's CPU time and below its fake rate at ⟨μ⟩ = 200 on held-out events
    (``configs/tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml", event_dir, event_id,
                             cfg)  # fmt: skip


def ml_seeds_8pass_allpix_extcap(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-8pass-quality with its eighth pass seeded on every pixel layer (all endcap disks, origins within
    |z| < 1000 mm: forward secondaries whose hits lie on the outer disks) and a wider hit recovery guarded against
    fakes (cuts 4 x, a cap on the hits one track gains), within the CKF's CPU time and fake rate at ⟨μ⟩ = 200 on
    held-out events (``configs/tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap.yaml",
                             event_dir, event_id, cfg)  # fmt: skip


def ml_seeds_8pass_allpix_tf7_1branch(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-8pass-allpix-extcap with a track classifier retrained on its own tracks (labels after the hit
    recovery, cut 0.02), pass 8's tracks from 7 measurements and the first pass on one CKF branch per surface, within
    the CKF's CPU time and fake rate at ⟨μ⟩ = 200 on held-out events
    (``configs/tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml",
                             event_dir, event_id, cfg)  # fmt: skip


def ml_seeds_9pass_allpix_tf7_1branch(event_dir: str | Path, event_id: int, cfg: Any = None) -> Candidates:
    """ml-seeds+ckf-8pass-allpix-tf7-1branch with a ninth pass -- pass 8's seeding, classifier and CKF once more on the
    hits the eight passes left, keeping tracks from 5 measurements, selected by the track classifier at a cut of its
    own -- TrackML score above 0.90 within the CKF's CPU time and fake rate at ⟨μ⟩ = 200 on held-out events
    (``configs/tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch_pass9.yaml``)."""
    return _ml_seeds_shipped("ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch_pass9.yaml",
                             event_dir, event_id, cfg)  # fmt: skip


def clean(event_dir: str | Path, event_id: int, out: Candidates) -> Candidates:
    """A finder's output cleaned by :func:`lhcml.tasks.tracking.acts_reco.clean_candidates` (Kalman fit
    with outliers, track selection, greedy ambiguity resolution; ``configs/tracking/ckf.yaml``), each
    candidate's initial parameters from the pixel triplet along its helix
    (:func:`lhcml.tasks.tracking.bucketing.pixel_seed_hits`); the finder's timings plus ``cleaning``."""
    from lhcml.data.trackml import read_event
    from lhcml.tasks.tracking.acts_reco import clean_candidates, load_reco_config, pixel_volumes

    t0 = time.process_time()
    pairs = (np.asarray(out["track_id"], np.int64), np.asarray(out["hit_id"], np.int64))
    hits = read_event(event_dir, event_id, parts=("hits",), check=False).hits
    seeds = _bucketing.pixel_seed_hits(hits, *pairs, pixel_volumes(load_reco_config(None)), seeds_per_track=1)
    (track_id, hit_id), fitted = clean_candidates(event_dir, event_id, pairs, seeds=seeds)
    timings = {**dict(out.get("timings") or {}), "cleaning": time.process_time() - t0}
    return {"track_id": track_id, "hit_id": hit_id, "timings": timings, "fitted": fitted}


def seed_ckf(event_dir: str | Path, event_id: int, out: Candidates) -> Candidates:
    """A finder's tracks completed to pixel seeds and handed to the ACTS CKF, as ``bucketing+ckf``
    does (:func:`lhcml.tasks.tracking.bucketing.ckf_from_tracks`, its default helix tolerances and
    two seeds per track); the finder's timings plus ``seed_completion`` and ``ckf``."""
    from lhcml.data.trackml import read_event

    hits = read_event(event_dir, event_id, parts=("hits",), check=False).hits
    return _bucketing.ckf_from_tracks(event_dir, event_id, hits, out)


#: a finder "X+step" run after X (``benchmarks/tracking.py``) applies ``step`` to X's candidates
POST_STEPS: dict[str, Callable[[Path, int, Candidates], Candidates]] = {"+clean": clean, "+ckf": seed_ckf}


def then(finder: Finder, step: str) -> Finder:
    """``finder`` followed by the post step ``step`` of :data:`POST_STEPS` (``cfg`` is the inner
    finder's configuration)."""
    post = POST_STEPS[step]

    def run(event_dir: Path, event_id: int, cfg: Any = None) -> Candidates:
        return post(event_dir, event_id, finder(event_dir, event_id, cfg))

    run.__doc__ = f"{finder.__name__}{step}: {finder.__name__}'s candidates, then :func:`{post.__name__}`."
    return run


#: finder name -> callable(event_dir, event_id, cfg) -> candidates
FINDERS: dict[str, Finder] = {
    "ckf": ckf,
    "bucketing": _bucketing.bucketing,  # ANN buckets + helix fits (lhcml.tasks.tracking.bucketing)
    "bucketing+ckf": _bucketing.bucketing_ckf,  # bucketing tracks as seeds of the ACTS CKF
    "bucketing+clean": then(_bucketing.bucketing, "+clean"),  # bucketing tracks fitted, selected, ambiguity-resolved
    "gnn-mm": _gnn.gnn_mm,  # module-map graph -> edge filter -> interaction network -> CC + walk-through
    "gnn-mm+clean": then(_gnn.gnn_mm, "+clean"),
    "gnn-mm+ckf": then(_gnn.gnn_mm, "+ckf"),  # gnn-mm candidates as seeds of the ACTS CKF
    "gnn-ml": _gnn.gnn_ml,  # metric-learning radius graph -> edge filter -> interaction network -> CC + walk-through
    "gnn-ml+clean": then(_gnn.gnn_ml, "+clean"),
    "gnn-ml+ckf": then(_gnn.gnn_ml, "+ckf"),
    "ckf_fast": ckf_fast,  # the CKF with one seed per middle space point (configs/tracking/ckf_fast.yaml)
    "ml-seeds+ckf": _seed_filter.ml_seeds_ckf,  # ACTS seeds ranked/filtered by a learned classifier, then the CKF
    "ml-seeds+ckf-2pass": ml_seeds_2pass,  # ml-seeds+ckf, then a low-pT / forward ACTS pass on the unused hits
    "ml-seeds+ckf-2pass-budget": ml_seeds_2pass_budget,  # the two passes within the CKF's CPU and fake rate
    "ml-seeds+ckf-3pass": ml_seeds_3pass,  # the two passes, then 0.1-0.2 GeV primaries and displaced tracks
    "ml-seeds+ckf-3pass-budget": ml_seeds_3pass_budget,  # the budget passes and a lean 0.1-0.2 GeV pass
    "ml-seeds+ckf-4pass-budget": ml_seeds_4pass_budget,  # + the third pass's own classifier, a lean displaced pass
    "ml-seeds+ckf-6pass-budget": ml_seeds_6pass_budget,  # + own classifiers, shorter seeds, endcap and strip passes
    "ml-seeds+ckf-6pass-quality": ml_seeds_6pass_quality,  # + looser passes, track-quality selection, hit recovery
    "ml-seeds+ckf-7pass-quality": ml_seeds_7pass_quality,  # + more strip seeds and a low-pT strip pass
    "ml-seeds+ckf-8pass-quality": ml_seeds_8pass_quality,  # + a low-pT pixel pass (seeds from 0.06 GeV)
    "ml-seeds+ckf-8pass-allpix-extcap": ml_seeds_8pass_allpix_extcap,  # + pass 8 on every pixel layer, wider recovery
    "ml-seeds+ckf-8pass-allpix-tf7-1branch": ml_seeds_8pass_allpix_tf7_1branch,  # + retrained classifier, 1 branch
    "ml-seeds+ckf-9pass-allpix-tf7-1branch": ml_seeds_9pass_allpix_tf7_1branch,  # + a ninth pass on the leftover hits
}


#: finders that read the ACTS CSV of the sample (``OUT/acts/``)
ACTS_FINDERS = {"ckf", "ckf_fast"} | {name for name in FINDERS if "+" in name}  # the CKF and every ACTS post step


def get_finder(name: str) -> Finder:
    """The finder registered as ``name``; :class:`ConfigError` naming the registered ones otherwise."""
    try:
        return FINDERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown track finder '{name}'; registered: {', '.join(sorted(FINDERS))}"
        ) from None


def parse_events(spec: str | None, available: list[int]) -> list[int]:
    """Event numbers from ``"3"``, ``"0-9"`` or ``"0,4,7-9"`` (``None``: all ``available``)."""
    if spec is None or spec.strip() in ("", "all"):
        return list(available)
    out: list[int] = []
    try:
        for part in spec.split(","):
            a, _, b = part.strip().partition("-")
            out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    except ValueError:
        raise ConfigError(
            f"--events {spec!r} is not a list of event numbers or ranges (e.g. 0-9 or 0,4,7-9)"
        ) from None
    missing = sorted(set(out) - set(available))
    if missing:
        raise ConfigError(f"events {missing[:10]} are not in the sample (it has {len(available)} events, "
                          f"{available[0] if available else '-'}..{available[-1] if available else '-'})")  # fmt: skip
    return out


def parse_sample_specs(items: list[str]) -> list[tuple[Path, list[int]]]:
    """Samples named as ``DIR`` (all its events) or ``DIR:EVENTS`` (:func:`parse_events`' syntax, e.g.
    ``benchmarks/_work/tracking/bench_mu200_c:0-14``): a list of (directory, event numbers)."""
    from lhcml.data.trackml import list_events

    out = []
    for item in items:
        d, _, ev = item.rpartition(":") if ":" in item else (item, "", "")
        out.append((Path(d), parse_events(ev or None, list(list_events(d)))))
    return out


def reconstruct(
    event_dir: str | Path,
    method: str,
    out: str | Path,
    events: str | None = None,
    cfg: Any = None,
    fit: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the finder ``method`` on events of a sample and write its candidates (and fitted tracks).

    Writes ``OUT/event{N:09d}-candidates.csv`` and ``-timings.json`` per event (the files
    ``lhcml tracking evaluate`` reads) and, for ``ckf`` or with ``fit``, ``OUT/fitted_tracks.h5``
    (ACTS Kalman fits of the candidates; :func:`lhcml.tasks.tracking.acts_reco.write_fitted_tracks`).

    Returns
    -------
    dict
        ``events``, ``tracks`` (total candidates), ``seconds_per_event`` (mean of the finder's
        stage timings) and the paths written.
    """
    from tqdm import tqdm

    from lhcml.data.trackml import list_events
    from lhcml.tasks.tracking import acts_reco
    from lhcml.tasks.tracking.evaluate import write_candidates

    finder = get_finder(method)
    event_ids = parse_events(events, list_events(event_dir))
    if method in ACTS_FINDERS or fit:
        acts_reco.acts_files(
            event_dir
        )  # the ACTS CSV must be there: one clear error before any work
    out = Path(out)
    fitted = {}
    n_tracks, times = 0, []
    for e in tqdm(event_ids, desc=f"reconstruct ({method})", unit="event", disable=not progress):
        cands = finder(event_dir, e, cfg)
        track_id, hit_id = np.asarray(cands["track_id"]), np.asarray(cands["hit_id"])
        timings = dict(cands.get("timings") or {})
        if cands.get("fitted") is not None:  # the CKF fits its tracks itself
            fitted[e] = cands["fitted"]
        elif fit:
            fitted[e] = acts_reco.fit_candidates(event_dir, e, (track_id, hit_id))
        write_candidates(out, e, track_id, hit_id, timings=timings)
        n_tracks += len(np.unique(track_id))
        times.append(sum(timings.values()))
    summary: dict[str, Any] = {"events": len(event_ids), "tracks": n_tracks,
                               "seconds_per_event": float(np.mean(times)) if times else 0.0, "out": str(out)}  # fmt: skip
    if fitted:
        path = acts_reco.write_fitted_tracks(
            out / "fitted_tracks.h5", fitted, attrs={"finder": method}
        )
        summary["fitted_tracks"] = str(path)
    return summary
