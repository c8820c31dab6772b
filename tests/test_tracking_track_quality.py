"""The track-quality selection after the passes of ml-seeds+ckf (:mod:`lhcml.tasks.tracking.track_quality`, key
``track_selection`` of the ml-seeds config) and the finder that uses it (``configs/tracking/ml_seeds_6pass_budget_quality.yaml``;
issue 14, docs/benchmarks/tracking_fakes.md)."""

from __future__ import annotations

import numpy as np
import pytest
from _tracking_helpers import shipped_track_filter, simulated_ttbar_event

from lhcml.config import shipped_config
from lhcml.errors import ConfigError
from lhcml.tasks.tracking import seed_filter as S
from lhcml.tasks.tracking.acts_reco import FittedTracks, load_reco_config
from lhcml.tasks.tracking.track_quality import (
    TrackSelection,
    removed_tracks,
    select_tracks,
    write_track_files,
)

CUT = TrackSelection(max_chi2_ndf={7: 1.5, 8: 2.0})


def test_ceiling_by_measurement_count_known_answers() -> None:
    """A track is judged by the smallest key >= its measurements; longer tracks than the largest key are kept;
    ndf 0 counts as 1 (no division by zero)."""
    nhits = np.array([7, 7, 8, 8, 6, 9, 20, 7])
    chi2_ndf = np.array([1.6, 1.4, 2.1, 1.9, 1.6, 50.0, 50.0, 0.0])
    ndf = np.array([10, 10, 12, 12, 8, 14, 36, 0])
    gone = removed_tracks(nhits, chi2_ndf * np.maximum(ndf, 1), ndf, CUT)
    assert gone.tolist() == [True, False, True, False, True, False, False, False]
    assert removed_tracks(np.array([7]), np.array([3.0]), np.array([0]), CUT).tolist() == [True]  # 3 / max(0, 1)


def fitted(nhits: list[int], chi2: list[float], ndf: list[int]) -> FittedTracks:
    n = len(nhits)
    return FittedTracks(event_id=0, track_id=np.arange(n, dtype=np.int64), params=np.zeros((n, 6)),
                        cov=np.zeros((n, 6, 6)), nhits=np.array(nhits, np.int32), nholes=np.zeros(n, np.int32),
                        noutliers=np.zeros(n, np.int32), nshared=np.zeros(n, np.int32),
                        chi2=np.array(chi2, np.float32), ndf=np.array(ndf, np.int32),
                        truth_particle=np.arange(1, n + 1, dtype=np.int64), truth_fraction=np.ones(n, np.float32))  # fmt: skip


def result() -> dict:
    """Three tracks: a good 12-measurement track (chi2/ndf 1), a constructed fake of 7 measurements with chi2/ndf 4,
    a good 7-measurement track (chi2/ndf 0.8); hit ids 1-12, 13-19, 20-26."""
    lens = [12, 7, 7]
    t = np.repeat(np.arange(3, dtype=np.int64), lens)
    h = np.arange(1, sum(lens) + 1, dtype=np.int64)
    return {"track_id": t, "hit_id": h, "fitted": fitted(lens, [20.0, 40.0, 8.0], [20, 10, 10]),
            "timings": {"ckf": 1.0}, "pass_first_track_id": [0, 2]}  # fmt: skip


def test_selection_removes_the_constructed_fake_and_keeps_the_good_tracks() -> None:
    out = select_tracks(result(), CUT)
    assert out["n_removed"] == 1
    assert sorted(set(out["track_id"].tolist())) == [0, 2]  # ids unchanged
    assert out["hit_id"].tolist() == list(range(1, 13)) + list(range(20, 27))
    assert out["fitted"].track_id.tolist() == [0, 2] and out["fitted"].truth_particle.tolist() == [1, 3]
    assert out["fitted"].cov.shape == (2, 6, 6)
    assert out["timings"] == {"ckf": 1.0} and out["pass_first_track_id"] == [0, 2]


