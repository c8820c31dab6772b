"""Self-contained HTML reports.

:class:`HtmlReport` is a small reusable builder (headings, text, tables, figures, code blocks)
that any stage can use (evaluation, simulation validation, tuning, photon ID); images are
embedded as base64 by default so the page is one file. :func:`build_report` turns the
``results.json`` written by ``lhcml evaluate`` into ``report.html``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lhcml.errors import SchemaError

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff;
box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.7em;border-bottom:2px solid #1f77b4;padding-bottom:6px}
h2{font-size:1.35em;margin-top:1.8em;color:#1f4e79}
h3{font-size:1.1em;margin-top:1.4em}
table{border-collapse:collapse;margin:10px 0 18px;font-size:.9em}
caption{caption-side:top;text-align:left;font-style:italic;color:#555;padding:4px 0}
th,td{border:1px solid #ddd;padding:4px 9px;text-align:right}
th{background:#eef3f8;text-align:center}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f8f9fb}
figure{display:inline-block;margin:8px 12px 16px 0;vertical-align:top;max-width:100%}
figure img{max-width:520px;width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;max-width:520px}
pre{background:#f4f4f4;padding:10px;overflow-x:auto;font-size:.82em;border-radius:4px}
.meta{color:#666;font-size:.9em}
"""

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif"}


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, numbers.Real) and not isinstance(x, numbers.Integral):
        x = float(x)  # numpy float32/64 too
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        if math.isinf(x):
            return "∞"
        return f"{x:.{digits}g}"
    return str(x)


