"""Prediction files for the metrics/plots tests: lhcml mock jets (``lhcml.data.mock``) with
tagger outputs ``<tagger>_<output>`` appended, as ``lhcml predict`` writes them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from numpy.lib import recfunctions as rfn

FLAVOUR_OUTPUTS = {5: "pb", 4: "pc", 0: "pu", 15: "ptau"}
BOOSTED_OUTPUTS = {0: "pqcd", 1: "ptop", 2: "pW", 3: "pZ"}


def _softmax_outputs(rng, labels, classes, separation):
    logits = rng.normal(size=(labels.size, len(classes)))
    for k, c in enumerate(classes):
        logits[labels == c, k] += separation
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def write_predictions(
    path: Path,
    kind: str = "ftag",
    n_jets: int = 3000,
    seed: int = 1,
    taggers: dict[str, float] | None = None,
    sculpt: str | None = None,
) -> Path:
    """Write a prediction file; ``taggers`` maps name -> separation (larger = better).

    ``kind`` is ``ftag`` (jets with pb/pc/pu/ptau), ``boosted`` (ptop/pqcd/pW/pZ; the tagger
    named ``sculpt`` gets a top score rising with the QCD jet mass) or ``photon`` (a
    ``photons`` dataset with pprompt/pfake).
    """
    rng = np.random.default_rng(seed)
    taggers = taggers or {"GOOD": 2.0, "REF": 1.0}
    if kind == "photon":
        jets = np.zeros(n_jets, [("pt", "f4"), ("eta", "f4"), ("isPromptPhoton", "i1"),
                                 ("mcEventWeight", "f4")])
        jets["pt"] = (25 + rng.exponential(40, n_jets)) * 1e3
        jets["eta"] = rng.uniform(-2.37, 2.37, n_jets)
        jets["isPromptPhoton"] = rng.random(n_jets) < 0.5
        jets["mcEventWeight"] = 1.0
        label_var, outputs, dataset = "isPromptPhoton", {0: "pfake", 1: "pprompt"}, "photons"
    else:
        from lhcml.data.mock import make_mock_tables

        jets = make_mock_tables(n_jets, n_tracks=1, seed=seed, kind=kind)["jets"]
        jets["mcEventWeight"] = rng.uniform(0.3, 1.7, n_jets)  # non-trivial weights
        if kind == "ftag":
            label_var, outputs = "HadronConeExclTruthLabelID", FLAVOUR_OUTPUTS
        else:
            label_var, outputs = "R10TruthLabel", BOOSTED_OUTPUTS
        dataset = "jets"
    labels = jets[label_var].astype(int)
    classes = list(outputs)
    names, cols = [], []
    for tagger, sep in taggers.items():
        p = _softmax_outputs(rng, labels, classes, sep)
        if kind == "boosted" and tagger == sculpt:
            top = classes.index(1)
            boost = np.exp(0.02 * (jets["mass"] / 1e3 - 100) * (labels == 0))
            p[:, top] *= boost
            p /= p.sum(1, keepdims=True)
        for k, c in enumerate(classes):
            names.append(f"{tagger}_{outputs[c]}")
            cols.append(p[:, k].astype("f4"))
    table = rfn.append_fields(jets, names, cols, usemask=False)
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=table)
    return Path(path)
