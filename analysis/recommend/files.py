"""Rendering a ``Plan`` (``analysis.recommend.plan``) as files a cluster admin reads, diffs and applies (pure,
deterministic). One folder per cluster, every file naming its cluster in its header (the YAML's first comment, the
README's title, index.json's ``cluster``), and a top-level README.md and index.json listing the clusters:

- ``<cluster>/<kind>.yaml`` for each kind in the cluster's plan: the Kubernetes objects to ``kubectl apply -f`` and the
  patches against each workload's owner (strategic-merge; JSON merge or JSON patches of custom resources), each
  document with its reasons as comments above it and, for a patch, the exact ``kubectl patch`` command. Identical
  objects (a node pool two recommendations share) are written once.
- ``<cluster>/README.md``: the plan's total (what is applied together) first, every change in plain words with its
  savings, price source, evidence, risk and assumptions, the alternatives left out, and per kind "if applied alone".
- ``<cluster>/index.json``: the same as data (``Recommendation.to_dict``, with confidence, expected savings and
  score, and the fleet rank), with the ranking and plan rules.

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
from analysis.recommend.model import PATCH_NAMES, RANK_RULE, SCORE_RULE, Manifest, Recommendation
from analysis.recommend.names import clean_text
from analysis.recommend.node_hours import RULE as NODE_RULE
from analysis.recommend.plan import COMBINE_RULE, MIG_COMBINE_RULE, PLAN_RULE, Applied, ClusterPlan, Plan


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
        lines.append(_comment(f"{PATCH_NAMES[manifest.patch_type]}; apply with: " + manifest.apply_command()))
    return "\n".join(lines) + ("\n" if lines else "") + _dump(manifest.obj)


def _yaml_file(cluster: str, kind: str, items: list[Recommendation], window: dict[str, str]) -> str:
    from_kind = [r for r in items if r.kind == kind]
    header = [
        _comment(
            f"gpuledger plan for cluster {cluster}: {TITLES[kind]} ({kind}); window {window['start']} to "
            f"{window['end']}"
        ),
        _comment(
            "Objects without a patch note: kubectl apply -f this file applies them. Patches are strategic-merge "
            "patches against the named owner (JSON merge or JSON patches for a custom resource): apply each with "
            "the kubectl patch command above it."
        ),
        _comment(
            f"{len(from_kind)} change(s) of the plan; README.md explains each "
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


def _readme(plan: Plan, cp: ClusterPlan, files: list[str]) -> str:
    window = plan.result.window
    name = _md(cp.cluster)
    lines = [
        f"# gpuledger plan for cluster {name}",
        "",
        f"Cluster: {name}. Window: {window.start.isoformat()} to {window.end.isoformat()} (UTC, end exclusive).",
        "",
        f"**{len(cp.applied)} changes applied together: {_money(cp.savings_usd_month)} per month** "
        f"({_money(cp.expected_savings_usd_month)} expected = savings x confidence). {_basis(cp)} "
        f"Plan rule: {PLAN_RULE}. "
        f"Ranked by expected savings per unit of disruption: score = {SCORE_RULE}.",
        "",
        "| rank | kind | target | change | savings / month (nodes removed) | if applied alone / month | confidence "
        "| expected / month | pods restarted | node drain | score |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for a in cp.applied:
        r = a.rec
        lines.append(
            f"| {a.rank} | {r.kind} | {_md(_target(r))} | {_md(r.change)} | {_money(a.savings_usd_month)} | "
            f"{_money(r.savings_usd_month)} | {r.confidence:.2f} | {_money(a.expected_savings_usd_month)} | "
            f"{r.disruption.get('pods_restarted', 0)} | {'yes' if r.disruption.get('node_drain') else 'no'} | "
            f"{r.score:,.2f} |"
        )
    lines += [
        f"| | **plan** | | applied together | **{_money(cp.savings_usd_month)}** | | | "
        f"{_money(cp.expected_savings_usd_month)} | | | |",
        "",
        *_nodes_table(cp),
        "Files: " + ", ".join(f"`{f}`" for f in files) + ".",
        "",
        "## Alternatives (not applied)",
        "",
    ]
    if cp.alternatives:
        lines += [
            "| rank | kind | for | change | savings / month if applied alone | confidence | instead |",
            "|---:|---|---|---|---:|---:|---|",
        ]
        for alt in cp.alternatives:
            lines.append(
                f"| {alt.rank} | {alt.rec.kind} | {_md(', '.join(f'{ns}/{wl}' for ns, wl in alt.workloads))} | "
                f"{_md(alt.rec.change)} | {_money(alt.savings_usd_month)} | {alt.rec.confidence:.2f} | "
                + _md(", ".join(f"{k} (rank {i})" for k, i in alt.instead) or alt.reason)
                + " |"
            )
        lines.append("")
    else:
        lines += ["None: no two changes compete for a workload.", ""]
    lines += [
        "## Per kind, if applied alone",
        "",
        "What each kind's recommendations save on their own; they overlap, so they do not add up to the plan.",
        "",
        "| kind | savings / month if applied alone |",
        "|---|---:|",
    ]
    lines += [f"| {kind} | {_money(cp.alone[kind])} |" for kind in KINDS if kind in cp.alone]
    lines.append("")
    for kind in KINDS:
        items = [a for a in cp.applied if a.rec.kind == kind]
        if not items:
            continue
        lines += [f"## {TITLES[kind]} (`{kind}`)", "", f"Apply from `{kind}.yaml`.", ""]
        for a in items:
            r = a.rec
            lines += [
                f"### {_md(_target(r))}",
                "",
                _md(r.change),
                "",
                f"- Savings: **{_money(a.savings_usd_month)} per month** on the bill"
                + (
                    f" ({a.banked.node_hours_removed_month:,.1f} node-hours a month removed"
                    + (
                        f", less {_money(a.banked.spot_loss_usd_month)} of expected spot interruptions"
                        if a.banked.spot_loss_usd_month
                        else ""
                    )
                    + f"); {_money(r.savings_usd_month)} if applied alone, by GPU-hours"
                    if a.banked is not None
                    else ""
                )
                + f" (prices: {_md(r.price_source)})",
                f"- Risk: {_md(r.risk)}",
                f"- Disruption: {r.disruption.get('pods_restarted', 0)} pod(s) restarted, "
                + (
                    f"{r.disruption.get('nodes_drained', 0)} node(s) drained"
                    if r.disruption.get("node_drain")
                    else "no node drained"
                ),
                f"- Confidence: {r.confidence:.2f}; expected savings {_money(r.expected_savings_usd_month)} per "
                f"month; score {r.score:,.2f} (rank {a.rank})",
                "- Evidence: " + _md(json.dumps(_short(r.evidence), sort_keys=True)),
            ]
            if a.note:
                lines.append(f"- In the plan: {_md(a.note)}")
            if a.banked is not None and a.banked.note:
                lines.append(f"- Nodes: {_md(a.banked.note)}")
            lines += [f"- Assumption: {_md(x)}" for x in r.assumptions]
            lines.append("")
    lines += ["## Assumptions", ""] + [f"- {k}: {_md(v)}" for k, v in sorted(plan.result.assumptions.items())] + [""]
    return "\n".join(lines)


def _top_readme(plan: Plan) -> str:
    window = plan.result.window
    lines = [
        "# gpuledger recommendations",
        "",
        f"Window: {window.start.isoformat()} to {window.end.isoformat()} (UTC, end exclusive).",
        "",
        f"**{_money(plan.savings_usd_month)} per month** from {sum(len(c.applied) for c in plan.clusters)} changes "
        f"applied together in {len(plan.clusters)} cluster plan(s) ({_money(plan.expected_savings_usd_month)} "
        "expected). One folder per cluster: apply a cluster's files to that cluster only.",
        "",
        "| cluster | folder | changes | alternatives | savings / month | expected / month |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for cp in plan.clusters:
        lines.append(
            f"| {_md(cp.cluster)} | `{cp.folder}/` | {len(cp.applied)} | {len(cp.alternatives)} | "
            f"{_money(cp.savings_usd_month)} | {_money(cp.expected_savings_usd_month)} |"
        )
    lines.append("")
    if plan.result.warnings:
        lines += ["## Skipped", ""] + [f"- {_md(w)}" for w in plan.result.warnings] + [""]
    return "\n".join(lines)


def _short(evidence: dict[str, Any]) -> dict[str, Any]:
    """The evidence without its long lists (they are in index.json)."""
    return {
        k: (f"{len(v)} rows in index.json" if isinstance(v, list) and len(v) > 3 else v) for k, v in evidence.items()
    }


def _applied_dict(a: Applied) -> dict[str, Any]:
    banked = (
        {
            "savings_usd_month": round(a.savings_usd_month, 2),
            "expected_savings_usd_month": round(a.expected_savings_usd_month, 2),
            "savings_usd_month_if_applied_alone": round(a.rec.savings_usd_month, 2),
            "banked": a.banked.to_dict(),
        }
        if a.banked is not None
        else {}
    )
    return {"rank": a.rank, **a.rec.to_dict(), **banked, **({"plan_note": a.note} if a.note else {})}


def _basis(cp: ClusterPlan) -> str:
    if cp.nodes is None:
        return "Savings are each change's own figure (no pod-hours to pack onto nodes)."
    return f"Savings are node-hours that go away x their price: {NODE_RULE}."


def _nodes_table(cp: ClusterPlan) -> list[str]:
    """Per node pool: nodes seen, today's pods packed, and after the plan (means over the window), and the money."""
    if cp.nodes is None:
        return []
    n = cp.nodes
    lines = [
        "## Nodes before and after the plan",
        "",
        "Mean nodes over the window: seen (billed today), today's pods packed onto the fewest nodes (the baseline of "
        "every placement change), and after the plan; node-hours removed are what the plan's changes remove (an "
        "autoscaling change also banks the gap between seen and packed). The plan's total = the USD column, less "
        f"expected spot interruptions ({_money(sum(a.banked.spot_loss_usd_month for a in cp.applied if a.banked))} "
        "a month).",
        "",
        "| node pool | nodes seen | packed today | after plan | USD / node-hour | node-hours / month removed "
        "| USD / month |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in n.to_dict()["nodes"]:
        lines.append(
            f"| {_md(row['pool'])} | {row['nodes_seen_mean']:,.2f} | {row['nodes_packed_today_mean']:,.2f} | "
            f"{row['nodes_after_plan_mean']:,.2f} | {row['usd_per_node_hour']:,.4f} | "
            f"{row['node_hours_removed_month']:,.1f} | {_money(row['savings_usd_month'])} |"
        )
    lines.append("")
    lines += [f"- {_md(note)}" for note in n.notes]
    if n.notes:
        lines.append("")
    return lines


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2, default=str, ensure_ascii=True) + "\n"


