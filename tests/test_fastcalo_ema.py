"""Exponential moving average of a fast-calo model's weights (``ema_decay``; issue 15,
docs/benchmarks/fastcalo.md "Nineteenth version").

* the update is ``w_ema <- d w_ema + (1 - d) w`` (known answer), buffers copied;
* a run with it stores both weight sets; ``load_generator`` returns the averaged ones (``ema=False``
  the trained ones), they differ after training, and the averaged model samples and exports to ONNX;
* resume is exact with it (1 + 1 epochs equal 2 epochs, averaged weights included);
* off (the default) writes no averaged weights and both loads give the trained model;
* a bad value: one message, exit 2, no checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
from _fastcalo_helpers import assert_train_exits_2, tiny_fm_overrides

from lhcml.train.checkpoint import read_checkpoint

CONFIG = "configs/fastcalo/fm_strips_ratio.yaml"


def _sample(tmp_path):
    from lhcml.data.calochallenge import Binning, LayerBinning, write_binning, write_showers

    layers = (LayerBinning(id=1, kind="cells", name="l0", n_eta=9, n_phi=3, deta=0.003125, dphi=0.098),
              LayerBinning(id=2, kind="cells", name="l1", n_eta=2, n_phi=2, deta=0.025, dphi=0.0245))  # fmt: skip
    b = write_binning(Binning("photon", 22, layers), tmp_path / "b.xml")
    rng = np.random.default_rng(3)
    e = np.exp(rng.uniform(np.log(5.0), np.log(100.0), 96))
    x = rng.dirichlet(np.full(31, 2.0), size=96) * e[:, None]
    write_showers(tmp_path / "t.h5", e, x, b, eta=rng.uniform(0, 1.37, 96), phi=rng.uniform(-np.pi, np.pi, 96))
    return tmp_path


def _fit(d, out, *extra):
    from lhcml.train.protocol import load_trainable_config

    trainer, cfg = load_trainable_config(CONFIG, tiny_fm_overrides(d, out, 2, *extra))
    return trainer.fit(cfg)


def test_update_is_the_moving_average_known_answer(tmp_path):
    from lhcml.train.fastcalo import _module_class
    from lhcml.train.protocol import load_trainable_config

    _, cfg = load_trainable_config(CONFIG, tiny_fm_overrides(tmp_path, "x", 2, "ema_decay=0.75"))
    model = torch.nn.Linear(3, 2)
    model.register_buffer("stat", torch.zeros(2))
    model.phases = lambda: [type("P", (), {"name": "model"})()]
    model.conditions_on_eta = model.conditions_on_phi = False
    module = _module_class()(model, cfg, {})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        for p in module.ema_model.parameters():
            p.fill_(-1.0)
        model.stat.fill_(5.0)
    module.update_ema()
    for p in module.ema_model.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.75 * -1.0 + 0.25 * 1.0))  # -0.5
    torch.testing.assert_close(module.ema_model.stat, torch.full((2,), 5.0))
    module.update_ema()
    for p in module.ema_model.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.75 * -0.5 + 0.25))  # -0.125
    assert not any(p.requires_grad for p in module.ema_model.parameters())


def test_ema_run_stores_both_loads_averaged_samples_and_exports(tmp_path):
    from lhcml.export.fastcalo import export_generator
    from lhcml.train.fastcalo import load_generator

    d = _sample(tmp_path)
    ckpt = _fit(d, "ema", "ema_decay=0.9", "trainer.max_epochs=2")
    sd = read_checkpoint(ckpt)["state_dict"]
    raw_keys = sorted(k[len("model."):] for k in sd if k.startswith("model."))
    assert raw_keys == sorted(k[len("ema_model."):] for k in sd if k.startswith("ema_model."))
    averaged, meta = load_generator(ckpt)
    trained, _ = load_generator(ckpt, ema=False)
    torch.testing.assert_close(averaged.velocity[0].weight, sd["ema_model.velocity.0.weight"])
    torch.testing.assert_close(trained.velocity[0].weight, sd["model.velocity.0.weight"])
    assert not torch.allclose(averaged.velocity[0].weight, trained.velocity[0].weight)
    torch.testing.assert_close(averaged.vars.v_std, trained.vars.v_std)  # buffers equal
    e, eta = torch.full((8,), 50.0), torch.full((8,), 0.5)
    s = averaged.generate(e, generator=torch.Generator().manual_seed(1), eta=eta, phi=torch.zeros(8))
    assert torch.isfinite(s).all() and torch.all(s >= 0)
    export_generator(averaged, tmp_path / "ema.onnx", binning_file_sha256=meta["binning_sha256"], particle="photon",
                     binning_xml=meta["binning_xml"], timing=False, n_check=32, atol=1e-4)  # fmt: skip
    assert (tmp_path / "ema.onnx").is_file()


def test_resume_with_ema_is_exact(tmp_path):
    from lhcml.train.protocol import load_trainable_config

    d = _sample(tmp_path)
    same = ("ema_decay=0.9", "trainer.patience=null", "scheduler.name=none")  # a constant rate: 1 + 1 = 2 epochs
    _fit(d, "straight", *same, "trainer.max_epochs=2")
    _fit(d, "resumed", *same, "trainer.max_epochs=1")
    trainer, cfg = load_trainable_config(CONFIG, tiny_fm_overrides(d, "resumed", 2, *same, "trainer.max_epochs=2"))
    trainer.fit(cfg, resume=True)
    a = read_checkpoint(d / "straight" / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(d / "resumed" / "checkpoints" / "last.ckpt")["state_dict"]
    for k in ("model.velocity.0.weight", "ema_model.velocity.0.weight"):
        torch.testing.assert_close(a[k], b[k])


def test_off_is_the_old_behaviour_and_bad_value_exits_2(tmp_path, capsys):
    from lhcml.train.fastcalo import load_generator

    d = _sample(tmp_path)
    ckpt = _fit(d, "plain")
    assert not any(k.startswith("ema_model.") for k in read_checkpoint(ckpt)["state_dict"])
    a, _ = load_generator(ckpt)
    b, _ = load_generator(ckpt, ema=False)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    for bad in ("1.0", "-0.1", "often"):
        assert_train_exits_2(CONFIG, tiny_fm_overrides(d, "bad", 2, f"ema_decay={bad}"), "ema_decay", d / "bad", capsys)


def test_shipped_config_is_the_ratio_model_with_ema(tmp_path):
    from lhcml.train.fastcalo import load_generator
    from lhcml.train.protocol import load_trainable_config

    _, base = load_trainable_config(CONFIG, [])
    _, ema = load_trainable_config("configs/fastcalo/fm_strips_ratio_ema.yaml", [])
    assert base.ema_decay is None and ema.ema_decay == 0.9995
    assert ema.model.model_dump() == base.model.model_dump()  # the same model: init_from fits
    d = _sample(tmp_path)
    trainer, cfg = load_trainable_config("configs/fastcalo/fm_strips_ratio_ema.yaml",
                                         tiny_fm_overrides(d, "shipped", 2, "init_from=null"))  # fmt: skip
    ckpt = trainer.fit(cfg)
    assert any(k.startswith("ema_model.") for k in read_checkpoint(ckpt)["state_dict"])
    assert load_generator(ckpt)[0].vars.strip_ratios


def test_scratch_recipe_is_the_ratio_model_with_ema_and_no_init_from():
    """``fm_strips_ratio_ema_scratch.yaml`` (the generator the twenty-second version's quantile-corrected numbers were
    measured on) is the ratio model with the moving average, trained from scratch on the base schedule: the same model
    arguments as ``fm_strips_ratio.yaml`` (so a correction fitted for one fits the other's sampler), no ``init_from``
    (it must not depend on a checkpoint that no clone has), and the 480-epoch length its header's numbers belong to."""
    from lhcml.train.protocol import load_trainable_config

    _, base = load_trainable_config(CONFIG, [])
    _, scratch = load_trainable_config("configs/fastcalo/fm_strips_ratio_ema_scratch.yaml", [])
    assert scratch.model.model_dump() == base.model.model_dump()
    assert scratch.ema_decay == 0.9995 and base.ema_decay is None
    assert scratch.init_from is None
    assert scratch.optimizer.model_dump() == base.optimizer.model_dump()
    assert scratch.trainer.max_epochs == 480 and scratch.trainer.patience is None


def test_scratch720_recipe_is_the_480_recipe_trained_longer():
    """``fm_strips_ratio_ema_scratch720.yaml`` (the twenty-third version's longer-trained generator) is the 480-epoch
    recipe with only the length changed: the same model (so the same sampler and quantile correction apply), the same
    data, optimiser, cosine schedule, seed and moving average, no ``init_from``; 720 epochs and its own output folder
    (a run of one never overwrites the other's checkpoints)."""
    from lhcml.train.protocol import load_trainable_config

    _, r480 = load_trainable_config("configs/fastcalo/fm_strips_ratio_ema_scratch.yaml", [])
    _, r720 = load_trainable_config("configs/fastcalo/fm_strips_ratio_ema_scratch720.yaml", [])
    a, b = r480.model_dump(), r720.model_dump()
    assert b["trainer"].pop("max_epochs") == 720 and a["trainer"].pop("max_epochs") == 480
    assert b.pop("output_dir") != a.pop("output_dir")
    assert a == b
    assert r720.ema_decay == 0.9995 and r720.init_from is None and r720.scheduler.name == "cosine"
    assert r720.trainer.patience is None
