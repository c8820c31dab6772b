"""Mock flat files with every schema field and realistic-ish distributions (for tests and users).

The numbers are parametrised, not simulated: heavy-flavour jets get displaced tracks with
larger (lifetime-signed) impact-parameter significance, more tracks and a b/c-hadron decay
length; light jets get mostly prompt tracks, some pileup, fakes and long-lived-hadron
secondaries; boosted top/W/Z jets get mass peaks and two/three-prong constituents. Use
``lhcml simulate`` for physics; use these files to exercise code paths quickly.
:func:`make_training_file` adds what preprocessing and the baseline taggers add, for training.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from numpy.lib import recfunctions as rfn

from lhcml.data import schema
from lhcml.data.h5 import write_h5

O = schema.TRUTH_ORIGIN  # noqa: E741 - short alias for the origin labels
# per-flavour probabilities of the track truth origins
_ORIGIN_ORDER = [
    "primary",
    "fromB",
    "fromBC",
    "fromC",
    "fromTau",
    "pileup",
    "fake",
    "otherSecondary",
]
_ORIGIN_P = {
    5: [0.25, 0.35, 0.30, 0.00, 0.00, 0.04, 0.02, 0.04],
    4: [0.45, 0.00, 0.00, 0.45, 0.00, 0.04, 0.02, 0.04],
    15: [0.10, 0.00, 0.00, 0.00, 0.80, 0.05, 0.02, 0.03],
    0: [0.86, 0.00, 0.00, 0.00, 0.00, 0.05, 0.02, 0.07],
}
# mean true |d0| (mm) and production radius (mm) per origin
_IP_SCALE = {"fromB": 0.15, "fromBC": 0.20, "fromC": 0.08, "fromTau": 0.05, "otherSecondary": 0.6}
_R_SCALE = {"fromB": 3.0, "fromBC": 5.0, "fromC": 2.0, "fromTau": 1.5, "otherSecondary": 40.0}
_PARENT = {"fromB": 521, "fromBC": 421, "fromC": 421, "fromTau": 15, "otherSecondary": 310}
# hadron mass (MeV) and c*tau (mm) of the labelling hadron
_HADRON = {5: (5279.0, 0.455), 4: (1870.0, 0.20), 15: (1777.0, 0.087)}
_PIXEL_R = (33.0, 50.5, 88.5, 122.5)  # mm, IBL and three pixel layers
_SCT_R = (299.0, 371.0, 443.0, 514.0)  # mm, double layers


def _event_numbers(rng: np.random.Generator, n: int, mean_jets: float, seed: int) -> np.ndarray:
    sizes = rng.poisson(mean_jets - 1, size=n) + 1
    ev = np.repeat(np.arange(n), sizes)[:n]
    return ev.astype(np.int64) + np.int64(seed) * 1_000_000


def _events_table(jets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ev, first, counts = np.unique(jets["eventNumber"], return_index=True, return_counts=True)
    events = schema.empty(schema.EVENT_DTYPE, len(ev))
    events["eventNumber"] = ev
    events["mcEventWeight"] = jets["mcEventWeight"][first]
    events["averageInteractionsPerCrossing"] = jets["averageInteractionsPerCrossing"][first]
    events["actualInteractionsPerCrossing"] = rng.poisson(events["averageInteractionsPerCrossing"])
    if "truthPrimaryVertexZ" in (jets.dtype.names or ()):
        events["truthPrimaryVertexZ"] = jets["truthPrimaryVertexZ"][first]
    else:
        events["truthPrimaryVertexZ"] = rng.normal(0, 35.0, len(ev))
    events["n_jets"] = counts
    return events


def _per_event(values: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """Broadcast one value per event (indexed by position of the event) to its jets."""
    _, inv = np.unique(ev, return_inverse=True)
    return values[: inv.max() + 1][inv]


def _ftag_tables(n_jets: int, n_tracks: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    jets = schema.empty(schema.JET_DTYPE, n_jets)
    flav = rng.choice([0, 4, 5, 15], size=n_jets, p=[0.55, 0.2, 0.2, 0.05]).astype(np.int8)
    pt = 20e3 + rng.exponential(40e3, n_jets)
    eta = rng.uniform(-2.5, 2.5, n_jets)
    phi = rng.uniform(-np.pi, np.pi, n_jets)
    mass = pt * np.exp(rng.normal(np.log(0.12), 0.35, n_jets)) * np.where(flav == 5, 1.15, 1.0)
    jets["pt"], jets["eta"], jets["phi"], jets["mass"] = pt, eta, phi, mass
    jets["energy"] = np.hypot(pt * np.cosh(eta), mass)
    schema.fill_btag_jes(jets)
    jets["HadronConeExclTruthLabelID"] = flav
    ext = flav.astype(np.int8).copy()
    ext[(flav == 5) & (rng.random(n_jets) < 0.1)] = 55
    ext[(flav == 4) & (rng.random(n_jets) < 0.05)] = 44
    jets["HadronConeExclExtendedTruthLabelID"] = ext
    hpt = np.full(n_jets, np.nan)
    lxy = np.full(n_jets, np.nan)
    for f, (m, ctau) in _HADRON.items():
        sel = flav == f
        hpt[sel] = np.maximum(5e3, pt[sel] * np.clip(rng.normal(0.7, 0.15, sel.sum()), 0.2, 1.0))
        lxy[sel] = rng.exponential(ctau * hpt[sel] / m)
    jets["HadronConeExclTruthLabelPt"] = hpt
    jets["HadronConeExclTruthLabelLxy"] = lxy
    jets["HadronConeExclTruthLabelDR"] = np.where(
        flav > 0, np.minimum(np.abs(rng.normal(0, 0.08, n_jets)), 0.29), np.nan
    )
    parton = np.where(
        flav == 0, np.where(rng.random(n_jets) < 0.5, 21, rng.integers(1, 4, n_jets)), flav
    )
    jets["PartonTruthLabelID"] = parton
    mean_ntrk = (
        2.0
        + 2.5 * np.log(pt / 20e3 + 1)
        + np.select([flav == 5, flav == 4, flav == 15], [3.0, 1.5, -0.5], 0.0)
    )
    n_trk = np.maximum(1, rng.poisson(np.maximum(mean_ntrk, 0.5)))
    jets["n_tracks"] = n_trk
    jets["n_truth_pileup_tracks"] = rng.binomial(n_trk, 0.05)
    ev = _event_numbers(rng, n_jets, 3.0, seed)
    jets["eventNumber"] = ev
    jets["runNumber"] = 410470
    jets["mcEventWeight"] = 1.0
    n_ev = len(np.unique(ev))
    mu = rng.uniform(30, 70, n_ev)
    ztrue = rng.normal(0, 35.0, n_ev)
    jets["averageInteractionsPerCrossing"] = _per_event(mu, ev)
    jets["truthPrimaryVertexZ"] = _per_event(ztrue, ev)
    jets["primaryVertexZ"] = jets["truthPrimaryVertexZ"] + rng.normal(0, 0.02, n_jets)
    # pT rank within the event (0 = leading)
    order = np.lexsort((-pt, ev))
    rank = np.empty(n_jets, dtype=np.int16)
    _, start = np.unique(ev[order], return_index=True)
    pos = np.arange(n_jets) - np.repeat(start, np.diff(np.append(start, n_jets)))
    rank[order] = pos
    jets["jetPtRank"] = rank

    tracks = _ftag_tracks(rng, jets, n_tracks)
    return {"jets": jets, "tracks": tracks, "events": _events_table(jets, rng)}


def _ftag_tracks(rng: np.random.Generator, jets: np.ndarray, n_slots: int) -> np.ndarray:
    n_jets = len(jets)
    shape = (n_jets, n_slots)
    valid = np.arange(n_slots)[None, :] < np.minimum(jets["n_tracks"], n_slots)[:, None]
    flav = jets["HadronConeExclTruthLabelID"]
    origin_idx = np.empty(shape, dtype=np.int64)
    u = rng.random(shape)
    for f, p in _ORIGIN_P.items():
        sel = flav == f
        origin_idx[sel] = np.searchsorted(np.cumsum(p), u[sel].clip(max=1 - 1e-12), side="right")
    origin = np.array([O[n] for n in _ORIGIN_ORDER], dtype=np.int8)[origin_idx]
    jpt = jets["pt"][:, None].astype(np.float64)
    pt = 500.0 + rng.exponential(1.0, shape) * 0.08 * jpt
    deta = rng.normal(0, 0.1, shape)
    dphi = rng.normal(0, 0.1, shape)
    eta = np.clip(jets["eta"][:, None] + deta, -2.5, 2.5)
    phi = (jets["phi"][:, None] + dphi + np.pi) % (2 * np.pi) - np.pi
    sin_t = 1.0 / np.cosh(eta)
    pt_gev = pt / 1e3
    sd0 = np.hypot(0.010, 0.080 / (pt_gev * np.sqrt(sin_t)))
    sz0 = np.hypot(0.020, 0.090 / (pt_gev * np.sqrt(sin_t)))
    # true lifetime-signed impact parameters and production radii
    ip_true = np.zeros(shape)
    z_true = np.zeros(shape)
    radius = np.zeros(shape)
    for name, scale in _IP_SCALE.items():
        sel = origin == O[name]
        k = int(sel.sum())
        sign = np.where(rng.random(k) < (0.85 if name != "otherSecondary" else 0.5), 1.0, -1.0)
        ip_true[sel] = sign * rng.exponential(scale, k)
        z_true[sel] = sign * rng.exponential(1.2 * scale, k)
        radius[sel] = rng.exponential(_R_SCALE[name], k)
    tail = np.where(rng.random(shape) < 0.03, 3.0, 1.0)  # non-Gaussian resolution tails
    tail = np.where(origin == O["fake"], 5.0, tail)
    s_d0 = ip_true + rng.normal(0, 1, shape) * sd0 * tail
    s_z0 = z_true + rng.normal(0, 1, shape) * sz0 * tail
    pileup = origin == O["pileup"]
    s_z0[pileup] = rng.normal(0, 50.0, int(pileup.sum())) * sin_t[pileup]
    geo_sign = np.where(rng.random(shape) < 0.5, 1.0, -1.0)  # sign w.r.t. the beam line
    charge = np.where(rng.random(shape) < 0.5, 1.0, -1.0)

    t = schema.empty(schema.TRACK_DTYPE, shape)
    t["pt"], t["eta"], t["phi"] = pt, eta, phi
    t["qOverP"] = charge / (pt * np.cosh(eta))
    t["deta"], t["dphi"] = eta - jets["eta"][:, None], dphi
    t["dr"] = np.hypot(t["deta"], t["dphi"])
    t["ptfrac"] = pt / jpt
    t["d0"] = geo_sign * s_d0
    t["z0SinTheta"] = geo_sign * s_z0
    t["d0Uncertainty"], t["z0SinThetaUncertainty"] = sd0, sz0
    t["phiUncertainty"] = 1e-4 + 1e-3 / pt_gev
    t["thetaUncertainty"] = (2e-4 + 1e-3 / pt_gev) * sin_t
    t["qOverPUncertainty"] = np.abs(t["qOverP"]) * (0.01 + 0.0005 * pt_gev)
    t["IP3D_signed_d0_significance"] = s_d0 / sd0
    t["IP3D_signed_z0_significance"] = s_z0 / sz0
    # hit pattern from the production radius: no hits inside r, 97 % efficiency per layer
    eff = lambda: rng.random(shape) < 0.97  # noqa: E731
    pix = [(radius < r) & eff() for r in _PIXEL_R]
    sct = sum(((radius < r) & eff()).astype(np.uint8) + ((radius < r) & eff()) for r in _SCT_R)
    dense = (jets["pt"] > 200e3)[:, None]
    t["numberOfInnermostPixelLayerHits"] = pix[0]
    t["numberOfNextToInnermostPixelLayerHits"] = pix[1]
    t["numberOfPixelHits"] = sum(p.astype(np.uint8) for p in pix)
    t["numberOfInnermostPixelLayerSharedHits"] = pix[0] & (
        rng.random(shape) < np.where(dense, 0.12, 0.03)
    )
    t["numberOfInnermostPixelLayerSplitHits"] = pix[0] & (
        rng.random(shape) < np.where(dense, 0.08, 0.02)
    )
    t["numberOfPixelSharedHits"] = rng.binomial(t["numberOfPixelHits"], np.where(dense, 0.08, 0.02))
    t["numberOfPixelSplitHits"] = rng.binomial(t["numberOfPixelHits"], 0.02)
    t["numberOfPixelHoles"] = rng.random(shape) < 0.02
    t["numberOfSCTHits"] = sct
    t["numberOfSCTHoles"] = rng.random(shape) < 0.03
    t["numberOfSCTSharedHits"] = rng.binomial(sct, np.where(dense, 0.05, 0.01))
    lep = rng.random(shape) < np.where(
        np.isin(origin, [O["fromB"], O["fromBC"], O["fromC"]]), 0.04, 0.005
    )
    lep_type = np.where(rng.random(shape) < 0.5, 11, 13)
    t["leptonID"] = np.where(lep, charge * lep_type, 0)
    t["ftagTruthOriginLabel"] = origin
    vtx = np.select(
        [
            origin == O["primary"],
            origin == O["fromB"],
            np.isin(origin, [O["fromBC"], O["fromC"], O["fromTau"]]),
            origin == O["otherSecondary"],
        ],
        [0, 1, 2, 3],
        -1,
    )
    t["ftagTruthVertexIndex"] = vtx
    ptype = np.where(lep, np.where(lep_type == 11, 4, 5), 2)  # 2 pion, 4 electron, 5 muon
    t["ftagTruthTypeLabel"] = np.where(origin == O["fake"], 0, charge * ptype)
    pdg = np.where(lep, -charge * lep_type, charge * 211)
    t["truthPdgId"] = np.where(origin == O["fake"], 0, pdg)
    parent = np.zeros(shape, dtype=np.int32)
    for name, pid in _PARENT.items():
        parent[origin == O[name]] = pid
    t["truthParentPdgId"] = parent
    t["truthProductionRadius"] = radius
    t["valid"] = valid
    # ATLAS order: tracks sorted by decreasing |signed d0 significance|, padding last
    key = np.where(valid, -np.abs(t["IP3D_signed_d0_significance"]), np.inf)
    t = np.take_along_axis(t, np.argsort(key, axis=1, kind="stable"), axis=1)
    t[~t["valid"]] = np.zeros((), dtype=schema.TRACK_DTYPE)
    return t


_BOOSTED_MASS = {1: (172.5e3, 12e3), 2: (80.4e3, 8e3), 3: (91.2e3, 8e3)}
_BOOSTED_PRONGS = {0: 1, 1: 3, 2: 2, 3: 2}
_BOOSTED_NCONST = {0: 45, 1: 70, 2: 50, 3: 50}


def _boosted_tables(n_jets: int, n_slots: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.choice([0, 1, 2, 3], size=n_jets, p=[0.5, 0.25, 0.125, 0.125]).astype(np.int8)
    jets = schema.empty(schema.LARGE_R_JET_DTYPE, n_jets)
    pt = rng.uniform(550e3, 650e3, n_jets)
    eta = rng.uniform(-2.0, 2.0, n_jets)
    phi = rng.uniform(-np.pi, np.pi, n_jets)
    mass = np.exp(rng.normal(np.log(60e3), 0.5, n_jets))
    truth_mass = np.full(n_jets, np.nan)
    truth_pt = np.full(n_jets, np.nan)
    for lab, (m, w) in _BOOSTED_MASS.items():
        sel = label == lab
        mass[sel] = rng.normal(m, w, sel.sum())
        truth_mass[sel] = m
        truth_pt[sel] = pt[sel] * rng.normal(1.0, 0.05, sel.sum())
    jets["pt"], jets["eta"], jets["phi"], jets["mass"] = pt, eta, phi, np.abs(mass)
    jets["energy"] = np.hypot(pt * np.cosh(eta), mass)
    jets["R10TruthLabel"] = label
    jets["truthPt"], jets["truthMass"] = truth_pt, truth_mass
    n_const = rng.poisson(np.vectorize(_BOOSTED_NCONST.get)(label))
    jets["n_constituents"] = n_const
    jets["eventNumber"] = np.arange(n_jets) + np.int64(seed) * 1_000_000
    jets["mcEventWeight"] = 1.0
    jets["averageInteractionsPerCrossing"] = rng.uniform(30, 70, n_jets)

    shape = (n_jets, n_slots)
    valid = np.arange(n_slots)[None, :] < np.minimum(n_const, n_slots)[:, None]
    # prongs separated by ~2m/pT around the jet axis, each constituent assigned to one prong
    n_prong = np.vectorize(_BOOSTED_PRONGS.get)(label)
    sep = 2 * np.abs(mass) / pt
    ang = rng.uniform(0, 2 * np.pi, (n_jets, 3))
    rad = sep[:, None] * np.array([0.0, 0.6, 0.8])[None, :]
    cen_eta, cen_phi = rad * np.cos(ang), rad * np.sin(ang)
    prong = (rng.random(shape) * n_prong[:, None]).astype(int)
    w = rng.exponential(1.0, shape) ** 2 * valid
    frac = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)
    c_pt = frac * pt[:, None]
    deta = np.take_along_axis(cen_eta, prong, axis=1) + rng.normal(0, 0.04, shape)
    dphi = np.take_along_axis(cen_phi, prong, axis=1) + rng.normal(0, 0.04, shape)
    kind = rng.choice(5, size=shape, p=[0.25, 0.12, 0.6, 0.02, 0.01])  # γ, n-had, ch-had, e, μ
    charged = kind >= 2
    charge = np.where(charged, np.where(rng.random(shape) < 0.5, 1, -1), 0)
    flow = schema.empty(schema.FLOW_DTYPE, shape)
    flow["pt"] = c_pt
    flow["eta"] = eta[:, None] + deta
    flow["phi"] = (phi[:, None] + dphi + np.pi) % (2 * np.pi) - np.pi
    flow["energy"] = c_pt * np.cosh(flow["eta"])
    flow["deta"], flow["dphi"] = deta, dphi
    flow["charge"] = charge
    flow["isPhoton"], flow["isNeutralHadron"] = kind == 0, kind == 1
    flow["isChargedHadron"], flow["isElectron"], flow["isMuon"] = kind == 2, kind == 3, kind == 4
    c_gev = np.maximum(c_pt / 1e3, 0.5)
    sd0 = np.hypot(0.010, 0.080 / c_gev)
    sz0 = np.hypot(0.020, 0.090 / c_gev)
    b_like = (label == 1)[:, None] & (rng.random(shape) < 0.15)  # top jets carry a b
    flow["d0"] = np.where(
        charged, rng.normal(0, 1, shape) * sd0 + b_like * rng.exponential(0.15, shape), 0
    )
    flow["z0SinTheta"] = np.where(charged, rng.normal(0, 1, shape) * sz0, 0)
    flow["d0Uncertainty"] = np.where(charged, sd0, 0)
    flow["z0SinThetaUncertainty"] = np.where(charged, sz0, 0)
    flow["valid"] = valid
    order = np.argsort(np.where(valid, -flow["pt"], np.inf), axis=1, kind="stable")
    flow = np.take_along_axis(flow, order, axis=1)
    flow[~flow["valid"]] = np.zeros((), dtype=schema.FLOW_DTYPE)
    return {"jets": jets, "flow": flow, "events": _events_table(jets, rng)}


def make_mock_tables(
    n_jets: int = 1000,
    n_tracks: int | None = None,
    seed: int = 42,
    kind: str = "ftag",
) -> dict[str, np.ndarray]:
    """Mock ``{dataset: structured array}`` tables with every schema field.

    Parameters
    ----------
    n_jets
        Number of jets.
    n_tracks
        Object slots per jet (default 40 tracks for ``ftag``, 200 constituents for ``boosted``).
    seed
        Random seed (same seed, same tables).
    kind
        ``"ftag"``: small-R ``jets`` + ``tracks`` + ``events`` (flavours 0/4/5/15);
        ``"boosted"``: large-R ``jets`` (``R10TruthLabel`` 0 QCD, 1 top, 2 W, 3 Z) + ``flow``
        constituents + ``events``.
    """
    if n_jets < 1:
        raise ValueError(f"n_jets must be >= 1, got {n_jets}")
    if kind == "ftag":
        return _ftag_tables(n_jets, n_tracks or schema.N_TRACKS, seed)
    if kind == "boosted":
        return _boosted_tables(n_jets, n_tracks or schema.N_FLOW, seed)
    raise ValueError(f"unknown mock kind '{kind}' (valid: ftag, boosted)")


def make_mock_file(
    path: str | Path | None = None,
    n_jets: int = 1000,
    n_tracks: int | None = None,
    seed: int = 42,
    kind: str = "ftag",
) -> Path:
    """Write :func:`make_mock_tables` to ``path`` (default: a new temporary file); return it."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="lhcml_mock_")) / f"mock_{kind}.h5"
    tables = make_mock_tables(n_jets, n_tracks, seed, kind)
    return write_h5(path, tables, attrs={"mock": True, "seed": seed, "kind": kind})


# ------------------------------------------------------------------ training-ready files
#: low-level tagger jet variables of :func:`make_training_tables` (IP2D/IP3D/SV1/JetFitter, RNNIP)
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
    """Training-ready flavour-tagging tables: :func:`make_mock_tables` (``ftag``) plus what
    preprocessing adds (``flavour_label``: b 0, c 1, light 2, tau -1; ``weight``) and the
    low-level tagger variables :data:`BASELINE_VARS` as smooth functions of the track impact
    parameters, so that taggers have signal to learn (tests, benchmarks of training speed)."""
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
