"""Small-R (anti-kt 0.4 particle-flow) jet calibration and truth jets.

The ATLAS chain (EPJC 81 (2021) 689), in three steps applied to the four-momentum (scaled):

1. **Jet-area pileup subtraction**: ``pT → pT − ρ·A`` with ρ the event's median pT density of
   the flow objects (:func:`lhcml.sim.pflow.pileup_density_flat`) and ``A = πR²`` (the area of an
   anti-kt jet; ATLAS uses the active area, close to πR² for hard jets).
2. **Residual pileup correction**: ``pT → pT − α(η)(N_PV − 1) − β(η) μ`` with α, β fitted on
   simulated jets matched to truth jets (reco − truth vs N_PV and μ).
3. **MC-based numerical inversion** (absolute JES): in |η| bins, the median response
   ``R = pT^reco / pT^truth`` in bins of truth pT, mapped to the median reco pT of each bin, then
   ``pT → pT / R(pT^reco)`` (linear interpolation in log pT, constant beyond the ends).

α, β and the response table are derived by ``benchmarks/derive_jes.py`` on dijet + tt̄ samples
and stored in ``jet_calibration_table.json`` next to this module (JSON; our file format).
Without that file only step 1 is applied (and :func:`table_loaded` is False).

Truth jets (:func:`truth_jets_flat`): anti-kt 0.4 on the stable, visible generator particles of
the hard scatter (no neutrinos, no muons), pT > :data:`TRUTH_JET_PT_MIN`; a reco jet is matched
to the nearest truth jet within ``ΔR <`` :data:`TRUTH_MATCH_DR`.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import numba
import numpy as np

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable

TABLE_FILE = Path(__file__).with_name("jet_calibration_table.json")
#: truth-jet threshold (GeV) and matching distance
TRUTH_JET_PT_MIN = 5.0
TRUTH_MATCH_DR = 0.3
#: pdg ids that truth jets leave out (neutrinos, muons)
TRUTH_INVISIBLE = (12, 13, 14, 16)

_DISABLED = [False]


@contextlib.contextmanager
def calibration_disabled():
    """Within the block, jets get only the area subtraction (used to derive the table)."""
    _DISABLED[0] = True
    try:
        yield
    finally:
        _DISABLED[0] = False


@functools.lru_cache(maxsize=4)
def load_table(path: str | None = None) -> dict | None:
    """The calibration table (``None`` when the file does not exist)."""
    p = Path(path) if path is not None else TABLE_FILE
    if not p.exists():
        return None
    try:
        t = json.loads(p.read_text())
        out = {
            "eta_edges": np.asarray(t["eta_edges"], float),
            "alpha_npv": np.asarray(t["alpha_npv"], float),
            "beta_mu": np.asarray(t["beta_mu"], float),
            "pt_nodes": [np.asarray(x, float) for x in t["pt_nodes"]],
            "response": [np.asarray(x, float) for x in t["response"]],
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"jet calibration table {p} is unreadable ({exc}); regenerate it with "
                          "benchmarks/derive_jes.py") from exc
    n = len(out["eta_edges"]) - 1
    if n < 1 or any(len(v) != n for v in (out["alpha_npv"], out["beta_mu"], out["pt_nodes"], out["response"])):
        raise ConfigError(f"jet calibration table {p}: arrays do not match the {n} eta bins; regenerate it "
                          "with benchmarks/derive_jes.py")
    return out


def table_loaded() -> bool:
    return load_table() is not None and not _DISABLED[0]


def _eta_bin(table: dict, eta: np.ndarray) -> np.ndarray:
    edges = table["eta_edges"]
    return np.clip(np.searchsorted(edges, np.abs(eta), side="right") - 1, 0, len(edges) - 2)


def jes_response(table: dict, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Interpolated response R(pT^reco, |η|) of the numerical inversion."""
    b = _eta_bin(table, eta)
    out = np.ones(len(pt))
    for i in np.unique(b):
        m = b == i
        x = np.log(table["pt_nodes"][i])
        out[m] = np.interp(np.log(np.maximum(pt[m], 1e-3)), x, table["response"][i])
    return out


