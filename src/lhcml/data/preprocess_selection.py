"""Which jets go where: class labels, cuts, the event-number split and the (pT, |η|) binning.

:class:`JetSelection` holds what a preprocessing config says about selecting jets (inputs per
sample, class/global/sample cuts, split residues, resampling bins). It checks the inputs once
(:meth:`~JetSelection.validate_inputs`) and histograms every class of a split
(:meth:`~JetSelection.histograms`, stage 1 of ``lhcml preprocess``). The constructor does no I/O.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from lhcml.data.checks import open_h5
from lhcml.data.cuts import Cuts
from lhcml.data.files import expand_inputs
from lhcml.data.h5 import H5Reader
from lhcml.data.preprocess_config import PreprocessConfig
from lhcml.data.resampling import bin_jets
from lhcml.errors import SchemaError
from lhcml.labels import get_scheme


def _expand(patterns: list[str], sample: str) -> list[Path]:
    return expand_inputs(patterns, context=f"(inputs of sample '{sample}' in the preprocessing config)")


def _check_fields(path: Path, f: h5py.File, group: str, names: list[str]) -> None:
    if group not in f:
        raise SchemaError(
            f"{path}: dataset '{group}' is missing (datasets in the file: {', '.join(f)}); "
            "remove it from 'variables' or use files that have it"
        )
    have = f[group].dtype.names or ()
    for n in names:
        if n not in have:
            close = difflib.get_close_matches(n, have, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SchemaError(
                f"{path}: variable '{n}' is not in dataset '{group}'{hint}; fix the name in "
                "'variables' of the preprocessing config or re-create the input"
            )


def _stream(
    files: list[Path], fields: dict[str, list[str] | None], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """``{group: structured array}`` chunks of at most ``batch_size`` jets, file by file."""
    yield from H5Reader([str(f) for f in files], batch_size=batch_size).stream(fields)



class JetSelection:
    """The jet selection of one :class:`PreprocessConfig` (constructor does no I/O)."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.scheme = get_scheme(cfg.label_scheme).subset(cfg.classes)
        self.class_cuts = [Cuts.from_list(c.cuts) for c in self.scheme.classes]
        self.global_cuts = Cuts.from_list(cfg.global_cuts)
        self.sample_cuts = {s: Cuts.from_list(sc.cuts) for s, sc in cfg.samples.items()}
        self.jets = cfg.jets_name
        self.n_bins = (len(cfg.resampling.pt_bins) - 1) * (len(cfg.resampling.abs_eta_bins) - 1)
        self.target_idx = cfg.classes.index(cfg.resampling.target)
        self.config_hash = hashlib.sha256(
            json.dumps(cfg.model_dump(), sort_keys=True).encode()
        ).hexdigest()[:16]
        self._files: dict[str, list[Path]] | None = None

    # --- inputs
    @property
    def files(self) -> dict[str, list[Path]]:
        if self._files is None:
            self._files = {s: _expand(sc.inputs, s) for s, sc in self.cfg.samples.items()}
        return self._files

    def selection_vars(self) -> list[str]:
        cuts = self.global_cuts + Cuts(sum((c.cuts for c in self.class_cuts), ()))
        for c in self.sample_cuts.values():
            cuts = cuts + c
        base = ["pt", "eta", "eventNumber", self.scheme.label_var]
        return list(dict.fromkeys(base + cuts.variables))

    def kept_fields(self) -> dict[str, list[str]]:
        """Variables written to train/val per dataset (inputs, labels, and what we always need)."""
        out = {}
        for g, vg in self.cfg.variables.items():
            names = list(vg.inputs) + list(vg.labels)
            if g == self.jets:
                names = names + self.selection_vars()
            else:
                names = names + ["valid"]
            out[g] = list(dict.fromkeys(names))
        return out

    def validate_inputs(self) -> None:
        """Check every input file has the datasets and variables the config names."""
        kept = self.kept_fields()
        for files in self.files.values():
            for path in files:
                with open_h5(path) as f:
                    for g, names in kept.items():
                        _check_fields(path, f, g, names)
                    n = len(f[self.jets])
                    for g in kept:
                        if len(f[g]) != n:
                            raise SchemaError(
                                f"{path}: dataset '{g}' has {len(f[g])} rows but "
                                f"'{self.jets}' has {n}; the file is inconsistent"
                            )

    # --- per-chunk selection
    def _labels(self, jets: np.ndarray) -> np.ndarray:
        lab = np.full(len(jets), -1, dtype=np.int64)
        for i, cuts in enumerate(self.class_cuts):
            lab = np.where((lab < 0) & cuts(jets), i, lab)
        return lab

    def _select(self, jets: np.ndarray, sample: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Mask of the jets of ``split`` passing all cuts and in a class; and their labels."""
        sp = self.cfg.split
        mask = np.isin(jets["eventNumber"] % sp.modulus, getattr(sp, split))
        mask &= self.global_cuts(jets) & self.sample_cuts[sample](jets)
        lab = self._labels(jets)
        return mask & (lab >= 0), lab

    def _bins(self, jets: np.ndarray) -> np.ndarray:
        r = self.cfg.resampling
        return bin_jets(jets["pt"], np.abs(jets["eta"]), r.pt_bins, r.abs_eta_bins)

    # --- stage 1: histograms
    def histograms(self, split: str) -> np.ndarray:
        """``(n_classes, n_bins)`` counts of the jets of ``split`` (stream order is fixed)."""
        hist = np.zeros((len(self.cfg.classes), self.n_bins), dtype=np.int64)
        fields = {self.jets: self.selection_vars()}
        for sample, files in self.files.items():
            for batch in _stream(files, fields, self.cfg.batch_size):
                jets = batch[self.jets]
                mask, lab = self._select(jets, sample, split)
                b = self._bins(jets)
                mask &= b >= 0
                np.add.at(hist, (lab[mask], b[mask]), 1)
        return hist


__all__ = ["JetSelection"]
