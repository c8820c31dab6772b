"""Jet clustering (fastjet on Awkward arrays of many events) and truth labels.

Small-R jets: anti-kt R = 0.4 on particle-flow objects. Labels as ATLAS:

- ``HadronConeExclTruthLabelID``: weakly decaying b-hadrons with pT > 5 GeV are matched to the
  closest jet within ΔR < 0.3 (each hadron labels only that one jet); a jet with ≥ 1 b-hadron is
  5, else ≥ 1 c-hadron (c-hadrons from b-hadron decays do not count) 4, else ≥ 1 τ lepton
  (pT > 5 GeV, same exclusive matching) 15, else 0.
- ``HadronConeExclExtendedTruthLabelID``: 55 (≥ 2 b), 54 (1 b + ≥ 1 c), 5, 44 (≥ 2 c), 4, 15, 0.
- ``HadronConeExclTruthLabelPt/Lxy/DR``: of the highest-pT hadron of the label's flavour (NaN
  for light jets); Lxy is the transverse distance of its decay vertex from its production point.
- ``PartonTruthLabelID``: |pdg id| of the highest-energy quark or gluon (21) from the hard
  process or the parton shower with pT > 5 GeV within ΔR < 0.3 of the jet; -1 if none.

Large-R jets: anti-kt with the process's radius (default 0.8 as the public top-tagging
benchmark, untrimmed). ``R10TruthLabel``: 1 if a top quark and its three decay quarks (b, q,
q̄') all lie within ΔR < R of the jet axis; else 2 / 3 / 4 for a W / Z / H→bb̄ and both its
decay quarks; else 0. ``truthPt`` and ``truthMass`` are the matched particle's.
``PartonTruthLabelID``: as for small-R jets (same partons, same pT > 5 GeV) with ΔR < R (the
quark/gluon label of QCD jets: q/g classes of the hls4ml jet-substructure benchmark).
"""

from __future__ import annotations

import awkward as ak
import numba
import numpy as np

from lhcml.sim.generator import FlatTable, offsets_of

#: minimum pT (GeV) of labelling hadrons and taus
LABEL_HADRON_PT_MIN = 5.0
#: ΔR of the hadron cone
LABEL_DR = 0.3
#: minimum parton pT (GeV) for PartonTruthLabelID
LABEL_PARTON_PT_MIN = 5.0

_fastjet_banner_shown = False


@numba.njit(cache=True)
def nearest_within_dr(toff, teta, tphi, coff, ceta, cphi, dr_max):
    """For each object ``t`` of list A, the flat row of the nearest object of list B in the same
    event within ``ΔR < dr_max`` (-1 if none); ``toff``/``coff`` are the per-event offsets."""
    out = np.full(teta.shape[0], -1, dtype=np.int64)
    d2max = dr_max * dr_max
    for ev in range(toff.shape[0] - 1):
        for t in range(toff[ev], toff[ev + 1]):
            best = d2max
            for c in range(coff[ev], coff[ev + 1]):
                deta = teta[t] - ceta[c]
                if deta * deta >= best:
                    continue
                dphi = tphi[t] - cphi[c]
                while dphi > np.pi:
                    dphi -= 2 * np.pi
                while dphi < -np.pi:
                    dphi += 2 * np.pi
                d2 = deta * deta + dphi * dphi
                if d2 < best:
                    best = d2
                    out[t] = c
    return out


