"""Who is being profiled (profile): CPU model, threads, accelerator, memory and CPU quota.

Two timings are comparable only on the same identity, so the profile cache keys on it.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

from partition.errors import ConfigError
from partition.profile import cgroup_limits
from partition.types import DeviceIdentity


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def memory_available_bytes(proc: Path = cgroup_limits.PROC, root: Path = cgroup_limits.CGROUP_ROOT) -> int:
    """MemAvailable, capped by the room this process's cgroup has left if that is less: a limit less what
    the group already holds, since the kernel reclaims or kills at the limit, not at the host's end."""
    available = None
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    headroom = cgroup_limits.memory_headroom_bytes(proc, root)
    return min((known for known in (available, headroom) if known is not None), default=0)


# Set by whoever placed this process under a quota where it cannot read its cgroup (the emulated lab).
CPU_QUOTA_ENV = "PARTITION_CPU_QUOTA_CORES"


def cpu_quota_cores() -> float | None:
    """CPU time per wall second this thread may use: as declared in CPU_QUOTA_ENV, else its cgroup's
    quota; None when unlimited."""
    declared = os.environ.get(CPU_QUOTA_ENV)
    if not declared:
        return cgroup_limits.cpu_quota_cores()
    try:
        cores = float(declared)
    except ValueError:
        cores = math.nan
    if not (math.isfinite(cores) and cores > 0):
        raise ConfigError(
            f"{CPU_QUOTA_ENV}={declared} is not a number of cores above 0; set it to the CPU time per second "
            "this process may use (0.25 for a quarter of a core), or unset it to read the cgroup's quota"
        )
    return cores


def cpu_period_us() -> int | None:
    """The CFS period of the cgroup quota cpu_quota_cores reads; None when unlimited, or when the quota is
    declared in CPU_QUOTA_ENV, which gives no period (the lab's follows from the cores)."""
    return None if os.environ.get(CPU_QUOTA_ENV) else cgroup_limits.cpu_period_us()


def identify(name: str | None, threads: int, cuda_device: str | None) -> DeviceIdentity:
    return DeviceIdentity(
        name=name or socket.gethostname(),
        cpu_model=cpu_model(),
        threads=threads,
        cuda_device=cuda_device,
        memory_bytes=memory_available_bytes(),
    )
