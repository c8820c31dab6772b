"""Photon-ID closure of the generative fast calorimeter: DNN and CNN, detailed <-> fast (issue 15).

The issue's closure test: a photon-ID network trained on detailed showers must have the same
photon efficiency and fake rejection (within errors) on fast-simulated samples of the same
events, and a network trained on fast showers must perform within stated errors on detailed ones.
Stages (each skipped when its outputs exist, so a stopped run resumes; ``--stages`` picks some):

1. ``showers``   -- the generator's training sample: ``simulate_fastcalo`` (``lhcml fastcalo
   simulate``), ``--showers`` photons at the 16 discrete energies (seed ``--shower-seed``) and a
   2 000-shower validation sample (seed 1), at 0.20 < |η| < 0.25 or, for a generator config
   conditioned on |η| (``model.eta_range``, e.g. ``configs/fastcalo/fm_strips_eta.yaml``), over
   that range (as ``lhcml fastcalo simulate --eta-range``);
2. ``generator`` -- train ``--generator-config`` (default flow matching) on it with ``lhcml
   train``'s trainer under a wall-clock budget (:class:`lhcml.train.budget.TimeBudget`,
   ``--generator-budget-s``) and export the best checkpoint to ONNX (``export_checkpoint``, the
   function behind ``lhcml export``): ``WORK/generator.onnx``;
3. ``events``    -- ``simulate_photon_events`` at mu = 0 for every process of ``--events``,
   twice on the same Pythia events (same seeds): ``calo=None`` (detailed) and
   ``calo="fast:WORK/generator.onnx"``; in chunks of ``--chunk-events`` events (chunk ``i`` of
   process ``k`` has seed ``--event-seed + 100 k + i``; a plan where two chunks would share a seed,
   i.e. a process of more than 100 chunks before another, is refused; a run grows in place when
   rerun with more events of a process, listed in the same order: every chunk keeps its seed and
   file), prompt photons of ``gamma_jet`` and
   fakes of ``dijet_photon`` kept by ``select_candidates`` (the photon-ID dataset's own
   selection); ``WORK/events/<calo>/<process>_<i>.h5``; with ``--spot-readout FRACTION`` the
   fast events read the generated cells out as the detailed simulation's energy spots
   (``calo="fast:WORK/generator.onnx@spot-readout=FRACTION"``, as ``lhcml simulate --calo
   fast:... --spot-readout``; a resumed run refuses fast chunks made with another readout);
4. ``datasets``  -- ``WORK/data/<calo>/photon_{train,val,test}.h5``, split 60/20/20 **by event**
   (a hash of ``eventNumber``), so the detailed and fast test sets hold the same events and no
   event of a training set is in either test set; written by ``split_and_write(...,
   groups=eventNumber)`` (with the images' noise attributes);
5. ``photonid``  -- ``lhcml train`` of every ``--photonid-configs`` config on each calo's
   train/val files, for each ``--train-seeds`` seed, at most ``--max-epochs`` epochs; then
   ``predict`` on both calos' test files;
6. ``evaluate``  -- per network and training calo: the working-point cuts at 80/90 % photon
   efficiency on the *training calo's* test set, applied to both test sets
   (:func:`lhcml.metrics.transfer_working_points`: efficiencies, rejections, binomial errors and
   the difference in sigma), AUCs with bootstrap errors, the seed spread; the ATLAS 2012 Tight
   menu on both; means and separation powers of the shower shapes fast vs detailed.
   Prints the tables and writes ``WORK/results.json``.

``--folds K`` (opt-in; without it every output is as before) makes the fake rejection measurable
without simulating more: ``datasets`` also writes ``WORK/folds<K>/<calo>/fold<k>/`` (folds by a hash
of ``eventNumber``, :mod:`lhcml.tasks.photon.folds`: test = fold ``k``, validation = fold ``k + 1``,
training = the rest), ``photonid`` trains one network per fold, seed and calo
(``WORK/photonid_folds<K>/``) and scores fold ``k`` of both calos, and ``evaluate`` pools the
out-of-fold scores, so every candidate is a test candidate once: the cut at the target photon
efficiency is fixed on the training calo's pooled out-of-fold prompt-photon scores and applied to
the other calo's pooled scores (fold ``k``'s network on fold ``k``: the same events, paired). Errors:
binomial on the pooled counts (+) the fold spread (standard deviation of the per-fold differences at
the pooled cut over sqrt(K); it holds the binomial noise of each fold again, so this error is
conservative), and a paired event bootstrap (``--paired-bootstrap`` replicas, the cut fixed again in
each) -> ``WORK/results_folds<K>.json``. Every evaluation first checks on the files' event numbers
that no network scores an event it was trained or validated on and that both calos fold alike.
``--event-calos detailed`` simulates the detailed chunks alone (no generator needed yet).

Sizes (defaults): 24 000 + 2 000 generator showers; 30 min generator budget; gamma_jet 8 000 +
dijet_photon 20 000 events per calo, chunks of 500 (about 23 % of gamma_jet events give a prompt
photon candidate, 2.5 % of the EM-filtered dijet events a fake: ~1 800 prompt photons and ~500
fakes); DNN/CNN at most 40 epochs, seeds 42 and 43. On the shared 2-core VM (load 5-6) an event
costs ~25-35 ms in either calo (the fast calo's generator costs about what the detailed photon
showers save), so the events stage takes ~30 min; it can be stopped at any time (a stop loses at
most the running chunk) and the later stages use the chunks finished in both calos. One CPU
thread throughout (``torch.set_num_threads(1)``); the AUC errors are bootstrap standard
deviations (``--bootstrap`` replicas), the efficiency errors binomial.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/fastcalo_closure.py \\
        --work benchmarks/_work/fastcalo_closure
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("showers", "generator", "events", "datasets", "photonid", "evaluate")
CALOS = ("detailed", "fast")
SHAPES = ("Reta", "Rphi", "weta2", "Eratio", "weta1", "wtots1", "fracs1", "DeltaE", "f1", "Rhad")
WORKING_POINTS = (0.80, 0.90)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg: str) -> None:
    """Bad input or a missing earlier stage: one message, exit status 2."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


