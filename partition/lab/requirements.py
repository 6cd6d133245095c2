"""What the emulated lab needs from this machine, and a message that names exactly what is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from partition.errors import LabError
from partition.lab.cgroup import CPU_ROOT
from partition.lab.config import LabConfig

NETNS_DIR = Path("/var/run/netns")


def missing(config: LabConfig | None = None, cpu_root: Path = CPU_ROOT) -> list[str]:
    """Everything the lab needs that this machine lacks; empty when `lab up` can run."""
    gaps = []
    if os.geteuid() != 0:
        gaps.append("root: network namespaces, tc and cgroups need it (run with sudo, or as root in a VM)")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            gaps.append(f"the `{tool}` command (install {package})")
    if not Path("/proc/self/ns/net").exists():
        gaps.append("network namespaces (kernel built without CONFIG_NET_NS)")
    needs_cpu = config is None or any(device.cpu is not None for device in config.devices)
    if needs_cpu:
        quota = cpu_root / "cpu.cfs_quota_us"
        if not quota.exists() and (cpu_root.parent / "cgroup.controllers").is_file():
            # cgroup v2 mounted at the root: mkdir there makes a v2 group, and v1's cpu cannot be mounted
            gaps.append(
                f"the cgroup v1 cpu controller: {cpu_root.parent} is cgroup v2, which the lab does not drive "
                "yet; drop `cpu =` from the config (the devices then run without a CPU quota)"
            )
        elif not quota.exists():
            gaps.append(
                f"the cgroup v1 cpu controller at {cpu_root} (no {quota.name}); mount it with "
                f"`mkdir -p {cpu_root} && mount -t cgroup -o cpu cgroup {cpu_root}`, or drop `cpu =` from the config"
            )
        elif not os.access(cpu_root, os.W_OK):
            gaps.append(f"write access to {cpu_root} (to create a cgroup per limited device)")
    return gaps


def require(config: LabConfig | None = None) -> None:
    gaps = missing(config)
    if gaps:
        raise LabError("the emulated lab cannot run on this machine; missing:\n  - " + "\n  - ".join(gaps))
