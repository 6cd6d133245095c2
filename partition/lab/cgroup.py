"""CPU limits for emulated devices (deploy, emulated lab): cgroup v1 CFS quota.

`cpu.cfs_quota_us` / `cpu.cfs_period_us` = cores of CPU time per wall second (measured here: a quota of
25000 of 100000 gave a busy loop 24.7 % of a core). The thread count is the worker's own flag.

The period is short so that a limited device is slow, not fast in bursts: CFS lets a task run at full
speed until the period's quota is spent, so with a 100 ms period a quarter core ran any call under
25 ms at full speed (the LM head, 6.9 ms, after an idle pause) and throttled only sustained loads
(25 ms per head call back to back): a device whose speed depends on how busy it is, which no per-layer
cost model can describe. With a 4 ms period (the kernel's 1 ms minimum quota at a quarter core, and one
scheduler tick at HZ=250) the head takes 14 ms after a pause and 23 ms back to back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

from partition.errors import LabError
from partition.profile.device import CPU_QUOTA_ENV

CPU_ROOT = Path("/sys/fs/cgroup/cpu")  # cgroup v1 cpu controller
MIN_PERIOD_US = 4_000  # shortest CFS period used, microseconds (one tick at HZ=250)
MIN_QUOTA_US = 1_000  # the kernel refuses a smaller quota, microseconds


def period_us(cores: float) -> int:
    """The CFS period for a limit of `cores`: the shortest whose quota the kernel accepts."""
    return max(MIN_PERIOD_US, math.ceil(MIN_QUOTA_US / cores))


def create(name: str, cores: float, root: Path = CPU_ROOT) -> Path:
    """A cpu cgroup `name` limited to `cores` of CPU time; returns its directory."""
    path = root / name
    try:
        path.mkdir()
        period = period_us(cores)
        (path / "cpu.cfs_period_us").write_text(str(period))
        (path / "cpu.cfs_quota_us").write_text(str(max(MIN_QUOTA_US, round(cores * period))))
    except OSError as error:
        raise LabError(f"cannot create the cpu cgroup {path}: {error}") from None
    return path


def wrap(path: Path, argv: Sequence[str]) -> list[str]:
    """argv that joins the cgroup before it execs, so it and all it starts are limited from the start.

    The quota is also passed as CPU_QUOTA_ENV: `ip netns exec` remounts /sys, so a process in a lab
    namespace cannot read its own cgroup's files, and the profiler must know it runs under a quota.
    """
    quota = _quota_cores(path)
    env = ["env", f"{CPU_QUOTA_ENV}={quota:g}"] if quota is not None else []
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(path), *env, *argv]


def _quota_cores(path: Path) -> float | None:
    try:
        quota = int((path / "cpu.cfs_quota_us").read_text())
        period = int((path / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def remove(path: Path, timeout_s: float = 5.0) -> None:
    """Remove an (emptied) cgroup; waits a little for exiting processes to leave it."""
    deadline = time.monotonic() + timeout_s
    while path.exists():
        try:
            path.rmdir()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise LabError(
                    f"cannot remove cgroup {path} (processes {pids(path)} still in it): {error}"
                ) from None
            time.sleep(0.05)
