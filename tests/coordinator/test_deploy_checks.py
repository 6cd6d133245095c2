"""deploy refuses a plan that does not fit the model on this machine, before loading anything."""

import dataclasses

import pytest

from partition.coordinator.deploy import DeployError, deploy
from partition.types import ModelRef, Segment, Stage
from tests.coordinator.plans import split_plan


def test_a_plan_for_another_block_count_is_refused_with_what_to_do(smollm2):
    plan = split_plan(smollm2, [("phone", 0, 32, "raw")])
    other = dataclasses.replace(
        plan,
        model=ModelRef(smollm2.name, smollm2.digest, 38),
        stages=(Stage("phone", Segment(0, 40), "raw"),),
    )
    with pytest.raises(
        DeployError, match="the plan splits 38 blocks, but 'smollm2-135m' has 30; re-run `partition plan`"
    ):
        deploy(other, {})
