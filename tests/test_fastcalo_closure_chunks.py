"""``benchmarks/fastcalo_closure.py``'s event chunks (issue 15): a sample grows in place.

A closure run is extended by rerunning it with more events of a process (``--events gamma_jet=24000``
after ``gamma_jet=8000``): every existing chunk must keep its file name and seed (so it is
recognised as done and pairs with the other calo's chunk), the new chunks must get seeds no other
chunk has (event numbers are ``seed * 10^7 + index``; the folds and the detailed/fast pairing key on
them), and a plan whose seeds would collide is refused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def closure():
    return load_benchmark("fastcalo_closure.py", "fastcalo_closure_chunks")


def test_growing_a_process_keeps_every_chunk_and_adds_fresh_seeds(closure):
    old = closure.chunk_plan({"gamma_jet": 8000, "dijet_photon": 40000}, 21, 500)
    new = closure.chunk_plan({"gamma_jet": 24000, "dijet_photon": 40000}, 21, 500)
    old_seeds = {(p, i): (s, n) for p, i, s, n in old}
    new_seeds = {(p, i): (s, n) for p, i, s, n in new}
    assert len(old) == 16 + 80 and len(new) == 48 + 80
    # every existing chunk: same (process, index) -> same file, same seed and size
    assert all(new_seeds[key] == value for key, value in old_seeds.items())
    seeds = [s for _, _, s, _ in new]
    assert len(set(seeds)) == len(seeds)
    added = {s for key, (s, _) in new_seeds.items() if key not in old_seeds}
    assert len(added) == 32 and not added & {s for s, _ in old_seeds.values()}
    assert sorted(s for p, _, s, _ in new if p == "gamma_jet") == list(range(21, 69))


def test_a_process_of_more_than_100_chunks_is_refused(closure, capsys):
    # 101 dijet chunks listed first: its chunk 100 would take gamma_jet chunk 0's seed
    with pytest.raises(SystemExit) as e:
        closure.chunk_plan({"dijet_photon": 50500, "gamma_jet": 8000}, 21, 500)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "chunk 100 of dijet_photon" in err or "chunk 0 of gamma_jet" in err
    assert "seed 121" in err
    # the last process may hold more chunks: nothing follows it
    plan = closure.chunk_plan({"gamma_jet": 8000, "dijet_photon": 50500}, 21, 500)
    assert len({s for _, _, s, _ in plan}) == len(plan) == 16 + 101


def test_the_cli_refuses_colliding_seeds_before_any_stage(tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fastcalo_closure.py"), "--work", str(work), "--stages", "events",
           "--event-calos", "detailed", "--events", "dijet_photon=60000", "gamma_jet=100"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2
    assert "would share seed 121" in r.stderr and r.stderr.count("error:") == 1
    assert not work.exists()
