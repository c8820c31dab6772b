"""Soft-muon tagger inputs (after ATLAS's SMT): the highest-pT muon track in the jet.

Muons are the tracks with ``|leptonID| == 13`` (a track matched to a reconstructed muon).
Outputs per jet:

``SMT_hasMuon``
    1 if the jet has a muon track, else 0.
``SMT_mu_pt``
    muon pT (MeV).
``SMT_mu_dR``
    ΔR(muon, jet axis).
``SMT_mu_pTrel``
    muon momentum transverse to the jet axis, ``|p_μ × û_jet|`` (MeV).
``SMT_mu_d0``, ``SMT_mu_z0SinTheta``
    muon impact parameters (mm).
``SMT_mu_d0Significance``
    lifetime-signed d0 significance (``IP3D_signed_d0_significance`` of the track if present).

Not available: ``SMT_mu_qOverPratio`` (the ratio of the inner-detector and muon-spectrometer
q/p measurements) needs the muon-spectrometer track, which flat track files do not hold.
Defaults without a muon: ``-1`` for pt, dR, pTrel; ``0`` for d0, z0 sinθ and the significance.
"""

from __future__ import annotations

import numpy as np

from lhcml.errors import SchemaError

SMT_OUTPUTS = (
    "SMT_hasMuon", "SMT_mu_pt", "SMT_mu_dR", "SMT_mu_pTrel", "SMT_mu_d0", "SMT_mu_z0SinTheta",
    "SMT_mu_d0Significance",
)  # fmt: skip


def soft_muon_variables(jets: np.ndarray, tracks: np.ndarray) -> dict[str, np.ndarray]:
    """Soft-muon jet variables for a chunk of jets (see the module docstring)."""
    need = ("valid", "leptonID", "pt", "eta", "phi", "d0", "z0SinTheta", "d0Uncertainty")
    missing = [f for f in need if f not in (tracks.dtype.names or ())]
    if missing:
        raise SchemaError(f"the tracks dataset lacks {', '.join(missing)} needed by the soft-muon variables")
    is_mu = tracks["valid"] & (np.abs(tracks["leptonID"]) == 13)
    has = is_mu.any(axis=1)
    pt_mu = np.where(is_mu, tracks["pt"], -np.inf)
    k = np.argmax(pt_mu, axis=1)
    mu = np.take_along_axis(tracks, k[:, None], axis=1)[:, 0]
    dphi = (mu["phi"] - jets["phi"] + np.pi) % (2 * np.pi) - np.pi
    dr = np.hypot(mu["eta"] - jets["eta"], dphi)
    # momentum of the muon and jet axis unit vector
    p_mu = np.stack(
        [mu["pt"] * np.cos(mu["phi"]), mu["pt"] * np.sin(mu["phi"]), mu["pt"] * np.sinh(mu["eta"])],
        axis=1,
    ).astype(np.float64)
    th = 2 * np.arctan(np.exp(-jets["eta"].astype(np.float64)))
    u = np.stack(
        [np.sin(th) * np.cos(jets["phi"]), np.sin(th) * np.sin(jets["phi"]), np.cos(th)], axis=1
    )
    ptrel = np.linalg.norm(np.cross(p_mu, u), axis=1)
    if "IP3D_signed_d0_significance" in tracks.dtype.names:
        sig = mu["IP3D_signed_d0_significance"]
    else:
        s = np.sign(np.sin(jets["phi"] - mu["phi"]) * mu["d0"])
        sig = np.where(s == 0, 1, s) * np.abs(mu["d0"] / np.where(has, mu["d0Uncertainty"], 1))
    f4 = np.float32
    return {
        "SMT_hasMuon": has.astype(np.int8),
        "SMT_mu_pt": np.where(has, mu["pt"], -1).astype(f4),
        "SMT_mu_dR": np.where(has, dr, -1).astype(f4),
        "SMT_mu_pTrel": np.where(has, ptrel, -1).astype(f4),
        "SMT_mu_d0": np.where(has, mu["d0"], 0).astype(f4),
        "SMT_mu_z0SinTheta": np.where(has, mu["z0SinTheta"], 0).astype(f4),
        "SMT_mu_d0Significance": np.where(has, sig, 0).astype(f4),
    }
