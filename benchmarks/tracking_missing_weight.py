"""Where a track finder loses TrackML score weight: the missing weight per particle category (issue 14).

The TrackML score of an event is the summed truth weight of the hits that good tracks (double
majority) give to their particle, over the event's total weight; ``1 - score`` is the weight the
finder misses. This benchmark runs a finder (or reuses its saved tracks), evaluates each event
with lhcml's own scoring (``lhcml.tasks.tracking.evaluate.evaluate_sample``: per particle its
``weight`` and the ``score_weight`` collected) and splits each particle's missing weight
``weight - score_weight`` by:

- production radius of the particle (transverse, from the particles table's vx, vy);
- truth pT and |eta|;
- pixel seedability: hits on distinct pixel layers (volume, layer) -- ACTS's triplet seeding needs
  three; particles with fewer are split by whether they have three distinct strip layers (they
  would need strip seeding) or not;
- how each missed hit was lost: the particle was found (has a good track) or not, and the hit is
  on no track, on a track whose majority is the same particle (a split-off fragment or a track
  that failed the double majority), or on a track of another particle (merged / taken).

Every table sums to the mean missing weight ``1 - mean score`` (averaged over events, as the score).
Tracks are saved per event (``--tracks DIR``, ``.npz``) and reused when present, so a rerun only
re-evaluates.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 python benchmarks/tracking_missing_weight.py \\
        configs/tracking/ml_seeds_4pass_budget_p34.yaml --tracks benchmarks/_work/h16t2/tracks \\
        benchmarks/_work/tracking/bench_mu200:0-4 benchmarks/_work/tracking/bench_mu200_b:0-4 \\
        benchmarks/_work/tracking/bench_mu200_c:0-14
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: the generic detector's volumes (docs/benchmarks/tracking_data.md): pixels and strips
PIXEL_VOLUMES = (7, 8, 9)
STRIP_VOLUMES = (12, 13, 14, 16, 17, 18)

RADIUS_BINS = ((0.0, 1.0, "r < 1 mm (prompt)"), (1.0, 30.0, "1-30 mm"), (30.0, 70.0, "30-70 mm"),
               (70.0, 200.0, "70-200 mm"), (200.0, np.inf, "> 200 mm"))  # fmt: skip
PT_BINS = (
    (0.0, 0.2, "pT < 0.2 GeV"),
    (0.2, 0.5, "0.2-0.5 GeV"),
    (0.5, 1.0, "0.5-1 GeV"),
    (1.0, np.inf, "> 1 GeV"),
)
PT_FINE = ((0.0, 0.1, "< 0.1"), (0.1, 0.15, "0.1-0.15"), (0.15, 0.2, "0.15-0.2"), (0.2, 0.4, "0.2-0.4"),
           (0.4, 0.5, "0.4-0.5"), (0.5, 1.0, "0.5-1"), (1.0, np.inf, "> 1"))  # fmt: skip
ETA_FINE = ((0.0, 1.5, "< 1.5"), (1.5, 2.5, "1.5-2.5"), (2.5, 3.0, "2.5-3"), (3.0, 3.5, "3-3.5"),
            (3.5, np.inf, "> 3.5"))  # fmt: skip
#: the particle's hits in the event: the passes keep tracks of >= 7 (first two) or >= 8 measurements (third, fourth)
HIT_BINS = ((0, 7, "4-6 hits"), (7, 8, "7"), (8, 10, "8-9"), (10, np.inf, ">= 10"))
ETA_BINS = ((0.0, 1.5, "|eta| < 1.5"), (1.5, 2.5, "1.5-2.5"), (2.5, np.inf, "> 2.5"))


def parse_samples(items: list[str]) -> list[tuple[Path, list[int]]]:
    from lhcml.tasks.tracking.finders import parse_sample_specs

    return parse_sample_specs(items)


def tracks_of(finder: str, d: Path, e: int, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The finder's (track_id, hit_id) on event ``e`` of ``d``, from ``cache`` when saved there."""
    from lhcml.atomic import atomic_write_bytes
    from lhcml.tasks.tracking.finders import get_finder

    f = None if cache is None else cache / f"{d.name}_{e:04d}.npz"
    if f is not None and f.is_file():
        z = np.load(f)
        return z["track_id"], z["hit_id"]
    if finder.endswith((".yaml", ".yml")):
        res = get_finder("ml-seeds+ckf")(d, e, finder)
    else:
        res = get_finder(finder)(d, e, None)
    get = res.get if isinstance(res, dict) else lambda key, default=None: getattr(res, key, default)
    t, h = np.asarray(get("track_id"), dtype=np.int64), np.asarray(get("hit_id"), dtype=np.int64)
    first = np.asarray(get("pass_first_track_id") or [], dtype=np.int64)
    if f is not None:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, track_id=t, hit_id=h, pass_first_track_id=first)
        atomic_write_bytes(f, buf.getvalue())
    return t, h


