"""Classifier-refined sampling (SIR) of a fast-calo generator: classifier AUC and time per shower, scoring after
the correction chain (every candidate corrected, ``lhcml fastcalo refine``) against scoring before it (the raw
candidates scored by a distilled classifier, the chain on the kept shower only, ``lhcml fastcalo refine-distill``).

1. ``--reference`` (one or more detailed validation files, read as one sample) fixes the conditions; the generator
   draws ``max(k)`` candidates per shower there (noise seed ``--seed``, candidate ``j`` at ``seed + 7919 j``: candidate
   0 is the plain generator's sample), every candidate goes through the chain ``--after``, the teacher scores the
   corrected candidates and the student the raw ones, and one uniform per shower (seed ``[seed, 3]``) makes every
   choice (so all variants are paired: :func:`lhcml.models.fastcalo.refine.sir_choice`, as ``sir_select``);
2. each variant (the chain alone, teacher k, student k) against the reference with the CaloChallenge classifier
   test (:func:`lhcml.tasks.fastcalo.evaluate.classifier_test`, low and high level, ``--runs`` runs, ``--epochs``);
   the student's rows also give how often its choice is the teacher's (plain SIR, same k) on the same candidates and
   uniform;
   ``--cascade K:M`` adds a two-stage variant measured in memory only (not exported, not timed): the student's SIR
   drawn ``M`` times among ``K`` raw candidates (independent uniforms, seeds ``[seed, 10 + j]``), the chain and the
   teacher on the ``M`` draws, one kept by the residual weights teacher / student (nested importance resampling:
   it tends to the teacher's SIR as ``K`` and ``M`` grow, at the cost of ``M`` chains instead of one);
   ``--weight-power B ...`` repeats every teacher and student row with the weights to the power ``B``
   (``w_i^B / sum_j w_j^B``: sharper choices at the same k and cost; 1, the default, is plain SIR);
3. each variant exported as one ONNX sampling graph and timed at 65 GeV, |eta| 0.225, batch 10^4, one intra- and
   inter-op thread, the graphs interleaved over ``--rounds`` rounds, the median per graph.

Prints one table and writes ``--json``. Usage (the twenty-ninth and thirtieth versions of
docs/benchmarks/fastcalo.md)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/fastcalo_refine.py M2.ckpt --after CHAIN.qmap.npz \\
        --teacher R.pt --student RD.pt --reference val1.h5 val31.h5 val32.h5 --k-teacher 2 3 --k-student 3 4 5 \\
        --work DIR --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _time_graphs(paths: dict[str, Path], rounds: int, batch: int = 10000) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sessions = {n: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for n, p in paths.items()}
    rng = np.random.default_rng(11)
    feeds = {}
    for name, s in sessions.items():
        feed = {}
        for i in s.get_inputs():
            if i.name == "incident_energy":
                feed[i.name] = np.full((batch, 1), 65.0, np.float32)
            elif i.name == "eta":
                feed[i.name] = np.full((batch, 1), 0.225, np.float32)
            elif i.name == "phi":
                feed[i.name] = rng.uniform(-np.pi, np.pi, (batch, 1)).astype(np.float32)
            else:
                feed[i.name] = rng.standard_normal((batch, int(i.shape[1]))).astype(np.float32)
        feeds[name] = feed
        s.run(None, {k: v[:1000] for k, v in feed.items()})  # warm-up
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append((time.perf_counter() - t0) / batch * 1e3)
    return {n: float(np.median(v)) for n, v in times.items()}


def _label(row: dict) -> str:
    if "m" in row:
        return f"cascade (M = {row['m']})"
    b = row.get("power", 1.0)
    return row["variant"] if b == 1.0 else f"{row['variant']} (w^{b:g})"


def _name(row: dict) -> str:
    b = row.get("power", 1.0)
    return f"{row['variant']}_k{row['k']}" + ("" if b == 1.0 else f"_w{b:g}")


def _choice(logits: np.ndarray, u: np.ndarray, power: float = 1.0) -> np.ndarray:
    """The kept candidate per shower (:func:`lhcml.models.fastcalo.refine.sir_choice`, float32 as ``sir_select``)."""
    import torch

    from lhcml.models.fastcalo.refine import sir_choice

    lg, uu = (torch.as_tensor(np.asarray(a, np.float32)) for a in (logits, u))
    return sir_choice(lg, uu, power=power).numpy()


def _cascade(ls: np.ndarray, lt: np.ndarray, m: int, u: np.ndarray, seed: int) -> np.ndarray:
    """The two-stage choice (module docstring, ``--cascade``): ``m`` student-SIR draws among the candidates, then one
    of the draws kept with probability proportional to ``exp(teacher - student logit)``. Returns the kept index."""
    n = ls.shape[1]
    cols = np.arange(n)
    draws = np.stack([_choice(ls, np.random.default_rng([seed, 10 + j]).random(n)) for j in range(m)])
    return draws[_choice(lt[draws, cols] - ls[draws, cols], u), cols]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="the generator (its sampler checkpoint)")
    ap.add_argument("--after", type=Path, required=True, help="the correction chain (.qmap.npz)")
    ap.add_argument("--teacher", type=Path, required=True, help="corrected-stage refinement classifier (refine)")
    ap.add_argument("--student", type=Path, help="raw-stage refinement classifier (refine-distill)")
    ap.add_argument("--reference", type=Path, nargs="+", required=True, help="detailed validation file(s)")
    ap.add_argument("--k-teacher", type=int, nargs="*", default=[2, 3], help="candidates, scoring after the chain")
    ap.add_argument("--k-student", type=int, nargs="*", default=[3, 4, 5], help="candidates, scoring before it")
    ap.add_argument("--cascade", nargs="*", default=[], metavar="K:M",
                    help="student SIR drawn M times among K raw candidates, teacher on the draws (AUC only)")
    ap.add_argument("--weight-power", type=float, nargs="+", default=[1.0], metavar="B",
                    help="the teacher and student rows with the weights to each power B (1: plain SIR)")
    ap.add_argument("--runs", type=int, default=3, help="classifier runs per variant and level")
    ap.add_argument("--epochs", type=int, default=20, help="classifier epochs (the challenge: 50)")
    ap.add_argument("--seed", type=int, default=7, help="generation seed (also the classifier's)")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds")
    ap.add_argument("--max-showers", type=int, default=None, help="use at most this many reference showers")
    ap.add_argument("--skip-chain", action="store_true", help="no row for the chain alone (k = 1)")
    ap.add_argument("--no-auc", action="store_true", help="timing only")
    ap.add_argument("--no-timing", action="store_true", help="AUC only")
    ap.add_argument("--work", type=Path, required=True, help="folder for the exported graphs")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    cascades = []
    for spec in args.cascade:
        try:
            kc, mc = (int(x) for x in spec.split(":"))
        except ValueError:
            ap.error(f"--cascade takes K:M (candidates:draws), got {spec!r}")
        if args.student is None or kc < 2 or mc < 1:
            ap.error(f"--cascade {spec}: needs --student, K >= 2 and M >= 1")
        cascades.append((kc, mc))
    from lhcml.errors import ConfigError
    from lhcml.models.fastcalo.refine import check_power

    try:
        powers = sorted({check_power(b) for b in args.weight_power})
    except ConfigError:
        ap.error(f"--weight-power takes numbers > 0, got {args.weight_power}")
    if cascades and args.no_auc:
        ap.error("--cascade is measured for the AUC only (it is not exported or timed): drop --no-auc")

    from lhcml.data.calochallenge import concat_samples, parse_binning, read_showers
    from lhcml.models.fastcalo.quantile_map import QuantileCorrection
    from lhcml.models.fastcalo.refine import load_refinement
    from lhcml.tasks.fastcalo.evaluate import classifier_test
    from lhcml.tasks.fastcalo.refine import (
        candidate_samples,
        corrected_showers,
        export_refined,
        refinement_logits,
    )
    from lhcml.train.fastcalo import load_generator

    model, meta = load_generator(args.checkpoint)
    binning = parse_binning(meta["binning_xml"], source=str(args.checkpoint))
    corr = QuantileCorrection.load(args.after)
    teacher, _ = load_refinement(args.teacher)
    student = load_refinement(args.student)[0] if args.student else None
    kt = sorted(set(args.k_teacher))
    ks = sorted(set(args.k_student)) if student is not None else []
    rows: list[dict] = [{"variant": "chain", "k": 1}] * (not args.skip_chain) + [
        {"variant": "teacher", "k": k, "power": b} for k in kt for b in powers] + [
        {"variant": "student", "k": k, "power": b} for k in ks for b in powers] + [
        {"variant": "cascade", "k": kc, "m": mc} for kc, mc in cascades]
    if not args.no_auc:
        from lhcml.data.calochallenge import CaloSample

        ref = concat_samples([read_showers(p, binning) for p in args.reference])
        if args.max_showers:
            ref = CaloSample(energies=ref.energies[: args.max_showers], showers=ref.showers[: args.max_showers],
                             binning=ref.binning, eta=None if ref.eta is None else ref.eta[: args.max_showers],
                             phi=None if ref.phi is None else ref.phi[: args.max_showers])  # fmt: skip
        kmax = max([1, *kt, *ks, *(kc for kc, _ in cascades)])
        t0 = time.time()
        raw = candidate_samples(model, ref, args.seed, kmax)
        cor = [CaloSample(energies=r.energies, showers=corrected_showers(corr, r), binning=r.binning, eta=r.eta,
                          phi=r.phi) for r in raw]  # fmt: skip
        lt = np.stack([refinement_logits(teacher, model, c) for c in cor])  # all: the students' agreement
        ls = np.stack([refinement_logits(student, model, r) for r in raw]) if student is not None else None
        u = np.random.default_rng([args.seed, 3]).random(len(ref))
        print(f"{len(ref)} reference showers; {kmax} candidates generated, corrected and scored in "
              f"{time.time() - t0:.0f} s", flush=True)
        stack, cols, c0 = np.stack([c.showers for c in cor]), np.arange(len(ref)), cor[0]
        del cor  # the stack holds the corrected candidates from here on
        plain_teacher: dict[int, np.ndarray] = {}  # the teacher's plain SIR choice per k (the agreement's reference)
        for row in rows:
            k = row["k"]
            if row["variant"] == "chain":
                idx = np.zeros(len(ref), np.int64)
            elif row["variant"] == "teacher":
                idx = _choice(lt[:k], u, row["power"])
            elif row["variant"] == "student":
                idx = _choice(ls[:k], u, row["power"])
            else:
                idx = _cascade(ls[:k], lt[:k], row["m"], u, args.seed)
            if row["variant"] in ("student", "cascade"):
                if k not in plain_teacher:
                    plain_teacher[k] = _choice(lt[:k], u)
                row["agreement"] = float(np.mean(idx == plain_teacher[k]))
            gen = CaloSample(energies=c0.energies, showers=stack[idx, cols], binning=c0.binning, eta=c0.eta, phi=c0.phi)
            for level in ("low", "high"):
                res = classifier_test(ref, gen, level, n_runs=args.runs, seed=args.seed, epochs=args.epochs)
                row[f"auc_{level}"] = res["auc"]
                row[f"auc_{level}_runs"] = [r["auc"] for r in res["runs"]]
            row["n_per_class"] = int(len(ref))
            print(f"  {_label(row)} k={k}: AUC {row['auc_low']['mean']:.3f} / {row['auc_high']['mean']:.3f}"
                  + (f", choice = teacher's {row['agreement']:.3f}" if "agreement" in row else ""), flush=True)
    if not args.no_timing:
        from lhcml.export.fastcalo import export_checkpoint

        args.work.mkdir(parents=True, exist_ok=True)
        paths = {}
        for row in rows:
            if row["variant"] == "cascade":
                continue
            name = _name(row)
            out = args.work / f"{name}.onnx"
            if not out.exists():
                if row["variant"] == "chain":
                    export_checkpoint(args.checkpoint, out, timing=False, correction=corr)
                else:
                    clf = args.teacher if row["variant"] == "teacher" else args.student
                    export_refined(args.checkpoint, clf, out, after=args.after, candidates=row["k"], power=row["power"])
            paths[name] = out
        ms = _time_graphs(paths, args.rounds)
        for row in rows:
            if row["variant"] != "cascade":
                row["ms_per_shower"] = ms[_name(row)]
    print()
    print("| variant | k | AUC low | AUC high | ms / shower (batch 10^4, 1 thread) | choice = teacher's |")
    print("|---|---|---|---|---|---|")
    def fmt(row: dict, key: str) -> str:
        v = row.get(key)
        return "-" if v is None else f"{v['mean']:.3f} ± {v['std']:.3f}"

    for row in rows:
        ms = row.get("ms_per_shower")
        agree = row.get("agreement")
        print(f"| {_label(row)} | {row['k']} | {fmt(row, 'auc_low')} | {fmt(row, 'auc_high')} | "
              f"{'-' if ms is None else f'{ms:.3f}'} | {'-' if agree is None else f'{agree:.3f}'} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d %H:%M")},
                                        indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
