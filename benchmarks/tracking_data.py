"""Occupancy and simulation time of the tracking samples (issue 14, docs/benchmarks/tracking_data.md).

Reads the runs written by ``lhcml tracking simulate`` (their ``manifest.json`` and HDF5 shards) and
prints, per run, the hits and particles per event (mean ± standard deviation over the events),
the noise hits, the hits per detector volume, and the time per event of each stage (Pythia
generation, ACTS Fatras, digitisation, ACTS CSV I/O, noise + conversion to the TrackML layout),
next to the seed's HL-LHC figures (100 000 space points and 10 000 tracks per event at ⟨μ⟩ = 200,
docs/references.md §24)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/tracking_data.py benchmarks/_work/tracking/{train,bench}_mu*

Times are wall-clock on the machine that ran the simulation (a 2-core CPU shared with other
jobs): they include contention. Pythia's time includes its initialisation once per shard.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lhcml.data.trackml import list_events, read_event
from lhcml.formatting import pm

#: seed 000 (docs/references.md §24): space points and tracks per event at <mu> = 200
SEED_SPACE_POINTS, SEED_TRACKS = 100_000, 10_000
VOLUMES = (7, 8, 9, 12, 13, 14, 16, 17, 18)
STAGES = ("pythia", "fatras", "digitisation", "acts_io", "convert_write")


def run_summary(run: Path, max_events: int | None = None) -> dict:
    """Per-event occupancy and per-stage time of one simulate run."""
    man = json.loads((run / "manifest.json").read_text())
    stats = [s for r in man["shard_results"] for s in (r.get("stats") or [])]
    times = {k: 0.0 for k in STAGES}
    n_timed = 0
    for r in man["shard_results"]:
        t = r.get("timing_s")
        if t:
            n_timed += r["events"]
            for k in STAGES:
                times[k] += float(t.get(k, 0.0))
    ids = list_events(run)[:max_events]
    ge4, ge4_prim, ge4_pt, per_particle, soft, secondary = [], [], [], [], [], []
    for e in ids:  # particles the TrackML score counts (>= 4 hits), and those with pT > 1 GeV
        ev = read_event(run, e, parts=("particles", "truth"), check=False)
        p, t = ev.particles, ev.truth
        pt = np.hypot(p["px"].to_numpy(float), p["py"].to_numpy(float))
        ge4.append(int((p["nhits"] >= 4).sum()))
        ge4_prim.append(int(((p["nhits"] >= 4) & (((p["particle_id"].to_numpy() >> 16) & 0xFF) == 0)).sum()))
        ge4_pt.append(int(((p["nhits"] >= 4) & (pt > 1.0)).sum()))
        # what the signal hits come from: hits per particle, soft particles, Fatras secondaries
        sig = t["particle_id"].to_numpy() != 0
        pid = t["particle_id"].to_numpy()[sig]
        row = np.searchsorted(p["particle_id"].to_numpy(), pid, sorter=np.argsort(p["particle_id"].to_numpy()))
        row = np.argsort(p["particle_id"].to_numpy())[row]
        per_particle.append(sig.sum() / max(int((p["nhits"] > 0).sum()), 1))
        soft.append(float((pt[row] < 0.5).mean()) if sig.any() else 0.0)
        secondary.append(float((((pid >> 16) & 0xFF) > 0).mean()) if sig.any() else 0.0)
    col = {k: np.array([s[k] for s in stats], dtype=float) for k in ("hits", "noise_hits", "particles_with_hits",
                                                                       "n_pileup")}  # fmt: skip
    vol = {v: np.array([s["hits_per_volume"].get(str(v), 0) for s in stats], dtype=float) for v in VOLUMES}
    return {"run": run.name, "mu": man["mu"], "events": man["events"], "complete": man["complete"], "col": col,
            "vol": vol, "ge4": np.array(ge4, float), "ge4_prim": np.array(ge4_prim, float), "ge4_pt": np.array(ge4_pt, float),
            "per_particle": np.array(per_particle), "soft": np.array(soft), "secondary": np.array(secondary),
            "t_per_event": {k: v / max(n_timed, 1) for k, v in times.items()}, "n_timed": n_timed}  # fmt: skip


def _ms(a: np.ndarray) -> str:
    return pm(float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else None) if len(a) else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="output directories of lhcml tracking simulate")
    ap.add_argument("--max-events", type=int, default=None, help="read at most this many events per run")
    args = ap.parse_args()
    rows = [run_summary(r, args.max_events) for r in args.runs if (r / "manifest.json").is_file()]
    rows.sort(key=lambda r: (r["mu"], r["run"]))
    print("| run | ⟨μ⟩ | events | pile-up vertices | hits | of which noise | particles with hits | particles ≥ 4 hits | "
          "primaries ≥ 4 hits | ≥ 4 hits, pT > 1 GeV |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["col"]
        print(f"| {r['run']} | {r['mu']:g} | {len(c['hits'])} | {_ms(c['n_pileup'])} | {_ms(c['hits'])} | "
              f"{_ms(c['noise_hits'])} | {_ms(c['particles_with_hits'])} | {_ms(r['ge4'])} | {_ms(r['ge4_prim'])} | "
              f"{_ms(r['ge4_pt'])} |")  # fmt: skip
    print(f"| seed 000 (HL-LHC) | 200 | – | – | {SEED_SPACE_POINTS} space points | – | – | {SEED_TRACKS} tracks | | – |")
    print()
    print("Composition of the hits from particles (mean ± std over events)")
    print()
    print("| run | hits per particle with hits | fraction from particles with pT < 0.5 GeV | fraction from Fatras secondaries |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {_ms(r['per_particle'])} | {_ms(r['soft'])} | {_ms(r['secondary'])} |")
    print()
    print("Hits per volume (mean per event): pixels 7 | 8 | 9, short strips 12 | 13 | 14, long strips 16 | 17 | 18")
    print()
    print("| run | " + " | ".join(str(v) for v in VOLUMES) + " |")
    print("|---|" + "---|" * len(VOLUMES))
    for r in rows:
        print(f"| {r['run']} | " + " | ".join(f"{r['vol'][v].mean():.0f}" for v in VOLUMES) + " |")
    print()
    print("Time per event per stage (s, wall clock, shared 2-core CPU)")
    print()
    print("| run | events timed | " + " | ".join(STAGES) + " | total |")
    print("|---|---|" + "---|" * (len(STAGES) + 1))
    for r in rows:
        t = r["t_per_event"]
        print(f"| {r['run']} | {r['n_timed']} | " + " | ".join(f"{t[k]:.2f}" for k in STAGES) + f" | {sum(t.values()):.2f} |")


if __name__ == "__main__":
    main()
