"""Serving a baseline of a plan file: its own plan id, its stages and predictions, clear errors."""

import pytest

from partition.errors import ConfigError
from partition.plan import make_plan
from partition.plan.variants import baseline_plan
from tests.plan.test_plan_planner import W, two_devices


def test_baseline_plan_takes_the_baselines_stages_and_a_new_id():
    plan = make_plan(two_devices(0.2, 10, 1000), W)
    for baseline in plan.baselines:
        if baseline.predicted is None:
            continue
        variant = baseline_plan(plan, baseline.name)
        assert variant.stages == baseline.stages and variant.predicted == baseline.predicted
        assert variant.plan_id != plan.plan_id and variant.epoch == plan.epoch
        assert variant.model == plan.model and variant.edge == plan.edge
    ids = {baseline_plan(plan, b.name).plan_id for b in plan.baselines if b.predicted is not None}
    assert len(ids) == len([b for b in plan.baselines if b.predicted is not None])


def test_unknown_baseline_lists_the_known_ones():
    plan = make_plan(two_devices(0.2, 10, 1000), W)
    with pytest.raises(ConfigError, match="even"):
        baseline_plan(plan, "fastest")
