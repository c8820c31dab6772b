"""Simulated events → schema arrays: the whole chain for one process.

:func:`simulate_events` runs Pythia (:mod:`~lhcml.sim.generator`), overlays pileup
(:mod:`~lhcml.sim.pileup`), decays K0S/Λ in the detector (:mod:`~lhcml.sim.decays`), simulates
tracks (:mod:`lhcml.sim.tracker`), builds particle-flow objects (:mod:`~lhcml.sim.pflow`),
clusters and labels jets (:mod:`~lhcml.sim.jets`) and fills structured arrays that match
:mod:`lhcml.data.schema` exactly (MeV, mm). Photon processes are dispatched to
:func:`lhcml.sim.photons.simulate_photon_events`.

The primary vertices are reconstructed from the tracks (:mod:`lhcml.sim.vertexing`: iterative
adaptive vertex finding with the beam-spot constraint, hard scatter by Σ pT²); track impact
parameters are measured w.r.t. the reconstructed hard-scatter vertex.

Pileup handling on jets, as ATLAS: charged-hadron subtraction in the flow objects
(:mod:`~lhcml.sim.pflow`), jet-area subtraction ``pT → pT − ρ·πR²`` with the event's median
density ρ (:func:`~lhcml.sim.pflow.pileup_density`; the four-momentum is scaled), and for small-R
jets a JVT proxy: jets below 60 GeV with |η| < 2.4 need more than 10 % of their pT carried by
primary-vertex tracks (``RpT``), which removes pure-pileup jets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import awkward as ak
import numpy as np

from lhcml.data.schema import (
    EVENT_DTYPE,
    FLOW_DTYPE,
    JET_DTYPE,
    LARGE_R_JET_DTYPE,
    N_FLOW,
    N_TRACKS,
    TRACK_DTYPE,
    empty,
    fill_btag_jes,
)
from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable, offsets_of
from lhcml.sim.processes import MAX_PYTHIA_SEED, Process, get_process

#: radius of large-R jets (the public top-tagging benchmark: anti-kt R = 0.8)
LARGE_R_RADIUS = 0.8
#: ΔR within which the decay quarks of a labelled t/W/Z/H must lie (``R10TruthLabel``): ``None``
#: = the jet radius, as the public top-tagging benchmark; ATLAS's *contained* tops use 0.75 R
#: (``benchmarks/sim_large_r.py --containment 0.75``)
LARGE_R_CONTAIN_DR: float | None = None
#: small-R jet radius
SMALL_R_RADIUS = 0.4
#: particle-flow constituent slots of small-R quark/gluon jets (``flow`` of ``kind="quark_gluon"``
#: processes; R = 0.4 jets at 500-550 GeV have ~20-70 constituents)
N_FLOW_SMALL_R = 100
#: pileup-jet suppression (a JVT proxy): jets with pT < JVT_PT_MAX (GeV) and |eta| < JVT_ETA_MAX
#: need a fraction > JVT_RPT_MIN of their pT in primary-vertex tracks
JVT_PT_MAX = 60.0
JVT_ETA_MAX = 2.4
JVT_RPT_MIN = 0.1
#: event numbers: seed * EVENT_NUMBER_STRIDE + index
EVENT_NUMBER_STRIDE = 10_000_000
#: default pileup-library size built on the fly when ``mu > 0`` and no library is given
DEFAULT_LIBRARY_SIZE = 1000
#: events per internal batch
DEFAULT_BATCH = 200

_GEV = 1000.0  # MeV per GeV


def _run_number(process: Process) -> int:
    from lhcml.sim.processes import list_processes

    return 900_000 + list_processes().index(process.name)


def simulate_events(
    process: str,
    n_events: int,
    mu: float = 50.0,
    seed: int = 0,
    pileup: Any = None,
    progress: Callable[[int], None] | bool | None = None,
    batch_size: int = DEFAULT_BATCH,
    constituents: str = "pflow",
    keep_lepton_overlaps: bool = False,
    calo: str | None = None,
) -> dict[str, np.ndarray]:
    """Simulate ``n_events`` hard-scatter events of ``process`` and return schema arrays.

    Parameters
    ----------
    process
        Registered process name (:func:`lhcml.sim.processes.list_processes`).
    n_events
        Number of generated hard-scatter events (jets are selected from them, so the number of
        output rows differs).
    mu
        Mean number of pileup interactions (``averageInteractionsPerCrossing``); 0 = no pileup.
    seed
        Random seed, ``0 <= seed < 900000000``. The same seed gives identical arrays.
    pileup
        A :class:`lhcml.sim.pileup.PileupLibrary`. If ``None`` and ``mu > 0``, a library of
        :data:`DEFAULT_LIBRARY_SIZE` minimum-bias events is generated in memory (seeded from
        ``seed``); pass a library built once with :func:`~lhcml.sim.pileup.build_pileup_library`
        to save that time.
    progress
        ``True`` for a tqdm bar, or a callable receiving the number of events just finished.
    batch_size
        Hard events simulated per internal batch (memory vs. overhead).
    constituents
        Inputs of large-R jets (and so of their ``flow``): ``"pflow"`` (particle flow, default),
        ``"clusters"`` (calorimeter clusters) or ``"tcc"`` (Track-CaloClusters); large-R
        processes only.
    keep_lepton_overlaps
        Keep the small-R jets that the lepton overlap removal (:mod:`lhcml.sim.leptons`) removes,
        flagged ``overlapsElectron``/``overlapsMuon`` (for studies; also
        :attr:`Process.keep_lepton_overlaps`). Default: they are dropped.
    calo
        Photon processes: ``"fast:MODEL.onnx[:BINNING.xml]"`` swaps the detailed showers of the
        particles the model was trained on for generated ones (:mod:`lhcml.sim.fastcalo`);
        ``None``/``"detailed"``: the detailed calorimeter.

    Returns
    -------
    dict[str, np.ndarray]
        Small-R processes: ``{"jets": JET_DTYPE (n_jets,), "tracks": TRACK_DTYPE (n_jets, 40),
        "events": EVENT_DTYPE (n_events,)}``, plus ``"flow": FLOW_DTYPE (n_jets, 100)`` (the jets'
        particle-flow constituents, :data:`N_FLOW_SMALL_R`) for quark/gluon processes (``qg``);
        large-R processes: ``{"jets": LARGE_R_JET_DTYPE,
        "flow": FLOW_DTYPE (n_jets, 200), "events": ...}``; photon processes: whatever
        :func:`lhcml.sim.photons.simulate_photon_events` returns.
    """
    proc = get_process(process)
    if keep_lepton_overlaps:
        import dataclasses

        proc = dataclasses.replace(proc, keep_lepton_overlaps=True)
    if n_events <= 0:
        raise ConfigError(f"n_events must be a positive integer, got {n_events}")
    if not np.isfinite(mu) or mu < 0:
        raise ConfigError(f"mu must be a finite number >= 0, got {mu}")
    if not 0 <= int(seed) < MAX_PYTHIA_SEED:
        raise ConfigError(f"seed must be in [0, {MAX_PYTHIA_SEED}), got {seed}")
    if constituents not in CONSTITUENT_TYPES:
        raise ConfigError(f"unknown constituents '{constituents}'; valid: {', '.join(CONSTITUENT_TYPES)}")
    if constituents != "pflow" and proc.jet_kind != "large_r":
        raise ConfigError(
            f"constituents '{constituents}' applies to large-R processes only; '{proc.name}' has "
            f"{proc.jet_kind} jets (use the default 'pflow')"
        )
    if calo not in (None, "detailed") and proc.kind != "photon":
        raise ConfigError(f"--calo {calo!r} applies to photon processes only; '{proc.name}' is a {proc.kind} process")
    if proc.kind == "photon":
        from lhcml.sim.photons import simulate_photon_events

        return simulate_photon_events(proc.name, n_events, mu, seed, pileup, calo=calo)
    if proc.kind == "minbias":
        raise ConfigError(
            "process 'minbias' is the pileup source: build a library with "
            "lhcml.sim.pileup.build_pileup_library(), or choose a hard process: "
            + ", ".join(p for p in _jet_processes())
        )
    if mu > 0 and pileup is None:
        from lhcml.sim.pileup import build_pileup_library

        pileup = build_pileup_library(DEFAULT_LIBRARY_SIZE, (int(seed) * 7919 + 17) % MAX_PYTHIA_SEED)

    from lhcml.sim.generator import PythiaGenerator

    gen = PythiaGenerator(proc, int(seed)).init()
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=n_events, desc=f"simulate {proc.name}", unit="evt")
    parts: list[dict[str, np.ndarray]] = []
    done = 0
    while done < n_events:
        n = min(batch_size, n_events - done)
        rng = np.random.default_rng([int(seed), done, 0xD37EC7])
        parts.append(_simulate_batch(proc, gen, n, float(mu), rng, pileup, first_event=done, seed=int(seed),
                                     constituents=constituents))
        done += n
        if bar is not None:
            bar.update(n)
        elif callable(progress):
            progress(n)
    if bar is not None:
        bar.close()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def simulate_batch(
    process: str,
    generator: Any,
    n_events: int,
    mu: float,
    rng: np.random.Generator,
    pileup: Any = None,
    first_event: int = 0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One batch of :func:`simulate_events` (same arrays) from a caller-owned, initialised
    :class:`lhcml.sim.generator.PythiaGenerator` of ``process``: benchmarks time Pythia and the
    chain on the same events with it. ``pileup`` is required when ``mu > 0``."""
    if mu > 0 and pileup is None:
        raise ConfigError("simulate_batch at mu > 0 needs a pileup library (lhcml.sim.pileup.build_pileup_library)")
    return _simulate_batch(get_process(process), generator, int(n_events), float(mu), rng, pileup,
                           first_event=int(first_event), seed=int(seed))


