"""Validation as code: a simulated sample against a shipped reference table (``lhcml sim validate``).

:func:`run_validation` reads the flat files of one or more directories (simulated or real, any
files in the dumper layout), computes each quantity of the reference table
(``reference.yaml``: value, tolerance or range, provenance tag and source; rendered in
docs/validation.md) with the pure functions of :mod:`lhcml.validation.checks`, and gives
each check one status:

* ``pass`` / ``FAIL``: inside / outside the reference range, for references read in a source
  (tag R), derived from one (D) or set as a goal by the fidelity issues (goal);
* ``unverified``: the reference is second-hand or from memory (or there is none): the value is
  reported, with whether it lies inside the range, but never passes or fails;
* ``not-in-sample``: the fields the check needs are absent, or too few entries: fewer than the
  check's ``min_entries``, or a value outside the range by less than :data:`SIGNIFICANCE`
  statistical errors (never a pass).

It prints the table, writes ``validation.json`` and an HTML page with the table and the
validation plots of :mod:`lhcml.validation.plots`. The table itself is :mod:`lhcml.validation.table`. Checks marked ``compare`` (τ32 stability)
use all given directories, ordered by ⟨μ⟩.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lhcml.atomic import atomic_write_text
from lhcml.errors import ConfigError
from lhcml.validation.checks import Measurement
from lhcml.validation.measures import MEASURES, NotInSample, Sample
from lhcml.validation.table import ReferenceCheck, ReferenceTable, load_reference

#: the statuses a check can have
STATUSES = ("pass", "FAIL", "unverified", "not-in-sample")
#: a value outside its range FAILs only when the distance exceeds this many statistical errors
#: (closer: too few entries to decide, reported as not-in-sample; our choice)
SIGNIFICANCE = 2.0


# ---- running the checks -----------------------------------------------------------------------


@dataclass
class CheckResult:
    """The outcome of one check on one sample (or on a set of samples, for ``compare`` checks)."""

    check: ReferenceCheck
    sample: str
    mu: float | None
    measurement: Measurement | None
    status: str
    in_range: bool | None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "name": self.check.name, "quantity": self.check.quantity, "sample": self.sample,
            "mu": self.mu, "value": None if m is None or not math.isfinite(m.value) else m.value,
            "error": None if m is None or not math.isfinite(m.error) else m.error,
            "n": None if m is None else m.n, "note": "" if m is None else m.note,
            "reference": self.check.reference_text(), "tag": self.check.tag,
            "source": self.check.source, "status": self.status, "in_range": self.in_range,
            "reason": self.reason,
        }  # fmt: skip


def evaluate(check: ReferenceCheck, measurement: Measurement) -> tuple[str, bool | None, str]:
    """Status, whether the value is inside the reference range, and the reason, for one value."""
    if measurement.n < check.min_entries:
        return "not-in-sample", None, f"{measurement.n} entries < {check.min_entries}"
    if not math.isfinite(measurement.value):
        return "not-in-sample", None, "not measurable (fit failed or no entries)"
    b = check.bounds()
    if b is None:
        return "unverified", None, "no reference value"
    v, e = measurement.value, measurement.error
    inside = bool(b[0] <= v <= b[1])
    if check.tag == "unverified":
        return "unverified", inside, "reference unverified: " + ("inside" if inside else "outside") + " its range"
    if inside:
        return "pass", True, ""
    distance = b[0] - v if v < b[0] else v - b[1]
    if math.isfinite(e) and distance < SIGNIFICANCE * e:
        return "not-in-sample", False, (f"outside the range by {distance:.3g} < {SIGNIFICANCE:g} × the "
                                        "statistical error: too few entries to decide")  # fmt: skip
    return "FAIL", False, ""


def run_checks(samples: list[Sample], reference: ReferenceTable | None = None) -> list[CheckResult]:
    """Every check of ``reference`` (default: the shipped table) on every sample.

    Single-sample checks give one row per sample whose ⟨μ⟩ the check applies to; ``compare``
    checks one row for all samples together (ordered by ⟨μ⟩, lowest first).
    """
    reference = reference or load_reference()
    cache: dict[tuple, Any] = {}
    results: list[CheckResult] = []

    def measure(key: tuple, call: Callable[[], Any]) -> Any:
        if key not in cache:
            try:
                cache[key] = call()
            except NotInSample as err:
                cache[key] = err
        return cache[key]

    ordered = sorted(samples, key=lambda s: (math.inf if s.mu is None else s.mu))
    for c in reference.checks:
        m = MEASURES[c.measure]
        params = {**m.params, **c.params}
        pkey = tuple(sorted(params.items()))
        if c.compare:
            out = measure((c.measure, pkey, tuple(id(s) for s in ordered)), lambda m=m, p=params: m.fn(ordered, p))
            if isinstance(out, NotInSample):
                results.append(_result(c, " vs ".join(s.label for s in ordered), None, out))
            else:
                values, used = out
                results.append(_result(c, " vs ".join(used), None, values))
            continue
        for s in samples:
            if not c.applies_to(s.mu):
                continue
            out = measure((c.measure, pkey, id(s)), lambda m=m, p=params, s=s: m.fn(s, p))
            results.append(_result(c, s.label, s.mu, out))
    return results


def _result(c: ReferenceCheck, label: str, mu: float | None, out: dict[str, Measurement] | NotInSample) -> CheckResult:
    if isinstance(out, NotInSample):
        return CheckResult(c, label, mu, None, "not-in-sample", None, str(out))
    meas = out[c.output]
    status, inside, reason = evaluate(c, meas)
    return CheckResult(c, label, mu, meas, status, inside, reason)


def _fmt_value(m: Measurement | None) -> str:
    from lhcml.plots.report import format_value_error

    if m is None or not math.isfinite(m.value):
        return "–"
    return format_value_error(m.value, m.error if math.isfinite(m.error) else None)


def format_table(results: list[CheckResult]) -> str:
    """The results as a fixed-width text table (one row per check and sample)."""
    head = ("check", "sample", "<mu>", "measured", "reference [tag]", "status", "n", "why")
    rows = [head]
    for r in results:
        rows.append((
            r.check.name, r.sample, "–" if r.mu is None else f"{r.mu:.3g}", _fmt_value(r.measurement),
            f"{r.check.reference_text()} [{r.check.tag}]", r.status,
            "–" if r.measurement is None else str(r.measurement.n), r.reason,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
        if k == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 3))
    counts = {st: sum(r.status == st for r in results) for st in STATUSES}
    lines.append(", ".join(f"{n} {st}" for st, n in counts.items()))
    return "\n".join(lines)


def run_validation(
    sim_dirs: str | Path | list[str | Path],
    output_dir: str | Path | None = None,
    max_jets: int = 200_000,
    reference: str | Path | ReferenceTable | None = None,
    plots: bool = True,
) -> tuple[list[CheckResult], Path]:
    """Run the reference checks on one or more directories; write the HTML page and JSON.

    Parameters
    ----------
    sim_dirs
        One directory (or file) or several (compared: τ32 stability across ⟨μ⟩).
    output_dir
        Where to write ``index.html``, ``validation.json`` and the plots (default
        ``<first dir>/validation``). With several directories each one's plots go to a
        sub-folder named after it.
    max_jets
        Rows read at most per dataset and sample.
    reference
        A reference table, or a YAML path (default: the shipped ``reference.yaml``).
    plots
        Also make the validation plots.

    Returns
    -------
    tuple[list[CheckResult], Path]
        The results and the HTML page.
    """
    from lhcml.plots.style import style
    from lhcml.validation.plots import make_plots

    dirs = [Path(d) for d in (sim_dirs if isinstance(sim_dirs, list) else [sim_dirs])]
    if not dirs:
        raise ConfigError("give at least one simulation directory")
    names = [d.name for d in dirs]
    # directories of the same name (a/ttbar, b/ttbar) get their parent in the label
    labels = [f"{d.parent.name}_{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]
    samples = [Sample(d, max_rows=max_jets, label=lab) for d, lab in zip(dirs, labels, strict=True)]
    for s in samples:
        s.files  # noqa: B018 - fail early on a directory without flat files
    table = reference if isinstance(reference, ReferenceTable) else load_reference(reference)
    results = run_checks(samples, table)
    first = dirs[0] if dirs[0].is_dir() else dirs[0].parent
    out = Path(output_dir) if output_dir is not None else first / "validation"
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for s in samples:
        sub = out if len(samples) == 1 else out / s.label
        with style():  # the mplhep style of every lhcml figure (lhcml.plots.style)
            made = make_plots(s.files, sub, max_jets) if plots else ([], [], [])
        manifest = (s.path if s.path.is_dir() else s.path.parent) / "manifest.yaml"
        sections.append((s, sub, *made, manifest.read_text() if manifest.is_file() else ""))
    atomic_write_text(out / "validation.json", json.dumps(
        {"samples": [{"path": str(s.path), "mu": s.mu} for s in samples], "checks": [r.to_dict() for r in results]},
        indent=1))  # fmt: skip
    return results, _write_html(out / "index.html", results, sections)


def validate_simulation(
    sim_dir: str | Path | list[str | Path], output_dir: str | Path | None = None, max_jets: int = 200_000
) -> Path:
    """:func:`run_validation` returning only the HTML page."""
    return run_validation(sim_dir, output_dir, max_jets)[1]


_STATUS_COLOUR = {"pass": "#d8f0d8", "FAIL": "#f6caca", "unverified": "#fff2c4", "not-in-sample": "#e6e6e6"}


def _write_html(path: Path, results: list[CheckResult], sections: list[tuple]) -> Path:
    from lhcml.validation.plots import _LABEL

    esc = html.escape
    head = ("check", "quantity", "sample", "⟨μ⟩", "measured", "reference", "tag", "status", "n",
            "why", "source")  # fmt: skip
    rows = []
    for r in results:
        cells = (r.check.name, r.check.quantity, r.sample, "–" if r.mu is None else f"{r.mu:.3g}",
                 _fmt_value(r.measurement), r.check.reference_text(), r.check.tag, r.status,
                 "–" if r.measurement is None else str(r.measurement.n),
                 r.reason + (f" ({r.measurement.note})" if r.measurement and r.measurement.note else ""),
                 r.check.source)  # fmt: skip
        rows.append(f'<tr style="background:{_STATUS_COLOUR[r.status]}">'
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")  # fmt: skip
    counts = ", ".join(f"{sum(r.status == st for r in results)} {st}" for st in STATUSES)
    checks = ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
              + "".join(rows) + "</table>")  # fmt: skip
    parts = []
    base = path.parent
    for s, _sub, plots, summary, notes, manifest in sections:
        cols: list[str] = []
        for row in summary:
            cols += [k for k in row if k not in cols]
        table = "<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>"
        for row in summary:
            table += "<tr>" + "".join(f"<td>{esc(str(row.get(c, '')))}</td>" for c in cols) + "</tr>"
        table += "</table>"
        figs = []
        for title, p in plots:
            rel = p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)
            b64 = base64.b64encode(p.read_bytes()).decode()
            figs.append(
                f'<figure><a href="{esc(rel)}"><img alt="{esc(title)}" '
                f'src="data:image/png;base64,{b64}"></a><figcaption>{esc(title)} '
                f'(<a href="{esc(rel)}">{esc(p.name)}</a>)</figcaption></figure>'
            )
        mu = "unknown" if s.mu is None else f"{s.mu:.3g}"
        parts.append(
            f"<h2>{esc(s.label)}</h2><p>{esc(str(s.path))}, {len(s.files)} file(s), ⟨μ⟩ = {mu}.</p>"
            + "".join(f"<p><b>Note:</b> {esc(n)}</p>" for n in notes)
            + (f"<h3>Summary</h3>{table}" if summary else "")
            + ("<h3>Distributions</h3><p>Histograms are normalised to unit area per class (entries in "
               "the legend); entries outside the axis range are added to the first/last bin.</p>"
               + "".join(figs) if figs else "")
            + f"<h3>Run manifest</h3><pre>{esc(manifest) or '(none)'}</pre>"
        )  # fmt: skip
    body = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lhcml simulation validation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
figure{{display:inline-block;margin:0.5em;text-align:center}} img{{width:480px}}
table{{border-collapse:collapse;font-size:0.9em}} td,th{{border:1px solid #999;padding:0.2em 0.6em}}
pre{{background:#f4f4f4;padding:0.5em}}</style></head><body>
<h1>Simulation validation</h1>
<p><i>{_LABEL}</i>: {len(sections)} sample(s). Checks against the reference table
(src/lhcml/validation/reference.yaml, docs/validation.md): {esc(counts)}.
Tags: R read in the source, D derived, goal set by the fidelity issues, unverified
second-hand (never pass/FAIL).</p>
<h2>Checks</h2>{checks}
{"".join(parts)}
</body></html>
"""
    return atomic_write_text(path, body)
