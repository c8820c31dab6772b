"""The ml-seeds+ckf finder: ACTS triplet seeds, the learned seed classifier, the CKF on the kept seeds (issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lhcml.errors import InputNotFoundError, SchemaError

pytest.importorskip("acts")
torch = pytest.importorskip("torch")

from lhcml.data.trackml import read_event  # noqa: E402
from lhcml.metrics import tracking as tm  # noqa: E402
from lhcml.models.tracking import seed_filter as M  # noqa: E402
from lhcml.tasks.tracking import seed_filter as S  # noqa: E402


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Three tt-bar events at mu = 0 with their seed files (10 seeds per middle space point)."""
    from lhcml.sim.tracking import simulate_tracking

    out = tmp_path_factory.mktemp("seed_filter") / "mu0"
    simulate_tracking("ttbar", out, mu=0.0, events=3, seed=23, progress=False)
    S.write_seed_files(out, "t", [0, 1, 2], max_seeds_per_spm=10, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory) -> Path:
    from lhcml.train.tracking import fit_tracking, tracking_config_from_dict

    cfg = tracking_config_from_dict({
        "data": {"train_dir": str(sample), "val_dir": str(sample), "train_events": [0, 1], "val_events": [2],
                 "prepare": {"seeds": "t"}},
        "model": {"name": "seed_filter", "hidden": 32, "n_layers": 3},
        "optimizer": {"name": "adam", "lr": 1e-2, "weight_decay": 0.0},
        "trainer": {"max_epochs": 40, "patience": 100, "precision": "32-true", "log_every_n_steps": 1,
                    "enable_progress_bar": False},
        "output_dir": str(tmp_path_factory.mktemp("seed_run")),
    })  # fmt: skip
    return fit_tracking(cfg)



def _one_error(capsys, argv: list[str]) -> str:
    """Run the CLI with ``argv``; assert the bad-input contract (exit 2, one line, no traceback); return the message."""
    from lhcml.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err

def _seeds(sample, e: int) -> dict[str, np.ndarray]:
    ev = read_event(sample, e, parts=("hits",), check=False)
    return M.read_seed_file(M.seed_file(ev.source, e, "t"))


def test_seed_labels_and_helix_features_known_answer(sample) -> None:
    """Labels are 'three hits of one particle'; a seed on an exact helix has its pT, d0 = 0 and dz = 0."""
    s = _seeds(sample, 0)
    ev = read_event(sample, 0, parts=("hits", "truth"))
    pid = ev.truth.set_index("hit_id").loc[s["triplets"].ravel() + 1, "particle_id"].to_numpy().reshape(-1, 3)
    same = (pid[:, 0] != 0) & (pid[:, 0] == pid[:, 1]) & (pid[:, 1] == pid[:, 2])
    assert np.array_equal(s["y"].astype(bool), same)
    assert 0.05 < s["y"].mean() < 0.95  # both classes present
    # helix of pT = 2 GeV in 2 T (R = 3.336 m) through the origin, cot(theta) = 0.5
    radius = 2.0 / (0.299792458 * 2.0) * 1000.0
    r = np.array([40.0, 80.0, 120.0])
    phi = np.arcsin(r / (2 * radius))  # points on the circle centred at (0, R): chord angles
    x, y = r * np.cos(phi), r * np.sin(phi)
    s_arc = 2 * radius * np.arcsin(r / (2 * radius))
    f = M.seed_features(x, y, 10.0 + 0.5 * s_arc, np.zeros(3, np.uint64), np.array([[2, 0, 1]]))[0]
    col = {n: i for i, n in enumerate(M.FEATURE_NAMES)}
    assert abs(abs(f[col["inv_pt"]]) - 0.5) < 1e-3
    assert abs(f[col["d0"]]) < 1e-2 and abs(f[col["z0"]] - 10.0) < 0.05 and abs(f[col["dz_top"]]) < 0.05
    assert f[col["r_b"]] == 40.0 and f[col["n_seeds_m"]] == 1.0


def test_classifier_beats_a_constant_and_exports(sample, trained, tmp_path) -> None:
    """On the held-out seeds the classifier's cross-entropy is well below the base rate's, it ranks
    true seeds above fakes (AUC), and its ONNX export agrees with torch."""
    from lhcml.export.tracking import export_checkpoint
    from lhcml.train.tracking import load_tracking_model

    model, meta = load_tracking_model(trained)
    assert meta["model_name"] == "seed_filter"
    s = _seeds(sample, 2)
    y = s["y"].astype(float)
    p = np.clip(model.score(s["features"]), 1e-6, 1 - 1e-6)
    base = y.mean()
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    bce_const = -np.mean(y * np.log(base) + (1 - y) * np.log(1 - base))
    assert bce < 0.7 * bce_const, (bce, bce_const)
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    n1 = y.sum()
    auc = (ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))
    assert auc > 0.9, auc
    report = export_checkpoint(trained, tmp_path / "seeds.onnx", timing=False)
    assert report.max_abs_diff_random < 1e-4


def test_select_seeds_keeps_true_seeds_and_ranks_deterministically() -> None:
    """Constructed case: three middle space points with competing seeds; every true (high-score)
    seed survives the cut and the per-middle-point limit, best first, ties in ACTS's order."""
    triplets = np.array([[1, 10, 20], [2, 10, 21], [3, 10, 22], [4, 11, 23], [5, 11, 24], [6, 12, 25], [7, 12, 26]])
    scores = np.array([0.2, 0.9, 0.8, 0.7, 0.7, 0.05, 0.95])
    true = {1, 2, 3, 4, 6}
    keep = S.select_seeds(scores, triplets, cut=0.5, max_per_spm=2)
    assert keep.tolist() == [6, 1, 2, 3, 4]  # descending score; 3 and 4 tie: ACTS's order
    assert true <= set(keep.tolist())
    assert S.select_seeds(scores, triplets, cut=0.5, max_per_spm=1).tolist() == [6, 1, 3]
    perm = np.array([3, 0, 6, 5, 1, 4, 2])
    again = S.select_seeds(scores[perm], triplets[perm], cut=0.5, max_per_spm=2)
    assert sorted(map(tuple, triplets[perm][again].tolist())) == sorted(map(tuple, triplets[keep].tolist()))
    assert S.select_seeds(scores, triplets, cut=0.99).size == 0
    with pytest.raises(SchemaError, match="scores for"):
        S.select_seeds(scores[:3], triplets, cut=0.5)


def test_bad_inputs_give_one_clear_error(sample, tmp_path) -> None:
    """Seeds without truth labels cannot train; a seed file without its columns, or features of the
    wrong width, are named; a sample without truth cannot be labelled; a missing seed file says how to make it."""
    src = _seeds(sample, 0)

    class Ev:
        event_id, source = 0, str(tmp_path / "trackml" / "event000000000")

    path = M.seed_file(Ev.source, 0, "x")
    path.parent.mkdir(parents=True)
    np.savez(path, **{k: v for k, v in src.items() if k != "y"})
    with pytest.raises(SchemaError, match="no labels"):
        M.seed_prepare(Ev, type("O", (), {"seeds": "x"})())
    np.savez(path, triplets=src["triplets"], feature_names=src["feature_names"])
    with pytest.raises(SchemaError, match="lacks features"):
        M.read_seed_file(path)
    with pytest.raises(InputNotFoundError, match="write-seeds"):
        M.read_seed_file(tmp_path / "nope.npz")
    with pytest.raises(SchemaError, match="columns"):
        M.SeedClassifier(hidden=8)(torch.zeros(4, 3))
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(sample, bare, ignore=shutil.ignore_patterns("*-truth.csv", "seeds-*", "h5"))
    with pytest.raises(SchemaError, match="no truth"):
        S.seed_labels(bare, 0, src["triplets"][:5])


