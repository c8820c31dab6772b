"""``lhcml fastcalo ...``: the generative fast-calorimeter application (issue 15).

Each command calls one plain function of :mod:`lhcml.tasks.fastcalo`; heavy imports are lazy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

fastcalo_app = typer.Typer(
    help=(
        "Generative fast calorimeter simulation: single-particle showers of the detailed photon "
        "calorimeter in the CaloChallenge layout, VAE/GAN/flow/flow-matching shower generators, "
        "and the CaloChallenge evaluation (separation powers, classifier AUC, FPD/KPD, photon-ID "
        "shower shapes).\n\n"
        "Order: `lhcml fastcalo simulate` (training showers + binning XML) -> `lhcml train "
        "configs/fastcalo/*.yaml` -> `lhcml export` -> `lhcml fastcalo generate` -> `lhcml fastcalo evaluate REF.h5 GEN.h5` -> "
        "`lhcml simulate gamma_jet --calo fast:MODEL.onnx`; `lhcml fastcalo generate` writes a model's showers "
        "at a reference file's energies (for evaluate); `lhcml fastcalo time-detailed` times the "
        "detailed simulation per shower (the denominator of the speed-up); `lhcml fastcalo distill` "
        "trains a fast one- or two-step student of a flow-matching model (then `lhcml export` it); "
        "`lhcml fastcalo sampler` copies a flow-matching model with another ODE sampler (steps, solver); "
        "`lhcml fastcalo quantile-map` fits a per-cell quantile correction of a model's showers; "
        "`lhcml fastcalo refine` / `refine-export`: classifier-refined sampling (k candidates, one kept by a "
        "detailed-vs-generated classifier's weights; opt-in); `lhcml fastcalo refine-distill` moves that "
        "classifier in front of the correction chain (the chain then runs on the kept shower only); "
        "`lhcml fastcalo quantize` writes an int8 copy of a shower graph's dense layers (opt-in, CPU speed)."
    ),
    no_args_is_help=True,
)


@fastcalo_app.command("simulate")
def simulate_cmd(
    output_dir: Path = typer.Argument(..., help="directory for the shower files and the binning XML"),
    particle: str = typer.Option("photon", "--particle", help="photon, electron, pi0 or pion"),
    showers: int = typer.Option(2000, "--showers", "-n", help="number of single-particle showers"),
    energies: str = typer.Option(
        "discrete", "--energies",
        help="discrete (16 log-spaced points 1-260 GeV), continuous (log-uniform 1-260 GeV) or a fixed "
        "energy in GeV, e.g. 65",
    ),
    eta_range: str = typer.Option(
        "0.2,0.25", "--eta-range",
        help="|eta| range lo,hi of the particles, drawn uniformly (0.20-0.25 as ATLAS's samples; the photon-ID "
        "events cover 0,1.37); each shower's |eta| is stored as the extra dataset incident_eta (and its phi, "
        "uniform in -pi..pi, as incident_phi)",
    ),
    seed: int = typer.Option(1, "--seed", help="run seed (shard i uses a seed derived from it)"),
    showers_per_shard: int = typer.Option(500, "--showers-per-shard", help="showers per shard (unit of resumption)"),
    workers: int = typer.Option(1, "--workers", "-j", help="local worker processes"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Dask cluster (as lhcml simulate)"),  # noqa: UP045
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Shoot single particles at 0.20 < |eta| < 0.25 (or --eta-range) into the detailed calorimeter and write their showers.

    Writes OUTPUT_DIR/<particle>_<energies>.h5 (CaloChallenge layout: incident_energies (N, 1)
    and showers (N, voxels) in MeV, no electronic noise, plus lhcml's incident_eta and incident_phi (N, 1)), <particle>_<energies>_noise.h5 (the
    same showers with noise), <particle>_<energies>_images.h5 (lhcml's photon-ID images and
    shower shapes) and binning_<particle>.xml (the voxels: per layer a window of cells around
    the impact cell). Sharded and resumable: rerun the same command after a crash.
    """
    from lhcml.errors import ConfigError
    from lhcml.tasks.fastcalo.dataset import simulate_fastcalo

    try:
        lo, hi = (float(x) for x in eta_range.split(","))
    except ValueError:
        raise ConfigError(f"--eta-range must be lo,hi (e.g. 0,1.37), got {eta_range!r}") from None
    paths = simulate_fastcalo(output_dir, particle, showers, energies, seed, showers_per_shard, workers,
                              cluster, progress=not quiet, eta_range=(lo, hi))  # fmt: skip
    for key in ("binning", "showers", "showers_noise", "images"):
        typer.echo(f"wrote {paths[key]}")


