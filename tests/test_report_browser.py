"""HTML reports as a reader sees them: headless Chromium (Debian package ``chromium``) loads each
report and the index linking them; every image must load and no error may reach the console.
Also: LaTeX-like labels render as HTML, unreachable working points show "n/a".

Without Chromium these tests skip with that instruction, except under CI (``CI`` set, where
`.ci/run` installs it), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from metrics_mock import write_predictions  # noqa: E402

from lhcml.plots.report import (  # noqa: E402
    HtmlReport,
    build_index,
    build_report,
    label_html,
    working_point_table,
)

#: injected before the page's own content: records script errors, console errors and failed
#: resource loads (capture phase), then, after load, every image's natural size, into the DOM
_PROBE = """<script>
window.__errs = [];
window.addEventListener('error', function (e) {
  var t = e.target || {};
  window.__errs.push(t.tagName ? ('load failed: ' + t.tagName + ' ' + (t.src || t.href)) : ('error: ' + e.message));
}, true);
var _ce = console.error;
console.error = function () { window.__errs.push('console.error: ' + Array.from(arguments).join(' ')); _ce.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = Array.from(document.images).map(function (i) { return [i.getAttribute('alt') || i.src.slice(0, 40), i.complete, i.naturalWidth]; });
  var out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify({images: imgs, errors: window.__errs});
  document.body.appendChild(out);
});
</script>"""


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def chromium():
    exe = _browser()
    if exe is None:
        msg = "headless Chromium not found: apt-get install chromium (.ci/run does this)"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {msg}")
        pytest.skip(msg)
    return exe


def _render(chromium: str, page: Path, tmp: Path) -> dict:
    """Load a copy of ``page`` (probe injected, next to the original so relative links resolve)."""
    text = page.read_text(encoding="utf-8")
    assert "<head>" in text
    probe = page.with_name(f".probe_{page.name}")
    probe.write_text(text.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    try:
        res = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        probe.unlink()
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"page did not finish loading: {res.stderr[-1500:]}"
    import html

    out = json.loads(html.unescape(m.group(1)))
    # console messages of level error that Chromium logs itself (e.g. blocked resources)
    out["errors"] += [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln and "ERROR" in ln]
    out["dom"] = res.stdout
    return out


def _check(result: dict, min_images: int) -> None:
    assert not result["errors"], result["errors"]
    images = result["images"]
    assert len(images) >= min_images
    broken = [i for i in images if not i[1] or i[2] <= 0]
    assert not broken, f"images that did not load: {broken}"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """An evaluation report (embedded images), a tuning report, a simulation-validation page (on a
    mock sample) and a page with linked images."""
    from lhcml.config import validate_config
    from lhcml.evaluation import EvaluateConfig, evaluate

    root = tmp_path_factory.mktemp("reports")
    f = write_predictions(root / "p.h5", "ftag", 3000, seed=2)
    cfg = validate_config(EvaluateConfig, {
        "title": "Mock $t\\bar{t}$ evaluation", "taggers": ["GOOD", "REF"], "reference": "REF",
        "samples": [{"name": "ttbar", "kind": "ttbar", "files": [str(f)]}],
        "rejection_vs_pt_modes": ["fixed_cut"],
    })  # fmt: skip
    evaluate(cfg, root / "evaluation")
    build_report(root / "evaluation")

    import optuna

    from lhcml.tune.report import write_report
    from lhcml.tune.space import SearchSpace

    space = SearchSpace.model_validate({
        "study_name": "browser", "n_trials": 4, "seed": 1, "sampler": "random", "pruner": "none",
        "parameters": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    })  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: (np.log10(t.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)) + 2.5) ** 2,
                   n_trials=4)  # fmt: skip
    write_report(study, space, {"optimizer": {"lr": 0.01}}, root / "tune")

    from lhcml.data.mock import make_mock_file
    from lhcml.validation import validate_simulation

    make_mock_file(root / "sim" / "ttbar_0000.h5", n_jets=1000, seed=1)
    validate_simulation(root / "sim", root / "validation")

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    (root / "linked" / "plots").mkdir(parents=True)
    fig.savefig(root / "linked" / "plots" / "line.png")
    plt.close(fig)
    rep = HtmlReport("Linked images", embed_images=False)
    rep.add_figure(root / "linked" / "plots" / "line.png", "$c$-jets vs $p_{T}$")
    rep.write(root / "linked" / "report.html")
    return root


def test_evaluation_report_renders(chromium, reports, tmp_path):
    page = reports / "evaluation" / "report.html"
    result = _render(chromium, page, tmp_path)
    n_plots = len(json.loads((reports / "evaluation" / "results.json").read_text())["samples"]["ttbar"]["plots"])
    _check(result, n_plots)
    main = result["dom"].split("<main>", 1)[1].split('<h2 id="configuration">')[0]
    text = re.sub(r"<[^>]+>", "", main)
    assert "Mock tt̄ evaluation" in text and "$" not in text  # captions and headings rendered
    assert "<title>Mock tt̄ evaluation</title>" in page.read_text()


def test_tuning_validation_and_linked_reports_render(chromium, reports, tmp_path):
    _check(_render(chromium, reports / "tune" / "report.html", tmp_path), 1)
    _check(_render(chromium, reports / "validation" / "index.html", tmp_path), 5)
    result = _render(chromium, reports / "linked" / "report.html", tmp_path)
    _check(result, 1)
    assert "<i>c</i></span>-jets" in result["dom"]


def test_index_links_every_report_and_renders(chromium, reports, tmp_path):
    index = build_index(reports)
    assert index == reports / "index.html"
    text = index.read_text()
    hrefs = re.findall(r'<a href="([^"]+)"', text)
    assert sorted(hrefs) == ["evaluation/report.html", "linked/report.html", "tune/report.html",
                             "validation/index.html"]
    assert "lhcml tuning study: browser" in text
    result = _render(chromium, index, tmp_path)
    _check(result, 0)
    # every link resolves to a page
    assert all((reports / h).is_file() for h in hrefs)
    # `lhcml report DIR` on a folder without results.json writes the same index
    res = subprocess.run([sys.executable, "-m", "lhcml", "report", str(reports)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0 and "index.html" in res.stdout, res.stderr[-1500:]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run([sys.executable, "-m", "lhcml", "report", str(empty)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 2 and "no HTML reports under" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(("label", "html_text"), [
    ("$c$-jets", '<span class="math"><i>c</i></span>-jets'),
    ("$p_{T}$ [GeV]", '<span class="math"><i>p</i><sub><i>T</i></sub></span> [GeV]'),
    ("1/$\\varepsilon_{\\mathrm{light}}$", '1/<span class="math">ε<sub><span class="up">light</span></sub></span>'),
    ("$\\langle\\mu\\rangle = 200$", '<span class="math">⟨μ⟩ = 200</span>'),
    ("costs $5 & more", "costs $5 &amp; more"),
    ("<b>", "&lt;b&gt;"),
])  # fmt: skip
def test_label_html(label, html_text):
    assert label_html(label) == html_text


def test_unreachable_working_points_show_na():
    def wp(target, eff, rej):
        return {"target_eff": target, "cut": 0.5, "sig_eff": eff, "sig_eff_err": 0.002,
                "backgrounds": {"ujets": {"rejection": rej, "rejection_err": 0.1, "eff": 1 / rej}}}

    sample = {"backgrounds": ["ujets"],
              "taggers": {"T": {"working_points": [wp(0.70, 0.701, 50.0), wp(0.77, 1.0, 1.0)]}}}  # fmt: skip
    header, rows = working_point_table(sample)
    assert rows[0][-1].startswith("50") and "n/a" not in rows[0]
    assert rows[1][-1] == "n/a" and rows[1][2] == "n/a"
