"""``configs/fastcalo/fm_strips_ratio_ema_ft720.yaml`` (issue 15, h25b): the 720-epoch generator fine-tuned further.

* the recipe is ``fm_strips_ratio_ema_scratch720.yaml``'s model and data with only the continuation changed:
  ``init_from`` the 720-epoch run's best checkpoint, a second, lower cosine, its own length, seed and output folder
  (so the 720 model's sampler and correction machinery apply unchanged and one run never overwrites the other);
* it trains (tiny overrides) and starts from the stored averaged weights, not from a fresh initialisation.
"""

from __future__ import annotations

import torch
from _fastcalo_helpers import tiny_fm_overrides
from test_fastcalo_ema import _sample

from lhcml.train.checkpoint import read_checkpoint, state_under
from lhcml.train.fastcalo import EMA_PREFIX

FT = "configs/fastcalo/fm_strips_ratio_ema_ft720.yaml"
R720 = "configs/fastcalo/fm_strips_ratio_ema_scratch720.yaml"


def test_ft720_recipe_is_the_720_model_continued():
    from lhcml.train.protocol import load_trainable_config

    _, a = load_trainable_config(R720, [])
    _, b = load_trainable_config(FT, [])
    da, db = a.model_dump(), b.model_dump()
    assert db.pop("init_from") == "benchmarks/_work/h24a/run720/checkpoints/best-epoch=719.ckpt"
    assert da.pop("init_from") is None
    assert db["trainer"].pop("max_epochs") == 560 and da["trainer"].pop("max_epochs") == 720
    assert db["optimizer"].pop("lr") == 2.0e-4 and da["optimizer"].pop("lr") == 1.0e-3
    assert db["scheduler"].pop("eta_min") == 1.0e-6 and da["scheduler"].pop("eta_min") == 1.0e-5
    assert db.pop("seed") != da.pop("seed")
    assert db.pop("output_dir") != da.pop("output_dir")
    assert da == db  # model, data, EMA, schedule kind, patience: the same
    assert b.ema_decay == 0.9995 and b.scheduler.name == "cosine" and b.trainer.patience is None


def test_ft720_trains_from_the_stored_averaged_weights(tmp_path):
    from lhcml.train.protocol import load_trainable_config

    d = _sample(tmp_path)

    def fit(config, out, *extra):
        trainer, cfg = load_trainable_config(config, tiny_fm_overrides(d, out, 2, *extra))
        return read_checkpoint(trainer.fit(cfg))["state_dict"]

    src = fit(R720, "r720")
    tuned = fit(FT, "ft", f"init_from={tmp_path / 'r720' / 'checkpoints' / 'last.ckpt'}")
    fresh = fit(FT, "fresh", "init_from=null")
    s, t, f = (state_under(x, EMA_PREFIX) for x in (src, tuned, fresh))
    assert s.keys() == t.keys() == f.keys()
    weights = [k for k, v in s.items() if v.dtype.is_floating_point and k.startswith("velocity.")]
    assert weights
    # three optimiser steps at ema_decay 0.9995 move the average by < 0.2 % of the way to the trained weights
    near = max(float((t[k] - s[k]).abs().max()) for k in weights)
    far = max(float((f[k] - s[k]).abs().max()) for k in weights)
    assert near < 0.01 * far, (near, far)
    assert not all(torch.equal(t[k], s[k]) for k in weights)  # it did train
