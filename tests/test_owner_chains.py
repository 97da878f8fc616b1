"""Owner chains from kube-state-metrics' owner series: pods climbed to their top-level controller.

Pure functions over hand-made series with kube-state-metrics' label names (``docs/pod-metrics.md``,
``replicaset-metrics.md``, ``job-metrics.md``); the real Prometheus serving them runs in tests/test_prometheus.py.
"""

from __future__ import annotations

from collector.prometheus.kube_state import pod_owners
from collector.prometheus.series import Series
from collector.workloads import Owner, owner_chain


def _owner(metric_label: str, namespace: str, name: str, kind: str, owner: str, controller: bool = True) -> Series:
    labels = {
        "namespace": namespace,
        metric_label: name,
        "owner_kind": kind,
        "owner_name": owner,
        "owner_is_controller": "true" if controller else "false",
    }
    return Series(labels, [(0.0, 1.0)])


def test_pods_climb_to_their_top_level_controller() -> None:
    pods = [
        _owner("pod", "serve", "api-7d9f8b6c5d-x2k4q", "ReplicaSet", "api-7d9f8b6c5d"),
        _owner("pod", "ml", "finetune-28931460-q7x2z", "Job", "finetune-28931460"),
        _owner("pod", "ml", "sweep-workers-0-0-abcde", "Job", "sweep-workers-0"),
        _owner("pod", "ml", "eval-28931460-zzzzz", "Job", "eval-28931460"),
        _owner("pod", "ml", "ray-head-x7k2p", "RayCluster", "ray"),
        _owner("pod", "ml", "nb-0", "StatefulSet", "nb"),
    ]
    replicasets = [
        _owner("replicaset", "serve", "api-7d9f8b6c5d", "Deployment", "api"),
        _owner("replicaset", "other", "api-7d9f8b6c5d", "Deployment", "elsewhere"),
    ]
    jobs = [
        _owner("job_name", "ml", "finetune-28931460", "CronJob", "finetune"),
        _owner("job_name", "ml", "sweep-workers-0", "JobSet", "sweep"),
        _owner("job_name", "ml", "eval-28931460", "<none>", "<none>", controller=False),
    ]
    assert pod_owners(pods, replicasets, jobs) == {
        ("serve", "api-7d9f8b6c5d-x2k4q"): Owner(
            "api", "Deployment", "api", "Pod<-ReplicaSet/api-7d9f8b6c5d<-Deployment/api"
        ),
        ("ml", "finetune-28931460-q7x2z"): Owner(
            "finetune", "CronJob", "finetune", "Pod<-Job/finetune-28931460<-CronJob/finetune"
        ),
        ("ml", "sweep-workers-0-0-abcde"): Owner("sweep", "JobSet", "sweep", "Pod<-Job/sweep-workers-0<-JobSet/sweep"),
        # a Job the cluster says nobody owns is its own workload, whatever its name looks like
        ("ml", "eval-28931460-zzzzz"): Owner("eval-28931460", "Job", "eval-28931460", "Pod<-Job/eval-28931460"),
        ("ml", "ray-head-x7k2p"): Owner("ray", "RayCluster", "ray", "Pod<-RayCluster/ray"),
        ("ml", "nb-0"): Owner("nb", "StatefulSet", "nb", "Pod<-StatefulSet/nb"),
    }


def test_without_the_owners_own_series_the_chain_stops_at_the_pods_owner() -> None:
    pods = [
        _owner("pod", "serve", "api-7d9f8b6c5d-x2k4q", "ReplicaSet", "api-7d9f8b6c5d"),
        _owner("pod", "ml", "finetune-28931460-q7x2z", "Job", "finetune-28931460"),
        _owner("pod", "ml", "bare", "<none>", "<none>", controller=False),
    ]
    assert pod_owners(pods) == {
        ("serve", "api-7d9f8b6c5d-x2k4q"): Owner(
            "api", "ReplicaSet", "api-7d9f8b6c5d", "Pod<-ReplicaSet/api-7d9f8b6c5d"
        ),
        ("ml", "finetune-28931460-q7x2z"): Owner("finetune", "Job", "finetune-28931460", "Pod<-Job/finetune-28931460"),
        ("ml", "bare"): Owner("bare"),
    }


def test_an_older_kube_state_metrics_job_label_and_a_non_controller_owner() -> None:
    pods = [
        _owner("pod", "ml", "run-1-abcde", "Job", "run-1"),
        _owner("pod", "ml", "run-1-abcde", "Workload", "job-run-1-4f2a", controller=False),
    ]
    jobs = [_owner("exported_job", "ml", "run-1", "CronJob", "run")]
    assert pod_owners(pods, (), jobs) == {
        ("ml", "run-1-abcde"): Owner("run", "CronJob", "run", "Pod<-Job/run-1<-CronJob/run")
    }


def test_a_loop_in_bad_data_ends_the_chain() -> None:
    parents = {("ns", "Job", "a"): ("Job", "b"), ("ns", "Job", "b"): ("Job", "a")}
    assert owner_chain("ns", "a-abcde", ("Job", "a"), parents) == Owner("b", "Job", "b", "Pod<-Job/a<-Job/b")


def test_a_static_pod_is_its_name_without_the_node() -> None:
    assert owner_chain("kube-system", "etcd-node-1", ("Node", "node-1"), {}) == Owner(
        "etcd", "Node", "node-1", "Pod<-Node/node-1"
    )
