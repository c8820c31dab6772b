"""Hyperparameter optimisation with Optuna: search spaces in YAML, local or Dask execution.

The engine (:mod:`lhcml.tune.study`) is generic over the objective; :mod:`lhcml.tune.objective`
provides the training objective used by ``lhcml tune``.
"""
