"""A worker reads a CHAIN stream only READ_AHEAD messages beyond the step computing (serve), so gRPC's flow
control holds back a caller that sends faster than the stage computes, instead of the worker's memory."""

import asyncio

from partition.transport.forward import READ_AHEAD, _pump


class EagerCaller:
    """The caller's end of a stream with steps always ready: counts what the worker has read."""

    def __init__(self) -> None:
        self.read_count = 0

    async def read(self) -> bytes:
        self.read_count += 1
        return b"a step"


def test_no_message_is_read_beyond_read_ahead_until_the_handler_takes_one_out():
    async def scenario() -> list[int]:
        caller, inbox, room = EagerCaller(), asyncio.Queue(), asyncio.Semaphore(READ_AHEAD)
        pump = asyncio.ensure_future(_pump(caller, inbox, room, asyncio.Event()))
        seen = []
        try:
            for _ in range(3):
                await asyncio.sleep(0.05)  # ample time for the pump to read all it may
                seen.append(caller.read_count)
                await inbox.get()  # the handler takes the next step: one more may be read
                room.release()
        finally:
            pump.cancel()
        return seen

    assert asyncio.run(scenario()) == [READ_AHEAD, READ_AHEAD + 1, READ_AHEAD + 2]
