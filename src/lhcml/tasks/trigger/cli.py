"""``lhcml trigger ...``: trigger-latency models (datasets, quantisation scans, FPGA conversion).

Each command calls one plain function of :mod:`lhcml.tasks.trigger`; heavy imports are lazy.
The FPGA commands (hls4ml / conifer conversion) live in :mod:`lhcml.tasks.trigger.fpga` and
are added by its ``register(group)``.
"""

from __future__ import annotations

import typer

trigger_app = typer.Typer(
    help=(
        "Trigger-latency models: quantised (QAT/PTQ) and pruned jet taggers small enough for a "
        "Level-1 trigger FPGA (the hls4ml jet-substructure MLP, a DL1-size b-tagging MLP, a "
        "deep-sets model on the leading constituents).\n\n"
        "Order: `lhcml trigger dataset` (16-feature / DL1 / constituent files from lhcml "
        "samples) -> `lhcml train configs/trigger/*.yaml` or `lhcml trigger scan` (float, PTQ "
        "and QAT at several bit widths -> accuracy/AUC table) -> the FPGA conversion commands."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``trigger`` group to ``app``."""
    app.add_typer(trigger_app, name="trigger")