def test_cli_write_seeds_without_acts_files_exits_2(sample, tmp_path, capsys) -> None:
    """TrackML files without the ACTS CSV: one message, exit status 2, no seed files."""
    import shutil


    shutil.copytree(sample / "trackml", tmp_path / "trackml_only", ignore=shutil.ignore_patterns("seeds-*"))
    err = _one_error(capsys, ["tracking", "write-seeds", str(tmp_path / "trackml_only"), "--name", "t"])
    assert "acts/" in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.rglob("seeds-t"))


def test_finder_end_to_end_finds_most_true_tracks(sample, trained) -> None:
    """ml-seeds+ckf on the held-out event finds at least 90 % of what the ACTS CKF finds (pT > 1 GeV),
    from fewer seeds, with few fakes."""
    from lhcml.tasks.tracking.finders import get_finder

    ev = read_event(sample, 2)
    out = get_finder("ml-seeds+ckf")(sample, 2, {"checkpoint": str(trained), "cut": 0.3})
    ref = get_finder("ckf")(sample, 2, None)
    perf = {k: tm.evaluate_event(2, ev.truth, ev.particles, ev.hits, o["track_id"], o["hit_id"], min_pt=1.0)
            for k, o in (("ml", out), ("ckf", ref))}  # fmt: skip
    found = {k: int(v.particles.loc[v.particles["reconstructable"], "found"].sum()) for k, v in perf.items()}
    assert found["ckf"] > 20 and found["ml"] >= 0.9 * found["ckf"], found
    assert out["n_kept"] < out["n_seeds"]
    counted = perf["ml"].tracks[perf["ml"].tracks["counted"]]
    assert counted["fake"].mean() < 0.05
    assert {"seeding", "classifier", "ckf"} <= set(out["timings"])


def test_one_acts_run_gives_the_tracks_of_the_two_run_path(sample, trained) -> None:
    """The finder's single ACTS run (seeds handed to Python and back through ProtoTracksToParameters)
    finds exactly the tracks of ACTS's seeds -> classifier -> ckf_from_seeds (ProtoTracksToSeeds)."""
    from lhcml.tasks.tracking.acts_reco import ckf_from_seeds

    cfg = {"checkpoint": str(trained), "cut": 0.3}
    out = S.ml_seeds_ckf(sample, 2, cfg)
    c = S.load_ml_seeds_config(cfg)
    reco = S.reco_config(c)
    triplets, _ = S.acts_seeds(sample, 2, reco)
    scores = S._classifier(str(trained)).score(S.event_features(sample, 2, triplets, reco.field_tesla))
    keep = S.select_seeds(scores, triplets, c.cut, c.max_per_spm)
    (tid, hid), fitted = ckf_from_seeds(sample, 2, triplets[keep] + 1, reco)
    assert out["n_seeds"] == len(triplets) and out["n_kept"] == len(keep) > 20
    old = sorted(tuple(sorted(hid[tid == t].tolist())) for t in np.unique(tid))
    new = sorted(tuple(sorted(out["hit_id"][out["track_id"] == t].tolist())) for t in np.unique(out["track_id"]))
    assert len(old) > 20 and new == old
    order_old, order_new = np.lexsort(fitted.params[:, :5].T), np.lexsort(out["fitted"].params[:, :5].T)
    assert np.allclose(fitted.params[order_old, :5], out["fitted"].params[order_new, :5], rtol=1e-9, atol=1e-9)
    assert {"seeding", "classifier", "parameter estimation", "ckf"} <= set(out["timings"])


def test_training_on_several_directories(sample, tmp_path) -> None:
    """data.train_dir / val_dir may list directories (e.g. samples at several mu), with one event list
    (or null) per directory; the run trains on the seeds of all of them and records which."""
    import shutil

    from lhcml.errors import ConfigError
    from lhcml.train.tracking import event_sets, fit_tracking, tracking_config_from_dict

    other = tmp_path / "other"
    shutil.copytree(sample, other)
    assert event_sets([str(sample), str(other)], [[0], None], None, "train") == [(str(sample), [0]),
                                                                                (str(other), [0, 1, 2])]  # fmt: skip
    assert event_sets([str(sample), str(other)], None, 2, "train") == [(str(sample), [0, 1]), (str(other), [0, 1])]
    assert event_sets(str(sample), [1, 2], None, "val") == [(str(sample), [1, 2])]
    with pytest.raises(ConfigError, match="one entry per directory"):
        event_sets([str(sample), str(other)], [0, 1], None, "train")
    with pytest.raises(ConfigError, match="one entry per directory"):
        event_sets([str(sample), str(other)], [[0]], None, "train")
    with pytest.raises(ConfigError, match="not one list per directory"):
        event_sets(str(sample), [[0]], None, "train")
    with pytest.raises(ConfigError, match=r"event\(s\) \[7\] not in"):
        event_sets([str(sample), str(other)], [[0], [7]], None, "train")

    def cfg(val_events: list) -> object:
        return tracking_config_from_dict({
            "data": {"train_dir": [str(sample), str(other)], "val_dir": [str(other)],
                     "train_events": [[0, 1], [0]], "val_events": val_events, "prepare": {"seeds": "t"}},
            "model": {"name": "seed_filter", "hidden": 8, "n_layers": 2},
            "trainer": {"max_epochs": 1, "precision": "32-true", "log_every_n_steps": 1, "enable_progress_bar": False},
            "output_dir": str(tmp_path / "run"),
        })  # fmt: skip

    with pytest.raises(ConfigError, match=r"events \[0\] are used for training and validation \(in .*other\)"):
        fit_tracking(cfg([[0, 2]]))
    from lhcml.train.tracking import load_tracking_model

    best = fit_tracking(cfg([[2]]))
    model, meta = load_tracking_model(best)
    assert meta["train_events"] == {str(sample): [0, 1], str(other): [0]}
    n = sum(len(_seeds(d, e)["y"]) for d, e in ((sample, 0), (sample, 1), (other, 0)))
    feats = np.concatenate([_seeds(d, e)["features"] for d, e in ((sample, 0), (sample, 1), (other, 0))])
    assert len(feats) == n
    # the normalisation comes from the seeds of both directories (three events), not of one
    ref = model._transform(torch.as_tensor(feats)).mean(0)
    assert torch.allclose(model.mean, ref, rtol=1e-4, atol=1e-4)


