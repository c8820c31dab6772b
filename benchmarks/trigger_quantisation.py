"""Trigger-latency models: accuracy and AUC vs total bits for float, PTQ and QAT (issue 16).

Runs ``lhcml trigger scan`` (:func:`lhcml.tasks.trigger.scan.run_scan`) on the shipped recipes
``configs/trigger/{jet_substructure_mlp,constituent_deepsets,dl1_mlp}.yaml`` with the inputs
found here, and prints the Markdown table of ``docs/benchmarks/trigger.md``::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/trigger_quantisation.py \\
        --boosted benchmarks/_work/boosted_mc_issue12c/data \\
        --dl1 benchmarks/_work/ftag_v2/pre --work benchmarks/_work/trigger
    python benchmarks/trigger_quantisation.py --work benchmarks/_work/trigger --table-only

``--boosted`` is a folder with the boosted multi-class ``{train,val,test}.h5`` of
``benchmarks/boosted_multiclass.py`` (large-R jets with substructure and constituents): they are
turned into trigger files with ``lhcml trigger dataset`` (:func:`make_trigger_dataset`).
``--dl1`` is a DL1 preprocessing folder (``train.h5``, ``val.h5``, ``test_ttbar.h5``,
``norm_dict.yaml``, the RNNIP outputs among the jet fields, as ``benchmarks/ftag_benchmark.py``
leaves them). Finished trainings are reused: rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from lhcml.tasks.trigger.dataset import make_trigger_dataset
from lhcml.tasks.trigger.scan import run_scan

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "trigger"


def scan_config(work: Path, args: argparse.Namespace) -> Path:
    """The scan config of this benchmark (written into ``work``)."""
    data = work / "data"
    common = [f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false"]
    boosted = [f"data.train_files=[{data / 'train.h5'}]", f"data.val_files=[{data / 'val.h5'}]", *common]
    models: dict[str, dict] = {}
    if args.boosted:
        for name in ("jet_substructure_mlp", "constituent_deepsets"):
            models[name] = {"config": str(CONFIGS / f"{name}.yaml"), "test_files": [str(data / "test.h5")],
                            "set": boosted}  # fmt: skip
        # the same MLP with 50 % of every layer's weights pruned (27 steps per epoch: the schedule
        # reaches 50 % after 15 epochs, pruning once per epoch)
        models["jet_substructure_mlp_pruned50"] = {
            **models["jet_substructure_mlp"], "bits": [4, 6, 8],
            "set": [*boosted, "model.prune_sparsity=0.5", "model.prune_end_step=405", "model.prune_frequency=27"],
        }  # fmt: skip
    if args.dl1:
        d = Path(args.dl1)
        models["dl1_mlp"] = {
            "config": str(CONFIGS / "dl1_mlp.yaml"),
            "test_files": [str(d / "test_ttbar.h5")],
            "set": [f"data.train_files=[{d / 'train.h5'}]", f"data.val_files=[{d / 'val.h5'}]",
                    f"data.norm_dict={d / 'norm_dict.yaml'}", f"data.num_jets_train={args.dl1_jets}",
                    "data.batch_size=512", *common[:1], f"trainer.max_epochs={args.dl1_epochs}",
                    common[1]],
        }  # fmt: skip
    cfg = {"bits": args.bits, "schemes": ["float", "ptq", "qat"], "calibration_jets": 10000, "models": models}
    path = work / "scan.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def table(rows: list[dict]) -> str:
    """Markdown table: one row per (model, scheme, bits), accuracy and the per-class AUCs."""
    aucs = list(dict.fromkeys(k for r in rows for k in r if k.startswith("auc_")))
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cls = [k for k in aucs if k in mine[0]]
        out.append(f"\n**{model}** (test jets: {mine[0]['n_test']})\n")
        out.append("| scheme | bits | accuracy | " + " | ".join(c.replace("auc_", "AUC ") for c in cls)
                   + " | nonzero params | LUT | DSP | latency (ns) |")  # fmt: skip
        out.append("|---|---|---|" + "---|" * len(cls) + "---|---|---|---|")
        for r in mine:
            cells = [r["scheme"], str(r["bits"] or "32 (float)"), f"{r['accuracy']:.4f}",
                     *(f"{r[c]:.4f}" for c in cls), str(r["n_params"]),
                     *(str(r.get(k)) if r.get(k) is not None else "—" for k in ("lut", "dsp", "latency_ns"))]  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "trigger")
    ap.add_argument("--boosted", help="folder with the boosted multi-class {train,val,test}.h5")
    ap.add_argument("--dl1", help="DL1 preprocessing folder (train.h5, val.h5, test_ttbar.h5, norm_dict.yaml)")
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8, 10, 12, 16])
    ap.add_argument("--epochs", type=int, default=30, help="max epochs (early stopping: patience 8)")
    ap.add_argument("--dl1-epochs", type=int, default=15)
    ap.add_argument("--dl1-jets", type=int, default=30000, help="DL1 training jets")
    ap.add_argument("--table-only", action="store_true", help="print the table of a finished scan")
    args = ap.parse_args()
    work = args.work
    if not args.table_only:
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        if args.boosted:
            src = Path(args.boosted)
            make_trigger_dataset([src / f"{s}.h5" for s in ("train", "val", "test")], work / "data", 16)
        rows = run_scan(scan_config(work, args), work / "scan")
        (work / "timing.json").write_text(json.dumps({"wall_s": time.time() - t0}))
    rows = json.loads((work / "scan" / "results.json").read_text())
    print(table(rows))


if __name__ == "__main__":
    main()