def test_selection_off_returns_the_result_unchanged() -> None:
    res = result()
    assert select_tracks(res, None) is res
    loose = select_tracks(result(), TrackSelection(max_chi2_ndf={8: 1000.0}))  # a ceiling nothing reaches
    assert loose["n_removed"] == 0 and loose["track_id"].tolist() == res["track_id"].tolist()


@pytest.mark.parametrize("section", [
    {"max_chi2_ndf": {7: 1.5}, "min_pt": 0.5},  # unknown key
    {"max_chi2": {7: 1.5}},  # misspelt key
    {"max_chi2_ndf": {}},  # no ceiling
    {"max_chi2_ndf": {0: 1.5}},  # measurements >= 1
    {"max_chi2_ndf": {7: 0.0}},  # chi2/ndf > 0
])  # fmt: skip
def test_bad_track_selection_is_one_config_error(section: dict) -> None:
    base = {"checkpoint": "models/tracking/seed_filter.ckpt"}
    assert S.load_ml_seeds_config(base).track_selection is None  # off by default
    with pytest.raises(ConfigError):
        S.load_ml_seeds_config({**base, "track_selection": section})


def test_quality_finder_is_the_headline_finder_with_looser_passes_and_the_selection() -> None:
    """Only passes 1, 2, 3 and 6's reco configs and the selection (the shipped track classifier) differ from
    ml-seeds+ckf-6pass-budget; those reco configs differ from the headline's only in the chi2 cuts (15/25 -> 25/35;
    passes 1-3), 7 measurements in the third pass (8) and 5 measurements in the strip pass (7, and its ambiguity
    resolution's minimum)."""
    head = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips_lean.yaml"))
    new = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality.yaml"))
    assert new.track_selection == TrackSelection(checkpoint="models/tracking/track_filter.ckpt", cut=0.03)
    passes = [head.more_passes[0], *new.more_passes[1:3], head.more_passes[3]]
    same = new.model_copy(update={"reco": head.reco, "second_pass": head.second_pass, "track_selection": None,
                                  "more_passes": passes})  # fmt: skip
    assert same == head
    for k in (0, 3):
        assert new.more_passes[k].model_copy(update={"reco": head.more_passes[k].reco}) == head.more_passes[k]
    chi2 = {"chi2_cut_measurement": 25.0, "chi2_cut_outlier": 35.0}
    pairs = [(head.reco, new.reco, chi2, {}), (head.second_pass, new.second_pass, chi2, {}),
             (head.more_passes[0].reco, new.more_passes[0].reco, {**chi2, "min_measurements": 7}, {}),
             (head.more_passes[3].reco, new.more_passes[3].reco, {"min_measurements": 5}, {"n_measurements_min": 5})]  # fmt: skip
    for old_name, new_name, ckf, amb in pairs:
        old, loose = load_reco_config(shipped_config(old_name)), load_reco_config(shipped_config(new_name))
        assert (old.ckf.chi2_cut_measurement, old.ckf.chi2_cut_outlier) == (15.0, 25.0)
        assert old.ckf.min_measurements > 5 and old.ambiguity.n_measurements_min == 7
        patched = old.model_copy(update={"ckf": old.ckf.model_copy(update=ckf),
                                         "ambiguity": old.ambiguity.model_copy(update=amb)})  # fmt: skip
        assert loose == patched


def test_shipped_track_classifier_loads_safely_and_matches_its_training_config() -> None:
    """models/tracking/track_filter.ckpt: small, weights and metadata only (torch.load weights_only=True), trained
    by configs/tracking/track_filter.yaml (model, seed, events, track files), on the finder's features."""
    model, stored, train = shipped_track_filter("models/tracking/track_filter.ckpt", "tracking/track_filter.yaml", "quality")
    assert stored["data"]["train_events"] == train["data"]["train_events"]
    assert stored["data"]["val_events"] == train["data"]["val_events"]
    # a 7-measurement track with two holes and chi2/ndf 4 in the third pass scores far above a clean 12-measurement one
    x = np.array([[7, 2, 1, 4.0, 8.0, 1.8, 0.5, 20.0, 3], [12, 0, 0, 0.8, 8.0, 1.8, 0.5, 20.0, 3]], np.float32)
    bad, good = model.score(x)
    assert bad > 0.03 > good


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    return simulated_ttbar_event(tmp_path_factory, "quality", 31)


