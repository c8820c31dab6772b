"""``lhcml tracking ...``: hit-level track finding at HL-LHC occupancy (issue 14).

Each command calls one plain function; heavy imports (ACTS, Pythia, torch) are lazy so that
``lhcml tracking --help`` is fast. Other commands of the group are added here by localised
additions (``reconstruct``, ``evaluate``, ``report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

tracking_app = typer.Typer(
    help=(
        "Hit-level tracking at HL-LHC occupancy: Pythia events with minimum-bias pile-up simulated by "
        "ACTS (Fatras in the TrackML-like GenericDetector, 2 T solenoid, digitisation, noise hits), "
        "written in the TrackML challenge layout (hits, cells, particles, truth) as CSV and lhcml HDF5; "
        "the ACTS seeding + combinatorial Kalman filter baseline; ML track finders (bucketing, GNN, learned "
        "seed selection).\n\n"
        "Order: `lhcml tracking simulate PROCESS --mu MU --out DIR` (training and held-out events with "
        "different --seed) -> for the GNN: `lhcml tracking module-map` (learned from training events) and "
        "`lhcml tracking build-graphs` (module-map or metric-learning graphs); for the seed classifier: "
        "`lhcml tracking write-seeds` (ACTS seeds with truth labels) -> `lhcml train "
        "configs/tracking/*.yaml` (ML finders) -> `lhcml tracking reconstruct DIR --method "
        "ckf|bucketing|gnn-mm|gnn-ml|ml-seeds+ckf` -> `lhcml tracking evaluate` (TrackML score, efficiency, fake and "
        "duplicate rates) -> `lhcml tracking report`. Real TrackML challenge files are read by the same "
        "reader (lhcml.data.trackml.read_event)."
    ),
    no_args_is_help=True,
)


@tracking_app.command("simulate")
def simulate_cmd(
    process: str = typer.Argument(..., help="hard-scatter process of `lhcml simulate` (e.g. ttbar), or minbias"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (trackml/, acts/, h5/, manifest.json)"),
    mu: float = typer.Option(0.0, "--mu", help="mean number of minimum-bias pile-up vertices (Poisson)"),
    events: int = typer.Option(10, "--events", "-n", help="number of events"),
    seed: int = typer.Option(1, "--seed", help="run seed; event i uses seeds derived from (seed, i)"),
    shards: Optional[int] = typer.Option(None, "--shards", help="number of shards (unit of resumption); default: one per 5 events"),  # noqa: UP045
    workers: int = typer.Option(1, "--workers", "-j", help="local worker processes (one shard each)"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Dask cluster: local:N, tcp://host:port, slurm, htcondor or a cluster YAML file (as lhcml simulate)"),  # noqa: UP045
    noise_scale: float = typer.Option(1.0, "--noise-scale", help="multiplies the noise occupancies (1e-6 per pixel, 1e-3 per strip); 0: no noise hits"),
    digi_config: Optional[Path] = typer.Option(None, "--digi-config", help="ACTS digitisation JSON (default configs/tracking/digi-generic.json)"),  # noqa: UP045
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Simulate PROCESS events at pile-up MU with ACTS and write them in the TrackML layout.

    Pythia generates the hard scatter and Poisson(MU) minimum-bias vertices, each at its own
    beam-spot position; the particles are handed to ACTS (Fatras: multiple scattering, energy
    loss, photon conversions; GenericDetector in a 2 T solenoid), digitised (geometric clusters
    in the pixels, smeared strips; configs/tracking/digi-generic.json) and noise hits are added.
    Writes OUT/trackml/event{N:09d}-{hits,cells,particles,truth}.csv (TrackML layout), ACTS CSV in
    OUT/acts/, lhcml HDF5 shards in OUT/h5/ and OUT/manifest.json. Sharded and resumable: rerun
    the same command after a crash; the same seed gives identical files.
    """
    from lhcml.sim.tracking import simulate_tracking

    manifest = simulate_tracking(process, out, mu=mu, events=events, seed=seed, shards=shards,
                                 workers=workers, cluster=cluster, progress=not quiet, noise_scale=noise_scale,
                                 digi_config=digi_config)  # fmt: skip
    typer.echo(f"wrote {manifest['events']} events to {out} (manifest {Path(out) / 'manifest.json'})")


