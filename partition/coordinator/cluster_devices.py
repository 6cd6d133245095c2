"""The cluster file's [[device]] tables as `serve`, `bench` and `profile --cluster` read them (deploy):
names, roles, addresses and threads, before any profile exists.

The planner reads the same file strictly (partition.plan.cluster: every device with a profile);
this reader accepts a file of addresses only, but checks what it reads with the same rules: known
keys, a valid role, unique names, a "host:port" address, a whole number of threads. A misspelt key
or role is named here rather than ending as a device without an address or "found 0 edges".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from partition.artifacts import read_text
from partition.errors import ConfigError
from partition.plan.cluster import check_device_address, check_device_table


@dataclass(frozen=True)
class ClusterDevice:
    name: str
    role: str  # edge | server
    address: str | None  # host:port of its worker; None for an edge without one
    threads: int | None  # its declared torch threads, if any
    memory_gb: float | None
    table: dict  # the entry as written (profile --cluster writes its other keys back unchanged)


def read_cluster_toml(path: Path) -> dict:
    """The cluster file's raw tables; ConfigError when it is missing or not TOML."""
    text = read_text(path, "cluster file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"cluster file {path} is not valid TOML: {error}") from None


def read_devices(path: Path) -> list[ClusterDevice]:
    """Every [[device]] of the file, checked; ConfigError naming the entry and the key otherwise."""
    entries = read_cluster_toml(path).get("device", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: declare devices as [[device]] tables (name, role, address, ...)")
    devices: list[ClusterDevice] = []
    for i, entry in enumerate(entries):
        # A file of addresses may leave the servers' role out; the planner's file may not.
        where = f"{path}: device #{i + 1}"
        name, role = check_device_table(entry, where, default_role="server")
        where = f"{where} ({name!r})"
        if any(device.name == name for device in devices):
            raise ConfigError(f"{where}: another device is called {name!r}; names must be unique")
        threads = entry.get("threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"{where}: threads must be a whole number >= 1, got {threads!r}")
        memory_gb = entry.get("memory_gb")
        address = entry.get("address")
        if address is not None:
            check_device_address(address, where)
        devices.append(ClusterDevice(name, role, address, threads, memory_gb, dict(entry)))
    return devices
