"""The Kubernetes objects recommendations export: strategic-merge patches of a workload's owner (inferred from its
kind), Karpenter ``NodePool`` objects, and embedded YAML configs."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from analysis.instances import instance_types
from analysis.recommend.context import ceil
from analysis.recommend.model import Manifest

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "true", "effect": "NoSchedule"}
GPU_OPERATOR_NAMESPACE = "gpu-operator"
OWNERS = MappingProxyType(
    {
        "inference": ("apps/v1", "Deployment"),
        "service": ("apps/v1", "Deployment"),
        "notebook": ("apps/v1", "StatefulSet"),
        "training": ("batch/v1", "Job"),
        "batch": ("batch/v1", "Job"),
    }
)
"""The owner a workload's pods are assumed to have, by workload kind (``analysis.spot.workload_kind``)."""
JOB_KINDS = ("training", "batch")
TEMPLATES = MappingProxyType(
    {
        "Deployment": ("apps/v1", ("template",)),
        "StatefulSet": ("apps/v1", ("template",)),
        "DaemonSet": ("apps/v1", ("template",)),
        "Job": ("batch/v1", ("template",)),
        "CronJob": ("batch/v1", ("jobTemplate", "spec", "template")),
    }
)
"""Owner kinds a patch can target as stored, with their apiVersion and the path of their pod template under
``spec``; the workload is the top-level owner, so a CronJob's patch sets its ``jobTemplate`` (the next run), never a
finished Job. A ReplicaSet top owner (its Deployment's series missing) and custom controllers (PyTorchJob,
RayCluster...; ``kubectl patch`` applies no strategic merge to them) keep the owner the workload kind implies."""


def owner_of(kind: str, owner_kind: str | None = None) -> tuple[str, str]:
    """(apiVersion, kind) of the owner a patch targets: the stored top-level owner when ``TEMPLATES`` knows its
    kind, else the one a workload of this kind is assumed to have (``OWNERS``; a Deployment when unknown)."""
    if owner_kind is not None and owner_kind in TEMPLATES:
        return TEMPLATES[owner_kind][0], owner_kind
    return OWNERS.get(kind, OWNERS["inference"])


def owner_patch(
    kind: str, namespace: str, workload: str, spec: dict[str, Any], owner_kind: str | None = None
) -> dict[str, Any]:
    """A strategic-merge patch of the workload's owner setting ``spec``."""
    api, owner = owner_of(kind, owner_kind)
    return {"apiVersion": api, "kind": owner, "metadata": {"name": workload, "namespace": namespace}, "spec": spec}


def pod_patch(
    kind: str, namespace: str, workload: str, pod_spec: dict[str, Any], owner_kind: str | None = None
) -> dict[str, Any]:
    """A strategic-merge patch of the owner's pod template spec (a CronJob's under its ``jobTemplate``)."""
    _, owner = owner_of(kind, owner_kind)
    path = TEMPLATES[owner][1] if owner in TEMPLATES else ("template",)
    spec: dict[str, Any] = {"spec": pod_spec}
    for key in reversed(path):
        spec = {key: spec}
    return owner_patch(kind, namespace, workload, spec, owner_kind)


def node_selector_patch(
    kind: str,
    namespace: str,
    workload: str,
    selector: dict[str, str],
    why: str,
    owner_kind: str | None = None,
) -> Manifest:
    """The patch that moves a workload onto other nodes (a new pool, spot, another GPU model), with why and, for a
    Job, the note that it applies to the next run."""
    patch = pod_patch(kind, namespace, workload, {"nodeSelector": selector}, owner_kind)
    return Manifest(patch, (why, *job_note(kind, owner_kind)), patch=True)


def job_note(kind: str, owner_kind: str | None = None) -> tuple[str, ...]:
    """The comment a patch of a Job carries (its pod template is immutable); none for other kinds, nor for a patch
    of a CronJob (its job template is what creates the next run)."""
    if owner_kind == "CronJob":
        return ()
    if kind in JOB_KINDS:
        return (
            "A Job's pod template cannot change once it exists: apply this to the manifest (or the job template "
            "of the operator) that creates the next run, not to a running Job.",
        )
    return ()


def nodepool(
    name: str,
    *,
    requirements: list[dict[str, Any]],
    gpu_limit: int,
    node_class: str,
    consolidation: str,
    consolidate_after: str,
    budgets: list[dict[str, Any]],
    labels: Mapping[str, str] | None = None,
    expire_after: str = "720h",
) -> dict[str, Any]:
    """A Karpenter ``NodePool`` (karpenter.sh/v1) for GPU nodes: tainted ``nvidia.com/gpu``, GPUs limited."""
    template: dict[str, Any] = {
        "spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class},
            "requirements": requirements,
            "taints": [dict(GPU_TAINT)],
            "expireAfter": expire_after,
        }
    }
    if labels:
        template["metadata"] = {"labels": dict(labels)}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": template,
            "limits": {GPU_RESOURCE: str(gpu_limit)},
            "disruption": {
                "consolidationPolicy": consolidation,
                "consolidateAfter": consolidate_after,
                "budgets": budgets,
            },
        },
    }


def node_multiple(instance_type: str | None, gpus: int) -> int:
    """``gpus`` rounded up to whole nodes of ``instance_type``: a NodePool's GPU limit below one node's GPUs would
    stop Karpenter from launching any."""
    itype = instance_types().get(instance_type or "")
    per_node = itype.gpu_count if itype is not None and itype.gpu_count > 0 else 1
    return max(1, ceil(gpus / per_node)) * per_node


def requirement(key: str, *values: str) -> dict[str, Any]:
    """A NodePool requirement: ``key`` In ``values``."""
    return {"key": key, "operator": "In", "values": list(values)}


def yaml_text(data: Any) -> str:
    """A config embedded in a ConfigMap, as YAML text (sorted keys)."""
    import yaml

    return str(yaml.safe_dump(data, sort_keys=True, default_flow_style=False, width=1000))
