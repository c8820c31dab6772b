"""The label/class registry (``labels.yaml``), shared by preprocessing, training and plots."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from lhcml.errors import ConfigError


@dataclass(frozen=True)
class LabelClass:
    """One class: its name, selection cuts, tagger-output suffix, plot label and colour."""

    name: str
    cuts: tuple[str, ...]
    output: str
    label: str
    colour: str


@dataclass(frozen=True)
class LabelScheme:
    """A set of classes labelled by one variable (e.g. flavour by HadronConeExclTruthLabelID)."""

    name: str
    label_var: str
    classes: tuple[LabelClass, ...]

    def get(self, name: str) -> LabelClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise ConfigError(
            f"unknown class '{name}' in label scheme '{self.name}' "
            f"(valid: {', '.join(c.name for c in self.classes)})"
        )

    def subset(self, names: list[str]) -> LabelScheme:
        """The scheme restricted to ``names``, in that order (the order of the network outputs)."""
        return LabelScheme(self.name, self.label_var, tuple(self.get(n) for n in names))


@lru_cache(maxsize=1)
def _registry() -> dict[str, LabelScheme]:
    raw = yaml.safe_load(resources.files("lhcml").joinpath("labels.yaml").read_text())
    out = {}
    for scheme, spec in raw.items():
        classes = tuple(
            LabelClass(c["name"], tuple(c["cuts"]), c["output"], c["label"], c["colour"])
            for c in spec["classes"]
        )
        out[scheme] = LabelScheme(scheme, spec["label_var"], classes)
    return out


def get_scheme(name: str) -> LabelScheme:
    """Return a label scheme by name (``flavour``, ``boosted``, ``quark_gluon``, ``photon``)."""
    reg = _registry()
    if name not in reg:
        raise ConfigError(f"unknown label scheme '{name}' (valid: {', '.join(reg)})")
    return reg[name]
