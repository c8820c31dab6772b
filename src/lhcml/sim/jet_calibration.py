"""Small-R (anti-kt 0.4 particle-flow) jet calibration and truth jets.

The ATLAS chain (EPJC 81 (2021) 689), in three steps applied to the four-momentum (scaled):

1. **Jet-area pileup subtraction**: ``pT → pT − ρ·A`` with ρ the event's median pT density of
   the flow objects (:func:`lhcml.sim.pflow.pileup_density_flat`) and ``A = πR²`` (the area of an
   anti-kt jet; ATLAS uses the active area, close to πR² for hard jets).
2. **Residual pileup correction**: ``pT → pT − α(η)(N_PV − 1) − β(η) μ`` with α, β fitted on
   simulated jets matched to truth jets (reco − truth vs N_PV and μ).
3. **MC-based numerical inversion** (absolute JES): in |η| bins, the median response
   ``R = pT^reco / pT^truth`` in bins of truth pT, mapped to the median reco pT of each bin; these
   nodes are fitted with a polynomial in ln pT, ``R = Σ a_i (ln pT)^i`` (order 1–6 per bin, chosen
   by Akaike's criterion: our choice; ATLAS fits its response vs reco energy with a polynomial in
   ln E of a bin-dependent order, unverified, from memory), held constant beyond the first and
   last node, then ``pT → pT / R(pT^reco)``. A table without a fit interpolates the nodes linearly
   in ln pT. The fit averages the nodes' statistical scatter (≈ 1 % per node at 20 GeV and μ = 60).
   One inversion per μ of the derivation samples (``mu_points``, e.g. 0 and 60), interpolated
   linearly in μ between them and constant beyond (our choice; ATLAS derives one inversion on a
   sample with the data's μ profile, unverified). Why: below ~30 GeV the pileup offset after steps 1–2 depends
   on pT (and the reco threshold cuts the low side of the μ = 60 response), so one table averaged
   over μ left the 20 GeV response 3 % low at μ = 0 and 3–5 % high at μ = 60
   (``docs/benchmarks/sim_jets.md``, seventh version).

α, β and the response table are derived by ``benchmarks/derive_jes.py`` on dijet + tt̄ samples
and stored in ``jet_calibration_table.json`` next to this module (JSON; our file format:
``pt_nodes``/``response``/``response_err``/``fit_coef``/``fit_pt_range`` hold one list per
(μ point, |η| bin), μ-major; a table without ``mu_points`` has one μ point). Without that file only step 1 is applied (and
:func:`table_loaded` is False).

Truth jets (:func:`truth_jets_flat`): anti-kt 0.4 on the stable, visible generator particles of
the hard scatter (no neutrinos, no muons), pT > :data:`TRUTH_JET_PT_MIN`; a reco jet is matched
to the nearest truth jet within ``ΔR <`` :data:`TRUTH_MATCH_DR`.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import numpy as np

from lhcml.errors import ConfigError
from lhcml.sim.generator import FlatTable

TABLE_FILE = Path(__file__).with_name("jet_calibration_table.json")
#: truth-jet threshold (GeV) and matching distance
TRUTH_JET_PT_MIN = 5.0
TRUTH_MATCH_DR = 0.3
#: pdg ids that truth jets leave out (neutrinos, muons)
TRUTH_INVISIBLE = (12, 13, 14, 16)

_DISABLED = [False]


@contextlib.contextmanager
def calibration_disabled():
    """Within the block, jets get only the area subtraction (used to derive the table)."""
    _DISABLED[0] = True
    try:
        yield
    finally:
        _DISABLED[0] = False


@functools.lru_cache(maxsize=4)
def load_table(path: str | None = None) -> dict | None:
    """The calibration table (``None`` when the file does not exist)."""
    p = Path(path) if path is not None else TABLE_FILE
    if not p.exists():
        return None
    fix = "regenerate it with benchmarks/derive_jes.py"
    try:
        t = json.loads(p.read_text())
        out = {
            "eta_edges": np.asarray(t["eta_edges"], float),
            "alpha_npv": np.asarray(t["alpha_npv"], float),
            "beta_mu": np.asarray(t["beta_mu"], float),
            "mu_points": np.asarray(t.get("mu_points", [0.0]), float),
            "pt_nodes": [np.asarray(x, float) for x in t["pt_nodes"]],
            "response": [np.asarray(x, float) for x in t["response"]],
        }
        if "fit_coef" in t or "fit_pt_range" in t:
            out["fit_coef"] = [np.asarray(x, float) for x in t["fit_coef"]]
            out["fit_pt_range"] = [np.asarray(x, float) for x in t["fit_pt_range"]]
        if "response_err" in t:
            out["response_err"] = [np.asarray(x, float) for x in t["response_err"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"jet calibration table {p} is unreadable ({exc}); {fix}") from exc
    n = len(out["eta_edges"]) - 1
    n_mu = len(out["mu_points"])
    if n < 1 or any(len(v) != n for v in (out["alpha_npv"], out["beta_mu"])) or \
            any(len(v) != n * n_mu for v in (out["pt_nodes"], out["response"])):
        raise ConfigError(f"jet calibration table {p}: arrays do not match the {n} eta bins x {n_mu} mu points; {fix}")
    if n_mu < 1 or np.any(np.diff(out["mu_points"]) <= 0):
        raise ConfigError(f"jet calibration table {p}: mu_points {out['mu_points'].tolist()} must increase; {fix}")
    for x, r in zip(out["pt_nodes"], out["response"], strict=True):
        if len(x) < 1 or len(x) != len(r) or np.any(x <= 0) or np.any(np.diff(x) < 0) or np.any(r <= 0):
            raise ConfigError(f"jet calibration table {p}: a pT-node list is empty, unsorted or not positive; {fix}")
    if "fit_coef" in out:
        if any(len(v) != n * n_mu for v in (out["fit_coef"], out["fit_pt_range"])):
            raise ConfigError(f"jet calibration table {p}: fit_coef / fit_pt_range do not match the {n} eta bins x "
                              f"{n_mu} mu points; {fix}")
        for c, rng in zip(out["fit_coef"], out["fit_pt_range"], strict=True):
            grid = np.log(np.geomspace(rng[0], rng[-1], 50)) if rng.shape == (2,) and np.all(rng > 0) else None
            if c.ndim != 1 or len(c) < 1 or not np.all(np.isfinite(c)) or grid is None or rng[1] < rng[0] \
                    or np.any(np.polynomial.polynomial.polyval(grid, c) <= 0.05):
                raise ConfigError(f"jet calibration table {p}: a fitted response curve is empty, not finite, has a "
                                  f"bad pT range or falls below 0.05; {fix}")
    return out


def table_loaded() -> bool:
    return load_table() is not None and not _DISABLED[0]


def _eta_bin(table: dict, eta: np.ndarray) -> np.ndarray:
    edges = table["eta_edges"]
    return np.clip(np.searchsorted(edges, np.abs(eta), side="right") - 1, 0, len(edges) - 2)


def _mu_weights(mu_points: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the μ points around each ``mu`` and the weight of the upper one (linear in μ,
    constant beyond the first and last point)."""
    last = len(mu_points) - 1
    lo = np.clip(np.searchsorted(mu_points, mu, side="right") - 1, 0, last)
    hi = np.minimum(lo + 1, last)
    span = np.where(hi > lo, mu_points[hi] - mu_points[lo], 1.0)
    w = np.where(hi > lo, np.clip((mu - mu_points[lo]) / span, 0.0, 1.0), 0.0)
    return lo, hi, w