def test_finder_with_selection_drops_exactly_the_flagged_tracks(event) -> None:
    """On a simulated tt-bar event, ml-seeds+ckf (two passes) with a ceiling nothing reaches gives the tracks of the
    finder without the key; with a tight ceiling (7-9 measurements: chi2/ndf > 0.8) the tracks that remain are those
    tracks minus exactly the flagged ones."""
    cfg = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_2pass_budget.yaml"))
    off = S.ml_seeds_ckf(event, 0, cfg)
    none = S.ml_seeds_ckf(event, 0, cfg.model_copy(update={"track_selection": TrackSelection(max_chi2_ndf={9: 1e6})}))
    assert np.array_equal(off["track_id"], none["track_id"]) and np.array_equal(off["hit_id"], none["hit_id"])
    tight = TrackSelection(max_chi2_ndf={9: 0.8})
    on = S.ml_seeds_ckf(event, 0, cfg.model_copy(update={"track_selection": tight}))
    f = off["fitted"]
    flagged = f.track_id[removed_tracks(f.nhits, f.chi2, f.ndf, tight)]
    assert 0 < len(flagged) < len(f)
    keep = ~np.isin(off["track_id"], flagged)
    assert np.array_equal(on["track_id"], off["track_id"][keep]) and np.array_equal(on["hit_id"], off["hit_id"][keep])
    assert on["n_removed"] == len(flagged) and len(on["fitted"]) == len(f) - len(flagged)


# ------------------------------------------------------------------------------------- the learned track classifier
def separable_tracks(n: int, seed: int) -> dict:
    """Tracks whose label follows chi2/ndf and holes (fakes: chi2/ndf ~ 3, 2 holes; real: ~ 0.8, 0 holes), as one
    event of the training registry's ``prepare``."""
    import torch

    from lhcml.models.tracking.track_filter import TRACK_FEATURE_NAMES

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.float32)
    x = np.column_stack([rng.integers(7, 15, n), 2 * y, rng.integers(0, 2, n), np.where(y > 0, 3.0, 0.8) + rng.normal(0, 0.3, n),
                         rng.uniform(1, 10, n), rng.uniform(0, 3, n), rng.exponential(0.5, n), rng.normal(0, 40, n),
                         rng.integers(1, 7, n)]).astype(np.float32)  # fmt: skip
    return {"features": torch.as_tensor(x), "y": torch.as_tensor(y), "feature_names": list(TRACK_FEATURE_NAMES)}