def _jet_processes() -> list[str]:
    from lhcml.sim.processes import PROCESSES

    return [n for n, p in sorted(PROCESSES.items()) if p.kind not in ("photon", "minbias")]


def simulate_particles(
    gen: Any, n: int, mu: float, rng: np.random.Generator, pileup: Any
) -> tuple[Any, ak.Array, np.ndarray]:
    """Generated events with pileup overlaid and V0s decayed (the truth input of the detector).

    The returned particle table holds the final-state particles only (hard scatter, then pileup,
    then V0 daughters), in the detector frame.

    Returns ``(generated, particles, n_pileup)``.
    """
    generated, particles, n_pu = _simulate_particles_flat(gen, n, mu, rng, pileup)
    return generated, particles.to_awkward(), n_pu


def _simulate_particles_flat(
    gen: Any, n: int, mu: float, rng: np.random.Generator, pileup: Any
) -> tuple[Any, FlatTable, np.ndarray]:
    from lhcml.sim.decays import decay_v0s_flat

    generated = gen.generate(n)
    # the detector sees only the stable final state: dropping the intermediate record (about
    # 60 % of the rows) speeds up every later stage; ``hf_hadron`` still indexes the full
    # record in ``generated.particles``
    table = generated.flat("particles")
    particles = table.select(table["final"])
    n_pu = np.zeros(n, dtype=np.int64)
    if mu > 0:
        particles, n_pu = pileup.overlay_flat(particles, mu, rng)
    particles = decay_v0s_flat(particles, rng)
    return generated, particles, n_pu


