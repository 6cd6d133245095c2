"""The stage actor (deploy, serve under Ray): one stage worker's gRPC server inside a Ray actor process.

Ray only places and supervises this process; activations never pass through Ray. The actor starts
the same Stage server as `partition worker` on its own event-loop thread, reports where it listens,
and serves until `stop` (or until Ray kills the process, which takes the server with it: nothing
outlives the actor).

    actor = ray.remote(StageActor).options(resources={"device:server-a": 0.01}).remote(options)
    info = ray.get(actor.info.remote())      # {"address": "10.0.0.7:40123", "node_id": ..., ...}
    done = actor.wait_stopped.remote()       # resolves when the actor stops, fails when it dies
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageOptions:
    """What one stage actor needs to serve; sent to it through Ray when it is created."""

    device: str  # the plan's device name: the worker's name in acks, errors and timings
    token: str  # shared secret every call to the worker must carry (fresh per serve)
    threads: int = 0  # torch intra-op threads (0: as many as the actor's CPUs)
    models_dir: str | None = None  # the only directory model paths may point into (same path on every node)
    kv_budget_bytes: int = 1 << 30  # bytes of KV cache the worker may preallocate
    idle_timeout_s: float = 600.0  # seconds without a step before a session's slot is freed
    grace_s: float = 5.0  # seconds running calls get to finish on stop
    # port to listen on (0: any free one); a stage started again after its actor died takes the old
    # one's, so the coordinator finds it at the same address
    port: int = 0


class StageActor:
    """Runs one stage worker. Methods are called through Ray; the server runs on its own thread."""

    def __init__(self, options: StageOptions) -> None:
        import ray
        import torch

        from partition.runtime.stage import WorkerSettings
        from partition.transport.channels import TransportConfig
        from partition.transport.links import STAGE_SERVICE
        from partition.transport.server import GrpcServer
        from partition.transport.servicer import StageServicer

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        threads = options.threads or int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))
        if threads:
            torch.set_num_threads(max(1, threads))
        self.options = options
        settings = WorkerSettings(
            name=options.device,
            models_dir=Path(options.models_dir) if options.models_dir else None,
            kv_budget_bytes=options.kv_budget_bytes,
            idle_timeout_s=options.idle_timeout_s,
        )
        config = TransportConfig(token=options.token)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stage-server", daemon=True)
        self._thread.start()
        self._stopped = threading.Event()
        host = ray.util.get_node_ip_address()

        async def start() -> int:
            # grpc.aio objects belong to the loop they are created on: build them there
            self._servicer = StageServicer(settings, config)
            self._server = GrpcServer([self._servicer.handler()], [STAGE_SERVICE], config)
            port = await self._server.start(f"{host}:{options.port}")
            self._expiry = asyncio.ensure_future(self._servicer.expire_idle_sessions())
            return port

        port = self._run(start())
        context = ray.get_runtime_context()
        self._info = {
            "device": options.device,
            "address": f"{host}:{port}",
            "node_id": context.get_node_id(),
            "node_ip": host,
            "actor_id": context.get_actor_id(),
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
        }
        log.info("stage %s serving on %s (node %s)", options.device, self._info["address"], host)

    def info(self) -> dict:
        """Where this stage serves: address, node_id, node_ip, actor_id, pid, threads."""
        return dict(self._info)

    def wait_stopped(self) -> str:
        """Block until `stop`; the driver holds this call to learn at once when the actor dies."""
        self._stopped.wait()
        return self.options.device

    def stop(self) -> None:
        """Stop serving: NOT_SERVING, let running calls finish for grace_s, close the worker."""
        if self._stopped.is_set():
            return

        async def stop() -> None:
            await self._server.stop(self.options.grace_s)
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
            await self._servicer.close()

        try:
            self._run(stop(), timeout_s=self.options.grace_s + 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._stopped.set()
        log.info("stage %s stopped", self.options.device)

    def _run(self, coro, timeout_s: float | None = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)