def test_cli_train_with_event_lists_not_matching_the_directories_exits_2(sample, tmp_path, capsys) -> None:
    """`lhcml train` of a config listing two directories but one flat event list: one message naming
    the fix, exit status 2, no run directory."""
    import yaml


    cfg = {"data": {"train_dir": [str(sample), str(sample)], "val_dir": str(sample), "train_events": [0, 1],
                    "val_events": [2], "prepare": {"seeds": "t"}},
           "model": {"name": "seed_filter", "hidden": 8, "n_layers": 2},
           "trainer": {"max_epochs": 1, "precision": "32-true", "enable_progress_bar": False},
           "output_dir": str(tmp_path / "run")}  # fmt: skip
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    err = _one_error(capsys, ["train", str(path)])
    assert "one entry per directory" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_seeding_abs_eta_max_bounds_every_seed(sample) -> None:
    """The seeding's abs_eta_max is ACTS's cotThetaMax = sinh(abs_eta_max): every doublet of every
    seed has |dz/dr| <= sinh(abs_eta_max); a smaller value gives fewer seeds, a larger one more;
    a non-positive value is one clear error. r_middle bounds the radius of every seed's middle point."""
    from lhcml.errors import ConfigError
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    hits = read_event(sample, 0, parts=("hits",), check=False).hits.set_index("hit_id")
    counts = {}
    for eta in (1.0, None, 4.0):
        reco = load_reco_config({"seeding": {"abs_eta_max": eta, "max_seeds_per_spm": 10}})
        triplets, _ = S.acts_seeds(sample, 0, reco)
        counts[eta] = len(triplets)
        if eta == 1.0:
            xyz = hits.loc[triplets.ravel() + 1, ["x", "y", "z"]].to_numpy(float).reshape(-1, 3, 3)
            r, z = np.hypot(xyz[..., 0], xyz[..., 1]), xyz[..., 2]
            cot = np.abs(np.diff(z, axis=1) / np.diff(r, axis=1))
            assert len(triplets) > 10 and cot.max() <= np.sinh(1.0) * 1.001, cot.max()
    assert counts[1.0] < counts[None] < counts[4.0], counts
    with pytest.raises(ConfigError, match="abs_eta_max"):
        load_reco_config({"seeding": {"abs_eta_max": 0.0}})
    # r_middle: the middle space point of every seed lies in that radial range (ACTS rMinMiddle, rMaxMiddle)
    triplets, _ = S.acts_seeds(sample, 0, load_reco_config({"seeding": {"r_middle": [100.0, 130.0]}}))
    r_mid = np.hypot(*hits.loc[triplets[:, 1] + 1, ["x", "y"]].to_numpy(float).T)
    assert len(triplets) > 10 and r_mid.min() >= 99.0 and r_mid.max() <= 131.0, (r_mid.min(), r_mid.max())
    with pytest.raises(ConfigError, match="r_middle"):
        load_reco_config({"seeding": {"r_middle": [120.0, 30.0]}})


def test_second_pass_runs_on_the_hits_the_first_pass_left(sample, trained, tmp_path) -> None:
    """Iterative tracking: the second pass (lower seeding pT) sees only the hits the first pass's
    tracks left unused, so no hit is in tracks of both passes; the first pass's tracks are unchanged,
    the second adds tracks and the TrackML score does not drop; with every hit excluded the CKF finds
    nothing; a missing second-pass config is one clear error before any work."""
    import yaml

    from lhcml.errors import ConfigError
    from lhcml.tasks.tracking.acts_reco import run_ckf

    ev = read_event(sample, 2)
    low = tmp_path / "low.yaml"
    low.write_text(yaml.safe_dump({"seeding": {"min_pt": 0.2, "abs_eta_max": 4.0},
                                   "ckf": {"min_pt": 0.2, "abs_eta_max": 4.0}}))  # fmt: skip
    one = S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "cut": 0.3})
    two = S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "cut": 0.3, "second_pass": str(low)})
    n1 = len(np.unique(one["track_id"]))
    first = two["track_id"] < n1
    assert np.array_equal(two["track_id"][first], one["track_id"]) and np.array_equal(two["hit_id"][first], one["hit_id"])
    assert len(np.unique(two["track_id"])) > n1 and len(two["fitted"]) == len(np.unique(two["track_id"]))
    assert not set(two["hit_id"][~first].tolist()) & set(one["hit_id"].tolist())
    s1, s2 = (tm.evaluate_event(2, ev.truth, ev.particles, ev.hits, o["track_id"], o["hit_id"]).score for o in (one, two))
    assert s2 > s1, (s1, s2)
    assert "second pass" in two["timings"]
    # the second pass with a classifier: a subset of its seeds, the first pass unchanged, no shared hit
    ml2 = S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "cut": 0.3, "second_pass": str(low),
                                     "second_pass_checkpoint": str(trained), "second_pass_cut": 0.3})  # fmt: skip
    first2 = ml2["track_id"] < n1
    assert np.array_equal(ml2["hit_id"][first2], one["hit_id"])
    assert not set(ml2["hit_id"][~first2].tolist()) & set(one["hit_id"].tolist())
    assert len(np.unique(ml2["track_id"])) > n1
    nothing = run_ckf(sample, [2], low, exclude={2: np.arange(len(ev.hits))})
    assert len(nothing.candidates[2][0]) == 0
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "second_pass": str(tmp_path / "none.yaml")})
    assert S._config_path("tracking/ckf_pass2.yaml", "second_pass").is_file()  # the shipped second pass


def test_write_seeds_with_another_seeding_config(sample, tmp_path, capsys) -> None:
    """write-seeds --reco makes the seeds of that config's seeding (here a lower minimum pT: more seeds);
    a missing config is one message and exit status 2."""
    import yaml

    from lhcml.cli import main

    low = tmp_path / "low.yaml"
    low.write_text(yaml.safe_dump({"seeding": {"min_pt": 0.2}}))
    with pytest.raises(SystemExit) as ok:
        main(["tracking", "write-seeds", str(sample), "--name", "low", "--events", "0", "--reco", str(low), "--quiet"])
    assert ok.value.code in (0, None)
    assert len(_seeds_named(sample, 0, "low")["triplets"]) > len(_seeds(sample, 0)["triplets"])
    capsys.readouterr()
    _one_error(capsys, ["tracking", "write-seeds", str(sample), "--name", "x", "--events", "0", "--reco", str(tmp_path / "no.yaml")])


def _seeds_named(sample, e: int, name: str) -> dict[str, np.ndarray]:
    ev = read_event(sample, e, parts=("hits",), check=False)
    return M.read_seed_file(M.seed_file(ev.source, e, name))


def test_shipped_score_config_and_finder() -> None:
    """ml-seeds+ckf-2pass is registered; its shipped config is ml_seeds.yaml plus a second pass whose
    seeding reaches lower pT, |eta| < 4 and middle space points from r = 30 mm, with its own classifier."""
    from lhcml.config import shipped_config
    from lhcml.tasks.tracking.acts_reco import load_reco_config
    from lhcml.tasks.tracking.finders import ACTS_FINDERS, FINDERS

    assert "ml-seeds+ckf-2pass" in FINDERS and "ml-seeds+ckf-2pass" in ACTS_FINDERS
    one = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds.yaml"))
    two = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_score.yaml"))
    assert one.second_pass is None and two.second_pass is not None and two.second_pass_checkpoint is not None
    assert (two.checkpoint, two.cut, two.reco) == (one.checkpoint, one.cut, one.reco)  # pass 1 unchanged
    first, second = load_reco_config(None), load_reco_config(S._config_path(two.second_pass, "second_pass"))
    assert second.seeding.min_pt < first.seeding.min_pt and second.ckf.min_pt < first.ckf.min_pt
    assert second.seeding.abs_eta_max == second.ckf.abs_eta_max == 4.0 and second.seeding.r_middle == (30.0, 120.0)
    assert second.ckf.chi2_cut_measurement == first.ckf.chi2_cut_measurement  # the rest is ckf.yaml's


