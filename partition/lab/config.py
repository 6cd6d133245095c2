"""Emulated-lab configs (deploy): which devices to emulate on this machine and how unequal to make them.

A device is a worker process in its own network namespace. Its "access link" to the other devices has
a bandwidth (tbf, each direction) and a one-way delay (a user-space delay proxy: the kernel has no
netem). Between two devices the slower end decides: bandwidth = the smaller, delay = the larger of the
two (unshaped devices add nothing). The host, where `partition serve` runs, counts as the edge.

    [lab]
    name = "wifi-edge"
    port = 7001                      # every worker's port (each in its own namespace)

    [[device]]
    name = "edge"
    role = "edge"                    # exactly one
    cpu = 0.25                       # cores (cgroup CPU quota); omit for no limit
    threads = 1                      # passed to the worker command
    bandwidth_mbps = 50              # omit for an unshaped link
    delay_ms = 10                    # one way
    memory_gb = 2.0                  # declared in the cluster file for the planner
"""

from __future__ import annotations

import re
import string
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from partition.artifacts import read_text
from partition.errors import ConfigError

# The worker command, as data: the launcher fills the fields and runs it inside the device's namespace.
DEFAULT_WORKER_COMMAND: tuple[str, ...] = (
    "{python}",
    "-m",
    "partition",
    "worker",
    "--listen",
    "{listen}",
    "--name",
    "{name}",
    "--threads",
    "{threads}",
)
TEMPLATE_FIELDS = ("python", "listen", "host", "port", "name", "threads")
TABLES = ("lab", "device")
LAB_KEYS = ("name", "port", "worker_command")
DEVICE_KEYS = ("name", "role", "cpu", "threads", "bandwidth_mbps", "delay_ms", "memory_gb")
NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")  # short: namespace and cgroup names are built from it


@dataclass(frozen=True)
class LabDevice:
    name: str
    role: str  # "edge" or "server"
    cpu: float | None  # cores of CPU time (CFS quota / period); None: no limit
    threads: int  # compute threads the worker uses
    bandwidth_mbps: float | None  # megabits/s each direction on its access link; None: unshaped
    delay_ms: float  # milliseconds, one way, on its access link
    memory_gb: float | None  # gigabytes the planner may use on it; None: not declared


@dataclass(frozen=True)
class LabConfig:
    name: str
    port: int  # TCP port of every worker (each namespace has its own)
    devices: tuple[LabDevice, ...]
    worker_command: tuple[str, ...]  # argv template, fields in TEMPLATE_FIELDS
    source: str = ""  # where the config came from, for messages

    @property
    def edge(self) -> LabDevice:
        return next(d for d in self.devices if d.role == "edge")

    def device(self, name: str) -> LabDevice:
        for device in self.devices:
            if device.name == name:
                return device
        raise ConfigError(
            f"{self.source}: no device {name!r}; devices: {', '.join(d.name for d in self.devices)}"
        )

    def render_command(self, device: LabDevice, listen_host: str) -> list[str]:
        values = {
            "python": sys.executable,
            "listen": f"{listen_host}:{self.port}",
            "host": listen_host,
            "port": str(self.port),
            "name": device.name,
            "threads": str(device.threads),
        }
        return [part.format(**values) for part in self.worker_command]


def pair_link(a: LabDevice, b: LabDevice) -> tuple[float | None, float]:
    """(bandwidth megabits/s or None if unshaped, one-way delay ms) between two devices: the slower end."""
    rates = [d.bandwidth_mbps for d in (a, b) if d.bandwidth_mbps is not None]
    return (min(rates) if rates else None), max(a.delay_ms, b.delay_ms)


def _number(table: dict, key: str, where: str, low: float, high: float, default=None, integer: bool = False):
    value = table.get(key, default)
    if value is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: {key} must be {what} in {low:g}..{high:g}, got {value!r}")
    return value


