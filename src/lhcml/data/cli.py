"""CLI commands of the data stage (convert, inspect)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the data-stage commands to ``app``."""
