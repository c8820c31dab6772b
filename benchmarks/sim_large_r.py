"""Groomed large-R jets in pileup: mass peaks, resolutions, τ32 stability, constituent types.

Runs the full simulation chain (:func:`lhcml.sim.events.simulate_events`: Pythia, minimum-bias
pileup, tracker, particle flow / clusters / TCCs, SoftKiller or CSSK, anti-kt 0.8, trimming, JES/JMS)
and prints

1. per process (``top``: m_t = 172.5 GeV; ``wz``: W 80.4, Z 91.2 GeV), μ and constituent type
   (``--constituents pflow clusters tcc``: all from the same events): the **mass peak = the most
   probable value** of the groomed calibrated mass (KDE mode with a bootstrap error, :func:`_mode`;
   the project's reading of the issue's "mass peak", goal within 3 GeV of the particle mass), beside
   it the mean and width of a Gaussian fitted to the ±2σ core (iterated; lower than the mode for
   tops: the low-side shoulder of semileptonic b decays), the same for the ungroomed and soft-drop
   masses, the mass resolution as ATLAS defines it (IQnR: ½·IQR68 / median of
   ``m / m_truth-jet``; goal 8–12 %), the response's core width, the mass distribution's ½·IQR68 /
   median, and the median τ32 of the (groomed) flow constituents — for the labelled
   jets (``R10TruthLabel``) and for ATLAS's contained definition (R10TruthLabel_R21Consolidated:
   truth-jet mass > 140 GeV for tops, 50–100 GeV for W, 60–110 GeV for Z; ``--json`` rows carry
   ``definition``);
2. per constituent type (pflow, clusters, TCC) on ``top_wide`` and ``wz_wide`` at one μ: the
   jet mass resolution (½·IQR68 / median of ``m / m_truth-jet``) in bins of truth-jet pT.

``--derive`` instead simulates uncalibrated ``top_wide`` + ``wz_wide`` + ``qcd_wide`` samples at
``--mu`` per constituent type (``--types``) and merges their JES/JMS tables into
``src/lhcml/sim/large_r_calibration.yaml``
(:func:`lhcml.sim.large_r_calibration.derive_calibration`).

Usage::

    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --derive --events 500 --mu 60
    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --derive --events 500 --mu 0 --types pflow
    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --events 2000 --mus 0 60 140
    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --compare --events 1000 --mu 60
    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --events 2000 --mus 0 60 140 --processes top --containment 0.75
    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --events 2000 --mus 0 60 140 --constituents pflow clusters tcc
    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --derive --events 2000 --mu 140 --types pflow clusters tcc --save DIR

``--paired-mitigation clusters``: the median τ32 of W/Z jets at each ``--mus`` with SoftKiller and
with constituent subtraction + SoftKiller (CSSK) built from the same events, with event-bootstrap
errors of the μ differences (:func:`paired_mitigation`)::

    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --paired-mitigation clusters --events 1500 --mus 0 60 140 --seed 6161

``--jet-geometry em_samplings``: every mode on the jet calorimeter with the EM part in strips / middle /
back samplings (:func:`lhcml.sim.jet_calo.jet_geometry`; the shipped tables are derived on the default
``one_em_layer``, so derive new ones with ``--derive --table NEW.yaml`` first)::

    nice -n 10 .venv/bin/python benchmarks/sim_large_r.py --jet-geometry em_samplings --derive --events 2000 --mu 0 --table NEW.yaml

``--truth-peaks``: the truth-jet top mass peak alone (Pythia, no detector) for R = 0.8, 1.0,
1.2, with and without ν/μ, trimmed and ungroomed, the quarks within R or 0.75 R.
``--containment 0.75``: only tops whose three decay quarks lie within ΔR < 0.75 R of the jet axis
(ATLAS's contained tops) carry ``R10TruthLabel`` 1.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from lhcml.atomic import atomic_path, atomic_write_text

PARTICLE_MASS = {"top": 172.5, "W": 80.4, "Z": 91.19}
PT_BINS = (250, 400, 600, 900, 1500)
#: ATLAS's large-R truth labels (R10TruthLabel_R21Consolidated, docs/references.md §12): contained
#: top = truth jet with m > 140 GeV, W 50–100 GeV, Z 60–110 GeV; (our label code, low, high) in GeV
ATLAS_LABEL_WINDOWS = {"top": (1, 140.0, np.inf), "W": (2, 50.0, 100.0), "Z": (3, 60.0, 110.0)}


def _iqr_resolution(r: np.ndarray) -> float:
    """½ · (84th − 16th percentile) / median (the ATLAS large-R mass-resolution definition)."""
    if len(r) < 10:
        return float("nan")
    q16, q50, q84 = np.percentile(r, [16, 50, 84])
    return float(0.5 * (q84 - q16) / q50)


def _peak(m_gev: np.ndarray) -> tuple[float, float]:
    from lhcml.validation.checks import gaussian_core_fit

    mean, sigma = gaussian_core_fit(m_gev, n_sigma=2.0)
    return mean.value, sigma.value


def _mode(m_gev: np.ndarray, n_boot: int = 50, seed: int = 0) -> tuple[float, float]:
    """The most probable value (the literal peak) of a mass distribution and its bootstrap error.

    Gaussian kernel density (Silverman bandwidth of the central 90 %) evaluated on a 0.1 GeV grid
    around the median; the argmax is the mode. Unlike the ±2σ Gaussian-core mean of :func:`_peak`,
    it is not pulled by an asymmetric low-side shoulder (semileptonic b decays, out-of-cone FSR).
    """
    from scipy.stats import gaussian_kde

    m = np.asarray(m_gev, dtype=np.float64)
    m = m[np.isfinite(m)]
    if len(m) < 20:
        return float("nan"), float("nan")
    q05, q50, q95 = np.percentile(m, [5, 50, 95])
    core = m[(m > q05) & (m < q95)]
    bw = 0.9 * min(core.std(), (np.percentile(core, 75) - np.percentile(core, 25)) / 1.34) * len(core) ** -0.2
    grid = np.arange(q50 - 0.5 * (q95 - q05), q50 + 0.5 * (q95 - q05), 0.1)

    def arg(x):
        kde = gaussian_kde(x, bw_method=bw / x.std(ddof=1))
        return float(grid[np.argmax(kde(grid))])

    rng = np.random.default_rng(seed)
    boots = [arg(rng.choice(m, len(m))) for _ in range(n_boot)]
    return arg(m), (float(np.std(boots)) if boots else 0.0)


def _tau32(flow: np.ndarray) -> np.ndarray:
    from lhcml.tasks.boosted.substructure import substructure_from_flow

    return substructure_from_flow(flow)["Tau32_wta"]  # as `lhcml jets substructure`


@contextmanager
def _side_constituents(extra: tuple[str, ...], store: dict[str, list[dict]]):
    """Within this block, every large-R batch of :func:`lhcml.sim.events.simulate_events` also
    builds the jets of the ``extra`` constituent types from the *same* simulated events (the
    calorimeter, topo-clusters and tracks of the batch) and appends them (``jets``, ``flow``) to
    ``store[type]``; a type ``"pflow:PATH"`` is calibrated with the tables of the YAML file PATH
    instead of the shipped ones (to compare two tables on the same jets), a type ``"clusters+cssk"``
    is built with that pileup mitigation (:data:`lhcml.sim.pileup_mitigation.METHODS`) and calibrated
    with the tables stored under that name (none: uncalibrated), a type ``"tcc~pv_only"`` is TCC with that
    treatment of pileup tracks (:data:`lhcml.sim.tcc.TCC_PILEUP_TRACKS`; the TCC tables): one Pythia + detector pass for several constituent types, so their
    resolutions are compared on the same events. Building clusters/TCC jets from a batch draws
    no random numbers (``calibrated_clusters`` of the batch's topo-clusters, ``build_tcc``), so
    every type's jets are bit-identical to a :func:`simulate_events` run of that type alone
    (checked on 30 ``top`` events at μ = 20 for the three types). It wraps the private
    ``lhcml.sim.events._large_r``: a public several-types option of ``simulate_events`` would
    replace it."""
    import lhcml.sim.events as ev
    import lhcml.sim.large_r_calibration as cal

    orig = ev._large_r
    done = {"events": 0}  # hard events of the batches before this one (the side jets' event index)

    def both(*args, **kwargs):
        out = orig(*args, **kwargs)
        for c in extra:
            spec, _, table = c.partition(":")
            kind, _, method = spec.partition("+")
            kind, _, tcc_pu = kind.partition("~")
            a = list(args)
            a[7] = kind  # _large_r(proc, objects, generated, particles, tracks, pv_z, rng, constituents, ...)
            shipped = cal.TABLE_PATH
            cal.TABLE_PATH = Path(table) if table else shipped
            try:
                side = orig(*a, **{**kwargs, **({"mitigation": method} if method else {}),
                                   **({"tcc_pileup_tracks": tcc_pu} if tcc_pu else {})})
            finally:
                cal.TABLE_PATH = shipped
            store.setdefault(c, []).append({"jets": side["jets"], "flow": side["flow"],
                                            "event": done["events"] + np.asarray(side["_event"], np.int64)})
        done["events"] += len(args[2].weights)
        return out

    ev._large_r = both
    try:
        yield
    finally:
        ev._large_r = orig


def simulate_types(process: str, events: int, mu: float, seed: int, pileup, types: list[str]) -> dict[str, dict]:
    """``{type: {"jets", "flow"}}`` of the large-R jets of each constituent type in ``types``, all
    from one simulation of ``events`` hard events of ``process`` (see :func:`_side_constituents`)."""
    from lhcml.sim.events import CONSTITUENT_TYPES, EVENT_NUMBER_STRIDE, simulate_events
    from lhcml.sim.tcc import TCC_PILEUP_TRACKS

    for t in types:  # a TCC variant is checked before any event is simulated
        kind, _, variant = t.partition(":")[0].partition("+")[0].partition("~")
        if variant and (kind != "tcc" or variant not in TCC_PILEUP_TRACKS):
            raise SystemExit(f"error: constituent type {t!r}: '~VARIANT' is for tcc only, with VARIANT one of "
                             f"{', '.join(TCC_PILEUP_TRACKS)}")
    store: dict[str, list[dict]] = {}
    plain = types[0] in CONSTITUENT_TYPES  # else 'TYPE+METHOD' or 'TYPE:PATH': built beside the base type's jets
    base = types[0].partition(":")[0].partition("+")[0].partition("~")[0]
    with _side_constituents(tuple(types[1:] if plain else types), store):
        out = simulate_events(process, events, mu=mu, seed=seed, pileup=pileup, constituents=base)
    res = {types[0]: {"jets": out["jets"], "flow": out["flow"]}} if plain else {}
    for c in types[int(plain):]:
        res[c] = {k: np.concatenate([p[k] for p in store[c]]) for k in ("jets", "flow")}
        # simulate_events numbers the events and sets ⟨μ⟩ after the large-R step: the same for the side types
        res[c]["jets"]["eventNumber"] = np.int64(seed) * EVENT_NUMBER_STRIDE + np.concatenate([p["event"] for p in store[c]])
        res[c]["jets"]["averageInteractionsPerCrossing"] = mu
    for r in res.values():
        r["events"] = out["events"]  # the same hard events for every type: N_PV and the pile-up count per event
    return res


@contextmanager
def pt_window(lo: float, hi: float, processes: tuple[str, ...]):
    """Within this block the narrow boosted ``processes`` (``top``, ``wz``: jets of calibrated pT 550–650 GeV
    from pT-hat 500–750 GeV) select jets of ``lo`` < pT < ``hi`` GeV from pT-hat ``lo`` − 50 to ``hi`` + 100 GeV
    (the shipped windows' offsets). The registry entries are replaced and restored afterwards; the shipped
    processes are unchanged."""
    import dataclasses

    from lhcml.sim.processes import PROCESSES

    if not 0 < lo < hi:
        raise ValueError(f"pT window {lo:g}-{hi:g} GeV: need 0 < low < high")
    saved = {}
    for name in processes:
        proc = PROCESSES[name]
        keys = ("PhaseSpace:pTHatMin", "PhaseSpace:pTHatMax")
        if proc.kind != "boosted" or not all(any(x.startswith(k) for x in proc.settings) for k in keys):
            raise ValueError(f"process {name!r}: no pT-hat window to move (only the narrow boosted processes)")
        settings = tuple(f"PhaseSpace:pTHatMin = {max(lo - 50.0, 0.0):g}" if x.startswith(keys[0]) else
                         f"PhaseSpace:pTHatMax = {hi + 100.0:g}" if x.startswith(keys[1]) else x for x in proc.settings)
        saved[name] = proc
        PROCESSES[name] = dataclasses.replace(proc, settings=settings, jet_pt_min=float(lo), jet_pt_max=float(hi))
    try:
        yield
    finally:
        PROCESSES.update(saved)


def _library(mu: float, seed: int, cache: dict):
    from lhcml.sim.pileup import build_pileup_library

    if mu > 0 and "lib" not in cache:
        cache["lib"] = build_pileup_library(1000, seed)
    return cache.get("lib") if mu > 0 else None


def _core_rel_width(r: np.ndarray) -> float:
    """σ / mean of a Gaussian fitted to the ±2σ core of a response distribution."""
    if len(r) < 20:
        return float("nan")
    mean, sigma = _peak(r)
    return sigma / mean


def stability(events: int, mus: list[float], seed: int, constituents: list[str] | str,
              processes: tuple[str, ...] = ("top", "wz"), json_path: Path | None = None,
              save_jets: Path | None = None) -> list[dict]:
    """The per-(process, μ, constituent type) rows; all ``constituents`` from the same events
    (:func:`simulate_types`; an entry ``"pflow:PATH"`` is particle flow calibrated with the tables
    of PATH). ``json_path``: the rows so far are written there after every (process, μ) point.
    ``save_jets``: a folder where the per-jet quantities of every point go
    (``<process>_mu<mu>_<label>_s<seed>.npz``, :data:`POOL_FIELDS`, label :func:`_type_label`), so that
    the rows can be recomputed pooled over seeds (:func:`pooled`)."""
    types = [constituents] if isinstance(constituents, str) else list(constituents)
    rows, cache = [], {}
    for process in processes:
        for mu in mus:
            t0 = time.perf_counter()
            outs = simulate_types(process, events, mu, seed, _library(mu, seed + 1, cache), types)
            wall = time.perf_counter() - t0
            for ctype, out in outs.items():
                d = _jet_arrays(out)
                if save_jets is not None:
                    with atomic_path(save_jets / f"{process}_mu{mu:g}_{_type_label(ctype)}_s{seed}.npz",
                                     suffix=".npz") as tmp:
                        np.savez_compressed(tmp, **d)
                rows += _stability_rows(d, process, mu, ctype, events, wall)
            if json_path is not None:
                atomic_write_text(json_path, json.dumps(rows, indent=1))
    return rows


#: per-jet quantities :func:`stability` keeps with ``--save-jets`` (masses and pT in MeV, as the jets)
POOL_FIELDS = ("mass", "massUngroomed", "massSoftDrop", "truthJetMass", "R10TruthLabel", "pt", "truthJetPt", "tau32")


def _type_label(ctype: str) -> str:
    """File-name label of a constituent type: ``"pflow:DIR/t_new.yaml"`` → ``"pflow@t_new"``."""
    spec, _, table = ctype.partition(":")
    return spec + (f"@{Path(table).stem}" if table else "")


#: kept beside :data:`POOL_FIELDS` in the ``--save-jets`` files (not needed by :func:`pooled`): the jet's
#: η, trimmed constituent count, event number (for event-bootstrap errors), ⟨μ⟩, and τ21 / D2 of the
#: groomed constituents (for ATLAS's pile-up-stability metrics, docs/references.md §32)
EXTRA_FIELDS = ("eta", "n_constituents", "eventNumber", "averageInteractionsPerCrossing")


#: per-event fields copied to each jet of the event in the ``--save-jets`` files when the simulation's events
#: are at hand: the number of reconstructed primary vertices (ATLAS plots pile-up stability against N_PV)
#: and the number of pile-up interactions actually overlaid
EVENT_FIELDS = ("nPrimaryVertices", "actualInteractionsPerCrossing")


def _per_jet_event_fields(jets: np.ndarray, events: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`EVENT_FIELDS` of each jet's event (matched by ``eventNumber``; every jet's event must be there)."""
    order = np.argsort(events["eventNumber"], kind="stable")
    en = events["eventNumber"][order]
    idx = np.searchsorted(en, jets["eventNumber"])
    if len(jets) and (idx.max() >= len(en) or np.any(en[np.minimum(idx, len(en) - 1)] != jets["eventNumber"])):
        raise ValueError("a jet's eventNumber is not among the events")
    return {k: np.asarray(events[k])[order][idx] for k in EVENT_FIELDS}


def _jet_arrays(out: dict) -> dict[str, np.ndarray]:
    from lhcml.tasks.boosted.substructure import substructure_from_flow

    j = out["jets"]
    sub = substructure_from_flow(out["flow"])  # as `lhcml jets substructure` (tau32 as _tau32)
    extra = _per_jet_event_fields(j, out["events"]) if "events" in out else {}
    return {**{k: np.asarray(j[k]) for k in POOL_FIELDS + EXTRA_FIELDS if k != "tau32"}, **extra,
            "tau32": np.asarray(sub["Tau32_wta"]), "tau21": np.asarray(sub["Tau21_wta"]), "D2": np.asarray(sub["D2"])}


def pooled(files: list[Path]) -> list[dict]:
    """The rows of :func:`stability` recomputed on jets saved by ``--save-jets``, the files of the same
    (process, μ, label) from several seeds concatenated: the mode of the pooled distribution with its
    bootstrap error, core mean, IQnR, response and median τ32 of all the seeds' jets together."""
    groups: dict[tuple[str, float, str], list[Path]] = {}
    for f in files:
        parts = f.stem.split("_")
        if len(parts) < 4 or not parts[1].startswith("mu") or not parts[-1].startswith("s"):
            raise SystemExit(f"error: {f}: not a --save-jets file (<process>_mu<mu>_<label>_s<seed>.npz); "
                             "pass the files benchmarks/sim_large_r.py --save-jets wrote")
        groups.setdefault((parts[0], float(parts[1][2:]), "_".join(parts[2:-1])), []).append(f)
    rows = []
    for (process, mu, label), fs in sorted(groups.items()):
        ds = [np.load(f) for f in fs]
        d = {k: np.concatenate([x[k] for x in ds]) for k in POOL_FIELDS}
        seeds = "+".join(f.stem.split("_")[-1][1:] for f in sorted(fs))
        for r in _stability_rows(d, process, mu, label, 0, 0.0):
            rows.append({**r, "seeds": seeds})
    return rows


def _stability_rows(j: dict, process: str, mu: float, ctype: str, events: int, wall: float) -> list[dict]:
    """Rows of one (process, μ, type) point from its per-jet arrays (:data:`POOL_FIELDS`)."""
    lab, tm = j["R10TruthLabel"], j["truthJetMass"] / 1e3
    # QCD jets (qcd_boosted: the background of a tagging comparison, kept with --save-jets) have no mass-peak rows
    names = {"top": ("top",), "qcd_boosted": ()}.get(process, ("W", "Z"))
    groups = {}
    for name in names:
        groups[(name, "labelled")] = lab == ATLAS_LABEL_WINDOWS[name][0]
        # ATLAS's R10TruthLabel_R21Consolidated: the labelled jet's truth jet in a mass window
        code, lo, hi = ATLAS_LABEL_WINDOWS[name]
        groups[(name, "ATLAS")] = (lab == code) & (tm > lo) & (tm < hi)
    tau32 = j["tau32"]
    rows = []
    for (name, definition), sel in groups.items():
        m = j["mass"][sel] / 1e3
        peak, width = _peak(m)
        pu, wu = _peak(j["massUngroomed"][sel] / 1e3)
        psd, _ = _peak(j["massSoftDrop"][sel] / 1e3)
        matched = sel & (j["truthJetMass"] > 0)
        ptruth, _ = _peak(j["truthJetMass"][matched] / 1e3)
        mode, mode_err = _mode(m)
        mode_truth, _ = _mode(j["truthJetMass"][matched] / 1e3, n_boot=0) if matched.sum() >= 20 else (np.nan, 0)
        resp = j["mass"][matched] / j["truthJetMass"][matched]
        q16, q50, q84 = np.percentile(m, [16, 50, 84]) if len(m) >= 10 else (np.nan,) * 3
        rows.append({
            "particle": name, "definition": definition, "mu": mu, "constituents": ctype, "events": events,
            "jets": int(sel.sum()), "peak": peak, "shift": peak - PARTICLE_MASS[name],
            "rel_width": width / peak, "peak_ungroomed": pu, "rel_width_ungroomed": wu / pu,
            "peak_softdrop": psd, "peak_truth_jet": ptruth,
            "mode": mode, "mode_err": mode_err, "mode_shift": mode - PARTICLE_MASS[name],
            "mode_truth_jet": mode_truth,
            # detector resolution, ATLAS's definition: ½·IQR68 / median of m / m_truth-jet
            "iqr_res": _iqr_resolution(resp),
            "resp_core_width": _core_rel_width(resp),  # σ/mean of the response's Gaussian core
            "mass_half_iqr68": float(0.5 * (q84 - q16) / q50),  # of the mass distribution itself
            "response_median": float(np.median(resp)) if len(resp) else np.nan,
            "jes": float(np.median(j["pt"][matched] / j["truthJetPt"][matched])),
            "tau32_median": float(np.median(tau32[sel])), "wall_s": wall,
        })
        print(_fmt(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    """Markdown table of the stability rows. **Mass peak** = the most probable value of the groomed
    calibrated mass (:func:`_mode`, KDE mode ± bootstrap error) — the project's definition of the
    issue's "mass peak"; the ±2σ Gaussian-core mean (:func:`_peak`) beside it sits lower for tops
    (low-side shoulder of semileptonic b decays, ``docs/benchmarks/sim_large_r.md``). Resolution:
    *IQnR* = ½·(q84 − q16) / median of m / m_truth-jet (ATLAS's large-R JMR definition), the
    response's core σ/mean, and the mass distribution's own core σ/mean and ½·IQR68 / median (these
    two include the particle-level width)."""
    head = ("| particle | def. | μ | constituents | jets | **mass peak (mode)** (− m) | core mean (− m) | "
            "IQnR of m/m_truth | response core σ | mass core σ | mass ½IQR68 | median τ32 |\n"
            + "|---" * 12 + "|\n")
    body = "".join(
        f"| {r['particle']} | {r['definition']} | {r['mu']:g} | {r['constituents']} | {r['jets']} | "
        f"**{r['mode']:.1f} ± {r['mode_err']:.1f}** ({r['mode_shift']:+.1f}) | {r['peak']:.1f} ({r['shift']:+.1f}) | "
        f"{100 * r['iqr_res']:.1f} % | {100 * r['resp_core_width']:.1f} % | {100 * r['rel_width']:.1f} % | "
        f"{100 * r['mass_half_iqr68']:.1f} % | {r['tau32_median']:.3f} |\n" for r in rows)
    return head + body


def _fmt(r: dict) -> str:
    return (f"{r['particle']:>4} {r.get('definition', ''):>8} mu={r['mu']:>5.0f} {r['constituents']:>8} jets={r['jets']:>5} "
            f"peak={r['peak']:6.1f} ({r['shift']:+5.1f}) width={100 * r['rel_width']:5.1f}% "
            f"| ungroomed {r['peak_ungroomed']:6.1f} ({100 * r['rel_width_ungroomed']:4.1f}%) "
            f"| SD {r['peak_softdrop']:6.1f} | truth jet {r['peak_truth_jet']:6.1f} | IQR res {100 * r['iqr_res']:5.1f}% | JES {r['jes']:.3f} "
            f"| tau32 {r['tau32_median']:.3f} | {r['wall_s']:.0f} s"
            + (f" | mode {r['mode']:6.1f} ± {r['mode_err']:.1f} ({r['mode_shift']:+5.1f}), truth-jet mode {r['mode_truth_jet']:6.1f}"
               if "mode" in r else "")
            + (f" | response median {r['response_median']:.3f} core {100 * r['resp_core_width']:4.1f}% "
               f"| mass ½IQR68/med {100 * r['mass_half_iqr68']:4.1f}%" if "resp_core_width" in r else ""))


def truth_peaks(events: int, seed: int, pt: tuple[float, float] = (550.0, 650.0)) -> list[dict]:
    """Where the particle-level top-jet mass peak goes: truth-jet variants (no detector).

    ``top`` events (Pythia only): anti-kt R (0.8, 1.0, 1.2) on stable particles — visible (no ν/μ,
    as the truth jets of the chain and ATLAS's) or all (ν and μ added back) — trimmed (R_sub 0.2,
    f_cut 5 %) or ungroomed; jets of ``pt`` (default 550–650 GeV), |η| < 2 labelled top (top within R, its
    three decay quarks within ``contain`` · R). ``m > 140`` rows add ATLAS's top-label truth-mass
    cut (R10TruthLabel_R21Consolidated, ``docs/references.md §12``). The last row is the mass of
    the top quarks themselves (Pythia's Breit–Wigner), for the same labelled jets of R = 0.8.
    """
    from lhcml.metrics.peaks import gauss_core_peak, kde_mode
    from lhcml.sim.generator import FlatTable, PythiaGenerator
    from lhcml.sim.grooming import four_momentum_sums, trim
    from lhcml.sim.jets import cluster_flat, large_r_labels_flat
    from lhcml.sim.processes import get_process

    gen = PythiaGenerator(get_process("top"), seed).init()
    masses: dict[tuple, list[np.ndarray]] = {}
    done = 0
    variants = [(0.8, "visible", True, 1.0), (0.8, "visible", True, 0.75), (0.8, "all", True, 1.0),
                (0.8, "visible", False, 1.0), (0.8, "all", False, 1.0), (1.0, "visible", True, 1.0),
                (1.0, "visible", True, 0.75), (1.0, "all", True, 1.0), (1.0, "all", False, 1.0),
                (1.2, "all", True, 1.0), (1.2, "all", False, 1.0)]
    while done < events:
        n = min(250, events - done)
        g = gen.generate(n)
        done += n
        table = g.flat("particles")
        res = g.flat("resonances")
        inputs = {}
        for kind, sel in (("visible", table["final"] & ~np.isin(np.abs(table["pid"]), (12, 13, 14, 16))),
                          ("all", table["final"])):
            t = table.select(sel)
            inputs[kind] = FlatTable({"px": t["px"], "py": t["py"], "pz": t["pz"], "E": t["e"]}, t.counts)
        for radius, kind, trimmed, contain in variants:
            truth = inputs[kind]
            tj, toff, tcons = cluster_flat(truth, radius, min_pt=min(200.0, 0.5 * pt[0]))
            px, py, pz, e = (truth[k][tcons] for k in ("px", "py", "pz", "E"))
            keep = trim(toff, px, py, pz, e, tj["pt"]) if trimmed else None
            gr = four_momentum_sums(toff, keep, px, py, pz, e)
            lab = large_r_labels_flat(tj.offsets, tj["eta"], tj["phi"], res, radius,
                                      contain_dr=contain * radius)
            m = (lab["R10TruthLabel"] == 1) & (gr["pt"] > pt[0]) & (gr["pt"] < pt[1]) & (np.abs(gr["eta"]) < 2)
            masses.setdefault((radius, kind, trimmed, contain, False), []).append(gr["mass"][m])
            if trimmed and kind == "visible":
                masses.setdefault((radius, kind, trimmed, contain, True), []).append(gr["mass"][m & (gr["mass"] > 140)])
            if (radius, kind, trimmed, contain) == (0.8, "visible", True, 1.0):
                masses.setdefault("top quark", []).append(lab["truthMass"][m])
    rows = []
    for key, parts in masses.items():
        m = np.concatenate(parts)
        peak, width = _peak(m)
        name = key if isinstance(key, str) else (
            f"R={key[0]} {key[1]} {'trimmed' if key[2] else 'ungroomed'} quarks<{key[3]:.2f}R"
            + (" m>140" if key[4] else ""))
        mode, core15 = kde_mode(m), gauss_core_peak(m, n_sigma=1.5)
        rows.append({"variant": name, "jets": len(m), "peak": peak, "rel_width": width / peak,
                     "median": float(np.median(m)), "mean": float(np.mean(m)), "mode": mode, "core15": core15})
        print(f"{name:<48} jets={len(m):>5} peak={peak:6.1f} ({peak - PARTICLE_MASS['top']:+5.1f}) "
              f"width={100 * width / peak:4.1f}% median={np.median(m):6.1f} mean={np.mean(m):6.1f} "
              f"mode={mode:6.1f} ({mode - PARTICLE_MASS['top']:+5.1f}) core1.5={core15:6.1f} "
              f"({core15 - PARTICLE_MASS['top']:+5.1f})", flush=True)
    return rows


def compare(events: int, mu: float, seed: int) -> list[dict]:
    rows, cache = [], {}
    types = ["pflow", "clusters", "tcc"]
    outs = [simulate_types(process, events, mu, seed, _library(mu, seed + 1, cache), types)
            for process in ("top_wide", "wz_wide")]
    for constituents in types:
        j = np.concatenate([o[constituents]["jets"] for o in outs])
        ok = j["truthJetMass"] > 40e3
        r = j["mass"][ok] / j["truthJetMass"][ok]
        tpt = j["truthJetPt"][ok] / 1e3
        for lo, hi in zip(PT_BINS[:-1], PT_BINS[1:], strict=True):
            s = (tpt >= lo) & (tpt < hi)
            rows.append({"constituents": constituents, "mu": mu, "pt_lo": lo, "pt_hi": hi, "jets": int(s.sum()),
                         "iqr_res": _iqr_resolution(r[s]), "response": float(np.median(r[s])) if s.any() else np.nan})
            x = rows[-1]
            print(f"{constituents:>8} mu={mu:.0f} pT {lo:>4}-{hi:<4} jets={x['jets']:>5} "
                  f"mass response {x['response']:.3f} resolution {100 * x['iqr_res']:5.1f}%", flush=True)
    return rows


def saved_resolution(files: list[Path]) -> list[dict]:
    """Mass resolution vs truth pT from the uncalibrated jets ``--derive --save`` kept
    (``top_wide`` + ``wz_wide`` + ``qcd_wide``; no new simulation): the shipped JES/JMS of the
    file's constituent type and μ applied, jets with a trimmed truth jet of mass > 40 GeV as in
    ``--compare``, for labelled tops, labelled W/Z and all jets; IQnR (½·IQR68 / median of m / m_truth-jet) and median response per truth-pT bin.
    The tables were derived on these jets, so the responses close by construction; the IQnR does
    not depend on the calibration's scale."""
    from lhcml.sim.large_r_calibration import calibrate

    rows = []
    for f in files:
        ctype, mu_s = f.stem.split("_")[1], f.stem.split("_")[2]
        mu = float(mu_s[2:])
        d = np.load(f)
        _, m = calibrate(d["pt"] / 1e3, d["mass"] / 1e3, ctype, mu)
        lab = d["R10TruthLabel"]
        for cls, csel in (("top", lab == 1), ("W/Z", np.isin(lab, (2, 3))), ("all", np.ones(len(m), bool))):
            ok = csel & (d["truthJetMass"] > 40e3) & (m > 0)
            r = m[ok] / (d["truthJetMass"][ok] / 1e3)
            tpt = d["truthJetPt"][ok] / 1e3
            for lo, hi in zip(PT_BINS[:-1], PT_BINS[1:], strict=True):
                s = (tpt >= lo) & (tpt < hi)
                rows.append({"constituents": ctype, "mu": mu, "jets_of": cls, "pt_lo": lo, "pt_hi": hi,
                             "jets": int(s.sum()), "iqr_res": _iqr_resolution(r[s]),
                             "response": float(np.median(r[s])) if s.any() else np.nan, "file": f.name})
                x = rows[-1]
                print(f"{ctype:>8} mu={mu:>3.0f} {cls:>4} pT {lo:>4}-{hi:<4} jets={x['jets']:>5} "
                      f"mass response {x['response']:.3f} IQnR {100 * x['iqr_res']:5.1f}%", flush=True)
    return rows


#: the pileup-mitigation variants of ``--paired-mitigation``: (label, method, ΔR_max of the CS)
PAIRED_VARIANTS = (("SoftKiller", "sk", None), ("CSSK", "cssk", None))


def paired_mitigation(events: int, mus: list[float], seed: int, constituents: str, extra_dr: list[float] = (),
                      n_boot: int = 400) -> list[dict]:
    """Median τ32 of W/Z jets (ATLAS definition) vs μ with each pileup mitigation, all on the *same* events.

    One ``wz`` simulation per μ; in every batch the jets of ``constituents`` are built once per
    variant (:data:`PAIRED_VARIANTS`, plus CSSK with each ΔR_max of ``extra_dr``) from the same
    calorimeter clusters. Every variant is calibrated with the *shipped* tables of the type's
    default mitigation (the ``550–650`` GeV selection is on them, so for a variant with another
    pT response it is approximate: stated beside the numbers). The μ = 0 → μ differences of the
    median and the variant − SoftKiller difference of those carry event-bootstrap errors
    (``n_boot`` resamplings of the hard events, every μ and variant resampled with the same
    events: the hard events are the same at every μ with one seed).
    """
    import lhcml.sim.events as ev
    import lhcml.sim.large_r_calibration as cal
    import lhcml.sim.pileup_mitigation as pm
    from lhcml.sim.events import simulate_events

    variants = list(PAIRED_VARIANTS) + [(f"CSSK ΔR_max {d:g}", "cssk", d) for d in extra_dr]
    orig, orig_key, dr0 = ev._large_r, cal.table_key, pm.CS_DR_MAX
    store: dict = {}
    batch = [0]

    def each(*args, **kwargs):
        first = batch[0] * ev.DEFAULT_BATCH
        batch[0] += 1
        out = None
        for label, method, dr in variants:
            pm.CS_DR_MAX = dr0 if dr is None else dr
            try:
                o = orig(*args, **{**kwargs, "mitigation": method})
            finally:
                pm.CS_DR_MAX = dr0
            store.setdefault(label, []).append((o["jets"], o["flow"], o["_event"] + first))
            out = o if out is None else out
        return out

    per: dict = {}
    cache: dict = {}
    ev._large_r = each
    cal.table_key = lambda c, m, d: c  # every variant on the default mitigation's tables
    try:
        for mu in mus:
            store.clear()
            batch[0] = 0
            t0 = time.perf_counter()
            simulate_events("wz", events, mu=mu, seed=seed, pileup=_library(mu, seed + 1, cache), constituents=constituents)
            print(f"mu {mu:g}: {time.perf_counter() - t0:.0f} s", flush=True)
            for label, parts in store.items():
                j = np.concatenate([p[0] for p in parts])
                per[(label, mu)] = {"tau": _tau32(np.concatenate([p[1] for p in parts])), "event": np.concatenate([p[2] for p in parts]),
                                    "lab": j["R10TruthLabel"], "tm": j["truthJetMass"] / 1e3, "nc": j["n_constituents"]}
    finally:
        ev._large_r, cal.table_key = orig, orig_key
    rng = np.random.default_rng(seed)
    boots = [np.bincount(rng.integers(0, events, events), minlength=events) for _ in range(n_boot)]
    rows = []
    for name in ("W", "Z"):
        code, lo, hi = ATLAS_LABEL_WINDOWS[name]
        med = {}
        for key, d in per.items():
            sel = (d["lab"] == code) & (d["tm"] > lo) & (d["tm"] < hi)
            tau, evt = d["tau"][sel], d["event"][sel]
            med[key] = (float(np.median(tau)), np.array([np.median(np.repeat(tau, w[evt])) for w in boots]),
                        int(sel.sum()), float(np.mean(d["nc"][sel])))
        for label, *_ in variants:
            for mu in mus:
                m, b, n, nc = med[(label, mu)]
                m0, b0 = med[(label, mus[0])][:2]
                ms, bs = med[(variants[0][0], mu)][:2]
                ms0, bs0 = med[(variants[0][0], mus[0])][:2]
                rows.append({"particle": name, "variant": label, "constituents": constituents, "mu": mu, "events": events,
                             "seed": seed, "jets": n, "tau32_median": m, "tau32_err": float(np.nanstd(b)),
                             "ncons_mean": nc, "rise": m - m0, "rise_err": float(np.nanstd(b - b0)),
                             "rise_vs_sk": (m - m0) - (ms - ms0), "rise_vs_sk_err": float(np.nanstd((b - b0) - (bs - bs0)))})
    print(paired_summary(rows))
    return rows


def paired_summary(rows: list[dict]) -> str:
    """Markdown table of :func:`paired_mitigation`'s rows."""
    head = ("| particle | mitigation | μ | jets | median τ32 | trimmed constituents (mean) | rise from μ0 | "
            "rise − SoftKiller's |\n" + "|---" * 8 + "|\n")
    return head + "".join(
        f"| {r['particle']} | {r['variant']} | {r['mu']:g} | {r['jets']} | {r['tau32_median']:.3f} ± {r['tau32_err']:.3f} | "
        f"{r['ncons_mean']:.2f} | {r['rise']:+.3f} ± {r['rise_err']:.3f} | {r['rise_vs_sk']:+.3f} ± {r['rise_vs_sk_err']:.3f} |\n"
        for r in rows)


#: fields of the uncalibrated jets ``--derive --save`` keeps (to re-derive or pool tables without simulating)
SAVED_FIELDS = ("pt", "mass", "truthJetPt", "truthJetMass", "R10TruthLabel", "eta")


def derive(events: int, mu: float, seed: int, out_path: Path, types: list[str], save: Path | None = None,
           pool: list[Path] = (), estimator: str | None = None, jms_sample: str = "all", jms_pt: str = "truth",
           jms_target: str = "truth", jms_x_bins: list[float] | None = None) -> dict:
    """Derive the tables of ``types`` at ``mu`` and merge them into ``out_path``.

    All types from one simulation per process (:func:`simulate_types`). ``save``: a folder where
    the uncalibrated jets go (``jets_<type>_mu<mu>_s<seed>.npz``); ``pool``: such files of earlier
    (independent) samples whose jets are added to this one's before the derivation. ``estimator``:
    the average-response estimator (:data:`lhcml.sim.large_r_calibration.RESPONSE_ESTIMATORS`;
    default the module's). ``jms_sample`` / ``jms_pt``: which jets fill the JMS cells and their pT variable;
    ``jms_target``: ``"peak"`` adds the in-situ-like residual (:func:`lhcml.sim.large_r_calibration.derive_calibration`);
    ``jms_x_bins``: the JMS cells' truth-m/pT row edges (default the module's).
    """
    from lhcml.sim.large_r_calibration import uncalibrated

    cache: dict = {}
    jets: dict[str, list[np.ndarray]] = {c: [] for c in types}
    with uncalibrated():
        for process in ("top_wide", "wz_wide", "qcd_wide"):
            out = simulate_types(process, events, mu, seed, _library(mu, seed + 1, cache), types)
            for c in types:
                jets[c].append(out[c]["jets"])
    entries = {}
    for constituents in types:
        j = {k: np.concatenate([x[k] for x in jets[constituents]]) for k in SAVED_FIELDS}
        if save is not None:
            with atomic_path(save / f"jets_{constituents}_mu{mu:g}_s{seed}.npz", suffix=".npz") as tmp:
                np.savez_compressed(tmp, **j)
        entries[(constituents, mu)] = [j]
    note = f"--derive --events {events} --seed {seed}"
    return _derive_merge(entries, pool, out_path, note, estimator, jms_sample, jms_pt, jms_target, jms_x_bins)


def derive_saved(files: list[Path], out_path: Path, estimator: str | None = None, jms_sample: str = "all",
                 jms_pt: str = "truth", jms_target: str = "truth", jms_x_bins: list[float] | None = None) -> dict:
    """Derive tables from uncalibrated jets saved by ``--derive --save`` only (no simulation): the files of
    one (type, μ) (``jets_<type>_mu<mu>_s<seed>.npz``) are pooled, each (type, μ) table is merged into
    ``out_path``."""
    entries = _saved_derivation_jets(files)
    return _derive_merge(entries, (), out_path, "--derive-from " + " ".join(f.name for f in files), estimator,
                         jms_sample, jms_pt, jms_target, jms_x_bins)


def _saved_derivation_jets(files: list[Path]) -> dict[tuple[str, float], list[dict]]:
    """``{(type, μ): [jets of each file]}`` of ``--derive --save`` files (``jets_<type>_mu<mu>_s<seed>.npz``)."""
    entries: dict[tuple[str, float], list] = {}
    for f in files:
        parts = f.stem.split("_")  # the type may hold '_' (tcc~pv_only): mu and seed are the last two parts
        if len(parts) < 4 or parts[0] != "jets" or not parts[-2].startswith("mu") or not parts[-1].startswith("s"):
            raise SystemExit(f"error: {f}: not a --derive --save file (jets_<type>_mu<mu>_s<seed>.npz)")
        d = np.load(f)
        entries.setdefault(("_".join(parts[1:-2]), float(parts[-2][2:])), []).append({k: d[k] for k in SAVED_FIELDS})
        print(f"{f}: {len(d['pt'])} jets", flush=True)
    return entries


def derive_insitu_saved(files: list[Path], out_path: Path, base: Path) -> dict:
    """Add the in-situ-like residual (:func:`lhcml.sim.large_r_calibration.derive_insitu`) to the tables of
    ``base`` (JES and JMS kept as they are): the uncalibrated jets of ``--derive --save`` files
    (``jets_<type>_mu<mu>_s<seed>.npz``) are calibrated with ``base``'s table of their type and μ — or the jets of
    ``--save-jets`` files (``<process>_mu<mu>_<type>_s<seed>.npz``, e.g. the benchmark's narrow 550–650 GeV
    samples) are taken as they are, calibrated already (by ``base``: the shipped table unless they were made
    otherwise) —, the residual is fitted on their W and top jets (|η| < 2), and ``base`` with the residual of each
    (type, μ) is written to ``out_path``. Prints, on the same jets (in sample), the W / Z / top peaks (±1.5 σ
    core) at calibrated pT 500–700 GeV and the QCD mass closure at truth pT 500–700 GeV (label 0, truth mass
    50–250 GeV: what the residual does to QCD jets; derivation files only), before and after."""
    import yaml

    from lhcml.estimators import gauss_core_peak
    from lhcml.sim.large_r_calibration import (
        calibrate,
        calibration_table,
        derive_insitu,
        insitu_factors,
    )

    table = yaml.safe_load(base.read_text()) or {}
    derivation = [f for f in files if f.stem.startswith("jets_")]
    groups = {k: (v, False) for k, v in _saved_derivation_jets(derivation).items()}
    for f in files:
        if f in derivation:
            continue
        parts = f.stem.split("_")
        if len(parts) < 4 or not parts[1].startswith("mu") or not parts[-1].startswith("s"):
            raise SystemExit(f"error: {f}: neither a --derive --save file (jets_<type>_mu<mu>_s<seed>.npz) nor a "
                             "--save-jets file (<process>_mu<mu>_<type>_s<seed>.npz)")
        d = np.load(f)
        groups.setdefault(("_".join(parts[2:-1]), float(parts[1][2:])), ([], True))[0].append(
            {k: d[k] for k in SAVED_FIELDS})
        print(f"{f}: {len(d['pt'])} calibrated jets", flush=True)
    if any(cal for _, cal in groups.values()) and not all(cal for _, cal in groups.values()):
        raise SystemExit("error: --derive-insitu: give either --derive --save files or --save-jets files, not both")
    print("| type | μ | W peak − 80.4: JMS / +residual | Z − 91.19 | top − 172.5 | QCD closure: JMS / +residual | "
          "residual W; top (per pT point) |\n|---|---|---|---|---|---|---|")
    for (ctype, mu), (parts, calibrated) in sorted(groups.items()):
        t = calibration_table(ctype, base)
        key = int(mu) if float(mu).is_integer() else float(mu)
        if t is None or float(mu) not in t:
            raise SystemExit(f"error: {base} has no table for {ctype} at mu {mu:g}")
        j = {k: np.concatenate([x[k] for x in parts]) for k in SAVED_FIELDS}
        central = np.abs(j["eta"]) < 2
        j = {k: v[central] for k, v in j.items()}
        pt, m = j["pt"] / 1e3, j["mass"] / 1e3
        if not calibrated:
            pt, m = calibrate(pt, m, ctype, mu, table=t)
        lab, tm, tpt = j["R10TruthLabel"], j["truthJetMass"] / 1e3, j["truthJetPt"] / 1e3
        res = derive_insitu(pt, m, lab, tm)
        m_r = m * insitu_factors(pt, m, {k: np.asarray(v, dtype=np.float64) for k, v in res.items()})
        cells = []
        for name in ("W", "Z", "top"):
            code, lo, hi = ATLAS_LABEL_WINDOWS[name]
            s = (lab == code) & (tm > lo) & (tm < hi) & (pt > 500) & (pt < 700)
            cells.append(" / ".join(f"{gauss_core_peak(x[s], n_sigma=1.5) - PARTICLE_MASS[name]:+.1f}" for x in (m, m_r)))
        q = (lab == 0) & (tm > 50) & (tm < 250) & (tpt > 500) & (tpt < 700) & (m > 0)
        rng = np.random.default_rng(0)  # jet-bootstrap error of the closure (the files carry no event numbers)
        boot = [gauss_core_peak(m[q][i] / tm[q][i], n_sigma=1.5) for i in
                (rng.integers(0, q.sum(), q.sum()) for _ in range(20))] if q.sum() >= 20 else [np.nan]
        cells.append("— (no QCD jets)" if q.sum() < 20 else
                     " / ".join(f"{gauss_core_peak(x[q] / tm[q], n_sigma=1.5):.3f}" for x in (m, m_r))
                     + f" ± {np.std(boot):.3f} (median factor {np.median(m_r[q] / m[q]):.3f}, {int(q.sum())} jets)")
        rows = np.asarray(res["insitu_row"])
        cells.append("; ".join(" ".join(f"{v:.3f}" for v in np.asarray(res["insitu"])[rows == i]) for i in (0, 1)))
        print(f"| {ctype} | {mu:g} | " + " | ".join(cells) + " |", flush=True)
        table[ctype][key].update(res)
    note = (f"# in-situ-like residual (W/top peaks on 80.4/172.5 GeV) added to the tables of {base.name}: "
            f"--derive-insitu {' '.join(f.name for f in files)} ({time.strftime('%Y-%m-%d')})")
    _write_table(out_path, table, base, note)
    return table


def _write_table(out_path: Path, table: dict, header_from: Path, note: str) -> None:
    """``table`` as YAML in ``out_path``, below the ``#`` comment lines of ``header_from`` (if it exists; else
    the module's default header) and ``note``."""
    import yaml

    kept = [ln for ln in header_from.read_text().splitlines() if ln.startswith("#")] if header_from.exists() else [
        "# Large-R JES/JMS numerical-inversion tables (lhcml.sim.large_r_calibration), per constituent type",
        "# and <mu>: benchmarks/sim_large_r.py --derive (top_wide + wz_wide + qcd_wide, uncalibrated trimmed",
        "# jets vs trimmed truth jets)."]
    atomic_write_text(out_path, "\n".join([*kept, note]) + "\n"
                      + yaml.safe_dump(table, sort_keys=False, default_flow_style=None, width=110))


def _derive_merge(entries: dict, pool, out_path: Path, note: str, estimator: str | None, jms_sample: str = "all",
                  jms_pt: str = "truth", jms_target: str = "truth", jms_x_bins: list[float] | None = None) -> dict:
    import yaml

    from lhcml.sim.large_r_calibration import RESPONSE_ESTIMATOR, derive_calibration

    estimator = estimator or RESPONSE_ESTIMATOR
    table = (yaml.safe_load(out_path.read_text()) or {}) if out_path.exists() else {}
    for (constituents, mu), parts in entries.items():
        j = {k: np.concatenate([x[k] for x in parts]) for k in SAVED_FIELDS}
        for f in pool:
            if f.name.startswith(f"jets_{constituents}_mu{mu:g}_"):
                old = np.load(f)
                j = {k: np.concatenate([j[k], old[k]]) for k in SAVED_FIELDS}
                print(f"pooled {f} ({len(old['pt'])} jets)", flush=True)
        entry = derive_calibration(j["pt"] / 1e3, j["mass"] / 1e3, j["truthJetPt"] / 1e3, j["truthJetMass"] / 1e3,
                                   estimator=estimator, labels=j["R10TruthLabel"], jms_sample=jms_sample,
                                   jms_pt=jms_pt, jms_target=jms_target, jms_x_bins=jms_x_bins)
        table.setdefault(constituents, {})[int(mu) if float(mu).is_integer() else float(mu)] = entry
        table[constituents] = dict(sorted(table[constituents].items()))
        print(constituents, mu, json.dumps(entry), flush=True)
    # keep the file's provenance comments, add this derivation's
    done = sorted({c for c, _ in entries}), sorted({m for _, m in entries})
    _write_table(out_path, table, out_path,
                 f"# {', '.join(done[0])} (mu {', '.join(f'{m:g}' for m in done[1])}): {note}"
                 + (f" + pooled {', '.join(f.name for f in pool)}" if pool else "")
                 + f", response estimator {estimator}"
                 + (f", JMS sample {jms_sample}, JMS pT {jms_pt}" if (jms_sample, jms_pt) != ("all", "truth") else "")
                 + (", JMS target peak (in-situ-like residual)" if jms_target == "peak" else "")
                 + (f", JMS m/pT rows {' '.join(f'{x:g}' for x in jms_x_bins)}" if jms_x_bins is not None else "")
                 + f" ({time.strftime('%Y-%m-%d')})")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1000, help="hard events per point")
    ap.add_argument("--mus", type=float, nargs="+", default=[0.0, 60.0, 140.0])
    ap.add_argument("--mu", type=float, default=60.0, help="mu of --compare / --derive")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--constituents", nargs="+", default=["pflow"],
                    help="constituent types of the stability table, all from the same events (pflow, clusters, "
                         "tcc; 'pflow:PATH' = particle flow calibrated with the tables of the YAML file PATH; "
                         "'clusters+cssk' / 'clusters+sk' = clusters with that pileup mitigation; 'tcc~pv_only' / "
                         "'tcc~share_return' / 'tcc~share_subtract' = TCC with that treatment of pileup tracks, lhcml.sim.tcc, "
                         "calibrated with the TCC tables, or with its own ('tcc~pv_only' entry) from a table file: "
                         "'tcc~pv_only:src/lhcml/sim/large_r_calibration_tcc_pv_only.yaml')")
    ap.add_argument("--radius", type=float, default=None,
                    help="large-R jet radius (default: lhcml's 0.8; ATLAS's jets are R = 1.0). The shipped JES/JMS "
                         "tables are R = 0.8 ones, so the mass scale is only approximate; the resolution (IQnR) is not "
                         "affected by a common scale")
    ap.add_argument("--compare", action="store_true", help="mass resolution vs pT per constituent type")
    ap.add_argument("--derive", action="store_true", help="derive the JES/JMS tables at --mu, merge into the file")
    ap.add_argument("--types", nargs="+", default=["pflow", "clusters", "tcc"], help="constituent types of --derive")
    ap.add_argument("--table", type=Path, help="--derive: the YAML table to merge into (default: the shipped one)")
    ap.add_argument("--save", type=Path, help="--derive: keep the uncalibrated jets in this folder (npz)")
    ap.add_argument("--pool", type=Path, nargs="+", default=[],
                    help="--derive: add the jets of these saved npz files (independent samples) to the derivation")
    ap.add_argument("--derive-from", type=Path, nargs="+", default=None,
                    help="derive the JES/JMS tables from uncalibrated jets saved by --derive --save (npz, no "
                         "simulation; files of the same type and mu pooled) and merge them into --table")
    ap.add_argument("--estimator", default=None,
                    help="--derive / --derive-from: average-response estimator (gauss_core = mean of the Gaussian "
                         "core, core_median = the tables' estimator up to the seventh version; default gauss_core)")
    ap.add_argument("--jms-sample", choices=("all", "resonance"), default="all",
                    help="--derive / --derive-from: jets that fill the JMS cells (all = W/Z/top + QCD of truth mass "
                         "50-250 GeV, the shipped tables' choice; resonance = labelled top/W/Z jets only)")
    ap.add_argument("--jms-pt", choices=("truth", "reco"), default="truth",
                    help="--derive / --derive-from: JMS cells in truth-jet pT (numerical inversion; default) or in "
                         "calibrated reconstructed pT")
    ap.add_argument("--jms-target", choices=("truth", "peak"), default="truth",
                    help="--derive / --derive-from: what the JMS closes on (truth = the trimmed truth jet's mass, "
                         "the shipped tables; peak = the same plus an in-situ-like residual that puts the calibrated "
                         "W and top peaks on 80.4 and 172.5 GeV)")
    ap.add_argument("--jms-x-bins", type=float, nargs="+", default=None, metavar="X",
                    help="--derive / --derive-from: edges of the JMS cells' truth-m/pT rows (default: the shipped "
                         "tables' lhcml.sim.large_r_calibration.JMS_X_BINS; finer rows, e.g. 0.02 steps to 0.20, "
                         "follow a response that changes with m/pT inside one default row)")
    ap.add_argument("--derive-insitu", type=Path, nargs="+", default=None, metavar="NPZ",
                    help="add the in-situ-like residual, fitted on the W and top jets of these --derive --save files "
                         "calibrated with --base-table, to that table's JES/JMS and write it to --table (required; "
                         "not the shipped file)")
    ap.add_argument("--base-table", type=Path, default=None,
                    help="--derive-insitu: the table whose JES/JMS are kept (default: the shipped one)")
    ap.add_argument("--save-jets", type=Path, help="stability table: keep the per-jet quantities of every point here")
    ap.add_argument("--pt-window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                    help="stability table (and --truth-peaks): select jets of LO < calibrated pT < HI GeV from pT-hat LO-50 to "
                         "HI+100 (default: the processes' 550-650 GeV from pT-hat 500-750; top and wz only)")
    ap.add_argument("--pooled", type=Path, nargs="+", default=None,
                    help="the stability table recomputed on --save-jets files, pooling the seeds of each point")
    ap.add_argument("--resolution-from", type=Path, nargs="+", default=None,
                    help="mass resolution vs truth pT from jets saved by --derive --save (npz; no simulation)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--truth-peaks", action="store_true",
                    help="only the trimmed truth-jet top mass peak vs radius and containment (no detector)")
    ap.add_argument("--processes", nargs="+", default=["top", "wz"],
                    help="processes of the stability table (qcd_boosted: QCD jets for a tagging comparison, kept "
                         "by --save-jets; no mass-peak rows)")
    ap.add_argument("--paired-mitigation", metavar="TYPE",
                    help="median tau32 of W/Z jets vs --mus with SoftKiller and with CSSK on the same wz events, "
                         "for constituent type TYPE (event-bootstrap errors of the mu differences)")
    ap.add_argument("--cs-dr-max", type=float, nargs="*", default=[],
                    help="--paired-mitigation: also CSSK with these Delta R_max (what-ifs; default 0.25 only)")
    ap.add_argument("--containment", type=float, default=None,
                    help="label only t/W/Z whose decay quarks lie within this fraction of R of the jet axis "
                         "(ATLAS contained tops: 0.75; default: within R, the public top-tagging benchmark)")
    ap.add_argument("--jet-geometry", default="one_em_layer",
                    help="jet-calorimeter geometry (lhcml.sim.jet_calo.GEOMETRIES): one_em_layer (default) or "
                         "em_samplings (EM strips / middle / back; the shipped tables are derived on one_em_layer), "
                         "or the path of a geometry YAML file in the shipped file's format (what-ifs: one detector "
                         "term changed; same seed = same events and shower draws)")
    args = ap.parse_args()
    from lhcml.errors import ConfigError
    from lhcml.sim.jet_calo import jet_geometry, load_geometry

    try:  # an unknown name or a malformed file: one clear error before any simulation
        with jet_geometry(args.jet_geometry):
            load_geometry()
    except ConfigError as exc:
        ap.error(f"--jet-geometry: {exc}")
    with jet_geometry(args.jet_geometry):
        _run(args, ap)


def _run(args: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    """The mode chosen on the command line (:func:`main`)."""
    if args.estimator is not None:
        from lhcml.sim.large_r_calibration import RESPONSE_ESTIMATORS

        if args.estimator not in RESPONSE_ESTIMATORS:
            ap.error(f"--estimator {args.estimator}: unknown; valid: {', '.join(RESPONSE_ESTIMATORS)}")
    if args.pt_window is not None:
        lo, hi = args.pt_window
        if not 0 < lo < hi:
            ap.error(f"--pt-window {lo:g} {hi:g}: need 0 < LO < HI (GeV)")
        other = [n for n in args.processes if n not in ("top", "wz")] if not args.truth_peaks else []
        if other:
            ap.error(f"--pt-window applies to the processes top and wz only, not {', '.join(other)}")
        modes = [f for f in ("derive", "derive_from", "derive_insitu", "pooled", "paired_mitigation", "resolution_from",
                             "compare") if getattr(args, f)]
        if modes:
            ap.error(f"--pt-window applies to the stability table only, not --{modes[0].replace('_', '-')}")
    if args.derive_insitu:
        from lhcml.sim.large_r_calibration import TABLE_PATH

        base = args.base_table or TABLE_PATH
        missing = [str(f) for f in (*args.derive_insitu, base) if not f.exists()]
        if missing:
            ap.error(f"--derive-insitu: no such file(s): {', '.join(missing)}")
        if args.table is None or args.table.resolve() == TABLE_PATH.resolve():
            ap.error("--derive-insitu needs --table OUT.yaml (a new file; the shipped table is not overwritten)")
        derive_insitu_saved(args.derive_insitu, args.table, base)
        return
    if args.derive or args.derive_from:
        from lhcml.errors import ConfigError
        from lhcml.sim.large_r_calibration import TABLE_PATH, jms_x_edges

        if args.jms_x_bins is not None:
            try:
                jms_x_edges(args.jms_x_bins)
            except ConfigError as e:
                ap.error(f"--jms-x-bins: {e}")

        if args.derive_from:
            missing = [str(f) for f in args.derive_from if not f.exists()]
            if missing:
                ap.error(f"--derive-from: no such file(s): {', '.join(missing)}")
            derive_saved(args.derive_from, args.table or TABLE_PATH, args.estimator, args.jms_sample, args.jms_pt,
                         args.jms_target, args.jms_x_bins)
        else:
            derive(args.events, args.mu, args.seed, args.table or TABLE_PATH, args.types, args.save, args.pool,
                   args.estimator, args.jms_sample, args.jms_pt, args.jms_target, args.jms_x_bins)
        return
    if args.pooled:
        missing = [str(f) for f in args.pooled if not f.exists()]
        if missing:
            ap.error(f"--pooled: no such file(s): {', '.join(missing)}")
        rows = pooled(args.pooled)
        print(summary(rows))
        if args.json:
            atomic_write_text(args.json, json.dumps(rows, indent=1))
        return
    if args.paired_mitigation:
        rows = paired_mitigation(args.events, args.mus, args.seed, args.paired_mitigation, args.cs_dr_max)
        if args.json:
            atomic_write_text(args.json, json.dumps(rows, indent=1))
        return
    if args.resolution_from:
        rows = saved_resolution(args.resolution_from)
        if args.json:
            atomic_write_text(args.json, json.dumps(rows, indent=1))
        return
    if args.truth_peaks:
        window = pt_window(*args.pt_window, ("top",)) if args.pt_window else nullcontext()
        with window:
            rows = truth_peaks(args.events, args.seed, tuple(args.pt_window) if args.pt_window else (550.0, 650.0))
        if args.json:
            atomic_write_text(args.json, json.dumps(rows, indent=1))
        return
    import lhcml.sim.events as ev

    if args.radius is not None:
        ev.LARGE_R_RADIUS = args.radius
        ev.LARGE_R_TRUTH_MATCH_DR = 0.75 * args.radius  # as the module's own definition
    if args.containment is not None:
        ev.LARGE_R_CONTAIN_DR = args.containment * ev.LARGE_R_RADIUS
    if args.compare:
        rows = compare(args.events, args.mu, args.seed)
    else:
        window = pt_window(*args.pt_window, tuple(args.processes)) if args.pt_window else nullcontext()
        with window:
            rows = stability(args.events, args.mus, args.seed, args.constituents, tuple(args.processes), args.json,
                             args.save_jets)
        print(summary(rows))
        return
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
