"""One way through: no module of ``src/lhcml`` imports against the pipeline order.

The check parses every module with :mod:`ast` (imports inside functions and ``TYPE_CHECKING``
blocks count too: a lazy import is still a dependency) and compares the layer of the importing
module with the layer of every ``lhcml`` module it imports. The layers, lowest first:

1. infrastructure: ``errors``, ``config``, ``labels``, ``quiet``, ``cluster``, ``atomic``, ``formatting``,
   ``estimators`` (and
   the root package ``lhcml`` itself, which holds only the version);
2. ``data`` (the flat-file contract, readers, preprocessing);
3. ``sim`` (the open simulation; writes flat files);
4. ``metrics`` (pure metric functions on arrays);
5. ``models``, 6. ``train``, 7. ``plots``;
8. ``evaluation`` (reads prediction files, runs the metrics, writes results, plots and report);
9. ``export``, 10. ``tune``;
11. ``tasks`` (per-application glue: ftag, boosted, photon);
12. ``validation`` (``lhcml validate-sim``);
13. ``demo``; 14. the CLI.

A module may import its own layer and the layers below it, never one above. Every ``cli.py``
(and ``lhcml/__main__.py``) is the CLI layer: it may import anything, and no other module may
import it.

**Why ``validation`` sits above ``tasks``** (and not between ``tune`` and ``tasks``): the
simulation is validated with the same reconstruction-level algorithms a user of lhcml applies to
the samples — the ATLAS 2012 Tight photon menu (:mod:`lhcml.tasks.photon.cuts`) and the
N-subjettiness ratio τ32 (:mod:`lhcml.tasks.boosted.substructure`). Moving those two down into
a lower layer would split each application's code over two places for the sake of one client;
validation is instead a *client of the whole toolkit*, like the demo, and runs on real files
too. Nothing below it imports it.

**Who may import the simulation.** The order alone would let every layer above ``sim`` import
it, but a user with real ATLAS/CMS files has no simulation: training, inference, tuning and
evaluation must run from the files alone (e.g. the photon denoiser takes the per-cell noise
from the file's attributes, not from the simulation's calorimeter geometry). So ``lhcml.sim``
is imported only by itself, by the layers whose job is the simulation (``validation``,
``demo``, the CLI) and by the task modules that build simulated datasets
(:data:`SIM_CLIENTS`).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lhcml"

#: the layers, lowest first; names in one tuple share a rank
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "errors", "config", "labels", "quiet", "cluster", "atomic", "formatting", "estimators"),  # "": the root package
    ("data",),
    ("sim",),
    ("metrics",),
    ("models",),
    ("train",),
    ("plots",),
    ("evaluation",),
    ("export",),
    ("tune",),
    ("tasks",),
    ("validation",),
    ("demo",),
    ("cli", "__main__"),
)
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
CLI_RANK = RANK["cli"]

#: modules (dotted-name prefixes) besides ``lhcml.sim`` itself and the CLI that may import ``lhcml.sim``
SIM_CLIENTS = (
    "lhcml.validation", "lhcml.demo", "lhcml.tasks.photon.dataset", "lhcml.tasks.fastcalo.dataset",
    "lhcml.tasks.fastcalo.readout",  # the detailed simulation's spot readout applied to generated showers
)


@dataclass(frozen=True)
class Violation:
    """One import against the order: ``module`` (file:line) imports ``target``."""

    module: str
    line: int
    target: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target} ({self.why})"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module names of the package at ``root`` (``root.name`` is the package name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> str:
    """Layer name of a dotted module name: ``cli`` for every ``cli.py``, else its first subpackage."""
    parts = module.split(".")
    if parts[-1] in ("cli", "__main__"):
        return "cli"
    return parts[1] if len(parts) > 1 else ""


def imported_modules(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of a package module in ``path`` (absolute names).

    ``from a import b`` names the module ``a.b`` when that is a module of the package, else ``a``.
    """
    package = module.split(".")[0]
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                src = ".".join([*base, *([node.module] if node.module else [])])
            else:
                src = node.module or ""
            if src.split(".")[0] != package:
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                out.append((node.lineno, sub if sub in known else src))
    return list(dict.fromkeys(out))


