"""Paired driver (issue 12, twelfth version): one (process, seed), mu 0 and 140, several splitter variants
on the same events. Pythia's hard events are generated once per seed and replayed for every mu and variant
(the chain's own random streams are seeded per batch from the seed, so the runs are paired).

variants:
  nominal  jet_geometry("one_em_layer")            (default)
  primary  jet_geometry("one_em_layer_primary")    (eleventh version: primary = E - strips part)
  back     primary, and the part in ATLAS's back depth (20-22 X0, |eta| < 2.5) removed too:
           primary = middle only (switch (a))
  samplings jet_geometry("em_samplings")
A patched tree (README.md: PYTHONPATH=TREE/src) with --tag names the what-if variants
(_nostripmax, _walk, _noveto, _midhad). Output: OUT/<process>_s<seed>_mu<mu>_<variant><tag>.npz.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

import lhcml.sim.generator as generator  # noqa: E402
import lhcml.sim.jet_calo as jc  # noqa: E402
from lhcml.sim.events import simulate_events  # noqa: E402
from lhcml.sim.pileup import build_pileup_library  # noqa: E402
from lhcml.sim.processes import PROCESSES, Process  # noqa: E402
from lhcml.tasks.boosted.substructure import substructure_from_flow  # noqa: E402

#: per-jet arrays (git-ignored scratch; the measurement used benchmarks/_work/h12j/out)
OUT = Path(__file__).resolve().parents[2] / "_work" / "split_switches" / "out"
_REAL = generator.PythiaGenerator
_CACHE: dict = {}


class CachedGenerator:
    """PythiaGenerator stand-in: the n-th generate() of a (process, seed) returns the cached n-th batch."""

    def __init__(self, process, seed, extra_settings=()):
        self.process = process
        self.seed = int(seed)
        self.key = (process.name if isinstance(process, Process) else str(process), self.seed)
        self.i = 0

    def init(self):
        return self

    def generate(self, n):
        entry = _CACHE.setdefault(self.key, {"real": None, "batches": []})
        if self.i < len(entry["batches"]):
            g, n0 = entry["batches"][self.i]
            assert n0 == n
        else:
            if entry["real"] is None:
                entry["real"] = _REAL(self.process, self.seed).init()
            g = entry["real"].generate(n)
            entry["batches"].append((g, n))
        self.i += 1
        return g


def register_zonly():
    wz = PROCESSES["wz"]
    off = ("WeakBosonAndParton:qqbar2Wg", "WeakBosonAndParton:qg2Wq")
    settings = tuple(s.replace("= on", "= off") if s.split("=")[0].strip() in off else s for s in wz.settings)
    PROCESSES["zonly"] = dataclasses.replace(wz, name="zonly", settings=settings)


_ORIG_SHARE = jc.virtual_strips_share


def _share_strips_back(geo, eta, kind, em_a, em_b, t0, shape, hscale):
    """Strips' + back's part of each particle's EM-compartment energy (em_samplings' depths)."""
    samp = jc.load_geometry(jc.SAMPLINGS_FILE)
    split = jc.em_sampling_split(samp, eta, kind, em_a, em_b, t0, shape, hscale)
    share = split[:, 0] + split[:, 2]
    return np.where(np.abs(eta) < jc.VIRTUAL_STRIPS_ETA, np.clip(share, 0.0, 1.0), 0.0)


VARIANTS = {
    "nominal": ("one_em_layer", None),
    "primary": ("one_em_layer_primary", None),
    "back": ("one_em_layer_primary", _share_strips_back),
    "samplings": ("em_samplings", None),
}

FIELDS = ("eventNumber", "R10TruthLabel", "truthJetMass", "truthJetPt", "pt", "eta", "mass", "n_constituents")


def run(process, seed, events, mus, variants, tag=""):
    generator.PythiaGenerator = CachedGenerator
    lib = None
    for mu in mus:
        if mu > 0 and lib is None:
            t0 = time.perf_counter()
            lib = build_pileup_library(1000, seed + 1)
            print(f"library {seed + 1}: {time.perf_counter() - t0:.0f} s", flush=True)
        for v in variants:
            geo_name, share = VARIANTS[v]
            jc.virtual_strips_share = share or _ORIG_SHARE
            t0 = time.perf_counter()
            try:
                with jc.jet_geometry(geo_name):
                    out = simulate_events(process, events, mu=mu, seed=seed, pileup=lib if mu > 0 else None,
                                          constituents="clusters")
            finally:
                jc.virtual_strips_share = _ORIG_SHARE
            j = out["jets"]
            d = {k: np.asarray(j[k]) for k in FIELDS}
            d["tau32"] = np.asarray(substructure_from_flow(out["flow"])["Tau32_wta"])
            OUT.mkdir(parents=True, exist_ok=True)
            f = OUT / f"{process}_s{seed}_mu{mu:g}_{v}{tag}.npz"
            np.savez_compressed(str(f) + ".tmp.npz", **d)
            os.replace(str(f) + ".tmp.npz", f)
            print(f"{process} {seed} mu {mu:g} {v}: {len(j)} jets, {time.perf_counter() - t0:.0f} s", flush=True)
    _CACHE.clear()
    generator.PythiaGenerator = _REAL


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("process")
    ap.add_argument("seed", type=int)
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--mus", type=float, nargs="+", default=[0.0, 140.0])
    ap.add_argument("--variants", nargs="+", default=["primary", "back"])
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    register_zonly()
    run(a.process, a.seed, a.events, a.mus, a.variants, a.tag)
