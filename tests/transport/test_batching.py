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


def test_a_batch_waits_for_the_steps_of_the_sessions_decoding_here_and_not_for_idle_ones(
    runtime, monkeypatch
):
    """The edge sends its sessions' steps one after another: a batch waits (up to GATHER_WINDOW_S) for
    the step of every session that stepped within STEPPING_S, and for no other session."""
    import time

    import partition.transport.batching as batching

    monkeypatch.setattr(batching, "GATHER_WINDOW_S", 60.0)  # were it waited for in vain, the test would hang

    async def scenario():
        batcher = StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8)
        ids = open_sessions(runtime, "window", 2)  # both just opened: both count as decoding
        x = torch.randn(1, 1, HIDDEN)
        try:
            first = asyncio.ensure_future(batcher.run(decode_step(ids[0], 0, x), 0))
            for _ in range(50):  # the first has gathered what came with it, and waits for the second
                await asyncio.sleep(0)
            assert not first.done()
            second = await batcher.run(decode_step(ids[1], 0, x), 0)
            together = [(await first).hops[-1].batch, second.hops[-1].batch]
            # now a third session opens and idles past STEPPING_S: the others' steps do not wait for it
            idle = open_sessions(runtime, "idle", 1)
            monkeypatch.setattr(batching, "STEPPING_S", 0.2)
            time.sleep(0.3)
            started = time.perf_counter()
            steps = [decode_step(sid, 1, x) for sid in ids]
            apart = await asyncio.wait_for(asyncio.gather(*(batcher.run(step, 0) for step in steps)), 10)
            return together, [step.hops[-1].batch for step in apart], time.perf_counter() - started, idle
        finally:
            end_sessions(runtime, ids)

    together, apart, took_s, idle = asyncio.run(scenario())
    end_sessions(runtime, idle)
    assert together == [2, 2]
    assert apart == [2, 2] and took_s < 10


def test_on_a_chain_of_two_workers_a_forward_takes_half_of_the_sessions_decoding():
    """A whole batch would pass from one worker to the next while the other waits: on a chain of two
    workers each forward takes ceil(sessions / 2) steps, so the two compute groups at the same time."""
    halves = StageRuntime(WorkerSettings(name="server-a"))
    halves.load(
        Deployment("plan", 1, "smollm2-135m", "", SEGMENT, "float32", "next:1", "raw", 64, 5, chain_workers=2)
    )

    async def scenario(sessions: int):
        batcher = StepBatcher(halves, ComputeLane(), "server-a", max_batch=8)
        ids = open_sessions(halves, f"halves-{sessions}", sessions)
        x = torch.randn(1, 1, HIDDEN)
        try:
            results = await asyncio.gather(*(batcher.run(decode_step(sid, 0, x), 0) for sid in ids))
            return [step.hops[-1].batch for step in results], batcher.batch_limit(sessions)
        finally:
            end_sessions(halves, ids)

    assert asyncio.run(scenario(4)) == ([2, 2, 2, 2], 2)
    assert asyncio.run(scenario(5)) == ([3, 3, 3, 2, 2], 3)


def test_in_one_forward_only_the_step_that_asks_gets_log_probabilities_back():
    """Two sessions' decode steps through the head, batched: one asks for log-probabilities of its top
    64, the other for its raw logits; each gets what it asked for, as alone."""
    runtime = StageRuntime(WorkerSettings(name="server-a"))
    runtime.load(Deployment("plan", 1, "smollm2-135m", "", Segment(28, 32), "float32", "", "raw", 64, 2))
    x = torch.randn(1, 1, HIDDEN, generator=torch.Generator().manual_seed(3))

    def asking(session_id: str, log_probs: bool) -> forward_pb2.Step:
        step = decode_step(session_id, 0, x)
        step.output, step.logits_top_k, step.log_probs = forward_pb2.OUTPUT_SELECT_LAST, 64, log_probs
        return step

    async def together():
        batcher = StepBatcher(runtime, ComputeLane(), "server-a", max_batch=8)
        ids = open_sessions(runtime, "head", 2)
        steps = [asking(ids[0], True), asking(ids[1], False)]
        assert all(batcher.takes(step) for step in steps)
        outputs = await asyncio.gather(*(batcher.run(step, 0) for step in steps))
        end_sessions(runtime, ids)
        return outputs

    normalized, raw = asyncio.run(together())
    assert normalized.hops[-1].batch == raw.hops[-1].batch == 2
    ids = open_sessions(runtime, "alone", 1)
    logits = from_proto(process_step(runtime, decode_step(ids[0], 0, x), 0, 0.0, "server-a").tensor)[0, -1]
    end_sessions(runtime, ids)
    expected = torch.log_softmax(logits, -1)
    for step, want in ((normalized, expected), (raw, logits)):
        got = from_proto(step.tensor)[0, -1]
        assert step.tensor.codec == "top-k" and torch.isfinite(got).sum() == 64
        sent = torch.isfinite(got)
        assert torch.equal(sent, want >= torch.topk(want, 64).values[-1])
        torch.testing.assert_close(got[sent], want[sent], rtol=1e-4, atol=1e-4)