def test_two_passes_parse_the_measurements_once_and_find_the_same_tracks(sample, trained, tmp_path, monkeypatch) -> None:
    """Iterative tracking parses the event's measurements file once for both passes (the second pass
    reuses the first's parse) and finds exactly the tracks it finds when each pass parses the file itself;
    the cache is per finder call, so a second call parses again."""
    import yaml

    from lhcml.tasks.tracking import acts_chain
    from lhcml.tasks.tracking.acts_reco import run_ckf

    low = tmp_path / "low.yaml"
    low.write_text(yaml.safe_dump({"seeding": {"min_pt": 0.2, "abs_eta_max": 4.0}, "ckf": {"min_pt": 0.2, "abs_eta_max": 4.0}}))
    cfg = {"checkpoint": str(trained), "cut": 0.3, "second_pass": str(low)}
    parses: list[Path] = []
    real = acts_chain.read_measurements_csv
    monkeypatch.setattr(acts_chain, "read_measurements_csv", lambda path: parses.append(path) or real(path))
    two = S.ml_seeds_ckf(sample, 2, cfg)
    assert len(parses) == 1 and parses[0].name == "event000000002-measurements.csv"
    S.ml_seeds_ckf(sample, 2, cfg)
    assert len(parses) == 2  # a new call, a new parse: no state between calls (fair timing per event)
    # the same two passes with a parse in each: pass 1 alone, then run_ckf on the hits it left, no cache
    one = S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "cut": 0.3})
    res = run_ckf(sample, [2], low, exclude={2: np.unique(one["hit_id"]) - 1})
    t2, h2 = res.candidates[2]
    n1 = len(np.unique(one["track_id"]))
    later = two["track_id"] >= n1
    expect = sorted(tuple(sorted(h2[t2 == t].tolist())) for t in np.unique(t2))
    got = sorted(tuple(sorted(two["hit_id"][later & (two["track_id"] == t)].tolist())) for t in np.unique(two["track_id"][later]))
    assert len(expect) > 5 and got == expect


def test_second_pass_max_per_spm(sample, trained, tmp_path, monkeypatch) -> None:
    """second_pass_max_per_spm reaches the second pass's seed selection (the first pass keeps its own
    max_per_spm); the second pass then follows at most that many seeds per middle space point and its
    tracks still share no hit with the first's; without a second-pass classifier, or negative, it is one
    clear error before any work."""
    import yaml

    from lhcml.errors import ConfigError

    low = tmp_path / "low.yaml"
    low.write_text(yaml.safe_dump({"seeding": {"min_pt": 0.2, "abs_eta_max": 4.0}, "ckf": {"min_pt": 0.2, "abs_eta_max": 4.0}}))
    calls: list[tuple[int, int, int]] = []
    real = S.select_seeds

    def spy(scores, triplets, cut, max_per_spm=0):
        keep = real(scores, triplets, cut, max_per_spm)
        mid = np.asarray(triplets)[keep, 1]
        calls.append((max_per_spm, len(keep), int(np.bincount(mid).max()) if len(mid) else 0))
        return keep

    n1 = len(np.unique(S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "cut": 0.3})["track_id"]))
    monkeypatch.setattr(S, "select_seeds", spy)
    cfg = {"checkpoint": str(trained), "cut": 0.3, "second_pass": str(low), "second_pass_checkpoint": str(trained),
           "second_pass_cut": 0.05}  # fmt: skip
    free = S.ml_seeds_ckf(sample, 2, cfg)
    limited = S.ml_seeds_ckf(sample, 2, {**cfg, "second_pass_max_per_spm": 1})
    (p1a, p2a), (p1b, p2b) = calls[:2], calls[2:]
    assert p1a[0] == p1b[0] == 0 and p2a[0] == 0 and p2b[0] == 1
    assert p2a[2] > 1 and p2b[2] == 1 and p2b[1] < p2a[1]  # one seed per middle space point, fewer seeds
    first = limited["track_id"] < n1
    assert np.array_equal(limited["hit_id"][first], free["hit_id"][free["track_id"] < n1])  # pass 1 unchanged
    assert not set(limited["hit_id"][~first].tolist()) & set(limited["hit_id"][first].tolist())
    assert len(np.unique(limited["track_id"])) > n1
    with pytest.raises(ConfigError, match="second_pass_checkpoint"):
        S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "second_pass": str(low), "second_pass_max_per_spm": 1})
    with pytest.raises(ConfigError, match="second_pass_max_per_spm"):
        S.load_ml_seeds_config({"checkpoint": "x", "second_pass_max_per_spm": -1})


def test_cli_budget_finder_with_a_bad_config_exits_2(sample, tmp_path, capsys) -> None:
    """`lhcml tracking reconstruct --method ml-seeds+ckf-2pass-budget` with a config that limits the second
    pass's seeds per middle space point but gives it no classifier: one message, exit status 2."""
    import yaml


    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"checkpoint": str(tmp_path), "second_pass": "tracking/ckf_budget_pass2.yaml",
                                   "second_pass_max_per_spm": 1}))  # fmt: skip
    err = _one_error(capsys, ["tracking", "reconstruct", str(sample), "--method", "ml-seeds+ckf-2pass-budget", "--config", str(bad),
                     "--out", str(tmp_path / "out"), "--events", "0", "--quiet"])  # fmt: skip
    assert "second_pass_checkpoint" in err


def test_shipped_budget_config_and_finder() -> None:
    """ml-seeds+ckf-2pass-budget is registered; its pass 1 is ml-seeds+ckf (classifier, cut) with seed
    doublets up to 150 mm, the best seed per middle space point and otherwise ckf.yaml's settings; its pass 2 is ckf_pass2.yaml's reach (pT > 0.2
    GeV, |eta| < 4, middle space point from 30 mm) with prompt seeds, shorter doublets, one CKF branch,
    8 measurements per track, a classifier and one seed per middle space point."""
    from lhcml.config import shipped_config
    from lhcml.tasks.tracking.acts_reco import load_reco_config
    from lhcml.tasks.tracking.finders import ACTS_FINDERS, FINDERS

    assert "ml-seeds+ckf-2pass-budget" in FINDERS and "ml-seeds+ckf-2pass-budget" in ACTS_FINDERS
    ship = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds.yaml"))
    budget = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_2pass_budget.yaml"))
    assert (budget.checkpoint, budget.cut, budget.max_seeds_per_spm) == (ship.checkpoint, ship.cut, ship.max_seeds_per_spm)
    assert budget.max_per_spm == 1 and ship.max_per_spm == 0  # pass 1 follows the best seed per middle space point
    ckf, first = load_reco_config(None), S.reco_config(budget)
    assert first.seeding.delta_r == (5.0, 150.0) and ckf.seeding.delta_r == (5.0, 270.0)
    assert first.ckf == ckf.ckf and first.seeding.min_pt == ckf.seeding.min_pt and first.seeding.impact_max == ckf.seeding.impact_max
    score = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_score.yaml"))
    wide = load_reco_config(S._config_path(score.second_pass, "second_pass"))
    second = load_reco_config(S._config_path(budget.second_pass, "second_pass"))
    assert (second.seeding.min_pt, second.seeding.abs_eta_max, second.seeding.r_middle) == (0.2, 4.0, (30.0, 120.0))
    assert (second.ckf.min_pt, second.ckf.abs_eta_max) == (wide.ckf.min_pt, wide.ckf.abs_eta_max)
    assert second.seeding.delta_r == (5.0, 100.0) and second.seeding.impact_max == 5.0 < wide.seeding.impact_max
    assert (second.ckf.max_branches, second.ckf.min_measurements) == (1, 8)
    assert budget.second_pass_checkpoint == score.second_pass_checkpoint and budget.second_pass_max_per_spm == 2
    # ml-seeds+ckf-3pass-budget: the same first two passes (one seed per middle space point in the second) and a
    # lean 0.1-0.2 GeV pass with the second pass's classifier
    assert "ml-seeds+ckf-3pass-budget" in FINDERS
    three = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_3pass_budget.yaml"))
    assert three.model_copy(update={"second_pass_max_per_spm": 2, "more_passes": []}) == budget
    assert three.second_pass_max_per_spm == 1 and len(three.more_passes) == 1
    extra = three.more_passes[0]
    assert (extra.checkpoint, extra.cut, extra.max_per_spm) == (score.second_pass_checkpoint, 0.3, 1)
    low = load_reco_config(S._config_path(extra.reco, "reco"))
    assert low.seeding.min_pt == low.ckf.min_pt == 0.1 and (low.ckf.max_branches, low.ckf.min_measurements) == (1, 8)


