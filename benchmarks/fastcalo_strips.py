"""Why generated strips have a second maximum: a diagnostic of the flow-matching generator (issue 15).

The photon-ID closure (docs/benchmarks/fastcalo.md) failed because the generated strip layer has a
second maximum far too often (E_ratio 0.69 vs 0.94). This script separates the candidate causes
on single photons, each row against the same detailed sample (``--reference``, the first
``--max-showers`` showers), with lhcml's cluster code (:func:`lhcml.tasks.fastcalo.dataset.shower_shapes`):

* ``detailed``: the reference itself;
* ``roundtrip``: the reference through the generator's representation and back: CaloFlow's
  dequantisation (1 keV), the logit variables, the readout threshold and the per-layer
  renormalisation (:class:`lhcml.models.fastcalo.flow.CaloFlowVariables`, standardisation fitted on
  ``--train``); ``roundtrip_aligned`` the same with the strips rolled to their maximum and back
  (:func:`lhcml.models.fastcalo.fm.roll_strips`) — does the representation itself make the
  second maxima?
* ``roundtrip_noise<s>``: the round trip with Gaussian noise of ``s`` standardised units added to
  every voxel variable (a generator error of that size, uncorrelated between voxels);
* ``<checkpoint>@<steps>[/<threshold>]``: a trained ``fastcalo_fm`` checkpoint sampled at the
  reference's incident energies with ``steps`` solver steps (``--steps``) and readout thresholds
  (``--thresholds-mev``), the same noise for every row of one checkpoint; a model conditioned on
  |η| (``model.eta_range``) also at the reference's |η| (its ``incident_eta``, or uniform draws in
  the file's ``eta_min``-``eta_max`` for files without it:
  :func:`lhcml.tasks.fastcalo.dataset.reference_eta`); an energy-only model ignores η.

Per row: the means of E_ratio, ΔE (MeV), w_s,tot, w_s3, F_side, f1, R_η, the separation power of
E_ratio against ``detailed``, the fraction of showers with a second strip maximum, the per-energy
means of E_ratio, ΔE, w_s3 and F_side (``--energy-bins``), and where the second maximum sits:
the distribution of its distance (in strips) from the first, on the φ-summed
strip profile within ±12 strips of the window centre (a local maximum above 28 MeV, the cluster
code's 2 σ of the strip-pair noise; our simplified profile, a cross-check of the location, not the
cluster code's own E_ratio). With ``--eta-bins`` (a reference carrying ``incident_eta``, e.g. from
``lhcml fastcalo simulate --eta-range 0,1.37``), per |η| bin the means of f1, f3, E_ratio, ΔE,
R_η, w_s3 and the separation powers of f1, E_ratio and R_η against ``detailed`` in the same bin.
Results to ``--output`` (JSON) and a table on stdout.

Usage (docs/benchmarks/fastcalo.md, "Ninth version")::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/fastcalo_strips.py \\
        --reference WORK/showers_val/photon_discrete.h5 --binning WORK/showers/binning_photon.xml \\
        --train WORK/showers/photon_discrete.h5 --checkpoint old=WORK/runs/fm_old/checkpoints/best.ckpt \\
        --steps 8 32 100 --thresholds-mev 0.001 1 10 --output WORK/strips.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SHAPES = ("Eratio", "DeltaE", "wtots1", "weta1", "fracs1", "f1", "Reta")
#: per |eta| bin: means of these and the separation powers of ETA_SEPARATIONS
ETA_SHAPES = ("f1", "f3", "Eratio", "DeltaE", "Reta", "weta1")
ETA_SEPARATIONS = ("f1", "Eratio", "Reta")
#: a second maximum in the simplified profile: above the cluster code's 2 x 10 MeV x sqrt(2)
SECOND_MAX_MEV = 28.0
HALF_WINDOW = 12


def second_max_distance(showers_gev: np.ndarray, n_strips: int, n_phi: int) -> np.ndarray:
    """Distance (strips) of the largest other local maximum of the φ-summed strip profile from its
    maximum, within ±HALF_WINDOW strips of the centre; 0 where there is none."""
    prof = showers_gev[:, : n_strips * n_phi].reshape(-1, n_strips, n_phi).sum(2) * 1e3
    c = (n_strips - 1) // 2
    prof = prof[:, c - HALF_WINDOW : c + HALF_WINDOW + 1]
    i1 = prof.argmax(1)
    loc = np.zeros_like(prof, dtype=bool)
    loc[:, 1:-1] = (prof[:, 1:-1] > prof[:, :-2]) & (prof[:, 1:-1] >= prof[:, 2:]) & (prof[:, 1:-1] > SECOND_MAX_MEV)
    loc[np.arange(len(prof)), i1] = False
    has = loc.any(1)
    i2 = np.where(loc, prof, -np.inf).argmax(1)
    return np.where(has, np.abs(i2 - i1), 0)


def row(name: str, showers: np.ndarray, binning: Any, ref_shapes: dict[str, np.ndarray] | None,
        energies: np.ndarray | None = None, edges: list[float] | None = None,
        eta: np.ndarray | None = None, eta_edges: list[float] | None = None) -> dict[str, Any]:  # fmt: skip
    from lhcml.metrics.fastcalo import feature_separation
    from lhcml.tasks.fastcalo.dataset import shower_shapes

    s = shower_shapes(showers, binning)
    lay = binning.layers[0]
    d = second_max_distance(showers, lay.n_eta, lay.n_phi)
    out: dict[str, Any] = {k: float(np.mean(s[k])) for k in SHAPES}
    out["second_max_fraction"] = float(np.mean(s["Eratio"] < 1.0))
    out["Eratio_separation"] = float(feature_separation(ref_shapes["Eratio"], s["Eratio"])) if ref_shapes else 0.0
    out["profile_second_max_distance"] = {str(k): float(np.mean(d == k)) for k in range(1, 6)}
    out["profile_second_max_distance"][">5"] = float(np.mean(d > 5))
    out["_shapes"] = s
    if edges and energies is not None:
        out["energy_bins"] = {}
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            sel = (energies >= lo) & (energies < hi)
            out["energy_bins"][f"{lo:g}-{hi:g}"] = {k: float(np.mean(s[k][sel])) for k in ("Eratio", "DeltaE", "weta1", "fracs1")}
            out["energy_bins"][f"{lo:g}-{hi:g}"]["DeltaE_median"] = float(np.median(s["DeltaE"][sel]))
    if eta_edges and eta is not None:
        out["eta_bins"] = {}
        for lo, hi in zip(eta_edges[:-1], eta_edges[1:], strict=True):
            sel = (eta >= lo) & (eta < hi)
            b = {k: float(np.mean(s[k][sel])) for k in ETA_SHAPES}
            b["n"] = int(sel.sum())
            for k in ETA_SEPARATIONS:
                b[f"{k}_separation"] = float(feature_separation(ref_shapes[k][sel], s[k][sel])) if ref_shapes else 0.0
            out["eta_bins"][f"{lo:g}-{hi:g}"] = b
    print(f"{name:28s} " + " ".join(f"{k} {out[k]:.4g}" for k in (*SHAPES, "second_max_fraction", "Eratio_separation"))
          + " | dist " + " ".join(f"{k}:{v:.3f}" for k, v in out["profile_second_max_distance"].items()), flush=True)  # fmt: skip
    for k, v in out.get("energy_bins", {}).items():
        print(f"    {k:>9s} GeV: " + " ".join(f"{q} {x:.4g}" for q, x in v.items()), flush=True)
    for k, v in out.get("eta_bins", {}).items():
        print(f"    |eta| {k:>9s}: " + " ".join(f"{q} {x:.4g}" for q, x in v.items()), flush=True)
    return out


def roundtrip(model_vars: Any, e: torch.Tensor, x: torch.Tensor, noise: float, seed: int,
              align: tuple[int, int, int] | None) -> np.ndarray:  # fmt: skip
    """Showers through ``model_vars`` (dequantise, encode, optional Gaussian noise, decode)."""
    from lhcml.models.fastcalo.fm import roll_strips, strip_max_shift

    g = torch.Generator().manual_seed(seed)
    xs = x
    if align:
        n_eta, n_phi, s = align
        strips = x[:, : n_eta * n_phi].reshape(-1, n_eta, n_phi)
        shift = strip_max_shift(strips, s)
        xs = torch.cat([roll_strips(strips, shift).reshape(len(x), -1), x[:, n_eta * n_phi :]], 1)
    with torch.no_grad():
        x_u, x_v, _ = model_vars.encode(e, model_vars.dequantise(xs, g), g)
        if noise:
            x_v = x_v + noise * torch.randn(x_v.shape, generator=g)
        out = model_vars.decode_voxels(x_v, model_vars.decode_layers(x_u, e))
    if align:
        strips = out[:, : n_eta * n_phi].reshape(-1, n_eta, n_phi)
        out = torch.cat([roll_strips(strips, -shift).reshape(len(x), -1), out[:, n_eta * n_phi :]], 1)
    return out.numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="detailed showers (CaloChallenge layout)")
    ap.add_argument("--binning", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True, help="training showers (fit of the round trip's standardisation)")
    ap.add_argument("--checkpoint", nargs="*", default=[], help="NAME=PATH of fastcalo_fm checkpoints")
    ap.add_argument("--steps", nargs="+", type=int, default=[8, 32, 100])
    ap.add_argument("--thresholds-mev", nargs="+", type=float, default=[1.0], help="readout thresholds (first = with --steps)")
    ap.add_argument("--noise", nargs="*", type=float, default=[0.05, 0.1, 0.2], help="round-trip noise levels")
    ap.add_argument("--max-showers", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--energy-bins", nargs="*", type=float, default=[1, 3, 10, 30, 100, 261],
                    help="incident-energy bin edges (GeV) of the per-energy means of the generated rows")
    ap.add_argument("--eta-bins", nargs="*", type=float, default=[],
                    help="|eta| bin edges of per-eta means and separations (reference with incident_eta)")
    ap.add_argument("--no-roundtrip", action="store_true", help="skip the representation round-trip rows")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args(argv)

    from lhcml.atomic import atomic_write_text
    from lhcml.data.calochallenge import read_binning, read_showers
    from lhcml.errors import LhcmlError
    from lhcml.models.fastcalo.flow import CaloFlowVariables
    from lhcml.tasks.fastcalo.dataset import reference_eta
    from lhcml.train.fastcalo import load_generator

    torch.set_num_threads(1)
    try:
        b = read_binning(args.binning)
        ref = read_showers(args.reference, b, max_showers=args.max_showers)
        tr = read_showers(args.train, b, max_showers=20000)
        ckpts = [c.split("=", 1) for c in args.checkpoint]
        if any(len(c) != 2 for c in ckpts):
            raise LhcmlError("--checkpoint takes NAME=PATH")
        models = {name: load_generator(path)[0] for name, path in ckpts}
        for name, model in models.items():
            if list(model.layer_sizes) != list(b.layer_sizes):
                raise LhcmlError(f"checkpoint '{name}' generates layers {model.layer_sizes}, the binning has "
                                 f"{b.layer_sizes}: use the binning the model was trained on")
        if args.eta_bins and ref.eta is None:
            raise LhcmlError(f"--eta-bins needs a reference with incident_eta ({args.reference} has none)")
        ref_eta = reference_eta(ref, np.random.default_rng(args.seed), str(args.reference)) if (
            ref.eta is not None or any(m.conditions_on_eta for m in models.values())) else None
    except LhcmlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    e = torch.from_numpy(ref.energies.astype(np.float32))
    x = torch.from_numpy(np.clip(ref.showers, 0, None).astype(np.float32))
    lay = b.layers[0]
    rows: dict[str, dict[str, Any]] = {}
    t0 = time.time()
    en = ref.energies
    eb = args.eta_bins
    rows["detailed"] = row("detailed", ref.showers, b, None, en, args.energy_bins, ref_eta, eb)
    rs = rows["detailed"]["_shapes"]
    spaces = () if args.no_roundtrip else (("logit", None), ("logit", (lay.n_eta, lay.n_phi, 4)), ("log", None))
    for space, align in spaces:
        v = CaloFlowVariables(b.layer_sizes, u0_max=2.0, dequant_kev=1.0, threshold_kev=1000.0, voxel_space=space)
        et = torch.from_numpy(tr.energies.astype(np.float32))
        xt = torch.from_numpy(np.clip(tr.showers, 0, None).astype(np.float32))
        if align:
            from lhcml.models.fastcalo.fm import roll_strips, strip_max_shift

            st = xt[:, : lay.n_eta * lay.n_phi].reshape(-1, lay.n_eta, lay.n_phi)
            xt = torch.cat([roll_strips(st, strip_max_shift(st, 4)).reshape(len(xt), -1), xt[:, st.shape[1] * lay.n_phi:]], 1)
        v.fit(et, xt, torch.Generator().manual_seed(0))
        tag = "roundtrip" + ("_aligned" if align else "") + ("_log" if space == "log" else "")
        n0 = lay.n_eta * lay.n_phi
        rows.setdefault("_std", {})[tag] = [float(x) for x in v.v_std[:n0].reshape(lay.n_eta, lay.n_phi)[:, lay.n_phi // 2]]
        for s in (0.0, *args.noise):
            name = tag + (f"_noise{s:g}" if s else "")
            rows[name] = row(name, roundtrip(v, e, x, s, args.seed, align), b, rs, eta=ref_eta, eta_edges=eb)
        print(f"{tag}: standardisation width of the central-phi strips (centre +-6):",
              " ".join(f"{w:.2f}" for w in rows["_std"][tag][lay.n_eta // 2 - 6 : lay.n_eta // 2 + 7]))
    for name, model in models.items():
        noise = model.draw_noise(len(e), torch.Generator().manual_seed(args.seed))
        cond = (torch.from_numpy(ref_eta.astype(np.float32)),) if model.conditions_on_eta else ()
        steps0 = model.steps
        for k, steps in enumerate(args.steps):
            model.steps = steps
            for j, thr in enumerate(args.thresholds_mev):
                if j and k:
                    continue  # thresholds only at the first step count
                model.vars.threshold_gev = thr * 1e-3
                t1 = time.perf_counter()
                with torch.no_grad():
                    gen = model.sample(e, noise, *cond).numpy()
                key = f"{name}@{steps}" + (f"/{thr:g}MeV" if len(args.thresholds_mev) > 1 else "")
                rows[key] = row(key, gen, b, rs, en, args.energy_bins, ref_eta, eb)
                rows[key]["sample_s_per_shower"] = (time.perf_counter() - t1) / len(e)
        model.steps = steps0
    for r in rows.values():
        r.pop("_shapes", None)
    res = {"reference": str(args.reference), "n": len(e), "seed": args.seed, "wall_s": time.time() - t0, "rows": rows}
    atomic_write_text(args.output, json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.output} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
