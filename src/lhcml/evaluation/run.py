"""The evaluation driver behind ``lhcml evaluate CONFIG``.

Reads prediction files (flat HDF5 with the tagger outputs written back as
``<tagger>_<output>`` columns, docs/data.md), computes every metric of :mod:`lhcml.metrics` per
sample and tagger, writes ``results.json`` / ``results.yaml`` (a machine-readable table) and the
plots. Works for any label scheme of ``labels.yaml``: flavour tagging (signal ``bjets``,
backgrounds ``cjets``/``ujets``, fractions f_c), boosted tagging (``top`` vs ``qcd``, with the
mass-decorrelation metrics when ``mass_var`` is set) and photon ID (``prompt`` vs ``fake`` in
the ``photons`` dataset). The steps live in :mod:`lhcml.evaluation.inputs` (reading),
:mod:`lhcml.evaluation.sample_metrics` (numbers), :mod:`lhcml.evaluation.figures` (plots); the
HTML report is :func:`lhcml.plots.report.build_report`.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import yaml

from lhcml.atomic import atomic_write_text
from lhcml.config import load_config
from lhcml.evaluation.config import EvaluateConfig
from lhcml.evaluation.figures import make_plots
from lhcml.evaluation.inputs import read_sample
from lhcml.evaluation.sample_metrics import evaluate_sample
from lhcml.plots.style import use_plot_style


def evaluate(cfg: EvaluateConfig, output_dir: str | Path | None = None,
             config_text: str | None = None) -> dict[str, Any]:
    """Evaluate all samples and taggers; write ``results.json``, ``results.yaml`` and plots.

    Parameters
    ----------
    cfg : EvaluateConfig
        Validated config.
    output_dir : str | Path | None, optional
        Output folder (default ``cfg.output_dir``).
    config_text : str | None, optional
        The YAML text of the config, stored for the report.

    Returns
    -------
    dict
        The results (as written to ``results.json``).
    """
    from tqdm import tqdm

    from lhcml import __version__

    out_dir = Path(output_dir or cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "title": cfg.title,
        "lhcml_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "config": cfg.model_dump(mode="json"),
        "config_yaml": config_text or yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "conventions": {
            "discriminant": "ln((p_s + 1e-10) / (sum_i f_i p_i + 1e-10)) (atlas-ftag-tools)",
            "pass": "D >= cut; cut = weighted (1 - eff) quantile of the signal discriminant",
            "errors": "binomial, sqrt(eps (1 - eps) / N_eff), rejection error rej^2 sigma(eps)",
            "jsd": "base-2 JSD of normalised background mass histograms passing/failing the "
            "50% signal-efficiency cut; bins: mass_bins equal-width over the background range",
        },
        "samples": {},
    }
    for sample in tqdm(cfg.samples, desc="evaluate", disable=len(cfg.samples) < 2):
        data, files = read_sample(cfg, sample)
        res = evaluate_sample(cfg, sample, data)
        res["files"] = [str(f) for f in files]
        with use_plot_style(cfg.plot_style):
            res["plots"] = make_plots(cfg, sample, res, out_dir) if cfg.plots else []
        res.pop("_arrays")
        results["samples"][sample.name] = res
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1, allow_nan=False))
    atomic_write_text(out_dir / "results.yaml", yaml.safe_dump(results, sort_keys=False))
    return results


def evaluate_from_file(config_path: str | Path, output_dir: str | Path | None = None) -> dict:
    """Load an evaluate config file and run :func:`evaluate`.

    Parameters
    ----------
    config_path : str | Path
        YAML config.
    output_dir : str | Path | None, optional
        Overrides ``output_dir`` of the config.

    Returns
    -------
    dict
        The results.
    """
    cfg = load_config(EvaluateConfig, config_path)
    return evaluate(cfg, output_dir, Path(config_path).read_text())