def test_more_passes_run_on_the_hits_all_earlier_passes_left(sample, trained, tmp_path) -> None:
    """more_passes: each further pass sees only the hits the earlier passes left; the earlier passes' tracks
    are unchanged, no hit is in tracks of two passes, the further pass adds tracks and raises the score
    (here the second pass repeats the first's seeding and the third goes to 0.2 GeV and |eta| < 4), its
    time is the stage 'third pass'; a further pass without a second, or with max_per_spm but no
    classifier, is one clear error before any work."""
    import yaml

    from lhcml.config import shipped_config
    from lhcml.errors import ConfigError

    ev = read_event(sample, 2)
    low = tmp_path / "low.yaml"
    low.write_text(yaml.safe_dump({"seeding": {"min_pt": 0.2, "abs_eta_max": 4.0}, "ckf": {"min_pt": 0.2, "abs_eta_max": 4.0}}))
    base = {"checkpoint": str(trained), "cut": 0.3, "second_pass": "tracking/ckf.yaml"}
    two = S.ml_seeds_ckf(sample, 2, base)
    three = S.ml_seeds_ckf(sample, 2, {**base, "more_passes": [{"reco": str(low), "checkpoint": str(trained), "cut": 0.05}]})
    n2 = len(np.unique(two["track_id"]))
    earlier = three["track_id"] < n2
    assert np.array_equal(three["track_id"][earlier], two["track_id"]) and np.array_equal(three["hit_id"][earlier], two["hit_id"])
    assert len(np.unique(three["track_id"])) > n2 and len(three["fitted"]) == len(np.unique(three["track_id"]))
    assert not set(three["hit_id"][~earlier].tolist()) & set(two["hit_id"].tolist())
    s2, s3 = (tm.evaluate_event(2, ev.truth, ev.particles, ev.hits, o["track_id"], o["hit_id"]).score for o in (two, three))
    assert s3 > s2, (s2, s3)
    assert {"second pass", "third pass"} <= set(three["timings"])
    with pytest.raises(ConfigError, match="give second_pass too"):
        S.ml_seeds_ckf(sample, 2, {"checkpoint": str(trained), "more_passes": [{"reco": str(low)}]})
    with pytest.raises(ConfigError, match=r"more_passes\[0\]: max_per_spm"):
        S.ml_seeds_ckf(sample, 2, {**base, "more_passes": [{"reco": str(low), "max_per_spm": 1}]})
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        S.ml_seeds_ckf(sample, 2, {**base, "more_passes": [{"reco": str(tmp_path / "none.yaml")}]})
    # the shipped ml_seeds_3pass.yaml: the score setting's two passes, then 0.1 GeV primaries and displaced tracks
    from lhcml.tasks.tracking.acts_reco import load_reco_config
    from lhcml.tasks.tracking.finders import FINDERS

    assert "ml-seeds+ckf-3pass" in FINDERS
    c3 = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_3pass.yaml"))
    c2 = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_score.yaml"))
    assert c3.model_copy(update={"more_passes": []}) == c2 and len(c3.more_passes) == 2
    lo, disp = (load_reco_config(S._config_path(p.reco, "reco")) for p in c3.more_passes)
    assert lo.seeding.min_pt == lo.ckf.min_pt == 0.1 and lo.seeding.r_max <= 2 * 0.1 / (0.299792458e-3 * 2.0)
    assert disp.seeding.impact_max == disp.ckf.loc0_max == 80.0 and disp.seeding.r_middle is None


def test_shipped_third_pass_classifier_configs() -> None:
    """configs/tracking/ml_seeds_3pass_budget_p3.yaml is ml_seeds_3pass_budget.yaml with only the third pass
    changed: the same lean 0.1-0.2 GeV seeding, scored by the classifier of seed_filter_pass3.yaml (not the
    second pass's) and two seeds per middle space point; seed_filter_pass3.yaml trains on mu = 200 events
    only, on the seed files its header's write-seeds command makes, and validates on events it never trains on
    (and never on train_mu200 16-17, where the cut was chosen)."""
    import yaml

    from lhcml.config import shipped_config

    three = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_3pass_budget.yaml"))
    own = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_3pass_budget_p3.yaml"))
    assert own.model_copy(update={"more_passes": three.more_passes}) == three
    old, new = three.more_passes[0], own.more_passes[0]
    assert new.reco == old.reco and new.cut == old.cut == 0.3 and (old.max_per_spm, new.max_per_spm) == (1, 2)
    assert new.checkpoint != old.checkpoint
    text = shipped_config("tracking/seed_filter_pass3.yaml").read_text()
    train = yaml.safe_load(text)
    data = train["data"]
    assert train["base"] == "seed_filter.yaml" and Path(train["output_dir"]).name == Path(new.checkpoint).stem
    assert [Path(d).name for d in data["train_dir"]] == [Path(d).name for d in data["val_dir"]] == ["train_mu200"]
    seen, val = set(data["train_events"][0]), set(data["val_events"][0])
    assert seen and val and not seen & val and not {16, 17} & (seen | val)
    assert f"--name {data['prepare']['seeds']} " in text and "--reco configs/tracking/ckf_pass3_lowpt.yaml" in text


def test_one_run_gives_the_tracks_of_one_sequencer_per_pass(sample, trained, tmp_path, monkeypatch) -> None:
    """one_run (all passes in one ACTS Sequencer, the default) finds exactly the tracks -- hits, fitted
    parameters, covariances, truth match -- of one Sequencer per pass (one_run: false), for a further pass with
    and one without a classifier; it parses the measurements, reads the hit positions and the truth once per
    call (the old path once per pass), and times each later pass as its own stage."""
    import yaml

    from lhcml.tasks.tracking import acts_chain, acts_reco

    low = tmp_path / "low.yaml"
    low.write_text(yaml.safe_dump({"seeding": {"min_pt": 0.2, "abs_eta_max": 4.0}, "ckf": {"min_pt": 0.2, "abs_eta_max": 4.0}}))
    lower = tmp_path / "lower.yaml"
    lower.write_text(yaml.safe_dump({"seeding": {"min_pt": 0.1, "r_max": 300.0, "abs_eta_max": 4.0}, "ckf": {"min_pt": 0.1, "abs_eta_max": 4.0}}))
    cfg = {"checkpoint": str(trained), "cut": 0.3, "max_per_spm": 1, "second_pass": "tracking/ckf.yaml",
           "second_pass_checkpoint": str(trained), "second_pass_cut": 0.05,
           "more_passes": [{"reco": str(low), "checkpoint": str(trained), "cut": 0.05, "max_per_spm": 2},
                           {"reco": str(lower)}]}  # fmt: skip
    assert S.load_ml_seeds_config(cfg).one_run is True
    reads: dict[str, int] = {"csv": 0, "positions": 0, "truth": 0}
    real_csv, real_pos, real_truth = acts_chain.read_measurements_csv, acts_reco.read_measurement_positions, acts_reco._truth

    def count(name, real):
        def f(*a, **k):
            reads[name] += 1
            return real(*a, **k)
        return f

    monkeypatch.setattr(acts_chain, "read_measurements_csv", count("csv", real_csv))
    monkeypatch.setattr(acts_reco, "read_measurement_positions", count("positions", real_pos))
    monkeypatch.setattr(acts_reco, "_truth", count("truth", real_truth))
    new = S.ml_seeds_ckf(sample, 2, cfg)
    assert reads == {"csv": 1, "positions": 1, "truth": 1}, reads
    reads.update(csv=0, positions=0, truth=0)
    old = S.ml_seeds_ckf(sample, 2, {**cfg, "one_run": False})
    assert reads["truth"] == 4 and reads["positions"] == 3, reads  # per pass (positions: the passes with a classifier)
    n = [len(np.unique(o["track_id"])) for o in (old, new)]
    assert n[0] == n[1] > 10
    for k in ("track_id", "hit_id"):
        assert np.array_equal(old[k], new[k]), k
    for k in ("track_id", "params", "cov", "nhits", "nholes", "chi2", "truth_particle", "truth_fraction"):
        assert np.array_equal(getattr(old["fitted"], k), getattr(new["fitted"], k)), k
    assert (old["n_seeds"], old["n_kept"]) == (new["n_seeds"], new["n_kept"]) and new["n_kept"] > 0
    assert set(new["timings"]) == set(old["timings"]) and {"second pass", "third pass", "fourth pass"} <= set(new["timings"])
    assert all(v >= 0 for v in new["timings"].values()) and new["fitted"].timings == new["timings"]
    # which pass made which track: pass k's ids from pass_first_track_id[k]; the first two passes' tracks are
    # those of the same config without the further passes
    first = new["pass_first_track_id"]
    assert len(first) == 4 and first[0] == 0 < first[1] and first == sorted(first)
    two = S.ml_seeds_ckf(sample, 2, {**cfg, "more_passes": []})
    assert two["pass_first_track_id"] == first[:2]
    early = new["track_id"] < first[2]
    assert np.array_equal(two["track_id"], new["track_id"][early]) and np.array_equal(two["hit_id"], new["hit_id"][early])


