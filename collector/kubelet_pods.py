"""The kubelet's pod list (``GET https://<node>:10250/pods``, a ``v1.PodList``): each GPU pod's owner and its CPU and
memory requests, which the pod-resources API does not carry, onto the agent's allocation rows.

- The owner is the pod's controller ``ownerReference`` (``controller: true``). The agent cannot read the owner's own
  object, so the chain climbs only where the name says where it goes: a ReplicaSet named ``<name>-<pod-template-hash>``
  is taken to belong to the Deployment ``<name>`` (:func:`collector.workloads.workload_from_owner`'s rule), giving
  ``Pod<-ReplicaSet/x<-Deployment/y``; any other owner (a Job, a StatefulSet, a PyTorchJob...) is the top of the chain
  as far as the agent knows (a CronJob's Job stays a Job, its workload the CronJob's name).
- The requests are the containers' ``resources.requests`` summed (init containers left out, as kube-state-metrics'
  ``kube_pod_container_resource_requests`` does); a resource no container requests is null.
- The list is fetched at most every ``refresh_s`` (sooner, every ``retry_s`` at most, when a GPU pod is not in it);
  what it said is kept until a later list no longer names the pod, so a kubelet that fails for a while leaves the
  pods it already described as they were. A list that cannot be read (no token, 401, 403, TLS, timeout) is one
  warning per distinct failure, and the rows keep null owners and requests: sampling goes on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import requests

from collector import fetch
from collector.errors import CollectorError
from collector.rows import Records, Rows
from collector.workloads import Owner, owner_chain, workload_from_owner
from warehouse.schema import GPU_ALLOCATIONS

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_TOKEN_FILE = SERVICE_ACCOUNT / "token"
DEFAULT_CA_FILE = SERVICE_ACCOUNT / "ca.crt"
KUBELET_PORT = 10250
MAX_BODY_BYTES = 64 << 20
"""A node's pod list is ~10 KiB per pod; 64 MiB holds the kubelet's 110-pod default many times over."""

# ------------------------------------------------------------------------------------------------ quantities

_QUANTITY = re.compile(r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>[eE][+-]?\d+|[KMGTPE]i|[numkMGTPE]?)")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")},
}


class BadQuantity(ValueError):
    def __init__(self, text: object) -> None:
        super().__init__(
            f"{text!r} is not a Kubernetes quantity (a number with an optional suffix: 500m, 2, 1Gi, 512Mi, 1e9, 1G)"
        )


def parse_quantity(text: object) -> Decimal:
    """A Kubernetes quantity (``resource.Quantity``'s text) as an exact decimal: ``500m`` -> 0.5, ``1Gi`` ->
    1073741824, ``1e9`` and ``1G`` -> 1000000000. A bare JSON number is accepted as its own value."""
    if isinstance(text, bool):
        raise BadQuantity(text)
    if isinstance(text, int | float):
        return Decimal(str(text))
    if not isinstance(text, str) or (match := _QUANTITY.fullmatch(text.strip())) is None:
        raise BadQuantity(text)
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise BadQuantity(text) from None
    suffix = match["suffix"]
    if len(suffix) > 1 and suffix[0] in "eE":  # an exponent; a bare "E" is exa
        return number.scaleb(int(suffix[1:]))
    return number * _SUFFIXES[suffix]


# ------------------------------------------------------------------------------------------------ the pod list


@dataclass(frozen=True)
class PodFacts:
    """What the pod list says about one pod: the columns ``workload``, ``owner_*``, ``cpu_request`` (vCPUs) and
    ``memory_request_bytes`` of its allocation rows."""

    owner: Owner
    cpu_request: float | None = None
    memory_request_bytes: int | None = None


def pod_owner(namespace: str, pod: str, owner_references: Iterable[Mapping[str, Any]]) -> Owner:
    """The owner chain from the pod's controller reference, a ReplicaSet climbed to its Deployment by name."""
    controller = next((r for r in owner_references if r.get("controller") is True), None)
    if controller is None or not controller.get("kind") or not controller.get("name"):
        return owner_chain(namespace, pod, None, {})
    ref = (str(controller["kind"]), str(controller["name"]))
    parents: dict[tuple[str, str, str], tuple[str, str] | None] = {}
    if ref[0] == "ReplicaSet" and (deployment := workload_from_owner(*ref, pod)) != ref[1]:
        parents[(namespace, *ref)] = ("Deployment", deployment)
        parents[(namespace, "Deployment", deployment)] = None
    return owner_chain(namespace, pod, ref, parents)


def _summed(containers: Iterable[Mapping[str, Any]], resource: str) -> Decimal | None:
    amounts = [
        parse_quantity(requested[resource])
        for c in containers
        if resource in (requested := ((c.get("resources") or {}).get("requests") or {}))
    ]
    return sum(amounts, Decimal(0)) if amounts else None


def pod_facts(pod_list: Any) -> dict[tuple[str, str], PodFacts]:
    """(namespace, pod) -> its :class:`PodFacts`, from a ``v1.PodList`` decoded from JSON. A pod whose requests do
    not parse keeps its owner and gets null requests (logged)."""
    if not isinstance(pod_list, Mapping) or not isinstance(pod_list.get("items"), list):
        raise ValueError("not a v1.PodList (no items list)")
    facts = {}
    for item in pod_list["items"]:
        meta = item.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not namespace or not name:
            continue
        owner = pod_owner(namespace, name, meta.get("ownerReferences") or [])
        containers = (item.get("spec") or {}).get("containers") or []
        try:
            cpu, memory = _summed(containers, "cpu"), _summed(containers, "memory")
        except BadQuantity as exc:
            log.warning("kubelet pod list: pod %s/%s: %s; its requests are left null", namespace, name, exc)
            cpu = memory = None
        memory_bytes = None if memory is None else int(memory.to_integral_value(rounding=ROUND_CEILING))
        facts[(namespace, name)] = PodFacts(owner, None if cpu is None else float(cpu), memory_bytes)
    return facts


class KubeletPodsUnavailable(CollectorError):
    """The kubelet's pod list cannot be read; the message names the URL and what to change."""

    def __init__(self, url: str, reason: str, fix: str) -> None:
        super().__init__(
            f"kubelet pod list {fetch.display_url(url)} cannot be read ({reason}): {fix}; "
            "GPU pods' owners and CPU/memory requests stay null until it can"
        )


# ------------------------------------------------------------------------------------------------ the client


class KubeletPods:
    """The kubelet's ``/pods`` on this node, read with the pod's service account token, cached (see the module)."""

    def __init__(
        self,
        url: str,
        *,
        token_file: Path = DEFAULT_TOKEN_FILE,
        ca_file: Path | None = DEFAULT_CA_FILE,
        verify: bool = True,
        timeout_s: float = 5.0,
        max_bytes: int = MAX_BODY_BYTES,
        refresh_s: float = 60.0,
        retry_s: float = 10.0,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/") + "/pods" if not url.rstrip("/").endswith("/pods") else url.rstrip("/")
        self.token_file = token_file
        self.ca_file = ca_file
        self.verify = verify
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.session = session or requests.Session()
        self.session.trust_env = (
            False  # REQUESTS_CA_BUNDLE would beat the CA file, and no proxy stands before a kubelet
        )
        self.monotonic = monotonic
        self.known: dict[tuple[str, str], PodFacts] = {}
        self._listed_at: float | None = None
        self._next_try = float("-inf")
        self._warned: set[str] = set()

    def list(self) -> dict[tuple[str, str], PodFacts]:
        """Every pod the kubelet runs, read now; KubeletPodsUnavailable when it cannot be."""
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise KubeletPodsUnavailable(
                self.url,
                f"no service account token at {self.token_file}: {exc.strerror or exc}",
                "run the agent with its service account token mounted (automountServiceAccountToken) or set "
                "kubelet_token_file",
            ) from None
        if self.verify and self.ca_file is not None and not self.ca_file.is_file():
            raise KubeletPodsUnavailable(
                self.url, f"no CA file at {self.ca_file}", "set kubelet_ca_file, or kubelet_tls_verify = false"
            )
        self.session.verify = (str(self.ca_file) if self.ca_file is not None else True) if self.verify else False
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            reply = fetch.get(
                self.session, self.url, within_s=self.timeout_s, max_bytes=self.max_bytes, headers=headers
            )
        except fetch.TimedOut as exc:
            raise KubeletPodsUnavailable(self.url, str(exc), "check kubelet_url and that the kubelet is up") from None
        except fetch.TooLarge as exc:
            raise KubeletPodsUnavailable(self.url, f"its answer is {exc}", "this is not a kubelet's pod list") from None
        except requests.exceptions.SSLError:
            raise KubeletPodsUnavailable(
                self.url,
                "its TLS certificate does not verify",
                "set kubelet_ca_file to the CA that signed the kubelet's serving certificate, or "
                "kubelet_tls_verify = false for a kubelet with a self-signed one",
            ) from None
        except requests.RequestException as exc:
            reason = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:200]
            raise KubeletPodsUnavailable(self.url, reason, "check kubelet_url") from None
        if reply.status_code == 401:
            raise KubeletPodsUnavailable(
                self.url,
                "401 Unauthorized",
                "the kubelet must accept service account tokens (authentication.webhook.enabled, "
                "--authentication-token-webhook)",
            )
        if reply.status_code == 403:
            raise KubeletPodsUnavailable(
                self.url,
                "403 Forbidden",
                "grant the agent's service account get on nodes/pods (deploy/rbac.yaml; Kubernetes 1.33 or later, "
                "older kubelets ask for nodes/proxy)",
            )
        if reply.status_code != 200:
            raise KubeletPodsUnavailable(self.url, f"HTTP {reply.status_code} {reply.reason}", "check kubelet_url")
        try:
            return pod_facts(reply.json())
        except ValueError as exc:
            raise KubeletPodsUnavailable(self.url, f"not a pod list: {exc}", "check kubelet_url") from None

    def lookup(self, pods: Iterable[tuple[str, str]]) -> dict[tuple[str, str], PodFacts]:
        """The facts of ``pods`` that are known, refreshing the list when it is due (never raises)."""
        wanted = set(pods)
        now = self.monotonic()
        stale = self._listed_at is None or now - self._listed_at >= self.refresh_s
        if wanted and (stale or not wanted <= self.known.keys()) and now >= self._next_try:
            try:
                self.known = self.list()
            except KubeletPodsUnavailable as exc:
                self._next_try = now + self.refresh_s
                if str(exc) not in self._warned:
                    self._warned.add(str(exc))
                    log.warning("%s", exc)
            else:
                self._listed_at = now
                self._next_try = now + self.retry_s
                self._warned.clear()
        return {key: self.known[key] for key in wanted if key in self.known}

    def complete(self, reading: Rows | Records) -> Rows | Records:
        """``reading`` with its pods' workload, owner and requests where the pod list knows them."""
        return with_pod_facts(reading, self.lookup)


# ------------------------------------------------------------------------------------------------ the rows

_NAMES = GPU_ALLOCATIONS.schema.names
_NS, _POD, _WORKLOAD = _NAMES.index("namespace"), _NAMES.index("pod"), _NAMES.index("workload")
FACT_COLUMNS = ("owner_kind", "owner_name", "owner_chain", "cpu_request", "memory_request_bytes")
_FACTS = [_NAMES.index(c) for c in FACT_COLUMNS]


def _values(facts: PodFacts) -> tuple[Any, ...]:
    o = facts.owner
    return (o.kind, o.name, o.chain, facts.cpu_request, facts.memory_request_bytes)


def with_pod_facts(
    reading: Rows | Records,
    lookup: Callable[[Iterable[tuple[str, str]]], Mapping[tuple[str, str], PodFacts]],
) -> Rows | Records:
    """``reading``'s allocation rows with the workload, owner and requests ``lookup`` knows for their pod; rows of
    pods it does not know, and GPU processes outside pods, are left as they are."""
    if isinstance(reading, Records):
        pods = {(row[_NS], row[_POD]) for row in reading.allocations if row[_POD] is not None}
        known = lookup(pods) if pods else {}
        rows = []
        for row in reading.allocations:
            # every row made whole: the agent converts many readings' tuples at once, and they must be alike
            full = list(row) + [None] * (len(_NAMES) - len(row))
            facts = known.get((row[_NS], row[_POD]))
            if facts is None:
                rows.append(tuple(full))
                continue
            full[_WORKLOAD] = facts.owner.workload
            for index, value in zip(_FACTS, _values(facts), strict=True):
                full[index] = value
            rows.append(tuple(full))
        return Records(reading.samples, rows, reading.nodes)
    frame = pl.from_arrow(reading.allocations)
    assert isinstance(frame, pl.DataFrame)
    pods = {(ns, pod) for ns, pod in frame.select("namespace", "pod").unique().iter_rows() if pod is not None}
    known = lookup(pods) if pods else {}
    if not known:
        return reading
    table = pa.Table.from_pylist(
        [
            {"namespace": ns, "pod": pod, "known_workload": f.owner.workload}
            | dict(zip((f"known_{c}" for c in FACT_COLUMNS), _values(f), strict=True))
            for (ns, pod), f in known.items()
        ],
        schema=pa.schema(
            [("namespace", pa.string()), ("pod", pa.string()), ("known_workload", pa.string())]
            + [(f"known_{c}", GPU_ALLOCATIONS.schema.field(c).type) for c in FACT_COLUMNS]
        ),
    )
    facts_frame = pl.from_arrow(table)
    assert isinstance(facts_frame, pl.DataFrame)
    columns = ("workload", *FACT_COLUMNS)
    joined = frame.join(facts_frame, on=["namespace", "pod"], how="left", maintain_order="left").with_columns(
        pl.when(pl.col("known_workload").is_not_null()).then(pl.col(f"known_{c}")).otherwise(pl.col(c)).alias(c)
        for c in columns
    )
    allocations = joined.select(GPU_ALLOCATIONS.columns).to_arrow().cast(GPU_ALLOCATIONS.schema)
    return Rows(reading.samples, allocations, reading.nodes, reading.malformed_lines, reading.malformed_scrapes)
