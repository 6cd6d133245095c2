"""Other splits of the same plan file (plan -> serve): a baseline served and measured like the choice.

`partition serve --plan plan.json --baseline even` runs the `even` baseline that `partition plan`
predicted, so measured baselines and the chosen plan are compared the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from partition.errors import ConfigError
from partition.types import Plan


def baseline_plan(plan: Plan, name: str) -> Plan:
    """The plan with a baseline's stages and predictions; its own plan id, the same epoch."""
    by_name = {baseline.name: baseline for baseline in plan.baselines}
    if name not in by_name:
        raise ConfigError(
            f"plan {plan.plan_id} has no baseline {name!r}; it has: {', '.join(by_name) or 'none'}"
        )
    baseline = by_name[name]
    if not baseline.stages or baseline.predicted is None:
        raise ConfigError(f"baseline {name!r} does not fit this cluster (the planner marked it infeasible)")
    variant_id = hashlib.sha256(f"{plan.plan_id}/{name}".encode()).hexdigest()[:12]
    return replace(
        plan, plan_id=variant_id, stages=baseline.stages, predicted=baseline.predicted, baselines=()
    )
