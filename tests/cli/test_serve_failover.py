"""Which `partition serve` runs re-plan around a worker that stays away: a cluster file with every
device's profile, the plan's model and devices, no --no-replan and no --baseline. The same profiles,
read once, check the served memory (tests/cli/test_serve_memory.py)."""

import logging
from argparse import Namespace
from dataclasses import replace

from partition.cli.serve import _failover, _profiled_cluster
from partition.coordinator.replan import RECHECK_S, Failover
from tests.coordinator.plans import profiled_cluster, split_plan

STAGES = [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")]


def args(cluster, no_replan=False, plan_path="plan.json", baseline=None, recheck=None) -> Namespace:
    return Namespace(cluster=cluster, no_replan=no_replan, plan=plan_path, baseline=baseline, recheck=recheck)


def failover_of(serve_args: Namespace, plan, addresses: dict[str, str]):
    return _failover(serve_args, _profiled_cluster(serve_args, plan), addresses, None)


def test_a_profiled_cluster_file_gives_a_failover_and_no_replan_takes_it_away(smollm2, tmp_path):
    cluster = profiled_cluster(smollm2, tmp_path, {"server-a": "127.0.0.1:7001"}, {"server-a": 8.0})
    plan = split_plan(smollm2, STAGES)
    failover = failover_of(args(cluster), plan, {"server-a": "127.0.0.1:7001"})
    assert isinstance(failover, Failover) and failover.cluster.edge.name == "phone"
    assert failover.recheck_s == RECHECK_S  # without --recheck
    assert failover_of(args(cluster, recheck=0.0), plan, {}).recheck_s == 0.0  # every request looks
    assert failover_of(args(cluster, no_replan=True), plan, {}) is None
    assert failover_of(args(None), plan, {}) is None
    # a baseline is served to be measured as it is: no re-plan, but its memory is still checked
    baseline = args(cluster, baseline="even")
    assert _profiled_cluster(baseline, plan) is not None and failover_of(baseline, plan, {}) is None


def test_addresses_only_or_another_model_serve_without_replanning(smollm2, tmp_path, caplog):
    addresses_only = tmp_path / "addresses.toml"
    addresses_only.write_text('[[device]]\nname = "server-a"\nrole = "server"\naddress = "127.0.0.1:7001"\n')
    plan = split_plan(smollm2, STAGES)
    assert failover_of(args(addresses_only), plan, {}) is None

    cluster = profiled_cluster(smollm2, tmp_path, {}, {"server-a": 8.0})
    other_model = replace(plan, model=replace(plan.model, digest="sha256:" + "0" * 64))
    with caplog.at_level(logging.WARNING):
        assert failover_of(args(cluster), other_model, {}) is None
    assert "cannot re-plan around a lost worker" in caplog.text and "measured on model" in caplog.text
    assert "memory is not checked against --max-context" in caplog.text
