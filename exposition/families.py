"""The metric families of ``gpuledger server``'s /metrics (README "Cost metrics for Prometheus"), from a snapshot.

Every cost family has ``cluster``; a label whose value is unknown (the namespace of time no pod held) is left out
rather than set empty. Counters are exposed with the ``_total`` suffix prometheus_client adds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from prometheus_client.core import Metric

from exposition.snapshot import CostSnapshot, ServerHealth

PREFIX = "gpuledger_"


def _labels(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _family(name: str, doc: str, kind: str, samples: Iterable[tuple[dict[str, str], float]]) -> Metric:
    family = Metric(PREFIX + name, doc, kind)
    sample_name = family.name + ("_total" if kind == "counter" else "")
    for labels, value in samples:
        family.add_sample(sample_name, labels, float(value))
    return family


def _seconds(at: dt.datetime) -> float:
    return at.timestamp()


def cost_families(snapshot: CostSnapshot) -> Iterator[Metric]:
    """The families computed from the warehouse (``gpuledger.exposing.snapshot``)."""
    usage = snapshot.usage
    keys = [
        (
            u,
            _labels(
                cluster=u.cluster,
                window=u.window,
                state=u.state,
                namespace=u.namespace,
                workload=u.workload,
                gpu_model=u.gpu_model,
            ),
        )
        for u in usage
    ]
    yield _family(
        "gpu_hours",
        "GPU-hours by state, namespace, workload and GPU model over the window ending at the newest minute.",
        "gauge",
        ((labels, u.gpu_hours) for u, labels in keys),
    )
    yield _family(
        "cost_usd",
        "Dollars of those GPU-hours, each at its node's GPU-hour price (gpuledger_price_fallback_gpu_hours: "
        "the ones priced by a fallback).",
        "gauge",
        ((labels, u.cost_usd) for u, labels in keys),
    )
    idle = [
        (
            w,
            _labels(
                cluster=w.cluster, window=w.window, namespace=w.namespace, workload=w.workload, gpu_model=w.gpu_model
            ),
        )
        for w in snapshot.idle_waste
    ]
    yield _family(
        "idle_waste_gpu_hours",
        "Idle GPU-hours (idle_held + idle_allocated + unallocated) over the window.",
        "gauge",
        ((labels, w.gpu_hours) for w, labels in idle),
    )
    yield _family(
        "idle_waste_usd",
        "Dollars of the idle GPU-hours over the window.",
        "gauge",
        ((labels, w.cost_usd) for w, labels in idle),
    )
    yield _family(
        "plan_monthly_savings_usd",
        "Dollars per month the recommendation plan saves, by kind (changes applied together, in rank order).",
        "gauge",
        ((_labels(cluster=p.cluster, kind=p.kind), p.usd_month) for p in snapshot.plan_savings),
    )
    yield _family(
        "silent_gpus",
        "GPUs the node's instance type has that sent no sample in the last hour.",
        "gauge",
        ((_labels(cluster=s.cluster, node=s.node, gpu_model=s.gpu_model), s.gpus) for s in snapshot.silent_gpus),
    )
    yield _family(
        "node_last_sample_timestamp_seconds",
        "When the node's newest sample in the last day was taken (Unix seconds).",
        "gauge",
        (
            (_labels(cluster=cluster, node=node), _seconds(at))
            for (cluster, node), at in sorted(snapshot.node_last_sample.items())
        ),
    )
    yield _family(
        "price_fallback_gpu_hours",
        "GPU-hours over the window priced by a fallback source (the GPU model's price, a default), by source.",
        "gauge",
        (
            (_labels(cluster=f.cluster, window=f.window, price_source=f.price_source), f.gpu_hours)
            for f in snapshot.price_fallbacks
        ),
    )
    yield _family(
        "malformed_lines",
        "Lines of source answers (dcgm-exporter pages, Prometheus answers) that could not be read, by source.",
        "counter",
        ((_labels(source=source), lines) for source, lines in sorted(snapshot.malformed_lines.items())),
    )
    yield _family(
        "newest_minute_timestamp_seconds",
        "The cluster's newest GPU-minute in the warehouse (Unix seconds): where the windows end.",
        "gauge",
        ((_labels(cluster=cluster), _seconds(at)) for cluster, at in sorted(snapshot.newest_minute.items())),
    )


def health_families(health: ServerHealth) -> Iterator[Metric]:
    """The server's own families: its version, the metrics refresh and the follow scrape."""
    yield _family("info", "The gpuledger release serving these metrics.", "gauge", [({"version": health.version}, 1)])
    yield _family(
        "metrics_refresh_timestamp_seconds",
        "When these cost metrics were last computed (Unix seconds).",
        "gauge",
        [({}, _seconds(health.refreshed_at))] if health.refreshed_at is not None else [],
    )
    yield _family(
        "metrics_refresh_failures",
        "Refreshes of the cost metrics that failed (the last good ones stay served).",
        "counter",
        [({}, health.refresh_failures)],
    )
    scrape = health.scrape
    if scrape is None:
        return
    cluster = {"cluster": scrape.cluster}
    yield _family(
        "scrape_last_success_timestamp_seconds",
        "When the follow scrape last stored a step (Unix seconds).",
        "gauge",
        [(cluster, _seconds(scrape.last_success))] if scrape.last_success is not None else [],
    )
    yield _family("scrape_failures", "Follow scrape steps that failed.", "counter", [(cluster, scrape.failures)])
    yield _family(
        "scrape_watermark_timestamp_seconds",
        "The follow scrape has stored everything before this (Unix seconds).",
        "gauge",
        [(cluster, _seconds(scrape.watermark))] if scrape.watermark is not None else [],
    )


def build(snapshot: CostSnapshot | None, health: ServerHealth) -> list[Metric]:
    """Every family of /metrics: the cost ones (none before the first refresh) and the server's own."""
    cost = list(cost_families(snapshot)) if snapshot is not None else []
    return [*cost, *health_families(health)]
