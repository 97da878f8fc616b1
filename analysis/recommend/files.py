"""Rendering a ``RecommendationSet`` as files a cluster admin reads, diffs and applies (pure, deterministic).

- ``<kind>.yaml`` for each kind with recommendations: the Kubernetes objects to ``kubectl apply -f`` and the
  strategic-merge patches against each workload's owner, each document with its reasons as comments above it and,
  for a patch, the exact ``kubectl patch`` command. Identical objects (a node pool two recommendations share) are
  written once.
- ``README.md``: every change in plain words with its savings, price source, evidence, risk and assumptions.
- ``index.json``: the recommendations as data (``Recommendation.to_dict``, with confidence, expected savings and
  score), ranked, with the ranking rule.

Keys are sorted, floats rounded, and nothing but the window is a time: the same data gives the same bytes. Every
text taken from telemetry or settings passes through ``names.clean_text`` (one line, no control characters);
names in objects have been checked against Kubernetes' rules before they got here, and YAML is written by
``yaml.safe_dump``, which quotes whatever needs quoting.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from analysis.recommend.kinds import KINDS, TITLES
from analysis.recommend.model import RANK_RULE, SCORE_RULE, Manifest, Recommendation, RecommendationSet
from analysis.recommend.names import clean_text


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` writing multi-line strings (embedded configs) as literal blocks, readable in a diff."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def _dump(obj: Any) -> str:
    return str(
        yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1000, allow_unicode=False)
    )


def _comment(text: str) -> str:
    return "# " + clean_text(text)


def _doc(manifest: Manifest) -> str:
    lines = [_comment(c) for c in manifest.comments]
    if manifest.patch:
        lines.append(_comment("strategic-merge patch; apply with: " + manifest.apply_command()))
    return "\n".join(lines) + ("\n" if lines else "") + _dump(manifest.obj)


def _yaml_file(kind: str, items: list[Recommendation], window: dict[str, str]) -> str:
    from_kind = [r for r in items if r.kind == kind]
    header = [
        _comment(f"gpuledger recommendations: {TITLES[kind]} ({kind}); window {window['start']} to {window['end']}"),
        _comment(
            "Objects without a patch note: kubectl apply -f this file applies them. Patches are strategic-merge "
            "patches against the named owner: apply each with the kubectl patch command above it."
        ),
        _comment(
            f"{len(from_kind)} recommendation(s); README.md explains each "
            f"(kind {KINDS.index(kind) + 1} of {len(KINDS)})."
        ),
    ]
    seen: set[str] = set()
    docs = []
    for r in from_kind:
        for m in r.manifests:
            key = json.dumps(m.obj, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            docs.append(_doc(m))
    return "\n".join(header) + "\n---\n" + "---\n".join(docs)


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _target(r: Recommendation) -> str:
    t = r.target
    parts = [t.get("cluster"), t.get("node_group")]
    who = "/".join(p for p in (t.get("namespace"), t.get("workload")) if p)
    return " / ".join(clean_text(p) for p in (*parts, who) if p) or "-"


def _md(text: object) -> str:
    return clean_text(text).replace("|", "\\|")


def _readme(result: RecommendationSet, files: list[str]) -> str:
    window = result.window
    lines = [
        "# gpuledger recommendations",
        "",
        f"Window: {window.start.isoformat()} to {window.end.isoformat()} (UTC, end exclusive).",
        "",
        f"{len(result.items)} recommendations, {_money(result.savings_usd_month)} per month in all, "
        f"{_money(result.expected_savings_usd_month)} expected (kinds overlap: see Assumptions). Ranked by expected "
        f"savings per unit of disruption: score = {SCORE_RULE}; expected savings = savings x confidence.",
        "",
        "| # | kind | target | change | savings / month | confidence | expected / month | pods restarted "
        "| node drain | score |",
        "|---:|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for i, r in enumerate(result.items, 1):
        lines.append(
            f"| {i} | {r.kind} | {_md(_target(r))} | {_md(r.change)} | {_money(r.savings_usd_month)} | "
            f"{r.confidence:.2f} | {_money(r.expected_savings_usd_month)} | {r.disruption.get('pods_restarted', 0)} | "
            f"{'yes' if r.disruption.get('node_drain') else 'no'} | {r.score:,.2f} |"
        )
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files) + ".", ""]
    rank = {id(r): i for i, r in enumerate(result.items, 1)}
    for kind in KINDS:
        items = [r for r in result.items if r.kind == kind]
        lines += [f"## {TITLES[kind]} (`{kind}`)", ""]
        if not items:
            lines += ["No recommendation of this kind in the window.", ""]
            continue
        lines += [f"Apply from `{kind}.yaml`.", ""]
        for r in items:
            lines += [
                f"### {_md(_target(r))}",
                "",
                _md(r.change),
                "",
                f"- Savings: **{_money(r.savings_usd_month)} per month** (prices: {_md(r.price_source)})",
                f"- Risk: {_md(r.risk)}",
                f"- Disruption: {r.disruption.get('pods_restarted', 0)} pod(s) restarted, "
                + (
                    f"{r.disruption.get('nodes_drained', 0)} node(s) drained"
                    if r.disruption.get("node_drain")
                    else "no node drained"
                ),
                f"- Confidence: {r.confidence:.2f}; expected savings {_money(r.expected_savings_usd_month)} per "
                f"month; score {r.score:,.2f} (rank {rank[id(r)]})",
                "- Evidence: " + _md(json.dumps(_short(r.evidence), sort_keys=True)),
            ]
            lines += [f"- Assumption: {_md(a)}" for a in r.assumptions]
            lines.append("")
    if result.warnings:
        lines += ["## Skipped", ""] + [f"- {_md(w)}" for w in result.warnings] + [""]
    lines += ["## Assumptions", ""] + [f"- {k}: {_md(v)}" for k, v in sorted(result.assumptions.items())] + [""]
    return "\n".join(lines)


def _short(evidence: dict[str, Any]) -> dict[str, Any]:
    """The evidence without its long lists (they are in index.json)."""
    return {
        k: (f"{len(v)} rows in index.json" if isinstance(v, list) and len(v) > 3 else v) for k, v in evidence.items()
    }


def render(result: RecommendationSet) -> dict[str, str]:
    """File name -> exact text: one YAML per kind that has recommendations, ``README.md`` and ``index.json``."""
    window = {"start": result.window.start.isoformat(), "end": result.window.end.isoformat()}
    files: dict[str, str] = {}
    for kind in KINDS:
        if any(r.kind == kind for r in result.items):
            files[f"{kind}.yaml"] = _yaml_file(kind, result.items, window)
    names = [*files, "README.md", "index.json"]
    index = {
        "window": window,
        "savings_usd_month": round(result.savings_usd_month, 2),
        "expected_savings_usd_month": round(result.expected_savings_usd_month, 2),
        "ranking": {"score": SCORE_RULE, "order": RANK_RULE},
        "files": names,
        "recommendations": [{"rank": i, **r.to_dict()} for i, r in enumerate(result.items, 1)],
        "warnings": list(result.warnings),
        "assumptions": result.assumptions,
    }
    files["README.md"] = _readme(result, names)
    files["index.json"] = json.dumps(index, sort_keys=True, indent=2, default=str, ensure_ascii=True) + "\n"
    return files
