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
from partition.plan.solver import Solution


def without(cluster: Cluster, name: str) -> Cluster:
    """The cluster with device `name` and its links removed."""
    devices = tuple(device for device in cluster.devices if device.name != name)
    links = tuple(link for link in cluster.links if name not in (link.src, link.dst))
    return Cluster(devices, links)


def leave_out_needless(
    cluster: Cluster,
    optimum: Solution,
    used: Callable[[Cluster, Solution], set[str]],
    solve_on: Callable[[Cluster], Solution | None],
    min_gain: float,
) -> tuple[Cluster, Solution]:
    """A smaller cluster, found greedily, whose best chain runs on fewer servers and is within
    `min_gain` of `optimum`; the cluster itself and `optimum` when there is none.

    `used(cluster, solution)`: the servers a solution's chain runs on; `solve_on(cluster)`: the best
    chain on a cluster, or None. A removal counts only if the chain then uses fewer servers (not
    another server in place of the one removed)."""
    limit = optimum.objective * (1 + min_gain)
    current, solution = cluster, optimum
    while min_gain > 0:
        servers = used(current, solution)
        options = []
        for name in sorted(servers):
            reduced = without(current, name)
            candidate = solve_on(reduced)
            if candidate is not None and candidate.objective <= limit:
                fewer = len(used(reduced, candidate)) < len(servers)
                if fewer:
                    options.append((candidate.objective, name, reduced, candidate))
        if not options:
            break
        _, _, current, solution = min(options, key=lambda option: option[:2])
    return current, solution
