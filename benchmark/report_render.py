"""One report document, written as ``report.md`` and as a self-contained ``index.html``.

The HTML page has its style inline and loads nothing but the PNG files
beside it, so the folder can be copied, mailed or opened offline.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Final

STATUS_CLASSES: Final = {"pass": "pass", "fail": "fail", "no data": "nodata"}


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    status_column: int | None = None  #: a column of pass / fail / no data, coloured in HTML


@dataclass
class Image:
    file: str
    title: str
    caption: str


@dataclass
class Bullets:
    items: list[str]


Block = str | Table | Image | Bullets


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)


# -- Markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(block: Block) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        lines = [
            "| " + " | ".join(_md_cell(h) for h in block.headers) + " |",
            "|" + "---|" * len(block.headers),
        ]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    return f"![{block.title}]({block.file})\n\n*{block.caption}*"


def to_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}"]
    for section in doc.sections:
        parts.append(f"## {section.title}")
        parts.extend(_md_block(b) for b in section.blocks)
    return "\n\n".join(parts) + "\n"


# -- HTML -------------------------------------------------------------------------------------

STYLE: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 70rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.pass { background: #d8f0d8; font-weight: 600; }
td.fail { background: #f6d4d4; font-weight: 600; }
td.nodata { background: #eee; color: #666; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9rem; }
li { margin: .2rem 0; }
"""


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, str):
        return f"<p>{esc(block)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
        rows = []
        for row in block.rows:
            cells = []
            for i, cell in enumerate(row):
                cls = STATUS_CLASSES.get(cell) if i == block.status_column else None
                attr = f' class="{cls}"' if cls else ""
                cells.append(f"<td{attr}>{esc(cell)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return (
        f'<figure><img src="{esc(block.file)}" alt="{esc(block.title)}">'
        f"<figcaption><b>{esc(block.title)}.</b> {esc(block.caption)}</figcaption></figure>"
    )


def to_html(doc: Document) -> str:
    body = [f"<h1>{html.escape(doc.title)}</h1>"]
    for section in doc.sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body.extend(_html_block(b) for b in section.blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(doc.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
