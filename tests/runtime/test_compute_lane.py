"""The worker's compute lane (serve): one call at a time, even when a caller stops waiting for a long one."""

import asyncio
import gc
import time

import pytest

from partition.runtime.compute import ComputeLane


def test_a_call_whose_caller_was_cancelled_holds_the_lane_until_its_thread_is_done():
    """A long prefill on the lane's thread cannot be stopped: the session's next call (its EndSession,
    then another session given the freed KV slot) must not run beside it."""
    order: list[str] = []

    def long_prefill() -> None:
        time.sleep(0.5)
        order.append("prefill done")

    async def scenario() -> None:
        lane = ComputeLane()
        try:
            prefill = asyncio.ensure_future(lane.call(long_prefill, inline=False))
            await asyncio.sleep(0.1)  # on the thread now
            prefill.cancel()  # its caller's deadline passed
            end_session = asyncio.ensure_future(lane.call(order.append, "end session"))
            with pytest.raises(asyncio.CancelledError):
                await prefill
            await end_session
        finally:
            lane.shutdown()

    asyncio.run(scenario())
    assert order == ["prefill done", "end session"]


def test_a_failure_of_a_call_nobody_waits_for_any_more_stays_in_the_lane(caplog):
    def fails() -> None:
        time.sleep(0.2)
        raise RuntimeError("out of memory")

    async def scenario() -> int:
        lane = ComputeLane()
        try:
            call = asyncio.ensure_future(lane.call(fails, inline=False))
            await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            return await lane.call(len, "next")  # the lane goes on
        finally:
            lane.shutdown()

    assert asyncio.run(scenario()) == 4
    gc.collect()  # a future whose exception nobody retrieved is logged when it is collected
    assert "never retrieved" not in caplog.text
