"""Peer comparison with weaver-core (the ParticleNet/ParT reference framework) on lhcml jets.

weaver-core is installed with ``pip install --no-deps weaver-core`` plus its light
dependencies (the ``bench`` extra; no CUDA torch). Three things are done:

1. ``--weaver-files DIR``: the lhcml test/train files are converted to ROOT trees with jagged
   branches (uproot) and a weaver data-config YAML is written for them (inputs ``pf_points``,
   ``pf_features``, ``pf_vectors``, ``pf_mask`` and labels ``label_qcd``/``label_top``), so that
   ``weaver --data-train ... --data-config lhcml_top.yaml --network-config ...`` runs on lhcml
   samples;
2. the comparison table: weaver's ``ParticleNet`` and ``ParticleTransformer`` classes and lhcml's
   ``particlenet`` and ``part`` are trained **in one identical loop** (same jets, same sizes,
   AdamW 1e-3, same batch size and epochs, one CPU thread; weaver gets the constituent features
   and standardisation of its top-tagging config, lhcml its raw constituents), the epoch with
   the lowest validation loss is kept (``--val``), and all are evaluated on the same test jets:
   AUC, 1/εB at εS = 30 % and 50 % with binomial errors, training jets/s and inference latency
   (batch 1, the test jet with most constituents; ``--onnx``: also the lhcml models exported to
   ONNX and run in onnxruntime, one thread). Rows ``*_lhcml_bucket`` train lhcml's models with
   its ``data.bucket_by_length`` batching (jets sorted by multiplicity within the shuffled
   epoch, batch order shuffled, padding trimmed per batch); they also check that the test scores
   do not change when the padding is trimmed. Rows ``*_pid`` add charge and the five
   particle-ID flags on both sides. Published TopLandscape numbers (full size, 1.2M
   jets, GPU) are printed beside. ``--results FILE`` keeps every finished row in a JSON file, so
   that rows can be run one at a time (``--seed S``: stored as ``KEY_sS``; ``--summary FILE
   [TIMING]`` prints the per-seed table);
3. ``--weaver-loader DIR``: ``lhcml convert`` of the test file to ROOT and parquet, read back by
   weaver-core's own data loader (``SimpleIterDataset``, :data:`CONVERTED_CONFIG`) and compared
   with lhcml's reading;
4. speed: ``--timing ROUNDS`` (training jets/s of ``--models``, interleaved) and ``--step-ab
   ROUNDS [--before REV]`` (ParT optimiser steps/s, interleaved, rotating order, with lhcml's
   ``part.py`` of git revision REV beside today's). Rows ``part_weaver_pid_notrim`` (weaver's
   ParT without its training-batch trimming) and ``part_lhcml_pid_trim`` (lhcml's with the
   same trimming, ``train_trim``) compare the two at equal work.

Usage::

    python benchmarks/boosted_weaver.py --train DIR/train.h5 --val DIR/val.h5 --test DIR/test.h5 \
        [--epochs 3] [--max-train N] [--models pn_weaver pn_lhcml ...] [--onnx] \
        [--results DIR/results.json] [--weaver-files runs/weaver] [--seed 1]
    python benchmarks/boosted_weaver.py --train DIR/train.h5 --test DIR/test.h5 --weaver-loader DIR/loader
    python benchmarks/boosted_weaver.py --summary DIR/results.json [DIR/timing.json]
    python benchmarks/boosted_weaver.py --train DIR/train.h5 --test DIR/val.h5 --step-ab 6 --timing-steps 6 \
        --before 80fa740 --models part_weaver_pid part_lhcml_pid
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from lhcml.formatting import pm

#: published top-tagging numbers (AUC, 1/εB@30 %, 1/εB@50 %; ParT paper, Table 2: full models,
#: 1.2M training jets of the Kasieczka set)
PUBLISHED = {"ParticleNet": (0.9858, 1615, 397), "ParT": (0.9858, 1602, 413)}
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
    feats[:, :5] = np.clip(feats[:, :5], -5, 5)  # weaver clips standardised inputs to [-5, 5]
    vec = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), e], 1)
    mask = v[:, None, :]
    feats = np.where(mask, feats, 0).astype(np.float32)
    vec = np.where(mask, vec, 0).astype(np.float32)
    points = np.where(mask, np.stack([deta, dphi], 1), 0).astype(np.float32)
    pid = np.stack([fl[v].astype(np.float32) for v in PID], -1)  # charge, particle-ID flags
    raw = np.concatenate([np.stack([fl["pt"], fl["energy"], eta, phi, deta, dphi], -1), pid], -1)
    raw = np.where(v[..., None], raw, 0).astype(np.float32)
    # weaver's JetClass configs feed charge and the particle-ID flags unstandardised
    feats_pid = np.concatenate([feats, np.where(mask, pid.transpose(0, 2, 1), 0).astype(np.float32)], 1)
    return {
        "points": points, "features": feats, "features_pid": feats_pid, "vectors": vec,
        "mask": mask.astype(np.float32),
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


#: weaver data config for the files ``lhcml convert FILE.h5 OUT.root|OUT.parquet --to root|parquet``
#: writes (one entry per jet, ``jet_<field>`` scalars, ``flow_<field>`` lists, GeV): the same
#: inputs as :data:`DATA_CONFIG` plus charge and particle-ID flags
CONVERTED_CONFIG = """# weaver data config for `lhcml convert --to root|parquet` output (GeV)
treename: Events
selection: (jet_R10TruthLabel == 0) | (jet_R10TruthLabel == 1)
new_variables:
  part_mask: ak.ones_like(flow_energy)
  part_px: flow_pt * np.cos(flow_phi)
  part_py: flow_pt * np.sin(flow_phi)
  part_pz: flow_pt * np.sinh(flow_eta)
  part_pt_log: np.log(flow_pt)
  part_e_log: np.log(flow_energy)
  part_logptrel: np.log(flow_pt / jet_pt)
  part_logerel: np.log(flow_energy / jet_energy)
  part_deltaR: np.hypot(flow_deta, flow_dphi)
  label_top: jet_R10TruthLabel == 1
  label_qcd: jet_R10TruthLabel == 0
