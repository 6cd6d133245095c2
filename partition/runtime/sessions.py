"""Sessions of one loaded segment (serve): a KV-cache slot and the next expected position each.

The table is owned by the stage's compute lane (one call at a time), so it needs no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from partition.runtime.errors import CapacityError, PositionError, UnknownSessionError


@dataclass
class Session:
    session_id: str
    slot: int  # index into the segment's KV cache
    next_position: int = 0  # tokens cached so far = position the next step must carry
    # Positions of its slot it has written keys to: beyond next_position while a step that ran was not
    # ended (refused after it ran, to be sent again).
    written: int = 0
    last_used: float = field(default_factory=time.monotonic)  # monotonic seconds


class SessionTable:
    def __init__(self, slots: int, max_context: int, idle_timeout_s: float) -> None:
        self.slots = slots  # KV slots = concurrent sessions
        self.max_context = max_context  # tokens per slot
        self.idle_timeout_s = idle_timeout_s
        self._free = list(range(slots - 1, -1, -1))  # pop() hands out slot 0 first
        # Per slot, the leading positions that hold keys of a session that has ended: what a new owner
        # must have cleared (clearing a whole slot of 2048 tokens took 4.5 ms for SmolLM2, per session).
        self._stale = [0] * slots
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, session_id: str) -> tuple[Session, bool]:
        """The session (existing, or new on a free slot) and whether it is new."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_used = time.monotonic()
            return session, False
        if not self._free:
            raise CapacityError(
                f"all {self.slots} KV slots ({self.max_context} tokens each) are held by live sessions; "
                "end finished sessions with EndSession, wait for idle ones to expire "
                f"(after {self.idle_timeout_s:g} s), or redeploy with more max_sessions or a larger "
                "--kv-budget-mb"
            )
        session = Session(session_id, self._free.pop())
        self._sessions[session_id] = session
        return session, True

    def get(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSessionError(
                f"session {session_id!r} is not open here (never opened, ended, or expired after "
                f"{self.idle_timeout_s:g} s idle); open a new session and send its prompt again"
            )
        return session

    def check_step(self, session: Session, position: int, n_tokens: int) -> None:
        if position != session.next_position:
            raise PositionError(
                f"session {session.session_id!r}: expected position {session.next_position}, got {position}; "
                "send steps in order, each at the previous position + n_tokens"
            )
        if position + n_tokens > self.max_context:
            raise PositionError(
                f"session {session.session_id!r}: positions {position}..{position + n_tokens - 1} run past the "
                f"{self.max_context} tokens of its KV slot; end it and redeploy with a larger max_context"
            )

    def take_stale_positions(self, slot: int) -> int:
        """Leading positions of `slot` that may hold an earlier session's keys, for the caller to clear
        now; counted as clear from then on."""
        stale, self._stale[slot] = self._stale[slot], 0
        return stale

    def writing(self, session: Session, n_tokens: int) -> None:
        """A step of `n_tokens` at the session's position is about to write its keys."""
        session.written = max(session.written, session.next_position + n_tokens)

    def advance(self, session: Session, n_tokens: int) -> None:
        session.next_position += n_tokens
        session.last_used = time.monotonic()

    def end(self, session_id: str) -> Session | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._stale[session.slot] = session.written  # its opening took (and cleared) the earlier ones
            self._free.append(session.slot)
        return session

    def expire(self, now: float | None = None) -> list[Session]:
        """End and return the sessions idle for longer than the timeout."""
        now = time.monotonic() if now is None else now
        idle = [s for s in self._sessions.values() if now - s.last_used > self.idle_timeout_s]
        for session in idle:
            self.end(session.session_id)
        return idle

    def ids(self) -> list[str]:
        return list(self._sessions)

    def stepped_since(self, since: float) -> int:
        """Sessions whose last step (or opening) was at `since` (monotonic seconds) or later."""
        return sum(1 for s in self._sessions.values() if s.last_used >= since)
