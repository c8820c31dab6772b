"""FPGA conversion of the trigger models (issue 16): C-simulation agreement and estimated
resources/latency beside the accuracy of ``benchmarks/trigger_quantisation.py``'s scan.

For every PTQ/QAT row of the scan's ``results.json`` it runs ``lhcml trigger convert``
(:func:`lhcml.tasks.trigger.fpga.convert_checkpoint`: hls4ml project, g++-compiled C simulation
checked bit-exact against the quantised PyTorch model on ``--jets`` test jets, analytic
resource/latency estimate), fills the ``lut``/``dsp``/``ff``/``latency_ns`` columns the scan left
empty (plus ``bram18``, ``latency_cycles``, ``ii``, ``csim_exact``), writes
``<work>/fpga_results.json`` and prints the Markdown table of ``docs/benchmarks/trigger.md``.
With ``--bdt MODEL DATA`` (repeatable) it converts MV2-like BDTs with conifer
(:func:`lhcml.tasks.trigger.fpga.convert_bdt_file`) at ``--bdt-bits`` and in float::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/trigger_fpga.py \\
        --scan benchmarks/_work/trigger/scan --data benchmarks/_work/trigger/data \\
        --work benchmarks/_work/trigger/fpga \\
        --bdt benchmarks/_work/ftag_v2/train/mv2/checkpoints/mv2.json benchmarks/_work/ftag_v2/pre/test_ttbar.h5

PTQ rows are rebuilt from the float checkpoint with the scan's calibration (the first
``calibration_jets`` of the model's training file); test and training files are those of the
scan's ``scan.yaml`` (next to the scan folder), else ``<data>/{test,train}.h5``. Rows of models the
conversion does not support are listed with the reason.
The estimates are analytic (:func:`lhcml.export.hls.estimate_resources`), not synthesis.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import yaml

from lhcml.errors import LhcmlError
from lhcml.tasks.trigger.fpga import convert_bdt_file, convert_checkpoint


def data_files(scan: dict, model: str, default: Path) -> tuple[Path, Path]:
    """(test file, training file) the scan used for ``model`` (its ``scan.yaml``), else ``default``'s."""
    m = scan.get("models", {}).get(model, {})
    test = Path(m["test_files"][0]) if m.get("test_files") else default / "test.h5"
    train = next((Path(v.split("=", 1)[1].strip("[]").split(",")[0]) for v in m.get("set", [])
                  if v.startswith("data.train_files=")), default / "train.h5")  # fmt: skip
    return test, train


