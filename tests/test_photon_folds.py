"""K-fold cross-fitting of the photon-ID closure (issue 15): ``lhcml.tasks.photon.folds`` and
``benchmarks/fastcalo_closure.py --folds K``'s pooling of out-of-fold scores.

The networks are replaced by a *memorising* scorer (it knows the prompt flag of every event it
was trained or validated on and guesses 0.5 elsewhere), so a leak shows as perfect scores; the
prediction files are written where the benchmark's photonid stage puts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _scripts import load_benchmark

from lhcml.errors import ConfigError
from lhcml.tasks.photon.folds import check_out_of_fold, fold_of, fold_split, write_folds

ROOT = Path(__file__).resolve().parents[1]
K = 5


def _closure_module():
    return load_benchmark("fastcalo_closure.py", "fastcalo_closure_folds")


def _sample(events: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """1-3 candidates per event; the prompt flag is a property of the event (as gamma_jet vs dijet)."""
    n = rng.integers(1, 4, len(events))
    ev = np.repeat(events, n)
    ph = np.zeros(len(ev), dtype=[("eventNumber", "i8"), ("isPromptPhoton", "i4"), ("x", "f4")])
    ph["eventNumber"] = ev
    ph["isPromptPhoton"] = (ev % 3 == 0).astype(np.int32)
    ph["x"] = rng.normal(size=len(ev))
    return {"photons": ph}


def test_folds_partition_the_events():
    rng = np.random.default_rng(0)
    events = rng.choice(10**9, 3000, replace=False)
    groups = np.repeat(events, rng.integers(1, 4, len(events)))
    f = fold_of(groups, K)
    assert set(np.unique(f)) == set(range(K))
    # one fold per event, whatever else the sample holds
    assert all(len(set(f[groups == e])) == 1 for e in events[:200])
    np.testing.assert_array_equal(fold_of(groups[::-1], K), f[::-1])
    per_event = fold_of(events, K)
    assert np.all(np.abs(np.bincount(per_event) / len(events) - 1 / K) < 0.03)
    tested = np.zeros(len(groups), dtype=int)
    for k in range(K):
        s = fold_split(groups, K, k)
        np.testing.assert_array_equal(s == 2, f == k)  # the test set is fold k
        np.testing.assert_array_equal(s == 1, f == (k + 1) % K)  # validation: the next fold
        tested += s == 2
    np.testing.assert_array_equal(tested, 1)  # every candidate tested exactly once
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        fold_of(groups, 1)


def _memorise_and_predict(work: Path, mod, leak: str | None = None) -> None:
    """Fake photonid stage: per training calo and fold, 'train' on train+val (remember the events'
    labels) and write predictions of both calos' fold-k test files to the benchmark's paths."""
    import h5py

    from lhcml.data.h5 import write_h5
    from lhcml.tasks.photon.evaluate import load_photons

    folds = work / f"folds{K}"
    config = Path("configs/photon/dnn.yaml")
    for calo in mod.CALOS:
        for k in range(K):
            seen = load_photons([folds / calo / f"fold{k}" / f"photon_{s}.h5" for s in ("train", "val")])
            memory = dict(zip(seen["eventNumber"].tolist(), seen["isPromptPhoton"].tolist(), strict=True))
            for test_calo in mod.CALOS:
                k_test = (k + 1) % K if leak == "wrong fold" and test_calo != calo else k
                with h5py.File(folds / test_calo / f"fold{k_test}" / "photon_test.h5", "r") as fh:
                    ph = fh["photons"][:]
                p = np.array([0.99 if memory.get(e) == 1 else 0.01 if e in memory else 0.5 for e in ph["eventNumber"]])
                p = np.clip(p + np.random.default_rng(k).normal(0, 0.002, len(p)), 0.001, 0.999)
                out = np.zeros(len(ph), dtype=ph.dtype.descr + [("nn_pprompt", "f4"), ("nn_pfake", "f4")])
                for name in ph.dtype.names:
                    out[name] = ph[name]
                out["nn_pprompt"], out["nn_pfake"] = p, 1 - p
                run = mod.fold_run(work, config, calo, 42, K, k)
                write_h5(run / f"test_{test_calo}" / "photon_test.h5", {"photons": out})


@pytest.fixture
def fold_work(tmp_path):
    rng = np.random.default_rng(1)
    events = rng.choice(10**9, 600, replace=False)
    # the fast calo loses some events' candidates and has others' in a different number
    samples = {"detailed": _sample(events, rng), "fast": _sample(events[rng.random(len(events)) < 0.9], rng)}
    for calo, data in samples.items():
        write_folds(data, tmp_path / f"folds{K}" / calo, K, seed=1)
    return tmp_path, samples


def test_written_folds_are_out_of_fold_and_cross_calo_pairs_fold_k_with_fold_k(fold_work):
    work, samples = fold_work
    mod = _closure_module()
    from lhcml.tasks.photon.evaluate import load_photons

    for calo, data in samples.items():
        tests = [load_photons([work / f"folds{K}" / calo / f"fold{k}" / "photon_test.h5"]) for k in range(K)]
        pooled = np.sort(np.concatenate([t["eventNumber"] for t in tests]))
        np.testing.assert_array_equal(pooled, np.sort(data["photons"]["eventNumber"]))  # every candidate once
    _memorise_and_predict(work, mod)
    config = Path("configs/photon/dnn.yaml")
    for calo in mod.CALOS:
        other = "fast" if calo == "detailed" else "detailed"
        ref = mod.out_of_fold(work, config, calo, 42, K, calo)
        oth = mod.out_of_fold(work, config, calo, 42, K, other)
        # out of fold: the memorising scorer never recognises an event it scores
        assert np.all(np.abs(ref["d"]) < 0.1) and np.all(np.abs(oth["d"]) < 0.1)
        # cross calo: fold k's network scored exactly fold k's events of the other calo
        np.testing.assert_array_equal(oth["fold"], fold_of(oth["event"], K))
        np.testing.assert_array_equal(ref["fold"], fold_of(ref["event"], K))
        res = mod.fold_closure_of(work, config, calo, 42, K, bootstrap=20, paired=20)
        assert res["n_ref"] == [int(ref["sig"].sum()), int((~ref["sig"]).sum())]
        assert sum(res["n_ref"]) == len(samples[calo]["photons"])
        assert abs(res["auc_ref"][0] - 0.5) < 0.1  # no information out of fold
        assert len(res["wps"][0]["sig_fold_diffs"]) == K


def test_a_leaky_split_is_caught(fold_work):
    work, _ = fold_work
    mod = _closure_module()
    import h5py

    from lhcml.data.h5 import write_h5

    config = Path("configs/photon/dnn.yaml")
    # (1) the cross-calo scores of fold k taken from the next fold's network
    _memorise_and_predict(work, mod, leak="wrong fold")
    with pytest.raises(ConfigError, match="trained or validated on|not paired fold by fold"):
        mod.fold_closure_of(work, config, "detailed", 42, K, bootstrap=20, paired=20)
    # (2) a training file that holds its own fold's test events (the memoriser then scores them
    # perfectly: exactly what the check must refuse)
    _memorise_and_predict(work, mod)
    fold0 = work / f"folds{K}" / "detailed" / "fold0"
    with h5py.File(fold0 / "photon_train.h5", "r") as a, h5py.File(fold0 / "photon_test.h5", "r") as b:
        leaky = np.concatenate([a["photons"][:], b["photons"][:]])
    (fold0 / "photon_train.h5").unlink()
    write_h5(fold0 / "photon_train.h5", {"photons": leaky})
    with pytest.raises(ConfigError, match="fold 0: the network scores .* it was trained or validated on"):
        mod.fold_closure_of(work, config, "detailed", 42, K, bootstrap=20, paired=20)
    # and directly: an event scored by two folds
    with pytest.raises(ConfigError, match="scored by two folds"):
        check_out_of_fold([np.array([1]), np.array([2])], [[np.array([3]), np.array([3])]])


def test_paired_bootstrap_of_identical_and_shifted_samples():
    from lhcml.metrics.closure import paired_transfer_bootstrap

    rng = np.random.default_rng(2)
    n = 4000
    sig = rng.random(n) < 0.5
    d = rng.normal(np.where(sig, 1.0, -1.0), 1.0)
    ev = rng.permutation(n)
    same = paired_transfer_bootstrap(d, sig, ev, d, sig, ev, (0.8,), n_boot=50)[0]
    assert same["sig_diff"] == 0 and same["sig_diff_err"] == 0 and same["bkg_diff_err"] == 0
    # the other sample's signal scores lowered: a clear efficiency loss, measured with an error
    shifted = paired_transfer_bootstrap(d, sig, ev, np.where(sig, d - 0.5, d), sig, ev, (0.8,), n_boot=200)[0]
    assert shifted["sig_diff"] < -0.1
    assert 0 < shifted["sig_diff_err"] < 0.03
    assert abs(shifted["bkg_diff"]) < 1e-12