@fastcalo_app.command("evaluate")
def evaluate_cmd(
    reference: Path = typer.Argument(..., help="reference (detailed) showers, CaloChallenge layout"),
    generated: Path = typer.Argument(..., help="generated showers, CaloChallenge layout"),
    binning: Optional[Path] = typer.Option(None, "--binning", help="binning XML of both files (required)"),  # noqa: UP045
    output: Path = typer.Option(Path("fastcalo_eval"), "--output", "-o", help="directory for results.json and report.html"),
    runs: int = typer.Option(5, "--runs", help="classifier trainings (different seeds) per level"),
    epochs: int = typer.Option(50, "--epochs", help="maximum classifier epochs (best validation epoch kept)"),
    levels: str = typer.Option("low,high", "--levels", help="classifier inputs: low (voxels), high (features)"),
    max_showers: Optional[int] = typer.Option(None, "--max-showers", help="read at most this many showers per file"),  # noqa: UP045
    energy_bins: Optional[str] = typer.Option(  # noqa: UP045
        None, "--energy-bins", help="comma-separated incident-energy bin edges (GeV) for per-energy separation powers"),
    no_shapes: bool = typer.Option(False, "--no-shower-shapes", help="skip the photon-ID shower shapes"),
    seed: int = typer.Option(1, "--seed", help="first classifier seed"),
) -> None:
    """Compare GENERATED with REFERENCE showers as the CaloChallenge does.

    Separation powers of the high-level features (energies, E_gen/E_inc, centroids, widths,
    sparsity), the classifier test (AUC and JSD on voxels and on features, mean and spread over
    --runs seeds), FPD/KPD, photon-ID shower shapes from lhcml's cluster code (lhcml cell
    binnings) and an HTML report with the overlays.
    """
    from lhcml.tasks.fastcalo.evaluate import evaluate_showers

    edges = [float(x) for x in energy_bins.split(",")] if energy_bins else None
    res = evaluate_showers(reference, generated, binning, output, n_runs=runs, epochs=epochs, seed=seed,
                           levels=tuple(x.strip() for x in levels.split(",") if x.strip()), max_showers=max_showers,
                           shower_shapes=not no_shapes, energy_bins=edges, progress=True)  # fmt: skip
    for level, c in res["classifier"].items():
        typer.echo(f"classifier AUC ({level}): {c['auc']['mean']:.4f} +- {c['auc']['std']:.4f}, "
                   f"JSD {c['jsd']['mean']:.4f} +- {c['jsd']['std']:.4f} ({c['auc']['n']} runs, "
                   f"{c['n_per_class']} showers per class)")
    typer.echo(f"FPD {res['fpd']['value']:.4g} +- {res['fpd']['error']:.2g}, KPD {res['kpd']['value']:.4g} "
               f"+- {res['kpd']['error']:.2g}; mean separation power {res['separation_summary']['mean']:.4f}")
    typer.echo(f"wrote {output / 'report.html'}")


@fastcalo_app.command("generate")
def generate_cmd(
    model: Path = typer.Argument(..., help="exported generator (.onnx, lhcml export)"),
    reference: Path = typer.Argument(..., help="CaloChallenge-layout file whose incident energies are used"),
    output: Path = typer.Option(..., "--output", "-o", help="generated showers (CaloChallenge layout)"),
    binning: Optional[Path] = typer.Option(None, "--binning", help="binning XML (default: the model's own)"),  # noqa: UP045
    seed: int = typer.Option(1, "--seed", help="noise seed"),
    max_showers: Optional[int] = typer.Option(None, "--max-showers", help="use at most this many energies"),  # noqa: UP045
    spot_readout: Optional[float] = typer.Option(  # noqa: UP045
        None, "--spot-readout", help="read generated cells under this quantile of the detailed simulation's "
        "single-spot energy (e.g. 0.05: 2.3 MeV) as whole spots (lhcml.tasks.fastcalo.readout)"),
    quantile_correction: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--quantile-correction", help="apply this per-cell quantile correction (lhcml fastcalo quantile-map) "
        "to the generated showers, before the spot readout"),
) -> None:
    """Generate showers with MODEL at the incident energies of REFERENCE (for `fastcalo evaluate`)."""
    from lhcml.tasks.fastcalo.dataset import generate_like

    res = generate_like(model, reference, output, binning, seed, max_showers, spot_readout, quantile_correction)
    typer.echo(f"wrote {res['n']} showers to {output} ({res['s_per_shower'] * 1e3:.3f} ms/shower, onnxruntime, 1 thread)")