# ----------------------------------------------------------------------------- 1. showers
def config_eta_range(config: Path) -> tuple[float, float] | None:
    """``model.eta_range`` of a generator config (``None``: an energy-only generator)."""
    import yaml

    rng = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("eta_range")
    return None if rng is None else (float(rng[0]), float(rng[1]))


def stage_showers(work: Path, n_showers: int, seed: int, eta_range: tuple[float, float] | None = None) -> None:
    from lhcml.tasks.fastcalo.dataset import simulate_fastcalo

    for sub, n, s in (("showers", n_showers, seed), ("showers_val", 2000, 1)):
        if (work / sub / "photon_discrete.h5").exists():
            log(f"showers: {work / sub} exists, skipped")
            continue
        t0 = time.time()
        simulate_fastcalo(work / sub, "photon", n, "discrete", s, showers_per_shard=2000, progress=False,
                          eta_range=eta_range)  # fmt: skip
        log(f"showers: {n} photons (seed {s}, |eta| {eta_range or 'default'}) in {time.time() - t0:.0f} s")


# ----------------------------------------------------------------------------- 2. generator
def stage_generator(work: Path, config: Path, budget_s: float) -> Path:
    from lhcml.train.budget import TimeBudget
    from lhcml.train.protocol import load_trainable_config

    onnx = work / "generator.onnx"
    if onnx.exists():
        log(f"generator: {onnx} exists, skipped")
        return onnx
    out = work / "generator"
    best = sorted((out / "checkpoints").glob("best-*.ckpt"))
    info: dict[str, Any] = {"config": str(config), "budget_s": budget_s}
    if not best:
        overrides = [f"data.train_files=[{work / 'showers' / 'photon_discrete.h5'}]",
                     f"data.val_files=[{work / 'showers_val' / 'photon_discrete.h5'}]",
                     f"data.binning={work / 'showers' / 'binning_photon.xml'}",
                     f"output_dir={out}"]  # fmt: skip
        trainer, cfg = load_trainable_config(config, overrides)
        budget = TimeBudget(budget_s)
        t0 = time.time()
        trainer.fit(cfg, epoch_hooks=[budget])
        info.update(train_wall_s=time.time() - t0, epochs=budget.stopped_at)
        best = sorted((out / "checkpoints").glob("best-*.ckpt"))
        log(f"generator: trained {info['train_wall_s']:.0f} s, stopped after {budget.stopped_at} epochs")
    from lhcml.export.fastcalo import export_checkpoint

    t0 = time.time()
    # atol 1e-4 x E_inc: the fm midpoint solver accumulates float32 rounding (torch vs onnxruntime
    # 1.9e-5 x E_inc in a first check), as `lhcml export --atol 1e-4`
    export_checkpoint(best[-1], onnx, timing=False, atol=1e-4)
    info.update(checkpoint=str(best[-1]), export_wall_s=time.time() - t0)
    (work / "generator.json").write_text(json.dumps(info, indent=1))
    log(f"generator: exported {best[-1].name} -> {onnx}")
    return onnx


