"""The main job at small scale: the flavour-tagging chain end to end, with a report.

``make demo`` runs ``python -m lhcml.demo --output demo_output``:

1. simulate tt̄ events at ⟨μ⟩ = 20 (Pythia 8 + the parametric detector), validation plots;
2. fit the IP2D/IP3D/SV1 templates on the training split, add the baseline taggers to all jets;
3. preprocess (resampling to common (pT, |η|) spectra, split by ``eventNumber % 10``,
   normalisation and class dictionaries);
4. train DL1 and the GN-style transformer briefly;
5. predict, evaluate (working points, rejections, ROC, rejection vs pT), export both to ONNX
   (checked against torch with onnxruntime), and write the HTML report.

Each step is skipped when its output already exists, so an interrupted demo picks up where it
stopped. The same functions are what the ``lhcml`` subcommands call.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

# numpy, yaml and the stages are imported inside the functions: `lhcml --help` imports this
# module to register `lhcml demo` and must stay fast


class _Steps:
    def __init__(self, n: int) -> None:
        self.n, self.i, self.t0 = n, 0, time.time()

    def __call__(self, title: str) -> None:
        self.i += 1
        print(f"\n[{self.i}/{self.n}] {title}  (t = {time.time() - self.t0:.0f} s)", flush=True)


def _training_split(files: list[Path], out: Path, train_mod: tuple[int, ...]) -> Path:
    """Copy the jets of the training split (``eventNumber % 10``) into one file (template fit)."""
    import numpy as np

    from lhcml.data.h5 import open_h5, write_h5

    if out.exists():
        return out
    tables: dict[str, list[np.ndarray]] = {"jets": [], "tracks": []}
    for f in files:
        with open_h5(f) as h:
            jets, tracks = h["jets"][:], h["tracks"][:]
        keep = np.isin(jets["eventNumber"] % 10, train_mod)
        tables["jets"].append(jets[keep])
        tables["tracks"].append(tracks[keep])
    return write_h5(out, {k: np.concatenate(v) for k, v in tables.items()})


def run_demo(
    output: str | Path = "demo_output",
    n_events: int = 3000,
    mu: float = 20.0,
    seed: int = 1,
    workers: int = 2,
    dl1_epochs: int = 20,
    gn_epochs: int = 12,
) -> Path:
    """Run the small end-to-end flavour-tagging chain; return the report path."""
    import yaml

    from lhcml.config import deep_merge, read_yaml, resolve_bases, shipped_configs_dir
    from lhcml.data.files import expand_inputs
    from lhcml.data.preprocess import PreprocessConfig, preprocess
    from lhcml.evaluation import EvaluateConfig, evaluate
    from lhcml.export import export_model
    from lhcml.plots.report import build_index, build_report
    from lhcml.sim.runner import run_simulation
    from lhcml.tasks.ftag.baselines import apply_baselines, fit_baselines
    from lhcml.train.config import load_train_config
    from lhcml.train.predict import predict
    from lhcml.train.trainer import train
    from lhcml.validation import validate_simulation

    cfgs = shipped_configs_dir()  # package data when installed, configs/ in a checkout
    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    step = _Steps(9)

    step(f"simulate {n_events} tt̄ events at <mu> = {mu:g} ({workers} workers)")
    sim_dir = out / "sim" / "ttbar"
    files = run_simulation("ttbar", n_events, mu, seed, sim_dir, events_per_shard=max(100, n_events // 4),
                           workers=workers)  # fmt: skip
    validate_simulation(sim_dir, out / "validation")

    step("baseline taggers: fit IP2D/IP3D/SV1 templates on the training split, apply to all jets")
    pre_raw = deep_merge(resolve_bases(cfgs / "ftag" / "preprocess_dl1.yaml"), {
        "output_dir": str(out / "preprocessed"),
        "samples": {"ttbar": {"inputs": [str(sim_dir / "ttbar_*.h5")], "cuts": []}},
        "resampling": resolve_bases(cfgs / "ftag" / "preprocess_tiny.yaml")["resampling"],
        "batch_size": 2000, "shuffle_buffer": 5000,
        # a larger test share than the default 10 %, so the demo's rejections mean something
        "split": {"modulus": 10, "train": [0, 1, 2, 3, 4, 5], "val": [6], "test": [7, 8, 9]},
    })  # fmt: skip
    pre_raw["samples"] = {"ttbar": pre_raw["samples"]["ttbar"]}
    pre_cfg = PreprocessConfig.model_validate(pre_raw)
    templates = out / "baselines" / "templates.h5"
    if not templates.exists():
        fit_file = _training_split(files, out / "baselines" / "template_fit_jets.h5", tuple(pre_cfg.split.train))
        fit_baselines([fit_file], templates)
    marker = out / "baselines" / ".applied"
    if not marker.exists():
        apply_baselines(templates, files)
        marker.write_text("ok\n")

    step("preprocess: resample b/c/light to common (pT, |eta|), split, normalise")
    paths = preprocess(pre_cfg)
    pre = out / "preprocessed"
    test_file = expand_inputs(str(pre / "test_*.h5"))[0]

    trained: dict[str, Path] = {}
    for name, cfg_file, epochs, extra in (
        ("DL1", "dl1.yaml", dl1_epochs, []),
        # a smaller GN than configs/ftag/gn.yaml, so that it trains in minutes on 2 CPU cores
        ("GN", "gn.yaml", gn_epochs, ["model.embed_dim=64", "model.num_layers=3", "model.num_heads=4",
                                      "model.init_hidden=[64]", "model.origin_hidden=[64]",
                                      "model.vertex_hidden=[64]", "model.jet_hidden=[64, 32]"]),
    ):
        step(f"train {name} ({epochs} epochs)")
        run_dir = out / "training" / name
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt")) if run_dir.exists() else []
        if best:
            trained[name] = best[-1]
            print(f"  found {best[-1]}, skipping")
            continue
        cfg = load_train_config(cfgs / "ftag" / cfg_file, overrides=[
            f"data.train_files=[{paths.get('train', pre / 'train.h5')}]",
            f"data.val_files=[{paths.get('val', pre / 'val.h5')}]",
            f"data.norm_dict={pre / 'norm_dict.yaml'}",
            "data.batch_size=256",
            f"trainer.max_epochs={epochs}",
            "trainer.patience=null",
            f"output_dir={run_dir}",
            f"tagger_name={name}",
            *extra,
        ])  # fmt: skip
        trained[name] = train(cfg)

    step("predict: write DL1_p* and GN_p* into the test jets")
    pred_dir = out / "predictions"
    pred_file = pred_dir / test_file.name
    if not pred_file.exists():
        tmp_dir = pred_dir / ".tmp"
        first = predict(trained["DL1"], [test_file], tagger_name="DL1", output_dir=tmp_dir)[0]
        predict(trained["GN"], [first], tagger_name="GN", output_dir=pred_dir)
        first.unlink()
        tmp_dir.rmdir()

    step("evaluate: working points, rejections, ROC curves, rejection vs pT")
    ev_raw = read_yaml(cfgs / "evaluate" / "ftag.yaml")
    ev_raw = copy.deepcopy(ev_raw)
    ev_raw.update({
        "title": "lhcml demo: b-tagging on the open simulation (tt̄, small sample)",
        "taggers": [{"name": "GN", "label": "GN (transformer)"}, {"name": "DL1", "label": "DL1"},
                    {"name": "IP3D", "label": "IP3D"}, {"name": "SV1", "label": "SV1"}],
        "reference": "DL1",
        "samples": [{"name": "ttbar", "kind": "ttbar", "files": [str(pred_file)]}],
        "output_dir": str(out / "evaluation"),
    })  # fmt: skip
    ev_cfg = EvaluateConfig.model_validate(ev_raw)
    evaluate(ev_cfg, config_text=yaml.safe_dump(ev_raw, sort_keys=False))

    step("export DL1 and GN to ONNX (onnxruntime vs torch on real jets)")
    onnx_rows = []
    for name, ckpt in trained.items():
        target = out / "onnx" / f"{name.lower()}.onnx"
        rep = export_model(ckpt, target, force=True, check_file=test_file, n_check=500)
        onnx_rows.append(rep)
        print(f"  {target.name}: max |Δp| real {rep.max_abs_diff_real:.1e}, random {rep.max_abs_diff_random:.1e}; "
              f"{rep.latency_ms_per_jet:.3f} ms/jet (batch 1), {rep.throughput_jets_per_s:.0f} jets/s (batch 1000)")

    step("report")
    report = build_report(out / "evaluation", out / "report" / "report.html")
    build_index(out, out / "index.html")  # one page linking the report, validation, ...
    print(f"\nDone in {time.time() - step.t0:.0f} s.")
    print(f"Report:            {report}")
    print(f"All reports:       {out / 'index.html'}")
    print(f"Simulation checks: {out / 'validation'}")
    print(f"ONNX models:       {out / 'onnx'}")
    return report


def register(app) -> None:
    """Add ``lhcml demo`` to the command line."""
    import typer

    @app.command("demo")
    def demo_cmd(
        output: Path = typer.Option(Path("demo_output"), "--output", "-o", help="output directory"),
        events: int = typer.Option(3000, "--events", "-n", help="tt̄ events to simulate (≈ 5 jets each)"),
        mu: float = typer.Option(20.0, "--mu", help="mean pileup"),
        seed: int = typer.Option(1, "--seed", help="run seed"),
        workers: int = typer.Option(2, "--workers", "-j", help="simulation processes"),
        dl1_epochs: int = typer.Option(20, "--dl1-epochs", help="DL1 training epochs"),
        gn_epochs: int = typer.Option(12, "--gn-epochs", help="GN training epochs"),
    ) -> None:
        """The flavour-tagging chain end to end at small scale, with an HTML report.

        Simulate tt̄ (Pythia 8 + the parametric detector), fit the baseline taggers,
        preprocess, train DL1 and a GN-style transformer, predict, evaluate, export to ONNX
        and write OUTPUT/report/report.html. Uses the shipped configs (package data); an
        interrupted demo resumes where it stopped.
        """
        run_demo(output, events, mu, seed, workers, dl1_epochs, gn_epochs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lhcml.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--output", default="demo_output", help="output directory (default: demo_output)")
    ap.add_argument("--events", type=int, default=3000, help="tt̄ events to simulate (≈ 5 jets each)")
    ap.add_argument("--mu", type=float, default=20.0, help="mean pileup")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="simulation processes")
    args = ap.parse_args(argv)
    run_demo(args.output, args.events, args.mu, args.seed, args.workers)


if __name__ == "__main__":
    main()
