"""The cluster file a lab writes (deploy -> profile, plan, serve): its devices' addresses and links.

Format of the planner issue: [[device]] with name, role, address, memory_gb; [[link]] with from, to,
bandwidth_mbps, latency_ms (symmetric). Links are what the lab emulates: the slower end of each pair.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from partition.artifacts import write_atomically
from partition.lab.config import LabConfig, pair_link

# Declared for links where neither end is shaped: the order of what an unshaped veth pair carries here.
UNSHAPED_MBPS = 10_000.0


def _value(value: object) -> str:
    return json.dumps(value)  # strings and numbers in JSON form are valid TOML


def render(config: LabConfig, addresses: dict[str, str]) -> str:
    lines = [
        f"# Written by `partition lab up --config {config.source}`: the emulated lab {config.name!r}.",
        "# Addresses exist only while the lab is up; run commands inside the edge with `partition lab exec -- ...`.",
        "",
    ]
    for device in config.devices:
        lines += ["[[device]]", f"name = {_value(device.name)}", f"role = {_value(device.role)}"]
        lines.append(f"address = {_value(addresses[device.name])}")
        if device.memory_gb is not None:
            lines.append(f"memory_gb = {_value(device.memory_gb)}")
        lines.append(f"threads = {device.threads}")
        limit = f"{device.cpu:g} cores" if device.cpu is not None else "no CPU limit"
        lines += [f"# emulated: {limit}", ""]
    for a, b in itertools.combinations(config.devices, 2):
        bandwidth, delay = pair_link(a, b)
        note = "" if bandwidth is not None else "  # neither end shaped"
        lines += [
            "[[link]]",
            f"from = {_value(a.name)}",
            f"to = {_value(b.name)}",
            f"bandwidth_mbps = {_value(bandwidth if bandwidth is not None else UNSHAPED_MBPS)}{note}",
            f"latency_ms = {_value(delay)}",
            "",
        ]
    return "\n".join(lines)


def write(path: Path, config: LabConfig, addresses: dict[str, str]) -> None:
    # whole or not at all: `profile` may read it while a second `lab up` rewrites it
    write_atomically(path, render(config, addresses))
