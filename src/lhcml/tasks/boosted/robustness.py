"""Robustness of boosted taggers to detector and pile-up variations.

Two kinds of variation are supported:

* **pile-up**: evaluate on samples simulated with a different ⟨μ⟩ (``lhcml simulate ... --mu``);
  nothing to compute here beyond :func:`rejection_changes` on the two prediction sets;
* **detector response** (:func:`smear_flow`, ``lhcml jets vary``): a deterministic, documented
  variation of the constituents: each valid constituent's pT and energy scaled by
  ``1 + σ_pT·N(0, 1)`` (default σ_pT = 10 %; the energy follows at fixed constituent mass),
  its (η, φ) shifted by ``N(0, σ_angle)`` (default
  0.01, about one calorimeter-cell tenth), and each constituent lost with probability
  ``1 − efficiency`` (default 3 %). The jet four-momentum is recomputed from the surviving
  constituents and the substructure fields, if present, are recomputed.

:func:`rejection_changes` gives, per tagger, the background rejection at fixed signal
efficiency on the nominal and the varied sample and the relative change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def smear_flow(
    flow: np.ndarray,
    seed: int = 1,
    pt_resolution: float = 0.10,
    angular_resolution: float = 0.01,
    efficiency: float = 0.97,
) -> np.ndarray:
    """A smeared copy of a structured ``flow`` array (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = flow.copy()
    valid = np.asarray(out["valid"], dtype=bool)
    shape = valid.shape
    scale = np.clip(1.0 + pt_resolution * rng.standard_normal(shape), 0.05, None)
    deta = angular_resolution * rng.standard_normal(shape)
    dphi = angular_resolution * rng.standard_normal(shape)
    keep = rng.random(shape) < efficiency
    names = out.dtype.names or ()
    has_eta = "eta" in names
    eta0 = np.asarray(out["eta"], dtype=np.float64) if has_eta else None
    pt0 = np.asarray(out["pt"], dtype=np.float64)
    if has_eta:  # constituent mass, kept fixed while the momentum is varied
        m2 = np.clip(np.asarray(out["energy"], np.float64) ** 2 - (pt0 * np.cosh(eta0)) ** 2, 0, None)
    out["pt"] = np.where(valid, pt0 * scale, 0.0)
    for name, d in (("eta", deta), ("deta", deta), ("phi", dphi), ("dphi", dphi)):
        if name in names:
            out[name] = np.where(valid, out[name] + d, 0.0)
    if "phi" in names:
        out["phi"] = (out["phi"] + np.pi) % (2 * np.pi) - np.pi
    if has_eta:
        p = np.asarray(out["pt"], np.float64) * np.cosh(np.asarray(out["eta"], np.float64))
        out["energy"] = np.where(valid, np.sqrt(m2 * scale**2 + p**2), 0.0)
    else:
        out["energy"] = np.where(valid, out["energy"] * scale, 0.0)
    new_valid = valid & keep
    out[~new_valid] = np.zeros((), dtype=out.dtype)
    out["valid"] = new_valid
    return out


def jet_kinematics_from_flow(flow: np.ndarray) -> dict[str, np.ndarray]:
    """Jet ``pt``, ``eta``, ``phi``, ``mass``, ``energy`` (MeV) summed from the valid constituents."""
    v = np.asarray(flow["valid"], dtype=bool)
    pt = np.where(v, flow["pt"], 0.0).astype(np.float64)
    eta = np.where(v, flow["eta"], 0.0)
    phi = np.where(v, flow["phi"], 0.0)
    px, py = (pt * np.cos(phi)).sum(1), (pt * np.sin(phi)).sum(1)
    pz = (pt * np.sinh(eta)).sum(1)
    e = np.where(v, flow["energy"], 0.0).sum(1).astype(np.float64)
    jpt = np.hypot(px, py)
    with np.errstate(invalid="ignore", divide="ignore"):
        jeta = np.where(jpt > 0, np.arcsinh(pz / np.where(jpt > 0, jpt, 1.0)), 0.0)
    m = np.sqrt(np.clip(e * e - px * px - py * py - pz * pz, 0, None))
    return {"pt": jpt, "eta": jeta, "phi": np.arctan2(py, px), "mass": m, "energy": e}


def write_varied_file(
    path: str | Path,
    output: str | Path,
    seed: int = 1,
    pt_resolution: float = 0.10,
    angular_resolution: float = 0.01,
    efficiency: float = 0.97,
    progress: bool = True,
) -> Path:
    """Write a detector-varied copy of a boosted file (atomic; ``output`` must differ)."""
    from lhcml.errors import ConfigError
    from lhcml.tasks.boosted._io import rewrite_file
    from lhcml.tasks.boosted.substructure import SUBSTRUCTURE_FIELDS, substructure_from_flow

    if Path(output).resolve() == Path(path).resolve():
        raise ConfigError("the varied sample must be written to a new file (output == input)")
    chunk_seed = [seed]

    def transform(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        flow = smear_flow(batch["flow"], chunk_seed[0], pt_resolution, angular_resolution, efficiency)
        chunk_seed[0] += 1
        jets = batch["jets"].copy()
        for k, v in jet_kinematics_from_flow(flow).items():
            if k in (jets.dtype.names or ()):
                jets[k] = v
        if "n_constituents" in (jets.dtype.names or ()):
            jets["n_constituents"] = flow["valid"].sum(1)
        if any(f in (jets.dtype.names or ()) for f in SUBSTRUCTURE_FIELDS):
            obs = substructure_from_flow(flow)
            for k, v in obs.items():
                if k in jets.dtype.names:
                    jets[k] = v
        batch["flow"], batch["jets"] = flow, jets
        return batch

    return rewrite_file(path, output, transform, progress=progress, desc="vary")


def rejection_changes(
    nominal: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]],
    varied: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]],
    sig_eff: float = 0.5,
) -> list[dict[str, float | str]]:
    """Rejection at ``sig_eff`` per tagger on the nominal and varied samples.

    Parameters
    ----------
    nominal, varied
        ``{tagger: (disc_sig, disc_bkg, w_sig, w_bkg)}`` for each sample.
    sig_eff
        Signal efficiency of the working point.

    Returns
    -------
    list of dict
        ``tagger, rej_nominal, rej_nominal_err, rej_varied, rej_varied_err, rel_change``.
    """
    from lhcml.metrics.rejection import rejection_at_efficiency

    rows = []
    for name, nom in nominal.items():
        if name not in varied:
            continue
        r0, e0 = rejection_at_efficiency(*nom[:2], sig_eff, nom[2], nom[3])
        r1, e1 = rejection_at_efficiency(*varied[name][:2], sig_eff, varied[name][2], varied[name][3])
        rows.append(
            {
                "tagger": name,
                "rej_nominal": float(r0),
                "rej_nominal_err": float(e0),
                "rej_varied": float(r1),
                "rej_varied_err": float(e1),
                "rel_change": float(r1 / r0 - 1.0) if r0 > 0 else float("nan"),
            }
        )
    return rows