preprocess:
  method: manual
  data_fraction: null
inputs:
  pf_points:
    length: {L}
    pad_mode: constant
    vars: [[flow_deta, null], [flow_dphi, null]]
  pf_features:
    length: {L}
    pad_mode: constant
    vars:
      - [part_pt_log, 1.7, 0.7]
      - [part_e_log, 2.0, 0.7]
      - [part_logptrel, -4.7, 0.7]
      - [part_logerel, -4.7, 0.7]
      - [part_deltaR, 0.2, 4.0]
      - [flow_deta, null]
      - [flow_dphi, null]
      - [flow_charge, null]
      - [flow_isPhoton, null]
      - [flow_isNeutralHadron, null]
      - [flow_isChargedHadron, null]
      - [flow_isElectron, null]
      - [flow_isMuon, null]
  pf_vectors:
    length: {L}
    pad_mode: constant
    vars: [[part_px, null], [part_py, null], [part_pz, null], [flow_energy, null]]
  pf_mask:
    length: {L}
    pad_mode: constant
    vars: [[part_mask, null]]
labels:
  type: simple
  value: [label_qcd, label_top]
observers: [jet_pt, jet_mass]
"""


def weaver_loader_check(h5_path: Path, out: Path, data: dict) -> dict[str, float]:
    """``lhcml convert`` the file to ROOT and parquet, read both with weaver-core's own data
    loader (``SimpleIterDataset`` + :data:`CONVERTED_CONFIG`) and compare with lhcml's reading
    (``data`` from :func:`load` of the same file): jets, labels, constituent counts, features and
    four-vectors. Returns the largest differences; raises if weaver reads something else."""
    from weaver.utils.dataset import SimpleIterDataset

    from lhcml.data.convert import export_columnar

    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "lhcml_converted.yaml"
    cfg.write_text(CONVERTED_CONFIG.replace("{L}", str(L)))
    # lhcml's arrays sorted by pT; the converted file keeps the stored order (also pT-ordered)
    n, res = len(data["label"]), {}
    for fmt in ("root", "parquet"):
        conv = export_columnar(h5_path, out / f"converted.{fmt}", fmt=fmt, progress=False)
        ds = SimpleIterDataset({"lhcml": [str(conv)]}, str(cfg), for_training=False, fetch_by_files=True,
                               fetch_step=1, async_load=False, name=fmt)  # fmt: skip
        xs, ys = {k: [] for k in ("pf_features", "pf_vectors", "pf_mask")}, []
        for x, y, _ in ds:
            for k in xs:
                xs[k].append(x[k])
            ys.append(y["_label_"])
        got = {k: np.stack(v) for k, v in xs.items()}
        lab = np.asarray(ys)
        if len(lab) != n or not np.array_equal(lab, data["label"]):
            raise RuntimeError(f"weaver read {len(lab)} jets / labels unlike lhcml's {n} from {conv}")
        mask = got["pf_mask"][:, 0] > 0
        if not np.array_equal(mask, data["valid"]):
            raise RuntimeError(f"weaver's constituent masks differ from lhcml's ({conv})")
        m3 = mask[:, None, :]
        res[f"{fmt}_max_abs_diff_features"] = float(np.abs(np.where(m3, got["pf_features"], 0) - data["features_pid"]).max())
        res[f"{fmt}_max_rel_diff_vectors"] = float((np.abs(np.where(m3, got["pf_vectors"], 0) - data["vectors"])
                                                   / (np.abs(data["vectors"]) + 1e-3)).max())  # fmt: skip
        res[f"{fmt}_jets"] = len(lab)
    return res


class WeaverPN(torch.nn.Module):
    """weaver-core's ParticleNet on its 7 kinematic features (``pid``: + charge and 5 PID flags)."""

    def __init__(self, pid: bool = False) -> None:
        super().__init__()
        from weaver.nn.model.ParticleNet import ParticleNet

        self.key = "features_pid" if pid else "features"
        self.m = ParticleNet(7 + 6 * pid, 2, conv_params=[(16, (32, 32, 32)), (16, (64, 64, 64))],
                             fc_params=[(64, 0.1)], use_fusion=False)  # fmt: skip

    def forward(self, d):
        return self.m(d["points"], d[self.key], d["mask"])