@fastcalo_app.command("distill")
def distill_cmd(
    teacher: Path = typer.Argument(..., help="flow-matching checkpoint (lhcml train configs/fastcalo/fm*.yaml)"),
    showers: Path = typer.Argument(..., help="the teacher's training file (CaloChallenge layout): the conditions"),
    output: Path = typer.Option(..., "--output", "-o", help="the student's checkpoint (export it with lhcml export)"),
    steps: int = typer.Option(1, "--steps", help="Euler steps of the student (1 or 2: one or two network calls)"),
    epochs: int = typer.Option(10, "--epochs", help="passes over the teacher's (noise, shower) pairs"),
    binning: Optional[Path] = typer.Option(None, "--binning", help="binning XML (default: the one stored in TEACHER)"),  # noqa: UP045
    max_showers: Optional[int] = typer.Option(None, "--max-showers", help="use at most this many conditions"),  # noqa: UP045
    seed: int = typer.Option(11, "--seed", help="noise and shuffling seed"),
    lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate (cosine to lr/100); a narrower student "
                             "trained from scratch wants more, e.g. 2e-3"),
    hidden: Optional[int] = typer.Option(  # noqa: UP045
        None, "--hidden", help="a narrower student: this width of the velocity network (trained from scratch; "
        "default: the teacher's network, starting from its weights)"),
) -> None:
    """Distil a fast few-step student from a flow-matching generator (issue 15: generation speed).

    The student has the teacher's network and samples with STEPS Euler steps; it is trained to
    reproduce the teacher's noise-to-shower map at the incident energies (and |eta|, phi) of SHOWERS.
    Prints the held-out loss per epoch and writes a checkpoint that `lhcml export` and
    `lhcml fastcalo evaluate` take like any fast-calo model (docs/fastcalo.md)."""
    from lhcml.train.fastcalo import distill_checkpoint

    hist = distill_checkpoint(teacher, showers, output, binning=binning, steps=steps, epochs=epochs,
                              max_showers=max_showers, seed=seed, log=typer.echo, hidden=hidden, lr=lr)  # fmt: skip
    typer.echo(f"held-out loss {min(hist['val_loss']):.5f} (the teacher's field with {steps} Euler step(s), "
               f"untrained: {hist['val_loss_naive']:.5f}); wrote {output}")


@fastcalo_app.command("sampler")
def sampler_cmd(
    checkpoint: Path = typer.Argument(..., help="flow-matching checkpoint (lhcml train configs/fastcalo/fm*.yaml)"),
    output: Path = typer.Option(..., "--output", "-o", help="the copy with the new sampler (export it with lhcml export)"),
    steps: int = typer.Option(..., "--steps", help="fixed ODE steps (network calls: steps for euler, 2 x steps for midpoint)"),
    solver: str = typer.Option("midpoint", "--solver", help="euler or midpoint"),
) -> None:
    """Copy a flow-matching generator with another ODE sampler (steps, solver); the weights are unchanged.

    The sampler trades fidelity for speed without retraining: docs/benchmarks/fastcalo.md (nineteenth
    version) measured fm_strips_ratio_ema.yaml's classifier AUC and strip profile at 4 and 8 midpoint and
    16 Euler steps. `lhcml export` then puts the chosen sampler into the ONNX graph."""
    from lhcml.train.fastcalo import resample_checkpoint

    path = resample_checkpoint(checkpoint, output, steps=steps, solver=solver)
    typer.echo(f"wrote {path} ({steps} {solver} step(s))")


