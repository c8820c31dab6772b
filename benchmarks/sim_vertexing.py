"""Primary vertices, impact-parameter pulls and hit patterns of the open simulation vs pile-up.

For each ⟨μ⟩ the script generates tt̄ events with Pythia (lhcml.sim.generator), overlays
minimum-bias pile-up (lhcml.sim.pileup), decays V0s, simulates tracks (lhcml.sim.tracker) and
reconstructs the primary vertices (lhcml.sim.vertexing). It measures

- PV efficiency: a reconstructed vertex lies within 0.1 mm in z of the truth hard scatter;
- hard-scatter selection: the chosen (max Σ pT²) vertex is that one (``pvIsHardScatter``);
  wrong-vertex rate = 1 − that;
- PV resolution in x, y, z (IQR/1.349 and a Gaussian core fit of reco − truth, chosen vertex
  correct);
- the d0-significance pull width of primary hard-scatter tracks with pT > 5 GeV (truth origin
  primary, events with the correct vertex) w.r.t. the reconstructed PV (the track removed from
  the vertex, vertex covariance added), and, for comparison, w.r.t. the beam line with the track
  σ alone (the former definition); the z0 sinθ pull likewise;
- hit-multiplicity distributions of all reconstructed tracks (|η| < 1 and all), holes, the fake
  fraction and the fraction of tracks in each tail source;
- CPU time per event of the tracker and of the vertex reconstruction.

Pull width: σ of a Gaussian fitted to the core (iterative ±2.5σ clipping, corrected for the
truncation); IQR/1.349 is printed beside it (it includes the tails).

Usage::

    nice -n 10 .venv/bin/python benchmarks/sim_vertexing.py --events 2000 --mu 0 60 140
"""

from __future__ import annotations

import argparse
import json
import time

import awkward as ak
import numpy as np
from scipy.stats import norm


