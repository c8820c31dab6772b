"""Flavour-tagging benchmark: IP3D, SV1, RNNIP, DIPS, MV2, DL1, DL1r and the GN-style tagger.

Runs the whole chain on tt̄ and Z' and prints the light- and c-rejection table at 70 % and 77 %
b-efficiency beside ATLAS's published values (docs/references.md §3), the training
throughput per tagger and the ONNX latency::

    nice -n 10 python benchmarks/ftag_benchmark.py --work benchmarks/_work/ftag \\
        --ttbar-events 400000 --zprime-events 200000            # everything, resumable
    python benchmarks/ftag_benchmark.py --work benchmarks/_work/ftag --steps table

Steps (``--steps``, in this order; each skips what it already finished, so an interrupted run
picks up where it stopped):

``simulate``
    ``lhcml simulate ttbar`` and ``zprime`` at ⟨μ⟩ = ``--mu`` sharing one minimum-bias library
    (``WORK/sim``). ``--no-simulate-wait`` is not needed: kill the run at any time and continue
    with ``--steps baselines ...``; only complete shards are used.
``baselines``
    IP2D/IP3D/SV1 templates fitted on the training split (``eventNumber % 10`` in 0-7) of the
    complete shards of both samples, then IP2D/IP3D/SV1/JetFitter/soft-muon variables written
    into copies of all shards (``WORK/aug``).
``preprocess``
    ``configs/ftag/preprocess_dl1.yaml`` (resampling to the light-jet (pT, |η|) spectrum,
    tt̄ < 250 GeV + Z' > 250 GeV, split 8/1/1, norm dict) on ``WORK/aug`` → ``WORK/pre``.
``train``
    The taggers of ``--taggers`` (default all) in the order rnnip, dips, gn, dl1, mv2, dl1r with
    ``--epochs`` / ``--jets`` per tagger. After RNNIP its ``rnnip_p*`` outputs are written into the
    train, val and test files (DL1r's inputs). Several driver processes may train different
    taggers at the same time (``--taggers dips`` in one, ``--taggers gn`` in another).
``predict``
    Every trained tagger's ``<tagger>_p*`` into copies of the test files (``WORK/pred``).
``evaluate``
    ``lhcml.evaluation`` on the tt̄ and Z' test jets, ``D_b = ln(p_b / (f_c p_c + (1-f_c)
    p_u))`` with one ``--fc`` for every tagger (→ ``WORK/eval_fc<fc>/results.json``; run it again
    with another ``--fc`` for a second table).
``export``
    The NN taggers and the BDT to ONNX (checked against torch/xgboost), latency per jet at
    batch 1 and throughput at batch 1000, one thread.
``table``
    Prints the Markdown tables (sizes, times, rejections ± binomial errors, ATLAS values,
    ordering check, training jets/s, ONNX).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.atomic import atomic_path, atomic_update_json
from lhcml.formatting import pm
from lhcml.sim.runner import finished_shards as complete_shards
from lhcml.train.budget import TimeBudget

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
STEPS = ("simulate", "baselines", "preprocess", "train", "predict", "evaluate", "export", "table")
TAGGER_ORDER = ("rnnip", "dips", "gn", "dl1", "mv2", "dl1r")
NN_TAGGERS = ("rnnip", "dips", "gn", "dl1", "dl1r")
LABELS = {"gn": "GN-style", "dl1r": "DL1r", "dl1": "DL1", "mv2": "MV2", "dips": "DIPS",
          "rnnip": "RNNIP", "IP3D": "IP3D", "SV1": "SV1"}  # fmt: skip
TABLE_ORDER = ("gn", "dl1r", "dl1", "mv2", "dips", "rnnip", "IP3D", "SV1")
DEFAULT_EPOCHS = {"rnnip": 8, "dips": 15, "gn": 4, "dl1": 30, "dl1r": 30, "mv2": 1}
# Published ATLAS values, tt̄ simulation (docs/references.md §3): (light rej., c rej.) per WP.
# [R] = read in the source; UNVERIFIED = from memory of the paper, flagged as such.
PUBLISHED: dict[str, dict[float, tuple[float | None, float | None, str]]] = {
    "dl1r": {0.77: (170.0, 5.0, "[R] EPJC 83 (2023) 681, abstract")},
    "mv2": {0.70: (300.0, 8.9, "MV2c10, EPJC 79 (2019) 970 Tab. 2, UNVERIFIED"),
            0.77: (110.0, 4.9, "MV2c10, EPJC 79 (2019) 970 Tab. 2, UNVERIFIED")},
}  # fmt: skip
PUBLISHED_RATIOS = [
    ("GN1 / DL1r at 70 %, tt̄ sim.", "×~1.8 light, ×~2.1 c", "ATL-PHYS-PUB-2022-027, UNVERIFIED"),
    ("GN2 / DL1d at 70 %, data", "×1.8 light, ×3.5 c", "[R] Nat. Commun. 17 (2026) 541"),
    ("RNNIP / IP3D at 70 %", "light ~×2", "ATL-PHYS-PUB-2017-003, UNVERIFIED"),
]


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _update_json(path: Path, **entries: Any) -> None:
    """Merge ``entries`` into the JSON file ``path`` (atomic rename)."""
    atomic_update_json(path, entries)


def _kv(items: list[str], what: str) -> dict[str, int]:
    out = {}
    for it in items:
        key, _, val = it.partition("=")
        if key not in TAGGER_ORDER or not val:
            raise SystemExit(f"--{what}: expected TAGGER=INT with TAGGER in {TAGGER_ORDER}, got '{it}'")
        out[key] = float(val) if what == "minutes" else int(val)
    return out


def _flavour_counts(files: list[Path], cuts: str | None = None) -> dict[str, int]:
    import h5py

    n = {"b": 0, "c": 0, "light": 0, "tau": 0}
    for f in files:
        with h5py.File(f, "r") as h:
            jets = h["jets"].fields(["HadronConeExclTruthLabelID", "pt", "eta"])[:]
        keep = np.abs(jets["eta"]) < 2.5
        keep &= jets["pt"] > 20e3
        if cuts == "lt250":
            keep &= jets["pt"] < 250e3
        elif cuts == "gt250":
            keep &= jets["pt"] > 250e3
        lab = jets["HadronConeExclTruthLabelID"][keep]
        n["b"] += int((lab == 5).sum())
        n["c"] += int((lab == 4).sum())
        n["light"] += int((lab == 0).sum())
        n["tau"] += int((lab == 15).sum())
    return n


def _n_jets(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as h:
        return len(h["jets"])


# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------
def step_simulate(args: argparse.Namespace, work: Path) -> None:
    from lhcml.sim.pileup import build_pileup_library
    from lhcml.sim.runner import run_simulation

    sim = work / "sim"
    lib = sim / "pileup_minbias.h5"
    timings = work / "timings.json"
    if args.mu > 0 and not lib.exists():
        t0 = time.time()
        build_pileup_library(args.pileup_size, args.seed, lib, progress=True)
        _update_json(timings, pileup_s=time.time() - t0, pileup_events=args.pileup_size)
    for proc, n_ev, seed, eps in (("ttbar", args.ttbar_events, args.seed, args.ttbar_shard),
                                  ("zprime", args.zprime_events, args.seed + 1, args.zprime_shard)):  # fmt: skip
        t0 = time.time()
        starts = _read_json(timings).get("sim_start_epoch", {})
        if proc not in starts:
            _update_json(timings, sim_start_epoch={**starts, proc: t0})
        n0 = len(complete_shards(sim / proc, proc))
        _log(f"simulate {proc}: {n_ev} events at mu={args.mu:g} ({n0} shards already done)")
        run_simulation(proc, n_ev, args.mu, seed, sim / proc, events_per_shard=eps,
                       workers=args.workers, pileup_library=lib if args.mu > 0 else None)  # fmt: skip
        n1 = len(complete_shards(sim / proc, proc))
        _update_json(timings, **{f"sim_{proc}_s": time.time() - t0, f"sim_{proc}_new_shards": n1 - n0})


def sim_summary(work: Path) -> dict[str, Any]:
    """Events, jets per flavour and simulation time of the complete shards (from file times)."""
    import yaml

    out: dict[str, Any] = {}
    timings = _read_json(work / "timings.json")
    for proc in ("ttbar", "zprime"):
        d = work / "sim" / proc
        files = complete_shards(d, proc)
        if not files:
            continue
        man = yaml.safe_load((d / "manifest.yaml").read_text()) if (d / "manifest.yaml").exists() else {}
        eps = int(man.get("events_per_shard", 0) or 0)
        mtimes = sorted(f.stat().st_mtime for f in files)
        start = timings.get("sim_start_epoch", {}).get(proc)
        wall = (mtimes[-1] - start) if start else None
        # a simulation resumed in several sittings: timings.json "sim_wall_s" holds the summed
        # wall time of the sittings (the gaps between them are not simulation time)
        wall = timings.get("sim_wall_s", {}).get(proc, wall)
        n_ev = eps * len(files)
        n_jets = sum(_n_jets(f) for f in files)
        out[proc] = {
            "shards": len(files), "events": n_ev, "jets": n_jets,
            "flavours": _flavour_counts(files, "lt250" if proc == "ttbar" else "gt250"),
            "wall_s": wall, "events_per_s": n_ev / wall if wall else None,
            "jets_per_s": n_jets / wall if wall else None, "mu": man.get("mu"),
        }  # fmt: skip
    return out


def step_baselines(args: argparse.Namespace, work: Path) -> None:
    from lhcml.data.h5 import H5Reader, H5Writer
    from lhcml.tasks.ftag.baselines import apply_baselines, fit_baselines

    base = work / "baselines"
    base.mkdir(parents=True, exist_ok=True)
    files = {p: complete_shards(work / "sim" / p, p) for p in ("ttbar", "zprime")}
    if not any(files.values()):
        raise SystemExit(f"no complete shards under {work / 'sim'}: run --steps simulate first")
    t0 = time.time()
    fit_file = base / "template_fit_jets.h5"
    if not fit_file.exists():
        # the templates are fitted once, on the shards complete at that time; later runs of this
        # step only add the baseline variables to new shards (so it can follow the simulation)
        _update_json(base / "inputs.json", template_fit_shards={p: [f.name for f in v] for p, v in files.items()})
        train_res = np.array(args.train_residues)
        with H5Writer(fit_file) as w:
            for f in [x for v in files.values() for x in v]:
                for batch in H5Reader([str(f)], batch_size=20000).stream({"jets": None, "tracks": None}):
                    keep = np.isin(batch["jets"]["eventNumber"] % 10, train_res)
                    w.append({k: v[keep] for k, v in batch.items()})
    templates = base / "templates.h5"
    if not templates.exists():
        _log(f"baselines: fitting templates on {_n_jets(fit_file)} training-split jets")
        fit_baselines([fit_file], templates)
    t_fit = time.time() - t0
    t1 = time.time()
    n_apply = 0
    for proc, fl in files.items():
        out_dir = work / "aug" / proc
        todo = [f for f in fl if not (out_dir / f.name).exists()]
        if todo:
            _log(f"baselines: applying to {len(todo)} {proc} shards")
            apply_baselines(templates, todo, output_dir=out_dir)
            n_apply += sum(_n_jets(out_dir / f.name) for f in todo)
    prev = _read_json(work / "timings.json")
    if n_apply:  # accumulated over the runs of this step (it can follow the simulation)
        _update_json(work / "timings.json", baselines_apply_s=prev.get("baselines_apply_s", 0) + time.time() - t1,
                     baselines_apply_jets=prev.get("baselines_apply_jets", 0) + n_apply)  # fmt: skip
    if "baselines_fit_s" not in prev:
        _update_json(work / "timings.json", baselines_fit_s=t_fit)


def _preprocess_config(args: argparse.Namespace, work: Path) -> Any:
    from lhcml.config import deep_merge, read_yaml
    from lhcml.data.preprocess import PreprocessConfig

    def _resolve(path: Path) -> dict[str, Any]:  # a YAML config with its `base:` chain merged in
        data = read_yaml(path)
        while "base" in data:
            base = path.parent / str(data.pop("base"))
            data, path = deep_merge(read_yaml(base), data), base
        return data

    raw = deep_merge(_resolve(CONFIGS / "ftag" / "preprocess_dl1.yaml"), {
        "output_dir": str(work / "pre"),
        "samples": {"ttbar": {"inputs": [str(work / "aug" / "ttbar" / "ttbar_*.h5")]},
                    "zprime": {"inputs": [str(work / "aug" / "zprime" / "zprime_*.h5")]}},
        "batch_size": 20000, "shuffle_buffer": 100000,
    })  # fmt: skip
    # a run without one of the samples (e.g. --zprime-events 0) preprocesses the other alone
    present = {p for p in raw["samples"] if any((work / "aug" / p).glob(f"{p}_*.h5"))}
    if not present:
        raise SystemExit(f"no baseline-augmented shards under {work / 'aug'}: run --steps baselines first")
    raw["samples"] = {p: v for p, v in raw["samples"].items() if p in present}
    return PreprocessConfig.model_validate(raw)


def step_preprocess(args: argparse.Namespace, work: Path) -> None:
    from lhcml.data.preprocess import preprocess

    t0 = time.time()
    preprocess(_preprocess_config(args, work))
    dt = time.time() - t0
    if dt > 5:  # not a skipped re-run
        _update_json(work / "timings.json", preprocess_s=dt)


def _train_one(args: argparse.Namespace, work: Path, tagger: str) -> None:
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train

    pre = work / "pre"
    run = work / "train" / tagger
    info_file = run / "bench.json"
    if _read_json(info_file).get("best"):
        _log(f"train {tagger}: done before ({_read_json(info_file)['best']})")
        return
    if tagger == "dl1r" and not (pre / ".rnnip_predicted").exists():
        raise SystemExit("dl1r needs the rnnip_p* columns: train rnnip first (--taggers rnnip)")
    if run.exists():
        shutil.rmtree(run)  # an interrupted run restarts (no partial results are kept)
    epochs = args.epochs.get(tagger, DEFAULT_EPOCHS[tagger])
    n_train = args.jets.get(tagger)
    overrides = [
        f"data.train_files=[{pre / 'train.h5'}]",
        f"data.val_files=[{pre / 'val.h5'}]",
        f"data.norm_dict={pre / 'norm_dict.yaml'}",
        f"output_dir={run}",
        f"trainer.max_epochs={epochs}",
        "trainer.patience=null",
        "trainer.enable_progress_bar=false",
        f"tagger_name={tagger}",
    ]
    if args.val_jets:
        overrides.append(f"data.num_jets_val={args.val_jets}")
    if n_train:
        overrides.append(f"data.num_jets_train={n_train}")
    if tagger == "mv2":
        overrides.append(f"model.n_estimators={args.mv2_trees}")
    cfg_file = Path(args.gn_config) if tagger == "gn" else CONFIGS / "ftag" / f"{tagger}.yaml"
    cfg = load_train_config(cfg_file, overrides)
    n_avail = _n_jets(pre / "train.h5")
    n_used = min(n_train or n_avail, n_avail)
    _log(f"train {tagger}: {n_used} jets, {epochs} epochs")
    t0, c0 = time.time(), time.process_time()
    budget = TimeBudget(args.minutes[tagger] * 60 if tagger in args.minutes else None)
    best = train(cfg, epoch_hooks=[budget])
    dt, cpu = time.time() - t0, time.process_time() - c0
    epochs_run = epochs
    metrics = run / "logs" / "metrics.csv"
    if metrics.exists():
        import csv

        with metrics.open() as fh:
            done = {r["epoch"] for r in csv.DictReader(fh) if r.get("epoch") and r.get("val_loss")}
        epochs_run = len(done) or epochs
    info = {"best": str(best), "config": str(cfg_file), "train_jets": n_used, "epochs": epochs_run, "wall_s": dt,
            "jets_per_s": n_used * epochs_run / dt, "cpu_s": cpu,
            "jets_per_cpu_s": n_used * epochs_run / cpu, "stopped_by_budget": budget.stopped_at, "threads": args.threads}  # fmt: skip
    if tagger == "mv2":
        info["note"] = f"{args.mv2_trees} trees max, early stopping; jets/s = train jets / wall time"
        info["jets_per_s"] = n_used / dt
        info["jets_per_cpu_s"] = n_used / cpu
    _update_json(info_file, **info)
    _log(f"train {tagger}: {dt:.0f} s, {info['jets_per_s']:.0f} jets/s -> {best}")
    if tagger == "rnnip":
        from lhcml.train.predict import predict

        targets = [pre / "train.h5", pre / "val.h5", *sorted(pre.glob("test_*.h5"))]
        _log(f"predict rnnip into {[t.name for t in targets]} (DL1r inputs)")
        predict(best, targets, tagger_name="rnnip")
        (pre / ".rnnip_predicted").write_text(str(best) + "\n")


def step_train(args: argparse.Namespace, work: Path) -> None:
    for tagger in [t for t in TAGGER_ORDER if t in args.taggers]:
        _train_one(args, work, tagger)


def _trained(work: Path) -> dict[str, Path]:
    out = {}
    for t in TAGGER_ORDER:
        best = _read_json(work / "train" / t / "bench.json").get("best")
        if best and Path(best).exists():
            out[t] = Path(best)
    return out


def step_predict(args: argparse.Namespace, work: Path) -> None:
    from lhcml.train.predict import predict

    pred = work / "pred"
    pred.mkdir(parents=True, exist_ok=True)
    done = _read_json(pred / "done.json")
    tests = sorted((work / "pre").glob("test_*.h5"))
    if not tests:
        raise SystemExit("no test files: run --steps preprocess first")
    for t in tests:
        if not (pred / t.name).exists():
            with atomic_path(pred / t.name) as tmp:
                shutil.copy(t, tmp)
            (pred / "done.json").unlink(missing_ok=True)  # fresh copy: every tagger again
            done = {}
    for tagger, ckpt in _trained(work).items():
        if tagger not in args.taggers or done.get(tagger) == str(ckpt):
            continue
        _log(f"predict {tagger} on {[t.name for t in tests]}")
        predict(ckpt, [pred / t.name for t in tests], tagger_name=tagger)
        _update_json(pred / "done.json", **{tagger: str(ckpt)})


def _eval_config(args: argparse.Namespace, work: Path, taggers: list[str]) -> Any:
    from lhcml.evaluation import EvaluateConfig

    raw = {
        "title": "lhcml flavour-tagging benchmark (open simulation)",
        "label_scheme": "flavour",
        "signal": "bjets",
        "backgrounds": ["cjets", "ujets"],
        "taggers": [{"name": t, "label": LABELS[t]} for t in taggers],
        "reference": "dl1r" if "dl1r" in taggers else taggers[0],
        "fractions": {"cjets": args.fc, "ujets": 1 - args.fc},
        "working_points": [0.60, 0.70, 0.77, 0.85],
        "fixed_sig_effs": [0.70, 0.77],
        "rejection_vs_pt_wp": 0.77,
        "samples": [{"name": p, "kind": p, "files": [str(work / "pred" / f"test_{p}.h5")]}
                    for p in ("ttbar", "zprime") if (work / "pred" / f"test_{p}.h5").exists()],
        "published": [{"label": "DL1r (ATLAS sim.)", "sample": "ttbar", "working_point": 0.77,
                       "rejection": {"ujets": 170, "cjets": 5}, "source": "EPJC 83 (2023) 681"}],
        "output_dir": str(work / f"eval_fc{args.fc:g}"),
    }  # fmt: skip
    return raw, EvaluateConfig.model_validate(raw)


def step_evaluate(args: argparse.Namespace, work: Path) -> None:
    import h5py
    import yaml

    from lhcml.evaluation import evaluate

    test = work / "pred" / "test_ttbar.h5"
    with h5py.File(test, "r") as h:
        names = set(h["jets"].dtype.names)
    taggers = [t for t in TABLE_ORDER if f"{t}_pb" in names]
    raw, cfg = _eval_config(args, work, taggers)
    evaluate(cfg, config_text=yaml.safe_dump(raw, sort_keys=False))


def step_export(args: argparse.Namespace, work: Path) -> None:
    from lhcml.export.onnx import export_onnx

    out = work / "onnx"
    check = work / "pre" / "test_ttbar.h5"
    for tagger, ckpt in _trained(work).items():
        if tagger not in args.taggers:
            continue
        prev = _read_json(out / "report.json").get(tagger, {})
        if prev.get("checkpoint") == str(ckpt):
            continue
        _log(f"export {tagger} -> {out / (tagger + '.onnx')}")
        rep = export_onnx(ckpt, out / f"{tagger}.onnx", force=True, check_file=check, n_check=500)
        _update_json(out / "report.json", **{tagger: {
            "checkpoint": str(ckpt), "latency_ms_per_jet": rep.latency_ms_per_jet,
            "throughput_jets_per_s": rep.throughput_jets_per_s,
            "max_abs_diff_real": rep.max_abs_diff_real, "max_abs_diff_random": rep.max_abs_diff_random,
            "size_kb": (out / f"{tagger}.onnx").stat().st_size / 1024}})  # fmt: skip


# ------------------------------------------------------------------------------------------------
# table
# ------------------------------------------------------------------------------------------------
def _fmt(r: float | None, e: float | None) -> str:
    if r is None:
        return "n/a"
    return pm(r, e, digits_without_error=3)


def rejection_table(results: dict[str, Any]) -> tuple[str, dict]:
    """Markdown table of the rejections and the ordering check."""
    lines = []
    values: dict = {}
    for sample, res in results["samples"].items():
        n = res["n_jets"]
        lines.append(f"\n**{sample}** test jets: {n.get('bjets', 0)} b, {n.get('cjets', 0)} c, "
                     f"{n.get('ujets', 0)} light\n")  # fmt: skip
        lines.append("| tagger | light rej. @70 % | c rej. @70 % | light rej. @77 % | c rej. @77 % "
                     "| ATLAS tt̄ (light / c) |")  # fmt: skip
        lines.append("|---|---|---|---|---|---|")
        for t in [x for x in TABLE_ORDER if x in res["taggers"]]:
            ra = res["taggers"][t]["rejection_at"]
            cells = []
            for wp in ("0.7", "0.77"):
                for b in ("ujets", "cjets"):
                    e = ra.get(wp, {}).get(b, {})
                    r, err = e.get("rejection"), e.get("rejection_err")
                    if r is not None and r < 1.05:  # ~every jet passes
                        r = None  # every jet passes: the WP is not reachable (ties, e.g. SV1 without vertex)
                    cells.append(_fmt(r, err))
                    values[(sample, t, float(wp), b)] = r
            pub = ""
            if sample == "ttbar" and t in PUBLISHED:
                pub = "; ".join(f"{int(wp * 100)} %: {lu:g} / {lc:g} ({src})"
                                for wp, (lu, lc, src) in PUBLISHED[t].items())  # fmt: skip
            lines.append(f"| {LABELS[t]} | " + " | ".join(cells) + f" | {pub} |")
    return "\n".join(lines), values


def ordering_check(values: dict) -> str:
    lines = ["\n| sample | light @70 %: observed order | c @70 %: observed order | GN/DL1r light | GN/DL1r c |",
             "|---|---|---|---|---|"]  # fmt: skip
    for sample in sorted({k[0] for k in values}):
        row = [sample]
        for b in ("ujets", "cjets"):
            vals = {t: values.get((sample, t, 0.7, b)) for t in TABLE_ORDER}
            vals = {t: v for t, v in vals.items() if v is not None}
            row.append(" > ".join(LABELS[t] for t in sorted(vals, key=lambda x: -vals[x])))
        for b in ("ujets", "cjets"):
            g, d = values.get((sample, "gn", 0.7, b)), values.get((sample, "dl1r", 0.7, b))
            row.append(f"{g / d:.2f}" if g and d else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def step_table(args: argparse.Namespace, work: Path) -> str:
    out = []
    sims = sim_summary(work)
    timings = _read_json(work / "timings.json")
    if sims:
        out.append("### Samples\n")
        out.append("| sample | shards | events | jets (all) | b | c | light | sim wall time | events/s | jets/s |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for p, s in sims.items():
            fl = s["flavours"]
            wall = f"{s['wall_s'] / 60:.1f} min" if s["wall_s"] else "n/a"
            eps = f"{s['events_per_s']:.2f}" if s["events_per_s"] else "n/a"
            jps = f"{s['jets_per_s']:.1f}" if s["jets_per_s"] else "n/a"
            out.append(f"| {p} (μ={s['mu']}) | {s['shards']} | {s['events']} | {s['jets']} | {fl['b']} | "
                       f"{fl['c']} | {fl['light']} | {wall} | {eps} | {jps} |")  # fmt: skip
        out.append("\n(b/c/light: jets inside the preprocessing selection, tt̄ pT < 250 GeV, Z' pT > 250 GeV.)")
    pre = work / "pre"
    if (pre / "train.h5").exists():
        sizes = {f.name: _n_jets(f) for f in [pre / "train.h5", pre / "val.h5", *sorted(pre.glob("test_*.h5"))]}
        out.append("\nAfter preprocessing (resampled train/val, b = c = light): " +
                   ", ".join(f"{k} {v}" for k, v in sizes.items()))  # fmt: skip
    if timings:
        keys = ["pileup_s", "baselines_fit_s", "baselines_apply_s", "preprocess_s"]
        out.append("\nStep times: " + ", ".join(f"{k[:-2]} {timings[k]:.0f} s" for k in keys if k in timings))
        if timings.get("baselines_apply_jets"):
            out.append(f"(baselines apply: {timings['baselines_apply_jets']} jets, "
                       f"{1e3 * timings['baselines_apply_s'] / timings['baselines_apply_jets']:.2f} ms/jet wall)")
    tmpl = work / "baselines" / "templates.h5"
    if tmpl.exists():
        import h5py

        with h5py.File(tmpl, "r") as h:
            out.append(f"IP2D/IP3D/SV1 templates filled from {int(h.attrs['n_jets'])} training-split jets.")
    for res_file in sorted(work.glob("eval_fc*/results.json"), key=lambda p: float(p.parent.name[7:])):
        results = json.loads(res_file.read_text())
        fc = results["config"]["fractions"]["cjets"]
        out.append(f"\n### Rejections (D_b with f_c = {fc:g} for every tagger; errors binomial)")
        table, values = rejection_table(results)
        out.append(table)
        out.append("\n### Ordering (light and c rejection at 70 %)")
        out.append(ordering_check(values))
    rows = []
    for t in TAGGER_ORDER:
        info = _read_json(work / "train" / t / "bench.json")
        if info.get("best"):
            rows.append(f"| {LABELS[t]} | {info['train_jets']} | {info['epochs']} | {info['wall_s'] / 60:.1f} | "
                        f"{info['jets_per_s']:.0f} | {info.get('jets_per_cpu_s', float('nan')):.0f} |")  # fmt: skip
    if rows:
        out.append("\n### Training on this CPU (wall clock incl. validation, shared 2-core machine)\n")
        out.append("| tagger | train jets | epochs | minutes | jets/s (train jets × epochs / wall) | jets per CPU-s |")
        out.append("|---|---|---|---|---|---|")
        out.extend(rows)
    onnx = _read_json(work / "onnx" / "report.json")
    if onnx:
        out.append("\n### ONNX (onnxruntime, 1 thread)\n")
        out.append("| tagger | latency ms/jet (batch 1) | jets/s (batch 1000) | max Δp vs torch (real jets) | size kB |")
        out.append("|---|---|---|---|---|")
        for t in TAGGER_ORDER:
            if t in onnx:
                o = onnx[t]
                out.append(f"| {LABELS[t]} | {o['latency_ms_per_jet']:.3f} | {o['throughput_jets_per_s']:.0f} | "
                           f"{o['max_abs_diff_real']:.1e} | {o['size_kb']:.0f} |")  # fmt: skip
    out.append("\n### Published ATLAS ratios\n")
    out.extend(f"- {a}: {b} ({c})" for a, b, c in PUBLISHED_RATIOS)
    text = "\n".join(out)
    print(text)
    (work / "table.md").write_text(text + "\n")
    return text


# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "ftag", help="work directory")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run (default all)")
    ap.add_argument("--ttbar-events", type=int, default=400_000, help="tt̄ events (simulate)")
    ap.add_argument("--zprime-events", type=int, default=200_000, help="Z' events (simulate)")
    ap.add_argument("--ttbar-shard", type=int, default=250, help="tt̄ events per shard")
    ap.add_argument("--zprime-shard", type=int, default=100, help="Z' events per shard")
    ap.add_argument("--mu", type=float, default=50.0, help="mean pileup")
    ap.add_argument("--pileup-size", type=int, default=3000, help="minimum-bias events in the shared library")
    ap.add_argument("--seed", type=int, default=11, help="tt̄ run seed (Z': seed + 1)")
    ap.add_argument("--workers", type=int, default=2, help="simulation processes per sample")
    ap.add_argument("--train-residues", type=int, nargs="+", default=list(range(8)),
                    help="eventNumber %% 10 of the template-fit jets (the preprocessing training split)")
    ap.add_argument("--taggers", nargs="+", default=list(TAGGER_ORDER), choices=TAGGER_ORDER,
                    help="taggers for train/predict/export")
    ap.add_argument("--epochs", nargs="*", default=[], metavar="TAGGER=N",
                    help=f"epochs per tagger (default {DEFAULT_EPOCHS})")
    ap.add_argument("--jets", nargs="*", default=[], metavar="TAGGER=N", help="training jets per tagger (default all)")
    ap.add_argument("--minutes", nargs="*", default=[], metavar="TAGGER=MIN",
                    help="wall-clock budget per tagger: stop after the epoch whose successor would exceed it")
    ap.add_argument("--val-jets", type=int, default=None, help="validation jets (default all)")
    ap.add_argument("--mv2-trees", type=int, default=500, help="BDT trees (early stopping on val)")
    ap.add_argument("--gn-config", default=str(CONFIGS / "ftag" / "bench_gn.yaml"),
                    help="config of the GN-style tagger (default: the CPU-sized bench_gn.yaml; "
                    "configs/ftag/gn.yaml is the full size)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (0: torch's default)")
    ap.add_argument("--fc", type=float, default=0.018, help="f_c of the b-tagging discriminant, every tagger")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.epochs = _kv(args.epochs, "epochs")
    args.jets = _kv(args.jets, "jets")
    args.minutes = _kv(args.minutes, "minutes")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # one thread per process on a shared CPU (spin-waits)
    funcs = {"simulate": step_simulate, "baselines": step_baselines, "preprocess": step_preprocess,
             "train": step_train, "predict": step_predict, "evaluate": step_evaluate,
             "export": step_export, "table": step_table}  # fmt: skip
    for s in STEPS:
        if s in args.steps:
            t0 = time.time()
            _log(f"step {s}")
            funcs[s](args, work)
            _log(f"step {s} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
