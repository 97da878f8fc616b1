"""The Kubernetes objects recommendations export: patches of a workload's top-level owner (strategic-merge for
built-in kinds; JSON merge or JSON patches for custom controllers, ``CUSTOM``), Karpenter ``NodePool`` objects, and
embedded YAML configs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
"""Built-in owner kinds a strategic-merge patch can target as stored, with their apiVersion and the path of their
pod template under ``spec``; the workload is the top-level owner, so a CronJob's patch sets its ``jobTemplate`` (the
next run), never a finished Job. A ReplicaSet top owner (its Deployment's series missing) keeps the owner the
workload kind implies; custom controllers are in ``CUSTOM``."""

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Custom:
    """A custom controller's resource: its apiVersion, the pod specs in it (paths from the object's root to a
    ``PodSpec``: ``template.spec``, or a spec with pod fields inline), how it is scaled to zero, and what a change
    to its templates does to pods that already run."""

    api_version: str
    pod_specs: tuple[Path, ...]
    stop: dict[str, Any]
    runs: str


_TRAINING_RUN = (
    "A {kind} reads its replica templates when it creates pods: this changes the next run (apply it to the manifest "
    "that creates the run, or to a suspended {kind}); pods already running keep their spec."
)
CUSTOM = MappingProxyType(
    {
        # kubeflow/training-operator manifests/base/crds/kubeflow.org_pytorchjobs.yaml (@04538cc6), v1:
        # spec.pytorchReplicaSpecs is a map of replica type (Master, Worker) to ReplicaSpec{replicas, template}.
        "PyTorchJob": Custom(
            "kubeflow.org/v1",
            tuple(("spec", "pytorchReplicaSpecs", r, "template", "spec") for r in ("Master", "Worker")),
            {"spec": {"runPolicy": {"suspend": True}}},
            _TRAINING_RUN,
        ),
        # kubeflow/mpi-operator (v2beta1, the MPIJob the training-operator hands over to):
        # spec.mpiReplicaSpecs.{Launcher,Worker}.template; examples/v2beta1/pi/pi.yaml.
        "MPIJob": Custom(
            "kubeflow.org/v2beta1",
            tuple(("spec", "mpiReplicaSpecs", r, "template", "spec") for r in ("Launcher", "Worker")),
            {"spec": {"runPolicy": {"suspend": True}}},
            _TRAINING_RUN,
        ),
        # kubeflow/training-operator kubeflow.org_tfjobs.yaml: spec.tfReplicaSpecs.{Chief,PS,Worker,Evaluator};
        # only Worker is patched: it is the replica every TFJob has and the one that holds GPUs.
        "TFJob": Custom(
            "kubeflow.org/v1",
            (("spec", "tfReplicaSpecs", "Worker", "template", "spec"),),
            {"spec": {"runPolicy": {"suspend": True}}},
            _TRAINING_RUN,
        ),
        # ray-project/kuberay ray-operator/config/crd/bases/ray.io_rayclusters.yaml (@022eed16), v1:
        # spec.headGroupSpec.template and spec.workerGroupSpecs[*].template (a list: the first group is patched).
        "RayCluster": Custom(
            "ray.io/v1",
            (
                ("spec", "headGroupSpec", "template", "spec"),
                ("spec", "workerGroupSpecs", 0, "template", "spec"),
            ),
            {"spec": {"suspend": True}},
            "Pods KubeRay creates after the patch (scaling, replacements) use it; running pods keep their spec "
            "unless spec.upgradeStrategy.type is Recreate.",
        ),
        # ray.io_rayjobs.yaml: the same templates under spec.rayClusterSpec.
        "RayJob": Custom(
            "ray.io/v1",
            (
                ("spec", "rayClusterSpec", "headGroupSpec", "template", "spec"),
                ("spec", "rayClusterSpec", "workerGroupSpecs", 0, "template", "spec"),
            ),
            {"spec": {"suspend": True}},
            _TRAINING_RUN,
        ),
        # kubernetes-sigs/jobset jobset.x-k8s.io_jobsets.yaml, v1alpha2: spec.replicatedJobs[*].template (a Job
        # template) .spec.template (its pod template); a list: the first replicated job is patched.
        "JobSet": Custom(
            "jobset.x-k8s.io/v1alpha2",
            (("spec", "replicatedJobs", 0, "template", "spec", "template", "spec"),),
            {"spec": {"suspend": True}},
            _TRAINING_RUN,
        ),
        # kubernetes-sigs/lws leaderworkerset.x-k8s.io_leaderworkersets.yaml, v1:
        # spec.leaderWorkerTemplate.{leaderTemplate (optional: the worker template when absent), workerTemplate}.
        "LeaderWorkerSet": Custom(
            "leaderworkerset.x-k8s.io/v1",
            (("spec", "leaderWorkerTemplate", "workerTemplate", "spec"),),
            {"spec": {"replicas": 0}},
            "The LeaderWorkerSet rolls its groups onto the new template (rolloutStrategy).",
        ),
        # kubeflow/kubeflow components/notebook-controller kubeflow.org_notebooks.yaml, v1: spec.template; the
        # controller stops a Notebook that carries the kubeflow-resource-stopped annotation.
        "Notebook": Custom(
            "kubeflow.org/v1",
            (("spec", "template", "spec"),),
            {"metadata": {"annotations": {"kubeflow-resource-stopped": "true"}}},
            "The notebook server restarts with the new spec (its unsaved kernel state is lost).",
        ),
        # kserve/kserve serving.kserve.io_inferenceservices.yaml, v1beta1: spec.predictor holds the pod spec's
        # fields inline (nodeSelector, containers of a custom predictor).
        "InferenceService": Custom(
            "serving.kserve.io/v1beta1",
            (("spec", "predictor"),),
            {"spec": {"predictor": {"minReplicas": 0}}},
            "KServe rolls out a new revision of the predictor with it.",
        ),
    }
)
"""Custom controllers' resources (``analysis.spot.OWNER_KINDS``), from their upstream CRDs. ``kubectl patch``
applies no strategic merge to a custom resource (only ``--type merge`` and ``--type json``), so their patches are
JSON merge patches (RFC 7386) where every step to the field is a map key and the field is a map (``nodeSelector``:
keys merge), and JSON patches (RFC 6902) where a merge patch would replace a list (a container's resources are in
the ``containers`` list; RayCluster worker groups and JobSet replicated jobs are lists). Which replica holds the GPUs
is not in the telemetry, so every listed template is patched."""


def owner_of(kind: str, owner_kind: str | None = None) -> tuple[str, str]:
    """(apiVersion, kind) of the owner a patch targets: the stored top-level owner when ``TEMPLATES`` or ``CUSTOM``
    knows its kind, else the one a workload of this kind is assumed to have (``OWNERS``; a Deployment when
    unknown)."""
    if owner_kind is not None and owner_kind in TEMPLATES:
        return TEMPLATES[owner_kind][0], owner_kind
    if owner_kind is not None and owner_kind in CUSTOM:
        return CUSTOM[owner_kind].api_version, owner_kind
    return OWNERS.get(kind, OWNERS["inference"])


def owner_patch(
    kind: str, namespace: str, workload: str, spec: dict[str, Any], owner_kind: str | None = None
) -> dict[str, Any]:
    """A strategic-merge patch of the workload's (built-in) owner setting ``spec``."""
    api, owner = owner_of(kind, owner_kind)
    return {"apiVersion": api, "kind": owner, "metadata": {"name": workload, "namespace": namespace}, "spec": spec}


