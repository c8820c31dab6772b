"""Fine-tuning a GNN stage on another sample (benchmarks/tracking_gnn.py ``--init-filter``/``--init-gnn``,
issue 14): the run starts from another run's last checkpoint, trains on the new events with the
epochs counting on, leaves the source run untouched, and the time budget counts from the first
fine-tuning epoch. The events are the constructed helices of ``test_tracking_gnn``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from _scripts import load_benchmark

sys.path.insert(0, str(Path(__file__).parent))
from test_tracking_gnn import _write_sample  # noqa: E402

from lhcml.tasks.tracking import gnn_pipeline as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_benchmark("tracking_gnn.py", "tracking_gnn_bench")


def _val_loss(run: Path, sample: Path, events: list[int]) -> float:
    from lhcml.data.trackml import read_event
    from lhcml.models.tracking.gnn import edge_loss, graph_file, read_graph

    model = P.load_stage(run / "checkpoints" / "last.ckpt")
    losses = []
    for e in events:
        g = read_graph(graph_file(read_event(sample, e).source, e, "mm"))
        with torch.no_grad():
            logit = model(torch.as_tensor(g["x"]), torch.as_tensor(g["edge_index"]), torch.as_tensor(g["edge_attr"]))
        losses.append(float(edge_loss(logit, torch.as_tensor(g["y"]).float())))
    return sum(losses) / len(losses)


def test_finetune_starts_from_the_other_run_and_counts_on(tmp_path):
    bench = _script()
    low, high = tmp_path / "low", tmp_path / "high"
    _write_sample(low, range(10, 14), 15)  # few particles per event ("low pile-up")
    _write_sample(high, range(20, 24), 60)  # four times as many
    P.build_module_map([low, high], tmp_path / "mm.npz", min_pt=0.5, cut_level="layer", progress=False)
    for d in (low, high):
        P.write_graphs(d, "mm", method="module_map", module_map=tmp_path / "mm.npz", progress=False)
    base = ["optimizer.lr=1e-2", "trainer.patience=null", "model.hidden=16", "model.n_layers=2"]
    cfg = "configs/tracking/edge_filter.yaml"
    bench._train(cfg, str(low), 3, 1, "mm", tmp_path / "a", base + ["trainer.max_epochs=2"])
    src_bytes = (tmp_path / "a" / "checkpoints" / "last.ckpt").read_bytes()
    before = _val_loss(tmp_path / "a", high, [3])

    # a large epoch limit, a tiny budget: exactly one fine-tuning epoch, numbered after the source's two
    bench._train(cfg, str(high), 3, 1, "mm", tmp_path / "b", base + ["trainer.max_epochs=50"],
                 init=str(tmp_path / "a"), budget_s=1e-6)  # fmt: skip
    last = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    assert len(list((tmp_path / "b" / "checkpoints").glob("best-*.ckpt"))) == 1
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").read_bytes() == src_bytes
    assert len(list((tmp_path / "a" / "checkpoints").glob("best-*.ckpt"))) == 1
    # the fine-tuned filter fits the new sample's held-out event better than the one it started from
    assert _val_loss(tmp_path / "b", high, [3]) < before


def test_finetune_from_a_folder_without_checkpoint_is_one_clear_error(tmp_path):
    bench = _script()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="checkpoints/last.ckpt"):
        bench._start_from(str(tmp_path / "empty"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_budget_counts_from_the_first_finetuning_epoch(monkeypatch):
    import lhcml.train.budget as budget

    now = [0.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: now[0])
    hook = _script()._RelativeBudget(100.0)
    now[0] = 60.0
    # the first fine-tuning epoch (absolute epoch 15) took 60 s: a second would end at 120 s > 100 s
    # (counted from epoch 0, 60 s · 17/16 would look within budget)
    assert hook(15, {}) is True
    assert _script()._RelativeBudget(None)(15, {}) is False
