"""Who is being profiled (profile): CPU model, threads, accelerator, memory and CPU quota.

Two timings are comparable only on the same identity, so the profile cache keys on it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from partition.types import DeviceIdentity


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def memory_available_bytes() -> int:
    """MemAvailable, capped by this process's cgroup memory limit if it has a smaller one."""
    available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    limit = _cgroup_value("memory", "memory.limit_in_bytes")
    return min(available, limit) if limit and available else available or (limit or 0)


# Set by whoever placed this process under a quota where it cannot read its cgroup (the emulated lab).
CPU_QUOTA_ENV = "PARTITION_CPU_QUOTA_CORES"


def cpu_quota_cores() -> float | None:
    """CPU time per wall second this thread may use (cgroup v1 CFS quota), or None when unlimited."""
    declared = os.environ.get(CPU_QUOTA_ENV)
    if declared:
        try:
            return float(declared)
        except ValueError:
            pass  # a malformed value: read the cgroup instead
    quota = _cgroup_value("cpu", "cpu.cfs_quota_us")
    period = _cgroup_value("cpu", "cpu.cfs_period_us")
    if quota is None or period is None or quota <= 0 or period <= 0:
        return None
    return quota / period


def _cgroup_value(controller: str, file: str) -> int | None:
    """An integer from the calling thread's cgroup v1 directory of `controller` (v1 places threads)."""
    try:
        lines = Path("/proc/thread-self/cgroup").read_text().splitlines()
    except OSError:
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            for root in (Path("/sys/fs/cgroup") / controllers, Path("/sys/fs/cgroup") / controller):
                try:
                    return int((root / path.lstrip("/") / file).read_text().strip())
                except (OSError, ValueError):
                    continue
    return None


def identify(name: str | None, threads: int, cuda_device: str | None) -> DeviceIdentity:
    return DeviceIdentity(
        name=name or socket.gethostname(),
        cpu_model=cpu_model(),
        threads=threads,
        cuda_device=cuda_device,
        memory_bytes=memory_available_bytes(),
    )