def pod_patch(
    kind: str, namespace: str, workload: str, pod_spec: dict[str, Any], owner_kind: str | None = None
) -> dict[str, Any]:
    """A strategic-merge patch of the built-in owner's pod template spec (a CronJob's under its ``jobTemplate``)."""
    _, owner = owner_of(kind, owner_kind)
    path = TEMPLATES[owner][1] if owner in TEMPLATES else ("template",)
    spec: dict[str, Any] = {"spec": pod_spec}
    for key in reversed(path):
        spec = {key: spec}
    return owner_patch(kind, namespace, workload, spec, owner_kind)


def workload_patch(
    kind: str,
    namespace: str,
    workload: str,
    pod_spec: dict[str, Any],
    comments: tuple[str, ...],
    owner_kind: str | None = None,
) -> Manifest:
    """The patch setting ``pod_spec`` (``nodeSelector``, ``containers`` by name with their ``resources``) in the
    owner's pod templates: a strategic-merge patch of a built-in owner, else ``custom_patch``; with ``comments``
    and the note on when it takes effect (``job_note``)."""
    if owner_kind is not None and owner_kind in CUSTOM:
        return custom_patch(owner_kind, namespace, workload, pod_spec, comments)
    obj = pod_patch(kind, namespace, workload, pod_spec, owner_kind)
    return Manifest(obj, (*comments, *job_note(kind, owner_kind)), patch=True)


