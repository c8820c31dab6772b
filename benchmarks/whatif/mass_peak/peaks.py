"""Where the groomed large-R jet mass peak sits, by estimator (issue 12, fourteenth version;
docs/benchmarks/sim_large_r.md, docs/references.md §35).

Reads the per-jet files of ``benchmarks/sim_large_r.py --save-jets DIR`` (``<process>_mu<mu>_<type>_s<seed>.npz``,
all types from the same events, the same hard events at every μ) and prints, for ATLAS-labelled top, W and Z jets
(truth-jet mass > 140 / 50-100 / 60-110 GeV), |η| < 2 and calibrated pT in ``--pt``, per constituent type and μ,
the position of the peak of

* the calibrated groomed mass (reco),
* the trimmed truth-jet mass of the same jets (truth: the JMS target),

by four estimators (:mod:`lhcml.metrics.peaks`): ``g1`` / ``g15`` the mean of a Gaussian fitted iteratively to
the core within ±1 σ / ±1.5 σ, ``cb`` the peak of a Crystal Ball fit (low-side power-law tail, the 2-90 %
quantiles), ``kde`` the kernel-density mode; beside them the JMS closure as ATLAS's MC-based calibration
defines an average response (the mean of a Gaussian fitted to the core of m / m_truth-jet, here ±1.5 σ) and
``smeared``: the ``g1`` peak of the truth masses multiplied by a symmetric Gaussian response of the measured
core mean and IQnR (one fixed draw) — where the reco peak would sit with a perfectly symmetric detector
response. Errors: ``--nboot`` bootstrap resamplings of the hard events (each seed's events on their own, the same
resampling for every μ, type and estimator). Per seed: every estimator on each seed alone; the seed-to-seed
standard deviation beside the per-seed error the pooled bootstrap implies (pooled error × √n_seeds).

``--insitu TABLE``: the calibrated masses are first multiplied by the in-situ-like residual of TABLE (a table of
``benchmarks/sim_large_r.py --derive-insitu``, whose JES/JMS must be those the saved jets were calibrated with —
the shipped ones for ``--derive-insitu`` without ``--base-table``): the peaks as that table would place them
(:func:`lhcml.sim.large_r_calibration.insitu_factors`; issue 12, sixteenth version).

usage: peaks.py DIR --seeds 5151,5252 [--types pflow,clusters,tcc] [--mus 0,60,140] [--events 1500]
                [--pt 550 650] [--particles top,W,Z] [--nboot 50] [--json OUT] [--insitu TABLE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lhcml.metrics.peaks import crystal_ball_fit, gauss_core_peak, kde_mode

STRIDE = 10_000_000  # lhcml.sim.events.EVENT_NUMBER_STRIDE
MASS = {"top": 172.5, "W": 80.4, "Z": 91.19}
#: (process, label code, truth-jet mass low, high): ATLAS's R21Consolidated windows
GROUPS = {"top": ("top", 1, 140.0, np.inf), "W": ("wz", 2, 50.0, 100.0), "Z": ("wz", 3, 60.0, 110.0)}
ESTIMATORS = {
    "g1": lambda x: gauss_core_peak(x, n_sigma=1.0),
    "g15": lambda x: gauss_core_peak(x, n_sigma=1.5),
    "cb": lambda x: crystal_ball_fit(x).peak,
    "kde": kde_mode,
}


def load(folder: Path, process: str, mu: float, ctype: str, seeds: list[int], group, pt: tuple[float, float],
         insitu: Path | None = None):
    _, code, lo, hi = group
    residual = None
    if insitu is not None:
        from lhcml.sim.large_r_calibration import calibration_table

        residual = calibration_table(ctype, insitu)
        if residual is None or not any("insitu" in v for v in residual.values()):
            print(f"error: {insitu} has no in-situ residual for {ctype} (make one with benchmarks/sim_large_r.py "
                  "--derive-insitu)", file=sys.stderr)
            sys.exit(2)
    parts = []
    for s in seeds:
        f = folder / f"{process}_mu{mu:g}_{ctype}_s{s}.npz"
        if not f.exists():
            print(f"error: {f} is missing (run benchmarks/sim_large_r.py --save-jets {folder} --seed {s} first)",
                  file=sys.stderr)
            sys.exit(2)
        z = np.load(f)
        if "eventNumber" not in z.files:
            print(f"error: {f} has no eventNumber: written by a sim_large_r.py older than 16e4b63", file=sys.stderr)
            sys.exit(2)
        tm = z["truthJetMass"] / 1e3
        ptc = z["pt"] / 1e3
        sel = ((z["R10TruthLabel"] == code) & (tm > lo) & (tm < hi) & (np.abs(z["eta"]) < 2)
               & (ptc > pt[0]) & (ptc < pt[1]))
        mass = z["mass"][sel] / 1e3
        if residual is not None:
            from lhcml.sim.large_r_calibration import insitu_factors

            mass = mass * insitu_factors(ptc[sel], mass, residual, mu)
        parts.append({"mass": mass, "truth": tm[sel], "event": z["eventNumber"][sel] - np.int64(s) * STRIDE,
                      "seed": np.full(sel.sum(), s)})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def estimates(d: dict, w: np.ndarray, smear_rng_seed: int | None = None) -> dict[str, float]:
    """Every estimator on the jets of ``d`` repeated ``w`` times (integer bootstrap weights)."""
    m, t = np.repeat(d["mass"], w), np.repeat(d["truth"], w)
    out = {f"reco_{k}": fn(m) for k, fn in ESTIMATORS.items()}
    out.update({f"truth_{k}": fn(t) for k, fn in ESTIMATORS.items()})
    r = m / t
    out["jms_core"] = gauss_core_peak(r, n_sigma=1.5)
    q16, q50, q84 = np.percentile(r, [16, 50, 84]) if len(r) >= 10 else (np.nan,) * 3
    out["iqnr"] = 0.5 * (q84 - q16) / q50
    out["median"] = float(np.median(m)) if len(m) else float("nan")
    if smear_rng_seed is not None:
        rng = np.random.default_rng(smear_rng_seed)
        out["smeared_g1"] = gauss_core_peak(t * rng.normal(out["jms_core"], out["iqnr"], len(t)), n_sigma=1.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--types", default="pflow,clusters,tcc")
    ap.add_argument("--mus", default="0,60,140")
    ap.add_argument("--events", type=int, default=1500, help="hard events per seed (the bootstrap's range)")
    ap.add_argument("--pt", type=float, nargs=2, default=(550.0, 650.0), help="calibrated pT window, GeV")
    ap.add_argument("--particles", default="top,W,Z")
    ap.add_argument("--nboot", type=int, default=50)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--insitu", type=Path, default=None, metavar="TABLE",
                    help="apply the in-situ-like residual of this table (sim_large_r.py --derive-insitu) to the saved "
                         "calibrated masses first")
    ap.add_argument("--smear-scan", default=None, metavar="S1,S2,...",
                    help="only: the peaks of the truth-jet masses (first type, first μ) multiplied by a symmetric "
                         "Gaussian response of mean 1 and these relative widths (one fixed draw each), by every "
                         "estimator: how far detector smearing alone moves the peak of a skewed distribution")
    a = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
        mus = [float(m) for m in a.mus.split(",")]
    except ValueError as e:
        print(f"error: --seeds / --mus must be comma-separated numbers ({e})", file=sys.stderr)
        return 2
    if not a.folder.is_dir():
        print(f"error: {a.folder} is not a folder", file=sys.stderr)
        return 2
    if a.insitu is not None and not a.insitu.is_file():
        print(f"error: --insitu {a.insitu}: no such file", file=sys.stderr)
        return 2
    parts = a.particles.split(",")
    bad = [p for p in parts if p not in GROUPS]
    if bad:
        print(f"error: unknown particle {bad[0]!r} (valid: {', '.join(GROUPS)})", file=sys.stderr)
        return 2
    types = a.types.split(",")
    if a.smear_scan is not None:
        try:
            widths = [float(x) for x in a.smear_scan.split(",")]
        except ValueError as e:
            print(f"error: --smear-scan must be comma-separated numbers ({e})", file=sys.stderr)
            return 2
        smear_scan(a.folder, parts, types[0], mus[0], seeds, tuple(a.pt), widths, a.nboot)
        return 0
    rng = np.random.default_rng(14)
    boots = {s: [np.bincount(rng.integers(0, a.events, a.events), minlength=a.events) for _ in range(a.nboot)]
             for s in seeds}
    result = {}
    for part in parts:
        group = GROUPS[part]
        for ctype in types:
            for mu in mus:
                d = load(a.folder, group[0], mu, ctype, seeds, group, tuple(a.pt), a.insitu)
                n = len(d["event"])
                nom = estimates(d, np.ones(n, np.int64), smear_rng_seed=int(mu) + 1)
                rows = []
                for i in range(a.nboot):
                    w = np.zeros(n, np.int64)
                    for s in seeds:
                        sel = d["seed"] == s
                        w[sel] = boots[s][i][d["event"][sel]]
                    rows.append(estimates(d, w))
                per_seed = {s: estimates({k: v[d["seed"] == s] for k, v in d.items()}, np.ones(int((d["seed"] == s).sum()),
                                                                                             np.int64)) for s in seeds}
                res = {"jets": n, "values": {}}
                for k, v in nom.items():
                    b = np.array([r[k] for r in rows]) if k in rows[0] else np.array([np.nan])
                    ps = np.array([per_seed[s][k] for s in seeds]) if k in per_seed[seeds[0]] else np.array([np.nan])
                    err = float(np.nanstd(b))
                    res["values"][k] = {"value": float(v), "boot_err": err,
                                        "per_seed": [float(x) for x in ps],
                                        "seed_std": float(np.nanstd(ps, ddof=1)) if len(seeds) > 1 else float("nan"),
                                        "expected_seed_err": err * np.sqrt(len(seeds))}
                result[f"{part}/{ctype}/{mu:g}"] = res
                print(f"{part} {ctype} mu={mu:g} jets={n} " + " ".join(
                    f"{k}={res['values'][k]['value']:.2f}±{res['values'][k]['boot_err']:.2f}" for k in nom), flush=True)
    print_tables(result, parts, types, mus, a)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


def smear_scan(folder: Path, parts: list[str], ctype: str, mu: float, seeds: list[int], pt, widths: list[float],
               nboot: int) -> None:
    print(f"\n### Truth-jet masses × a symmetric Gaussian response N(1, s): peak − particle mass, GeV ({ctype} jets' "
          f"truth jets, μ = {mu:g}, seeds {','.join(map(str, seeds))}; errors: {nboot} resamplings of the jets and the "
          "smearing)\n")
    print("| particle | s | jets | " + " | ".join(ESTIMATORS) + " | median |")
    print("|---" * (4 + len(ESTIMATORS)) + "|")
    for part in parts:
        group = GROUPS[part]
        t = load(folder, group[0], mu, ctype, seeds, group, pt)["truth"]
        for s_ in [0.0, *widths]:
            rng = np.random.default_rng(int(1000 * s_) + 7)

            def est(x: np.ndarray, s_=s_, rng=rng) -> dict[str, float]:
                y = x * rng.normal(1.0, s_, len(x)) if s_ > 0 else x
                return {**{k: fn(y) for k, fn in ESTIMATORS.items()}, "median": float(np.median(y))}

            nom = est(t)
            bs = [est(t[rng.integers(0, len(t), len(t))]) for _ in range(nboot)]
            print(f"| {part} | {s_:g} | {len(t)} | " + " | ".join(
                f"{nom[k] - MASS[part]:+.1f} ± {np.nanstd([b[k] for b in bs]):.1f}" for k in (*ESTIMATORS, "median")) + " |",
                flush=True)


def print_tables(result: dict, parts: list[str], types: list[str], mus: list[float], a) -> None:
    ms = "/".join(f"{m:g}" for m in mus)
    for part in parts:
        mass = MASS[part]
        print(f"\n### {part} jets: peak − {mass} GeV (|η| < 2, calibrated pT {a.pt[0]:g}-{a.pt[1]:g} GeV, seeds {a.seeds}; "
              f"μ = {ms})\n")
        print("| type | jets | quantity | " + " | ".join(f"μ = {m:g}" for m in mus) + " |")
        print("|---" * (3 + len(mus)) + "|")
        for ctype in types:
            nj = "/".join(str(result[f"{part}/{ctype}/{m:g}"]["jets"]) for m in mus)
            for k, label, shift in (("reco_g1", "reco, Gaussian core ±1σ", True), ("reco_g15", "reco, core ±1.5σ", True),
                                    ("reco_cb", "reco, Crystal Ball peak", True), ("reco_kde", "reco, KDE mode", True),
                                    ("truth_g1", "truth jet, core ±1σ", True), ("truth_cb", "truth jet, Crystal Ball", True),
                                    ("truth_kde", "truth jet, KDE mode", True), ("smeared_g1", "truth × symmetric response, ±1σ", True),
                                    ("jms_core", "JMS closure (core ±1.5σ of m/m_truth)", False), ("iqnr", "IQnR", False)):
                cells = []
                for m in mus:
                    v = result[f"{part}/{ctype}/{m:g}"]["values"][k]
                    if shift:
                        cells.append(f"{v['value'] - mass:+.1f} ± {v['boot_err']:.1f}" if np.isfinite(v["boot_err"])
                                     else f"{v['value'] - mass:+.1f}")
                    else:
                        cells.append(f"{v['value']:.3f} ± {v['boot_err']:.3f}")
                print(f"| {ctype} | {nj} | {label} | " + " | ".join(cells) + " |")
        print(f"\nper seed ({part}; seed-to-seed std / per-seed error implied by the pooled bootstrap, GeV):\n")
        print("| type | estimator | " + " | ".join(f"μ = {m:g}" for m in mus) + " |")
        print("|---" * (2 + len(mus)) + "|")
        for ctype in types:
            for k in ("reco_g1", "reco_g15", "reco_cb", "reco_kde", "truth_g1", "truth_kde"):
                cells = []
                for m in mus:
                    v = result[f"{part}/{ctype}/{m:g}"]["values"][k]
                    cells.append(f"{v['seed_std']:.1f} / {v['expected_seed_err']:.1f}")
                print(f"| {ctype} | {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