def jes_response(table: dict, pt: np.ndarray, eta: np.ndarray, mu: float | np.ndarray = 0.0) -> np.ndarray:
    """Response R(pT^reco, |η|, μ) of the numerical inversion (``mu``: a number or one per jet;
    interpolated linearly between the table's ``mu_points``, constant beyond them). In pT: the
    fitted curve ``Σ a_i (ln pT)^i`` (``fit_coef``) with ln pT held within ``fit_pt_range``; a table
    without a fit interpolates its nodes linearly in ln pT (constant beyond the ends)."""
    pt = np.asarray(pt, float)
    b = _eta_bin(table, eta)
    n_eta = len(table["eta_edges"]) - 1
    mu_points = np.asarray(table.get("mu_points", [0.0]), float)
    lo, hi, w = _mu_weights(mu_points, np.broadcast_to(np.asarray(mu, float), pt.shape))
    logpt = np.log(np.maximum(pt, 1e-3))
    out = np.zeros(len(pt))  # the weights of the two mu points of each jet sum to 1
    for k in np.unique(np.concatenate([lo, hi])):
        use = (lo == k) | ((hi == k) & (w > 0))
        wk = np.where(lo == k, 1.0 - w, 0.0) + np.where((hi == k) & (hi != lo), w, 0.0)
        for i in np.unique(b[use]):
            m = use & (b == i)
            j = int(k) * n_eta + int(i)
            if "fit_coef" in table:
                lo_hi = np.log(table["fit_pt_range"][j])
                r = np.polynomial.polynomial.polyval(np.clip(logpt[m], lo_hi[0], lo_hi[-1]), table["fit_coef"][j])
            else:
                r = np.interp(logpt[m], np.log(table["pt_nodes"][j]), table["response"][j])
            out[m] += wk[m] * r
    return out


