"""Simulation runner: deterministic shards, resume after a kill, process pool and Dask."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from lhcml.data.h5 import H5Reader, read_attrs
from lhcml.data.mock import make_mock_tables
from lhcml.errors import ConfigError, SchemaError
from lhcml.sim.runner import finished_shards, read_manifest, run_simulation, shard_seed

SEED = 11
FAIL_AT = 2


def standin_events(process, n_events, mu, seed, pileup=None, progress=None):
    """A fast stand-in for simulate_events: deterministic tables from (n_events, seed)."""
    tables = make_mock_tables(n_jets=3 * n_events, seed=seed)
    tables["jets"]["averageInteractionsPerCrossing"] = mu
    return tables


def failing_events(process, n_events, mu, seed, pileup=None, progress=None):
    """Like the stand-in, but dies on shard FAIL_AT (a crashed job)."""
    if seed == shard_seed(SEED, FAIL_AT):
        raise RuntimeError("simulated crash")
    return standin_events(process, n_events, mu, seed, pileup, progress)


def _run(out, **kw):
    args = dict(process="ttbar", n_events=50, mu=0.0, seed=SEED, output_dir=out,
                events_per_shard=10, event_fn=standin_events, progress=False)  # fmt: skip
    args.update(kw)
    return run_simulation(**args)


def _bytes(paths):
    """What a shard holds, byte for byte: file attributes, and per dataset its dtype, shape,
    attributes and the bytes of its decoded data (NaN payloads and padding included).

    Not the raw file bytes: HDF5 compresses whole chunks, and the rows of a partial edge chunk
    beyond the dataset's extent can hold memory HDF5 freed earlier in the process, so two
    processes can store identical data in compressed chunks of different bytes (seen once in CI
    between an in-process run and a Dask worker: same data, file 1 056 bytes apart).
    """
    import h5py

    out = []
    for p in paths:
        with h5py.File(p, "r") as f:
            attrs = sorted((k, repr(v)) for k, v in f.attrs.items())
            sets = []
            for name in sorted(f):
                ds = f[name]
                ds_attrs = sorted((k, repr(v)) for k, v in ds.attrs.items())
                sets.append((name, ds.dtype.descr, ds.shape, ds_attrs, ds[()].tobytes()))
        out.append((p.name, attrs, sets))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return out, _run(out)


def test_shards_manifest_and_determinism(reference, tmp_path):
    out, files = reference
    assert [p.name for p in files] == [f"ttbar_{i:04d}.h5" for i in range(5)]
    man = read_manifest(out)
    assert man["complete"] and man["process"] == "ttbar" and man["seed"] == SEED
    assert [s["seed"] for s in man["shards"]] == [shard_seed(SEED, i) for i in range(5)]
    assert man["n_jets"] == sum(s["n_jets"] for s in man["shards"]) == 150
    assert len({shard_seed(SEED, i) for i in range(100)}) == 100
    attrs = read_attrs(files[3])
    assert attrs["shard_seed"] == shard_seed(SEED, 3) and attrs["energy_unit"] == "MeV"
    # same seed: bit-identical files; another seed: different content
    again = _run(tmp_path / "again")
    assert _bytes(again) == _bytes(files)
    assert (tmp_path / "again" / "manifest.yaml").read_text() == (out / "manifest.yaml").read_text()
    other = _run(tmp_path / "other", seed=SEED + 1)
    a = H5Reader(files[0]).read({"jets": ["pt"]})["jets"]["pt"]
    b = H5Reader(other[0]).read({"jets": ["pt"]})["jets"]["pt"]
    assert not np.array_equal(a, b)


def test_killed_run_resumes_to_identical_result(reference, tmp_path):
    out, files = reference
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path, event_fn=failing_events)
    done = sorted(p.name for p in tmp_path.glob("*.h5"))
    assert done == [f"ttbar_{i:04d}.h5" for i in range(FAIL_AT)]  # no partial shard
    assert [p.name for p in finished_shards(tmp_path, "ttbar")] == done
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*lhcml-tmp*"))
    assert not read_manifest(tmp_path)["complete"]
    mtimes = [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("*.h5"))]
    resumed = _run(tmp_path)
    assert [p.stat().st_mtime_ns for p in resumed[:FAIL_AT]] == mtimes  # skipped, not redone
    assert _bytes(resumed) == _bytes(files)
    assert (tmp_path / "manifest.yaml").read_text() == (out / "manifest.yaml").read_text()


def test_sigkill_mid_run_then_resume(reference, tmp_path):
    """A real SIGKILL of a running job: the restart produces the unbroken run's files."""
    out, files = reference
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(__file__.rsplit("/", 1)[0])!r})
        from test_sim_runner import standin_events, shard_seed, SEED
        from lhcml.sim.runner import run_simulation
        def killer(process, n_events, mu, seed, pileup=None, progress=None):
            if seed == shard_seed(SEED, 3):
                os.kill(os.getpid(), signal.SIGKILL)
            return standin_events(process, n_events, mu, seed, pileup, progress)
        run_simulation("ttbar", 50, 0.0, SEED, {str(tmp_path)!r}, events_per_shard=10,
                       event_fn=killer, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert len(list(tmp_path.glob("ttbar_*.h5"))) == 3
    assert _bytes(_run(tmp_path)) == _bytes(files)


def test_process_pool_and_local_dask_give_same_files(reference, tmp_path):
    _, files = reference
    pool = _run(tmp_path / "pool", workers=2)
    assert _bytes(pool) == _bytes(files)
    dask = _run(tmp_path / "dask", cluster="local:2")
    assert _bytes(dask) == _bytes(files)


def test_runner_errors(reference, tmp_path):
    out, _ = reference
    with pytest.raises(ConfigError, match="holds a different run.*seed: 11 -> 12"):
        _run(out, seed=12)
    with pytest.raises(ConfigError, match="unknown cluster 'locale:2'"):
        _run(tmp_path / "x", cluster="locale:2")
    with pytest.raises(ConfigError, match="events-per-shard"):
        _run(tmp_path / "y", events_per_shard=0)
    with pytest.raises(TypeError, match="module-level function"):
        _run(tmp_path / "w", workers=2, event_fn=lambda *a, **k: standin_events(*a, **k))
    # a shard file from another run is refused, not silently overwritten or reused
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "ttbar_0000.h5").write_bytes((out / "ttbar_0001.h5").read_bytes())
    with pytest.raises(ConfigError, match="ttbar_0000.h5 exists but was made by a different run"):
        _run(tmp_path / "z")
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    assert man["complete"]


