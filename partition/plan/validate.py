"""Checks that a chain of stages can run on a cluster (plan; also what deploy re-checks).

`chain_problem` returns the first broken rule as a sentence that names the device and the shortfall,
or "" when the chain is valid. The solver never returns an invalid chain; baselines and plans loaded
from disk go through here. `serving_problem` checks memory again for the KV cache serve allocates.
"""

from __future__ import annotations

from partition.plan.cluster import GB, Cluster
from partition.plan.costmodel import hops, shared_weight_bytes, unit_memory_bytes
from partition.types import Pinning, Stage, Workload, n_units


def gb(n_bytes: float) -> str:
    return f"{n_bytes / GB:.2f} GB"


def device_memory(cluster: Cluster, stages: tuple[Stage, ...], w: Workload) -> dict[str, tuple[int, int]]:
    """Bytes each device needs for its stages: (weights, KV cache). A device's stages run in one process
    (the edge's front and tail pieces), which holds a tied matrix once."""
    segments: dict[str, list[tuple[int, int]]] = {}
    for stage in stages:
        segments.setdefault(stage.device, []).append((stage.segment.start, stage.segment.end))
    out: dict[str, tuple[int, int]] = {}
    for device, spans in segments.items():
        profile = cluster.device(device).profile
        weights, kv = -shared_weight_bytes(profile, *spans), 0
        for start, end in spans:
            for unit in range(start, end):
                cost = profile.unit_cost(unit)
                weights += cost.weight_bytes
                kv += unit_memory_bytes(cost, w) - cost.weight_bytes
        out[device] = (weights, kv)
    return out


def chain_problem(cluster: Cluster, stages: tuple[Stage, ...], w: Workload, pin: Pinning) -> str:
    """The first reason `stages` cannot run on `cluster`, or "" if it can."""
    n = n_units(cluster.model.n_blocks)
    names = {device.name for device in cluster.devices}
    edge = cluster.edge.name
    if not stages:
        return "a plan needs at least one stage"
    expected = 0
    for stage in stages:
        if stage.device not in names:
            return f"stage device {stage.device!r} is not in the cluster"
        if stage.segment.start != expected:
            return f"stage on {stage.device} starts at unit {stage.segment.start}, expected {expected}"
        expected = stage.segment.end
    if expected != n:
        return f"the stages cover units [0,{expected}) but the model has {n} units"
    order = [stage.device for stage in stages]
    repeated = [device for device in order if device != edge and order.count(device) > 1]
    if repeated:
        return f"device {repeated[0]} appears more than once in the chain"
    if any(pos not in (0, len(order) - 1) for pos, device in enumerate(order) if device == edge):
        return f"the edge {edge} may run only the first and the last stage of the chain"
    if order == [edge, edge]:
        return f"the edge {edge} runs two adjacent stages; make them one"
    if pin.embed and order[0] != edge:
        return f"the edge {edge} must hold embed (unit 0); plan with --no-pin to lift this"
    if pin.head and order[-1] != edge:
        return f"the edge {edge} must hold head (unit {n - 1}); plan without --head-on-edge to lift this"
    for src, dst, cut, _ in hops(cluster, stages):
        if cluster.link(src, dst) is None:
            return f"no link from {src} to {dst} (needed at cut {cut}); add a [[link]] between them"
    return memory_problem(cluster, stages, w)


def memory_problem(cluster: Cluster, stages: tuple[Stage, ...], w: Workload) -> str:
    """The first device that cannot hold its stages with the KV cache of `w`, or ""."""
    for device, (weights, kv) in device_memory(cluster, stages, w).items():
        offered = cluster.device(device).memory_bytes
        if weights + kv > offered:
            return (
                f"{device} needs {gb(weights + kv)} ({gb(weights)} of weights + {gb(kv)} of KV cache) "
                f"but offers {gb(offered)}"
            )
    return ""


def served_workload(max_context: int, max_sessions: int) -> Workload:
    """The workload whose KV cache is what workers allocate when loading for serve: `max_sessions`
    slots of `max_context` tokens, whatever workload the plan was made for (memory only)."""
    return Workload(prompt_tokens=max(max_context - 1, 1), new_tokens=1, sessions=max_sessions)


def serving_problem(cluster: Cluster, stages: tuple[Stage, ...], max_context: int, max_sessions: int) -> str:
    """Why serving `stages` with `max_sessions` KV slots of `max_context` tokens does not fit, or ""."""
    problem = memory_problem(cluster, stages, served_workload(max_context, max_sessions))
    return f"{problem}, serving {max_sessions} session(s) of {max_context} tokens" if problem else ""
