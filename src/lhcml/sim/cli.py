"""CLI of the simulation stage: ``lhcml simulate`` and the ``lhcml sim`` group (``make-pileup``,
``validate``)."""

from __future__ import annotations

from pathlib import Path

import typer

sim_app = typer.Typer(
    help=(
        "Simulation utilities beside `lhcml simulate` (Pythia 8 + the parametric ATLAS-like "
        "detector).\n\n"
        "Order: `lhcml sim make-pileup` (optional: one minimum-bias library shared by many runs) "
        "-> `lhcml simulate` (--pileup-library) -> `lhcml sim validate` (checks against the "
        "shipped reference table, plots, HTML page)."
    ),
    no_args_is_help=True,
)


@sim_app.command("make-pileup")
def make_pileup_cmd(
    output: Path = typer.Argument(..., help="library file to write, e.g. pileup_minbias.h5"),
    events: int = typer.Option(5000, "--events", "-n", help="minimum-bias events"),
    seed: int = typer.Option(1, "--seed", help="Pythia seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Build a minimum-bias pileup library to share between runs (--pileup-library)."""
    from lhcml.sim.pileup import build_pileup_library

    build_pileup_library(events, seed, output, progress=not quiet)
    typer.echo(f"wrote {output}")


@sim_app.command("validate")
def validate_sim_cmd(
    sim_dirs: list[Path] = typer.Argument(
        ..., help="simulation output directories (several: compared, e.g. mu = 0/60/140)"
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="report directory (default DIR/validation)"
    ),
    max_jets: int = typer.Option(200_000, "--max-jets", help="rows read at most per dataset"),
    reference: Path = typer.Option(
        None, "--reference", help="reference table YAML (default: the shipped one)"
    ),
    strict: bool = typer.Option(False, "--strict", help="exit status 1 if any check FAILs"),
    only_measured: bool = typer.Option(
        False, "--only-measured", help="print no not-in-sample rows (the page keeps them)"
    ),
) -> None:
    """Check simulated samples against the shipped reference table of published values.

    Each check ends pass/FAIL/unverified/not-in-sample; also writes validation plots and an
    HTML page (docs/validation.md).
    """
    from lhcml.validation import format_table, run_validation

    results, page = run_validation(list(sim_dirs), output, max_jets=max_jets, reference=reference)
    shown = [r for r in results if not (only_measured and r.status == "not-in-sample")]
    typer.echo(format_table(shown))
    if len(shown) < len(results):
        typer.echo(f"({len(results) - len(shown)} not-in-sample rows not shown)")
    typer.echo(f"wrote {page}")
    if strict and any(r.status == "FAIL" for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``simulate`` and the ``sim`` group (``make-pileup``, ``validate``) to ``app``."""

    @app.command("simulate")
    def simulate_cmd(
        process: str = typer.Argument(..., help="process name, e.g. ttbar, zprime, qcd, top, w, z"),
        events: int = typer.Option(..., "--events", "-n", help="hard-scatter events in total"),
        output: Path = typer.Option(..., "--output", "-o", help="output directory"),
        mu: float = typer.Option(
            50.0, "--mu", help="mean pileup interactions per crossing (0: none)"
        ),
        seed: int = typer.Option(
            1, "--seed", help="run seed (shard i uses a seed derived from it)"
        ),
        events_per_shard: int = typer.Option(
            1000, "--events-per-shard", help="events per shard file"
        ),
        workers: int = typer.Option(1, "--workers", "-j", help="local worker processes"),
        cluster: str = typer.Option(
            None, "--cluster",
            help="Dask cluster: local:N, tcp://host:port, slurm, htcondor or a cluster YAML file",
        ),
        pileup_library: Path = typer.Option(
            None, "--pileup-library", help="existing minbias library (lhcml sim make-pileup)"
        ),
        pileup_size: int = typer.Option(
            None, "--pileup-size", help="events in a new pileup library"
        ),
        cores: int = typer.Option(None, "--cores", help="batch: cores (= workers) per job"),
        memory: str = typer.Option(None, "--memory", help="batch: memory per job, e.g. 8GB"),
        walltime: str = typer.Option(None, "--walltime", help="batch: wall time per job, HH:MM:SS"),
        queue: str = typer.Option(None, "--queue", help="batch: partition/queue"),
        account: str = typer.Option(None, "--account", help="batch: account/project"),
        jobs: int = typer.Option(None, "--jobs", help="batch: number of jobs to submit"),
        gpus: int = typer.Option(None, "--gpus", help="batch: GPUs per job"),
        prologue: list[str] = typer.Option(
            None, "--prologue", help="batch: shell line run before the worker starts (repeatable)"
        ),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
        constituents: str = typer.Option(
            "pflow", "--constituents",
            help="large-R jet inputs (what flow holds): pflow, clusters or tcc (Track-CaloClusters)",
        ),
        calo: str = typer.Option(
            "detailed", "--calo",
            help="photon processes: detailed, or fast:MODEL.onnx[:BINNING.xml] for generated showers "
            "(lhcml fastcalo; particles of the model's type in its energy range)",
        ),
        spot_readout: float = typer.Option(
            None, "--spot-readout", metavar="FRACTION",
            help="with --calo fast: read generated cells under this quantile of the detailed simulation's "
            "single-spot energy (e.g. 0.05: 2.3 MeV) as whole spots, each layer keeping its energy "
            "(lhcml.sim.spot_readout; as lhcml fastcalo generate --spot-readout)",
        ),
        impact_eta: bool = typer.Option(
            False, "--impact-eta",
            help="with --calo fast: give an eta-conditioned generator the |eta| where the shower axis crosses the "
            "strips instead of the direction's (the same from the origin; from a displaced vertex it sets where "
            "inside its cells the generated shower sits: lhcml.sim.fastcalo.FastCalo.impact_eta)",
        ),
    ) -> None:
        """Simulate PROCESS into sharded flat HDF5 files (resumable).

        The run is split into shards of --events-per-shard events, written as
        OUTPUT/<process>_<shard>.h5 with a seed derived from (--seed, shard): the same
        settings always give the same files. Rerunning the same command after a crash
        skips the finished shards. With --mu > 0 a minimum-bias pileup library is built
        once into OUTPUT/pileup_minbias.h5. OUTPUT/manifest.yaml records the run.

        Shards run in --workers local processes, or as Dask tasks with --cluster
        (local:N; tcp://scheduler:8786; slurm or htcondor via dask-jobqueue, sized by
        --cores/--memory/--walltime/--queue/--account/--gpus/--jobs/--prologue, or a YAML file
        with `kind: slurm` and those keys).
        """
        from lhcml.sim.fastcalo import calo_with_impact_eta, calo_with_spot_readout
        from lhcml.sim.runner import run_simulation

        # both carried in the --calo value (manifest, shards)
        calo = calo_with_spot_readout(calo_with_impact_eta(calo, impact_eta), spot_readout)

        opts = dict(
            cores=cores, memory=memory, walltime=walltime, queue=queue, account=account, jobs=jobs,
            gpus=gpus, prologue=prologue or None,
        )  # fmt: skip
        files = run_simulation(
            process, events, mu, seed, output,
            events_per_shard=events_per_shard, workers=workers, cluster=cluster,
            pileup_library=pileup_library, pileup_size=pileup_size, progress=not quiet,
            cluster_options={k: v for k, v in opts.items() if v is not None},
            constituents=constituents, calo=calo,
        )  # fmt: skip
        typer.echo(f"wrote {len(files)} shard(s) to {output}")

    app.add_typer(sim_app, name="sim")
