"""Photon simulation fidelity: ATLAS 2012 Tight efficiency of prompt photons vs E_T and pile-up,
shower shapes, hadronic leakage and isolation vs mu, and fake-photon Tight pass rates in dijets.

Prompt photons: Pythia ``gamma_jet`` (truth-matched prompt photons, 25-50 GeV, |eta| < 1.37),
each hard-scatter sample simulated at mu = 0 and at mu = 60 (Poisson overlay of a Pythia
minimum-bias library, the readout's mean pile-up subtraction). Fakes: ``dijet_photon`` (JF17-style
EM filter, the default) and ``dijet_photon_unfiltered`` (non-prompt candidates with E_T > 25 GeV).
The ATLAS 2012 Tight menu is :func:`lhcml.tasks.photon.cuts.atlas_2012_tight`; "isolated" means
``etcone20_corrected < 0.065 E_T`` (the calorimeter part of ATLAS's FixedCutLoose working point;
docs/references.md §5 quotes the ATLAS efficiencies for isolated photons). Errors are binomial.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/photon_fidelity.py --work benchmarks/_work/photon_fid \\
        --prompt-events 2000 --fake-events 4000 --mus 0 60

Every (process, mu) sample is cached in ``--work`` (``<process>_mu<mu>.npz``); rerunning prints the
table from the cache.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lhcml.formatting import pm

PT_BINS = (25.0, 30.0, 35.0, 40.0, 45.0, 50.0)
#: ATLAS Tight efficiency for isolated photons, |eta| < 0.6 (docs/references.md §5, digitised Delphes card)
ATLAS_EFF = {(25.0, 30.0): 0.84, (45.0, 50.0): 0.90}
#: our numbers before the fixes (issue 13, the independent check; docs/benchmarks/calo.md)
OLD = {"tight_mu0": 0.35, "tight_mu60": 0.15, "weta2_median": 0.0107, "ws3_median": 0.669,
       "rhad_fail_mu60": 0.37, "etcone20_rise_mu60_gev": 3.7}  # fmt: skip


def _frac(mask: np.ndarray) -> tuple[float, float, int]:
    n = len(mask)
    if n == 0:
        return float("nan"), float("nan"), 0
    p = float(np.mean(mask))
    return p, float(np.sqrt(max(p * (1 - p), 1.0 / n) / n)), n


def _sample(work: Path, process: str, n: int, mu: float, seed: int, pileup) -> np.ndarray:
    from lhcml.sim.photons import simulate_photon_events

    path = work / f"{process}_mu{int(mu)}_n{n}.npz"
    if path.is_file():
        return np.load(path)["photons"]
    t = time.time()
    ph = simulate_photon_events(process, n, mu, seed, pileup if mu > 0 else None, batch_size=100,
                                min_pt_gev=20.0)["photons"]  # fmt: skip
    dt = time.time() - t
    np.savez(path, photons=ph)
    timing = work / "timing.json"
    d = json.loads(timing.read_text()) if timing.is_file() else {}
    d[path.stem] = {"events": n, "seconds": round(dt, 1), "candidates": int(len(ph))}
    timing.write_text(json.dumps(d, indent=1))
    print(f"  simulated {process} mu={mu:g}: {n} events in {dt:.0f} s, {len(ph)} candidates", flush=True)
    return ph


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("benchmarks/_work/photon_fid"))
    ap.add_argument("--prompt-events", type=int, default=2000)
    ap.add_argument("--fake-events", type=int, default=4000)
    ap.add_argument("--noise-events", type=int, default=16, help="pile-up-only events for the noise table")
    ap.add_argument("--mus", type=float, nargs="+", default=[0.0, 60.0])
    ap.add_argument("--fake-mus", type=float, nargs="+", default=None, help="default: --mus")
    ap.add_argument("--library-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    from lhcml.sim.pileup import PileupLibrary, build_pileup_library
    from lhcml.tasks.photon.cuts import (
        DIRECTIONS,
        atlas_2012_tight,
        atlas_2012_tight_menus,
        cut_variables,
    )

    args.work.mkdir(parents=True, exist_ok=True)
    lib_path = args.work / f"minbias_{args.library_size}.h5"
    if not lib_path.is_file():
        build_pileup_library(args.library_size, args.seed + 1000).save(lib_path)
    lib = PileupLibrary.load(lib_path)
    fake_mus = args.fake_mus if args.fake_mus is not None else args.mus

    print("\n## Prompt photons (gamma_jet), ATLAS 2012 Tight, 25-50 GeV, |eta| < 1.37")
    head = f"{'mu':>4s} {'E_T [GeV]':>10s} {'n':>5s} {'Tight (all)':>14s} {'n iso':>6s} {'Tight (isolated)':>17s} {'ATLAS |eta|<0.6':>16s}"
    print(head)
    summary, prompt = {}, {}
    for mu in args.mus:
        ph = _sample(args.work, "gamma_jet", args.prompt_events, mu, args.seed, lib)
        pt = ph["pt"] / 1e3
        sel = (ph["isPromptPhoton"] == 1) & (np.abs(ph["eta"]) < 1.37) & (pt > PT_BINS[0]) & (pt < PT_BINS[-1])
        p = ph[sel]
        prompt[mu] = p
        tight = atlas_2012_tight(p)
        iso = p["etcone20_corrected"] < 0.065 * p["pt"]
        bins = list(zip(PT_BINS[:-1], PT_BINS[1:], strict=True)) + [(PT_BINS[0], PT_BINS[-1])]
        for lo, hi in bins:
            b = (p["pt"] / 1e3 >= lo) & (p["pt"] / 1e3 < hi)
            a, ea, n = _frac(tight[b])
            i, ei, ni = _frac(tight[b & iso])
            ref = ATLAS_EFF.get((lo, hi), "")
            print(f"{mu:4g} {f'{lo:g}-{hi:g}':>10s} {n:5d} {pm(a, ea):>15s} {ni:6d} {pm(i, ei):>18s} {ref!s:>16s}")
        a, ea, n = _frac(tight)
        i, ei, ni = _frac(tight[iso])
        summary[mu] = {
            "n_prompt": n, "tight": a, "tight_err": ea, "tight_isolated": i, "tight_isolated_err": ei,
            "n_isolated": ni, "converted": float(p["converted"].mean()),
            "weta2_median": float(np.median(p["weta2"])), "ws3_median": float(np.median(p["weta1"])),
            "rhad_fail": float(np.mean(np.where(np.abs(p["eta"]) < 0.8, p["Rhad1"], p["Rhad"]) >= 0.02)),
            "etcone20_mean_gev": float(p["etcone20"].mean() / 1e3),
            "etcone20_rms_gev": float(p["etcone20"].std() / 1e3),
            "etcone20_corrected_mean_gev": float(p["etcone20_corrected"].mean() / 1e3),
            "etcone20_corrected_rms_gev": float(p["etcone20_corrected"].std() / 1e3),
            "rho_median_gev": float(np.median(p["eventDensity"]) / 1e3),
        }  # fmt: skip

    print("\n## Prompt-photon shapes and pile-up (25-50 GeV), new vs old (issue 13)")
    print(f"{'quantity':32s} " + " ".join(f"{f'mu={m:g}':>10s}" for m in args.mus) + f" {'old':>10s}")
    rows = [("Tight efficiency (all)", "tight", "tight_mu0/60"), ("Tight efficiency (isolated)", "tight_isolated", None),
            ("median w_eta2", "weta2_median", "weta2_median"), ("median w_s3", "ws3_median", "ws3_median"),
            ("fraction failing R_had < 0.02", "rhad_fail", "rhad_fail_mu60"),
            ("etcone20 mean [GeV]", "etcone20_mean_gev", None), ("etcone20 RMS [GeV]", "etcone20_rms_gev", None),
            ("etcone20_corrected mean [GeV]", "etcone20_corrected_mean_gev", None),
            ("etcone20_corrected RMS [GeV]", "etcone20_corrected_rms_gev", None),
            ("rho median [GeV / unit area]", "rho_median_gev", None), ("converted fraction", "converted", None)]  # fmt: skip
    for label, key, old in rows:
        vals = " ".join(f"{summary[m][key]:10.4g}" for m in args.mus)
        o = {"tight_mu0/60": f"{OLD['tight_mu0']}/{OLD['tight_mu60']}", None: "-"}.get(old, OLD.get(old, "-"))
        print(f"{label:32s} {vals} {o!s:>10s}")
    print(f"(old etcone20 rise at mu=60: +{OLD['etcone20_rise_mu60_gev']} GeV)")

    print("\n## Prompt photons failing each Tight cut alone (25-50 GeV; unconverted / converted)")
    menus = atlas_2012_tight_menus()
    for mu in args.mus:
        p = prompt[mu]
        cells = []
        for conv, name in ((False, "unconverted"), (True, "converted")):
            q, m = p[p["converted"] == conv], menus[name]
            ie, ip = m.bins(q)
            ok = (ie >= 0) & (ie < len(m.eta_edges) - 1) & (ip >= 0) & (ip < len(m.pt_edges_gev) - 1)
            x, c = cut_variables(q[ok], m.variables), m.cuts[ie[ok], ip[ok]]
            less = np.array([DIRECTIONS[v] == "<" for v in m.variables])
            cells.append(dict(zip(m.variables, (~np.where(less, x < c, x > c)).mean(axis=0), strict=True)))
        summary[mu]["fail_alone"] = cells
        print(f"mu={mu:g}: " + ", ".join(f"{v} {cells[0][v]:.2f}/{cells[1][v]:.2f}" for v in cells[0]))

    pu_mus = [m for m in args.mus if m > 0]
    if pu_mus:
        from lhcml.sim.calo_geometry import load_geometry
        from lhcml.sim.photons import pileup_noise_per_cell

        geo = load_geometry()
        print(f"\n## Noise per cell, |eta| < 0.7 [MeV]: electronic, pile-up ({args.noise_events} pile-up-only events), total")
        for mu in pu_mus:
            pu = pileup_noise_per_cell(lib, mu, args.noise_events, args.seed + 2, geometry=geo)
            summary[mu]["pileup_noise_mev"] = pu
            print(f"mu={mu:g}: " + ", ".join(f"{k} {geo.layer(k).noise_mev:.0f} / {v:.0f} / {np.hypot(v, geo.layer(k).noise_mev):.0f}"
                                          for k, v in pu.items()))  # fmt: skip

    print("\n## Fake photons (non-prompt candidates, E_T > 25 GeV, |eta| < 1.37), ATLAS 2012 Tight")
    print(f"{'process':26s} {'mu':>4s} {'events':>7s} {'cands':>6s} {'pi0/eta-led':>11s} {'Loose-R_had pass':>16s} "
          f"{'Tight pass':>16s} {'weighted':>9s}  ATLAS")  # fmt: skip
    fakes = {}
    for proc in ("dijet_photon", "dijet_photon_unfiltered"):
        for mu in fake_mus:
            ph = _sample(args.work, proc, args.fake_events, mu, args.seed + 1, lib)
            f = ph[(ph["isPromptPhoton"] == 0) & (np.abs(ph["eta"]) < 1.37) & (ph["pt"] > 25e3)]
            tight = atlas_2012_tight(f)
            a, ea, n = _frac(tight)
            w = f["mcEventWeight"].astype(np.float64)
            aw = float((w * tight).sum() / w.sum()) if n else float("nan")
            pi0 = float(np.isin(f["truthOrigin"], (1, 2)).mean()) if n else float("nan")
            rh = np.where(np.abs(f["eta"]) < 0.8, f["Rhad1"], f["Rhad"]) < 0.02
            fakes[f"{proc}_mu{mu:g}"] = {"n": n, "tight": a, "tight_err": ea, "tight_weighted": aw, "pi0_eta": pi0,
                                         "rhad_pass": float(rh.mean()) if n else float("nan")}  # fmt: skip
            print(f"{proc:26s} {mu:4g} {args.fake_events:7d} {n:6d} {pi0:11.2f} {float(rh.mean()) if n else float('nan'):16.3f} "
                  f"{pm(a, ea):>17s} {aw:9.4f}  not published (docs/references.md §5)")  # fmt: skip
    (args.work / "results.json").write_text(json.dumps({"prompt": summary, "fakes": fakes}, indent=1))


if __name__ == "__main__":
    main()