def custom_patch(
    owner_kind: str, namespace: str, workload: str, pod_spec: dict[str, Any], comments: tuple[str, ...] = ()
) -> Manifest:
    """``pod_spec`` set in every pod spec of a custom resource (``CUSTOM``): a JSON merge patch when it only sets
    ``nodeSelector`` and no template path crosses a list, else a JSON patch. Containers are matched by name in a
    merge, but a JSON patch addresses them by index: each container's operations start with a ``test`` of its name
    at index 0, so a patch against another layout fails whole instead of changing the wrong container. Resources:
    ``replace`` of ``nvidia.com/gpu`` (a template that requests none fails the patch rather than gaining GPUs), a
    None value removes the key, others are added; limits only (the requests of an extended resource default to
    its limits)."""
    custom = CUSTOM[owner_kind]
    meta = {"name": workload, "namespace": namespace}
    head = {"apiVersion": custom.api_version, "kind": owner_kind, "metadata": meta}
    notes = (
        f"{owner_kind} templates patched: "
        + ", ".join(_dotted(p) for p in custom.pod_specs)
        + ". Which of them request GPUs is not in the telemetry, so all are: remove the operations of a template "
        "this object does not have or that requests no GPUs (kubectl rejects the whole patch otherwise).",
        custom.runs.format(kind=owner_kind),
    )
    lists = any(isinstance(step, int) for p in custom.pod_specs for step in p)
    if set(pod_spec) <= {"nodeSelector"} and not lists:
        body: dict[str, Any] = {}
        for path in custom.pod_specs:
            _set(body, path, dict(pod_spec))
        return Manifest({**head, **body}, (*comments, *notes), patch=True, patch_type="merge")
    ops: list[dict[str, Any]] = []
    for path in custom.pod_specs:
        pointer = "".join("/" + _escape(step) for step in path)
        if "nodeSelector" in pod_spec:
            ops.append({"op": "add", "path": pointer + "/nodeSelector", "value": dict(pod_spec["nodeSelector"])})
        for c in pod_spec.get("containers", []):
            at = pointer + "/containers/0"
            ops.append({"op": "test", "path": at + "/name", "value": c["name"]})
            for key, value in sorted(c.get("resources", {}).get("limits", {}).items()):
                where = f"{at}/resources/limits/{_escape(key)}"
                if value is None:
                    ops.append({"op": "remove", "path": where})
                else:
                    ops.append({"op": "replace" if key == GPU_RESOURCE else "add", "path": where, "value": value})
    extra = (
        "JSON patch: containers are addressed by index (a test of the name guards it; change the index if the "
        "container is not the first) and a nodeSelector is replaced whole. If a container also sets requests of "
        "these resources, set them to the same values.",
    )
    return Manifest({**head, "jsonPatch": ops}, (*comments, *notes, *extra), patch=True, patch_type="json")


