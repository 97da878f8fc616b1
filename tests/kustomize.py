"""What `kubectl apply -k deploy/` would apply: the kustomization's resources with its namespace, images and
configMapGenerator applied, for tests on a machine without kubectl.

Only the kustomization fields deploy/ uses are understood; any other field fails the render, so a patch added later
cannot be silently ignored. Where kubectl is installed, tests/test_deploy_kustomize.py checks that this render equals
`kubectl kustomize deploy/` object for object.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

UNDERSTOOD = {"apiVersion", "kind", "namespace", "resources", "images", "configMapGenerator"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}
BINDINGS = {"RoleBinding", "ClusterRoleBinding"}


class KustomizeError(ValueError):
    pass


def render(directory: Path) -> list[dict[str, Any]]:
    """Every object the kustomization in `directory` produces, generated ConfigMaps first, in file order."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - UNDERSTOOD
    if unknown:
        raise KustomizeError(f"kustomization.yaml: fields this renderer does not apply: {sorted(unknown)}")
    objects = [*(_generated(directory, g) for g in spec.get("configMapGenerator", [])), *_resources(directory, spec)]
    namespace = spec.get("namespace")
    for obj in objects:
        if namespace:
            _set_namespace(obj, namespace)
        _set_images(obj, spec.get("images", []))
    return objects


def _resources(directory: Path, spec: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name in spec.get("resources", []):
        path = directory / name
        if path.is_dir():
            found.extend(render(path))
        else:
            found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def _generated(directory: Path, generator: dict[str, Any]) -> dict[str, Any]:
    unknown = set(generator) - {"name", "files", "options"}
    options = generator.get("options", {})
    unknown |= set(options) - {"labels", "disableNameSuffixHash"}
    if unknown:
        raise KustomizeError(f"configMapGenerator {generator['name']}: fields not applied: {sorted(unknown)}")
    if not options.get("disableNameSuffixHash"):
        raise KustomizeError(f"configMapGenerator {generator['name']}: a hashed name suffix is not rendered")
    metadata: dict[str, Any] = {"name": generator["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    data = {Path(f).name: (directory / f).read_text() for f in generator.get("files", [])}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _set_namespace(obj: dict[str, Any], namespace: str) -> None:
    if obj["kind"] not in CLUSTER_SCOPED:
        obj["metadata"]["namespace"] = namespace
    if obj["kind"] in BINDINGS:
        for subject in obj.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace


def _set_images(obj: Any, images: list[dict[str, str]]) -> None:
    """Rewrite every `image:` of a container (any depth, so CronJob templates too) that names a listed image."""
    if isinstance(obj, list):
        for item in obj:
            _set_images(item, images)
        return
    if not isinstance(obj, dict):
        return
    for key in ("containers", "initContainers"):
        for container in obj.get(key, []) if isinstance(obj.get(key), list) else []:
            container["image"] = _image(container["image"], images)
    for value in obj.values():
        _set_images(value, images)


def _image(reference: str, images: list[dict[str, str]]) -> str:
    name, _, tag = reference.partition(":")
    for image in images:
        if image["name"] == name:
            return f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return reference


def keyed(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The objects by (kind, namespace, name), each once."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if key in out:
            raise KustomizeError(f"{key} is defined twice")
        out[key] = copy.deepcopy(obj)
    return out
