"""Large-R jet energy scale (JES) and jet mass scale (JMS): MC-based numerical inversion.

As ATLAS's large-R calibration (JETM-2018-02 / arXiv:1807.09477, simulation-based step), on
trimmed jets matched to trimmed truth jets (``ΔR < 0.75 R``):

JES
    In bins of truth-jet pT the average response ``R`` of ``pT_reco / pT_true`` is measured
    together with the median reconstructed pT of the bin; the bins' responses are fitted in ln pT
    (a polynomial whose order Akaike's criterion chooses, as the small-R tables'; since the twelfth
    version) and numerical inversion maps the reconstructed pT to the correction ``1 / R`` of the
    fit (linear interpolation between the bins' points, constant beyond). The average response of a bin (JES and JMS alike) is
    :func:`response_estimate`: since the eighth version the mean of a Gaussian fitted to the
    ±2σ core (the peak of the response, what the mass-peak goal is on), before it the median
    within ±30 % of the median (``estimator="core_median"``, kept selectable).
JMS
    After the JES, for jets whose truth mass lies in :data:`JMS_TRUTH_MASS_RANGE` (the W/Z/top
    mass region the derivation sample populates), the mass response
    ``R_m`` of ``m_reco / m_true`` (:func:`response_estimate`) is
    measured in bins of truth pT (:data:`JMS_PT_BINS`) *and* truth ``m / pT``
    (:data:`JMS_X_BINS`), as ATLAS's JMS is derived in bins of truth E and log(m/E)
    (``docs/references.md §12``): the mass response depends on the jet's mass at fixed pT
    (this calorimeter: top jets ≈ 0.93, W/Z ≈ 0.89, QCD ≈ 0.88 at 600 GeV, μ = 0), so a JMS in
    pT only depends on the W/Z/top/QCD mix of the derivation sample and does not close for
    any one of them — nor the same way at every μ (the top-jet response falls faster with μ
    than the mix's: top peak 2.7 GeV lower at μ = 140 than at μ = 0/60 with the pT-only JMS,
    ``docs/benchmarks/sim_large_r.md``). Numerical inversion in two dimensions: each
    (pT, m/pT) cell stores the median reconstructed calibrated pT and ``m / pT`` of its jets and
    ``1 / R_m``; a jet's factor is interpolated linearly along pT within each ``m/pT`` row and
    then across the rows at the jet's reconstructed ``m / pT`` (constant beyond the outermost
    points). Tables without the two-dimensional entries (``x_jms``) are applied in pT only.

In-situ-like residual (opt-in, ``derive_calibration(..., jms_target="peak")`` or :func:`derive_insitu`)
    ATLAS's large-R JMS has a second, in-situ stage after the MC-based one: the W and top mass peaks of data are
    compared with simulation (a forward-folding fit of a relative scale and resolution) and the data-to-simulation
    difference is corrected by a factor (``docs/references.md`` §35, §49). The simulation's analogue here (an
    analogue, not ATLAS's procedure: it closes on the particle masses, not on a reference sample): after the truth-closed JMS, per calibrated-pT bin (:data:`INSITU_PT_BINS`) the
    peak of the calibrated mass of labelled W and top jets (:data:`INSITU_ANCHORS`; the mean of the iterated
    Gaussian core ±:data:`INSITU_NSIGMA` σ, :func:`lhcml.estimators.gauss_core_peak`) is put on the particle
    mass (80.4, 172.5 GeV) by a factor; a jet's factor is interpolated linearly in calibrated pT within each
    anchor and then linearly in ln m between the anchors (constant beyond). It closes the *peak*, not the
    response to the truth jet: the trimmed truth-jet top peak sits 1–2 GeV below m_t and a left-skewed peak
    smeared by the detector moves further down, so the residual is > 1 for tops (and scales QCD jets of the
    same mass by the same factor). It is sample dependent: it absorbs the truth-jet peak of the sample it is fitted
    on, which at the same calibrated pT differs by 1–3 GeV for tops between the wide derivation samples and the
    benchmark's narrow ones (``docs/benchmarks/sim_large_r.md``, sixteenth version). Stored in the table as ``insitu_m`` (anchor masses), ``insitu_pt``,
    ``insitu`` (factors) and ``insitu_row`` (anchor index) and applied by :func:`calibrate` after the JMS;
    a table without these keys (the shipped one) is applied without it.

Pileup: the calorimeter's response changes with μ (its mean per-cell pileup subtraction and
noise thresholds), so a constituent type may hold tables at several μ; the correction factors
are then interpolated linearly in ⟨μ⟩ between them (constant outside), the large-R analogue of
the residual pileup correction of small-R jets.

The tables (per constituent type ``pflow``, ``clusters``, ``tcc`` and μ; a type whose inputs
went through a pileup mitigation other than its default one has its own entry ``"<type>+<method>"``,
:func:`table_key`; TCCs built with a non-default treatment of pileup tracks may have their own entry
``"tcc~<treatment>"``, :func:`tcc_variant_key`, used where the table file holds it) are derived by
:func:`derive_calibration` on uncalibrated W/Z/top + QCD samples (``benchmarks/sim_large_r.py
--derive``, run inside :func:`uncalibrated`) and shipped as ``large_r_calibration.yaml``: every
constituent type at ⟨μ⟩ = 0, 60 and 140, all with the two-dimensional JMS, each on a sample
independent of the benchmark's (provenance in the file's header). A constituent type with no
table entry is left uncalibrated (factors 1), which :func:`calibration_table` reports (``None``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from lhcml.errors import ConfigError
from lhcml.estimators import gauss_core_peak, gaussian_core_fit

#: the shipped table
TABLE_PATH = Path(__file__).with_name("large_r_calibration.yaml")
#: opt-in tables of TCCs built with ``pileup_tracks="pv_only"`` (:mod:`lhcml.sim.tcc`), entry ``"tcc~pv_only"``,
#: derived as the shipped TCC tables (same events, seed and options; ``docs/benchmarks/sim_large_r.md``, twentieth
#: version); select it with ``benchmarks/sim_large_r.py --constituents tcc~pv_only:PATH`` (not the default)
TCC_PV_ONLY_TABLE_PATH = Path(__file__).with_name("large_r_calibration_tcc_pv_only.yaml")
#: the same for ``pileup_tracks="share_subtract"`` (entry ``"tcc~share_subtract"``, same derivation; not the default)
TCC_SHARE_SUBTRACT_TABLE_PATH = Path(__file__).with_name("large_r_calibration_tcc_share_subtract.yaml")
#: a variant of it (not the default): the same JES/JMS plus the in-situ-like residual (:func:`derive_insitu`) fitted
#: on the benchmark's own 550–650 GeV samples, so valid for that window (constant in pT; ``docs/benchmarks/
#: sim_large_r.md``, sixteenth version); pass ``calibration_table(TYPE, PEAK_TABLE_PATH)`` as :func:`calibrate`'s table
PEAK_TABLE_PATH = Path(__file__).with_name("large_r_calibration_peak.yaml")
#: truth-pT bin edges of the derivation (GeV)
PT_BINS = (200, 250, 300, 350, 400, 450, 500, 550, 600, 650, 700, 800, 900, 1000, 1200, 1500)
#: minimum matched jets per bin for a calibration point (our choice)
MIN_JETS_PER_BIN = 30
#: highest polynomial order (in ln pT) of the smoothed JES response (as the small-R tables',
#: :data:`lhcml.sim.jet_calibration.FIT_ORDER_MAX`; the order is chosen by Akaike's criterion)
JES_FIT_ORDER_MAX = 6
#: floor of a JES bin's response error in the fit (our choice: 0.05 %, the tables' rounding is 10⁻⁵)
JES_NODE_ERR_MIN = 5e-4
#: truth (trimmed) jet mass range of the JMS derivation (GeV): W/Z/top jets (our choice)
JMS_TRUTH_MASS_RANGE = (50.0, 250.0)
#: truth-pT bin edges of the two-dimensional JMS (GeV; coarser than :data:`PT_BINS` since the
#: jets are shared among the m/pT bins; our choice)
JMS_PT_BINS = (200, 300, 400, 500, 600, 700, 850, 1000, 1500)
#: truth m/pT bin edges of the two-dimensional JMS (our choice: from QCD-like 0.04 to tops at
#: 300 GeV, ≈ 0.6; the W at 1 TeV sits at 0.08, the top at 600 GeV at 0.29)
JMS_X_BINS = (0.04, 0.08, 0.12, 0.16, 0.20, 0.25, 0.30, 0.40, 0.55, 0.80)
#: minimum jets per (pT, m/pT) cell of the two-dimensional JMS (our choice)
MIN_JETS_PER_JMS_CELL = 20
#: core window of the median responses: ±30 % around the first median (our choice)
CORE_WINDOW = 0.3
#: estimators of the average response of a bin (:func:`response_estimate`): ``"gauss_core"`` = the
#: mean of a Gaussian fitted to the ±:data:`GAUSS_CORE_NSIGMA` σ core (iterated, seeded by the median;
#: ATLAS's definition of the average response as far as we know — unverified, ``docs/references.md
#: §31``), ``"core_median"`` = the median within ±:data:`CORE_WINDOW` of the first median (the
#: estimator of the tables up to the seventh version, kept selectable for old-beside-new comparisons)
RESPONSE_ESTIMATORS = ("gauss_core", "core_median")
#: the estimator :func:`derive_calibration` uses unless told otherwise
RESPONSE_ESTIMATOR = "gauss_core"
#: half-width of the Gaussian core window in units of the fitted σ (our choice: ±1.5σ scatters 1.5–4×
#: more below 50 jets and fails on a quarter of 20-jet cells; ``docs/benchmarks/sim_large_r.md``,
#: eighth version)
GAUSS_CORE_NSIGMA = 2.0
#: constituent types
CONSTITUENTS = ("pflow", "clusters", "tcc")
#: jets that fill the JMS cells (:func:`derive_calibration`, ``jms_sample``): ``"all"`` = every matched jet of
#: truth mass in :data:`JMS_TRUTH_MASS_RANGE` (W/Z/top and QCD), ``"resonance"`` = only the jets labelled as a
#: top, W or Z (``R10TruthLabel`` > 0): the mass response at fixed (pT, m/pT) differs between two/three-prong
#: resonance jets and QCD jets of the same mass (QCD mostly 3–18 % lower on this calorimeter), so a mixture closes
#: neither (``docs/benchmarks/sim_large_r.md``, fifteenth version)
JMS_SAMPLES = ("all", "resonance")
#: the pT of the JMS cells: ``"truth"`` = truth-jet pT bins (numerical inversion, as ATLAS), ``"reco"`` = bins
#: of the calibrated (JES) pT, the variable the jets are selected and the factor looked up in: the mass and pT
#: responses are correlated (a jet measured 4 % high in pT is ≈ 4 % high in mass), so at fixed reconstructed pT
#: the truth-binned factors leave the mass high by the pT migration (fifteenth version)
JMS_PT_VARIABLES = ("truth", "reco")

#: what the JMS closes on (:func:`derive_calibration`, ``jms_target``): ``"truth"`` = the response to the trimmed
#: truth jet (numerical inversion, the shipped tables), ``"peak"`` = the same plus the in-situ-like residual that
#: puts the calibrated W and top peaks on the particle masses (:func:`derive_insitu`)
JMS_TARGETS = ("truth", "peak")
#: anchors of the residual: (name, R10TruthLabel code, particle mass GeV, truth-jet mass window GeV: ATLAS's
#: R10TruthLabel_R21Consolidated, as benchmarks/sim_large_r.py). The Z (91.2 GeV) is a check, not an anchor
INSITU_ANCHORS = (("W", 2, 80.4, 50.0, 100.0), ("top", 1, 172.5, 140.0, float("inf")))
#: calibrated-pT bin edges of the residual (GeV; our choice: ≥ 100 jets per bin and anchor at 2500 events of
#: the wide derivation samples)
INSITU_PT_BINS = (250, 350, 450, 550, 650, 800, 1000, 1500)
#: fewest jets of one anchor in one pT bin for a residual point (our choice)
MIN_JETS_PER_INSITU_BIN = 100
#: half-width of the peak's Gaussian core window in σ (the ATLAS fitter's ±1.5 σ of docs/references.md §31)
INSITU_NSIGMA = 1.5
#: iterations of the residual fit (each jet's factor depends on its mass, so the peaks are refitted on the
#: corrected masses until the factors settle)
INSITU_ITERATIONS = 12
#: highest polynomial order (in ln pT) of the smoothed residual of one anchor (the order is chosen by Akaike's
#: criterion, :func:`lhcml.sim.jet_calibration.fit_response_curve`, as the JES fit): one pT bin's peak carries
#: ±1–2 % statistical error at 100–250 jets (2500 events of the wide samples)
INSITU_FIT_ORDER_MAX = 2

_DISABLED = [False]


@contextmanager
def uncalibrated() -> Iterator[None]:
    """Within this block, large-R jets are simulated without JES/JMS (to derive the table)."""
    _DISABLED.append(True)
    try:
        yield
    finally:
        _DISABLED.pop()


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


_KEYS = ("pt", "jes", "pt_jms", "jms")
#: keys of the two-dimensional JMS (optional; same length as ``pt_jms`` and ``jms``)
_KEYS_2D = ("x_jms", "row_jms")
#: keys of the in-situ-like residual (optional; :func:`derive_insitu`)
_KEYS_INSITU = ("insitu_m", "insitu_pt", "insitu", "insitu_row")


def table_key(constituents: str, method: str, default: str) -> str:
    """The table entry of ``constituents`` with pileup mitigation ``method``: the type's name for
    its default method (``default``), ``"<type>+<method>"`` otherwise (e.g. ``clusters+sk``)."""
    return constituents if method == default else f"{constituents}+{method}"


def tcc_variant_key(key: str, pileup_tracks: str) -> str:
    """The table entry of TCCs built with the treatment ``pileup_tracks`` of pileup tracks
    (:data:`lhcml.sim.tcc.TCC_PILEUP_TRACKS`): ``key`` (a :func:`table_key` of ``tcc``) for the default
    ``"remove"``, else ``"tcc~<treatment>"`` (``"tcc~pv_only+cssk"`` with a non-default mitigation)."""
    if pileup_tracks == "remove":
        return key
    base, plus, method = key.partition("+")
    return f"{base}~{pileup_tracks}{plus}{method}"


def _check_key(key: str) -> None:
    from lhcml.sim.pileup_mitigation import METHODS
    from lhcml.sim.tcc import TCC_PILEUP_TRACKS

    base, plus, method = key.partition("+")
    base, tilde, variant = base.partition("~")
    if (base not in CONSTITUENTS or (plus and method not in METHODS)
            or (tilde and (base != "tcc" or variant not in TCC_PILEUP_TRACKS[1:]))):
        raise ConfigError(f"unknown constituents '{key}'; valid: {', '.join(CONSTITUENTS)}, each optionally "
                          f"'+METHOD' with a pileup mitigation of {', '.join(METHODS)}; tcc also "
                          f"'tcc~TREATMENT' with TREATMENT one of {', '.join(TCC_PILEUP_TRACKS[1:])}")


def calibration_table(
    constituents: str, path: str | Path | None = None
) -> dict[float, dict[str, np.ndarray]] | None:
    """``{mu: {pt, jes, pt_jms, jms[, x_jms, row_jms]}}`` arrays of ``constituents`` (``None``: none shipped).

    ``constituents``: a type of :data:`CONSTITUENTS`, or ``"<type>+<method>"`` for the tables of
    a non-default pileup mitigation (:func:`table_key`), or ``"tcc~<treatment>"`` for those of TCCs with a
    non-default treatment of pileup tracks (:func:`tcc_variant_key`)."""
    _check_key(constituents)
    p = Path(path) if path is not None else TABLE_PATH
    if not p.exists():
        return None
    entry = _load(str(p)).get(constituents)
    if not entry:
        return None
    return {float(mu): {k: np.asarray(t[k], dtype=np.float64) for k in (*_KEYS, *_KEYS_2D, *_KEYS_INSITU) if k in t}
            for mu, t in entry.items()}


def _jms_2d(t: dict[str, np.ndarray], pt: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Two-dimensional numerical inversion: JMS factors at calibrated ``pt`` and reco ``x = m / pT``."""
    rows = np.unique(t["row_jms"])
    fx = np.empty((len(rows), len(pt)))
    fv = np.empty((len(rows), len(pt)))
    for i, r in enumerate(rows):
        s = t["row_jms"] == r
        o = np.argsort(t["pt_jms"][s])
        p = t["pt_jms"][s][o]
        fx[i] = np.interp(pt, p, t["x_jms"][s][o])
        fv[i] = np.interp(pt, p, t["jms"][s][o])
    if len(rows) == 1:
        return fv[0]
    fx = np.maximum.accumulate(fx, axis=0)  # the rows' reco m/pT grows with their truth m/pT
    k = np.clip((fx < x).sum(axis=0) - 1, 0, len(rows) - 2)
    cols = np.arange(len(pt))
    x0, x1 = fx[k, cols], fx[k + 1, cols]
    w = np.clip((x - x0) / np.where(x1 > x0, x1 - x0, 1.0), 0.0, 1.0)
    return fv[k, cols] + w * (fv[k + 1, cols] - fv[k, cols])


