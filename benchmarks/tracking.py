"""Track finders benchmarked on the same held-out events at several ⟨μ⟩ (issue 14).

For every sample (``--sample NAME=DIR``, an ``lhcml tracking simulate`` output of held-out events)
and every finder registered in :data:`lhcml.tasks.tracking.finders.FINDERS` (or ``--methods``):

1. run the finder once untimed on the first event of the first sample it runs on (``--warmup``:
   geometry, field and model set-up are per job, not per event), then on each event with one
   thread, measuring the CPU time of the call
   (``time.process_time``: CPU time per event per core) and its wall time; the finder's own
   per-stage timings are kept beside them; candidates and timings go to
   ``WORK/candidates/<sample>/<method>/`` (:func:`lhcml.tasks.tracking.evaluate.write_candidates`);
   a finder that fails (e.g. an ML finder without its trained model) is reported as not run, with
   its error, and the others go on; a finder ``X+clean`` (``X+ckf``) run after ``X`` cleans X's
   candidates of this run (seeds the CKF from them; :data:`lhcml.tasks.tracking.finders.POST_STEPS`)
   instead of running X again, its CPU time is X's plus the step's; ``--reuse`` keeps the candidates a method already has in ``WORK``
   for the same events (to resume an interrupted run);
2. evaluate all methods on the same events (:func:`lhcml.tasks.tracking.evaluate.evaluate_tracking`):
   TrackML score, efficiency for pT > 1 GeV and > 0.5 GeV, fake and duplicate rates (ACTS-style
   matching), time per event; ``WORK/eval/<sample>/results.{json,csv}`` and the HTML report
   ``WORK/eval/report.html`` (rates vs pT and η, one event display per sample);
3. print one table and write it, with machine, samples, command, wall time and the published
   anchors (docs/references.md §21), into ``docs/benchmarks/tracking.md`` between the markers
   ``<!-- tracking-benchmark:begin -->`` / ``<!-- tracking-benchmark:end -->`` (the prose around
   them is kept).

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/tracking.py \\
        --sample mu0=benchmarks/_work/tracking/heldout_mu0 --sample mu50=benchmarks/_work/tracking/heldout_mu50 \\
        --sample mu200=benchmarks/_work/tracking/heldout_mu200 --max-events 5 --work benchmarks/_work/tracking/bench
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_write_text
from lhcml.formatting import pm
from lhcml.tasks.tracking.evaluate import fmt_result

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks" / "tracking.md"
BEGIN, END = "<!-- tracking-benchmark:begin -->", "<!-- tracking-benchmark:end -->"

#: published anchors shown beside the numbers (docs/references.md §21)
ANCHORS = [
    ("TrackML accuracy-phase winner (TrackML detector, ⟨μ⟩ ≈ 200)", "score 0.922", "unverified (issue 14)"),
    ("MaskFormer tracking on TrackML (one GPU)", "97 % eff., 0.7 % fakes, 97 ms/event", "arXiv:2411.07149 v2 abstract"),
    ("Bucketing: ANN hashing + metric learning", "96 % eff., 8 % fakes, buckets of 20–50 hits", "unverified (issue 14)"),
]


def _as_candidates(result: Any) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """``(track_id, hit_id, timings)`` from a finder's return value (mapping, object or pair)."""
    if isinstance(result, tuple) and len(result) == 2:
        return np.asarray(result[0]), np.asarray(result[1]), {}
    get = result.get if isinstance(result, dict) else lambda k, d=None: getattr(result, k, d)
    timings = {str(k): float(v) for k, v in (get("timings") or {}).items()}
    return np.asarray(get("track_id")), np.asarray(get("hit_id")), timings


