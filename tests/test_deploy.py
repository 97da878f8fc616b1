"""The agent's manifests (daemonset.yaml, rbac.yaml, service.yaml) and the image: the security claimed. Validation of
every object against the Kubernetes schemas is tests/test_deploy_kustomize.py's, on the rendered kustomization."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = ("daemonset.yaml", "rbac.yaml", "service.yaml")
SOCKET_DIR = "/var/lib/kubelet/pod-resources"


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for file in MANIFESTS
        for doc in load(file)
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_the_manifests_hold_what_the_agent_needs() -> None:
    kinds = sorted(doc["kind"] for name in MANIFESTS for doc in load(name))
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Namespace",
        "Service",
        "ServiceAccount",
        "ServiceAccount",
    ]
    namespaced = [doc for name in MANIFESTS for doc in load(name) if doc["kind"] in ("DaemonSet", "Service")]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {"gpuledger"}
    assert one("Namespace")["metadata"]["name"] == "gpuledger"


# ------------------------------------------------------------------------------------------------------ DaemonSet


@pytest.fixture
def pod() -> dict[str, Any]:
    return one("DaemonSet")["spec"]["template"]["spec"]


@pytest.fixture
def agent(pod: dict[str, Any]) -> dict[str, Any]:
    assert [c["name"] for c in pod["containers"]] == ["agent"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def test_agent_command(agent: dict[str, Any]) -> None:
    assert agent["args"] == [
        "collect",
        "--source",
        "nvml",
        "--no-warehouse",
        "--interval",
        "10",
        "--metrics-port",
        "9400",
        "--metrics-addr",
        "0.0.0.0",
    ]
    assert "command" not in agent  # the image's ENTRYPOINT is gpuledger


def test_the_metrics_address_is_given_because_the_agent_binds_loopback_by_default(
    pod: dict[str, Any], agent: dict[str, Any]
) -> None:
    args = agent["args"]
    assert args[args.index("--metrics-addr") + 1] == "0.0.0.0"
    assert not pod.get("hostNetwork")  # 0.0.0.0 is the pod's own addresses, not the node's
    port = agent["ports"][0]
    assert (port["name"], port["containerPort"]) == ("metrics", int(args[args.index("--metrics-port") + 1]))


def test_selector_matches_the_pods() -> None:
    ds = one("DaemonSet")
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_host_pid_for_the_cgroup_lookup(pod: dict[str, Any]) -> None:
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork", False)
    assert not pod.get("hostIPC", False)


def test_runs_only_on_gpu_nodes_and_tolerates_their_taint(pod: dict[str, Any]) -> None:
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    tolerates = [
        t
        for t in pod["tolerations"]
        if t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" and t.get("effect") in (None, "NoSchedule")
    ]
    assert tolerates


def test_container_is_locked_down(pod: dict[str, Any], agent: dict[str, Any]) -> None:
    ctx = agent["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in ctx["capabilities"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_root_is_a_stated_choice(pod: dict[str, Any]) -> None:
    """Root only for the kubelet socket, and the manifest says why next to it."""
    assert pod["securityContext"]["runAsUser"] == 0
    text = (DEPLOY / "daemonset.yaml").read_text()
    assert re.search(r"only uid 0 can use it", text)
    assert "runAsNonRoot: true" in text  # how to run without it


def test_pod_resources_socket_is_mounted_read_only(pod: dict[str, Any], agent: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in agent["volumeMounts"] if m["mountPath"] == SOCKET_DIR]
    assert len(mounts) == 1
    assert mounts[0]["readOnly"] is True
    assert volumes[mounts[0]["name"]]["hostPath"] == {"path": SOCKET_DIR, "type": "Directory"}


def test_only_the_kubelet_socket_comes_from_the_host(pod: dict[str, Any], agent: dict[str, Any]) -> None:
    """The agent keeps no warehouse of its own: Prometheus scrapes it and the one server stores (README "Run it in a
    cluster")."""
    host = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {SOCKET_DIR}
    assert not any(e["name"] == "GPULEDGER_SPOOL_DIR" or "WAREHOUSE" in e["name"] for e in agent["env"])


def test_writable_scratch_is_bounded_empty_dirs(pod: dict[str, Any], agent: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["mountPath"]: volumes[m["name"]] for m in agent["volumeMounts"]}
    assert set(mounted) == {SOCKET_DIR, "/tmp"}
    assert "sizeLimit" in mounted["/tmp"]["emptyDir"]


def test_requests_and_limits(agent: dict[str, Any]) -> None:
    resources = agent["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_probes_hit_the_named_metrics_port(agent: dict[str, Any]) -> None:
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert agent[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe


def test_node_name_comes_from_the_downward_api(agent: dict[str, Any]) -> None:
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


# ------------------------------------------------------------------------------------------------- RBAC, Service


def test_rbac_is_get_on_nodes_and_their_pod_list_and_nothing_else() -> None:
    rules = [{"apiGroups": [""], "resources": ["nodes", "nodes/pods"], "verbs": ["get"]}]
    assert one("ClusterRole")["rules"] == rules  # never nodes/proxy: it reaches exec on pods
    binding = one("ClusterRoleBinding")
    account = one("ServiceAccount", "gpuledger-agent")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one("ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    assert one("DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert not any(kind in {"Role", "RoleBinding"} for kind in (d["kind"] for d in load("rbac.yaml")))


def test_namespace_admits_the_agent() -> None:
    labels = one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPID and hostPath need it


def test_the_server_account_has_no_role_and_no_token() -> None:
    account = one("ServiceAccount", "gpuledger-server")
    assert account["automountServiceAccountToken"] is False
    bound = [s["name"] for d in load("rbac.yaml") if d["kind"].endswith("Binding") for s in d["subjects"]]
    assert "gpuledger-server" not in bound


def test_headless_metrics_service() -> None:
    service = one("Service")
    pod_labels = one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9400"
    assert annotations["prometheus.io/path"] == "/metrics"


# ---------------------------------------------------------------------------------------------------- Dockerfile


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


def test_dockerfile_base_install_and_entrypoint() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert ("RUN", "pip install . && rm -rf /src") in steps
    assert ("ENTRYPOINT", '["gpuledger"]') in steps


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in instructions() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit()  # numeric, so runAsNonRoot can check it


def test_dockerfile_fetches_nothing_but_pip() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for tool in ("curl", "wget", "ADD http", "git clone"):
        assert tool not in text, tool
    assert not any(keyword == "ADD" for keyword, _ in instructions())


def test_dockerfile_copies_every_packaged_folder() -> None:
    pyproject = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {args.split()[0].rstrip("/") for keyword, args in instructions() if keyword == "COPY"}
    assert set(packages) <= copied
    assert {"pyproject.toml", "README.md"} <= {
        part for keyword, args in instructions() if keyword == "COPY" for part in args.split()[:-1]
    }