def cluster(objects: ak.Array, radius: float, min_pt: float) -> tuple[ak.Array, ak.Array]:
    """Anti-kt jets of every event in one fastjet call, sorted by decreasing pT.

    Parameters
    ----------
    objects
        Per event, inputs with fields ``px, py, pz, E`` (GeV).
    radius
        Jet radius parameter R.
    min_pt
        Minimum jet pT (GeV).

    Returns
    -------
    (jets, constituent_index)
        ``jets``: per event, records ``px, py, pz, E, pt, eta, phi, mass``; ``constituent_index``:
        per event, per jet, the indices of its constituents in ``objects``.
    """
    try:
        from lhcml.quiet import import_fastjet

        fastjet = import_fastjet()  # without its banner
    except ImportError as exc:  # pragma: no cover
        raise ImportError("jet clustering needs fastjet: pip install 'lhcml[sim]'") from exc
    n_ev = len(objects)
    inputs = ak.zip(
        {"px": objects.px, "py": objects.py, "pz": objects.pz, "E": objects.E}, with_name="Momentum4D"
    )
    if n_ev == 0 or int(ak.sum(ak.num(inputs, axis=1))) == 0:
        empty = ak.Array([[]] * n_ev)
        return empty, empty
    seq = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = seq.inclusive_jets(min_pt=min_pt)
    cidx = seq.constituent_index(min_pt=min_pt)
    px, py, pz, e = jets.px, jets.py, jets.pz, jets.E
    pt = np.sqrt(px**2 + py**2)
    order = ak.argsort(pt, axis=1, ascending=False)
    pt = pt[order]
    px, py, pz, e = px[order], py[order], pz[order], e[order]
    p = np.sqrt(px**2 + py**2 + pz**2)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    phi = np.arctan2(py, px)
    mass = np.sqrt(np.maximum(e**2 - p**2, 0.0))
    out = ak.zip({"px": px, "py": py, "pz": pz, "E": e, "pt": pt, "eta": eta, "phi": phi, "mass": mass})
    return out, cidx[order]


def cluster_flat(objects: FlatTable, radius: float, min_pt: float) -> tuple[FlatTable, np.ndarray, np.ndarray]:
    """:func:`cluster` on a flat object table (one fastjet call, no Awkward round trips).

    Returns
    -------
    (jets, constituent_offsets, constituents)
        ``jets``: flat table of ``px, py, pz, E, pt, eta, phi, mass`` sorted by decreasing pT in
        each event; the constituents of jet ``j`` (all events, in order) are the rows
        ``constituents[constituent_offsets[j]:constituent_offsets[j + 1]]`` of ``objects``.
    """
    try:
        from lhcml.quiet import import_fastjet

        fastjet = import_fastjet()  # without its banner
    except ImportError as exc:  # pragma: no cover
        raise ImportError("jet clustering needs fastjet: pip install 'lhcml[sim]'") from exc
    n_ev = len(objects)
    names = ("px", "py", "pz", "E", "pt", "eta", "phi", "mass")
    if n_ev == 0 or int(objects.counts.sum()) == 0:
        empty = {k: np.zeros(0) for k in names}
        return FlatTable(empty, np.zeros(n_ev, np.int64)), np.zeros(1, np.int64), np.zeros(0, np.int64)
    inputs = ak.Array(
        ak.contents.ListOffsetArray(
            ak.index.Index64(objects.offsets),
            ak.contents.RecordArray(
                [ak.contents.NumpyArray(np.ascontiguousarray(objects[k], dtype=np.float64))
                 for k in ("px", "py", "pz", "E")],
                ["px", "py", "pz", "E"],
                parameters={"__record__": "Momentum4D"},
            ),
        )
    )
    seq = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jl = ak.to_layout(seq.inclusive_jets(min_pt=min_pt))
    cl = ak.to_layout(seq.constituent_index(min_pt=min_pt))
    jet_off = np.asarray(jl.offsets.data).astype(np.int64)
    rec = jl.content
    a, b = jet_off[0], jet_off[-1]
    px, py, pz, e = (np.asarray(rec.content(k).data)[a:b] for k in ("px", "py", "pz", "E"))
    counts = np.diff(jet_off)
    jet_event = np.repeat(np.arange(n_ev, dtype=np.int64), counts)
    inner = cl.content
    c_off = np.asarray(inner.offsets.data).astype(np.int64)
    c_idx = np.asarray(inner.content.data).astype(np.int64)
    c0 = np.asarray(cl.offsets.data).astype(np.int64)[0]
    c_off = c_off[c0 : c0 + len(px) + 1]
    pt = np.sqrt(px**2 + py**2)
    order = np.lexsort((-pt, jet_event))  # stable: decreasing pT within each event
    pt = pt[order]
    px, py, pz, e = px[order], py[order], pz[order], e[order]
    p = np.sqrt(px**2 + py**2 + pz**2)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    phi = np.arctan2(py, px)
    mass = np.sqrt(np.maximum(e**2 - p**2, 0.0))
    jets = FlatTable(dict(zip(names, (px, py, pz, e, pt, eta, phi, mass), strict=True)), counts)
    # constituents in the new jet order, as row indices of ``objects``
    ncons = np.diff(c_off)[order]
    new_off = offsets_of(ncons)
    total = int(new_off[-1])
    src = np.arange(total, dtype=np.int64) + np.repeat(c_off[:-1][order] - new_off[:-1], ncons)
    cons = c_idx[src] + np.repeat(objects.offsets[jet_event[order]], ncons)
    return jets, new_off, cons


