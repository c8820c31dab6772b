"""Tiny training-ready flavour-tagging files for the train/predict/export tests.

The maker lives in the library (:func:`lhcml.data.mock.make_training_file`), shared with the
benchmarks; this module keeps the import path the tests use.
"""

from lhcml.data.mock import BASELINE_VARS, make_training_file, make_training_tables

__all__ = ["BASELINE_VARS", "make_training_file", "make_training_tables"]
