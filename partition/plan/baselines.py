"""The splits other systems use (plan), predicted with our cost model so a plan can show its gain.

- even: blocks split evenly over the edge and every server, in cluster-file order (vLLM's default).
- memory_proportional: blocks in proportion to each device's memory (exo, llama.cpp RPC).
- edge_only: the whole model on the edge.
- best_single_server: the blocks (the whole model with --no-pin) on the one server that does best.
The edge keeps embed in every baseline (but the last with --no-pin); the head goes where it costs
less, on the edge or on the last server returning the top K logits, as the plan may place it; and each
hop uses the codec the planner would pick. So the comparison isolates the split of the blocks.
"""

from __future__ import annotations

from partition.plan.cluster import Cluster
from partition.plan.codecs import CodecSpec
from partition.plan.costmodel import evaluate, with_best_codecs
from partition.plan.validate import chain_problem
from partition.types import Baseline, Pinning, Workload

BASELINES = ("even", "memory_proportional", "edge_only", "best_single_server")


Placement = list[tuple[str, int, int]]  # (device, start, end) per stage, in chain order


def baselines(
    cluster: Cluster, w: Workload, codecs: tuple[CodecSpec, ...], pin: Pinning
) -> tuple[Baseline, ...]:
    even = _by_shares(cluster, [1.0] * len(cluster.devices))
    by_memory = _by_shares(cluster, [float(d.memory_bytes) for d in cluster.devices])
    return (
        _best(cluster, "even", _head_either_way(even, pin), w, codecs, pin),
        _best(cluster, "memory_proportional", _head_either_way(by_memory, pin), w, codecs, pin),
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
    total = sum(weights)
    exact = [n_blocks * w / total for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(devices)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: n_blocks - sum(shares)]:
        shares[i] += 1
    n = n_blocks + 2
    placement = [(devices[0].name, 0, 1 + shares[0])]
    start = 1 + shares[0]
    for device, share in zip(devices[1:], shares[1:], strict=True):
        if share:
            placement.append((device.name, start, start + share))
            start += share
    if len(placement) == 1:
        return [(devices[0].name, 0, n)]
    placement.append((devices[0].name, n - 1, n))
    return placement


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
    return Baseline(
        "best_single_server", (), None, "no server can: " + "; ".join(c.infeasible for c in candidates[:3])
    )
