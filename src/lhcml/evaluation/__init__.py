"""Evaluation: from prediction files to results, plots and the report (``lhcml evaluate``).

It sits above :mod:`lhcml.metrics` (pure metric functions on arrays) and :mod:`lhcml.plots`
(figures), and orchestrates them, one module per job:

* :mod:`lhcml.evaluation.config` — :class:`EvaluateConfig` (samples, taggers, working points);
* :mod:`lhcml.evaluation.inputs` — file patterns, tagger-column discovery, reading a sample;
* :mod:`lhcml.evaluation.sample_metrics` — every metric of one sample and tagger (no I/O);
* :mod:`lhcml.evaluation.figures` — the plots of one sample;
* :mod:`lhcml.evaluation.run` — :func:`evaluate` / :func:`evaluate_from_file`: the driver that
  writes ``results.json``/``results.yaml`` and the plots.
"""

from __future__ import annotations

from lhcml.evaluation.config import (
    SAMPLE_PRESETS,
    BinnedVariable,
    EvaluateConfig,
    PublishedValue,
    SampleConfig,
    TaggerConfig,
)
from lhcml.evaluation.inputs import expand_files, read_sample, tagger_columns
from lhcml.evaluation.run import evaluate, evaluate_from_file
from lhcml.evaluation.sample_metrics import evaluate_sample, tagger_discriminant

__all__ = [
    "SAMPLE_PRESETS",
    "BinnedVariable",
    "EvaluateConfig",
    "PublishedValue",
    "SampleConfig",
    "TaggerConfig",
    "evaluate",
    "evaluate_from_file",
    "evaluate_sample",
    "expand_files",
    "read_sample",
    "tagger_columns",
    "tagger_discriminant",
]