# ----------------------------------------------------------------------------- 3. events
def chunk_plan(events: dict[str, int], seed: int, chunk: int) -> list[tuple[str, int, int, int]]:
    """``(process, chunk index, seed, n_events)`` of every chunk: the same in both calos."""
    plan = []
    for k, (proc, n) in enumerate(events.items()):
        for i, start in enumerate(range(0, n, chunk)):
            plan.append((proc, i, seed + 100 * k + i, min(chunk, n - start)))
    # a process of more than 100 chunks would reuse the next process's seeds, hence its event numbers
    # (seed * 10^7 + index), which the folds and the pairing of the two calos key on: refuse it.
    # Growing a process (more events, same order) keeps every existing chunk's seed.
    owner: dict[int, tuple[str, int]] = {}
    for proc, i, s, _ in plan:
        if s in owner:
            fail(f"--events: chunk {i} of {proc} and chunk {owner[s][1]} of {owner[s][0]} would share seed {s} "
                 f"(a process holds at most 100 chunks of --chunk-events {chunk} unless listed last): raise "
                 "--chunk-events or list it last")
        owner[s] = (proc, i)
    # processes interleaved chunk by chunk (in proportion to their sizes), so a run stopped early
    # still has prompt photons and fakes
    counts = {proc: -(-n // chunk) for proc, n in events.items()}
    return sorted(plan, key=lambda c: ((c[1] + 0.5) / counts[c[0]], c[0]))


def check_readout(path: Path, spot_readout: float | None, impact_eta: bool = False) -> None:
    """A resumed run must not mix fast chunks made with and without (or with another) readout, or with
    and without ``--impact-eta``."""
    import h5py

    from lhcml.sim.fastcalo import split_impact_eta, split_spot_readout

    with h5py.File(path, "r") as f:
        option = f.attrs.get("calo_option", "fast:")  # chunks written before the option: no readout
    option = option.decode() if isinstance(option, bytes) else str(option)
    head, had = split_spot_readout(option)
    if had != spot_readout:
        fail(f"{path} was simulated with spot readout {had}, this run asks for {spot_readout}: "
             "use another --work (the detailed events may be linked)")
    if split_impact_eta(head)[1] != impact_eta:
        fail(f"{path} was simulated {'with' if not impact_eta else 'without'} --impact-eta, this run "
             f"{'asks for it' if impact_eta else 'does not'}: use another --work (the detailed events may be linked)")


def stage_events(work: Path, events: dict[str, int], seed: int, chunk: int, onnx: Path,
                 spot_readout: float | None = None, calos_run: tuple[str, ...] = CALOS,
                 impact_eta: bool = False) -> dict[str, float]:  # fmt: skip
    from lhcml.data.h5 import write_h5
    from lhcml.sim.fastcalo import calo_with_impact_eta, calo_with_spot_readout
    from lhcml.sim.photons import simulate_photon_events
    from lhcml.tasks.photon.dataset import select_candidates

    walls: dict[str, float] = {}
    # --spot-readout: the fast path reads the generated cells out as the detailed simulation's spots
    # (``fast:MODEL.onnx@spot-readout=F``, as ``lhcml simulate --calo fast:... --spot-readout F``)
    # --impact-eta: the generator is told the |eta| where the shower crosses the strips
    # (``fast:MODEL.onnx@impact-eta``, as ``lhcml simulate --calo fast:... --impact-eta``)
    fast = calo_with_spot_readout(calo_with_impact_eta(f"fast:{onnx}", impact_eta), spot_readout)
    calos = {"detailed": None, "fast": fast}
    # --event-calos: one calo's chunks only (e.g. the detailed ones before the generator exists)
    calos = {c: o for c, o in calos.items() if c in calos_run}
    # detailed and fast alternate chunk by chunk, so a stopped run still has matching pairs
    for proc, i, s, n in chunk_plan(events, seed, chunk):
        for calo, option in calos.items():
            path = work / "events" / calo / f"{proc}_{i:03d}.h5"
            if path.exists():
                if calo == "fast":
                    check_readout(path, spot_readout, impact_eta)
                continue
            t0 = time.time()
            data = simulate_photon_events(proc, n, 0.0, s, calo=option)
            wall = time.time() - t0
            walls[f"{calo}/{proc}"] = walls.get(f"{calo}/{proc}", 0.0) + wall
            kept = select_candidates(data, proc)
            write_h5(path, kept, attrs={"process": proc, "seed": s, "n_events": n, "calo": calo,
                                        "calo_option": option or "detailed", "wall_s": wall})  # fmt: skip
            log(f"events: {calo} {proc} chunk {i} ({n} events, seed {s}): {len(kept['photons'])} candidates, "
                f"{wall:.0f} s ({1e3 * wall / n:.0f} ms/event)")
    return walls


# ----------------------------------------------------------------------------- 4. datasets
def read_tables(paths: list[Path]) -> dict[str, np.ndarray]:
    import h5py

    parts = []
    for path in paths:
        with h5py.File(path, "r") as f:
            parts.append({k: f[k][:] for k in f})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def finished_chunks(work: Path, events: dict[str, int], seed: int, chunk: int) -> list[tuple[str, int]]:
    """``(process, chunk index)`` of the chunks finished in both calos: the two samples hold the
    same events."""
    done = [(proc, i) for proc, i, _, _ in chunk_plan(events, seed, chunk)
            if all((work / "events" / c / f"{proc}_{i:03d}.h5").exists() for c in CALOS)]  # fmt: skip
    if not done:
        fail("no event chunk is finished in both calos: run the 'events' stage first")
    return done


def stage_fold_datasets(work: Path, events: dict[str, int], seed: int, chunk: int, n_folds: int) -> None:
    """``--folds K``: ``WORK/folds<K>/<calo>/fold<k>/photon_{train,val,test}.h5``: fold ``k`` is the
    test set, fold ``k + 1 mod K`` the validation set, the rest the training set, folds by a hash of
    ``eventNumber`` (:mod:`lhcml.tasks.photon.folds`): both calos fold alike."""
    from lhcml.tasks.photon.folds import fold_of, write_folds

    done = finished_chunks(work, events, seed, chunk)
    for calo in CALOS:
        out = work / f"folds{n_folds}" / calo
        if (out / f"fold{n_folds - 1}" / "photon_test.h5").exists():
            log(f"datasets: {out} exists, skipped")
            continue
        data = read_tables([work / "events" / calo / f"{proc}_{i:03d}.h5" for proc, i in done])
        write_folds(data, out, n_folds, seed)
        ph = data["photons"]
        f = fold_of(ph["eventNumber"], n_folds)
        per_fold = [[int(((f == k) & (ph["isPromptPhoton"] == p)).sum()) for p in (1, 0)] for k in range(n_folds)]
        log(f"datasets: {calo}: {n_folds} folds, prompt + fakes per fold {per_fold}")


def stage_datasets(work: Path, events: dict[str, int], seed: int, chunk: int) -> None:
    from lhcml.tasks.photon.dataset import group_split, split_and_write

    done = finished_chunks(work, events, seed, chunk)
    for calo in CALOS:
        out = work / "data" / calo
        if (out / "photon_test.h5").exists():
            log(f"datasets: {out} exists, skipped")
            continue
        data = read_tables([work / "events" / calo / f"{proc}_{i:03d}.h5" for proc, i in done])
        events_of = data["photons"]["eventNumber"]
        split_and_write(data, out, seed, groups=events_of)
        split = group_split(events_of)
        ph = data["photons"]
        log(f"datasets: {calo}: {len(done)} chunks, {int((ph['isPromptPhoton'] == 1).sum())} prompt + "
            f"{int((ph['isPromptPhoton'] == 0).sum())} fakes; train/val/test {np.bincount(split, minlength=3).tolist()}")


# ----------------------------------------------------------------------------- 5. photon ID
def run_name(config: Path, calo: str, seed: int) -> str:
    return f"{config.stem}_{calo}_s{seed}"


def train_and_predict(config: Path, data: Path, out: Path, seed: int, max_epochs: int,
                      tests: dict[str, Path]) -> None:
    """Train ``config`` on ``data/photon_{train,val}.h5`` into ``out`` (skipped when ``out/done.json``
    exists) and predict every test file of ``tests`` into ``out/test_<name>/``."""
    from lhcml.train.predict import predict
    from lhcml.train.protocol import load_trainable_config

    done = out / "done.json"
    if not done.exists():
        overrides = [f"data.train_files=[{data / 'photon_train.h5'}]",
                     f"data.val_files=[{data / 'photon_val.h5'}]",
                     f"output_dir={out}", f"seed={seed}", f"trainer.max_epochs={max_epochs}"]  # fmt: skip
        trainer, cfg = load_trainable_config(config, overrides)
        t0 = time.time()
        best = trainer.fit(cfg)
        done.write_text(json.dumps({"checkpoint": str(best), "train_wall_s": time.time() - t0}))
        log(f"photonid: trained {out.name} in {time.time() - t0:.0f} s ({best.name})")
    best = Path(json.loads(done.read_text())["checkpoint"])
    for test_name, test_file in tests.items():
        pred_dir = out / f"test_{test_name}"
        if not (pred_dir / "photon_test.h5").exists():
            predict(best, [test_file], tagger_name="nn", output_dir=pred_dir)


def stage_photonid(work: Path, configs: list[Path], seeds: list[int], max_epochs: int) -> None:
    for config in configs:
        for calo in CALOS:
            for seed in seeds:
                train_and_predict(config, work / "data" / calo, work / "photonid" / run_name(config, calo, seed), seed,
                                  max_epochs, {c: work / "data" / c / "photon_test.h5" for c in CALOS})  # fmt: skip


def fold_run(work: Path, config: Path, calo: str, seed: int, n_folds: int, k: int) -> Path:
    return work / f"photonid_folds{n_folds}" / f"{run_name(config, calo, seed)}_f{k}"


def stage_photonid_folds(work: Path, configs: list[Path], seeds: list[int], max_epochs: int, n_folds: int) -> None:
    """``--folds K``: per network, seed and training calo, the network of fold ``k`` trains on the
    other folds and scores fold ``k`` of both calos (seeds outermost within a network, so a stopped
    run has whole seeds)."""
    for config in configs:
        for seed in seeds:
            for calo in CALOS:
                for k in range(n_folds):
                    folds = work / f"folds{n_folds}"
                    train_and_predict(config, folds / calo / f"fold{k}", fold_run(work, config, calo, seed, n_folds, k),
                                      seed, max_epochs, {c: folds / c / f"fold{k}" / "photon_test.h5" for c in CALOS})  # fmt: skip


# ----------------------------------------------------------------------------- 6. evaluate
def scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(prompt-photon discriminants, fake discriminants) of a predicted test file."""
    from lhcml.tasks.photon.evaluate import discriminant, load_photons

    ph = load_photons([path])
    d = discriminant(ph, "nn")
    prompt = ph["isPromptPhoton"] == 1
    return d[prompt], d[~prompt]


def closure_of(work: Path, name: str, train_calo: str, bootstrap: int) -> dict[str, Any]:
    from lhcml.metrics import auc_bootstrap, transfer_working_points

    other = "fast" if train_calo == "detailed" else "detailed"
    out = work / "photonid" / name
    s_ref, b_ref = scores(out / f"test_{train_calo}" / "photon_test.h5")
    s_oth, b_oth = scores(out / f"test_{other}" / "photon_test.h5")
    res: dict[str, Any] = {"n_ref": [len(s_ref), len(b_ref)], "n_other": [len(s_oth), len(b_oth)]}
    res["auc_ref"] = auc_bootstrap(s_ref, b_ref, bootstrap, seed=1)
    res["auc_other"] = auc_bootstrap(s_oth, b_oth, bootstrap, seed=2)
    res["wps"] = [wp.to_dict() for wp in transfer_working_points(s_ref, b_ref, s_oth, b_oth, WORKING_POINTS)]
    return res


def combine(per_seed: list[dict[str, Any]], key: str, wp: int | None = None) -> dict[str, float]:
    """Mean over seeds of the reference and other values of ``key``, the difference, its
    statistical error (binomial/bootstrap, the mean over seeds), the seed spread (standard
    deviation of the differences) and the difference in units of both added in quadrature."""
    if wp is None:  # AUC: (value, error) pairs
        ref = np.array([r["auc_ref"][0] for r in per_seed])
        oth = np.array([r["auc_other"][0] for r in per_seed])
        stat = float(np.mean([np.hypot(r["auc_ref"][1], r["auc_other"][1]) for r in per_seed]))
    else:
        w = [{k: (np.nan if v is None else v) for k, v in r["wps"][wp].items()} for r in per_seed]
        ref = np.array([x[f"{key}_ref"] for x in w], dtype=float)
        oth = np.array([x[key] for x in w], dtype=float)
        stat = float(np.mean([np.hypot(x[f"{key}_ref_err"], x[f"{key}_err"]) for x in w]))
    diff = oth - ref
    spread = float(np.std(diff, ddof=1)) if len(diff) > 1 else 0.0
    total = float(np.hypot(stat, spread))
    md = float(np.mean(diff))
    return {"ref": float(np.mean(ref)), "other": float(np.mean(oth)), "diff": md, "stat": stat,
            "seed_spread": spread, "sigma": md / total if total > 0 else float("nan")}  # fmt: skip


def shape_table(work: Path) -> dict[str, Any]:
    """Means and separation powers of the shower shapes, fast vs detailed, for prompt photons and
    fakes of all splits (the same events in both), and the ATLAS 2012 Tight efficiencies."""
    from lhcml.metrics.fastcalo import feature_separation
    from lhcml.metrics.working_points import efficiency_error
    from lhcml.tasks.photon.cuts import atlas_2012_tight
    from lhcml.tasks.photon.evaluate import load_photons

    ph = {c: load_photons([work / "data" / c / f"photon_{s}.h5" for s in ("train", "val", "test")]) for c in CALOS}
    out: dict[str, Any] = {}
    for cls, flag in (("prompt", 1), ("fake", 0)):
        d, f = (ph[c][ph[c]["isPromptPhoton"] == flag] for c in CALOS)
        row = {"n": [len(d), len(f)]}
        for v in SHAPES:
            x, y = d[v].astype(float), f[v].astype(float)
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            row[v] = {"detailed": float(np.mean(x)), "fast": float(np.mean(y)),
                      "separation": feature_separation(x, y)}  # fmt: skip
        t = {c: atlas_2012_tight(p) for c, p in (("detailed", d), ("fast", f))}
        row["tight"] = {c: [float(t[c].mean()), float(efficiency_error(t[c].mean(), len(t[c])))] for c in CALOS}
        out[cls] = row
    return out


def stage_evaluate(work: Path, configs: list[Path], seeds: list[int], bootstrap: int) -> dict[str, Any]:
    results: dict[str, Any] = {"closure": {}, "shapes": shape_table(work)}
    for config in configs:
        for calo in CALOS:
            per_seed = []
            for seed in seeds:
                name = run_name(config, calo, seed)
                if (work / "photonid" / name / "test_fast" / "photon_test.h5").exists():
                    per_seed.append(closure_of(work, name, calo, bootstrap))
            if not per_seed:
                continue
            key = f"{config.stem} trained on {calo}"
            entry: dict[str, Any] = {"seeds": per_seed, "auc": combine(per_seed, "auc")}
            for i, e in enumerate(WORKING_POINTS):
                sig, bkg = combine(per_seed, "sig", i), combine(per_seed, "bkg", i)
                # rejection = 1 / (fake efficiency averaged over seeds): one seed may pass no
                # fake (infinite rejection); its significance is the fake efficiency's
                rej = {"ref": 1 / bkg["ref"] if bkg["ref"] > 0 else float("inf"),
                       "other": 1 / bkg["other"] if bkg["other"] > 0 else float("inf"),
                       "stat": float("nan"), "seed_spread": float("nan"), "sigma": -bkg["sigma"]}  # fmt: skip
                rej["diff"] = rej["other"] - rej["ref"]
                entry.update({f"sig@{round(100 * e)}": sig, f"bkg@{round(100 * e)}": bkg, f"rej@{round(100 * e)}": rej})
            results["closure"][key] = entry
    return results


def out_of_fold(work: Path, config: Path, calo: str, seed: int, n_folds: int, test_calo: str) -> dict[str, np.ndarray] | None:
    """Pooled scores of fold ``k``'s network (trained on ``calo``) on fold ``k`` of ``test_calo``,
    every fold: discriminant, prompt flag, eventNumber and fold per candidate (None if a fold is missing)."""
    from lhcml.tasks.photon.evaluate import discriminant, load_photons

    parts = []
    for k in range(n_folds):
        path = fold_run(work, config, calo, seed, n_folds, k) / f"test_{test_calo}" / "photon_test.h5"
        if not path.exists():
            return None
        ph = load_photons([path])
        parts.append({"d": discriminant(ph, "nn"), "sig": ph["isPromptPhoton"] == 1,
                      "event": ph["eventNumber"].astype(np.int64), "fold": np.full(len(ph), k)})  # fmt: skip
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def fold_closure_of(work: Path, config: Path, calo: str, seed: int, n_folds: int, bootstrap: int,
                    paired: int) -> dict[str, Any] | None:
    """One seed's closure from out-of-fold scores: the cut fixed at the target photon efficiency on
    the training calo's pooled out-of-fold prompt-photon scores, applied to the pooled scores of the
    other calo (fold ``k``'s network on fold ``k``: the same events). Errors: binomial on the pooled
    counts, the fold spread (standard deviation of the per-fold differences at the pooled cut over
    sqrt(K)), and a paired event bootstrap (:func:`lhcml.metrics.closure.paired_transfer_bootstrap`)."""
    from lhcml.metrics import auc_bootstrap, transfer_working_points
    from lhcml.metrics.closure import paired_transfer_bootstrap
    from lhcml.tasks.photon.evaluate import load_photons
    from lhcml.tasks.photon.folds import check_out_of_fold

    other = "fast" if calo == "detailed" else "detailed"
    ref, oth = (out_of_fold(work, config, calo, seed, n_folds, c) for c in (calo, other))
    if ref is None or oth is None:
        return None
    folds = work / f"folds{n_folds}" / calo
    trained_on = [load_photons([folds / f"fold{k}" / f"photon_{s}.h5" for s in ("train", "val")])["eventNumber"]
                  for k in range(n_folds)]  # fmt: skip
    check_out_of_fold(trained_on, [[x["event"][x["fold"] == k] for k in range(n_folds)] for x in (ref, oth)])
    res: dict[str, Any] = {"n_ref": [int(ref["sig"].sum()), int((~ref["sig"]).sum())],
                           "n_other": [int(oth["sig"].sum()), int((~oth["sig"]).sum())]}  # fmt: skip
    res["auc_ref"] = auc_bootstrap(ref["d"][ref["sig"]], ref["d"][~ref["sig"]], bootstrap, seed=1)
    res["auc_other"] = auc_bootstrap(oth["d"][oth["sig"]], oth["d"][~oth["sig"]], bootstrap, seed=2)
    wps = transfer_working_points(ref["d"][ref["sig"]], ref["d"][~ref["sig"]], oth["d"][oth["sig"]],
                                  oth["d"][~oth["sig"]], WORKING_POINTS)  # fmt: skip
    pb = paired_transfer_bootstrap(ref["d"], ref["sig"], ref["event"], oth["d"], oth["sig"], oth["event"],
                                   WORKING_POINTS, n_boot=paired, seed=3)  # fmt: skip
    res["wps"] = []
    for wp, p in zip(wps, pb, strict=True):
        row: dict[str, Any] = wp.to_dict()
        for key, flag in (("sig", True), ("bkg", False)):
            per_fold = []
            for k in range(n_folds):
                a = ref["d"][(ref["fold"] == k) & (ref["sig"] == flag)]
                b = oth["d"][(oth["fold"] == k) & (oth["sig"] == flag)]
                per_fold.append(float(np.mean(b >= wp.cut) - np.mean(a >= wp.cut)))
            row[f"{key}_fold_diffs"] = per_fold
            row[f"{key}_fold_spread"] = float(np.std(per_fold, ddof=1) / np.sqrt(n_folds))
            row[f"{key}_paired_err"] = p[f"{key}_diff_err"]
        res["wps"].append(row)
    return res


def combine_folds(per_seed: list[dict[str, Any]], key: str, wp: int) -> dict[str, float]:
    """:func:`combine` for the out-of-fold closure: stat = binomial of both pooled counts (+) the
    fold spread (mean over seeds), paired = the paired bootstrap error (mean over seeds); sigma and
    sigma_paired with the seed spread added in quadrature to each."""
    w = [r["wps"][wp] for r in per_seed]
    ref = np.array([x[f"{key}_ref"] for x in w], dtype=float)
    oth = np.array([x[key] for x in w], dtype=float)
    stat = float(np.mean([np.sqrt(x[f"{key}_ref_err"] ** 2 + x[f"{key}_err"] ** 2 + x[f"{key}_fold_spread"] ** 2)
                          for x in w]))  # fmt: skip
    paired = float(np.mean([x[f"{key}_paired_err"] for x in w]))
    diff = oth - ref
    spread = float(np.std(diff, ddof=1)) if len(diff) > 1 else 0.0
    md = float(np.mean(diff))
    out = {"ref": float(np.mean(ref)), "other": float(np.mean(oth)), "diff": md, "stat": stat, "seed_spread": spread,
           "paired": paired, "ref_err": float(np.mean([x[f"{key}_ref_err"] for x in w])),
           "other_err": float(np.mean([x[f"{key}_err"] for x in w]))}  # fmt: skip
    for name, err in (("sigma", stat), ("sigma_paired", paired)):
        total = float(np.hypot(err, spread))
        out[name] = md / total if total > 0 else float("nan")
    return out


def stage_evaluate_folds(work: Path, configs: list[Path], seeds: list[int], n_folds: int, bootstrap: int,
                         paired: int) -> dict[str, Any]:
    results: dict[str, Any] = {"folds": n_folds, "closure": {}, "shapes": shape_table(work)}
    for config in configs:
        for calo in CALOS:
            per_seed = [r for seed in seeds
                        if (r := fold_closure_of(work, config, calo, seed, n_folds, bootstrap, paired)) is not None]  # fmt: skip
            if not per_seed:
                continue
            entry: dict[str, Any] = {"seeds": per_seed, "auc": combine(per_seed, "auc")}
            for i, e in enumerate(WORKING_POINTS):
                sig, bkg = combine_folds(per_seed, "sig", i), combine_folds(per_seed, "bkg", i)
                rej: dict[str, float] = {"sigma": -bkg["sigma"], "sigma_paired": -bkg["sigma_paired"]}
                for side in ("ref", "other"):  # 1 / (fake efficiency averaged over seeds), binomial error
                    b, eb = bkg[side], bkg[f"{side}_err"]
                    rej[side] = 1 / b if b > 0 else float("inf")
                    rej[f"{side}_err"] = eb / b**2 if b > 0 else float("nan")
                rej["diff"] = rej["other"] - rej["ref"]
                rej["stat"] = rej["seed_spread"] = float("nan")
                entry.update({f"sig@{round(100 * e)}": sig, f"bkg@{round(100 * e)}": bkg, f"rej@{round(100 * e)}": rej})
            results["closure"][f"{config.stem} trained on {calo}"] = entry
    return results


def print_fold_tables(results: dict[str, Any]) -> None:
    print(f"\nOut-of-fold closure ({results['folds']} folds; cut at the target efficiency on the training calo's pooled")
    print("out-of-fold prompt-photon scores; stat = binomial of both (+) fold spread; paired = event bootstrap)\n")
    print("| network | quantity | reference | other calo | diff | stat | paired | seed spread | sigma | sigma paired |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, c in results["closure"].items():
        n = c["seeds"][0]
        label = f"{key} ({len(c['seeds'])} seeds; {n['n_ref'][0]}+{n['n_ref'][1]} / {n['n_other'][0]}+{n['n_other'][1]})"
        for q in ("sig@80", "bkg@80", "sig@90", "bkg@90"):
            x = c[q]
            print(f"| {label} | {q} | {x['ref']:.4f} | {x['other']:.4f} | {x['diff']:+.4f} | {x['stat']:.4f} | "
                  f"{x['paired']:.4f} | {x['seed_spread']:.4f} | {x['sigma']:+.1f} | {x['sigma_paired']:+.1f} |")
            label = ""
        a = c["auc"]
        print(f"| | auc | {a['ref']:.4f} | {a['other']:.4f} | {a['diff']:+.4f} | {a['stat']:.4f} | | "
              f"{a['seed_spread']:.4f} | {a['sigma']:+.1f} | |")
        for q in ("rej@80", "rej@90"):
            x = c[q]
            print(f"| | {q} | {x['ref']:.1f} ± {x['ref_err']:.1f} | {x['other']:.1f} ± {x['other_err']:.1f} | "
                  f"{x['diff']:+.1f} | | | | {x['sigma']:+.1f} | {x['sigma_paired']:+.1f} |")


def print_tables(results: dict[str, Any]) -> None:
    print("\nClosure: working points fixed on the training calo's test set, applied to the other calo's")
    print("(mean over seeds; diff = other - reference; sigma = diff / (stat (+) seed spread); sig/bkg = prompt/fake")
    print("efficiency; rej = 1 / bkg with the significance of bkg)\n")
    print("| network | quantity | reference (train calo) | other calo | diff | stat | seed spread | sigma |")
    print("|---|---|---|---|---|---|---|---|")
    for key, c in results["closure"].items():
        n = c["seeds"][0]
        label = f"{key} ({len(c['seeds'])} seeds; test {n['n_ref'][0]}+{n['n_ref'][1]} / {n['n_other'][0]}+{n['n_other'][1]})"
        for q in ("auc", "sig@80", "rej@80", "sig@90", "rej@90", "bkg@80", "bkg@90"):
            x = c[q]
            print(f"| {label} | {q} | {x['ref']:.4f} | {x['other']:.4f} | {x['diff']:+.4f} | {x['stat']:.4f} | "
                  f"{x['seed_spread']:.4f} | {x['sigma']:+.1f} |")
            label = ""
    print("\nShower shapes, all splits (mean detailed / mean fast, separation power)\n")
    print("| class | n detailed / fast | " + " | ".join(SHAPES) + " | ATLAS 2012 Tight eff. detailed / fast |")
    print("|---|---|" + "---|" * len(SHAPES) + "---|")
    for cls, row in results["shapes"].items():
        cells = [f"{row[v]['detailed']:.4g} / {row[v]['fast']:.4g} ({row[v]['separation']:.2f})" for v in SHAPES]
        t = row["tight"]
        print(f"| {cls} | {row['n'][0]} / {row['n'][1]} | " + " | ".join(cells)
              + f" | {t['detailed'][0]:.3f} ± {t['detailed'][1]:.3f} / {t['fast'][0]:.3f} ± {t['fast'][1]:.3f} |")


# ----------------------------------------------------------------------------- driver
def parse_events(items: list[str]) -> dict[str, int]:
    from lhcml.tasks.photon.dataset import BACKGROUND_PROCESSES, SIGNAL_PROCESSES

    out = {}
    for item in items:
        proc, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            fail(f"--events takes process=n_events with n >= 1, e.g. gamma_jet=4000, got '{item}'")
        if proc not in SIGNAL_PROCESSES + BACKGROUND_PROCESSES:
            fail(f"--events: '{proc}' is not a photon-ID process ({', '.join(SIGNAL_PROCESSES + BACKGROUND_PROCESSES)})")
        out[proc] = int(n)
    if not set(out) & set(SIGNAL_PROCESSES) or not set(out) & set(BACKGROUND_PROCESSES):
        fail("--events needs a prompt-photon process (gamma_jet) and a fake process (dijet_photon)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("benchmarks/_work/fastcalo_closure"),
                    help="folder of every stage's outputs (resumable)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to run, in order")
    ap.add_argument("--showers", type=int, default=24000, help="generator training showers (16 discrete energies)")
    ap.add_argument("--shower-seed", type=int, default=11)
    ap.add_argument("--generator-config", type=Path, default=Path("configs/fastcalo/fm.yaml"))
    ap.add_argument("--generator-budget-s", type=float, default=1800.0, help="wall-clock training budget")
    ap.add_argument("--events", nargs="+", default=["gamma_jet=8000", "dijet_photon=20000"],
                    help="process=n_events per calo (prompt photons from gamma_jet, fakes from dijet_photon)")
    ap.add_argument("--event-seed", type=int, default=21)
    ap.add_argument("--chunk-events", type=int, default=500, help="events per resumable chunk")
    ap.add_argument("--event-calos", nargs="+", default=list(CALOS), choices=CALOS,
                    help="events stage: the calos to simulate (default both; 'detailed' alone needs no generator)")
    ap.add_argument("--photonid-configs", nargs="+", type=Path,
                    default=[Path("configs/photon/dnn.yaml"), Path("configs/photon/cnn.yaml")])
    ap.add_argument("--train-seeds", nargs="+", type=int, default=[42, 43])
    ap.add_argument("--max-epochs", type=int, default=40, help="photon-ID training epochs at most (early stopping as configs/photon/base.yaml)")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicas of the AUC errors")
    ap.add_argument("--folds", type=int, default=None, metavar="K",
                    help="cross-fitting (K >= 2): datasets also as K folds by event, photonid trains one network per "
                         "fold (tested on that fold of both calos) instead of the 60/20/20 split, evaluate pools the "
                         "out-of-fold scores -> WORK/results_folds<K>.json")
    ap.add_argument("--paired-bootstrap", type=int, default=1000, help="--folds: replicas of the paired event bootstrap")
    ap.add_argument("--impact-eta", action="store_true",
                    help="fast events: tell the generator the |eta| where the shower crosses the strips, not the "
                         "photon direction's (lhcml simulate --calo fast:... --impact-eta)")
    ap.add_argument("--spot-readout", type=float, default=None, metavar="FRACTION",
                    help="events stage: read the generated cells out as the detailed simulation's energy spots "
                         "(lhcml simulate --calo fast:... --spot-readout FRACTION; e.g. 0.05)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    events = parse_events(args.events)
    chunk_plan(events, args.event_seed, args.chunk_events)  # colliding chunk seeds: one message, exit 2, before any stage
    if args.folds is not None and args.folds < 2:
        fail(f"--folds takes K >= 2, got {args.folds}")
    if args.spot_readout is not None:
        from lhcml.errors import ConfigError
        from lhcml.sim.fastcalo import calo_with_spot_readout

        try:  # a bad fraction: one message, exit 2, before any stage runs
            calo_with_spot_readout("fast:generator.onnx", args.spot_readout)
        except ConfigError as e:
            fail(str(e))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if "showers" in args.stages:
        stage_showers(work, args.showers, args.shower_seed, config_eta_range(args.generator_config))
    if "generator" in args.stages:
        stage_generator(work, args.generator_config, args.generator_budget_s)
    if "events" in args.stages:
        onnx = work / "generator.onnx"
        if "fast" in args.event_calos and not onnx.exists():
            fail(f"{onnx} is missing: run the 'generator' stage first")
        stage_events(work, events, args.event_seed, args.chunk_events, onnx, args.spot_readout,
                     tuple(args.event_calos), args.impact_eta)
    if "datasets" in args.stages:
        stage_datasets(work, events, args.event_seed, args.chunk_events)
        if args.folds is not None:
            stage_fold_datasets(work, events, args.event_seed, args.chunk_events, args.folds)
    if "photonid" in args.stages:
        if args.folds is None:
            stage_photonid(work, args.photonid_configs, args.train_seeds, args.max_epochs)
        else:
            stage_photonid_folds(work, args.photonid_configs, args.train_seeds, args.max_epochs, args.folds)
    if "evaluate" in args.stages and args.folds is not None:
        from lhcml.formatting import json_safe

        results = stage_evaluate_folds(work, args.photonid_configs, args.train_seeds, args.folds, args.bootstrap,
                                       args.paired_bootstrap)  # fmt: skip
        results["machine"] = {"host": platform.node(), "cpus": os.cpu_count(), "load": os.getloadavg()}
        results["args"] = {k: str(v) for k, v in vars(args).items()}
        (work / f"results_folds{args.folds}.json").write_text(json.dumps(json_safe(results), indent=1))
        print_fold_tables(results)
        print_tables({"closure": {}, "shapes": results["shapes"]})
    elif "evaluate" in args.stages:
        from lhcml.formatting import json_safe

        results = stage_evaluate(work, args.photonid_configs, args.train_seeds, args.bootstrap)
        results["machine"] = {"host": platform.node(), "cpus": os.cpu_count(), "load": os.getloadavg()}
        results["args"] = {k: str(v) for k, v in vars(args).items()}
        (work / "results.json").write_text(json.dumps(json_safe(results), indent=1))
        print_tables(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
