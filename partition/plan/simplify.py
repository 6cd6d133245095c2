"""A device must earn its place in the chain (plan): leave out those that save less than `min_gain`.

The solver is exact over the profiles it is given, and profiles carry noise: two servers measured
alike differ by a fraction of a percent, and the optimum may then hand one of them a single unit for
a gain no measurement could confirm. Each device in the chain costs a network hop that can stall, a
process that can fail, and memory. So after the exact solve, devices the optimum uses are left out
one at a time, cheapest first, while the plan without them stays within `min_gain` of the optimum
(measured against the optimum, so leaving several out never adds up to more than `min_gain`).
The chains tried without a device run on the devices the optimum uses, less those left out: a spare
server alike the one left out (another of a `count` group) would otherwise take its place, and the
chain would need as many servers as before.
With `min_gain = 0` the exact optimum stands.
"""

from __future__ import annotations

from collections.abc import Callable

from partition.plan.cluster import Cluster
from partition.types import Stage

Chain = tuple[float, tuple[Stage, ...]]  # (objective in seconds, stages in chain order)


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

    `best_chain(cluster)`: the optimal chain on a cluster, or None. Each try runs on the servers the
    chain so far uses, less one: fewer servers, never another in place of the one left out."""
    edge, limit = cluster.edge.name, optimum[0] * (1 + min_gain)
    servers = {device.name for device in cluster.servers}
    chosen = optimum
    while min_gain > 0:
        used = servers_of(chosen, edge)
        options = []
        for name in sorted(used):
            candidate = best_chain(cluster.without(servers - used | {name}))
            if candidate and candidate[0] <= limit:
                options.append((candidate[0], name, candidate))
        if not options:
            break
        _, _, chosen = min(options, key=lambda option: option[:2])
    return chosen
