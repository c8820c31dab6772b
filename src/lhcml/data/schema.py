"""The on-disk contract of lhcml flat files (docs/data.md), shared by every stage.

One file holds several top-level datasets, each a structured array with the same first
dimension: ``jets`` (1-D), ``tracks`` (``(n_jets, 40)``), ``flow`` (``(n_jets, N)``
constituents of large-R jets), ``photons`` and image datasets for calorimeter objects.
Field names follow ATLAS's training-dataset-dumper, so files from real ATLAS workflows and
lhcml files are interchangeable. Padded objects carry ``valid`` (True = real object).

Units: MeV for energies and momenta, mm for lengths, radians for angles. Writers store them in
the file attributes (:data:`FILE_ATTRS`).
"""

from __future__ import annotations

import numpy as np

#: file-level attributes written by lhcml
FILE_ATTRS = {"energy_unit": "MeV", "length_unit": "mm", "angle_unit": "rad", "producer": "lhcml"}

#: default number of track slots per jet
N_TRACKS = 40
#: default number of constituent slots per large-R jet
N_FLOW = 200

#: ATLAS ftagTruthOriginLabel values
TRUTH_ORIGIN = {
    "pileup": 0,
    "fake": 1,
    "primary": 2,
    "fromB": 3,
    "fromBC": 4,
    "fromC": 5,
    "fromTau": 6,
    "otherSecondary": 7,
}

#: HadronConeExclTruthLabelID values
FLAVOUR_LABEL = {"light": 0, "c": 4, "b": 5, "tau": 15}

# --- small-R (anti-kt 0.4) jets -------------------------------------------------------------
JET_FIELDS: list[tuple[str, str]] = [
    ("pt", "f4"),  # MeV
    ("eta", "f4"),
    ("phi", "f4"),
    ("mass", "f4"),  # MeV
    ("energy", "f4"),  # MeV
    ("HadronConeExclTruthLabelID", "i1"),  # 5 b, 4 c, 15 tau, 0 light
    ("HadronConeExclExtendedTruthLabelID", "i1"),  # 55 bb, 54 bc, 5 b, 44 cc, 4 c, 15 tau, 0 light
    ("HadronConeExclTruthLabelPt", "f4"),  # MeV, pT of the labelling hadron (NaN for light)
    ("HadronConeExclTruthLabelLxy", "f4"),  # mm, transverse decay length of the labelling hadron
    ("HadronConeExclTruthLabelDR", "f4"),  # ΔR(hadron, jet)
    ("PartonTruthLabelID", "i1"),  # pdg id of the highest-energy parton within ΔR<0.3 (21 gluon)
    ("n_tracks", "i2"),  # associated tracks (before the 40-slot cap)
    ("n_truth_pileup_tracks", "i2"),
    ("eventNumber", "i8"),
    ("runNumber", "i4"),
    ("mcEventWeight", "f4"),
    ("averageInteractionsPerCrossing", "f4"),
    ("primaryVertexZ", "f4"),  # mm, reconstructed hard-scatter vertex z
    ("truthPrimaryVertexZ", "f4"),  # mm
    ("jetPtRank", "i2"),
    ("truthJetPt", "f4"),  # MeV, matched anti-kt 0.4 truth jet (visible, no muons/neutrinos; -1 unmatched)
    ("truthJetEta", "f4"),  # eta of that truth jet (-1 unmatched)
    ("truthPromptLepton", "?"),  # a prompt e/mu (W/Z/tau/gamma* decay) with pT > 0.5 raw jet pT within dR < 0.4 (sim.leptons)
    ("overlapsElectron", "?"),  # removed by the overlap removal with an electron (kept only on request)
    ("overlapsMuon", "?"),  # removed by the overlap removal with a muon (kept only on request)
    ("pt_btagJes", "f4"),  # MeV, = pt: ATLAS's b-tagging-JES name (GN2 configs); lhcml jets are calibrated
    ("eta_btagJes", "f4"),  # = eta (ATLAS name, as pt_btagJes)
    ("absEta_btagJes", "f4"),  # = |eta| (ATLAS name, as pt_btagJes)
]

