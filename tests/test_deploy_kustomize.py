"""`kubectl apply -k deploy/` as a whole (README "Run it in a cluster"): the kustomization rendered here
(tests/kustomize.py, equal to `kubectl kustomize` where kubectl is installed); every built-in object valid for
kubernetes-validate (bundled schemas, offline, strict) at the oldest supported and the newest Kubernetes; the
Prometheus Operator's objects valid for its own CRDs; and the objects wired to each other: selectors that select,
ports that exist, a NetworkPolicy that lets through exactly what the pods serve."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor

from tests.kustomize import KustomizeError, keyed, render

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CRDS = Path(__file__).resolve().parent / "fixtures" / "crds"
OLDEST_SUPPORTED = "1.28"
VERSIONS = (OLDEST_SUPPORTED, major_minor(latest_version()))
OPERATOR_KINDS = {
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}
"""The Prometheus Operator's kinds, checked against its CRDs (tests/fixtures/crds/SOURCES.md)."""
WORKLOADS = {"Deployment", "DaemonSet"}
DASHBOARD_PORT = 8501


@functools.cache
def rendered() -> tuple[dict[str, Any], ...]:
    return tuple(render(DEPLOY))


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in rendered() if obj["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in of_kind(kind) if o["metadata"]["name"] == name]
    return obj


def pod_templates() -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod template) of every Deployment and DaemonSet."""
    return [(o["metadata"]["name"], o["spec"]["template"]) for o in rendered() if o["kind"] in WORKLOADS]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def container_ports(template: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


BUILT_IN = [
    (i, obj["kind"], obj["metadata"]["name"]) for i, obj in enumerate(rendered()) if obj["kind"] not in OPERATOR_KINDS
]


def test_the_render_equals_kubectl_kustomize() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the render is checked against kustomize only where it is")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    theirs = keyed([doc for doc in yaml.safe_load_all(out) if doc])
    assert keyed(list(rendered())) == theirs


def test_the_renderer_refuses_what_it_does_not_apply(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches:\n  - path: p.yaml\n")
    with pytest.raises(KustomizeError, match="patches"):
        render(tmp_path)


def test_every_file_in_deploy_is_applied_or_documented_as_not() -> None:
    """A manifest beside the others that the kustomization leaves out would be missed by `kubectl apply -k`."""
    spec = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(spec["resources"]) | {f for g in spec["configMapGenerator"] for f in g["files"]}
    manifests = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml"}
    not_objects = {
        "prometheus/gpuledger-rules.yaml",  # plain rule file (promtool; a Prometheus without the Operator)
        "prometheus/gpuledger-rules.test.yaml",  # promtool's unit tests of those rules
        "prometheus/scrape-config.yaml",  # scrape jobs for a Prometheus without the Operator
    }
    assert manifests - listed == not_objects


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("index", "kind", "name"), BUILT_IN, ids=[f"{k}/{n}" for _, k, n in BUILT_IN])
def test_every_built_in_object_validates_strictly(index: int, kind: str, name: str, version: str) -> None:
    assert kubernetes_validate.validate(rendered()[index], version, strict=True) == version


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    path = CRDS / OPERATOR_KINDS[kind]
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
    return dict(v1["schema"]["openAPIV3Schema"])


def validator(kind: str) -> jsonschema.Draft202012Validator:
    """The CRD's schema as a validator, not checked as a schema itself: the Operator's patterns are Go regular
    expressions (``^(?i)(abort|warn)?$``), which Python's re rejects; none applies to a field set here."""
    return jsonschema.Draft202012Validator(crd_schema(kind))


