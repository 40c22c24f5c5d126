"""A report as Markdown (beside its PNG files) and as one self-contained HTML file (the PNGs
inside it), from the same list of sections."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # str (a paragraph), DataFrame (a table) or Path (a PNG)

    def add(self, *blocks) -> "Section":
        self.blocks += blocks
        return self


def _markdown_table(table: pd.DataFrame) -> str:
    cells = table.astype(object).where(table.notna(), "").astype(str)
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.to_numpy().tolist()]
    return "\n".join(lines)


def markdown(title: str, sections: list[Section], folder: Path) -> str:
    out = [f"# {title}"]
    for section in sections:
        out.append(f"\n## {section.title}\n")
        for block in section.blocks:
            if isinstance(block, pd.DataFrame):
                out.append(_markdown_table(block) + "\n")
            elif isinstance(block, Path):
                out.append(f"![{block.stem}]({block.relative_to(folder).as_posix()})\n")
            else:
                out.append(f"{block}\n")
    return "\n".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}"""


def page(title: str, sections: list[Section]) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, pd.DataFrame):
                out.append(block.to_html(index=False, na_rep="", border=0))
            elif isinstance(block, Path):
                data = base64.b64encode(block.read_bytes()).decode()
                out.append(f"<img alt='{html.escape(block.stem)}' src='data:image/png;base64,{data}'>")
            else:
                out.append(f"<p>{html.escape(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out)
