"""One asyncio loop in a background thread, so synchronous code (the generation loop) can drive the
async gRPC client. Every channel of a deployment lives on this loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from partition.errors import StoppedError

T = TypeVar("T")

# what a request under way is told when serve stops (the loop closes, or its deployment does)
STOPPED = "serve stopped while this request was under way, so its answer is not whole; send it again once serve runs"
CANCEL_WAIT_S = 5.0  # for the loop's tasks to end once cancelled, when it closes
# Seconds between asks whether the caller still wants what it waits for (`run`'s still_wanted): a
# client that hung up is let go within this, for one wake-up of the waiting thread per interval.
WANTED_CHECK_S = 0.2


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="coordinator-io", daemon=True)
        self._thread.start()
        # Once close() began, nothing more is scheduled: a task started after its cancel would be
        # destroyed pending. The lock makes "not closing, so schedule" one step against close().
        self._closing = False
        self._scheduling = threading.Lock()

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout_s: float | None = None,
        still_wanted: Callable[[], None] | None = None,
    ) -> T:
        """Run `coro` on the loop and wait for its result (its exception is re-raised here); StoppedError
        once the loop is closing or closed (the coroutine is then not run). `still_wanted` is asked
        first and every WANTED_CHECK_S while the result is awaited: what it raises cancels `coro` (or
        keeps it from starting) and is raised here, unless the result came meanwhile."""
        assert timeout_s is None or still_wanted is None, "a wait ends by its timeout or by its caller"
        try:
            if still_wanted is not None:
                still_wanted()
        except BaseException:
            coro.close()  # never run: said so, not warned of as never awaited
            raise
        with self._scheduling:
            if self._closing:
                coro.close()
                raise StoppedError(STOPPED)
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            if still_wanted is None:
                return future.result(timeout_s)
            while True:  # result() with a timeout, not concurrent.futures.wait: 15 us less per call
                try:
                    return future.result(WANTED_CHECK_S)
                except TimeoutError:
                    pass
                try:
                    still_wanted()
                except BaseException:
                    if future.cancel():  # else it is done: its result is returned, the next ask raises
                        raise
        except concurrent.futures.CancelledError:  # close() cancelled it
            raise StoppedError(STOPPED) from None

    def close(self) -> None:
        """Cancel what still runs on the loop (whoever waits on it gets StoppedError, and no task is
        destroyed pending), then stop the loop and close it."""
        with self._scheduling:
            if self._closing:
                return
            self._closing = True
        if self._thread.is_alive():
            with contextlib.suppress(Exception):  # a task that will not end in time is left to the stop
                asyncio.run_coroutine_threadsafe(_cancel_the_others(), self.loop).result(CANCEL_WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_the_others() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
