"""Detailed showers of two particle types side by side (e.g. electrons against photons).

For two CaloChallenge-layout files written by ``lhcml fastcalo simulate --particle A/B`` (each
read with its own binning XML; the voxel windows must be the same), per incident-energy bin:
the mean response ``E_dep/E_inc``, the mean share of each layer in the deposit, the mean
η width and φ centroid of the strips and the strips' sparsity, and the separation power
(:func:`lhcml.metrics.fastcalo.feature_separation`) of the strips' and middle layer's energy
share, the strip η width and φ centroid between the two particles. Features from
:func:`lhcml.tasks.fastcalo.evaluate.features_of`. Prints one table.

Usage::

    python benchmarks/fastcalo_particles.py \\
        benchmarks/_work/h4/ph/photon_continuous.h5 benchmarks/_work/h4/ph/binning_photon.xml \\
        benchmarks/_work/h4/el/electron_continuous.h5 benchmarks/_work/h4/el/binning_electron.xml \\
        --energy-bins 1,3,10,30,100,260
"""

from __future__ import annotations

import argparse

import numpy as np

from lhcml.data.calochallenge import read_showers
from lhcml.metrics.fastcalo import feature_separation
from lhcml.tasks.fastcalo.evaluate import features_of

COMPARED = ("share_strips", "share_middle", "width_eta_strips", "centroid_phi_strips")


def particle_features(path: str, binning: str, max_showers: int | None) -> dict[str, np.ndarray]:
    """``features_of`` of a file plus each layer's share of the deposit (``share_<layer>``)."""
    s = read_showers(path, binning, max_showers=max_showers)
    f = features_of(s)
    dep = np.clip(f["E_tot"], 1e-12, None)
    for name in s.binning.layer_names:
        f[f"share_{name}"] = f[f"E_{name}"] / dep
    f["layers"] = np.asarray(s.binning.layer_names)
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file_a")
    ap.add_argument("binning_a")
    ap.add_argument("file_b")
    ap.add_argument("binning_b")
    ap.add_argument("--energy-bins", default="1,3,10,30,100,260", help="incident-energy bin edges, GeV")
    ap.add_argument("--max-showers", type=int, default=None)
    args = ap.parse_args()
    fa = particle_features(args.file_a, args.binning_a, args.max_showers)
    fb = particle_features(args.file_b, args.binning_b, args.max_showers)
    if list(fa["layers"]) != list(fb["layers"]):
        raise SystemExit(f"the two binnings have other layers: {list(fa['layers'])} vs {list(fb['layers'])}")
    layers = list(fa["layers"])
    edges = [float(x) for x in args.energy_bins.split(",")]
    head = ["E_inc bin", "sample", "n", "E_dep/E_inc"] + [f"share {n}" for n in layers]
    head += ["strip w_eta", "strip phi centroid", "strip sparsity"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    seps = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = {}
        for tag, f in (("a", fa), ("b", fb)):
            m = (f["E_inc"] >= lo) & (f["E_inc"] < hi)
            sel[tag] = {k: v[m] for k, v in f.items() if k != "layers"}
            g = sel[tag]
            row = [f"{lo:g}-{hi:g} GeV", args.file_a if tag == "a" else args.file_b, str(int(m.sum())),
                   f"{g['E_ratio'].mean():.4f}"]  # fmt: skip
            row += [f"{g[f'share_{n}'].mean():.4f}" for n in layers]
            row += [f"{g['width_eta_strips'].mean():.5f}", f"{g['centroid_phi_strips'].mean():+.5f}",
                    f"{g['sparsity_strips'].mean():.3f}"]  # fmt: skip
            print("| " + " | ".join(row) + " |")
        seps.append((f"{lo:g}-{hi:g} GeV", [feature_separation(sel["a"][k], sel["b"][k]) for k in COMPARED]))
    print()
    print("| E_inc bin | " + " | ".join(f"separation {k}" for k in COMPARED) + " |")
    print("|" + "---|" * (len(COMPARED) + 1))
    for name, vals in seps:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")


if __name__ == "__main__":
    main()
