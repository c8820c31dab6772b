"""Realism of the tracker in tt̄ jets: track multiplicity, IP significance and truth origins.

Runs the full simulation chain (lhcml.sim.events.simulate_events: Pythia tt̄, minimum-bias
pile-up, V0 decays, tracker, particle flow, anti-kt 0.4 jets, association) and prints, per jet
flavour (HadronConeExclTruthLabelID), the mean number of associated tracks, the fraction of
tracks with |IP3D_signed_d0_significance| > 3, the mean signed d0 significance, the fraction of
tracks by ftagTruthOriginLabel, and hit-pattern summaries, next to the values we expect from
ATLAS (docs/references.md §4: b ~8-10, c ~6-8, light ~4-6 associated tracks; UNVERIFIED).

Usage::

    nice -n 10 .venv/bin/python benchmarks/sim_realism.py --events 300 --mu 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np

EXPECTED_NTRK = {"b": "8-10", "c": "6-8", "light": "4-6"}
FLAVOURS = {"b": 5, "c": 4, "light": 0}


def summarise(jets: np.ndarray, tracks: np.ndarray) -> list[dict]:
    from lhcml.data.schema import TRUTH_ORIGIN

    out = []
    for name, label in FLAVOURS.items():
        sel = jets["HadronConeExclTruthLabelID"] == label
        t = tracks[sel]
        v = t["valid"]
        sd0 = t["IP3D_signed_d0_significance"][v]
        row = {
            "flavour": name,
            "n_jets": int(sel.sum()),
            "mean_pt_GeV": float(jets["pt"][sel].mean() / 1e3) if sel.any() else np.nan,
            "ntrk": float(jets["n_tracks"][sel].mean()) if sel.any() else np.nan,
            "ntrk_no_pu": float((v & (t["ftagTruthOriginLabel"] != 0)).sum(1).mean()) if sel.any() else np.nan,
            "expected": EXPECTED_NTRK[name],
            "frac_sd0_gt3": float(np.mean(np.abs(sd0) > 3)) if len(sd0) else np.nan,
            "frac_sd0_pos_gt3": float(np.mean(sd0 > 3)) if len(sd0) else np.nan,
            "frac_sd0_neg_lt_m3": float(np.mean(sd0 < -3)) if len(sd0) else np.nan,
            "ibl_shared": float(np.mean(t["numberOfInnermostPixelLayerSharedHits"][v] > 0)) if len(sd0) else np.nan,
            "lepton": float(np.mean(t["leptonID"][v] != 0)) if len(sd0) else np.nan,
        }
        org = t["ftagTruthOriginLabel"][v]
        for oname, oval in TRUTH_ORIGIN.items():
            row[f"origin_{oname}"] = float(np.mean(org == oval)) if len(org) else np.nan
        out.append(row)
    return out


def track_counting(jets: np.ndarray, tracks: np.ndarray) -> None:
    """Light and c rejection at 70 % b efficiency of track-counting taggers (the n-th largest
    signed d0 significance of the jet's tracks): a quick check that the IP tails are neither
    absent (huge rejection) nor excessive."""
    sd0 = np.where(tracks["valid"], tracks["IP3D_signed_d0_significance"], -np.inf)
    sd0 = -np.sort(-sd0, axis=1)
    flav = jets["HadronConeExclTruthLabelID"]
    print("\ntrack counting (n-th largest sd0), 70 % b-jet efficiency:")
    print(f"{'tagger':>8s} {'cut':>7s} {'light rej':>10s} {'c rej':>8s}")
    for k in (1, 2, 3):
        d = sd0[:, k - 1]
        cut = np.quantile(d[flav == 5], 0.30)
        rl = 1.0 / max(np.mean(d[flav == 0] > cut), 1e-9)
        rc = 1.0 / max(np.mean(d[flav == 4] > cut), 1e-9)
        print(f"{'TC' + str(k):>8s} {cut:7.2f} {rl:10.1f} {rc:8.1f}")


def dense_core_loss(n_events: int, seed: int) -> None:
    """Tracks lost to merged clusters in high-pT jets: Z' events, truth-particle anti-kt 0.4 jets,
    the tracker run twice with the same random numbers, with and without the shared-hit loss."""
    import awkward as ak

    from lhcml.sim.association import associate_tracks
    from lhcml.sim.decays import decay_v0s
    from lhcml.sim.detector import default_detector_params
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.jets import cluster
    from lhcml.sim.tracker import simulate_tracks

    rng = np.random.default_rng(seed)
    generated = PythiaGenerator("zprime", seed=seed).init().generate(n_events)
    parts = decay_v0s(generated.particles, rng)
    pvz = np.asarray(generated.primary_vertex)[:, 2]
    vis = parts[parts.final & (abs(parts.pid) != 12) & (abs(parts.pid) != 14) & (abs(parts.pid) != 16)]
    jets, _ = cluster(ak.zip({"px": vis.px, "py": vis.py, "pz": vis.pz, "E": vis.e}), 0.4, min_pt=20.0)
    jets = jets[abs(jets.eta) < 2.1]
    p = default_detector_params()
    p0 = p.with_updates(shared_hits=dict(lost_probability=0.0))
    t_def, n_def = associate_tracks(jets, simulate_tracks(parts, np.random.default_rng(seed), p), pvz)
    t_ref, n_ref = associate_tracks(jets, simulate_tracks(parts, np.random.default_rng(seed), p0), pvz)
    core_def = (t_def["valid"] & (t_def["dr"] < 0.1)).sum(1)
    core_ref = (t_ref["valid"] & (t_ref["dr"] < 0.1)).sum(1)
    pt = ak.to_numpy(ak.flatten(jets.pt))
    print(f"\nZ', {n_events} events: tracks lost to merged clusters (ATLAS EPJC 77 (2017) 673: "
          "0.061 at 200-400 GeV, 0.093 at 1.4-1.6 TeV)")
    print(f"{'jet pT [GeV]':>16s} {'jets':>6s} {'tracks/jet':>11s} {'lost (jet)':>11s} "
          f"{'lost (dR<0.1 core)':>19s}")
    for lo, hi in ((50, 200), (200, 400), (400, 800), (800, 1400), (1400, 3000)):
        sel = (pt > lo) & (pt < hi)
        if sel.sum() == 0:
            continue
        loss = 1.0 - n_def[sel].sum() / max(n_ref[sel].sum(), 1)
        core = 1.0 - core_def[sel].sum() / max(core_ref[sel].sum(), 1)
        print(f"{lo:>7d}-{hi:<8d} {sel.sum():6d} {n_ref[sel].mean():11.1f} {loss:11.3f} {core:19.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--mu", type=float, default=50.0)
    ap.add_argument("--library", type=int, default=400, help="minimum-bias library size")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--no-tails", action="store_true",
                    help="switch off the non-Gaussian resolution tails (to see what they do)")
    ap.add_argument("--dense-events", type=int, default=0,
                    help="also measure the dense-core track loss on this many Z' events")
    args = ap.parse_args()
    if args.dense_events:
        dense_core_loss(args.dense_events, args.seed)
        if args.events == 0:
            return

    from lhcml.sim.events import simulate_events
    from lhcml.sim.pileup import build_pileup_library

    if args.no_tails:
        import lhcml.sim.tracker as tracker
        from lhcml.sim.detector import default_detector_params

        # every tail source of lhcml.sim.track_resolution off: no elastic kinks in the material,
        # no spoiled fits from shared pixel clusters, no wrong hits from pattern recognition
        no_tails = default_detector_params().with_updates(tails=dict(
            material=dict(elastic_to_inelastic=0.0),
            dense_core=dict(probability_per_shared_hit=0.0),
            pattern_recognition=dict(rate=0.0, density_rate=0.0),
        ))
        tracker.default_detector_params = lambda: no_tails  # simulate_events uses the defaults

    t0 = time.perf_counter()
    lib = build_pileup_library(args.library, seed=args.seed + 101) if args.mu > 0 else None
    out = simulate_events("ttbar", args.events, mu=args.mu, seed=args.seed, pileup=lib)
    dt = time.perf_counter() - t0
    jets, tracks = out["jets"], out["tracks"]
    rows = summarise(jets, tracks)
    print(f"tt̄, mu = {args.mu:g}, {args.events} events, {len(jets)} jets, {dt:.1f} s\n")
    keys = ["n_jets", "mean_pt_GeV", "ntrk", "ntrk_no_pu", "expected", "frac_sd0_gt3",
            "frac_sd0_pos_gt3", "frac_sd0_neg_lt_m3", "ibl_shared", "lepton"]
    okeys = [k for k in rows[0] if k.startswith("origin_")]
    print(f"{'':22s}" + "".join(f"{r['flavour']:>10s}" for r in rows))
    for k in keys + okeys:
        vals = []
        for r in rows:
            v = r[k]
            vals.append(f"{v:>10s}" if isinstance(v, str) else f"{v:10.3f}" if isinstance(v, float) else f"{v:10d}")
        print(f"{k:22s}" + "".join(vals))
    track_counting(jets, tracks)


if __name__ == "__main__":
    main()