def calibrated_pt(pt: np.ndarray, eta: np.ndarray, rho: np.ndarray, mu: float, npv: np.ndarray,
                  radius: float, table: dict | None = None) -> np.ndarray:
    """Calibrated jet pT (GeV) from the raw pT, per-jet ρ (GeV), μ and N_PV (see the module doc)."""
    pt_a = pt - rho * np.pi * radius**2
    if table is None:
        return np.maximum(pt_a, 0.0)
    b = _eta_bin(table, eta)
    pt_b = pt_a - table["alpha_npv"][b] * (np.asarray(npv, float) - 1.0) - table["beta_mu"][b] * mu
    pt_b = np.maximum(pt_b, 1e-3)
    return pt_b / jes_response(table, pt_b, eta, mu)


def calibrate_small_r_flat(jets: FlatTable, rho: np.ndarray, mu: float, npv: np.ndarray, radius: float) -> FlatTable:
    """Jets with their four-momenta scaled to the calibrated pT (area, residual, JES)."""
    ev = jets.event
    table = load_table() if not _DISABLED[0] else None
    pt_cal = calibrated_pt(jets["pt"], jets["eta"], np.asarray(rho)[ev], mu, np.asarray(npv)[ev], radius, table)
    factor = np.where(pt_cal > 0, pt_cal / np.maximum(jets["pt"], 1e-9), 0.0)
    out = {k: jets[k] * factor for k in ("px", "py", "pz", "E", "pt", "mass")}
    out["eta"] = jets["eta"]
    out["phi"] = jets["phi"]
    return FlatTable(out, jets.counts)


def sort_by_pt(jets: FlatTable, cons_off: np.ndarray, cons: np.ndarray, *arrays: np.ndarray):
    """Jets re-sorted by decreasing (calibrated) pT in each event, with their constituent lists
    (``cons_off``/``cons`` of :func:`lhcml.sim.jets.cluster_flat`) and per-jet ``arrays`` permuted."""
    from lhcml.sim.generator import offsets_of

    order = np.lexsort((-jets["pt"], jets.event))
    out = FlatTable({k: v[order] for k, v in jets.columns.items()}, jets.counts)
    ncons = np.diff(cons_off)[order]
    new_off = offsets_of(ncons)
    src = np.arange(int(new_off[-1]), dtype=np.int64) + np.repeat(cons_off[:-1][order] - new_off[:-1], ncons)
    return (out, new_off, cons[src], *(a[order] for a in arrays))


def truth_jets_flat(generated, radius: float = 0.4, min_pt: float = TRUTH_JET_PT_MIN) -> FlatTable:
    """Anti-kt truth jets on the stable visible hard-scatter particles of ``generated``."""
    from lhcml.sim.jets import cluster_flat

    table = generated.flat("particles")
    vis = table["final"] & ~np.isin(np.abs(table["pid"]), TRUTH_INVISIBLE)
    t = table.select(vis)
    truth = FlatTable({"px": t["px"], "py": t["py"], "pz": t["pz"], "E": t["e"]}, t.counts)
    jets, _, _ = cluster_flat(truth, radius, min_pt=min_pt)
    return jets


