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
from dataclasses import replace
from pathlib import Path

from partition.coordinator.cluster_devices import ClusterDevice, read_devices
from partition.errors import ConfigError
from partition.plan.cluster import check_one_edge
from partition.types import DeviceProfile, LinkProfile

log = logging.getLogger(__name__)


def read_cluster_devices(path: Path) -> list[ClusterDevice]:
    """The devices to profile: every server with the address of its worker, exactly one edge."""
    devices = read_devices(path)
    for device in devices:
        if device.address is None and device.role != "edge":
            raise ConfigError(
                f'{path}: device {device.name!r} needs address = "host:port" of its `partition worker`'
            )
    check_one_edge([device.name for device in devices if device.role == "edge"], str(path))
    return devices


def profile_cluster(
    cluster: Path,
    model: str,
    out: Path,
    transport=None,
    settings=None,
    refresh: bool = False,
    threads: int | None = None,
    profiled_by: str = "",
) -> Path:
    """Profile every device and link of `cluster`; write `<name>.json` beside `out` and the cluster file.

    Each device answers from its own profile cache unless `refresh` (links are always measured). An edge
    without a worker is profiled here with its declared `threads`, else `threads`, else torch's default;
    workers measure with the threads they serve with (their --threads). `profiled_by`: the command the
    file's header names (default `partition profile --cluster CLUSTER`); with it, the workers' addresses
    are left out (workers started for the measurement and gone since, as under Ray).
    """
    from partition.transport.channels import TransportConfig

    devices = read_cluster_devices(cluster)
    edge_threads = _edge_threads(devices, threads, cluster)
    profiles, links = asyncio.run(
        _measure(devices, model, transport or TransportConfig(), settings, refresh, edge_threads)
    )
    from partition.artifacts import save_profile, write_atomically

    # each write makes the folder, and names a file in the way of it (a bare mkdir would say "File exists")
    for device in devices:
        save_profile(profiles[device.name], out.parent / f"{device.name}.json")
    if profiled_by:
        devices = [replace(device, address=None) for device in devices]
    # a plan read while it is written sees the old cluster file or the new one, never half of one
    write_atomically(
        out, render_cluster(devices, links, profiled_by or f"partition profile --cluster {cluster}")
    )
    return out


def _edge_threads(devices: list[ClusterDevice], threads: int | None, cluster: Path) -> int | None:
    edge = next(d for d in devices if d.role == "edge")
    declared = edge.threads
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
    from partition.transport.client import StageCallError, StageClient
    from partition.transport.profile_request import profile_request

    clients = {d.name: StageClient(d.address, transport) for d in devices if d.address}
    try:
        await _check_answering(devices, clients)
        profiles: dict[str, DeviceProfile] = {}
        # the workers first: one that refuses the model says so before minutes of profiling here
        for device in sorted(devices, key=lambda d: d.address is None):
            if device.address is None:
                profiles[device.name] = await asyncio.to_thread(
                    _profile_here, model, device.name, settings, refresh, edge_threads
                )
                continue
            log.info("profiling %s at %s", device.name, device.address)
            try:
                reply = await clients[device.name].profile(profile_request(model, settings, refresh))
            except StageCallError as error:
                raise StageCallError(error.code, error.details, error.address, device.name) from None
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


# Seconds a worker has to answer one probe before anything is profiled (a live one answers in ms).
ANSWER_TIMEOUT_S = 10.0


async def _check_answering(devices, clients) -> None:
    """One probe round trip to every worker first, asking its name, so that a worker that is down,
    refuses the credentials or is another device's is named before minutes of profiling are spent."""
    import grpc

    from partition.transport.client import StageCallError

    for device in devices:
        if device.address is None:
            continue
        try:
            name = await clients[device.name].worker_name(timeout_s=ANSWER_TIMEOUT_S)
        except StageCallError as error:
            advice = {
                grpc.StatusCode.UNAVAILABLE: f"start it with `partition worker --listen {device.address} "
                f"--name {device.name}`, or correct its address in the cluster file",
                grpc.StatusCode.DEADLINE_EXCEEDED: "it did not answer in time: is the address that of a "
                "`partition worker`, and is the host reachable?",
                grpc.StatusCode.UNAUTHENTICATED: "give the worker's shared token with --token-file",
            }.get(error.code, "check that a `partition worker` listens there")
            raise ConfigError(
                f"the worker of device {device.name!r} at {device.address} does not answer "
                f"({error.code.name}: {error.details}); {advice}. Nothing was profiled."
            ) from None
        if name != device.name:  # its profile would be filed under this name, measured on another device
            raise ConfigError(
                f"the worker at {device.address} is {name!r}, not device {device.name!r}: start "
                f"`partition worker --listen {device.address} --name {device.name}` there, or correct "
                "the address in the cluster file. Nothing was profiled."
            )


def _profile_here(model: str, name: str, settings, refresh: bool, threads: int | None) -> DeviceProfile:
    from partition.profile import profile_device

    return profile_device(model, settings, threads=threads, name=name, refresh=refresh)


def render_cluster(devices: list[ClusterDevice], links: list[LinkProfile], profiled_by: str) -> str:
    """The cluster file with each device's profile and every measured link direction."""

    def value(v) -> str:
        return json.dumps(v)  # numbers and strings in JSON form are valid TOML

    lines = [
        f"# Profiled by `{profiled_by}`: links below are measured, both directions.",
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
        written = ("name", "role", "address", "memory_gb", "profile")  # above, or the new profile
        lines += [f"{k} = {value(v)}" for k, v in d.table.items() if k not in written]
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
