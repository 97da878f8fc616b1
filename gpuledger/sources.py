"""Choosing and opening a collector source from the command line's options and the settings."""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Iterable

from collector.dra import device_names
from collector.errors import CollectorError
from collector.kubelet_pods import KUBELET_PORT, KubeletPods
from collector.node_object import ThisNode, api_url_from
from collector.nvml import Holder, NvmlSampler
from collector.podresources.client import GpuAssignment, PodResourcesClient
from collector.rows import Records, Rows
from collector.workloads import workload_from_owner
from gpuledger.settings import Settings

log = logging.getLogger(__name__)


def open_reader(settings: Settings, *, node: str, dcgm_url: str | None) -> Callable[[], Rows | Records]:
    """A function returning one reading of the chosen source (NVML on this node unless a dcgm-exporter URL is given)."""
    if dcgm_url:
        from collector.dcgm import DcgmExporterReader

        reader = DcgmExporterReader(
            dcgm_url,
            cluster=settings.cluster,
            timeout_s=settings.exporter_timeout_s,
            max_body_mib=settings.exporter_max_body_mib,
        )
        return reader.read
    sampler = NvmlSampler(cluster=settings.cluster, node=node, energy_every_s=settings.energy_every_s)
    pods: KubeletPods | None = None
    if settings.pod_resources_socket.exists():
        client = PodResourcesClient(settings.pod_resources_socket)
        sampler.holders = lambda: kubelet_holders(
            client.list_gpu_assignments, {**sampler.device_ids(), **dra_device_names(sampler)}
        )
        pods = kubelet_pods(settings, node)
    else:
        log.info(
            "no kubelet pod-resources socket at %s: GPUs are attributed to processes only",
            settings.pod_resources_socket,
        )
    sampler.open()
    atexit.register(sampler.close)
    steps: list[Callable[[Rows | Records], Rows | Records]] = [pods.complete] if pods is not None else []
    this_node = node_object(settings, node)
    if this_node is not None:
        steps.append(this_node.complete)
    if not steps:
        return sampler.read

    def read() -> Rows | Records:
        reading: Rows | Records = sampler.read()
        for step in steps:
            reading = step(reading)
        return reading

    return read


def node_object(settings: Settings, node: str) -> ThisNode | None:
    """This node's Node object, for its ``nodes`` rows (see collector.node_object); None outside a cluster."""
    url = settings.kube_api_url or api_url_from(os.environ)
    if url is None:
        log.info("no Kubernetes API server known (kube_api_url): the node's instance type stays unknown")
        return None
    return ThisNode(
        url,
        node,
        cluster=settings.cluster,
        token_file=settings.kubelet_token_file,
        ca_file=settings.kube_api_ca_file,
        timeout_s=settings.kubelet_timeout_s,
    )


def kubelet_pods(settings: Settings, node: str) -> KubeletPods:
    """The kubelet pod list that gives the GPU pods' owners and CPU/memory requests (see collector.kubelet_pods)."""
    return KubeletPods(
        settings.kubelet_url or f"https://{node}:{KUBELET_PORT}",
        token_file=settings.kubelet_token_file,
        ca_file=settings.kubelet_ca_file,
        verify=settings.kubelet_tls_verify,
        timeout_s=settings.kubelet_timeout_s,
    )


def dra_device_names(sampler: NvmlSampler) -> dict[str, tuple[str, int | None]]:
    """What the NVIDIA DRA driver calls this node's GPUs and MIG devices -> (GPU UUID, MIG instance or None); see
    :mod:`collector.dra`."""
    return device_names(sampler.devices)


def kubelet_holders(
    assignments: Callable[[], Iterable[GpuAssignment]], device_ids: dict[str, tuple[str, int | None]]
) -> list[Holder]:
    """The kubelet's device assignments as holders of this node's GPUs and MIG instances.

    A container holding several time-sliced replicas of one GPU is one holder; devices this node's NVML does not
    know (another node's, or a stale assignment) are skipped. A kubelet that cannot be asked is logged, and the
    GPUs are then attributed to processes only for that sample.
    """
    try:
        listed = list(assignments())
    except CollectorError as exc:
        log.error("%s", exc)
        return []
    holders: dict[tuple[str, int | None, str, str, str], Holder] = {}
    for a in listed:
        where = device_ids.get(a.device_id)
        if where is None:
            continue
        key = (*where, a.namespace, a.pod, a.container)
        workload = workload_from_owner(None, None, a.pod)
        holders.setdefault(key, Holder(where[0], where[1], a.namespace, a.pod, a.container, workload, a.claim))
    return list(holders.values())
