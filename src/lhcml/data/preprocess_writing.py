"""Writing the training files: resampled, shuffled ``train.h5``/``val.h5`` and ``test_<sample>.h5``.

Stage 2 resamples each class to the target class's (pT, |η|) distribution
(:mod:`lhcml.data.resampling`) and writes the kept variables through an on-disk bucket shuffle (a
uniformly random order without loading the sample in memory); stage 3 writes every jet of the
test split of each sample, not resampled, with all fields of the input.
"""

from __future__ import annotations

import logging

import h5py
import numpy as np

from lhcml.data.checks import open_h5
from lhcml.data.h5 import H5Writer
from lhcml.data.preprocess_config import SPLITS
from lhcml.data.preprocess_selection import JetSelection, _stream
from lhcml.data.resampling import (
    allocate_multiplicities,
    density_ratio,
    positions_in_groups,
    target_counts,
)
from lhcml.data.schema import PER_EVENT_DATASETS
from lhcml.errors import SchemaError

log = logging.getLogger(__name__)


def _retype(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.zeros(arr.shape, dtype=dtype)
    for n in dtype.names:
        if n in (arr.dtype.names or ()):
            out[n] = arr[n]
    return out


class SplitWriter(JetSelection):
    """Writes the train/val/test files of one preprocessing config into ``cfg.output_dir``."""

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
        with open_h5(first) as f:
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
        with open_h5(files[0]) as f:
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


__all__ = ["SplitWriter"]
