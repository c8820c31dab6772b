"""Track-finding metrics (issue 14): the TrackML score on hand-built events with known answers, the
ACTS-style efficiency/fake/duplicate rates on a constructed event, and bad input.

The challenge's own library (``trackml`` of the TrackML organisers) is not on PyPI (the PyPI
project of that name is an unrelated template), so the score is checked against values computed
by hand here and against a naive, set-based transcription of the definition on random events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lhcml.errors import SchemaError
from lhcml.metrics import tracking as tm


def _truth(particle_hits: dict[int, list[float]], n_noise: int = 0) -> pd.DataFrame:
    """Truth table: particle -> list of its hits' weights (hit ids numbered from 1), then noise."""
    rows = []
    hid = 1
    for pid, weights in particle_hits.items():
        for w in weights:
            rows.append((hid, pid, w))
            hid += 1
    for _ in range(n_noise):
        rows.append((hid, 0, 0.0))
        hid += 1
    return pd.DataFrame(rows, columns=["hit_id", "particle_id", "weight"])


def _hits_of(truth: pd.DataFrame, pid: int) -> list[int]:
    return truth.loc[truth["particle_id"] == pid, "hit_id"].tolist()


def _cands(tracks: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    t = np.concatenate([np.full(len(h), i, np.int64) for i, h in enumerate(tracks)]) if tracks else np.zeros(0, np.int64)
    h = np.concatenate([np.asarray(h, np.int64) for h in tracks]) if tracks else np.zeros(0, np.int64)
    return t, h


# two scoring particles of 4 hits (weights 0.15, 0.1, 0.1, 0.15: the first and last higher, as the
# challenge's), a 3-hit particle (weight 0) and 2 noise hits; total weight 1
W4 = [0.15, 0.10, 0.10, 0.15]
EVENT = _truth({11: W4, 22: W4, 33: [0.0, 0.0, 0.0]}, n_noise=2)
P1, P2, P3 = (_hits_of(EVENT, p) for p in (11, 22, 33))
NOISE = _hits_of(EVENT, 0)


def test_perfect_tracks_score_one():
    t, h = _cands([P1, P2, P3])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(1.0)
    # a large event with float32 weights (as the readers give them): exactly 1 up to float64 rounding
    rng = np.random.default_rng(7)
    big = _truth({p: list(rng.uniform(0.1, 1.0, 10)) for p in range(1, 2001)}, n_noise=500)
    big["weight"] = (big["weight"] / big["weight"].sum()).astype(np.float32)
    real = big[big["particle_id"] != 0]
    assert tm.score_candidates(big, real["particle_id"], real["hit_id"]) == pytest.approx(1.0, abs=1e-12)


def test_shuffled_assignment_known_value():
    # track A: 3 hits of p11 + 1 of p22 -> 3/4 of A and 3/4 of p11: good, counts the 3 hits of p11
    #          (0.15 + 0.10 + 0.10 = 0.35);
    # track B: the 4th hit of p11 + 2 hits of p22 -> 2/3 of B from p22 but exactly 2/4 of p22: not
    #          good (the challenge's inequalities are strict);
    # the last hit of p22 and everything else unassigned (one-hit tracks). Score 0.35 by hand.
    a = [P1[0], P1[1], P1[2], P2[0]]
    b = [P1[3], P2[1], P2[2]]
    t, h = _cands([a, b])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(0.35)


def test_noise_hits_excluded():
    # noise inside a good track does not cost weight (4/6 of the track is p11) and a noise-only or
    # zero-weight (3-hit particle) track earns none
    t, h = _cands([P1 + NOISE, P2])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(1.0)
    t, h = _cands([NOISE, P3])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(0.0)
    # with all noise attached, p11's track is 4/6 pure: still good; p22 alone found -> 0.5 + 0.5
    t, h = _cands([P1 + NOISE])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(0.5)


def test_split_and_merged_tracks():
    # split 2 + 2: neither half holds more than half of p11 -> 0 for p11 (p22 perfect: 0.5)
    t, h = _cands([P1[:2], P1[2:], P2])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(0.5)
    # split 3 + 1: the 3-hit part is good and brings its hits' weight 0.35
    t, h = _cands([P1[:3], P1[3:], P2])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(0.35 + 0.5)
    # merged p11 + p22 (8 hits, 4 each): no majority -> 0
    t, h = _cands([P1 + P2])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(0.0)
    # merged p11 (4) + the 3-hit p33: 4/7 of the track is p11 -> good, p11's weight 0.5
    t, h = _cands([P1 + P3, P2])
    assert tm.score_candidates(EVENT, t, h) == pytest.approx(1.0)


def test_to_submission_rule():
    # hit P1[0] is in two candidates: it goes to the longer one (track 7, 4 hits), not track 3
    t = np.array([3, 3, 7, 7, 7, 7])
    h = np.array([P1[0], P2[0], P1[0], P1[1], P1[2], P1[3]])
    sub = tm.to_submission(t, h, EVENT["hit_id"])
    assert len(sub) == len(EVENT) and sub["hit_id"].is_unique
    got = dict(zip(sub["hit_id"], sub["track_id"], strict=True))
    assert got[P1[0]] == 7 and got[P2[0]] == 3
    # unassigned hits become one-hit tracks with new ids (all different, none of the candidates')
    rest = [got[x] for x in EVENT["hit_id"] if x not in (P1 + [P2[0]])]
    assert len(set(rest)) == len(rest) and not {3, 7} & set(rest)
    # a shared hit resolved this way leaves p11 perfect: score 0.5
    assert tm.trackml_score(EVENT, sub) == pytest.approx(0.5)


def _naive_score(truth: pd.DataFrame, sub: pd.DataFrame) -> float:
    """The definition written out with sets (slow, independent of the vectorised code)."""
    pid = dict(zip(truth["hit_id"], truth["particle_id"], strict=True))
    w = dict(zip(truth["hit_id"], truth["weight"], strict=True))
    particles: dict[int, set[int]] = {}
    for hit, p in pid.items():
        particles.setdefault(p, set()).add(hit)
    tracks: dict[int, set[int]] = {}
    for hit, t in zip(sub["hit_id"], sub["track_id"], strict=True):
        tracks.setdefault(t, set()).add(hit)
    score = 0.0
    for hits in tracks.values():
        for phits in particles.values():
            common = hits & phits
            if len(common) > len(hits) / 2 and len(common) > len(phits) / 2:
                score += sum(w[x] for x in common)
    return score / sum(w.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_agrees_with_naive_definition_on_random_events(seed):
    rng = np.random.default_rng(seed)
    n_part = 60
    nh = rng.integers(1, 14, n_part)
    weights = {}
    for p, n in enumerate(nh, start=1):
        w = rng.uniform(0.5, 2.0, n) if n >= 4 else np.zeros(n)
        weights[p] = list(w)
    truth = _truth(weights, n_noise=40)
    truth["weight"] /= truth["weight"].sum()
    # candidates: true tracks with random hit losses, swaps to neighbours, splits and noise
    tracks = []
    for p in range(1, n_part + 1):
        hits = _hits_of(truth, p)
        keep = [x for x in hits if rng.random() > 0.2]
        extra = list(rng.choice(truth["hit_id"], rng.integers(0, 4), replace=False))
        if len(keep) > 5 and rng.random() < 0.3:
            tracks += [keep[:3] + extra, keep[3:]]
        else:
            tracks.append(keep + extra)
    t, h = _cands([x for x in tracks if x])
    sub = tm.to_submission(t, h, truth["hit_id"])
    assert tm.trackml_score(truth, sub) == pytest.approx(_naive_score(truth, sub), abs=1e-12)
    assert 0.0 < tm.trackml_score(truth, sub) < 1.0


# --------------------------------------------------------------------------- ACTS-style rates
def _rate_event():
    """Particles 1-3 reconstructable (10 hits, pT 2 GeV, eta 0.3), particle 4 too soft (pT 0.3),
    plus 4 noise hits; hits on circles of the particle's radius in a 2 T field."""
    specs = {1: (2.0, 0.3, 0.2), 2: (2.0, 0.3, 1.8), 3: (2.0, 0.3, 3.5), 4: (0.3, 0.3, 5.0)}  # pT, eta, phi
    truth_rows, hit_rows, part_rows = [], [], []
    hid = 1
    for pid, (pt, eta, phi) in specs.items():
        radius = pt / (tm._C_GEV_PER_T_MM * 2.0)
        for k in range(10):
            rr = 30.0 + 60.0 * k  # transverse distance from the origin [mm]
            a = 2 * np.arcsin(rr / (2 * radius))  # turning angle on the circle through the origin
            x = radius * (np.cos(phi + np.pi / 2) + np.cos(phi - np.pi / 2 + a))
            y = radius * (np.sin(phi + np.pi / 2) + np.sin(phi - np.pi / 2 + a))
            hit_rows.append((hid, x, y, rr * np.sinh(eta)))
            truth_rows.append((hid, pid, 0.01))
            hid += 1
        pz = pt * np.sinh(eta)
        part_rows.append((pid, pt * np.cos(phi), pt * np.sin(phi), pz, 1))
    for k in range(4):
        hit_rows.append((hid, 100.0 + k, -50.0, 10.0 * k))
        truth_rows.append((hid, 0, 0.0))
        hid += 1
    truth = pd.DataFrame(truth_rows, columns=["hit_id", "particle_id", "weight"])
    hits = pd.DataFrame(hit_rows, columns=["hit_id", "x", "y", "z"])
    parts = pd.DataFrame(part_rows, columns=["particle_id", "px", "py", "pz", "q"])
    return truth, hits, parts


def test_efficiency_fake_duplicate_known_answers():
    truth, hits, parts = _rate_event()
    p = {i: _hits_of(truth, i) for i in (1, 2, 3, 4, 0)}
    tracks = [
        p[1],  # T0: perfect -> matched to 1
        p[1][:6],  # T1: 6 hits of 1 -> duplicate of 1
        p[2][:5] + p[3][:5],  # T2: 5/10 from 2 (tie, lower id) -> matched (ACTS: >= 0.5) to 2
        p[3][5:8] + p[4][:3] + p[0][:2],  # T3: 3/8 at most -> fake
        p[3][8:],  # T4: 2 hits -> not a track (below MIN_TRACK_HITS), left out of the rates
    ]
    t, h = _cands(tracks)
    ev = tm.evaluate_event(5, truth, parts, hits, t, h)
    trk = ev.tracks.set_index("track_id")
    assert trk.loc[0, "matched"] and trk.loc[1, "duplicate"] and trk.loc[2, "matched"] and trk.loc[3, "fake"]
    assert trk.loc[2, "major_particle_id"] == 2 and not trk.loc[4, "counted"]
    assert ev.particles.set_index("particle_id")["reconstructable"].to_dict() == {1: True, 2: True, 3: True, 4: False}
    s = tm.summarise([ev])
    assert s["efficiency"]["value"] == pytest.approx(2 / 3)  # particles 1, 2 of 1, 2, 3
    assert s["efficiency"]["error"] == pytest.approx(np.sqrt(2 / 3 * 1 / 3 / 3))
    assert s["fake_rate"]["value"] == pytest.approx(1 / 4)
    assert s["duplicate_rate"]["value"] == pytest.approx(1 / 4)
    assert s["n_tracks"] == 4 and s["n_candidates"] == 5
    assert s["efficiency_pt>1"]["value"] == pytest.approx(2 / 3)
    # binned: all three reconstructable particles sit in the 2-3 GeV and 0-0.5 eta bins
    vs_pt = s["vs_pt"]["efficiency"]
    i = vs_pt["edges"].index(2.0)
    assert vs_pt["n"][i] == 3 and vs_pt["value"][i] == pytest.approx(2 / 3)
    assert sum(vs_pt["n"]) == 3
    # the score: only p1 is found whole (T0 gets the hits it shares with T1); 4 particles of equal weight
    assert ev.score == pytest.approx(0.25)
    b = s["score_breakdown"]
    assert b["pT > 1 GeV"] == pytest.approx({"weight": 0.75, "collected": 0.25})
    assert b["pT < 0.5 GeV"] == pytest.approx({"weight": 0.25, "collected": 0.0})
    assert b["reconstructable"]["collected"] + b["not reconstructable"]["collected"] == pytest.approx(ev.score)


def test_track_kinematics_from_hits():
    truth, hits, parts = _rate_event()
    t, h = _cands([_hits_of(truth, 1), _hits_of(truth, 4)])
    kin = tm.track_kinematics(t, h, hits).set_index("track_id")
    assert kin.loc[0, "pt"] == pytest.approx(2.0, rel=1e-6)
    assert kin.loc[1, "pt"] == pytest.approx(0.3, rel=1e-6)
    assert kin.loc[0, "eta"] == pytest.approx(0.3, abs=1e-6)


def test_binned_rate_errors_and_empty_bins():
    r = tm.binned_rate(np.array([0.5, 0.6, 1.5, 1.6]), np.array([True, False, True, True]), [0, 1, 2, 3])
    assert r["n"] == [2, 2, 0]
    assert r["value"][0] == pytest.approx(0.5) and r["error"][0] == pytest.approx(np.sqrt(0.25 / 2))
    assert r["value"][1] == pytest.approx(1.0) and r["error"][1] == 0.0
    assert np.isnan(r["value"][2])


# --------------------------------------------------------------------------- bad input
def test_unknown_candidate_hits_one_clear_error():
    t, h = _cands([P1 + [9999]])
    with pytest.raises(SchemaError, match="not hits of the event"):
        tm.score_candidates(EVENT, t, h)
    with pytest.raises(SchemaError, match="not hits of the event"):
        tm.match_tracks(EVENT, t, h)


def test_truth_missing_columns_one_clear_error():
    with pytest.raises(SchemaError, match=r"lacks the column\(s\) \['weight'\]"):
        tm.score_candidates(EVENT.drop(columns=["weight"]), *_cands([P1]))
    with pytest.raises(SchemaError, match="particle_id"):
        tm.match_tracks(EVENT.drop(columns=["particle_id"]), *_cands([P1]))


def test_submission_must_cover_every_hit_once():
    sub = pd.DataFrame({"hit_id": P1, "track_id": [1] * 4})
    with pytest.raises(SchemaError, match="every hit must be assigned"):
        tm.trackml_score(EVENT, sub)
    dup = pd.concat([tm.to_submission(*_cands([P1]), EVENT["hit_id"]), sub.iloc[:1]])
    with pytest.raises(SchemaError, match="more than one track"):
        tm.trackml_score(EVENT, dup)


def test_candidate_arrays_checked():
    with pytest.raises(SchemaError, match="equal length"):
        tm.check_candidates(np.arange(3), np.arange(4))
    with pytest.raises(SchemaError, match="integers"):
        tm.check_candidates(np.array([0.5]), np.array([1]))


# --------------------------------------------------------------------------- evaluate / report / CLI
def _write_event_csv(directory, event_id: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The rate event written by hand in the TrackML CSV layout (all columns of the challenge)."""
    truth, hits, parts = _rate_event()
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"event{event_id:09d}"
    h = hits.assign(volume_id=8, layer_id=2, module_id=1)
    h.to_csv(f"{stem}-hits.csv", index=False)
    parts.assign(vx=0.0, vy=0.0, vz=0.0, nhits=10)[
        ["particle_id", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits"]
    ].to_csv(f"{stem}-particles.csv", index=False)
    t = truth.merge(hits, on="hit_id").rename(columns={"x": "tx", "y": "ty", "z": "tz"})
    t = t.assign(tpx=1.0, tpy=0.0, tpz=0.0)[["hit_id", "particle_id", "tx", "ty", "tz", "tpx", "tpy", "tpz", "weight"]]
    t.to_csv(f"{stem}-truth.csv", index=False)
    return truth, hits, parts


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from lhcml.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_and_report_end_to_end(tmp_path, capsys):
    import json

    from lhcml.tasks.tracking.evaluate import read_candidates, write_candidates

    ev_dir = tmp_path / "sample"
    truth, _, _ = _write_event_csv(ev_dir, 3)
    (tmp_path / "manifest.json").write_text(json.dumps({"mu": 0}))  # a sample without its own manifest
    p = {i: _hits_of(truth, i) for i in (1, 2, 3, 4, 0)}
    perfect = _cands([p[1], p[2], p[3], p[4]])
    messy = _cands([p[1], p[1][:6], p[2][:5] + p[3][:5], p[3][5:8] + p[4][:3] + p[0][:2], p[3][8:]])
    write_candidates(tmp_path / "truthlike", 3, *perfect, timings={"find": 0.5})
    write_candidates(tmp_path / "messy", 3, *messy, timings={"seeding": 0.25, "ckf": 1.0})
    t, h, tim = read_candidates(tmp_path / "messy", 3)
    assert tim == {"seeding": 0.25, "ckf": 1.0} and len(t) == sum(len(x) for x in [p[1], p[1][:6], p[2][:5] + p[3][:5], p[3][5:8] + p[4][:3] + p[0][:2], p[3][8:]])
    code, out, err = _cli(capsys, "tracking", "evaluate", str(ev_dir), "-c", f"truthlike={tmp_path / 'truthlike'}",
                          "-c", f"messy={tmp_path / 'messy'}", "-o", str(tmp_path / "eval"), "--sample", "mu0")  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "eval" / "mu0" / "results.json").read_text())
    assert res["events"] == [3]
    m = res["methods"]
    assert m["truthlike"]["trackml_score"]["value"] == pytest.approx(1.0)
    assert m["truthlike"]["efficiency"]["value"] == pytest.approx(1.0) and m["truthlike"]["fake_rate"]["value"] == 0.0
    assert m["messy"]["efficiency"]["value"] == pytest.approx(2 / 3)
    assert m["messy"]["fake_rate"]["value"] == pytest.approx(0.25)
    assert m["messy"]["timing"]["total"]["mean"] == pytest.approx(1.25)
    csv = pd.read_csv(tmp_path / "eval" / "mu0" / "results.csv")
    assert list(csv["method"]) == ["truthlike", "messy"]
    # the same event as a second sample at another <mu> (only to exercise the rates-vs-mu figures)
    code, out, err = _cli(capsys, "tracking", "evaluate", str(ev_dir), "-c", f"messy={tmp_path / 'messy'}",
                          "-o", str(tmp_path / "eval"), "--sample", "mu50", "--mu", "50")  # fmt: skip
    assert code == 0, err
    code, out, err = _cli(capsys, "tracking", "report", str(tmp_path / "eval"))
    assert code == 0, err
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "Efficiency" in html and "Event display" in html and "Versus pile-up" in html
    assert html.count("<img") == 2 * (2 * 3 + 1) + 3  # per sample: 6 rate figures + 1 display; 3 vs mu
    assert "seeding" in html  # the per-stage timing table


def test_cli_bad_candidates_one_clear_error(tmp_path, capsys):
    from lhcml.tasks.tracking.evaluate import write_candidates

    ev_dir = tmp_path / "sample"
    truth, _, _ = _write_event_csv(ev_dir, 0)
    write_candidates(tmp_path / "bad", 0, np.array([0, 0]), np.array([1, 12345]))
    code, out, err = _cli(capsys, "tracking", "evaluate", str(ev_dir), "-c", f"bad={tmp_path / 'bad'}",
                          "-o", str(tmp_path / "eval"))  # fmt: skip
    assert code == 2 and "Traceback" not in err and "not hits of the event" in err, err
    assert not (tmp_path / "eval").exists()  # no partial output
    code, out, err = _cli(capsys, "tracking", "evaluate", str(ev_dir), "-c", "bad", "-o", str(tmp_path / "eval"))
    assert code == 2 and "METHOD=DIR" in err, err


def test_event_display_busy_event_shows_a_phi_sector(tmp_path):
    from lhcml.plots.tracking import EventDisplay

    truth, hits, parts = _rate_event()
    t, h = _cands([_hits_of(truth, 1), _hits_of(truth, 2)])
    disp = EventDisplay(label_lines=["test"], max_tracks=1)  # 3 true tracks > 1: a sector of ~60 degrees
    disp.add_event(hits, truth, parts, min_pt=1.0)
    disp.add_candidates(t, h, tm.match_tracks(truth, t, h))
    path = disp.save(tmp_path / "display.png")
    texts = " ".join(x.get_text() for ax in disp.axes for x in ax.texts)
    assert path.stat().st_size > 10_000 and "shown: |φ| < 60°" in texts and "matched 2" in texts
