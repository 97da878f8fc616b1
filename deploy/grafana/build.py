"""Builds deploy/grafana/gpuledger.json, the Grafana dashboard over gpuledger's cost metrics and dcgm-exporter's.

Run ``python deploy/grafana/build.py`` after changing a panel; ``tests/test_grafana.py`` checks that the committed
JSON is what this builds and that every query returns data from a real Prometheus.

One row per question a FinOps lead asks: what does the fleet cost and how much is wasted, who wastes it, which GPU
models cost what, is the fleet busy, and can these numbers be trusted. The cost families are those of
``gpuledger server``'s /metrics (README "Cost metrics for Prometheus"); a "1h"/"24h" window ends at the warehouse's
newest minute, so a time series of the "1h" window reads as dollars (or GPU-hours) per hour. dcgm-exporter's series
carry no ``cluster`` label in a one-cluster Prometheus, so the utilization row is not filtered by ``$cluster``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, piechart, stat, table, timeseries
from grafana_foundation_sdk.builders.common import HideSeriesConfig, ReduceDataOptions, StackingConfig, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueGraphMode,
    BigValueTextMode,
    FieldTextAlignment,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "gpuledger-fleet-cost"
OUTPUT = Path(__file__).with_name("gpuledger.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every panel and query reads the data source the ``datasource`` variable picks."""
C = 'cluster=~"$cluster"'
"""The cluster filter of every gpuledger family (``$cluster`` is multi-valued, with All)."""

USD = "currencyUSD"
HOURS = "h"
PERCENT = "percent"
MIB = "mbytes"
"""dcgm-exporter's DCGM_FI_DEV_FB_* are MiB; Grafana's ``mbytes`` is MiB (binary)."""
SECONDS = "s"


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> Dataquery:
    q = Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def _steps(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(value=v, color=c) for v, c in steps])


PLAIN = _steps((None, "blue"))


def big_number(
    panel_id: int,
    title: str,
    expr: str,
    unit: str,
    description: str,
    *,
    span: int,
    no_value: str | None = None,
    legend: str = "",
) -> stat.Panel:
    panel = (
        stat.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, legend, instant=True))
        .unit(unit)
        .decimals(2 if unit == USD else 1)
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(PLAIN)
        .height(4)
        .span(span)
    )
    return panel.no_value(no_value) if no_value is not None else panel


def bars(
    panel_id: int, title: str, targets: list[Dataquery], unit: str, description: str, *, span: int
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .orientation(VizOrientation.HORIZONTAL)
        .display_mode(BarGaugeDisplayMode.BASIC)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(PLAIN)
        .min(0)
        .height(9)
        .span(span)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def series(
    panel_id: int,
    title: str,
    targets: list[Dataquery],
    unit: str,
    description: str,
    *,
    span: int,
    stacked: bool = False,
    max_val: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .fill_opacity(25 if stacked else 10)
        .legend(
            VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM).show_legend(True)
        )
        .height(9)
        .span(span)
    )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL))
    if max_val is not None:
        panel = panel.max(max_val)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def cost_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("What does the fleet cost, and how much of it is wasted?").id(100))
    d = d.with_panel(
        big_number(
            1,
            "GPU cost (24h)",
            f'sum(gpuledger_cost_usd{{{C}, window="24h"}})',
            USD,
            "Dollars of every GPU-hour of the last 24 h, each at its node's GPU-hour price.",
            span=5,
        )
    )
    d = d.with_panel(
        big_number(
            2,
            "Idle waste (24h)",
            f'sum(gpuledger_idle_waste_usd{{{C}, window="24h"}})',
            USD,
            "Dollars of the idle GPU-hours (idle_held + idle_allocated + unallocated) of the last 24 h.",
            span=5,
        )
    )
    d = d.with_panel(
        big_number(
            3,
            "Waste share (24h)",
            f'100 * sum(gpuledger_idle_waste_usd{{{C}, window="24h"}}) / sum(gpuledger_cost_usd{{{C}, window="24h"}})',
            PERCENT,
            "Idle waste as a share of the GPU cost of the last 24 h.",
            span=4,
        ).thresholds(_steps((None, "green"), (20, "orange"), (40, "red")))
    )
    d = d.with_panel(
        big_number(
            4,
            "GPU-hours (24h)",
            f'sum(gpuledger_gpu_hours{{{C}, window="24h"}})',
            HOURS,
            "GPU-hours of the last 24 h in every state, no_data included (paid and unobserved).",
            span=5,
        )
    )
    d = d.with_panel(
        big_number(
            5,
            "Plan savings per month",
            f"sum(gpuledger_plan_monthly_savings_usd{{{C}}})",
            USD,
            "What the recommendation plan (gpuledger recommend) saves per month, its changes applied together.",
            span=5,
        ).thresholds(_steps((None, "green")))
    )
    d = d.with_panel(
        series(
            6,
            "Hourly GPU cost by state",
            [query(f'sum by (state) (gpuledger_cost_usd{{{C}, window="1h"}})', "{{state}}")],
            USD,
            "Dollars of the hour ending at each point, by state (active, idle_held, idle_allocated, unallocated, "
            "no_data).",
            span=12,
            stacked=True,
        )
    )
    d = d.with_panel(
        piechart.Panel()
        .id(7)
        .title("Cost by state (24h)")
        .description("Where the last 24 h of GPU spend went, by state.")
        .datasource(DATASOURCE)
        .with_target(query(f'sum by (state) (gpuledger_cost_usd{{{C}, window="24h"}})', "{{state}}", instant=True))
        .unit(USD)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .hide_from(HideSeriesConfig().tooltip(False).legend(False).viz(False))
        .height(9)
        .span(6)
    )
    return d.with_panel(
        bars(
            8,
            "Plan savings per month by kind",
            [query(f"sum by (kind) (gpuledger_plan_monthly_savings_usd{{{C}}})", "{{kind}}", instant=True)],
            USD,
            "The plan's monthly savings by kind of change (mig, spot, time_slicing, packing, ...).",
            span=6,
        )
    )


