"""ACTS baseline (seeding + CKF + greedy ambiguity resolution) on `lhcml tracking simulate` samples.

Per sample (one per <mu>): the TrackML score, ACTS-style efficiency (reconstructable particles:
charged, >= 9 hits, |eta| < 3, pT > 0.5 and > 1 GeV), fake and duplicate rates (matching fraction
0.5; lhcml.metrics.tracking), the rates in bins of pT and eta, and the time per event of each ACTS
stage with one thread (time per event per core). Prints markdown tables; --json keeps the numbers.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/tracking_ckf.py \
        mu0=benchmarks/_work/tracking/sample_mu0 mu50=benchmarks/_work/tracking/sample_mu50 \
        --events 8 --json benchmarks/_work/tracking/ckf_bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lhcml.data.trackml import list_events, read_event
from lhcml.formatting import pm
from lhcml.metrics import tracking as tm
from lhcml.tasks.tracking.acts_reco import run_ckf


def bench_sample(path: Path, n_events: int, config: str | None) -> dict:
    events = list_events(path)[:n_events]
    t0 = time.perf_counter()
    res = run_ckf(path, events, config)
    wall = time.perf_counter() - t0
    perf, nhits = [], []
    for e in events:
        ev = read_event(path, e)
        t, h = res.candidates[e]
        perf.append(tm.evaluate_event(e, ev.truth, ev.particles, ev.hits, t, h))
        nhits.append(len(ev.hits))
    s = tm.summarise(perf)
    stages = (
        res.timings[res.timings["stage"] != "other"]
        .groupby("stage", sort=False)["seconds_per_event"]
        .sum()
    )
    s["stages"] = {str(k): float(v) for k, v in stages.items()}
    s["time_per_event"] = float(stages.sum())
    s["time_per_event_no_read"] = float(stages.drop("read", errors="ignore").sum())
    s["hits_per_event"] = float(np.mean(nhits))
    s["wall_s"] = wall
    s["event_ids"] = events
    return s


def _r(d: dict, scale: float = 100.0) -> str:
    return pm(d["value"] * scale, d["error"] * scale) if np.isfinite(d["value"]) else "-"


def print_tables(results: dict[str, dict]) -> None:
    print("| sample | events | hits/event | TrackML score | eff. (pT > 0.5 GeV) [%] | eff. (pT > 1 GeV) [%] | "
          "fake rate [%] | duplicate rate [%] | tracks/event | s/event (all) | s/event (no CSV read) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, s in results.items():
        print(f"| {name} | {s['events']} | {s['hits_per_event']:.0f} | {_r(s['trackml_score'], 1.0)} | "
              f"{_r(s['efficiency_pt>0.5'])} | {_r(s['efficiency_pt>1'])} | {_r(s['fake_rate'])} | "
              f"{_r(s['duplicate_rate'])} | {s['n_tracks'] / s['events']:.0f} | {s['time_per_event']:.2f} | "
              f"{s['time_per_event_no_read']:.2f} |")  # fmt: skip
    stages = list(dict.fromkeys(k for s in results.values() for k in s["stages"]))
    print("\nTime per event per core by stage [s]:\n")
    print("| sample | " + " | ".join(stages) + " |")
    print("|---|" + "---|" * len(stages))
    for name, s in results.items():
        print(
            f"| {name} | "
            + " | ".join(f"{s['stages'].get(k, float('nan')):.3f}" for k in stages)
            + " |"
        )
    for var, label in (("vs_pt", "pT [GeV]"), ("vs_eta", "eta")):
        print(f"\nEfficiency / fake rate / duplicate rate [%] vs {label} (efficiency vs the particle's, rates vs "
              "the track's hit estimate):\n")  # fmt: skip
        for name, s in results.items():
            b = s[var]
            edges = b["efficiency"]["edges"]
            print(
                f"{name}:\n\n| {label} | "
                + " | ".join(f"{a:g}-{c:g}" for a, c in zip(edges[:-1], edges[1:], strict=True))
                + " |"
            )
            print("|---|" + "---|" * (len(edges) - 1))
            for key in ("efficiency", "fake_rate", "duplicate_rate"):
                vals = b[key]
                cells = [pm(100 * v, 100 * e) if n > 0 and np.isfinite(v) else "-"
                         for v, e, n in zip(vals["value"], vals["error"], vals["n"], strict=True)]  # fmt: skip
                print(f"| {key} | " + " | ".join(cells) + " |")
            print()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "samples", nargs="+", help="NAME=DIR of `lhcml tracking simulate` outputs, e.g. mu0=DIR"
    )
    ap.add_argument("--events", type=int, default=10, help="events per sample (the first ones)")
    ap.add_argument(
        "--config",
        default=None,
        help="ACTS reconstruction config (default configs/tracking/ckf.yaml)",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args()
    results = {}
    for spec in args.samples:
        name, _, path = spec.partition("=")
        results[name] = bench_sample(Path(path), args.events, args.config)
        print(
            f"{name}: {results[name]['events']} events in {results[name]['wall_s']:.0f} s",
            flush=True,
        )
    print_tables(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