def no_unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare (the API server prunes them silently: a typo would be a lost setting)."""
    if isinstance(obj, dict) and "properties" in schema:
        unknown = [f"{path}.{k}" for k in obj if k not in schema["properties"]]
        for key, value in obj.items():
            if key in schema["properties"]:
                unknown += no_unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return unknown
    if isinstance(obj, list) and "items" in schema:
        return [u for i, item in enumerate(obj) for u in no_unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("kind", sorted(OPERATOR_KINDS))
def test_operator_objects_validate_against_the_operators_crds(kind: str) -> None:
    (obj,) = of_kind(kind)
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    schema = crd_schema(kind)
    validator(kind).validate(obj)
    assert no_unknown_fields({k: v for k, v in obj.items() if k != "metadata"}, schema) == []


def test_the_crd_check_fails_on_a_misspelt_field() -> None:
    monitor = {**of_kind("PodMonitor")[0]}
    monitor["spec"] = {**monitor["spec"], "podMetricEndpoints": monitor["spec"]["podMetricsEndpoints"]}
    assert no_unknown_fields(monitor, crd_schema("PodMonitor")) == [".spec.podMetricEndpoints"]
    broken = {**monitor, "spec": {**monitor["spec"], "podMetricsEndpoints": [{"honorLabels": "yes"}]}}
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'boolean'"):
        validator("PodMonitor").validate(broken)


def test_one_namespace_and_every_namespaced_object_in_it() -> None:
    (namespace,) = of_kind("Namespace")
    name = namespace["metadata"]["name"]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    assert {o["metadata"].get("namespace") for o in rendered() if o["kind"] not in cluster_scoped} == {name}


def test_the_gpuledger_containers_run_the_kustomization_image() -> None:
    spec = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (image,) = spec["images"]
    wanted = f"{image['newName']}:{image['newTag']}"
    gpuledger = [
        c["image"]
        for o in rendered()
        for c in (
            o["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            if o["kind"] == "CronJob"
            else o["spec"]["template"]["spec"]["containers"]
            if o["kind"] in WORKLOADS
            else []
        )
        if c["name"] != "oauth2-proxy"
    ]
    assert len(gpuledger) == 3 and set(gpuledger) == {wanted}


def test_every_service_selects_pods_and_targets_their_named_ports() -> None:
    for service in of_kind("Service"):
        selected = [t for _, t in pod_templates() if selects(service["spec"]["selector"], t["metadata"]["labels"])]
        assert len(selected) == 1, service["metadata"]["name"]
        ports = container_ports(selected[0])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)


def test_no_service_or_container_port_reaches_the_dashboard_unauthenticated() -> None:
    """The dashboard binds the pod's loopback; only oauth2-proxy's port is exposed (README "Run it in a cluster")."""
    for _, template in pod_templates():
        assert DASHBOARD_PORT not in container_ports(template).values()
    for service in of_kind("Service"):
        for port in service["spec"]["ports"]:
            assert DASHBOARD_PORT not in (port["port"], port["targetPort"])
    (ingress_like,) = [s for s in of_kind("Service") if any(p["name"] == "dashboard" for p in s["spec"]["ports"])]
    server = named("Deployment", "gpuledger-server")["spec"]["template"]
    (proxy,) = [c for c in server["spec"]["containers"] if c["name"] == "oauth2-proxy"]
    assert {p["name"] for p in proxy["ports"]} == {"dashboard"}
    assert ingress_like["spec"]["type"] == "ClusterIP"  # never a LoadBalancer or NodePort by default


def test_the_monitors_select_what_serves_metrics() -> None:
    (pod_monitor,) = of_kind("PodMonitor")
    agents = [
        t
        for _, t in pod_templates()
        if selects(pod_monitor["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])
    ]
    assert len(agents) == 1
    for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in container_ports(agents[0])
        assert endpoint["honorLabels"] is True  # the agent's pod labels name the GPU's holder
    (service_monitor,) = of_kind("ServiceMonitor")
    services = [
        s
        for s in of_kind("Service")
        if selects(service_monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        and s["spec"].get("clusterIP") != "None"
    ]
    assert [s["metadata"]["name"] for s in services] == ["gpuledger"]
    assert {e["port"] for e in service_monitor["spec"]["endpoints"]} <= {
        p["name"] for p in services[0]["spec"]["ports"]
    }


def policy_ports(policy: dict[str, Any], direction: str) -> set[int]:
    return {p["port"] for rule in policy["spec"].get(direction, []) for p in rule.get("ports", [])}


def test_every_pod_has_a_network_policy_that_admits_exactly_its_ports() -> None:
    policies = of_kind("NetworkPolicy")
    for name, template in pod_templates():
        (policy,) = [
            p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"])
        ]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, name
        assert policy_ports(policy, "ingress") == set(container_ports(template).values()), name


def test_the_server_may_reach_the_prometheus_it_follows() -> None:
    server = named("Deployment", "gpuledger-server")["spec"]["template"]
    (container,) = [c for c in server["spec"]["containers"] if c["name"] == "server"]
    url = urlsplit(container["args"][container["args"].index("--prometheus") + 1])
    namespace = (url.hostname or "").split(".")[1]  # <service>.<namespace>.svc
    (policy,) = [p for p in of_kind("NetworkPolicy") if p["metadata"]["name"] == "gpuledger-server"]
    allowed = [
        rule
        for rule in policy["spec"]["egress"]
        if any(p["port"] == url.port for p in rule["ports"])
        and any(
            peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": namespace}
            for peer in rule.get("to", [])
        )
    ]
    assert allowed
    assert {53, 443} <= policy_ports(policy, "egress")  # DNS; Slack and the identity provider


def test_the_grafana_dashboard_config_map_is_the_shipped_json() -> None:
    config_map = named("ConfigMap", "gpuledger-grafana-dashboard")
    assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert config_map["data"] == {"gpuledger.json": (DEPLOY / "grafana" / "gpuledger.json").read_text()}


def test_the_prometheus_rule_is_the_rule_file() -> None:
    (rule,) = of_kind("PrometheusRule")
    assert (
        rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus" / "gpuledger-rules.yaml").read_text())["groups"]
    )


def test_the_plain_scrape_config_keeps_the_monitors_settings() -> None:
    """prometheus/scrape-config.yaml is the Operator-less twin of monitoring.yaml: same intervals and honor_labels.
    (Its relabelling runs in a real Prometheus in tests/test_cluster_e2e.py.)"""
    jobs = {
        j["job_name"]: j
        for j in yaml.safe_load((DEPLOY / "prometheus" / "scrape-config.yaml").read_text())["scrape_configs"]
    }
    (pod_monitor,) = of_kind("PodMonitor")
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert jobs["gpuledger-agent"]["scrape_interval"] == endpoint["interval"]
    assert jobs["gpuledger-agent"]["honor_labels"] is endpoint["honorLabels"]
    (service_monitor,) = of_kind("ServiceMonitor")
    (server_endpoint,) = service_monitor["spec"]["endpoints"]
    assert jobs["gpuledger-server"]["scrape_interval"] == server_endpoint["interval"]
    assert not jobs["gpuledger-server"].get("honor_labels", False)
