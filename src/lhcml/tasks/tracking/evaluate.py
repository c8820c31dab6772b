"""``lhcml tracking evaluate`` and ``lhcml tracking report``: track candidates of any method vs truth.

Candidates on disk (the files every finder's output goes through, :func:`write_candidates`):
``DIR/event{N:09d}-candidates.csv`` with columns ``track_id,hit_id`` (one row per (track, hit); a
hit may be in several tracks) and, optionally, ``DIR/event{N:09d}-timings.json`` with the event's
time per stage in seconds (``{"seeding": 0.8, "ckf": 2.1}``; CPU time per core when the finder ran
on one thread).

:func:`evaluate_tracking` scores the candidates of one or more methods on one sample (one event
directory, one ⟨μ⟩) with :mod:`lhcml.metrics.tracking` (TrackML score, ACTS-style efficiency,
fake and duplicate rates vs pT and η, time per event by stage) and writes
``OUT/<sample>/results.json`` and ``results.csv`` (one row per method). :func:`build_tracking_report`
gathers every ``results.json`` under a folder into one HTML page: a table per sample, efficiency /
fake / duplicate rate vs pT and η per method and ⟨μ⟩, and one event display per sample (hits, true
tracks, found tracks; x–y and r–z views).
"""

from __future__ import annotations

import csv
import io
import json
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lhcml.atomic import atomic_write_text
from lhcml.errors import ConfigError, CorruptFileError, InputNotFoundError, SchemaError
from lhcml.formatting import json_safe, pm
from lhcml.metrics import tracking as tm

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
#: columns of results.csv (one row per method), in this order
CSV_COLUMNS = (
    "sample", "mu", "method", "events", "trackml_score", "trackml_score_err", "efficiency", "efficiency_err",
    "efficiency_pt>1", "efficiency_pt>1_err", "efficiency_pt>0.5", "efficiency_pt>0.5_err", "fake_rate",
    "fake_rate_err", "duplicate_rate", "duplicate_rate_err", "n_particles", "n_tracks", "time_per_event_s",
)  # fmt: skip


def candidates_path(directory: str | Path, event_id: int) -> Path:
    """``DIR/event{N:09d}-candidates.csv``."""
    return Path(directory) / f"event{int(event_id):09d}-candidates.csv"


def timings_path(directory: str | Path, event_id: int) -> Path:
    """``DIR/event{N:09d}-timings.json``."""
    return Path(directory) / f"event{int(event_id):09d}-timings.json"


def write_candidates(
    directory: str | Path, event_id: int, track_id: Any, hit_id: Any, timings: Mapping[str, float] | None = None
) -> Path:
    """Write one event's candidates (and its per-stage timings) atomically; returns the CSV path."""
    t, h = tm.check_candidates(track_id, hit_id)
    buf = io.StringIO()
    buf.write("track_id,hit_id\n")
    np.savetxt(buf, np.stack([t, h], axis=1), fmt="%d", delimiter=",")
    path = atomic_write_text(candidates_path(directory, event_id), buf.getvalue())
    if timings is not None:
        atomic_write_text(timings_path(directory, event_id), json.dumps({k: float(v) for k, v in timings.items()}))
    return path


