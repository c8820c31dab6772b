"""Trigger datasets: the hls4ml jet-substructure features and the leading constituents.

:func:`make_trigger_file` turns a boosted large-R jet file (``jets`` + ``flow``, from
``lhcml simulate top_wide|wz_wide|hbb_wide|qcd_wide`` merged and split as in
``benchmarks/boosted_multiclass.py``) into a trigger file with

* ``jets``: the 16 high-level features :data:`SUBSTRUCTURE_16` of the ``trigger_mlp``
  jet-substructure recipe, plus kinematics, the truth label and the weights of the input;
* ``flow``: the ``n_constituents`` leading constituents by pT (:data:`CONSTITUENT_FIELDS`) for
  the ``trigger_deepsets`` recipe.

**The 16 features: the hls4ml benchmark's** (Duarte et al., JINST 13 (2018) P07027, §2;
``docs/references.md §16``): ``zlogz``, ``C1`` (β = 0, 1, 2), ``C2`` (β = 1, 2), ``D2`` (β = 1,
2), ``D2^(α=1)`` (β = 1, 2), ``M2`` (β = 1, 2), ``N2`` (β = 1, 2), the mMDT mass and the
constituent multiplicity, :data:`HLS4ML_16`:

========================  ===========================================================
hls4ml input              lhcml feature (this module's field)
========================  ===========================================================
zlogz                     ``zlogz`` = Σ z_i ln z_i, z_i = pT_i / Σ pT (from ``flow``)
C1 β=0 / 1 / 2            ``C1_b0`` = (1 − Σ z_i²)/2, ``C1_b1`` = ECF2/ECF1²,
                          ``C1_b2`` = ECF2(β=2)/ECF1²
C2 β=1 / 2                ``C2``, ``C2_beta2``
D2 β=1 / 2                ``D2``, ``D2_beta2``
D2^(α=1) β=1 / 2          ``D2_a1_b1`` (= ``D2`` by definition), ``D2_a1_b2``
M2 β=1 / 2, N2 β=1 / 2    ``M2_b1``, ``M2_b2``, ``N2_b1``, ``N2_b2`` (generalised ECFs, §20:
                          :func:`lhcml.tasks.boosted.substructure.generalized_ecf_ratios`)
mMDT mass                 ``mSoftDrop`` (soft drop z_cut = 0.1, β = 0 = mMDT)
multiplicity              ``n_constituents``
========================  ===========================================================

One difference stays: the benchmark computes them on the mMDT-groomed jet, lhcml on the
constituents of the trimmed large-R jet (the ``flow``). The first version's list
:data:`SUBSTRUCTURE_16` (the 10 then available plus ``Tau21_wta``, ``Tau32_wta``, ``Split12``,
``Split23``, ``nChargedConstituents``, ``mass`` in place of D2^(α=1), M2, N2) is written too, so
its configs still run. Masses and splitting scales stay in MeV (the model's normaliser scales
every feature).

**Classes** (``jssTruthLabel``, the hls4ml benchmark's t/W/Z/q/g; label scheme
``jet_substructure``): 0 top, 1 W, 2 Z (``R10TruthLabel`` 1/2/3), 3 q and 4 g: QCD jets
(``R10TruthLabel`` 0) with ``PartonTruthLabelID`` 1-4 (u, d, s, c: the light flavours of the
benchmark's four-flavour ``pp → qq`` samples; ``docs/references.md §20``) or 21. Everything else is -1 and in no class:
H→bb jets, QCD jets labelled by a b quark (the benchmark has none) and QCD jets with no parton
of pT > 5 GeV within ΔR < R (unlabelled; none in the ``qcd_wide`` jets of the benchmark run).
Files without ``PartonTruthLabelID`` (simulated before it existed) get no ``jssTruthLabel``;
their jets keep ``R10TruthLabel`` for the previous qcd/top/W/Z/Hbb classes (``configs/trigger/
jet_substructure_mlp_boosted5.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lhcml.errors import ConfigError, SchemaError

#: the 16 jet-level inputs of the jet-substructure MLP (see the module docstring)
SUBSTRUCTURE_16: tuple[str, ...] = (
    "zlogz", "C1_b0", "C1_b1", "C1_b2", "C2", "C2_beta2", "D2", "D2_beta2", "mSoftDrop",
    "n_constituents", "Tau21_wta", "Tau32_wta", "Split12", "Split23", "nChargedConstituents", "mass",
)  # fmt: skip
#: the hls4ml jet-substructure benchmark's 16 inputs (see the module docstring)
HLS4ML_16: tuple[str, ...] = (
    "zlogz", "C1_b0", "C1_b1", "C1_b2", "C2", "C2_beta2", "D2", "D2_beta2", "D2_a1_b1", "D2_a1_b2",
    "M2_b1", "M2_b2", "N2_b1", "N2_b2", "mSoftDrop", "n_constituents",
)  # fmt: skip
#: classes of ``jssTruthLabel`` in index order (the hls4ml benchmark's t/W/Z/q/g)
JSS_CLASSES: tuple[str, ...] = ("top", "W", "Z", "q", "g")
#: |pdg id| of the partons labelling a QCD jet as q (u, d, s, c) and g
QUARK_IDS: tuple[int, ...] = (1, 2, 3, 4)
GLUON_ID = 21
#: per-constituent inputs of the deep-sets recipe (``valid`` marks real constituents)
CONSTITUENT_FIELDS: tuple[str, ...] = (
    "ptrel", "erel", "deta", "dphi", "charge", "isPhoton", "isNeutralHadron", "isChargedHadron",
    "isElectron", "isMuon",
)  # fmt: skip
#: jets fields copied from the input when present (kinematics, labels, weights, bookkeeping)
COPIED_JET_FIELDS: tuple[str, ...] = (
    "pt", "eta", "phi", "R10TruthLabel", "PartonTruthLabelID", "eventNumber", "mcEventWeight",
    "flat_weight", "averageInteractionsPerCrossing",
)  # fmt: skip
_NEEDED_SUBSTRUCTURE = ("ECF1", "ECF2", "ECF2_beta2", "C2", "C2_beta2", "D2", "D2_beta2", "mSoftDrop",
                        "Tau21_wta", "Tau32_wta", "Split12", "Split23", "nChargedConstituents")  # fmt: skip


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a, dtype=np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def jss_labels(jets: np.ndarray) -> np.ndarray | None:
    """``jssTruthLabel`` (int8) of large-R jets: the index in :data:`JSS_CLASSES` (t/W/Z/q/g),
    -1 for jets in no class (module docstring); None without ``R10TruthLabel`` and
    ``PartonTruthLabelID``."""
    names = set(jets.dtype.names or ())
    if not {"R10TruthLabel", "PartonTruthLabelID"} <= names:
        return None
    r10 = np.asarray(jets["R10TruthLabel"])
    parton = np.asarray(jets["PartonTruthLabelID"])
    out = np.full(len(jets), -1, dtype=np.int8)
    for i, r in enumerate((1, 2, 3)):  # top, W, Z
        out[r10 == r] = i
    qcd = r10 == 0
    out[qcd & np.isin(parton, QUARK_IDS)] = 3
    out[qcd & (parton == GLUON_ID)] = 4
    return out


def jet_features(jets: np.ndarray, flow: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`SUBSTRUCTURE_16` and :data:`HLS4ML_16` features (float32) of a chunk of jets
    and their ``flow``.

    The ECF/N-subjettiness/soft-drop observables are read from ``jets`` when present and
    computed from ``flow`` (:func:`lhcml.tasks.boosted.substructure.substructure_from_flow`)
    otherwise; the generalised-ECF ratios always from ``flow``
    (:func:`lhcml.tasks.boosted.substructure.generalized_ecf_ratios`).
    """
    from lhcml.tasks.boosted.substructure import generalized_ecf_ratios

    names = set(jets.dtype.names or ())
    if not set(_NEEDED_SUBSTRUCTURE) <= names:
        from lhcml.tasks.boosted.substructure import substructure_from_flow

        sub = substructure_from_flow(flow)
    else:
        sub = {k: jets[k] for k in _NEEDED_SUBSTRUCTURE}
    valid = flow["valid"].astype(bool)
    pt = np.where(valid, flow["pt"].astype(np.float64), 0.0)
    z = _ratio(pt, pt.sum(axis=1, keepdims=True))
    zlogz = np.where(z > 0, z * np.log(np.where(z > 0, z, 1.0)), 0.0).sum(axis=1)
    ecf1sq = np.asarray(sub["ECF1"], np.float64) ** 2
    mass = jets["mass"] if "mass" in names else sub.get("mass_constituents")
    n_const = jets["n_constituents"] if "n_constituents" in names else valid.sum(axis=1)
    feats = {
        "zlogz": zlogz,
        "C1_b0": np.where(valid.any(axis=1), 0.5 * (1.0 - (z**2).sum(axis=1)), 0.0),
        "C1_b1": _ratio(np.asarray(sub["ECF2"], np.float64), ecf1sq),
        "C1_b2": _ratio(np.asarray(sub["ECF2_beta2"], np.float64), ecf1sq),
        "n_constituents": n_const,
        "mass": mass,
    }
    feats.update(generalized_ecf_ratios(flow["pt"], flow["eta"], flow["phi"], flow["energy"], valid))
    out = {}
    for k in dict.fromkeys((*SUBSTRUCTURE_16, *HLS4ML_16)):
        out[k] = np.asarray(feats[k] if k in feats else sub[k], dtype=np.float32)
    return out


