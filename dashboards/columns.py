"""How each table's columns are shown: one place for a column's name, unit, format and what an empty cell means."""

from __future__ import annotations

from dashboards.tables import Column

NAMESPACE = Column("namespace", empty="(unallocated)", help="Empty: GPU-time no pod held (unallocated).")
WORKLOAD = Column("workload", empty="(no pod)", help="Empty: GPU-time no pod held (unallocated).")
PRICED_BY = Column("priced by", help="The price source of the dollars in this row.")
SPLIT_BY = Column(
    "split by",
    empty="not shared",
    help="How GPU-minutes it shared with other pods were split (not shared: it shared none).",
)
FIX = Column("fix", "link", help="The recommendations that remove this waste.", link_text="recommendations")

WASTERS = {
    "namespace": NAMESPACE,
    "workload": WORKLOAD,
    "cost_usd": Column("idle cost", "usd"),
    "fix": FIX,
    "gpu_hours": Column("idle GPU-hours", "hours"),
    "peak_mem_gib": Column("peak memory (GiB)", "gib", empty="none held"),
    "last_active": Column("last active (UTC)", empty="never in window"),
    "price_source": PRICED_BY,
}

IDLE_WORKLOADS = {
    "namespace": NAMESPACE,
    "workload": WORKLOAD,
    "cost_usd": Column("idle cost", "usd"),
    "fix": FIX,
    "gpu_hours": Column("idle GPU-hours", "hours"),
    "idle_held_hours": Column("with memory held (h)", "hours"),
    "peak_mem_gib": Column("peak memory held (GiB)", "gib", empty="none held"),
    "last_active": Column("last active (UTC)", empty="never in window"),
    "gpu_models": Column("GPU models"),
    "price_source": PRICED_BY,
    "split_by": SPLIT_BY,
}

IDLE_NAMESPACES = {
    "namespace": Column("namespace"),
    "idle_gpu_hours": Column("idle GPU-hours", "hours"),
    "idle_cost_usd": Column("idle cost", "usd"),
    "fix": FIX,
}

