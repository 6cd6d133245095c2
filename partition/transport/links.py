"""Outgoing links of a worker (serve, profile): channels to other workers and the downstream CHAIN stream.

A stage keeps one channel per peer address and, per session, one open Forward stream to the next
stage. `Downstream` watches that stream so that a status from further down the chain reaches this
stage's upstream at once, with its original code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc

from partition.transport.channels import TransportConfig, auth_metadata, call_status, open_channel, reachable
from partition.transport.generated import forward_pb2, measure_pb2, stage_pb2

log = logging.getLogger(__name__)

# From the contract itself; importing stage_pb2 also registers the service for server reflection.
STAGE_SERVICE = stage_pb2.DESCRIPTOR.services_by_name["Stage"].full_name  # "partition.v1.Stage"
FORWARD = f"/{STAGE_SERVICE}/Forward"
PROBE = f"/{STAGE_SERVICE}/Probe"
OPEN_TIMEOUT_S = 30.0  # seconds for a downstream chain to accept a session (it checks every stage)


def probe_method(channel: grpc.Channel | grpc.aio.Channel):
    """Stage.Probe on `channel`, taking and giving messages (an asyncio or a blocking channel alike)."""
    return channel.stream_stream(
        PROBE,
        request_serializer=measure_pb2.ProbeRequest.SerializeToString,
        response_deserializer=measure_pb2.ProbeReply.FromString,
    )


class StatusError(Exception):
    """A gRPC status to end a call with (usually one received from another worker)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @staticmethod
    def from_rpc(error: grpc.aio.AioRpcError, address: str, channel: grpc.aio.Channel) -> StatusError:
        """The status our call to the next stage at `address`, on `channel`, failed with, to pass upstream."""
        code, details = call_status(error.code(), error.details() or "", channel)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            details = (
                f"cannot reach the next stage at {address} ({details}); check that its worker runs and "
                "the plan's address is right"
            )
        return StatusError(code, details)


class ChannelPool:
    """One channel per peer address, shared by all sessions and probes of this worker."""

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        self.metadata = auth_metadata(config)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self.config)
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


class Downstream:
    """This stage's CHAIN stream to the next stage, for one session."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        channel: grpc.aio.Channel,
        address: str,
        opened: forward_pb2.StreamOpened,
    ) -> None:
        self._call = call
        self._channel = channel
        self.address = address
        self.opened = opened
        self._closing = False
        self._ended: asyncio.Future[StatusError | None] = asyncio.get_running_loop().create_future()
        self._watcher = asyncio.ensure_future(self._watch())

    @staticmethod
    async def open(pool: ChannelPool, address: str, open_request: bytes) -> Downstream:
        """Open the stream and wait until the rest of the chain accepted the session."""
        channel = pool.get(address)
        if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            await reachable(channel)  # the next stage went away: a stage started again there is reached
        call = channel.stream_stream(FORWARD, response_deserializer=forward_pb2.ForwardReply.FromString)(
            metadata=pool.metadata
        )
        try:
            await call.write(open_request)
            reply = await asyncio.wait_for(call.read(), OPEN_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise StatusError.from_rpc(error, address, channel) from None
        except asyncio.InvalidStateError:  # the next stage ended the call before our first write
            reply = grpc.aio.EOF
        except TimeoutError:
            call.cancel()
            raise StatusError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the next stage at {address} did not accept the session within {OPEN_TIMEOUT_S:g} s",
            ) from None
        if reply is grpc.aio.EOF or not reply.HasField("opened"):
            code, details = await call.code(), await call.details()
            if code == grpc.StatusCode.OK:
                code, details = (
                    grpc.StatusCode.INTERNAL,
                    f"the next stage at {address} ended the stream unopened",
                )
            raise StatusError(code, details)
        return Downstream(call, channel, address, reply.opened)

    def on_failure(self, callback: Callable[[StatusError], None]) -> None:
        """Call `callback` if the stream ends with an error before `finish`."""

        def done(future: asyncio.Future) -> None:
            if not future.cancelled() and future.result() is not None:
                callback(future.result())

        self._ended.add_done_callback(done)

    async def write(self, step: bytes) -> None:
        try:
            await self._call.write(step)
        except grpc.aio.AioRpcError as error:
            raise StatusError.from_rpc(error, self.address, self._channel) from None
        except asyncio.InvalidStateError:  # the call already ended; its status explains why
            raise (await self._ended) or StatusError(
                grpc.StatusCode.INTERNAL, f"the stream to {self.address} ended"
            ) from None

    async def finish(self) -> None:
        """Half-close and wait for the next stage to finish; StatusError if it ended with an error."""
        self._closing = True
        with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
            await self._call.done_writing()
        error = await self._ended
        if error is not None:
            raise error

    def cancel(self) -> None:
        self._call.cancel()
        self._watcher.cancel()

    async def _watch(self) -> None:
        # After StreamOpened the next stage sends nothing on a CHAIN stream: the next read returns
        # only when the stream ends, and its status is what we pass upstream.
        try:
            reply = await self._call.read()
            if reply is not grpc.aio.EOF:
                status = StatusError(
                    grpc.StatusCode.INTERNAL,
                    f"the next stage at {self.address} sent a reply on a CHAIN stream",
                )
            else:
                code = await self._call.code()
                status = None if code == grpc.StatusCode.OK else StatusError(code, await self._call.details())
        except grpc.aio.AioRpcError as error:
            status = StatusError.from_rpc(error, self.address, self._channel)
        except asyncio.CancelledError:  # we cancelled the call: nothing to report
            if not self._ended.done():
                self._ended.set_result(None)
            raise
        if status is None and not self._closing:
            status = StatusError(
                grpc.StatusCode.ABORTED, f"the next stage at {self.address} ended the session's stream early"
            )
        if not self._ended.done():
            self._ended.set_result(status)