def waste_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("Who wastes it?").id(101))
    d = d.with_panel(
        bars(
            9,
            "Idle waste by workload (24h)",
            [
                query(
                    f'topk(15, sum by (namespace, workload) (gpuledger_idle_waste_usd{{{C}, window="24h", '
                    'workload!=""}))',
                    "{{namespace}}/{{workload}}",
                    instant=True,
                )
            ],
            USD,
            "The 15 workloads whose held GPUs sat idle at the highest cost over the last 24 h.",
            span=12,
        )
    )
    d = d.with_panel(
        bars(
            10,
            "Idle waste by namespace (24h)",
            [
                query(
                    f'sum by (namespace) (gpuledger_idle_waste_usd{{{C}, window="24h", namespace!=""}})',
                    "{{namespace}}",
                    instant=True,
                ),
                query(
                    f'sum(gpuledger_idle_waste_usd{{{C}, window="24h", namespace=""}})',
                    "(unallocated: no pod held it)",
                    "B",
                    instant=True,
                ),
            ],
            USD,
            "Idle dollars by namespace; GPU time no pod held is its own bar.",
            span=12,
        )
    )
    d = d.with_panel(
        table.Panel()
        .id(11)
        .title("Idle workloads (24h)")
        .description("Each workload's idle GPU-hours and their dollars over the last 24 h, by GPU model.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f'sum by (namespace, workload, gpu_model) (gpuledger_idle_waste_gpu_hours{{{C}, window="24h", '
                'workload!=""})',
                instant=True,
            ).format(PromQueryFormat.TABLE)
        )
        .with_target(
            query(
                f'sum by (namespace, workload, gpu_model) (gpuledger_idle_waste_usd{{{C}, window="24h", '
                'workload!=""})',
                ref="B",
                instant=True,
            ).format(PromQueryFormat.TABLE)
        )
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "renameByName": {"Value #A": "Idle GPU-hours", "Value #B": "Idle USD"},
                },
            )
        )
        .unit("none")
        .align(FieldTextAlignment.AUTO)
        .inspect(False)
        .override_by_name("Idle GPU-hours", [DynamicConfigValue(id_val="unit", value=HOURS)])
        .override_by_name("Idle USD", [DynamicConfigValue(id_val="unit", value=USD)])
        .height(9)
        .span(12)
    )
    return d.with_panel(
        series(
            12,
            "Idle GPU-hours per hour by namespace",
            [
                query(
                    f'sum by (namespace) (gpuledger_idle_waste_gpu_hours{{{C}, window="1h", namespace!=""}})',
                    "{{namespace}}",
                ),
                query(f'sum(gpuledger_idle_waste_gpu_hours{{{C}, window="1h", namespace=""}})', "(unallocated)", "B"),
            ],
            HOURS,
            "Idle GPU-hours of the hour ending at each point: a value of 3 is three GPUs idle all hour.",
            span=12,
            stacked=True,
        )
    )