def event_table(d: Path, e: int, t: np.ndarray, h: np.ndarray) -> pd.DataFrame:
    """One row per particle with truth weight: weight, collected, categories and the missed weight's
    split by how each missed hit was lost (all as fractions of the event's total weight)."""
    from lhcml.data.trackml import read_event
    from lhcml.metrics.tracking import good_pairs, to_submission
    from lhcml.tasks.tracking.evaluate import evaluate_sample

    _, per = evaluate_sample(d, {"f": {e: (t, h, {})}})
    perf = per["f"][0]
    ev = read_event(d, e, parts=("hits", "particles", "truth"))
    truth, hits, parts = ev.truth, ev.hits, ev.particles
    total = float(truth["weight"].astype(np.float64).sum())
    p = perf.particles.set_index("particle_id")
    p = p[p["weight"] > 0].copy()
    # production radius
    v = parts.set_index("particle_id").reindex(p.index)
    p["r_prod"] = np.hypot(v["vx"].to_numpy(float), v["vy"].to_numpy(float))
    # distinct pixel / strip layers of the particle's hits
    hv = truth[["hit_id", "particle_id", "weight"]].merge(
        hits[["hit_id", "volume_id", "layer_id"]], on="hit_id"
    )
    hv = hv[hv["particle_id"] != 0]
    lay = hv[["particle_id", "volume_id", "layer_id"]].drop_duplicates()
    npix = lay[lay["volume_id"].isin(PIXEL_VOLUMES)].groupby("particle_id").size()
    nstr = lay[lay["volume_id"].isin(STRIP_VOLUMES)].groupby("particle_id").size()
    p["pixel_layers"] = npix.reindex(p.index).fillna(0).astype(int).to_numpy()
    p["strip_layers"] = nstr.reindex(p.index).fillna(0).astype(int).to_numpy()
    p["pixel_hits"] = (
        hv[hv["volume_id"].isin(PIXEL_VOLUMES)]
        .groupby("particle_id")
        .size()
        .reindex(p.index)
        .fillna(0)
        .astype(int)
        .to_numpy()
    )
    # how each hit of the particle fared in the score's own one-track-per-hit submission (a hit in
    # several candidates goes to the longest): on its good track (collected), on no candidate, on a
    # track whose majority is the particle (not its good track), on a track of another particle
    sub = to_submission(t, h, truth["hit_id"].to_numpy())
    pairs = good_pairs(truth, sub)
    hs = sub.merge(truth[["hit_id", "particle_id"]], on="hit_id")
    cnt = (
        hs[hs["particle_id"] != 0]
        .groupby(["track_id", "particle_id"])
        .size()
        .rename("n")
        .reset_index()
    )
    cnt = cnt.sort_values(
        ["track_id", "n", "particle_id"], ascending=[True, False, True]
    ).drop_duplicates("track_id")
    major = cnt.set_index("track_id")["particle_id"]
    hv = hv.merge(sub, on="hit_id", how="left")
    hv["track_major"] = major.reindex(hv["track_id"].to_numpy()).to_numpy()
    gtrack = pairs.set_index("particle_id")["track_id"]
    hv["good_track"] = gtrack.reindex(hv["particle_id"].to_numpy()).to_numpy()
    hv.loc[~hv["hit_id"].isin(np.unique(h)), "track_id"] = np.nan
    on_good = hv["track_id"].notna() & (hv["track_id"] == hv["good_track"])
    none = hv["track_id"].isna()
    same = ~none & ~on_good & (hv["track_major"] == hv["particle_id"])
    other = ~none & ~on_good & ~same
    w = hv["weight"].astype(np.float64) / total
    for name, m in (
        ("lost_unused", none),
        ("lost_own_fragment", same),
        ("lost_other_track", other),
        ("collected_check", on_good),
    ):
        p[name] = (
            w[m].groupby(hv.loc[m, "particle_id"]).sum().reindex(p.index).fillna(0.0).to_numpy()
        )
    for name, vols in (
        ("lost_pixels", PIXEL_VOLUMES),
        ("lost_short_strips", STRIP_VOLUMES[:3]),
        ("lost_long_strips", STRIP_VOLUMES[3:]),
    ):
        m = ~on_good & hv["volume_id"].isin(vols)
        p[name] = (
            w[m].groupby(hv.loc[m, "particle_id"]).sum().reindex(p.index).fillna(0.0).to_numpy()
        )
    p["missing"] = p["weight"] - p["score_weight"]
    p["found"] = p["score_weight"] > 0
    return p.reset_index()


