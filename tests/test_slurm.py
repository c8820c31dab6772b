"""Simulation and tuning on a real Slurm cluster through dask-jobqueue, equal to local runs.

The cluster is the single-node one that `.ci/start_slurm.sh` starts (`.ci/run` does this before
`make test`). Without it these tests skip with that instruction, except under CI (`CI` set),
where a missing cluster is a failure. HTCondor has no server here: its job scripts are checked
as rendered (`test_htcondor_job_script`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from lhcml.cluster import ClusterSpec, make_cluster, pin_worker_gpu
from lhcml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def _slurm_up() -> str | None:
    """None when a Slurm partition has an idle node, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm client commands missing"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out (slurmctld not running?)"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()[:200]}"
    if not {"idle", "mix", "alloc"} & set(out.stdout.split()):
        return f"no usable Slurm node (sinfo states: {out.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def slurm():
    why = _slurm_up()
    if why is not None:
        msg = f"{why}: start a single-node cluster with `sudo .ci/start_slurm.sh`"
        if os.environ.get("CI"):
            pytest.fail(f"Slurm tests must run in CI: {msg}")
        pytest.skip(msg)


def _cluster_file(tmp_path: Path) -> Path:
    """A cluster YAML with small jobs (the CI node has 2 cores)."""
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump({
        "kind": "slurm", "cores": 1, "memory": "1GB", "walltime": "00:10:00",
        "log_directory": str(tmp_path / "logs"),
    }))  # fmt: skip
    return path


def _lhcml(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "lhcml", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)  # fmt: skip


def _datasets(path: Path) -> dict[str, bytes]:
    with h5py.File(path, "r") as f:
        return {name: f[name][()].tobytes() for name in f}


