"""Rendering for delivery: the daily and weekly summaries and alert messages, as Slack Block Kit and as email.

Nothing is computed here: every number comes from the fleet report (``gpuledger.reporting``), the recommendations
handed in, or the alert findings. Slack messages are kept inside Block Kit's limits (at most 50 blocks, 3,000
characters in a section's text, 2,000 in a field, 150 in a header; ``check_blocks`` verifies them). Emails carry a
plain-text part and an HTML part; the HTML is the report page of ``alerts.render`` with the digest on top.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from typing import Any

from alerts.footnotes import Footnotes, Marks
from alerts.outbox import Entry, channel_key
from alerts.render import to_html, to_markdown
from alerts.rules import RULES, Finding
from alerts.tables import scope_line, summary, usd, when, window_line

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_FIELD = 2000
MAX_HEADER = 150
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK = 3000
"""The top-level ``text`` (notification and fallback) is kept short; Slack truncates it at 40,000."""


@dataclass(frozen=True)
class Rendered:
    title: str
    slack: dict[str, Any]
    email: dict[str, str]
    """subject, text, html."""

    def entries(self, key: str, channels: list[str], covers: list[list[str]]) -> list[Entry]:
        """One outbox entry per channel, keyed ``key@channel``: Slack gets the Block Kit payload, email the email;
        ``covers``: the alert (rule, subject) pairs the message notifies about."""
        return [
            Entry(
                key=channel_key(key, name),
                channel=name,
                title=self.title,
                payload=self.slack if name == "slack" else self.email,
                covers=covers,
            )
            for name in channels
        ]


# ------------------------------------------------------------------------------------------------------ reports


def report_message(
    report: dict[str, Any], recommendations: list[dict[str, Any]], *, title: str, top_n: int = 5
) -> Rendered:
    """A summary of ``report`` (spend, waste, top idle workloads, top namespaces by cost, the top
    ``recommendations``) for Slack and email; price sources are footnotes (``[1]`` per line, the texts once below),
    numbered as in the report's tables."""
    fleet, waste, util = report["fleet"], report["idle_waste"], report["utilization"]
    footnotes = Footnotes.of(report)
    marks, rec_marks = Marks(footnotes), Marks(footnotes)
    idle_rows = [
        f"{_esc(r['namespace'])}/{_esc(r['workload'])}: {_h(r['gpu_hours'])} idle GPU-hours, {usd(r.get('cost_usd'))}"
        + (f", last active {when(r['last_active'])} UTC" if r.get("last_active") else "")
        + _marked(marks, [r.get("price_source")])
        for r in waste["by_workload"][:top_n]
    ]
    ns_rows = [
        f"{_esc(str(r['namespace']))}: {usd(r.get('cost_usd'))}, {_h(r['gpu_hours'])} GPU-hours, "
        f"{_pct(r.get('mean_pct'))} mean utilization" + _marked(marks, r.get("price_sources") or [])
        for r in sorted(util["by_namespace"], key=lambda r: -(r.get("cost_usd") or 0.0))[:top_n]
    ]
    cluster_rows = [
        f"{_esc(str(r['cluster']))}: {usd(r.get('cost_usd'))}, idle waste {usd(r.get('idle_cost_usd'))}, "
        f"{_h(r['gpu_hours'])} GPU-hours, {_pct(r.get('mean_pct'))} mean utilization"
        + _marked(marks, r.get("price_sources") or [])
        for r in (report.get("by_cluster") or [])[:top_n]
    ]
    team_rows = [
        f"{_esc(str(r['team']))}: {usd(r.get('total_cost_usd'))} ({usd(r.get('used_cost_usd'))} used, "
        f"{usd(r.get('held_idle_cost_usd'))} held idle"
        + (f", {usd(r['shared_idle_usd'])} shared idle" if r.get("shared_idle_usd") else "")
        + ")"
        + _marked(marks, r.get("price_sources") or [])
        for r in ((report.get("cost_allocation") or {}).get("by_team") or [])[:top_n]
    ]
    rec_rows = [
        f"{_esc(r.get('change') or r.get('kind') or '')} ({usd(r.get('savings_usd_month'))}/month"
        + (
            f" on the bill, {usd(r['savings_usd_month_if_applied_alone'])} if applied alone"
            if r.get("savings_usd_month_if_applied_alone") is not None
            else ""
        )
        + (
            f", confidence {float(r['confidence']):.2f}, expected {usd(r.get('expected_savings_usd_month'))}/month"
            if r.get("confidence") is not None
            else ""
        )
        + ")"
        + _marked(rec_marks, [r.get("price_source")])
        for r in recommendations[:top_n]
    ]
    sources = fleet.get("price_sources") or []
    fallbacks = [s for s in sources if s.get("price_fallback")]
    window = window_line(report).removeprefix("Window: ")
    price_note = f"{len(sources)} price source{'s' if len(sources) != 1 else ''}" + (
        f", {len(fallbacks)} fallback ({_h(sum(s['gpu_hours'] for s in fallbacks))} GPU-hours)" if fallbacks else ""
    )
    share = waste.get("share_of_cost")
    fields = [
        ("Spend", usd(fleet["cost_usd"])),
        ("Idle waste", usd(waste["cost_usd"]) + (f" ({100 * share:.1f}% of spend)" if share is not None else "")),
        ("GPUs its pods held" if _team(report) else "GPUs", f"{fleet['gpus']}"),
        ("GPU-hours", _h(fleet["gpu_hours"])),
        ("Mean utilization", _pct(util.get("mean_pct"))),
        ("Idle GPU-hours", _h(waste["gpu_hours"])),
    ]
    underused = report.get("underused")
    if underused:
        fields.append(("Underused", f"{usd(underused['cost_usd'])} ({_h(underused['gpu_hours'])} GPU-hours)"))
    context = [f"Window: {window}", f"Prices: {price_note}"]
    scope = scope_line(report)
    if scope:
        context.append(_esc(scope))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, MAX_HEADER)}},
        _context(context),
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", MAX_FIELD)} for k, v in fields][:MAX_FIELDS],
        },
        {"type": "divider"},
    ]
    blocks += _list_section("Top idle workloads", idle_rows, "no idle workloads in this window")
    blocks += _list_section("Top recommendations", rec_rows, "no recommendation in this window")
    if len(cluster_rows) > 1:
        blocks += _list_section("Spend by cluster", cluster_rows, "")
    blocks += _list_section("Spend by namespace", ns_rows, "no namespace held GPUs")
    if not _team(report) and (report.get("cost_allocation") or {}).get("teams_configured"):
        blocks += _list_section("Spend by team", team_rows, "")
    footnote_lines = [_esc(n) for n in Marks(footnotes, marks.used | rec_marks.used).notes()]
    blocks.append(
        _context(
            [
                "Idle waste = GPU-hours idle_held + idle_allocated + unallocated x their GPU-hour price.",
                "Underused = active GPU-time x (1 - utilization) x its GPU-hour price.",
                *(["Price sources: " + "; ".join(footnote_lines)] if footnote_lines else []),
            ]
        )
    )
    slack = {
        "text": _clip(f"{title}: spend {usd(fleet['cost_usd'])}, idle waste {usd(waste['cost_usd'])}", MAX_FALLBACK),
        "blocks": _cap(blocks),
    }

    digest_text = [title, "", window_line(report), ""]
    digest_text += [f"- {line.replace('**', '')}" for line in summary(report)]
    digest_text += ["", "Top recommendations:"] + ([f"- {r}" for r in _plain(rec_rows)] or ["- none in this window"])
    digest_text += ["", *rec_marks.notes()] if rec_marks.used else []
    text = "\n".join(digest_text) + "\n\n" + to_markdown(report, footnotes)
    recs_html = "".join(f"<li>{html.escape(r)}</li>" for r in _plain(rec_rows)) or "<li>none in this window</li>"
    rec_notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in rec_marks.notes())
    digest_html = (
        f"<h1>{html.escape(title)}</h1><h2>Top recommendations</h2><ol class='recs'>{recs_html}</ol>"
        f"<div class='notes'>{rec_notes}</div>"
    )
    page = to_html(report, footnotes).replace("<body>", f"<body>{digest_html}", 1)
    return Rendered(title, slack, {"subject": title, "text": text, "html": page})


