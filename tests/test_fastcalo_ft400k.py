"""``configs/fastcalo/fm_strips_ratio_ema_ft400k*.yaml`` (issue 15, thirty-third version): the 720-epoch generator
trained further on the refiner's 400 000 detailed showers, in two stages.

Each stage is ``fm_strips_ratio_ema_scratch720.yaml``'s model, validation file, EMA and schedule kind with only the
continuation changed (training file, ``init_from`` the previous stage's best checkpoint, a lower cosine, its own
length, seed and output folder), so the sampler, the correction chain and the refiner apply unchanged and no stage
overwrites another's run. (Starting from the stored averaged weights is ``test_fastcalo_ft720.py``'s.)
"""

from __future__ import annotations

R720 = "configs/fastcalo/fm_strips_ratio_ema_scratch720.yaml"
FT1 = "configs/fastcalo/fm_strips_ratio_ema_ft400k.yaml"
FT2 = "configs/fastcalo/fm_strips_ratio_ema_ft400k2.yaml"


def _dump(path):
    from lhcml.train.protocol import load_trainable_config

    return load_trainable_config(path, [])[1].model_dump()


def test_ft400k_stages_continue_the_720_model_on_the_400k_showers():
    base, one, two = _dump(R720), _dump(FT1), _dump(FT2)
    # stage one starts from the 720-epoch run (run with --set output_dir=benchmarks/_work/fc/run720), stage two from
    # stage one's own output folder: the chain of runs is the one measured
    assert base.pop("init_from") is None
    assert one.pop("init_from") == "benchmarks/_work/fc/run720/checkpoints/best-epoch=719.ckpt"
    assert two.pop("init_from") == one["output_dir"] + "/checkpoints/best-epoch=39.ckpt"
    assert base["data"].pop("train_files") == ["benchmarks/_work/fastcalo/photons_eta/photon_discrete.h5"]
    assert one["data"].pop("train_files") == two["data"].pop("train_files") == [
        "benchmarks/_work/fc/train400k/photon_discrete.h5"
    ]
    assert base["trainer"].pop("max_epochs") == 720
    assert one["trainer"].pop("max_epochs") == two["trainer"].pop("max_epochs") == 40
    assert (base["optimizer"].pop("lr"), one["optimizer"].pop("lr"), two["optimizer"].pop("lr")) == (1e-3, 3e-4, 2e-4)
    assert len({base.pop("seed"), one.pop("seed"), two.pop("seed")}) == 3
    assert len({base.pop("output_dir"), one.pop("output_dir"), two.pop("output_dir")}) == 3
    # the same model, validation file, binning, batch, EMA, schedule (kind, floor, warm-up), trainer otherwise
    assert base == one == two
    assert one["ema_decay"] == 0.9995 and one["scheduler"]["name"] == "cosine" and one["trainer"]["patience"] is None