def format_value_error(value: float | None, error: float | None) -> str:
    """``value ± error`` with the error to two significant digits and the value to match.

    Parameters
    ----------
    value : float | None
        Central value (None: not available).
    error : float | None
        Error (None: shown without error).

    Returns
    -------
    str
        The formatted text.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "∞" if isinstance(value, float) and math.isinf(value) else "–"
    if error is None or not math.isfinite(error) or error <= 0:
        return f"{value:.4g}"
    decimals = max(0, 1 - int(math.floor(math.log10(error))))
    return f"{value:.{decimals}f} ± {error:.{decimals}f}"


class HtmlReport:
    """Build a one-page HTML report piece by piece; :meth:`write` saves it atomically.

    Parameters
    ----------
    title : str
        Page title (also the first heading).
    embed_images : bool, optional
        Embed figures as base64 (self-contained page), by default True; otherwise link them by
        relative path from the report's folder.
    """

    def __init__(self, title: str, embed_images: bool = True) -> None:
        self.title = title
        self.embed_images = embed_images
        self._parts: list[tuple[str, Any]] = []

    def add_heading(self, text: str, level: int = 2) -> HtmlReport:
        """Add a heading (level 1-4)."""
        self._parts.append(("heading", (text, min(max(level, 1), 4))))
        return self

    def add_text(self, text: str, css_class: str | None = None) -> HtmlReport:
        """Add a paragraph (escaped)."""
        self._parts.append(("text", (text, css_class)))
        return self

    def add_code(self, text: str) -> HtmlReport:
        """Add a preformatted block (e.g. the YAML config)."""
        self._parts.append(("code", text))
        return self

    def add_table(
        self,
        rows: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]],
        header: Sequence[str] | None = None,
        caption: str | None = None,
    ) -> HtmlReport:
        """Add a table.

        Parameters
        ----------
        rows : Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]
            Cell values (floats get 3 significant digits; strings are escaped). Rows may be
            mappings (column -> value): the header is then the union of their keys, in
            first-seen order, unless ``header`` selects columns; missing cells show "–".
        header : Sequence[str] | None, optional
            Column titles.
        caption : str | None, optional
            Caption above the table.

        Returns
        -------
        HtmlReport
            ``self``.
        """
        rows = list(rows)
        if rows and all(isinstance(r, Mapping) for r in rows):
            cols = list(header) if header else list(dict.fromkeys(k for r in rows for k in r))
            table = [[r.get(c) for c in cols] for r in rows]  # type: ignore[union-attr]
            header = cols
        else:
            table = [list(r) for r in rows]
        self._parts.append(("table", (table, list(header or []), caption)))
        return self

    def add_figure(self, path: str | Path, caption: str | None = None) -> HtmlReport:
        """Add an image file (must exist when :meth:`write` is called).

        Parameters
        ----------
        path : str | Path
            Image path (png, svg, jpg).
        caption : str | None, optional
            Caption.

        Returns
        -------
        HtmlReport
            ``self``.
        """
        self._parts.append(("figure", (Path(path), caption)))
        return self

    def render(self, out_dir: Path | None = None) -> str:
        """The HTML text (figures resolved relative to ``out_dir`` when not embedded).

        Raises
        ------
        FileNotFoundError
            If a figure file does not exist.
        """
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, val in self._parts:
            if kind == "heading":
                text, level = val
                anchor = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
                body.append(f'<h{level} id="{html.escape(anchor)}">{html.escape(text)}</h{level}>')
            elif kind == "text":
                text, cls = val
                attr = f' class="{html.escape(cls)}"' if cls else ""
                body.append(f"<p{attr}>{html.escape(text)}</p>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(val)}</pre>")
            elif kind == "table":
                rows, header, caption = val
                t = ["<table>"]
                if caption:
                    t.append(f"<caption>{html.escape(caption)}</caption>")
                if header:
                    t.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
                             + "</tr>")
                for r in rows:
                    t.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r)
                             + "</tr>")
                t.append("</table>")
                body.append("\n".join(t))
            elif kind == "figure":
                path, caption = val
                if not path.is_file():
                    raise FileNotFoundError(f"report figure {path} does not exist")
                if self.embed_images:
                    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
                    data = base64.b64encode(path.read_bytes()).decode("ascii")
                    src = f"data:{mime};base64,{data}"
                else:
                    base = out_dir or Path.cwd()
                    src = Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
                cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
                body.append(
                    f'<figure><img src="{html.escape(src)}" alt="{html.escape(path.name)}">'
                    f"{cap}</figure>"
                )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page atomically (temporary file, then rename).

        Parameters
        ----------
        path : str | Path
            Output file.

        Returns
        -------
        Path
            The written file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.render(path.parent)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path


def working_point_table(sample: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the rejection table of one sample of ``results.json``.

    One row per tagger and working point; columns: cut, signal efficiency, then rejection ± error
    for each background class.

    Parameters
    ----------
    sample : dict
        ``results["samples"][name]``.

    Returns
    -------
    tuple[list[str], list[list[str]]]
        Header and rows.
    """
    bkgs = sample["backgrounds"]
    header = ["Tagger", "WP", "cut", "sig. eff."] + [f"{b} rejection" for b in bkgs]
    rows = []
    for tagger, res in sample["taggers"].items():
        for wp in res["working_points"]:
            row = [
                tagger,
                f"{wp['target_eff']:.0%}",
                _fmt(wp["cut"], 4),
                format_value_error(wp["sig_eff"], wp["sig_eff_err"]),
            ]
            for b in bkgs:
                r = wp["backgrounds"].get(b, {})
                rej = r.get("rejection")
                if rej is None and r.get("eff") == 0.0:
                    rej = math.inf
                row.append(format_value_error(rej, r.get("rejection_err")))
            rows.append(row)
    return header, rows