def run_finders(samples: dict[str, Path], methods: list[str], max_events: dict[str, int | None], work: Path,
                events_spec: str | None, with_truth: bool = True, warmup: int = 1, reuse: bool = False) -> tuple[dict[str, dict[str, Path]], dict[str, dict[str, str]], dict[str, list[int]]]:  # fmt: skip
    """Run every method on every sample; returns candidate dirs, failures and the events used."""
    from tqdm import tqdm

    from lhcml.data.trackml import list_events, read_event
    from lhcml.tasks.tracking.evaluate import (
        candidates_path,
        read_candidates,
        timings_path,
        write_candidates,
    )
    from lhcml.tasks.tracking.finders import POST_STEPS, get_finder, parse_events

    done: dict[str, dict[str, Path]] = {}
    failed: dict[str, dict[str, str]] = {}
    used: dict[str, list[int]] = {}
    warmed: set[str] = set()
    for s, d in samples.items():
        done[s], failed[s] = {}, {}
        try:
            ids = parse_events(events_spec, list_events(d))
        except Exception as err:  # noqa: BLE001 - a missing sample is reported, the others go on
            ids = []
            failed[s] = {m: f"sample unreadable: {type(err).__name__}: {err}"[:160] for m in methods}
        ids = ids[: max_events[s]] if max_events.get(s) else ids
        used[s] = ids
        if not ids:
            failed[s] = failed[s] or {m: "the sample has no events" for m in methods}
            continue
        if with_truth:  # the truth assignment: a check of the score and selection (score 1, efficiency 1)
            for e in ids:
                tr = read_event(d, e, parts=("hits", "truth")).truth
                real = tr[tr["particle_id"] != 0]
                write_candidates(work / "candidates" / s / "truth", e, real["particle_id"].to_numpy(), real["hit_id"].to_numpy())
            done[s]["truth"] = work / "candidates" / s / "truth"
        for m in methods:
            finder = get_finder(m)
            out = work / "candidates" / s / m
            if reuse and all(candidates_path(out, e).is_file() and timings_path(out, e).is_file() for e in ids):
                done[s][m] = out  # --reuse: this method's candidates of these events are there already
                continue
            # "X+clean" / "X+ckf" after X in the same run: clean X's candidates (or seed the CKF from them)
            # instead of running X again; its CPU is X's (from X's timings) plus the step's, as if run in one call
            base, plus, suffix = m.rpartition("+")
            step = POST_STEPS.get(plus + suffix) if plus else None
            reuse_base = step is not None and base in done[s]
            try:
                for _ in range(warmup if m not in warmed else 0):  # untimed, once per method (first sample):
                    finder(d, ids[0], None)  # one-off set-up (geometry, models) is not per event
                warmed.add(m)
                for e in tqdm(ids, desc=f"{s} {m}", unit="event"):
                    c0, w0 = time.process_time(), time.perf_counter()
                    if reuse_base:
                        bt, bh, btim = read_candidates(done[s][base], e)
                        result = step(d, e, {"track_id": bt, "hit_id": bh, "timings": {k: v for k, v in btim.items() if k not in ("total", "wall")}})
                    else:
                        result = finder(d, e, None)
                    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                    if reuse_base:
                        cpu, wall = cpu + btim.get("total", 0.0), wall + btim.get("wall", 0.0)
                    t, h, stages = _as_candidates(result)
                    # "total": CPU time of the call (per core: one thread); the finder's stages beside it
                    write_candidates(out, e, t, h, timings={**stages, "total": cpu, "wall": wall})
                done[s][m] = out
            except Exception as err:  # noqa: BLE001 - a finder that cannot run is reported, not fatal
                failed[s][m] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:160]
                print(f"[{s}] {m} not run: {failed[s][m]}", file=sys.stderr)
                traceback.print_exc(limit=3)
    return done, failed, used


def table(results: list[dict[str, Any]], failed: dict[str, dict[str, str]]) -> list[list[str]]:
    """Rows: sample, ⟨μ⟩, method, events, score, eff (pT > 1, > 0.5 GeV), fakes, duplicates, CPU s/event."""
    rows = []
    for r in results:
        for m, s in r["methods"].items():
            t = s.get("timing", {})
            cpu, wall = t.get("total", {}), t.get("wall", {})
            stages = ", ".join(f"{k} {v['mean']:.3g}" for k, v in t.items() if k not in ("total", "wall"))
            rows.append([
                r["sample"], "–" if r.get("mu") is None else f"{r['mu']:g}", m, str(s["events"]),
                fmt_result(s["trackml_score"]),
                fmt_result(s["efficiency_pt>1"]),
                fmt_result(s["efficiency_pt>0.5"]),
                fmt_result(s["fake_rate"]),
                fmt_result(s["duplicate_rate"]),
                pm(cpu.get("mean"), cpu.get("std")) if cpu else "–",
                pm(wall.get("mean"), wall.get("std")) if wall else "–",
                stages or "–",
            ])  # fmt: skip
        for m, why in failed.get(r["sample"], {}).items():
            rows.append([r["sample"], "–" if r.get("mu") is None else f"{r['mu']:g}", m, "0", f"not run: {why}"] + ["–"] * 7)
    return rows


HEADER = ["sample", "⟨μ⟩", "method", "events", "TrackML score", "eff. pT > 1 GeV", "eff. pT > 0.5 GeV",
          "fake rate", "duplicate rate", "CPU s/event (1 core)", "wall s/event", "finder's stages [s/event]"]  # fmt: skip


def markdown(rows: list[list[str]], meta: dict[str, Any]) -> str:
    """The generated part of docs/benchmarks/tracking.md."""
    lines = [BEGIN, "", f"Run {meta['date']} ({meta['wall_s']:.0f} s wall). Machine: {meta['machine']}.", "",
             f"Command: `{meta['command']}`", "", "Samples (held-out events, not used in any training):", ""]  # fmt: skip
    for s, info in meta["samples"].items():
        lines.append(f"- `{s}`: `{info['dir']}`, ⟨μ⟩ = {info['mu']}, events {info['events']}")
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if meta.get("breakdown"):
        cats = list(dict.fromkeys(k for r in meta["breakdown"] for k in r if k not in ("sample", "method")))
        lines += ["", "Where the TrackML score comes from: weight collected / weight available per particle category "
                  "(shares of the event's total weight, mean over events; categories overlap):", "",
                  "| sample | method | " + " | ".join(cats) + " |", "|" + "---|" * (len(cats) + 2)]  # fmt: skip
        lines += ["| " + " | ".join([r["sample"], r["method"], *[r.get(c, "–") for c in cats]]) + " |" for r in meta["breakdown"]]
    lines += ["", "Published anchors (docs/references.md §21; other detectors, samples and selections — see the text):", "",
              "| reference | value | source |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} |" for a, b, c in ANCHORS]
    lines += ["", f"Report with the rates vs pT and η and the event displays: `{meta['report']}`.", "", END]
    return "\n".join(lines)


