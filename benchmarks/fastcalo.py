"""Fast-calorimeter generators benchmarked the CaloChallenge way: fidelity and speed per model.

For every trained model in ``--models`` (a directory holding one training output directory per
model, ``<name>/checkpoints/best-*.ckpt`` as ``lhcml train configs/fastcalo/<name>.yaml`` writes
them, or bare ``<name>.ckpt`` files):

1. generate as many showers as the reference (detailed) sample holds, at its incident energies
   (``FastCaloGenerator.generate``, seeded; a model conditioned on |η| also at the reference's
   |η|: its ``incident_eta``, or uniform draws in the file's ``eta_min``-``eta_max``; timed at
   |η| = 0.225), and compare them with
   :func:`lhcml.tasks.fastcalo.evaluate.evaluate_showers`: separation powers of the
   high-level features, FPD/KPD, the classifier test (low and high level, ``--runs`` runs each),
   the photon-ID shower shapes; ``--output/<model>/report.html`` and ``results.json``;
2. export the sampling graph (:func:`lhcml.export.fastcalo.export_generator`, onnxruntime agreement
   asserted) unless ``<name>.onnx`` sits beside the checkpoint; with ``--lean-onnx`` the lean graph
   of a flow-matching model (:mod:`lhcml.export.fastcalo_lean`, ``<name>_lean.onnx``; the same
   function with fewer decoding operations);
3. time the generation per shower at 65 GeV at batch 1, 100 and 10^4 on **one CPU thread**, with
   PyTorch (``torch.set_num_threads(1)``, inference mode) and ONNX Runtime
   (``intra_op_num_threads = inter_op_num_threads = 1``): the median of ``--repeats`` timed calls
   after one warm-up call, divided by the batch;
4. the speed-up over the detailed simulation at 65 GeV, whose time per shower comes from
   ``--detailed-time`` (the JSON of ``lhcml fastcalo time-detailed -o``) or is measured
   here with the same function.

Prints one table (and writes ``--output/results.json``). Published anchors are in
``docs/references.md §9, §15`` and beside the numbers in ``docs/benchmarks/fastcalo.md``.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/fastcalo.py \\
        --models benchmarks/_work/fastcalo/models --reference benchmarks/_work/fastcalo/test/photon_discrete.h5 \\
        --binning benchmarks/_work/fastcalo/binning_photon.xml --output benchmarks/_work/fastcalo/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from lhcml.formatting import json_safe

#: incident energy of the timing and of the speed-up (the seed talk's 65 GeV photon, §9)
TIMING_ENERGY_GEV = 65.0
BATCHES = (1, 100, 10_000)


def find_checkpoints(models: Path) -> dict[str, Path]:
    """``{model name: checkpoint}`` in ``models`` (sub-directories with ``checkpoints/best-*.ckpt``,
    or ``<name>.ckpt`` files)."""
    found: dict[str, Path] = {}
    for p in sorted(models.iterdir()):
        if p.is_dir():
            best = sorted((p / "checkpoints").glob("best-*.ckpt"))
            if best:
                found[p.name] = best[-1]
        elif p.suffix == ".ckpt":
            found[p.stem] = p
    return found


def _median_time(call: Any, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_generation(model: Any, onnx_path: Path | None, repeats: int) -> dict[str, dict[int, float]]:
    """Seconds per shower at 65 GeV per batch size, ``{"torch": {...}, "onnx": {...}}``, one thread."""
    import torch

    torch.set_num_threads(1)
    out: dict[str, dict[int, float]] = {"torch": {}, "onnx": {}}
    sess = None
    if onnx_path is not None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for b in BATCHES:
        e = torch.full((b,), TIMING_ENERGY_GEV)
        noise = model.draw_noise(b, g)
        # an eta-conditioned model at the timing eta of the ATLAS slice (0.225)
        cond = (torch.full((b,), 0.225),) if model.conditions_on_eta else ()
        # a model told phi (model.phi_cells) at phi uniform in -pi..pi, as the detailed photons
        phi = torch.rand(b, generator=g) * (2 * np.pi) - np.pi if getattr(model, "conditions_on_phi", False) else None
        if phi is not None:
            cond = (cond[0] if cond else None, phi)
        # batch 10^4: timed calls after the smaller batches' warm-up, no extra warm-up call (a
        # slow model takes tens of seconds per call on the shared machine)
        big = b >= 10_000
        reps = max(1, repeats // 25) if big else repeats
        with torch.inference_mode():
            out["torch"][b] = _median_time(lambda e=e, noise=noise, cond=cond: model.sample(e, noise, *cond), reps,
                                           not big) / b  # fmt: skip
        if sess is not None:
            feeds = {"incident_energy": e[:, None].numpy(), "noise": noise.numpy()}
            if cond and cond[0] is not None:
                feeds["eta"] = cond[0][:, None].numpy()
            if phi is not None:
                feeds["phi"] = phi[:, None].numpy()
            out["onnx"][b] = _median_time(lambda feeds=feeds: sess.run(None, feeds), reps, not big) / b
    return out


def time_correction(model: Any, corr: Any, repeats: int) -> float:
    """Milliseconds per shower of applying ``corr`` (a quantile correction) to 10^4 showers of ``model`` at
    65 GeV (|η| 0.225), one thread: the median of ``max(1, repeats // 25)`` calls after one warm-up."""
    import torch

    torch.set_num_threads(1)
    n = 10_000
    g = torch.Generator().manual_seed(0)
    e = torch.full((n,), TIMING_ENERGY_GEV)
    eta = torch.full((n,), 0.225) if model.conditions_on_eta else None
    phi = torch.rand(n, generator=g) * (2 * np.pi) - np.pi if getattr(model, "conditions_on_phi", False) else None
    with torch.inference_mode():
        showers = model.generate(e, generator=g, eta=eta, phi=phi).numpy()
    e_np, eta_np = e.numpy(), None if eta is None else eta.numpy()
    return _median_time(lambda: corr.apply(showers, e_np, eta_np), max(1, repeats // 25)) / n * 1e3


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=Path("benchmarks/_work/fastcalo/models"))
    ap.add_argument("--reference", type=Path, nargs="+", required=True,
                    help="detailed showers never trained on; several files are read as one sample, in the order "
                         "given (a larger validation: the classifier's showers per class are in the table)")
    ap.add_argument("--binning", type=Path, required=True)
    ap.add_argument("--output", type=Path, default=Path("benchmarks/_work/fastcalo/bench"))
    ap.add_argument("--only", nargs="*", default=None, help="model names to run (default: all found)")
    ap.add_argument("--runs", type=int, default=5, help="classifier runs per level (>= 5 as the issue)")
    ap.add_argument("--epochs", type=int, default=50, help="classifier epochs (early stopping inside)")
    ap.add_argument("--max-showers", type=int, default=None, help="cut the reference sample (the files together)")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls at batch 1 and 100 (10^4: repeats // 25, at least 1)")
    ap.add_argument("--detailed-time", type=Path, default=None, help="JSON of lhcml fastcalo time-detailed")
    ap.add_argument("--detailed-showers", type=int, default=100, help="showers to time if no JSON is given")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threshold-mev", type=float, default=0.0,
                    help="set generated voxels below this to zero before the evaluation (0: none)")
    ap.add_argument("--spot-readout", type=float, default=None, metavar="FRACTION",
                    help="read generated cells as the detailed simulation's energy spots "
                         "(lhcml.tasks.fastcalo.readout.SpotReadout, threshold at this quantile of one spot's "
                         "energy, e.g. 0.05); default: the generator's showers as they come")
    ap.add_argument("--quantile-correction", action="store_true",
                    help="apply each model's per-cell quantile correction (<checkpoint>.qmap.npz beside it, from "
                         "lhcml fastcalo quantile-map) to its generated showers; timing: the correction's cost "
                         "at batch 10^4 is reported separately (ms_correction_1e4)")
    ap.add_argument("--no-timing", action="store_true", help="fidelity only (no export, no timing)")
    ap.add_argument("--lean-onnx", action="store_true",
                    help="time the lean ONNX graph of flow-matching models (lhcml.export.fastcalo_lean)")
    args = ap.parse_args(argv)

    from lhcml.data.calochallenge import concat_samples, read_binning, read_showers
    from lhcml.export.fastcalo import export_generator
    from lhcml.export.fastcalo_lean import supports_lean
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.tasks.fastcalo.evaluate import evaluate_showers
    from lhcml.tasks.fastcalo.readout import SpotReadout
    from lhcml.train.fastcalo import load_generator

    t_start = time.time()
    args.output.mkdir(parents=True, exist_ok=True)
    binning = read_binning(args.binning)
    if len(args.reference) == 1:
        ref = read_showers(args.reference[0], binning, max_showers=args.max_showers)
    else:
        ref = concat_samples([read_showers(p, binning) for p in args.reference])
        ref = ref if args.max_showers is None else ref.subset(slice(0, args.max_showers))
    if args.detailed_time is not None:
        detailed = json.loads(args.detailed_time.read_text())
    else:
        from lhcml.tasks.fastcalo.dataset import time_detailed

        detailed = time_detailed("photon", TIMING_ENERGY_GEV, args.detailed_showers)
    t_det = float(detailed["s_per_shower"])
    readout = None if args.spot_readout is None else SpotReadout.from_geometry(fraction=args.spot_readout)
    ckpts = find_checkpoints(args.models)
    if args.only:
        ckpts = {k: v for k, v in ckpts.items() if k in args.only}
    if not ckpts:
        raise SystemExit(f"no checkpoints in {args.models}")
    results: dict[str, Any] = {
        "reference": str(args.reference[0]) if len(args.reference) == 1 else [str(p) for p in args.reference],
        "n_reference": len(ref), "binning_sha256": binning.sha256,
        "detailed": detailed, "machine": f"{platform.machine()} {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f} at start", "command": "python benchmarks/fastcalo.py " + " ".join(argv or []),
        "threshold_mev": args.threshold_mev, "spot_readout": None if readout is None else {
            "fraction": args.spot_readout, "threshold_mev": readout.threshold_gev * 1e3,
            "spot_mev": readout.spot_gev * 1e3, "shape": readout.shape}, "models": {},
    }  # fmt: skip
    for name, ckpt in ckpts.items():
        t0 = time.time()
        model, meta = load_generator(ckpt)
        print(f"[{name}] {ckpt} ({sum(p.numel() for p in model.parameters())} parameters)", flush=True)
        lean = args.lean_onnx and supports_lean(model)
        onnx_path = ckpt.parent / f"{name}{'_lean' if lean else ''}.onnx"
        if not onnx_path.is_file() and not args.no_timing:
            onnx_path = args.output / onnx_path.name
            if not onnx_path.is_file():
                export_generator(model, onnx_path, binning_file_sha256=binning.sha256, particle=binning.particle,
                                 timing=False, atol=getattr(model, "onnx_atol", 1e-5), lean=lean)  # fmt: skip
        corr = None
        if args.quantile_correction:
            from lhcml.models.fastcalo.quantile_map import QuantileCorrection, correction_path

            corr_file = correction_path(ckpt)
            corr = QuantileCorrection.load(corr_file)
            corr.check_model(model, str(corr_file))
        gen = generate_sample(model, ref, args.seed, threshold_gev=args.threshold_mev * 1e-3, readout=readout,
                              correction=corr)  # fmt: skip
        ev = evaluate_showers(ref, gen, binning, args.output / name, n_runs=args.runs, epochs=args.epochs,
                              seed=args.seed, labels=("detailed", name))  # fmt: skip
        timing = {"torch": {}, "onnx": {}} if args.no_timing else time_generation(model, onnx_path, args.repeats)
        t_corr = None if corr is None or args.no_timing else time_correction(model, corr, args.repeats)
        best = min(timing["onnx"].get(10_000, np.inf), timing["torch"].get(10_000, np.inf))
        results["models"][name] = {
            "checkpoint": str(ckpt), "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "noise_dim": int(model.noise_dim), "auc_low": ev["classifier"]["low"]["auc"],
            "auc_high": ev["classifier"]["high"]["auc"], "jsd_low": ev["classifier"]["low"]["jsd"],
            "n_per_class": {lv: ev["classifier"][lv]["n_per_class"] for lv in ("low", "high")},
            "jsd_high": ev["classifier"]["high"]["jsd"], "fpd": ev["fpd"], "kpd": ev["kpd"],
            "separation_summary": ev["separation_summary"], "separation_powers": ev["separation_powers"],
            "shower_shapes": ev.get("shower_shapes"), "ms_per_shower": {
                k: {str(b): v * 1e3 for b, v in d.items()} for k, d in timing.items()},
            "speedup_batch_1e4": t_det / best, "wall_s": time.time() - t0,
            "quantile_correction": None if corr is None else {"file": str(corr_file), "meta": corr.meta,
                                                              "ms_correction_1e4": t_corr},
            "onnx_graph": None if args.no_timing else ("lean" if lean else "traced"),
        }  # fmt: skip
        print(f"[{name}] done in {time.time() - t0:.0f} s", flush=True)
    results["wall_s"] = time.time() - t_start
    (args.output / "results.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    print_table(results)
    return results


def print_table(results: dict[str, Any]) -> None:
    """The benchmark table (markdown) on stdout."""
    t_det = results["detailed"]["s_per_shower"] * 1e3
    print(f"\nreference: {results['reference']} ({results['n_reference']} showers); detailed simulation "
          f"{t_det:.1f} ms/shower at 65 GeV; {results['machine']}")  # fmt: skip
    print("| model | AUC low | AUC high | showers per class | FPD | KPD | mean sep. power | ms/shower torch b=1/100/10^4 "
          "| ms/shower ONNX b=1/100/10^4 | speed-up (b=10^4) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results["models"].items():
        def speedup(r=r) -> str:
            return f"{r['speedup_batch_1e4']:.0f}×" if r["speedup_batch_1e4"] > 0 else "—"

        def n_per_class(r=r) -> str:
            n = r.get("n_per_class", {})  # results.json written before the field: unknown
            return " / ".join(dict.fromkeys(str(v) for v in n.values())) if n else "—"

        def ms(kind: str, r=r) -> str:
            d = r["ms_per_shower"][kind]
            return " / ".join(f"{d[str(b)]:.3g}" for b in BATCHES) if d else "—"

        print(f"| {name} | {r['auc_low']['mean']:.3f} ± {r['auc_low']['std']:.3f} | {r['auc_high']['mean']:.3f} ± "
              f"{r['auc_high']['std']:.3f} | {n_per_class(r)} | {r['fpd']['value']:.3g} ± {r['fpd']['error']:.2g} | "
              f"{r['kpd']['value']:.2g} ± {r['kpd']['error']:.1g} | {r['separation_summary']['mean']:.4f} | "
              f"{ms('torch')} | {ms('onnx')} | {speedup(r)} |")  # fmt: skip


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