def test_cli_one_run_not_a_bool_exits_2(sample, tmp_path, capsys) -> None:
    """A one_run that is not true/false: one message naming the option, exit status 2."""
    import yaml


    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"checkpoint": str(tmp_path), "second_pass": "tracking/ckf_budget_pass2.yaml",
                                   "one_run": "sometimes"}))  # fmt: skip
    err = _one_error(capsys, ["tracking", "reconstruct", str(sample), "--method", "ml-seeds+ckf", "--config", str(bad),
                     "--out", str(tmp_path / "out"), "--events", "0", "--quiet"])  # fmt: skip
    assert "one_run" in err


def test_seeding_particle_hypothesis_reaches_the_ckf(sample, tmp_path, capsys) -> None:
    """seeding.particle_hypothesis: the seeds' initial parameters carry it and the CKF follows it, so the electron
    hypothesis (its mass in the material effects) changes the fitted parameters of the same event while finding about
    as many tracks; a hypothesis ACTS does not have is one message naming the option, exit status 2."""
    import yaml

    from lhcml.tasks.tracking.acts_reco import load_reco_config, run_ckf

    assert load_reco_config(None).seeding.particle_hypothesis == "pion"
    pion = run_ckf(sample, [2]).tracks[2]
    electron = run_ckf(sample, [2], {"seeding": {"particle_hypothesis": "electron"}}).tracks[2]
    assert len(pion) > 10 and abs(len(electron) - len(pion)) <= 0.2 * len(pion)
    n = min(len(pion), len(electron))
    assert not np.allclose(pion.params[:n], electron.params[:n])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"seeding": {"particle_hypothesis": "positron"}}))
    err = _one_error(capsys, ["tracking", "reconstruct", str(sample), "--method", "ckf", "--config", str(bad),
                     "--out", str(tmp_path / "out"), "--events", "0", "--quiet"])  # fmt: skip
    assert "particle_hypothesis" in err


def test_shipped_four_pass_budget_config() -> None:
    """configs/tracking/ml_seeds_4pass_budget.yaml is ml_seeds_3pass_budget_p3.yaml (its three passes unchanged, in one
    ACTS run) and a fourth pass on displaced tracks down to 0.15 GeV: ckf_pass4_displaced.yaml's |d0| reach, made lean
    (doublets to 100 mm, one branch, >= 8 measurements), scored by the third pass's classifier at cut 0.02, two seeds
    per middle space point; its seeding r_max fits ACTS's helix-radius bound at 0.15 GeV."""
    from lhcml.config import shipped_config
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    p3 = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_3pass_budget_p3.yaml"))
    four = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget.yaml"))
    assert four.one_run and four.more_passes[:1] == p3.more_passes and len(four.more_passes) == 2
    assert four.model_copy(update={"more_passes": p3.more_passes}) == p3
    last = four.more_passes[1]
    assert (last.checkpoint, last.cut, last.max_per_spm) == (p3.more_passes[0].checkpoint, 0.02, 2)
    disp = load_reco_config(S._config_path("tracking/ckf_pass4_displaced.yaml", "reco"))
    lean = load_reco_config(S._config_path(last.reco, "reco"))
    assert lean.seeding.min_pt == lean.ckf.min_pt == 0.15 < disp.seeding.min_pt
    assert lean.seeding.impact_max == lean.ckf.loc0_max == disp.ckf.loc0_max == 80.0
    assert lean.seeding.collision_region == disp.seeding.collision_region and lean.seeding.r_middle is None
    assert lean.seeding.delta_r == (5.0, 100.0) and (lean.ckf.max_branches, lean.ckf.min_measurements) == (1, 8)
    assert lean.seeding.r_max <= 2 * lean.seeding.min_pt / (0.299792458e-3 * lean.field_tesla)
    assert lean.seeding.particle_hypothesis == "pion"


@pytest.mark.parametrize(
    ("name", "config", "other"),
    [
        ("ml-seeds+ckf-4pass-budget", "ml_seeds_4pass_budget.yaml", "ml_seeds_3pass_budget_p3.yaml"),
        ("ml-seeds+ckf-6pass-budget", "ml_seeds_6pass_budget_fwd_strips_lean.yaml", "ml_seeds_6pass_budget_fwd_strips.yaml"),
        ("ml-seeds+ckf-6pass-quality", "ml_seeds_6pass_budget_quality_ext_spend.yaml", "ml_seeds_6pass_budget_quality_ext.yaml"),
        ("ml-seeds+ckf-7pass-quality", "ml_seeds_7pass_budget_quality_ext_spend_strips_lowpt.yaml",
         "ml_seeds_6pass_budget_quality_ext_spend_strips.yaml"),
        ("ml-seeds+ckf-8pass-quality", "ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt.yaml",
         "ml_seeds_7pass_budget_quality_ext_spend_strips_lowpt.yaml"),
        ("ml-seeds+ckf-8pass-allpix-extcap", "ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap.yaml",
         "ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix.yaml"),
        ("ml-seeds+ckf-8pass-allpix-tf7-1branch",
         "ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml",
         "ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7.yaml"),
        ("ml-seeds+ckf-9pass-allpix-tf7-1branch",
         "ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch_pass9.yaml",
         "ml_seeds_8pass_budget_quality_ext_spend_strips_lowpt_pixlowpt_allpix_extcap_tf7_1branch.yaml"),
    ],
)
def test_budget_finders_run_their_shipped_config(monkeypatch, name, config, other) -> None:
    """The registered budget finders (ACTS finders, so benchmarks/tracking.py hands them the ACTS CSV) run ml-seeds+ckf
    with their shipped config, or with the configuration they are given."""
    from lhcml.config import shipped_config
    from lhcml.tasks.tracking import finders as F

    assert name in F.ACTS_FINDERS
    seen = []
    monkeypatch.setattr(S, "ml_seeds_ckf", lambda d, e, cfg: seen.append((d, e, cfg)) or {"track_id": []})
    assert F.get_finder(name)("dir", 3) == {"track_id": []}
    F.FINDERS[name]("dir", 4, {"cut": 0.5})
    assert seen == [("dir", 3, shipped_config(f"tracking/{config}")), ("dir", 4, {"cut": 0.5})]
    assert seen[0][2] != shipped_config(f"tracking/{other}")


