"""Golden answers for GPU-time, dollars, idle waste, utilization and cost allocation, on hand-made minutes."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import allocation, usage, utilization, waste
from analysis.costs import priced
from analysis.units import GIB
from analysis.window import Window

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
WINDOW = Window(T0, T0 + dt.timedelta(days=1))


def minutes(rows: list[tuple[str, str, str | None, str | None, str, float | None, int, int]]) -> pl.LazyFrame:
    """(gpu, node, namespace, workload, state, util, count, memory) -> ``count`` GPU-minutes of that GPU."""
    out = []
    for gpu, node, namespace, workload, state, util, count, mem in rows:
        base = sum(r["gpu_uuid"] == gpu for r in out)
        for i in range(count):
            out.append(
                {
                    "ts": T0 + dt.timedelta(minutes=base + i),
                    "cluster": "c1",
                    "node": node,
                    "gpu_uuid": gpu,
                    "mig_profile": None,
                    "mig_instance_id": None,
                    "gpu_model": "NVIDIA H100 80GB HBM3",
                    "util_mean_pct": util,
                    "sm_active_mean": None,
                    "fb_used_max_bytes": mem,
                    "namespace": namespace,
                    "workload": workload,
                    "state": state,
                }
            )
    schema = {
        "ts": pl.Datetime("us", "UTC"),
        "mig_profile": pl.String,
        "mig_instance_id": pl.Int32,
        "util_mean_pct": pl.Float32,
        "sm_active_mean": pl.Float32,
        "fb_used_max_bytes": pl.Int64,
        "namespace": pl.String,
        "workload": pl.String,
    }
    return pl.DataFrame(out, schema_overrides=schema).lazy()


NODE_PRICES = pl.DataFrame(
    {
        "cluster": ["c1", "c1"],
        "node": ["n-od", "n-spot"],
        "date": [T0.date(), T0.date()],
        "usd_per_gpu_hour": [6.88, 3.0],
        "price_source": ["AWS on-demand", "AWS spot estimate"],
        "price_fallback": [False, False],
    }
)
MODEL_PRICES = pl.DataFrame(
    {
        "gpu_model": ["NVIDIA H100 80GB HBM3"],
        "usd_per_gpu_hour": [5.0],
        "price_source": ["fallback: configured price for NVIDIA H100 80GB HBM3"],
        "price_fallback": [True],
    }
)


def groups_of(frame: pl.LazyFrame) -> pl.DataFrame:
    return priced(usage.minute_groups(frame, WINDOW, []).collect(), NODE_PRICES, MODEL_PRICES)


FLEET = minutes(
    [
        # 60 active minutes of team-a on the on-demand node: 1 GPU-hour x 6.88
        ("g1", "n-od", "team-a", "train", "active", 90.0, 60, 40 * GIB),
        # 120 minutes held idle by team-a with 40 GiB: 2 GPU-hours of idle waste at 6.88
        ("g1", "n-od", "team-a", "train", "idle_held", 0.0, 120, 40 * GIB),
        # 60 minutes team-b holds but leaves idle, no memory, on spot: 1 GPU-hour at 3.00
        ("g2", "n-spot", "team-b", "notebook", "idle_allocated", 0.0, 60, 0),
        # 180 minutes nobody holds, on spot: 3 GPU-hours at 3.00
        ("g2", "n-spot", None, None, "unallocated", 0.0, 180, 0),
        # 30 minutes with no data on a node the warehouse has no price for: 0.5 h at the model's 5.00
        ("g3", "n-unknown", None, None, "no_data", None, 30, 0),
        # 30 active minutes of team-b on that node: 0.5 GPU-hour at the model fallback 5.00, util 50%
        ("g3", "n-unknown", "team-b", "infer", "active", 50.0, 30, 2 * GIB),
    ]
)


def test_dollars_per_state_and_idle_waste() -> None:
    groups = groups_of(FLEET)
    states = waste.by_state(groups)
    assert states["active"] == {"gpu_hours": 1.5, "cost_usd": 9.38}  # 1 h x 6.88 + 0.5 h x 5.00
    assert states["idle_held"] == {"gpu_hours": 2.0, "cost_usd": 13.76}
    assert states["idle_allocated"] == {"gpu_hours": 1.0, "cost_usd": 3.0}
    assert states["unallocated"] == {"gpu_hours": 3.0, "cost_usd": 9.0}
    assert states["no_data"] == {"gpu_hours": 0.5, "cost_usd": 2.5}
    assert round(float(groups["cost_usd"].sum()), 2) == 6.88 * 3 + 3.0 * 4 + 5.0
    idle = waste.idle_by(groups, ["namespace"]).to_dicts()
    assert idle[0] == {"namespace": "team-a", "idle_gpu_hours": 2.0, "idle_cost_usd": 13.76}
    assert {"namespace": None, "idle_gpu_hours": 3.0, "idle_cost_usd": 9.0} in idle


def test_a_node_without_a_price_is_priced_by_its_model_and_says_so() -> None:
    groups = groups_of(FLEET)
    unknown = groups.filter(pl.col("node") == "n-unknown")
    assert set(unknown["price_source"]) == {"fallback: configured price for NVIDIA H100 80GB HBM3"}
    assert unknown["price_fallback"].all()


def test_idle_leaderboard_has_its_evidence() -> None:
    board = waste.idle_leaderboard(groups_of(FLEET), top_n=5)
    assert [(r["namespace"], r["workload"]) for r in board] == [("team-a", "train"), ("team-b", "notebook")]
    train = board[0]
    assert (train["gpu_hours"], train["idle_held_hours"], train["cost_usd"], train["peak_mem_gib"]) == (
        2.0,
        2.0,
        13.76,
        40.0,
    )
    assert train["last_active"] == (T0 + dt.timedelta(minutes=59)).isoformat()
    assert train["price_source"] == "AWS on-demand"
    assert board[1]["last_active"] is None  # the notebook was never active in the window


def test_utilization_means_percentiles_and_allocation_rate() -> None:
    groups = groups_of(FLEET)
    # observed GPU-hours: 1 (90%) + 2 (0) + 1 (0) + 3 (0) + 0.5 (50%) = 7.5; busy-hours 0.9 + 0.25 = 1.15
    assert utilization.mean_pct(groups) == round(115.0 / 7.5, 2)
    # held: 1 + 2 + 1 + 0.5 = 4.5 of 7.5 observed
    assert utilization.allocation_rate(groups) == 0.6
    histogram = usage.busy_histogram(FLEET, WINDOW, []).collect()
    rows = {r["namespace"]: r for r in utilization.by(groups, "namespace", 10, histogram)}
    assert rows["team-a"]["p50_pct"] == 0.0 and rows["team-a"]["p95_pct"] == 90.0  # 1 h at 90 of 3 h
    assert rows["team-a"]["mean_pct"] == 30.0 and rows["team-a"]["allocation_rate"] == 1.0


@pytest.mark.parametrize("mode", ["separate", "shared"])
def test_cost_by_team_sums_to_the_fleet_cost(mode: str) -> None:
    groups = groups_of(FLEET)
    teams = allocation.cost_by_team(groups, {"ml": ["team-a"], "apps": ["team-*"]}, mode)
    assert round(float(teams["total_cost_usd"].sum()), 2) == round(float(groups["cost_usd"].sum()), 2)
    rows = {r["team"]: r for r in teams.to_dicts()}
    # ml holds 1 h active + 2 h idle at 6.88; apps (team-b) holds 1 h idle at 3.00 and 0.5 h active at 5.00
    assert rows["ml"]["held_cost_usd"] == 20.64 and rows["apps"]["held_cost_usd"] == 5.5
    assert rows["(no data)"]["total_cost_usd"] == 2.5
    if mode == "separate":
        assert rows["(idle: unallocated)"]["total_cost_usd"] == 9.0
    else:  # 9.00 of unallocated cost shared 20.64 : 5.50
        assert rows["ml"]["shared_idle_usd"] == round(9.0 * 20.64 / 26.14, 2)
        assert "(idle: unallocated)" not in rows


def test_an_unknown_idle_mode_is_a_clear_error() -> None:
    with pytest.raises(allocation.UnknownIdleMode, match="use 'separate'"):
        allocation.cost_by_team(groups_of(FLEET), {}, "evenly")


def test_mig_instances_count_as_their_share_of_a_gpu() -> None:
    rows = []
    for slot, profile, state in ((1, "3g.40gb", "active"), (2, "4g.40gb", "idle_held")):
        for i in range(60):
            rows.append(
                {
                    "ts": T0 + dt.timedelta(minutes=i),
                    "cluster": "c1",
                    "node": "n-od",
                    "gpu_uuid": "gm",
                    "mig_profile": profile,
                    "mig_instance_id": slot,
                    "gpu_model": "NVIDIA H100 80GB HBM3",
                    "util_mean_pct": None,
                    "sm_active_mean": 0.5 if state == "active" else 0.0,
                    "fb_used_max_bytes": 2 * GIB,
                    "namespace": "t",
                    "workload": f"w{slot}",
                    "state": state,
                }
            )
    for i in range(60):  # the parent GPU's own row: not counted again
        rows.append({**rows[0], "ts": T0 + dt.timedelta(minutes=i), "mig_profile": None, "mig_instance_id": None})
    frame = pl.DataFrame(rows).lazy()
    parents = usage.mig_parent_gpus(frame, WINDOW)
    groups = priced(usage.minute_groups(frame, WINDOW, parents).collect(), NODE_PRICES, MODEL_PRICES)
    assert parents == ["gm"]
    assert round(float(groups["gpu_hours"].sum()), 6) == 1.0  # 3/7 + 4/7 of one GPU for one hour
    assert waste.by_state(groups)["idle_held"]["gpu_hours"] == round(4 / 7, 4)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["g1", "g2", "g3"]),
            st.sampled_from(["n-od", "n-spot", "n-unknown"]),
            st.sampled_from(["active", "idle_held", "idle_allocated", "unallocated", "no_data"]),
            st.integers(1, 90),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_states_sum_to_gpu_time_and_waste_never_exceeds_cost(spec: list[tuple[str, str, str, int]]) -> None:
    frame = minutes([(g, n, "t", "w", s, 0.0, count, 0) for g, n, s, count in spec])
    groups = groups_of(frame)
    states = waste.by_state(groups)
    total_minutes = sum(count for *_, count in spec)
    assert sum(v["gpu_hours"] for v in states.values()) == pytest.approx(total_minutes / 60, abs=1e-3)
    idle_cost = sum(states[s]["cost_usd"] for s in ("idle_held", "idle_allocated", "unallocated"))
    assert idle_cost <= float(groups["cost_usd"].sum()) + 0.01
    assert groups["usd_per_gpu_hour"].is_not_null().all() and groups["price_source"].is_not_null().all()


def test_the_heatmap_covers_every_observed_gpu_hour() -> None:
    histogram = usage.busy_histogram(FLEET, WINDOW, []).collect()
    heatmap = usage.hour_of_week(histogram)
    # observed: 7.5 GPU-hours (no_data excluded); all of it on Monday 2026-11-02 between 00:00 and 05:59
    assert heatmap["gpu_hours"].sum() == pytest.approx(7.5)
    assert set(heatmap["weekday"]) == {1}
    midnight = heatmap.filter(pl.col("hour") == 0).row(0, named=True)
    # hour 0: g1 60 min active at 90% (held); g2 60 min idle_allocated (held); g3 30 min no_data + 30 min active
    assert midnight["gpu_hours"] == pytest.approx(2.5)
    assert midnight["mean_pct"] == pytest.approx((60 * 90 + 30 * 50) / 150)
    assert midnight["allocation_rate"] == pytest.approx(1.0)
