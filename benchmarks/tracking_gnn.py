"""GNN track finding (issue 14, ML item 2): train every stage, measure graphs, edges and tracks.

Stages (each skipped when its output exists, so the script resumes; ``--redo`` rebuilds):

1. ``map``: module map from the training samples (``--map-train``), written to WORK/module_map.npz;
2. ``graphs``: module-map graphs (``graphs-mm``) of the GNN training sample (``--train``) and, when
   ``--embedding`` is given, metric-learning radius graphs (``graphs-ml``);
3. ``filter``: edge filter trained by ``lhcml train configs/tracking/edge_filter.yaml`` (overrides:
   data dirs, output dir); ``filtered``: the graphs with the edges the filter scores above
   ``--filter-cut`` (``graphs-mm-filtered``);
4. ``gnn``: interaction network by ``configs/tracking/gnn.yaml`` on the filtered graphs;
5. ``evaluate``: on the held-out samples (``--bench NAME=DIR``): graph edge efficiency (true edges
   of particles with pT > 1 GeV) and purity, the filter's and the interaction network's edge
   precision/recall at score 0.5 (after the filter), and the tracks of the ``gnn-mm`` (and
   ``gnn-ml``) finder scored with :mod:`lhcml.metrics.tracking` (TrackML score, ACTS-style
   efficiency for pT > 0.5 and > 1 GeV, fake and duplicate rates), time per event per stage (one
   thread). Prints the table and writes WORK/results.json.

Usage (one thread, niced)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/tracking_gnn.py \\
        --map-train benchmarks/_work/tracking/train_mu0 --map-train benchmarks/_work/tracking/train_mu50 \\
        --train benchmarks/_work/tracking/train_mu50 --bench mu0=benchmarks/_work/tracking/bench_mu0 \\
        --bench mu50=benchmarks/_work/tracking/bench_mu50 --work benchmarks/_work/tracking/gnn
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class _RelativeBudget:
    """:class:`lhcml.train.budget.TimeBudget` counted from the first epoch this run trains (a resumed
    or fine-tuned run starts at its checkpoint's epoch, not at 0)."""

    def __init__(self, budget_s: float | None) -> None:
        from lhcml.train.budget import TimeBudget

        self.budget = TimeBudget(budget_s)
        self.first: int | None = None

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.first = epoch if self.first is None else self.first
        return self.budget(epoch - self.first, metrics)


def _start_from(init: str, out: Path) -> None:
    """Fine-tuning: copy ``init``'s ``checkpoints/last.ckpt`` into ``out`` so that the run resumes from
    it (weights and optimizer state; the epochs count on from it) on this run's events. Nothing is
    copied when ``out`` already has a checkpoint (the fine-tuning itself is resumed)."""
    from lhcml.atomic import atomic_write_bytes

    last = out / "checkpoints" / "last.ckpt"
    if last.exists():
        return
    src = Path(init) / "checkpoints" / "last.ckpt"
    if not src.is_file():
        raise SystemExit(f"error: {src} not found: --init-* takes a training output folder with checkpoints/last.ckpt")
    last.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(last, src.read_bytes())
    print(f"fine-tuning from {src}", flush=True)


def _train(config: str, train_dir: str, n_train: int, n_val: int, graph: str, out: Path, extra: list[str],
           init: str | None = None, budget_s: float | None = None) -> Path:  # fmt: skip
    from lhcml.data.trackml import list_events
    from lhcml.train.protocol import load_trainable_config
    from lhcml.train.tracking import fit_tracking

    ids = list_events(train_dir)
    train, val = ids[:n_train], ids[n_train : n_train + n_val]
    over = [f"data.train_dir={train_dir}", f"data.val_dir={train_dir}", f"data.train_events={json.dumps(train)}",
            f"data.val_events={json.dumps(val)}", f"data.prepare.graph={graph}", f"output_dir={out}"]  # fmt: skip
    over += extra
    _, cfg = load_trainable_config(config, over)
    if init:
        _start_from(init, out)
    t0 = time.time()
    best = fit_tracking(cfg, resume=(out / "checkpoints" / "last.ckpt").exists(), epoch_hooks=[_RelativeBudget(budget_s)])
    print(f"trained {config} in {time.time() - t0:.0f} s -> {best}", flush=True)
    return best


def _edge_pr(scores: np.ndarray, y: np.ndarray, cut: float = 0.5) -> tuple[float, float]:
    pred = scores > cut
    tp = float((pred & (y > 0)).sum())
    return tp / max(pred.sum(), 1), tp / max((y > 0).sum(), 1)


def evaluate(name: str, bench: str, cfg: Any, max_events: int | None, events: list[int] | None = None) -> dict[str, Any]:
    """Graph, edge and track metrics of one finder config on one held-out sample (its first
    ``max_events`` events, or the listed ``events``)."""
    from lhcml.data.trackml import list_events, read_event
    from lhcml.metrics.tracking import evaluate_event, summarise
    from lhcml.tasks.tracking import gnn_pipeline as P
    from lhcml.tasks.tracking import graph as G

    finder = P.GNNFinder(cfg)
    rows, perf = [], []
    for e in events if events is not None else list_events(bench)[:max_events]:
        ev = read_event(bench, e)
        hits = G.event_hits(ev)
        g0 = finder.graph(ev)
        graph_stats = G.graph_efficiency_purity(hits, g0["edge_index"], min_pt=1.0)
        t0 = time.process_time()
        tracks, g, times = finder.find(ev)
        cpu = time.process_time() - t0
        filt_stats = G.graph_efficiency_purity(hits, g["edge_index"], min_pt=1.0)
        prec, rec = _edge_pr(g["score"], g["y"])
        tid, hid = P.to_candidates(tracks, g["hit_id"])
        perf.append(evaluate_event(e, ev.truth, ev.particles, ev.hits, tid, hid, timings=vars(times)))
        rows.append({"event": e, "hits": len(hits), "graph": graph_stats, "filtered": filt_stats,
                     "gnn_precision": prec, "gnn_recall": rec, "cpu_s": cpu, "times": vars(times)})  # fmt: skip
        print(f"  {name} event {e}: {len(hits)} hits, graph {graph_stats['edges']:.0f} edges eff {graph_stats['efficiency']:.3f} "
              f"pur {graph_stats['purity']:.3f}; filtered {filt_stats['edges']:.0f} eff {filt_stats['efficiency']:.3f}; "
              f"IN P/R {prec:.3f}/{rec:.3f}; {len(tracks)} tracks; {cpu:.1f} s", flush=True)  # fmt: skip
    summ = summarise(perf)
    mean = lambda f: float(np.mean([f(r) for r in rows]))  # noqa: E731
    return {
        "sample": name, "events": len(rows), "hits": mean(lambda r: r["hits"]),
        "graph_edges": mean(lambda r: r["graph"]["edges"]), "graph_efficiency": mean(lambda r: r["graph"]["efficiency"]),
        "graph_purity": mean(lambda r: r["graph"]["purity"]), "filtered_edges": mean(lambda r: r["filtered"]["edges"]),
        "filtered_efficiency": mean(lambda r: r["filtered"]["efficiency"]), "filtered_purity": mean(lambda r: r["filtered"]["purity"]),
        "gnn_precision": mean(lambda r: r["gnn_precision"]), "gnn_recall": mean(lambda r: r["gnn_recall"]),
        "cpu_s_per_event": mean(lambda r: r["cpu_s"]), "stage_s": {k: mean(lambda r, k=k: r["times"][k]) for k in rows[0]["times"]},
        "trackml_score": summ["trackml_score"]["value"], "efficiency": summ["efficiency"]["value"],
        "efficiency_pt>0.5": summ["efficiency_pt>0.5"]["value"], "efficiency_pt>1": summ["efficiency_pt>1"]["value"],
        "fake_rate": summ["fake_rate"]["value"], "duplicate_rate": summ["duplicate_rate"]["value"],
        "n_particles": summ["n_particles"], "n_tracks": summ["n_tracks"],
    }  # fmt: skip


def graph_only(name: str, bench: str, embedding: str, radii: list[float], k: int, max_events: int | None) -> list[dict[str, Any]]:
    """Edge efficiency and purity of the metric-learning radius graph for several radii."""
    from lhcml.data.trackml import list_events, read_event
    from lhcml.tasks.tracking import gnn_pipeline as P
    from lhcml.tasks.tracking import graph as G

    embed = P.embedding_function(P.load_stage(embedding))
    out = []
    for r in radii:
        st = []
        for e in list_events(bench)[:max_events]:
            ev = read_event(bench, e)
            t0 = time.process_time()
            edges = G.radius_graph(embed(ev), r=r, k=k)
            dt = time.process_time() - t0
            st.append({**G.graph_efficiency_purity(G.event_hits(ev), edges, min_pt=1.0), "cpu_s": dt})
        row = {"sample": name, "radius": r, "k": k, "events": len(st), **{c: float(np.mean([x[c] for x in st])) for c in ("edges", "efficiency", "purity", "cpu_s")}}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def map_scan(train_dir: str, bench: str, ns: list[int], max_events: int | None, min_pt: float) -> list[dict[str, Any]]:
    """Module-map edge efficiency/purity on held-out events vs training events, cut windows, triplets."""
    from lhcml.data.trackml import list_events, read_event
    from lhcml.tasks.tracking import graph as G

    train = [read_event(train_dir, e) for e in list_events(train_dir)[: max(ns)]]
    held = [G.event_hits(read_event(bench, e), need_truth=True) for e in list_events(bench)[:max_events]]
    out = []
    for n in ns:
        for level in ("module", "layer"):
            mm = G.ModuleMap.build(train[:n], min_pt=min_pt, cut_level=level)
            for trip in (False, True):
                st, dt = [], 0.0
                for h in held:
                    t0 = time.process_time()
                    c = mm.candidate_edges(h, use_triplets=trip)
                    dt += time.process_time() - t0
                    st.append(G.graph_efficiency_purity(h, c, min_pt=1.0))
                row = {"n_train": n, "cut": level, "triplets": trip, "doublets": len(mm), "s_per_event": dt / len(held),
                       **{c: float(np.mean([x[c] for x in st])) for c in ("edges", "efficiency", "purity")}}  # fmt: skip
                print(json.dumps(row), flush=True)
                out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--map-train", action="append", required=True, help="training samples of the module map")
    ap.add_argument("--map-events", type=int, default=None, help="events per module-map training sample")
    ap.add_argument("--map-min-pt", type=float, default=0.5)
    ap.add_argument("--cut-level", default="layer", choices=["module", "layer"])
    ap.add_argument("--train", required=True, help="training sample of the edge filter and the interaction network")
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-val", type=int, default=5)
    ap.add_argument("--filter-set", action="append", default=[], help="KEY=VALUE override of configs/tracking/edge_filter.yaml")
    ap.add_argument("--gnn-set", action="append", default=[], help="KEY=VALUE override of configs/tracking/gnn.yaml")
    ap.add_argument("--filter-cut", type=float, default=0.05)
    ap.add_argument("--init-filter", default=None, help="fine-tune the edge filter from this training output folder (its last.ckpt; "
                    "trainer.max_epochs counts its epochs too)")
    ap.add_argument("--init-gnn", default=None, help="the same for the interaction network")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of each training (lhcml.train.budget.TimeBudget)")
    ap.add_argument("--events", default=None, help="A,B,...: evaluate these events of each --bench sample instead of the first --max-events")
    ap.add_argument("--embedding", default=None, help="hit-embedding run directory (gnn-ml)")
    ap.add_argument("--radius", type=float, default=0.1)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--ml-graph-only", default=None, help="comma-separated radii: measure only the metric-learning graph (no networks for gnn-ml)")
    ap.add_argument("--bench", action="append", default=[], help="NAME=DIR held-out samples")
    ap.add_argument("--max-events", type=int, default=None)
    ap.add_argument("--min-hits", type=int, default=3, help="building.min_hits of the finder (acorn evaluates tracks with >= 5 hits)")
    ap.add_argument("--work", default="benchmarks/_work/tracking/gnn")
    ap.add_argument("--map-scan", default=None, help="N1,N2,...: only the module-map scan (first --map-train sample, first --bench sample)")
    ap.add_argument("--stages", default="map,graphs,filter,filtered,gnn,evaluate")
    args = ap.parse_args(argv)

    from lhcml.data.trackml import list_events
    from lhcml.tasks.tracking import gnn_pipeline as P

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.map_scan:
        rows = map_scan(args.map_train[0], args.bench[0].partition("=")[2], [int(x) for x in args.map_scan.split(",")],
                        args.max_events, args.map_min_pt)  # fmt: skip
        (work / "map_scan.json").write_text(json.dumps(rows, indent=1))
        return 0
    stages = set(args.stages.split(","))
    mm_path = work / "module_map.npz"
    n_graph = args.n_train + args.n_val
    t_start = time.time()
    if "map" in stages:
        t0 = time.time()
        mm = P.build_module_map(args.map_train, mm_path, events=args.map_events, min_pt=args.map_min_pt, cut_level=args.cut_level)
        print(f"module map: {len(mm.modules)} modules, {len(mm)} doublets, {len(mm.triplets)} triplets, "
              f"{mm.n_events} events, {time.time() - t0:.0f} s", flush=True)  # fmt: skip
    variants = [("mm", {"method": "module_map", "module_map": mm_path})]
    if args.embedding and not args.ml_graph_only:
        variants.append(("ml", {"method": "metric_learning", "embedding": args.embedding, "r": args.radius, "k": args.k}))
    for tag, kw in variants:
        suffix = "" if tag == "mm" else "_ml"
        if "graphs" in stages:
            st = P.write_graphs(args.train, tag, events=n_graph, **kw)
            print(f"graphs-{tag}: {np.mean([s['edges'] for s in st]):.0f} edges/event, efficiency "
                  f"{np.mean([s['efficiency'] for s in st]):.3f}, purity {np.mean([s['purity'] for s in st]):.3f}", flush=True)  # fmt: skip
        if "filter" in stages:
            _train("configs/tracking/edge_filter.yaml", args.train, args.n_train, args.n_val, tag, work / f"edge_filter{suffix}",
                   args.filter_set, args.init_filter, args.budget_s)  # fmt: skip
        if "filtered" in stages:
            filt = work / f"edge_filter{suffix}"
            st = P.write_graphs(args.train, f"{tag}-filtered", events=n_graph, edge_filter=filt, filter_cut=args.filter_cut, **kw)
            print(f"graphs-{tag}-filtered: {np.mean([s['edges'] for s in st]):.0f} edges/event, efficiency "
                  f"{np.mean([s['efficiency'] for s in st]):.3f}, purity {np.mean([s['purity'] for s in st]):.3f}", flush=True)  # fmt: skip
        if "gnn" in stages:
            _train("configs/tracking/gnn.yaml", args.train, args.n_train, args.n_val, f"{tag}-filtered", work / f"interaction_network{suffix}",
                   args.gnn_set, args.init_gnn, args.budget_s)  # fmt: skip
    results = []
    if "evaluate" in stages:
        for spec in args.bench:
            name, _, d = spec.partition("=")
            for tag, kw in variants:
                suffix = "" if tag == "mm" else "_ml"
                cfg = P.GNNFinderConfig(graph=kw["method"], module_map=str(mm_path) if tag == "mm" else None,
                                        embedding=args.embedding if tag == "ml" else None, radius=args.radius, k=args.k,
                                        edge_filter=str(work / f"edge_filter{suffix}"), filter_cut=args.filter_cut,
                                        gnn=str(work / f"interaction_network{suffix}"),
                                        building=P.TrackBuildingConfig(min_hits=args.min_hits))  # fmt: skip
                events = [int(x) for x in args.events.split(",")] if args.events else None
                r = evaluate(f"{name}/gnn-{tag}", d, cfg, args.max_events, events)
                r["method"] = f"gnn-{tag}"
                results.append(r)
        if args.ml_graph_only:
            for spec in args.bench:
                name, _, d = spec.partition("=")
                results.append({"ml_graph": graph_only(name, d, args.embedding, [float(x) for x in args.ml_graph_only.split(",")], args.k, args.max_events)})
        cols = ["sample", "events", "hits", "graph_edges", "graph_efficiency", "graph_purity", "filtered_edges",
                "filtered_efficiency", "filtered_purity", "gnn_precision", "gnn_recall", "trackml_score",
                "efficiency_pt>0.5", "efficiency_pt>1", "fake_rate", "duplicate_rate", "cpu_s_per_event"]  # fmt: skip
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in results:
            if "ml_graph" in r:
                continue
            print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
        (work / "results.json").write_text(json.dumps({"command": " ".join(sys.argv), "results": results,
                                                       "wall_s": time.time() - t_start,
                                                       "train_events": len(list_events(args.train))}, indent=1))  # fmt: skip
    print(f"wall time {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
