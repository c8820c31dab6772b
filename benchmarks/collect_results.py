"""Assemble docs/benchmarks.md from the per-area result pages in docs/benchmarks/.

Usage: ``python benchmarks/collect_results.py`` (run after updating any page).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["sim_gen", "sim_tracker", "data", "ftag_baselines", "ftag", "train", "metrics", "tune",
         "boosted", "calo"]  # fmt: skip

HEADER = """# lhcml benchmarks

Measured speed and physics performance, each with the machine and the command that produced it.
The per-area pages live in `docs/benchmarks/`; this file is assembled from them by
`python benchmarks/collect_results.py`. Unless a section says otherwise the machine is the
development box: 2 CPU cores (x86_64), 24 GB RAM, no GPU, shared with other jobs while the
numbers were taken (so wall-clock figures are pessimistic; several sections quote CPU time).

"""


def main() -> None:
    pages = {p.stem: p for p in sorted((ROOT / "docs" / "benchmarks").glob("*.md"))}
    names = [n for n in ORDER if n in pages] + sorted(set(pages) - set(ORDER))
    parts = [HEADER, "Contents: " + ", ".join(f"[{n}](benchmarks/{n}.md)" for n in names) + "\n"]
    for n in names:
        text = pages[n].read_text().strip()
        # demote headings by one level so the assembled page has one title
        lines, fenced = [], False
        for line in text.splitlines():
            fenced ^= line.lstrip().startswith("```")
            lines.append("#" + line if line.startswith("#") and not fenced else line)
        text = "\n".join(lines)
        parts.append(f"\n---\n\n{text}\n")
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out} from {len(names)} pages")


if __name__ == "__main__":
    main()
