"""Shared-token authentication on the server side (every worker rpc).

A call must carry `authorization: Bearer <token>` with the worker's token, or it ends with
UNAUTHENTICATED before any handler runs. Health checks are exempt so that supervisors (Ray, a load
balancer, `grpc_health_probe`) can watch a worker without the secret; they reveal only liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

import grpc

from partition.transport.channels import AUTH_HEADER

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
FIRST_MESSAGE_WAIT_S = 2.0  # how long a refused stream waits for the caller's first message


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        reason = self._refusal(handler_call_details.invocation_metadata or ())
        if reason is None:
            return await continuation(handler_call_details)
        log.warning("refused %s: %s", method, reason)
        handler = await continuation(handler_call_details)
        return _deny(handler, reason)

    def _refusal(self, metadata) -> str | None:
        values = [value for key, value in metadata if key == AUTH_HEADER]
        if not values:
            return f"no '{AUTH_HEADER}' metadata"
        given = values[0].encode() if isinstance(values[0], str) else values[0]
        if not hmac.compare_digest(given, self._expected):  # constant time: no timing oracle
            return "wrong token"
        return None


def _deny(handler: grpc.RpcMethodHandler | None, reason: str) -> grpc.RpcMethodHandler:
    message = (
        f"unauthenticated ({reason}): give partition serve, bench and profile --token-file with the token "
        f"in the worker's --token-file (another gRPC client: send metadata '{AUTH_HEADER}: Bearer <token>')"
    )

    async def abort(_request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_after_first_message(requests, context: grpc.aio.ServicerContext):
        # A streaming client writes its first message before it reads. If the refusal lands while that
        # write is in flight, the client's gRPC core fails the write and reports INTERNAL instead of our
        # status; taking the first message (as raw bytes) before refusing closes that race.
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            await asyncio.wait_for(anext(aiter(requests)), FIRST_MESSAGE_WAIT_S)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # Same streaming shape as the real handler, so the refusal reaches any kind of call. The request
    # is never deserialized: an unauthenticated caller cannot make the worker parse anything.
    streaming_in = handler is not None and handler.request_streaming
    streaming_out = handler is not None and handler.response_streaming
    if streaming_in and streaming_out:
        return grpc.stream_stream_rpc_method_handler(abort_after_first_message)
    if streaming_in:
        return grpc.stream_unary_rpc_method_handler(abort_after_first_message)
    if streaming_out:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)
