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
from lhcml.tasks.tracking.acts_reco import fit_candidates, run_ckf, stage_seconds


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
    s["stages"] = stage_seconds(res.timings)
    s["time_per_event"] = float(sum(s["stages"].values()))
    s["time_per_event_no_read"] = float(sum(v for k, v in s["stages"].items() if k != "read"))
    s["hits_per_event"] = float(np.mean(nhits))
    s["wall_s"] = wall
    s["event_ids"] = events
    return s


def bench_truth_fit(path: Path, n_events: int) -> dict:
    """ACTS Kalman fit of the truth proto-tracks (primary charged particles, pT > 1 GeV, >= 7 hits):
    relative pT residual (median, 68 % quantile of |.|), q/p pull width and the fitted fraction."""
    rel, pull, n_in, n_fit, secs = [], [], 0, 0, 0.0
    for e in list_events(path)[:n_events]:
        ev = read_event(path, e)
        p = tm.particle_table(ev.truth, ev.particles)
        r0 = np.hypot(ev.particles["vx"], ev.particles["vy"]).to_numpy()
        good = p[(p["pt"] > 1.0) & (p["nhits"] >= 7) & (r0 < 1.0) & (p["q"] != 0)].set_index(
            "particle_id"
        )
        t = ev.truth[ev.truth["particle_id"].isin(good.index)]
        t0 = time.perf_counter()
        f = fit_candidates(path, e, (t["particle_id"].to_numpy(), t["hit_id"].to_numpy()))
        secs += time.perf_counter() - t0
        true = good.loc[f.track_id]
        pz = ev.particles.set_index("particle_id").loc[f.track_id, "pz"].to_numpy()
        qop = np.sign(true["q"].to_numpy()) / np.hypot(true["pt"].to_numpy(), pz)
        rel.append(f.pt / true["pt"].to_numpy() - 1)
        pull.append((f.params[:, 4] - qop) / np.sqrt(f.cov[:, 4, 4]))
        n_in += len(good)
        n_fit += len(f)
    r, pu = np.concatenate(rel), np.concatenate(pull)
    return {"particles": n_in, "fitted": n_fit, "median_rel_pt": float(np.median(r)),
            "q68_abs_rel_pt": float(np.quantile(np.abs(r), 0.68)), "pull_q68": float(np.quantile(np.abs(pu), 0.68)),
            "pull_within_3": float(np.mean(np.abs(pu) < 3)), "fit_seconds": secs}  # fmt: skip


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
    ap.add_argument(
        "--fit-truth",
        action="store_true",
        help="also Kalman-fit the truth proto-tracks of the first sample",
    )
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
    if args.fit_truth:
        name, _, path = args.samples[0].partition("=")
        f = bench_truth_fit(Path(path), args.events)
        results[name]["truth_fit"] = f
        print(f"\nKalman fit of truth proto-tracks ({name}, pT > 1 GeV, >= 7 hits): {f['fitted']} of {f['particles']} "
              f"fitted; pT/pT_true - 1: median {100 * f['median_rel_pt']:.2f} %, 68 % of |.| below "
              f"{100 * f['q68_abs_rel_pt']:.2f} %; q/p pull: 68 % of |pull| below {f['pull_q68']:.2f} (Gaussian: 0.99), "
              f"{100 * f['pull_within_3']:.1f} % within 3; {f['fit_seconds']:.1f} s")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
