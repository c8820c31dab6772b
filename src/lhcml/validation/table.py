"""The reference table of ``lhcml sim validate`` (``reference.yaml``, shipped with the package).

One row per check: the measure (:data:`lhcml.validation.measures.MEASURES`) and its output and
parameters, the reference value with its tolerance or range, the ⟨μ⟩ range it applies to, the
minimum number of entries, the provenance tag (``R`` read in a source, ``D`` derived, ``goal``,
``unverified``) and the source (``docs/references.md``). :func:`load_reference` validates a table
strictly (unknown keys, measures, outputs or parameters are errors with a suggestion);
:func:`reference_markdown` renders it for docs/validation.md.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import model_validator

from lhcml.config import StrictModel, _suggest, validate_config
from lhcml.errors import ConfigError
from lhcml.validation.measures import MEASURES


class ReferenceCheck(StrictModel):
    """One row of the reference table (field meanings: the header of ``reference.yaml``)."""

    name: str
    quantity: str
    measure: str
    output: str
    params: dict[str, Any] = {}
    value: float | None = None
    tolerance: float | None = None
    relative: bool = False
    range: tuple[float | None, float | None] | None = None
    mu: tuple[float | None, float | None] | None = None
    compare: bool = False
    min_entries: int = 30
    tag: Literal["R", "D", "goal", "unverified"]
    source: str

    @model_validator(mode="after")
    def _consistent(self) -> ReferenceCheck:
        if self.value is not None and self.range is not None:
            raise ValueError(f"check '{self.name}': give value+tolerance or range, not both")
        if (self.value is None) != (self.tolerance is None):
            raise ValueError(f"check '{self.name}': value and tolerance go together")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"check '{self.name}': tolerance must be >= 0")
        if self.value is None and self.range is None and self.tag != "unverified":
            raise ValueError(f"check '{self.name}': without a reference value the tag must be 'unverified'")
        return self

    def bounds(self) -> tuple[float, float] | None:
        """``(lo, hi)`` of the accepted range (±inf for open ends), or None without a reference."""
        if self.range is not None:
            lo, hi = self.range
            return (-math.inf if lo is None else lo, math.inf if hi is None else hi)
        if self.value is None or self.tolerance is None:
            return None
        tol = self.tolerance * abs(self.value) if self.relative else self.tolerance
        return self.value - tol, self.value + tol

    def applies_to(self, mu: float | None) -> bool:
        """Whether a sample of mean pileup ``mu`` is in this check's μ range."""
        if self.mu is None:
            return True
        if mu is None:
            return False
        lo, hi = self.mu
        return (lo is None or mu >= lo) and (hi is None or mu < hi)

    def reference_text(self) -> str:
        """The reference in words, e.g. ``1 ± 0.02``, ``0.24 ± 25 %``, ``[0.8, 0.92]``."""
        if self.range is not None:
            lo, hi = self.range
            if lo is None:
                return f"≤ {hi:g}"
            if hi is None:
                return f"≥ {lo:g}"
            return f"[{lo:g}, {hi:g}]"
        if self.value is None:
            return "none"
        if self.relative:
            return f"{self.value:g} ± {self.tolerance * 100:g} %"
        return f"{self.value:g} ± {self.tolerance:g}"


class ReferenceTable(StrictModel):
    """The reference table: a list of checks."""

    checks: list[ReferenceCheck]


def load_reference(path: str | Path | None = None) -> ReferenceTable:
    """Read and check a reference table (default: the shipped ``reference.yaml``).

    Raises
    ------
    ConfigError
        Unknown key, bad value, duplicate name, unknown measure/output/parameter (named, with
        a suggestion).
    """
    if path is None:
        text = resources.files("lhcml.validation").joinpath("reference.yaml").read_text()
        source = "lhcml/validation/reference.yaml (shipped)"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"reference table '{path}' does not exist")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None
    table = validate_config(ReferenceTable, data, source)
    seen: set[str] = set()
    for c in table.checks:
        if c.name in seen:
            raise ConfigError(f"{source}: check name '{c.name}' appears twice")
        seen.add(c.name)
        if c.measure not in MEASURES:
            raise ConfigError(f"{source}: check '{c.name}': unknown measure '{c.measure}'"
                              f"{_suggest(c.measure, list(MEASURES))}")  # fmt: skip
        m = MEASURES[c.measure]
        if c.output not in m.outputs:
            raise ConfigError(f"{source}: check '{c.name}': measure '{c.measure}' has no output "
                              f"'{c.output}'{_suggest(c.output, list(m.outputs))}")  # fmt: skip
        for k in c.params:
            if k not in m.params:
                raise ConfigError(f"{source}: check '{c.name}': unknown parameter '{k}' of measure "
                                  f"'{c.measure}'{_suggest(k, list(m.params))}")  # fmt: skip
        if c.compare != m.compare:
            raise ConfigError(f"{source}: check '{c.name}': measure '{c.measure}' "
                              f"{'compares several samples' if m.compare else 'works on one sample'}: "
                              f"set compare: {str(m.compare).lower()}")  # fmt: skip
    return table


def reference_markdown(table: ReferenceTable | None = None) -> str:
    """The reference table as a Markdown table (docs/validation.md embeds it; a test keeps them equal)."""
    table = table or load_reference()
    rows = ["| check | quantity | measure (output, params) | reference | μ range | min n | tag | source |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in table.checks:
        params = ", ".join(f"{k}={v}" for k, v in c.params.items())
        mu = "all" if c.mu is None else f"[{c.mu[0] if c.mu[0] is not None else ''}, {c.mu[1] if c.mu[1] is not None else '∞'})"
        cells = [c.name, c.quantity, f"{c.measure} ({c.output}{'; ' + params if params else ''})",
                 c.reference_text() + (" (compares samples)" if c.compare else ""), mu, str(c.min_entries),
                 c.tag, c.source]  # fmt: skip
        rows.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(rows) + "\n"
