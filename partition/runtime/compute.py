"""The worker's one compute lane (serve): every runtime call runs here, one at a time, in arrival order.

One lane owns the segment, its KV cache and the session table, so they need no locks. Short calls
(decode steps, session bookkeeping) run inline on the event loop: a decode step is the only work a
stage has at that moment, and handing it to a thread and back costs two thread wake-ups per hop
(about 0.2 ms measured on a loaded 2-core host, see benchmarks/transport.py). Long calls (loading
weights, long prefill chunks) run on a thread so health checks and probes are answered meanwhile;
torch still uses its own intra-op threads (--threads) inside every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class ComputeLane:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-compute")
        self._lock = asyncio.Lock()  # FIFO: calls run in the order they were submitted

    async def call(
        self, fn: Callable[..., T], *args, inline: bool = True, on_cancel: Callable[[], None] | None = None
    ) -> T:
        """Run `fn(*args)` after every call submitted before it; on a thread unless `inline`. A caller
        cancelled while `fn` runs on the thread calls `on_cancel` (to ask `fn` to end early), then waits
        for it as any cancelled caller does."""
        async with self._lock:
            if inline:
                return fn(*args)
            running = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                if on_cancel is not None:
                    on_cancel()
                # A thread cannot be stopped: the caller goes (its deadline passed, its stream ended), but
                # the lane stays held until the call is done, or the next one would run beside it on the
                # same KV cache and session table (a freed slot written by the call after it was reused).
                await _finished(running)
                raise

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


async def _finished(running: asyncio.Future) -> None:
    """Wait until `running` is done, through any further cancellation; what it raised, nobody waits for."""
    while not running.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({running})
    if not running.cancelled():
        running.exception()  # retrieved: asyncio would log it as never retrieved
