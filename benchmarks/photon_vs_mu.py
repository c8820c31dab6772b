"""Photon identification vs pile-up: cuts, DNN, CNN and CNN on PAED-denoised images at mu = 0-200.

Each hard-scatter event (Pythia ``gamma_jet`` for prompt photons, ``dijet_photon`` with the
EM-enriched generator filter for jet fakes) is generated ONCE and passed through the
calorimeter at every mu of ``--mus`` with independent pile-up overlays (Poisson(mu)
minimum-bias events from one library). The samples at different mu therefore share their
hard scatters: the differences between mu points are due to pile-up alone (correlated
samples, smaller statistical error on the differences), and every cluster also carries its
pile-up-free twin image (same hard cells, same noise) as the mu-independent reference.
Train/val/test are split by hard-scatter event (event number), so no test event is seen in
training at any mu.

Steps (each cached under ``--work``; rerunning skips finished steps, the simulation resumes
chunk by chunk and stops at ``--sim-seconds``):

1. ``sim``: chunks of ``--chunk`` events per process, alternating signal/background;
2. ``split``: per mu, ``data_mu<mu>/photon_{train,val,test}.h5`` (50/10/40 by event);
3. ``cuts``: tight menus at 80 / 90 % optimised on the ``--train-mu`` training split;
4. ``train``: ``shower_dnn`` and ``photon_cnn`` (``lhcml`` shared trainer) on ``--train-mu``;
5. ``paed``: PAED trained on (with pile-up, pile-up-free) pairs of the training split of
   every mu (mu = 0 included: one denoiser for all conditions, it must infer the pile-up level); the training/validation files at ``--train-mu`` and all test files denoised;
   a second ``photon_cnn`` (``photon_cnn_paed``) trained on the denoised ``--train-mu`` images;
6. ``eval``: fake rejection at 80 / 90 % photon efficiency with binomial errors, per mu, for
   cuts, DNN, CNN, CNN on PAED-denoised images (both the CNN trained with pile-up and the one
   trained on denoised images) and the CNN on the pile-up-free twins; tables, JSON, PNG plot.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/photon_vs_mu.py --work benchmarks/_work/photon_mu \\
        --sim-seconds 1500 --mus 0 50 100 200 --train-mu 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lhcml.atomic import atomic_path
from lhcml.formatting import json_safe, pm

SIGNAL, BACKGROUND = "gamma_jet", "dijet_photon"


def acceptance_filter(
    cols: dict, event: np.ndarray, n_events: int, pt_min_gev: float = 17.0
) -> np.ndarray:
    """Signal generator filter: a final-state photon with pT > ``pt_min_gev`` in |eta| < 1.45.

    Loose against the analysis selection (clusters with E_T > 20 GeV in |eta| < 1.37, truth
    match within dR < 0.1): it only skips the calorimeter for events that cannot give a
    selected prompt photon (no isolation requirement, unlike the background EM filter).
    """
    px, py, pz = (np.asarray(cols[k], float) for k in ("px", "py", "pz"))
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pt), where=pt > 0))
    ok = (np.asarray(cols["pid"]) == 22) & (pt > pt_min_gev) & (np.abs(eta) < 1.45)
    out = np.zeros(n_events, bool)
    out[event[ok]] = True
    return out


def simulate_chunk(process: str, n: int, seed: int, mus: list[float], pileup) -> dict[float, dict]:
    """Generate ``n`` events once and simulate the calorimeter at every mu; selected candidates per mu."""
    import awkward as ak

    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.decays import decay_v0s
    from lhcml.sim.generator import PARTICLE_FIELDS, PythiaGenerator, to_flat
    from lhcml.sim.photons import EM_FILTER_DEFAULTS, em_filter, simulate_particles
    from lhcml.sim.processes import get_process
    from lhcml.tasks.photon.dataset import select_candidates

    geo = load_geometry()
    gen = PythiaGenerator(get_process(process), int(seed)).init()
    rng = np.random.default_rng([int(seed), 0xCA10])
    evs = gen.generate(n)
    particles = evs.particles[evs.particles.final]
    particles = decay_v0s(particles, rng)
    particles = particles[particles.final]
    weights = np.asarray(evs.weights)
    numbers = np.arange(n) + int(seed) * 10_000
    c0, k0 = to_flat(ak.Array(particles), ["pid", "px", "py", "pz"])
    ev0 = np.repeat(np.arange(n), k0)
    ok = em_filter(c0, ev0, n, EM_FILTER_DEFAULTS[BACKGROUND]) if process == BACKGROUND else acceptance_filter(c0, ev0, n)
    particles, weights, numbers = particles[ok], weights[ok], numbers[ok]
    m = len(particles)
    out = {}
    for mu in mus:
        r = np.random.default_rng([int(seed), int(mu), 0xB0B])
        n_pu = np.zeros(m, np.int64)
        p = particles
        if mu > 0 and m:
            p, n_pu = pileup.overlay(particles, float(mu), r)
        if m == 0:
            out[mu] = None
            continue
        cols, counts = to_flat(ak.Array(p), list(PARTICLE_FIELDS))
        d = simulate_particles(cols, np.repeat(np.arange(m), counts), m, r, mu=float(mu), n_pu=n_pu,
                               event_numbers=numbers, weights=weights, geometry=geo, min_pt_gev=20.0,
                               raw_images=True, pileup=pileup)  # fmt: skip
        out[mu] = select_candidates(d, process)
    return out


def step_sim(
    work: Path, mus: list[float], chunk: int, budget_s: float, max_chunks: int, bkg_factor: int
) -> None:
    import h5py

    from lhcml.sim.pileup import PileupLibrary, build_pileup_library

    lib_path = work / "pileup.h5"
    lib = (
        PileupLibrary.load(lib_path)
        if lib_path.is_file()
        else build_pileup_library(1000, 7, lib_path)
    )
    sdir = work / "sim"
    sdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = work / "sim_log.jsonl"
    for c in range(max_chunks):
        for k, proc in enumerate((SIGNAL, BACKGROUND)):
            path = sdir / f"{proc}_c{c:04d}.h5"
            if path.is_file():
                continue
            if time.time() - t0 > budget_s:
                print(f"[sim] budget of {budget_s:.0f} s reached at chunk {c}", flush=True)
                return
            t = time.time()
            n = chunk * (bkg_factor if proc == BACKGROUND else 1)
            res = simulate_chunk(proc, n, 1000 + 2 * c + k, mus, lib)
            tables = {}
            for mu, d in res.items():
                if d is None:
                    continue
                for key, v in d.items():
                    tables[f"mu{int(mu)}/{key}"] = v
            # one file per chunk, one group per mu (atomic: temp file, rename)
            with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
                for key, v in tables.items():
                    f.create_dataset(key, data=v, compression="lzf")
            n_cand = {int(mu): (0 if d is None else len(d["photons"])) for mu, d in res.items()}
            rec = {
                "process": proc,
                "chunk": c,
                "events": n,
                "seconds": time.time() - t,
                "candidates": n_cand,
            }
            with log.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(
                f"[sim {time.time() - t0:6.0f}s] {proc} chunk {c}: {rec['seconds']:.0f} s, {n_cand}",
                flush=True,
            )


def step_split(work: Path, mus: list[float]) -> dict[float, dict[str, Path]]:
    import h5py

    from lhcml.tasks.photon.dataset import split_and_write

    out = {}
    files = sorted((work / "sim").glob("*_c*.h5"))
    for mu in mus:
        d = work / f"data_mu{int(mu)}"
        paths = {s: d / f"photon_{s}.h5" for s in ("train", "val", "test")}
        out[mu] = paths
        if paths["test"].is_file():
            continue
        parts = []
        for f in files:
            with h5py.File(f, "r") as h:
                g = h.get(f"mu{int(mu)}")
                if g is not None and len(g["photons"]):
                    parts.append({k: g[k][:] for k in g})
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        # split by hard-scatter event (hash of the event number): 50 / 10 / 40, the same events
        # in the same split at every mu; a large test share because the test sets are the point
        ev = merged["photons"]["eventNumber"].astype(np.uint64)
        u = ((ev * np.uint64(2654435761)) % np.uint64(1000)).astype(float) / 1000
        for s, sel in (("train", u < 0.5), ("val", (u >= 0.5) & (u < 0.6)), ("test", u >= 0.6)):
            split_and_write(
                {k: v[sel] for k, v in merged.items()}, d, 1, (1.0, 0.0, 0.0), prefix=f"_{s}"
            )
            (d / f"_{s}_train.h5").replace(paths[s])
            for extra in ("val", "test"):
                (d / f"_{s}_{extra}.h5").unlink(missing_ok=True)
    return out


def _train(
    cfg_path: str, train: list[Path], val: list[Path], out: Path, overrides: list[str]
) -> Path:
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train as run

    ckpts = sorted((out / "checkpoints").glob("best-*.ckpt"))
    if ckpts:
        return ckpts[-1]
    tl = ",".join(str(p) for p in train)
    vl = ",".join(str(p) for p in val)
    cfg = load_train_config(cfg_path, [f"data.train_files=[{tl}]", f"data.val_files=[{vl}]", f"output_dir={out}",
                                       "trainer.enable_progress_bar=false", *overrides])  # fmt: skip
    return run(cfg)


def _fmt(rej: float | None, err: float | None, n_fake: int) -> str:
    if rej is None or not np.isfinite(rej):
        return f"> {n_fake}"
    return pm(rej, err)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    ap.add_argument("--work", default="benchmarks/_work/photon_mu", help="cache directory")
    ap.add_argument(
        "--mus", type=float, nargs="+", default=[0, 50, 100, 200], help="pile-up levels"
    )
    ap.add_argument(
        "--train-mu", type=float, default=50.0, help="mu of the training sample (one of --mus)"
    )
    ap.add_argument(
        "--chunk", type=int, default=300, help="hard-scatter events per chunk and process"
    )
    ap.add_argument(
        "--bkg-factor",
        type=int,
        default=2,
        help="background chunks hold this many times --chunk events (balances the classes)",
    )
    ap.add_argument("--sim-seconds", type=float, default=1200, help="simulation budget of this run")
    ap.add_argument(
        "--max-chunks", type=int, default=1000, help="stop the simulation after this many chunks"
    )
    ap.add_argument("--epochs", type=int, default=15, help="CNN epochs (DNN: 3x)")
    ap.add_argument("--paed-epochs", type=int, default=20)
    ap.add_argument(
        "--steps",
        nargs="+",
        default=["sim", "split", "train", "paed", "eval"],
        choices=["sim", "split", "train", "paed", "eval"],
    )
    ap.add_argument("--plot", default="docs/benchmarks/photon_rejection_vs_mu.png")
    args = ap.parse_args()
    if args.train_mu not in args.mus:
        ap.error("--train-mu must be one of --mus")
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    mus = [float(m) for m in args.mus]
    if "sim" in args.steps:
        step_sim(work, mus, args.chunk, args.sim_seconds, args.max_chunks, args.bkg_factor)
        print(f"[{time.time() - t0:.0f}s] simulation done", flush=True)
    if "split" not in args.steps:
        return
    files = step_split(work, mus)
    ftr = files[args.train_mu]
    if "train" not in args.steps:
        return
    from lhcml.tasks.photon.cuts import CutMenu, optimise_menu
    from lhcml.tasks.photon.evaluate import evaluate_arrays, load_photons

    menus = []
    for t in (0.80, 0.90):
        p = work / f"cuts_tight{int(t * 100)}.yaml"
        if not p.is_file():
            tr = load_photons([ftr["train"]])
            optimise_menu(
                tr, tr["isPromptPhoton"] == 1, t, name=f"tight{int(t * 100)}", min_entries=150
            ).save(p)
        menus.append(CutMenu.load(p))
    t1 = time.time()
    cnn = _train("configs/photon/cnn.yaml", [ftr["train"]], [ftr["val"]], work / "cnn",
                 [f"trainer.max_epochs={args.epochs}"])  # fmt: skip
    dnn = _train("configs/photon/dnn.yaml", [ftr["train"]], [ftr["val"]], work / "dnn",
                 [f"trainer.max_epochs={3 * args.epochs}"])  # fmt: skip
    print(f"[{time.time() - t0:.0f}s] CNN + DNN trained ({time.time() - t1:.0f} s)", flush=True)
    if "paed" not in args.steps:
        return
    from lhcml.tasks.photon.denoise import PAEDConfig, denoise_file, train_paed

    paed = work / "paed" / "paed.pt"
    t1 = time.time()
    if not paed.is_file():
        pu = mus  # mu = 0 pairs too: the denoiser must leave pile-up-free images alone
        train_paed(PAEDConfig(train_files=[str(files[m]["train"]) for m in pu],
                              val_files=[str(files[m]["val"]) for m in pu], max_epochs=args.paed_epochs,
                              output_dir=str(work / "paed")), progress=False)  # fmt: skip
    print(f"[{time.time() - t0:.0f}s] PAED trained ({time.time() - t1:.0f} s)", flush=True)
    den = {}
    for mu in mus:
        for s in ("train", "val", "test") if mu == args.train_mu else ("test",):
            p = work / f"denoised_mu{int(mu)}" / f"photon_{s}.h5"
            if not p.is_file():
                denoise_file(paed, files[mu][s], p)
            den[(mu, s)] = p
    cnn_paed = _train("configs/photon/cnn.yaml", [den[(args.train_mu, "train")]], [den[(args.train_mu, "val")]],
                      work / "cnn_paed", [f"trainer.max_epochs={args.epochs}"])  # fmt: skip
    print(f"[{time.time() - t0:.0f}s] CNN on denoised images trained", flush=True)
    if "eval" not in args.steps:
        return
    import h5py

    from lhcml.train.predict import predict

    results = {}
    for mu in mus:
        pdir = work / f"pred_mu{int(mu)}"
        if not (pdir / "photon_test.h5").is_file():
            # nominal images: CNN + DNN; PAED images: both CNNs; pile-up-free twins: CNN
            predict(cnn, [files[mu]["test"]], output_dir=pdir / "nom")
            predict(dnn, [pdir / "nom" / "photon_test.h5"])
            predict(
                cnn, [den[(mu, "test")]], tagger_name="photon_cnn_on_paed", output_dir=pdir / "den"
            )
            predict(cnn_paed, [pdir / "den" / "photon_test.h5"], tagger_name="photon_cnn_paed")
            nopu = pdir / "nopu_in" / "photon_test.h5"
            nopu.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(files[mu]["test"], "r") as fin, h5py.File(nopu, "w") as fout:
                for name in fin:
                    if name.startswith("images_") and not name.endswith("_nopu"):
                        fout.create_dataset(name, data=fin[name + "_nopu"][:])
                    elif name == "photons":
                        fin.copy(fin[name], fout, name=name)
            predict(cnn, [nopu], tagger_name="photon_cnn_nopu", output_dir=pdir / "nopu")
            import numpy.lib.recfunctions as rfn

            tabs = [load_photons([pdir / d / "photon_test.h5"]) for d in ("nom", "den", "nopu")]
            extra = {n: tabs[1][n] for n in tabs[1].dtype.names if n.startswith("photon_cnn_")}
            extra.update(
                {n: tabs[2][n] for n in tabs[2].dtype.names if n.startswith("photon_cnn_nopu")}
            )
            merged = rfn.append_fields(tabs[0], list(extra), list(extra.values()), usemask=False)
            from lhcml.data.h5 import write_h5

            write_h5(pdir / "photon_test.h5", {"photons": merged})
        ph = load_photons([pdir / "photon_test.h5"])
        taggers = {"photon_cnn": "CNN", "shower_dnn": "DNN (shower shapes)",
                   "photon_cnn_on_paed": "CNN on PAED-denoised", "photon_cnn_paed": "CNN trained+applied on PAED",
                   "photon_cnn_nopu": "CNN on pile-up-free twin"}  # fmt: skip
        results[mu] = evaluate_arrays(ph, taggers, menus, bins={})
        # cut menus re-optimised on the training split of this mu (the menu of a pile-up condition)
        own = []
        for t in (0.80, 0.90):
            p = work / f"cuts_mu{int(mu)}_tight{int(t * 100)}.yaml"
            if not p.is_file():
                tr = load_photons([files[mu]["train"]])
                optimise_menu(
                    tr, tr["isPromptPhoton"] == 1, t, name=f"tight{int(t * 100)}", min_entries=150
                ).save(p)
            own.append(CutMenu.load(p))
        results[mu]["cuts_own_mu"] = evaluate_arrays(ph, {}, own, bins={})["cuts"]
        # the fixed ATLAS 2012 Tight menu (no optimisation; converted/unconverted by the flag)
        from lhcml.tasks.photon.cuts import atlas_2012_tight

        tight, sig = atlas_2012_tight(ph), ph["isPromptPhoton"] == 1
        results[mu]["atlas2012_tight"] = {"sig_eff": float(tight[sig].mean()), "n_fake_pass": int(tight[~sig].sum()),
                                          "n_fake": int((~sig).sum())}  # fmt: skip
    # PAED: mean |sum(image) - sum(pile-up-free image)| per layer (MeV), test clusters, per mu
    from lhcml.tasks.photon.denoise import denoise, load_paed, pileup_energy_error, read_pairs

    model, pcfg = load_paed(paed)
    for mu in mus:
        x, y = read_pairs([files[mu]["test"]], pcfg.layers)
        results[mu]["paed_energy_error"] = {
            "with_pileup": pileup_energy_error(x, y),
            "denoised": pileup_energy_error(denoise(model, x), y),
        }
    summary = json_safe(
        {"train_mu": args.train_mu, "results": {str(int(m)): r for m, r in results.items()}}
    )
    (work / "summary_vs_mu.json").write_text(json.dumps(summary, indent=1, default=float))
    print_tables(results, args.train_mu)
    plot(results, args.plot, args.train_mu)
    print(f"\nwall time of this run {time.time() - t0:.0f} s")


def print_tables(results: dict, train_mu: float) -> None:
    """Markdown tables: fake rejection at 80 / 90 % photon efficiency per mu."""
    for wp in ("0.80", "0.90"):
        print(
            f"\nFake rejection at {float(wp):.0%} photon efficiency (trained at mu = {train_mu:g})\n"
        )
        mus = list(results)
        print("| method | " + " | ".join(f"μ = {m:g}" for m in mus) + " |")
        print("|---|" + "---:|" * len(mus))
        print(
            "| test sample (prompt / fakes) | "
            + " | ".join(f"{results[m]['n_prompt']} / {results[m]['n_fake']}" for m in mus)
            + " |"
        )
        first = results[mus[0]]
        cut = f"tight{int(float(wp) * 100)}"
        row = []
        for m in mus:
            c = results[m]["cuts"][cut]
            row.append(
                f"{_fmt(c['rejection'], c['rejection_err'], results[m]['n_fake'])} (ε={c['sig_eff']:.2f})"
            )
        print(f"| tight cuts, menu of μ = {train_mu:g} | " + " | ".join(row) + " |")
        row = []
        for m in mus:
            c = results[m]["cuts_own_mu"][cut]
            row.append(
                f"{_fmt(c['rejection'], c['rejection_err'], results[m]['n_fake'])} (ε={c['sig_eff']:.2f})"
            )
        print("| tight cuts, menu re-optimised at each μ | " + " | ".join(row) + " |")
        if "atlas2012_tight" in first:
            row = [f"ε={results[m]['atlas2012_tight']['sig_eff']:.2f}, {results[m]['atlas2012_tight']['n_fake_pass']} of "
                   f"{results[m]['atlas2012_tight']['n_fake']} fakes pass" for m in mus]  # fmt: skip
            print("| ATLAS 2012 Tight (fixed menu) | " + " | ".join(row) + " |")
        for name, t in first["taggers"].items():
            row = []
            for m in mus:
                w = results[m]["taggers"][name]["working_points"][wp]
                row.append(_fmt(w["rejection"], w["rejection_err"], results[m]["n_fake"]))
            print(f"| {t['label']} | " + " | ".join(row) + " |")
        print(
            "| CNN AUC | "
            + " | ".join(f"{results[m]['taggers']['photon_cnn']['auc']:.4f}" for m in mus)
            + " |"
        )
    mus = list(results)
    print(
        "\nPAED: mean |Σ image − Σ pile-up-free image| per layer, test clusters (MeV): with pile-up → denoised\n"
    )
    print("| layer | " + " | ".join(f"μ = {m:g}" for m in mus) + " |")
    print("|---|" + "---:|" * len(mus))
    for k in results[mus[0]]["paed_energy_error"]["with_pileup"]:
        cells = []
        for m in mus:
            e = results[m]["paed_energy_error"]
            cells.append(f"{e['with_pileup'][k]:.0f} → {e['denoised'][k]:.0f}")
        print(f"| {k[4:]} | " + " | ".join(cells) + " |")


def plot(results: dict, path: str, train_mu: float) -> None:
    """Rejection vs mu at 80 and 90 % photon efficiency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mus = np.array(list(results), float)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    names = [("tight", "tight cuts (menu per μ)", "k"), ("shower_dnn", "DNN (shower shapes)", "tab:green"),
             ("photon_cnn", "CNN", "tab:blue"), ("photon_cnn_on_paed", "CNN on PAED-denoised", "tab:orange"),
             ("photon_cnn_paed", "CNN trained+applied on PAED", "tab:red"),
             ("photon_cnn_nopu", "CNN on pile-up-free twin", "tab:gray")]  # fmt: skip
    for ax, wp in zip(axes, ("0.80", "0.90"), strict=True):
        for i, (name, label, col) in enumerate(names):
            y, e, lim = [], [], []
            for m in results.values():
                if name == "tight":
                    c = m["cuts_own_mu"][f"tight{int(float(wp) * 100)}"]
                    r, er = c["rejection"], c["rejection_err"] or 0
                else:
                    w = m["taggers"][name]["working_points"][wp]
                    r, er = w["rejection"], w["rejection_err"]
                lim.append(r is None or not np.isfinite(r))
                if lim[-1]:
                    r, er = m["n_fake"], 0.0  # no fake passes: lower limit = number of fakes
                y.append(r)
                e.append(er)
            x = mus + (i - 2.5) * 2.5
            y, e, lim = np.array(y), np.array(e), np.array(lim)
            ls = ":" if name in ("tight", "photon_cnn_nopu") else "-"
            ax.errorbar(x, y, yerr=[np.minimum(e, 0.8 * y), e], marker="o", ls=ls, color=col, label=label,
                        capsize=2)  # fmt: skip
            if lim.any():
                ax.plot(x[lim], y[lim], "^", color=col, ms=9, mfc="none")
        ax.set_yscale("log")
        ax.set_xlabel("⟨μ⟩ of the test sample")
        ax.set_title(f"{float(wp):.0%} photon efficiency")
        ax.axvline(train_mu, color="0.8", lw=0.8)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("fake rejection 1/ε_fake")
    axes[1].legend(fontsize=8)
    fig.suptitle(
        f"lhcml photon ID vs pile-up (trained at μ = {train_mu:g}; cuts: menu re-optimised per μ; "
        "▲: no fake passes)"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
