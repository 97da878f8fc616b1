"""deploy/scheduler.yaml: valid Kubernetes objects (kubernetes-validate, offline, strict), one locked-down scheduler,
secrets only from a Secret, and a config that gpuledger itself loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gpuledger.settings import load_settings
from tests.test_deploy import DEPLOY, VERSIONS

NAME = "scheduler.yaml"


def docs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / NAME).read_text()) if doc]


def one(kind: str) -> dict[str, Any]:
    found = [d for d in docs() if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("index", range(len(docs())), ids=[d["kind"] for d in docs()])
def test_every_document_validates_strictly(index: int, version: str) -> None:
    assert kubernetes_validate.validate(docs()[index], version, strict=True) == version


def test_kinds_and_namespace() -> None:
    assert sorted(d["kind"] for d in docs()) == ["ConfigMap", "CronJob", "Deployment", "PersistentVolumeClaim"]
    assert {d["metadata"]["namespace"] for d in docs()} == {"gpuledger"}


def test_one_scheduler_that_runs_gpuledger_schedule() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["schedule", "--config", "/etc/gpuledger/gpuledger.toml"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert pod["automountServiceAccountToken"] is False
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_locked_down_and_secrets_from_a_secret(kind: str) -> None:
    spec = one(kind)["spec"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"] if kind == "CronJob" else spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["GPULEDGER_SLACK_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"]["name"] == "gpuledger-alerts"
    assert all("value" not in e for e in container["env"])  # no secret written into the manifest
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "gpuledger-alerts"
    assert (
        volumes["warehouse"]["persistentVolumeClaim"]["claimName"] == one("PersistentVolumeClaim")["metadata"]["name"]
    )
    assert set(container["resources"]) == {"requests", "limits"}


def test_the_config_map_is_a_config_gpuledger_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gpuledger.toml"
    path.write_text(one("ConfigMap")["data"]["gpuledger.toml"])
    monkeypatch.chdir(tmp_path)
    settings = load_settings(path)
    assert settings.slack is not None and settings.email is not None
    assert settings.email.password_file == Path("/var/run/secrets/gpuledger/smtp-password")
    assert settings.scheduler.timezone == "Europe/Berlin"
    mounted = {m["mountPath"] for m in one("Deployment")["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert str(settings.email.password_file.parent) in mounted
    assert str(settings.warehouse) in mounted
