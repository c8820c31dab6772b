"""Validation as code (``lhcml sim validate``): samples against a shipped table of published values.

* :mod:`lhcml.validation.table` — the reference table (``reference.yaml``: value, tolerance or
  range, provenance, source);
* :mod:`lhcml.validation.run` — each check's status, :func:`run_validation` /
  :func:`validate_simulation` (printed table, JSON, HTML page);
* :mod:`lhcml.validation.measures` — what is measured, read field by field from the flat files;
* :mod:`lhcml.validation.checks` — the pure estimators (robust widths, fits, fractions);
* :mod:`lhcml.validation.plots` — the validation figures.

Its own layer, above ``tasks`` (``tests/test_layering.py`` says why): it applies lhcml's own
reconstruction-level algorithms (the 2012 Tight photon menu, τ32) to the samples, and runs on
real files as well as on simulated ones.
"""

from __future__ import annotations

from lhcml.validation.checks import Measurement, hadron_ctau
from lhcml.validation.measures import MEASURES, NotInSample, Sample
from lhcml.validation.run import (
    SIGNIFICANCE,
    STATUSES,
    CheckResult,
    evaluate,
    format_table,
    run_checks,
    run_validation,
    validate_simulation,
)
from lhcml.validation.table import (
    ReferenceCheck,
    ReferenceTable,
    load_reference,
    reference_markdown,
)

__all__ = [
    "MEASURES",
    "SIGNIFICANCE",
    "STATUSES",
    "CheckResult",
    "Measurement",
    "NotInSample",
    "ReferenceCheck",
    "ReferenceTable",
    "Sample",
    "evaluate",
    "format_table",
    "hadron_ctau",
    "load_reference",
    "reference_markdown",
    "run_checks",
    "run_validation",
    "validate_simulation",
]