def match_truth(jets: FlatTable, truth: FlatTable, dr_max: float = TRUTH_MATCH_DR) -> tuple[np.ndarray, np.ndarray]:
    """pT and η of the nearest truth jet (ΔR < dr_max) of each reco jet; pT = -1 when unmatched."""
    from lhcml.sim.jets import nearest_within_dr

    idx = nearest_within_dr(jets.offsets, np.asarray(jets["eta"], float), np.asarray(jets["phi"], float), truth.offsets,
                   np.asarray(truth["eta"], float), np.asarray(truth["phi"], float), dr_max)
    ok = idx >= 0
    pt = np.where(ok, truth["pt"][np.where(ok, idx, 0)] if len(truth["pt"]) else 0.0, -1.0)
    eta = np.where(ok, truth["eta"][np.where(ok, idx, 0)] if len(truth["eta"]) else 0.0, -1.0)
    return pt, eta


# --------------------------------------------------------------------------------------------
# derivation (benchmarks/derive_jes.py) and closure (benchmarks/sim_jets.py)
# --------------------------------------------------------------------------------------------

#: |eta| bins of the derived table (central / barrel-end-cap transition / end-cap / HEC / FCal)
DERIVE_ETA_EDGES = (0.0, 0.8, 1.6, 2.5, 3.2, 4.5)
#: truth-pT bin edges (GeV) of the numerical inversion
DERIVE_PT_EDGES = (10, 15, 20, 25, 30, 40, 50, 65, 80, 100, 130, 170, 220, 300, 400, 550, 800, 1200, 2000)
#: jets needed in a (pT, eta) bin for a response node
DERIVE_MIN_JETS = 15
#: highest order of the polynomial in ln pT fitted to the response nodes (our choice; ATLAS's
#: numerical inversion fits a polynomial in ln E of order up to ~6, unverified, from memory)
FIT_ORDER_MAX = 6


def jes_sample(process: str, n_events: int, mu: float, seed: int, pileup=None, calibrated: bool = False,
               pt_min: float = 8.0, eta_max: float = 4.5) -> dict[str, np.ndarray]:
    """Truth-matched small-R jets of ``process`` for calibration studies (GeV).

    The process is simulated with its jet selection loosened to ``pT > pt_min`` and
    ``|η| < eta_max`` (the calibration must see jets below the analysis threshold);
    ``calibrated=False`` applies only the ρ·A subtraction. Returns per matched jet ``pt, eta,
    truth_pt, truth_eta, mu, npv``.
    """
    import dataclasses

    from lhcml.sim import processes as P
    from lhcml.sim.events import simulate_events

    base = P.get_process(process)
    name = f"{process}__jes"
    P.PROCESSES[name] = dataclasses.replace(base, name=name, jet_pt_min=pt_min, jet_eta_max=eta_max, jet_pt_max=None,
                                            flatten_pt=None)
    try:
        ctx = contextlib.nullcontext() if calibrated else calibration_disabled()
        with ctx:
            out = simulate_events(name, n_events, mu=mu, seed=seed, pileup=pileup)
    finally:
        del P.PROCESSES[name]
    jets, events = out["jets"], out["events"]
    m = jets["truthJetPt"] > 0
    jets = jets[m]
    pos = np.searchsorted(events["eventNumber"], jets["eventNumber"])
    npv = events["nPrimaryVertices"][pos].astype(float) if "nPrimaryVertices" in events.dtype.names else \
        np.ones(len(jets))
    return {
        "pt": jets["pt"] / 1000.0, "eta": jets["eta"].astype(float), "truth_pt": jets["truthJetPt"] / 1000.0,
        "truth_eta": jets["truthJetEta"].astype(float), "mu": jets["averageInteractionsPerCrossing"].astype(float),
        "npv": npv,
    }


