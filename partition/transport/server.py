"""A worker's gRPC server: our handlers plus health, reflection, auth and graceful shutdown (deploy, serve).

server = GrpcServer(handlers, ["partition.v1.Stage"], config)
port = await server.start("127.0.0.1:0")
await server.serve_until_signal(grace_s=5)   # SIGTERM/SIGINT: NOT_SERVING, drain, stop
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from partition.errors import ConfigError
from partition.transport.auth import TokenAuthInterceptor
from partition.transport.channels import TransportConfig, server_credentials, server_options
from partition.types import check_address

log = logging.getLogger(__name__)


class GrpcServer:
    def __init__(
        self,
        handlers: Sequence[grpc.GenericRpcHandler],
        service_names: Sequence[str],
        config: TransportConfig,
    ) -> None:
        interceptors = [TokenAuthInterceptor(config.token)] if config.token else []
        self._server = grpc.aio.server(interceptors=interceptors, options=server_options(config))
        self._server.add_generic_rpc_handlers(tuple(handlers))
        self._config = config
        self._service_names = list(service_names)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self._stopping = False
        self._wake_to_stop: Callable[[], None] | None = None  # as a signal does, from any thread
        self._stop_reason = "signal received"  # what the drain's log line says

    async def start(self, listen: str) -> int:
        """Bind `host:port` (port 0 = any free port), start serving; return the bound port."""
        check_address(listen, listening=True)
        # Tried first with a plain socket: a bind grpc fails is also logged by grpc's core, on stderr, in a
        # line of its own before ours, and its exception says only "Failed to bind".
        refused = bind_refusal(listen)
        if refused is not None:
            raise ConfigError(f"cannot listen on {listen}: {refused}")
        try:
            if self._config.tls_cert is not None:
                port = self._server.add_secure_port(listen, server_credentials(self._config))
            else:
                port = self._server.add_insecure_port(listen)
        except RuntimeError as error:  # grpc raises instead of returning 0 on bind failures
            # taken between the two tries, or refused by grpc alone
            raise ConfigError(f"cannot listen on {listen}: {bind_refusal(listen) or error}") from None
        if port == 0:
            raise ConfigError(
                f"cannot listen on {listen}: {bind_refusal(listen) or 'grpc could not bind it'}"
            )
        await self._server.start()
        for name in ("", *self._service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new calls, let running calls finish for `grace_s` seconds."""
        if self._stopping:
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace_s)

    async def serve_until_signal(self, grace_s: float, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully. `on_ready` runs once those signals stop
        the server gracefully: whoever it tells that the server is up may then send them."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        self._wake_to_stop = lambda: loop.call_soon_threadsafe(stop.set)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if on_ready is not None:
                try:
                    on_ready()
                except BaseException:  # nobody was told it is up (its ready file unwritable): stop it
                    await self.stop(0)
                    raise
            waiter = asyncio.ensure_future(self._server.wait_for_termination())
            signalled = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, signalled}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                log.info("%s: draining for up to %.1f s", self._stop_reason, grace_s)
            await self.stop(grace_s)
            for task in (waiter, signalled):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def request_stop(self, reason: str) -> None:
        """Stop as SIGTERM would, from any thread, `reason` logged; nothing before serve_until_signal runs,
        or once its loop is closed (the server stopped already)."""
        if self._wake_to_stop is not None:
            self._stop_reason = reason
            with contextlib.suppress(RuntimeError):  # "Event loop is closed"
                self._wake_to_stop()


def bind_refusal(listen: str) -> str | None:
    """Why `host:port` cannot be bound, and what to do; None when it can. Bound as grpc binds it: each
    address the host resolves to is tried (one bound is enough), with SO_REUSEADDR and without
    SO_REUSEPORT (server_options turns that off), so a port left in TIME_WAIT is not refused; port 0
    tries only the host."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")  # [::1]:7001
    try:
        addresses = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot resolve {host!r} ({error.strerror})"
    first_failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
            return None
        except OSError as error:
            first_failure = first_failure or error
    assert first_failure is not None  # getaddrinfo returns an address or raises
    advice = {
        errno.EADDRINUSE: "the port is in use: stop what listens there, or choose another port",
        errno.EADDRNOTAVAIL: (
            f"{host} is not an address of this machine: listen on one of its addresses, or on 0.0.0.0"
        ),
        errno.EACCES: "ports below 1024 need privileges: choose a higher port",
    }.get(first_failure.errno)
    reason = first_failure.strerror or str(first_failure)
    return f"{reason}; {advice}" if advice else reason
