"""``lhcml preprocess``: from flat dumper-style files to training-ready files, as UPP does it.

Stages (each writes its outputs atomically and is skipped on a re-run with the same config):

1. ``hist``: stream the inputs once (jet kinematics only) and histogram every class in
   (pT, |η|) per split;
2. ``train`` / ``val``: stream again, resample each class to the target class's (pT, |η|)
   distribution (:mod:`lhcml.data.resampling`), write the selected variables through an
   on-disk bucket shuffle to ``train.h5`` / ``val.h5`` (a uniformly random order without
   loading the sample in memory);
3. ``test``: one ``test_<sample>.h5`` per sample, not resampled, with every field of the input;
4. ``norm``: ``norm_dict.yaml`` and ``class_dict.yaml`` from ``train.h5``;
5. ``plots``: (pT, |η|) spectra per class before/after resampling in ``preprocess_report/``.

Every output jet gets ``flavour_label`` (the index of its class in ``classes``) and ``weight``.
The split uses ``eventNumber % modulus`` so that all jets of an event land in the same split.

The jobs live in one module each; this module runs them in order and remembers which stages a
run with the same config finished:

- :mod:`lhcml.data.preprocess_config`: the configuration (:class:`PreprocessConfig`);
- :mod:`lhcml.data.preprocess_selection`: labels, cuts, split, binning, stage 1;
- :mod:`lhcml.data.resampling`: the resampling arithmetic;
- :mod:`lhcml.data.preprocess_writing`: stages 2 and 3 (resampled, shuffled files; test files);
- :mod:`lhcml.data.preprocess_norm`: stages 4 and 5 (normalisation, class weights, plots).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import yaml

from lhcml.atomic import atomic_write_text
from lhcml.data.preprocess_config import (
    SPLITS,
    PreprocessConfig,
    ResamplingConfig,
    SampleConfig,
    SplitConfig,
    VariableGroup,
    load_preprocess_config,
)
from lhcml.data.preprocess_norm import KNOWN_LABEL_CLASSES, NormWriter, plot_spectra
from lhcml.data.preprocess_selection import JetSelection
from lhcml.data.preprocess_writing import SplitWriter
from lhcml.data.resampling import METHODS
from lhcml.errors import ConfigError

log = logging.getLogger(__name__)


class Preprocessor(SplitWriter, NormWriter):
    """Runs the preprocessing stages for one :class:`PreprocessConfig` (constructor does no I/O)."""

    # --- driver
    def _state_path(self) -> Path:
        return self.out / ".preprocess_state.json"

    def _load_state(self) -> set[str]:
        p = self._state_path()
        if not p.is_file():
            return set()
        st = json.loads(p.read_text())
        if st.get("config_hash") != self.config_hash:
            log.warning("config changed since the last run in %s: redoing all stages", self.out)
            return set()
        return set(st.get("done", []))

    def _mark(self, done: set[str]) -> None:
        atomic_write_text(
            self._state_path(),
            json.dumps({"config_hash": self.config_hash, "done": sorted(done)}, indent=1),
        )

    def run(self, stages: list[str] | None = None, force: bool = False) -> dict[str, Path]:
        """Run the stages (default all) and return the paths of the outputs."""
        all_stages = ["train", "val", "test", "norm", "plots"]
        stages = all_stages if stages is None else stages
        for s in stages:
            if s not in all_stages:
                raise ConfigError(f"unknown preprocessing stage '{s}' (valid: {', '.join(all_stages)})")
        self.out.mkdir(parents=True, exist_ok=True)
        self.validate_inputs()
        done = set() if force else self._load_state()
        outputs = {
            "train": self.out / "train.h5",
            "val": self.out / "val.h5",
            "norm_dict": self.out / "norm_dict.yaml",
            "class_dict": self.out / "class_dict.yaml",
            "report": self.out / "preprocess_report",
        }
        for sample in self.cfg.samples:
            outputs[f"test_{sample}"] = self.out / f"test_{sample}.h5"
        hists: dict[str, np.ndarray] = {}
        for split in ("train", "val"):
            if split in stages and not (split in done and outputs[split].is_file()):
                hists[split] = self.histograms(split)
                n = self.write_split(split, hists[split])
                log.info("wrote %d jets to %s", n, outputs[split])
                done.add(split)
                self._mark(done)
        if "test" in stages and not ("test" in done and all(
            outputs[f"test_{s}"].is_file() for s in self.cfg.samples
        )):  # fmt: skip
            for sample in self.cfg.samples:
                self.write_test(sample)
            done.add("test")
            self._mark(done)
        need_norm = "norm" in stages and not (
            "norm" in done and outputs["norm_dict"].is_file() and outputs["class_dict"].is_file()
        )
        need_plots = "plots" in stages and not ("plots" in done and outputs["report"].is_dir())
        if need_norm or need_plots:
            if not outputs["train"].is_file():
                raise ConfigError(f"{outputs['train']} does not exist: run the 'train' stage first")
            norm, classes, after = self.norm_and_classes()
            if need_norm:
                atomic_write_text(outputs["norm_dict"], yaml.safe_dump(norm, sort_keys=False))
                atomic_write_text(outputs["class_dict"], yaml.safe_dump(classes, sort_keys=False))
                done.add("norm")
                self._mark(done)
            if need_plots:
                before = hists.get("train")
                if before is None:
                    before = self.histograms("train")
                plot_spectra(before, after, self.cfg, outputs["report"])
                done.add("plots")
                self._mark(done)
        return outputs



def preprocess(
    cfg: PreprocessConfig | str | Path, stages: list[str] | None = None, force: bool = False
) -> dict[str, Path]:
    """Run the preprocessing (all stages by default); return the output paths.

    Parameters
    ----------
    cfg
        A :class:`PreprocessConfig` or the path of its YAML file.
    stages
        Subset of ``train, val, test, norm, plots``.
    force
        Redo stages even if a previous run with the same config finished them.
    """
    if not isinstance(cfg, PreprocessConfig):
        cfg = load_preprocess_config(cfg)
    if cfg.resampling.method not in METHODS:  # pragma: no cover - pydantic checks it
        raise ConfigError(f"unknown resampling method {cfg.resampling.method}")
    return Preprocessor(cfg).run(stages, force)


__all__ = [
    "KNOWN_LABEL_CLASSES",
    "SPLITS",
    "JetSelection",
    "PreprocessConfig",
    "Preprocessor",
    "ResamplingConfig",
    "SampleConfig",
    "SplitConfig",
    "VariableGroup",
    "load_preprocess_config",
    "plot_spectra",
    "preprocess",
]