@fastcalo_app.command("quantile-map")
def quantile_map_cmd(
    checkpoint: Path = typer.Argument(..., help="fast-calo checkpoint (with the sampler it will be used with: lhcml fastcalo sampler)"),
    showers: Path = typer.Argument(..., help="the model's detailed TRAINING showers (CaloChallenge layout)"),
    output: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--output", "-o", help="the correction file (default: CHECKPOINT's name with .qmap.npz, beside it)"),
    binning: Optional[Path] = typer.Option(None, "--binning", help="binning XML (default: the one stored in CHECKPOINT)"),  # noqa: UP045
    variable: str = typer.Option("energy_layers", "--variable", help="energy_layers (cell / incident energy, each "
                                 "layer renormalised to its generated energy afterwards: layer energies kept), share "
                                 "(cell / layer energy, layers renormalised) or energy (cell / incident energy, "
                                 "nothing kept)"),
    quantiles: int = typer.Option(32, "--quantiles", help="quantile nodes per cell and node"),
    eta_bins: int = typer.Option(1, "--eta-bins", help="equal-count |eta| bins (interpolated between)"),
    seed: int = typer.Option(101, "--seed", help="noise seed of the generated showers the map is fitted on"),
    max_showers: Optional[int] = typer.Option(None, "--max-showers", help="use at most this many training showers"),  # noqa: UP045
    condition: Optional[str] = typer.Option(  # noqa: UP045
        None, "--condition", help="a conditional correction: layer_energy (each voxel's map per bin of its layer's "
        "energy over the incident energy, interpolated between the bins), layer_peak (of its layer's hottest cell over "
        "the layer energy), depth (of the shower's longitudinal centre of gravity), eta_phase (of where inside its "
        "layer's eta cell the particle hits, |eta|/deta mod 1) or shower_width (of the shower's energy-weighted lateral "
        "width in eta over its layers: the widest generated showers mapped onto the widest detailed ones); default (or "
        "none): the plain per-voxel map"),
    condition_bins: int = typer.Option(3, "--condition-bins", help="equal-count bins of the conditioning variable "
                                       "per energy node (with --condition)"),
    second_pass: bool = typer.Option(False, "--second-pass", help="with --condition: fit the plain map first and the "
                                     "conditional one on its output; both stored, applied in that order"),
    condition_layers: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--condition-layer", help="with --condition: condition only this layer's maps (repeatable, binning "
        "layer names, e.g. middle); the others keep the plain per-voxel map. Default: every layer"),
    after: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--after", help="extend this fitted correction file (of the same checkpoint) by one more pass: the "
        "--condition map fitted on its output and applied after it (e.g. a two-pass file + --condition eta_phase "
        "--condition-layer middle: three passes)"),
    layer_energies: bool = typer.Option(False, "--layer-energies", help="map each shower's layer energies (over its "
                                        "total, which is kept; every cell of a layer scaled with it) instead of the "
                                        "cells: a plain pass, alone or after --after (the cell passes keep the "
                                        "generator's layer energies)"),
    strip_pass: bool = typer.Option(False, "--strip-pass", help="map each shower's strip second-maximum prominence "
                                    "(per energy and |eta| node; the second-maximum strip moved to it, the strip "
                                    "layer's energy kept) instead of the cells: a pass alone or after --after "
                                    "(lhcml.models.fastcalo.strip_pass)"),
    strip_variable: str = typer.Option("prominence", "--strip-variable", help="with --strip-pass: map the second "
                                       "maximum's prominence over the dip before it (the cell-level Delta E) or its "
                                       "height (its energy, which E_ratio compares with the first maximum's); core: the two neighbours' "
                                       "share of the hottest strip's three (w_s3's core; after a height pass, with "
                                       "--strip-phase-bins 4 --strip-phase-from cluster, the best photon-ID closure); "
                                       "recentre: shift each strip profile so its barycentre's residual from the "
                                       "impact is the detailed one's (measured worse for photon ID: "
                                       "docs/benchmarks/fastcalo.md, twenty-sixth version); fside: the outer share "
                                       "(E7 - E3) / E7 of the seven strips around the hottest (fracs1's), the core's "
                                       "three strips and the four outer ones each scaled together, E7 kept"),
    strip_phase_bins: int = typer.Option(1, "--strip-phase-bins", help="with --strip-variable core: map the core "
                                         "share in this many bins of the impact's distance from its strip's centre"),
    strip_phase_from: str = typer.Option("impact", "--strip-phase-from", help="with --strip-phase-bins: bin the "
                                         "impact's distance from its strip's centre (impact) or the cluster "
                                         "barycentre's place in the hottest strip, w_s3's impact-correction u "
                                         "(cluster)"),
    strip_phase_population: str = typer.Option("all", "--strip-phase-population", help="with --strip-phase-bins: fit "
                                               "each bin's map over every shower of the node, the other bins' as "
                                               "zeros (all), or over the bin's own showers only, generated and "
                                               "detailed each binned by their own position (own)"),
    strip_eta_max: Optional[float] = typer.Option(  # noqa: UP045
        None, "--strip-eta-max", help="with --strip-variable fside: leave showers at |eta| >= this alone"),
    strip_eta_min: Optional[float] = typer.Option(  # noqa: UP045
        None, "--strip-eta-min", help="with --strip-variable fside: leave showers at |eta| < this alone"),
    strip_layer: Optional[str] = typer.Option(  # noqa: UP045
        None, "--strip-layer", help="with --strip-pass: the binning layer (by name) the pass maps instead of the one "
        "with the finest eta cells; with --strip-variable fside and 'middle': the middle layer's eta outer share "
        "(E7 - E3) / E7 of its eta rows (1 - R_eta's)"),
    onnx: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--onnx", help="also export CHECKPOINT's sampling graph with the correction inside (for lhcml simulate "
        "--calo fast: and lhcml fastcalo generate)"),
) -> None:
    """Fit a per-cell quantile correction of a generator's showers onto the detailed training showers.

    The generator makes showers at the training file's conditions; per voxel, incident energy (and |eta|
    bin) the monotone map of its cell distribution (occupancy and quantiles) onto the detailed one is
    stored beside the checkpoint. `benchmarks/fastcalo.py --quantile-correction` and `lhcml fastcalo
    generate --quantile-correction FILE` apply it after sampling; `--onnx OUT.onnx` exports the sampling graph
    with the correction inside (lhcml.models.fastcalo.quantile_map;
    docs/benchmarks/fastcalo.md, twenty-second version)."""
    from lhcml.errors import ConfigError
    from lhcml.tasks.fastcalo.dataset import fit_quantile_correction

    if strip_pass and layer_energies:
        raise ConfigError("--strip-pass and --layer-energies are two passes: fit one, then the other with --after")
    corr, path = fit_quantile_correction(checkpoint, showers, output, binning=binning, variable=variable,
                                         n_quantiles=quantiles, eta_bins=eta_bins, seed=seed, max_showers=max_showers,
                                         condition=None if condition == "none" else condition,
                                         condition_bins=condition_bins, second_pass=second_pass,
                                         condition_layers=condition_layers or None, after=after,
                                         level="strips" if strip_pass else "layers" if layer_energies else "cells",
                                         strip_variable=strip_variable,
                                         strip_phase_bins=strip_phase_bins,
                                         strip_phase_from=strip_phase_from,
                                         strip_phase_population=strip_phase_population,
                                         strip_eta_max=strip_eta_max, strip_eta_min=strip_eta_min,
                                         strip_layer=strip_layer)  # fmt: skip
    cond = "" if corr.condition is None else (
        f", conditioned on {corr.condition} in {corr.meta['condition_bins']} bins ({corr.meta['cond_layers_pooled']} "
        f"(layer, node) pairs and {corr.meta['cond_cells_pooled']} (cell, bin) entries with the node's map)"
        f"{_pass_note(corr, after)}")
    if corr.level == "layers":
        cond = ", layer energies" + _pass_note(corr, after)
    if corr.level == "strips" and corr.meta.get("strip_variable") == "recentre":
        cond = ", strip profile recentred on the impact" + _pass_note(corr, after)
    elif corr.level == "strips" and corr.meta.get("strip_variable") == "core":
        what = "cluster-position" if corr.meta.get("strip_phase_from", "impact") == "cluster" else "impact-phase"
        own = " (each bin's own showers)" if corr.meta.get("strip_phase_population", "all") == "own" else ""
        cond = f", strip core share in {corr.meta.get('strip_phase_bins', 1)} {what} bin(s){own}" + _pass_note(corr, after)
    elif corr.level == "strips" and corr.meta.get("strip_variable") == "fside":
        below = "" if corr.meta.get("strip_eta_max") is None else f" below |eta| {corr.meta['strip_eta_max']}"
        below += "" if corr.meta.get("strip_eta_min") is None else f" from |eta| {corr.meta['strip_eta_min']}"
        below += "" if corr.meta.get("strip_layer", 0) == 0 else f" of layer {corr.meta['strip_layer']}"
        cond = f", strip outer share (E7 - E3) / E7{below}" + _pass_note(corr, after)
    elif corr.level == "strips":
        cond = (f", strip second maxima (generated {corr.meta['second_max_fraction_generated']:.3f}, detailed "
                f"{corr.meta['second_max_fraction_reference']:.3f} of showers)" + _pass_note(corr, after))
    typer.echo(f"wrote {path} ({corr.variable}, {len(corr.log_e_nodes)} energy x {len(corr.eta_nodes)} |eta| nodes, "
               f"{len(corr.levels)} quantiles, {corr.meta['cells_identity']} (cell, node) pairs left alone{cond})")
    if onnx is not None:
        from lhcml.export.fastcalo import export_checkpoint

        rep = export_checkpoint(checkpoint, onnx, timing=False, correction=corr)
        typer.echo(f"wrote {onnx} (the sampling graph with the correction; onnxruntime vs torch {rep.max_abs_diff_random:.2e} x E_inc)")