def convert_rows(args: argparse.Namespace) -> list[dict]:
    rows = json.loads((args.scan / "results.json").read_text())
    scan_yaml = args.scan.parent / "scan.yaml"
    scan = yaml.safe_load(scan_yaml.read_text()) if scan_yaml.is_file() else {}
    calib_jets = int(scan.get("calibration_jets", 10000))
    out = []
    for r in rows:
        if r["scheme"] == "float" or (args.models and r["model"] not in args.models):
            continue
        test_file, train_file = data_files(scan, r["model"], args.data)
        name = f"{r['model']}_{r['scheme']}{r['bits']}_rf{args.reuse_factor}"
        dest = args.work / name
        if (dest / "report.json").is_file() and json.loads((dest / "report.json").read_text())["checkpoint"] != r["checkpoint"]:
            tag = hashlib.sha1(r["checkpoint"].encode()).hexdigest()[:8]  # retrained since: a new folder
            dest = args.work / f"{name}_{tag}"
        t0 = time.time()
        try:
            if (dest / "report.json").is_file():
                rep = json.loads((dest / "report.json").read_text())
            else:
                rep = convert_checkpoint(
                    r["checkpoint"], dest, test_file, n_jets=args.jets,
                    ptq_bits=r["bits"] if r["scheme"] == "ptq" else None,
                    calibration_file=train_file, calibration_jets=calib_jets,
                    reuse_factor=args.reuse_factor,
                )  # fmt: skip
        except LhcmlError as err:
            out.append({**r, "fpga_error": str(err).split(";")[0]})
            print(f"{name}: not converted ({err})", flush=True)
            continue
        e, a = rep["estimate"], rep["agreement"]
        out.append({**r, "lut": e["lut"], "dsp": e["dsp"], "ff": e["ff"], "bram18": e["bram18"],
                    "latency_cycles": e["latency_cycles"], "latency_ns": e["latency_ns"], "ii": e["ii_cycles"],
                    "csim_exact": a["exact"], "csim_n": a["n"], "csim_max_diff_float32": a["max_abs_diff_float32"],
                    "estimate_method": e["method"]})  # fmt: skip
        print(f"{name}: C-sim exact={a['exact']} on {a['n']} jets, LUT {e['lut']}, DSP {e['dsp']}, "
              f"{e['latency_ns']:.0f} ns ({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    return out


def convert_bdts(args: argparse.Namespace) -> list[dict]:
    out = []
    for i, (model, data) in enumerate(args.bdt or []):
        for bits in (None, *args.bdt_bits):
            dest = args.work / f"bdt{i}_{'float' if bits is None else bits}"
            t0 = time.time()
            if (dest / "report.json").is_file():
                rep = json.loads((dest / "report.json").read_text())
            else:
                rep = convert_bdt_file(model, dest, data, n_jets=args.jets, bits=bits, require=False)
            a, e = rep["agreement"], rep["estimate"]
            out.append({"model_file": model, "precision": rep["precision"], "trees_per_class": rep["n_trees_per_class"],
                        "classes": rep["n_classes"], "n": a["n"], "frac_within_bound": a["frac_within_bound"],
                        "max_abs_diff": a["max_abs_diff"], "argmax_agreement": a["argmax_agreement"],
                        "lut": e["lut"], "ff": e["ff"], "dsp": e["dsp"], "latency_ns": e["latency_ns"],
                        "wall_s": round(time.time() - t0, 1)})  # fmt: skip
            print(f"{dest.name}: {a}", flush=True)
    return out


def table(rows: list[dict], bdts: list[dict]) -> str:
    lines = ["| model | scheme | bits | accuracy | C-sim vs PyTorch | LUT (est.) | FF (est.) | DSP (est.) | "
             "BRAM18 | latency (est.) | II |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    unsupported: dict[str, str] = {}
    for r in rows:
        if "fpga_error" in r:
            unsupported.setdefault(r["model"], r["fpga_error"])
            continue
        exact = f"bit-exact ({r['csim_n']} jets)" if r["csim_exact"] else "DIFFERS"
        lines.append(f"| {r['model']} | {r['scheme']} | {r['bits']} | {r['accuracy']:.4f} | {exact} | {r['lut']} | "
                     f"{r['ff']} | {r['dsp']} | {r['bram18']} | {r['latency_cycles']} cycles = "
                     f"{r['latency_ns']:.0f} ns | {r['ii']} |")  # fmt: skip
    for model, err in unsupported.items():
        lines.append(f"\n{model}: not converted ({err})")
    if bdts:
        lines += ["", "| BDT | precision | trees/class × classes | jets | within rounding bound | top class agrees | "
                  "max |Δ margin| | LUT (est.) | FF (est.) | DSP | latency (est.) |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for b in bdts:
            lines.append(f"| {Path(b['model_file']).parent.parent.name} | {b['precision']} | {b['trees_per_class']} × "
                         f"{b['classes']} | {b['n']} | {b['frac_within_bound']:.4f} | {b['argmax_agreement']:.4f} | "
                         f"{b['max_abs_diff']:.3g} | {b['lut']} | {b['ff']} | {b['dsp']} | {b['latency_ns']:.0f} ns |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scan", type=Path, required=True, help="scan output folder (results.json)")
    p.add_argument("--data", type=Path, required=True,
                   help="folder with train.h5/test.h5, for models the scan's scan.yaml does not name files for")
    p.add_argument("--work", type=Path, required=True, help="folder for the hls4ml/conifer projects")
    p.add_argument("--models", nargs="*", default=[], help="only these scan models")
    p.add_argument("--jets", type=int, default=1000, help="test jets of the C-simulation check")
    p.add_argument("--reuse-factor", type=int, default=1)
    p.add_argument("--bdt", nargs=2, action="append", metavar=("MODEL", "DATA"), help="mv2 model file and a test file")
    p.add_argument("--bdt-bits", type=int, nargs="*", default=[24, 16])
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows, bdts = convert_rows(args), convert_bdts(args)
    (args.work / "fpga_results.json").write_text(json.dumps({"rows": rows, "bdt": bdts}, indent=1) + "\n")
    print(table(rows, bdts))
    print(f"\nwall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
