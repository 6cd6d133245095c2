"""The CPU quota and memory limit read from cgroup v1 and v2 trees laid out as the kernel shows them."""

from pathlib import Path

import pytest

from partition.errors import ConfigError
from partition.profile.cgroup_limits import cpu_period_us, cpu_quota_cores, memory_limit_bytes
from partition.profile.device import CPU_QUOTA_ENV, memory_available_bytes
from partition.profile.device import cpu_quota_cores as declared_or_read_quota

GIB = 1 << 30


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_host(tmp_path: Path, quota_us: str, limit: str) -> tuple[Path, Path]:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "thread-self/cgroup", "9:name=systemd:/\n4:cpu,cpuacct:/lab/edge\n3:memory:/lab/edge\n")
    write(root / "cpu,cpuacct/lab/edge/cpu.cfs_quota_us", quota_us)
    write(root / "cpu,cpuacct/lab/edge/cpu.cfs_period_us", "100000\n")
    write(root / "memory/lab/edge/memory.limit_in_bytes", limit)
    return proc, root


def v2_host(tmp_path: Path, limits: dict[str, tuple[str, str]]) -> tuple[Path, Path]:
    """A unified hierarchy; `limits` maps a group to its (cpu.max, memory.max)."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "self/cgroup", "0::/user.slice/app.scope\n")  # no thread-self: read the process's
    write(root / "cgroup.controllers", "cpuset cpu io memory pids\n")
    for group, (cpu_max, memory_max) in limits.items():
        write(root / group / "cpu.max", cpu_max)
        write(root / group / "memory.max", memory_max)
    return proc, root


def test_cgroup_v1_quota_and_memory_limit(tmp_path):
    proc, root = v1_host(tmp_path, "25000\n", "1073741824\n")
    assert cpu_quota_cores(proc, root) == 0.25
    assert memory_limit_bytes(proc, root) == 1 << 30


def test_the_cpu_period_is_the_binding_quotas(tmp_path):
    proc, root = v1_host(tmp_path, "1000\n", "9223372036854771712\n")
    write(root / "cpu,cpuacct/lab/edge/cpu.cfs_period_us", "4000\n")  # the lab's: a quarter core per 4 ms
    write(root / "cpu,cpuacct/lab/cpu.cfs_quota_us", "50000\n")
    write(root / "cpu,cpuacct/lab/cpu.cfs_period_us", "100000\n")
    assert (cpu_quota_cores(proc, root), cpu_period_us(proc, root)) == (0.25, 4000)
    write(root / "cpu,cpuacct/lab/cpu.cfs_quota_us", "20000\n")  # now the parent's 0.2 binds
    assert (cpu_quota_cores(proc, root), cpu_period_us(proc, root)) == (0.2, 100000)
    proc, root = v2_host(tmp_path / "v2", {"user.slice/app.scope": ("25000 100000\n", "max\n")})
    assert cpu_period_us(proc, root) == 100000


def test_cgroup_v1_without_a_quota_is_unlimited(tmp_path):
    proc, root = v1_host(tmp_path, "-1\n", "9223372036854771712\n")
    assert cpu_quota_cores(proc, root) is None


def v1_docker(tmp_path: Path, quota_us: str, limit: str) -> tuple[Path, Path]:
    """Inside `docker run -m 1g --cpus 0.5` on a v1 host without a cgroup namespace: the group is listed by
    its host path, but each hierarchy is mounted with that group's files at its root."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    write(proc / "self/cgroup", "4:cpu,cpuacct:/docker/4f2a\n3:memory:/docker/4f2a\n")
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", quota_us)
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    write(root / "memory/memory.limit_in_bytes", limit)
    return proc, root


def test_cgroup_v1_in_a_container_reads_the_mount_root_as_its_group(tmp_path):
    proc, root = v1_docker(tmp_path, "50000\n", "1073741824\n")
    assert cpu_quota_cores(proc, root) == 0.5
    assert memory_limit_bytes(proc, root) == 1 << 30


