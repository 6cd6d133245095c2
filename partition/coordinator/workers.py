"""Where the plan's devices are served (deploy): addresses from the cluster file, and local workers
started for `serve --spawn-local` when nothing listens for a device."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from partition.coordinator.cluster_devices import read_devices
from partition.errors import ConfigError

log = logging.getLogger(__name__)


def cluster_addresses(path: Path) -> dict[str, str]:
    """device name -> "host:port" for every device of the cluster file that declares an address."""
    return {device.name: device.address for device in read_devices(path) if device.address is not None}


def edge_threads(path: Path) -> int | None:
    """The torch threads the edge device runs with: its `threads` in the cluster file, else the threads
    its profile was measured with; None when the file says neither. The coordinator runs the edge's
    segments, and with other threads than the profile's they cost what the plan did not predict
    (under a CPU quota, more threads only wait for each other)."""
    from partition.artifacts import load_profile

    for device in read_devices(path):
        if device.role != "edge":
            continue
        if device.threads is not None:
            return device.threads
        if isinstance(device.table.get("profile"), str):
            try:
                return load_profile(path.parent / device.table["profile"]).device.threads
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
