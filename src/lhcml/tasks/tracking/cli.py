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
        "the ACTS seeding + combinatorial Kalman filter baseline; ML track finders (bucketing, GNN).\n\n"
        "Order: `lhcml tracking simulate PROCESS --mu MU --out DIR` (training and held-out events with "
        "different --seed) -> `lhcml train configs/tracking/*.yaml` (ML finders) -> `lhcml tracking "
        "reconstruct DIR --method ckf|bucketing|gnn-mm|gnn-ml` -> `lhcml tracking evaluate` (TrackML "
        "score, efficiency, fake and duplicate rates) -> `lhcml tracking report`. Real TrackML challenge "
        "files are read by the same reader (lhcml.data.trackml.read_event)."
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
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Dask cluster: a scheduler address or 'local' (as lhcml simulate)"),  # noqa: UP045
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


def register(app: typer.Typer) -> None:
    """Add the ``tracking`` group to ``app``."""
    app.add_typer(tracking_app, name="tracking")