@tracking_app.command("reconstruct")
def reconstruct_cmd(
    event_dir: Path = typer.Argument(..., help="the sample: an `lhcml tracking simulate` output directory (the ACTS methods need its acts/)"),
    method: str = typer.Option("ckf", "--method", "-m", help="track finder registered in lhcml.tasks.tracking.finders.FINDERS (ckf: ACTS seeding + CKF + ambiguity resolution)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: event{N:09d}-candidates.csv and -timings.json per event, fitted_tracks.h5"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="the finder's YAML config (default: its shipped one, e.g. configs/tracking/ckf.yaml)"),  # noqa: UP045
    events: Optional[str] = typer.Option(None, "--events", help="events to reconstruct, e.g. 0-9 or 0,4,7 (default: all)"),  # noqa: UP045
    fit: bool = typer.Option(False, "--fit", help="also fit every candidate with the ACTS Kalman fitter (the CKF's tracks are always fitted)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Find tracks in the events of a sample with METHOD and write the candidates per event.

    Candidates (one row per track and hit; a hit may be on several tracks) go to
    OUT/event{N:09d}-candidates.csv with the time of each stage per event (one thread) in
    -timings.json, the files `lhcml tracking evaluate --candidates METHOD=OUT` reads. Fitted tracks
    (perigee d0, z0, phi, theta, q/p with covariance, hit counts, chi2/ndf, truth match) go to
    OUT/fitted_tracks.h5 for the CKF, and for other methods with --fit (ACTS Kalman fitter).
    """
    from lhcml.tasks.tracking.finders import reconstruct

    summary = reconstruct(event_dir, method, out, events=events, cfg=config, fit=fit, progress=not quiet)
    typer.echo(f"{method}: {summary['tracks']} track candidates in {summary['events']} events "
               f"({summary['seconds_per_event']:.3f} s per event, one thread) -> {out}")  # fmt: skip
    if "fitted_tracks" in summary:
        typer.echo(f"wrote {summary['fitted_tracks']}")


@tracking_app.command("evaluate")
def evaluate_cmd(
    event_dir: Path = typer.Argument(..., help="the sample: an `lhcml tracking simulate` output directory or TrackML files"),
    candidates: list[str] = typer.Option(..., "--candidates", "-c", help="METHOD=DIR: candidate files of a method (`lhcml tracking reconstruct` output); repeat for several methods"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder; results go to OUT/<sample>/results.{json,csv}"),
    sample: Optional[str] = typer.Option(None, "--sample", help="sample name (default mu<MU> from the manifest, else the folder name)"),  # noqa: UP045
    events: Optional[str] = typer.Option(None, "--events", help="events to evaluate, e.g. 0-9 or 0,4,7 (default: all that every method has candidates for)"),  # noqa: UP045
    mu: Optional[float] = typer.Option(None, "--mu", help="<mu> of the sample (default: from its manifest.json)"),  # noqa: UP045
    min_pt: float = typer.Option(0.5, "--min-pt", help="reconstructable particles: pT above this [GeV] (ACTS examples: 0.5; docs/references.md §21)"),
    min_hits: int = typer.Option(9, "--min-hits", help="reconstructable particles: at least this many hits (ACTS examples: 9 measurements)"),
    max_eta: float = typer.Option(3.0, "--max-eta", help="reconstructable particles: |eta| below this"),
    min_track_hits: int = typer.Option(5, "--min-track-hits", help="candidates with fewer hits are not counted in the rates (our choice)"),
    bfield: float = typer.Option(2.0, "--bfield", help="solenoid field [T] for the candidates' pT estimate from their hits"),
) -> None:
    """TrackML score, ACTS-style efficiency, fake and duplicate rates (vs pT, eta) and time per event.

    Compares the candidates of one or more methods with the truth of the same events and writes
    OUT/<sample>/results.json and results.csv (one row per method). Run it once per sample (per
    <mu>) into the same OUT, then `lhcml tracking report OUT`.
    """
    from lhcml.tasks.tracking.evaluate import evaluate_tracking, parse_methods
    from lhcml.tasks.tracking.finders import parse_events

    methods = parse_methods(candidates)
    ids = None
    if events is not None:
        from lhcml.data.trackml import list_events

        ids = parse_events(events, list_events(event_dir))
    sel = {"min_pt": min_pt, "max_abs_eta": max_eta, "min_particle_hits": min_hits, "min_track_hits": min_track_hits}
    path = evaluate_tracking(event_dir, methods, out, sample=sample, events=ids, mu=mu, bfield=bfield, selection=sel)
    typer.echo(f"wrote {path} and {path.with_name('results.csv')}")


@tracking_app.command("report")
def report_cmd(
    folder: Path = typer.Argument(..., help="folder of `lhcml tracking evaluate` outputs (FOLDER/<sample>/results.json)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default FOLDER/report.html)"),  # noqa: UP045
    display_method: Optional[str] = typer.Option(None, "--display-method", help="method shown in the event displays (default: the first)"),  # noqa: UP045
) -> None:
    """HTML report: summary table, efficiency/fake/duplicate rate vs pT and eta per method and <mu>,
    and one event display per sample (hits, true tracks, found tracks; x-y and r-z views)."""
    from lhcml.tasks.tracking.evaluate import build_tracking_report

    path = build_tracking_report(folder, output, display_method)
    typer.echo(f"wrote {path}")


@tracking_app.command("module-map")
def module_map_cmd(
    event_dirs: list[Path] = typer.Argument(..., help="training samples (`lhcml tracking simulate` outputs or TrackML files with truth)"),
    out: Path = typer.Option(..., "--out", "-o", help="the module map (.npz)"),
    events: Optional[int] = typer.Option(None, "--events", "-n", help="use the first N events of each sample (default: all)"),  # noqa: UP045
    min_pt: float = typer.Option(0.5, "--min-pt", help="only particles with pT above this [GeV] connect modules"),
    cut_level: str = typer.Option("module", "--cut-level", help="min/max cut windows per module doublet (GNN4ITk) or pooled per layer pair ('layer', for small training samples)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Learn a GNN4ITk module map from training events: the module doublets and triplets that
    consecutive hits of true particles connect, with min/max cuts on z0, dphi, phi-slope and deta
    per doublet. Used by `lhcml tracking build-graphs --graph module_map` and the gnn-mm finder."""
    from lhcml.tasks.tracking.gnn_pipeline import build_module_map

    mm = build_module_map(list(event_dirs), out, events=events, min_pt=min_pt, cut_level=cut_level, progress=not quiet)
    typer.echo(f"module map: {len(mm.modules)} modules, {len(mm)} doublets, {len(mm.triplets)} triplets from {mm.n_events} events -> {out}")


@tracking_app.command("build-graphs")
def build_graphs_cmd(
    event_dir: Path = typer.Argument(..., help="a sample (`lhcml tracking simulate` output or TrackML files)"),
    name: str = typer.Option(..., "--name", help="graph set name: files go to <event dir>/graphs-NAME/, the name data.prepare.graph of configs/tracking/{edge_filter,gnn}.yaml refers to"),
    graph: str = typer.Option("module_map", "--graph", help="module_map or metric_learning"),
    module_map: Optional[Path] = typer.Option(None, "--module-map", help="module map .npz (lhcml tracking module-map)"),  # noqa: UP045
    embedding: Optional[Path] = typer.Option(None, "--embedding", help="hit-embedding checkpoint (configs/tracking/embedding.yaml)"),  # noqa: UP045
    radius: float = typer.Option(0.1, "--radius", help="radius of the graph in the embedding"),
    k: int = typer.Option(100, "--k", help="at most k neighbours per hit in the embedding"),
    triplets: bool = typer.Option(False, "--triplets/--no-triplets", help="keep only module-map edges that are part of a known module triplet"),
    edge_filter: Optional[Path] = typer.Option(None, "--edge-filter", help="edge-filter checkpoint: keep only the edges it scores above --filter-cut (the interaction network's graphs)"),  # noqa: UP045
    filter_cut: float = typer.Option(0.05, "--filter-cut", help="edge-filter score cut"),
    events: Optional[int] = typer.Option(None, "--events", "-n", help="the first N events (default: all)"),  # noqa: UP045
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Build the hit graph of every event (candidate edges, node and edge features, truth labels)
    and write one file per event for training the edge filter and the interaction network.
    Prints the mean edge efficiency (particles with pT > 1 GeV) and purity."""
    import numpy as np

    from lhcml.tasks.tracking.gnn_pipeline import write_graphs

    stats = write_graphs(event_dir, name, method=graph, module_map=module_map, embedding=embedding, r=radius, k=k,  # type: ignore[arg-type]
                         use_triplets=triplets, edge_filter=edge_filter, filter_cut=filter_cut, events=events,
                         progress=not quiet)  # fmt: skip
    eff = [s["efficiency"] for s in stats if "efficiency" in s]
    pur = [s["purity"] for s in stats if "purity" in s]
    typer.echo(f"graphs-{name}: {len(stats)} events, {np.mean([s['edges'] for s in stats if 'edges' in s] or [0]):.0f} edges per event"
               + (f", efficiency {np.mean(eff):.3f}, purity {np.mean(pur):.3f}" if eff else ""))  # fmt: skip


@tracking_app.command("write-seeds")
def write_seeds_cmd(
    event_dir: Path = typer.Argument(..., help="a sample (`lhcml tracking simulate` output: its acts/ CSV and trackml/ files)"),
    name: str = typer.Option(..., "--name", help="seed set name: files go to <trackml dir>/seeds-NAME/, the name data.prepare.seeds of configs/tracking/seed_filter.yaml refers to"),
    max_seeds_per_spm: int = typer.Option(10, "--max-seeds-per-spm", help="seeds per middle space point of ACTS's seeding"),
    events: Optional[str] = typer.Option(None, "--events", help="event numbers, e.g. 0-15 (default: all)"),  # noqa: UP045
    labels: bool = typer.Option(True, "--labels/--no-labels", help="truth labels (all three hits of one particle; needs truth)"),
    reco: Optional[Path] = typer.Option(None, "--reco", help="ACTS reconstruction YAML whose seeding settings make the seeds (default configs/tracking/ckf.yaml)"),  # noqa: UP045
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Run ACTS's triplet seeding on every event and write the seeds with their features (and truth
    labels) for training the seed classifier of the ml-seeds+ckf finder (lhcml train
    configs/tracking/seed_filter.yaml)."""
    from lhcml.data.trackml import list_events
    from lhcml.tasks.tracking.finders import parse_events
    from lhcml.tasks.tracking.seed_filter import write_seed_files

    ids = parse_events(events, list_events(event_dir))
    paths = write_seed_files(event_dir, name, ids, max_seeds_per_spm=max_seeds_per_spm, labels=labels, progress=not quiet,
                             reco=reco)
    typer.echo(f"seeds-{name}: {len(paths)} events -> {paths[0].parent if paths else '-'}")


def register(app: typer.Typer) -> None:
    """Add the ``tracking`` group to ``app``."""
    app.add_typer(tracking_app, name="tracking")
