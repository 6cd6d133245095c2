"""Table-driven plans on synthetic SmolLM2-sized devices: where the blocks go and why."""

import pytest

from partition.errors import InfeasiblePlanError
from partition.plan import make_plan
from partition.plan.cluster import GB, Cluster, Device
from partition.plan.synthetic import link_pair, star_cluster, synthetic_profile
from partition.types import TOP_K_LOGITS_BYTES, Pinning, Workload

W = Workload(prompt_tokens=128, new_tokens=64)


def blocks_on(plan, device: str) -> int:
    n_blocks = plan.model.n_blocks
    return sum(len(s.segment.blocks(n_blocks)) for s in plan.stages if s.device == device)


def two_devices(edge_speed: float, server_speed: float, mbps: float, latency_ms: float = 5) -> Cluster:
    edge = synthetic_profile("phone", speed=edge_speed)
    return star_cluster(
        edge, 4.0, [("server", synthetic_profile("server", speed=server_speed), 16.0)], (mbps, latency_ms)
    )


@pytest.mark.parametrize(
    ("edge_speed", "server_speed", "mbps", "server_blocks"),
    [
        (0.2, 10, 1000, 30),  # slow edge, fast link: every block moves to the server
        (0.2, 10, 0.05, 0),  # a link slower than the edge: everything stays on the edge
        (5.0, 1.0, 1000, 0),  # the edge is the fastest device
    ],
)
def test_where_blocks_go(edge_speed, server_speed, mbps, server_blocks):
    plan = make_plan(two_devices(edge_speed, server_speed, mbps), W, pin=Pinning(head=True))
    assert blocks_on(plan, "server") == server_blocks
    assert plan.stages[0].segment.start == 0 and plan.stages[0].device == "phone"
    assert plan.stages[-1].device == "phone"  # pinned: head and sampling on the edge


@pytest.mark.parametrize(
    ("edge_speed", "mbps", "head_on"),
    [
        (0.2, 1000, "server"),  # the slow edge hands the head off: 512 B of top logits come back
        (0.2, 0.05, "phone"),  # a link slower than the edge: nothing leaves it
        (5.0, 1000, "phone"),  # the edge is the fastest device
    ],
)
def test_the_head_goes_where_it_costs_less(edge_speed, mbps, head_on):
    plan = make_plan(two_devices(edge_speed, 10 if head_on == "server" else 1.0, mbps), W)
    n = plan.model.n_units
    assert plan.stages[0].device == "phone" and plan.stages[0].segment.start == 0  # embed stays pinned
    assert plan.stages[-1].device == head_on and plan.stages[-1].segment.end == n
    if head_on == "server":
        back = plan.predicted.links[-1]
        assert (back.src, back.dst, back.cut, back.codec) == ("server", "phone", n, "top-k")
        assert back.decode_bytes == TOP_K_LOGITS_BYTES
        assert plan.stages[-1].codec_out == "raw"  # what the stage sends when a step asks for every logit
        on_edge = make_plan(two_devices(edge_speed, 10, mbps), W, pin=Pinning(head=True))
        assert plan.predicted.objective_s < on_edge.predicted.objective_s


def test_less_memory_means_a_smaller_share():
    edge = synthetic_profile("phone", speed=0.1)
    a_fast, b_slower = synthetic_profile("a", speed=10), synthetic_profile("b", speed=5)
    shares = []
    for memory_gb in (0.4, 0.3, 0.2, 0.1):
        servers = [("a", a_fast, memory_gb), ("b", b_slower, 0.3)]
        cluster = star_cluster(edge, 0.3, servers, (1000, 1), (10000, 0.2))
        shares.append(blocks_on(make_plan(cluster, W, pin=Pinning(head=True)), "a"))
    assert shares == sorted(shares, reverse=True) and len(set(shares)) == 4, shares


def test_identical_servers_share_a_model_too_big_for_one():
    edge = synthetic_profile("phone", speed=0.1)
    gpu = synthetic_profile("gpu", speed=10)
    servers = [(f"gpu-{i}", gpu, 0.2) for i in range(5)]  # each holds about 13 blocks
    plan = make_plan(star_cluster(edge, 0.6, servers, (1000, 1), (10000, 0.1)), W)
    used = [s.device for s in plan.stages if s.device != "phone"]
    assert len(used) == 3 and blocks_on(plan, "phone") == 0
    assert sorted(plan.unused) == sorted(set(name for name, _, _ in servers) - set(used))


def test_no_pin_lets_a_server_hold_embed_and_head():
    cluster = two_devices(0.02, 10, 10000, latency_ms=0.5)
    pinned = make_plan(cluster, W, pin=Pinning(head=True))
    free = make_plan(cluster, W, pin=Pinning(embed=False))
    assert [s.device for s in pinned.stages] == ["phone", "server", "phone"]
    assert [s.device for s in free.stages] == ["server"]
    assert free.predicted.objective_s < pinned.predicted.objective_s