def pooled_pileup_samples(processes: list[str] | tuple[str, ...], n_events: int, mu: float, hard_seeds: list[int],
                          library_seed: int, n_libraries: int = 1, library_size: int = 2000,
                          **kwargs) -> list[dict[str, np.ndarray]]:
    """:func:`jes_sample` of each process at a pileup ``mu``, pooled over independent pileup libraries.

    The ``n_events`` of each process are split into ``n_libraries`` chunks; chunk ``c`` is
    simulated with seed ``hard_seeds[k] + 1000 c`` (process ``k``) and overlaid with a library of
    ``library_size`` minimum-bias events and seed ``library_seed + 1000 c`` (built once per chunk,
    used by every process, then dropped). With one library this is the one-library sample. So a
    sample's pileup is not one library's: a library event is reused ~μ·N/size times, and what the
    library holds then shifts the whole sample (``docs/benchmarks/sim_jets.md``, eighth version).
    Returns the samples, chunk-major then process.
    """
    from lhcml.sim.pileup import build_pileup_library

    if n_libraries < 1 or library_size < 1:
        raise ConfigError(f"pooled_pileup_samples: n_libraries ({n_libraries}) and library_size ({library_size}) "
                          "must be >= 1")
    sizes = [len(a) for a in np.array_split(np.arange(n_events), n_libraries)]
    parts = []
    for c, n in enumerate(sizes):
        if n == 0:
            continue
        lib = build_pileup_library(library_size, library_seed + 1000 * c)
        parts.extend(jes_sample(p, n, mu, hard_seeds[k] + 1000 * c, pileup=lib, **kwargs)
                     for k, p in enumerate(processes))
        del lib
    return parts


def derive_table(sample: dict[str, np.ndarray], eta_edges=DERIVE_ETA_EDGES, pt_edges=DERIVE_PT_EDGES,
                 min_jets: int = DERIVE_MIN_JETS, max_order: int = FIT_ORDER_MAX) -> dict:
    """Residual pileup slopes and the numerical-inversion response tables from a ρ·A-corrected sample.

    Residual: per |η| bin, least squares ``pT − pT_truth = c + α (N_PV − 1) + β μ`` on jets with
    truth pT in 20–200 GeV (α, β kept). Response: for each distinct μ of the sample (``mu_points``)
    and each |η| and truth-pT bin, the median of ``pT/pT_truth`` after the residual correction,
    placed at the median corrected reco pT (``response_err``: the statistical error of each median).
    The response curve of each (μ point, |η| bin) is then fitted in log pT
    (:func:`fit_response_curve`, up to order ``max_order``): ``fit_coef`` and its node range
    ``fit_pt_range``. All per-(μ, |η|) lists are μ-major.
    """
    eta_edges = np.asarray(eta_edges, float)
    pt_edges = np.asarray(pt_edges, float)
    n_eta = len(eta_edges) - 1
    aeta = np.abs(sample["truth_eta"])
    ib = np.clip(np.searchsorted(eta_edges, aeta, side="right") - 1, 0, n_eta - 1)
    inside = aeta < eta_edges[-1]
    alpha = np.zeros(n_eta)
    beta = np.zeros(n_eta)
    mu_points = np.unique(sample["mu"]) if len(sample["mu"]) else np.zeros(1)
    if len(mu_points) > 8:
        raise ConfigError(f"derive_table: the sample has {len(mu_points)} distinct mu values; derive on samples "
                          "at a few fixed mu (e.g. 0 and 60), one inversion is made per mu")
    for i in range(n_eta):
        fit = inside & (ib == i) & (sample["truth_pt"] > 20) & (sample["truth_pt"] < 200)
        if len(mu_points) > 1 and fit.sum() >= 3 * min_jets:
            x = np.stack([np.ones(fit.sum()), sample["npv"][fit] - 1.0, sample["mu"][fit]], axis=1)
            coef, *_ = np.linalg.lstsq(x, sample["pt"][fit] - sample["truth_pt"][fit], rcond=None)
            alpha[i], beta[i] = coef[1], coef[2]
    pt_b_all = sample["pt"] - alpha[ib] * (sample["npv"] - 1.0) - beta[ib] * sample["mu"]
    jb_all = np.searchsorted(pt_edges, sample["truth_pt"], side="right") - 1
    nodes: list[list[float]] = []
    resp: list[list[float]] = []
    errs: list[list[float]] = []
    coefs: list[list[float]] = []
    ranges: list[list[float]] = []
    borrowed = np.zeros(n_eta, bool)
    for mu in mu_points:
        at_mu: list[tuple[list[float], list[float], list[float]]] = []
        for i in range(n_eta):
            m = inside & (ib == i) & (sample["mu"] == mu)
            pt_b, tp, jb = pt_b_all[m], sample["truth_pt"][m], jb_all[m]
            xs, rs, es = [], [], []
            for j in range(len(pt_edges) - 1):
                s = jb == j
                if s.sum() >= min_jets:
                    r = pt_b[s] / tp[s]
                    q75, q25 = np.percentile(r, [75, 25])
                    xs.append(float(np.median(pt_b[s])))
                    rs.append(float(np.median(r)))
                    # error of a median: sqrt(pi/2) sigma/sqrt(n), sigma from the IQR (Gaussian core)
                    es.append(float(max(1.2533 * (q75 - q25) / 1.349 / np.sqrt(s.sum()), 1e-4)))
            at_mu.append((xs, rs, es))
        # bins without enough jets borrow the nearest bin's response (towards the centre)
        for i in range(n_eta):
            if len(at_mu[i][0]) < 2:
                ok = [j for j in range(i) if len(at_mu[j][0]) >= 2]
                if not ok:
                    raise ConfigError(f"derive_table: too few truth-matched jets at mu = {mu:g} in |eta| < "
                                      f"{eta_edges[i + 1]:g}; simulate more events")
                at_mu[i] = tuple(list(v) for v in at_mu[ok[-1]])
                if not borrowed[i]:
                    alpha[i], beta[i] = alpha[ok[-1]], beta[ok[-1]]
                    borrowed[i] = True
            order = np.argsort(at_mu[i][0])
            nodes.append([at_mu[i][0][o] for o in order])
            resp.append([at_mu[i][1][o] for o in order])
            errs.append([at_mu[i][2][o] for o in order])
            coefs.append(fit_response_curve(nodes[-1], resp[-1], errs[-1], max_order).tolist())
            ranges.append([nodes[-1][0], nodes[-1][-1]])
    return {"eta_edges": eta_edges.tolist(), "alpha_npv": alpha.tolist(), "beta_mu": beta.tolist(),
            "mu_points": mu_points.astype(float).tolist(), "pt_nodes": nodes, "response": resp,
            "response_err": errs, "fit_coef": coefs, "fit_pt_range": ranges}