def build_report(results_dir: str | Path, output: str | Path | None = None,
                 embed_images: bool = True) -> Path:
    """Write ``report.html`` for the results of ``lhcml evaluate``.

    Parameters
    ----------
    results_dir : str | Path
        Folder holding ``results.json`` and the plots.
    output : str | Path | None, optional
        Output file, by default ``<results_dir>/report.html``.
    embed_images : bool, optional
        Embed images (self-contained page), by default True.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    SchemaError
        If ``results.json`` is missing or not an lhcml evaluation result.
    """
    results_dir = Path(results_dir)
    res_file = results_dir / "results.json"
    if not res_file.is_file():
        raise SchemaError(
            f"{res_file} does not exist: run `lhcml evaluate CONFIG` first and pass its output folder"
        )
    try:
        res = json.loads(res_file.read_text())
        samples = res["samples"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SchemaError(f"{res_file} is not an lhcml evaluation result ({err})") from None
    cfg = res.get("config", {})
    rep = HtmlReport(res.get("title") or "lhcml evaluation", embed_images=embed_images)
    rep.add_text(
        f"lhcml {res.get('lhcml_version', '?')} · evaluated {res.get('created', '?')} · "
        f"report written {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} · "
        f"label scheme '{cfg.get('label_scheme', '?')}', signal '{cfg.get('signal', '?')}'",
        css_class="meta",
    )
    for name, sample in samples.items():
        rep.add_heading(f"Sample: {name}", 2)
        counts = ", ".join(f"{k}: {v}" for k, v in sample.get("n_jets", {}).items())
        rep.add_text(f"Files: {', '.join(sample.get('files', []))}. Jets per class: {counts}.")
        header, rows = working_point_table(sample)
        rep.add_table(rows, header, caption=f"{name}: background rejection (1/ε) at the working "
                      "points, binomial errors")
        # summary table: AUC and rejection at fixed signal efficiency, decorrelation
        bkgs = sample["backgrounds"]
        s_header = ["Tagger", "discriminant"] + [f"AUC vs {b}" for b in bkgs]
        fixed = sorted({k for t in sample["taggers"].values() for k in t.get("rejection_at", {})})
        s_header += [f"1/ε({b}) at ε_S={e}" for e in fixed for b in bkgs]
        deco = any("decorrelation" in t for t in sample["taggers"].values())
        if deco:
            s_header += [f"R50 / 1/JSD50 ({b})" for b in bkgs]
        if any("accuracy" in t for t in sample["taggers"].values()):
            s_header.append("accuracy")
        sig = any("significance" in t for t in sample["taggers"].values())
        if sig:
            s_header.append("best significance (cut, s, b)")
        s_rows = []
        for tagger, t in sample["taggers"].items():
            row = [tagger, t.get("discriminant", "")] + [_fmt(t["auc"].get(b), 4) for b in bkgs]
            for e in fixed:
                for b in bkgs:
                    r = t.get("rejection_at", {}).get(e, {}).get(b, {})
                    row.append(format_value_error(r.get("rejection"), r.get("rejection_err")))
            if deco:
                for b in bkgs:
                    d = t.get("decorrelation", {}).get(b, {})
                    row.append(f"{_fmt(d.get('r50'))} / {_fmt(d.get('inv_jsd50'))}")
            if "accuracy" in s_header:
                row.append(_fmt(t.get("accuracy"), 4))
            if sig:
                z = t.get("significance", {})
                row.append(f"{z.get('metric', '')} {_fmt(z.get('significance'))} "
                           f"({_fmt(z.get('cut'))}, {_fmt(z.get('s'))}, {_fmt(z.get('b'))})")
            s_rows.append(row)
        rep.add_table(s_rows, s_header, caption=f"{name}: summary metrics")
        published = [p for p in cfg.get("published", []) if p.get("sample") in (None, name)]
        if published:
            p_bkgs = list(dict.fromkeys(b for p in published for b in p["rejection"]))
            rep.add_table(
                [[p["label"], f"{p['working_point']:.0%}",
                  *[_fmt(p["rejection"].get(b)) for b in p_bkgs], p["source"]]
                 for p in published],
                ["Published", "WP", *[f"{b} rejection" for b in p_bkgs], "source"],
                caption="Published values for context (other detector simulation; compare "
                "orders of magnitude, not digits)",
            )
        for plot in sample.get("plots", []):
            p = results_dir / plot["path"]
            if p.is_file():
                rep.add_figure(p, plot.get("caption"))
    rep.add_heading("Configuration", 2)
    rep.add_code(res.get("config_yaml") or json.dumps(cfg, indent=2))
    return rep.write(output or results_dir / "report.html")
