"""Where the plan's devices are served (deploy): addresses from the cluster file, and local workers
started for `serve --spawn-local` when nothing listens for a device."""

from __future__ import annotations

import logging
import socket
import tomllib
from pathlib import Path

from partition.errors import ConfigError

log = logging.getLogger(__name__)


def read_cluster_toml(path: Path) -> dict:
    """The cluster file's raw tables; ConfigError when it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"cluster file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"cluster file {path} is not valid TOML: {error}") from None


def cluster_addresses(path: Path) -> dict[str, str]:
    """device name -> "host:port" for every device of the cluster file that declares an address."""
    data = read_cluster_toml(path)
    addresses = {}
    for entry in data.get("device", []):
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            addresses[str(entry.get("name"))] = entry["address"]
    return addresses


def edge_threads(path: Path) -> int | None:
    """The torch threads the edge device runs with: its `threads` in the cluster file, else the threads
    its profile was measured with; None when the file says neither. The coordinator runs the edge's
    segments, and with other threads than the profile's they cost what the plan did not predict
    (under a CPU quota, more threads only wait for each other)."""
    from partition.artifacts import load_profile

    for entry in read_cluster_toml(path).get("device", []):
        if not isinstance(entry, dict) or entry.get("role") != "edge":
            continue
        if isinstance(entry.get("threads"), int):
            return entry["threads"]
        if isinstance(entry.get("profile"), str):
            try:
                return load_profile(path.parent / entry["profile"]).device.threads
            except (ConfigError, OSError):
                return None  # the planner reports a broken profile; serving goes on without it
    return None


def is_listening(address: str, timeout_s: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def spawn_missing(devices: list[str], addresses: dict[str, str], model: str, threads: int = 0) -> list:
    """Start a local worker for each device with no address or nothing listening at it.

    Updates `addresses` in place and returns the LocalWorker handles (the caller stops them)."""
    from partition.transport.local import spawn_worker

    extra: tuple[str, ...] = ()
    model_path = Path(model)
    if model_path.exists():  # a path: let the worker read inside its directory, nothing else
        extra = ("--models-dir", str(model_path.resolve().parent))
    if threads:
        extra += ("--threads", str(threads))
    started = []
    try:
        for device in devices:
            address = addresses.get(device)
            if address is not None and is_listening(address):
                continue
            host, port = "127.0.0.1", 0
            if address is not None:
                host, _, port_text = address.rpartition(":")
                port = int(port_text)
            worker = spawn_worker(device, host=host, port=port, extra_args=extra)
            log.info("started local worker %s at %s (pid %d)", device, worker.address, worker.pid)
            addresses[device] = worker.address
            started.append(worker)
    except BaseException:
        for worker in started:
            worker.stop()
        raise
    return started
