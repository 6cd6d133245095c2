"""Decode steps of different sessions computed as one forward (serve): a worker's step batcher.

A decode step spends its time reading the segment's weights; a batch of B sessions reads them once
(SmolLM2, 10 blocks, one thread: 13.4 ms for one step, 23.6 ms for four). With several sessions open,
each decode step waits a few turns of the event loop for the steps that arrived with it, and up to
GATHER_WINDOW_S for those of the other sessions decoding here, then takes the lane for all of them
and for the steps that arrived while the lane was busy (at most `max_batch`). A session's steps stay
in order: its CHAIN handler sends the next only after the last one's result, and a session with a step
in the batch already waits for the next. With one session open a step goes straight to the lane, as
before: nothing to wait for.

On a chain of several workers a forward takes the worker's share of the decoding sessions, about
sessions / workers (`batch_limit`). A whole batch would pass from one worker to the next while the
others wait for it; groups of sessions keep every worker computing at once, as a pipeline's
micro-batches do. benchmarks/batching.py, two servers, 4 requests at a time: 41-45 tokens/s against
38-40 with one whole batch; at 8 at a time no difference beyond the host's noise (both workers
computing at once share its two cores and memory bandwidth).
"""

from __future__ import annotations

import asyncio
import logging
import time

from partition.runtime.compute import ComputeLane
from partition.runtime.stage import StageRuntime
from partition.transport.generated import forward_pb2
from partition.transport.stage_step import Waiting, process_decode_steps

log = logging.getLogger(__name__)

# Turns of the event loop a batch waits for steps that arrived with its first one: a message already
# received reaches the batch after two (the stream's reader task, then its handler), so at least
# three; more while each turn brings another, and at most MAX_TURNS.
MIN_TURNS = 3
MAX_TURNS = 12
# Then, while fewer steps wait than sessions are decoding here (took a step within STEPPING_S), it
# waits up to GATHER_WINDOW_S for theirs: the edge sends the sessions' steps one after another, a
# millisecond or two apart. benchmarks/batching.py, one server, 4 requests at a time: 2.5 sessions
# per forward and 1.44x the throughput of steps alone without the wait, 3.9 and 1.91x with 3 ms.
GATHER_WINDOW_S = 0.003
STEPPING_S = 1.0


class StepBatcher:
    def __init__(self, runtime: StageRuntime, compute: ComputeLane, worker: str, max_batch: int) -> None:
        self.runtime = runtime
        self.compute = compute
        self.worker = worker
        self.max_batch = max_batch
        self._waiting: list[Waiting] = []
        self._limit = max_batch  # steps the next forward takes at most (batch_limit, at its gather)
        self._arrived = asyncio.Event()  # set by each step that joins the waiting ones
        self._runner: asyncio.Task | None = None

    def takes(self, step: forward_pb2.Step) -> bool:
        """Whether `step` is worth batching: a decode step while other sessions are open here."""
        return step.n_tokens == 1 and self.max_batch > 1 and self.runtime.open_sessions > 1

    async def run(self, step: forward_pb2.Step, recv_ns: int) -> forward_pb2.Step:
        """Compute `step` with whatever other decode steps wait with it; its output, as `process_step`."""
        item = Waiting(step, recv_ns, time.perf_counter(), asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run())
        return await item.result  # a caller cancelled meanwhile leaves its step out of the batch

    async def _run(self) -> None:
        try:
            while self._waiting:
                await self._gather()
                await self.compute.call(self._compute_waiting)
        finally:  # cancelled (the worker stopping): nobody is left waiting for an answer
            for item in self._waiting:
                item.result.cancel()
            self._waiting.clear()

    async def _gather(self) -> None:
        turns, seen = 0, 0
        while turns < MAX_TURNS and (turns < MIN_TURNS or len(self._waiting) > seen):
            seen = len(self._waiting)
            await asyncio.sleep(0)
            turns += 1
        stepping = self.runtime.sessions_stepping(STEPPING_S)
        self._limit = self.batch_limit(stepping)
        wanted = min(stepping, self._limit)
        deadline = time.perf_counter() + GATHER_WINDOW_S
        while self._sessions_waiting() < wanted:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def batch_limit(self, stepping: int) -> int:
        """Steps the next forward takes at most: on a chain of one worker every step waiting, up to
        max_batch; on a chain of W workers this worker's share of the sessions decoding here (the
        `stepping` ones and any waiting), ceil(sessions / W)."""
        workers = self.runtime.chain_workers
        if workers == 1:
            return self.max_batch
        decoding = max(stepping, self._sessions_waiting())
        return max(1, min(-(-decoding // workers), self.max_batch))

    def _sessions_waiting(self) -> int:
        return len({item.step.session_id for item in self._waiting})

    def _compute_waiting(self) -> None:
        """In the lane: take the steps waiting now (one per session, at most the limit) and compute them."""
        batch, later, sessions = [], [], set()
        for item in self._waiting:
            if not item.wanted:
                continue
            if item.step.session_id in sessions or len(batch) >= self._limit:
                later.append(item)
            else:
                sessions.add(item.step.session_id)
                batch.append(item)
        self._waiting = later
        try:
            process_decode_steps(self.runtime, batch, self.worker)
        except Exception as error:  # each step fails alone inside; this is a fault of the batch itself
            log.exception("a batch of %d decode steps failed", len(batch))
            for item in batch:
                item.fail(error)
