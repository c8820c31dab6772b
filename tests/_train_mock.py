"""Tiny training-ready flavour-tagging files for the train/predict/export tests.

Starts from :func:`lhcml.data.mock.make_mock_tables` (every schema field, flavour-dependent
tracks) and adds what preprocessing would add: ``flavour_label`` (b=0, c=1, light=2, tau -1),
``weight``, and the low-level tagger jet variables (IP2D/IP3D/SV1/JetFitter) and ``rnnip_p*``
as smooth functions of the track impact parameters, so that the taggers have signal to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib import recfunctions as rfn

from lhcml.data.h5 import write_h5
from lhcml.data.mock import make_mock_tables

BASELINE_VARS = [
    "IP2D_pu", "IP2D_pc", "IP2D_pb", "IP3D_pu", "IP3D_pc", "IP3D_pb",
    "SV1_masssvx", "SV1_efracsvx", "SV1_N2Tpair", "SV1_NGTinSvx", "SV1_Lxy", "SV1_L3d",
    "SV1_significance3d", "SV1_deltaR",
    "JetFitter_mass", "JetFitter_energyFraction", "JetFitter_significance3d", "JetFitter_nVTX",
    "JetFitter_nSingleTracks", "JetFitter_nTracksAtVtx", "JetFitter_N2Tpair", "JetFitter_deltaR",
    "rnnip_pu", "rnnip_pc", "rnnip_pb",
]  # fmt: skip


def _softmax3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    z = np.stack([a, b, c], 1)
    z = np.exp(z - z.max(1, keepdims=True))
    z /= z.sum(1, keepdims=True)
    return z[:, 0], z[:, 1], z[:, 2]


def make_training_tables(n_jets: int, seed: int) -> dict[str, np.ndarray]:
    t = make_mock_tables(n_jets, seed=seed, kind="ftag")
    jets, tracks = t["jets"], t["tracks"]
    rng = np.random.default_rng(seed + 1000)
    v = tracks["valid"]
    sd0 = np.where(v, tracks["IP3D_signed_d0_significance"], 0)
    sz0 = np.where(v, tracks["IP3D_signed_z0_significance"], 0)
    ntrk = v.sum(1).astype(np.float32)
    s2 = np.clip(sd0, -20, 20).sum(1) / np.sqrt(np.maximum(ntrk, 1))
    s3 = (np.clip(sd0, -20, 20) + 0.5 * np.clip(sz0, -20, 20)).sum(1) / np.sqrt(np.maximum(ntrk, 1))
    disp = (v & (tracks["ftagTruthVertexIndex"] > 0)).sum(1).astype(np.float32)
    cols = {}
    for name, s in (("IP2D", s2), ("IP3D", s3)):
        pu, pc, pb = _softmax3(-0.3 * s, 0.1 * s, 0.4 * s)
        cols.update({f"{name}_pu": pu, f"{name}_pc": pc, f"{name}_pb": pb})
    has_sv = disp >= 2
    noise = rng.normal(0, 1, (len(jets), 8))
    cols.update({
        "SV1_masssvx": np.where(has_sv, 800 * disp + 300 * np.abs(noise[:, 0]), -1.0),
        "SV1_efracsvx": np.where(has_sv, np.clip(0.3 + 0.1 * noise[:, 1], 0, 1), -1.0),
        "SV1_N2Tpair": np.where(has_sv, disp * (disp - 1) / 2, -1.0),
        "SV1_NGTinSvx": np.where(has_sv, disp, -1.0),
        "SV1_Lxy": np.where(has_sv, np.abs(jets["HadronConeExclTruthLabelLxy"]) + np.abs(noise[:, 2]), -1.0),
        "SV1_L3d": np.where(has_sv, 1.2 * np.abs(jets["HadronConeExclTruthLabelLxy"]) + np.abs(noise[:, 3]), -1.0),
        "SV1_significance3d": np.where(has_sv, 3 * disp + np.abs(noise[:, 4]), -1.0),
        "SV1_deltaR": np.where(has_sv, np.abs(0.1 + 0.05 * noise[:, 5]), -1.0),
    })  # fmt: skip
    cols.update({
        "JetFitter_mass": np.where(has_sv, 700 * disp + 200 * np.abs(noise[:, 6]), -1.0),
        "JetFitter_energyFraction": np.where(has_sv, np.clip(0.35 + 0.1 * noise[:, 7], 0, 1), -1.0),
        "JetFitter_significance3d": np.where(has_sv, 2.5 * disp, -1.0),
        "JetFitter_nVTX": (disp >= 2).astype(float) + (disp >= 4),
        "JetFitter_nSingleTracks": np.maximum(disp - 2, 0),
        "JetFitter_nTracksAtVtx": disp,
        "JetFitter_N2Tpair": disp * (disp - 1) / 2,
        "JetFitter_deltaR": np.where(has_sv, 0.12 + 0.0 * disp, -1.0),
    })  # fmt: skip
    pu, pc, pb = _softmax3(-0.4 * s3, 0.1 * s3 + 0.2 * disp, 0.5 * s3 + 0.3 * disp)
    cols.update({"rnnip_pu": pu, "rnnip_pc": pc, "rnnip_pb": pb})
    lxy = np.nan_to_num(jets["HadronConeExclTruthLabelLxy"])
    for k in ("SV1_Lxy", "SV1_L3d"):
        cols[k] = np.where(has_sv, np.abs(lxy) * (1 + 0.2 * (k == "SV1_L3d")) + np.abs(noise[:, 2]), -1.0)
    fl = jets["HadronConeExclTruthLabelID"]
    cols["flavour_label"] = np.select([fl == 5, fl == 4, fl == 0], [0, 1, 2], -1)
    cols["weight"] = np.ones(len(jets))
    dtypes = ["f4"] * len(BASELINE_VARS) + ["i4", "f4"]
    names = BASELINE_VARS + ["flavour_label", "weight"]
    jets = rfn.append_fields(jets, names, [np.asarray(cols[n]) for n in names], dtypes=dtypes, usemask=False)
    return {"jets": jets, "tracks": tracks}


def make_training_file(path: str | Path, n_jets: int = 400, seed: int = 1) -> Path:
    """Write :func:`make_training_tables` to ``path``."""
    return write_h5(path, make_training_tables(n_jets, seed))
