"""Where each baseline puts the units: the splits other systems would make of the same cluster."""

import pytest

from partition.plan import make_plan
from partition.plan.synthetic import star_cluster, synthetic_profile
from partition.types import Pinning, Workload

W = Workload(prompt_tokens=40, new_tokens=32)
N = 32  # SmolLM2: embed, 30 blocks, head


def wifi_edge_like(edge_gb: float = 1.0, a_gb: float = 8.0, b_gb: float = 8.0):
    """A slow edge behind a slow link, two fast servers: the lab's wifi-edge in synthetic profiles."""
    edge = synthetic_profile("edge", speed=0.25)
    servers = [("server-a", synthetic_profile("server-a", speed=1.0), a_gb)]
    servers.append(("server-b", synthetic_profile("server-b", speed=1.0), b_gb))
    return star_cluster(edge, edge_gb, servers, (50, 10), (1000, 0.5))


def stages_of(plan, name: str) -> list[tuple[str, int, int]]:
    baseline = next(b for b in plan.baselines if b.name == name)
    assert baseline.predicted is not None, baseline.infeasible
    return [(s.device, s.segment.start, s.segment.end) for s in baseline.stages]


@pytest.mark.parametrize(
    ("memory_gb", "pin", "expected"),
    [
        # exo's ring: largest memory first (ties in file order), so the 1 GB edge takes the last 2 blocks
        # (boundaries at floor(30 x 8/17) = 14 and floor(30 x 16/17) = 28) and the head; the edge keeps
        # embed, pinned
        ((1, 8, 8), Pinning(), [("edge", 0, 1), ("server-a", 1, 15), ("server-b", 15, 29), ("edge", 29, N)]),
        # without the pin the first server takes embed, as exo's first shard does
        ((1, 8, 8), Pinning(embed=False), [("server-a", 0, 15), ("server-b", 15, 29), ("edge", 29, N)]),
        # more memory on server-b puts it first; boundaries at floor(30 x 8/13) = 18, floor(30 x 12/13) = 27
        ((1, 4, 8), Pinning(), [("edge", 0, 1), ("server-b", 1, 19), ("server-a", 19, 28), ("edge", 28, N)]),
        # an edge between the servers in memory still runs last: it can only end the chain
        ((4, 8, 1), Pinning(), [("edge", 0, 1), ("server-a", 1, 19), ("server-b", 19, 21), ("edge", 21, N)]),
        # the edge with the most memory goes first and holds embed with its blocks; the head follows the
        # last shard onto server-b
        ((8, 1, 1), Pinning(), [("edge", 0, 25), ("server-a", 25, 28), ("server-b", 28, N)]),
        # ... unless the head is pinned to the edge
        (
            (8, 1, 1),
            Pinning(head=True),
            [("edge", 0, 25), ("server-a", 25, 28), ("server-b", 28, 31), ("edge", 31, N)],
        ),
    ],
)
def test_memory_proportional_is_exos_ring(memory_gb, pin, expected):
    plan = make_plan(wifi_edge_like(*memory_gb), W, pin=pin)
    assert stages_of(plan, "memory_proportional") == expected


def test_memory_proportional_edge_first_keeps_the_shares_and_moves_the_head_where_it_costs_less():
    plan = make_plan(wifi_edge_like(), W)
    exo = stages_of(plan, "memory_proportional")
    edge_first = stages_of(plan, "memory_proportional_edge_first")
    blocks = {device: 0 for device, _, _ in exo}
    for device, start, end in exo:
        blocks[device] += len(range(max(start, 1), min(end, N - 1)))
    assert blocks == {"edge": 2, "server-a": 14, "server-b": 14}
    # the edge's 2 blocks come first; the slow edge hands the head to the last server
    assert edge_first == [("edge", 0, 3), ("server-a", 3, 17), ("server-b", 17, N)]
    by_name = {b.name: b.predicted.tpot_s for b in plan.baselines}
    # the head on a quarter-speed edge costs more than its top logits crossing the link
    assert by_name["memory_proportional"] > by_name["memory_proportional_edge_first"]
    assert plan.predicted.tpot_s <= by_name["memory_proportional_edge_first"]


def test_a_single_server_that_cannot_run_says_each_reason_once():
    from partition.plan.cluster import Cluster

    linked = wifi_edge_like()
    # server-b keeps its links, server-a has none: its two head placements fail for one reason
    cluster = Cluster(linked.devices, tuple(x for x in linked.links if "server-a" not in (x.src, x.dst)))
    plan = make_plan(cluster.replace_memory("server-b", 2**20), W)  # and server-b holds too little
    best = next(b for b in plan.baselines if b.name == "best_single_server")
    assert best.predicted is None
    assert best.infeasible.count("no link from edge to server-a") == 1, best.infeasible
