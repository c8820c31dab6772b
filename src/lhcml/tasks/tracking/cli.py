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
                                 workers=workers, cluster=cluster, progress=not quiet)  # fmt: skip
    typer.echo(f"wrote {manifest['events']} events to {out} (manifest {Path(out) / 'manifest.json'})")


def register(app: typer.Typer) -> None:
    """Add the ``tracking`` group to ``app``."""
    app.add_typer(tracking_app, name="tracking")