def test_pass_seeds_tool_writes_the_seeds_a_later_pass_sees(sample, trained, tmp_path, capsys) -> None:
    """benchmarks/tracking_pass_seeds.py (how configs/tracking/seed_filter_pass4.yaml's seeds are made): the seed
    file of pass 2 holds the seeds made on the hits pass 1's tracks left -- none of those hits, fewer seeds than the
    same seeding on all hits, which does use them -- with the library's features and truth labels of those
    triplets, readable by the training's reader; the library function is restored after; a pass the config lacks,
    or one after a pass without a classifier: one message, exit 2."""
    import yaml
    from _scripts import load_benchmark

    from lhcml.models.tracking.seed_filter import read_seed_file
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    tool = load_benchmark("tracking_pass_seeds.py")
    original = S.event_features
    first = {"checkpoint": str(trained), "cut": 0.3}
    cfg = {**first, "second_pass": "tracking/ckf.yaml", "second_pass_checkpoint": str(trained), "second_pass_cut": 0.05}
    (path,) = tool.write_pass_seeds(sample, "p2", "1", cfg)
    assert S.event_features is original
    data = read_seed_file(path)
    t = data["triplets"]
    used = set(np.asarray(S.ml_seeds_ckf(sample, 1, first)["hit_id"], np.int64).tolist())
    reco = load_reco_config(None).model_copy(deep=True)
    reco.seeding.max_seeds_per_spm = 10
    everything, _ = S.acts_seeds(sample, 1, reco)
    assert 0 < len(t) < len(everything) and used
    assert not set((t + 1).ravel().tolist()) & used and set((everything + 1).ravel().tolist()) & used
    assert np.array_equal(data["y"], S.seed_labels(sample, 1, t)) and 0 < data["y"].sum() < len(t)
    np.testing.assert_allclose(data["features"], S.event_features(sample, 1, t, reco.field_tesla), rtol=1e-6)
    bad = tmp_path / "cfg.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    assert tool.main([str(sample), "--name", "x", "--config", str(bad), "--pass", "3"]) == 2
    assert "passes 1..2" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({**cfg, "second_pass_checkpoint": None}))
    assert tool.main([str(sample), "--name", "x", "--config", str(bad)]) == 2
    assert "pass 2 of the config has no classifier" in capsys.readouterr().err
    assert not (Path(path).parent.parent / "seeds-x").exists()


def test_shipped_fourth_pass_classifier_configs() -> None:
    """configs/tracking/ml_seeds_4pass_budget_p4.yaml is ml_seeds_4pass_budget.yaml with only the fourth pass's
    classifier changed (same seeding, cut 0.02, two seeds per middle space point), to the one seed_filter_pass4.yaml
    trains: on mu = 200 events only, on the seed files its header's benchmarks/tracking_pass_seeds.py command makes
    from the last pass of ml_seeds_4pass_budget.yaml, validated on events it never trains on (and never on
    train_mu200 16-17, where the cut was chosen)."""
    import yaml

    from lhcml.config import shipped_config

    four = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget.yaml"))
    own = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget_p4.yaml"))
    assert own.more_passes[:1] == four.more_passes[:1] and len(own.more_passes) == 2
    assert own.model_copy(update={"more_passes": four.more_passes}) == four
    old, new = four.more_passes[1], own.more_passes[1]
    assert new.reco == old.reco and new.cut == old.cut == 0.02 and new.max_per_spm == old.max_per_spm == 2
    assert new.checkpoint != old.checkpoint
    text = shipped_config("tracking/seed_filter_pass4.yaml").read_text()
    train = yaml.safe_load(text)
    data = train["data"]
    assert train["base"] == "seed_filter.yaml" and Path(train["output_dir"]).name == Path(new.checkpoint).stem
    assert [Path(d).name for d in data["train_dir"]] == [Path(d).name for d in data["val_dir"]] == ["train_mu200"]
    seen, val = set(data["train_events"][0]), set(data["val_events"][0])
    assert seen and val and not seen & val and not {16, 17} & (seen | val)
    assert f"benchmarks/tracking_pass_seeds.py benchmarks/_work/tracking/train_mu200 --name {data['prepare']['seeds']} " in text
    assert "--config configs/tracking/ml_seeds_4pass_budget.yaml" in text


def test_shipped_third_pass_own_classifier_config() -> None:
    """configs/tracking/ml_seeds_4pass_budget_p34.yaml is ml_seeds_4pass_budget_p4.yaml with only the third pass's
    classifier (and its cut) changed, to the one seed_filter_pass3l.yaml trains: on mu = 200 events only, on the seed
    files its header's benchmarks/tracking_pass_seeds.py --pass 3 command makes from ml_seeds_4pass_budget_p4.yaml,
    validated on events it never trains on (and never on train_mu200 16-17, where the cut was chosen)."""
    import yaml

    from lhcml.config import shipped_config

    p4 = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget_p4.yaml"))
    own = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget_p34.yaml"))
    assert own.more_passes[1:] == p4.more_passes[1:] and len(own.more_passes) == 2
    assert own.model_copy(update={"more_passes": p4.more_passes}) == p4
    old, new = p4.more_passes[0], own.more_passes[0]
    assert new.reco == old.reco and new.max_per_spm == old.max_per_spm == 2
    assert new.checkpoint != old.checkpoint and 0 < new.cut < 1
    text = shipped_config("tracking/seed_filter_pass3l.yaml").read_text()
    train = yaml.safe_load(text)
    data = train["data"]
    assert train["base"] == "seed_filter.yaml" and Path(train["output_dir"]).name == Path(new.checkpoint).stem
    assert [Path(d).name for d in data["train_dir"]] == [Path(d).name for d in data["val_dir"]] == ["train_mu200"]
    seen, val = set(data["train_events"][0]), set(data["val_events"][0])
    assert seen and val and not seen & val and not {16, 17} & (seen | val)
    assert f"benchmarks/tracking_pass_seeds.py benchmarks/_work/tracking/train_mu200 --name {data['prepare']['seeds']} " in text
    assert "--pass 3 --config configs/tracking/ml_seeds_4pass_budget_p4.yaml" in text


def test_cli_finder_with_a_missing_or_mismatched_checkpoint_exits_2(sample, tmp_path, capsys) -> None:
    """A finder config whose classifier checkpoint is not there (a fresh clone without models/tracking/, a typo) or
    was trained on other features: one message that says how to rebuild, exit status 2, no output written."""
    import yaml

    S._classifier.cache_clear()
    bad = tmp_path / "bad.yaml"
    for ckpt, words in (("models/tracking/nope.ckpt", "does not exist"), (str(tmp_path / "x.ckpt"), "does not exist")):
        bad.write_text(yaml.safe_dump({"checkpoint": ckpt}))
        err = _one_error(capsys, ["tracking", "reconstruct", str(sample), "--method", "ml-seeds+ckf", "--config", str(bad),
                         "--out", str(tmp_path / "out"), "--events", "0", "--quiet"])  # fmt: skip
        assert words in err and "tracking_models.py" in err
    raw = torch.load(Path(__file__).resolve().parents[1] / "models/tracking/seed_filter.ckpt", weights_only=True)
    init = yaml.safe_load(raw["lhcml"]["model_init_yaml"])
    init["feature_names"] = list(M.FEATURE_NAMES)[::-1]
    torch.save({"state_dict": raw["state_dict"], "lhcml": {**raw["lhcml"], "model_init_yaml": yaml.safe_dump(init)}},
               tmp_path / "other.ckpt")  # fmt: skip
    bad.write_text(yaml.safe_dump({"checkpoint": str(tmp_path / "other.ckpt")}))
    err = _one_error(capsys, ["tracking", "reconstruct", str(sample), "--method", "ml-seeds+ckf", "--config", str(bad),
                     "--out", str(tmp_path / "out"), "--events", "0", "--quiet"])  # fmt: skip
    assert "trained on the seed features" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))