class WeaverParT(torch.nn.Module):
    """weaver-core's ParticleTransformer (its defaults: sequence trimming in training, pair
    features from the massive four-vectors) on the same features as :class:`WeaverPN`."""

    def __init__(self, pid: bool = False, trim: bool = True) -> None:
        super().__init__()
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        self.key = "features_pid" if pid else "features"
        self.m = ParticleTransformer(7 + 6 * pid, 2, pair_input_dim=4, embed_dims=[64, 128, 64],
                                     pair_embed_dims=[32, 32], num_heads=4, num_layers=3,
                                     num_cls_layers=1, fc_params=[], trim=trim)  # fmt: skip

    def forward(self, d):
        return self.m(d[self.key], v=d["vectors"], mask=d["mask"])


PID = ["charge", "isPhoton", "isNeutralHadron", "isChargedHadron", "isElectron", "isMuon"]
RAW = ["pt", "energy", "eta", "phi", "deta", "dphi", *PID]  # columns of the "raw" array
KIN = ["pt", "energy", "deta", "dphi"]


class Lhcml(torch.nn.Module):
    """lhcml model on raw constituents ``variables`` (a subset of :data:`RAW`, standardised with
    the training mean/std; the model adds the derived ln pT, ln E, ln pT/ΣpT, ln E/ΣE, ΔR
    features itself)."""

    def __init__(self, name: str, norm: tuple[np.ndarray, np.ndarray], variables: list[str], **extra) -> None:
        super().__init__()
        from lhcml.models.registry import build_model

        hp = {
            "particlenet": dict(k=16, conv_params=[[32, 32, 32], [64, 64, 64]], fc_sizes=[64]),
            "part": dict(embed_dims=[64, 128, 64], pair_embed_dims=[32, 32], num_heads=4,
                         num_layers=3, num_cls_layers=1),
        }[name] | extra  # fmt: skip
        cols = [RAW.index(v) for v in variables]
        self.register_buffer("cols", torch.tensor(cols), persistent=False)
        self.m = build_model(name, 2, {"flow": len(cols)}, **hp)
        self.m.configure_inputs({"flow": variables})
        self.m.set_normalisation("flow", norm[0][cols], norm[1][cols])

    def forward(self, d):
        return self.m({"flow": d["raw"][..., self.cols], "flow_valid": d["valid"]})["logits"]


KEYS = ("points", "features", "features_pid", "vectors", "mask", "raw", "valid")


