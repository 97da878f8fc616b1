"""Every exported patch applied to a live object of its kind and validated: the demo's files and hand-made patches
of each custom controller. A live object is a real upstream example (tests/fixtures/k8s-objects/, SOURCES.md) as
the telemetry saw it: each of its pod templates' first container carries the patched container's name and a GPU
limit (the pods held GPUs). Built-in kinds take the strategic merge and kubernetes-validate; custom kinds take the
exact body of the file's ``kubectl patch --type merge|json`` command (RFC 7386 merge, RFC 6902 with ``jsonpatch``),
and then every changed field must lie inside a pod spec the upstream object has, and each pod spec must validate as
a Kubernetes PodTemplate (kubernetes-validate)."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import kubernetes_validate
import pytest
import yaml

from analysis import mig
from analysis.recommend.manifests import CUSTOM, GPU_RESOURCE, node_selector_patch, scale_to_zero_patch, workload_patch
from analysis.recommend.model import Manifest
from tests.demo_fleet import Demo
from tests.recommend_inputs import H100
from tests.test_recommend import K8S_VERSION

OBJECTS = Path(__file__).parent / "fixtures" / "k8s-objects"
CRDS = Path(__file__).parent / "fixtures" / "crds"
CRD_FILES = {
    "PyTorchJob": "kubeflow.org_pytorchjobs.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
}
"""Upstream CRDs (tests/fixtures/crds/SOURCES.md): a patched object of these kinds must also validate against the
served version's openAPIV3Schema, which covers the fields outside the pod specs (runPolicy, replicas, ...), and every
field the patch writes must be one the schema declares (the API server prunes the others without an error)."""
DEMO_CRD_KINDS = ("PyTorchJob", "RayCluster")
"""The kinds in ``CRD_FILES`` whose owners the demo fleet has (``collector.fleet``)."""
UNDECLARED = {("RayCluster", ("spec", "suspend")): "RayCluster spec.suspend came after KubeRay v1.0 (kuberay#1667)"}
"""Fields our patches write that the pinned CRD version does not declare: a cluster running that version prunes them.
``test_undeclared_fields_are_still_undeclared`` fails once the CRD file is updated past them."""
EXAMPLES = {
    "Deployment": "deployment-nginx.yaml",
    "StatefulSet": "statefulset-web.yaml",
    "Job": "job-pi.yaml",
    "CronJob": "cronjob-hello.yaml",
    "PyTorchJob": "pytorchjob-mnist-nccl.yaml",
    "MPIJob": "mpijob-pi.yaml",
    "TFJob": "tfjob-simple.yaml",
    "RayCluster": "raycluster-sample.yaml",
    "RayJob": "rayjob-sample.yaml",
    "JobSet": "jobset-paralleljobs.yaml",
    "LeaderWorkerSet": "leaderworkerset-sample.yaml",
    "Notebook": "notebook-sample-v1.yaml",
    "InferenceService": "inferenceservice-custom-prebuilt.yaml",
}
PREDICTOR_ONLY = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout")
"""KServe's ComponentExtensionSpec fields, inline in ``spec.predictor`` beside the pod spec's."""
COMMAND = re.compile(r"^# .*apply with: kubectl -n \S+ patch \S+ \S+ --type (\w+) -p '(.*)'$")


def upstream(kind: str) -> dict[str, Any]:
    (obj,) = [d for d in yaml.safe_load_all((OBJECTS / EXAMPLES[kind]).read_text()) if d and d["kind"] == kind]
    return dict(obj)


@functools.cache
def served_schema(kind: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the CRD version that the exported patches' apiVersion names."""
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    version = CUSTOM[kind].api_version.rsplit("/", 1)[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return dict(served["schema"]["openAPIV3Schema"])


def declared(schema: dict[str, Any], path: tuple[str | int, ...]) -> bool:
    """Whether a structural schema keeps the field at ``path`` (``properties``, a map's ``additionalProperties``, an
    array's ``items``, or ``x-kubernetes-preserve-unknown-fields``) rather than pruning it."""
    node = schema
    for step in path:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return True
        if isinstance(step, int):
            node = node.get("items", {})
        elif step in node.get("properties", {}):
            node = node["properties"][step]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


def pod_specs(obj: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Paths of the pod specs in ``obj``: the maps holding a ``containers`` list (found, not taken from CUSTOM)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            yield path
        for k, v in obj.items():
            yield from pod_specs(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from pod_specs(v, (*path, i))


def at(obj: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        obj = obj[step]
    return obj


def as_observed(obj: dict[str, Any], container: str | None) -> dict[str, Any]:
    live = copy.deepcopy(obj)
    for path in pod_specs(live):
        first = at(live, path)["containers"][0]
        if container is not None:
            first["name"] = container
        first.setdefault("resources", {}).setdefault("limits", {}).setdefault(GPU_RESOURCE, 1)
    return live


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic(base: Any, patch: Any) -> Any:
    """Strategic merge as the API server does it for these fields: maps merge, null deletes, containers merge by
    name, other lists replace."""
    if isinstance(patch, dict):
        out = dict(base) if isinstance(base, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k == "containers":
                by_name = {c["name"]: c for c in out.get(k, [])}
                for c in v:
                    by_name[c["name"]] = strategic(by_name.get(c["name"], {}), c)
                out[k] = list(by_name.values())
            else:
                out[k] = strategic(out.get(k), v)
        return out
    return copy.deepcopy(patch)


def changed(a: Any, b: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            if k not in a or k not in b:
                yield (*path, k)
            else:
                yield from changed(a[k], b[k], (*path, k))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from changed(x, y, (*path, i))
    elif a != b:
        yield path


def container_of(ptype: str, body: Any) -> str | None:
    if ptype == "json":
        return next((op["value"] for op in body if op["op"] == "test"), None)
    text = json.dumps(body)
    found = re.search(r'"containers": \[\{"name": "([^"]+)"', text)
    return found.group(1) if found else None


def check_patch(kind: str, ptype: str, body: Any, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply ``body`` (as kubectl would with ``--type ptype``) to the live ``kind``, validate the result and return
    it."""
    live = as_observed(upstream(kind), container_of(ptype, body))
    if kind not in CUSTOM:
        assert ptype == "strategic", kind
        merged = strategic(live, body)
        merged["apiVersion"] = (doc or {}).get("apiVersion", merged["apiVersion"])
        merged.setdefault("metadata", {})["namespace"] = "ns"
        assert kubernetes_validate.validate(merged, K8S_VERSION, strict=True)
        return dict(merged)
    assert ptype in ("merge", "json"), f"{kind}: kubectl patch takes no strategic merge on a custom resource"
    after = merge_patch(live, body) if ptype == "merge" else jsonpatch.apply_patch(live, body)
    specs = list(pod_specs(live))
    for path in changed(live, after):
        inside = any(path[: len(p)] == p for p in specs)
        stop = path[:2] in (
            ("spec", "runPolicy"),
            ("spec", "suspend"),
            ("spec", "replicas"),
            ("metadata", "annotations"),
        )
        assert inside or stop or path[:3] == ("spec", "predictor", "minReplicas"), f"{kind}: patch writes {path}"
    if kind in CRD_FILES:
        jsonschema.validate(after, served_schema(kind))
        for path in changed(live, after):
            known = (kind, path) in UNDECLARED
            assert known or declared(served_schema(kind), path), f"{kind}: the CRD prunes {path}"
    for path in pod_specs(after):
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "namespace": "ns"}}
        spec = {k: v for k, v in at(after, path).items() if not (kind == "InferenceService" and k in PREDICTOR_ONLY)}
        template["template"] = {"spec": spec}
        assert kubernetes_validate.validate(template, K8S_VERSION, strict=True)
    return dict(after)


def docs_with_commands(path: Path) -> Iterator[tuple[dict[str, Any], str | None, Any]]:
    for chunk in path.read_text().split("\n---\n"):
        found = [m for line in chunk.splitlines() if (m := COMMAND.match(line))]
        doc = yaml.safe_load(chunk)
        if not doc:
            continue
        if found:
            yield doc, found[0].group(1), json.loads(found[0].group(2))
        else:
            yield doc, None, None


@pytest.fixture(scope="module")
def nodepool_schema(fixtures: Path) -> dict[str, Any]:
    crd = yaml.safe_load((fixtures / "karpenter" / "karpenter.sh_nodepools.yaml").read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return dict(v1["schema"]["openAPIV3Schema"])


def test_every_emitted_file_validates(demo: Demo, nodepool_schema: dict[str, Any]) -> None:
    catalog = mig.load_catalog()
    counts: dict[str, int] = {"NodePool": 0, "patch": 0, "ConfigMap": 0}
    for path in sorted(demo.out.glob("*/*.yaml")):
        for doc, ptype, body in docs_with_commands(path):
            if ptype is not None:
                check_patch(doc["kind"], ptype, body, doc)
                counts["patch"] += 1
                counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
            elif doc["kind"] == "NodePool":
                jsonschema.validate(doc, nodepool_schema)
                counts["NodePool"] += 1
            elif doc["kind"] == "NodeOverlay":  # validated and matched to its pool: tests/test_recommend_overlays.py
                counts["NodeOverlay"] = counts.get("NodeOverlay", 0) + 1
            else:
                assert doc["kind"] == "ConfigMap", doc["kind"]
                assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                counts["ConfigMap"] += 1
                if "config.yaml" in doc["data"]:
                    config = yaml.safe_load(doc["data"]["config.yaml"])
                    for name, entries in config["mig-configs"].items():
                        for entry in entries:
                            devices = entry.get("mig-devices") or {}
                            profiles = [p for p, n in devices.items() for _ in range(n)]
                            if profiles:
                                assert mig.arrange(catalog.gpu(H100), profiles) is not None, name
    assert all(counts[k] for k in ("NodePool", "patch", "ConfigMap")), counts
    assert all(counts.get(k) for k in DEMO_CRD_KINDS), counts  # the CRD check saw the demo's patches of these kinds


def _body(m: Manifest) -> tuple[str, Any]:
    found = COMMAND.match("# x; apply with: " + m.apply_command())
    assert found is not None, m.apply_command()
    return found.group(1), json.loads(found.group(2))


GPUS = {"containers": [{"name": "main", "resources": {"limits": {GPU_RESOURCE: 2}, "requests": {GPU_RESOURCE: 2}}}]}
MIG = {
    "containers": [
        {
            "name": "main",
            "resources": {
                "limits": {GPU_RESOURCE: None, "nvidia.com/mig-1g.10gb": 1},
                "requests": {GPU_RESOURCE: None, "nvidia.com/mig-1g.10gb": 1},
            },
        }
    ]
}
KINDS_WITH_EXAMPLES = [k for k in EXAMPLES if k in CUSTOM]


@pytest.mark.parametrize("owner", KINDS_WITH_EXAMPLES)
def test_custom_patches_apply_to_a_live_object(owner: str) -> None:
    selector = node_selector_patch("training", "ml", "w", {"karpenter.sh/nodepool": "spot"}, "why", owner)
    for m in (selector, workload_patch("training", "ml", "w", GPUS, (), owner)):
        ptype, body = _body(m)
        assert m.patch_type == ptype != "strategic"
        check_patch(owner, ptype, body)
    mig_patch = workload_patch("training", "ml", "w", MIG, (), owner)
    check_patch(owner, *_body(mig_patch))
    stop = scale_to_zero_patch("training", "ml", "w", owner, ())
    check_patch(owner, *_body(stop))
    assert selector.obj["apiVersion"] == CUSTOM[owner].api_version
    assert any("telemetry" in c for c in selector.comments)


def test_patch_types_per_field() -> None:
    # nodeSelector is a map reached through maps: merge; a container's resources sit in a list: JSON patch
    assert node_selector_patch("training", "ml", "w", {"a": "b"}, "why", "PyTorchJob").patch_type == "merge"
    assert workload_patch("training", "ml", "w", GPUS, (), "PyTorchJob").patch_type == "json"
    # RayCluster worker groups are a list: a merge patch would replace them all
    assert node_selector_patch("training", "ml", "w", {"a": "b"}, "why", "RayCluster").patch_type == "json"
    assert node_selector_patch("training", "ml", "w", {"a": "b"}, "why", "Deployment").patch_type == "strategic"
    cmd = workload_patch("training", "ml", "w", GPUS, (), "PyTorchJob").apply_command()
    assert cmd.startswith("kubectl -n ml patch pytorchjob w --type json -p '[")


def test_a_wrong_path_fails() -> None:
    # a PyTorchJob has no spec.template: the Deployment-shaped patch the old fallback wrote must not pass
    with pytest.raises(AssertionError, match="patch writes"):
        check_patch("PyTorchJob", "merge", {"spec": {"template": {"spec": {"nodeSelector": {"a": "b"}}}}})
    with pytest.raises(AssertionError, match="no strategic merge"):
        check_patch("RayCluster", "strategic", {"spec": {}})
    with pytest.raises(jsonpatch.JsonPatchException):  # a container that is not the first
        check_patch(
            "PyTorchJob",
            "json",
            [
                {
                    "op": "test",
                    "path": "/spec/pytorchReplicaSpecs/Master/template/spec/containers/0/name",
                    "value": "x",
                },
                {
                    "op": "test",
                    "path": "/spec/pytorchReplicaSpecs/Master/template/spec/containers/0/name",
                    "value": "y",
                },
            ],
        )


def test_crd_schema_rejects_a_wrong_field() -> None:
    schema = served_schema("PyTorchJob")
    assert set(schema["properties"]["spec"]["properties"]) >= {"pytorchReplicaSpecs", "runPolicy"}
    good = check_patch("PyTorchJob", "merge", {"spec": {"runPolicy": {"suspend": True}}})
    assert good["spec"]["runPolicy"]["suspend"] is True
    worker = {"spec": {"pytorchReplicaSpecs": {"Worker": {"template": {"spec": {"nodeSelector": ["spot"]}}}}}}
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'object'") as err:
        check_patch("PyTorchJob", "merge", worker)
    assert list(err.value.absolute_path)[-1] == "nodeSelector"
    # outside the pod specs only the CRD can tell: kubernetes-validate never sees runPolicy
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'boolean'") as err:
        check_patch("PyTorchJob", "merge", {"spec": {"runPolicy": {"suspend": "yes"}}})
    assert list(err.value.absolute_path) == ["spec", "runPolicy", "suspend"]


def test_undeclared_fields_are_still_undeclared() -> None:
    for (kind, path), why in UNDECLARED.items():
        assert not declared(served_schema(kind), path), (
            f"{kind} {path} is declared now ({why}): drop it from UNDECLARED"
        )
    worker = ("spec", "workerGroupSpecs", 0, "template", "spec")
    assert declared(served_schema("RayCluster"), (*worker, "nodeSelector", "karpenter.sh/nodepool"))
    assert declared(served_schema("RayCluster"), (*worker, "containers", 0, "resources", "limits", GPU_RESOURCE))
    assert not declared(served_schema("RayCluster"), (*worker, "nodeSelectors"))


def test_ray_crd_rejects_a_wrong_field() -> None:
    schema = served_schema("RayCluster")
    assert set(schema["properties"]["spec"]["properties"]) >= {"headGroupSpec", "workerGroupSpecs"}
    bad = [{"op": "add", "path": "/spec/workerGroupSpecs/0/template/spec/nodeSelector", "value": ["spot"]}]
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'object'") as err:
        check_patch("RayCluster", "json", bad)
    assert list(err.value.absolute_path) == ["spec", "workerGroupSpecs", 0, "template", "spec", "nodeSelector"]
    with pytest.raises(AssertionError, match="the CRD prunes"):
        check_patch("RayCluster", "merge", {"spec": {"headGroupSpec": {"template": {"spec": {"nodeSelectors": {}}}}}})
