"""Peer comparison with weaver-core (the ParticleNet/ParT reference framework) on lhcml jets.

weaver-core is installed with ``pip install --no-deps weaver-core`` plus its light
dependencies (the ``bench`` extra; no CUDA torch). Two things are done:

1. ``--weaver-files DIR``: the lhcml test/train files are converted to ROOT trees with jagged
   branches (uproot) and a weaver data-config YAML is written for them (inputs ``pf_points``,
   ``pf_features``, ``pf_vectors``, ``pf_mask`` and labels ``label_qcd``/``label_top``), so that
   ``weaver --data-train ... --data-config lhcml_top.yaml --network-config ...`` runs on lhcml
   samples;
2. the comparison table: weaver's ``ParticleNet`` and ``ParticleTransformer`` classes and lhcml's
   ``particlenet`` and ``part`` are trained **in one identical loop** (same jets, same
   constituent features and normalisation as the weaver top-tagging config, same sizes, AdamW
   1e-3, batch 128, same epochs, one CPU thread), and evaluated on the same test jets: AUC,
   1/εB at εS = 30 %, training jets/s and inference latency (batch 1, one 64-constituent jet).
   Published TopLandscape numbers (full size, 1.2M jets, GPU) are printed beside.

Usage::

    python benchmarks/boosted_weaver.py --train runs/bench_boosted/train.h5 \
        --test runs/bench_boosted/test.h5 [--epochs 3] [--weaver-files runs/weaver]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

#: published Top-tagging landscape numbers (ParT paper, Table; full models, 1.2M training jets)
PUBLISHED = {"ParticleNet": (0.9858, 1615), "ParT": (0.9858, 1602)}
L = 64  # constituents per jet fed to the networks (weaver's top-tagging configs use 128)

DATA_CONFIG = """# weaver data config for lhcml large-R jet files converted by benchmarks/boosted_weaver.py
# (momenta in GeV; the standardisations are those of weaver's top-tagging examples)
selection: null
new_variables:
  part_mask: ak.ones_like(part_energy)
  part_pt: np.hypot(part_px, part_py)
  part_pt_log: np.log(part_pt)
  part_e_log: np.log(part_energy)
  part_logptrel: np.log(part_pt/jet_pt)
  part_logerel: np.log(part_energy/jet_energy)
  part_deltaR: np.hypot(part_deta, part_dphi)
preprocess:
  method: manual
  data_fraction: null
inputs:
  pf_points:
    length: {L}
    pad_mode: constant
    vars: [[part_deta, null], [part_dphi, null]]
  pf_features:
    length: {L}
    pad_mode: constant
    vars:
      - [part_pt_log, 1.7, 0.7]
      - [part_e_log, 2.0, 0.7]
      - [part_logptrel, -4.7, 0.7]
      - [part_logerel, -4.7, 0.7]
      - [part_deltaR, 0.2, 4.0]
      - [part_deta, null]
      - [part_dphi, null]
  pf_vectors:
    length: {L}
    pad_mode: constant
    vars: [[part_px, null], [part_py, null], [part_pz, null], [part_energy, null]]
  pf_mask:
    length: {L}
    pad_mode: constant
    vars: [[part_mask, null]]
labels:
  type: simple
  value: [label_qcd, label_top]
