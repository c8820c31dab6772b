"""The normalisation and class-weight dictionaries of ``train.h5`` and the resampling plots.

Stage 4 of ``lhcml preprocess`` streams ``train.h5`` once and returns ``norm_dict`` (mean and
standard deviation of every input, :class:`~lhcml.data.normalisation.NormAccumulator`),
``class_dict`` (class weights of every label, :class:`~lhcml.data.normalisation.ClassCounter`)
and the (pT, |η|) histogram after resampling, which stage 5 plots beside the one before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lhcml.atomic import atomic_dir
from lhcml.data.checks import open_h5, read_fields
from lhcml.data.normalisation import ClassCounter, NormAccumulator
from lhcml.data.preprocess_config import PreprocessConfig
from lhcml.data.preprocess_selection import JetSelection, _stream
from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.labels import get_scheme

#: number of classes of known integer track labels (for the class weights)
KNOWN_LABEL_CLASSES = {"ftagTruthOriginLabel": len(TRUTH_ORIGIN)}


class NormWriter(JetSelection):
    """Normalisation and class weights from the written ``train.h5``."""

    # --- stage 4: normalisation and class weights
    def norm_and_classes(self) -> tuple[dict, dict, np.ndarray]:
        """norm_dict, class_dict and the (n_classes, n_bins) histogram of ``train.h5``."""
        inputs = {g: list(vg.inputs) for g, vg in self.cfg.variables.items()}
        labels: dict[str, dict[str, int]] = {self.jets: {"flavour_label": len(self.cfg.classes)}}
        path = self.out / "train.h5"
        with open_h5(path) as f:
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


def plot_spectra(before: np.ndarray, after: np.ndarray, cfg: PreprocessConfig, outdir: Path) -> None:
    """PNG figures of the pT and |η| spectra per class before and after resampling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scheme = get_scheme(cfg.label_scheme).subset(cfg.classes)
    r = cfg.resampling
    shape = (len(cfg.classes), len(r.pt_bins) - 1, len(r.abs_eta_bins) - 1)
    with atomic_dir(outdir) as tmpdir:
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



__all__ = ["KNOWN_LABEL_CLASSES", "NormWriter", "plot_spectra"]