def batches(data: dict, idx: np.ndarray, bs: int, trim: bool = False, order: np.ndarray | None = None):
    """Mini-batches of ``data`` rows ``idx`` (in this order, or batch starts in ``order``).

    ``trim``: drop the constituent slots that are padding in every jet of the batch (lhcml's
    ``data.bucket_by_length`` does the same; valid constituents are front-packed here).
    """
    starts = np.arange(0, len(idx), bs) if order is None else order
    for s in starts:
        sel = idx[s : s + bs]
        b = {k: data[k][sel] for k in KEYS}
        if trim:
            n = max(int(b["valid"].any(0).nonzero()[0].max(initial=0)) + 1, 1)
            b = {k: (v[:, :, :n] if k in ("points", "features", "features_pid", "vectors", "mask") else v[:, :n]) for k, v in b.items()}
        yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}, torch.from_numpy(data["label"][sel])


def bucket_order(data: dict, perm: np.ndarray, bs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """lhcml's ``bucket_by_length``: shuffled jets sorted by multiplicity, batch order shuffled."""
    n = data["valid"].sum(1)
    idx = perm[np.argsort(n[perm], kind="stable")]
    starts = np.arange(0, len(idx), bs)
    return idx, starts[rng.permutation(len(starts))]


def score(model: torch.nn.Module, data: dict, trim: bool = False, bs: int = 512) -> tuple[np.ndarray, float]:
    """log p(top) - log p(qcd) for every jet of ``data`` (file order) and the mean CE loss."""
    idx = np.arange(len(data["label"]))
    if trim:  # similar multiplicities per batch, so that trimming removes the padding
        idx = idx[np.argsort(data["valid"].sum(1), kind="stable")]
    out = np.empty(len(idx), np.float32)
    loss = 0.0
    model.eval()
    with torch.no_grad():
        for s, (x, y) in zip(range(0, len(idx), bs), batches(data, idx, bs, trim), strict=True):
            lp = torch.log_softmax(model(x), 1)
            loss += float(torch.nn.functional.nll_loss(lp, y, reduction="sum"))
            out[idx[s : s + bs]] = (lp[:, 1] - lp[:, 0]).numpy()
    return out, loss / len(idx)


def rejection(d: np.ndarray, lab: np.ndarray, eff: float) -> tuple[float, float]:
    """1/εB at signal efficiency ``eff`` and its binomial error."""
    from lhcml.metrics.rejection import rejection_at_efficiency

    r, err = rejection_at_efficiency(d[lab], d[~lab], eff)
    return float(r), float(err)


def latency(model: torch.nn.Module, test: dict, onnx_path: Path | None = None) -> tuple[float, float | None, float | None]:
    """ms per jet, batch 1 (the test jet with most constituents): eager torch, onnxruntime, and
    the largest |logit| difference onnxruntime - torch on that jet."""
    full = int(np.argmax(test["valid"].sum(1)))
    one = next(batches(test, np.array([full]), 1))[0]
    model.eval()

    def timeit(f) -> float:
        for _ in range(5):
            f()
        t, n = time.perf_counter(), 0
        while n < 200 and time.perf_counter() - t < 2.0:
            f()
            n += 1
        return (time.perf_counter() - t) / n * 1e3

    with torch.no_grad():
        lat = timeit(lambda: model(one))
    if onnx_path is None:
        return lat, None, None
    import onnxruntime as ort

    class Raw(torch.nn.Module):  # lhcml models: raw constituents + validity in, logits out
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, raw, valid):
            return self.m({"raw": raw, "valid": valid})

    torch.onnx.export(Raw(model), (one["raw"], one["valid"]), str(onnx_path), input_names=["raw", "valid"],
                      output_names=["logits"], dynamic_axes={"raw": {0: "N", 1: "n"}, "valid": {0: "N", 1: "n"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    model.eval()  # the exporter restores the wrapper's (training) mode on the way out
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    feed = {"raw": one["raw"].numpy(), "valid": one["valid"].numpy()}
    with torch.no_grad():
        diff = float(np.abs(sess.run(None, feed)[0] - model(one).numpy()).max())
    return lat, timeit(lambda: sess.run(None, feed)), diff


def run(model: torch.nn.Module, train: dict, test: dict, epochs: int, bs: int = 128, val: dict | None = None,
        bucket: bool = False, onnx_path: Path | None = None, seed: int = 0) -> dict:  # fmt: skip
    """Train (AdamW 1e-3, cross entropy), keep the epoch with the lowest validation loss, evaluate."""
    from lhcml.metrics.classification import auc

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    n = len(train["label"])
    t_train, best, best_state, history = 0.0, np.inf, None, []
    for ep in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        idx, order = bucket_order(train, perm, bs, rng) if bucket else (perm, None)
        for x, y in batches(train, idx, bs, trim=bucket, order=order):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        t_train += time.perf_counter() - t0
        if val is not None:
            _, vl = score(model, val, trim=bucket)
            history.append(round(vl, 4))
            if vl < best:
                best, best_state = vl, copy.deepcopy(model.state_dict())
        print(f"    epoch {ep}: {n / (time.perf_counter() - t0):.0f} jets/s" + (f", val loss {vl:.4f}" if val is not None else ""), flush=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    d, _ = score(model, test)
    lab = test["label"] == 1
    res = {"auc": float(auc(d[lab], d[~lab]))}
    for eff in (0.3, 0.5):
        res[f"r{int(eff * 100)}"], res[f"r{int(eff * 100)}_err"] = rejection(d, lab, eff)
    if bucket:  # padding invariance: the same model on trimmed, length-sorted test batches
        d2, _ = score(model, test, trim=True)
        res["max_score_diff_trimmed"] = float(np.abs(d2 - d).max())
    lat, lat_onnx, onnx_diff = latency(model, test, onnx_path)
    return {
        **res, "train_jets_s": n * epochs / t_train, "train_s": t_train, "latency_ms": lat,
        "latency_onnx_ms": lat_onnx, "onnx_max_abs_diff": onnx_diff, "n_params": sum(p.numel() for p in model.parameters()),
        "val_loss": history, "best_epoch": int(np.argmin(history)) if history else epochs - 1,
    }  # fmt: skip


def interleaved_timing(makers: dict, train: dict, bs: int, steps: int, rounds: int) -> dict[str, float]:
    """Training jets/s of every row, measured in interleaved rounds (median over rounds).

    Each round runs ``steps`` optimiser steps of every model in turn on the same randomly drawn
    batches (bucketed batches for the bucketing rows), so that load from other processes on a
    shared machine affects all rows alike.
    """
    rng = np.random.default_rng(1)
    n = len(train["label"])
    models = {k: make() for k, make in makers.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    rates: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        perm = rng.permutation(n)
        plain = list(batches(train, perm[: steps * bs], bs))
        idx, order = bucket_order(train, perm, bs, rng)
        bucketed = list(batches(train, idx, bs, trim=True, order=order[:steps]))
        for k, m in models.items():
            m.train()
            data = bucketed if ROWS[k][2] else plain
            rates[k].append(sum(len(y) for _, y in data) / _train_steps(m, opts[k], data))
    return {k: float(np.median(v)) for k, v in rates.items()}


def _train_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, data: list) -> float:
    """One optimiser step per (x, y) batch of ``data`` (cross-entropy); the wall seconds taken."""
    t0 = time.perf_counter()
    for x, y in data:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def part_before(rev: str, norm: tuple[np.ndarray, np.ndarray]) -> torch.nn.Module:
    """lhcml's ParT (charge + PID row) as ``src/lhcml/models/part.py`` was at git revision ``rev``,
    run against today's other modules (for the step A/B; not registered as a model)."""
    import subprocess

    src = subprocess.run(["git", "show", f"{rev}:src/lhcml/models/part.py"], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1]).stdout  # fmt: skip
    import importlib.util
    import tempfile

    # imported as a module from a file (no exec of strings); unregistered so it does not clash
    # with today's "part" in the model registry
    path = Path(tempfile.mkdtemp()) / f"part_{rev}.py"
    path.write_text(src.replace('@register_model("part")', ""))
    spec = importlib.util.spec_from_file_location(f"part_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ns = vars(module)
    variables = [*KIN, "eta", "phi", *PID]
    model = Lhcml("part", norm, variables, pair_only=["eta", "phi"])
    cols = [RAW.index(v) for v in variables]
    model.m = ns["ParticleTransformer"](2, {"flow": len(cols)}, embed_dims=[64, 128, 64], pair_embed_dims=[32, 32],
                                        num_heads=4, num_layers=3, num_cls_layers=1, pair_only=["eta", "phi"])  # fmt: skip
    model.m.configure_inputs({"flow": variables})
    model.m.set_normalisation("flow", norm[0][cols], norm[1][cols])
    return model


def step_ab(makers: dict, train: dict, bs: int, steps: int, rounds: int) -> dict[str, list[float]]:
    """Optimiser steps/s of every model, ``rounds`` rounds of ``steps`` steps on the same batches,
    the model order rotating from round to round (load from other processes hits all alike)."""
    rng = np.random.default_rng(1)
    batch_list = list(batches(train, rng.permutation(len(train["label"]))[: steps * bs], bs))
    models = {k: make() for k, make in makers.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    keys = list(models)
    rates: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds + 1):  # round 0: warm-up, not recorded
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            m = models[k].train()
            seconds = _train_steps(m, opts[k], batch_list)
            if r:
                rates[k].append(len(batch_list) / seconds)
    return rates


ROWS = {
    "pn_weaver": ("ParticleNet", "weaver", False),
    "pn_lhcml": ("ParticleNet", "lhcml", False),
    "pn_lhcml_bucket": ("ParticleNet", "lhcml + bucketing", True),
    "pn_lhcml_kin": ("ParticleNet", "lhcml, inputs pT, E, Δη, Δφ", False),
    "pn_lhcml_kin_drop": ("ParticleNet", "lhcml, inputs pT, E, Δη, Δφ, missing neighbours dropped (before December 2026)", False),
    "part_weaver": ("ParT", "weaver", False),
    "part_lhcml": ("ParT", "lhcml", False),
    "part_lhcml_bucket": ("ParT", "lhcml + bucketing", True),
    "part_lhcml_pair": ("ParT", "lhcml, η, φ only in the pair features", False),
    "part_lhcml_kin": ("ParT", "lhcml, inputs pT, E, Δη, Δφ (massless pair features)", False),
    # charge and particle-ID flags added on both sides
    "pn_weaver_pid": ("ParticleNet", "weaver, + charge, PID", False),
    "pn_lhcml_pid": ("ParticleNet", "lhcml, pT, E, Δη, Δφ + charge, PID", False),
    "part_weaver_pid": ("ParT", "weaver, + charge, PID", False),
    "part_lhcml_pid": ("ParT", "lhcml, pT, E, Δη, Δφ + charge, PID; η, φ only in the pair features", False),
    # training-batch trimming on both sides or on neither (weaver's default is on)
    "part_weaver_pid_notrim": ("ParT", "weaver, + charge, PID, without its sequence trimming", False),
    "part_lhcml_pid_trim": ("ParT", "lhcml, + charge, PID; η, φ only in the pair features; train_trim (0.9, 1.02) as weaver", False),
}


def table(results: dict) -> str:
    lines = [
        "| model | framework | params | AUC | 1/εB@30% | 1/εB@50% | train jets/s | best epoch | latency ms/jet (torch) "
        "| latency ms/jet (onnxruntime) | published AUC | published 1/εB@30% | published 1/εB@50% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, (label, fw, _) in ROWS.items():
        if key not in results:
            continue
        r = results[key]
        pa, p30, p50 = PUBLISHED[label]
        onnx = f"{r['latency_onnx_ms']:.1f}" if r.get("latency_onnx_ms") else "—"
        lines.append(
            f"| {label} | {fw} | {r['n_params']} | {r['auc']:.4f} | {pm(r['r30'], r['r30_err'])} | "
            f"{pm(r['r50'], r['r50_err'])} | {r['train_jets_s']:.0f} | {r['best_epoch'] + 1} | "
            f"{r['latency_ms']:.1f} | {onnx} | {pa} | {p30} | {p50} |"
        )  # fmt: skip
    return "\n".join(lines)


def seed_table(results: dict, timing: dict | None = None) -> str:
    """Markdown table of the rows stored per seed (``KEY_sSEED``): AUC, 1/εB@30 %, 1/εB@50 % per
    seed and their means ± standard deviation over the seeds, best validation loss, the
    interleaved training speed and the mean speed of the training runs."""
    lines = [
        "| model | framework | AUC per seed | mean AUC | 1/εB@30% per seed | mean | 1/εB@50% per seed | mean "
        "| best val. loss per seed | train jets/s (alternated) | train jets/s in the runs | latency ms/jet torch / onnxruntime |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def mean_sd(x: list[float], digits: int) -> str:  # mean ± sample standard deviation over the seeds
        return f"{np.mean(x):.{digits}f}" + (f" ± {np.std(x, ddof=1):.{digits}f}" if len(x) > 1 else "")

    for key, (label, fw, _) in ROWS.items():
        rs = [results[k] for k in sorted(results) if k.startswith(key + "_s") and k[len(key) + 2 :].isdigit()]
        if not rs:
            continue
        a, r30, r50 = ([r[m] for r in rs] for m in ("auc", "r30", "r50"))
        vl = [min(r["val_loss"]) if r.get("val_loss") else float("nan") for r in rs]
        speed = (timing or {}).get(key)
        lat = np.mean([r["latency_ms"] for r in rs])
        lat_o = [r["latency_onnx_ms"] for r in rs if r.get("latency_onnx_ms")]
        lines.append(
            f"| {label} | {fw} | {', '.join(f'{x:.4f}' for x in a)} | **{mean_sd(a, 4)}** | "
            f"{', '.join(f'{x:.0f}' for x in r30)} | **{mean_sd(r30, 0)}** | {', '.join(f'{x:.1f}' for x in r50)} | "
            f"**{mean_sd(r50, 1)}** | {', '.join(f'{x:.3f}' for x in vl)} | {f'{speed:.0f}' if speed else '—'} | "
            f"{np.mean([r['train_jets_s'] for r in rs]):.0f} | {lat:.1f} / {f'{np.mean(lat_o):.1f}' if lat_o else '—'} |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default=None, help="training file (required unless --summary)")
    ap.add_argument("--test", default=None, help="test file (required unless --summary)")
    ap.add_argument("--val", default=None, help="validation file: keep the epoch with the lowest loss")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-train", type=int, default=None, help="use only the first N training jets")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--onnx", action="store_true", help="also time the lhcml models in onnxruntime")
    ap.add_argument("--results", default=None, help="JSON file; rows are added to it as they finish")
    ap.add_argument("--weaver-files", default=None, help="write ROOT files + data config here")
    ap.add_argument("--summary", nargs="+", default=None, metavar="JSON",
                    help="only print the per-seed table of a --results file (and a --timing results file)")
    ap.add_argument("--weaver-loader", default=None, metavar="DIR",
                    help="only check that weaver-core's data loader reads `lhcml convert` output of --test (files in DIR)")
    ap.add_argument("--timing", type=int, default=0, metavar="ROUNDS",
                    help="only measure training jets/s of --models in this many interleaved rounds")
    ap.add_argument("--timing-steps", type=int, default=15, help="optimiser steps per model and round")
    ap.add_argument("--step-ab", type=int, default=0, metavar="ROUNDS",
                    help="only the ParT step A/B: --models and, with --before REV, lhcml's ParT of git revision REV")
    ap.add_argument("--before", default=None, metavar="REV", help="git revision of part.py for --step-ab")
    ap.add_argument("--seed", type=int, default=0,
                    help="training seed (initialisation, shuffling, dropout); rows are stored as KEY_sSEED when != 0")
    args = ap.parse_args()
    if args.summary:
        res = json.loads(Path(args.summary[0]).read_text())
        tim = json.loads(Path(args.summary[1]).read_text())["timing"]["jets_per_s"] if len(args.summary) > 1 else None
        print(seed_table(res, tim))
        return
    if not args.train or not args.test:
        ap.error("--train and --test are required")
    torch.set_num_threads(args.threads)
    train, test = load(Path(args.train)), load(Path(args.test))
    val = load(Path(args.val)) if args.val else None
    if args.max_train:
        train = {k: v[: args.max_train] for k, v in train.items()}
    if args.weaver_loader:
        r = weaver_loader_check(Path(args.test), Path(args.weaver_loader), test)
        print("weaver-core's loader on `lhcml convert` output of", args.test, json.dumps(r))
        return
    if args.weaver_files:
        write_weaver_files(train, test, Path(args.weaver_files))
        print(f"weaver ROOT files and data config written to {args.weaver_files}")
    v = train["valid"]
    flat = train["raw"][v]
    norm = (flat.mean(0), np.maximum(flat.std(0), 1e-3))
    nt = test["label"]
    print(f"train {len(train['label'])} jets, val {len(val['label']) if val else 0}, test {len(nt)} jets "
          f"({int(nt.sum())} top, {int((nt == 0).sum())} QCD), {args.epochs} epochs, batch {args.batch_size}, "
          f"L={L} constituents, {args.threads} CPU thread(s)")  # fmt: skip
    rpath = Path(args.results) if args.results else None
    if rpath:
        rpath.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(rpath.read_text()) if rpath and rpath.exists() else {}
    makers = {"ParticleNet": (WeaverPN, "particlenet"), "ParT": (WeaverParT, "part")}

    def make(key: str) -> torch.nn.Module:
        label, fw, _ = ROWS[key]
        wcls, lname = makers[label]
        if fw.startswith("weaver"):
            if key.endswith("_notrim"):
                return wcls(pid=True, trim=False)
            return wcls(pid=key.endswith("_pid"))
        # "_kin": without the absolute η, φ (weaver's ParticleNet sees only relative ones);
        # "_pair": η, φ used only for ParT's pair features (model option pair_only, massive
        # four-vectors); "_pid": + charge and particle-ID flags (ParT: η, φ in the pair features)
        if key.endswith("_pair"):
            return Lhcml(lname, norm, RAW[:6], pair_only=["eta", "phi"])
        if key == "part_lhcml_pid":
            return Lhcml(lname, norm, [*KIN, "eta", "phi", *PID], pair_only=["eta", "phi"])
        if key == "part_lhcml_pid_trim":
            return Lhcml(lname, norm, [*KIN, "eta", "phi", *PID], pair_only=["eta", "phi"], train_trim=[0.9, 1.02])
        if key.endswith("_pid"):
            return Lhcml(lname, norm, [*KIN, *PID])
        if key.endswith("_drop"):
            return Lhcml(lname, norm, KIN, missing_neighbours="drop")
        return Lhcml(lname, norm, KIN if key.endswith("_kin") else RAW[:6])

    if args.step_ab:
        torch.manual_seed(0)
        ab_makers = {k: (lambda k=k: make(k)) for k in args.models}
        if args.before:
            ab_makers[f"part_lhcml_pid@{args.before}"] = lambda: part_before(args.before, norm)
        rates = step_ab(ab_makers, train, args.batch_size, args.timing_steps, args.step_ab)
        ref = "part_weaver_pid" if "part_weaver_pid" in rates else next(iter(rates))
        print(f"| model | steps/s per round | median | per-round ratio to {ref} (median) |\n|---|---|---|---|")
        for k, v in rates.items():
            ratio = np.median(np.array(v) / np.array(rates[ref]))
            print(f"| {k} | {' '.join(f'{x:.3f}' for x in v)} | {np.median(v):.3f} | {ratio:.2f} |")
        return
    if args.timing:
        torch.manual_seed(0)
        rates = interleaved_timing({k: (lambda k=k: make(k)) for k in args.models}, train, args.batch_size,
                                   args.timing_steps, args.timing)  # fmt: skip
        for k, r in rates.items():
            print(f"  {k:20s} {r:7.1f} training jets/s (median of {args.timing} rounds)")
        if rpath:
            results["timing"] = {"jets_per_s": rates, "rounds": args.timing, "steps": args.timing_steps,
                                 "batch_size": args.batch_size}  # fmt: skip
            rpath.write_text(json.dumps(results, indent=1))
        return
    for key in args.models:
        label, fw, bucket = ROWS[key]
        if args.seed:  # seed 0: the (unseeded, deterministic) initialisation of the original rows
            torch.manual_seed(args.seed)
        model = make(key)
        onnx_path = rpath.with_name(f"{key}.onnx") if (args.onnx and not fw.startswith("weaver") and rpath) else None
        print(f"  {label} ({fw})", flush=True)
        r = run(model, train, test, args.epochs, args.batch_size, val, bucket, onnx_path, args.seed)
        r.update(epochs=args.epochs, batch_size=args.batch_size, n_train=len(train["label"]), n_test=len(nt),
                 seed=args.seed)  # fmt: skip
        if args.seed:
            key = f"{key}_s{args.seed}"
        results[key] = r
        if rpath:
            torch.save(model.state_dict(), rpath.with_name(f"{key}.pt"))
        print("   ", {k: (round(x, 4) if isinstance(x, float) else x) for k, x in r.items()}, flush=True)
        if rpath:
            rpath.write_text(json.dumps(results, indent=1))
    print()
    print(table(results))


if __name__ == "__main__":
    sys.exit(main())