def _power_note(power: float) -> str:
    return "" if float(power) == 1.0 else f", weights to the power {float(power):g}"


@fastcalo_app.command("refine")
def refine_cmd(
    checkpoint: Path = typer.Argument(..., help="fast-calo checkpoint (with the sampler it is used with)"),
    showers: Path = typer.Argument(..., help="NEW detailed training showers (CaloChallenge layout; never the "
                                   "validation sample)"),
    output: Path = typer.Option(..., "--output", "-o", help="the refinement classifier (.pt)"),
    after: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--after", help="the generator's correction file (lhcml fastcalo quantile-map): the classifier is trained "
        "on, and refines, the corrected showers"),
    binning: Optional[Path] = typer.Option(None, "--binning", help="binning XML (default: the one stored in CHECKPOINT)"),  # noqa: UP045
    max_showers: Optional[int] = typer.Option(None, "--max-showers", help="use at most this many training showers"),  # noqa: UP045
    epochs: int = typer.Option(20, "--epochs", help="most passes over the pairs (the best held-out loss kept)"),
    seed: int = typer.Option(202, "--seed", help="noise seed of the generated showers, split and initialisation seed"),
    calibrate: bool = typer.Option(False, "--calibrate", help="divide the logits by the temperature fitted on the "
                                   "held-out loss (softer choices; on cuph4 the refinement gained less)"),
    input_clip: Optional[float] = typer.Option(  # noqa: UP045
        None, "--input-clip", help="clamp the standardised inputs to +-this (e.g. 5: no extrapolated extreme weights)"),
    force: bool = typer.Option(False, "--force", help="overwrite OUTPUT (and --onnx)"),
    onnx: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--onnx", help="also export the refined sampling graph (as lhcml fastcalo refine-export)"),
    candidates: int = typer.Option(2, "--candidates", "-k", help="with --onnx: candidates drawn per shower"),
    w_max: Optional[float] = typer.Option(None, "--w-max", help="with --onnx: clip the weights p/(1-p) at this value"),  # noqa: UP045
    weight_power: float = typer.Option(1.0, "--weight-power", help="with --onnx: keep a candidate with probability "
                                       "w^b / sum w^b (b > 1: sharper choices at the same k; 1: plain SIR)"),
) -> None:
    """Train a refinement classifier for classifier-refined sampling (SIR) of a fast-calo generator.

    The classifier tells the detailed SHOWERS from the generator's (after --after's correction chain) drawn at the
    same conditions; its weights w = p/(1-p) pick one of k candidate showers per requested shower with probability
    w_i / sum_j w_j (lhcml.models.fastcalo.refine). Prints the held-out AUC and how the weights move the held-out
    generated features onto the detailed ones. `lhcml fastcalo refine-export` (or --onnx) writes the sampling graph
    that `lhcml simulate --calo fast:` and `lhcml fastcalo generate` run."""
    from lhcml.models.fastcalo.refine import check_power
    from lhcml.tasks.fastcalo.refine import export_refined, refine_generator

    check_power(weight_power)  # before the training, not after it
    if onnx is not None and onnx.exists() and not force:
        raise FileExistsError(f"{onnx} exists; pass --force to overwrite it")
    _, info = refine_generator(checkpoint, showers, output, after=after, binning=binning, max_showers=max_showers,
                               seed=seed, epochs=epochs, force=force, log=typer.echo, calibrate=calibrate,
                               input_clip=input_clip)  # fmt: skip
    w = info["weights_held_out"]
    typer.echo(f"held-out AUC {info['val_auc']:.4f} ({info['n_val']} pairs, best epoch {info['best_epoch']}); weights "
               f"max/mean {w['max_over_mean']:.2f}, effective sample fraction {w['ess_fraction']:.3f}")
    for k, v in info["reweighting_check"].items():
        typer.echo(f"  {k}: separation power {v['unweighted']:.5f} -> {v['weighted']:.5f} weighted")
    typer.echo(f"wrote {output}")
    if onnx is not None:
        rep = export_refined(checkpoint, output, onnx, after=after, candidates=candidates, w_max=w_max, force=force,
                             power=weight_power)  # fmt: skip
        typer.echo(f"wrote {onnx} ({candidates} candidates{_power_note(weight_power)}; onnxruntime vs torch "
                   f"{rep.max_abs_diff_random:.2e} x E_inc)")


