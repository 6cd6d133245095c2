"""Profile a whole cluster (profile): every device through its worker's Profile rpc, every link through
Probe, then write the profiles and a cluster file the planner reads.

    partition profile --cluster cluster.toml --model smollm2-135m [--out cluster.toml]

Devices with an `address` are profiled where they run (their threads, CPU limits and accelerator); an
edge without one is profiled in this process. Links between two workers are measured worker to worker;
links to an edge without a worker are measured from here. Measured links replace declared ones.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from partition.coordinator.workers import read_cluster_toml
from partition.errors import ConfigError
from partition.types import DeviceProfile, LinkProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterDevice:
    name: str
    role: str
    address: str | None  # host:port of its worker; None for an edge profiled in this process
    memory_gb: float | None
    extra: dict  # other keys of the entry, written back unchanged


def read_devices(path: Path) -> list[ClusterDevice]:
    data = read_cluster_toml(path)
    devices = []
    for entry in data.get("device", []):
        name, role = entry.get("name"), entry.get("role", "server")
        if not isinstance(name, str):
            raise ConfigError(f"{path}: every [[device]] needs a name")
        address = entry.get("address")
        if address is None and role != "edge":
            raise ConfigError(
                f'{path}: device {name!r} needs address = "host:port" of its `partition worker`'
            )
        extra = {
            k: v for k, v in entry.items() if k not in ("name", "role", "address", "memory_gb", "profile")
        }
        devices.append(ClusterDevice(name, role, address, entry.get("memory_gb"), extra))
    if sum(d.role == "edge" for d in devices) != 1:
        raise ConfigError(f'{path}: exactly one device needs role = "edge"')
    return devices


def profile_cluster(
    cluster: Path,
    model: str,
    out: Path,
    transport=None,
    settings=None,
    refresh: bool = False,
    threads: int | None = None,
) -> Path:
    """Profile every device and link of `cluster`; write `<name>.json` beside `out` and the cluster file.

    Each device answers from its own profile cache unless `refresh` (links are always measured). An edge
    without a worker is profiled here with its declared `threads`, else `threads`, else torch's default;
    workers measure with the threads they serve with (their --threads).
    """
    from partition.transport.channels import TransportConfig

    devices = read_devices(cluster)
    edge_threads = _edge_threads(devices, threads, cluster)
    profiles, links = asyncio.run(
        _measure(devices, model, transport or TransportConfig(), settings, refresh, edge_threads)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    from partition.artifacts import save_profile

    for device in devices:
        save_profile(profiles[device.name], out.parent / f"{device.name}.json")
    out.write_text(render_cluster(devices, links, source=cluster))
    return out


def _edge_threads(devices: list[ClusterDevice], threads: int | None, cluster: Path) -> int | None:
    edge = next(d for d in devices if d.role == "edge")
    declared = edge.extra.get("threads")
    if declared is not None and (not isinstance(declared, int) or declared < 1):
        raise ConfigError(
            f"{cluster}: device {edge.name!r}: threads must be a whole number >= 1, got {declared!r}"
        )
    if declared is not None and threads is not None and declared != threads:
        raise ConfigError(
            f"{cluster}: the edge {edge.name!r} declares threads = {declared} but --threads is {threads}; "
            "drop one of them"
        )
    return declared if declared is not None else threads


async def _measure(
    devices, model, transport, settings, refresh: bool, edge_threads: int | None
) -> tuple[dict[str, DeviceProfile], list[LinkProfile]]:
    from partition.artifacts import profile_from_json
    from partition.coordinator.links import measure_between, measure_from_here
    from partition.transport.client import StageClient
    from partition.transport.generated import measure_pb2

    clients = {d.name: StageClient(d.address, transport) for d in devices if d.address}
    try:
        profiles: dict[str, DeviceProfile] = {}
        for device in devices:
            if device.address is None:
                profiles[device.name] = await asyncio.to_thread(
                    _profile_here, model, device.name, settings, refresh, edge_threads
                )
                continue
            log.info("profiling %s at %s", device.name, device.address)
            request = measure_pb2.ProfileRequest(model=model, refresh=refresh)
            if settings is not None:
                request.prefill_lengths.extend(settings.prefill_lengths)
                request.context_lengths.extend(settings.context_lengths)
                request.repeats = settings.repeats
                request.warmup = settings.warmup
                request.min_time_s = settings.min_time_s
            reply = await clients[device.name].profile(request)
            profiles[device.name] = profile_from_json(reply.device_profile_json, f"profile of {device.name}")
        links: list[LinkProfile] = []
        for a, b in itertools.combinations(devices, 2):
            if a.address and b.address:
                pair = await measure_between(clients[a.name], a.name, b.name, b.address)
            elif b.address:
                pair = await measure_from_here(clients[b.name], a.name, b.name)
            else:
                pair = await measure_from_here(clients[a.name], b.name, a.name)
            log.info("link %s <-> %s: %s", a.name, b.name, pair)
            links.extend(pair)
        return profiles, links
    finally:
        for client in clients.values():
            await client.close()


def _profile_here(model: str, name: str, settings, refresh: bool, threads: int | None) -> DeviceProfile:
    from partition.profile import profile_device

    return profile_device(model, settings, threads=threads, name=name, refresh=refresh)


def render_cluster(devices: list[ClusterDevice], links: list[LinkProfile], source: Path) -> str:
    """The cluster file with each device's profile and every measured link direction."""

    def value(v) -> str:
        return json.dumps(v)  # numbers and strings in JSON form are valid TOML

    lines = [
        f"# Profiled by `partition profile --cluster {source}`: links below are measured, both directions.",
        "",
    ]
    for d in devices:
        lines += [
            "[[device]]",
            f"name = {value(d.name)}",
            f"role = {value(d.role)}",
            f"profile = {value(d.name + '.json')}",
        ]
        if d.address:
            lines.append(f"address = {value(d.address)}")
        if d.memory_gb is not None:
            lines.append(f"memory_gb = {value(d.memory_gb)}")
        lines += [f"{k} = {value(v)}" for k, v in d.extra.items()]
        lines.append("")
    for link in links:
        lines += [
            "[[link]]",
            f"from = {value(link.src)}",
            f"to = {value(link.dst)}",
            f"bandwidth_mbps = {link.bandwidth_Bps * 8 / 1e6:.3f}",
            f"latency_ms = {link.latency_s * 1e3:.4f}",
            "",
        ]
    return "\n".join(lines)
