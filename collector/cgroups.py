"""Which pod and container a process runs in, from its ``/proc/<pid>/cgroup`` file (local to the node).

Handles cgroup v1 and v2, the systemd and cgroupfs drivers, containerd, CRI-O and docker ids, every QoS class, and the
relative paths (``/../../kubepods-...``) a reader in its own cgroup namespace sees for processes outside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PodContainer:
    """Where a process runs: its pod's UID (always with dashes) and its container's id."""

    pod_uid: str
    container_id: str | None
    """64 hex digits; None for a process in the pod's cgroup but in no container's (e.g. CRI-O's conmon)."""
    runtime: str | None
    """``containerd``, ``cri-o`` or ``docker`` when the path says (systemd driver); None for cgroupfs paths."""


_UUID = r"[0-9a-f]{8}(?P<sep>[-_])[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)[0-9a-f]{12}"
_POD_CGROUP = re.compile(rf"(?:[\w.-]*-)?pod(?P<uid>{_UUID}|[0-9a-f]{{32}})(?:\.slice)?")
"""``pod<uid>`` (cgroupfs) or ``kubepods[-<qos>]-pod<uid with _>.slice`` (systemd); static pods have 32-hex UIDs."""
_CONTAINER_CGROUP = re.compile(r"(?:(?P<prefix>cri-containerd|crio|docker)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?")
_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}


def parse_cgroup(text: str) -> PodContainer | None:
    """The pod and container named by the contents of a ``/proc/<pid>/cgroup`` file; None outside any pod.

    Every line (``hierarchy:controllers:path``; v2 has one, ``0::/...``, v1 one per controller) is tried in order and
    the first that names a pod wins. In a path, the pod is the ``pod<uid>`` component and the container the component
    right after it; anything below the container (cgroups a container makes for itself) is ignored.
    """
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3 and (found := _parse_path(fields[2])) is not None:
            return found
    return None


def _parse_path(path: str) -> PodContainer | None:
    parts = [part for part in path.split("/") if part]
    for i, part in enumerate(parts):
        pod = _POD_CGROUP.fullmatch(part)
        if pod is None:
            continue
        uid = pod["uid"].replace("_", "-")
        container = _CONTAINER_CGROUP.fullmatch(parts[i + 1]) if i + 1 < len(parts) else None
        if container is None:
            return PodContainer(uid, None, None)
        prefix = container["prefix"]
        return PodContainer(uid, container["id"], _RUNTIMES[prefix] if prefix else None)
    return None


class ProcCgroups:
    """PID -> pod and container, from ``<proc_root>/<pid>/cgroup``.

    On a node the agent needs ``hostPID: true`` to see other pods' processes; ``proc_root`` is injectable so tests
    hand it a fake ``/proc`` tree on disk.
    """

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self.proc_root = Path(proc_root)

    def container_of(self, pid: int) -> PodContainer | None:
        """The pod and container ``pid`` runs in; None when it is not in a pod or has exited (a race, not an error)."""
        try:
            text = (self.proc_root / str(pid) / "cgroup").read_text()
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            return None
        return parse_cgroup(text)
