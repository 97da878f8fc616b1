"""The agent's own Node object (``GET <api server>/api/v1/nodes/<node>``, a ``v1.Node``): the instance type,
capacity type, region, zone, GPU count and provider id of the node it samples, as the agent's ``nodes`` rows.

The labels are read as kube-state-metrics exports them (``kube_node_labels``: ``label_`` and the label's name with
every character outside ``[a-zA-Z0-9_]`` made ``_``), so one function (:func:`collector.prometheus.kube_state.node_row`)
makes a ``nodes`` row from either, and the agent's rows equal what a scrape of kube-state-metrics would store.

The object is read with the pod's service account token (``get`` on ``nodes``, deploy/rbac.yaml) at most every
``refresh_s``; what it said is kept through a failure, and a failure is one warning per distinct reason, while
sampling goes on with no ``nodes`` row until it can be read.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from collector import fetch
from collector.errors import CollectorError
from collector.prometheus.kube_state import node_row
from collector.rows import Records, Rows
from warehouse.schema import NODES

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 << 20
"""A Node object is a few KiB (its images list being the largest part); 4 MiB holds any real one."""
_NOT_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def api_url_from(env: Mapping[str, str]) -> str | None:
    """The API server as a pod sees it (``KUBERNETES_SERVICE_HOST``/``_PORT``, set in every pod); None outside."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host:
        return None
    host = f"[{host}]" if ":" in host else host  # an IPv6 service address
    return f"https://{host}:{port or 443}"


def metric_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A Node's labels as kube-state-metrics' ``kube_node_labels`` names them."""
    return {"label_" + _NOT_LABEL_CHARS.sub("_", name): value for name, value in labels.items()}


class NodeUnavailable(CollectorError):
    """The Node object cannot be read; the message names the URL and what to change."""

    def __init__(self, url: str, reason: str, fix: str) -> None:
        super().__init__(
            f"node object {fetch.display_url(url)} cannot be read ({reason}): {fix}; "
            "the node's instance type, capacity type and zone stay unknown until it can"
        )


class ThisNode:
    """This node's Node object, read with the service account token and cached (see the module)."""

    def __init__(
        self,
        api_url: str,
        node: str,
        *,
        cluster: str,
        token_file: Path,
        ca_file: Path | None,
        timeout_s: float = 5.0,
        refresh_s: float = 600.0,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = f"{api_url.rstrip('/')}/api/v1/nodes/{node}"
        self.node = node
        self.cluster = cluster
        self.token_file = token_file
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxy stands before the API server, and the CA file is the one to trust
        self.monotonic = monotonic
        self.known: tuple[dict[str, str], str | None] | None = None
        self._next_try = float("-inf")
        self._warned: set[str] = set()
        self._emitted: dict[str, Any] | None = None

    def read(self) -> tuple[dict[str, str], str | None]:
        """The node's labels and ``spec.providerID``, read now; NodeUnavailable when they cannot be."""
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise NodeUnavailable(
                self.url,
                f"no service account token at {self.token_file}: {exc.strerror or exc}",
                "run the agent with its service account token mounted (automountServiceAccountToken)",
            ) from None
        if self.ca_file is not None and not self.ca_file.is_file():
            raise NodeUnavailable(self.url, f"no CA file at {self.ca_file}", "set kube_api_ca_file")
        self.session.verify = str(self.ca_file) if self.ca_file is not None else True
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            reply = fetch.get(
                self.session, self.url, within_s=self.timeout_s, max_bytes=MAX_BODY_BYTES, headers=headers
            )
        except fetch.TimedOut as exc:
            raise NodeUnavailable(self.url, str(exc), "check kube_api_url") from None
        except fetch.TooLarge as exc:
            raise NodeUnavailable(self.url, f"its answer is {exc}", "this is not a Node object") from None
        except requests.exceptions.SSLError:
            raise NodeUnavailable(
                self.url, "its TLS certificate does not verify", "set kube_api_ca_file to the cluster's CA"
            ) from None
        except requests.RequestException as exc:
            reason = type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:200]
            raise NodeUnavailable(self.url, reason, "check kube_api_url") from None
        if reply.status_code in (401, 403):
            fix = "grant the agent's service account get on nodes (deploy/rbac.yaml)"
            raise NodeUnavailable(self.url, f"HTTP {reply.status_code} {reply.reason}", fix)
        if reply.status_code != 200:
            raise NodeUnavailable(
                self.url, f"HTTP {reply.status_code} {reply.reason}", "check kube_api_url and NODE_NAME"
            )
        try:
            node = reply.json()
            labels = node["metadata"].get("labels") or {}
            provider = (node.get("spec") or {}).get("providerID")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NodeUnavailable(self.url, f"not a Node object: {exc}", "check kube_api_url") from None
        return {str(k): str(v) for k, v in labels.items()}, str(provider) if provider else None

    def lookup(self) -> tuple[dict[str, str], str | None] | None:
        """The labels and provider id as last read, read again when due (never raises)."""
        now = self.monotonic()
        if now >= self._next_try:
            self._next_try = now + self.refresh_s
            try:
                self.known = self.read()
            except NodeUnavailable as exc:
                if str(exc) not in self._warned:
                    self._warned.add(str(exc))
                    log.warning("%s", exc)
            else:
                self._warned.clear()
        return self.known

    def complete(self, reading: Rows | Records) -> Rows | Records:
        """``reading`` with this node's ``nodes`` row for the UTC date of its samples, when the Node is known and
        the row differs from the one given last (a new day, changed labels): one row per day, not one per tick."""
        row = self.row(reading)
        if row is None or row == self._emitted:
            return reading
        self._emitted = row
        if isinstance(reading, Records):
            return Records(reading.samples, reading.allocations, [*reading.nodes, tuple(row[c] for c in NODES.columns)])
        nodes = Rows.from_records(nodes=[row]).nodes
        return Rows(reading.samples, reading.allocations, nodes, reading.malformed_lines, reading.malformed_scrapes)

    def row(self, reading: Rows | Records) -> dict[str, Any] | None:
        """The ``nodes`` row of this node on the date of ``reading``'s samples (None without samples or labels)."""
        samples = [s for s in reading.sample_dicts() if s["node"] == self.node]
        if not samples:
            return None
        known = self.lookup()
        if known is None:
            return None
        labels, provider = known
        newest: dt.datetime = max(s["ts"] for s in samples)
        gpus = {s["gpu_uuid"] for s in samples}
        model = next((s["gpu_model"] for s in samples if s["mig_instance_id"] is None and s["gpu_model"]), None)
        date = (newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date()
        return node_row(self.cluster, self.node, date, metric_labels(labels), model, len(gpus), provider)
