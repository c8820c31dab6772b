"""Bucketing (Amrouche et al.) on held-out events: bucket quality and the tracks built inside buckets (issue 14).

For every sample (``--sample NAME=DIR``: an ``lhcml tracking simulate`` output of held-out events)
and every space (``geometric``: hit direction, cosine distance; ``embedding``: the learned
embedding of ``--embedding NAME=RUN`` for that sample, or ``--embedding RUN`` for all), per event:

* the buckets (:func:`lhcml.tasks.tracking.bucketing.event_buckets`) and their quality
  (:func:`~lhcml.tasks.tracking.bucketing.bucket_quality`: efficiency with all / a majority of a
  particle's hits in one bucket, purity, bucket size) for the reconstructable particles
  (:func:`lhcml.metrics.tracking.reconstructable`: pT > 0.5 GeV, |η| < 3, ≥ 9 hits) and those with
  pT > 1 GeV;
* the tracks built inside the buckets, scored like every finder (:func:`lhcml.metrics.tracking.evaluate_event`):
  TrackML score, efficiency, fake and duplicate rates;
* CPU time per stage (``time.process_time``, one thread).

Prints one table (markdown) and writes the numbers to ``--out`` (JSON).

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/tracking_bucketing.py \\
        --sample mu0=benchmarks/_work/tracking/sample_mu0 --embedding mu0=benchmarks/_work/tracking/14d/emb_mu0 \\
        --max-events 4 --out benchmarks/_work/tracking/14d/bucketing.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_write_text
from lhcml.data.trackml import list_events, read_event
from lhcml.formatting import json_safe, pm
from lhcml.metrics.tracking import evaluate_event, particle_table, reconstructable, summarise
from lhcml.tasks.tracking.bucketing import bucket_quality, find_tracks, load_bucketing_config
from lhcml.tasks.tracking.finders import parse_events
from lhcml.train.tracking import hit_particle_ids


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        name, sep, value = it.partition("=")
        if not sep:
            if what == "embedding":
                out["*"] = it
                continue
            raise SystemExit(f"--{what} {it!r}: expected NAME=PATH")
        out[name] = value
    return out


def run_sample(directory: str, space: str, embedding: str | None, events: list[int], overrides: dict) -> dict[str, Any]:
    """Bucket quality and track performance of one sample in one space (see the module docstring)."""
    cfg = load_bucketing_config(None).model_copy(update={"space": space, "embedding": embedding, **overrides})
    cfg = load_bucketing_config(cfg.model_dump())  # validated
    quality: dict[str, list[float]] = {}
    perfs, n_hits = [], []
    wall = time.perf_counter()
    for e in events:
        ev = read_event(directory, e)
        out = find_tracks(ev, cfg)
        pid = hit_particle_ids(ev)
        ptab = particle_table(ev.truth, ev.particles)
        for label, min_pt in (("pt>0.5", 0.5), ("pt>1", 1.0)):
            sel = ptab["particle_id"][reconstructable(ptab, min_pt=min_pt)].to_numpy()
            q = bucket_quality(out["buckets"], pid, sel)
            for k in ("efficiency_all", "efficiency_majority", "n_particles"):
                quality.setdefault(f"{k}_{label}", []).append(float(getattr(q, k)))
            if label == "pt>0.5":
                quality.setdefault("purity", []).append(q.purity)
                quality.setdefault("bucket_size", []).append(q.bucket_size)
        n_hits.append(len(ev.hits))
        perfs.append(evaluate_event(e, ev.truth, ev.particles, ev.hits, out["track_id"], out["hit_id"],
                                    timings=out["timings"]))  # fmt: skip
    summary = summarise(perfs)
    return {
        "space": space, "embedding": embedding, "events": len(perfs), "hits_per_event": float(np.mean(n_hits)),
        "quality": {k: {"mean": float(np.nanmean(v)), "error": float(np.nanstd(v, ddof=1) / np.sqrt(len(v)))
                        if len(v) > 1 else float("nan")} for k, v in quality.items()},
        "tracks": {k: summary[k] for k in ("trackml_score", "efficiency", "efficiency_pt>1", "fake_rate",
                                          "duplicate_rate", "n_particles", "n_tracks", "timing")},
        "wall_s": time.perf_counter() - wall,
        "config": cfg.model_dump(mode="json"),
    }  # fmt: skip


def run_ckf(directory: str, events: list[int]) -> dict[str, Any]:
    """The ``bucketing+ckf`` finder (bucketing tracks as ACTS CKF seeds) on the events: track summary."""
    from lhcml.tasks.tracking.bucketing import bucketing_ckf

    perfs = []
    for e in events:
        t0 = time.process_time()
        out = bucketing_ckf(directory, e, None)
        timings = {**out["timings"], "total": time.process_time() - t0}
        ev = read_event(directory, e)
        perfs.append(evaluate_event(e, ev.truth, ev.particles, ev.hits, out["track_id"], out["hit_id"], timings=timings))
    s = summarise(perfs)
    return {k: s[k] for k in ("events", "trackml_score", "efficiency", "efficiency_pt>1", "fake_rate", "duplicate_rate",
                              "n_tracks", "timing")}  # fmt: skip


def _row(name: str, r: dict[str, Any]) -> str:
    q, t = r["quality"], r["tracks"]

    def rate(d: dict) -> str:
        return pm(100 * d["value"], 100 * d["error"]) if d.get("n") else "–"

    def mean(k: str, scale: float = 100.0) -> str:
        return pm(scale * q[k]["mean"], scale * q[k]["error"])

    total = t["timing"].get("total", {}).get("mean", float("nan"))
    return (
        f"| {name} | {r['space']} | {r['events']} | {r['hits_per_event']:.0f} | {int(q['bucket_size']['mean'])} | "
        f"{mean('efficiency_all_pt>1')} | {mean('efficiency_majority_pt>1')} | {mean('efficiency_majority_pt>0.5')} | "
        f"{mean('purity')} | {rate(t['efficiency_pt>1'])} | {rate(t['efficiency'])} | {rate(t['fake_rate'])} | "
        f"{rate(t['duplicate_rate'])} | {pm(t['trackml_score']['value'], t['trackml_score']['error'])} | {total:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", action="append", required=True, help="NAME=DIR of held-out events")
    ap.add_argument("--embedding", action="append", default=[], help="NAME=RUN (or RUN for all samples): hit_embedding run")
    ap.add_argument("--max-events", type=int, default=4)
    ap.add_argument("--events", action="append", default=[], help="NAME=SPEC events of a sample (e.g. mu50=6-7); default: the first --max-events")
    ap.add_argument("--set", action="append", default=[], help="bucketing config override KEY=VALUE (YAML value)")
    ap.add_argument("--no-geometric", action="store_true", help="only the embedding space")
    ap.add_argument("--ckf", action="store_true", help="also run the bucketing+ckf finder (geometric buckets)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import yaml

    samples = _pairs(args.sample, "sample")
    embeddings = _pairs(args.embedding, "embedding")
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    results: dict[str, list[dict[str, Any]]] = {}
    ckf_results: dict[str, Any] = {}
    t0 = time.perf_counter()
    specs = _pairs(args.events, "events")
    for name, d in samples.items():
        ids = parse_events(specs[name], list_events(d)) if name in specs else list_events(d)[: args.max_events]
        results[name] = [] if args.no_geometric else [run_sample(d, "geometric", None, ids, overrides)]
        emb = embeddings.get(name, embeddings.get("*"))
        if emb:
            results[name].append(run_sample(d, "embedding", emb, ids, overrides))
        for r in results[name]:
            print(f"{name} {r['space']}: {r['events']} events, {r['wall_s']:.0f} s", file=sys.stderr)
        if args.ckf:
            c = run_ckf(d, ids)
            ckf_results[name] = c
            print(f"{name} bucketing+ckf: efficiency {c['efficiency']['value']:.3f} (pT>1 "
                  f"{c['efficiency_pt>1']['value']:.3f}), fakes {c['fake_rate']['value']:.3f}, duplicates "
                  f"{c['duplicate_rate']['value']:.3f}, {c['n_tracks']} tracks, score {c['trackml_score']['value']:.3f}, "
                  f"CPU {c['timing']['total']['mean']:.2f} s/event")  # fmt: skip
    head = ("| sample | space | events | hits/event | bucket size | bucket eff. all hits, pT>1 [%] | "
            "bucket eff. majority, pT>1 [%] | majority, pT>0.5 [%] | purity [%] | track eff. pT>1 [%] | "
            "track eff. pT>0.5 [%] | fakes [%] | duplicates [%] | TrackML score | CPU s/event |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    lines += [_row(n, r) for n, rs in results.items() for r in rs]
    table = "\n".join(lines)
    print(table)
    doc = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
           "wall_s": time.perf_counter() - t0, "results": results, "ckf": ckf_results, "table": table}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(json_safe(doc), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