def leading_constituents(jets: np.ndarray, flow: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` leading constituents by pT of each jet (:data:`CONSTITUENT_FIELDS` + ``valid``).

    ``ptrel``/``erel`` are the constituent pT/energy over the jet's; the particle-type flags
    and ``charge`` are copied (0 where the input lacks them); padded slots are all zero with
    ``valid`` False.
    """
    names = flow.dtype.names or ()
    for need in ("pt", "energy", "deta", "dphi", "valid"):
        if need not in names:
            raise SchemaError(f"the flow dataset has no '{need}' field (needed for the constituent inputs)")
    valid = flow["valid"].astype(bool)
    order = np.argsort(np.where(valid, -flow["pt"], np.inf), axis=1, kind="stable")[:, :n]
    take = np.take_along_axis
    out = np.zeros((len(flow), n), dtype=[*((f, "f4") for f in CONSTITUENT_FIELDS), ("valid", "?")])
    m = order.shape[1]
    sel_valid = take(valid, order, axis=1)
    jet_pt = np.asarray(jets["pt"], np.float64)[:, None]
    jet_e = np.asarray(jets["energy"] if "energy" in (jets.dtype.names or ()) else jets["pt"], np.float64)[:, None]
    cols = {
        "ptrel": take(flow["pt"], order, axis=1) / np.where(jet_pt > 0, jet_pt, 1.0),
        "erel": take(flow["energy"], order, axis=1) / np.where(jet_e > 0, jet_e, 1.0),
        "deta": take(flow["deta"], order, axis=1),
        "dphi": take(flow["dphi"], order, axis=1),
    }
    for f in CONSTITUENT_FIELDS[4:]:
        if f in names:
            cols[f] = take(flow[f], order, axis=1)
    for f, v in cols.items():
        out[f][:, :m] = np.where(sel_valid, v, 0)
    out["valid"][:, :m] = sel_valid
    return out


def make_trigger_file(
    path: str | Path,
    output: str | Path,
    n_constituents: int = 16,
    chunk_size: int = 5000,
    progress: bool = True,
) -> Path:
    """Write the trigger file of one boosted jet file (see the module docstring); atomic.

    Parameters
    ----------
    path
        Flat file with ``jets`` (large-R jets) and ``flow`` (their constituents).
    output
        The trigger file to write (refused if it is ``path``).
    n_constituents
        Leading constituents kept per jet for the constituent model.
    """
    from numpy.lib import recfunctions as rfn

    from lhcml.tasks.boosted._io import rewrite_file

    if n_constituents < 1:
        raise ConfigError(f"--constituents must be >= 1, got {n_constituents}")
    if Path(output).resolve() == Path(path).resolve():
        raise ConfigError(f"the trigger file {output} would overwrite its input: choose another output")

    def transform(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        jets, flow = batch["jets"], batch["flow"]
        feats = jet_features(jets, flow)
        keep = [f for f in COPIED_JET_FIELDS if f in (jets.dtype.names or ()) and f not in feats]
        base = rfn.repack_fields(jets[keep])
        lab = jss_labels(jets)
        if lab is not None:
            feats = {**feats, "jssTruthLabel": lab}
        new = rfn.append_fields(base, list(feats), [feats[k] for k in feats], usemask=False)
        return {"jets": new, "flow": leading_constituents(jets, flow, n_constituents)}

    return rewrite_file(path, output, transform, chunk_size, progress, desc="trigger features")


def make_trigger_dataset(
    inputs: Sequence[str | Path], output_dir: str | Path, n_constituents: int = 16, progress: bool = True
) -> list[Path]:
    """:func:`make_trigger_file` for every input (files, globs or directories), written as
    ``output_dir/<input name>``."""
    from lhcml.data.files import expand_inputs

    files = expand_inputs([str(p) for p in inputs], context="(boosted jet files for lhcml trigger dataset)")
    names = [p.name for p in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"inputs with the same file name {dup} would write the same trigger file")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [make_trigger_file(p, out / p.name, n_constituents, progress=progress) for p in files]
