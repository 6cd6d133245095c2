"""The splits other systems use (plan), predicted with our cost model so a plan can show its gain.

- even: blocks split evenly over the edge and every server, in cluster-file order (vLLM's default).
- memory_proportional: blocks in proportion to each device's memory, as exo places them: devices by
  memory, largest first, so the last blocks and the head land on the device with the least memory
  (exo/topology/ring_memory_weighted_partitioning_strategy.py; its last shard holds the LM head). The
  edge, which runs only at either end of our chain, goes first when it has the most memory, else last.
- memory_proportional_edge_first: blocks in proportion to memory too, in cluster-file order, the edge
  first, and the head where it costs less: memory-proportional as favourable as it gets. Its shares are
  rounded by largest remainder, not at exo's cumulative floors, so a device may hold a block more or
  less than in memory_proportional.
- edge_only: the whole model on the edge.
- best_single_server: the blocks (the whole model with --no-pin) on the one server that does best.
The edge keeps embed in every baseline (unless --no-pin). In every baseline but memory_proportional the
head goes where it costs less, on the edge or on the last server returning the top K logits, as the
plan may place it. Each hop uses the codec the planner would pick.
"""

from __future__ import annotations

from partition.plan.cluster import Cluster
from partition.plan.codecs import CodecSpec
from partition.plan.costmodel import evaluate, with_best_codecs
from partition.plan.validate import chain_problem
from partition.types import Baseline, Pinning, Workload

BASELINES = (
    "even",
    "memory_proportional",
    "memory_proportional_edge_first",
    "edge_only",
    "best_single_server",
)


Placement = list[tuple[str, int, int]]  # (device, start, end) per stage, in chain order


def baselines(
    cluster: Cluster, w: Workload, codecs: tuple[CodecSpec, ...], pin: Pinning
) -> tuple[Baseline, ...]:
    even = _by_shares(cluster, [1.0] * len(cluster.devices))
    by_memory = _by_shares(cluster, [float(d.memory_bytes) for d in cluster.devices])
    return (
        _best(cluster, "even", _head_either_way(even, pin), w, codecs, pin),
        _predict(cluster, "memory_proportional", _largest_memory_first(cluster, pin), w, codecs, pin),
        _best(cluster, "memory_proportional_edge_first", _head_either_way(by_memory, pin), w, codecs, pin),
        _predict(cluster, "edge_only", [(cluster.edge.name, 0, cluster.model.n_units)], w, codecs, pin),
        _best_single_server(cluster, w, codecs, pin),
    )


def _predict(
    cluster: Cluster, name: str, placement: Placement, w: Workload, codecs, pin: Pinning
) -> Baseline:
    stages = with_best_codecs(cluster, placement, w, codecs)
    problem = chain_problem(cluster, stages, w, pin)
    if problem:
        return Baseline(name, (), None, problem)
    return Baseline(name, stages, evaluate(cluster, stages, w, codecs))


def _best(
    cluster: Cluster, name: str, placements: list[Placement], w: Workload, codecs, pin: Pinning
) -> Baseline:
    """The fastest feasible of `placements` under one name, or the first one's reason it cannot run."""
    candidates = [_predict(cluster, name, placement, w, codecs, pin) for placement in placements]
    feasible = [c for c in candidates if c.predicted is not None]
    if feasible:
        return min(feasible, key=lambda c: c.predicted.objective_s)
    return candidates[0]


def _head_either_way(placement: Placement, pin: Pinning) -> list[Placement]:
    """`placement` (the edge holding the head last), and unless the head is pinned, the same with the
    head on the last server instead."""
    if pin.head or len(placement) < 3:
        return [placement]
    *front, (server, start, _), (_, _, end) = placement
    return [placement, [*front, (server, start, end)]]