def _marked(marks: Marks, sources: list[str | None]) -> str:
    found = marks.mark(sources)
    return f" {found}" if found else ""


def _team(report: dict[str, Any]) -> bool:
    return bool((report.get("scope") or {}).get("team"))


# ------------------------------------------------------------------------------------------------------- alerts


def alert_message(rule: str, items: list[Finding], *, now: dt.datetime, thresholds: str) -> Rendered:
    """One message for one rule's newly firing findings."""
    name = RULES.get(rule, rule)
    title = f"gpuledger alert: {name} ({len(items)})"
    lines = [_esc(f.text) for f in items]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, MAX_HEADER)}}
    ]
    blocks += _list_section(name, lines, "")
    blocks.append(_context([f"Evaluated {now.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC", _clip(thresholds, MAX_TEXT)]))
    slack = {"text": _clip(f"{title}: " + "; ".join(f.text for f in items), MAX_FALLBACK), "blocks": _cap(blocks)}
    text = "\n".join([title, "", *[f"- {f.text}" for f in items], "", f"Rule thresholds: {thresholds}"]) + "\n"
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
        + html.escape(title)
        + "</title></head><body><h1>"
        + html.escape(title)
        + "</h1><ul>"
        + "".join(f"<li>{html.escape(f.text)}</li>" for f in items)
        + f"</ul><p>Rule thresholds: {html.escape(thresholds)}</p></body></html>\n"
    )
    return Rendered(title, slack, {"subject": title, "text": text, "html": page})


