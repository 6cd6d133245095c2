"""deploy refuses a plan that does not fit the model on this machine, before loading anything."""

import dataclasses
import re

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


@pytest.mark.parametrize(
    ("max_context", "advice"),
    [(64, "serve with a larger --max-context (at most 8192, the model's)"), (10_000, "use a shorter prompt")],
)
def test_a_session_longer_than_the_context_says_what_can_help(smollm2, max_context, advice):
    from partition.coordinator.session import PipelineSession
    from partition.errors import ContextOverflowError

    deployment = deploy(split_plan(smollm2, [("phone", 0, 32, "raw")]), {}, max_context=max_context)
    try:
        with pytest.raises(ContextOverflowError, match=re.escape(advice)):
            PipelineSession(deployment, context=9000)
    finally:
        deployment.close()


def test_a_max_context_above_the_models_says_what_sessions_get(smollm2, caplog):
    deployment = deploy(split_plan(smollm2, [("phone", 0, 32, "raw")]), {}, max_context=10_000)
    deployment.close()
    assert deployment.max_context == 8192
    assert (
        "max context 10000 is more than 'smollm2-135m' holds: sessions get at most 8192 tokens" in caplog.text
    )
