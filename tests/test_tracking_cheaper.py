"""The registered finder made cheaper with identical tracks (issue 14, tag h19a): the vectorised pieces give exactly
what the per-element Python they replaced gave (the old code is the reference here); the whole finder's identity
is pinned by tests/test_tracking_seed_filter.py::test_one_run_gives_the_tracks_of_one_sequencer_per_pass."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lhcml.tasks.tracking import acts_chain
from lhcml.tasks.tracking.acts_reco import truth_match
from lhcml.tasks.tracking.seed_filter import select_seeds


def _old_select_seeds(scores: np.ndarray, triplets: np.ndarray, cut: float, max_per_spm: int) -> np.ndarray:
    """select_seeds as it was: a dict counts each middle space point's seeds in score order."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] >= cut]
    if max_per_spm > 0 and len(order):
        rank = np.zeros(len(order), np.int64)
        seen: dict[int, int] = {}
        for i, m in enumerate(triplets[order, 1].tolist()):
            rank[i] = seen.get(m, 0)
            seen[m] = rank[i] + 1
        order = order[rank < max_per_spm]
    return order


def test_select_seeds_keeps_the_seeds_the_per_seed_count_kept() -> None:
    rng = np.random.default_rng(5)
    for n, n_middle in ((1, 1), (7, 2), (500, 40), (5000, 300)):
        triplets = rng.integers(0, 1000, (n, 3))
        triplets[:, 1] = rng.integers(0, n_middle, n)
        scores = np.round(rng.uniform(0, 1, n), 2)  # ties: ACTS's order decides
        for cut in (0.0, 0.3, 0.9):
            for k in (0, 1, 2, 3):
                new, old = select_seeds(scores, triplets, cut, k), _old_select_seeds(scores, triplets, cut, k)
                assert np.array_equal(new, old), (n, cut, k)
    # a known answer: middle 5 keeps its two best, middle 6 its best
    t = np.array([[0, 5, 1], [0, 5, 2], [0, 6, 3], [0, 5, 4], [0, 6, 5]])
    assert select_seeds(np.array([0.9, 0.8, 0.7, 0.95, 0.6]), t, 0.5, 1).tolist() == [3, 2]
    assert select_seeds(np.array([0.9, 0.8, 0.7, 0.95, 0.6]), t, 0.5, 2).tolist() == [3, 0, 2, 4]


def _old_parse(path) -> tuple:
    """read_measurements_csv as it was: each row's key converted on its own."""
    df = pd.read_csv(path, dtype={"local_key": str}, keep_default_na=False)
    keys = np.array([int(k) if k.isdigit() else ord(k) for k in df["local_key"]], np.int64)
    n = len(df)
    indices, values, variances = [[]] * n, [[]] * n, [[]] * n
    for key in np.unique(keys).tolist():
        rows = np.flatnonzero(keys == key)
        idx = [k for k in range(6) if key & (1 << (k + 1)) and acts_chain._BOUND[k][0] is not None]
        vals = np.column_stack([df[acts_chain._BOUND[k][0]].to_numpy(np.float64)[rows] for k in idx]).tolist()
        var = np.column_stack([df[acts_chain._BOUND[k][1]].to_numpy(np.float64)[rows] for k in idx]).tolist()
        for r, v, w in zip(rows.tolist(), vals, var, strict=True):
            indices[r], values[r], variances[r] = idx, v, w
    return df["geometry_id"].to_numpy(np.uint64), indices, values, variances


def _csv(path, keys: list[str]) -> None:
    rng = np.random.default_rng(len(keys))
    n = len(keys)
    df = pd.DataFrame({"measurement_id": np.arange(n), "geometry_id": rng.integers(1, 2**60, n, dtype=np.int64),
                       "local_key": keys, "local0": rng.normal(size=n), "local1": rng.normal(size=n), "phi": 0,
                       "theta": 0, "time": 0, "var_local0": rng.uniform(size=n), "var_local1": rng.uniform(size=n),
                       "var_phi": 0, "var_theta": 0, "var_time": 0, "global_x": 1.0, "global_y": 2.0, "global_z": 3.0})  # fmt: skip
    df.to_csv(path, index=False)


def test_measurements_parse_as_row_by_row(tmp_path) -> None:
    """Pixels (local0 and local1: key chr(6)) only, and pixels mixed with strips (local0 only: key '2')."""
    for name, keys in (("pixels", [chr(6)] * 50), ("mixed", [chr(6), "2", "2", chr(6), "2"] * 9 + [chr(6)])):
        path = tmp_path / f"{name}.csv"
        _csv(path, keys)
        gid, idx, val, var = acts_chain.read_measurements_csv(path)
        ogid, oidx, oval, ovar = _old_parse(path)
        assert np.array_equal(gid, ogid) and idx == oidx and val == oval and var == ovar, name
        assert idx[0] == [0, 1] and len(val[0]) == 2
        if name == "mixed":
            assert idx[1] == [0] and len(val[1]) == len(var[1]) == 1


def test_truth_match_of_all_passes_at_once_is_each_pass_matched_alone() -> None:
    """A track's majority particle and purity depend on its own hits only: matching all passes' tracks together
    (once per call) gives each pass's own match."""
    rng = np.random.default_rng(9)
    truth = pd.DataFrame({"hit_id": np.arange(1, 301), "particle_id": rng.integers(0, 12, 300),
                          "weight": rng.uniform(0, 1, 300)})  # fmt: skip
    passes = [[rng.choice(np.arange(1, 301), size=rng.integers(0, 9), replace=False).tolist() for _ in range(m)]
              for m in (30, 1, 12)]  # fmt: skip
    pid, frac = truth_match([h for p in passes for h in p], truth)
    parts = [truth_match(p, truth) for p in passes]
    assert np.array_equal(pid, np.concatenate([a for a, _ in parts]))
    assert np.array_equal(frac, np.concatenate([b for _, b in parts]))
    assert pid.dtype == np.int64 and frac.dtype == np.float32 and (frac > 0).any()