def write_doc(block: str, path: Path = DOC) -> Path:
    """Replace the generated block of the page (or create the page around it)."""
    if path.is_file() and BEGIN in (text := path.read_text(encoding="utf-8")) and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return atomic_write_text(path, head + block + tail)
    page = ("# Track finding (issue 14)\n\nTrackML score, ACTS-style efficiency, fake and duplicate rates and CPU time per "
            "event of every registered finder on the same held-out events, from `benchmarks/tracking.py`.\n\n")  # fmt: skip
    return atomic_write_text(path, page + block + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", action="append", required=True, help="NAME=DIR of held-out events (repeat per mu)")
    ap.add_argument("--methods", default=None, help="comma-separated finders (default: all in FINDERS)")
    ap.add_argument("--max-events", default=None, help="first N events of each sample, or one N per sample (e.g. 10,5,3)")
    ap.add_argument("--events", default=None, help="event numbers, e.g. 0-4 (before --max-events)")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/_work/tracking/bench", help="work folder")
    ap.add_argument("--doc", type=Path, default=DOC, help="markdown page to update (docs/benchmarks/tracking.md)")
    ap.add_argument("--no-doc", action="store_true", help="print only")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls of each finder (on the first event of the first sample) before timing")
    ap.add_argument("--reuse", action="store_true", help="keep a method's candidates already in --work for the same events (resume a run)")
    ap.add_argument("--no-truth", action="store_true", help="no 'truth' row (the true assignment: score and efficiency 1 by construction)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    from lhcml.tasks.tracking.evaluate import (
        breakdown_rows,
        build_tracking_report,
        evaluate_tracking,
        load_results,
        sample_mu,
    )
    from lhcml.tasks.tracking.finders import FINDERS

    samples = {}
    for item in args.sample:
        name, _, d = item.partition("=")
        if not d:
            ap.error(f"--sample takes NAME=DIR, got {item!r}")
        samples[name] = Path(d)
    methods = args.methods.split(",") if args.methods else list(FINDERS)
    unknown = [m for m in methods if m not in FINDERS]
    if unknown:
        ap.error(f"unknown finder(s) {unknown}; registered: {', '.join(FINDERS)}")
    print(f"finders: {', '.join(methods)}; samples: {', '.join(f'{k}={v}' for k, v in samples.items())}")
    caps = [int(x) for x in args.max_events.split(",")] if args.max_events else [0]
    if len(caps) not in (1, len(samples)):
        ap.error(f"--max-events takes one number or one per sample ({len(samples)}), got {args.max_events!r}")
    max_events = {s: (caps[i] if len(caps) > 1 else caps[0]) or None for i, s in enumerate(samples)}
    done, failed, used = run_finders(samples, methods, max_events, args.work, args.events, not args.no_truth, args.warmup, args.reuse)
    eval_dir = args.work / "eval"
    if eval_dir.is_dir():  # this run's results only (a sample that fails now must not show an old result)
        shutil.rmtree(eval_dir)
    for s, d in samples.items():
        if done[s]:
            try:
                evaluate_tracking(d, done[s], eval_dir, sample=s, events=used[s])
            except Exception as err:  # noqa: BLE001 - reported in the table, the other samples go on
                print(f"[{s}] evaluation failed: {type(err).__name__}: {err}", file=sys.stderr)
                failed[s].update({m: f"evaluation failed: {type(err).__name__}: {err}"[:160] for m in done[s]})
                done[s] = {}
    results = load_results(eval_dir) if any(done.values()) else []
    results = [r for r in results if done.get(r["sample"])]
    report = build_tracking_report(eval_dir) if results else None
    rows = table(results, failed)
    for s in samples:  # samples where no method ran
        if not done[s]:
            rows += [[s, "–", m, "0", f"not run: {why}"] + ["–"] * 7 for m, why in failed[s].items()]
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    load = os.getloadavg()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.perf_counter() - t0,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs (load {load[0]:.1f} at the end), "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, no GPU used",
        "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/tracking.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "samples": {s: {"dir": str(d), "mu": sample_mu(d), "events": (f"{used[s][0]}–{used[s][-1]} ({len(used[s])})" if used[s] else "none")}
                    for s, d in samples.items()},
        "report": str(report) if report else "not written (no method ran)",
        "breakdown": breakdown_rows(results),
    }  # fmt: skip
    print(f"wall time {meta['wall_s']:.0f} s; report {meta['report']}")
    if not args.no_doc:
        print(f"wrote {write_doc(markdown(rows, meta), args.doc)}")


if __name__ == "__main__":
    main()