def label(x: np.ndarray, bins: tuple) -> np.ndarray:
    out = np.full(len(x), bins[-1][2], dtype=object)
    for lo, hi, name in bins:
        out[(x >= lo) & (x < hi)] = name
    return out


def add_categories(p: pd.DataFrame) -> pd.DataFrame:
    p = p.copy()
    p["radius"] = label(p["r_prod"].to_numpy(), RADIUS_BINS)
    p["pT"] = label(p["pt"].to_numpy(), PT_BINS)
    p["pT [GeV]"] = label(p["pt"].to_numpy(), PT_FINE)
    p["|eta|"] = label(np.abs(p["eta"].to_numpy()), ETA_FINE)
    p["hits"] = label(p["nhits"].to_numpy(), HIT_BINS)
    p["abs_eta"] = label(np.abs(p["eta"].to_numpy()), ETA_BINS)
    seed = np.where(p["pixel_layers"] >= 3, "pixel-seedable (>= 3 pixel layers)",
                    np.where(p["strip_layers"] >= 3, "not pixel-seedable, >= 3 strip layers", "< 3 pixel and < 3 strip layers"))  # fmt: skip
    p["seedable"] = seed
    ph = p["pixel_hits"].to_numpy()
    p["pixel_hits_cat"] = np.where(
        ph == 0,
        "0 pixel hits",
        np.where(
            ph < 3,
            "1-2",
            np.where(p["pixel_layers"] < 3, ">= 3 hits, < 3 layers", ">= 3 hits on >= 3 layers"),
        ),
    )
    return p


