"""Which pod and container a PID runs in: real /proc/<pid>/cgroup files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.cgroups import PodContainer, ProcCgroups

UID = "1f7c3e2a-8b5d-4c1e-9a3f-2d6b7e8c9f01"
UID_ = UID.replace("-", "_")
CID = "3b8f2c6a9d1e4f7a0b5c8d2e6f9a1b4c7d0e3f6a9b2c5d8e1f4a7b0c3d6e9f2a"
assert len(CID) == 64


V1_CGROUPFS_DOCKER = f"""\
12:rdma:/
11:memory:/kubepods/besteffort/pod{UID}/{CID}
10:hugetlb:/kubepods/besteffort/pod{UID}/{CID}
9:cpuset:/kubepods/besteffort/pod{UID}/{CID}
8:pids:/kubepods/besteffort/pod{UID}/{CID}
7:devices:/kubepods/besteffort/pod{UID}/{CID}
6:net_cls,net_prio:/kubepods/besteffort/pod{UID}/{CID}
5:blkio:/kubepods/besteffort/pod{UID}/{CID}
4:freezer:/kubepods/besteffort/pod{UID}/{CID}
3:perf_event:/kubepods/besteffort/pod{UID}/{CID}
2:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{CID}
1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}
0::/
"""

_V1_SYSTEMD_PATH = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope"
V1_SYSTEMD_DOCKER = f"""\
12:misc:/
11:cpu,cpuacct:{_V1_SYSTEMD_PATH}
10:memory:{_V1_SYSTEMD_PATH}
9:devices:{_V1_SYSTEMD_PATH}
8:pids:{_V1_SYSTEMD_PATH}
7:blkio:{_V1_SYSTEMD_PATH}
6:cpuset:{_V1_SYSTEMD_PATH}
5:freezer:{_V1_SYSTEMD_PATH}
4:net_cls,net_prio:{_V1_SYSTEMD_PATH}
3:hugetlb:{_V1_SYSTEMD_PATH}
2:perf_event:{_V1_SYSTEMD_PATH}
1:name=systemd:{_V1_SYSTEMD_PATH}
0::/system.slice/containerd.service
"""

CGROUPS = {
    "v2-systemd-containerd": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-systemd-crio": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope\n",
        PodContainer(UID, CID, "cri-o"),
    ),
    "v2-cgroupfs": (f"0::/kubepods/burstable/pod{UID}/{CID}\n", PodContainer(UID, CID, None)),
    "v1-cgroupfs-docker": (V1_CGROUPFS_DOCKER, PodContainer(UID, CID, None)),
    "v1-systemd-docker": (V1_SYSTEMD_DOCKER, PodContainer(UID, CID, "docker")),
    "v2-systemd-guaranteed": (
        f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-cgroupfs-guaranteed": (f"0::/kubepods/pod{UID}/{CID}\n", PodContainer(UID, CID, None)),
    # What a reader in its own cgroup namespace (the agent's pod on cgroup v2) sees for a process outside it.
    "v2-cgroupns-relative": (
        f"0::/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-cgroupfs-cgroupns-relative": (f"0::/../../../besteffort/pod{UID}/{CID}\n", PodContainer(UID, CID, None)),
    # kind and minikube nodes put the kubelet's cgroups under a --cgroup-root.
    "v2-kubelet-cgroup-root": (
        f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-nested-below-container": (
        f"0::/kubepods/burstable/pod{UID}/{CID}/init.scope\n",
        PodContainer(UID, CID, None),
    ),
    "v2-static-pod-md5-uid": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8f3a0b1d2c4e5f6a7b8c9d0e1f2a3b4c.slice/"
        f"cri-containerd-{CID}.scope\n",
        PodContainer("8f3a0b1d2c4e5f6a7b8c9d0e1f2a3b4c", CID, "containerd"),
    ),
    "v2-crio-conmon": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{CID}.scope\n",
        PodContainer(UID, None, None),
    ),
    "v2-user-session": ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
    "v2-system-service": ("0::/system.slice/containerd.service\n", None),
    "v2-podman-pod": (f"0::/machine.slice/libpod_pod_{CID}.slice/libpod-{CID}.scope\n", None),
}


def write_cgroup(proc: Path, pid: int, text: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(text)


@pytest.mark.parametrize("name", list(CGROUPS))
def test_container_of_reads_the_pids_cgroup_file(tmp_path: Path, name: str) -> None:
    text, expected = CGROUPS[name]
    write_cgroup(tmp_path / "proc", 4242, text)
    assert ProcCgroups(proc_root=tmp_path / "proc").container_of(4242) == expected


def test_systemd_slice_uids_come_back_with_dashes(tmp_path: Path) -> None:
    write_cgroup(tmp_path, 7, CGROUPS["v2-systemd-containerd"][0])
    found = ProcCgroups(tmp_path).container_of(7)
    assert found is not None
    assert found.pod_uid == UID
    assert "_" not in found.pod_uid


def test_exited_process_is_none_not_an_error(tmp_path: Path) -> None:
    write_cgroup(tmp_path, 1, CGROUPS["v2-cgroupfs"][0])
    assert ProcCgroups(tmp_path).container_of(999_999) is None