def _flat(a: ak.Array, field: str, dtype=np.float64) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(a[field], axis=1)), dtype=dtype)


@numba.njit(cache=True)
def _dr2(eta1, phi1, eta2, phi2):
    dphi = phi1 - phi2
    while dphi > np.pi:
        dphi -= 2 * np.pi
    while dphi < -np.pi:
        dphi += 2 * np.pi
    deta = eta1 - eta2
    return deta * deta + dphi * dphi


@numba.njit(cache=True)
def _hadron_labels(joff, jeta, jphi, hoff, hflav, hpt, heta, hphi, hlxy, hfromb, pt_min, dr_max):
    nj = jeta.shape[0]
    nb = np.zeros(nj, dtype=np.int32)
    nc = np.zeros(nj, dtype=np.int32)
    ntau = np.zeros(nj, dtype=np.int32)
    best = np.full((nj, 3), -1, dtype=np.int64)  # highest-pT b, c, tau hadron per jet
    best_dr = np.full((nj, 3), np.nan)
    for ev in range(joff.shape[0] - 1):
        j0 = joff[ev]
        j1 = joff[ev + 1]
        for h in range(hoff[ev], hoff[ev + 1]):
            if hpt[h] < pt_min:
                continue
            if hflav[h] == 4 and hfromb[h]:
                continue
            jbest = -1
            dbest = dr_max * dr_max
            for j in range(j0, j1):
                d = _dr2(heta[h], hphi[h], jeta[j], jphi[j])
                if d < dbest:
                    dbest = d
                    jbest = j
            if jbest < 0:
                continue
            slot = 0 if hflav[h] == 5 else (1 if hflav[h] == 4 else 2)
            if slot == 0:
                nb[jbest] += 1
            elif slot == 1:
                nc[jbest] += 1
            else:
                ntau[jbest] += 1
            if best[jbest, slot] < 0 or hpt[h] > hpt[best[jbest, slot]]:
                best[jbest, slot] = h
                best_dr[jbest, slot] = np.sqrt(dbest)
    label = np.zeros(nj, dtype=np.int8)
    ext = np.zeros(nj, dtype=np.int8)
    lpt = np.full(nj, np.nan)
    llxy = np.full(nj, np.nan)
    ldr = np.full(nj, np.nan)
    for j in range(nj):
        slot = -1
        if nb[j] > 0:
            label[j] = 5
            slot = 0
            if nb[j] >= 2:
                ext[j] = 55
            elif nc[j] >= 1:
                ext[j] = 54
            else:
                ext[j] = 5
        elif nc[j] > 0:
            label[j] = 4
            slot = 1
            ext[j] = 44 if nc[j] >= 2 else 4
        elif ntau[j] > 0:
            label[j] = 15
            ext[j] = 15
            slot = 2
        if slot >= 0:
            h = best[j, slot]
            lpt[j] = hpt[h]
            llxy[j] = hlxy[h]
            ldr[j] = best_dr[j, slot]
    return label, ext, lpt, llxy, ldr


@numba.njit(cache=True)
def _parton_labels(joff, jeta, jphi, poff, pid, ppt, peta, pphi, pe, pt_min, dr_max):
    nj = jeta.shape[0]
    out = np.full(nj, -1, dtype=np.int8)
    for ev in range(joff.shape[0] - 1):
        for j in range(joff[ev], joff[ev + 1]):
            emax = -1.0
            for p in range(poff[ev], poff[ev + 1]):
                if ppt[p] < pt_min or pe[p] <= emax:
                    continue
                if _dr2(peta[p], pphi[p], jeta[j], jphi[j]) < dr_max * dr_max:
                    emax = pe[p]
                    out[j] = abs(pid[p])
    return out


