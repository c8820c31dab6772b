"""Per-batch trimming of padded object slots in the training datamodule."""

from __future__ import annotations

import torch

from lhcml.train.datamodule import GroupSpec, _trim_objects


def _specs():
    return {"jets": GroupSpec("jets", ("pt",), "jet"), "tracks": GroupSpec("tracks", ("a", "b"), "object")}


def _batch(valid):
    b, n = valid.shape
    x = torch.arange(b * n * 2, dtype=torch.float32).reshape(b, n, 2)
    return {
        "jets": torch.randn(b, 1),
        "tracks": x,
        "tracks_valid": valid,
        "tracks_ftagTruthVertexIndex": torch.arange(b * n).reshape(b, n),
        "labels": torch.zeros(b, dtype=torch.long),
    }


def test_trim_keeps_every_valid_slot_and_aligns_labels():
    valid = torch.zeros(3, 40, dtype=torch.bool)
    valid[0, :4] = True
    valid[1, :2] = True
    valid[2, 9] = True  # a valid slot after padding: must survive
    batch = _batch(valid)
    ref = {k: v.clone() for k, v in batch.items()}
    _trim_objects(batch, _specs())
    assert batch["tracks"].shape == (3, 10, 2)
    assert batch["tracks_valid"].shape == (3, 10)
    assert batch["tracks_ftagTruthVertexIndex"].shape == (3, 10)
    assert int(batch["tracks_valid"].sum()) == int(valid.sum())
    assert torch.equal(batch["tracks"], ref["tracks"][:, :10])
    assert torch.equal(batch["tracks_ftagTruthVertexIndex"], ref["tracks_ftagTruthVertexIndex"][:, :10])
    assert torch.equal(batch["jets"], ref["jets"]) and batch["labels"].shape == (3,)


def test_trim_without_any_track_keeps_one_slot():
    batch = _batch(torch.zeros(2, 40, dtype=torch.bool))
    _trim_objects(batch, _specs())
    assert batch["tracks"].shape == (2, 1, 2) and not batch["tracks_valid"].any()
