"""Large-R jet energy scale (JES) and jet mass scale (JMS): MC-based numerical inversion.

As ATLAS's large-R calibration (JETM-2018-02 / arXiv:1807.09477, simulation-based step), on
trimmed jets matched to trimmed truth jets (``ΔR < 0.75 R``):

JES
    In bins of truth-jet pT the response ``R = median(pT_reco / pT_true)`` is measured together
    with the median reconstructed pT of the bin; numerical inversion maps the reconstructed pT
    to the correction ``1 / R`` (linear interpolation between the points, constant beyond).
JMS
    After the JES, for jets whose truth mass lies in :data:`JMS_TRUTH_MASS_RANGE` (the W/Z/top
    mass region the derivation sample populates), the mass response
    ``R_m = median(m_reco / m_true)`` (core median: within ±30 % of the first median) is
    measured in the same truth-pT bins and inverted the same way against the calibrated pT.

Pileup: the calorimeter's response changes with μ (its mean per-cell pileup subtraction and
noise thresholds), so a constituent type may hold tables at several μ; the correction factors
are then interpolated linearly in ⟨μ⟩ between them (constant outside), the large-R analogue of
the residual pileup correction of small-R jets.

The tables (per constituent type ``pflow``, ``clusters``, ``tcc`` and μ) are derived by
:func:`derive_calibration` on uncalibrated W/Z/top + QCD samples (``benchmarks/sim_large_r.py
--derive``, run inside :func:`uncalibrated`) and shipped as ``large_r_calibration.yaml``. A
constituent type with no table entry is left uncalibrated (factors 1), which
:func:`calibration_table` reports (``None``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from lhcml.errors import ConfigError

#: the shipped table
TABLE_PATH = Path(__file__).with_name("large_r_calibration.yaml")
#: truth-pT bin edges of the derivation (GeV)
PT_BINS = (200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 800, 900, 1000, 1200, 1500)
#: minimum matched jets per bin for a calibration point (our choice)
MIN_JETS_PER_BIN = 30
#: truth (trimmed) jet mass range of the JMS derivation (GeV): W/Z/top jets (our choice)
JMS_TRUTH_MASS_RANGE = (50.0, 250.0)
#: core window of the median responses: ±30 % around the first median (our choice)
CORE_WINDOW = 0.3
#: constituent types
CONSTITUENTS = ("pflow", "clusters", "tcc")

_DISABLED = [False]


@contextmanager
def uncalibrated() -> Iterator[None]:
    """Within this block, large-R jets are simulated without JES/JMS (to derive the table)."""
    _DISABLED.append(True)
    try:
        yield
    finally:
        _DISABLED.pop()


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


_KEYS = ("pt", "jes", "pt_jms", "jms")


def calibration_table(
    constituents: str, path: str | Path | None = None
) -> dict[float, dict[str, np.ndarray]] | None:
    """``{mu: {pt, jes, pt_jms, jms}}`` arrays of ``constituents`` (``None``: no entry shipped)."""
    if constituents not in CONSTITUENTS:
        raise ConfigError(f"unknown constituents '{constituents}'; valid: {', '.join(CONSTITUENTS)}")
    p = Path(path) if path is not None else TABLE_PATH
    if not p.exists():
        return None
    entry = _load(str(p)).get(constituents)
    if not entry:
        return None
    return {float(mu): {k: np.asarray(t[k], dtype=np.float64) for k in _KEYS} for mu, t in entry.items()}


def _factors(t: dict[float, dict[str, np.ndarray]], x: np.ndarray, mu: float, xkey: str, fkey: str) -> np.ndarray:
    mus = sorted(t)
    per_mu = np.stack([np.interp(x, t[m][xkey], t[m][fkey]) for m in mus])
    if len(mus) == 1:
        return per_mu[0]
    w = np.interp(float(mu), mus, np.arange(len(mus), dtype=np.float64))  # fractional index, clamped
    i = min(int(np.floor(w)), len(mus) - 2)
    return per_mu[i] + (w - i) * (per_mu[i + 1] - per_mu[i])


def calibrate(
    pt: np.ndarray,
    mass: np.ndarray,
    constituents: str,
    mu: float = 0.0,
    table: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ``(pt, mass)`` (GeV) of trimmed large-R jets at ⟨μ⟩ = ``mu``.

    ``table`` defaults to the shipped one of ``constituents`` (``{mu: {pt, jes, pt_jms, jms}}``,
    or one ``{pt, jes, pt_jms, jms}`` table for all μ); inside :func:`uncalibrated`, or without a
    table, the inputs are returned unchanged.
    """
    pt = np.asarray(pt, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    if _DISABLED[-1]:
        return pt, mass
    t = table if table is not None else calibration_table(constituents)
    if t is None:
        return pt, mass
    if "pt" in t:
        t = {0.0: t}
    pt_cal = pt * _factors(t, pt, mu, "pt", "jes")
    return pt_cal, mass * _factors(t, pt_cal, mu, "pt_jms", "jms")


def _core_median(r: np.ndarray) -> float:
    m0 = np.median(r)
    core = r[np.abs(r - m0) < CORE_WINDOW * m0]
    return float(np.median(core)) if len(core) else float(m0)


def derive_calibration(
    pt: np.ndarray, mass: np.ndarray, truth_pt: np.ndarray, truth_mass: np.ndarray
) -> dict[str, list[float]]:
    """Numerical-inversion table from uncalibrated trimmed jets and their truth jets (GeV).

    Unmatched jets (``truth_pt <= 0``) are ignored. Returns ``{pt, jes, pt_jms, jms}`` lists
    (reconstructed-pT points and correction factors), ready for the YAML table.

    Raises
    ------
    ConfigError
        If fewer than two pT bins hold :data:`MIN_JETS_PER_BIN` matched jets.
    """
    pt, mass, tpt, tm = (np.asarray(a, dtype=np.float64) for a in (pt, mass, truth_pt, truth_mass))
    ok = (tpt > 0) & (pt > 0)
    pt, mass, tpt, tm = pt[ok], mass[ok], tpt[ok], tm[ok]
    ibin = np.digitize(tpt, PT_BINS) - 1
    x, jes = [], []
    for b in range(len(PT_BINS) - 1):
        s = ibin == b
        if s.sum() >= MIN_JETS_PER_BIN:
            x.append(float(np.median(pt[s])))
            jes.append(1.0 / _core_median(pt[s] / tpt[s]))
    if len(x) < 2:
        raise ConfigError(
            f"large-R calibration: fewer than 2 truth-pT bins with >= {MIN_JETS_PER_BIN} matched jets; "
            "simulate more events"
        )
    table = {"pt": np.asarray(x), "jes": np.asarray(jes)}
    order = np.argsort(table["pt"])
    pt_cal = pt * np.interp(pt, table["pt"][order], table["jes"][order])
    lo, hi = JMS_TRUTH_MASS_RANGE
    xm, jms = [], []
    for b in range(len(PT_BINS) - 1):
        s = (ibin == b) & (tm > lo) & (tm < hi) & (mass > 0)
        if s.sum() >= MIN_JETS_PER_BIN:
            xm.append(float(np.median(pt_cal[s])))
            jms.append(1.0 / _core_median(mass[s] / tm[s]))
    if len(xm) < 1:
        raise ConfigError(
            f"large-R calibration: no truth-pT bin with >= {MIN_JETS_PER_BIN} W/Z/top-mass jets; simulate "
            "a W/Z/top sample"
        )
    om = np.argsort(xm)
    return {
        "pt": [round(float(v), 2) for v in table["pt"][order]],
        "jes": [round(float(v), 5) for v in table["jes"][order]],
        "pt_jms": [round(float(xm[i]), 2) for i in om],
        "jms": [round(float(jms[i]), 5) for i in om],
    }