def read_candidates(directory: str | Path, event_id: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Read one event's candidates: ``(track_id, hit_id, timings)`` (timings ``{}`` when absent).

    Raises
    ------
    InputNotFoundError
        The event has no candidate file in ``directory``.
    SchemaError
        The file lacks the ``track_id``/``hit_id`` columns or holds non-integers.
    """
    path = candidates_path(directory, event_id)
    if not path.is_file():
        raise InputNotFoundError(
            f"no candidates for event {event_id} in {directory} ({path.name} is missing): run the finder on this "
            "event (`lhcml tracking reconstruct`) or evaluate only the events it ran on (--events)"
        )
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path} is not a candidates CSV ({err}); remake it") from None
    missing = [c for c in ("track_id", "hit_id") if c not in df.columns]
    if missing:
        raise SchemaError(f"{path} lacks the column(s) {missing}: a candidates file has the columns track_id,hit_id")
    t, h = tm.check_candidates(df["track_id"].to_numpy(), df["hit_id"].to_numpy())
    timings: dict[str, float] = {}
    tp = timings_path(directory, event_id)
    if tp.is_file():
        try:
            timings = {str(k): float(v) for k, v in json.loads(tp.read_text(encoding="utf-8")).items()}
        except (ValueError, AttributeError, TypeError) as err:
            raise CorruptFileError(f"{tp} is not a JSON object of stage -> seconds ({err}); remake it") from None
    return t, h, timings


def sample_mu(event_dir: str | Path) -> float | None:
    """⟨μ⟩ of a sample from its ``manifest.json`` (``None`` when there is none, e.g. TrackML files)."""
    for p in (Path(event_dir) / "manifest.json", Path(event_dir).parent / "manifest.json"):
        if p.is_file():
            try:
                man = json.loads(p.read_text(encoding="utf-8"))
            except ValueError:
                return None
            mu = man.get("mu", man.get("pileup", {}).get("mu") if isinstance(man.get("pileup"), dict) else None)
            return None if mu is None else float(mu)
    return None


def parse_methods(items: Sequence[str]) -> dict[str, Path]:
    """``["ckf=DIR", ...]`` -> ``{"ckf": Path(DIR)}`` (the CLI's ``--candidates`` values)."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--candidates takes METHOD=DIR (e.g. ckf=out/ckf), got {item!r}")
        if name in out:
            raise ConfigError(f"method {name!r} given twice in --candidates")
        if not Path(path).is_dir():
            raise InputNotFoundError(f"candidates directory {path!r} of method {name!r} does not exist")
        out[name] = Path(path)
    if not out:
        raise ConfigError("give at least one --candidates METHOD=DIR")
    return out


def evaluate_sample(
    event_dir: str | Path,
    candidates: Mapping[str, Mapping[int, tuple[np.ndarray, np.ndarray, Mapping[str, float]]]],
    *,
    bfield: float = tm.BFIELD_T,
    selection: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, list[tm.EventPerformance]]]:
    """Per-method summaries of in-memory candidates ``{method: {event_id: (t, h, timings)}}``.

    Every method must cover the same events (the comparison is on the same events). Returns the
    summaries ``{method: metrics.tracking.summarise(...)}`` and the per-event performances.
    """
    from lhcml.data.trackml import read_event

    sel = {"min_pt": tm.MIN_PT_GEV, "max_abs_eta": tm.MAX_ABS_ETA, "min_particle_hits": tm.MIN_PARTICLE_HITS,
           "min_track_hits": tm.MIN_TRACK_HITS, "matching_fraction": tm.MATCHING_FRACTION, **(selection or {})}  # fmt: skip
    event_sets = {m: sorted(c) for m, c in candidates.items()}
    ids = next(iter(event_sets.values()), [])
    for m, e in event_sets.items():
        if e != ids:
            raise ConfigError(f"method {m!r} has candidates for events {e[:10]}..., others for {ids[:10]}...: compare methods on the same events")
    if not ids:
        raise ConfigError("no events to evaluate")
    per_event: dict[str, list[tm.EventPerformance]] = {m: [] for m in candidates}
    for eid in ids:
        ev = read_event(event_dir, eid, parts=("hits", "particles", "truth"))
        for m, c in candidates.items():
            t, h, timings = c[eid]
            per_event[m].append(
                tm.evaluate_event(eid, ev.truth, ev.particles, ev.hits, t, h, bfield=bfield, timings=timings,
                                  min_pt=sel["min_pt"], max_abs_eta=sel["max_abs_eta"],
                                  min_particle_hits=int(sel["min_particle_hits"]),
                                  min_track_hits=int(sel["min_track_hits"]),
                                  matching_fraction=sel["matching_fraction"])  # fmt: skip
            )
    return {m: tm.summarise(v) for m, v in per_event.items()}, per_event


def evaluate_tracking(
    event_dir: str | Path,
    methods: Mapping[str, str | Path],
    out: str | Path,
    *,
    sample: str | None = None,
    events: Sequence[int] | None = None,
    mu: float | None = None,
    bfield: float = tm.BFIELD_T,
    selection: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Evaluate candidate directories ``{method: DIR}`` on the events of ``event_dir``.

    Parameters
    ----------
    event_dir
        A sample in the TrackML layout (``lhcml tracking simulate`` output or TrackML files).
    methods
        Method name -> directory of its candidate files.
    out
        Output folder; results go to ``out/<sample>/results.{json,csv}``.
    sample
        Sample name (default: ``mu<MU>`` or the event folder's name).
    events
        Event ids (default: every event that all methods have candidates for).
    mu
        ⟨μ⟩ (default: from the sample's manifest).
    bfield, selection
        Field [T] for the candidates' pT estimate; overrides of the particle/track selection
        (``min_pt``, ``max_abs_eta``, ``min_particle_hits``, ``min_track_hits``, ``matching_fraction``).
    extra
        More entries for ``results.json`` (e.g. the benchmark's command and machine).

    Returns
    -------
    Path
        The written ``results.json``.
    """
    from lhcml.data.trackml import list_events

    event_dir = Path(event_dir)
    if not event_dir.exists():
        raise InputNotFoundError(f"event directory {event_dir} does not exist")
    mu = sample_mu(event_dir) if mu is None else mu
    name = sample or (f"mu{mu:g}" if mu is not None else event_dir.name)
    if events is None:
        available = set(int(e) for e in list_events(event_dir))
        for d in methods.values():
            available &= {int(p.name[5:14]) for p in Path(d).glob("event*-candidates.csv")}
        events = sorted(available)
        if not events:
            raise InputNotFoundError(
                f"no event of {event_dir} has candidates from every method ({', '.join(methods)}): run the finders first"
            )
    cands = {m: {int(e): read_candidates(d, e) for e in events} for m, d in methods.items()}
    summaries, _ = evaluate_sample(event_dir, cands, bfield=bfield, selection=selection)
    results = {
        "sample": name,
        "mu": mu,
        "event_dir": str(event_dir.resolve()),
        "events": [int(e) for e in events],
        "candidates": {m: str(Path(d).resolve()) for m, d in methods.items()},
        "selection": {"min_pt_gev": tm.MIN_PT_GEV, "max_abs_eta": tm.MAX_ABS_ETA, "min_particle_hits": tm.MIN_PARTICLE_HITS,
                      "min_track_hits": tm.MIN_TRACK_HITS, "matching_fraction": tm.MATCHING_FRACTION,
                      **dict(selection or {})},  # fmt: skip
        "bfield_t": bfield,
        "methods": summaries,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        **dict(extra or {}),
    }
    return write_results(results, Path(out) / name)


def _row(sample: str, mu: float | None, method: str, s: Mapping[str, Any]) -> dict[str, Any]:
    timing = s.get("timing", {})
    row = {"sample": sample, "mu": mu, "method": method, "events": s["events"],
           "trackml_score": s["trackml_score"]["value"], "trackml_score_err": s["trackml_score"]["error"]}  # fmt: skip
    for k in ("efficiency", "efficiency_pt>1", "efficiency_pt>0.5", "fake_rate", "duplicate_rate"):
        row[k] = s.get(k, {}).get("value")
        row[f"{k}_err"] = s.get(k, {}).get("error")
    row["n_particles"] = s["n_particles"]
    row["n_tracks"] = s["n_tracks"]
    row["time_per_event_s"] = timing.get("total", {}).get("mean")
    return row


def write_results(results: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``results.json`` and ``results.csv`` (one row per method) atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
    w.writeheader()
    for m, s in results["methods"].items():
        w.writerow({k: ("" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v)
                    for k, v in _row(results["sample"], results.get("mu"), m, s).items()})  # fmt: skip
    atomic_write_text(out_dir / RESULTS_CSV, buf.getvalue())
    return atomic_write_text(out_dir / RESULTS_JSON, json.dumps(json_safe(dict(results)), indent=1) + "\n")


def load_results(folder: str | Path) -> list[dict[str, Any]]:
    """Every ``results.json`` in ``folder`` or its sub-folders, sorted by ⟨μ⟩ then name."""
    folder = Path(folder)
    paths = [folder / RESULTS_JSON] if (folder / RESULTS_JSON).is_file() else sorted(folder.glob(f"*/{RESULTS_JSON}"))
    if not paths:
        raise InputNotFoundError(f"no {RESULTS_JSON} in {folder} or its sub-folders: run `lhcml tracking evaluate` first")
    out = []
    for p in paths:
        try:
            r = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as err:
            raise CorruptFileError(f"{p} is not valid JSON ({err}); rerun `lhcml tracking evaluate`") from None
        if "methods" not in r or "sample" not in r:
            raise SchemaError(f"{p} is not a tracking results file (no 'methods'/'sample'); rerun `lhcml tracking evaluate`")
        r["_dir"] = str(p.parent)
        out.append(r)
    return sorted(out, key=lambda r: (r.get("mu") if r.get("mu") is not None else 1e9, r["sample"]))


def fmt_result(entry: Mapping[str, Any] | None) -> str:
    """``value ± error`` of a ``{"value", "error"}`` result (:func:`lhcml.formatting.pm`); an error
    below 1e-9 (float rounding, e.g. the truth row's score) is shown as no error."""
    if not entry:
        return "–"
    err = entry.get("error")
    return pm(entry.get("value"), None if err is None or not np.isfinite(err) or err < 1e-9 else err)


def summary_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per (sample, method): score, efficiencies, fake and duplicate rates, time (text)."""
    rows = []
    for r in results:
        for m, s in r["methods"].items():
            t = s.get("timing", {}).get("total", {})
            rows.append({
                "sample": r["sample"], "⟨μ⟩": "–" if r.get("mu") is None else f"{r['mu']:g}", "method": m,
                "events": str(s["events"]),
                "TrackML score": fmt_result(s["trackml_score"]),
                "eff. (pT > 1 GeV)": fmt_result(s["efficiency_pt>1"]),
                "eff. (pT > 0.5 GeV)": fmt_result(s["efficiency_pt>0.5"]),
                "fake rate": fmt_result(s["fake_rate"]),
                "duplicate rate": fmt_result(s["duplicate_rate"]),
                "time/event [s]": pm(t.get("mean"), t.get("std")) if t else "–",
            })  # fmt: skip
    return rows


def breakdown_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per (sample, method): collected / available TrackML weight per particle category."""
    rows = []
    for r in results:
        for m, s in r["methods"].items():
            row = {"sample": r["sample"], "method": m}
            for cat, v in s.get("score_breakdown", {}).items():
                row[cat] = f"{v['collected']:.3f} / {v['weight']:.3f}"
            rows.append(row)
    return rows


def stage_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per (sample, method, stage) with the mean ± standard deviation of its time per event."""
    rows = []
    for r in results:
        for m, s in r["methods"].items():
            for stage, t in s.get("timing", {}).items():
                rows.append({"sample": r["sample"], "method": m, "stage": stage, "s/event": pm(t["mean"], t["std"]),
                             "events": str(t["n"])})  # fmt: skip
    return rows or [{"sample": "–", "method": "–", "stage": "no timings recorded", "s/event": "–", "events": "0"}]


def build_tracking_report(folder: str | Path, output: str | Path | None = None, display_method: str | None = None) -> Path:
    """One HTML page from every ``results.json`` under ``folder`` (see the module docstring).

    Parameters
    ----------
    folder
        Folder of ``lhcml tracking evaluate`` outputs (``folder/<sample>/results.json``).
    output
        The HTML file (default ``folder/report.html``).
    display_method
        Method whose candidates the event displays show (default: the first of each sample).

    Returns
    -------
    Path
        The written report.
    """
    from lhcml.data.trackml import read_event
    from lhcml.plots.report import HtmlReport
    from lhcml.plots.tracking import EventDisplay, RateVsVar

    folder = Path(folder)
    results = load_results(folder)
    output = Path(output) if output else folder / "report.html"
    fig_dir = output.parent / "figures"
    rep = HtmlReport("Track finding: TrackML score, efficiency, fake and duplicate rates")
    sel = results[0].get("selection", {})
    rep.add_text(
        "TrackML score as the challenge defines it (double majority, hit weights; candidates reduced to one track "
        "per hit by lhcml.metrics.tracking.to_submission). ACTS-style rates: a candidate is matched to its "
        f"majority particle when ≥ {sel.get('matching_fraction', 0.5):g} of its hits come from it, else fake; "
        "further matches of a particle are duplicates; candidates with fewer than "
        f"{sel.get('min_track_hits', tm.MIN_TRACK_HITS)} hits are not counted. Reconstructable particles: charged, "
        f"pT > {sel.get('min_pt_gev', tm.MIN_PT_GEV):g} GeV, |η| < {sel.get('max_abs_eta', tm.MAX_ABS_ETA):g}, "
        f"≥ {sel.get('min_particle_hits', tm.MIN_PARTICLE_HITS)} hits (docs/references.md §21). Errors binomial; "
        "score error = standard error of the per-event mean."
    )
    rep.add_table(summary_rows(results), caption="Per sample and method")
    rep.add_table(breakdown_rows(results), caption="TrackML score by particle category: weight collected / weight "
                  "available (shares of the event's total weight, mean over events; categories overlap)")  # fmt: skip
    rep.add_table(stage_rows(results), caption="Time per event by stage [s] (mean ± standard deviation over events; "
                  "total = CPU time of the finder call with one thread where the benchmark measured it)")  # fmt: skip
    labels = {"efficiency": "Efficiency", "fake_rate": "Fake rate", "duplicate_rate": "Duplicate rate"}
    with_mu = [r for r in results if r.get("mu") is not None]
    if len({r["mu"] for r in with_mu}) > 1:  # rates vs <mu>, one line per method
        rep.add_heading("Versus pile-up")
        methods = list(dict.fromkeys(m for r in with_mu for m in r["methods"]))
        for q, ylabel in (("efficiency_pt>1", "Efficiency ($p_{T}$ > 1 GeV)"), ("fake_rate", "Fake rate"),
                          ("duplicate_rate", "Duplicate rate")):  # fmt: skip
            plot = RateVsVar(xlabel="$\\langle\\mu\\rangle$", ylabel=ylabel)
            for m in methods:
                pts = [(r["mu"], r["methods"][m][q]) for r in with_mu if m in r["methods"]]
                plot.add_points(m, [p[0] for p in pts], [p[1]["value"] for p in pts], [p[1]["error"] for p in pts])
            name = q.replace(">", "_gt")
            rep.add_figure(plot.save(fig_dir / f"{name}_vs_mu.png"), f"{ylabel} vs ⟨μ⟩")
    for r in results:
        mu_txt = "–" if r.get("mu") is None else f"{r['mu']:g}"
        rep.add_heading(f"{r['sample']} (⟨μ⟩ = {mu_txt}, {len(r['events'])} events)")
        for var, xlabel in (("pt", "$p_{T}$ [GeV]"), ("eta", "$\\eta$")):
            for q, ylabel in labels.items():
                what = "truth particle" if q == "efficiency" else "candidate (hit estimate)"
                plot = RateVsVar(xlabel=f"{what} {xlabel}", ylabel=ylabel, logx=(var == "pt"),
                                 label_lines=[f"{r['sample']}, $\\langle\\mu\\rangle$ = {mu_txt}"])  # fmt: skip
                for m, s in r["methods"].items():
                    plot.add(m, s[f"vs_{var}"][q])
                path = plot.save(fig_dir / f"{r['sample']}_{q}_vs_{var}.png")
                rep.add_figure(path, f"{ylabel} vs {xlabel} ({r['sample']})")
        found = [m for m in r["candidates"] if m != "truth"] or list(r["candidates"])  # a finder, not the truth row
        method = display_method if display_method in r["candidates"] else found[0]
        eid = int(r["events"][0])
        ev = read_event(r["event_dir"], eid, parts=("hits", "particles", "truth"))
        t, h, _ = read_candidates(r["candidates"][method], eid)
        disp = EventDisplay(label_lines=[f"{r['sample']}, event {eid}, found: {method}"])
        disp.add_event(ev.hits, ev.truth, ev.particles, min_pt=1.0)
        disp.add_candidates(t, h, tm.match_tracks(ev.truth, t, h), min_track_hits=int(r["selection"]["min_track_hits"]))
        path = disp.save(fig_dir / f"{r['sample']}_event{eid}_{method}.png")
        rep.add_figure(path, f"Event display, {r['sample']} event {eid}: hits (grey), true tracks of particles with "
                             f"pT > 1 GeV (top), {method} candidates (bottom: matched blue, duplicate orange, fake red)")  # fmt: skip
    return rep.write(output)
