"""Spot node pools (kind ``spot``): per node group, the eligible spot candidates of ``analysis.spot`` (net of
interruptions). Change: a spot node pool of the same instance type and node selectors for those workloads."""

from __future__ import annotations

from analysis.pricing import SPOT
from analysis.recommend.context import Context, is_aws, sources_text, window_dict, workload_checks
from analysis.recommend.manifests import (
    GPU_RESOURCE,
    node_multiple,
    node_selector_patch,
    nodepool,
    requirement,
)
from analysis.recommend.model import Manifest, Recommendation
from analysis.recommend.names import clean_text
from analysis.spot import LOSS_INPUTS

NAME = "spot"
TITLE = "Spot node pools"


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``spot`` recommendations (see the module docstring)."""
    candidates = [c for c in (ctx.inputs.spot or {}).get("candidates", []) if c.get("recommended")]
    out = []
    keys = ("cluster", "node_group", "instance_type", "region", "gpu_model")
    for key in sorted({tuple(c.get(k) for k in keys) for c in candidates}, key=lambda t: tuple(str(x) for x in t)):
        cluster, node_group, itype, region, _model = key
        members = sorted(
            (c for c in candidates if tuple(c.get(k) for k in keys) == key),
            key=lambda c: (c["namespace"], c["workload"]),
        )
        pool = f"{node_group}-spot"
        checks: list[tuple[str, object, str]] = [
            ("node pool", pool, "label value"),
            ("node pool", pool, "dns-1123 subdomain"),
        ]
        for c in members:
            checks += workload_checks(c["namespace"], c["workload"])
        if not ctx.names_ok("spot", checks):
            continue
        savings = sum(float(c["net_savings_usd_month"]) for c in members)
        replicas = sum(int(c.get("replicas") or 1) for c in members)
        gpus_per_node = int(members[0].get("gpus_per_node") or 1)
        limit = max(node_multiple(itype, replicas), sum(int(c.get("nodes") or 1) for c in members) * gpus_per_node)
        risk_bucket = members[0].get("interruption_risk")
        aws = is_aws(ctx.inputs.catalog, itype, region)
        manifests = []
        if aws:
            manifests.append(
                Manifest(
                    nodepool(
                        pool,
                        requirements=[
                            requirement("node.kubernetes.io/instance-type", itype),
                            requirement("karpenter.sh/capacity-type", SPOT),
                        ],
                        gpu_limit=limit,
                        node_class=ctx.options.karpenter_node_class,
                        consolidation="WhenEmpty",
                        consolidate_after="10m",
                        budgets=[{"nodes": "1"}],
                    ),
                    (
                        f"Spot node pool {pool}: {itype} on spot, interruption risk {risk_bucket} of instances "
                        f"per month (AWS Spot Advisor). limits {GPU_RESOURCE} {limit} = the {replicas} GPUs "
                        "these workloads held at once (estimate) on the nodes they ran on at once, in whole nodes.",
                        "Consolidation WhenEmpty: a node running a job is only ever taken by a spot interruption, "
                        "never by consolidation.",
                    ),
                )
            )
        selector = {"karpenter.sh/nodepool": pool} if aws else {"cloud.google.com/gke-spot": "true"}
        for c in members:
            kind = ctx.kind(c["namespace"], c["workload"])
            manifests.append(
                node_selector_patch(
                    kind,
                    c["namespace"],
                    c["workload"],
                    selector,
                    f"{c['namespace']}/{c['workload']}: {clean_text(c['reason'])}; net "
                    f"{float(c['net_savings_usd_month']):.2f} USD/month after "
                    f"{float(c['interruption_cost_usd_month']):.2f} of expected interruptions "
                    f"({_loss_formula(c)}).",
                    ctx.owner_kind(c["namespace"], c["workload"]),
                )
            )
        out.append(
            Recommendation(
                kind="spot",
                target={"cluster": cluster, "node_group": node_group, "namespace": None, "workload": None},
                change=(
                    f"Run {', '.join(c['namespace'] + '/' + c['workload'] for c in members)} on a spot node pool "
                    f"{pool} ({itype}): interruption risk {risk_bucket} per month."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "instance_type": itype,
                    "interruption_risk": risk_bucket,
                    "assumption_values": (ctx.inputs.spot or {}).get("assumption_values", {}),
                    "candidates": [
                        {
                            k: c.get(k)
                            for k in (
                                "namespace",
                                "workload",
                                "workload_kind",
                                "replicas",
                                "gpu_hours",
                                "on_demand_usd_per_gpu_hour",
                                "spot_usd_per_gpu_hour",
                                *LOSS_INPUTS,
                                "gross_savings_usd_month",
                                "interruption_cost_usd_month",
                                "net_savings_usd_month",
                                "reason",
                            )
                        }
                        | {
                            "workload_kind": ctx.kind(c["namespace"], c["workload"]),
                            "kind_basis": ctx.kind_basis(c["namespace"], c["workload"]),
                        }
                        for c in members
                    ],
                },
                savings_usd_month=savings,
                price_source=sources_text(
                    s for c in members for s in (c.get("on_demand_price_source"), c.get("spot_price_source"))
                ),
                disruption={"pods_restarted": replicas, "node_drain": False, "nodes_drained": 0},
                risk=f"{'high' if (members[0].get('interruption_bucket') or 4) >= 3 else 'medium'}: spot "
                f"interruptions ({risk_bucket} of instances per month) with a 2-minute notice; jobs must resume "
                "from checkpoints",
                confidence=ctx.confidence(ctx.window.hours / 24.0, sum(float(c["gpu_hours"]) for c in members) * 60),
                assumptions=tuple((ctx.inputs.spot or {}).get("assumptions", [])),
                manifests=tuple(manifests),
            )
        )
    return out


def _loss_formula(c: dict[str, object]) -> str:
    """The expected loss as its inputs: interruptions/month x nodes restarted x hours lost x node price."""

    def num(key: str) -> float:
        value = c.get(key)
        return float(value) if isinstance(value, int | float) else float("nan")

    return (
        f"{num('interruptions_per_month'):.4g} interruptions/month x {int(num('nodes_restarted'))} nodes restarted x "
        f"{num('lost_hours_per_interruption'):.4g} h lost x {num('spot_usd_per_node_hour'):.4g} USD/node-hour"
    )
