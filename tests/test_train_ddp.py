"""Multi-process (DDP, gloo on CPU) training: ranks read their own rows, learn like one process, and
the validation rejection is computed on the predictions gathered from all ranks."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
sys.path.insert(0, str(Path(__file__).parent))
from _train_mock import make_training_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LHCML = [sys.executable, "-m", "lhcml"]


def _val_losses(run: Path) -> list[float]:
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    return [float(r["val_loss"]) for r in rows]


def _whole_set_rejection(run: Path, val: Path, tmp_path: Path, world: int) -> float:
    """Light rejection at 70 % b-efficiency (the validation settings of the ftag configs) of the
    last checkpoint on the validation jets the ranks saw together: the file is one chunk, cut in
    one block per rank; each rank uses the first n labelled jets of its block (n: the smallest
    block's count)."""
    import h5py
    import numpy as np

    from lhcml.metrics.discriminants import discriminant
    from lhcml.metrics.rejection import rejection_at_efficiency
    from lhcml.train.predict import predict

    (pred,) = predict(run / "checkpoints" / "last.ckpt", [val], output_dir=tmp_path / "pred_val")
    with h5py.File(pred) as f:
        jets = f["jets"][:]
    blocks = [jets[(r * len(jets)) // world : ((r + 1) * len(jets)) // world] for r in range(world)]
    blocks = [b[b["flavour_label"] >= 0] for b in blocks]
    n = min(len(b) for b in blocks)
    jets = np.concatenate([b[:n] for b in blocks])
    p = {c: jets[f"dl1_p{o}"] for c, o in (("bjets", "b"), ("cjets", "c"), ("ujets", "u"))}
    disc = discriminant(p, "bjets", {"cjets": 0.018, "ujets": 0.982})
    lab = jets["flavour_label"]
    rej, _ = rejection_at_efficiency(disc[lab == 0], disc[lab == 2], 0.70, np.ones((lab == 0).sum()), np.ones((lab == 2).sum()))
    return float(rej)


@pytest.mark.slow
def test_ddp_two_processes_learn_like_one(tmp_path):
    train = make_training_file(tmp_path / "train.h5", n_jets=800, seed=3)
    val = make_training_file(tmp_path / "val.h5", n_jets=400, seed=4)
    cfg = {
        "base": str(ROOT / "configs/ftag/dl1.yaml"),
        # no batch norm / dropout: per-rank statistics would legitimately differ
        "model": {"name": "dl1", "hidden": [32, 16], "batch_norm": False, "dropout": 0.0},
        "data": {"train_files": [str(train)], "val_files": [str(val)], "norm_dict": None,
                 "batch_size": 200, "chunk_size": 400},
        "trainer": {"max_epochs": 2, "patience": None, "accelerator": "cpu", "enable_progress_bar": False},
        "seed": 11,
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([*LHCML, "train", str(path), "--set", f"output_dir={single}"], check=True,
                   env=env, capture_output=True, timeout=300)  # fmt: skip
    # two ranks with half the batch each: the same number of jets per step as the single process
    # (each rank reads its own block of every chunk, so the batches are mixed differently)
    res = subprocess.run(
        [*LHCML, "train", str(path), "--devices", "2", "--strategy", "ddp",
         "--set", f"output_dir={ddp}", "--set", "data.batch_size=100"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    # checkpoints are written once (rank 0), not per rank
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == sorted(
        p.name for p in (single / "checkpoints").iterdir()
    )
    ls, ld = _val_losses(single), _val_losses(ddp)
    assert len(ls) == len(ld) == 2
    # both learn, and equally well: same jets per epoch, same steps, only the batch mixing differs
    assert ls[1] < ls[0] and ld[1] < ld[0]
    assert ld[1] == pytest.approx(ls[1], rel=0.1)
    # the logged rejection is that of the whole validation set (predictions gathered from both
    # ranks), not an average of per-rank values: recompute it from the last checkpoint
    with open(ddp / "logs" / "metrics.csv") as f:
        logged = [float(r["val_rej_ujets"]) for r in csv.DictReader(f) if r.get("val_rej_ujets")][-1]
    assert logged == pytest.approx(_whole_set_rejection(ddp, val, tmp_path, world=2), rel=1e-2)