def scale_to_zero_patch(
    kind: str, namespace: str, workload: str, owner_kind: str | None, comments: tuple[str, ...]
) -> Manifest:
    """The patch that stops a workload: ``suspend: true`` for a Job, ``replicas: 0`` for other built-in owners,
    and for a custom resource its own switch (``Custom.stop``: ``runPolicy.suspend`` of a training job, ``suspend``
    of a RayCluster, RayJob or JobSet, the Notebook's stop annotation...) as a JSON merge patch."""
    if owner_kind is not None and owner_kind in CUSTOM:
        custom = CUSTOM[owner_kind]
        meta: dict[str, Any] = {"name": workload, "namespace": namespace}
        stop = custom.stop
        obj = {"apiVersion": custom.api_version, "kind": owner_kind, "metadata": {**meta, **stop.get("metadata", {})}}
        obj.update({k: v for k, v in stop.items() if k != "metadata"})
        return Manifest(obj, comments, patch=True, patch_type="merge")
    spec = {"suspend": True} if kind in JOB_KINDS else {"replicas": 0}
    return Manifest(owner_patch(kind, namespace, workload, spec, owner_kind), comments, patch=True)


def _escape(step: str | int) -> str:
    """A JSON pointer reference token (RFC 6901): ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return str(step).replace("~", "~0").replace("/", "~1")


def _dotted(path: Path) -> str:
    return ".".join(f"[{s}]" if isinstance(s, int) else s for s in path).replace(".[", "[")


def _set(body: dict[str, Any], path: Path, value: dict[str, Any]) -> None:
    node = body
    for step in path:
        node = node.setdefault(str(step), {})
    node.update(value)


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
    return workload_patch(kind, namespace, workload, {"nodeSelector": selector}, (why,), owner_kind)


def job_note(kind: str, owner_kind: str | None = None) -> tuple[str, ...]:
    """The comment a patch of a Job carries (its pod template is immutable); none for other kinds, nor for a patch
    of a CronJob (its job template is what creates the next run). Custom owners' notes are in ``CUSTOM``."""
    if owner_kind == "CronJob" or owner_kind in CUSTOM:
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


def node_overlay(name: str, *, nodepool: str, instance_type: str, capacity: Mapping[str, int]) -> dict[str, Any]:
    """A Karpenter ``NodeOverlay`` (karpenter.sh/v1alpha1) giving ``instance_type``'s nodes of ``nodepool`` the
    extended resources ``capacity`` in Karpenter's scheduling simulation. Karpenter plans nodes from the cloud's
    instance-type data, which counts physical GPUs only: a time-sliced node advertises more ``nvidia.com/gpu`` and a
    MIG node advertises ``nvidia.com/mig-<profile>``, which Karpenter cannot know before the node exists.

    karpenter.sh/docs/concepts/nodeoverlays: ``spec.requirements`` select the instance types (NodePool
    requirements: ``karpenter.sh/nodepool``, ``node.kubernetes.io/instance-type``), ``spec.capacity`` adds
    extended resources to them; Alpha, it needs the ``NodeOverlay`` feature gate (helm
    ``settings.featureGates.nodeOverlay=true``). aws-samples/karpenter-blueprints blueprints/node-overlay sets
    ``nvidia.com/gpu`` this way for time-slicing."""
    return {
        "apiVersion": "karpenter.sh/v1alpha1",
        "kind": "NodeOverlay",
        "metadata": {"name": name},
        "spec": {
            "requirements": [
                requirement("karpenter.sh/nodepool", nodepool),
                requirement("node.kubernetes.io/instance-type", instance_type),
            ],
            "capacity": {key: int(value) for key, value in sorted(capacity.items())},
            "weight": 10,
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
