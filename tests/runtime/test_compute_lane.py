"""The worker's compute lane (serve): one call at a time, even when a caller stops waiting for a long one."""

import asyncio
import gc
import threading

import pytest

from partition.runtime.compute import ComputeLane

WAIT_S = 60  # for a thread to start: never reached unless the lane is broken


async def on_thread(started: threading.Event) -> None:
    """Until the call signalling `started` runs on the lane's thread."""
    assert await asyncio.to_thread(started.wait, WAIT_S), "the call did not start on the lane's thread"


async def turns(n: int = 20) -> None:
    """Let the event loop run `n` times: what is ready to run on it (a call let into the lane) has run."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_call_whose_caller_was_cancelled_holds_the_lane_until_its_thread_is_done():
    """A long prefill on the lane's thread cannot be stopped: the session's next call (its EndSession,
    then another session given the freed KV slot) must not run beside it."""
    order: list[str] = []
    started, finish = threading.Event(), threading.Event()

    def long_prefill() -> None:
        started.set()
        finish.wait()  # still running whatever the event loop does meanwhile, until the test lets it end
        order.append("prefill done")

    async def scenario() -> None:
        lane = ComputeLane()
        try:
            prefill = asyncio.ensure_future(lane.call(long_prefill, inline=False))
            await on_thread(started)
            prefill.cancel()  # its caller's deadline passed
            end_session = asyncio.ensure_future(lane.call(order.append, "end session"))
            await turns()  # a lane let go by the cancellation would run the EndSession now
            finish.set()
            with pytest.raises(asyncio.CancelledError):
                await prefill
            await end_session
        finally:
            finish.set()
            lane.shutdown()

    asyncio.run(scenario())
    assert order == ["prefill done", "end session"]


def test_a_failure_of_a_call_nobody_waits_for_any_more_stays_in_the_lane(caplog):
    started, finish = threading.Event(), threading.Event()

    def fails() -> None:
        started.set()
        finish.wait()  # fails only once its caller was cancelled
        raise RuntimeError("out of memory")

    async def scenario() -> int:
        lane = ComputeLane()
        try:
            call = asyncio.ensure_future(lane.call(fails, inline=False))
            await on_thread(started)
            call.cancel()
            finish.set()
            with pytest.raises(asyncio.CancelledError):
                await call
            return await lane.call(len, "next")  # the lane goes on
        finally:
            finish.set()
            lane.shutdown()

    assert asyncio.run(scenario()) == 4
    gc.collect()  # a future whose exception nobody retrieved is logged when it is collected
    assert "never retrieved" not in caplog.text