def _simulate_tracks(particles: ak.Array, rng: np.random.Generator) -> ak.Array:
    try:
        from lhcml.sim.tracker import simulate_tracks
    except ImportError as exc:  # pragma: no cover - until the tracker module exists
        raise ImportError(
            "lhcml.sim.tracker.simulate_tracks is not available; the track simulation is required "
            "for jets (install the full lhcml package)"
        ) from exc
    return simulate_tracks(particles, rng)


def _select(jets: FlatTable, proc: Process) -> np.ndarray:
    mask = (jets["pt"] > proc.jet_pt_min) & (abs(jets["eta"]) < proc.jet_eta_max)
    if proc.jet_pt_max is not None:
        mask = mask & (jets["pt"] < proc.jet_pt_max)
    return mask


def _simulate_batch(
    proc: Process,
    gen: Any,
    n: int,
    mu: float,
    rng: np.random.Generator,
    pileup: Any,
    first_event: int,
    seed: int,
    constituents: str = "pflow",
) -> dict[str, np.ndarray]:
    from lhcml.sim.pflow import build_pflow_flat
    from lhcml.sim.vertexing import impact_parameters, reconstruct_primary_vertices

    generated, particles, n_pu = _simulate_particles_flat(gen, n, mu, rng, pileup)
    tracks_ak = _simulate_tracks(particles.to_awkward(), rng)
    tracks = FlatTable.from_awkward(tracks_ak)
    truth_pv = generated.primary_vertex
    vertices = reconstruct_primary_vertices(tracks, rng=rng)
    pv_z = vertices.z
    # d0, z0 sinθ of every track w.r.t. the reconstructed hard-scatter vertex (particle-flow CHS, leptons)
    track_ips = impact_parameters(tracks, vertices)
    from lhcml.sim.topoclusters import simulate_topo_clusters

    # jet calorimeter -> topo-clusters -> particle flow (lhcml.sim.jet_calo/topoclusters/pflow)
    topo = simulate_topo_clusters(particles, pv_z, rng, mu, n_pu)
    objects = build_pflow_flat(particles, tracks, pv_z, rng, topo=topo, track_ips=track_ips)

    event_number = np.int64(seed) * EVENT_NUMBER_STRIDE + first_event + np.arange(n, dtype=np.int64)
    weights = generated.weights

    events = empty(EVENT_DTYPE, n)
    events["eventNumber"] = event_number
    events["mcEventWeight"] = weights
    events["averageInteractionsPerCrossing"] = mu
    events["actualInteractionsPerCrossing"] = n_pu
    events["truthPrimaryVertexZ"] = truth_pv[:, 2]
    events["primaryVertexZ"] = pv_z
    events["nPrimaryVertices"] = np.minimum(vertices.n_vertices, np.iinfo(np.int16).max)
    events["pvIsHardScatter"] = vertices.is_hard_scatter(truth_pv[:, 2])

    if proc.jet_kind == "large_r":
        out = _large_r(proc, objects, generated, particles, tracks, pv_z, rng, constituents, topo=topo, mu=mu)
    else:
        out = _small_r(proc, objects, generated, tracks_ak, vertices, mu=mu, particles=particles, tracks_flat=tracks,
                       rng=rng, events=events, topo=topo, track_ips=track_ips)
    jets, jet_event = out["jets"], out.pop("_event")
    events["n_jets"] = np.bincount(jet_event, minlength=n)
    jets["eventNumber"] = event_number[jet_event]
    jets["averageInteractionsPerCrossing"] = mu
    w = weights[jet_event]
    if proc.flatten_pt is not None:
        lo, hi, slope = proc.flatten_pt
        pt_gev = np.clip(jets["pt"] / _GEV, lo, hi)
        w = w * np.exp((pt_gev - lo) / slope)
    jets["mcEventWeight"] = w
    if proc.jet_kind != "large_r":
        jets["runNumber"] = _run_number(proc)
        jets["primaryVertexZ"] = pv_z[jet_event]
        jets["truthPrimaryVertexZ"] = truth_pv[jet_event, 2]
    out["events"] = events
    return out


