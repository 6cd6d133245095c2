"""How a plan's stages map onto this process and the workers (deploy).

The coordinator runs on the edge, so the edge's own stages (the front segment with `embed`, the tail
with `head`) run in this process; only the stages on other devices are remote workers, chained in plan
order. A token then crosses len(remote) + 1 links: edge -> first remote ... last remote -> edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from partition.errors import ConfigError
from partition.types import Plan, Stage


@dataclass(frozen=True)
class Topology:
    front: Stage | None  # edge stage before the chain (holds embed), run in this process
    remote: tuple[Stage, ...]  # stages on other devices, in chain order
    tail: Stage | None  # edge stage after the chain (holds head), run in this process

    @property
    def input_codec(self) -> str:
        """Codec of the chain's input: the front's output codec, or raw token ids."""
        return self.front.codec_out if self.front is not None else "raw"


def split_plan(plan: Plan) -> Topology:
    stages = list(plan.stages)
    if not stages:
        raise ConfigError(f"plan {plan.plan_id} has no stages; re-run `partition plan`")
    front = stages.pop(0) if stages[0].device == plan.edge else None
    tail = stages.pop() if stages and stages[-1].device == plan.edge else None
    for stage in stages:
        if stage.device == plan.edge:
            raise ConfigError(
                f"plan {plan.plan_id} puts the edge {plan.edge!r} in the middle of the chain "
                f"(segment {stage.segment}); only its first and last stages may run on the edge"
            )
    devices = [s.device for s in stages]
    if len(set(devices)) != len(devices):
        ends = plan.stages[0].device
        if ends == plan.stages[-1].device and devices.count(ends) > 1:  # the shape of a chain from an edge
            raise ConfigError(
                f"plan {plan.plan_id} names {plan.edge!r} as its edge, but its chain starts and ends on "
                f'{ends!r}, as only the edge\'s does; set "edge" to {ends!r} or re-run `partition plan`'
            )
        raise ConfigError(
            f"plan {plan.plan_id} uses a device twice in its chain: {devices}; a device other than the "
            "edge holds one stage at most: re-run `partition plan`"
        )
    return Topology(front, tuple(stages), tail)