def _factors(
    t: dict[float, dict[str, np.ndarray]], x: np.ndarray, mu: float, xkey: str, fkey: str,
    mass: np.ndarray | None = None,
) -> np.ndarray:
    def one(m: float) -> np.ndarray:
        if mass is not None and "x_jms" in t[m]:
            return _jms_2d(t[m], x, mass / np.maximum(x, 1e-9))
        return np.interp(x, t[m][xkey], t[m][fkey])

    return _interp_mu(t, mu, one)


def _interp_mu(t: dict[float, dict[str, np.ndarray]], mu: float, one) -> np.ndarray:
    """``one(m)`` (the factors of the table at ⟨μ⟩ = m) interpolated linearly in ``mu`` between the table's μ
    points (constant outside)."""
    mus = sorted(t)
    per_mu = np.stack([one(m) for m in mus])
    if len(mus) == 1:
        return per_mu[0]
    w = np.interp(float(mu), mus, np.arange(len(mus), dtype=np.float64))  # fractional index, clamped
    i = min(int(np.floor(w)), len(mus) - 2)
    return per_mu[i] + (w - i) * (per_mu[i + 1] - per_mu[i])


def calibrate(
    pt: np.ndarray,
    mass: np.ndarray,
    constituents: str,
    mu: float = 0.0,
    table: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ``(pt, mass)`` (GeV) of trimmed large-R jets at ⟨μ⟩ = ``mu``.

    ``table`` defaults to the shipped one of ``constituents`` (``{mu: {pt, jes, pt_jms, jms, …}}``,
    or one such table for all μ; with ``x_jms``/``row_jms`` the JMS is two-dimensional in pT and
    m/pT); inside :func:`uncalibrated`, or without a
    table, the inputs are returned unchanged.
    """
    pt = np.asarray(pt, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    if _DISABLED[-1]:
        return pt, mass
    t = table if table is not None else calibration_table(constituents)
    if t is None:
        return pt, mass
    if "pt" in t:
        t = {0.0: t}
    pt_cal = pt * _factors(t, pt, mu, "pt", "jes")
    m_cal = mass * _factors(t, pt_cal, mu, "pt_jms", "jms", mass=mass)
    return pt_cal, m_cal * insitu_factors(pt_cal, m_cal, t, mu)


def _insitu_one(t: dict[str, np.ndarray], pt: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Residual factors of one μ point's in-situ stage at calibrated ``pt`` and JMS-calibrated ``mass``: linear
    in pT within each anchor (constant beyond its points), then linear in ln m between the anchors (constant
    beyond the lightest and the heaviest)."""
    if "insitu" not in t:
        return np.ones(len(pt))
    anchors = np.asarray(t["insitu_m"], dtype=np.float64)
    per = np.empty((len(anchors), len(pt)))
    for i in range(len(anchors)):
        s = t["insitu_row"] == i
        o = np.argsort(t["insitu_pt"][s])
        per[i] = np.interp(pt, t["insitu_pt"][s][o], t["insitu"][s][o])
    if len(anchors) == 1:
        return per[0]
    order = np.argsort(anchors)
    la, per = np.log(anchors[order]), per[order]
    lm = np.log(np.maximum(mass, 1e-9))
    k = np.clip(np.searchsorted(la, lm) - 1, 0, len(la) - 2)
    w = np.clip((lm - la[k]) / (la[k + 1] - la[k]), 0.0, 1.0)
    cols = np.arange(len(pt))
    return per[k, cols] + w * (per[k + 1, cols] - per[k, cols])


def insitu_factors(pt: np.ndarray, mass: np.ndarray, table: dict, mu: float = 0.0) -> np.ndarray:
    """The in-situ-like residual factors (:func:`derive_insitu`) of jets of calibrated ``pt`` and JMS-calibrated
    ``mass`` (GeV) at ⟨μ⟩ = ``mu``: ``table`` as :func:`calibrate`'s (``{mu: {…}}`` or one μ point's arrays);
    μ points without the stage count as factor 1, a table without it gives ones. :func:`calibrate` applies
    them after the JMS; on jets calibrated by a table *without* the stage (e.g. ``--save-jets`` files made with
    the shipped table) ``mass * insitu_factors(pt, mass, table_with_stage, mu)`` is what a table with the same
    JES/JMS plus the stage would give."""
    pt = np.asarray(pt, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    t = {0.0: table} if "pt" in table or "insitu" in table else table
    if not any("insitu" in v for v in t.values()):
        return np.ones(len(pt))
    return _interp_mu(t, mu, lambda m: _insitu_one(t[m], pt, mass))


def derive_insitu(pt: np.ndarray, mass: np.ndarray, labels: np.ndarray, truth_mass: np.ndarray,
                  n_sigma: float = INSITU_NSIGMA, min_jets: int = MIN_JETS_PER_INSITU_BIN,
                  smooth: bool = True) -> dict[str, list]:
    """The in-situ-like residual from calibrated (JES + JMS) jets: ``pt``, ``mass`` (GeV), ``labels``
    (``R10TruthLabel``) and ``truth_mass`` (the trimmed truth jet's, GeV; for ATLAS's label windows).

    For each anchor of :data:`INSITU_ANCHORS` (labelled jets in its truth-mass window) and each calibrated-pT
    bin of :data:`INSITU_PT_BINS` with ≥ ``min_jets`` jets: the factor that puts the peak (mean of the iterated
    Gaussian core ±``n_sigma`` σ, :func:`lhcml.estimators.gauss_core_peak`) of the corrected masses on the
    particle mass. The factors apply per jet (:func:`insitu_factors`: interpolated in pT and ln m), so the peaks
    are refitted on the corrected masses up to :data:`INSITU_ITERATIONS` times. ``smooth`` (default): in each
    iteration the factors of one anchor are replaced by a polynomial in ln pT fitted to them (order ≤
    :data:`INSITU_FIT_ORDER_MAX` by Akaike's criterion, weights from each peak's statistical error ≈ 1.3 σ/√n of
    its ±2 σ core), so the residual follows the trend in pT rather than each bin's statistical scatter. Returns
    ``{insitu_m, insitu_pt, insitu, insitu_row}`` lists for the YAML table (``insitu_pt``: the bins' median pT).

    Raises
    ------
    ConfigError
        If the inputs differ in length, or an anchor has no pT bin with ``min_jets`` jets (both W and top jets
        are needed).
    """
    pt, mass, tm = (np.asarray(a, dtype=np.float64) for a in (pt, mass, truth_mass))
    lab = np.asarray(labels)
    if not (pt.shape == mass.shape == tm.shape == lab.shape):
        raise ConfigError("in-situ residual: pt, mass, labels and truth_mass need one entry per jet")
    ibin = np.digitize(pt, INSITU_PT_BINS) - 1
    cells = []  # (anchor index, particle mass, jet indices)
    for i, (name, code, m0, lo, hi) in enumerate(INSITU_ANCHORS):
        sel = (lab == code) & (tm > lo) & (tm < hi) & (mass > 0) & np.isfinite(mass)
        found = [(i, m0, np.flatnonzero(sel & (ibin == b))) for b in range(len(INSITU_PT_BINS) - 1)]
        found = [c for c in found if len(c[2]) >= min_jets]
        if not found:
            raise ConfigError(f"in-situ residual: no calibrated-pT bin with >= {min_jets} {name} jets "
                              f"(R10TruthLabel {code}, truth mass {lo:g}-{hi:g} GeV); simulate W/Z and top samples")
        cells += found
    table = {"insitu_m": np.array([a[2] for a in INSITU_ANCHORS]),
             "insitu_pt": np.array([float(np.median(pt[j])) for _, _, j in cells]),
             "insitu": np.ones(len(cells)),
             "insitu_row": np.array([float(i) for i, _, _ in cells])}
    used = np.unique(np.concatenate([j for _, _, j in cells]))
    rows = table["insitu_row"]
    for _ in range(INSITU_ITERATIONS):
        f = np.ones(len(pt))
        f[used] = _insitu_one(table, pt[used], mass[used])
        peaks = np.array([gauss_core_peak(mass[j] * f[j], n_sigma=n_sigma) for _, _, j in cells])
        if not np.all(np.isfinite(peaks)):
            raise ConfigError("in-situ residual: a peak fit failed (too few jets in its core)")
        raw = table["insitu"] * np.array([m0 for _, m0, _ in cells]) / peaks
        new = raw.copy()
        if smooth:
            from lhcml.sim.jet_calibration import fit_response_curve

            width = np.array([gaussian_core_fit(mass[j] * f[j], n_sigma=2.0)[1].value for _, _, j in cells])
            err = raw * 1.3 * width / peaks / np.sqrt([len(j) for _, _, j in cells])
            err = np.where(np.isfinite(err) & (err > 0), err, np.nanmax(err))
            for i in np.unique(rows):
                s = rows == i
                coef = fit_response_curve(table["insitu_pt"][s], raw[s], err[s], INSITU_FIT_ORDER_MAX)
                new[s] = np.polynomial.polynomial.polyval(np.log(table["insitu_pt"][s]), coef)
        done = np.max(np.abs(new - table["insitu"])) < 1e-5
        table["insitu"] = new
        if done:
            break
    return {"insitu_m": [round(float(v), 3) for v in table["insitu_m"]],
            "insitu_pt": [round(float(v), 2) for v in table["insitu_pt"]],
            "insitu": [round(float(v), 5) for v in table["insitu"]],
            "insitu_row": [int(v) for v in table["insitu_row"]]}


def _core(r: np.ndarray) -> tuple[float, np.ndarray]:
    """The median of ``r`` and the entries within ±:data:`CORE_WINDOW` of it."""
    m0 = np.median(r)
    return float(m0), r[np.abs(r - m0) < CORE_WINDOW * m0]


def response_estimate(r: np.ndarray, estimator: str = RESPONSE_ESTIMATOR) -> float:
    """The average response of one calibration bin, ``r`` = reco / truth of its jets.

    ``"gauss_core"``: the mean of a Gaussian fitted (unbinned maximum likelihood, the window renormalised)
    to ``mean ± GAUSS_CORE_NSIGMA σ``, iterated from the median and IQR/1.349
    (:func:`lhcml.estimators.gaussian_core_fit`, the project's one core fit). A one-sided tail
    (jets that lost a prong, a b-decay neutrino, a pile-up cluster) pulls the median toward it but not the
    core's mean, so the inversion closes at the peak of the response rather than at its median. Falls back
    to the ``"core_median"`` when the fit fails (fewer than 10 jets in the window, no convergence) or lands
    outside the ±:data:`CORE_WINDOW` window around the median. ``"core_median"``: the median of the entries within ±:data:`CORE_WINDOW` of the first median.

    Raises
    ------
    ConfigError
        For an unknown ``estimator``.
    """
    return response_with_error(r, estimator)[0]


def response_with_error(r: np.ndarray, estimator: str = RESPONSE_ESTIMATOR) -> tuple[float, float]:
    """:func:`response_estimate` and its statistical error: the Gaussian core fit's error of the mean
    (inverse Hessian of its likelihood), or for the core median (also when the fit falls back to it)
    the error of a median, √(π/2) σ/√n with σ = IQR/1.349 of the core (the small-R tables' node error,
    :func:`lhcml.sim.jet_calibration.derive_table`)."""
    if estimator not in RESPONSE_ESTIMATORS:
        raise ConfigError(f"unknown response estimator '{estimator}'; valid: {', '.join(RESPONSE_ESTIMATORS)}")
    r = np.asarray(r, dtype=np.float64)
    r = r[np.isfinite(r)]
    m0, core = _core(r)
    value = float(np.median(core)) if len(core) else m0
    error = float("nan")
    if len(core) >= 2:
        q75, q25 = np.percentile(core, [75, 25])
        error = float(1.2533 * (q75 - q25) / 1.349 / np.sqrt(len(core)))
    if estimator == "gauss_core":
        fit = gaussian_core_fit(r, n_sigma=GAUSS_CORE_NSIGMA)[0]
        if np.isfinite(fit.value) and abs(fit.value - m0) < CORE_WINDOW * abs(m0):
            value = float(fit.value)
            error = float(fit.error) if np.isfinite(fit.error) and fit.error > 0 else error
    return value, error


def jms_x_edges(edges: tuple[float, ...] | list[float] | None = None) -> np.ndarray:
    """The truth-m/pT row edges of the JMS cells: ``edges`` checked (at least two finite, non-negative, strictly
    increasing values), or :data:`JMS_X_BINS` for ``None``.

    Raises
    ------
    ConfigError
        If ``edges`` is not such a sequence (the message names the values and the default).
    """
    x = np.atleast_1d(np.asarray(JMS_X_BINS if edges is None else edges, dtype=np.float64))
    if x.ndim != 1 or len(x) < 2 or not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(np.diff(x) <= 0):
        raise ConfigError(f"JMS m/pT row edges {[float(v) for v in x.ravel()]}: need at least two finite, "
                          f"non-negative, strictly increasing values (default {list(JMS_X_BINS)})")
    return x


def derive_calibration(
    pt: np.ndarray, mass: np.ndarray, truth_pt: np.ndarray, truth_mass: np.ndarray,
    estimator: str = RESPONSE_ESTIMATOR, smooth: bool = True, labels: np.ndarray | None = None,
    jms_sample: str = "all", jms_pt: str = "truth", jms_target: str = "truth",
    jms_x_bins: tuple[float, ...] | list[float] | None = None,
) -> dict[str, list[float]]:
    """Numerical-inversion table from uncalibrated trimmed jets and their truth jets (GeV).

    Unmatched jets (``truth_pt <= 0``) are ignored. Returns ``{pt, jes, jes_nodes, jes_err, pt_jms, jms,
    x_jms, row_jms}`` lists, ready for the YAML table: the JES points (reconstructed pT, factor; the
    bins' own factors and their statistical errors beside them) and the
    JMS cells (median calibrated pT, median reconstructed m/pT, factor, index of the truth-m/pT
    row). The average pT and mass responses of a bin are :func:`response_estimate` with
    ``estimator`` (the same for the JES and the JMS).

    ``smooth`` (default): the JES response of the bins is fitted in ln pT
    (:func:`lhcml.sim.jet_calibration.fit_response_curve`, the small-R tables' fit: polynomial of order
    ≤ :data:`JES_FIT_ORDER_MAX` chosen by Akaike's criterion, weights from the bins' errors) and the
    table's factors are the fit's at the bins' reconstructed pT. Without it the bins' own factors are
    interpolated, and their statistical scatter (±0.3–0.5 % per bin at 2000 events per process) stretches
    or squeezes the calibrated pT scale between neighbouring bins: a 550–650 GeV window then keeps a few %
    more or fewer jets from one derivation to the next (``docs/benchmarks/boosted.md``, twelfth version).

    ``jms_sample`` (:data:`JMS_SAMPLES`): which jets fill the JMS cells; ``"resonance"`` needs ``labels``
    (``R10TruthLabel`` per jet; > 0 = top, W or Z). ``jms_pt`` (:data:`JMS_PT_VARIABLES`): the cells in truth
    pT (default) or in calibrated reconstructed pT. The JES is the same for every choice. ``jms_target``
    (:data:`JMS_TARGETS`): ``"peak"`` adds the in-situ-like residual (:func:`derive_insitu`, needs ``labels``),
    fitted on the same jets calibrated with this table; the JES and JMS entries are those of ``"truth"``.
    ``jms_x_bins``: the edges of the truth-m/pT rows of the JMS cells (default :data:`JMS_X_BINS`, the shipped
    tables'). Finer rows let the factor follow a response that changes with m/pT inside one default row (W at
    m/pT ≈ 0.13 and Z at ≈ 0.15 share the 0.12–0.16 row at 600 GeV); :func:`calibrate` needs nothing else,
    since a jet's factor is interpolated across the rows at its reconstructed m/pT whatever their edges.

    Raises
    ------
    ConfigError
        If fewer than two pT bins hold :data:`MIN_JETS_PER_BIN` matched jets, or no (pT, m/pT)
        cell :data:`MIN_JETS_PER_JMS_CELL` W/Z/top-mass jets, or ``estimator``, ``jms_sample``, ``jms_pt`` or
        ``jms_target`` is unknown, or ``jms_sample="resonance"`` or ``jms_target="peak"`` comes without ``labels``
        (or with labels of another length), or the residual finds too few W or top jets (:func:`derive_insitu`),
        or ``jms_x_bins`` is not at least two finite, non-negative, strictly increasing edges.
    """
    if estimator not in RESPONSE_ESTIMATORS:
        raise ConfigError(f"unknown response estimator '{estimator}'; valid: {', '.join(RESPONSE_ESTIMATORS)}")
    if jms_sample not in JMS_SAMPLES:
        raise ConfigError(f"unknown JMS sample '{jms_sample}'; valid: {', '.join(JMS_SAMPLES)}")
    if jms_pt not in JMS_PT_VARIABLES:
        raise ConfigError(f"unknown JMS pT variable '{jms_pt}'; valid: {', '.join(JMS_PT_VARIABLES)}")
    if jms_target not in JMS_TARGETS:
        raise ConfigError(f"unknown JMS target '{jms_target}'; valid: {', '.join(JMS_TARGETS)}")
    x_edges = jms_x_edges(jms_x_bins)
    pt, mass, tpt, tm = (np.asarray(a, dtype=np.float64) for a in (pt, mass, truth_pt, truth_mass))
    for option, value, needs in (("sample", jms_sample, "resonance"), ("target", jms_target, "peak")):
        if value == needs and (labels is None or np.shape(labels) != pt.shape):
            raise ConfigError(f"JMS {option} '{value}' needs the jets' truth labels (R10TruthLabel), one per jet")
    lab = np.asarray(labels) if labels is not None else np.zeros(pt.shape, dtype=np.int8)
    ok = (tpt > 0) & (pt > 0)
    pt, mass, tpt, tm, lab = pt[ok], mass[ok], tpt[ok], tm[ok], lab[ok]
    ibin = np.digitize(tpt, PT_BINS) - 1
    x, resp, err = [], [], []
    for b in range(len(PT_BINS) - 1):
        s = ibin == b
        if s.sum() >= MIN_JETS_PER_BIN:
            x.append(float(np.median(pt[s])))
            v, e = response_with_error(pt[s] / tpt[s], estimator)
            resp.append(v)
            err.append(e)
    if len(x) < 2:
        raise ConfigError(
            f"large-R calibration: fewer than 2 truth-pT bins with >= {MIN_JETS_PER_BIN} matched jets; "
            "simulate more events"
        )
    order = np.argsort(x)
    x_n, r_n, e_n = (np.asarray(a, dtype=np.float64)[order] for a in (x, resp, err))
    ok_err = np.isfinite(e_n) & (e_n > 0)
    e_n = np.where(ok_err, np.maximum(e_n, JES_NODE_ERR_MIN), np.max(e_n[ok_err], initial=1e-2))
    r_fit = r_n
    if smooth:
        from lhcml.sim.jet_calibration import fit_response_curve

        coef = fit_response_curve(x_n, r_n, e_n, JES_FIT_ORDER_MAX)
        r_fit = np.polynomial.polynomial.polyval(np.log(x_n), coef)
    table = {"pt": x_n, "jes": 1.0 / r_fit}
    pt_cal = pt * np.interp(pt, table["pt"], table["jes"])
    lo, hi = JMS_TRUTH_MASS_RANGE
    x_true = np.where(tpt > 0, tm / tpt, 0.0)
    x_reco = mass / pt_cal
    jbin = np.digitize(pt_cal if jms_pt == "reco" else tpt, JMS_PT_BINS) - 1
    kbin = np.digitize(x_true, x_edges) - 1
    use = (tm > lo) & (tm < hi) & (mass > 0)
    if jms_sample == "resonance":
        use &= lab > 0
    pts, xs, rows, jms = [], [], [], []
    for k in range(len(x_edges) - 1):
        for b in range(len(JMS_PT_BINS) - 1):
            s = use & (jbin == b) & (kbin == k)
            if s.sum() >= MIN_JETS_PER_JMS_CELL:
                pts.append(float(np.median(pt_cal[s])))
                xs.append(float(np.median(x_reco[s])))
                rows.append(k)
                jms.append(1.0 / response_estimate(mass[s] / tm[s], estimator))
    if len(jms) < 1:
        raise ConfigError(
            f"large-R calibration: no (pT, m/pT) cell with >= {MIN_JETS_PER_JMS_CELL} W/Z/top-mass jets; simulate "
            "a W/Z/top sample"
        )
    entry = {
        "pt": [round(float(v), 2) for v in table["pt"]],
        "jes": [round(float(v), 5) for v in table["jes"]],
        "jes_nodes": [round(float(v), 5) for v in 1.0 / r_n],
        "jes_err": [round(float(v), 5) for v in e_n / r_n**2],
        "pt_jms": [round(v, 2) for v in pts],
        "jms": [round(v, 5) for v in jms],
        "x_jms": [round(v, 4) for v in xs],
        "row_jms": rows,
    }
    if jms_target == "peak":
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in entry.items()}
        pt_c = pt * np.interp(pt, arrays["pt"], arrays["jes"])  # the rounded table, as it will be applied
        m_c = mass * _factors({0.0: arrays}, pt_c, 0.0, "pt_jms", "jms", mass=mass)
        entry.update(derive_insitu(pt_c, m_c, lab, tm))
    return entry
