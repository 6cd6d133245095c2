"""The Stage service on a worker (deploy, serve, profile): thin handlers over the stage runtime.

Handlers are registered without deserializers: each parses its request itself (garbage ->
INVALID_ARGUMENT), calls the runtime in the compute lane, and encodes the answer. Our exceptions
become statuses here and only here, with the worker's name in front of the message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import grpc

from partition.errors import PartitionError
from partition.runtime.compute import ComputeLane
from partition.runtime.errors import NOT_THIS_WORKER, InvalidRequestError, WrongWorkerError
from partition.runtime.stage import StageRuntime, WorkerSettings
from partition.transport.channels import TransportConfig
from partition.transport.forward import ForwardService
from partition.transport.generated import deploy_pb2, measure_pb2
from partition.transport.links import PROBE, STAGE_SERVICE, ChannelPool, StatusError
from partition.transport.messages import check_session_ref, deployment_of, load_reply
from partition.transport.routes import ReturnRoutes
from partition.transport.status import parse, status_code
from partition.types import check_address

log = logging.getLogger(__name__)

MAX_PROBE_ROUNDS = 1000
PEER_PROBE_TIMEOUT_S = 60.0  # seconds for all rounds of one worker-to-worker probe
_MESSAGE_OVERHEAD = 4096  # bytes kept free for a probe reply's other fields


class StageServicer:
    def __init__(self, settings: WorkerSettings, config: TransportConfig) -> None:
        self.worker = settings.name
        self.settings = settings
        self.config = config
        self.runtime = StageRuntime(settings)
        self.compute = ComputeLane()
        self.pool = ChannelPool(config)
        self.routes = ReturnRoutes()
        self.forward = ForwardService(self.runtime, self.compute, self.pool, self.routes, self.worker)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            STAGE_SERVICE,
            {
                "LoadSegment": self._unary(self.load_segment, deploy_pb2.LoadSegmentRequest),
                "Forward": self._stream(self.forward.handle),
                "EndSession": self._unary(self.end_session, deploy_pb2.EndSessionRequest),
                "Profile": self._unary(self.profile, measure_pb2.ProfileRequest),
                "Probe": self._stream(self.probe),
            },
        )

    async def close(self) -> None:
        await self.pool.close()
        self.compute.shutdown()

    # -- rpcs -----------------------------------------------------------------------------------------

    async def load_segment(
        self, request: deploy_pb2.LoadSegmentRequest, _context
    ) -> deploy_pb2.LoadSegmentReply:
        if request.worker and request.worker != self.worker:  # before anything is loaded or dropped
            raise WrongWorkerError(
                f"{NOT_THIS_WORKER}: this is worker {self.worker!r}, the LoadSegment is for {request.worker!r}; "
                "its segment and sessions are left as they were. Correct that device's address in the "
                "cluster file, or start its worker there"
            )
        wanted = deployment_of(request)
        result = await self.compute.call(self.runtime.load, wanted, request.model_digest, inline=False)
        for session_id in result.dropped_sessions:
            self.routes.drop(session_id, _redeployed(self.worker, wanted.plan_id, wanted.epoch))
        return load_reply(result, self.worker)

    async def end_session(
        self, request: deploy_pb2.EndSessionRequest, _context
    ) -> deploy_pb2.EndSessionReply:
        ref = request.session
        check_session_ref(ref, "EndSession")
        session = await self.compute.call(self.runtime.end_session, ref.session_id, ref.plan_id, ref.epoch)
        self.routes.drop(ref.session_id)
        if session is None:
            return deploy_pb2.EndSessionReply(found=False)
        return deploy_pb2.EndSessionReply(found=True, positions=session.next_position)

    async def profile(self, request: measure_pb2.ProfileRequest, _context) -> measure_pb2.ProfileReply:
        """Run the per-unit profiler here, on this worker's device, threads and CPU limits (minutes)."""
        from partition.artifacts import profile_to_json
        from partition.runtime.models_dir import resolve_allowed

        if not request.model:
            raise InvalidRequestError(
                "Profile: model is empty; name a built-in model or a path in --models-dir"
            )
        # PERMISSION_DENIED outside the models dir; a relative path is read inside it, as LoadSegment does
        source = resolve_allowed(request.model, self.settings.models_dir)
        # A caller that goes away (Ctrl-C on `partition profile --cluster`) stops the measuring at its
        # next timed call, instead of holding the compute lane, and with it every step, for minutes.
        stop = threading.Event()
        profile = await self.compute.call(
            _profile_here, request, source, self.worker, self.settings.device, stop,
            inline=False, on_cancel=stop.set,
        )  # fmt: skip
        return measure_pb2.ProfileReply(worker=self.worker, device_profile_json=profile_to_json(profile))

    async def probe(self, _request_iterator, context: grpc.aio.ServicerContext) -> None:
        limit = self.config.max_message_bytes - _MESSAGE_OVERHEAD
        while (data := await context.read()) is not grpc.aio.EOF:
            received = time.time_ns()
            request = parse(measure_pb2.ProbeRequest, data)
            if request.reply_bytes > limit:
                raise InvalidRequestError(
                    f"Probe: reply_bytes {request.reply_bytes} is over the limit of {limit}"
                )
            deployment = self.runtime.deployment
            reply = measure_pb2.ProbeReply(
                worker=self.worker,
                client_sent_unix_ns=request.client_sent_unix_ns,
                server_recv_unix_ns=received,
                payload=bytes(request.reply_bytes),
                plan_id=deployment.plan_id if deployment else "",
                epoch=deployment.epoch if deployment else 0,
            )
            if request.forward_to:
                reply.samples.extend(await self._probe_peer(request))
            reply.server_send_unix_ns = time.time_ns()
            await context.write(reply.SerializeToString())

    async def _probe_peer(self, request: measure_pb2.ProbeRequest) -> list[measure_pb2.ProbeSample]:
        address = request.forward_to
        try:
            check_address(address)
        except PartitionError as error:
            raise InvalidRequestError(f"Probe forward_to: {error}") from None
        if not 1 <= request.count <= MAX_PROBE_ROUNDS:
            raise InvalidRequestError(
                f"Probe: count must be 1..{MAX_PROBE_ROUNDS} with forward_to, got {request.count}"
            )
        channel = self.pool.get(address)
        call = channel.stream_stream(PROBE, response_deserializer=measure_pb2.ProbeReply.FromString)(
            metadata=self.pool.metadata, timeout=PEER_PROBE_TIMEOUT_S
        )
        samples = []
        try:
            for _ in range(request.count):
                t0 = time.time_ns()
                round_trip = measure_pb2.ProbeRequest(
                    payload=request.payload, reply_bytes=request.reply_bytes, client_sent_unix_ns=t0
                ).SerializeToString()
                await call.write(round_trip)
                reply = await call.read()
                t3 = time.time_ns()
                if reply is grpc.aio.EOF:
                    raise StatusError(grpc.StatusCode.UNAVAILABLE, f"{address} ended the probe stream early")
                samples.append(
                    measure_pb2.ProbeSample(
                        t0=t0,
                        t1=reply.server_recv_unix_ns,
                        t2=reply.server_send_unix_ns,
                        t3=t3,
                        request_bytes=len(round_trip),
                        reply_bytes=reply.ByteSize(),
                    )  # fmt: skip
                )
            await call.done_writing()
        except grpc.aio.AioRpcError as error:
            raise StatusError.from_rpc(error, address, channel) from None
        except asyncio.InvalidStateError:  # the peer ended the call before a write
            raise StatusError(await call.code(), await call.details() or "") from None
        finally:
            call.cancel()
        return samples

    async def expire_idle_sessions(self) -> None:
        """Run forever: free the KV slots of sessions idle past the timeout, and the unread results of
        sessions that ended."""
        period = min(max(self.settings.idle_timeout_s / 4, 0.05), 10.0)
        while True:
            await asyncio.sleep(period)
            for session_id in await self.compute.call(self.runtime.expire_idle):
                log.info("session %s expired after %.0f s idle", session_id, self.settings.idle_timeout_s)
                self.routes.drop(
                    session_id,
                    StatusError(
                        grpc.StatusCode.NOT_FOUND,
                        f"[{self.worker}] session {session_id!r} expired while idle",
                    ),
                )
            unopened = StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"[{self.worker}] the session is not open here (never opened, ended, or expired); open it "
                "with its CHAIN stream",
            )
            open_sessions = await self.compute.call(self.runtime.session_ids)
            self.routes.sweep(open_sessions, self.settings.idle_timeout_s, unopened)

    # -- plumbing -------------------------------------------------------------------------------------

    def _unary(self, method, request_type) -> grpc.RpcMethodHandler:
        async def handle(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                reply = await method(parse(request_type, data), context)
            except Exception as error:  # every failure leaves as a status; see _abort
                await self._abort(context, error)
            return reply.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(handle)

    def _stream(self, method) -> grpc.RpcMethodHandler:
        async def handle(request_iterator, context: grpc.aio.ServicerContext) -> None:
            try:
                await method(request_iterator, context)
            except Exception as error:  # every failure leaves as a status; see _abort
                await self._abort(context, error)

        return grpc.stream_stream_rpc_method_handler(handle)

    async def _abort(self, context: grpc.aio.ServicerContext, error: Exception) -> None:
        if isinstance(error, grpc.aio.AbortError):
            raise error  # context.abort was already called
        if isinstance(error, StatusError):
            await context.abort(error.code, error.details)
        if isinstance(error, PartitionError):
            await context.abort(status_code(error), self._for_caller(f"[{self.worker}] {error}"))
        log.exception("unexpected error in a Stage handler")
        await context.abort(
            grpc.StatusCode.INTERNAL,
            self._for_caller(
                f"[{self.worker}] internal error ({type(error).__name__}: {error}); the worker's log has the traceback"
            ),
        )

    def _for_caller(self, message: str) -> str:
        """`message` with the models dir's place on this disk written as <--models-dir>: a caller names
        models relative to it and has no use for (nor right to) the worker's directory layout."""
        models_dir = self.settings.models_dir
        if models_dir is None:
            return message
        root = str(models_dir.resolve())
        if root in message:
            log.info("told a caller: %s", message)  # the operator keeps the full path
        return message.replace(root, "<--models-dir>")


def _redeployed(worker: str, plan_id: str, epoch: int) -> StatusError:
    return StatusError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"[{worker}] the worker was redeployed to plan {plan_id!r} epoch {epoch}; this session was dropped",
    )


def _profile_here(request: measure_pb2.ProfileRequest, source, worker: str, device: str, stop):
    from partition.profile import profile_device
    from partition.transport.profile_request import requested_settings

    # Each sample is one call after an idle pause (ProfileSettings.idle_s), as a stage is called when
    # served; under a CPU quota that is also how the quota meets it (see partition/lab/cgroup.py).
    settings = requested_settings(request)
    return profile_device(
        source,
        settings,
        dtype=request.dtype or "float32",
        threads=request.threads or None,
        device=device,
        name=worker,
        refresh=request.refresh,
        stop=stop,
    )
