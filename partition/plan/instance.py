"""The solver's view of a cluster (plan): device kinds and cost tables, built from the cost model.

Devices that are interchangeable (same role, profile and memory, and the same links to every other
device) form one kind; the solver then counts devices per kind instead of enumerating which of them
to use, which is what keeps 64 devices of 4 kinds tractable.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from partition.plan.cluster import Cluster, Device
from partition.plan.codecs import CodecSpec
from partition.plan.costmodel import (
    best_hop,
    cut_bytes_per_token,
    shared_weight_bytes,
    unit_memory_bytes,
    unit_objective_s,
    unit_step_s,
)
from partition.types import Pinning, Workload


@dataclass(frozen=True)
class KindTable:
    """One kind of device: its members and prefix sums of its per-unit costs (index u = units [0, u))."""

    devices: tuple[str, ...]  # member device names, in cluster-file order
    cap: int  # bytes of memory each member offers
    cost: tuple[float, ...]  # prefix sums of each unit's additive share of the objective, seconds
    item: tuple[float, ...]  # prefix sums of one session's decode step per unit, seconds
    mem: tuple[int, ...]  # prefix sums of weights + KV cache per unit, bytes
    # bytes the units count twice (tied embeddings) that a device holding both ends keeps once: in one
    # segment of all units, or in the edge's front and tail pieces
    tied_saves: int = 0


@dataclass(frozen=True)
class HopOption:
    """The best way to send the tensor at one cut from a device of one kind to one of another."""

    cost: float  # additive share of the objective, seconds
    item: float  # the hop's time per one-session step as a pipeline resource, seconds
    codec: str  # codec achieving it


@dataclass(frozen=True)
class Instance:
    n: int  # units of the model
    kinds: tuple[KindTable, ...]  # kinds[0] is the edge, the only device of its kind
    hops: dict[
        tuple[int, int], tuple[HopOption, ...]
    ]  # (from kind, to kind) -> option per cut 0..n; absent: no link
    pin: Pinning  # the units the edge must hold
    weight: float  # factor on the bottleneck: S - 1 under the throughput objective, 0 under latency


def build_instance(
    cluster: Cluster,
    w: Workload,
    codecs: tuple[CodecSpec, ...],
    pin: Pinning,
    memory: Workload | None = None,
) -> Instance:
    """The tables of `w`'s costs; memory holds the KV cache of `memory` (default `w`)."""
    n = cluster.model.n_units
    kinds = device_kinds(cluster)
    held = memory or w
    tables = tuple(_kind_table(cluster.device(members[0]), members, w, held, n) for members in kinds)
    hops: dict[tuple[int, int], tuple[HopOption, ...]] = {}
    for (ka, a), (kb, b) in itertools.product(enumerate(kinds), repeat=2):
        src = a[0]
        dst = next((name for name in b if name != src), None)
        link = cluster.link(src, dst) if dst is not None else None
        if link is None:
            continue
        profile, receiver = cluster.device(src).profile, cluster.device(dst).profile
        options = []
        for cut in range(n + 1):
            per_token = cut_bytes_per_token(profile.unit_cost(cut - 1) if cut > 0 else None)
            hop = best_hop(link, cut, n, per_token, codecs, w, profile, receiver)
            options.append(HopOption(hop.objective_s(w), hop.step_s, hop.codec))
        hops[(ka, kb)] = tuple(options)
    weight = float(w.sessions - 1) if w.objective == "throughput" else 0.0
    return Instance(n, tables, hops, pin, weight)


def _kind_table(device: Device, members: tuple[str, ...], w: Workload, held: Workload, n: int) -> KindTable:
    costs = [device.profile.unit_cost(u) for u in range(n)]
    return KindTable(
        devices=members,
        cap=device.memory_bytes,
        cost=tuple(itertools.accumulate((unit_objective_s(c, w) for c in costs), initial=0.0)),
        item=tuple(itertools.accumulate((unit_step_s(c, w) for c in costs), initial=0.0)),
        mem=tuple(itertools.accumulate((unit_memory_bytes(c, held) for c in costs), initial=0)),
        tied_saves=shared_weight_bytes(device.profile, (0, n)),
    )


def device_kinds(cluster: Cluster) -> list[tuple[str, ...]]:
    """Classes of interchangeable devices, the edge's class first.

    Start from (role, profile, memory) and refine by the links to each class until stable; then keep a
    class only where every pair of classes is linked uniformly, so any permutation of a class's members
    leaves the cluster unchanged. Classes that are not uniform fall apart into single devices.
    """
    names = [device.name for device in cluster.devices]
    devices = {device.name: device for device in cluster.devices}

    def link_key(src: str, dst: str) -> tuple[float, ...]:
        link = cluster.link(src, dst)
        return () if link is None else (link.latency_s, link.bandwidth_Bps)  # (): not connected

    initial = {
        name: (devices[name].role, devices[name].profile, devices[name].memory_bytes) for name in names
    }
    label = _relabel(initial)
    while True:
        signature = {
            name: (
                label[name],
                tuple(sorted((label[o], link_key(name, o), link_key(o, name)) for o in names if o != name)),
            )
            for name in names
        }
        refined = _relabel(signature)
        if len(set(refined.values())) == len(set(label.values())):
            break
        label = refined
    classes: dict[int, list[str]] = {}
    for name in names:
        classes.setdefault(label[name], []).append(name)
    groups = list(classes.values())
    while True:
        broken = next((g for g in groups if len(g) > 1 and not _uniform(g, groups, link_key)), None)
        if broken is None:
            break
        groups.remove(broken)
        groups.extend([name] for name in broken)
    edge = cluster.edge.name
    groups.sort(key=lambda g: (edge not in g, names.index(g[0])))
    return [tuple(g) for g in groups]


def _relabel(keys: dict) -> dict[str, int]:
    ids: dict = {}
    return {name: ids.setdefault(key, len(ids)) for name, key in keys.items()}


def _uniform(group: list[str], groups: list[list[str]], link_key) -> bool:
    for other in groups:
        for direction in (0, 1):
            seen = {
                link_key(a, b) if direction == 0 else link_key(b, a) for a in group for b in other if a != b
            }
            if len(seen) > 1:
                return False
    return True
