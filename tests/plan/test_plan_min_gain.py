"""A server must earn its place: with --min-gain F the plan leaves out servers that save less than F
of the objective, stays within F of the exact optimum, and says what it left out."""

import dataclasses
import random

import pytest
from plan_kit import random_case

from partition.artifacts import plan_from_json, plan_to_json
from partition.errors import ConfigError, InfeasiblePlanError
from partition.plan import make_plan
from partition.plan.report import format_plan
from partition.plan.synthetic import star_cluster, synthetic_profile
from partition.types import Fit, Workload

WORKLOAD = Workload(prompt_tokens=40, new_tokens=32)


def cluster_with_faster_head(head_speedup: float, spares: int = 0):
    """A slow phone and two servers: server-b slower at blocks, but faster at the head by `head_speedup`;
    and `spares` more servers alike server-b (as a `count` group gives)."""
    server_b = synthetic_profile("server-b", speed=0.9)
    head = synthetic_profile("server-b").head
    faster = [
        Fit(f.c0 / head_speedup, f.c1 / head_speedup, f.c2 / head_speedup)
        for f in (head.prefill, head.decode)
    ]
    server_b = dataclasses.replace(
        server_b, head=dataclasses.replace(head, prefill=faster[0], decode=faster[1])
    )
    return star_cluster(
        synthetic_profile("phone", speed=0.25),
        1.0,
        [
            ("server-a", synthetic_profile("server-a"), 8.0),
            ("server-b", server_b, 8.0),
            *((f"server-b{i}", server_b, 8.0) for i in range(spares)),
        ],
        edge_link=(50.0, 10.0),
        server_link=(10_000.0, 0.05),
    )


def devices(plan) -> set[str]:
    return {stage.device for stage in plan.stages}


def test_a_server_that_saves_less_than_min_gain_is_left_out():
    cluster = cluster_with_faster_head(1.05)
    exact = make_plan(cluster, WORKLOAD)
    assert devices(exact) == {"phone", "server-a", "server-b"}  # the optimum hands server-b the head

    plan = make_plan(cluster, WORKLOAD, min_gain=0.01)
    assert devices(plan) == {"phone", "server-a"} and "server-b" in plan.unused
    assert plan.left_out == ("server-b",) and plan.optimum_s == pytest.approx(exact.predicted.objective_s)
    assert exact.predicted.objective_s < plan.predicted.objective_s < exact.predicted.objective_s * 1.01
    assert plan.baselines == exact.baselines  # the baselines are those of the whole cluster
    report = format_plan(plan, cluster)
    assert "left out: server-b (the exact optimum, with it, is 0.1" in report
    assert "unused:" not in report  # server-b is not idle for want of a faster chain
    again = plan_from_json(plan_to_json(plan))
    assert (again.left_out, again.min_gain, again.optimum_s) == (plan.left_out, 0.01, plan.optimum_s)


def test_a_spare_server_alike_does_not_stand_in_for_the_one_left_out():
    cluster = cluster_with_faster_head(1.05, spares=2)
    exact = make_plan(cluster, WORKLOAD)
    assert len(devices(exact)) == 3  # the head on one of the servers alike
    plan = make_plan(cluster, WORKLOAD, min_gain=0.01)
    assert devices(plan) == {"phone", "server-a"} and len(plan.left_out) == 1
    assert plan.predicted.objective_s < exact.predicted.objective_s * 1.01


def test_a_server_that_saves_more_keeps_its_place():
    cluster = cluster_with_faster_head(1.3)
    plan = make_plan(cluster, WORKLOAD, min_gain=0.01)
    assert plan.stages == make_plan(cluster, WORKLOAD).stages and not plan.left_out
    assert devices(plan) == {"phone", "server-a", "server-b"}


def test_min_gain_bounds_the_loss_and_never_adds_devices():
    rng = random.Random(7)
    compared = left_out_somewhere = 0
    while compared < 60:
        cluster, workload, codecs, pin = random_case(rng)
        try:
            exact = make_plan(cluster, workload, codecs, pin)
        except InfeasiblePlanError:
            continue
        compared += 1
        for min_gain in (0.005, 0.05, 0.3):
            plan = make_plan(cluster, workload, codecs, pin, min_gain=min_gain)
            assert plan.predicted.objective_s <= exact.predicted.objective_s * (1 + min_gain) * (1 + 1e-9)
            assert len(devices(plan)) <= len(devices(exact))
            assert set(plan.left_out) == devices(exact) - devices(plan)
            assert (plan.optimum_s > 0) == bool(plan.left_out)
            left_out_somewhere += bool(plan.left_out)
    assert left_out_somewhere >= 10  # the cases exercise the rule, not only the exact optimum


def test_min_gain_must_be_a_fraction():
    with pytest.raises(ConfigError, match="--min-gain 1.5: give a fraction"):
        make_plan(cluster_with_faster_head(1.0), WORKLOAD, min_gain=1.5)
