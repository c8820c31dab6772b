"""The strips' second maximum of a flow-matching shower generator, at the validation photons' own (E, |η|, φ).

docs/benchmarks/fastcalo.md ("Fifteenth" and "Sixteenth version", issue 15): the generated strip layer has a second
maximum (ΔE) many times the detailed one at |η| > 1 and high energy. For each ``NAME=CHECKPOINT`` (a ``fastcalo_fm``
checkpoint conditioned on |η| and φ, e.g. ``configs/fastcalo/fm_strips_phi.yaml`` or ``fm_strips_ratio.yaml``) this
script

1. generates one shower per validation photon at its incident energy, |η| and φ (PyTorch, noise drawn with torch seed
   ``--seed``);
2. places the detailed (noise-free) and the generated voxels at the photon's impact cells in the full calorimeter
   (:func:`lhcml.sim.fastcalo.place_voxels`), adds the same electronic noise to both (``--noise-seed``) and clusters on
   the middle impact cell (:func:`lhcml.sim.clusters.build_clusters`), as the detailed simulation built its stored
   photon-ID shapes — then prints per |η| and energy bin the mean ΔE (± standard error), E_ratio, w_η2, f1 and the
   fraction with ΔE > 200 MeV, detailed against generated;
3. at |η| > 1.05 and E > 30 GeV (the worst bin): the spread of ln(S_k / S_k+1) of the φ-summed strip rows k = 2-7
   strips from the maximum (both sides pooled, pairs with both rows > 0), measured from the profile's maximum and
   from the aligned centre row (the row the generator puts its maximum on), the fraction of showers whose maximum
   is that row, and the strip shares' sum *before* the per-layer renormalisation (median and 95 % quantile; the
   detailed showers' sum to 1);
4. for a model with ``strip_ratios``: the same bin in the model's own raw variables — the mean, spread and
   fraction of rises (> 0) of the row log-ratios 1-7 rows out, detailed (encoded) against generated (read from
   the decoded row shares, so a model with ``strip_first_ratio`` reports the ratios too, not its variables).

Usage (one thread; ~1 min per model)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/fastcalo_strip_profile.py \\
        ratios=WORK/runs/fm_strips_ratio/checkpoints/best-epoch=119.ckpt \\
        --reference benchmarks/_work/fastcalo/photons_eta_val/photon_discrete.h5 \\
        --binning benchmarks/_work/fastcalo/photons_eta_val/binning_photon.xml --output WORK/strip_profile.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from lhcml.data.calochallenge import read_showers
from lhcml.sim.calo_geometry import load_geometry
from lhcml.sim.calorimeter import CaloEvents, electronic_noise
from lhcml.sim.clusters import build_clusters
from lhcml.sim.fastcalo import impact_cells, place_voxels
from lhcml.train.fastcalo import load_generator

SHAPES = ("DeltaE", "Eratio", "weta2", "f1")


def bins(e: np.ndarray, eta: np.ndarray) -> dict[str, np.ndarray]:
    """The fifteenth version's |η| and energy bins."""
    return {
        "all": np.ones(len(e), bool),
        "|eta| 0-0.35": eta < 0.35, "|eta| 0.35-0.7": (eta >= 0.35) & (eta < 0.7),
        "|eta| 0.7-1.05": (eta >= 0.7) & (eta < 1.05), "|eta| 1.05-1.37": eta >= 1.05,
        "E 1-10": e < 10, "E 10-30": (e >= 10) & (e < 30), "E 30-60": (e >= 30) & (e < 60),
        "E 60-120": (e >= 60) & (e < 120), "E 120-260": e >= 120,
        "|eta|>1.05 & E>30": (eta >= 1.05) & (e > 30),
    }  # fmt: skip


def photon_shapes(showers_gev: np.ndarray, e: np.ndarray, eta: np.ndarray, phi: np.ndarray, binning, noise_seed: int,
                  chunk: int = 250) -> dict[str, np.ndarray]:  # fmt: skip
    """Photon-ID shapes of voxel showers placed at their impact cells with electronic noise, clustered there."""
    geo = load_geometry()
    n = len(e)
    z = np.zeros(n)
    ie, ip = impact_cells(eta, phi, z, e / np.cosh(eta), z, z, z, binning, geo)
    k_mid = list(binning.layer_names).index("middle")
    rng = np.random.default_rng(noise_seed)
    parts = []
    for a in range(0, n, chunk):
        idx = np.arange(a, min(n, a + chunk))
        grids = {lay.name: np.zeros((len(idx), lay.n_eta, lay.n_phi), np.float32) for lay in geo.readout_layers}
        place_voxels(grids, np.arange(len(idx)), ie[idx], ip[idx], showers_gev[idx] * 1000.0, binning, geo)
        zero = {k: np.zeros_like(v) for k, v in grids.items()}
        calo = CaloEvents(geo, grids, zero, electronic_noise(len(idx), geo, rng), np.zeros(len(idx)))
        cl = build_clusters(calo, seeds=(np.arange(len(idx)), ie[idx, k_mid], ip[idx, k_mid]))
        parts.append({k: np.asarray(cl[k]) for k in SHAPES})
    return {k: np.concatenate([p[k] for p in parts]) for k in SHAPES}


