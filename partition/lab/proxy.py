"""A TCP delay proxy (deploy, emulated lab): adds a fixed one-way delay to every byte, both directions.

The kernel here has no netem, so one-way delay is emulated in user space. The proxy listens on a
device's address inside its namespace and forwards to the worker on that namespace's loopback, so no
traffic reaches the worker undelayed. The delay of a connection depends on who connects (the slower end
of the pair decides), read from the peer's address.

Each direction is a delay line: a reader stamps each chunk with `arrival + delay`, a writer sends it
when due; the end of the stream (half-close or reset) travels the same way. Threads with timed waits
(futex, ~0.1 ms precise) rather than asyncio, whose epoll timeouts round up to whole milliseconds: the
`lan` config needs 0.5 ms.

    python -m partition.lab.proxy --listen 10.213.0.2:7001 --target 127.0.0.1:7001 \
        --delay-ms 10 --peer-delay-ms 10.213.0.3=10 --peer-delay-ms 10.213.0.2=0
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from partition.lab.listening import wait_for

log = logging.getLogger("partition.lab.proxy")

CHUNK = 256 * 1024  # bytes per recv
QUEUE_LIMIT = 32 * 1024 * 1024  # bytes held per direction before the reader stops reading (backpressure)


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class DelayPolicy:
    default_s: float  # one-way delay for peers not listed, seconds
    peers_s: dict[str, float]  # peer IP -> one-way delay, seconds

    def for_peer(self, ip: str) -> float:
        return self.peers_s.get(ip, self.default_s)


class _Pair:
    """Two sockets of one proxied connection, closed once both directions have ended or one ends in a reset.

    Closing is idempotent and wakes every thread on the pair. When a peer reset its socket, closing resets
    the other socket too (SO_LINGER 0), so the other peer sees the reset rather than a clean end of stream.
    """

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._open_directions = 2
        self._lines: list[DelayLine] = []
        self._reset_by_peer: set[socket.socket] = set()

    def add(self, line: DelayLine) -> None:
        self._lines.append(line)

    def note_reset(self, sock: socket.socket) -> None:
        with self._lock:
            self._reset_by_peer.add(sock)

    def was_reset(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self._reset_by_peer

    def direction_done(self) -> None:
        with self._lock:
            self._open_directions -= 1
            last = self._open_directions == 0
        if last:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            reset = set(self._reset_by_peer)
        for line in self._lines:
            line.stop()
        for sock in (self.client, self.upstream):
            if reset and sock not in reset:
                _reset(sock)
            else:
                _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already disconnected
        sock.shutdown(socket.SHUT_RDWR)  # wakes any thread blocked on it
    sock.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already disconnected
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
        # Wakes a reader blocked on it. Not SHUT_WR: a FIN ahead of the RST would end the peer's stream
        # cleanly. Its only writer is the thread closing the pair, or it has ended.
        sock.shutdown(socket.SHUT_RD)
    sock.close()


class DelayLine:
    """One direction of a connection: bytes from `src` reach `dst` `delay_s` after they arrived.

    So does the end of `src`: a half-close is passed on one delay after it arrived, a reset (an error
    reading `src`) resets `dst` one delay after it happened, behind the bytes that arrived before it.
    """

    def __init__(
        self, src: socket.socket, dst: socket.socket, delay_s: float, pair: _Pair, name: str
    ) -> None:
        self.src, self.dst, self.delay_s, self.pair, self.name = src, dst, delay_s, pair, name
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()  # (due, chunk); b"" = end
        self._queued_bytes = 0
        self._stopped = False  # no more bytes can reach `dst`: the reader stops, the queue is dropped
        self._cond = threading.Condition()
        pair.add(self)

    def start(self) -> None:
        if self.delay_s <= 0:
            threading.Thread(target=self._guard(self._copy), name=f"{self.name}-copy", daemon=True).start()
            return
        threading.Thread(target=self._guard(self._read), name=f"{self.name}-read", daemon=True).start()
        threading.Thread(target=self._guard(self._write), name=f"{self.name}-write", daemon=True).start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._queued_bytes = 0
            self._cond.notify_all()

    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except OSError as error:  # unforeseen: end the whole connection rather than leave it half-served
                log.warning("%s: %s", self.name, error)
                self.pair.close()

        return run

    def _copy(self) -> None:
        while data := self._recv():
            try:
                self.dst.sendall(data)
            except OSError as error:
                self._lost_dst(error)
                return
        if not self._stopped:
            self._end()

    def _recv(self) -> bytes:
        """The next chunk from `src`; b"" once it ends, by a half-close or a reset (noted on the pair)."""
        try:
            return self.src.recv(CHUNK)
        except OSError as error:
            if not self._stopped:  # not our own close waking us
                log.debug("%s: %s", self.name, error)
                self.pair.note_reset(self.src)
            return b""

    def _read(self) -> None:
        while True:
            data = self._recv()
            due = time.monotonic() + self.delay_s
            with self._cond:
                while self._queued_bytes > QUEUE_LIMIT and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                self._queue.append((due, data))
                self._queued_bytes += len(data)
                self._cond.notify_all()
            if not data:
                return

    def _write(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                due, data = self._queue.popleft()
                self._queued_bytes -= len(data)
                self._cond.notify_all()
            wait = due - time.monotonic()
            if wait > 0 and self.pair.closed.wait(wait):  # a timed wait, ended early by the pair's close
                return
            if not data:
                self._end()
                return
            try:
                self.dst.sendall(data)
            except OSError as error:
                self._lost_dst(error)
                return

    def _end(self) -> None:
        """`src` has ended: pass its reset or its half-close on to `dst`."""
        if self.pair.was_reset(self.src):
            self.pair.close()  # resets `dst`
            return
        with contextlib.suppress(OSError):  # the other side may be gone already
            self.dst.shutdown(socket.SHUT_WR)
        self.pair.direction_done()

    def _lost_dst(self, error: OSError) -> None:
        """Sending failed: `dst`'s peer reset it. Nothing more can reach it, so stop reading `src`."""
        if self._stopped:  # our own close
            return
        log.debug("%s: %s", self.name, error)
        # Linux reports a reset that came after the peer's FIN as EPIPE (and EPIPE once another thread took
        # the ECONNRESET, noting it): that FIN is a clean end, and the other direction passes it on as one.
        if not isinstance(error, BrokenPipeError):
            self.pair.note_reset(self.dst)
        self.stop()
        # The other direction, reading `dst`, passes the reset on to `src` one delay from now. If it has
        # ended already, this thread does, as the pair's last direction.
        if not self.pair.closed.wait(self.delay_s):
            self.pair.direction_done()


