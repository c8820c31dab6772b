"""Track finders back to back on the same held-out events: paired score, efficiency, fakes and CPU (issue 14).

CPU time on a shared machine drifts by tens of per cent within minutes, so finders are compared per event:
every finder is one full call on the event, one right after the other (the order rotated from event to
event), its CPU time the process CPU time of the call (``time.process_time``, one thread); each finder runs
once untimed on the first event first (geometry, field and classifiers are set up once per process). Each
event is evaluated at once (``lhcml.tasks.tracking.evaluate.evaluate_sample``: TrackML score, ACTS-style
matching) and its numbers appended to the JSON output, so an interrupted run resumes at the next event.

A finder is ``NAME=FINDER``: a registered finder (``ckf``, ``ml-seeds+ckf-4pass-budget``, ...) or an
ml-seeds+ckf config (YAML path). Samples are ``DIR:EVENTS`` (``0-14`` or ``0,1,2``; default all). The
first finder is the reference of the CPU ratios and of the paired score differences.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/tracking_paired.py held.json \\
        "ckf=ckf,p34=configs/tracking/ml_seeds_4pass_budget_p34.yaml" \\
        benchmarks/_work/tracking/bench_mu200:0-4 benchmarks/_work/tracking/bench_mu200_c:0-14

Prints one table (pooled over all events: score mean +- standard error, efficiencies found / reconstructable,
fakes k / n with sqrt(k) / n, CPU per event, CPU / reference per event mean +- standard error and range).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_write_text


def parse_finders(spec: str) -> list[tuple[str, Any, Any]]:
    """``[(name, finder, config)]`` of ``"a=ckf,b=configs/x.yaml"``."""
    from lhcml.errors import ConfigError
    from lhcml.tasks.tracking.finders import get_finder

    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, eq, what = item.partition("=")
        if not eq or not name or not what:
            raise ConfigError(f"finder {item!r}: give NAME=FINDER (a registered finder or an ml-seeds+ckf YAML)")
        if what.endswith((".yaml", ".yml")):
            if not Path(what).is_file():
                raise ConfigError(f"finder {name}: no config {what}")
            out.append((name, get_finder("ml-seeds+ckf"), what))
        else:
            out.append((name, get_finder(what), None))
    if len({n for n, *_ in out}) != len(out):
        raise ConfigError("finder names must differ")
    return out


def parse_samples(items: list[str]) -> list[tuple[Path, list[int]]]:
    from lhcml.tasks.tracking.finders import parse_sample_specs

    return parse_sample_specs(items)


def event_numbers(perf: Any, first_ids: list[int] | None = None) -> dict[str, Any]:
    """Counts of one evaluated event (``metrics.tracking.EventPerformance``) that pool over events; with the
    finder's ``pass_first_track_id`` also the counted tracks and fakes per pass and each fake's pass, hits,
    purity (hits of its majority particle / hits), and hit-estimated pT and eta."""
    p = perf.particles[perf.particles["reconstructable"]]
    t = perf.tracks[perf.tracks["counted"]]
    out = {"score": float(perf.score), "tracks": int(len(t)), "fakes": int(t["fake"].sum()),
           "duplicates": int(t["duplicate"].sum())}  # fmt: skip
    if first_ids:
        k = np.searchsorted(np.asarray(first_ids), t["track_id"].to_numpy(), side="right")  # 1-based pass
        out["tracks_by_pass"] = np.bincount(k, minlength=len(first_ids) + 1)[1:].tolist()
        out["fakes_by_pass"] = np.bincount(k[t["fake"].to_numpy(bool)], minlength=len(first_ids) + 1)[1:].tolist()
        f = t[t["fake"].to_numpy(bool)]
        out["fake_tracks"] = [[int(a), int(b), round(float(c), 3), round(float(d), 3), round(float(e), 3)] for a, b, c, d, e in
                              zip(k[t["fake"].to_numpy(bool)], f["nhits"], f["purity"], f["pt"], f["eta"], strict=True)]  # fmt: skip
    for thr in (0.5, 1.0):
        s = p[p["pt"] > thr]
        out[f"found_pt>{thr:g}"], out[f"n_pt>{thr:g}"] = int(s["found"].sum()), int(len(s))
    return out


def run(out: Path, finders: list[tuple[str, Any, Any]], samples: list[tuple[Path, list[int]]]) -> dict[str, Any]:
    from lhcml.tasks.tracking.evaluate import evaluate_sample

    bench = json.loads(out.read_text()) if out.is_file() else {"finders": [n for n, *_ in finders], "events": []}
    if bench["finders"] != [n for n, *_ in finders]:
        raise SystemExit(f"{out} holds a run of other finders ({bench['finders']}): use another output file")
    done = {(e["sample"], e["event"]) for e in bench["events"]}
    warm = False
    k = len(bench["events"])
    for d, ids in samples:
        for e in ids:
            if (str(d), e) in done:
                continue
            if not warm:  # one-off set-up (geometry, field, classifiers) is not per event
                for _name, f, cfg in finders:
                    f(d, e, cfg)
                warm = True
            order = [finders[(i + k) % len(finders)] for i in range(len(finders))]  # rotated per event
            cands, cpu, stages, first = {}, {}, {}, {}
            for name, f, cfg in order:
                c0 = time.process_time()
                res = f(d, e, cfg)
                cpu[name] = time.process_time() - c0
                get = res.get if isinstance(res, dict) else lambda key, default=None, r=res: getattr(r, key, default)
                cands[name] = {e: (np.asarray(get("track_id")), np.asarray(get("hit_id")), {})}
                stages[name] = {str(s): float(v) for s, v in (get("timings") or {}).items()}
                first[name] = get("pass_first_track_id")
            _, per_event = evaluate_sample(d, cands)
            row = {"sample": str(d), "event": int(e), "order": [n for n, *_ in order],
                   "time": time.strftime("%H:%M:%S", time.gmtime()), "methods": {}}  # fmt: skip
            for name, *_ in finders:
                row["methods"][name] = {**event_numbers(per_event[name][0], first[name]), "cpu": cpu[name],
                                        "stages": stages[name]}  # fmt: skip
            bench["events"].append(row)
            k += 1
            atomic_write_text(out, json.dumps(bench, indent=1))
            print(f"{d.name} {e}: " + ", ".join(f"{n} {row['methods'][n]['score']:.4f} {cpu[n]:.1f} s" for n, *_ in finders), flush=True)
    return bench


def table(bench: dict[str, Any], samples: list[tuple[Path, list[int]]] | None = None) -> str:
    """The pooled table of the events of ``samples`` (default: all in the file)."""
    keep = None if samples is None else {(str(d), e) for d, ids in samples for e in ids}
    rows = [r for r in bench["events"] if keep is None or (r["sample"], r["event"]) in keep]
    names = bench["finders"]
    ref = names[0]
    lines = [f"| finder | events | TrackML score | paired vs {ref} | eff. pT > 1 GeV | eff. pT > 0.5 GeV | fakes (rate) "
             f"| duplicates | CPU s/event | CPU / {ref}'s per event |", "|---" * 10 + "|"]  # fmt: skip
    for n in names:
        m = [r["methods"][n] for r in rows]
        s = np.array([x["score"] for x in m])
        d = s - np.array([r["methods"][ref]["score"] for r in rows])
        ratio = np.array([x["cpu"] / r["methods"][ref]["cpu"] for x, r in zip(m, rows, strict=True)])
        sem = (lambda a: a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan"))  # noqa: E731
        tot = {k: sum(x[k] for x in m) for k in ("tracks", "fakes", "duplicates", "found_pt>1", "n_pt>1", "found_pt>0.5", "n_pt>0.5")}
        e1, e05 = tot["found_pt>1"] / tot["n_pt>1"], tot["found_pt>0.5"] / tot["n_pt>0.5"]
        lines.append(
            f"| {n} | {len(m)} | {s.mean():.4f} ± {sem(s):.4f} | {d.mean():+.4f} ± {sem(d):.4f} "
            f"| {e1:.4f} ± {np.sqrt(e1 * (1 - e1) / tot['n_pt>1']):.4f} | {e05:.4f} "
            f"| {tot['fakes']} / {tot['tracks']} ({100 * tot['fakes'] / tot['tracks']:.3f} ± {100 * np.sqrt(tot['fakes']) / tot['tracks']:.3f} %) "
            f"| {tot['duplicates']} / {tot['tracks']} | {np.mean([x['cpu'] for x in m]):.2f} "
            f"| {ratio.mean():.3f} ± {sem(ratio):.3f} ({ratio.min():.2f}–{ratio.max():.2f}) |"
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lhcml.errors import LhcmlError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))  # fmt: skip
    ap.add_argument("out", type=Path, help="JSON of the per-event numbers (resumed if it exists)")
    ap.add_argument("finders", help='NAME=FINDER,... e.g. "ckf=ckf,p34=configs/tracking/ml_seeds_4pass_budget_p34.yaml"')
    ap.add_argument("samples", nargs="+", help="DIR:EVENTS of held-out events, e.g. benchmarks/_work/tracking/bench_mu200:0-4")
    ap.add_argument("--table-only", action="store_true", help="print the table of the JSON, run nothing")
    args = ap.parse_args(argv)
    try:
        finders = parse_finders(args.finders)
        samples = parse_samples(args.samples)
    except (LhcmlError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    bench = json.loads(args.out.read_text()) if args.table_only else run(args.out, finders, samples)
    print(table(bench, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
