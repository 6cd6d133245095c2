"""A request that survives a worker's restart (serve): the session is opened again and its tokens replayed.

A worker that dies mid-request takes the session's KV cache with it. When it is back at its address
within a few seconds (a supervisor restarted it, or serve --spawn-local started it again), the
coordinator loads its segment again, opens a new session through the chain and sends every token the
old session had seen as one prefill step: the KV caches are rebuilt on every stage, and generation
goes on from the same position. The caller sees a pause, not a failure, and no token is lost or
repeated. (The rebuilt caches come from one prefill where the lost ones came step by step; their
rounding may differ, which changes a greedy token only at a near-tie: none in the tests.) The same
holds for a worker found gone when the session opens. A worker that is not back in time ends the
request, named by its device, unless the coordinator can re-plan without it (coordinator/replan.py):
then the tokens are replayed through the new plan's split instead.

    session = ResumingSession(open_session, reload_workers, current, reload_mark)
    logits = session.step(token_ids, position)      # as PipelineSession.step
    session.spans, session.resumes                  # every hop of every session, how many resumes
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import grpc
import torch

from partition.coordinator.deploy import Deployment
from partition.coordinator.session import PipelineSession
from partition.metrics.spans import HopSpan
from partition.model.generation import TokenLogprob
from partition.runtime.errors import NOTHING_LOADED
from partition.transport.client import StageCallError

log = logging.getLogger(__name__)

MAX_RESUMES = 3  # per request: a worker that keeps dying is not waited for forever


def worker_lost(error: StageCallError) -> bool:
    """Whether `error` says a worker went away (UNAVAILABLE), was shutting down (gRPC cancels the calls
    a stopping server holds or is handed: a SIGTERM, as a supervisor's restart sends), did not accept
    the session in time (DEADLINE_EXCEEDED: steps have no deadline, opens do; the stage that says so
    may be waiting on a later one that hangs, which the reload names), or was restarted since the
    deployment (it holds no segment): each is mended by loading the workers again and opening a new
    session. (A stage that fails ends the rest of the chain with CANCELLED too, but its own status comes
    first; reloading workers that all serve costs a reopen, bounded by MAX_RESUMES.)"""
    lost = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
    if error.code in lost:
        return True
    return error.code == grpc.StatusCode.FAILED_PRECONDITION and NOTHING_LOADED in error.details


class ResumingSession:
    def __init__(
        self,
        open_session: Callable[[Deployment], PipelineSession],
        reload_workers: Callable[[int], bool],
        current: Callable[[], Deployment],
        reload_mark: Callable[[], int],
        max_resumes: int = MAX_RESUMES,
    ) -> None:
        """`open_session` opens a session through a deployment's chain; `reload_workers(mark)` waits for
        the workers to be reachable and gives each its segment again (StageCallError when one is still
        away), or deploys a new plan without it, and says True; or, when a reload began after `mark`
        (what `reload_mark` said when the lost session opened), takes that reload's outcome and says
        False: a reopen after it is not counted against `max_resumes`, since the session may have
        outlived that reload and been lost after it (the next loss then reloads); `current` gives the
        deployment serving now. A session on a deployment that was replaced meanwhile (another request
        re-planned) is opened again on the new one, whatever its error (a worker left may serve the
        new epoch already)."""
        self._open_session = open_session
        self._reload_workers = reload_workers
        self._reload_mark = reload_mark
        self._mark = 0  # reload_mark() when the session was last opened (or tried)
        self._current = current
        self._on: Deployment | None = None  # the deployment of the last session opened (or tried)
        self.max_resumes = max_resumes
        self.session: PipelineSession | None = None  # opened by the first step
        self._seen: list[int] = []  # token ids by position: what the session's caches hold
        self._done_spans: list[HopSpan] = []  # of the sessions lost before the current one
        self._reopened = 0  # sessions opened again after a worker went away (bounded)
        self.resumes = 0  # of them, those that carried on a request under way (some tokens seen)

    @property
    def spans(self) -> list[HopSpan]:
        return self._done_spans + (self.session.spans if self.session is not None else [])

    def step(self, token_ids: list[int], position: int) -> torch.Tensor:
        """Logits [V] of the last of `token_ids`, placed at `position`.. (as PipelineSession.step)."""
        return self._run(token_ids, position)

    def scores(self, token_ids: list[int], top: int) -> tuple[list[TokenLogprob], torch.Tensor]:
        """A prompt's prefill from position 0, scored, with `top` alternatives (PipelineSession.scores)."""
        return self._run(token_ids, 0, score_top=top)

    def _run(self, token_ids: list[int], position: int, score_top: int | None = None):
        """`step`'s output, or with `score_top` (a prompt's first step) `scores`'."""
        if position != len(self._seen):
            raise ValueError(f"step at position {position}, but the session holds {len(self._seen)} tokens")
        while True:
            try:
                if self.session is None:  # first, or lost: a new one sees every earlier token at once
                    self._on, self._mark = self._current(), self._reload_mark()
                    self.session = self._open_session(self._on)
                    if score_top is not None:  # a prompt's prefill, scored: nothing was seen before it
                        logits = self.session.scores(token_ids, score_top)
                    else:
                        logits = self.session.step(self._seen + token_ids, 0)
                elif score_top is not None:
                    raise ValueError("only the first step, from position 0, is scored")
                else:
                    logits = self.session.step(token_ids, position)
                break
            except StageCallError as error:
                self._current().check_open()  # serve stopping cancelled the call: no worker was lost
                if not (worker_lost(error) or self._replaced()) or self._reopened >= self.max_resumes:
                    raise
                self._lost(error)
        self._seen += token_ids
        return logits

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def abandon(self) -> None:
        """End the session now, a step in flight included (PipelineSession.abandon)."""
        if self.session is not None:
            self.session.abandon()

    @property
    def deployment(self) -> Deployment | None:
        """The deployment of the last session opened (or tried); None before the first step."""
        return self._on

    def _replaced(self) -> bool:
        """Whether the session was opened (or tried) on a deployment that a re-plan has replaced."""
        return self._on is not None and self._on is not self._current()

    def _lost(self, error: StageCallError) -> None:
        """Drop the broken session and load the workers again (or deploy a plan without one that stays
        away); the load's StageCallError when that fails: it names the worker still away, or the
        refusal of one that came back (`error` may name the stage that lost its next one)."""
        log.warning(
            "a worker went away or came back empty at position %d (%s); resuming on a new session",
            len(self._seen), error.details,
        )  # fmt: skip
        if self.session is not None:
            self._done_spans += self.session.spans
            with contextlib.suppress(Exception):  # its stages may be gone: nothing left to free
                self.session.close()
            self.session = None
        if self._reload_workers(self._mark):
            self._reopened += 1
        self.resumes += 1 if self._seen else 0