def model_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("Which GPU models cost what?").id(102))
    d = d.with_panel(
        bars(
            13,
            "Cost by GPU model (24h)",
            [query(f'sum by (gpu_model) (gpuledger_cost_usd{{{C}, window="24h"}})', "{{gpu_model}}", instant=True)],
            USD,
            "Dollars of the last 24 h by GPU model.",
            span=8,
        )
    )
    d = d.with_panel(
        bars(
            14,
            "Idle share by GPU model (24h)",
            [
                query(
                    f'100 * sum by (gpu_model) (gpuledger_idle_waste_usd{{{C}, window="24h"}}) '
                    f'/ sum by (gpu_model) (gpuledger_cost_usd{{{C}, window="24h"}})',
                    "{{gpu_model}}",
                    instant=True,
                )
            ],
            PERCENT,
            "Idle dollars as a share of each model's dollars over the last 24 h.",
            span=8,
        ).max(100)
    )
    return d.with_panel(
        series(
            15,
            "Hourly cost by GPU model",
            [query(f'sum by (gpu_model) (gpuledger_cost_usd{{{C}, window="1h"}})', "{{gpu_model}}")],
            USD,
            "Dollars of the hour ending at each point, by GPU model.",
            span=8,
            stacked=True,
        )
    )


def busy_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("Is the fleet busy? (dcgm-exporter)").id(103))
    by_node = "Hostname, hostname"
    node_legend = "{{Hostname}}{{hostname}}"
    d = d.with_panel(
        series(
            16,
            "GPU utilization by model",
            [query("avg by (modelName) (DCGM_FI_DEV_GPU_UTIL)", "{{modelName}}")],
            PERCENT,
            "Mean DCGM_FI_DEV_GPU_UTIL of each GPU model (MIG instances report none).",
            span=12,
            max_val=100,
        )
    )
    d = d.with_panel(
        series(
            17,
            "GPU utilization by node",
            [query(f"avg by ({by_node}) (DCGM_FI_DEV_GPU_UTIL)", node_legend)],
            PERCENT,
            "Mean DCGM_FI_DEV_GPU_UTIL of each node's GPUs (released exporters label it Hostname, newer hostname).",
            span=12,
            max_val=100,
        )
    )
    d = d.with_panel(
        series(
            18,
            "Framebuffer used by model",
            [query("sum by (modelName) (DCGM_FI_DEV_FB_USED)", "{{modelName}}")],
            MIB,
            "GPU memory in use (DCGM_FI_DEV_FB_USED, MiB) summed over each model's GPUs.",
            span=12,
            stacked=True,
        )
    )
    return d.with_panel(
        series(
            19,
            "Framebuffer used share by node",
            [
                query(
                    f"100 * sum by ({by_node}) (DCGM_FI_DEV_FB_USED) / (sum by ({by_node}) (DCGM_FI_DEV_FB_USED) "
                    f"+ sum by ({by_node}) (DCGM_FI_DEV_FB_FREE))",
                    node_legend,
                )
            ],
            PERCENT,
            "Used / (used + free) GPU memory of each node's GPUs.",
            span=12,
            max_val=100,
        )
    )