def check_layering(root: Path) -> list[Violation]:
    """Every import in the package at ``root`` that goes against :data:`LAYERS` or :data:`SIM_CLIENTS`."""
    modules = module_names(root)
    known = set(modules)
    package = root.name
    violations = []
    for module, path in modules.items():
        src_layer = layer_of(module)
        if src_layer not in RANK:
            violations.append(Violation(module, 1, module, f"layer '{src_layer}' is not in LAYERS: place it"))
            continue
        for line, target in imported_modules(module, path, known):
            tgt_layer = layer_of(target)
            if tgt_layer not in RANK:
                violations.append(Violation(module, line, target, f"layer '{tgt_layer}' is not in LAYERS"))
                continue
            if src_layer == "cli":
                continue  # the CLI layer may import anything
            if RANK[tgt_layer] > RANK[src_layer]:
                violations.append(Violation(module, line, target, f"{src_layer or package} is below {tgt_layer}"))
            elif tgt_layer == "sim" and src_layer != "sim" and not module.startswith(
                tuple(c.replace("lhcml", package, 1) for c in SIM_CLIENTS)
            ):
                violations.append(Violation(
                    module, line, target,
                    "only the simulation's clients import lhcml.sim (users with real files have no simulation)",
                ))  # fmt: skip
    return violations


def test_lhcml_imports_follow_the_pipeline_order() -> None:
    modules = module_names(SRC)
    assert len(modules) > 100 and "lhcml.evaluation" in modules and "lhcml.validation" in modules
    bad = check_layering(SRC)
    assert not bad, "imports against the pipeline order:\n" + "\n".join(map(str, bad))


def _tree(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "lhcml"
    for rel, text in files.items():
        p = pkg / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    for d in [pkg, *(p for p in pkg.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return pkg


def test_checker_finds_deliberately_bad_imports(tmp_path: Path) -> None:
    pkg = _tree(tmp_path, {
        "errors.py": "",
        "data/h5.py": "from lhcml.errors import X\n",
        "sim/runner.py": "import lhcml.data.h5\n",
        # the violations the first version of the layout had, one of each kind
        "sim/checks.py": "def f():\n    from lhcml.tasks.photon.cuts import TIGHT\n",
        "metrics/evaluate.py": "from lhcml.plots import roc\n",
        "models/bdt.py": "from ..train import trainer\n",  # relative import upwards
        "train/trainer.py": "from lhcml.models import bdt\nfrom lhcml.metrics.roc import roc_curve\n",
        "tune/objective.py": "from lhcml.sim.calo import NOISE\n",  # allowed by rank, not by SIM_CLIENTS
        "tasks/photon/denoise.py": "from lhcml.sim.clusters import normalise\n",
        "tasks/photon/dataset.py": "from lhcml.sim import runner\n",  # a simulation client
        "tasks/photon/cuts.py": "TIGHT = 1\n",
        "tasks/photon/cli.py": "from lhcml.demo import run\n",  # CLI layer: anything
        "plots/roc.py": "from lhcml import cli\n",  # nothing imports the CLI
        "demo.py": "from lhcml.validation import v\n",
        "validation/v.py": "from lhcml.tasks.photon.cuts import TIGHT\n",
        "cli.py": "from lhcml.tasks.photon import cli\n",
        "newstage/x.py": "",  # a subpackage nobody placed in the order
    })  # fmt: skip
    got = {(v.module, v.target) for v in check_layering(pkg)}
    assert got == {
        ("lhcml.sim.checks", "lhcml.tasks.photon.cuts"),
        ("lhcml.metrics.evaluate", "lhcml.plots.roc"),
        ("lhcml.models.bdt", "lhcml.train.trainer"),
        ("lhcml.tune.objective", "lhcml.sim.calo"),
        ("lhcml.tasks.photon.denoise", "lhcml.sim.clusters"),
        ("lhcml.plots.roc", "lhcml.cli"),
        ("lhcml.newstage", "lhcml.newstage"),
        ("lhcml.newstage.x", "lhcml.newstage.x"),
    }


def test_checker_reads_syntax_errors_as_errors(tmp_path: Path) -> None:
    pkg = _tree(tmp_path, {"data/broken.py": "def f(:\n"})
    with pytest.raises(SyntaxError):
        check_layering(pkg)
