"""Rebuild issue 15's fast-calorimeter models and measurements from nothing, resumably, with one command.

The models behind docs/benchmarks/fastcalo.md (thirtieth to thirty-third versions) live in ``benchmarks/_work/``,
which is not in git: a fresh machine has none of them. This script is the documented recipe as one plan of steps,
each a shipped command (``lhcml ...`` or a benchmark script) with the files it writes. A step whose files all exist is
skipped, so a crashed or interrupted rebuild continues where it stopped (a training step resumes from its
``last.ckpt``); each step's output goes to ``benchmarks/_work/fc/logs/STEP.log``.

Stages, in order (``--stages`` picks some; wall times on the shared 2-core box, one thread each):

==========  ===============================================================================================  ========
samples     detailed photons, 0 < abs(eta) < 1.37, 16 energies: training 40 000 (seed 11) + 40 000 (13) ->      ~25 min
            train80k; validation 4 000 (1), 16 000 (31), 20 000 (32), 121 000 (34, the CaloChallenge's
            size); refiner showers 200 000 (3301) + 200 000 (3302) -> train400k
m720        the 720-epoch flow-matching network (configs/fastcalo/fm_strips_ratio_ema_scratch720.yaml)       ~80 min
m2          its 2-step midpoint sampler, the eight ``fs6h`` correction passes (fitted on train80k; the last  ~20 min
            one also as the ONNX graph ``m2_p8.onnx``), the refinement classifier on train3301 and the
            distilled raw-stage classifier (``refine-distill --rounds 4 --epochs 12``)
ft1, ft2    the network trained 2 x 40 epochs more on train400k (``..._ft400k.yaml``, ``..._ft400k2.yaml``),   ~35 min
            each followed by the same sampler, passes, refiner and distillation as m2                        + 20 each
measure     per generator: classifier AUC at 121 000 per class (2 runs; the chain alone, the refiner after    ~70 min
            the chain k = 4, 5, the distilled scoring k = 4, 6) and the time per shower of those graphs; the     each
            chain and distilled graphs in float32 and int8 (``lhcml fastcalo quantize``) at 40 000 per class
==========  ===============================================================================================  ========

Usage::

    python benchmarks/fastcalo_rebuild.py --list                 # every step, done or to do, and its command
    python benchmarks/fastcalo_rebuild.py --stages samples m720  # run the to-do steps of these stages
    python benchmarks/fastcalo_rebuild.py --generators m2        # the samples and everything of one generator
    python benchmarks/fastcalo_rebuild.py                        # everything still to do (~6 h on 2 cores)

Not in the plan: the photon-ID closure (``benchmarks/fastcalo_closure.py``, pre-registered per sample) and the
lean chain; their commands are in docs/benchmarks/fastcalo.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the folders the shipped configs name (configs/fastcalo/fm_strips_ratio_ema_{scratch720,ft400k,ft400k2}.yaml)
FASTCALO = Path("benchmarks/_work/fastcalo")
WORK = Path("benchmarks/_work/fc")
STAGES = ("samples", "m720", "m2", "ft1", "ft2", "measure")
SAMPLE_OPTS = ["--energies", "discrete", "--eta-range", "0,1.37", "--quiet"]
#: generator name -> (its training config, the checkpoint the sampler is made from)
GENERATORS = {
    "m2": ("configs/fastcalo/fm_strips_ratio_ema_scratch720.yaml", WORK / "run720/checkpoints/best-epoch=719.ckpt"),
    "ft1": ("configs/fastcalo/fm_strips_ratio_ema_ft400k.yaml", WORK / "ft/run/checkpoints/best-epoch=39.ckpt"),
    "ft2": ("configs/fastcalo/fm_strips_ratio_ema_ft400k2.yaml", WORK / "ft2/run/checkpoints/best-epoch=39.ckpt"),
}
TRAIN80K = FASTCALO / "train80k/photon_discrete.h5"
REFINER_SHOWERS = WORK / "train3301/photon_discrete.h5"
VAL121K = WORK / "val34/photon_discrete.h5"
#: the thirtieth version's 40 000 validation showers per class (seeds 1, 31, 32)
VAL40K = (FASTCALO / "photons_eta_val/photon_discrete.h5", WORK / "val31/photon_discrete.h5",
          WORK / "val32/photon_discrete.h5")


@dataclass
class Step:
    """One step: a command (``cmd``) or a Python function (``fn``) that writes ``outputs``."""

    name: str
    stage: str
    outputs: tuple[Path, ...]
    cmd: list[str] | None = None
    fn: Callable[[], None] | None = None
    resume: Path | None = None  # a training step: ``--resume`` when this checkpoint exists
    note: str = ""
    generator: str | None = None  # the generator a step builds or measures (None: the samples)

    def done(self, root: Path) -> bool:
        return all((root / p).exists() for p in self.outputs)

    def command(self, root: Path) -> list[str] | None:
        if self.cmd is None:
            return None
        if self.resume is not None and (root / self.resume).exists():
            return [*self.cmd, "--resume"]
        return list(self.cmd)


def _lhcml(*args: str | Path) -> list[str]:
    return ["lhcml", *map(str, args)]


def _merge(sources: list[Path], target: Path) -> Callable[[], None]:
    """Concatenate the shards of several ``fastcalo simulate`` folders into one sample folder."""

    def run() -> None:
        from lhcml.data.calochallenge import write_binning
        from lhcml.sim.fastcalo import voxel_binning
        from lhcml.tasks.fastcalo.dataset import merge_shards, sample_paths

        shards = [s for src in sources for s in sorted((REPO / src / "shards").rglob("*.h5"))]
        if not shards:
            raise SystemExit(f"no shards under {', '.join(map(str, sources))}: run the samples stage")
        binning = voxel_binning("photon", eta_range=(0.0, 1.37))
        paths = sample_paths(REPO / target, "photon", "discrete", None)
        paths["binning"].parent.mkdir(parents=True, exist_ok=True)
        write_binning(binning, paths["binning"])
        seeds = ",".join(src.name for src in sources)
        merge_shards(shards, binning, paths, {"energies": "discrete", "merged_from": seeds}, (0.0, 1.37))

    return run


def _samples() -> list[Step]:
    steps = []
    for seed, n, folder in ((1, 4000, FASTCALO / "photons_eta_val"), (11, 40000, FASTCALO / "photons_eta"),
                            (13, 40000, WORK / "train13"), (31, 16000, WORK / "val31"), (32, 20000, WORK / "val32"),
                            (34, 121000, WORK / "val34"), (3301, 200000, WORK / "train3301"),
                            (3302, 200000, WORK / "train3302")):  # fmt: skip
        shard = "2000" if n <= 40000 else "5000"
        steps.append(Step(f"sample{seed}", "samples", (folder / "photon_discrete.h5",),
                          _lhcml("fastcalo", "simulate", folder, "-n", n, *SAMPLE_OPTS, "--showers-per-shard", shard,
                                 "--seed", seed), note=f"{n} detailed showers, seed {seed}"))  # fmt: skip
    steps.append(Step("train80k", "samples", (TRAIN80K,), fn=_merge([FASTCALO / "photons_eta", WORK / "train13"],
                                                                       TRAIN80K.parent),
                      note="seeds 11 + 13 merged"))  # fmt: skip
    steps.append(Step("train400k", "samples", (WORK / "train400k/photon_discrete.h5",),
                      fn=_merge([WORK / "train3301", WORK / "train3302"], WORK / "train400k"),
                      note="seeds 3301 + 3302 merged"))  # fmt: skip
    return steps


def _training(stage: str, config: str, ckpt: Path, output_dir: Path | None = None) -> Step:
    cmd = _lhcml("train", config) + ([] if output_dir is None else ["--set", f"output_dir={output_dir}"])
    run_dir = ckpt.parent.parent
    return Step(f"train_{stage}", stage, (ckpt,), cmd, resume=run_dir / "checkpoints/last.ckpt",
                note=f"{config} -> {run_dir}")


def _tagged(steps: list[Step], gen: str) -> list[Step]:
    for s in steps:
        s.generator = gen
    return steps


def _post(gen: str, stage: str) -> list[Step]:
    """The sampler, the eight fs6h passes, the refiner and the distilled classifier of one generator."""
    _, ckpt = GENERATORS[gen]
    d = WORK / gen
    s = d / "m2.ckpt"
    q = _lhcml("fastcalo", "quantile-map", s, TRAIN80K)
    passes = [
        ("p2", ["--condition", "layer_energy", "--second-pass"]),
        ("p3", ["--condition", "eta_phase", "--condition-bins", "4", "--condition-layer", "middle"]),
        ("p4", ["--condition", "shower_width", "--condition-bins", "3"]),
        ("p5", ["--layer-energies", "--eta-bins", "3"]),
        ("p6", ["--strip-pass", "--strip-variable", "height", "--eta-bins", "6"]),
        ("p7", ["--strip-pass", "--strip-variable", "core", "--strip-phase-bins", "4", "--strip-phase-from",
                "cluster", "--eta-bins", "6"]),  # fmt: skip
        ("p8", ["--strip-pass", "--strip-variable", "fside", "--strip-eta-max", "0.5", "--eta-bins", "6",
                "--onnx", str(d / "m2_p8.onnx")]),  # fmt: skip
    ]
    steps = [Step(f"{gen}_sampler", stage, (s,),
                  _lhcml("fastcalo", "sampler", ckpt, "-o", s, "--steps", "2", "--solver", "midpoint"),
                  note="2-step midpoint sampler")]  # fmt: skip
    prev = None
    for name, opts in passes:
        out = d / f"m2_{name}.qmap.npz"
        after = [] if prev is None else ["--after", str(prev)]
        outs = (out, d / "m2_p8.onnx") if name == "p8" else (out,)
        steps.append(Step(f"{gen}_{name}", stage, outs, [*q, "-o", str(out), *opts, *after],
                          note="passes 1 + 2" if name == "p2" else f"pass {name[1:]}"))  # fmt: skip
        prev = out
    chain = d / "m2_p8.qmap.npz"
    steps.append(Step(f"{gen}_refiner", stage, (d / "rm.pt",),
                      _lhcml("fastcalo", "refine", s, REFINER_SHOWERS, "--after", chain, "-o", d / "rm.pt"),
                      note="refinement classifier, 200 000 detailed showers (seed 3301)"))  # fmt: skip
    steps.append(Step(f"{gen}_distill", stage, (d / "rmd.pt",),
                      _lhcml("fastcalo", "refine-distill", s, d / "rm.pt", REFINER_SHOWERS, "--after", chain,
                             "-o", d / "rmd.pt", "--rounds", "4", "--epochs", "12"),
                      note="raw-stage student of the refiner"))  # fmt: skip
    return _tagged(steps, gen)


def _measure(gen: str) -> list[Step]:
    d = WORK / gen
    base = [sys.executable, "benchmarks/fastcalo_refine.py", str(d / "m2.ckpt"), "--after", str(d / "m2_p8.qmap.npz"),
            "--teacher", str(d / "rm.pt"), "--student", str(d / "rmd.pt"), "--k-teacher", "4", "5",
            "--k-student", "4", "6"]  # fmt: skip
    int8 = [sys.executable, "benchmarks/fastcalo_int8.py", str(d / "m2.ckpt"), "--after", str(d / "m2_p8.qmap.npz"),
            "--student", str(d / "rmd.pt"), "--work", str(d / "int8")]  # fmt: skip
    return _tagged([
        Step(f"{gen}_auc121k", "measure", (d / "auc121k.json",),
             [*base, "--reference", str(VAL121K), "--runs", "2", "--no-timing", "--work", str(d / "graphs"),
              "--json", str(d / "auc121k.json")], note="classifier AUC, 121 000 per class, 2 runs"),  # fmt: skip
        Step(f"{gen}_timing", "measure", (d / "timing.json",),
             [*base, "--reference", str(FASTCALO / "photons_eta_val/photon_discrete.h5"), "--no-auc", "--rounds", "3",
              "--work", str(d / "graphs"), "--json", str(d / "timing.json")],
             note="ms per shower, batch 10^4, one thread"),  # fmt: skip
        Step(f"{gen}_int8_auc40k", "measure", (d / "int8_auc40k.json",),
             [*int8, "--reference", *map(str, VAL40K), "--k", "1", "4", "8", "--auc", "f32:1", "int8:1", "f32:4",
              "int8:4", "int8:8", "--runs", "2", "--rounds", "0", "--json", str(d / "int8_auc40k.json")],
             note="chain and distilled SIR graphs, float32 against int8 (same noise): AUC at 40 000 per class"),  # fmt: skip
        Step(f"{gen}_int8_timing", "measure", (d / "int8_timing.json",),
             [*int8, "--reference", str(FASTCALO / "photons_eta_val/photon_discrete.h5"), "--k", "1", "4", "6", "8",
              "10", "12", "--rounds", "5", "--json", str(d / "int8_timing.json")],
             note="float32 and int8 graphs, ms per shower, batch 10^4, one thread"),  # fmt: skip
    ], gen)


def plan() -> list[Step]:
    """Every step of the rebuild, in order."""
    steps = _samples()
    steps += _tagged([_training("m720", GENERATORS["m2"][0], GENERATORS["m2"][1], WORK / "run720")], "m2")
    steps += _post("m2", "m2")
    for gen in ("ft1", "ft2"):
        steps += _tagged([_training(gen, *GENERATORS[gen])], gen)
        steps += _post(gen, gen)
    for gen in GENERATORS:
        steps += _measure(gen)
    return steps


def _fmt_cmd(step: Step, root: Path) -> str:
    cmd = step.command(root)
    return shlex.join(cmd) if cmd is not None else f"(python: {step.note})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Stages: " + ", ".join(STAGES))  # fmt: skip
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run (default: all)")
    ap.add_argument("--generators", nargs="+", choices=list(GENERATORS), default=list(GENERATORS),
                    help="generators to build and measure (default: all three; the samples are always planned)")
    ap.add_argument("--list", action="store_true", help="print every step (done / to do) and its command, run nothing")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per step (default 1)")
    ap.add_argument("--root", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    root = args.root.resolve()
    steps = [s for s in plan() if s.stage in args.stages and s.generator in (None, *args.generators)]
    if args.list:
        print(f"{'step':<16} {'stage':<8} {'state':<6} command")
        for s in steps:
            print(f"{s.name:<16} {s.stage:<8} {'done' if s.done(root) else 'to do':<6} {_fmt_cmd(s, root)}")
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    logs = root / WORK / "logs"
    todo = [s for s in steps if not s.done(root)]
    print(f"{len(steps) - len(todo)} of {len(steps)} steps done; {len(todo)} to run", flush=True)
    for i, s in enumerate(todo, 1):
        t0 = time.time()
        print(f"[{i}/{len(todo)}] {s.name}: {s.note} ... ", end="", flush=True)
        if s.fn is not None:
            s.fn()
        else:
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / f"{s.name}.log", "a", encoding="utf-8") as log:
                log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {_fmt_cmd(s, root)}\n")
                log.flush()
                rc = subprocess.call(s.command(root), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                print(f"failed (exit {rc}); see {logs / (s.name + '.log')}", flush=True)
                return rc
        if not s.done(root):
            missing = [str(p) for p in s.outputs if not (root / p).exists()]
            print(f"finished without writing {', '.join(missing)}", flush=True)
            return 1
        print(f"{(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
