"""The jet-substructure trigger MLP with the hls4ml benchmark's t/W/Z/q/g classes (issue 16).

Fresh ``top_wide``/``wz_wide``/``qcd_wide`` large-R jets (simulated with the large-R
``PartonTruthLabelID``) are merged, split 60/20/20 at random, given their substructure
(:func:`lhcml.tasks.boosted.substructure.add_substructure_to_file`) and turned into trigger files
(:func:`lhcml.tasks.trigger.dataset.make_trigger_dataset`: the 16 benchmark inputs, ``jssTruthLabel``).
Then two ``lhcml trigger scan`` runs:

* ``scan``: ``configs/trigger/jet_substructure_mlp.yaml`` (t/W/Z/q/g, the benchmark's 16 inputs)
  in float, PTQ and QAT at ``--bits``;
* ``controls``: float only, (a) t/W/Z/q/g with the first version's 16 inputs
  (``SUBSTRUCTURE_16``), (b) qcd/top/W/Z (boosted scheme, QCD one class) with the benchmark's
  inputs: what the class change and the input change each do on the same jets; (c) a second
  training seed; (d) the float model tested on the jets with pT > ``--pt-window`` GeV only and
  (e) trained, validated and tested on them (the benchmark's jets have pT ≈ 1 TeV).

::

    # sim/: 1500/1000/1600 events, --seed 16; sim2/: 6000/4000/6000, --seed 17; sim3/: 9000/6000/9000, --seed 18
    for p in qcd_wide=6000 top_wide=4000 wz_wide=6000; do
        OMP_NUM_THREADS=1 nice -n 10 lhcml simulate ${p%=*} -n ${p#*=} --mu 0 --seed 17 \\
            -o benchmarks/_work/trigger_qg/sim2/${p%=*}
    done
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/trigger_qg.py --work benchmarks/_work/trigger_qg \\
        --sim benchmarks/_work/trigger_qg/sim benchmarks/_work/trigger_qg/sim2 benchmarks/_work/trigger_qg/sim3
    python benchmarks/trigger_qg.py --work benchmarks/_work/trigger_qg --table-only

Finished trainings are reused (rerun the same command after an interruption).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from lhcml.data.h5 import write_h5
from lhcml.tasks.boosted.substructure import add_substructure_to_file
from lhcml.tasks.trigger.dataset import (
    JSS_CLASSES,
    SUBSTRUCTURE_16,
    jss_labels,
    make_trigger_dataset,
)
from lhcml.tasks.trigger.scan import run_scan

ROOT = Path(__file__).resolve().parents[1]

PROCESSES = ("qcd_wide", "top_wide", "wz_wide")
CONFIG = ROOT / "configs" / "trigger" / "jet_substructure_mlp.yaml"


def split(sims: list[Path], work: Path, seed: int) -> dict:
    """Merge the shards of every process (QCD: only R10TruthLabel 0), split 60/20/20, add substructure."""
    raw = work / "raw"
    if (raw / "summary.json").exists():
        return json.loads((raw / "summary.json").read_text())
    jets, flow = [], []
    for sim in sims:
        for proc in PROCESSES:
            for f in sorted((sim / proc).glob(f"{proc}_*.h5")):
                with h5py.File(f) as h:
                    j, fl = h["jets"][:], h["flow"][:]
                keep = j["R10TruthLabel"] == 0 if proc == "qcd_wide" else np.ones(len(j), bool)
                jets.append(j[keep])
                flow.append(fl[keep])
    jets, flow = np.concatenate(jets), np.concatenate(flow)
    order = np.random.default_rng(seed).permutation(len(jets))
    jets, flow = jets[order], flow[order]
    n = len(jets)
    raw.mkdir(parents=True, exist_ok=True)
    summary: dict = {"n_jets": n, "pt_gev": [float(jets["pt"].min() / 1e3), float(np.median(jets["pt"]) / 1e3),
                                            float(jets["pt"].max() / 1e3)]}  # fmt: skip
    qcd = jets["R10TruthLabel"] == 0
    pid = jets["PartonTruthLabelID"][qcd]
    summary["qcd_parton_labels"] = {str(k): int(v) for k, v in zip(*np.unique(pid, return_counts=True), strict=True)}
    for name, (a, b) in {"train": (0, int(0.6 * n)), "val": (int(0.6 * n), int(0.8 * n)), "test": (int(0.8 * n), n)}.items():
        p = raw / f"{name}.h5"
        write_h5(p, {"jets": jets[a:b], "flow": flow[a:b]})
        add_substructure_to_file(p, progress=False)  # R = 1 as benchmarks/boosted_multiclass.py
        lab = jss_labels(jets[a:b])
        summary[name] = {c: int((lab == i).sum()) for i, c in enumerate(JSS_CLASSES)} | {"none": int((lab < 0).sum())}
    (raw / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def table(rows: list[dict]) -> str:
    """Markdown table per model: scheme, bits, accuracy, the per-class AUCs, nonzero parameters."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        aucs = [k for k in mine[0] if k.startswith("auc_")]
        out += [f"\n**{model}** (test jets: {mine[0]['n_test']})\n",
                "| scheme | bits | accuracy | " + " | ".join(a.replace("auc_", "AUC ") for a in aucs) + " | nonzero params |",
                "|---|---|---|" + "---|" * len(aucs) + "---|"]  # fmt: skip
        out += ["| " + " | ".join([r["scheme"], str(r["bits"] or "32 (float)"), f"{r['accuracy']:.4f}",
                                   *(f"{r[a]:.4f}" for a in aucs), str(r["n_params"])]) + " |" for r in mine]  # fmt: skip
    return "\n".join(out)


