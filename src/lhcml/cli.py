"""The ``lhcml`` command line: the generic stages at the top, one group per application.

Each stage module defines ``register(app)`` adding its commands (and its application's group);
the command bodies call one plain function (the same one tests and notebooks call) and import
heavy packages lazily, so ``lhcml --help`` is fast. This module fixes the order and the help
panels of the top level (:data:`STAGES`, :data:`TOOLS`, :data:`GROUPS`).
"""

from __future__ import annotations

import typer

#: the generic stages, in pipeline order (``lhcml STAGE --help``)
STAGES = ("simulate", "convert", "preprocess", "train", "predict", "evaluate", "report", "export",
          "tune")  # fmt: skip
#: commands that are no stage: look at a file, run the chain end to end, the version
TOOLS = ("inspect", "demo", "version")
#: one group per application (``lhcml GROUP --help`` says what it is and the order of its commands)
GROUPS = ("sim", "ftag", "jets", "photon", "trigger", "fastcalo", "tracking")

_PANELS = {**dict.fromkeys(STAGES, "Stages"), **dict.fromkeys(TOOLS, "Tools"),
           **dict.fromkeys(GROUPS, "Applications")}  # fmt: skip

app = typer.Typer(
    name="lhcml",
    help=(
        "lhcml: machine learning for collider physics.\n\n"
        "Stages, in order: simulate -> (convert) -> preprocess -> train -> predict -> "
        "evaluate/report -> export; tune optimises any training config. The same verbs serve "
        "every application; what belongs to one application is in its group: "
        "sim (pile-up library, validation), ftag (flavour tagging), jets (boosted jets), "
        "photon (photon ID), trigger (quantised trigger-latency models, FPGA conversion), fastcalo "
        "(generative fast calorimeter simulation), tracking (hit-level track finding at HL-LHC pile-up: "
        "ACTS simulation and CKF, ML track finders).\n\n"
        "`lhcml COMMAND --help` explains each command; `lhcml demo` runs the flavour-tagging "
        "chain end to end."
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
from lhcml.tasks.trigger import cli as _trigger_cli  # noqa: E402

_trigger_cli.register(app)
from lhcml.tasks.fastcalo import cli as _fastcalo_cli  # noqa: E402

_fastcalo_cli.register(app)
from lhcml.tasks.tracking import cli as _tracking_cli  # noqa: E402

_tracking_cli.register(app)
from lhcml import demo as _demo  # noqa: E402

_demo.register(app)


def _arrange(root: typer.Typer) -> None:
    """Order the top level as STAGES, TOOLS, GROUPS and put each in its help panel.

    A command or group registered under a name in none of the three lists goes to the end,
    under "Other" (``tests/test_cli_tree.py`` fails until it is placed in a list).
    """
    order = {name: i for i, name in enumerate((*STAGES, *TOOLS, *GROUPS))}

    def name_of(info) -> str:
        return info.name or info.callback.__name__.replace("_", "-")

    for infos in (root.registered_commands, root.registered_groups):
        infos.sort(key=lambda info: order.get(name_of(info), len(order)))
        for info in infos:
            info.rich_help_panel = _PANELS.get(name_of(info), "Other")


_arrange(app)


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
