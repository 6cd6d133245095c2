"""Where the last stage's results wait for the session's RETURN stream (serve).

A result may be ready before the coordinator's RETURN stream is attached (the two streams are
opened concurrently), so results queue per session. The queue is bounded: a session whose results
nobody reads fails instead of growing without limit.
"""

from __future__ import annotations

import asyncio
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


class ReturnRoutes:
    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}

    def attach(self, session_id: str) -> asyncio.Queue:
        """The queue a new RETURN stream reads; a previous reader of the session is ended (ABORTED)."""
        route = self._routes.get(session_id)
        if route is not None and route.attached:
            route.queue.put_nowait(
                End(StatusError(grpc.StatusCode.ABORTED, f"session {session_id!r} has a newer RETURN stream"))
            )
            route = None
        if route is None:
            route = self._routes[session_id] = _Route()
        route.attached = True
        return route.queue

    def detach(self, session_id: str, queue: asyncio.Queue) -> None:
        route = self._routes.get(session_id)
        if route is not None and route.queue is queue:
            del self._routes[session_id]

    def put(self, session_id: str, result: bytes) -> None:
        """Queue one serialized ForwardReply(result=...)."""
        route = self._routes.get(session_id)
        if route is None:
            route = self._routes[session_id] = _Route()
        if route.queue.qsize() >= MAX_PENDING:
            raise CapacityError(
                f"{MAX_PENDING} results of session {session_id!r} wait unread; open Forward with role RETURN "
                "on the last stage to receive them"
            )
        route.queue.put_nowait(result)

    def close(self, session_id: str, status: StatusError | None = None) -> None:
        """End the session's RETURN stream (after the results already queued)."""
        route = self._routes.pop(session_id, None)
        if route is not None:
            route.queue.put_nowait(End(status))