def area_correct(jets: ak.Array, rho: np.ndarray, radius: float) -> ak.Array:
    """Jets with their four-momenta scaled by ``max(1 − ρ·πR²/pT, 0)`` (jet-area subtraction)."""
    flat = FlatTable.from_awkward(jets, ["px", "py", "pz", "E", "pt", "mass", "eta", "phi"])
    return _area_correct_flat(flat, rho, radius).to_awkward()


def _area_correct_flat(jets: FlatTable, rho: np.ndarray, radius: float) -> FlatTable:
    factor = 1.0 - np.asarray(rho)[jets.event] * (np.pi * radius**2) / np.maximum(jets["pt"], 1e-9)
    factor = np.where(factor > 0, factor, 0.0)
    out = {k: jets[k] * factor for k in ("px", "py", "pz", "E", "pt", "mass")}
    out["eta"] = jets["eta"]
    out["phi"] = jets["phi"]
    return FlatTable(out, jets.counts)


def _small_r(proc, objects: FlatTable, generated, tracks: ak.Array, vertices, mu: float = 0.0,
             particles: FlatTable | None = None, tracks_flat: FlatTable | None = None,
             rng: np.random.Generator | None = None, events: np.ndarray | None = None,
             topo: Any = None, track_ips: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    from lhcml.sim.jet_calibration import (
        calibrate_small_r_flat,
        match_truth,
        sort_by_pt,
        truth_jets_flat,
    )
    from lhcml.sim.jets import cluster_flat, small_r_labels_flat
    from lhcml.sim.pflow import pileup_density_flat

    # raw jets from half the threshold: the calibration raises their pT (response < 1 before it)
    jets_all, cons_off, cons = cluster_flat(objects, SMALL_R_RADIUS, min_pt=0.5 * min(20.0, proc.jet_pt_min))
    raw_pt = jets_all["pt"]
    # rho*A, residual pileup (mu, N_PV) and numerical-inversion JES (lhcml.sim.jet_calibration)
    jets_all = calibrate_small_r_flat(jets_all, pileup_density_flat(objects), mu, vertices.n_vertices,
                                      SMALL_R_RADIUS)
    jets_all, cons_off, cons, raw_pt = sort_by_pt(jets_all, cons_off, cons, raw_pt)  # calibrated-pT order
    truth_pt, truth_eta = match_truth(jets_all, truth_jets_flat(generated, SMALL_R_RADIUS))
    joff = jets_all.offsets
    labels = small_r_labels_flat(joff, jets_all["eta"], jets_all["phi"], generated.flat("hadrons"),
                                 generated.flat("partons"))
    # RpT: charged (primary-vertex) constituent pT over the raw jet pT
    ncons = np.diff(cons_off)
    cons_jet = np.repeat(np.arange(len(raw_pt)), ncons)
    charged_pt = np.where(objects["charge"][cons] != 0, objects["pt"][cons], 0.0)
    rpt = np.bincount(cons_jet, weights=charged_pt, minlength=len(raw_pt)) / np.maximum(raw_pt, 1e-9)
    flat_mask = _select(jets_all, proc)
    jpt = jets_all["pt"]
    jeta = np.abs(jets_all["eta"])
    jvt_fail = (jpt < JVT_PT_MAX) & (jeta < JVT_ETA_MAX) & (rpt <= JVT_RPT_MIN)
    flat_mask &= ~jvt_fail
    lepton_flags: dict[str, np.ndarray] = {}
    if particles is not None and rng is not None:
        # leptons (sim.leptons): reconstruction, ID, isolation, overlap removal with the selected jets
        from lhcml.sim.leptons import small_r_lepton_flags

        lepton_flags, n_prompt = small_r_lepton_flags(jets_all, flat_mask, cons_off, cons, objects, particles,
                                                      tracks_flat, vertices.z, rng, raw_jet_pt=raw_pt, topo=topo,
                                                      track_ips=track_ips)
        if events is not None:
            events["nTruthPromptLeptons"] = n_prompt
        if not proc.keep_lepton_overlaps:
            flat_mask &= ~(lepton_flags["overlapsElectron"] | lepton_flags["overlapsMuon"])
    sel = jets_all.select(flat_mask)
    n_sel = sel.counts
    jet_event = sel.event
    jets = empty(JET_DTYPE, len(jet_event))
    jets["pt"] = sel["pt"] * _GEV
    jets["eta"] = sel["eta"]
    jets["phi"] = sel["phi"]
    jets["mass"] = sel["mass"] * _GEV
    jets["energy"] = sel["E"] * _GEV
    for k, v in labels.items():
        v = v[flat_mask]
        jets[k] = v * _GEV if k == "HadronConeExclTruthLabelPt" else v
    for k, v in lepton_flags.items():
        jets[k] = v[flat_mask]
    jets["jetPtRank"] = np.arange(len(jet_event)) - sel.offsets[jet_event]
    jets["truthJetPt"] = np.where(truth_pt[flat_mask] > 0, truth_pt[flat_mask] * _GEV, -1.0)
    jets["truthJetEta"] = truth_eta[flat_mask]

    fill_btag_jes(jets)  # pt_btagJes, eta_btagJes, absEta_btagJes (ATLAS names, GN2 configs)
    from lhcml.sim.association import associate_tracks

    sel_ak = FlatTable({"pt": sel["pt"], "eta": sel["eta"], "phi": sel["phi"]}, n_sel).to_awkward()
    trk, n_assoc, n_pu_trk = associate_tracks(sel_ak, tracks, vertices, n_slots=N_TRACKS, return_pileup_counts=True)
    trk = _as_dtype(trk, TRACK_DTYPE, "associate_tracks")
    jets["n_tracks"] = np.minimum(n_assoc, np.iinfo(np.int16).max)
    jets["n_truth_pileup_tracks"] = np.minimum(n_pu_trk, np.iinfo(np.int16).max)
    out = {"jets": jets, "tracks": trk, "_event": jet_event}
    if proc.kind == "quark_gluon":
        # constituent taggers (PFN, ParticleNet, ...): the jet's particle-flow objects, as for large-R jets
        out["flow"], _ = _constituent_flow(objects, cons_off, cons, flat_mask, jets["eta"], jets["phi"],
                                           N_FLOW_SMALL_R)
    return out


def _as_dtype(arr: np.ndarray, dtype: np.dtype, who: str) -> np.ndarray:
    if arr.dtype == dtype:
        return arr
    missing = [n for n in dtype.names if n not in (arr.dtype.names or ())]
    if missing:
        raise TypeError(f"{who} returned an array without fields {missing}")
    out = np.zeros(arr.shape, dtype=dtype)
    for name in dtype.names:
        out[name] = arr[name]
    return out


def _large_r(
    proc,
    objects: FlatTable,
    generated,
    particles: FlatTable | None = None,
    tracks: FlatTable | None = None,
    pv_z: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    constituents: str = "pflow",
    topo: Any = None,
    mu: float = 0.0,
    mitigation: str | None = None,
    tcc_pileup_tracks: str = "remove",
) -> dict[str, np.ndarray]:
    """Groomed large-R jets: pileup mitigation → anti-kt R → trimming → JES/JMS (``docs/simulation.md``).

    ``constituents`` chooses the jet inputs (:data:`CONSTITUENT_TYPES`): the particle-flow
    ``objects``, calorimeter clusters, or Track-CaloClusters built from the clusters and
    ``tracks`` (both need ``particles``, ``pv_z`` and ``rng``; ``topo``: the batch's topo-clusters
    if already simulated; ``mu``: ⟨μ⟩ of the batch, for the calibration). ``mitigation``: the
    constituent-level pileup mitigation (:data:`lhcml.sim.pileup_mitigation.METHODS`; default
    :data:`LARGE_R_MITIGATION` of the type); a non-default one is calibrated with the tables
    stored under ``"<type>+<method>"`` (:func:`lhcml.sim.large_r_calibration.table_key`).
    ``tcc_pileup_tracks``: TCCs only, the treatment of pileup tracks
    (:data:`lhcml.sim.tcc.TCC_PILEUP_TRACKS`; a study option), calibrated with the treatment's own tables
    (``"tcc~<treatment>"``, :func:`lhcml.sim.large_r_calibration.tcc_variant_key`) where the table file in use
    holds them (the shipped one does not; :data:`lhcml.sim.large_r_calibration.TCC_PV_ONLY_TABLE_PATH` does), else
    with the TCC tables.
    """
    from lhcml.sim.grooming import four_momentum_sums, softdrop_mass, trim
    from lhcml.sim.jets import cluster_flat, large_r_labels_flat
    from lhcml.sim.large_r_calibration import (
        calibrate,
        calibration_table,
        table_key,
        tcc_variant_key,
    )
    from lhcml.sim.pileup_mitigation import mitigate

    inputs = _large_r_inputs(constituents, objects, particles, tracks, pv_z, rng, topo, tcc_pileup_tracks)
    n_ev = len(inputs)
    # constituent-level pileup mitigation on the neutral objects (charged ones passed the
    # primary-vertex association already): SoftKiller, or constituent subtraction + SoftKiller
    method = LARGE_R_MITIGATION[constituents] if mitigation is None else mitigation
    inputs = mitigate(inputs, method, inputs["charge"] == 0)
    jets_all, cons_off, cons = cluster_flat(inputs, LARGE_R_RADIUS, min_pt=proc.jet_pt_min * 0.5)
    cpx, cpy, cpz, ce = (inputs[k][cons] for k in ("px", "py", "pz", "E"))
    trimmed = trim(cons_off, cpx, cpy, cpz, ce, jets_all["pt"])
    groomed = four_momentum_sums(cons_off, trimmed, cpx, cpy, cpz, ce)
    key = table_key(constituents, method, LARGE_R_MITIGATION[constituents])
    if constituents == "tcc" and tcc_pileup_tracks != "remove":
        variant = tcc_variant_key(key, tcc_pileup_tracks)
        if calibration_table(variant) is not None:  # the treatment's own tables where the file has them
            key = variant
    pt_cal, m_cal = calibrate(groomed["pt"], groomed["mass"], key, mu)
    labels = large_r_labels_flat(jets_all.offsets, jets_all["eta"], jets_all["phi"], generated.flat("resonances"),
                                 LARGE_R_RADIUS, contain_dr=LARGE_R_CONTAIN_DR, partons=generated.flat("partons"))
    flat_mask = _select(FlatTable({"pt": pt_cal, "eta": groomed["eta"]}, jets_all.counts), proc)
    if proc.signal_labels is not None:
        flat_mask &= np.isin(labels["R10TruthLabel"], proc.signal_labels)
    jsel = np.flatnonzero(flat_mask)
    jet_event = jets_all.event[jsel]
    nj = len(jsel)
    jets = empty(LARGE_R_JET_DTYPE, nj)
    eta_g = groomed["eta"][jsel]
    jets["pt"] = pt_cal[jsel] * _GEV
    jets["eta"] = eta_g
    jets["phi"] = groomed["phi"][jsel]
    jets["mass"] = m_cal[jsel] * _GEV
    jets["energy"] = np.sqrt((pt_cal[jsel] * np.cosh(eta_g)) ** 2 + m_cal[jsel] ** 2) * _GEV
    jets["R10TruthLabel"] = labels["R10TruthLabel"][jsel]
    jets["truthPt"] = labels["truthPt"][jsel] * _GEV
    jets["truthMass"] = labels["truthMass"][jsel] * _GEV
    jets["PartonTruthLabelID"] = labels["PartonTruthLabelID"][jsel]
    jets["ptUngroomed"] = jets_all["pt"][jsel] * _GEV
    jets["massUngroomed"] = jets_all["mass"][jsel] * _GEV
    # soft drop only on the selected jets (the C/A reclustering is the costly part)
    ncons = np.diff(cons_off)
    sel_off = offsets_of(ncons[jsel])
    src = np.repeat(cons_off[:-1][jsel], ncons[jsel]) + (np.arange(int(sel_off[-1])) - np.repeat(sel_off[:-1], ncons[jsel]))
    jets["massSoftDrop"] = softdrop_mass(sel_off, cpx[src], cpy[src], cpz[src], ce[src], r0=LARGE_R_RADIUS) * _GEV
    tpt, tm = _large_r_truth_jets(generated, n_ev, jet_event, eta_g, jets["phi"], proc.jet_pt_min * 0.3)
    jets["truthJetPt"] = np.where(tpt > 0, tpt * _GEV, -1.0)
    jets["truthJetMass"] = np.where(tpt > 0, tm * _GEV, -1.0)
    # the flow holds the groomed jet's constituents
    jet_of_cons = np.repeat(np.arange(len(ncons)), ncons)
    g_off = offsets_of(np.bincount(jet_of_cons[trimmed], minlength=len(ncons)))
    flow, n_g = _constituent_flow(inputs, g_off, cons[trimmed], flat_mask, jets["eta"], jets["phi"], N_FLOW)
    jets["n_constituents"] = np.minimum(n_g, np.iinfo(np.int16).max)
    return {"jets": jets, "flow": flow, "_event": jet_event}


#: jet-input choices of large-R jets (``simulate --constituents``)
CONSTITUENT_TYPES = ("pflow", "clusters", "tcc")
#: constituent-level pileup mitigation of the neutral large-R jet inputs per constituent type
#: (:data:`lhcml.sim.pileup_mitigation.METHODS`): SoftKiller alone for all three. Constituent
#: subtraction + SoftKiller (ATLAS's CSSK, ``"cssk"``) was measured on topo-clusters and not
#: adopted: it lowers the μ-rise of the cluster W-jet τ32 by only ~1/5, and changes nothing
#: measurable on TCCs (``docs/benchmarks/sim_large_r.md``, seventh version)
LARGE_R_MITIGATION = {"pflow": "sk", "clusters": "sk", "tcc": "sk"}
#: large-R truth-jet match: ΔR < 0.75 R (ATLAS uses 0.75 for R = 1.0 jets)
LARGE_R_TRUTH_MATCH_DR = 0.75 * LARGE_R_RADIUS
_INVISIBLE = (12, 13, 14, 16)  # neutrinos and muons are not in truth jets


def _large_r_inputs(constituents, objects, particles, tracks, pv_z, rng, topo=None,
                    tcc_pileup_tracks: str = "remove") -> FlatTable:
    if constituents not in CONSTITUENT_TYPES:
        raise ConfigError(f"unknown constituents '{constituents}'; valid: {', '.join(CONSTITUENT_TYPES)}")
    if constituents == "pflow":
        return objects
    if particles is None or pv_z is None or rng is None or (constituents == "tcc" and tracks is None):
        raise ConfigError(f"constituents '{constituents}' need the particles, tracks, vertex and rng of the batch")
    from lhcml.sim.tcc import build_tcc, cluster_objects

    clusters = calo_clusters(particles, pv_z, rng, topo)
    if constituents == "clusters":
        return cluster_objects(clusters)
    # the topo-cluster positions include the bending of charged particles in the field
    return build_tcc(clusters, tracks, pv_z, bend=True, pileup_tracks=tcc_pileup_tracks)


def calo_clusters(
    particles: FlatTable, pv_z: np.ndarray, rng: np.random.Generator, topo: Any = None, mu: float | None = None,
    n_pileup: np.ndarray | None = None,
) -> FlatTable:
    """Calibrated (LCW) topo-clusters of every event: ``pt, eta, phi, E, mass, em_fraction`` (GeV).

    ``topo``: the batch's :class:`lhcml.sim.topoclusters.TopoClusters` when already simulated
    (for particle flow); otherwise the jet calorimeter and topo-clustering are run here.
    """
    from lhcml.sim.topoclusters import calibrated_clusters, simulate_topo_clusters

    if topo is None:
        topo = simulate_topo_clusters(particles, pv_z, rng, mu, n_pileup)
    return calibrated_clusters(topo)


def _large_r_truth_jets(generated, n_ev: int, jet_event, jet_eta, jet_phi, min_pt: float):
    """pT and mass (GeV) of the trimmed truth jet matched to each reco jet (0, 0 if none)."""
    from lhcml.sim.grooming import four_momentum_sums, trim
    from lhcml.sim.jets import cluster_flat, nearest_within_dr

    table = generated.flat("particles")
    vis = table["final"] & ~np.isin(np.abs(table["pid"]), _INVISIBLE)
    t = table.select(vis)
    truth = FlatTable({"px": t["px"], "py": t["py"], "pz": t["pz"], "E": t["e"]}, t.counts)
    tj, toff, tcons = cluster_flat(truth, LARGE_R_RADIUS, min_pt=min_pt)
    tpx, tpy, tpz, te = (truth[k][tcons] for k in ("px", "py", "pz", "E"))
    g = four_momentum_sums(toff, trim(toff, tpx, tpy, tpz, te, tj["pt"]), tpx, tpy, tpz, te)
    reco_off = offsets_of(np.bincount(jet_event, minlength=n_ev))
    match = nearest_within_dr(reco_off, np.asarray(jet_eta, np.float64), np.asarray(jet_phi, np.float64),
                              tj.offsets, g["eta"], g["phi"], LARGE_R_TRUTH_MATCH_DR)
    ok = match >= 0
    pt = np.where(ok, g["pt"][np.maximum(match, 0)] if len(g["pt"]) else 0.0, 0.0)
    m = np.where(ok, g["mass"][np.maximum(match, 0)] if len(g["pt"]) else 0.0, 0.0)
    return pt, m


def _constituent_flow(
    objects: FlatTable,
    cons_off: np.ndarray,
    cons: np.ndarray,
    flat_mask: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    n_slots: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``FLOW_DTYPE (n_selected, n_slots)`` constituents of the jets ``flat_mask`` selects.

    ``cons_off``/``cons`` come from :func:`~lhcml.sim.jets.cluster_flat`; constituents are sorted by
    decreasing pT (stable: fastjet order among ties) and the first ``n_slots`` kept. Returns the
    flow array and the number of constituents of each selected jet (before the slot cap).
    """
    nj = int(np.count_nonzero(flat_mask))
    ncons_all = np.diff(cons_off)
    jsel = np.flatnonzero(flat_mask)
    ncons = ncons_all[jsel]
    coff = offsets_of(ncons)
    src = np.arange(int(coff[-1]), dtype=np.int64) + np.repeat(cons_off[jsel] - coff[:-1], ncons)
    crow = cons[src]
    row = np.repeat(np.arange(nj), ncons)
    order = np.lexsort((-objects["pt"][crow], row))
    crow = crow[order]
    flow = empty(FLOW_DTYPE, (nj, n_slots))
    if nj:
        slot = np.arange(len(crow)) - coff[row]
        keep = slot < n_slots
        row, slot = row[keep], slot[keep]
        crow = crow[keep]

        def col(name: str) -> np.ndarray:
            return objects[name][crow]

        eta, phi = col("eta"), col("phi")
        kind = col("kind")
        jet_eta = np.asarray(jet_eta, dtype=np.float64)
        jet_phi = np.asarray(jet_phi, dtype=np.float64)
        flow["pt"][row, slot] = col("pt") * _GEV
        flow["eta"][row, slot] = eta
        flow["phi"][row, slot] = phi
        flow["energy"][row, slot] = col("E") * _GEV
        flow["deta"][row, slot] = eta - jet_eta[row]
        flow["dphi"][row, slot] = (phi - jet_phi[row] + np.pi) % (2 * np.pi) - np.pi
        flow["charge"][row, slot] = col("charge")
        flow["isPhoton"][row, slot] = kind == 0
        flow["isNeutralHadron"][row, slot] = kind == 1
        flow["isChargedHadron"][row, slot] = kind == 2
        flow["isElectron"][row, slot] = kind == 3
        flow["isMuon"][row, slot] = kind == 4
        for name in ("d0", "z0SinTheta", "d0Uncertainty", "z0SinThetaUncertainty"):
            flow[name][row, slot] = col(name)
        flow["valid"][row, slot] = True
    return flow, ncons