def test_track_classifier_learns_separable_tracks_better_than_a_constant() -> None:
    """The registry's track_filter (model, setup, step) trained for a few steps on separable tracks: its validation
    loss is far below the best constant's (the entropy of the fake fraction) and it ranks the fakes first."""
    import torch

    from lhcml.train.tracking import build_tracking_model, tracking_spec

    torch.manual_seed(0)
    spec = tracking_spec("track_filter")
    train, val = separable_tracks(2000, 1), separable_tracks(1000, 2)
    model = build_tracking_model("track_filter", {**spec.init_args(train), "hidden": 16, "n_layers": 2})
    spec.setup(model, [{"features": train["features"].numpy()}])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        spec.step(model, train, None, True)["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        loss = float(spec.step(model, val, None, False)["loss"])
    p = float(val["y"].mean())
    constant = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert loss < 0.2 * constant
    score = model.score(val["features"].numpy())
    y = val["y"].numpy() > 0
    assert score[y].min() > np.quantile(score[~y], 0.99)  # the fakes above 99 % of the real tracks


def test_a_seed_classifier_is_not_a_track_classifier(tmp_path, monkeypatch) -> None:
    """A shipped seed-classifier checkpoint given as the selection's checkpoint is one ConfigError naming its kind;
    a missing file too."""
    from lhcml.tasks.tracking.track_quality import track_classifier

    with pytest.raises(ConfigError, match="seed_filter"):
        track_classifier("models/tracking/seed_filter.ckpt")
    with pytest.raises(ConfigError):
        track_classifier(str(tmp_path / "nothing.ckpt"))


def test_track_file_errors(tmp_path) -> None:
    """A missing track file says how to write it; an unreadable one, one without its columns or with features of the
    wrong width, and one without labels (for training) are each one clear error."""
    from lhcml.errors import CorruptFileError, InputNotFoundError, SchemaError
    from lhcml.models.tracking.track_filter import (
        TRACK_FEATURE_NAMES,
        read_track_file,
        track_file,
        track_prepare,
    )

    with pytest.raises(InputNotFoundError, match="tracking_models.py"):
        read_track_file(tmp_path / "nope.npz")
    path = track_file(str(tmp_path / "trackml" / "event000000003"), 3, "q")
    assert path == tmp_path / "trackml" / "tracks-q" / "event000000003-tracks.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError):
        read_track_file(path)
    np.savez(path, features=np.zeros((4, 3), np.float32), feature_names=np.asarray(TRACK_FEATURE_NAMES))
    with pytest.raises(SchemaError, match="do not match"):
        read_track_file(path)
    np.savez(path, features=np.zeros((4, len(TRACK_FEATURE_NAMES)), np.float32), feature_names=np.asarray(TRACK_FEATURE_NAMES))

    class Ev:
        event_id, source = 3, str(tmp_path / "trackml" / "event000000003")

    with pytest.raises(SchemaError, match="no labels"):
        track_prepare(Ev, type("O", (), {"tracks": "q"})())


def test_written_track_files_label_fakes_by_acts_matching(event) -> None:
    """write_track_files on a simulated event (two passes): one row per fitted track with the features of
    TRACK_FEATURE_NAMES (passes 1 and 2, the fit's measurement counts) and y = 1 exactly for the tracks whose majority
    particle holds under half of their measurements (the fit's own truth match, computed apart); a second call keeps
    the file."""
    from lhcml.models.tracking.track_filter import TRACK_FEATURE_NAMES, read_track_file

    cfg = shipped_config("tracking/ml_seeds_2pass_budget.yaml")
    (path,) = write_track_files(event, "t", [0], cfg)
    data = read_track_file(path)
    res = S.ml_seeds_ckf(event, 0, cfg)
    f = res["fitted"]
    assert list(data["feature_names"]) == list(TRACK_FEATURE_NAMES) and data["features"].shape == (len(f), 9)
    assert np.array_equal(data["features"][:, 0], f.nhits) and set(np.unique(data["features"][:, -1])) == {1.0, 2.0}
    assert np.array_equal(data["y"], (f.truth_fraction < 0.5).astype(np.int8))
    mtime = path.stat().st_mtime_ns
    write_track_files(event, "t", [0], cfg)
    assert path.stat().st_mtime_ns == mtime


def test_finder_refuses_a_bad_selection_classifier_before_any_work(tmp_path) -> None:
    """ml-seeds+ckf with a seed classifier as its selection's checkpoint: one ConfigError before the passes run (the
    event directory here does not even exist)."""
    cfg = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality.yaml"))
    bad = cfg.model_copy(update={"track_selection": TrackSelection(checkpoint="models/tracking/seed_filter_pass2.ckpt")})
    with pytest.raises(ConfigError, match="not a track classifier"):
        S.ml_seeds_ckf(tmp_path / "no_sample", 0, bad)


def test_combined_finder_is_the_quality_finder_with_the_hit_recovery() -> None:
    """ml_seeds_6pass_budget_quality_ext.yaml = ml_seeds_6pass_budget_quality.yaml + the extend section of
    ml_seeds_6pass_budget_fwd_strips_lean_ext.yaml, unchanged."""
    q = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality.yaml"))
    ext = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_fwd_strips_lean_ext.yaml"))
    both = S.load_ml_seeds_config(shipped_config("tracking/ml_seeds_6pass_budget_quality_ext.yaml"))
    assert both.extend is not None and both.extend == ext.extend
    assert both.model_copy(update={"extend": None}) == q