def test_shipped_forward_pass_config_seeds_from_all_endcap_disks(sample) -> None:
    """configs/tracking/ml_seeds_5pass_budget_fwd.yaml is ml_seeds_4pass_budget_p34.yaml (its four passes unchanged)
    and a fifth pass, ckf_pass_forward.yaml: the third pass's settings (ckf_pass3_budget.yaml) and classifier with
    seeds from the seven pixel endcap disks per side (seeding-generic-endcaps.json) to |eta| = 4.3. ACTS's generic
    selection (every other pass) has only the four inner disks, which a particle from the beam line at |eta| = 3.9
    crosses at < 3 of them beyond the disks' inner radius (no triplet); all seven it crosses at >= 3. Every seed of the
    forward pass's seeding lies on the endcap disks and some on the outer three, which no generic seed touches."""
    import json

    from lhcml.config import shipped_config
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    p34 = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_4pass_budget_p34.yaml"))
    fwd = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_5pass_budget_fwd.yaml"))
    assert fwd.more_passes[:2] == p34.more_passes and len(fwd.more_passes) == 3
    assert fwd.model_copy(update={"more_passes": p34.more_passes}) == p34
    last = fwd.more_passes[2]
    assert (last.checkpoint, last.cut, last.max_per_spm) == (p34.more_passes[0].checkpoint, p34.more_passes[0].cut, 2)
    third = load_reco_config(S._config_path(p34.more_passes[0].reco, "reco"))
    forward = load_reco_config(S._config_path(last.reco, "reco"))
    assert forward.seeding.abs_eta_max == forward.ckf.abs_eta_max == 4.3 > third.seeding.abs_eta_max
    changed = {"geometry_selection": "", "abs_eta_max": 0.0}  # all else is the third pass's
    assert forward.seeding.model_dump() | changed == third.seeding.model_dump() | changed
    assert forward.ckf.model_dump() | {"abs_eta_max": 0.0} == third.ckf.model_dump() | {"abs_eta_max": 0.0}

    def layers(name: str) -> set[tuple[int, int]]:
        return {(d["volume"], d["layer"]) for d in json.loads(shipped_config(name).read_text())}

    generic, endcaps = layers(third.seeding.geometry_selection), layers(forward.seeding.geometry_selection)
    assert endcaps == {(v, lay) for v in (7, 9) for lay in range(2, 15, 2)}
    assert {g for g in generic if g[0] in (7, 9)} < endcaps and len(endcaps) == 14
    # the geometry, from the sample's hits: each disk's |z| and the disks' inner radius
    hits = read_event(sample, 0, parts=("hits",), check=False).hits
    disk = hits[hits["volume_id"].isin([7, 9])].assign(r=lambda h: np.hypot(h["x"], h["y"]), az=lambda h: h["z"].abs())
    z_of = disk.groupby(["volume_id", "layer_id"])["az"].median()
    r_in = disk["r"].min()
    assert 25.0 < r_in < 40.0 and len(z_of) == 14

    def crossed(sel: set[tuple[int, int]], eta: float) -> int:  # disks of one side reached beyond r_in
        return sum(1 for (v, lay), z in z_of.items() if v == 9 and (v, lay) in sel and z / np.sinh(eta) >= r_in)

    assert crossed(generic, 3.5) >= 3 and crossed(generic, 3.9) < 3 <= crossed(endcaps, 3.9)
    # the seeds: the forward pass's all on endcap disks, some on the outer three; the generic selection's never there
    hv = hits.set_index("hit_id")[["volume_id", "layer_id"]]
    outer = endcaps - generic
    on = {}
    for name, reco in (("generic", third), ("forward", forward)):
        triplets, _ = S.acts_seeds(sample, 0, reco)
        assert len(triplets) > 0
        on[name] = {tuple(x) for x in hv.loc[triplets.ravel() + 1].to_numpy()}
    assert on["forward"] <= endcaps and on["forward"] & outer
    assert not on["generic"] & outer


def test_shipped_lean_forward_config_narrows_only_the_first_two_passes_seed_spans(sample) -> None:
    """configs/tracking/ml_seeds_5pass_budget_fwd_lean.yaml is ml_seeds_5pass_budget_fwd.yaml with the first two passes'
    seeds' radial spans cut (delta_r 5-100 mm instead of 5-150, and 5-70 instead of 5-100; ckf_budget_pass1_lean.yaml,
    ckf_budget_pass2_lean.yaml) and nothing else: the same classifiers, cuts and later passes. On the test event every
    seed of the narrowed passes has its space points within the new span (hit radii, 1 mm for the measurement
    smearing), the old passes have seeds beyond it, and the narrowed passes make fewer seeds. The six-pass strip finder's
    lean copy (ml_seeds_6pass_budget_fwd_strips_lean.yaml) makes the same change and no other."""
    from lhcml.config import shipped_config
    from lhcml.tasks.tracking.acts_reco import load_reco_config

    fwd = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_5pass_budget_fwd.yaml"))
    lean = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_5pass_budget_fwd_lean.yaml"))
    assert (lean.reco, lean.second_pass) != (fwd.reco, fwd.second_pass)
    assert lean.model_copy(update={"reco": fwd.reco, "second_pass": fwd.second_pass}) == fwd
    six = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips.yaml"))
    six_lean = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips_lean.yaml"))
    assert six_lean.model_copy(update={"reco": fwd.reco, "second_pass": fwd.second_pass}) == six
    assert (six_lean.reco, six_lean.second_pass) == (lean.reco, lean.second_pass)
    hits = read_event(sample, 0, parts=("hits",), check=False).hits
    r_of = np.hypot(hits["x"].to_numpy(), hits["y"].to_numpy())
    for old_name, new_name, span in ((fwd.reco, lean.reco, 100.0), (fwd.second_pass, lean.second_pass, 70.0)):
        old = load_reco_config(S._config_path(old_name, "reco"))
        new = load_reco_config(S._config_path(new_name, "reco"))
        assert new.seeding.delta_r == (old.seeding.delta_r[0], span) and span < old.seeding.delta_r[1]
        assert new.model_copy(update={"seeding": old.seeding}) == old
        assert new.seeding.model_dump() | {"delta_r": None} == old.seeding.model_dump() | {"delta_r": None}
        spans = {}
        for tag, reco in (("old", old), ("new", new)):
            triplets, _ = S.acts_seeds(sample, 0, reco)
            r = np.sort(r_of[triplets], axis=1)
            spans[tag] = np.maximum(r[:, 1] - r[:, 0], r[:, 2] - r[:, 1])
        assert len(spans["new"]) > 0 and spans["new"].max() <= span + 1.0
        assert (spans["old"] > span + 1.0).any() and len(spans["new"]) < len(spans["old"])