def test_plan_beats_or_ties_every_feasible_baseline():
    cluster = two_devices(0.5, 3, 100)
    plan = make_plan(cluster, W)
    for baseline in plan.baselines:
        assert baseline.predicted is not None, baseline.infeasible
        assert plan.predicted.objective_s <= baseline.predicted.objective_s * (1 + 1e-9)


def test_throughput_objective_balances_the_pipeline():
    edge = synthetic_profile("phone", speed=2)
    srv = synthetic_profile("srv", speed=2)
    cluster = star_cluster(edge, 4.0, [("a", srv, 4.0), ("b", srv, 4.0)], (10000, 0.1), (10000, 0.1))
    latency = make_plan(cluster, Workload(128, 64, sessions=8))
    throughput = make_plan(cluster, Workload(128, 64, sessions=8, objective="throughput"))
    assert len(latency.stages) == 1  # one fast device: hops only add time to a request
    assert len({s.device for s in throughput.stages}) == 3  # eight micro-batches keep three devices busy
    assert throughput.predicted.tokens_per_s > 2 * latency.predicted.tokens_per_s


@pytest.mark.parametrize(
    ("edge_gb", "server_gb", "block_gb", "linked", "message"),
    [
        (
            0.1,
            16,
            None,
            True,
            r"the edge phone must hold embed, which needs 0.1\d GB, but it offers 0.10 GB",
        ),
        (
            0.3,
            0.1,
            None,
            True,
            r"the model needs 0.6\d GB .* devices reachable from the edge offer 0.40 GB; add a server",
        ),
        (
            0.3,
            16,
            None,
            False,
            r"needs 0.6\d GB .* the edge phone offers 0.30 GB, and no server is linked to it",
        ),
        (
            1.0,
            1.0,
            2.0,
            True,
            r"one block needs 2.00 GB .* but the largest device \(phone\) offers 1.00 GB; plan fewer --sessions",
        ),
    ],
)
def test_infeasible_clusters_name_the_constraint_and_the_shortfall(
    edge_gb, server_gb, block_gb, linked, message
):
    extra = {} if block_gb is None else {"block_weight_bytes": int(block_gb * GB)}
    edge, server = synthetic_profile("phone", **extra), synthetic_profile("server", **extra)
    devices = (
        Device("phone", "edge", edge, int(edge_gb * GB)),
        Device("server", "server", server, int(server_gb * GB)),
    )
    links = link_pair("phone", "server", 100, 1) if linked else ()
    with pytest.raises(InfeasiblePlanError, match=message):
        make_plan(Cluster(devices, links), W)


def test_a_plan_from_a_search_past_its_limit_says_it_is_not_proven_optimal(monkeypatch, caplog):
    """Six small servers profiled one by one (no two alike, so six kinds): held to two partial chains
    per cut, the search returns a valid plan and the planner says it is the best found, not proven."""
    import partition.plan.solver as solver

    servers = [(f"s{i}", synthetic_profile(f"s{i}", speed=10 * (1 + i / 100)), 0.08) for i in range(6)]
    cluster = star_cluster(synthetic_profile("phone", 0.3), 0.3, servers, (100, 5), (1000, 0.5))
    exact = make_plan(cluster, Workload(128, 128))
    assert "not proven optimal" not in caplog.text
    monkeypatch.setattr(solver, "FRONT_LIMIT", 2)
    held = make_plan(cluster, Workload(128, 128))
    assert "the plan is the best found, not proven optimal" in caplog.text
    assert held.predicted.objective_s >= exact.predicted.objective_s * (1 - 1e-9)
    assert sum(len(s.segment) for s in held.stages) == cluster.model.n_units


def test_a_workload_past_the_lengths_a_profile_was_timed_at_is_named_with_the_lengths_to_profile(caplog):
    from dataclasses import replace

    timed = replace(synthetic_profile("server", 4.0), prefill_tokens_max=256, context_tokens_max=1024)
    cluster = star_cluster(
        synthetic_profile("phone", 0.3), 2.0, [("server", timed, 8.0)], (100, 5), (1000, 0.5)
    )
    make_plan(cluster, Workload(256, 769))  # every prompt and context as timed: nothing to say
    assert "extrapolated" not in caplog.text
    make_plan(cluster, Workload(2048, 64))
    assert (
        "the profiles of server (prompts of at most 256 tokens and contexts of at most 1024) were timed "
        "short of this workload's 2048-token prompt and 2111-token context: its times are extrapolated"
    ) in caplog.text
    assert "--prefill-lengths reaching 2048 and --context-lengths reaching 2111" in caplog.text
    assert "phone" not in caplog.text  # a profile that does not say what it timed is not guessed at
    caplog.clear()
    make_plan(cluster, Workload(128, 1024))  # the prompt was timed, the context was not: only that is named
    assert "short of this workload's 1151-token context: its times" in caplog.text
    assert "profile again with --context-lengths reaching 1151" in caplog.text
    assert "--prefill-lengths" not in caplog.text
