"""The ``lhcml`` command line: one subcommand per stage.

Each stage module defines ``register(app)`` adding its commands; the command bodies call one
plain function (the same one tests and notebooks call) and import heavy packages lazily, so
``lhcml --help`` is fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lhcml",
    help=(
        "lhcml: machine learning for collider physics.\n\n"
        "simulate -> (convert) -> preprocess -> train -> predict -> evaluate/report -> export"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the lhcml version."""
    from lhcml import __version__

    typer.echo(__version__)


# Stage command modules (explicit imports; add one line per stage).
from lhcml.data import cli as _data_cli  # noqa: E402

_data_cli.register(app)
from lhcml.sim import cli as _sim_cli  # noqa: E402

_sim_cli.register(app)
from lhcml.metrics import cli as _metrics_cli  # noqa: E402

_metrics_cli.register(app)
from lhcml.tasks.boosted import cli as _boosted_cli  # noqa: E402

_boosted_cli.register(app)
from lhcml.tasks.ftag import cli as _ftag_cli  # noqa: E402

_ftag_cli.register(app)

from lhcml.train import cli as _train_cli  # noqa: E402

_train_cli.register(app)
from lhcml.tune import cli as _tune_cli  # noqa: E402

_tune_cli.register(app)
from lhcml.tasks.photon import cli as _photon_cli  # noqa: E402

_photon_cli.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
