"""deploy/server.yaml: one locked-down `gpuledger server` over one volume, the dashboard only behind oauth2-proxy,
secrets only from Secrets, and a config that gpuledger itself loads."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuledger.settings import load_settings
from tests.server_process import clean_env, gpuledger
from tests.test_deploy import DEPLOY

NAME = "server.yaml"
WAREHOUSE = "/var/lib/gpuledger/warehouse"


def docs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / NAME).read_text()) if doc]


def one(kind: str) -> dict[str, Any]:
    found = [d for d in docs() if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def pod_of(kind: str) -> dict[str, Any]:
    spec = one(kind)["spec"]
    pod: dict[str, Any] = (
        spec["jobTemplate"]["spec"]["template"]["spec"] if kind == "CronJob" else spec["template"]["spec"]
    )
    return pod


def containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_of("Deployment")["containers"]}


def test_kinds_and_namespace() -> None:
    assert sorted(d["kind"] for d in docs()) == [
        "ConfigMap",
        "CronJob",
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
    ]
    assert {d["metadata"]["namespace"] for d in docs()} == {"gpuledger"}


def test_one_server_that_runs_gpuledger_server() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # the old pod's write finishes before
    pod = pod_of("Deployment")
    assert list(containers()) == ["server", "oauth2-proxy"]
    args = containers()["server"]["args"]
    assert args[:3] == ["--config", "/etc/gpuledger/gpuledger.toml", "server"]
    assert args[args.index("--warehouse") + 1] == WAREHOUSE
    assert args[args.index("--prometheus") + 1].startswith("http://")
    assert "--no-dashboard" not in args and "--no-schedule" not in args
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "gpuledger-server"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_server_arguments_parse(tmp_path: Path) -> None:
    """The container's arguments are ones `gpuledger` accepts: a usage error exits 2 before anything runs, so a
    `--help` appended after them parses every one and prints the command's help."""
    args = containers()["server"]["args"]
    config = tmp_path / "gpuledger.toml"
    config.write_text(one("ConfigMap")["data"]["gpuledger.toml"])
    argv = ["--config", str(config), *args[2:], "--help"]
    done = subprocess.run(
        [*gpuledger(), *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    assert "--prometheus" in done.stdout


def test_probes_hit_the_health_endpoints_on_the_metrics_port() -> None:
    server = containers()["server"]
    args = server["args"]
    assert server["ports"] == [
        {"name": "metrics", "containerPort": int(args[args.index("--port") + 1]), "protocol": "TCP"}
    ]
    assert args[args.index("--addr") + 1] == "0.0.0.0"  # probes and Prometheus come to the pod's IP
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert server["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_the_dashboard_is_reached_only_through_the_authenticating_proxy() -> None:
    """The dashboard listens on the pod's loopback (gpuledger.serving.DASHBOARD_HOST); the pod exposes no port of it,
    the Service none either, and oauth2-proxy, the one way in, forwards to that loopback port."""
    from gpuledger.serving import DASHBOARD_HOST, ServerOptions

    assert DASHBOARD_HOST == "127.0.0.1"
    dashboard_port = ServerOptions.__dataclass_fields__["dashboard_port"].default
    proxy = containers()["oauth2-proxy"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in proxy["args"])
    assert flags["upstream"] == f"http://{DASHBOARD_HOST}:{dashboard_port}"
    assert flags["cookie-secure"] == "true"
    exposed = [p["containerPort"] for c in containers().values() for p in c.get("ports", [])]
    assert dashboard_port not in exposed
    assert flags["http-address"].endswith(":4180")
    service = one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "dashboard": "dashboard",
        "metrics": "metrics",
    }
    assert proxy["ports"] == [{"name": "dashboard", "containerPort": 4180, "protocol": "TCP"}]
    env = {e["name"]: e for e in proxy["env"]}
    for name in ("OAUTH2_PROXY_CLIENT_ID", "OAUTH2_PROXY_CLIENT_SECRET", "OAUTH2_PROXY_COOKIE_SECRET"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "gpuledger-oauth2-proxy", name
        assert "value" not in env[name]


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_pods_meet_the_restricted_pod_security_level(kind: str) -> None:
    """https://kubernetes.io/docs/concepts/security/pod-security-standards/ "Restricted": non-root, no privilege
    escalation, every capability dropped, the runtime's seccomp profile, and only configMap, secret, emptyDir and
    persistentVolumeClaim volumes."""
    pod = pod_of(kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(host) for host in ("hostNetwork", "hostPID", "hostIPC"))
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["privileged"] is False, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert set(container["resources"]) == {"requests", "limits"}, container["name"]
    allowed = {"configMap", "secret", "emptyDir", "persistentVolumeClaim"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed, volume["name"]


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_secrets_come_from_secrets_and_the_warehouse_from_the_claim(kind: str) -> None:
    pod = pod_of(kind)
    (container,) = [c for c in pod["containers"] if c["name"] != "oauth2-proxy"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GPULEDGER_SLACK_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"]["name"] == "gpuledger-alerts"
    assert all("value" not in e for e in container["env"] if e["name"] != "HOME")  # no secret in the manifest
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "gpuledger-alerts"
    assert (
        volumes["warehouse"]["persistentVolumeClaim"]["claimName"] == one("PersistentVolumeClaim")["metadata"]["name"]
    )
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounted[WAREHOUSE] == "warehouse"


def test_the_report_cron_job_is_an_alternative_left_off() -> None:
    """The Deployment's schedule sends the reports; the CronJob would send them twice unless enabled deliberately."""
    assert one("CronJob")["spec"]["suspend"] is True


def test_the_config_map_is_a_config_gpuledger_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gpuledger.toml"
    path.write_text(one("ConfigMap")["data"]["gpuledger.toml"])
    monkeypatch.chdir(tmp_path)
    settings = load_settings(path)
    assert settings.slack is not None and settings.email is not None
    assert settings.email.password_file == Path("/var/run/secrets/gpuledger/smtp-password")
    assert settings.scheduler.timezone == "Europe/Berlin"
    assert str(settings.warehouse) == WAREHOUSE
    mounted = {m["mountPath"] for m in containers()["server"]["volumeMounts"]}
    assert str(settings.email.password_file.parent) in mounted
    assert str(settings.warehouse) in mounted
