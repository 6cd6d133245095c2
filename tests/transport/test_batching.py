"""A worker's step batcher (serve): decode steps of different sessions waiting together run as one
forward, each with the output it gets alone (up to rounding), and a bad step fails only itself."""

import asyncio

import pytest
import torch

from partition.runtime.compute import ComputeLane
from partition.runtime.errors import PositionError
from partition.runtime.stage import Deployment, StageRuntime, WorkerSettings
from partition.transport.batching import StepBatcher
from partition.transport.generated import forward_pb2
from partition.transport.stage_step import process_step
from partition.transport.tensors import from_proto, to_proto
from partition.types import Segment

SESSIONS = 4
SEGMENT = Segment(3, 8)  # five blocks: hidden states in and out
HIDDEN = 576  # SmolLM2-135M's hidden size


@pytest.fixture(scope="module")
def runtime():
    runtime = StageRuntime(WorkerSettings(name="server-a"))
    runtime.load(Deployment("plan", 1, "smollm2-135m", "", SEGMENT, "float32", "next:1", "raw", 64, SESSIONS))
    return runtime


def open_sessions(runtime: StageRuntime, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for session_id in ids:
        runtime.open_session(session_id, "plan", 1, runtime.deployment.model_digest)
    return ids


def end_sessions(runtime: StageRuntime, ids: list[str]) -> None:
    for session_id in ids:
        runtime.end_session(session_id, "plan", 1)


def decode_step(session_id: str, position: int, x: torch.Tensor) -> forward_pb2.Step:
    step = forward_pb2.Step(session_id=session_id, plan_id="plan", epoch=1, position=position, n_tokens=1)
    step.tensor.CopyFrom(to_proto(x, "raw"))
    return step


def test_waiting_decode_steps_run_as_one_forward_with_the_outputs_they_get_alone(runtime):
    inputs = [[torch.randn(1, 1, HIDDEN, generator=torch.Generator().manual_seed(9 * s + p)) for p in range(3)]
              for s in range(SESSIONS)]  # fmt: skip

    # alone: each session's three steps in turn, through the path a single session takes
    ids = open_sessions(runtime, "alone", SESSIONS)
    alone = [[from_proto(process_step(runtime, decode_step(sid, p, inputs[s][p]), 0, 0.0, "server-a").tensor)
              for p in range(3)] for s, sid in enumerate(ids)]  # fmt: skip
    end_sessions(runtime, ids)

    async def together():
        batcher = StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8)
        ids = open_sessions(runtime, "together", SESSIONS)
        outputs = []
        for p in range(3):
            steps = [decode_step(sid, p, inputs[s][p]) for s, sid in enumerate(ids)]
            assert all(batcher.takes(step) for step in steps)
            outputs.append(await asyncio.gather(*(batcher.run(step, 0) for step in steps)))
        end_sessions(runtime, ids)
        return outputs

    for p, outputs in enumerate(asyncio.run(together())):
        for s, step in enumerate(outputs):
            assert step.hops[-1].batch == SESSIONS  # one forward for the four
            assert step.position == p and step.hops[-1].compute_s > 0
            torch.testing.assert_close(from_proto(step.tensor), alone[s][p], rtol=1e-4, atol=1e-4)


def test_a_step_out_of_order_fails_alone_and_the_rest_of_its_batch_is_computed(runtime):
    async def scenario():
        batcher = StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8)
        ids = open_sessions(runtime, "order", 3)
        x = torch.randn(1, 1, HIDDEN)
        steps = [decode_step(ids[0], 0, x), decode_step(ids[1], 5, x), decode_step(ids[2], 0, x)]
        results = await asyncio.gather(*(batcher.run(step, 0) for step in steps), return_exceptions=True)
        positions = [runtime.open_session(sid, "plan", 1, runtime.deployment.model_digest)[0].next_position
                     for sid in ids]  # fmt: skip
        end_sessions(runtime, ids)
        return results, positions

    results, positions = asyncio.run(scenario())
    assert isinstance(results[1], PositionError) and "expected position 0, got 5" in str(results[1])
    assert [r.hops[-1].batch for r in (results[0], results[2])] == [2, 2]
    assert positions == [1, 0, 1]  # the refused session stays where it was


def test_a_batch_takes_one_step_per_session_and_at_most_max_batch(runtime):
    """Two steps of one session never share a forward (the second would find the first's position),
    and a batch holds at most max_batch steps: the rest wait for the next forward."""

    async def scenario():
        batcher = StepBatcher(runtime, ComputeLane(), "server-a", max_batch=2)
        ids = open_sessions(runtime, "limit", 3)
        x = torch.randn(1, 1, HIDDEN)
        steps = [decode_step(ids[0], 0, x), decode_step(ids[0], 1, x), decode_step(ids[1], 0, x),
                 decode_step(ids[2], 0, x)]  # fmt: skip
        results = await asyncio.gather(*(batcher.run(step, 0) for step in steps))
        end_sessions(runtime, ids)
        return results

    results = asyncio.run(scenario())
    assert [r.position for r in results] == [0, 1, 0, 0]
    # first forward: ids[0] at 0 and ids[1] (max 2); then ids[0] at 1 and ids[2]
    assert [r.hops[-1].batch for r in results] == [2, 2, 2, 2]


def test_a_step_goes_straight_to_the_lane_with_one_session_open_or_max_batch_1(runtime):
    ids = open_sessions(runtime, "single", 1)
    step = decode_step(ids[0], 0, torch.randn(1, 1, HIDDEN))
    try:
        assert not StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8).takes(step)
        ids += open_sessions(runtime, "second", 1)
        assert StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8).takes(step)
        assert not StepBatcher(runtime, ComputeLane(), "server-a", max_batch=1).takes(step)
        step.n_tokens = 2  # a prefill chunk: not batched
        assert not StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8).takes(step)
    finally:
        end_sessions(runtime, ids)


def test_a_fault_of_the_batch_itself_fails_each_of_its_steps_instead_of_leaving_them_waiting(
    runtime, monkeypatch
):
    import partition.transport.batching as batching

    def broken(*_):
        raise RuntimeError("a fault no step caused")

    monkeypatch.setattr(batching, "process_decode_steps", broken)

    async def scenario():
        batcher = StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8)
        ids = open_sessions(runtime, "fault", 2)
        steps = [decode_step(sid, 0, torch.randn(1, 1, HIDDEN)) for sid in ids]
        try:
            return await asyncio.wait_for(
                asyncio.gather(*(batcher.run(step, 0) for step in steps), return_exceptions=True), 60
            )
        finally:
            end_sessions(runtime, ids)

    results = asyncio.run(scenario())
    assert [str(r) for r in results] == ["a fault no step caused"] * 2