def pt_window(data: Path, out: Path, pt_min_gev: float) -> Path:
    """The trigger files of ``data`` restricted to jets with pT > ``pt_min_gev`` (into ``out``)."""
    if (out / "test.h5").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test"):
        with h5py.File(data / f"{name}.h5") as f:
            keep = f["jets"]["pt"] > pt_min_gev * 1e3
            write_h5(out / f"{name}.h5", {"jets": f["jets"][:][keep], "flow": f["flow"][:][keep]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "trigger_qg")
    ap.add_argument("--sim", type=Path, nargs="*", default=[], help="simulation folders (<process>/ shards inside)")
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8, 10, 12, 16])
    ap.add_argument("--pt-window", type=float, default=800.0, help="lower pT (GeV) of the high-pT controls")
    ap.add_argument("--epochs", type=int, default=30, help="max epochs (early stopping: patience 8)")
    ap.add_argument("--seed", type=int, default=42, help="split seed")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    work: Path = args.work
    if not args.table_only:
        t0 = time.time()
        print(json.dumps(split(args.sim, work, args.seed)), flush=True)
        data = work / "data"
        if not (data / "test.h5").exists():
            make_trigger_dataset([work / "raw" / f"{s}.h5" for s in ("train", "val", "test")], data, 16, progress=False)
        common = [f"data.train_files=[{data / 'train.h5'}]", f"data.val_files=[{data / 'val.h5'}]",
                  f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false"]  # fmt: skip
        test = [str(data / "test.h5")]
        scan = {"bits": args.bits, "schemes": ["float", "ptq", "qat"], "calibration_jets": 10000,
                "models": {"jet_substructure_mlp_tWZqg": {"config": str(CONFIG), "test_files": test, "set": common}}}  # fmt: skip
        old_inputs = "data.inputs.jets=[" + ",".join(SUBSTRUCTURE_16) + "]"
        hi = pt_window(data, work / "data_pt_window", args.pt_window)
        hi_files = [f"data.train_files=[{hi / 'train.h5'}]", f"data.val_files=[{hi / 'val.h5'}]", *common[2:]]
        controls = {"bits": [8], "schemes": ["float"], "models": {
            "tWZqg_first_inputs": {"config": str(CONFIG), "test_files": test, "set": [*common, old_inputs]},
            "qcd_top_W_Z_benchmark_inputs": {"config": str(CONFIG), "test_files": test, "set": [
                *common, "data.label_scheme=boosted", "data.classes=[qcd,top,W,Z]"]},
            "tWZqg_seed43": {"config": str(CONFIG), "test_files": test, "set": [*common, "seed=43"]},
            "tWZqg_tested_pt_window": {"config": str(CONFIG), "test_files": [str(hi / "test.h5")], "set": common},
            "tWZqg_pt_window": {"config": str(CONFIG), "test_files": [str(hi / "test.h5")], "set": hi_files},
        }}  # fmt: skip
        for name, cfg in (("scan", scan), ("controls", controls)):
            path = work / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            run_scan(path, work / name)
        (work / "timing.json").write_text(json.dumps({"wall_s": time.time() - t0}))
    for name in ("scan", "controls"):
        print(table(json.loads((work / name / "results.json").read_text())))


if __name__ == "__main__":
    main()