CLUSTERS = {
    "cluster": Column("cluster", empty="(unknown)"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "active_hours": Column("active GPU-hours", "hours"),
    "mean_pct": Column("mean utilization", "pct", empty="no samples"),
    "allocation_rate": Column("allocated", "share", help="Share of observed GPU-time a pod or process held."),
    "cost_usd": Column("cost", "usd"),
    "idle_cost_usd": Column("idle cost", "usd"),
}

NODES = {
    "node": Column("node"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "active_hours": Column("active GPU-hours", "hours"),
    "mean_pct": Column("mean utilization", "pct", empty="no samples"),
    "allocation_rate": Column("allocated", "share", help="Share of observed GPU-time a pod or process held."),
    "cost_usd": Column("cost", "usd"),
    "idle_cost_usd": Column("idle cost", "usd"),
}

WALK = {
    "step": Column("step"),
    "line": Column("line"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "cost_usd": Column("cost", "usd"),
    "why": Column("why"),
}

RECONCILED = {
    "namespace": NAMESPACE,
    "gpu_hours": Column("GPU-hours", "hours"),
    "opencost_usd": Column("OpenCost", "usd", help="GPU requests x hours x price."),
    "gpuledger_usd": Column("gpuledger", "usd", help="Measured GPU-time x price."),
    "kubecost_idle_usd": Column("Kubecost idle", "usd"),
    "gpuledger_idle_usd": Column("gpuledger idle", "usd"),
    "underused_usd": Column("underused", "usd"),
    "shared_difference_usd": Column("shared-GPU difference", "usd"),
    "split_by": SPLIT_BY,
}

TEAMS = {
    "team": Column("team"),
    "namespaces": Column("namespaces", empty="none (no pod held it)"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "used_cost_usd": Column("used", "usd"),
    "held_idle_cost_usd": Column("held, idle", "usd"),
    "held_cost_usd": Column("held", "usd"),
    "shared_idle_usd": Column("shared idle", "usd"),
    "total_cost_usd": Column("total", "usd"),
    "split_by": SPLIT_BY,
}

GPU_STATES = {
    "gpu_uuid": Column("GPU UUID"),
    "gpu_model": Column("GPU model", empty="unknown"),
    "gpu_index": Column("index", "count", empty="unknown"),
    "mig_instance_id": Column("MIG instance", "count", empty="whole GPU"),
    "mig_profile": Column("MIG profile", empty="whole GPU"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "active_hours": Column("active (h)", "hours"),
    "idle_held_hours": Column("idle, memory held (h)", "hours"),
    "idle_allocated_hours": Column("idle, allocated (h)", "hours"),
    "unallocated_hours": Column("unallocated (h)", "hours"),
    "no_data_hours": Column("no data (h)", "hours"),
    "mean_pct": Column("mean utilization", "pct", empty="no samples"),
}

HOLDERS = {
    "namespace": NAMESPACE,
    "workload": WORKLOAD,
    "state": Column("state"),
    "split_by": SPLIT_BY,
    "gpu_hours": Column("GPU-hours", "hours"),
    "cost_usd": Column("cost", "usd"),
}

MIG_MODELS = {
    "gpu_model": Column("GPU model"),
    "gpus_now": Column("GPUs now", "count"),
    "gpus_needed": Column("GPUs needed", "count"),
    "gpus_freed": Column("GPUs freed", "count"),
    "usd_per_gpu_hour": Column("price per GPU-hour", "usd"),
    "savings_usd_month": Column("savings per month", "usd"),
    "price_source": PRICED_BY,
}

MIG_WORKLOADS = {
    "namespace": NAMESPACE,
    "workload": WORKLOAD,
    "fits": Column("fits a slice", "bool"),
    "profile": Column("MIG profile", help="The smallest profile that holds its demand (see why)."),
    "gpu_model": Column("GPU model"),
    "replicas": Column("replicas", "count"),
    "peak_mem_gib": Column("peak memory (GiB)", "gib", empty="none held"),
    "memory_demand_gib": Column("memory demand (GiB)", "gib", empty="none held"),
    "util_pct_p95": Column(
        "p95 utilization",
        "pct",
        empty="not measured",
        help="Not measured: no utilization percentile was computed for it (e.g. its GPU model is not MIG-capable); "
        "the why column says what decided its profile.",
    ),
    "history_hours": Column("history (h)", "hours"),
    "confidence": Column("confidence", "number"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "reason": Column("why"),
}

SPOT = {
    "namespace": NAMESPACE,
    "workload": WORKLOAD,
    "workload_kind": Column("kind", empty="unknown"),
    "cluster": Column("cluster", empty="(unknown)"),
    "instance_type": Column("instance type", empty="unknown"),
    "replicas": Column("replicas", "count"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "interruption_risk": Column("interruption risk", empty="no data"),
    "interruptions_per_month": Column("interruptions / month", "number", empty="no data"),
    "net_savings_usd_month": Column("net savings / month", "usd", empty="no price"),
    "interruption_cost_usd_month": Column("interruption cost / month", "usd", empty="no price"),
    "recommended": Column("recommended", "bool"),
    "reason": Column("why"),
    "on_demand_price_source": Column("on-demand priced by", empty="no price"),
    "spot_price_source": Column("spot priced by", empty="no spot price"),
}

RECOMMENDATIONS = {
    "rank": Column("rank", "count"),
    "kind": Column("kind"),
    "change": Column("change"),
    "evidence": Column("evidence", "link", help="The page that shows why it was made.", link_text="evidence"),
    "in_plan": Column("in plan", "bool"),
    "plan_savings_usd_month": Column(
        "banked / month (plan)", "usd", empty="not in plan", help="Not in plan: its cluster's plan does not apply it."
    ),
    "savings_usd_month": Column("if applied alone / month", "usd"),
    "confidence": Column("confidence", "number"),
    "expected_usd_month": Column("expected / month", "usd"),
    "score": Column("score", "number"),
    "risk": Column("risk"),
    "disruption": Column("disruption", empty="none"),
    "target": Column("target"),
    "price_source": Column("priced by", empty="no price"),
}

SILENT_NODES = {
    "cluster": Column("cluster", empty="(unknown)"),
    "node": Column("node"),
    "instance_type": Column("instance type", empty="unknown"),
    "gpus": Column("GPUs", "count"),
    "gpu_count_basis": Column("GPU count from"),
    "reporting": Column("reporting", "count"),
    "silent_gpu_hours": Column("silent GPU-hours", "hours"),
    "cost_usd": Column("cost", "usd"),
}

SPLITS = {
    "split_method": Column("split by"),
    "gpu_minutes": Column("GPU-minutes", "count"),
    "gpu_hours": Column("GPU-hours", "hours"),
    "cost_usd": Column("cost", "usd"),
}

SOURCES = {
    "cluster": Column("cluster", empty="(unknown)"),
    "node": Column("node"),
    "source": Column("source"),
    "gpus": Column("GPUs", "count"),
    "samples": Column("samples", "count"),
    "first_sample": Column("first sample (UTC)", "time"),
    "last_sample": Column("last sample (UTC)", "time"),
}

GAPS = {
    "cluster": Column("cluster", empty="(unknown)"),
    "node": Column("node"),
    "gpu_uuid": Column("GPU UUID"),
    "gpu_index": Column("index", "count", empty="unknown"),
    "mig_instance_id": Column("MIG instance", "count", empty="whole GPU"),
    "gpu_model": Column("GPU model", empty="unknown"),
    "start": Column("from (UTC)", "time"),
    "end": Column("to (UTC)", "time"),
    "no_data_hours": Column("no-data GPU-hours", "hours"),
}

PRICES = {
    "price_source": Column("price source"),
    "price_fallback": Column("fallback", "bool", help="A fallback price: the instance type had no price."),
    "gpu_hours": Column("GPU-hours", "hours"),
    "cost_usd": Column("cost", "usd"),
}

NODE_PRICES = {
    "cluster": Column("cluster", empty="(unknown)"),
    "node": Column("node"),
    "gpu_model": Column("GPU model", empty="unknown"),
    "usd_per_gpu_hour": Column("price per GPU-hour", "usd", empty="no price"),
    "price_source": Column("price source", empty="no price"),
    "price_fallback": Column("fallback", "bool"),
    "gpu_hours": Column("GPU-hours", "hours"),
}
