"""Rebuild the seed-classifier cascade of the ml-seeds+ckf finders from nothing (issue 14).

The shipped finder configs (``configs/tracking/ml_seeds*.yaml``) score their seeds with five classifiers,
shipped as small checkpoints in ``models/tracking/`` (``<name>.ckpt``: the best epoch's weights and the
model's metadata, loaded with ``torch.load(weights_only=True)``). This script makes them again, in order,
one step at a time:

1. simulates the training samples (``lhcml tracking simulate``: ``train_mu200`` seed 1200, 20 events;
   ``train_mu0`` seed 1000, 50 events; ``train_mu50`` seed 1050, 50 events; docs/benchmarks/tracking_data.md);
2. per classifier (``configs/tracking/<name>.yaml``), writes its seed files for the events its training
   config uses -- ``lhcml tracking write-seeds --reco ...`` (the pass's seeding on all hits) or
   ``benchmarks/tracking_pass_seeds.py`` (the seeds a pass of a finder config really sees, which needs the
   classifiers of the earlier passes: hence the order) -- then trains it (``lhcml train``, the config's
   seed 42) and exports the slim checkpoint to ``WORK/export/<name>.ckpt``;
3. compares each exported checkpoint with the shipped one (same tensors?) and, with ``--install``,
   copies the exported ones into ``models/tracking/``.

The last one, ``track_filter``, is not a seed classifier: the track classifier of the track-quality
selection (``lhcml.tasks.tracking.track_quality``). Its training files are the tracks of the finder it serves
(``configs/tracking/ml_seeds_6pass_budget_quality.yaml``, its selection off), written by
``write_track_files`` with the seed classifiers of this rebuild; then it trains like the others.
``track_filter_loose`` is the same classifier retrained on the tracks of a looser finder
(``configs/tracking/ml_seeds_loose_tracks.yaml``: every loosening that was blocked by fakes, so that it sees
their fakes; docs/benchmarks/tracking_fakes.md, nineteenth version).
``track_filter_allpix`` is retrained on the tracks of the finder it serves
(``..._allpix_extcap_tf7.yaml``: the registered all-pixel pass 8 with tracks from 7 measurements and the guarded
wide hit recovery; docs/benchmarks/tracking.md, twenty-first version, tag h21b).

Resumable and idempotent: a sample whose manifest is complete, a seed file that exists (written
atomically), a training run marked done (``WORK/<name>/DONE``) are skipped; an interrupted training
resumes from its ``last.ckpt`` (``lhcml train --resume``: exact). The finder configs that make the seeds
of later passes are used with their checkpoints pointed at the run directories of this rebuild
(``WORK/configs/``), never at the shipped files.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/tracking_models.py \\
        --work benchmarks/_work/tracking_models [--install] [--only seed_filter,seed_filter_pass2]

Bad input (an unknown classifier name): one message, exit code 2.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "tracking"

#: the training samples: (directory name, <mu>, events, seed) -- docs/benchmarks/tracking_data.md
SAMPLES = [("train_mu200", 200, 20, 1200), ("train_mu0", 0, 50, 1000), ("train_mu50", 50, 50, 1050)]


@dataclass(frozen=True)
class Classifier:
    """One classifier of the cascade: its training config and how its seeds are made."""

    name: str  # configs/tracking/<name>.yaml, models/tracking/<name>.ckpt
    reco: str | None = None  # write-seeds --reco (the pass's seeding on all hits); None: ckf.yaml
    finder: str | None = None  # tracking_pass_seeds.py --config (the seeds the pass of this finder sees)
    pass_number: int | None = None  # ... --pass (None: the finder's last pass)
    tracks: bool = False  # track files of ``finder`` (track_quality.write_track_files), not seed files


#: in build order: a finder config that makes seeds needs the classifiers of its earlier passes
CASCADE = [
    Classifier("seed_filter"),
    Classifier("seed_filter_pass2", reco="configs/tracking/ckf_pass2.yaml"),
    Classifier("seed_filter_pass3", reco="configs/tracking/ckf_pass3_lowpt.yaml"),
    Classifier("seed_filter_pass4", finder="configs/tracking/ml_seeds_4pass_budget.yaml"),
    Classifier("seed_filter_pass3l", finder="configs/tracking/ml_seeds_4pass_budget_p4.yaml", pass_number=3),
    Classifier("track_filter", finder="configs/tracking/ml_seeds_6pass_budget_quality.yaml", tracks=True),
    Classifier("track_filter_loose", finder="configs/tracking/ml_seeds_loose_tracks.yaml", tracks=True),
    Classifier("track_filter_allpix", tracks=True,
               finder="configs/tracking/ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7.yaml"),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str]) -> None:
    """Run a command (its output passes through); a failure stops the rebuild."""
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"failed (exit {res.returncode}): {' '.join(cmd)}")
    log(f"  done in {time.perf_counter() - t0:.0f} s")


def lhcml_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lhcml", *args]


# ------------------------------------------------------------------------------------------ samples
def sample_complete(d: Path) -> bool:
    import json

    m = d / "manifest.json"
    return m.is_file() and bool(json.loads(m.read_text()).get("complete"))


def simulate(data: Path) -> None:
    for name, mu, events, seed in SAMPLES:
        d = data / name
        if sample_complete(d):
            log(f"sample {name}: complete, skipped")
            continue
        run(lhcml_cmd("tracking", "simulate", "ttbar", "--mu", str(mu), "--events", str(events), "--seed", str(seed),
                      "--out", str(d)))  # resumes an interrupted run shard by shard


# ------------------------------------------------------------------------------------------- seeds
def training_config(name: str) -> Any:
    """The resolved training config of ``configs/tracking/<name>.yaml``."""
    from lhcml.config import resolve_bases
    from lhcml.train.tracking import tracking_config_from_dict

    return tracking_config_from_dict(resolve_bases(ROOT / "configs" / "tracking" / f"{name}.yaml"), source=name)


def seed_events(cfg: Any, data: Path) -> dict[Path, list[int]]:
    """``{sample directory: events}`` whose seed files the training config reads (training + validation)."""
    out: dict[Path, set[int]] = {}
    for dirs, events in ((cfg.data.train_dir, cfg.data.train_events), (cfg.data.val_dir, cfg.data.val_events)):
        if isinstance(dirs, str):
            dirs, per = [dirs], [events]
        else:
            per = [None] * len(dirs) if events is None else list(events)
        for d, ev in zip(dirs, per, strict=True):
            sample = data / Path(d).name  # the config names benchmarks/_work/tracking/<sample>
            if ev is None:
                from lhcml.data.trackml import list_events

                ev = list(list_events(sample))
            out.setdefault(sample, set()).update(int(e) for e in ev)
    return {d: sorted(e) for d, e in out.items()}


def missing_seed_files(sample: Path, events: list[int], seed_name: str) -> list[int]:
    from lhcml.models.tracking.seed_filter import seed_file

    return [e for e in events if not seed_file(str(sample / "trackml" / f"event{e:09d}"), e, seed_name).is_file()]


def finder_config(c: Classifier, work: Path) -> Path:
    """``c.finder`` resolved, its classifiers pointed at this rebuild's run directories."""
    import yaml

    from lhcml.tasks.tracking.seed_filter import load_ml_seeds_config

    cfg = load_ml_seeds_config(ROOT / str(c.finder)).model_dump(mode="json")

    def here(ckpt: str | None) -> str | None:
        if ckpt is None:
            return None
        name = Path(ckpt).stem if ckpt.endswith(".ckpt") else Path(ckpt).name
        if not (work / name / "DONE").is_file():
            raise SystemExit(f"{c.finder} needs the classifier {name} ({ckpt}), not rebuilt yet: build it first")
        return str(work / name)

    cfg["checkpoint"] = here(cfg["checkpoint"])
    cfg["second_pass_checkpoint"] = here(cfg["second_pass_checkpoint"])
    for p in cfg["more_passes"]:
        p["checkpoint"] = here(p["checkpoint"])
    cfg["track_selection"] = None  # the track files of track_filter are the tracks before any selection
    path = work / "configs" / Path(str(c.finder)).name
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# {c.finder} resolved, checkpoints of this rebuild ({work}); written by benchmarks/tracking_models.py\n"
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_tracks(c: Classifier, cfg: Any, data: Path, work: Path) -> None:
    """The track files of the track classifier: its finder's tracks (selection off) of the events it trains on."""
    from lhcml.models.tracking.track_filter import track_file
    from lhcml.tasks.tracking.track_quality import write_track_files

    name = cfg.data.prepare["tracks"]
    for sample, events in seed_events(cfg, data).items():
        todo = [e for e in events if not track_file(str(sample / "trackml" / f"event{e:09d}"), e, name).is_file()]
        if not todo:
            log(f"{c.name}: tracks-{name} of {sample.name} ({len(events)} events) complete, skipped")
            continue
        finder = finder_config(c, work)
        for e in todo:  # one event at a time, each file written atomically: resumable
            t0 = time.perf_counter()
            write_track_files(sample, name, [e], finder)
            log(f"{c.name}: tracks-{name} of {sample.name} event {e} in {time.perf_counter() - t0:.0f} s")