@fastcalo_app.command("refine-export")
def refine_export_cmd(
    checkpoint: Path = typer.Argument(..., help="fast-calo checkpoint the refinement classifier was trained for"),
    refiner: Path = typer.Argument(..., help="refinement classifier (lhcml fastcalo refine or refine-distill)"),
    output: Path = typer.Option(..., "--output", "-o", help="the sampling graph (.onnx)"),
    after: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--after", help="the correction file the classifier was trained after (lhcml fastcalo refine --after)"),
    candidates: int = typer.Option(2, "--candidates", "-k", help="candidates drawn (and scored) per shower"),
    w_max: Optional[float] = typer.Option(None, "--w-max", help="clip the weights p/(1-p) at this value"),  # noqa: UP045
    weight_power: float = typer.Option(1.0, "--weight-power", help="keep a candidate with probability w^b / sum w^b "
                                       "(b > 1: sharper choices at the same k and cost, chosen on a validation "
                                       "sample; 1: plain SIR)"),
    force: bool = typer.Option(False, "--force", help="overwrite OUTPUT"),
) -> None:
    """Export CHECKPOINT + --after + k-candidate classifier-refined sampling as one ONNX sampling graph.

    Inputs as the plain graph's (incident_energy, eta, phi as the model takes them) with noise of
    k x noise_dim + 1 standard-normal columns (the last one draws the choice); onnxruntime is checked against torch.
    A distilled classifier (refine-distill) scores the raw candidates and the chain runs on the kept shower only; it
    needs the very --after file it was distilled through."""
    from lhcml.tasks.fastcalo.refine import export_refined

    rep = export_refined(checkpoint, refiner, output, after=after, candidates=candidates, w_max=w_max, force=force,
                         power=weight_power)  # fmt: skip
    typer.echo(f"wrote {output} ({candidates} candidates{_power_note(weight_power)}; onnxruntime vs torch "
               f"{rep.max_abs_diff_random:.2e} x E_inc)")