def _refuse_unknown(table: dict, known: tuple[str, ...], where: str, what: str = "keys") -> None:
    # A misspelt key would otherwise fall back to its default without a word.
    unknown = set(table) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown {what} {sorted(unknown)}; use {', '.join(known)}")


def _worker_command(lab: dict, source: str) -> list[str]:
    """The argv template, checked here so a bad one fails before `lab up` has built anything."""
    command = lab.get("worker_command", list(DEFAULT_WORKER_COMMAND))
    if not (isinstance(command, list) and command and all(isinstance(part, str) for part in command)):
        raise ConfigError(f"{source}: [lab] worker_command must be a non-empty list of strings")
    sample = dict.fromkeys(TEMPLATE_FIELDS, "x")
    for part in command:
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(part) if field is not None]
        except ValueError as error:
            raise ConfigError(
                f"{source}: [lab] worker_command part {part!r} is not a valid template ({error}); "
                "write a literal brace as {{ or }}"
            ) from None
        for field in fields:
            if field not in TEMPLATE_FIELDS:
                raise ConfigError(
                    f"{source}: worker_command field {{{field}}} is unknown; use {', '.join(TEMPLATE_FIELDS)}"
                )
        try:
            part.format(**sample)
        except (ValueError, KeyError, IndexError, AttributeError) as error:
            raise ConfigError(
                f"{source}: [lab] worker_command part {part!r} cannot be filled in ({error}); "
                "write fields plainly, e.g. {listen}"
            ) from None
    return command


def parse_lab_config(data: dict, source: str = "<lab config>") -> LabConfig:
    _refuse_unknown(data, TABLES, source, "top-level tables or keys")
    lab = data.get("lab")
    if not isinstance(lab, dict):
        raise ConfigError(f"{source}: missing the [lab] table (name, port)")
    _refuse_unknown(lab, LAB_KEYS, f"{source} [lab]")
    name = lab.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{source}: [lab] name must be lowercase letters, digits and '-', got {name!r}")
    port = _number(lab, "port", f"{source} [lab]", 1024, 65535, default=7001, integer=True)
    command = _worker_command(lab, source)

    entries = data.get("device")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: no [[device]] entries")
    if not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(
            f"{source}: device must be an array of tables, one [[device]] per device, got {entries!r}"
        )
    devices = []
    for index, entry in enumerate(entries):
        where = f"{source} device #{index + 1}"
        device_name = entry.get("name")
        if not isinstance(device_name, str) or not NAME.fullmatch(device_name):
            raise ConfigError(
                f"{where}: name must be lowercase letters, digits and '-' (<= 20), got {device_name!r}"
            )
        where = f"{source} device {device_name!r}"
        role = entry.get("role", "server")
        if role not in ("edge", "server"):
            raise ConfigError(f"{where}: role must be 'edge' or 'server', got {role!r}")
        _refuse_unknown(entry, DEVICE_KEYS, where)
        devices.append(
            LabDevice(
                name=device_name,
                role=role,
                cpu=_number(entry, "cpu", where, 0.01, 1024),
                threads=_number(entry, "threads", where, 1, 1024, default=1, integer=True),
                bandwidth_mbps=_number(entry, "bandwidth_mbps", where, 0.1, 100_000),
                delay_ms=float(_number(entry, "delay_ms", where, 0, 10_000, default=0.0)),
                memory_gb=_number(entry, "memory_gb", where, 0.001, 100_000),
            )
        )
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: device names must be unique, got {names}")
    edges = [d.name for d in devices if d.role == "edge"]
    if len(edges) != 1:
        raise ConfigError(f"{source}: exactly one device must have role = 'edge', found {edges or 'none'}")
    return LabConfig(
        name=name, port=port, devices=tuple(devices), worker_command=tuple(command), source=source
    )


def load_lab_config(path: str | Path) -> LabConfig:
    path = Path(path)
    text = read_text(
        path, "lab config", "shipped configs are in cluster/lab/, e.g. cluster/lab/wifi-edge.toml"
    )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"lab config {path} is not valid TOML: {error}") from None
    return parse_lab_config(data, str(path))