def fit_response_curve(pt: list[float] | np.ndarray, response: list[float] | np.ndarray,
                       err: list[float] | np.ndarray, max_order: int = FIT_ORDER_MAX) -> np.ndarray:
    """Coefficients ``a_0..a_N`` (ascending) of ``R = Σ a_i (ln pT)^i`` fitted to response nodes
    (weighted least squares, weights 1/err²). The order N runs from 1 to ``max_order`` (and below
    the number of nodes − 1, so that at least one degree of freedom is left); the one with the
    smallest ``χ² + 2 (N + 1)`` (Akaike's criterion) is kept. One node: the constant."""
    x = np.log(np.asarray(pt, float))
    y = np.asarray(response, float)
    w = 1.0 / np.asarray(err, float)
    if len(x) < 2:
        return y[:1].copy() if len(y) else np.ones(1)
    best, best_score = None, np.inf
    for order in range(1, max(1, min(max_order, len(x) - 2)) + 1):
        c = np.polynomial.polynomial.polyfit(x, y, order, w=w)
        chi2 = float(np.sum(((np.polynomial.polynomial.polyval(x, c) - y) * w) ** 2))
        if chi2 + 2 * (order + 1) < best_score - 1e-9:
            best, best_score = c, chi2 + 2 * (order + 1)
    return np.asarray(best, float)


def response_resolution(sample: dict[str, np.ndarray], pt_lo: float, pt_hi: float, eta_max: float = 0.8,
                        n_boot: int = 200, seed: int = 0) -> tuple[float, float, int, float]:
    """Median response, relative resolution (IQR/1.349 over the median: the Gaussian σ for a
    Gaussian core), count, and the statistical error of the median (standard deviation of
    ``n_boot`` bootstrap medians) of jets with truth pT in [pt_lo, pt_hi) and |η_truth| < eta_max."""
    m = (sample["truth_pt"] >= pt_lo) & (sample["truth_pt"] < pt_hi) & (np.abs(sample["truth_eta"]) < eta_max)
    if m.sum() < 5:
        return np.nan, np.nan, int(m.sum()), np.nan
    r = sample["pt"][m] / sample["truth_pt"][m]
    med = float(np.median(r))
    q75, q25 = np.percentile(r, [75, 25])
    boot = np.median(r[np.random.default_rng(seed).integers(0, len(r), (n_boot, len(r)))], axis=1)
    return med, float((q75 - q25) / 1.349 / med), int(m.sum()), float(np.std(boot))
