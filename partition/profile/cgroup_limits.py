"""The CPU and memory limits this process runs under (profile), read from its cgroup, v1 or v2.

A timing is only comparable under the same CPU quota, so the profile cache keys on it; a memory limit
smaller than the host's free memory is what this device can really hold.

cgroup v1 places each controller in its own hierarchy (`cpu.cfs_quota_us` / `cpu.cfs_period_us`,
`memory.limit_in_bytes`) and may place threads apart, so the calling thread's group is read. cgroup v2
has one hierarchy (a `0::/path` line). In both a limit holds for the whole subtree below its group, so
the tightest one from the group up to the mount's root applies.

A container without a cgroup namespace (Docker on a v1 host) lists its group by the host's path,
`/docker/<id>`, but has that group mounted as the root of each hierarchy: where the listed path is
missing, the mount's root is the group.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota_cores(proc: Path = PROC, root: Path = CGROUP_ROOT) -> float | None:
    """CPU time per wall second this thread may use, or None when unlimited (or unreadable)."""
    return min((quota / period for quota, period in _cpu_quotas(proc, root)), default=None)


def cpu_period_us(proc: Path = PROC, root: Path = CGROUP_ROOT) -> int | None:
    """The CFS period of the quota that binds, in microseconds, or None when unlimited (or unreadable).

    The same cores throttle differently by period: CFS runs a task at full speed until the period's
    quota is spent, so a long period lets short calls through unthrottled (partition/lab/cgroup.py).
    """
    binding = min(_cpu_quotas(proc, root), key=lambda pair: pair[0] / pair[1], default=None)
    return binding[1] if binding is not None else None


def memory_limit_bytes(proc: Path = PROC, root: Path = CGROUP_ROOT) -> int | None:
    """The cgroup's memory limit in bytes, or None when unlimited (or unreadable)."""
    return min((limit for limit, _ in _memory_levels(proc, root)), default=None)


def memory_headroom_bytes(proc: Path = PROC, root: Path = CGROUP_ROOT) -> int | None:
    """How many more bytes this group may take before a limit binds, or None when unlimited (or unreadable).

    Each limit counts what its whole subtree holds, so a level's room is its limit less its own use, and
    a parent whose other children hold most of it binds before a child's looser limit.
    """
    return min((max(0, limit - used) for limit, used in _memory_levels(proc, root)), default=None)


def _cpu_quotas(proc: Path, root: Path) -> list[tuple[int, int]]:
    """(quota, period) in microseconds of the group and of each ancestor that sets a quota."""
    lines = _membership(proc)
    pairs = [
        (_read(g / "cpu.cfs_quota_us"), _read(g / "cpu.cfs_period_us"))
        for g in _v1_groups(lines, root, "cpu")
    ]
    if not pairs:  # v2 writes both in cpu.max, "max" for no quota
        pairs = [_read(g / "cpu.max").partition(" ")[::2] for g in _v2_groups(lines, root)]
    # v1 writes -1 for no quota
    return [(int(q), int(p)) for q, p in pairs if q.isdigit() and p.isdigit() and int(q) > 0 and int(p) > 0]


def _memory_levels(proc: Path, root: Path) -> list[tuple[int, int]]:
    """(limit, bytes in use) of the group and of each ancestor that sets a memory limit.

    In use is the level's usage less its file cache, active or not: the kernel drops clean cache
    before it kills at the limit, as MemAvailable counts it available. (Not only the inactive part, as
    `docker stats` counts: a model file read twice is active cache, 700 MiB of it read a 1 GiB group as
    175 MiB free, yet 800 MiB more were then allocated there without a kill.) Shared memory is anon
    memory here, not file cache, so it stays in use. A use that cannot be read counts as none.
    """
    lines = _membership(proc)
    # v1 writes "unlimited" as a huge number, above any host's memory; v2 writes "max"
    files = ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_inactive_file", "total_active_file"))
    groups = _v1_groups(lines, root, "memory")
    if not groups:
        files, groups = (
            ("memory.max", "memory.current", ("inactive_file", "active_file")),
            _v2_groups(lines, root),
        )
    limit_file, usage_file, cache_keys = files
    levels = []
    for group in groups:
        limit, usage = _read(group / limit_file), _read(group / usage_file)
        if limit.isdigit():
            cache = _stat_sum(group / "memory.stat", cache_keys)
            used = int(usage) - cache if usage.isdigit() else 0
            levels.append((int(limit), max(0, used)))
    return levels


def _membership(proc: Path) -> list[tuple[str, str, str]]:
    """(hierarchy id, controllers, path) for each line of the calling thread's cgroup file."""
    for name in ("thread-self/cgroup", "self/cgroup"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        return [tuple(line.split(":", 2)) for line in text.splitlines() if line.count(":") >= 2]
    return []


def _v1_groups(lines, root: Path, controller: str) -> list[Path]:
    """The directories of the v1 group holding `controller` and of its ancestors, [] where not mounted."""
    for hierarchy, controllers, path in lines:
        if hierarchy == "0" or controller not in controllers.split(","):
            continue
        for mount in (root / controllers, root / controller):
            if mount.is_dir():
                return _groups(mount, path)
    return []


def _v2_groups(lines, root: Path) -> list[Path]:
    """The directories of the v2 group and of its ancestors, [] where there is no unified hierarchy."""
    group = next((path for hierarchy, _, path in lines if hierarchy == "0"), None)
    if group is None:
        return []
    mount = next((m for m in (root, root / "unified") if (m / "cgroup.controllers").is_file()), None)
    return _groups(mount, group) if mount is not None else []


def _groups(mount: Path, path: str) -> list[Path]:
    """`path` under `mount` and each ancestor up to the mount's root, those that exist, innermost first.

    The mount's root is always among them: in a container that is the container's own group, whose
    host path (the one listed) does not exist inside it.
    """
    groups, place = [], mount / path.lstrip("/")
    while True:
        if place.is_dir():
            groups.append(place)
        if place == mount or mount not in place.parents:
            return groups
        place = place.parent


def _stat_sum(file: Path, keys: tuple[str, ...]) -> int:
    """The sum of the values of `keys` in a memory.stat file (read once), 0 for those missing."""
    total = 0
    for line in _read(file).splitlines():
        name, _, value = line.partition(" ")
        if name in keys and value.isdigit():
            total += int(value)
    return total


def _read(file: Path) -> str:
    """The file's stripped text, "" where it is missing (a root group has no limit files) or unreadable."""
    try:
        return file.read_text().strip()
    except OSError:
        return ""
