"""Plots (add -> draw -> save, lhcml label) and the HTML report."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from metrics_mock import write_predictions

from lhcml.config import validate_config
from lhcml.evaluation import EvaluateConfig, evaluate
from lhcml.metrics import rejection_vs_var, roc_curve
from lhcml.plots.histograms import HistogramPlot
from lhcml.plots.rejection_vs_var import FrontierPlot, RejectionVsVarPlot
from lhcml.plots.report import HtmlReport, build_report, format_value_error
from lhcml.plots.roc import RocPlot
from lhcml.plots.style import EXPERIMENT_NAME, EXPERIMENT_STATUS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(9)
    return rng.normal(1.5, 1, 4000), rng.normal(0, 1, 8000), rng.normal(0.7, 1, 3000)


def test_roc_plot_panels_and_label(scores, tmp_path):
    s, u, c = scores
    plot = RocPlot("$b$-jet", reference="REF", background_labels={"u": "Light", "c": "c"},
                   label_lines=["test sample"])
    for name, shift in (("NEW", 0.0), ("REF", 0.5)):
        plot.add(roc_curve(s + 0 * shift, u + shift), name, "u")
        plot.add(roc_curve(s, c + shift), name, "c")
    fig = plot.draw()
    assert len(fig.axes) == 3  # main + one ratio panel per background class
    texts = _texts(fig)
    assert {EXPERIMENT_NAME, EXPERIMENT_STATUS, "test sample"} <= set(texts)  # mplhep exp_label: two texts
    assert not any("ATLAS" in t for t in texts)
    # ratio of the reference to itself is exactly one
    ref_line = [ln for ln in fig.axes[1].lines if ln.get_color() == fig.axes[0].lines[2].get_color()]
    assert ref_line and np.allclose(ref_line[0].get_ydata(), 1.0)
    path = plot.save(tmp_path / "roc.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert plot.save(tmp_path / "roc.svg").read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "roc.svg"]  # no temp files


def test_histogram_rejection_frontier_plots(scores, tmp_path):
    s, u, _ = scores
    h = HistogramPlot(bins=40, xlabel="D", logy=True)
    h.add(s, "sig").add(u, "bkg", weights=np.full(u.size, 2.0)).add_line(1.0, "77%")
    fig = h.draw()
    # unit-area normalisation of each histogram (under/overflow folded into the edge bins)
    for cont in h.contents:
        assert np.sum(cont * np.diff(h.edges)) == pytest.approx(1.0)
    assert "77%" in " ".join(_texts(fig))
    assert h.save(tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC
    rng = np.random.default_rng(0)
    br = rejection_vs_var(s, u, rng.uniform(20, 250, s.size), rng.uniform(20, 250, u.size),
                          [20, 50, 100, 250], 0.7)
    rp = RejectionVsVarPlot(background_label="Light", logy=True).add(br, "tagger")
    assert len(rp.draw().axes) == 2
    assert rp.save(tmp_path / "r.png").is_file()
    fp = FrontierPlot().add(10.0, 50.0, "A").add(20.0, 5.0, "B").add(np.nan, 1.0, "skipped")
    fp.draw()
    assert [t for t in _texts(fp.fig) if t in ("A", "B", "skipped")] == ["A", "B"]


def test_html_report_builder(tmp_path):
    fig_path = tmp_path / "figs" / "a.png"
    fig_path.parent.mkdir()
    fig_path.write_bytes(PNG_MAGIC + b"fake")
    rep = HtmlReport("My <report>")
    rep.add_heading("Section").add_text("x < y & z").add_table([["t", 1.23456, None]],
                                                                ["name", "val", "missing"])
    rep.add_figure(fig_path, "caption A").add_code("key: value")
    out = rep.write(tmp_path / "r.html")
    text = out.read_text()
    assert "My &lt;report&gt;" in text and "x &lt; y &amp; z" in text
    assert "<td>1.23</td>" in text and "<td>–</td>" in text
    assert base64.b64encode(PNG_MAGIC + b"fake").decode() in text
    dict_rows = HtmlReport("d").add_table([{"a": 1, "b": "x"}, {"b": "y", "c": 2.5}]).render()
    assert "<th>a</th><th>b</th><th>c</th>" in dict_rows
    assert "<td>–</td><td>y</td><td>2.5</td>" in dict_rows
    linked = HtmlReport("linked", embed_images=False).add_figure(fig_path)
    assert 'src="figs/a.png"' in linked.render(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        HtmlReport("x").add_figure(tmp_path / "missing.png").write(tmp_path / "bad.html")
    assert not (tmp_path / "bad.html").exists()


def test_format_value_error():
    assert format_value_error(123.456, 4.2) == "123 ± 4"  # PDG rounding (tests/test_formatting.py)
    assert format_value_error(1234.5, 123.0) == "1230 ± 120"
    assert format_value_error(0.7012, 0.0031) == "0.7012 ± 0.0031"
    assert format_value_error(None, None) == "–"
    assert format_value_error(float("inf"), None) == "∞"


def test_report_from_evaluation(tmp_path):
    f = write_predictions(tmp_path / "p.h5", "ftag", 3000, seed=2)
    cfg = validate_config(EvaluateConfig, {
        "title": "Mock ttbar evaluation", "taggers": ["GOOD", "REF"], "reference": "REF",
        "samples": [{"name": "ttbar", "kind": "ttbar", "files": [str(f)]}],
        "rejection_vs_pt_modes": ["fixed_cut"],
        "published": [{"label": "DL1r (ATLAS sim.)", "working_point": 0.77,
                       "rejection": {"ujets": 170, "cjets": 5}, "source": "EPJC 83 (2023) 681"}],
    })
    out = tmp_path / "eval"
    res = evaluate(cfg, out)
    report = build_report(out, embed_images=False)
    text = report.read_text()
    assert "Mock ttbar evaluation" in text and "lhcml 0." in text
    # one row per tagger and WP in the rejection table, with errors
    for tagger in ("GOOD", "REF"):
        assert text.count(f"<td>{tagger}</td>") >= 5
    wp = res["samples"]["ttbar"]["taggers"]["GOOD"]["working_points"][1]["backgrounds"]["ujets"]
    assert format_value_error(wp["rejection"], wp["rejection_err"]) in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == len(res["samples"]["ttbar"]["plots"]) >= 5
    assert all((out / s).is_file() for s in srcs)
    assert "taggers:" in text  # the config is shown
    assert "<td>DL1r (ATLAS sim.)</td><td>77%</td><td>170</td><td>5</td>" in text
    embedded = build_report(out, tmp_path / "embedded.html").read_text()
    assert embedded.count("data:image/png;base64,") == len(srcs)
    from lhcml.errors import SchemaError

    with pytest.raises(SchemaError, match="lhcml evaluate"):
        build_report(tmp_path / "nowhere")
