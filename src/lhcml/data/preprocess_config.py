"""The ``lhcml preprocess`` configuration: samples, variables, split, resampling (validated on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from lhcml.config import StrictModel, load_config
from lhcml.data.cuts import Cuts
from lhcml.labels import get_scheme

#: the three splits, by ``eventNumber % modulus``
SPLITS = ("train", "val", "test")


class SampleConfig(StrictModel):
    """One input sample: file globs and the cuts that select its jets (e.g. a pT range)."""

    inputs: list[str] = Field(min_length=1)
    cuts: list[str] = []

    @field_validator("cuts")
    @classmethod
    def _parse_cuts(cls, v: list[str]) -> list[str]:
        Cuts.from_list(v)  # raises ConfigError on a bad cut
        return v


class VariableGroup(StrictModel):
    """Variables of one dataset kept in the training files: network inputs and labels."""

    inputs: list[str] = []
    labels: list[str] = []


class SplitConfig(StrictModel):
    """Split by ``eventNumber % modulus``: the residues of each split."""

    modulus: int = Field(10, gt=1)
    train: list[int] = list(range(8))
    val: list[int] = [8]
    test: list[int] = [9]

    @model_validator(mode="after")
    def _disjoint(self) -> SplitConfig:
        seen: dict[int, str] = {}
        for name in SPLITS:
            for r in getattr(self, name):
                if not 0 <= r < self.modulus:
                    raise ValueError(f"residue {r} of split '{name}' is not in [0, {self.modulus})")
                if r in seen:
                    raise ValueError(f"residue {r} is in both '{seen[r]}' and '{name}' splits")
                seen[r] = name
        return self


class ResamplingConfig(StrictModel):
    """Kinematic resampling in (pT, |η|) (see :mod:`lhcml.data.resampling`)."""

    method: Literal["countup", "pdf", "none"] = "countup"
    target: str = "ujets"
    pt_bins: list[float] = Field(
        default_factory=lambda: [float(x) for x in np.geomspace(20e3, 6e6, 41)]
    )  # MeV
    abs_eta_bins: list[float] = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]

    @field_validator("pt_bins", "abs_eta_bins")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if len(v) < 2 or np.any(np.diff(v) <= 0):
            raise ValueError("bin edges must be at least two strictly increasing numbers")
        return v


class PreprocessConfig(StrictModel):
    """The ``lhcml preprocess`` configuration (see ``configs/ftag/preprocess.yaml``)."""

    output_dir: str
    label_scheme: str = "flavour"
    classes: list[str] = ["bjets", "cjets", "ujets"]
    samples: dict[str, SampleConfig] = Field(min_length=1)
    global_cuts: list[str] = []
    variables: dict[str, VariableGroup]
    split: SplitConfig = SplitConfig()
    resampling: ResamplingConfig = ResamplingConfig()
    num_jets_train: int | None = Field(None, gt=0)  # per class; None: as many as the target has
    num_jets_val: int | None = Field(None, gt=0)
    batch_size: int = Field(20_000, gt=0)
    shuffle_buffer: int = Field(200_000, gt=0)  # jets per on-disk shuffle bucket
    seed: int = 42
    jets_name: str = "jets"

    @model_validator(mode="after")
    def _check(self) -> PreprocessConfig:
        scheme = get_scheme(self.label_scheme)
        scheme.subset(self.classes)  # raises ConfigError naming the bad class
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate class in classes: {self.classes}")
        if self.resampling.target not in self.classes:
            raise ValueError(
                f"resampling target '{self.resampling.target}' is not one of the classes "
                f"{self.classes}"
            )
        if self.jets_name not in self.variables:
            raise ValueError(f"variables must contain the jets dataset '{self.jets_name}'")
        Cuts.from_list(self.global_cuts)
        return self


def load_preprocess_config(path: str | Path) -> PreprocessConfig:
    """Load and validate a preprocessing YAML config."""
    return load_config(PreprocessConfig, path)


__all__ = ["SPLITS", "PreprocessConfig", "ResamplingConfig", "SampleConfig", "SplitConfig",
           "VariableGroup", "load_preprocess_config"]