# --- tracks associated to small-R jets ------------------------------------------------------
TRACK_FIELDS: list[tuple[str, str]] = [
    ("pt", "f4"),  # MeV
    ("eta", "f4"),
    ("phi", "f4"),
    ("qOverP", "f4"),  # 1/MeV
    ("deta", "f4"),  # track - jet
    ("dphi", "f4"),
    ("dr", "f4"),
    ("ptfrac", "f4"),  # track pT / jet pT
    ("d0", "f4"),  # mm, w.r.t. beam line
    ("z0SinTheta", "f4"),  # mm, w.r.t. the primary vertex
    ("d0Uncertainty", "f4"),
    ("z0SinThetaUncertainty", "f4"),
    ("phiUncertainty", "f4"),
    ("thetaUncertainty", "f4"),
    ("qOverPUncertainty", "f4"),
    ("IP3D_signed_d0_significance", "f4"),  # lifetime-signed w.r.t. the jet axis
    ("IP3D_signed_z0_significance", "f4"),
    ("numberOfInnermostPixelLayerHits", "u1"),
    ("numberOfNextToInnermostPixelLayerHits", "u1"),
    ("numberOfInnermostPixelLayerSharedHits", "u1"),
    ("numberOfInnermostPixelLayerSplitHits", "u1"),
    ("numberOfPixelHits", "u1"),
    ("numberOfPixelHoles", "u1"),
    ("numberOfPixelSharedHits", "u1"),
    ("numberOfPixelSplitHits", "u1"),
    ("numberOfSCTHits", "u1"),
    ("numberOfSCTHoles", "u1"),
    ("numberOfSCTSharedHits", "u1"),
    ("leptonID", "i1"),  # 0 none, ±11 electron, ±13 muon (sign = charge)
    ("ftagTruthOriginLabel", "i1"),  # TRUTH_ORIGIN
    ("ftagTruthVertexIndex", "i1"),  # 0 = primary vertex, >0 secondary vertices in the jet, -1 none
    ("ftagTruthTypeLabel", "i1"),  # signed particle type (sim/association.py TRUTH_TYPE_LABEL)
    ("truthPdgId", "i4"),  # pdg id of the truth particle (0 for fakes)
    ("truthParentPdgId", "i4"),  # pdg id of its parent (e.g. 310 for K0S daughters)
    ("truthProductionRadius", "f4"),  # mm
    ("valid", "?"),
]

# --- large-R jets (boosted samples) ---------------------------------------------------------
LARGE_R_JET_FIELDS: list[tuple[str, str]] = [
    ("pt", "f4"),
    ("eta", "f4"),
    ("phi", "f4"),
    ("mass", "f4"),
    ("energy", "f4"),
    ("R10TruthLabel", "i1"),  # see labels.yaml: 0 qcd, 1 top, 2 W, 3 Z, 4 Hbb
    ("truthPt", "f4"),  # MeV, pT of the matched t/W/Z/H (NaN if unmatched)
    ("truthMass", "f4"),
    ("PartonTruthLabelID", "i1"),  # |pdg id| of the highest-energy parton within ΔR<R (21 gluon; -1 none)
    ("n_constituents", "i2"),
    ("eventNumber", "i8"),
    ("mcEventWeight", "f4"),
    ("averageInteractionsPerCrossing", "f4"),
    ("ptUngroomed", "f4"),  # MeV, anti-kt jet of the pileup-mitigated constituents before trimming, uncalibrated
    ("massUngroomed", "f4"),  # MeV, mass of that ungroomed jet (``mass``/``pt`` above: trimmed and calibrated)
    ("massSoftDrop", "f4"),  # MeV, soft-drop (beta 0, z_cut 0.1) mass of the ungroomed jet, uncalibrated
    ("truthJetPt", "f4"),  # MeV, matched trimmed truth jet (stable visible hard-scatter particles); -1 if none
    ("truthJetMass", "f4"),  # MeV, its mass; -1 if none
]

# --- constituents of large-R jets -----------------------------------------------------------
FLOW_FIELDS: list[tuple[str, str]] = [
    ("pt", "f4"),
    ("eta", "f4"),
    ("phi", "f4"),
    ("energy", "f4"),
    ("deta", "f4"),
    ("dphi", "f4"),
    ("charge", "i1"),
    ("isPhoton", "?"),
    ("isNeutralHadron", "?"),
    ("isChargedHadron", "?"),
    ("isElectron", "?"),
    ("isMuon", "?"),
    ("d0", "f4"),  # charged only; 0 otherwise
    ("z0SinTheta", "f4"),
    ("d0Uncertainty", "f4"),
    ("z0SinThetaUncertainty", "f4"),
    ("valid", "?"),
]

#: per-event table
EVENT_FIELDS: list[tuple[str, str]] = [
    ("eventNumber", "i8"),
    ("mcEventWeight", "f4"),
    ("averageInteractionsPerCrossing", "f4"),
    ("actualInteractionsPerCrossing", "i2"),
    ("truthPrimaryVertexZ", "f4"),
    ("n_jets", "i2"),
    ("primaryVertexZ", "f4"),  # mm, reconstructed hard-scatter vertex z (sim.vertexing)
    ("nPrimaryVertices", "i2"),  # reconstructed vertices (hard scatter + pile-up) in the event
    ("pvIsHardScatter", "?"),  # chosen vertex within 0.1 mm in z of the truth hard-scatter vertex
    ("nTruthPromptLeptons", "i2"),  # final-state prompt e/mu of the hard scatter (sim.leptons.prompt_lepton_mask)
]

JET_DTYPE = np.dtype(JET_FIELDS)
TRACK_DTYPE = np.dtype(TRACK_FIELDS)
LARGE_R_JET_DTYPE = np.dtype(LARGE_R_JET_FIELDS)
FLOW_DTYPE = np.dtype(FLOW_FIELDS)
EVENT_DTYPE = np.dtype(EVENT_FIELDS)


