"""Photon identification benchmark: cuts vs DNN vs CNN, and rejection vs mu with/without PAED.

Stages (each cached under ``--work``; rerun skips finished stages):

1. simulate ``gamma_jet`` (prompt photons) and ``dijet_photon`` (jet fakes, the process's JF17-style
   EM filter) at mu = 0 and at ``--mu`` with raw images, split 60/20/20;
2. cut menus (tight, optimised at 80 % and 90 % on the training sample);
3. ``shower_dnn`` and ``photon_cnn`` trained with the shared trainer (``lhcml train``) on mu = 0;
4. PAED trained on the mu sample (raw images -> pile-up-free twins);
5. evaluation: fake rejection at 80 / 90 % on the mu = 0 test sample; at ``--mu`` the CNN on
   images with pile-up, PAED-denoised, and the pile-up-free twins.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/calo_photon_id.py --work benchmarks/_work/calo \\
        --signal-events 3000 --background-events 8000 --mu 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lhcml.formatting import json_safe, pm


def _sim(work: Path, mu: float, n_sig: int, n_bkg: int, seed: int, pileup=None) -> dict:
    from lhcml.sim.photons import simulate_photon_events
    from lhcml.tasks.photon.dataset import select_candidates, split_and_write

    out = work / f"data_mu{int(mu)}"
    if (out / "photon_test.h5").is_file():
        return {s: out / f"photon_{s}.h5" for s in ("train", "val", "test")}
    parts, timing = [], {}
    for proc, n, filt, s in (("gamma_jet", n_sig, None, seed), ("dijet_photon", n_bkg, "process", seed + 1)):
        t = time.time()
        d = simulate_photon_events(proc, n, mu, s, pileup, True, raw_images=mu > 0, em_filter_et_gev=filt,
                                   batch_size=100)  # fmt: skip
        timing[proc] = {"events": n, "seconds": time.time() - t, "candidates": int(len(d["photons"]))}
        parts.append(select_candidates(d, proc))
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    paths = split_and_write(merged, out, seed)
    (out / "timing.json").write_text(json.dumps(timing, indent=1))
    return paths


def _train(cfg_path: str, files: dict, out: Path, overrides: list[str]) -> Path:
    from lhcml.train.config import load_train_config
    from lhcml.train.trainer import train

    ckpts = sorted((out / "checkpoints").glob("best-*.ckpt"))
    if ckpts:
        return ckpts[-1]
    cfg = load_train_config(cfg_path, [f"data.train_files=[{files['train']}]", f"data.val_files=[{files['val']}]",
                                       f"output_dir={out}", "trainer.enable_progress_bar=false", *overrides])
    return train(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="benchmarks/_work/calo")
    ap.add_argument("--signal-events", type=int, default=3000)
    ap.add_argument("--background-events", type=int, default=8000)
    ap.add_argument("--mu", type=float, default=50.0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--no-pileup", action="store_true", help="stop after the mu = 0 evaluation")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    f0 = _sim(work, 0.0, args.signal_events, args.background_events, 101)
    print(f"[{time.time() - t0:.0f}s] mu=0 sample done", flush=True)

    from lhcml.tasks.photon.cuts import optimise_menu
    from lhcml.tasks.photon.evaluate import evaluate_arrays, load_photons

    tr = load_photons([f0["train"]])
    menus = [optimise_menu(tr, tr["isPromptPhoton"] == 1, t, name=f"tight{int(t * 100)}", min_entries=150)
             for t in (0.80, 0.90)]  # fmt: skip
    cnn = _train("configs/photon/cnn.yaml", f0, work / "cnn", [f"trainer.max_epochs={args.epochs}"])
    dnn = _train("configs/photon/dnn.yaml", f0, work / "dnn", [f"trainer.max_epochs={3 * args.epochs}"])
    print(f"[{time.time() - t0:.0f}s] training done", flush=True)
    from lhcml.train.predict import predict

    pred_dir = work / "pred_mu0"
    if not (pred_dir / "photon_test.h5").is_file():
        predict(cnn, [f0["test"]], output_dir=pred_dir)
        predict(dnn, [pred_dir / "photon_test.h5"])
    ph0 = load_photons([pred_dir / "photon_test.h5"])
    res0 = evaluate_arrays(ph0, {"photon_cnn": "CNN (LAPP)", "shower_dnn": "DNN (shower shapes)"}, menus,
                           bins={"pt": (20, 30, 40, 60, 100, 250), "abs_eta": (0, 0.6, 0.8, 1.15, 1.37)})

    def fmt(w):
        return pm(w["rejection"], w["rejection_err"])

    def cutrej(c, n_fake):
        if c["rejection"] is None:  # no fake passes (inf)
            return f"> {n_fake} (no fake passes)"
        return pm(c["rejection"], c["rejection_err"])

    def print_mu0():
        print(f"\nmu = 0 test sample: {res0['n_prompt']} prompt photons, {res0['n_fake']} fakes")
        print(f"{'tagger':28s} {'AUC':>6s} {'rej@80%':>14s} {'rej@90%':>14s}")
        for t in res0["taggers"].values():
            wp = t["working_points"]
            print(f"{t['label']:28s} {t['auc']:6.3f} {fmt(wp['0.80']):>14s} {fmt(wp['0.90']):>14s}")
        for name, c in res0["cuts"].items():
            print(f"{'cuts ' + name:28s} {'':>6s} eff {c['sig_eff']:.3f}  rej {cutrej(c, res0['n_fake'])}")

    if args.no_pileup:
        from lhcml.tasks.photon.cuts import atlas_2012_tight
        t = atlas_2012_tight(ph0)
        prompt = ph0["isPromptPhoton"] == 1
        print_mu0()
        print(f"{'ATLAS 2012 Tight (fixed)':28s} {'':>6s} eff {t[prompt].mean():.3f}  "
              f"fake pass {t[~prompt].mean():.4f} ({int(t[~prompt].sum())} of {int((~prompt).sum())})")
        summary = {"mu0": json_safe(res0), "wall_s": time.time() - t0}
        (work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        print(f"\nwall time {time.time() - t0:.0f} s")
        return

    # --- pile-up -----------------------------------------------------------------------------
    from lhcml.sim.pileup import PileupLibrary, build_pileup_library

    lib_path = work / "pileup.h5"
    lib = PileupLibrary.load(lib_path) if lib_path.is_file() else build_pileup_library(500, 7, lib_path)
    fmu = _sim(work, args.mu, args.signal_events, args.background_events, 201, pileup=lib)
    print(f"[{time.time() - t0:.0f}s] mu={args.mu:g} sample done", flush=True)
    from lhcml.tasks.photon.denoise import PAEDConfig, denoise_file, train_paed

    paed = work / "paed" / "paed.pt"
    if not paed.is_file():
        train_paed(PAEDConfig(train_files=[str(fmu["train"])], val_files=[str(fmu["val"])], max_epochs=30,
                              output_dir=str(work / "paed")), progress=False)  # fmt: skip
    den = work / f"denoised_mu{int(args.mu)}" / "photon_test.h5"
    if not den.is_file():
        denoise_file(paed, fmu["test"], den)
    nopu = work / f"nopu_mu{int(args.mu)}" / "photon_test.h5"
    if not nopu.is_file():
        import h5py

        nopu.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(fmu["test"], "r") as fin, h5py.File(nopu, "w") as fout:
            for name in fin:
                if name.startswith("images_") and not name.endswith("_nopu"):
                    fout.create_dataset(name, data=fin[name + "_nopu"][:])
                elif not name.startswith("raw_"):
                    fin.copy(fin[name], fout, name=name)
    rows = {}
    for label, path in (("with pile-up", fmu["test"]), ("PAED-denoised", den), ("pile-up-free twin", nopu)):
        outp = work / f"pred_mu_{label.split()[0]}"
        if not (outp / "photon_test.h5").is_file():
            predict(cnn, [path], output_dir=outp)
        ph = load_photons([outp / "photon_test.h5"])
        rows[label] = evaluate_arrays(ph, {"photon_cnn": "CNN"}, menus, bins={})
    summary = json_safe({"mu0": res0, "mu": args.mu, "mu_rows": rows, "wall_s": time.time() - t0})
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=float))

    print_mu0()
    print(f"\nCNN trained at mu = 0, evaluated at mu = {args.mu:g}")
    for label, r in rows.items():
        t = r["taggers"]["photon_cnn"]
        wp = t["working_points"]
        print(f"{label:28s} {t['auc']:6.3f} {fmt(wp['0.80']):>14s} {fmt(wp['0.90']):>14s}")
    for label, r in rows.items():
        for name, c in r["cuts"].items():
            if label == "with pile-up":
                print(f"{'cuts ' + name + ' (mu)':28s} eff {c['sig_eff']:.3f}  rej {cutrej(c, r['n_fake'])}")
    print(f"\nwall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
