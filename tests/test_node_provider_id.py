"""The nodes' provider id, the key a bill's ResourceId is matched by: from kube-state-metrics' ``kube_node_info``
and on the simulated fleet."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa

from analysis.pricing.bill import resource_key
from collector.fleet import plan
from collector.prometheus.kube_state import node_rows
from collector.prometheus.series import Series
from warehouse.ingest import conform
from warehouse.schema import GPU_SAMPLES, NODES

T0 = int(dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC).timestamp())


def test_node_rows_take_the_provider_id_from_kube_node_info() -> None:
    labels = Series({"node": "n1", "label_node_kubernetes_io_instance_type": "p5.48xlarge"}, [(T0, 1.0)])
    info = Series(
        {"node": "n1", "provider_id": "aws:///us-east-1a/i-0abc1234def567890", "kernel_version": "6.1"}, [(T0, 1.0)]
    )
    rows = node_rows([labels], GPU_SAMPLES.schema.empty_table(), cluster="c", node_info=[info])
    assert [(r["node"], r["provider_id"]) for r in rows] == [("n1", "aws:///us-east-1a/i-0abc1234def567890")]
    assert conform(NODES, pa.Table.from_pylist(rows)).column("provider_id").to_pylist() == [
        "aws:///us-east-1a/i-0abc1234def567890"
    ]
    assert node_rows([labels], GPU_SAMPLES.schema.empty_table(), cluster="c")[0]["provider_id"] is None


def test_simulated_nodes_have_distinct_ec2_provider_ids() -> None:
    fleet = plan(64, 1, 42, dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    ids = [n.provider_id for n in fleet.nodes]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"aws:///us-east-1[a-f]/i-0[0-9a-f]{16}", i) for i in ids), ids[:3]
    assert all(resource_key(i) == "aws:" + i.rsplit("/", 1)[1] for i in ids)