@fastcalo_app.command("refine-distill")
def refine_distill_cmd(
    checkpoint: Path = typer.Argument(..., help="fast-calo checkpoint the teacher was trained for"),
    teacher: Path = typer.Argument(..., help="refinement classifier of the corrected showers (lhcml fastcalo refine)"),
    showers: Path = typer.Argument(..., help="a file of showers whose conditions (energies, |eta|, phi) are used, "
                                   "e.g. the teacher's training file; its cells are not used"),
    output: Path = typer.Option(..., "--output", "-o", help="the distilled classifier (.pt)"),
    after: Path = typer.Option(..., "--after", help="the correction chain the teacher was trained after"),
    rounds: int = typer.Option(2, "--rounds", help="generator samples per condition (more showers to learn from)"),
    max_showers: Optional[int] = typer.Option(None, "--max-showers", help="use at most this many conditions"),  # noqa: UP045
    epochs: int = typer.Option(30, "--epochs", help="most passes over the showers (the best held-out error kept)"),
    seed: int = typer.Option(303, "--seed", help="noise seed of the generated showers, split and initialisation seed"),
    binning: Optional[Path] = typer.Option(None, "--binning", help="binning XML (default: the one stored in CHECKPOINT)"),  # noqa: UP045
    force: bool = typer.Option(False, "--force", help="overwrite OUTPUT (and --onnx)"),
    onnx: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--onnx", help="also export the refined sampling graph (as lhcml fastcalo refine-export)"),
    candidates: int = typer.Option(3, "--candidates", "-k", help="with --onnx: candidates drawn per shower"),
    weight_power: float = typer.Option(1.0, "--weight-power", help="with --onnx: keep a candidate with probability "
                                       "w^b / sum w^b (b > 1: sharper choices at the same k; 1: plain SIR)"),
) -> None:
    """Distil a refinement classifier so that it scores the generator's RAW showers (opt-in, cheaper SIR).

    The chain (--after) is a fixed map of each raw shower, so the TEACHER's weight of a corrected shower is a function
    of the raw one. The student learns that function (mean squared error on the teacher's logits, generated showers
    at the conditions of SHOWERS, --rounds noise draws each); its refine-export graph scores the k raw candidates,
    keeps one and runs the chain on the kept shower only: k generations + one chain instead of k chains. Prints the
    held-out R^2, the correlation with the teacher and how often a 3-candidate choice agrees with the teacher's."""
    from lhcml.models.fastcalo.refine import check_power
    from lhcml.tasks.fastcalo.refine import distill_refiner, export_refined

    check_power(weight_power)  # before the distillation, not after it
    if onnx is not None and onnx.exists() and not force:
        raise FileExistsError(f"{onnx} exists; pass --force to overwrite it")
    _, info = distill_refiner(checkpoint, teacher, showers, output, after=after, binning=binning,
                              max_showers=max_showers, rounds=rounds, seed=seed, epochs=epochs, force=force,
                              log=typer.echo)  # fmt: skip
    typer.echo(f"held-out R^2 {info['val_r2']:.4f}, correlation {info['val_corr']:.4f} with the teacher's logits "
               f"({info['n_val']} showers, best epoch {info['best_epoch']}); 3-candidate choices agree "
               f"{info['val_choice_agreement_k3']:.3f}")
    typer.echo(f"wrote {output}")
    if onnx is not None:
        rep = export_refined(checkpoint, output, onnx, after=after, candidates=candidates, force=force,
                             power=weight_power)  # fmt: skip
        typer.echo(f"wrote {onnx} ({candidates} raw candidates{_power_note(weight_power)}, chain on the kept one; onnxruntime vs torch "
                   f"{rep.max_abs_diff_random:.2e} x E_inc)")