def parton_labels_flat(
    joff: np.ndarray, jeta: np.ndarray, jphi: np.ndarray, partons: FlatTable, dr_max: float
) -> np.ndarray:
    """``PartonTruthLabelID`` of jets (flat arrays; jet offsets per event, jet ``eta``/``phi``):
    |pdg id| of the highest-energy quark or gluon of the parton table
    (:meth:`lhcml.sim.generator.GeneratedEvents.flat`) with pT > :data:`LABEL_PARTON_PT_MIN`
    within ΔR < ``dr_max`` of the jet axis; -1 if none. Small-R jets use :data:`LABEL_DR`,
    large-R jets their radius."""
    pc = partons.columns
    ppx, ppy, ppz = (np.asarray(pc[k], dtype=np.float64) for k in ("px", "py", "pz"))
    ppt = np.hypot(ppx, ppy)
    peta = np.arcsinh(ppz / np.maximum(ppt, 1e-9))
    return _parton_labels(
        joff, np.asarray(jeta, dtype=np.float64), np.asarray(jphi, dtype=np.float64), partons.offsets,
        np.asarray(pc["pid"], dtype=np.int32), ppt, peta, np.arctan2(ppy, ppx), np.asarray(pc["e"], dtype=np.float64),
        LABEL_PARTON_PT_MIN, float(dr_max),
    )


def small_r_labels(jets: ak.Array, hadrons: ak.Array, partons: ak.Array) -> dict[str, np.ndarray]:
    """Flavour and parton labels of small-R jets (flat arrays over all jets of all events).

    Parameters
    ----------
    jets
        Per event, jets with ``eta, phi`` (from :func:`cluster`).
    hadrons
        :attr:`lhcml.sim.generator.GeneratedEvents.hadrons`.
    partons
        :attr:`lhcml.sim.generator.GeneratedEvents.partons`.

    Returns
    -------
    dict
        ``HadronConeExclTruthLabelID``, ``HadronConeExclExtendedTruthLabelID``,
        ``HadronConeExclTruthLabelPt`` (GeV), ``HadronConeExclTruthLabelLxy`` (mm),
        ``HadronConeExclTruthLabelDR``, ``PartonTruthLabelID``.
    """
    joff = offsets_of(ak.to_numpy(ak.num(jets, axis=1)).astype(np.int64))
    return small_r_labels_flat(
        joff, _flat(jets, "eta"), _flat(jets, "phi"), FlatTable.from_awkward(hadrons), FlatTable.from_awkward(partons)
    )


def small_r_labels_flat(
    joff: np.ndarray, jeta: np.ndarray, jphi: np.ndarray, hadrons: FlatTable, partons: FlatTable
) -> dict[str, np.ndarray]:
    """:func:`small_r_labels` on flat arrays: jet offsets per event, jet ``eta``/``phi``, and the
    hadron and parton tables (:meth:`lhcml.sim.generator.GeneratedEvents.flat`)."""
    jeta = np.asarray(jeta, dtype=np.float64)
    jphi = np.asarray(jphi, dtype=np.float64)
    h = hadrons.columns
    label, ext, lpt, llxy, ldr = _hadron_labels(
        joff,
        jeta,
        jphi,
        hadrons.offsets,
        np.asarray(h["flavour"], dtype=np.int8),
        np.asarray(h["pt"], dtype=np.float64),
        np.asarray(h["eta"], dtype=np.float64),
        np.asarray(h["phi"], dtype=np.float64),
        np.asarray(h["lxy"], dtype=np.float64),
        np.asarray(h["from_b"], dtype=np.bool_),
        LABEL_HADRON_PT_MIN,
        LABEL_DR,
    )
    plab = parton_labels_flat(joff, jeta, jphi, partons, LABEL_DR)
    return {
        "HadronConeExclTruthLabelID": label,
        "HadronConeExclExtendedTruthLabelID": ext,
        "HadronConeExclTruthLabelPt": lpt,
        "HadronConeExclTruthLabelLxy": llxy,
        "HadronConeExclTruthLabelDR": ldr,
        "PartonTruthLabelID": plab,
    }