def test_cgroup_v1_takes_the_tightest_limit_from_the_group_up_to_the_root(tmp_path):
    proc, root = v1_host(tmp_path, "-1\n", "9223372036854771712\n")  # the group itself: unlimited
    write(root / "cpu,cpuacct/lab/cpu.cfs_quota_us", "50000\n")
    write(root / "cpu,cpuacct/lab/cpu.cfs_period_us", "100000\n")
    write(root / "memory/lab/memory.limit_in_bytes", "1073741824\n")
    write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")  # the root group: unlimited
    write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    write(root / "memory/memory.limit_in_bytes", "9223372036854771712\n")
    assert cpu_quota_cores(proc, root) == 0.5
    assert memory_limit_bytes(proc, root) == 1 << 30
    write(root / "cpu,cpuacct/lab/edge/cpu.cfs_quota_us", "25000\n")  # a tighter child is the one
    assert cpu_quota_cores(proc, root) == 0.25


def test_cgroup_v2_takes_the_tightest_limit_from_the_group_up_to_the_root(tmp_path):
    proc, root = v2_host(
        tmp_path,
        {
            "user.slice": ("150000 100000\n", "536870912\n"),
            "user.slice/app.scope": ("max 100000\n", "2147483648\n"),
        },
    )
    assert cpu_quota_cores(proc, root) == 1.5  # the parent's: the scope itself sets none
    assert memory_limit_bytes(proc, root) == 1 << 29


def test_cgroup_v2_without_limits_is_unlimited(tmp_path):
    proc, root = v2_host(tmp_path, {"user.slice/app.scope": ("max 100000\n", "max\n")})
    assert cpu_quota_cores(proc, root) is None
    assert memory_limit_bytes(proc, root) is None


def test_memory_available_is_a_v2_limit_less_what_the_group_holds(tmp_path):
    proc, root = v2_host(tmp_path, {"user.slice/app.scope": ("max 100000\n", f"{4 * GIB}\n")})
    write(proc / "meminfo", "MemTotal: 33554432 kB\nMemAvailable: 16777216 kB\n")  # 16 GiB free on the host
    write(root / "user.slice/app.scope/memory.current", f"{3 * GIB}\n")
    assert memory_available_bytes(proc, root) == GIB
    # file cache the kernel drops before the limit is room still; a parent filled by others binds first
    write(root / "user.slice/app.scope/memory.stat", f"anon {2 * GIB}\ninactive_file {GIB // 4}\n")
    assert memory_available_bytes(proc, root) == 5 * GIB // 4
    stat = f"anon {2 * GIB}\nshmem {GIB // 4}\nactive_file {GIB // 4}\ninactive_file {GIB // 4}\n"
    write(root / "user.slice/app.scope/memory.stat", stat)  # a file read twice is active cache: room too
    assert memory_available_bytes(proc, root) == 3 * GIB // 2
    write(root / "user.slice/memory.max", f"{8 * GIB}\n")
    write(root / "user.slice/memory.current", f"{7 * GIB}\n")
    assert memory_available_bytes(proc, root) == GIB
    write(proc / "meminfo", "MemAvailable: 524288 kB\n")  # the host has less left than the group
    assert memory_available_bytes(proc, root) == GIB // 2


def test_memory_available_is_a_v1_limit_less_what_the_group_holds(tmp_path):
    proc, root = v1_host(tmp_path, "-1\n", f"{4 * GIB}\n")
    write(proc / "meminfo", "MemAvailable: 16777216 kB\n")
    write(root / "memory/lab/edge/memory.usage_in_bytes", f"{3 * GIB}\n")
    write(root / "memory/lab/edge/memory.stat", f"inactive_file 0\ntotal_inactive_file {GIB}\n")
    assert memory_available_bytes(proc, root) == 2 * GIB
    stat = f"active_file 0\ntotal_active_file {GIB // 2}\ntotal_inactive_file {GIB}\n"
    write(root / "memory/lab/edge/memory.stat", stat)
    assert memory_available_bytes(proc, root) == 5 * GIB // 2
    assert memory_limit_bytes(proc, root) == 4 * GIB  # the limit itself is still the limit


def test_no_cgroup_file_is_unlimited(tmp_path):
    assert cpu_quota_cores(tmp_path / "proc", tmp_path / "cgroup") is None
    assert memory_limit_bytes(tmp_path / "proc", tmp_path / "cgroup") is None


def test_a_declared_quota_is_used_and_a_malformed_one_is_refused(monkeypatch):
    monkeypatch.setenv(CPU_QUOTA_ENV, "0.25")
    assert declared_or_read_quota() == 0.25
    for bad in ("quarter", "0", "-1", "inf", "nan"):
        monkeypatch.setenv(CPU_QUOTA_ENV, bad)
        with pytest.raises(ConfigError, match=f"{CPU_QUOTA_ENV}={bad} is not a number of cores"):
            declared_or_read_quota()
