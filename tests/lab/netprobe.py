"""Measure an echo server: round-trip times of small messages and echoed throughput.

Used by the lab tests from the host and, through `partition lab exec`, from inside a device.
Usage: netprobe.py HOST:PORT ROUNDS BYTES -> prints one JSON line {"rtt_s": [...], "mbps": float}
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(address: tuple[str, int], rounds: int, size: int = 64) -> list[float]:
    """Seconds for `size` bytes to come back, `rounds` times on one connection."""
    times = []
    with connect(address) as sock:
        for _ in range(rounds):
            start = time.perf_counter()
            sock.sendall(b"r" * size)
            got = 0
            while got < size:
                got += len(sock.recv(size - got))
            times.append(time.perf_counter() - start)
    return times


def echoed_mbps(address: tuple[str, int], total: int) -> float:
    """Megabits/s of payload sent and echoed back (the slower direction decides)."""
    with connect(address) as sock:

        def send() -> None:
            chunk, sent = b"t" * 65536, 0
            while sent < total:
                sock.sendall(chunk[: total - sent])
                sent += min(len(chunk), total - sent)

        sender = threading.Thread(target=send)
        start = time.perf_counter()
        sender.start()
        got = 0
        while got < total:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"echo closed after {got} of {total} bytes")
            got += len(data)
        elapsed = time.perf_counter() - start
        sender.join()
    return total * 8 / elapsed / 1e6


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    address = (host, int(port))
    rounds, size = int(sys.argv[2]), int(sys.argv[3])
    result = {"rtt_s": round_trips(address, rounds), "mbps": echoed_mbps(address, size) if size else None}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