def _tight_timers() -> None:
    """Ask Linux for 1 ns timer slack (default 50 us) so sleeps end on time; inherited by new threads."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK = 29
    except (OSError, AttributeError) as error:
        log.debug("timer slack unchanged: %s", error)


def _tune(sock: socket.socket) -> None:
    # gRPC and the workers send small messages: Nagle would add up to 40 ms of its own delay.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(
    listener: socket.socket, target: tuple[str, int], policy: DelayPolicy, stop: threading.Event
) -> None:
    """Accept and proxy connections until `stop` is set."""
    _tight_timers()
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError as error:  # out of descriptors, say: this connection is lost, not the device
            log.warning("accept failed: %s", error)
            stop.wait(0.05)
            continue
        try:
            _proxy(client, target, policy)
        except OSError as error:  # the client reset before it was proxied: only its connection ends
            log.warning("dropped a connection that failed while it was set up: %s", error)
            client.close()


def _proxy(client: socket.socket, target: tuple[str, int], policy: DelayPolicy) -> None:
    peer_ip = client.getpeername()[0]
    delay_s = policy.for_peer(peer_ip)
    try:
        upstream = socket.create_connection(target, timeout=5.0)
    except OSError as error:
        log.warning("cannot reach %s:%d for %s: %s", *target, peer_ip, error)
        client.close()
        return
    try:
        upstream.settimeout(None)
        client.settimeout(None)
        _tune(client)
        _tune(upstream)
    except OSError:
        upstream.close()
        raise
    pair = _Pair(client, upstream)
    log.info("connection from %s: %.3f ms each way", peer_ip, delay_s * 1e3)
    DelayLine(client, upstream, delay_s, pair, f"{peer_ip}>").start()
    DelayLine(upstream, client, delay_s, pair, f"{peer_ip}<").start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TCP proxy adding a one-way delay in both directions")
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay for unlisted peers")
    parser.add_argument(
        "--peer-delay-ms", action="append", default=[], metavar="IP=MS", help="per-peer delay"
    )
    parser.add_argument(
        "--wait-s", type=float, default=60.0, help="how long to wait for the target to listen"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s proxy %(levelname)s: %(message)s")

    peers = {}
    for item in args.peer_delay_ms:
        ip, _, ms = item.partition("=")
        peers[ip] = float(ms) / 1e3
    policy = DelayPolicy(default_s=args.delay_ms / 1e3, peers_s=peers)
    target = parse_address(args.target)
    # Listen only once the target does: a connectable proxy then means a ready worker.
    if not wait_for(target, args.wait_s):
        log.error("nothing listens at %s after %.0f s; not starting", args.target, args.wait_s)
        return 3
    listener = socket.create_server(parse_address(args.listen), backlog=128, reuse_port=False)
    log.info("delaying %s -> %s (%s)", args.listen, args.target, policy)
    serve(listener, target, policy, threading.Event())
    return 0


if __name__ == "__main__":
    sys.exit(main())
