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
from lhcml.evaluation import cli as _evaluation_cli  # noqa: E402

_evaluation_cli.register(app)
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
from lhcml import demo as _demo  # noqa: E402

_demo.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors end in one message and exit status 2, not a traceback.

    Which exceptions count as user errors (lhcml's own, ``OSError`` and its subclasses,
    ``UnicodeDecodeError``, pydantic's ``ValidationError``) and their wording live in one place,
    :func:`lhcml.errors.user_message`; anything else is a bug and keeps its traceback. Set
    ``LHCML_DEBUG=1`` to get the full traceback of a user error too.
    """
    import os
    import sys

    from lhcml.errors import user_message

    try:
        app(args=argv, prog_name="lhcml")
    except Exception as err:  # noqa: BLE001 - classified by user_message, bugs are re-raised
        message = user_message(err)
        if message is None or os.environ.get("LHCML_DEBUG"):
            raise
        typer.secho(f"lhcml: {message}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
