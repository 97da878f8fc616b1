"""The simulated fleet's shape: clusters, node pools with real instance types, nodes, GPUs and who runs what.

Everything here is decided once per seed, before any sample exists; ``collector.simulate`` then turns the plan into
samples day by day. Instance types, GPU models, GPU counts and memory come from the shipped instance catalog
(``analysis.instances``). Power limits are the published board TDPs of each model (SXM parts), the H200's read from
the real capture; they are simulator assumptions, not measurements of your fleet.

Every pod has the owner chain its controller gives it (``Holder.owner``, built by ``collector.workloads.owner_chain``
so its workload is what a scrape of kube-state-metrics would give): serving replicas (``h100-llm``, ``a10g-serve``,
``l4-serve``, ``l4-small``, the time-sliced ``autocomplete`` and ``reranker``) are ``Pod<-ReplicaSet/<deploy>-<template
hash><-Deployment/<deploy>``; research notebooks ``Pod<-StatefulSet/jupyter-<user>-<rank>`` (on the pool's n-th
node after the first ``jupyter-<user>-<n>-<rank>``, so no two pods share a name); the research pool's fine-tuning
runs and ``nightly-embeddings`` are runs of one CronJob each (``Pod<-Job/finetune-<scheduled minutes><-CronJob/
finetune``, so all the runs are one workload ``finetune``); whole-node training is one PyTorchJob
per run (``Pod<-PyTorchJob/<team>-<5>``, pod ``<job>-worker-0``), except on the ``a100-train-spot`` pool, whose runs
are KubeRay RayClusters (``Pod<-RayCluster/<team>-<5>``, pod ``<cluster>-gpu-group-worker-<5>`` as KubeRay's
``buildWorkerPod`` generates it: ``<raycluster>-<group>-worker-`` and 5 random characters).

Every pod requests CPU and memory (``Holder.cpu_request``, ``Holder.memory_request_bytes``) by one rule, also a
simulator assumption: a node's allocatable vCPUs and memory are its instance type's (``analysis.instance_resources``)
less ``SYSTEM_RESERVE`` (kubelet, OS and DaemonSets), split evenly per GPU; a pod requests ``REQUEST_SHARE`` of that
per-GPU share for each GPU it holds (whole-node trainers the whole node's allocatable), vCPUs rounded down to half a
vCPU and memory to a GiB, so the pods on a node always fit on it. Owners and requests take no random draw of their
own (a Job's name is its run's start minute, a RayCluster worker's suffix a hash of its name): every GPU timeline is
what the seed gave before pods had owners (``tests/test_simulate.py`` pins a digest).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise

import numpy as np

from analysis.instance_resources import resources_of
from analysis.instances import instance_types
from collector.calibration import load as load_calibration
from collector.workloads import ObjectRef, Owner, owner_chain

REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d")
POWER_LIMIT_W = {
    "NVIDIA A100-SXM4-40GB": 400.0,
    "NVIDIA A100-SXM4-80GB": 400.0,
    "NVIDIA H100 80GB HBM3": 700.0,
    "NVIDIA A10G": 300.0,
    "NVIDIA L4": 72.0,
}
_RS_ALPHABET = np.array(list("bcdfghjklmnpqrstvwxz2456789"))


class Kind(IntEnum):
    """What a GPU is doing during a segment of its timeline (0 = nobody holds it)."""

    UNALLOCATED = 0
    TRAIN = 1
    TRAIN_STALLED = 2
    TRAIN_SPARE = 3
    LLM_INFERENCE = 4
    SMALL_INFERENCE = 5
    BURSTY_LOW = 6
    NOTEBOOK = 7
    BATCH = 8


@dataclass(frozen=True)
class Pool:
    cluster: str
    name: str
    instance_type: str
    capacity_type: str
    share: float
    profile: str


POOLS = (
    Pool("train-use1", "h100-train", "p5.48xlarge", "on-demand", 0.25, "training"),
    Pool("train-use1", "h200-train", "p5en.48xlarge", "on-demand", 0.125, "training"),
    Pool("train-use1", "a100-train-spot", "p4d.24xlarge", "spot", 0.125, "training"),
    Pool("train-use1", "a100-research", "p4de.24xlarge", "on-demand", 0.125, "research"),
    Pool("serve-use1", "h100-llm", "p5.48xlarge", "on-demand", 0.125, "llm"),
    Pool("serve-use1", "a10g-serve", "g5.12xlarge", "spot", 0.125, "serving"),
    Pool("serve-use1", "l4-serve", "g6.12xlarge", "on-demand", 0.125, "serving"),
)
FILLER = Pool("serve-use1", "l4-small", "g6.xlarge", "on-demand", 0.0, "serving")


@dataclass
class Node:
    cluster: str
    name: str
    pool: Pool
    zone: str
    gpu_model: str
    gpu_count: int
    fb_total_bytes: int
    power_limit_w: float
    offset_s: int
    gpu_uuids: list[str]
    pool_index: int = 0
    """The node's number within its pool (0 for the first), so names a pool's nodes share stay unique."""

    @property
    def provider_id(self) -> str:
        """The node's ``spec.providerID`` as EKS sets it (``aws:///<zone>/<instance id>``), the id a FOCUS bill's
        ``ResourceId`` names; derived from the cluster and node name, so it leaves the simulation's random draws
        alone."""
        digest = hashlib.sha256(f"{self.cluster}/{self.name}".encode()).hexdigest()
        return f"aws:///{self.zone}/i-0{digest[:16]}"

    def labels(self) -> str:
        return json.dumps(
            {
                "node.kubernetes.io/instance-type": self.pool.instance_type,
                "karpenter.sh/capacity-type": self.pool.capacity_type,
                "karpenter.sh/nodepool": self.pool.name,
                "topology.kubernetes.io/zone": self.zone,
                "nvidia.com/gpu.product": self.gpu_model.removeprefix("NVIDIA ").replace(" ", "-"),
            },
            sort_keys=True,
        )


@dataclass
class Segments:
    """Every GPU's timeline as flat arrays, sorted by (gpu, start): times in seconds since the fleet's start."""

    gpu: list[int] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    holder: list[int] = field(default_factory=list)
    level: list[float] = field(default_factory=list)
    mem_frac: list[float] = field(default_factory=list)

    def add(self, gpu: int, start: float, end: float, kind: Kind, holder: int, level: float, mem: float) -> None:
        self.gpu.append(gpu)
        self.start.append(start)
        self.end.append(end)
        self.kind.append(int(kind))
        self.holder.append(holder)
        self.level.append(level)
        self.mem_frac.append(mem)


@dataclass(frozen=True)
class Holder:
    namespace: str
    pod: str
    container: str
    owner: Owner
    cpu_request: float
    """vCPUs the pod requests (summed over its containers)."""
    memory_request_bytes: int

    @property
    def workload(self) -> str:
        return self.owner.workload


@dataclass(frozen=True)
class SharedGpu:
    """A second pod time-sliced onto one GPU (``holder`` from ``start`` to ``end`` s) beside the GPU's own holder:
    its load follows the daily cycle at ``level`` of the GPU and it holds ``mem_frac`` of the memory. Both pods'
    processes report their own SM utilization and memory, as NVML's per-process samples do."""

    gpu: int
    holder: int
    start: float
    end: float
    level: float
    mem_frac: float


