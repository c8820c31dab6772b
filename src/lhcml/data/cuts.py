"""Selection cuts parsed from strings through an operator table (never ``eval``).

A cut is ``[abs(]VARIABLE[)] [% MODULUS] OPERATOR NUMBER``, e.g.::

    "pt > 20e3"                          # MeV
    "abs(eta) < 2.5"
    "eventNumber % 10 <= 7"              # training split by event number
    "HadronConeExclTruthLabelID == 5"

The same strings are used by ``labels.yaml`` and by ATLAS's umami-preprocessing/ftag configs.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lhcml.errors import ConfigError, SchemaError

#: comparison operators understood in cut strings
OPERATORS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}

#: functions that may wrap the variable
FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"abs": np.abs}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf"
_CUT_RE = re.compile(
    r"^\s*(?:(?P<func>[A-Za-z_]\w*)\s*\(\s*(?P<fvar>[A-Za-z_][\w.]*)\s*\)|(?P<var>[A-Za-z_][\w.]*))"
    r"\s*(?:%\s*(?P<mod>\d+))?"
    r"\s*(?P<op>[=!<>]=?|[^\w\s.+-]+)"
    r"\s*(?P<value>" + _NUMBER + r")\s*$"
)


@dataclass(frozen=True)
class Cut:
    """One cut: ``func(variable) % modulus <op> value``."""

    variable: str
    op: str
    value: float
    func: str | None = None
    modulus: int | None = None

    @classmethod
    def parse(cls, text: str) -> Cut:
        """Parse one cut string; raise :class:`ConfigError` naming the problem."""
        if not isinstance(text, str):
            raise ConfigError(f"a cut must be a string like 'pt > 20e3', got {text!r}")
        m = _CUT_RE.match(text)
        if m is None:
            raise ConfigError(
                f"cannot parse cut '{text}': expected '[abs(]variable[)] [% N] OP number' "
                f"with OP one of {', '.join(OPERATORS)}, e.g. 'abs(eta) < 2.5'"
            )
        op = m["op"]
        if op not in OPERATORS:
            raise ConfigError(
                f"unknown operator '{op}' in cut '{text}' (valid operators: {', '.join(OPERATORS)})"
            )
        func = m["func"]
        if func is not None and func not in FUNCTIONS:
            raise ConfigError(
                f"unknown function '{func}' in cut '{text}' (valid functions: {', '.join(FUNCTIONS)})"
            )
        variable = m["fvar"] or m["var"]
        modulus = int(m["mod"]) if m["mod"] is not None else None
        if modulus == 0:
            raise ConfigError(f"modulus 0 in cut '{text}' (use a positive integer)")
        return cls(variable, op, float(m["value"]), func, modulus)

    def __str__(self) -> str:
        var = f"{self.func}({self.variable})" if self.func else self.variable
        mod = f" % {self.modulus}" if self.modulus is not None else ""
        return f"{var}{mod} {self.op} {self.value:g}"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows of the structured ``array`` passing the cut."""
        names = array.dtype.names or ()
        if self.variable not in names:
            close = difflib.get_close_matches(self.variable, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SchemaError(
                f"cut '{self}' uses variable '{self.variable}' which is not in the data{hint}; "
                f"available: {', '.join(names)}"
            )
        x = array[self.variable]
        if self.func is not None:
            x = FUNCTIONS[self.func](x)
        if self.modulus is not None:
            x = x % self.modulus
        return OPERATORS[self.op](x, self.value)


@dataclass(frozen=True)
class Cuts:
    """An AND of :class:`Cut` s; ``cuts(array)`` returns the boolean mask."""

    cuts: tuple[Cut, ...] = ()

    @classmethod
    def from_list(cls, cuts: Iterable[str] | Cuts | None) -> Cuts:
        """Build from a list of strings (``None`` or empty: no cut)."""
        if cuts is None:
            return cls()
        if isinstance(cuts, Cuts):
            return cuts
        if isinstance(cuts, str):
            cuts = [cuts]
        return cls(tuple(Cut.parse(c) for c in cuts))

    @property
    def variables(self) -> list[str]:
        """The variables the cuts need, in first-use order, without duplicates."""
        return list(dict.fromkeys(c.variable for c in self.cuts))

    def __add__(self, other: Cuts | Sequence[str]) -> Cuts:
        return Cuts(self.cuts + Cuts.from_list(other).cuts)

    def __len__(self) -> int:
        return len(self.cuts)

    def __bool__(self) -> bool:
        return bool(self.cuts)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Boolean mask (shape ``array.shape``) of the rows passing all cuts."""
        mask = np.ones(array.shape, dtype=bool)
        for cut in self.cuts:
            mask &= cut(array)
        return mask

    def __str__(self) -> str:
        return " and ".join(str(c) for c in self.cuts) or "no cuts"
