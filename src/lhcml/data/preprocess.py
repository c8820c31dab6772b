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
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from lhcml.config import StrictModel, load_config
from lhcml.data.checks import read_fields
from lhcml.data.cuts import Cuts
from lhcml.data.files import expand_inputs
from lhcml.data.h5 import H5Writer
from lhcml.data.normalisation import ClassCounter, NormAccumulator
from lhcml.data.resampling import (
    METHODS,
    allocate_multiplicities,
    bin_jets,
    density_ratio,
    positions_in_groups,
    target_counts,
)
from lhcml.data.schema import PER_EVENT_DATASETS, TRUTH_ORIGIN
from lhcml.errors import ConfigError, SchemaError
from lhcml.labels import get_scheme

log = logging.getLogger(__name__)

#: number of classes of known integer track labels (for the class weights)
KNOWN_LABEL_CLASSES = {"ftagTruthOriginLabel": len(TRUTH_ORIGIN)}
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------- config
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


# ------------------------------------------------------------------------------ h5 helpers
def _open(path: str | Path) -> h5py.File:
    from lhcml.data.checks import open_h5

    return open_h5(path)


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
    from lhcml.data.h5 import H5Reader

    yield from H5Reader([str(f) for f in files], batch_size=batch_size).stream(fields)


def _retype(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.zeros(arr.shape, dtype=dtype)
    for n in dtype.names:
        if n in (arr.dtype.names or ()):
            out[n] = arr[n]
    return out


# ----------------------------------------------------------------------------- the pipeline
class Preprocessor:
    """Runs the preprocessing stages for one :class:`PreprocessConfig` (constructor does no I/O)."""

    def __init__(self, cfg: PreprocessConfig):
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
                with _open(path) as f:
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

    # --- stage 2: resampled, shuffled train/val
    def _out_dtypes(self, f: h5py.File) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        dts = {}
        for g, names in self.kept_fields().items():
            src = f[g].dtype
            fields = [(n, src.fields[n][0]) for n in names]
            if g == self.jets:
                fields += [("flavour_label", "i4"), ("weight", "f4")]
            dts[g] = (np.dtype(fields), f[g].shape[1:])
        return dts

    def write_split(self, split: str, hist: np.ndarray) -> int:
        """Resample, shuffle and write ``<out>/<split>.h5``; return the number of jets written."""
        cfg, r = self.cfg, self.cfg.resampling
        rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
        target = hist[self.target_idx]
        n_want = cfg.num_jets_train if split == "train" else cfg.num_jets_val
        if n_want is None:
            n_want = int(target.sum())
        if target.sum() == 0:
            raise SchemaError(f"no '{r.target}' (target class) jets in the {split} split")
        alloc, weights = [], []
        for c, name in enumerate(cfg.classes):
            if hist[c].sum() == 0:
                raise SchemaError(
                    f"no '{name}' jets in the {split} split after cuts; check the inputs and cuts"
                )
            if r.method == "none":
                alloc.append(None)
                weights.append(density_ratio(target, hist[c]))
            else:
                wanted = target_counts(target, n_want, hist[c])
                lost = 1 - target[hist[c] > 0].sum() / target.sum()
                if lost > 0.01:
                    log.warning(
                        "%s: %.1f%% of the target (pT,|eta|) distribution is in bins without %s "
                        "jets; those bins stay empty",
                        split,
                        100 * lost,
                        name,
                    )
                alloc.append(allocate_multiplicities(hist[c], wanted, r.method, rng))
                weights.append(np.ones(self.n_bins))
        total = (
            int(hist.sum()) if r.method == "none" else int(sum(a[1].sum() for a in alloc))
        )
        n_buckets = max(1, -(-total // cfg.shuffle_buffer))
        first = next(iter(self.files.values()))[0]
        with _open(first) as f:
            dtypes = self._out_dtypes(f)
        bucket_path = self.out / f"{split}.h5.tmp-buckets"
        try:
            written = self._fill_and_merge(
                split, bucket_path, dtypes, n_buckets, total, alloc, weights, rng
            )
        finally:
            bucket_path.unlink(missing_ok=True)
        return written

    def _fill_and_merge(self, split, bucket_path, dtypes, n_buckets, total, alloc, weights, rng):
        """Stream the inputs into random on-disk buckets, then shuffle each into ``<split>.h5``."""
        cfg, r = self.cfg, self.cfg.resampling
        kept = self.kept_fields()
        seen = np.zeros(len(cfg.classes) * self.n_bins, dtype=np.int64)
        written = 0
        with h5py.File(bucket_path, "w") as bf:
            for i in range(n_buckets):
                for g, (dt, tail) in dtypes.items():
                    bf.create_dataset(
                        f"b{i}/{g}", shape=(0, *tail), maxshape=(None, *tail), dtype=dt,
                        chunks=(max(1, min(1000, 2**20 // dt.itemsize // max(1, int(np.prod(tail))))), *tail),
                    )  # fmt: skip
            counts = np.zeros(n_buckets, dtype=np.int64)
            from tqdm import tqdm

            bar = tqdm(total=total, desc=f"{split}: resample", unit="jet", disable=None)
            for sample, files in self.files.items():
                for batch in _stream(files, kept, cfg.batch_size):
                    jets = batch[self.jets]
                    mask, lab = self._select(jets, sample, split)
                    b = self._bins(jets)
                    mask &= b >= 0
                    idx = np.nonzero(mask)[0]
                    lab, b = lab[idx], b[idx]
                    key = lab * self.n_bins + b
                    pos = positions_in_groups(key, len(seen), seen)
                    seen += np.bincount(key, minlength=len(seen))
                    mult = np.ones(len(idx), dtype=np.int64)
                    w = np.ones(len(idx), dtype=np.float32)
                    for c in range(len(cfg.classes)):
                        sel = lab == c
                        if alloc[c] is not None:
                            offsets, m = alloc[c]
                            mult[sel] = m[offsets[b[sel]] + pos[sel]]
                        else:
                            w[sel] = weights[c][b[sel]]
                    rows = np.repeat(idx, mult)
                    out = {}
                    for g, (dt, _) in dtypes.items():
                        out[g] = _retype(batch[g][rows], dt)
                    out[self.jets]["flavour_label"] = np.repeat(lab, mult)
                    out[self.jets]["weight"] = np.repeat(w, mult)
                    dest = rng.integers(0, n_buckets, len(rows))
                    for i in np.unique(dest):
                        s = dest == i
                        for g in dtypes:
                            ds = bf[f"b{i}/{g}"]
                            ds.resize(counts[i] + s.sum(), axis=0)
                            ds[counts[i] :] = out[g][s]
                        counts[i] += s.sum()
                    bar.update(len(rows))
            bar.close()
            writer = H5Writer(
                self.out / f"{split}.h5",
                attrs={
                    "lhcml_config_hash": self.config_hash,
                    "classes": cfg.classes,
                    "resampling": r.method,
                },
                dataset_attrs={self.jets: {"flavour_label": list(cfg.classes)}},  # as UPP: Salt reads it
            )
            with writer:
                for i in range(n_buckets):
                    perm = rng.permutation(int(counts[i]))
                    chunk = {g: bf[f"b{i}/{g}"][...][perm] for g in dtypes}
                    writer.append(chunk)
                    written += len(perm)
        return written

    # --- stage 3: test files
    def write_test(self, sample: str) -> int:
        """Write ``test_<sample>.h5``: every jet of the test split (no resampling), all fields."""
        files = self.files[sample]
        with _open(files[0]) as f:
            n0 = len(f[self.jets])
            groups = [
                g for g in f
                if isinstance(f[g], h5py.Dataset) and g not in PER_EVENT_DATASETS
                and f[g].dtype.names and len(f[g]) == n0
            ]  # fmt: skip
            dtypes = {}
            for g in groups:
                dt = f[g].dtype
                if g == self.jets:
                    dt = np.dtype(
                        [(n, dt.fields[n][0]) for n in dt.names if n != "flavour_label"]
                        + [("flavour_label", "i4")]
                    )
                dtypes[g] = (dt, f[g].shape[1:])
        n = 0
        attrs = {"lhcml_config_hash": self.config_hash, "classes": self.cfg.classes}
        with H5Writer(self.out / f"test_{sample}.h5", attrs=attrs,
                      dataset_attrs={self.jets: {"flavour_label": list(self.cfg.classes)}}) as writer:
            for batch in _stream(files, dict.fromkeys(groups), self.cfg.batch_size):
                mask, lab = self._select(batch[self.jets], sample, "test")
                out = {g: _retype(batch[g][mask], dtypes[g][0]) for g in groups}
                out[self.jets]["flavour_label"] = lab[mask]
                writer.append(out)
                n += int(mask.sum())
        return n

    # --- stage 4: normalisation and class weights
    def norm_and_classes(self) -> tuple[dict, dict, np.ndarray]:
        """norm_dict, class_dict and the (n_classes, n_bins) histogram of ``train.h5``."""
        inputs = {g: list(vg.inputs) for g, vg in self.cfg.variables.items()}
        labels: dict[str, dict[str, int]] = {self.jets: {"flavour_label": len(self.cfg.classes)}}
        path = self.out / "train.h5"
        with _open(path) as f:
            for g, vg in self.cfg.variables.items():
                for v in vg.labels:
                    kind = f[g].dtype.fields[v][0].kind
                    if kind not in "iu" or "VertexIndex" in v or v == self.scheme.label_var:
                        continue
                    n = KNOWN_LABEL_CLASSES.get(v)
                    if n is None:
                        n = 1
                        for s in range(0, len(f[g]), self.cfg.batch_size):
                            n = max(n, int(read_fields(f[g], [v], s, s + self.cfg.batch_size, path)[v].max()) + 1)
                    labels.setdefault(g, {})[v] = n
        norm = NormAccumulator(inputs)
        counter = ClassCounter(labels)
        hist = np.zeros((len(self.cfg.classes), self.n_bins), dtype=np.int64)
        fields = {g: None for g in self.cfg.variables}
        for batch in _stream([path], fields, self.cfg.batch_size):
            norm.update(batch)
            counter.update(batch)
            j = batch[self.jets]
            b = self._bins(j)
            np.add.at(hist, (j["flavour_label"], b), 1)
        return norm.result(), counter.result(), hist

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
        _write_text_atomic(
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
                _write_text_atomic(outputs["norm_dict"], yaml.safe_dump(norm, sort_keys=False))
                _write_text_atomic(outputs["class_dict"], yaml.safe_dump(classes, sort_keys=False))
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


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def plot_spectra(before: np.ndarray, after: np.ndarray, cfg: PreprocessConfig, outdir: Path) -> None:
    """PNG figures of the pT and |η| spectra per class before and after resampling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scheme = get_scheme(cfg.label_scheme).subset(cfg.classes)
    r = cfg.resampling
    shape = (len(cfg.classes), len(r.pt_bins) - 1, len(r.abs_eta_bins) - 1)
    tmpdir = outdir.with_name(outdir.name + ".tmp")
    tmpdir.mkdir(parents=True, exist_ok=True)
    for axis, (var, edges, xlabel) in enumerate(
        [("pt", np.asarray(r.pt_bins) / 1e3, "Jet $p_T$ [GeV]"),
         ("abs_eta", np.asarray(r.abs_eta_bins), r"Jet $|\eta|$")]
    ):  # fmt: skip
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, h, title in ((axes[0], before, "before resampling"), (axes[1], after, "after")):
            h3 = h.reshape(shape).sum(axis=2 - axis)
            for c, cl in enumerate(scheme.classes):
                dens = h3[c] / max(h3[c].sum(), 1) / np.diff(edges)
                ax.stairs(dens, edges, label=cl.label, color=cl.colour)
            ax.set_xlabel(xlabel)
            ax.set_title(title)
            if var == "pt":
                ax.set_xscale("log")
            ax.set_yscale("log")
        axes[0].set_ylabel("Normalised density")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(tmpdir / f"{var}.png", dpi=100)
        plt.close(fig)
    if outdir.exists():
        import shutil

        shutil.rmtree(outdir)
    os.replace(tmpdir, outdir)


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
