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

from lhcml.atomic import atomic_write_text
from lhcml.errors import SchemaError
from lhcml.formatting import pm

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
.math .up{font-style:normal}
ul.reports li{margin:4px 0}
"""

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif"}


#: LaTeX commands of plot labels and their Unicode characters (mathtext subset used in lhcml)
_TEX = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "pi": "π",
    "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ",
    "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Lambda": "Λ", "Sigma": "Σ", "Phi": "Φ",
    "Omega": "Ω", "ell": "ℓ", "times": "×", "cdot": "·", "pm": "±", "mp": "∓", "leq": "≤",
    "le": "≤", "geq": "≥", "ge": "≥", "neq": "≠", "approx": "≈", "sim": "∼", "infty": "∞",
    "to": "→", "rightarrow": "→", "leftarrow": "←", "langle": "⟨", "rangle": "⟩",
    "sqrt": "√", "sum": "Σ", "prime": "′", "circ": "°", "%": "%", ",": "\u2009", ";": " ",
    "!": "", " ": " ", "quad": "\u2003", "{": "{", "}": "}", "_": "_", "$": "$",
}


def _tex_group(src: str, i: int) -> tuple[str, int]:
    """The argument starting at ``src[i]``: a ``{...}`` group or one character/command."""
    if i >= len(src):
        return "", i
    if src[i] == "{":
        depth, j = 1, i + 1
        while j < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        return src[i + 1 : j - 1], j
    if src[i] == "\\":
        j = i + 1
        while j < len(src) and src[j].isalpha():
            j += 1
        return src[i : max(j, i + 2)], max(j, i + 2)
    return src[i], i + 1


def _tex_math(src: str) -> str:
    """HTML of one math segment (between ``$``): Greek letters and symbols as Unicode,
    ``_``/``^`` as sub/superscripts, ``\\bar{t}`` as t̄, ``\\mathrm{..}``/``\\text{..}`` upright,
    letters in italics."""
    out: list[str] = []
    i = 0
    while i < len(src):
        c = src[i]
        if c in "_^":
            arg, i = _tex_group(src, i + 1)
            tag = "sub" if c == "_" else "sup"
            out.append(f"<{tag}>{_tex_math(arg)}</{tag}>")
        elif c == "\\":
            j = i + 1
            while j < len(src) and src[j].isalpha():
                j += 1
            name = src[i + 1 : j] if j > i + 1 else src[i + 1 : i + 2]
            i = j if j > i + 1 else i + 2
            if name in ("mathrm", "text", "rm", "mathrm", "textrm", "operatorname"):
                arg, i = _tex_group(src, i)
                out.append(f'<span class="up">{html.escape(arg)}</span>')
            elif name in ("bar", "overline"):
                arg, i = _tex_group(src, i)
                inner = _tex_math(arg)  # the macron inside the italic element, on its letter
                out.append(inner[:-4] + "\u0304</i>" if inner.endswith("</i>") else inner + "\u0304")
            elif name in ("mathbf", "boldsymbol"):
                arg, i = _tex_group(src, i)
                out.append(f"<b>{_tex_math(arg)}</b>")
            elif name in ("left", "right", "big", "Big", "displaystyle"):
                continue
            elif name == "frac":
                num, i = _tex_group(src, i)
                den, i = _tex_group(src, i)
                out.append(f"{_tex_math(num)}/{_tex_math(den)}")
            else:
                out.append(html.escape(_TEX.get(name, name)))
        elif c in "{}":
            i += 1
        elif c.isalpha():
            j = i
            while j < len(src) and src[j].isalpha():
                j += 1
            out.append(f"<i>{html.escape(src[i:j])}</i>")
            i = j
        else:
            out.append(html.escape(c))
            i += 1
    return "".join(out)


def label_html(text: Any) -> str:
    """HTML of a label that may hold LaTeX-like math (``$c$-jets``, ``$p_{T}$ [GeV]``,
    ``$t\\bar{t}$``), as matplotlib draws it: math segments become HTML with Unicode symbols and
    sub/superscripts, everything else is escaped. A lone ``$`` (or ``\\$``) stays as it is."""
    text = str(text)
    parts: list[str] = []
    i = 0
    while i < len(text):
        j = text.find("$", i)
        while j > 0 and text[j - 1] == "\\":  # escaped dollar
            j = text.find("$", j + 1)
        k = text.find("$", j + 1) if j >= 0 else -1
        if j < 0 or k < 0:
            parts.append(html.escape(text[i:].replace("\\$", "$")))
            break
        parts.append(html.escape(text[i:j].replace("\\$", "$")))
        parts.append(f'<span class="math">{_tex_math(text[j + 1 : k])}</span>')
        i = k + 1
    return "".join(parts)


def label_text(text: Any) -> str:
    """Plain Unicode text of a label (for ``<title>`` and other places without markup)."""
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", label_html(text)))


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


#: ``value ± error`` with PDG rounding (the one formatter, :func:`lhcml.formatting.pm`)
format_value_error = pm


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

    def add_links(self, links: Sequence[tuple[str, str, str | None]]) -> HtmlReport:
        """Add a list of links ``(text, href, note)`` (``href`` relative to the page)."""
        self._parts.append(("links", [tuple(x) for x in links]))
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
        body = [f"<h1>{label_html(self.title)}</h1>"]
        for kind, val in self._parts:
            if kind == "heading":
                text, level = val
                anchor = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
                body.append(f'<h{level} id="{html.escape(anchor)}">{label_html(text)}</h{level}>')
            elif kind == "text":
                text, cls = val
                attr = f' class="{html.escape(cls)}"' if cls else ""
                body.append(f"<p{attr}>{label_html(text)}</p>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(val)}</pre>")
            elif kind == "links":
                items = "".join(
                    f'<li><a href="{html.escape(href)}">{label_html(text)}</a>'
                    + (f' <span class="meta">{label_html(note)}</span>' if note else "") + "</li>"
                    for text, href, note in val
                )
                body.append(f'<ul class="reports">{items}</ul>')
            elif kind == "table":
                rows, header, caption = val
                t = ["<table>"]
                if caption:
                    t.append(f"<caption>{label_html(caption)}</caption>")
                if header:
                    t.append("<tr>" + "".join(f"<th>{label_html(h)}</th>" for h in header) + "</tr>")
                for r in rows:
                    t.append("<tr>" + "".join(f"<td>{label_html(_fmt(c))}</td>" for c in r) + "</tr>")
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
                cap = f"<figcaption>{label_html(caption)}</figcaption>" if caption else ""
                body.append(
                    f'<figure><img src="{html.escape(src)}" alt="{html.escape(path.name)}">'
                    f"{cap}</figure>"
                )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(label_text(self.title))}</title><style>{_CSS}</style></head>"
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
        return atomic_write_text(path, self.render(path.parent))


#: a working point counts as reached when the achieved signal efficiency is within this absolute
#: tolerance of its target (or within 3 binomial standard errors, whichever is larger); our choice
WP_EFF_TOLERANCE = 0.01


def wp_reached(achieved: float | None, error: float | None, target: float) -> bool:
    """Whether a working point's achieved signal efficiency is its target (see
    :data:`WP_EFF_TOLERANCE`); ``False`` for a missing or non-finite efficiency."""
    if achieved is None or not math.isfinite(float(achieved)):
        return False
    err = float(error) if error is not None and math.isfinite(float(error)) else 0.0
    return abs(float(achieved) - float(target)) <= max(WP_EFF_TOLERANCE, 3.0 * err)


def _rejection_cell(r: Mapping[str, Any]) -> str:
    """Rejection ± error at a fixed signal efficiency; "n/a" where the efficiency is not reached
    (the evaluation then reports the rejection of a cut that passes everything: exactly 1)."""
    rej = r.get("rejection")
    if rej is None or (isinstance(rej, numbers.Real) and float(rej) == 1.0):
        return "n/a"
    return format_value_error(rej, r.get("rejection_err"))


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
            if not wp_reached(wp.get("sig_eff"), wp.get("sig_eff_err"), wp["target_eff"]):
                # no cut gives this efficiency (e.g. a discriminant piled up at one value): the
                # "rejection" there would be that of a different efficiency, often 1
                row[2] = "n/a"
                row += ["n/a"] * len(bkgs)
                rows.append(row)
                continue
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
                    row.append(_rejection_cell(t.get("rejection_at", {}).get(e, {}).get(b, {})))
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


def _page_title(path: Path) -> str:
    """The ``<title>`` of an HTML page (its file name when it has none)."""
    import re

    head = path.read_text(encoding="utf-8", errors="replace")[:8192]
    m = re.search(r"<title>(.*?)</title>", head, re.S | re.I)
    return html.unescape(m.group(1).strip()) if m and m.group(1).strip() else path.name


def build_index(root: str | Path, output: str | Path | None = None, title: str = "lhcml reports") -> Path:
    """Write one page linking every HTML report under ``root`` (evaluation, tuning, simulation
    validation, photon ID, preprocessing, ...), grouped by folder, with relative links.

    Parameters
    ----------
    root : str | Path
        Folder searched recursively (hidden folders skipped).
    output : str | Path | None, optional
        The index page, by default ``<root>/index.html`` (``reports.html`` when ``root`` already
        holds an ``index.html`` that is a report itself, e.g. the simulation validation's).
    title : str, optional
        Page title.

    Returns
    -------
    Path
        The index page.

    Raises
    ------
    SchemaError
        If ``root`` holds no HTML report.
    """
    root = Path(root)
    if not root.is_dir():
        raise SchemaError(f"{root} is not a folder: give the folder that holds the reports")
    if output is None:
        own = root / "index.html"
        ours = own.exists() and '<ul class="reports">' in own.read_text(errors="replace")
        output = own if not own.exists() or ours else root / "reports.html"
    output = Path(output)
    pages = sorted(
        p for p in root.rglob("*.html")
        if p.resolve() != output.resolve()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )  # fmt: skip
    if not pages:
        raise SchemaError(
            f"no HTML reports under {root}: write some first (lhcml evaluate, tune, sim validate, "
            f"photon evaluate, demo), or give an evaluation folder holding results.json"
        )
    rep = HtmlReport(title)
    rep.add_text(
        f"{len(pages)} report(s) under {root.resolve()} · index written "
        f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        css_class="meta",
    )
    groups: dict[str, list[Path]] = {}
    for p in pages:
        rel = p.relative_to(root)
        groups.setdefault(rel.parts[0] if len(rel.parts) > 1 else ".", []).append(p)
    for group, members in groups.items():
        rep.add_heading(group if group != "." else root.name, 2)
        links = []
        for p in members:
            mtime = _dt.datetime.fromtimestamp(p.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
            href = Path(os.path.relpath(p.resolve(), output.parent.resolve())).as_posix()
            links.append((_page_title(p), href, f"{p.relative_to(root).as_posix()} · {mtime} UTC"))
        rep.add_links(links)
    return rep.write(output)
