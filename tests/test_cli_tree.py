"""The command tree (issue 11, "One way through"): generic stages at the top, one group per
application, help text on every command, group and parameter, and ``--help`` exits 0 everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lhcml.cli import GROUPS, STAGES, TOOLS, app

ROOT = get_command(app)
REPO = Path(__file__).resolve().parents[1]


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
    assert groups == set(GROUPS) == {"sim", "ftag", "jets", "photon", "trigger", "fastcalo", "tracking"}
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


def _commands_in_docs() -> list[tuple[str, list[str]]]:
    """(file, words) for every `lhcml ...` command line in the README, docs/ and the Makefile:
    inline code spans and code-block lines that start with ``lhcml``."""
    found = []
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for f in files:
        text = f.read_text(encoding="utf-8")
        blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
        spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        lines = [ln.strip().removeprefix("$ ") for b in blocks for ln in b.splitlines()] + spans
        for ln in lines:
            m = re.match(r"lhcml((?: [a-z][a-z0-9-]*)+)", ln)
            if m:
                found.append((f.relative_to(REPO).as_posix(), m.group(1).split()))
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    found += [("Makefile", m.split()) for m in re.findall(r"/lhcml((?: [a-z][a-z0-9-]*)+)", make)]
    return found


def test_every_command_named_in_the_readme_docs_and_makefile_exists():
    found = _commands_in_docs()
    assert len(found) > 100  # the README and docs name many commands; the scan must see them
    missing = []
    for where, words in found:
        cmd = ROOT
        for w in words:
            if not hasattr(cmd, "commands"):
                break  # a command's arguments follow
            if w not in cmd.commands:
                missing.append(f"{where}: lhcml {' '.join(words)}")
                break
            cmd = cmd.commands[w]
    assert not missing, "commands named in the docs that the CLI does not have:\n" + "\n".join(missing)
