"""``benchmarks/fastcalo_closure.py --spot-readout FRACTION`` (issue 15): the closure's fast events
made with the simulation's spot readout (``--calo fast:MODEL.onnx@spot-readout=FRACTION``).

The generator is the template graph of ``tests/test_fastcalo_sim.py``; the benchmark runs as a
script (its events stage only, 40 gamma_jet + 40 dijet_photon events, one chunk each).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_fastcalo_sim import _template_onnx

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fastcalo_closure.py"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from lhcml.data.calochallenge import parse_binning
    from lhcml.sim.fastcalo import detailed_showers, voxel_binning

    b = parse_binning(voxel_binning("photon").to_xml())
    out = detailed_showers("photon", np.full(100, 50.0), 5, binning=b, images=False)
    template = (out["showers"] / out["incident_energies"]).mean(axis=0)
    return _template_onnx(tmp_path_factory.mktemp("closure_spot") / "template.onnx", b, template)


def _run(work: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--work", str(work), "--stages", "events", "--events", "gamma_jet=40", "dijet_photon=40",
           "--chunk-events", "40", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def _chunk(work: Path, calo: str) -> tuple[dict, dict[str, np.ndarray]]:
    import h5py

    with h5py.File(work / "events" / calo / "gamma_jet_000.h5", "r") as f:
        return dict(f.attrs), {k: f["photons"][k][:] for k in f["photons"].dtype.names}


def test_spot_readout_reaches_the_fast_events_and_a_resume_cannot_mix_them(template, tmp_path):
    works = {}
    for tag, extra in (("plain", ()), ("spot", ("--spot-readout", "0.05"))):
        work = tmp_path / tag
        work.mkdir()
        shutil.copy(template, work / "generator.onnx")
        res = _run(work, *extra)
        assert res.returncode == 0, res.stderr[-2000:]
        works[tag] = work
    a_det, det_plain = _chunk(works["plain"], "detailed")
    _, det_spot = _chunk(works["spot"], "detailed")
    a_plain, fast_plain = _chunk(works["plain"], "fast")
    a_spot, fast_spot = _chunk(works["spot"], "fast")
    assert a_det["calo_option"] == "detailed"
    assert a_plain["calo_option"].endswith("generator.onnx") and "@spot-readout" not in a_plain["calo_option"]
    assert a_spot["calo_option"].endswith("generator.onnx@spot-readout=0.05")
    # same events: the detailed side is identical, the fast side is the same photons read out otherwise
    for k in det_plain:
        np.testing.assert_array_equal(det_spot[k], det_plain[k])
    # the same seed without the readout gives the same generated showers: a readout that never
    # reached the simulation would leave the fast candidates identical
    assert len(fast_plain["eventNumber"]) > 0 and len(fast_spot["eventNumber"]) > 0
    same = len(fast_spot["eventNumber"]) == len(fast_plain["eventNumber"]) and all(
        np.allclose(fast_spot[k], fast_plain[k], equal_nan=True) for k in fast_plain if fast_plain[k].dtype.kind == "f"
    )
    assert not same, "the readout changed no fast candidate"
    # resuming the readout's folder without it (or with another fraction) is refused: exit 2
    for extra in ((), ("--spot-readout", "0.1")):
        res = _run(works["spot"], *extra)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "spot readout 0.05" in res.stderr and res.stderr.count("error:") == 1


@pytest.mark.parametrize("bad", ["1.5", "0", "-0.1", "nan"])
def test_a_bad_fraction_is_one_message_exit_2_and_writes_nothing(tmp_path, bad):
    work = tmp_path / "w"
    res = _run(work, "--spot-readout", bad)
    assert res.returncode == 2
    assert res.stderr.count("error:") == 1 and "--spot-readout" in res.stderr
    assert not work.exists()


def test_impact_eta_reaches_the_fast_events_and_a_resume_cannot_drop_it(template, tmp_path):
    work = tmp_path / "impact"
    work.mkdir()
    shutil.copy(template, work / "generator.onnx")
    res = _run(work, "--impact-eta")
    assert res.returncode == 0, res.stderr[-2000:]
    a_det, _ = _chunk(work, "detailed")
    a_fast, fast = _chunk(work, "fast")
    assert a_det["calo_option"] == "detailed"
    assert a_fast["calo_option"].endswith("generator.onnx@impact-eta")
    assert len(fast["eventNumber"]) > 0
    # resuming without the option (the default fast path) would mix two fast paths: refused, exit 2
    res = _run(work)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "--impact-eta" in res.stderr and res.stderr.count("error:") == 1