def _by_shares(cluster: Cluster, weights: list[float]) -> Placement:
    """Blocks split by largest remainder in proportion to `weights` (one per device, file order, edge
    first); the edge also holds embed and head; devices that get no block are left out."""
    n_blocks = cluster.model.n_blocks
    devices = [cluster.edge, *cluster.servers]
    edge_index = cluster.devices.index(cluster.edge)
    weights = [weights[edge_index]] + [
        w for d, w in zip(cluster.devices, weights, strict=True) if d.role == "server"
    ]
    shares = _largest_remainder(n_blocks, weights)
    n = n_blocks + 2
    placement = [(devices[0].name, 0, 1 + shares[0])] + _in_turn(devices[1:], shares[1:], 1 + shares[0])
    if len(placement) == 1:
        return [(devices[0].name, 0, n)]
    placement.append((devices[0].name, n - 1, n))
    return placement


def _largest_memory_first(cluster: Cluster, pin: Pinning) -> Placement:
    """exo's ring: devices by memory, largest first (ties in file order), each with the blocks from
    floor(n x its start fraction) to floor(n x its end fraction) of the memory; the first device with
    blocks also holds embed and the last the head. Here the edge runs only at either end of the chain,
    so it goes first when it has the most memory, else last (where exo's ring puts the device with the
    least). A unit pinned to the edge stays there instead."""
    n = cluster.model.n_units
    servers = sorted(cluster.servers, key=lambda d: -d.memory_bytes)
    edge_first = all(cluster.edge.memory_bytes >= d.memory_bytes for d in servers)
    devices = [cluster.edge, *servers] if edge_first else [*servers, cluster.edge]
    placement = _in_turn(devices, _cumulative_floor(cluster.model.n_blocks, devices), 1)  # unit 1: block.0
    edge = cluster.edge.name
    first, lo, hi = placement[0]
    if not pin.embed or first == edge:
        placement[0] = (first, 0, hi)
    else:
        placement.insert(0, (edge, 0, 1))
    last, lo, hi = placement[-1]
    if not pin.head or last == edge:
        placement[-1] = (last, lo, n)
    else:
        placement.append((edge, n - 1, n))
    return placement


def _in_turn(devices, shares: list[int], start: int) -> Placement:
    """Each device in turn holding its share of units from `start` on; devices with no share left out."""
    placement = []
    for device, share in zip(devices, shares, strict=True):
        if share:
            placement.append((device.name, start, start + share))
            start += share
    return placement


def _cumulative_floor(n_blocks: int, devices) -> list[int]:
    """Blocks per device as exo rounds them: boundaries at floor(n_blocks x cumulative memory fraction)
    (fractions to 5 decimals, the last boundary n_blocks)."""
    total = sum(d.memory_bytes for d in devices)
    bounds, cumulative = [0], 0
    for device in devices[:-1]:
        cumulative += device.memory_bytes
        bounds.append(int(round(cumulative / total, 5) * n_blocks))
    bounds.append(n_blocks)
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def _largest_remainder(total: int, weights: list[float]) -> list[int]:
    """`total` whole items split in proportion to `weights`, rounding by largest remainder."""
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _best_single_server(cluster: Cluster, w: Workload, codecs, pin: Pinning) -> Baseline:
    n, edge = cluster.model.n_units, cluster.edge.name
    lo = 1 if pin.embed else 0
    candidates = []
    for server in cluster.servers:
        front = [(edge, 0, lo)] if lo else []
        placements = [[*front, (server.name, lo, n - 1), (edge, n - 1, n)]]
        if not pin.head:
            placements.append([*front, (server.name, lo, n)])
        candidates += [_predict(cluster, "best_single_server", p, w, codecs, pin) for p in placements]
    feasible = [c for c in candidates if c.predicted is not None]
    if feasible:
        return min(feasible, key=lambda c: c.predicted.objective_s)
    if not candidates:
        return Baseline("best_single_server", (), None, "the cluster has no server")
    reasons = list(dict.fromkeys(c.infeasible for c in candidates))  # a server's two head placements
    return Baseline("best_single_server", (), None, "no server can: " + "; ".join(reasons[:3]))
