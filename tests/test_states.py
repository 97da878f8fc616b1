"""The state definitions, case by case, and the property that every GPU-minute gets exactly one state."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.states import STATES, StateRules
from analysis.units import GIB

RULES = StateRules(active_threshold_pct=5.0, held_memory_bytes=GIB)


def classify(rows: list[dict]) -> list[str]:
    frame = pl.DataFrame(
        rows,
        schema={
            "observed": pl.Boolean,
            "util_mean_pct": pl.Float32,
            "sm_active_mean": pl.Float32,
            "held": pl.Boolean,
            "held_memory_bytes": pl.Int64,
        },
    )
    return RULES.classify(frame.lazy()).collect()["state"].to_list()


def row(observed=True, util=0.0, sm=None, held=False, mem=0) -> dict:
    return {
        "observed": observed,
        "util_mean_pct": util,
        "sm_active_mean": sm,
        "held": held,
        "held_memory_bytes": mem,
    }


@pytest.mark.parametrize(
    ("minute", "state", "why"),
    [
        (row(observed=False, util=90.0, held=True), "no_data", "unobserved beats everything"),
        (row(util=5.0), "active", "the threshold itself counts as active"),
        (row(util=4.99, held=True, mem=10 * GIB), "idle_held", "below threshold, held, memory in use"),
        (
            row(util=0.0, held=True, mem=GIB),
            "idle_allocated",
            "exactly 1 GiB is not above the memory threshold",
        ),
        (row(util=0.0, held=True, mem=GIB + 1), "idle_held", "just above 1 GiB"),
        (
            row(util=0.0, held=False, mem=60 * GIB),
            "unallocated",
            "memory without a holder is still unallocated",
        ),
        (row(util=80.0, held=False), "active", "work is active even when we do not know who does it"),
        (row(util=90.0, sm=0.02, held=True, mem=2 * GIB), "idle_held", "sm_active is preferred over util"),
        (row(util=0.0, sm=0.05, held=True), "active", "sm_active 0.05 is 5%"),
        (row(util=None, held=True, mem=None), "idle_allocated", "missing values read as zero"),
    ],
)
def test_state_of_one_minute(minute: dict, state: str, why: str) -> None:
    assert classify([minute]) == [state], why


@given(
    st.lists(
        st.builds(
            row,
            observed=st.booleans(),
            util=st.one_of(st.none(), st.floats(0, 100)),
            sm=st.one_of(st.none(), st.floats(0, 1)),
            held=st.booleans(),
            mem=st.one_of(st.none(), st.integers(0, 200 * GIB)),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_every_minute_gets_exactly_one_known_state(minutes: list[dict]) -> None:
    states = classify(minutes)
    assert len(states) == len(minutes)
    assert set(states) <= set(STATES)
    assert sum(states.count(s) for s in STATES) == len(minutes)


def test_fingerprint_changes_with_any_threshold() -> None:
    prints = {StateRules().fingerprint, StateRules(6.0).fingerprint, StateRules(5.0, 2 * GIB).fingerprint}
    assert len(prints) == 3
