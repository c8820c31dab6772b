"""The plot style comes from mplhep (issue 11, "well-kept libraries"): the experiment styles'
rcParams with lhcml's overrides, the lhcml label drawn by mplhep's ``exp_label``, never an
experiment's name, and a clear error for an unknown style.
"""

from __future__ import annotations

import matplotlib as mpl
import mplhep
import numpy as np
import pytest

from lhcml.errors import ConfigError
from lhcml.plots import style as st
from lhcml.plots.histograms import HistogramPlot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _reset_style(monkeypatch):
    monkeypatch.delenv("LHCML_PLOT_STYLE", raising=False)
    st.set_plot_style(None)
    yield
    st.set_plot_style(None)


def test_rc_params_are_the_mplhep_style_plus_lhcml_overrides():
    for name in st.PLOT_STYLES:
        params = st.rc_params(name)
        base = getattr(mplhep.style, name)
        base = {k: v for part in (base if isinstance(base, (list, tuple)) else [base]) for k, v in part.items()}
        # everything lhcml does not override is mplhep's value
        kept = [k for k in base if k not in st.RC_OVERRIDES and k != "axes.prop_cycle"]
        assert kept and all(params[k] == base[k] for k in kept), name
        assert all(params[k] == v for k, v in st.RC_OVERRIDES.items())
        assert params["axes.prop_cycle"].by_key()["color"] == list(st.COLOURS)
    # the styles differ where the experiments differ (ATLAS puts axis labels at the ends)
    assert st.rc_params("ATLAS")["xaxis.labellocation"] == "right"
    assert st.rc_params("ROOT") != st.rc_params("ATLAS")
    with st.style("CMS"):
        assert mpl.rcParams["font.size"] == st.RC_OVERRIDES["font.size"]
        assert mpl.rcParams["ytick.major.size"] == st.RC_OVERRIDES["ytick.major.size"]


def test_style_choice_by_function_and_environment(monkeypatch):
    assert st.plot_style_name() == "ATLAS"
    monkeypatch.setenv("LHCML_PLOT_STYLE", "cms")
    assert st.plot_style_name() == "CMS"
    st.set_plot_style("root")
    assert st.plot_style_name() == "ROOT"  # the function wins over the environment
    with pytest.raises(ConfigError, match="unknown plot style 'lhcb'.*ATLAS, CMS, ROOT"):
        st.set_plot_style("lhcb")
    st.set_plot_style(None)
    monkeypatch.setenv("LHCML_PLOT_STYLE", "nope")
    with pytest.raises(ConfigError, match="LHCML_PLOT_STYLE"):
        st.plot_style_name()


@pytest.mark.parametrize("name", st.PLOT_STYLES)
def test_label_and_lines_render_in_every_style(name, tmp_path):
    st.set_plot_style(name)
    h = HistogramPlot(bins=20, xlabel="D", label_lines=["first line", "second line"])
    h.add(np.random.default_rng(1).normal(size=500), "sig")
    fig = h.draw()
    ax = fig.axes[0]
    texts = {t.get_text(): t for t in ax.texts}
    assert {st.EXPERIMENT_NAME, st.EXPERIMENT_STATUS, "first line", "second line"} <= set(texts)
    assert texts[st.EXPERIMENT_NAME].get_fontweight() == "bold"
    assert texts[st.EXPERIMENT_STATUS].get_fontstyle() == "italic"
    assert not any("ATLAS" in t or "CMS" in t for t in texts)  # never an experiment's name
    path = h.save(tmp_path / f"h_{name}.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    # after drawing, the extra lines sit below the label and inside the axes, in order
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    box = {k: texts[k].get_window_extent(r) for k in (st.EXPERIMENT_NAME, "first line", "second line")}
    assert box[st.EXPERIMENT_NAME].y0 >= box["first line"].y1 - 1
    assert box["first line"].y0 >= box["second line"].y1 - 1
    assert ax.get_window_extent(r).contains(box["second line"].x0, box["second line"].y0)


def test_evaluate_config_offers_the_same_styles_and_the_block_restores_the_choice():
    from typing import get_args

    from lhcml.evaluation.config import EvaluateConfig

    field = EvaluateConfig.model_fields["plot_style"]
    assert get_args(field.annotation) == st.PLOT_STYLES and field.default == st.PLOT_STYLES[0]
    st.set_plot_style("CMS")
    with st.use_plot_style("ROOT"):
        assert st.plot_style_name() == "ROOT"
        with st.style():
            assert mpl.rcParams["xaxis.labellocation"] == st.rc_params("ROOT")["xaxis.labellocation"]
    assert st.plot_style_name() == "CMS"
    with st.use_plot_style(None):
        assert st.plot_style_name() == "CMS"
    with pytest.raises(ConfigError), st.use_plot_style("atlas2000"):
        pass
    assert st.plot_style_name() == "CMS"