# ------------------------------------------------------------------------------------------------------- limits


def check_blocks(payload: dict[str, Any]) -> list[str]:
    """Every way ``payload`` breaks Block Kit's limits (empty when it keeps them)."""
    problems = []
    blocks = payload.get("blocks", [])
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks (at most {MAX_BLOCKS})")
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "header" and len(block["text"]["text"]) > MAX_HEADER:
            problems.append(f"block {i}: header longer than {MAX_HEADER}")
        if kind == "section":
            if "text" in block and len(block["text"]["text"]) > MAX_TEXT:
                problems.append(f"block {i}: text longer than {MAX_TEXT}")
            if len(block.get("fields", [])) > MAX_FIELDS:
                problems.append(f"block {i}: more than {MAX_FIELDS} fields")
            if any(len(f["text"]) > MAX_FIELD for f in block.get("fields", [])):
                problems.append(f"block {i}: a field longer than {MAX_FIELD}")
            if "text" not in block and "fields" not in block:
                problems.append(f"block {i}: a section needs text or fields")
        if kind == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                problems.append(f"block {i}: {len(elements)} context elements")
            if any(len(e.get("text", "")) > MAX_TEXT for e in elements):
                problems.append(f"block {i}: a context element longer than {MAX_TEXT}")
    return problems


def _list_section(heading: str, lines: list[str], empty: str) -> list[dict[str, Any]]:
    """``lines`` as bullets under a bold heading, split over sections of at most 3,000 characters."""
    if not lines:
        return [_section(f"*{heading}*\n{empty}")] if empty else []
    chunks: list[str] = []
    current = f"*{heading}*"
    for line in lines:
        bullet = "\n• " + _clip(line, MAX_TEXT - 200)
        if len(current) + len(bullet) > MAX_TEXT:
            chunks.append(current)
            current = bullet.lstrip("\n")
        else:
            current += bullet
    chunks.append(current)
    return [_section(chunk) for chunk in chunks]


def _cap(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most 50 blocks: the rest are replaced by one that says how many were left out."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    kept = blocks[: MAX_BLOCKS - 1]
    left = len(blocks) - len(kept)
    return [*kept, _context([f"... {left} more blocks left out (Slack allows {MAX_BLOCKS}); the email has all"])]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_TEXT)}}


def _context(texts: list[str]) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(t, MAX_TEXT)} for t in texts][:10]}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _esc(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(lines: list[str]) -> list[str]:
    return [line.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for line in lines]


def _h(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"