def test_cluster_spec_and_batch_job_scripts():
    from lhcml.cluster import ClusterSpec, make_cluster

    assert ClusterSpec.parse("local:3").n_workers == 3
    assert ClusterSpec.parse("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    spec = ClusterSpec.parse(
        "slurm", cores=4, memory="8GB", walltime="03:00:00", queue="short", jobs=5
    )
    cluster = make_cluster(spec)  # creates the job template; submits nothing
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p short" in script and "#SBATCH -t 03:00:00" in script
    assert "--nthreads 1" in script and "--nworkers 4" in script
    spec = ClusterSpec.parse(
        "htcondor", cores=2, memory="4GB", disk="5GB", job_extra=["+MaxRuntime = 3600"]
    )
    cluster = make_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "MaxRuntime = 3600" in script and "RequestCpus = MY.DaskWorkerCores" in script
    for bad in ("local:0", "slurmm", "http://x"):
        with pytest.raises(ConfigError, match="local:"):
            ClusterSpec.parse(bad)


@pytest.mark.slow
def test_real_simulation_with_pileup_resumes_identically(tmp_path):
    """The real Pythia + detector chain through the runner: pileup library built once, reused."""
    pytest.importorskip("pythia8mc")
    files = run_simulation(
        "ttbar", 6, 5.0, 3, tmp_path, events_per_shard=3, pileup_size=30, progress=False
    )
    lib = tmp_path / "pileup_minbias.h5"
    assert lib.exists() and read_manifest(tmp_path)["pileup"]["n_events"] == 30
    first = _bytes(files)
    lib_mtime = lib.stat().st_mtime_ns
    with pytest.raises(SchemaError, match="pileup .*library, not a file of jets.*<process>_"):
        H5Reader(str(tmp_path / "*.h5")).n_jets  # noqa: B018
    files[1].unlink()  # as if the job died before the last shard
    again = run_simulation(
        "ttbar", 6, 5.0, 3, tmp_path, events_per_shard=3, pileup_size=30, progress=False
    )
    assert _bytes(again) == first and lib.stat().st_mtime_ns == lib_mtime
    data = H5Reader(files).read({"jets": ["pt", "eta", "averageInteractionsPerCrossing"],
                                 "tracks": ["ftagTruthOriginLabel", "valid"]})  # fmt: skip
    assert len(data["jets"]) > 6 and (data["jets"]["pt"] > 20e3).all()
    assert (np.abs(data["jets"]["eta"]) < 2.5).all()
    np.testing.assert_allclose(data["jets"]["averageInteractionsPerCrossing"], 5.0)
    origins = data["tracks"]["ftagTruthOriginLabel"][data["tracks"]["valid"]]
    assert (origins == 0).any() and (origins == 3).any()  # pileup tracks and b-decay tracks


@pytest.mark.slow
def test_real_simulation_same_files_in_process_and_dask(tmp_path):
    """The real event function runs in Dask worker processes and gives the in-process files."""
    pytest.importorskip("pythia8mc")
    kw = dict(process="ttbar", n_events=6, mu=0.0, seed=21, events_per_shard=3, progress=False)
    ref = run_simulation(output_dir=tmp_path / "one", **kw)
    dask = run_simulation(output_dir=tmp_path / "dask", cluster="local:2", **kw)
    assert _bytes(dask) == _bytes(ref)
    assert _bytes(ref)[0] != _bytes(ref)[1]