def calibrated_pt(pt: np.ndarray, eta: np.ndarray, rho: np.ndarray, mu: float, npv: np.ndarray,
                  radius: float, table: dict | None = None) -> np.ndarray:
    """Calibrated jet pT (GeV) from the raw pT, per-jet ρ (GeV), μ and N_PV (see the module doc)."""
    pt_a = pt - rho * np.pi * radius**2
    if table is None:
        return np.maximum(pt_a, 0.0)
    b = _eta_bin(table, eta)
    pt_b = pt_a - table["alpha_npv"][b] * (np.asarray(npv, float) - 1.0) - table["beta_mu"][b] * mu
    pt_b = np.maximum(pt_b, 1e-3)
    return pt_b / jes_response(table, pt_b, eta)


def calibrate_small_r_flat(jets: FlatTable, rho: np.ndarray, mu: float, npv: np.ndarray, radius: float) -> FlatTable:
    """Jets with their four-momenta scaled to the calibrated pT (area, residual, JES)."""
    ev = jets.event
    table = load_table() if not _DISABLED[0] else None
    pt_cal = calibrated_pt(jets["pt"], jets["eta"], np.asarray(rho)[ev], mu, np.asarray(npv)[ev], radius, table)
    factor = np.where(pt_cal > 0, pt_cal / np.maximum(jets["pt"], 1e-9), 0.0)
    out = {k: jets[k] * factor for k in ("px", "py", "pz", "E", "pt", "mass")}
    out["eta"] = jets["eta"]
    out["phi"] = jets["phi"]
    return FlatTable(out, jets.counts)


def truth_jets_flat(generated, radius: float = 0.4, min_pt: float = TRUTH_JET_PT_MIN) -> FlatTable:
    """Anti-kt truth jets on the stable visible hard-scatter particles of ``generated``."""
    from lhcml.sim.jets import cluster_flat

    table = generated.flat("particles")
    vis = table["final"] & ~np.isin(np.abs(table["pid"]), TRUTH_INVISIBLE)
    t = table.select(vis)
    truth = FlatTable({"px": t["px"], "py": t["py"], "pz": t["pz"], "E": t["e"]}, t.counts)
    jets, _, _ = cluster_flat(truth, radius, min_pt=min_pt)
    return jets


@numba.njit(cache=True)
def _nearest(aoff, aeta, aphi, boff, beta, bphi, dr_max):
    out = np.full(aeta.shape[0], -1, np.int64)
    for ev in range(aoff.shape[0] - 1):
        for i in range(aoff[ev], aoff[ev + 1]):
            best = dr_max * dr_max
            for j in range(boff[ev], boff[ev + 1]):
                de = aeta[i] - beta[j]
                dp = aphi[i] - bphi[j]
                while dp > np.pi:
                    dp -= 2 * np.pi
                while dp < -np.pi:
                    dp += 2 * np.pi
                d2 = de * de + dp * dp
                if d2 < best:
                    best = d2
                    out[i] = j
    return out


def match_truth(jets: FlatTable, truth: FlatTable, dr_max: float = TRUTH_MATCH_DR) -> tuple[np.ndarray, np.ndarray]:
    """pT and η of the nearest truth jet (ΔR < dr_max) of each reco jet; pT = -1 when unmatched."""
    idx = _nearest(jets.offsets, np.asarray(jets["eta"], float), np.asarray(jets["phi"], float), truth.offsets,
                   np.asarray(truth["eta"], float), np.asarray(truth["phi"], float), dr_max)
    ok = idx >= 0
    pt = np.where(ok, truth["pt"][np.where(ok, idx, 0)] if len(truth["pt"]) else 0.0, -1.0)
    eta = np.where(ok, truth["eta"][np.where(ok, idx, 0)] if len(truth["eta"]) else 0.0, -1.0)
    return pt, eta
