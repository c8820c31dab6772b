"""Track-reconstruction efficiency and lepton identification on tracks.

:func:`reconstruction_efficiency`: ε(η)·ε(pT)/ε_ref from the ATLAS Loose tables × ε(production
radius) × a lepton factor, divided by the survival probability against hadronic interactions
(the tables include them; the tracker simulates them explicitly,
:mod:`lhcml.sim.material_interactions`). :func:`lepton_identification`: tracks of true
electrons/muons get ``leptonID`` = ±11/±13 (sign = charge) with an identification efficiency
(much lower for conversion electrons); hadrons are mis-identified at a small rate. Parameters:
the ``efficiency`` and ``lepton_id`` blocks of ``detector_params.yaml`` (docs/simulation.md).
"""

from __future__ import annotations

import numpy as np

from lhcml.data.schema import TRUTH_ORIGIN
from lhcml.sim.detector import DetectorParams


def interp_table(x: np.ndarray, edges, values, lower_edges: bool) -> np.ndarray:
    """Step-function lookup: ``lower_edges`` True means ``edges`` are bin lower edges."""
    edges = np.asarray(edges)
    values = np.asarray(values)
    if lower_edges:
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(values) - 1)
    else:
        idx = np.clip(np.searchsorted(edges, x, side="left"), 0, len(values) - 1)
    return values[idx]


def reconstruction_efficiency(eta, pt, r_prod, apid, theta, ptot, p: DetectorParams) -> np.ndarray:
    """Probability that a charged particle is reconstructed (before the hit requirements).

    Parameters
    ----------
    eta, pt, r_prod, theta, ptot
        True η, pT (GeV), production radius (mm), polar angle and momentum (GeV).
    apid
        |PDG id|.
    p
        Detector parameters.
    """
    e = p.efficiency
    eps = (interp_table(np.abs(eta), e.eta_edges, e.eta_values, lower_edges=False)
           * interp_table(pt, e.pt_edges, e.pt_values, lower_edges=True) / e.pt_reference)
    eps *= np.interp(r_prod, e.radius_points, e.radius_values, right=0.0)
    eps = np.where(apid == 13, np.minimum(eps * e.muon_factor, 0.99), eps)
    eps = np.where(apid == 11, eps * e.electron_factor, eps)
    # the efficiency tables include hadronic interactions, which are simulated explicitly
    m = p.material
    sin_t = np.sin(theta)
    lam = np.where(np.asarray(m.radii)[None, :] > r_prod[:, None],
                   np.asarray(m.interaction_lengths)[None, :], 0.0).sum(axis=1) / sin_t
    is_hadron = (apid > 100) & (ptot > m.hadron_p_min)
    eps = np.where(is_hadron, eps / np.maximum(1.0 - lam, 0.5), eps)
    return np.clip(eps, 0.0, 1.0)


def lepton_identification(apid, pt_true, ptot_true, parent_pid, origin, charge, rng: np.random.Generator,
                          p: DetectorParams) -> np.ndarray:
    """``leptonID`` of each track: ±11 / ±13 (sign = reconstructed charge) or 0.

    Parameters
    ----------
    apid, parent_pid, origin
        |PDG id|, parent PDG id and truth origin of the particle behind each track.
    pt_true, ptot_true
        True pT and momentum (GeV).
    charge
        Reconstructed charge.
    rng
        Random generator (one uniform draw per track).
    p
        Detector parameters.
    """
    li = p.lepton_id
    u_lep = rng.random(len(apid))
    conv = (parent_pid == 22) & (origin == TRUTH_ORIGIN["otherSecondary"])
    eff_e = np.where(conv, li.conversion_electron_efficiency, li.electron_efficiency)
    is_e = (apid == 11) & (pt_true > li.electron_pt_min) & (u_lep < eff_e)
    is_mu = (apid == 13) & (ptot_true > li.muon_p_min) & (u_lep < li.muon_efficiency)
    had = apid > 100
    mis_e = had & (u_lep < li.hadron_as_electron)
    mis_mu = had & (u_lep >= li.hadron_as_electron) & (u_lep < li.hadron_as_electron + li.hadron_as_muon)
    return np.where(is_e | mis_e, 11, np.where(is_mu | mis_mu, 13, 0)) * charge