def neighbour_spread(rows: np.ndarray, start: np.ndarray) -> list[float]:
    """Std of ln(S_k / S_k+1), k = 2..7 rows from ``start`` (per shower), both sides pooled, both rows > 0."""
    out = []
    idx = np.arange(len(rows))
    for k in range(2, 8):
        vals = []
        for sgn in (1, -1):
            i1, i2 = start + sgn * k, start + sgn * (k + 1)
            ok = (i2 >= 0) & (i2 < rows.shape[1])
            a, c = rows[idx[ok], i1[ok]], rows[idx[ok], i2[ok]]
            good = (a > 0) & (c > 0)
            vals.append(np.log(a[good] / c[good]))
        out.append(float(np.std(np.concatenate(vals))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="NAME=CHECKPOINT of fastcalo_fm models conditioned on |eta| and phi")
    ap.add_argument("--reference", type=Path, default=Path("benchmarks/_work/fastcalo/photons_eta_val/photon_discrete.h5"))
    ap.add_argument("--binning", type=Path, default=Path("benchmarks/_work/fastcalo/photons_eta_val/binning_photon.xml"))
    ap.add_argument("--seed", type=int, default=7, help="torch seed of the generation noise")
    ap.add_argument("--noise-seed", type=int, default=11, help="seed of the cells' electronic noise (both sides)")
    ap.add_argument("--output", type=Path, default=None, help="JSON of all numbers")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = read_showers(args.reference, args.binning)
    if s.eta is None or s.phi is None:
        raise SystemExit(f"{args.reference} has no incident_eta / incident_phi (lhcml fastcalo simulate writes them)")
    e, eta, phi = s.energies.astype(np.float64), np.abs(s.eta), s.phi
    n0 = s.binning.layer_sizes[0]
    masks = bins(e, eta)
    hi = masks["|eta|>1.05 & E>30"]
    det = photon_shapes(s.showers, e, eta, phi, s.binning, args.noise_seed)
    results: dict[str, dict] = {}
    for spec in args.models:
        name, _, ckpt = spec.partition("=")
        model, _ = load_generator(ckpt)
        model.eval()
        v = model.vars
        if not model.align_max_shift:
            raise SystemExit(f"{name}: a model with aligned strips (model.align_max_shift) is needed")
        et, etat, phit = (torch.tensor(a, dtype=torch.float32) for a in (e, eta, phi))
        with torch.no_grad():
            noise = model.draw_noise(len(e), torch.Generator().manual_seed(args.seed))
            gen = model.sample(et, noise, etat, phit)
            x = model.integrate(et, noise, etat, phit)
            e_layers = v.decode_layers(x[:, : model.n_layers], et)
            vm, vs = v.voxel_scales(et, etat if v.eta_standardisation else None)
            raw = v.unwhiten(x[:, model.n_layers : model.n_layers + model.n_voxels]) * vs + vm
            first = v.strip_ratio_decode(raw[:, :n0]) if getattr(v, "strip_ratios", False) else raw[:, :n0]
            frac = torch.exp(first.clamp(max=0.0))
            frac = torch.where(frac * e_layers[:, :1] < v.threshold_gev, torch.zeros_like(frac), frac)
            share_sum = frac.sum(1).numpy()
        gen_np = gen.numpy().astype(np.float32)
        shp = photon_shapes(gen_np, e, eta, phi, s.binning, args.noise_seed)
        res: dict = {"checkpoint": ckpt, "bins": {}}
        print(f"\n{name}: {ckpt}")
        print("| bin | photons | ΔE (MeV) detailed / generated | E_ratio det. / gen. | w_η2 (1e-3) det. / gen. "
              "| f1 det. / gen. | ΔE > 200 MeV det. / gen. |")
        print("|---|---|---|---|---|---|---|")
        for b, m in masks.items():
            k = int(m.sum())
            row = {"n": k}
            for key, src in (("det", det), ("gen", shp)):
                row[f"dE_{key}"] = float(src["DeltaE"][m].mean())
                row[f"dE_{key}_sem"] = float(src["DeltaE"][m].std() / np.sqrt(k))
                row[f"dE200_{key}"] = float((src["DeltaE"][m] > 200).mean())
                for sh in ("Eratio", "weta2", "f1"):
                    row[f"{sh}_{key}"] = float(np.nanmean(src[sh][m]))
            res["bins"][b] = row
            print(f"| {b} | {k} | {row['dE_det']:.1f} ± {row['dE_det_sem']:.1f} / {row['dE_gen']:.0f} ± "
                  f"{row['dE_gen_sem']:.0f} | {row['Eratio_det']:.3f} / {row['Eratio_gen']:.3f} | "
                  f"{1e3 * row['weta2_det']:.2f} / {1e3 * row['weta2_gen']:.2f} | {row['f1_det']:.3f} / "
                  f"{row['f1_gen']:.3f} | {row['dE200_det']:.2f} / {row['dE200_gen']:.2f} |")  # fmt: skip
        # the worst bin's strip profile: from the maximum, and from the aligned centre row
        c = (model.align_n_eta - 1) // 2
        for key, sh in (("det", torch.tensor(s.showers)), ("gen", gen)):
            rows = sh[hi, :n0].reshape(-1, n0 // model.align_n_phi, model.align_n_phi).sum(2).double().numpy()
            aligned, _ = model.align(sh[hi])
            arows = aligned[:, :n0].reshape(-1, n0 // model.align_n_phi, model.align_n_phi).sum(2).double().numpy()
            res[f"spread_from_max_{key}"] = neighbour_spread(rows, rows.argmax(1))
            res[f"spread_from_centre_{key}"] = neighbour_spread(arows, np.full(len(arows), c))
            res[f"max_at_centre_{key}"] = float((arows.argmax(1) == c).mean())
        res["share_sum_hi"] = [float(np.median(share_sum[hi])), float(np.quantile(share_sum[hi], 0.95))]
        lo = (eta < 0.35) & (e > 30)
        res["share_sum_lo"] = [float(np.median(share_sum[lo])), float(np.quantile(share_sum[lo], 0.95))]
        print(f"|η| > 1.05, E > 30 GeV ({int(hi.sum())} photons), ln(S_k/S_k+1) spread, k = 2..7:")
        for where in ("from_max", "from_centre"):
            print(f"  {where:11s} detailed {np.round(res[f'spread_{where}_det'], 2)}  generated "
                  f"{np.round(res[f'spread_{where}_gen'], 2)}")
        print(f"  maximum on the aligned centre row: detailed {res['max_at_centre_det']:.3f}, generated "
              f"{res['max_at_centre_gen']:.3f}")
        print(f"  strip shares' sum before renormalisation (median / 95 %): |η| > 1.05, E > 30 GeV "
              f"{res['share_sum_hi'][0]:.2f} / {res['share_sum_hi'][1]:.2f}; |η| < 0.35, E > 30 GeV "
              f"{res['share_sum_lo'][0]:.2f} / {res['share_sum_lo'][1]:.2f}")
        if getattr(v, "strip_ratios", False):
            with torch.no_grad():
                al, _ = model.align(v.dequantise(torch.tensor(s.showers), torch.Generator().manual_seed(0)))
                _, lv, _ = v.raw_variables(et, al, torch.Generator().manual_seed(1))
            for key, a in (("det", lv), ("gen", raw)):
                # the row log-ratios from the decoded row log shares (with model.strip_first_ratio the first
                # variable is not the ratio itself)
                with torch.no_grad():
                    shares = v.strip_ratio_decode(a[hi, :n0]).reshape(-1, model.align_n_eta, model.align_n_phi)
                    s_rows = torch.logsumexp(shares, dim=2)
                g = torch.cat([s_rows[:, c + 1 : c + 8] - s_rows[:, c : c + 7],
                               (s_rows[:, c - 7 : c] - s_rows[:, c - 6 : c + 1]).flip(1)])  # fmt: skip
                both = g.numpy()
                res[f"ratio_{key}"] = {"mean": both.mean(0).tolist(), "std": both.std(0).tolist(),
                                       "rise": (both > 0).mean(0).tolist()}  # fmt: skip
            print("  row log-ratios 1..7 rows out (the model's raw variables):")
            for stat in ("mean", "std", "rise"):
                print(f"    {stat:4s} detailed {np.round(res['ratio_det'][stat], 3)}  generated "
                      f"{np.round(res['ratio_gen'][stat], 3)}")
        results[name] = res
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
