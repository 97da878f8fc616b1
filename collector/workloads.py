"""The workload a pod belongs to (the ``workload`` column of ``gpu_allocations``): its top-level controller, climbed
through the owner chain (:func:`owner_chain`), or its name without the suffixes Kubernetes generated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SAFE = "bcdfghjklmnpqrstvwxz2456789"
"""Kubernetes' alphabet for generated names (``rand.SafeEncodeString``): no vowels, so no words; no 0, 1 or 3."""
_POD_SUFFIX = re.compile(rf"(?P<base>.+)-[{_SAFE}]{{5}}")
"""``generateName``'s 5 random characters (Deployment, DaemonSet and Job pods)."""
_TEMPLATE_HASH = re.compile(rf"(?P<base>.+)-[{_SAFE}]{{6,10}}")
"""A ReplicaSet's ``pod-template-hash`` (a 32-bit hash's decimal digits, each mapped into the safe alphabet)."""
_CRON_RUN = re.compile(r"(?P<base>.+)-\d{8,}")
"""A CronJob's Job: ``<cronjob>-<scheduled time in minutes since the epoch>``."""
_ORDINAL = re.compile(r"(?P<base>.+)-(?:0|[1-9]\d{0,4})")
"""A StatefulSet's pod: ``<statefulset>-<ordinal>``."""


def workload_from_owner(owner_kind: str | None, owner_name: str | None, pod_name: str) -> str:
    """The workload a pod belongs to: its owner when known, else the pod's name without its generated suffixes.

    With an owner: a ReplicaSet gives its Deployment (``trainer-7d9f8b6c5d`` -> ``trainer``); a Job made by a
    CronJob gives the CronJob (``backup-28934567`` -> ``backup``), so every run is one workload; a static pod
    (owner ``Node``) loses its ``-<node>`` suffix; any other owner (StatefulSet, DaemonSet, Job, a custom resource
    such as a PyTorchJob) is the workload as named.

    From the pod name alone: ``name-<template hash>-<5>`` (Deployment) and ``name-<5>`` (DaemonSet, Job) and
    ``name-<minutes>-<5>`` (CronJob) and ``name-<ordinal>`` (StatefulSet) all give ``name``; a name with no generated
    suffix (a bare pod) is its own workload.
    """
    if owner_kind and owner_name:
        if owner_kind == "ReplicaSet":
            return _strip(_TEMPLATE_HASH, owner_name)
        if owner_kind == "Job":
            return _strip(_CRON_RUN, owner_name)
        if owner_kind == "Node":
            return pod_name.removesuffix(f"-{owner_name}")
        return owner_name
    return workload_from_pod(pod_name)


def workload_from_pod(pod_name: str) -> str:
    """The workload of a pod whose owner is unknown: its name without the suffixes Kubernetes generated.

    ``name-<template hash>-<5>`` (Deployment), ``name-<minutes>-<5>`` (CronJob), ``name-<5>`` (DaemonSet, Job) and
    ``name-<ordinal>`` (StatefulSet) give ``name``; generated parts use an alphabet without vowels, so ordinary
    words are not mistaken for them; a bare pod is its own workload.
    """
    if (generated := _POD_SUFFIX.fullmatch(pod_name)) is not None:
        base = generated["base"]
        for parent in (_CRON_RUN, _TEMPLATE_HASH):
            if (match := parent.fullmatch(base)) is not None:
                return match["base"]
        return base
    return _strip(_ORDINAL, pod_name)


def _strip(pattern: re.Pattern[str], name: str) -> str:
    match = pattern.fullmatch(name)
    return match["base"] if match is not None else name


ObjectRef = tuple[str, str]
"""(kind, name) of an object in the pod's namespace."""
Parents = Mapping[tuple[str, str, str], ObjectRef | None]
"""(namespace, kind, name) -> that object's controller owner; None when the object is known to have none (it is
top-level); absent when nothing is known about it."""
MAX_CHAIN = 8
"""Owner chains are short (Pod <- ReplicaSet <- Deployment <- a CRD); a longer one is a loop in bad data."""


@dataclass(frozen=True)
class Owner:
    """A pod's owner chain and the workload it gives: the columns ``owner_kind``, ``owner_name``, ``owner_chain`` and
    ``workload`` of ``gpu_allocations``."""

    workload: str
    kind: str | None = None
    """The top-level controller's kind (``Deployment``, ``CronJob``, ``PyTorchJob``...), None when the pod has no
    known owner."""
    name: str | None = None
    chain: str | None = None
    """``Pod<-ReplicaSet/x<-Deployment/y``: every owner from the pod up to the top-level controller."""


def owner_chain(namespace: str, pod: str, owner: ObjectRef | None, parents: Parents) -> Owner:
    """A pod's owner chain from its controller ``owner`` (``kube_pod_owner``) up through ``parents``
    (``kube_replicaset_owner``, ``kube_job_owner``): ReplicaSet -> Deployment, Job -> CronJob, or any custom
    controller (a Job of a JobSet) named by its kind.

    The workload is the top-level controller when the chain is known to end there (the owner's own series say it
    has no owner, or the chain climbed); when the owner's own series are missing, the chain stops at the pod's owner
    and the workload is :func:`workload_from_owner`'s reading of its name (``trainer-7d9f8b6c5d`` -> ``trainer``).
    A pod without owner has no chain and the workload of its name."""
    if owner is None:
        return Owner(workload_from_pod(pod))
    links = [owner]
    top: ObjectRef = owner
    known_top = False
    while len(links) <= MAX_CHAIN:
        key = (namespace, *top)
        if key not in parents:
            break
        parent = parents[key]
        if parent is None or parent in links:
            known_top = True
            break
        links.append(parent)
        top = parent
    chain = "<-".join(["Pod", *(f"{kind}/{name}" for kind, name in links)])
    read_from_name = top[0] == "Node" or not (len(links) > 1 or known_top)
    workload = workload_from_owner(top[0], top[1], pod) if read_from_name else top[1]
    return Owner(workload, top[0], top[1], chain)
