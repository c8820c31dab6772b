"""Streaming datasets: chunks, shuffling, DDP shares, generic input groups (objects, images)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from _train_mock import make_training_file

import lhcml.train.datamodule as dm
from lhcml.errors import ConfigError, SchemaError
from lhcml.labels import get_scheme


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    return make_training_file(tmp_path_factory.mktemp("dm") / "f.h5", 250, seed=31)


def _ds(path, **kw):
    specs = dm.inspect_inputs(path, {"jets": ["pt", "eta"], "tracks": ["ptfrac", "dr"]})
    labels = dm.LabelSpec.build(get_scheme("flavour").subset(["bjets", "cjets", "ujets"]), "flavour_label")
    return dm.H5JetDataset([path], specs, labels, **kw)


def _ids(batches):
    return np.concatenate([b["jets"][:, 0].numpy() for b in batches])  # jet pT identifies a jet


def test_chunks_shuffle_and_labels(small_file):
    with h5py.File(small_file) as f:
        jets = f["jets"][:]
    labelled = jets["flavour_label"] >= 0
    ds = _ds(small_file, batch_size=32, chunk_size=70, shuffle=True, seed=3)
    e0 = list(ds)
    assert len(e0) == len(ds)
    ids0 = _ids(e0)
    np.testing.assert_array_equal(np.sort(ids0), np.sort(jets["pt"][labelled]))  # every labelled jet once
    ds.set_epoch(1)
    ids1 = _ids(list(ds))
    assert not np.array_equal(ids0, ids1) and np.array_equal(np.sort(ids0), np.sort(ids1))
    b = e0[0]
    # (B, N, F) with N <= the file's slots (batches may drop all-padding trailing slots)
    assert b["tracks"].shape[2] == 2 and b["tracks"].shape[1] <= ds.specs["tracks"].shape[0] and b["tracks_valid"].dtype == torch.bool
    # labels agree with the cut-based definition of labels.yaml
    cuts = dm.LabelSpec.build(get_scheme("flavour").subset(["bjets", "cjets", "ujets"]), None)
    np.testing.assert_array_equal(cuts.labels(jets), np.where(labelled, jets["flavour_label"], -1))
    limited = _ds(small_file, batch_size=50, chunk_size=70, num_jets=100)
    assert sum(len(x["labels"]) for x in limited) == labelled[:100].sum()


def test_ddp_ranks_get_equal_disjoint_shares(small_file, monkeypatch):
    got = []
    for rank in (0, 1):
        monkeypatch.setattr(dm, "_dist_info", lambda r=rank: (r, 2))
        ds = _ds(small_file, batch_size=16, chunk_size=60, shuffle=True, seed=5)
        batches = list(ds)
        assert len(batches) == len(ds)
        got.append(batches)
    assert len(got[0]) == len(got[1])  # same number of steps on every rank (no DDP hang)
    assert [len(b["labels"]) for b in got[0]] == [len(b["labels"]) for b in got[1]]
    assert not set(_ids(got[0])) & set(_ids(got[1]))


def test_ddp_ranks_read_only_their_own_rows(small_file, monkeypatch):
    """Each rank reads one contiguous block of every chunk (not the whole chunk), and together
    they read every row once."""
    with h5py.File(small_file) as f:
        jets = f["jets"][:]
    reads: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    real = dm.read_rows
    for rank in (0, 1):
        monkeypatch.setattr(dm, "_dist_info", lambda r=rank: (r, 2))

        def spy(f, start, stop, *a, r=rank, **k):
            reads[r].append((start, stop))
            return real(f, start, stop, *a, **k)

        monkeypatch.setattr(dm, "read_rows", spy)
        ids = _ids(list(_ds(small_file, batch_size=16, chunk_size=60, shuffle=False)))
        rows = set().union(*(range(a, b) for a, b in reads[rank]))
        assert len(rows) == sum(b - a for a, b in reads[rank])  # no row read twice
        assert set(jets["pt"][sorted(rows)]) >= set(ids)
        reads[rank] = sorted(reads[rank])
    r0 = set().union(*(range(a, b) for a, b in reads[0]))
    r1 = set().union(*(range(a, b) for a, b in reads[1]))
    assert not r0 & r1 and r0 | r1 == set(range(len(jets)))  # disjoint, together the whole file
    n_chunks = -(-len(jets) // 60)
    assert len(reads[0]) == len(reads[1]) == n_chunks


def test_image_groups_and_errors(tmp_path):
    n = 20
    jets = np.zeros(n, dtype=[("pt", "f4"), ("isPromptPhoton", "i1")])
    jets["pt"] = np.arange(n)
    jets["isPromptPhoton"] = np.arange(n) % 2
    img = np.random.default_rng(0).random((n, 3, 7, 11)).astype(np.float32)
    p = tmp_path / "img.h5"
    with h5py.File(p, "w") as f:
        f["jets"], f["cells"] = jets, img
    specs = dm.inspect_inputs(p, {"jets": ["pt"], "cells": None})
    assert specs["cells"].kind == "image" and specs["cells"].dim == 3
    labels = dm.LabelSpec.build(get_scheme("photon"), None)
    (b,) = list(dm.H5JetDataset([p], specs, labels, batch_size=n))
    np.testing.assert_array_equal(b["cells"].numpy(), img)
    np.testing.assert_array_equal(b["labels"].numpy(), jets["isPromptPhoton"])
    with pytest.raises(SchemaError, match="plain array"):
        dm.inspect_inputs(p, {"cells": ["e"]})
    with pytest.raises(SchemaError, match="input group 'tracks' not in"):
        dm.inspect_inputs(p, {"tracks": ["d0"]})
    with h5py.File(p, "a") as f:
        f["cells"][3, 0, 0, 0] = np.inf
    with pytest.raises(SchemaError, match="image 'cells'"):
        list(dm.H5JetDataset([p], specs, labels, batch_size=n))


def test_bucket_by_length_sees_every_jet_once_in_trimmed_batches(small_file):
    with h5py.File(small_file) as f:
        jets = f["jets"][:]
    labelled = jets["flavour_label"] >= 0
    plain = list(_ds(small_file, batch_size=16, chunk_size=250, shuffle=True, seed=3))
    ds = _ds(small_file, batch_size=16, chunk_size=250, shuffle=True, seed=3, bucket_by_length=True)
    e0 = list(ds)
    assert len(e0) == len(ds)
    np.testing.assert_array_equal(np.sort(_ids(e0)), np.sort(jets["pt"][labelled]))  # every jet once
    n_valid = [b["tracks_valid"].sum(1).numpy() for b in e0]
    # each batch is trimmed to its longest jet and holds jets of neighbouring multiplicities
    for b, n in zip(e0, n_valid, strict=True):
        assert b["tracks"].shape[1] == max(int(n.max()), 1)
    spread_bucket = np.mean([n.max() - n.min() for n in n_valid])
    spread_plain = np.mean([b["tracks_valid"].sum(1).max() - b["tracks_valid"].sum(1).min() for b in plain])
    assert spread_bucket < 0.5 * float(spread_plain)
    slots_bucket = sum(b["tracks"].shape[1] * len(b["labels"]) for b in e0)
    slots_plain = sum(b["tracks"].shape[1] * len(b["labels"]) for b in plain)
    assert slots_bucket < slots_plain
    # the batch order is shuffled (not sorted by multiplicity) and changes with the epoch
    maxes = [int(n.max()) for n in n_valid]
    assert maxes != sorted(maxes)
    ds.set_epoch(1)
    assert not np.array_equal(_ids(e0), _ids(list(ds)))


def test_bucketed_batches_keep_the_class_fractions(tmp_path):
    """With bucketing each batch is a sample of every flavour (issue 11, Salt parity).

    The mock's b-jets carry more tracks than light jets (8.2 vs 5.2 on average), so a plain sort
    by multiplicity gives nearly single-flavour batches; the stratified order keeps each batch's
    class counts within binomial tolerance of the chunk's fractions while keeping most of the
    padding saving.
    """
    path = make_training_file(tmp_path / "f.h5", 3000, seed=7)
    bsz = 100

    def epoch(**kw):
        batches = list(_ds(path, batch_size=bsz, chunk_size=3000, shuffle=True, seed=1, **kw))
        lab = np.concatenate([b["labels"].numpy() for b in batches])
        frac = np.bincount(lab, minlength=3) / len(lab)
        assert frac.min() > 0.15  # every class present in bulk
        pulls = []  # per batch: the largest |count - B f| / binomial sigma over the classes
        for b in batches:
            n = len(b["labels"])
            counts = np.bincount(b["labels"].numpy(), minlength=3)
            pulls.append(np.max(np.abs(counts - n * frac) / np.sqrt(n * frac * (1 - frac))))
        slots = sum(b["tracks"].shape[1] * len(b["labels"]) for b in batches)
        return np.array(pulls), slots, np.sort(_ids(batches))

    pulls_plain, slots_plain, ids_plain = epoch()
    pulls_sorted, slots_sorted, _ = epoch(bucket_by_length=True, bucket_stratify=False)
    pulls_mixed, slots_mixed, ids_mixed = epoch(bucket_by_length=True)
    np.testing.assert_array_equal(ids_mixed, ids_plain)  # every labelled jet once
    # flavour-mixed: every batch within 3 binomial sigma (in fact within one jet of B·f)
    assert pulls_mixed.max() < 3.0
    # the plain sort by multiplicity is what the fix removes: many batches far from the mix
    assert np.mean(pulls_sorted > 3.0) > 0.3
    # padding stays low: far fewer slots than without bucketing, near the plain sort
    assert slots_mixed < 0.7 * slots_plain
    assert slots_mixed < 1.5 * slots_sorted


def test_stratified_length_order_quantile_interleaving():
    rng = np.random.default_rng(0)
    strata = rng.integers(0, 3, 600)
    n_obj = rng.poisson(4 + 3 * strata)  # classes differ in multiplicity
    order = dm.stratified_length_order(n_obj, strata)
    np.testing.assert_array_equal(np.sort(order), np.arange(600))  # a permutation
    share = np.bincount(strata, minlength=3) / 600
    for start in range(0, 600, 50):  # any window holds each class's share to within one jet
        counts = np.bincount(strata[order[start : start + 50]], minlength=3)
        assert np.all(np.abs(counts - 50 * share) <= 1.0 + 1e-9)
    for c in range(3):  # within each class the multiplicity never decreases along the order
        assert np.all(np.diff(n_obj[order][strata[order] == c]) >= 0)
    np.testing.assert_array_equal(n_obj[dm.stratified_length_order(n_obj)], np.sort(n_obj))


def test_gn_vertexing_loss_weights_heavy_flavour_pairs():
    """GN's vertexing loss with ``vertex_hf_weight`` (Salt's GN2: 2) against a direct count."""
    from lhcml.data.schema import TRUTH_ORIGIN
    from lhcml.models.base import TrackVertexHead
    from lhcml.models.ftag import HFWeightedVertexHead

    torch.manual_seed(0)
    b, n = 4, 6
    valid = torch.rand(b, n) > 0.2
    vtx = torch.randint(-1, 3, (b, n))
    origin = torch.randint(0, 8, (b, n))
    batch = {"tracks_valid": valid, "tracks_ftagTruthVertexIndex": vtx, "tracks_ftagTruthOriginLabel": origin}
    logits = torch.randn(b, n, n)
    out = {"track_vertex_logits": logits}
    plain = TrackVertexHead(8, hidden=[4])
    head1 = HFWeightedVertexHead(8, hidden=[4], hf_pair_weight=1.0)
    head2 = HFWeightedVertexHead(8, hidden=[4], hf_pair_weight=2.0)
    assert float(head1.loss(out, batch)) == pytest.approx(float(plain.loss(out, batch)))
    # direct count: pairs of valid distinct tracks, weight 2 when both are from b/c decays
    hf = {TRUTH_ORIGIN["fromB"], TRUTH_ORIGIN["fromBC"], TRUTH_ORIGIN["fromC"]}
    num = den = 0.0
    for k in range(b):
        for i in range(n):
            for j in range(n):
                if i == j or not (valid[k, i] and valid[k, j]):
                    continue
                t = float(vtx[k, i] == vtx[k, j] and vtx[k, i] >= 0)
                x = float(logits[k, i, j])
                bce = max(x, 0) - x * t + np.log1p(np.exp(-abs(x)))
                w = 2.0 if int(origin[k, i]) in hf and int(origin[k, j]) in hf else 1.0
                num, den = num + w * bce, den + w
    assert float(head2.loss(out, batch)) == pytest.approx(num / den, rel=1e-5)
    assert float(head2.loss(out, batch)) != pytest.approx(float(plain.loss(out, batch)), rel=1e-4)
    assert "ftagTruthOriginLabel" in HFWeightedVertexHead.label_fields["tracks"]


def test_gn_aux_loss_per_jet_normalisation():
    """``aux_loss_norm=jet``: a track pair weighs the same whatever its batch (length buckets)."""
    from lhcml.models.ftag import HFWeightedVertexHead

    torch.manual_seed(1)
    head = HFWeightedVertexHead(8, hidden=[4], aux_loss_norm="jet")

    def batch(n_valid):  # 10 jets with n_valid tracks each out of 8 slots
        valid = torch.zeros(10, 8, dtype=torch.bool)
        valid[:, :n_valid] = True
        vtx = torch.randint(0, 2, (10, 8))
        b = {"tracks_valid": valid, "tracks_ftagTruthVertexIndex": vtx,
             "tracks_ftagTruthOriginLabel": torch.full((10, 8), 2)}  # fmt: skip
        return b, {"track_vertex_logits": torch.zeros(10, 8, 8)}  # every pair's BCE = ln 2

    head.train()
    b_long, out_long = batch(8)
    first = float(head.loss(out_long, b_long))
    assert first == pytest.approx(np.log(2))  # the first batch sets the running pairs per jet (56)
    assert float(head.w_per_jet) == pytest.approx(56.0)
    head.eval()
    b_short, out_short = batch(2)  # 2 pairs per jet: the batch mean would again be ln 2
    assert float(head.loss(out_short, b_short)) == pytest.approx(np.log(2) * 2 / 56)
    head.aux_loss_norm = "batch"
    assert float(head.loss(out_short, b_short)) == pytest.approx(np.log(2))
    with pytest.raises(ConfigError, match="aux_loss_norm"):
        HFWeightedVertexHead(8, hidden=[4], aux_loss_norm="pair")
