"""The fast-calo benchmark states how many showers per class stand behind each classifier AUC, and takes a larger
validation made of several detailed files (issue 15: the AUC grows with the validation size, h31a/h32a)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _fastcalo_helpers import random_photon_showers, real_binning_fm_checkpoint
from _scripts import load_benchmark

from lhcml.data.calochallenge import CaloSample, concat_samples, read_showers, write_showers
from lhcml.errors import ConfigError


def _write(path, b, n, seed):
    e, _, x = random_photon_showers(b.n_voxels, n)
    rng = np.random.default_rng(seed)
    write_showers(path, np.clip(e.numpy() * (0.9 + 0.05 * seed), 1.0, 260.0), x.numpy(), b, eta=rng.uniform(0, 1.37, n),
                  phi=rng.uniform(-np.pi, np.pi, n))  # fmt: skip
    return path


def test_concat_samples_keeps_order_and_refuses_mixtures(tmp_path):
    _, b, _ = real_binning_fm_checkpoint(tmp_path)
    a = read_showers(_write(tmp_path / "a.h5", b, 7, 1), b)
    c = read_showers(_write(tmp_path / "c.h5", b, 5, 2), b)
    ac = concat_samples([a, c])
    assert len(ac) == 12 and ac.binning is a.binning
    np.testing.assert_array_equal(ac.energies, np.concatenate([a.energies, c.energies]))
    np.testing.assert_array_equal(ac.showers[7:], c.showers)
    np.testing.assert_array_equal(ac.eta, np.concatenate([a.eta, c.eta]))
    np.testing.assert_array_equal(ac.phi[:7], a.phi)
    no_eta = CaloSample(c.energies, c.showers, c.binning)
    with pytest.raises(ConfigError, match="eta is stored in samples \\[0\\] only"):
        concat_samples([a, no_eta])
    other = CaloSample(np.ones(2), np.zeros((2, 10), np.float32), type(b)("photon", 22, b.layers[:1]))
    with pytest.raises(ConfigError, match="another binning"):
        concat_samples([a, other])
    with pytest.raises(ConfigError, match="at least one"):
        concat_samples([])


def test_benchmark_reports_the_showers_per_class_it_used(tmp_path, capsys):
    bench = load_benchmark("fastcalo.py", "fastcalo_bench_size")
    _, b, ckpt = real_binning_fm_checkpoint(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    ckpt.rename(models / "tiny.ckpt")
    r1, r2 = _write(tmp_path / "r1.h5", b, 60, 1), _write(tmp_path / "r2.h5", b, 40, 2)
    det = tmp_path / "det.json"
    det.write_text(json.dumps({"s_per_shower": 0.01}))
    common = ["--models", str(models), "--binning", str(tmp_path / "binning_photon.xml"), "--runs", "1",
              "--epochs", "1", "--no-timing", "--detailed-time", str(det)]  # fmt: skip
    for refs, extra, n in (([r1], [], 60), ([r1, r2], [], 100), ([r1, r2], ["--max-showers", "70"], 70)):
        out = tmp_path / f"out{n}"
        res = bench.main(common + ["--reference", *map(str, refs), "--output", str(out), *extra])
        r = res["models"]["tiny"]
        assert res["n_reference"] == n and r["n_per_class"] == {"low": n, "high": n}
        on_disk = json.loads((out / "results.json").read_text())
        assert on_disk["models"]["tiny"]["n_per_class"] == {"low": n, "high": n}
        assert on_disk["reference"] == (str(r1) if len(refs) == 1 else [str(p) for p in refs])
        table = capsys.readouterr().out
        assert "| showers per class |" in table and "| tiny | " in table and f" | {n} | " in table