observers: [jet_pt, jet_mass]
"""


def load(path: Path) -> dict[str, np.ndarray]:
    """Top/QCD jets of an lhcml file as weaver-style arrays (leading L constituents, GeV)."""
    with h5py.File(path) as f:
        jets, flow = f["jets"][:], f["flow"][:]
    keep = np.isin(jets["R10TruthLabel"], [0, 1])
    jets, flow = jets[keep], flow[keep]
    order = np.argsort(np.where(flow["valid"], -flow["pt"], np.inf), axis=1, kind="stable")[:, :L]
    fl = np.take_along_axis(flow, order, axis=1)
    v = fl["valid"]
    pt, e = fl["pt"] / 1e3, fl["energy"] / 1e3
    deta, dphi, eta, phi = fl["deta"], fl["dphi"], fl["eta"], fl["phi"]
    jpt, je = jets["pt"][:, None] / 1e3, jets["energy"][:, None] / 1e3
    with np.errstate(divide="ignore", invalid="ignore"):
        feats = np.stack([
            (np.log(pt) - 1.7) * 0.7, (np.log(e) - 2.0) * 0.7, (np.log(pt / jpt) + 4.7) * 0.7,
            (np.log(e / je) + 4.7) * 0.7, (np.hypot(deta, dphi) - 0.2) * 4.0, deta, dphi,
        ], 1)  # fmt: skip
    vec = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), e], 1)
    mask = v[:, None, :]
    feats = np.where(mask, feats, 0).astype(np.float32)
    vec = np.where(mask, vec, 0).astype(np.float32)
    points = np.where(mask, np.stack([deta, dphi], 1), 0).astype(np.float32)
    raw = np.stack([fl["pt"], fl["energy"], eta, phi, deta, dphi], -1)
    raw = np.where(v[..., None], raw, 0).astype(np.float32)
    return {
        "points": points, "features": feats, "vectors": vec, "mask": mask.astype(np.float32),
        "raw": raw, "valid": v, "label": (jets["R10TruthLabel"] == 1).astype(np.int64),
        "jets": jets, "flow": fl,
    }  # fmt: skip


def write_weaver_files(train: dict, test: dict, out: Path) -> None:
    """ROOT trees with jagged branches + the data config, for ``weaver`` on lhcml samples."""
    import awkward as ak
    import uproot

    out.mkdir(parents=True, exist_ok=True)
    for name, d in (("train", train), ("test", test)):
        fl, v = d["flow"], d["valid"]
        counts = v.sum(1)

        def jag(x: np.ndarray) -> ak.Array:
            return ak.unflatten(x[v].astype(np.float32), counts)  # noqa: B023

        pt, eta, phi = fl["pt"] / 1e3, fl["eta"], fl["phi"]
        with uproot.recreate(out / f"{name}.root") as f:
            data = {
                "part_px": jag(pt * np.cos(phi)), "part_py": jag(pt * np.sin(phi)),
                "part_pz": jag(pt * np.sinh(eta)), "part_energy": jag(fl["energy"] / 1e3),
                "part_deta": jag(fl["deta"]), "part_dphi": jag(fl["dphi"]),
                "jet_pt": d["jets"]["pt"] / 1e3, "jet_energy": d["jets"]["energy"] / 1e3,
                "jet_mass": d["jets"]["mass"] / 1e3,
                "label_top": d["label"].astype(np.int32), "label_qcd": 1 - d["label"].astype(np.int32),
            }  # fmt: skip
            # a TTree (weaver reads TTrees; a plain assignment may write an RNTuple)
            types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()}
            tree = f.mktree("tree", types)
            tree.extend(data)
    (out / "lhcml_top.yaml").write_text(DATA_CONFIG.replace("{L}", str(L)))


class WeaverPN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from weaver.nn.model.ParticleNet import ParticleNet

        self.m = ParticleNet(7, 2, conv_params=[(16, (32, 32, 32)), (16, (64, 64, 64))],
                             fc_params=[(64, 0.1)], use_fusion=False)  # fmt: skip

    def forward(self, d):
        return self.m(d["points"], d["features"], d["mask"])


class WeaverParT(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        self.m = ParticleTransformer(7, 2, pair_input_dim=4, embed_dims=[64, 128, 64],
                                     pair_embed_dims=[32, 32], num_heads=4, num_layers=3,
                                     num_cls_layers=1, fc_params=[])  # fmt: skip

    def forward(self, d):
        return self.m(d["features"], v=d["vectors"], mask=d["mask"])


class Lhcml(torch.nn.Module):
    def __init__(self, name: str, norm: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__()
        from lhcml.models.registry import build_model

        hp = {
            "particlenet": dict(k=16, conv_params=[[32, 32, 32], [64, 64, 64]], fc_sizes=[64]),
            "part": dict(embed_dims=[64, 128, 64], pair_embed_dims=[32, 32], num_heads=4,
                         num_layers=3, num_cls_layers=1),
        }[name]  # fmt: skip
        self.m = build_model(name, 2, {"flow": 6}, **hp)
        self.m.configure_inputs({"flow": ["pt", "energy", "eta", "phi", "deta", "dphi"]})
        self.m.set_normalisation("flow", norm[0], norm[1])

    def forward(self, d):
        return self.m({"flow": d["raw"], "flow_valid": d["valid"]})["logits"]


def batches(data: dict, idx: np.ndarray, bs: int):
    keys = ("points", "features", "vectors", "mask", "raw", "valid")
    for s in range(0, len(idx), bs):
        sel = idx[s : s + bs]
        yield {k: torch.from_numpy(data[k][sel]) for k in keys}, torch.from_numpy(data["label"][sel])


def run(model: torch.nn.Module, train: dict, test: dict, epochs: int, bs: int = 128) -> dict:
    from lhcml.metrics.classification import auc
    from lhcml.metrics.rejection import rejection_at_efficiency

    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    n = len(train["label"])
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for x, y in batches(train, rng.permutation(n), bs):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_rate = n * epochs / (time.perf_counter() - t0)
    model.eval()
    scores = []
    with torch.no_grad():
        for x, _ in batches(test, np.arange(len(test["label"])), 512):
            scores.append(torch.log_softmax(model(x), 1).numpy())
    s = np.concatenate(scores)
    d = s[:, 1] - s[:, 0]
    lab = test["label"] == 1
    full = int(np.argmax(test["valid"].sum(1)))
    one = {k: v[:1] for k, v in next(batches(test, np.array([full]), 1))[0].items()}
    with torch.no_grad():
        for _ in range(3):
            model(one)
        t = time.perf_counter()
        for _ in range(30):
            model(one)
        lat = (time.perf_counter() - t) / 30 * 1e3
    return {
        "auc": float(auc(d[lab], d[~lab])),
        "r30": float(rejection_at_efficiency(d[lab], d[~lab], 0.3)[0]),
        "train_jets_s": train_rate,
        "latency_ms": lat,
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weaver-files", default=None, help="write ROOT files + data config here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load(Path(args.train)), load(Path(args.test))
    if args.weaver_files:
        write_weaver_files(train, test, Path(args.weaver_files))
        print(f"weaver ROOT files and data config written to {args.weaver_files}")
    v = train["valid"]
    flat = train["raw"][v]
    norm = (flat.mean(0), np.maximum(flat.std(0), 1e-3))
    print(f"train {len(train['label'])} jets, test {len(test['label'])} jets, {args.epochs} epochs, "
          f"L={L} constituents, 1 CPU thread each, shared 2-core machine")  # fmt: skip
    rows = []
    for label, fw, make in (
        ("ParticleNet", "weaver", WeaverPN),
        ("ParticleNet", "lhcml", lambda: Lhcml("particlenet", norm)),
        ("ParT", "weaver", WeaverParT),
        ("ParT", "lhcml", lambda: Lhcml("part", norm)),
    ):
        r = run(make(), train, test, args.epochs)
        rows.append((label, fw, r))
        print(f"  done {label} ({fw})", flush=True)
    print("\n| model | framework | params | AUC | 1/εB@30% | train jets/s | latency ms/jet | published AUC | published 1/εB@30% |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, fw, r in rows:
        pa, pr = PUBLISHED[label]
        print(f"| {label} | {fw} | {r['n_params']} | {r['auc']:.4f} | {r['r30']:.1f} | {r['train_jets_s']:.0f} | "
              f"{r['latency_ms']:.1f} | {pa} | {pr} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
