"""Large-R jet grooming with fastjet: trimming and soft drop, on many jets in one call.

Every jet's constituents are handed to fastjet's multi-event interface as one "event", so a
whole batch of jets is reclustered in one C++ call (no Python loop over jets).

Trimming (Krohn, Thaler, Wang, JHEP 02 (2010) 084; the ATLAS large-R configuration,
:data:`TRIM_R_SUB` = 0.2, :data:`TRIM_F_CUT` = 5 %, docs/references.md §7): the constituents of each jet
are reclustered with the kt algorithm of radius ``R_sub``; subjets carrying less than ``f_cut``
of the (ungroomed) jet pT are removed. This is ``fastjet::Filter(JetDefinition(kt, R_sub),
SelectorPtFractionMin(f_cut))``; ``tests/test_sim_large_r.py`` checks it against that fastjet
object on constructed jets.

Soft drop (Larkoski, Marzani, Soyez, Thaler, JHEP 05 (2014) 146) with β = 0 and
``z_cut`` = 0.1 (:data:`SOFTDROP_BETA`, :data:`SOFTDROP_ZCUT`; the modified mass-drop tagger
setting used by CMS and in ATLAS studies): fastjet-contrib's ``RecursiveTools`` SoftDrop, as
exposed by fastjet's Python package (``ClusterSequence.exclusive_jets_softdrop_grooming``) on a
Cambridge/Aachen reclustering of each jet's constituents.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from lhcml.sim.generator import offsets_of

#: trimming subjet radius and pT fraction (ATLAS large-R jets, docs/references.md §7)
TRIM_R_SUB = 0.2
TRIM_F_CUT = 0.05
#: soft drop angular exponent and momentum-sharing cut (β = 0: modified mass drop)
SOFTDROP_BETA = 0.0
SOFTDROP_ZCUT = 0.1
#: Cambridge/Aachen radius of the soft-drop reclustering: large enough that each jet's
#: constituents end in one exclusive jet (they all lie within R = 0.8 of the jet axis)
_CA_RADIUS = 2.0


def _fastjet():
    try:
        import fastjet
    except ImportError as exc:  # pragma: no cover
        raise ImportError("jet grooming needs fastjet: pip install 'lhcml[sim]'") from exc
    return fastjet


def _jets_as_events(offsets: np.ndarray, px, py, pz, e) -> ak.Array:
    """Constituent lists (``offsets`` into the flat four-momenta) as fastjet input "events"."""
    return ak.Array(
        ak.contents.ListOffsetArray(
            ak.index.Index64(np.asarray(offsets, dtype=np.int64)),
            ak.contents.RecordArray(
                [ak.contents.NumpyArray(np.ascontiguousarray(v, dtype=np.float64)) for v in (px, py, pz, e)],
                ["px", "py", "pz", "E"],
                parameters={"__record__": "Momentum4D"},
            ),
        )
    )


def trim(
    offsets: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    e: np.ndarray,
    jet_pt: np.ndarray,
    r_sub: float = TRIM_R_SUB,
    f_cut: float = TRIM_F_CUT,
) -> np.ndarray:
    """Which constituents survive trimming.

    Parameters
    ----------
    offsets
        ``(n_jets + 1,)``: the constituents of jet ``j`` are rows ``offsets[j]:offsets[j + 1]``
        of the flat four-momenta ``px, py, pz, e`` (GeV).
    jet_pt
        ``(n_jets,)`` reference pT of each jet (the ungroomed jet pT, as ATLAS).
    r_sub, f_cut
        kt subjet radius and minimum subjet pT fraction.

    Returns
    -------
    np.ndarray
        Boolean mask over the flat constituents: True for constituents of kept subjets.
    """
    fastjet = _fastjet()
    offsets = np.asarray(offsets, dtype=np.int64)
    n_cons = int(offsets[-1] - offsets[0])
    keep = np.zeros(n_cons, dtype=bool)
    if n_cons == 0:
        return keep
    base = offsets - offsets[0]
    inputs = _jets_as_events(base, *(np.asarray(v)[offsets[0]:offsets[-1]] for v in (px, py, pz, e)))
    seq = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.kt_algorithm, float(r_sub)))
    sub = ak.to_layout(seq.inclusive_jets(min_pt=0.0))
    sidx = ak.to_layout(seq.constituent_index(min_pt=0.0))
    sub_off = np.asarray(sub.offsets.data).astype(np.int64)
    a, b = sub_off[0], sub_off[-1]
    spx = np.asarray(sub.content.content("px").data)[a:b]
    spy = np.asarray(sub.content.content("py").data)[a:b]
    sub_jet = np.repeat(np.arange(len(sub_off) - 1), np.diff(sub_off))
    good = np.hypot(spx, spy) > float(f_cut) * np.asarray(jet_pt, dtype=np.float64)[sub_jet]
    inner = sidx.content
    c0 = np.asarray(sidx.offsets.data).astype(np.int64)[0]
    c_off = np.asarray(inner.offsets.data).astype(np.int64)[c0 : c0 + len(spx) + 1]
    c_idx = np.asarray(inner.content.data).astype(np.int64)
    nc = np.diff(c_off)
    g = np.flatnonzero(good)
    # constituent positions of the kept subjets (event-local index + the jet's offset)
    src = np.repeat(c_off[:-1][g], nc[g]) + (np.arange(int(nc[g].sum())) - np.repeat(offsets_of(nc[g])[:-1], nc[g]))
    keep[c_idx[src] + np.repeat(base[sub_jet[g]], nc[g])] = True
    return keep


def softdrop_mass(
    offsets: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    e: np.ndarray,
    beta: float = SOFTDROP_BETA,
    z_cut: float = SOFTDROP_ZCUT,
    r0: float = 0.8,
) -> np.ndarray:
    """Soft-drop groomed mass (GeV) of each jet (0 for jets without constituents).

    Parameters as :func:`trim`; ``r0`` is the soft-drop characteristic radius (the jet radius).
    """
    fastjet = _fastjet()
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    out = np.zeros(len(counts))
    nz = np.flatnonzero(counts > 0)
    if len(nz) == 0:
        return out
    # only non-empty jets (fastjet's exclusive jets need at least one input)
    sel_off = offsets_of(counts[nz])
    src = np.repeat(offsets[:-1][nz], counts[nz]) + (np.arange(int(sel_off[-1])) - np.repeat(sel_off[:-1], counts[nz]))
    inputs = _jets_as_events(sel_off, *(np.asarray(v)[src] for v in (px, py, pz, e)))
    seq = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.cambridge_algorithm, _CA_RADIUS))
    sd = seq.exclusive_jets_softdrop_grooming(njets=1, beta=float(beta), symmetry_cut=float(z_cut),
                                               R0=float(r0))
    out[nz] = np.asarray(ak.to_numpy(sd["msoftdrop"]), dtype=np.float64)
    return out


def four_momentum_sums(offsets: np.ndarray, mask: np.ndarray | None, px, py, pz, e) -> dict[str, np.ndarray]:
    """Summed four-momentum of each jet's (masked) constituents: ``px, py, pz, E, pt, eta, phi,
    mass`` (GeV; eta 0 and phi 0 for jets with no constituent left)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    a, b = offsets[0], offsets[-1]
    jet = np.repeat(np.arange(n), np.diff(offsets))
    w = np.ones(b - a, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    sums = [np.bincount(jet[w], weights=np.asarray(v)[a:b][w], minlength=n) for v in (px, py, pz, e)]
    spx, spy, spz, se = sums
    pt = np.hypot(spx, spy)
    p2 = spx**2 + spy**2 + spz**2
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.where(pt > 0, np.arcsinh(spz / np.where(pt > 0, pt, 1.0)), 0.0)
    return {"px": spx, "py": spy, "pz": spz, "E": se, "pt": pt, "eta": eta, "phi": np.arctan2(spy, spx),
            "mass": np.sqrt(np.maximum(se**2 - p2, 0.0))}