def empty(dtype: np.dtype, shape: int | tuple[int, ...]) -> np.ndarray:
    """A structured array of ``shape`` with floats NaN-free zeros and ``valid`` False."""
    return np.zeros(shape, dtype=dtype)


def fill_btag_jes(jets: np.ndarray) -> np.ndarray:
    """Set the ATLAS b-tagging-JES names of a jets table from its calibrated ``pt``/``eta``.

    ATLAS's dumper writes ``pt_btagJes``/``eta_btagJes``/``absEta_btagJes`` (the jet after the
    b-tagging calibration) and the GN2 preprocessing/training configs use them; lhcml's small-R
    jets are calibrated already, so the values equal ``pt``, ``eta`` and ``|eta|``.
    """
    jets["pt_btagJes"] = jets["pt"]
    jets["eta_btagJes"] = jets["eta"]
    jets["absEta_btagJes"] = np.abs(jets["eta"])
    return jets

#: dataset names whose first dimension counts events, not jets (exempt from the shared
#: first-dimension rule that holds for the per-jet datasets ``jets``, ``tracks``, ``flow``, ...)
PER_EVENT_DATASETS = ("events",)

_MEV = (
    "pt", "mass", "energy", "HadronConeExclTruthLabelPt", "truthPt", "truthMass",
    "ptUngroomed", "massUngroomed", "massSoftDrop", "truthJetPt", "truthJetMass",  # large-R grooming
)  # fmt: skip
_MM = (
    "d0", "z0SinTheta", "d0Uncertainty", "z0SinThetaUncertainty", "HadronConeExclTruthLabelLxy",
    "primaryVertexZ", "truthPrimaryVertexZ", "truthProductionRadius",
)  # fmt: skip
_RAD = ("phi", "dphi", "phiUncertainty", "thetaUncertainty")

#: unit of each dimensioned field (fields not listed are dimensionless)
FIELD_UNITS: dict[str, str] = {
    **{f: "MeV" for f in _MEV},
    **{f: "mm" for f in _MM},
    **{f: "rad" for f in _RAD},
    "qOverP": "1/MeV",
    "qOverPUncertainty": "1/MeV",
}
FIELD_UNITS["pt_btagJes"] = "MeV"  # ATLAS name of the calibrated jet pT (fill_btag_jes)

# --- photon candidates (calorimeter clusters; lhcml.sim.photons) ----------------------------
#: truthOrigin values of photon candidates (the leading truth particle of the cluster)
PHOTON_TRUTH_ORIGIN = {"prompt": 0, "pi0": 1, "eta": 2, "otherHadron": 3, "electron": 4, "other": 5}

#: one row per cluster; shower shapes carry the ATLAS xAOD names; the images are separate
#: float32 datasets ``images_<layer>`` / ``images_<layer>_nopu`` of shape (n, H, W)
PHOTON_FIELDS: list[tuple[str, str]] = [
    ("pt", "f4"),  # MeV, cluster E_T
    ("eta", "f4"),
    ("phi", "f4"),
    ("energy", "f4"),  # MeV, 3x7 cluster energy (all EM layers)
    ("Rhad1", "f4"),
    ("Rhad", "f4"),
    ("Reta", "f4"),
    ("Rphi", "f4"),
    ("weta2", "f4"),
    ("weta1", "f4"),  # w_s3
    ("wtots1", "f4"),  # w_s,tot
    ("fracs1", "f4"),  # F_side
    ("DeltaE", "f4"),  # MeV
    ("Eratio", "f4"),
    ("f1", "f4"),
    ("f3", "f4"),
    ("etcone20", "f4"),  # MeV, E_T in DeltaR < 0.2 minus the 5x7 core (all layers)
    ("e_image_strips", "f4"),  # MeV, energy sum of each (un-normalised) layer image
    ("e_image_middle", "f4"),
    ("e_image_back", "f4"),
    ("e_image_had", "f4"),
    ("isPromptPhoton", "i1"),  # 1 prompt photon, 0 fake
    ("truthOrigin", "i1"),  # PHOTON_TRUTH_ORIGIN
    ("truthPdgId", "i4"),  # pdg id of the leading truth particle (0 none)
    ("truthE", "f4"),  # MeV, energy of the leading truth particle
    ("converted", "?"),  # the leading truth photon converted in the tracker
    ("eventNumber", "i8"),
    ("mcEventWeight", "f4"),
    ("averageInteractionsPerCrossing", "f4"),
    ("actualInteractionsPerCrossing", "i2"),
    ("eventDensity", "f4"),  # MeV per unit eta x phi, the event's median E_T density rho
    ("etcone20_corrected", "f4"),  # MeV, etcone20 - rho * (pi 0.2^2 - 5x7 core area)
]
PHOTON_DTYPE = np.dtype(PHOTON_FIELDS)
FIELD_UNITS.update({"eventDensity": "MeV", "etcone20_corrected": "MeV"})
FIELD_UNITS.update({"DeltaE": "MeV", "etcone20": "MeV", "truthE": "MeV",
                    **{f"e_image_{x}": "MeV" for x in ("strips", "middle", "back", "had")}})
