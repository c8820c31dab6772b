"""`lhcml fastcalo sampler`: a flow-matching checkpoint copied with another ODE sampler (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from _fastcalo_helpers import real_binning_fm_checkpoint

from lhcml.errors import ConfigError
from lhcml.train.fastcalo import EMA_PREFIX, load_generator, resample_checkpoint


def _sample(model, seed: int = 0, n: int = 40) -> np.ndarray:
    noise = model.draw_noise(n, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return np.asarray(model.sample(torch.full((n,), 20.0), noise, torch.full((n,), 0.3)))


def test_the_copy_samples_with_the_new_steps_and_the_same_weights(tmp_path):
    """Known answer: the copy's showers are the original network's showers integrated with 2 Euler steps, bit for
    bit, and not the 4 midpoint steps it was trained to sample with; the weights and metadata are unchanged."""
    m, b, ckpt = real_binning_fm_checkpoint(tmp_path)
    out = resample_checkpoint(ckpt, tmp_path / "euler2.ckpt", steps=2, solver="euler")
    back, meta = load_generator(out)
    assert (back.steps, back.solver) == (2, "euler") and meta["binning_sha256"] == b.sha256
    init = yaml.safe_load(meta["model_init_yaml"])
    assert (init["steps"], init["solver"], init["hidden"]) == (2, "euler", 16)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)
    original = _sample(m.eval())
    m.steps, m.solver = 2, "euler"
    np.testing.assert_array_equal(_sample(back), _sample(m))
    assert np.abs(_sample(back) - original).max() > 1e-4


def test_the_copy_keeps_the_averaged_weights(tmp_path):
    """A run with ema_decay stores averaged weights beside the trained ones; the copy samples with the averaged
    ones (what load_generator gives by default)."""
    m, _, ckpt = real_binning_fm_checkpoint(tmp_path)
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    avg = {k: v + 0.01 if v.is_floating_point() else v for k, v in m.state_dict().items()}
    ck["state_dict"].update({f"{EMA_PREFIX}{k}": v for k, v in avg.items()})
    torch.save(ck, ckpt)
    back, _ = load_generator(resample_checkpoint(ckpt, tmp_path / "mid8.ckpt", steps=8))
    assert (back.steps, back.solver) == (8, "midpoint")
    for k, v in avg.items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)


def test_command_and_bad_requests(tmp_path, capsys, monkeypatch):
    """The command writes a loadable copy; bad steps, an unknown solver, the checkpoint itself as output, or a
    generator without an ODE sampler: one message, exit 2, nothing written."""
    from lhcml import cli
    from lhcml.train import fastcalo as F

    _, _, ckpt = real_binning_fm_checkpoint(tmp_path)
    out = tmp_path / "m4.ckpt"
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "sampler", str(ckpt), "-o", str(out), "--steps", "3"])
    assert exc.value.code in (0, None) and "3 midpoint step(s)" in capsys.readouterr().out
    assert load_generator(out)[0].steps == 3
    before = ckpt.read_bytes()
    for args, message in [(["--steps", "0"], "steps >= 1"), (["--steps", "2", "--solver", "rk4"], "unknown solver")]:
        bad = tmp_path / "bad.ckpt"
        with pytest.raises(SystemExit) as exc:
            cli.main(["fastcalo", "sampler", str(ckpt), "-o", str(bad), *args])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err and not bad.exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "sampler", str(ckpt), "-o", str(ckpt), "--steps", "2"])
    assert exc.value.code == 2 and "checkpoint itself" in capsys.readouterr().err and ckpt.read_bytes() == before
    monkeypatch.setattr(F, "load_generator", lambda path: (torch.nn.Linear(2, 2), {}))
    with pytest.raises(ConfigError, match="not a flow-matching generator"):
        resample_checkpoint(ckpt, tmp_path / "lin.ckpt", steps=2)
    assert not (tmp_path / "lin.ckpt").exists()
