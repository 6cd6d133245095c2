"""Waiting for a TCP listener (deploy, emulated lab): `lab up` waits for each device, the proxy for its
worker. Its own module so the package never imports the proxy, which runs as `python -m`."""

from __future__ import annotations

import socket
import time


def wait_for(target: tuple[str, int], timeout_s: float) -> bool:
    """True once something accepts connections at `target`, False after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(target, timeout=1.0).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
