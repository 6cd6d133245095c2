"""Which of a plan's stages run in the coordinator and which on workers, and plans that cannot run."""

from dataclasses import replace

import pytest

from partition.coordinator.topology import split_plan as topology_of
from partition.errors import ConfigError
from tests.coordinator.plans import split_plan

ROUND_TRIP = [("phone", 0, 6, "raw"), ("server-a", 6, 20, "fp16"), ("phone", 20, 32, "raw")]


def test_the_edges_first_and_last_stages_run_here_and_the_rest_on_workers(smollm2):
    topology = topology_of(split_plan(smollm2, ROUND_TRIP))
    assert (topology.front.device, topology.tail.device) == ("phone", "phone")
    assert [s.device for s in topology.remote] == ["server-a"] and topology.input_codec == "raw"


def test_a_plan_whose_edge_is_another_device_says_which_device_its_chain_starts_and_ends_on(smollm2):
    plan = replace(split_plan(smollm2, ROUND_TRIP), edge="server-b")
    with pytest.raises(ConfigError) as error:
        topology_of(plan)
    assert "names 'server-b' as its edge" in str(error.value)
    assert "starts and ends on 'phone'" in str(error.value) and "set \"edge\" to 'phone'" in str(error.value)


def test_a_server_twice_in_the_chain_is_refused_with_what_to_do(smollm2):
    plan = split_plan(smollm2, [("phone", 0, 6, "raw"), ("server-a", 6, 12, "raw"), ("server-b", 12, 20, "raw"),
                                ("server-a", 20, 32, "raw")])  # fmt: skip
    with pytest.raises(ConfigError, match=r"uses a device twice .*'server-a'.*re-run `partition plan`"):
        topology_of(plan)