@fastcalo_app.command("quantize")
def quantize_cmd(
    graph: Path = typer.Argument(..., help="a float32 shower graph (lhcml export, quantile-map --onnx, refine-export)"),
    output: Path = typer.Option(..., "--output", "-o", help="the int8 graph (.onnx)"),
    calibration: int = typer.Option(4096, "--calibration", help="calibration rows drawn over the graph's trained "
                                    "ranges (energies log-uniform, |eta| and phi uniform, normal noise)"),
    seed: int = typer.Option(0, "--seed", help="calibration seed (the check uses seed + 1)"),
    method: str = typer.Option("minmax", "--method", help="activation ranges: minmax or percentile (99.999 %)"),
    keep_first_float: bool = typer.Option(False, "--keep-first-float", help="leave the first dense layer of each "
                                          "network in float32"),
    timing: bool = typer.Option(True, "--timing/--no-timing", help="time both graphs at batch 10^4, one thread"),
    force: bool = typer.Option(False, "--force", help="overwrite OUTPUT"),
) -> None:
    """Quantise a shower graph's dense layers to int8 (static calibration; opt-in, for CPU speed).

    The generator's (and the refinement classifier's) matrix products run as int8 x uint8 integer products with
    scales fixed from a calibration sample; the decoding, the correction chain and the SIR choice stay float32. The
    result is checked against GRAPH on held-out rows: each row's shower must not depend on its batch (up to float
    round-off), and the largest layer-energy change per shower and the layer split are printed and stored in the
    metadata, with a warning when they move. It is a different generator: on the 720-epoch m2 chain int8 halves the
    cost per candidate but moves the layer energies by 2.7 % of E_inc and the classifier AUC from 0.63 to 0.89
    (docs/benchmarks/fastcalo.md, thirty-fifth version), so measure a graph (benchmarks/fastcalo_int8.py) before
    using it in `lhcml simulate --calo fast:OUTPUT`."""
    from lhcml.export.fastcalo_int8 import quantize_shower_graph, time_graph

    info = quantize_shower_graph(graph, output, calibration=calibration, seed=seed, method=method,
                                 keep_first_float=keep_first_float, force=force)  # fmt: skip
    c = info["check"]
    typer.echo(f"wrote {output}: {len(info['nodes'])} dense layers in int8 ({method}, {info['calibration_rows']} "
               f"calibration rows); rows independent of the batch; on {c['rows']} held-out rows the largest layer-energy "
               f"change per shower is {c['layer_energy_dev_median']:.1e} x E_inc (median), {c['layer_energy_dev_p99']:.1e} "
               f"(99 %); mean layer fractions {c['layer_fraction_float']} -> {c['layer_fraction_int8']}")  # fmt: skip
    if c["likely_fidelity_loss"]:
        typer.secho("warning: int8 moves this generator's layer energies well beyond float round-off: expect a visible "
                    "loss of fidelity (the 720-epoch m2 chain: median 2.7e-2, classifier AUC 0.63 -> 0.89); measure "
                    "it with benchmarks/fastcalo_int8.py before using it", err=True, fg=typer.colors.YELLOW)  # fmt: skip
    if timing:
        t_f, t_q = time_graph(graph), time_graph(output)
        typer.echo(f"time per shower (batch 10^4, one thread, 65 GeV): float32 {t_f:.3f} ms, int8 {t_q:.3f} ms "
                   f"({t_f / t_q:.2f}x)")


def _pass_note(corr: Any, after: Path | None) -> str:
    if corr.base is None:
        return ""
    if after is None:
        return ", as a second pass after the plain map"
    return f", as pass {corr.meta.get('passes')} after {after}"


@fastcalo_app.command("time-detailed")
def time_cmd(
    particle: str = typer.Option("photon", "--particle", help="photon, electron, pi0 or pion"),
    energy: float = typer.Option(65.0, "--energy", help="incident energy (GeV)"),
    showers: int = typer.Option(200, "--showers", "-n", help="showers to time"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the result as JSON"),  # noqa: UP045
) -> None:
    """Time the detailed simulation per shower (the denominator of a fast model's speed-up)."""
    from lhcml.tasks.fastcalo.dataset import time_detailed

    res = time_detailed(particle, energy, showers, output=output)
    typer.echo(f"detailed simulation of {particle} at {energy:g} GeV: {res['s_per_shower'] * 1e3:.2f} ms/shower "
               f"(calorimeter deposit alone {res['s_per_shower_deposit_only'] * 1e3:.2f} ms), {showers} showers")


def register(app: typer.Typer) -> None:
    """Add the ``fastcalo`` group to ``app``."""
    app.add_typer(fastcalo_app, name="fastcalo")
