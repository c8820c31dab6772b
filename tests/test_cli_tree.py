"""The command tree (issue 11, "One way through"): generic stages at the top, one group per
application, help text on every command, group and parameter, and ``--help`` exits 0 everywhere.
"""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lhcml.cli import GROUPS, STAGES, TOOLS, app

ROOT = get_command(app)


def _walk(cmd, path=()):
    """(path, command) for the root and every command and group below it, depth first."""
    yield path, cmd
    for name in getattr(cmd, "list_commands", lambda ctx: [])(None):
        yield from _walk(cmd.commands[name], (*path, name))


TREE = list(_walk(ROOT))
PATHS = [" ".join(path) or "lhcml" for path, _ in TREE]


def test_top_level_is_the_generic_stages_plus_the_application_groups():
    top = ROOT.list_commands(None)
    assert top == [*STAGES, *TOOLS, *GROUPS]  # also the order of `lhcml --help`
    assert set(STAGES) == {"simulate", "convert", "preprocess", "train", "predict", "evaluate",
                           "report", "export", "tune"}  # fmt: skip
    assert set(TOOLS) == {"inspect", "demo", "version"}
    groups = {n for n in top if hasattr(ROOT.commands[n], "commands")}
    assert groups == set(GROUPS) == {"sim", "ftag", "jets", "photon"}
    # no hyphenated application command is left at the top (photon-dataset, validate-sim, ...)
    assert not [n for n in top if "-" in n]


def test_application_commands_live_in_their_group():
    expected = {
        "sim": ["make-pileup", "validate"],
        "ftag": ["baselines"],
        "jets": ["substructure", "weights", "vary", "frontier"],
        "photon": ["dataset", "cuts", "paed", "denoise", "evaluate"],
    }
    for group, commands in expected.items():
        assert ROOT.commands[group].list_commands(None) == commands, group
    assert ROOT.commands["ftag"].commands["baselines"].list_commands(None) == ["fit", "apply"]


@pytest.mark.parametrize(("path", "cmd"), TREE, ids=PATHS)
def test_every_command_group_and_parameter_has_help(path, cmd):
    assert (cmd.help or "").strip(), f"`lhcml {' '.join(path)}` has no help text"
    if hasattr(cmd, "commands") and path:
        # a group says what the application is and the order of its commands
        assert "order" in cmd.help.lower(), f"`lhcml {' '.join(path)}` help gives no order"
        for name in cmd.list_commands(None):
            assert name in cmd.help, f"`lhcml {' '.join(path)}` help does not name `{name}`"
    missing = [p.name for p in cmd.params if not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"`lhcml {' '.join(path)}`: parameters without help: {missing}"


def test_help_exits_zero_on_every_level():
    runner = CliRunner()
    for path, cmd in TREE:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        first = (cmd.help or "").strip().splitlines()[0]
        # the (wrapped) first help line is shown
        assert " ".join(first.split()[:4]) in " ".join(res.output.split()), (path, res.output)
    # a group without a command prints its help too (no_args_is_help), it does not fail silently
    for group in GROUPS:
        res = runner.invoke(app, [group])
        assert "Usage" in res.output and "order" in res.output.lower(), group


def test_removed_hyphenated_names_are_refused():
    runner = CliRunner()
    for old in ("photon-dataset", "validate-sim", "make-pileup", "baselines"):
        res = runner.invoke(app, [old, "--help"])
        assert res.exit_code == 2 and "No such command" in res.output, old
