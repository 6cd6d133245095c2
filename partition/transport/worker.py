"""Run one stage worker until SIGTERM (deploy, serve): the Stage service plus health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from partition.artifacts import write_atomically
from partition.runtime.stage import WorkerSettings
from partition.transport.channels import TransportConfig
from partition.transport.links import STAGE_SERVICE
from partition.transport.server import GrpcServer
from partition.transport.servicer import StageServicer

log = logging.getLogger(__name__)


async def serve_worker(
    settings: WorkerSettings,
    config: TransportConfig,
    listen: str,
    grace_s: float = 5.0,
    ready_file: Path | None = None,
    on_serving: Callable[[str], None] | None = None,
    stop_when_stdin_closes: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT. Once the port is bound and those signals drain the worker gracefully,
    `ready_file` gets {"address", "port", "pid"} and `on_serving` a line saying where it serves (the port
    chosen for port 0 is known only then); the ready file goes once the worker stops, so that it never
    names a worker that is gone. With `stop_when_stdin_closes`, the end of standard input
    stops it the same way: the process that started it holds the pipe's other end, which the kernel
    closes however that process ends, SIGKILL included, so the worker does not outlive it."""
    servicer = StageServicer(settings, config)
    server = GrpcServer([servicer.handler()], [STAGE_SERVICE], config)
    port = await server.start(listen)
    host = listen.rpartition(":")[0]
    address = f"{host}:{port}"
    serving = f"worker {settings.name} serving on {address} ({'TLS' if config.tls else 'plaintext'})"

    def ready() -> None:
        log.info("%s", serving)
        if ready_file is not None:
            write_atomically(ready_file, json.dumps({"address": address, "port": port, "pid": os.getpid()}))
        if on_serving is not None:
            on_serving(serving)
        if stop_when_stdin_closes:
            threading.Thread(
                target=_stop_at_end_of_input, args=(server,), name="stdin-watch", daemon=True
            ).start()

    expiry = asyncio.ensure_future(servicer.expire_idle_sessions())
    try:
        await server.serve_until_signal(grace_s, on_ready=ready)
    finally:
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await expiry
        await servicer.close()
        if ready_file is not None:
            _remove_if_ours(ready_file)
        log.info("worker %s stopped", settings.name)


def _remove_if_ours(ready_file: Path) -> None:
    """Remove the ready file this worker wrote, unless another worker's has replaced it since."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(ready_file.read_text()).get("pid") == os.getpid():
            ready_file.unlink()


def _stop_at_end_of_input(server: GrpcServer) -> None:
    """Read standard input (what arrives is ignored) until it ends, then stop the server gracefully."""
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except (OSError, ValueError, AttributeError):  # no usable stdin: its end is now
        pass
    server.request_stop("standard input closed (the process that started this worker is gone)")