def write_seeds(c: Classifier, cfg: Any, data: Path, work: Path) -> None:
    if c.tracks:
        write_tracks(c, cfg, data, work)
        return
    seed_name = cfg.data.prepare["seeds"]
    for sample, events in seed_events(cfg, data).items():
        todo = missing_seed_files(sample, events, seed_name)
        if not todo:
            log(f"{c.name}: seeds-{seed_name} of {sample.name} ({len(events)} events) complete, skipped")
            continue
        spec = ",".join(str(e) for e in todo)
        if c.finder is None:
            cmd = lhcml_cmd("tracking", "write-seeds", str(sample), "--name", seed_name, "--events", spec)
            cmd += ["--reco", c.reco] if c.reco else []
        else:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "tracking_pass_seeds.py"), str(sample), "--name", seed_name,
                   "--events", spec, "--config", str(finder_config(c, work))]  # fmt: skip
            cmd += ["--pass", str(c.pass_number)] if c.pass_number else []
        run(cmd)
        left = missing_seed_files(sample, events, seed_name)
        if left:
            raise SystemExit(f"{c.name}: seed files of events {left} of {sample} were not written")


# ----------------------------------------------------------------------------------------- training
def train(c: Classifier, work: Path, data: Path) -> Path:
    run_dir = work / c.name
    if (run_dir / "DONE").is_file():
        log(f"{c.name}: trained, skipped ({run_dir})")
        return run_dir
    sets = [f"output_dir={run_dir}"]
    if data != ROOT / "benchmarks" / "_work" / "tracking":  # the configs name the default sample folder
        cfg = training_config(c.name)
        for key in ("train_dir", "val_dir"):
            dirs = getattr(cfg.data, key)
            dirs = [dirs] if isinstance(dirs, str) else dirs
            sets.append(f"data.{key}=[{','.join(str(data / Path(d).name) for d in dirs)}]")
    cmd = lhcml_cmd("train", str(ROOT / "configs" / "tracking" / f"{c.name}.yaml"))
    for s in sets:
        cmd += ["--set", s]
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        cmd.append("--resume")  # an interrupted run goes on exactly where it stopped
    run(cmd)
    (run_dir / "DONE").write_text(time.strftime("%Y-%m-%d %H:%M:%S UTC\n", time.gmtime()))
    return run_dir


