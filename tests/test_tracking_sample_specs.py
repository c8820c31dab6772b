"""``DIR`` / ``DIR:EVENTS`` sample specs of the tracking benchmarks (lhcml.tasks.tracking.finders.parse_sample_specs)."""

from pathlib import Path

import pytest

from lhcml.errors import ConfigError, InputNotFoundError
from lhcml.tasks.tracking.finders import parse_sample_specs


def _sample(d: Path, ids: list[int]) -> Path:
    d.mkdir()
    for i in ids:
        (d / f"event{i:09d}-hits.csv").write_text("hit_id,x,y,z,volume_id,layer_id,module_id\n")
    return d


def test_specs_select_the_named_events_and_default_to_all(tmp_path):
    a = _sample(tmp_path / "a", [0, 1, 2, 3, 5, 7])
    b = _sample(tmp_path / "b", [4, 9])
    got = parse_sample_specs([f"{a}:0-2,7", str(b)])
    assert got == [(a, [0, 1, 2, 7]), (b, [4, 9])]


def test_bad_specs_give_one_clear_error(tmp_path):
    a = _sample(tmp_path / "a", [0, 1])
    with pytest.raises(ConfigError, match=r"events \[5\] are not in the sample"):
        parse_sample_specs([f"{a}:0,5"])
    with pytest.raises(ConfigError, match="not a list of event numbers"):
        parse_sample_specs([f"{a}:x-y"])
    with pytest.raises(InputNotFoundError, match="does not exist"):
        parse_sample_specs([str(tmp_path / "missing") + ":0"])
