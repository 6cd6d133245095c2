"""Where the last stage's results wait for the session's RETURN stream (serve).

One route per CHAIN stream, keyed by its session and OpenStream.pair_id: a caller that opens a
session's streams again picks a new pair, so what the old CHAIN stream still computes, and its end or
cancellation, which can reach this stage after the new streams opened, stay on the old route.
A result may be ready before the coordinator's RETURN stream is attached (the two streams are
opened concurrently), and a CHAIN stream may even end before it: results and the end of the stream
wait on the route until a RETURN stream of the pair reads them, or the session itself ends. The queue
is bounded: a route whose results nobody reads fails instead of growing without limit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc

from partition.runtime.errors import CapacityError
from partition.transport.links import StatusError

MAX_PENDING = 64  # results per session waiting for a RETURN reader


@dataclass(frozen=True)
class End:
    """Last item of a route: the RETURN stream ends with this status (None = OK)."""

    status: StatusError | None = None


class _Route:
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.attached = False
        self.ended = False  # End is queued: the CHAIN stream that filled it is over
        self.made_s = time.monotonic()


class ReturnRoutes:
    def __init__(self) -> None:
        self._routes: dict[str, dict[str, _Route]] = {}  # session id -> pair id -> route

    def attach(self, session_id: str, pair_id: str) -> asyncio.Queue:
        """The queue a new RETURN stream of the pair reads: results waiting unread, then what follows.
        A previous reader of the same pair is ended (ABORTED)."""
        route = self._route(session_id, pair_id)
        if route is not None and route.attached:
            route.queue.put_nowait(
                End(
                    StatusError(
                        grpc.StatusCode.ABORTED,
                        f"session {session_id!r} has a newer RETURN stream with pair_id {pair_id!r}",
                    )
                )
            )
            route = None
        if route is None:
            route = self._new_route(session_id, pair_id)
        route.attached = True
        return route.queue

    def detach(self, session_id: str, pair_id: str, queue: asyncio.Queue) -> None:
        route = self._route(session_id, pair_id)
        if route is not None and route.queue is queue:
            self._forget(session_id, pair_id)

    def put(self, session_id: str, pair_id: str, result: bytes) -> None:
        """Queue one serialized ForwardReply(result=...)."""
        route = self._route(session_id, pair_id)
        if route is None or route.ended:  # a new CHAIN stream of the pair: its results start anew
            route = self._new_route(session_id, pair_id)
        if route.queue.qsize() >= MAX_PENDING:
            raise CapacityError(
                f"{MAX_PENDING} results of session {session_id!r} wait unread; open Forward with role RETURN "
                "and the CHAIN stream's pair_id on the last stage to receive them"
            )
        route.queue.put_nowait(result)

    def finish(
        self, session_id: str, pair_id: str, status: StatusError | None = None, abandoned: bool = False
    ) -> None:
        """The pair's CHAIN stream ended: its RETURN stream ends after the results already queued. With
        no reader yet, the results and the end wait for one (the session's end drops them), unless the
        caller `abandoned` the stream (cancelled it): no reader will come."""
        route = self._route(session_id, pair_id)
        if route is None:
            if abandoned:
                return
            route = self._new_route(session_id, pair_id)  # a CHAIN stream that sent no results
        if route.ended:
            return
        if abandoned and not route.attached:
            self._forget(session_id, pair_id)
            return
        route.queue.put_nowait(End(status))
        route.ended = True

    def drop(self, session_id: str, status: StatusError | None = None) -> None:
        """The session ended (EndSession, idle expiry, a redeploy): every reader of it ends with `status`
        after the results queued; nothing of the session stays."""
        for route in self._routes.pop(session_id, {}).values():
            if not route.ended:
                route.queue.put_nowait(End(status))

    def sweep(self, open_sessions: set[str], unopened_after_s: float, unopened: StatusError) -> None:
        """Forget the unread routes of sessions no longer open: those whose results or end came after the
        session ended (the CHAIN stream's end can reach the last stage after EndSession). A reader of a
        session not open here for `unopened_after_s` (never opened, or ended before the reader came)
        ends with `unopened`: its CHAIN stream, opened concurrently, would have opened it by then."""
        now = time.monotonic()
        for session_id in [s for s in self._routes if s not in open_sessions]:
            for pair_id, route in list(self._routes[session_id].items()):
                if not route.attached:
                    self._forget(session_id, pair_id)
                elif not route.ended and now - route.made_s >= unopened_after_s:
                    route.queue.put_nowait(End(unopened))
                    route.ended = True

    def _route(self, session_id: str, pair_id: str) -> _Route | None:
        return self._routes.get(session_id, {}).get(pair_id)

    def _new_route(self, session_id: str, pair_id: str) -> _Route:
        route = self._routes.setdefault(session_id, {})[pair_id] = _Route()
        return route

    def _forget(self, session_id: str, pair_id: str) -> None:
        pairs = self._routes.get(session_id, {})
        pairs.pop(pair_id, None)
        if not pairs:
            self._routes.pop(session_id, None)