def table(p: pd.DataFrame, by: str, n_events: int, order: list[str] | None = None) -> str:
    g = p.groupby(by)
    cols = ["weight", "missing", "lost_unused", "lost_own_fragment", "lost_other_track"]
    s = g[cols].sum() / n_events
    s["missing_found"] = (
        p[p["found"]].groupby(by)["missing"].sum().reindex(s.index).fillna(0) / n_events
    )
    s["reach"] = (
        p[p["pixel_layers"] >= 3].groupby(by)["missing"].sum().reindex(s.index).fillna(0) / n_events
    )
    s["particles"] = g.size() / n_events
    if order:
        s = s.reindex([o for o in order if o in s.index])
    lines = [f"| {by} | particles / event | weight | missing | of which: particle found (partial) | not found | hits on no track "
             "| on own other track | on another particle's track | missing, pixel-seedable |", "|---" * 10 + "|"]  # fmt: skip
    for k, r in s.iterrows():
        lines.append(f"| {k} | {r['particles']:.0f} | {r['weight']:.4f} | **{r['missing']:.4f}** | {r['missing_found']:.4f} "
                     f"| {r['missing'] - r['missing_found']:.4f} | {r['lost_unused']:.4f} | {r['lost_own_fragment']:.4f} "
                     f"| {r['lost_other_track']:.4f} | {r['reach']:.4f} |")  # fmt: skip
    t = s.sum()
    lines.append(f"| all | {t['particles']:.0f} | {t['weight']:.4f} | **{t['missing']:.4f}** | {t['missing_found']:.4f} "
                 f"| {t['missing'] - t['missing_found']:.4f} | {t['lost_unused']:.4f} | {t['lost_own_fragment']:.4f} "
                 f"| {t['lost_other_track']:.4f} | {t['reach']:.4f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "finder", help="a registered finder (ckf, ...) or an ml-seeds+ckf config (YAML)"
    )
    ap.add_argument("samples", nargs="+", help="DIR:EVENTS (0-14 or 0,1,2; default all)")
    ap.add_argument(
        "--tracks",
        type=Path,
        default=None,
        help="folder to save / reuse the finder's tracks (.npz per event)",
    )
    ap.add_argument(
        "--csv", type=Path, default=None, help="write the per-particle table (all events) here"
    )
    a = ap.parse_args(argv)
    from lhcml.errors import LhcmlError

    try:
        if a.finder.endswith((".yaml", ".yml")) and not Path(a.finder).is_file():
            print(f"error: no config {a.finder}", file=sys.stderr)
            return 2
        samples = parse_samples(a.samples)
        if a.tracks is not None:
            a.tracks.mkdir(parents=True, exist_ok=True)
        rows, scores = [], []
        for d, ids in samples:
            for e in ids:
                t, h = tracks_of(a.finder, d, e, a.tracks)
                p = event_table(d, e, t, h)
                p["sample"], p["event"] = d.name, e
                scores.append(p["score_weight"].sum())
                rows.append(p)
                print(
                    f"{d.name} {e}: score {scores[-1]:.4f}, missing {p['missing'].sum():.4f}",
                    file=sys.stderr,
                    flush=True,
                )
    except LhcmlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    p = add_categories(pd.concat(rows, ignore_index=True))
    n = len(scores)
    if a.csv is not None:
        from lhcml.atomic import atomic_write_text

        try:
            atomic_write_text(a.csv, p.to_csv(index=False))
        except LhcmlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(
        f"{n} events, mean score {np.mean(scores):.4f}, missing weight {1 - np.mean(scores):.4f} "
        f"(particles' weight {p['weight'].sum() / n:.4f}; collected check {(p['collected_check'].sum() - p['score_weight'].sum()) / n:+.1e})"
    )
    print(
        "Missing weight = the particles' weight minus what the score collected, per event, as a fraction of the event's total.\n"
    )
    for by, order in (("radius", [b[2] for b in RADIUS_BINS]), ("pT", [b[2] for b in PT_BINS]),
                      ("abs_eta", [b[2] for b in ETA_BINS]), ("seedable", None),
                      ("pixel_hits_cat", ["0 pixel hits", "1-2", ">= 3 hits, < 3 layers", ">= 3 hits on >= 3 layers"]),
                      ("hits", [b[2] for b in HIT_BINS])):  # fmt: skip
        print(table(p, by, n, order) + "\n")
    seedable = p["pixel_layers"] >= 3
    strips = ~seedable & (p["strip_layers"] >= 3)
    print("Summary (missing weight per event):\n")
    print("| where | particle not found | found, partly missed | total |\n|---|---|---|---|")
    long_ = p["nhits"] >= 7
    for name, m in (
        ("pixel-seedable, >= 7 hits: a further pixel pass", seedable & long_),
        ("... of which pT >= 0.1 GeV (the lowest pass's pT)", seedable & long_ & (p["pt"] >= 0.1)),
        ("pixel-seedable, 4-6 hits (below every pass's 7-8 measurements)", seedable & ~long_),
        ("not pixel-seedable, >= 3 strip layers: strip seeding", strips),
        ("... of which >= 7 hits", strips & long_),
        ("< 3 pixel and < 3 strip layers", ~seedable & ~strips),
        ("all", np.ones(len(p), bool)),
    ):
        nf, fd = (
            p.loc[m & ~p["found"], "missing"].sum() / n,
            p.loc[m & p["found"], "missing"].sum() / n,
        )
        print(f"| {name} | {nf:.4f} | {fd:.4f} | {nf + fd:.4f} |")
    f = p[p["found"]]
    print("\nFound particles' missed hits per event, by volume (pixels / short strips / long strips): "
          f"{f['lost_pixels'].sum() / n:.4f} / {f['lost_short_strips'].sum() / n:.4f} / {f['lost_long_strips'].sum() / n:.4f}")  # fmt: skip
    for rows, cols, sel, title in (
        ("radius", "seedable", None, "all particles, production radius x seedability"),
        ("pT [GeV]", "seedable", None, "all particles, pT x seedability"),
        ("hits", "seedable", None, "all particles, the particle's hits x seedability"),
        (
            "pT [GeV]",
            "|eta|",
            seedable & ~p["found"],
            "pixel-seedable particles not found, pT x |eta|",
        ),
        (
            "pT [GeV]",
            "radius",
            seedable & ~p["found"],
            "pixel-seedable particles not found, pT x production radius",
        ),
        (
            "pT [GeV]",
            "|eta|",
            seedable & p["found"],
            "pixel-seedable particles found, their missed hits, pT x |eta|",
        ),
    ):
        q = p if sel is None else p[sel]
        x = (
            q.pivot_table(
                index=rows, columns=cols, values="missing", aggfunc="sum", observed=True
            ).fillna(0)
            / n
        )
        order = {"radius": [b[2] for b in RADIUS_BINS], "pT [GeV]": [b[2] for b in PT_FINE],
                 "hits": [b[2] for b in HIT_BINS]}[rows]  # fmt: skip
        x = x.reindex([o for o in order if o in x.index]).fillna(0)
        corder = {"radius": [b[2] for b in RADIUS_BINS], "|eta|": [b[2] for b in ETA_FINE]}.get(
            cols
        )
        if corder:
            x = x.reindex(columns=[c for c in corder if c in x.columns])
        x["all"] = x.sum(axis=1)
        print(f"\nMissing weight per event, {title}:\n")
        print(
            "| "
            + rows
            + " | "
            + " | ".join(map(str, x.columns))
            + " |\n"
            + "|---" * (len(x.columns) + 1)
            + "|"
        )
        for k, r in x.iterrows():
            print(f"| {k} | " + " | ".join(f"{v:.4f}" for v in r) + " |")
        print("| all | " + " | ".join(f"{v:.4f}" for v in x.sum(axis=0)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