@numba.njit(cache=True)
def _resonance_labels(joff, jeta, jphi, roff, rpid, rpt, reta, rphi, rm, nq, qpid, qeta, qphi, radius, contain_dr):
    nj = jeta.shape[0]
    label = np.zeros(nj, dtype=np.int8)
    tpt = np.full(nj, np.nan)
    tm = np.full(nj, np.nan)
    r2 = radius * radius
    c2 = contain_dr * contain_dr
    for ev in range(joff.shape[0] - 1):
        for j in range(joff[ev], joff[ev + 1]):
            best_rank = 0
            for r in range(roff[ev], roff[ev + 1]):
                a = abs(rpid[r])
                need = 3 if a == 6 else 2
                if nq[r] < need:
                    continue  # leptonic decay
                if a == 25 and (abs(qpid[r, 0]) != 5 or abs(qpid[r, 1]) != 5):
                    continue  # only H -> bb
                if _dr2(reta[r], rphi[r], jeta[j], jphi[j]) >= r2:
                    continue
                contained = True
                for k in range(need):
                    if _dr2(qeta[r, k], qphi[r, k], jeta[j], jphi[j]) >= c2:
                        contained = False
                if not contained:
                    continue
                # priority: top (rank 4) > W (3) > Z (2) > H (1)
                if a == 6:
                    rank, lab = 4, 1
                elif a == 24:
                    rank, lab = 3, 2
                elif a == 23:
                    rank, lab = 2, 3
                else:
                    rank, lab = 1, 4
                if rank > best_rank:
                    best_rank = rank
                    label[j] = lab
                    tpt[j] = rpt[r]
                    tm[j] = rm[r]
    return label, tpt, tm


def large_r_labels(jets: ak.Array, resonances: ak.Array, radius: float) -> dict[str, np.ndarray]:
    """``R10TruthLabel``, ``truthPt`` (GeV), ``truthMass`` (GeV) of large-R jets (flat arrays).

    Parameters
    ----------
    jets
        Per event, jets with ``eta, phi``.
    resonances
        :attr:`lhcml.sim.generator.GeneratedEvents.resonances`.
    radius
        Containment radius (the jet radius).
    """
    joff = offsets_of(ak.to_numpy(ak.num(jets, axis=1)).astype(np.int64))
    return large_r_labels_flat(joff, _flat(jets, "eta"), _flat(jets, "phi"), FlatTable.from_awkward(resonances),
                               radius)


def large_r_labels_flat(
    joff: np.ndarray, jeta: np.ndarray, jphi: np.ndarray, resonances: FlatTable, radius: float,
    contain_dr: float | None = None, partons: FlatTable | None = None,
) -> dict[str, np.ndarray]:
    """:func:`large_r_labels` on flat arrays (jet offsets per event, jet ``eta``/``phi``).

    ``contain_dr``: the decay quarks must lie within this ΔR of the jet axis (default ``radius``,
    as the public top-tagging benchmark; ATLAS's *contained* tops use 0.75 R); the resonance
    itself within ``radius``. With ``partons`` (the parton table) the result also holds
    ``PartonTruthLabelID`` (:func:`parton_labels_flat` with ΔR < ``radius``).
    """
    r = resonances.columns
    rpx, rpy, rpz = (np.asarray(r[k], dtype=np.float64) for k in ("px", "py", "pz"))
    rpt = np.hypot(rpx, rpy)
    reta = np.arcsinh(rpz / np.maximum(rpt, 1e-9))
    qeta = np.asarray(r["q_eta"], dtype=np.float64).reshape(-1, 3)
    qphi = np.asarray(r["q_phi"], dtype=np.float64).reshape(-1, 3)
    qpid = np.asarray(r["q_pid"], dtype=np.int32).reshape(-1, 3)
    label, tpt, tm = _resonance_labels(
        joff, np.asarray(jeta, dtype=np.float64), np.asarray(jphi, dtype=np.float64), resonances.offsets,
        np.asarray(r["pid"], dtype=np.int32), rpt, reta, np.arctan2(rpy, rpx), np.asarray(r["m"], dtype=np.float64),
        np.asarray(r["n_quarks"], dtype=np.int8), qpid, qeta, qphi, float(radius),
        float(radius if contain_dr is None else contain_dr),
    )
    out = {"R10TruthLabel": label, "truthPt": tpt, "truthMass": tm}
    if partons is not None:
        out["PartonTruthLabelID"] = parton_labels_flat(joff, jeta, jphi, partons, radius)
    return out