def test_simulate_on_slurm_equals_local(slurm, tmp_path):
    from lhcml.sim.runner import run_simulation

    local = run_simulation("ttbar", 40, 0.0, 11, tmp_path / "local", events_per_shard=20,
                           progress=False)  # fmt: skip
    res = _lhcml("simulate", "ttbar", "-n", "40", "--mu", "0", "--seed", "11",
                 "--events-per-shard", "20", "-o", "slurm_out", "--quiet",
                 "--cluster", str(_cluster_file(tmp_path)), "--queue", "debug", "--jobs", "1",
                 cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FastJet release" not in res.stdout + res.stderr  # third-party banner silenced
    remote = sorted((tmp_path / "slurm_out").glob("ttbar_*.h5"))
    assert [p.name for p in remote] == [p.name for p in local]
    for a, b in zip(local, remote, strict=True):
        da, db = _datasets(a), _datasets(b)
        assert set(da) == set(db) and "jets" in da
        for name in da:
            assert da[name] == db[name], f"{b.name}:{name} differs from the local run"
    with h5py.File(local[0]) as f:
        assert len(f["jets"]) > 0
    # the shards really ran as Slurm jobs: dask-jobqueue's job logs are in the cluster's log dir
    logs = list((tmp_path / "logs").glob("*.err")) + list((tmp_path / "logs").glob("*.out"))
    assert logs, "no Slurm job log written"
    assert not [p for p in logs if "FastJet release" in p.read_text()]  # banner silenced in jobs too


def test_tune_on_slurm_equals_local(slurm, tmp_path):
    from _train_mock import make_training_file

    from lhcml.tune.cli import run_tune

    train = make_training_file(tmp_path / "train.h5", n_jets=400, seed=1)
    val = make_training_file(tmp_path / "val.h5", n_jets=200, seed=2)
    cfg = {
        "base": str(ROOT / "configs/ftag/dl1.yaml"),
        "data": {"train_files": [str(train)], "val_files": [str(val)], "norm_dict": None,
                 "batch_size": 100},
        "model": {"name": "dl1", "hidden": [8]},
        "trainer": {"max_epochs": 1, "patience": None, "accelerator": "cpu"},
        "output_dir": str(tmp_path / "unused"),
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    space = {
        "study_name": "slurm_tiny", "sampler": "random", "pruner": "none", "n_trials": 2,
        "seed": 3, "objectives": [{"metric": "val_loss", "direction": "minimize"}],
        "parameters": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
    }  # fmt: skip
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    run_tune(tmp_path / "cfg.yaml", tmp_path / "space.yaml", tmp_path / "local", progress=False)
    res = _lhcml("tune", "cfg.yaml", "--space", "space.yaml", "-o", "remote",
                 "--cluster", "slurm", "--cores", "1", "--memory", "1GB", "--walltime", "00:10:00",
                 cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "💡" not in res.stdout + res.stderr  # Lightning's tips silenced

    def trials(d: str) -> list[tuple]:
        rows = yaml.safe_load((tmp_path / d / "trials.json").read_text())
        return [(t["trial"], t["state"], t["optimizer.lr"], t["val_loss"]) for t in rows]

    local, remote = trials("local"), trials("remote")
    assert len(local) == 2 and all(t[1] == "COMPLETE" for t in local)
    assert remote == local
    assert local[0][2] != local[1][2]  # two different draws, not one repeated
    job_logs = list(tmp_path.glob("slurm-*.out"))
    assert job_logs, "the trials did not run in a Slurm job"
    assert not [p for p in job_logs if "💡" in p.read_text()]  # Lightning's tips silenced in the jobs


def test_refused_slurm_job_is_one_clear_error(slurm, tmp_path):
    """A job Slurm would refuse fails at once with Slurm's reason, instead of waiting forever."""
    res = _lhcml("simulate", "ttbar", "-n", "4", "--mu", "0", "-o", "out", "--quiet",
                 "--cluster", "slurm", "--queue", "nosuchpartition", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Slurm refuses the job" in res.stderr and "nosuchpartition" in res.stderr.lower()
    assert "Traceback" not in res.stderr
    assert not list((tmp_path / "out").glob("ttbar_*.h5"))


def test_slurm_job_script_resources():
    spec = ClusterSpec.parse(
        "slurm", cores=2, memory="3GB", walltime="01:30:00", queue="gpu", account="atlas",
        gpus=2, jobs=3, prologue=["module load cuda", "source /opt/venv/bin/activate"],
        job_extra=["--constraint=a100"],
    )  # fmt: skip
    cluster = make_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A atlas", "#SBATCH -t 01:30:00", "#SBATCH --gpus=2",
                 "#SBATCH --constraint=a100", "#SBATCH --cpus-per-task=2", "--nworkers 2"):
        assert line in script, (line, script)
    # the prologue runs before the worker starts
    assert script.index("module load cuda") < script.index("source /opt/venv") < script.index("distributed.cli")


def test_htcondor_job_script():
    """No HTCondor server here: the rendered submit description is what is checked."""
    spec = ClusterSpec.parse("htcondor", cores=2, memory="4GB", disk="5GB", gpus=1,
                             job_extra=["+MaxRuntime = 3600"], prologue=["source env.sh"])  # fmt: skip
    cluster = make_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "MaxRuntime = 3600" in script and "request_gpus = 1" in script
    assert "RequestCpus = MY.DaskWorkerCores" in script and "source env.sh" in script


def test_cluster_yaml_and_cli_options(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("kind: slurm\ncores: 4\nmemory: 16GB\nqueue: long\nprologue: module load x\n")
    spec = ClusterSpec.parse(path, memory="8GB")  # the command line wins over the file
    assert (spec.kind, spec.cores, spec.memory, spec.queue, spec.prologue) == (
        "slurm", 4, "8GB", "long", ("module load x",))
    assert ClusterSpec.parse(spec) is spec and ClusterSpec.parse("local:2", cores=3).cores == 3
    path.write_text("kind: slurm\nwalltime: 04:30:00\n")  # unquoted: YAML reads 16200 seconds
    assert ClusterSpec.parse(path).walltime == "04:30:00"
    path.write_text("kind: slurm\ncores: 4\nmemroy: 8GB\n")
    with pytest.raises(ConfigError, match="unknown cluster option 'memroy'.*did you mean 'memory'"):
        ClusterSpec.parse(path)
    path.write_text("cores: 4\n")
    with pytest.raises(ConfigError, match="needs a 'kind:' key"):
        ClusterSpec.parse(path)
    with pytest.raises(ConfigError, match="'walltime'.*HH:MM:SS"):
        ClusterSpec.parse("slurm", walltime="2 hours")
    with pytest.raises(ConfigError, match="'cores'.*integer >= 1"):
        ClusterSpec.parse("slurm", cores=0)
    with pytest.raises(ConfigError, match="'memory'.*size"):
        ClusterSpec.parse("slurm", memory="lots")
    with pytest.raises(ConfigError, match="does not exist"):
        ClusterSpec.parse(tmp_path / "missing.yaml")


def test_gpu_is_chosen_on_the_worker(monkeypatch):
    """A worker picks among its own job's GPUs (CUDA_VISIBLE_DEVICES set by Slurm)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert pin_worker_gpu(1) == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pin_worker_gpu(0) is None and os.environ["CUDA_VISIBLE_DEVICES"] == ""