def render(plan: Plan) -> dict[str, str]:
    """Relative path -> exact text: per cluster ``<folder>/<kind>.yaml`` for each kind in its plan, its ``README.md``
    and ``index.json``; at the top ``README.md`` and ``index.json`` listing the clusters."""
    result = plan.result
    window = {"start": result.window.start.isoformat(), "end": result.window.end.isoformat()}
    files: dict[str, str] = {}
    for cp in plan.clusters:
        items = [a.rec for a in cp.applied]
        mine: dict[str, str] = {}
        for kind in KINDS:
            if any(r.kind == kind for r in items):
                mine[f"{kind}.yaml"] = _yaml_file(clean_text(cp.cluster), kind, items, window)
        names = [*mine, "README.md", "index.json"]
        index = {
            "cluster": cp.cluster,
            "window": window,
            "savings_usd_month": round(cp.savings_usd_month, 2),
            "expected_savings_usd_month": round(cp.expected_savings_usd_month, 2),
            "plan": {"rule": PLAN_RULE, "combine": COMBINE_RULE, "combine_mig": MIG_COMBINE_RULE},
            "if_applied_alone_usd_month": {k: round(v, 2) for k, v in cp.alone.items()},
            "ranking": {"score": SCORE_RULE, "order": RANK_RULE},
            "files": names,
            "recommendations": [_applied_dict(a) for a in cp.applied],
            "alternatives": [alt.to_dict() for alt in cp.alternatives],
            "assumptions": result.assumptions,
            **({"nodes": cp.nodes.to_dict()} if cp.nodes is not None else {}),
        }
        mine["README.md"] = _readme(plan, cp, names)
        mine["index.json"] = _json(index)
        files.update({f"{cp.folder}/{name}": text for name, text in mine.items()})
    files["README.md"] = _top_readme(plan)
    files["index.json"] = _json(
        {
            "window": window,
            "savings_usd_month": round(plan.savings_usd_month, 2),
            "expected_savings_usd_month": round(plan.expected_savings_usd_month, 2),
            "clusters": [
                {
                    "cluster": cp.cluster,
                    "folder": cp.folder,
                    "changes": len(cp.applied),
                    "alternatives": len(cp.alternatives),
                    "savings_usd_month": round(cp.savings_usd_month, 2),
                    "expected_savings_usd_month": round(cp.expected_savings_usd_month, 2),
                }
                for cp in plan.clusters
            ],
            "warnings": list(result.warnings),
        }
    )
    return files
