"""What the NVIDIA DRA driver (NVIDIA/k8s-dra-driver-gpu, ``gpu.nvidia.com``) calls this node's GPUs and MIG
devices in its ResourceSlices, so a claim's device name from the kubelet resolves to what NVML reports.

The driver's names (``cmd/gpu-kubelet-plugin``):

- a whole GPU: ``gpu-<minor>`` (``deviceinfo.go`` ``GpuInfo.CanonicalName``);
- a MIG device, in releases with pre-created MIG devices: ``gpu-<minor>-mig-<GI profile id>-<placement start>-
  <placement size>`` (``deviceinfo.go`` ``MigDeviceInfo.CanonicalName``);
- a MIG device, in releases that create MIG devices on demand: ``gpu-<minor>-mig-<profile>-<GI profile id>-
  <placement start>``, the profile name without dots, lower-cased, other characters than ``a-z0-9-`` as ``-``
  (``mig.go`` ``MigSpecTuple.ToCanonicalName``: ``1g.18gb+me`` -> ``1g18gb-me``).

The minor, the GI profile id and the placement are NVML's (``nvmlDeviceGetMinorNumber``,
``nvmlGpuInstanceGetInfo``); a MIG instance whose placement NVML does not tell has no name here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from collector.nvml import Device

DeviceIds = dict[str, tuple[str, int | None]]
"""A device name -> (GPU UUID, MIG GPU-instance id or None)."""


def gpu_name(minor: int) -> str:
    return f"gpu-{minor}"


def mig_names(minor: int, profile: str | None, profile_id: int, start: int, size: int) -> list[str]:
    """Both names the driver has given this MIG device (the newer one only with a profile name)."""
    names = [f"gpu-{minor}-mig-{profile_id}-{start}-{size}"]
    if profile:
        names.append(f"gpu-{minor}-mig-{_rfc1123(profile.replace('.', ''))}-{profile_id}-{start}")
    return names


def _rfc1123(name: str) -> str:
    return re.sub(r"[^a-z0-9-.]", "-", name.lower()).strip("-").removesuffix(".")[:253]


def device_names(gpus: Iterable[Device]) -> DeviceIds:
    """Every name of the GPUs (and their MIG instances) that are not lost. A GPU whose minor NVML does not tell is
    named by its NVML index (the same number on a node where nothing hides a GPU from the agent)."""
    names: DeviceIds = {}
    for gpu in gpus:
        if gpu.lost:
            continue
        minor = gpu.index if gpu.minor is None else gpu.minor
        names[gpu_name(minor)] = (gpu.uuid, None)
        for child in gpu.children:
            if child.gi_profile_id is None or child.placement is None:
                continue
            for name in mig_names(minor, child.mig_profile, child.gi_profile_id, *child.placement):
                names[name] = (gpu.uuid, child.mig_instance_id)
    return names
