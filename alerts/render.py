"""Rendering a fleet report (the dict from ``analysis.report``) as markdown, JSON or one self-contained HTML page.

Nothing is computed here: the tables, their notes and the headline figures come from ``alerts.tables``; this module
only writes them out. Numbers are right aligned, text left aligned; price sources are footnotes.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from alerts.footnotes import Footnotes
from alerts.tables import MARKS, NUMBER, Table, definitions, scope_line, summary, tables, title, window_line
from analysis.states import STATES

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_MARK = re.compile(r"\[(\d+)\]")


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def to_markdown(report: dict[str, Any], footnotes: Footnotes | None = None) -> str:
    """``footnotes``: the price sources' numbers when the page goes with other text that uses them (an email)."""
    footnotes = footnotes or Footnotes.of(report)
    lines = [f"# {title(report)}", "", window_line(report), ""]
    scope = scope_line(report)
    if scope:
        lines += [scope, ""]
    lines += [f"- {item}" for item in summary(report)] + [""]
    for table in tables(report, footnotes):
        lines += [f"## {table.title}", "", *_markdown_table(table)]
    lines += ["## Definitions and sources", ""] + [f"- {n}" for n in definitions(report, footnotes)]
    return "\n".join(lines) + "\n"


def _markdown_table(table: Table) -> list[str]:
    if not table.rows:
        return [table.empty, ""] + [f"- {n}" for n in table.notes] + ([""] if table.notes else [])
    cells = [_md_cell(c.name) for c in table.columns]
    out = ["| " + " | ".join(cells) + " |"]
    out.append("|" + "|".join("---:" if c.kind == NUMBER else "---" for c in table.columns) + "|")
    out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    if table.total:
        out.append("| " + " | ".join(f"**{_md_cell(v)}**" if v else "" for v in table.total) + " |")
    out.append("")
    if table.notes:
        out += [f"- {n}" for n in table.notes] + [""]
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_html(report: dict[str, Any], footnotes: Footnotes | None = None) -> str:
    """One page, no external assets: inline CSS, tables, and a bar of GPU-hours by state; ``footnotes`` as for
    ``to_markdown``."""
    footnotes = footnotes or Footnotes.of(report)
    body = [f"<h1>{html.escape(title(report))}</h1><p class='window'>{html.escape(window_line(report))}</p>"]
    scope = scope_line(report)
    if scope:
        body.append(f"<p class='scope'>{_inline(scope)}</p>")
    body.append("<ul class='summary'>" + "".join(f"<li>{_inline(i)}</li>" for i in summary(report)) + "</ul>")
    body.append(_state_bar(report))
    for index, table in enumerate(tables(report, footnotes)):
        body.append(f"<h2>{html.escape(table.title)}</h2>")
        body.append(_html_table(table, f"t{index}"))
    body.append(
        "<h2>Definitions and sources</h2><ul class='definitions'>"
        + "".join(f"<li>{_inline(n)}</li>" for n in definitions(report, footnotes))
        + "</ul>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
        f"{html.escape(title(report))}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _html_table(table: Table, anchor: str) -> str:
    notes = "".join(_html_note(n, anchor) for n in table.notes)
    notes = f"<div class='notes'>{notes}</div>" if notes else ""
    if not table.rows:
        return f"<p class='empty'>{_inline(table.empty)}</p>{notes}"
    kinds = [c.kind for c in table.columns]
    head = "".join(
        f"<th class='{_align(k)}'>{html.escape(c.name)}</th>" for c, k in zip(table.columns, kinds, strict=True)
    )

    def row(values: list[str], css: str = "") -> str:
        cells = "".join(
            f"<td class='{_align(k)}'>{_marks(v, anchor) if k == MARKS else html.escape(v)}</td>"
            for v, k in zip(values, kinds, strict=True)
        )
        return f"<tr{css}>{cells}</tr>"

    rows = "".join(row(r) for r in table.rows)
    if table.total:
        rows += row(table.total, " class='total'")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{notes}"


def _align(kind: str) -> str:
    return "n" if kind == NUMBER else "t"


def _marks(text: str, anchor: str) -> str:
    """Price-source markers as links to their footnote below the table."""
    return _MARK.sub(lambda m: f"<a href='#{anchor}-src-{m.group(1)}'>[{m.group(1)}]</a>", html.escape(text))


def _html_note(note: str, anchor: str) -> str:
    found = re.match(r"\[(\d+)\] ", note)
    ident = f" id='{anchor}-src-{found.group(1)}'" if found else ""
    return f"<p class='note'{ident}>{_inline(note)}</p>"


def _inline(text: str) -> str:
    """The little markdown the report's lines use (``**bold**``, `` `code` ``) as HTML, the rest escaped."""
    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<b>\1</b>", html.escape(text)))


def _state_bar(report: dict[str, Any]) -> str:
    total = report["fleet"]["gpu_hours"] or 0.0
    if not total:
        return ""
    parts = "".join(
        f"<span class='s {s}' style='width:{100.0 * report['states'][s] / total:.3f}%' "
        f"title='{s}: {report['states'][s]:,.1f} GPU-hours'></span>"
        for s in STATES
    )
    legend = "".join(f"<span class='k {s}'></span>{s} " for s in STATES)
    return f"<div class='bar'>{parts}</div><p class='legend'>{legend}</p>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1d2733}
h1{font-size:1.6rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde3ea;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;font-size:.88rem}th,td{padding:.3rem .5rem;border-bottom:1px solid #eef1f4}
th{background:#f5f7f9;vertical-align:bottom}.t{text-align:left}.n{text-align:right;font-variant-numeric:tabular-nums}
td.n{white-space:nowrap}tr.total td{font-weight:600;border-top:2px solid #c9d1da}
.notes{margin:.4rem 0 0}.note{margin:.15rem 0;color:#5b6876;font-size:.82rem}
.window,.scope,.legend,.empty{color:#5b6876;font-size:.9rem}.bar{display:flex;height:1.4rem;border-radius:4px;overflow:hidden}
.s,.k{display:inline-block}.k{width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
.active{background:#2f9e44}.idle_held{background:#e8590c}.idle_allocated{background:#fab005}
.unallocated{background:#868e96}.no_data{background:#d0bfff}
"""
