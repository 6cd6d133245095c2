"""A device must earn its place in the chain (plan): leave out those that save less than `min_gain`.

The solver is exact over the profiles it is given, and profiles carry noise: two servers measured
alike differ by a fraction of a percent, and the optimum may then hand one of them a single unit for
a gain no measurement could confirm. Each device in the chain costs a network hop that can stall, a
process that can fail, and memory. So after the exact solve, devices the optimum uses are left out
one at a time, cheapest first, while the plan without them stays within `min_gain` of the optimum
(measured against the optimum, so leaving several out never adds up to more than `min_gain`).
A device is left out only when the chain then needs fewer servers: trading one server for another
alike gains nothing.
With `min_gain = 0` the exact optimum stands.
"""

from __future__ import annotations

from collections.abc import Callable

from partition.plan.cluster import Cluster
from partition.types import Stage

Chain = tuple[float, tuple[Stage, ...]]  # (objective in seconds, stages in chain order)


def without(cluster: Cluster, name: str) -> Cluster:
    """The cluster with device `name` and its links removed."""
    devices = tuple(device for device in cluster.devices if device.name != name)
    links = tuple(link for link in cluster.links if name not in (link.src, link.dst))
    return Cluster(devices, links)


def servers_of(chain: Chain, edge: str) -> set[str]:
    return {stage.device for stage in chain[1]} - {edge}


def leave_out_needless(
    cluster: Cluster,
    optimum: Chain,
    best_chain: Callable[[Cluster], Chain | None],
    min_gain: float,
) -> Chain:
    """The best chain, found greedily on smaller clusters, that runs on fewer servers than `optimum`
    and is within `min_gain` of it; `optimum` itself when there is none.

    `best_chain(cluster)`: the optimal chain on a cluster, or None. A removal counts only if the chain
    then uses fewer servers (not another server in place of the one removed)."""
    edge, limit = cluster.edge.name, optimum[0] * (1 + min_gain)
    current, chosen = cluster, optimum
    while min_gain > 0:
        used = servers_of(chosen, edge)
        options = []
        for name in sorted(used):
            reduced = without(current, name)
            candidate = best_chain(reduced)
            if candidate and candidate[0] <= limit and len(servers_of(candidate, edge)) < len(used):
                options.append((candidate[0], name, reduced, candidate))
        if not options:
            break
        _, _, current, chosen = min(options, key=lambda option: option[:2])
    return chosen