def trust_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("Can I trust these numbers?").id(104))
    d = d.with_panel(
        big_number(
            20,
            "Silent GPUs",
            f"sum(gpuledger_silent_gpus{{{C}}})",
            "none",
            "GPUs of their node's instance type that sent no sample in the last hour: their time is no_data.",
            span=4,
            no_value="0",
        ).thresholds(_steps((None, "green"), (1, "red")))
    )
    d = d.with_panel(
        big_number(
            21,
            "Fallback-priced GPU-hours (24h)",
            f'sum(gpuledger_price_fallback_gpu_hours{{{C}, window="24h"}})',
            HOURS,
            "GPU-hours priced by a fallback (GPU model price, default price): add the instance types' prices.",
            span=4,
            no_value="0",
        ).thresholds(_steps((None, "green"), (0.01, "orange")))
    )
    d = d.with_panel(
        big_number(
            22,
            "Scrape lag",
            f"max(time() - gpuledger_scrape_watermark_timestamp_seconds{{{C}}})",
            SECONDS,
            "How far behind now the follow scrape's watermark is (everything before it is stored).",
            span=4,
        ).thresholds(_steps((None, "green"), (900, "orange"), (3600, "red")))
    )
    d = d.with_panel(
        big_number(
            23,
            "Scrape failures (range)",
            f"sum(increase(gpuledger_scrape_failures_total{{{C}}}[$__range]))",
            "none",
            "Follow scrape steps that failed over the dashboard's time range.",
            span=4,
            no_value="0",
        ).thresholds(_steps((None, "green"), (1, "orange")))
    )
    d = d.with_panel(
        big_number(
            24,
            "Metrics age",
            "time() - max(gpuledger_metrics_refresh_timestamp_seconds)",
            SECONDS,
            "Since the server last recomputed these cost metrics (every metrics_every_s, 60 s by default).",
            span=4,
        ).thresholds(_steps((None, "green"), (300, "orange"), (900, "red")))
    )
    d = d.with_panel(
        big_number(
            25,
            "gpuledger version",
            "max by (version) (gpuledger_info)",
            "none",
            "The gpuledger release serving these metrics.",
            span=4,
            legend="{{version}}",
        ).text_mode(BigValueTextMode.NAME)
    )
    d = d.with_panel(
        bars(
            26,
            "Age of each node's newest sample",
            [
                query(
                    f"sort_desc(time() - max by (cluster, node) (gpuledger_node_last_sample_timestamp_seconds{{{C}}}))",
                    "{{cluster}}/{{node}}",
                    instant=True,
                )
            ],
            SECONDS,
            "Since each node's newest sample: a node past 30 min is silent (GpuledgerNodeSilent).",
            span=8,
        ).thresholds(_steps((None, "green"), (600, "orange"), (1800, "red")))
    )
    d = d.with_panel(
        bars(
            27,
            "Silent GPUs by node",
            [
                query(
                    f"sum by (cluster, node, gpu_model) (gpuledger_silent_gpus{{{C}}})",
                    "{{cluster}}/{{node}} ({{gpu_model}})",
                    instant=True,
                )
            ],
            "none",
            "Nodes with GPUs that sent nothing in the last hour: check their dcgm-exporter or agent.",
            span=8,
        )
    )
    d = d.with_panel(
        bars(
            28,
            "Fallback-priced GPU-hours by source (24h)",
            [
                query(
                    f'sum by (price_source) (gpuledger_price_fallback_gpu_hours{{{C}, window="24h"}})',
                    "{{price_source}}",
                    instant=True,
                )
            ],
            HOURS,
            "Which fallback priced them: gpu_prices by model, or the default GPU price.",
            span=8,
        )
    )
    d = d.with_panel(
        series(
            29,
            "Data freshness",
            [
                query(
                    f"time() - max by (cluster) (gpuledger_scrape_last_success_timestamp_seconds{{{C}}})",
                    "{{cluster}}: since the last stored scrape step",
                ),
                query(
                    f"time() - max by (cluster) (gpuledger_scrape_watermark_timestamp_seconds{{{C}}})",
                    "{{cluster}}: watermark lag",
                    "B",
                ),
                query(
                    f"time() - max by (cluster) (gpuledger_newest_minute_timestamp_seconds{{{C}}})",
                    "{{cluster}}: newest warehouse minute",
                    "C",
                ),
            ],
            SECONDS,
            "Ages of the follow scrape's last success and watermark, and of the warehouse's newest minute.",
            span=12,
        )
    )
    return d.with_panel(
        series(
            30,
            "Malformed source lines per minute",
            [query("sum by (source) (rate(gpuledger_malformed_lines_total[$__rate_interval])) * 60", "{{source}}")],
            "none",
            "Lines of dcgm-exporter pages or Prometheus answers that could not be read (their samples are lost).",
            span=12,
        )
    )


def build() -> Dashboard:
    d = (
        Dashboard("gpuledger: GPU fleet cost and waste")
        .uid(UID)
        .description("What the GPU fleet costs, who wastes it, and whether the numbers can be trusted.")
        .tags(["gpuledger", "gpu", "finops", "dcgm"])
        .editable()
        .time("now-24h", "now")
        .refresh("5m")
        .timezone("browser")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("cluster")
            .label("Cluster")
            .datasource(DATASOURCE)
            .query("label_values(gpuledger_cost_usd, cluster)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
        )
    )
    for row in (cost_row, waste_row, model_row, busy_row, trust_row):
        d = row(d)
    return d


def render() -> str:
    """The dashboard's JSON text, exactly as committed (sorted keys, 2-space indent, a final newline)."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
