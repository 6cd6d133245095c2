"""The CPU and memory limits this process runs under (profile), read from its cgroup, v1 or v2.

A timing is only comparable under the same CPU quota, so the profile cache keys on it; a memory limit
smaller than the host's free memory is what this device can really hold.

cgroup v1 places each controller in its own hierarchy (`cpu.cfs_quota_us` / `cpu.cfs_period_us`,
`memory.limit_in_bytes`) and may place threads apart, so the calling thread's group is read. cgroup v2
has one hierarchy (a `0::/path` line), whose limits (`cpu.max`, `memory.max`) hold for the whole
subtree: the tightest one from the group up to the root applies.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota_cores(proc: Path = PROC, root: Path = CGROUP_ROOT) -> float | None:
    """CPU time per wall second this thread may use, or None when unlimited (or unreadable)."""
    lines = _membership(proc)
    v1_quota = _v1_value(lines, root, "cpu", "cpu.cfs_quota_us")
    v1_period = _v1_value(lines, root, "cpu", "cpu.cfs_period_us")
    if v1_quota is not None and v1_period is not None:
        return v1_quota / v1_period if v1_quota > 0 and v1_period > 0 else None
    quotas = []
    for text in _v2_values(lines, root, "cpu.max"):
        quota, _, period = text.partition(" ")
        if quota.isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:
            quotas.append(int(quota) / int(period))
    return min(quotas, default=None)


def memory_limit_bytes(proc: Path = PROC, root: Path = CGROUP_ROOT) -> int | None:
    """The cgroup's memory limit in bytes, or None when unlimited (or unreadable)."""
    lines = _membership(proc)
    v1_limit = _v1_value(lines, root, "memory", "memory.limit_in_bytes")
    if v1_limit is not None:
        return v1_limit  # v1 writes "unlimited" as a huge number, above any host's memory
    limits = [int(text) for text in _v2_values(lines, root, "memory.max") if text.isdigit()]
    return min(limits, default=None)


def _membership(proc: Path) -> list[tuple[str, str, str]]:
    """(hierarchy id, controllers, path) for each line of the calling thread's cgroup file."""
    for name in ("thread-self/cgroup", "self/cgroup"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        return [tuple(line.split(":", 2)) for line in text.splitlines() if line.count(":") >= 2]
    return []


def _v1_value(lines, root: Path, controller: str, file: str) -> int | None:
    for hierarchy, controllers, path in lines:
        if hierarchy == "0" or controller not in controllers.split(","):
            continue
        for mount in (root / controllers, root / controller):
            try:
                return int((mount / path.lstrip("/") / file).read_text().strip())
            except (OSError, ValueError):
                continue
    return None


def _v2_values(lines, root: Path, file: str) -> list[str]:
    """The contents of `file` in the v2 group and each of its ancestors that has it."""
    group = next((path for hierarchy, _, path in lines if hierarchy == "0"), None)
    if group is None:
        return []
    mount = next((m for m in (root, root / "unified") if (m / "cgroup.controllers").is_file()), None)
    if mount is None:
        return []
    values, place = [], mount / group.lstrip("/")
    while True:
        with contextlib.suppress(OSError):  # the root group has no limit files
            values.append((place / file).read_text().strip())
        if place == mount or mount not in place.parents:
            return values
        place = place.parent