@dataclass
class Fleet:
    start: dt.datetime
    days: int
    seed: int
    nodes: list[Node]
    holders: list[Holder]
    segments: dict[str, np.ndarray]
    outage: tuple[int, float, float]
    """(node index, start s, end s): a collector outage on one node, which must show as no_data."""
    partial: tuple[int, int] | None = None
    """(node index, GPUs reporting): a node whose exporter shows only its first GPUs; the rest never report."""
    shared: SharedGpu | None = None
    """A second pod time-sliced onto one GPU of the time-slicing node, with per-process readings."""

    @property
    def gpu_count(self) -> int:
        return sum(n.gpu_count for n in self.nodes)


def plan(gpus: int, days: int, seed: int, end: dt.datetime) -> Fleet:
    """The whole simulated fleet for ``gpus`` GPUs over the ``days`` before ``end`` (deterministic per seed)."""
    if gpus < 1 or days < 1:
        raise ValueError("a simulated fleet needs at least one GPU and one day")
    rng = np.random.default_rng(seed)
    start = end - dt.timedelta(days=days)
    nodes = _nodes(gpus, rng)
    holders: list[Holder] = []
    segs = Segments()
    horizon = days * 86400.0
    first_gpu = 0
    for node in nodes:
        ids = list(range(first_gpu, first_gpu + node.gpu_count))
        _PLANNERS[node.pool.profile](node, ids, horizon, rng, holders, segs, start)
        first_gpu += node.gpu_count
    segs = _plant_low_duty_inference(nodes, horizon, seed, holders, segs)
    shared = _plant_shared_gpu(nodes, horizon, seed, holders)
    order = np.lexsort((np.asarray(segs.start), np.asarray(segs.gpu)))
    arrays = {name: np.asarray(getattr(segs, name))[order] for name in Segments.__dataclass_fields__}
    train_nodes = [i for i, n in enumerate(nodes) if n.pool.profile == "training"] or [0]
    outage_day = min(2, days - 1)
    outage = (
        train_nodes[len(train_nodes) // 2],
        outage_day * 86400.0 + 10 * 3600.0,
        outage_day * 86400.0 + 13 * 3600.0,
    )
    return Fleet(start, days, seed, nodes, holders, arrays, outage, _partly_reporting(nodes, outage[0]), shared)


PARTIAL_POOL = "h100-train"
PARTIAL_REPORTING = 2


def _partly_reporting(nodes: list[Node], outage_node: int) -> tuple[int, int] | None:
    """The partly reporting node: when the ``h100-train`` pool has two nodes or more, its last one (not the outage
    node) shows only its first 2 GPUs, as a dcgm-exporter whose host engine lost the others would. Chosen from the
    plan alone (no random draw), so the rest of the fleet is what the seed always gave."""
    pool = [i for i, n in enumerate(nodes) if n.pool.name == PARTIAL_POOL and i != outage_node]
    if len(pool) < 2:
        return None
    return pool[-1], PARTIAL_REPORTING


def _node_counts(gpus: int) -> list[tuple[Pool, int]]:
    """Nodes per pool: first one node per pool while the budget allows (small fleets keep their variety), then
    always the pool furthest below its share; single-GPU filler nodes take what is left."""
    per_node = {p.name: instance_types()[p.instance_type].gpu_count for p in POOLS}
    counts = dict.fromkeys(per_node, 0)
    remaining = gpus
    for pool in sorted(POOLS, key=lambda p: _FIRST_PASS.index(p.name)):
        if per_node[pool.name] <= remaining:
            counts[pool.name] += 1
            remaining -= per_node[pool.name]
    while True:
        fits = [p for p in POOLS if per_node[p.name] <= remaining]
        if not fits:
            break
        pool = max(fits, key=lambda p: p.share * gpus - counts[p.name] * per_node[p.name])
        if pool.share * gpus - counts[pool.name] * per_node[pool.name] <= 0:
            break
        counts[pool.name] += 1
        remaining -= per_node[pool.name]
    return [(p, counts[p.name]) for p in POOLS] + [(FILLER, remaining)]


_FIRST_PASS = (
    "h100-train",
    "a10g-serve",
    "h200-train",
    "l4-serve",
    "a100-research",
    "h100-llm",
    "a100-train-spot",
)


def _nodes(gpus: int, rng: np.random.Generator) -> list[Node]:
    catalog = instance_types()
    calibration = load_calibration()
    nodes: list[Node] = []
    for pool, n in _node_counts(gpus):
        itype = catalog[pool.instance_type]
        for index in range(n):
            if itype.gpu_model == calibration["gpu_model"]:
                fb_total, limit = int(calibration["fb_total_bytes"]), float(calibration["power_limit_w"])
            else:
                fb_total, limit = itype.gpu_memory_gib << 30, POWER_LIMIT_W[itype.gpu_model]
            host = int(rng.integers(1, 255))
            nodes.append(
                Node(
                    cluster=pool.cluster,
                    name=f"ip-10-{16 + len(nodes) // 256}-{len(nodes) % 256}-{host}.ec2.internal",
                    pool=pool,
                    zone=str(rng.choice(ZONES)),
                    gpu_model=itype.gpu_model,
                    gpu_count=itype.gpu_count,
                    fb_total_bytes=fb_total,
                    power_limit_w=limit,
                    offset_s=int(rng.integers(0, 60)),
                    gpu_uuids=[_uuid(rng) for _ in range(itype.gpu_count)],
                    pool_index=index,
                )
            )
    return nodes


def _uuid(rng: np.random.Generator) -> str:
    h = "".join(f"{b:02x}" for b in rng.integers(0, 256, size=16))
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _suffix(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(_RS_ALPHABET, size=n))


SYSTEM_RESERVE = 0.06
"""The share of a node's vCPUs and memory kept from pods (kubelet and system reserve, DaemonSets)."""
REQUEST_SHARE = {"trainer": 1.0, "batch": 1.0, "llm": 1.0, "small": 0.5, "notebook": 0.5, "sidecar": 0.25}
"""What a pod requests of its GPUs' share of the node's allocatable CPU and memory, by role: trainers, fine-tuning
and batch runs and LLM replicas all of it; small-model replicas and notebooks half; a second pod time-sliced onto
another's GPU (``reranker``) a quarter."""


def _requests(node: Node, gpus: int, role: str) -> tuple[float, int]:
    """(vCPUs, memory bytes) a pod of ``role`` holding ``gpus`` of ``node``'s GPUs requests."""
    resources = resources_of(node.pool.instance_type)
    if resources is None:
        raise ValueError(
            f"no vCPUs and memory known for instance type {node.pool.instance_type}: "
            "add it to analysis/data/gpu_instance_cpu_memory.csv"
        )
    share = (1.0 - SYSTEM_RESERVE) * gpus / node.gpu_count * REQUEST_SHARE[role]
    cpu = max(0.5, np.floor(resources.vcpus * share * 2.0) / 2.0)
    memory_gib = max(1, int(np.floor(resources.memory_gib * share)))
    return float(cpu), memory_gib << 30


def _holder(
    holders: list[Holder],
    node: Node,
    namespace: str,
    pod: str,
    container: str,
    owners: tuple[ObjectRef, ...],
    role: str,
    gpus: int = 1,
) -> int:
    """A new pod owned by ``owners`` (its controller first, the top-level controller last)."""
    parents: dict[tuple[str, str, str], ObjectRef | None] = {
        (namespace, kind, name): parent for (kind, name), parent in pairwise(owners)
    }
    parents[(namespace, *owners[-1])] = None
    cpu, memory = _requests(node, gpus, role)
    holders.append(Holder(namespace, pod, container, owner_chain(namespace, pod, owners[0], parents), cpu, memory))
    return len(holders) - 1


def _deployment_pod(
    holders: list[Holder], node: Node, namespace: str, deploy: str, template: str, suffix: str, role: str
) -> int:
    """A Deployment's replica: ``Pod<-ReplicaSet/<deploy>-<template><-Deployment/<deploy>``."""
    owners = (("ReplicaSet", f"{deploy}-{template}"), ("Deployment", deploy))
    return _holder(holders, node, namespace, f"{deploy}-{template}-{suffix}", deploy, owners, role)


def _cron_pod(
    holders: list[Holder], node: Node, namespace: str, cron: str, at: dt.datetime, suffix: str, container: str
) -> int:
    """A CronJob's run scheduled ``at``: ``Pod<-Job/<cron>-<minutes since the epoch><-CronJob/<cron>``."""
    job = f"{cron}-{int(at.timestamp() // 60)}"
    return _holder(holders, node, namespace, f"{job}-{suffix}", container, (("Job", job), ("CronJob", cron)), "batch")


def _generated(name: str, n: int) -> str:
    """``n`` characters of Kubernetes' generated-name alphabet derived from ``name`` (no random draw)."""
    digest = hashlib.sha256(name.encode()).digest()
    return "".join(str(_RS_ALPHABET[b % len(_RS_ALPHABET)]) for b in digest[:n])


RAY_POOL = "a100-train-spot"
"""The training pool whose runs are KubeRay RayClusters (one worker group, one whole-node worker per run)."""
RAY_GROUP = "gpu-group"


TRAIN_TEAMS = (
    ("ml-training", "llama-ft"),
    ("ml-training", "moe-pretrain"),
    ("vision", "vit-train"),
    ("research", "rl-sweep"),
)


def _plan_training(
    node: Node,
    ids: list[int],
    horizon: float,
    rng: np.random.Generator,
    holders: list[Holder],
    segs: Segments,
    start: dt.datetime,
) -> None:
    """Whole-node PyTorchJob workers (RayCluster workers on ``RAY_POOL``): saturated; some hang holding memory,
    some use fewer GPUs than they hold."""
    t = float(rng.uniform(0, 6 * 3600))
    while t < horizon:
        duration = float(rng.lognormal(np.log(20 * 3600), 0.6))
        namespace, base = TRAIN_TEAMS[int(rng.integers(len(TRAIN_TEAMS)))]
        job = f"{base}-{_suffix(rng, 5)}"
        if node.pool.name == RAY_POOL:
            pod = f"{job}-{RAY_GROUP}-worker-{_generated(f'{node.name}/{job}', 5)}"
            owners: tuple[ObjectRef, ...] = (("RayCluster", job),)
            holder = _holder(holders, node, namespace, pod, "ray-worker", owners, "trainer", len(ids))
        else:
            owners = (("PyTorchJob", job),)
            holder = _holder(holders, node, namespace, f"{job}-worker-0", "pytorch", owners, "trainer", len(ids))
        end = min(horizon, t + duration)
        stall = float(rng.uniform(2, 10) * 3600) if rng.random() < 0.3 else 0.0
        used = len(ids) if rng.random() < 0.8 else int(rng.choice([2, 4]))
        mem = float(rng.uniform(0.55, 0.9))
        for rank, gpu in enumerate(ids):
            if rank < used:
                segs.add(gpu, t, max(t, end - stall), Kind.TRAIN, holder, float(rng.uniform(0.9, 1.0)), mem)
                if stall:
                    segs.add(gpu, max(t, end - stall), end, Kind.TRAIN_STALLED, holder, 0.0, mem)
            else:
                segs.add(gpu, t, end, Kind.TRAIN_SPARE, holder, 0.0, 0.0)
        t = end + float(rng.exponential(4 * 3600))


def _plan_research(
    node: Node,
    ids: list[int],
    horizon: float,
    rng: np.random.Generator,
    holders: list[Holder],
    segs: Segments,
    start: dt.datetime,
) -> None:
    """Per-GPU notebooks (StatefulSets) that hold memory all day, with fine-tuning runs (one CronJob) on the rest
    and the ``nightly-embeddings`` CronJob on the last GPU."""
    users = ("alice", "bob", "chen", "dana", "eli", "fatima", "goran", "hana")
    for rank, gpu in enumerate(ids):
        if rank < len(ids) // 2:
            user = users[int(rng.integers(len(users)))]
            notebook = f"jupyter-{user}-{rank}" if not node.pool_index else f"jupyter-{user}-{node.pool_index}-{rank}"
            owners = (("StatefulSet", notebook),)
            holder = _holder(holders, node, "research", f"{notebook}-0", "notebook", owners, "notebook")
            segs.add(
                gpu,
                0.0,
                horizon,
                Kind.NOTEBOOK,
                holder,
                float(rng.uniform(0.3, 0.9)),
                float(rng.uniform(0.2, 0.6)),
            )
        elif rank < len(ids) - 1:
            t = 0.0
            while t < horizon:
                end = min(horizon, t + float(rng.lognormal(np.log(8 * 3600), 0.5)))
                at = start + dt.timedelta(seconds=t)
                holder = _cron_pod(holders, node, "research", "finetune", at, _suffix(rng, 5), "pytorch")
                segs.add(
                    gpu,
                    t,
                    end,
                    Kind.TRAIN,
                    holder,
                    float(rng.uniform(0.6, 0.95)),
                    float(rng.uniform(0.3, 0.8)),
                )
                t = end + float(rng.exponential(10 * 3600))
        else:
            cron = "nightly-embeddings"
            for day in range(int(horizon // 86400) + 1):
                t0 = day * 86400.0 + 3600.0
                if t0 >= horizon:
                    break
                at = start + dt.timedelta(seconds=t0)
                holder = _cron_pod(holders, node, "data-platform", cron, at, _suffix(rng, 5), "embed")
                segs.add(gpu, t0, min(horizon, t0 + 4 * 3600.0), Kind.BATCH, holder, 0.85, 0.4)


def _plan_serving(
    node: Node,
    ids: list[int],
    horizon: float,
    rng: np.random.Generator,
    holders: list[Holder],
    segs: Segments,
    start: dt.datetime,
    llm: bool = False,
) -> None:
    """Long-lived Deployment replicas, one per GPU, following the daily load; some GPUs are never scheduled."""
    services = (
        (("llm-serving", "chat-70b"), ("llm-serving", "code-assist"), ("llm-serving", "embed-api"))
        if llm
        else (
            ("recsys", "ranker"),
            ("recsys", "candidate-gen"),
            ("search", "query-encoder"),
            ("vision", "ocr"),
        )
    )
    role = "llm" if llm else "small"
    for gpu in ids:
        roll = rng.random()
        if roll < 0.15:
            continue
        namespace, deploy = services[int(rng.integers(len(services)))]
        kind = Kind.BURSTY_LOW if roll > 0.88 else (Kind.LLM_INFERENCE if llm else Kind.SMALL_INFERENCE)
        mem = float(rng.uniform(0.6, 0.8) if llm else rng.uniform(0.25, 0.55))
        level = float(rng.uniform(0.5, 0.9) if llm else rng.uniform(0.15, 0.45))
        if deploy == "embed-api":  # a small model on a whole H100: the MIG-slice case
            mem, level = float(rng.uniform(0.06, 0.14)), float(rng.uniform(0.05, 0.15))
        t = 0.0
        template = _suffix(rng, 10)
        while t < horizon:
            end = min(horizon, t + float(rng.exponential(3 * 86400)))
            holder = _deployment_pod(holders, node, namespace, deploy, template, _suffix(rng, 5), role)
            segs.add(gpu, t, end, kind, holder, level, mem)
            t = end + 45.0
            if rng.random() < 0.5:
                template = _suffix(rng, 10)


def _plan_llm(
    node: Node,
    ids: list[int],
    horizon: float,
    rng: np.random.Generator,
    holders: list[Holder],
    segs: Segments,
    start: dt.datetime,
) -> None:
    _plan_serving(node, ids, horizon, rng, holders, segs, start, llm=True)


def _plant_low_duty_inference(
    nodes: list[Node], horizon: float, seed: int, holders: list[Holder], segs: Segments
) -> Segments:
    """The time-slicing case: when the ``l4-serve`` pool has two nodes or more, its last node serves one small,
    low-duty Deployment (``search/autocomplete``: ~10% duty cycle, ~3 GiB of 24) on every GPU. Planned with its own
    random stream after everything else, so the rest of the fleet is what the seed always gave."""
    pool = [i for i, n in enumerate(nodes) if n.pool.name == "l4-serve"]
    if len(pool) < 2:
        return segs
    last = pool[-1]
    first_gpu = sum(n.gpu_count for n in nodes[:last])
    ids = set(range(first_gpu, first_gpu + nodes[last].gpu_count))
    kept = Segments()
    for i, gpu in enumerate(segs.gpu):
        if gpu not in ids:
            kind, holder = Kind(segs.kind[i]), segs.holder[i]
            kept.add(gpu, segs.start[i], segs.end[i], kind, holder, segs.level[i], segs.mem_frac[i])
    rng = np.random.default_rng([seed, 11])
    template = _suffix(rng, 10)
    for gpu in sorted(ids):
        holder = _deployment_pod(holders, nodes[last], "search", "autocomplete", template, _suffix(rng, 5), "small")
        kept.add(gpu, 0.0, horizon, Kind.SMALL_INFERENCE, holder, 0.1, float(rng.uniform(0.11, 0.13)))
    return kept


SHARED_NAMESPACE, SHARED_WORKLOAD = "recsys", "reranker"


def _plant_shared_gpu(nodes: list[Node], horizon: float, seed: int, holders: list[Holder]) -> SharedGpu | None:
    """The shared GPU: on the time-slicing node (see ``_plant_low_duty_inference``), a ``recsys/reranker`` pod
    joins the first GPU's ``search/autocomplete`` pod six hours in (or at the start of a shorter window) and stays,
    so that GPU's minutes are split between two teams by measured use. Its own random stream, drawn last, leaves the
    rest of the fleet as the seed always gave it."""
    pool = [i for i, n in enumerate(nodes) if n.pool.name == "l4-serve"]
    if len(pool) < 2:
        return None
    gpu = sum(n.gpu_count for n in nodes[: pool[-1]])
    rng = np.random.default_rng([seed, 13])
    template = _suffix(rng, 10)
    holder = _deployment_pod(
        holders, nodes[pool[-1]], SHARED_NAMESPACE, SHARED_WORKLOAD, template, _suffix(rng, 5), "sidecar"
    )
    start = min(6 * 3600.0, horizon / 4)
    return SharedGpu(gpu, holder, start, horizon, 0.5, float(rng.uniform(0.14, 0.16)))


_PLANNERS = {
    "training": _plan_training,
    "research": _plan_research,
    "serving": _plan_serving,
    "llm": _plan_llm,
}