def best_checkpoint(run_dir: Path) -> Path:
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    if not best:
        raise SystemExit(f"no best-*.ckpt in {run_dir / 'checkpoints'}")
    return best[-1]


def export(run_dir: Path, out: Path) -> dict[str, Any]:
    """The slim checkpoint of a run's best epoch: the model's tensors and the lhcml metadata (plain data)."""
    import torch

    from lhcml.atomic import atomic_write_bytes
    from lhcml.train.checkpoint import read_checkpoint

    src = best_checkpoint(run_dir)
    ckpt = read_checkpoint(src)  # weights_only=True
    state = {k: v.detach().clone().contiguous() for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    meta = {str(k): v for k, v in ckpt["lhcml"].items()}
    meta["best_checkpoint"] = f"{src.name} of `lhcml train configs/tracking/{run_dir.name}.yaml`"
    meta["rebuild"] = "python benchmarks/tracking_models.py (docs/tracking.md)"
    buf = io.BytesIO()  # saved in memory: the archive's inner names then do not depend on a temporary's name
    torch.save({"state_dict": state, "lhcml": meta}, buf)
    atomic_write_bytes(out, buf.getvalue())
    return {"epoch": src.stem, "bytes": out.stat().st_size, "val_loss": best_val_loss(run_dir)}


def best_val_loss(run_dir: Path) -> str:
    """The lowest ``val_loss`` of the run's ``logs/metrics.csv`` (and its epoch), as text."""
    import csv

    rows = []
    for f in sorted(run_dir.glob("logs/**/metrics.csv")):
        with f.open() as fh:
            rows += [r for r in csv.DictReader(fh) if r.get("val_loss")]
    if not rows:
        return "?"
    best = min(rows, key=lambda r: float(r["val_loss"]))
    return f"{float(best['val_loss']):.4f} (epoch {best.get('epoch', '?')} of {len({r.get('epoch') for r in rows})})"


def same_tensors(a: Path, b: Path) -> str:
    import torch

    if not b.is_file():
        return "no shipped file"
    sa = torch.load(a, map_location="cpu", weights_only=True)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=True)["state_dict"]
    if sa.keys() != sb.keys():
        return "different tensors"
    diff = max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)
    return "identical" if diff == 0.0 else f"differs (max |delta| {diff:.3g})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))  # fmt: skip
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/_work/tracking_models",
                    help="training runs, exported checkpoints and resolved finder configs (default: %(default)s)")
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks/_work/tracking",
                    help="the training samples' folder (default: %(default)s, where the training configs look)")
    ap.add_argument("--only", default=None, help=f"comma-separated classifiers (default all: {', '.join(c.name for c in CASCADE)})")
    ap.add_argument("--install", action="store_true", help="copy the exported checkpoints into models/tracking/")
    args = ap.parse_args(argv)
    names = [c.name for c in CASCADE]
    only = names if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [n for n in only if n not in names]
    if bad:
        print(f"error: unknown classifier(s) {', '.join(bad)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    work, data = args.work.resolve(), args.data.resolve()
    t0 = time.perf_counter()
    log(f"rebuild of {', '.join(only)} in {work} (samples in {data})")
    simulate(data)
    rows = []
    for c in CASCADE:
        if c.name not in only:
            continue
        cfg = training_config(c.name)
        write_seeds(c, cfg, data, work)
        run_dir = train(c, work, data)
        out = work / "export" / f"{c.name}.ckpt"
        info = export(run_dir, out)
        rows.append((c.name, info["epoch"], info["val_loss"], info["bytes"], same_tensors(out, SHIPPED / f"{c.name}.ckpt")))
        log(f"{c.name}: exported {out} ({info['epoch']}, {info['bytes']} bytes)")
    if args.install:
        SHIPPED.mkdir(parents=True, exist_ok=True)
        for name, *_ in rows:
            shutil.copyfile(work / "export" / f"{name}.ckpt", SHIPPED / f"{name}.ckpt")
        log(f"installed {len(rows)} checkpoint(s) into {SHIPPED}")
    print("\n| classifier | best checkpoint | validation loss | bytes | vs models/tracking/ (before --install) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    log(f"all done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
