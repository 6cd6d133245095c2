"""Profile a live Ray cluster (profile under Ray): every node that advertises `device:<name>` gets a
stage actor, which profiles the model where it runs; links are measured actor to actor. The result is
the same cluster file and per-device profiles `partition profile --cluster` writes, so
`partition plan` works against a live cluster with no hand-written file.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from partition.errors import ConfigError

log = logging.getLogger(__name__)


def profile_ray_cluster(
    address: str | None,
    model: str,
    out: Path,
    edge: str | None = None,
    threads: int = 0,
    settings=None,
    refresh: bool = False,
) -> Path:
    """Write `out` (cluster file) and `<device>.json` beside it for every device of the Ray cluster."""
    import ray

    from partition.coordinator.profile_cluster import profile_cluster
    from partition.ray.stages import RESOURCE_PREFIX, connect, device_nodes, ray_devices

    connected_here = connect(address)
    try:
        nodes = device_nodes()
        if not nodes:
            raise ConfigError(
                f"no node of the Ray cluster advertises a {RESOURCE_PREFIX}<name> resource; start nodes with "
                f"`ray start --resources '{{\"{RESOURCE_PREFIX}server-a\": 1}}'`"
            )
        edge = edge or _driver_device(nodes)
        if edge not in nodes:
            raise ConfigError(
                f"--edge {edge!r} is not a device of the cluster; devices: {', '.join(sorted(nodes))}"
            )
        devices = sorted(nodes)
        with (
            ray_devices(devices, edge, model, address=None, threads=threads) as stages,
            tempfile.TemporaryDirectory(prefix="partition-ray-cluster-") as tmp,
        ):
            cluster = Path(tmp) / "cluster.toml"
            cluster.write_text(_cluster_toml(devices, edge, stages.addresses, nodes, threads))
            command = f"partition profile --model {model} --ray {address or 'auto'} --edge {edge}"
            return profile_cluster(
                cluster,
                model,
                out,
                transport=stages.transport,
                settings=settings,
                refresh=refresh,
                profiled_by=command,
            )
    finally:
        if connected_here:
            ray.shutdown()


def _driver_device(nodes: dict[str, list[dict]]) -> str:
    import ray

    here = ray.get_runtime_context().get_node_id()
    mine = [device for device, entries in nodes.items() if here in {n["NodeID"] for n in entries}]
    if len(mine) != 1:
        raise ConfigError(
            f"cannot tell which device is the edge: this node advertises {len(mine)} devices "
            f"({', '.join(mine) or 'none'}); pass --edge NAME (devices: {', '.join(sorted(nodes))})"
        )
    return mine[0]


def _cluster_toml(devices, edge, addresses, nodes, threads) -> str:
    lines = []
    for device in devices:
        # Ray's `memory` resource: bytes its node offers to tasks and actors
        memory = min(n.get("Resources", {}).get("memory", 0) for n in nodes[device])
        lines += [
            "[[device]]",
            f"name = {json.dumps(device)}",
            f"role = {json.dumps('edge' if device == edge else 'server')}",
            f"address = {json.dumps(addresses[device])}",
        ]
        if memory:
            lines.append(f"memory_gb = {memory / 1e9:.3f}")
        if threads:
            lines.append(f"threads = {threads}")
        lines.append("")
    return "\n".join(lines)
