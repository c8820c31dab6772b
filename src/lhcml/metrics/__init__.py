"""Physics metrics on arrays (numpy only): discriminants, working points, rejections, ROC curves,
AUC, mass-decorrelation metrics and significances. Pure functions: no file I/O, no plots. The
``lhcml evaluate`` driver that runs them all from prediction files is :mod:`lhcml.evaluation`.
"""

from __future__ import annotations

from lhcml.metrics.classification import (
    accuracy,
    auc,
    auc_from_labels,
    confusion_matrix,
    rejection_at,
)
from lhcml.metrics.closure import TransferredWorkingPoint, auc_bootstrap, transfer_working_points
from lhcml.metrics.decorrelation import (
    distance_correlation,
    inverse_jsd_at_efficiency,
    jensen_shannon_divergence,
    mass_histograms_pass_fail,
    r50,
)
from lhcml.metrics.discriminants import EPSILON, d_b, d_c, discriminant
from lhcml.metrics.rejection import BinnedRejection, rejection_at_efficiency, rejection_vs_var
from lhcml.metrics.roc import RocCurve, roc_curve
from lhcml.metrics.significance import ams, asimov_z, best_cut, s_over_sqrt_b, s_over_sqrt_s_plus_b
from lhcml.metrics.working_points import (
    DEFAULT_WORKING_POINTS,
    WorkingPoint,
    cut_at_efficiency,
    effective_n,
    efficiency,
    efficiency_error,
    rejection,
    rejection_error,
    weighted_quantile,
    working_points,
)

__all__ = [
    "DEFAULT_WORKING_POINTS",
    "EPSILON",
    "BinnedRejection",
    "RocCurve",
    "TransferredWorkingPoint",
    "WorkingPoint",
    "accuracy",
    "ams",
    "asimov_z",
    "auc",
    "auc_bootstrap",
    "auc_from_labels",
    "best_cut",
    "confusion_matrix",
    "cut_at_efficiency",
    "d_b",
    "d_c",
    "discriminant",
    "distance_correlation",
    "effective_n",
    "efficiency",
    "efficiency_error",
    "inverse_jsd_at_efficiency",
    "jensen_shannon_divergence",
    "mass_histograms_pass_fail",
    "r50",
    "rejection",
    "rejection_at",
    "rejection_at_efficiency",
    "rejection_error",
    "rejection_vs_var",
    "roc_curve",
    "s_over_sqrt_b",
    "s_over_sqrt_s_plus_b",
    "transfer_working_points",
    "weighted_quantile",
    "working_points",
]