def core_sigma(x: np.ndarray, clip: float = 2.5) -> float:
    """σ of the Gaussian core: iterative ±clip·σ clipping, corrected for the truncation."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 10:
        return float("nan")
    trunc = np.sqrt(1 - 2 * clip * norm.pdf(clip) / (2 * norm.cdf(clip) - 1))
    med = np.median(x)
    s = 1.4826 * np.median(np.abs(x - med))
    for _ in range(20):
        sel = np.abs(x - med) < clip * s
        med = np.mean(x[sel])
        s = np.std(x[sel]) / trunc
    return float(s)


def iqr_sigma(x: np.ndarray) -> float:
    from lhcml.validation.checks import robust_sigma

    return robust_sigma(x).value


def run_point(mu: float, n_events: int, seed: int, library, batch: int) -> dict:
    from lhcml.data.schema import TRUTH_ORIGIN
    from lhcml.sim.events import simulate_particles
    from lhcml.sim.generator import PythiaGenerator
    from lhcml.sim.processes import get_process
    from lhcml.sim.track_resolution import TAIL_DENSE_CORE, TAIL_MATERIAL, TAIL_PATTERN
    from lhcml.sim.tracker import simulate_tracks
    from lhcml.sim.vertexing import impact_parameters, reconstruct_primary_vertices

    gen = PythiaGenerator(get_process("ttbar"), seed).init()
    acc: dict[str, list] = {k: [] for k in (
        "found_hs", "chosen_hs", "dx", "dy", "dz", "nvtx", "npu", "pull_pv", "pull_bl", "zpull_pv",
        "npix", "nsct", "npixhole", "nscthole", "eta", "origin", "tail")}
    t_trk = t_vtx = 0.0
    done = 0
    while done < n_events:
        n = min(batch, n_events - done)
        rng = np.random.default_rng([seed, done, int(mu)])
        generated, particles, n_pu = simulate_particles(gen, n, mu, rng, library if mu > 0 else None)
        c0 = time.process_time()
        tracks = simulate_tracks(particles, rng)
        c1 = time.process_time()
        res = reconstruct_primary_vertices(tracks, rng=rng)
        ip = impact_parameters(tracks, res)
        c2 = time.process_time()
        t_trk += c1 - c0
        t_vtx += c2 - c1
        truth = generated.primary_vertex
        voff = res.vertex_offsets
        vevt = np.repeat(np.arange(n), res.n_vertices)
        close = np.abs(res.vertex_position[:, 2] - truth[vevt, 2]) < 0.1
        acc["found_hs"].append(np.bincount(vevt, weights=close, minlength=n) > 0)
        chosen = res.is_hard_scatter(truth[:, 2])
        acc["chosen_hs"].append(chosen)
        for i, k in enumerate(("dx", "dy", "dz")):
            acc[k].append((res.position[:, i] - truth[:, i])[chosen])
        acc["nvtx"].append(res.n_vertices)
        acc["npu"].append(n_pu)
        del voff
        f = ak.flatten(tracks)
        counts = ak.to_numpy(ak.num(tracks))
        tevt = np.repeat(np.arange(n), counts)
        origin = ak.to_numpy(f.origin)
        prim = ((origin == TRUTH_ORIGIN["primary"]) & ~ak.to_numpy(f.is_pileup)
                & (ak.to_numpy(f.vertex_index) == 0) & (ak.to_numpy(f.pt) > 5.0) & chosen[tevt])
        acc["pull_pv"].append(ip["d0"][prim] / ip["d0Uncertainty"][prim])
        acc["zpull_pv"].append(ip["z0SinTheta"][prim] / ip["z0SinThetaUncertainty"][prim])
        acc["pull_bl"].append(ak.to_numpy(f.d0)[prim] / ak.to_numpy(f.d0Uncertainty)[prim])
        acc["npix"].append(ak.to_numpy(f.numberOfPixelHits))
        acc["nsct"].append(ak.to_numpy(f.numberOfSCTHits))
        acc["npixhole"].append(ak.to_numpy(f.numberOfPixelHoles))
        acc["nscthole"].append(ak.to_numpy(f.numberOfSCTHoles))
        acc["eta"].append(ak.to_numpy(f.eta))
        acc["origin"].append(origin)
        acc["tail"].append(ak.to_numpy(f.tailSource))
        done += n
    a = {k: np.concatenate(v) for k, v in acc.items()}
    cen = np.abs(a["eta"]) < 1.0
    ntrk = len(a["npix"])

    def frac_hist(x, sel, top):
        h = np.bincount(np.minimum(x[sel], top), minlength=top + 1) / max(sel.sum(), 1)
        return [round(float(v), 4) for v in h]

    return {
        "mu": mu, "events": n_events,
        "pv_efficiency": float(a["found_hs"].mean()),
        "hs_selected": float(a["chosen_hs"].mean()),
        "wrong_vertex_rate": float(1 - a["chosen_hs"].mean()),
        "n_vertices_mean": float(a["nvtx"].mean()), "n_interactions_mean": float(a["npu"].mean() + 1),
        "res_x_um": 1e3 * core_sigma(a["dx"]), "res_y_um": 1e3 * core_sigma(a["dy"]),
        "res_z_um": 1e3 * core_sigma(a["dz"]), "res_z_iqr_um": 1e3 * iqr_sigma(a["dz"]),
        "n_pull_tracks": int(len(a["pull_pv"])),
        "d0sig_pull_core_pv": core_sigma(a["pull_pv"]), "d0sig_pull_iqr_pv": iqr_sigma(a["pull_pv"]),
        "d0sig_pull_core_beamline": core_sigma(a["pull_bl"]), "d0sig_pull_iqr_beamline": iqr_sigma(a["pull_bl"]),
        "z0sig_pull_core_pv": core_sigma(a["zpull_pv"]), "z0sig_pull_iqr_pv": iqr_sigma(a["zpull_pv"]),
        "tracks_per_event": ntrk / n_events,
        "pixel_hits_central": frac_hist(a["npix"], cen, 7), "sct_hits_central": frac_hist(a["nsct"], cen, 12),
        "pixel_hits_all": frac_hist(a["npix"], np.ones(ntrk, bool), 7),
        "frac_4_pixel_central": float(np.mean(a["npix"][cen] == 4)),
        "frac_8_sct_central": float(np.mean(a["nsct"][cen] == 8)),
        "frac_pixel_hole": float(np.mean(a["npixhole"] > 0)), "frac_sct_hole": float(np.mean(a["nscthole"] > 0)),
        "fake_fraction": float(np.mean(a["origin"] == TRUTH_ORIGIN["fake"])),
        "tail_material": float(np.mean(a["tail"] & TAIL_MATERIAL > 0)),
        "tail_dense_core": float(np.mean(a["tail"] & TAIL_DENSE_CORE > 0)),
        "tail_pattern": float(np.mean(a["tail"] & TAIL_PATTERN > 0)),
        "cpu_ms_tracker": 1e3 * t_trk / n_events, "cpu_ms_vertexing": 1e3 * t_vtx / n_events,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000, help="tt̄ events per μ point")
    ap.add_argument("--mu", type=float, nargs="+", default=[0.0, 60.0, 140.0])
    ap.add_argument("--library", type=int, default=1000, help="minimum-bias library size")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()

    from lhcml.sim.pileup import build_pileup_library

    library = build_pileup_library(args.library, args.seed + 7) if max(args.mu) > 0 else None
    rows = []
    for mu in args.mu:
        w0 = time.perf_counter()
        rows.append(run_point(mu, args.events, args.seed, library, args.batch))
        rows[-1]["wall_s"] = time.perf_counter() - w0
        print(f"# μ = {mu:g} done in {rows[-1]['wall_s']:.0f} s", flush=True)
    cols = [("μ", "mu", "{:g}"), ("events", "events", "{}"), ("PV eff", "pv_efficiency", "{:.3f}"),
            ("HS chosen", "hs_selected", "{:.3f}"), ("wrong vtx", "wrong_vertex_rate", "{:.3f}"),
            ("⟨N_vtx⟩", "n_vertices_mean", "{:.1f}"), ("⟨N_int⟩", "n_interactions_mean", "{:.1f}"),
            ("σx µm", "res_x_um", "{:.1f}"), ("σz µm", "res_z_um", "{:.1f}"), ("σz IQR", "res_z_iqr_um", "{:.1f}"),
            ("n trk", "n_pull_tracks", "{}"), ("d0 pull PV", "d0sig_pull_core_pv", "{:.3f}"),
            ("IQR", "d0sig_pull_iqr_pv", "{:.3f}"), ("d0 pull BL", "d0sig_pull_core_beamline", "{:.3f}"),
            ("z0 pull PV", "z0sig_pull_core_pv", "{:.3f}"),
            ("ms trk", "cpu_ms_tracker", "{:.1f}"), ("ms vtx", "cpu_ms_vertexing", "{:.1f}")]
    print("| " + " | ".join(c[0] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt.format(r[k]) for _, k, fmt in cols) + " |")
    cols2 = [("μ", "mu", "{:g}"), ("trk/evt", "tracks_per_event", "{:.0f}"),
             ("=4 pix (|η|<1)", "frac_4_pixel_central", "{:.3f}"), ("=8 SCT (|η|<1)", "frac_8_sct_central", "{:.3f}"),
             ("pix hole", "frac_pixel_hole", "{:.3f}"), ("SCT hole", "frac_sct_hole", "{:.3f}"),
             ("fakes", "fake_fraction", "{:.4f}"), ("tail mat", "tail_material", "{:.4f}"),
             ("tail dense", "tail_dense_core", "{:.4f}"), ("tail patrec", "tail_pattern", "{:.4f}")]
    print()
    print("| " + " | ".join(c[0] for c in cols2) + " |")
    print("|" + "---|" * len(cols2))
    for r in rows:
        print("| " + " | ".join(fmt.format(r[k]) for _, k, fmt in cols2) + " |")
    print()
    for r in rows:
        print(f"μ={r['mu']:g} pixel hits |η|<1 (0..7+): {r['pixel_hits_central']}")
        print(f"μ={r['mu']:g} SCT hits |η|<1 (0..12+): {r['sct_hits_central']}")
        print(f"μ={r['mu']:g} pixel hits all η (0..7+): {r['pixel_hits_all']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
