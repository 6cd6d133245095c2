"""Stage.Forward on a worker (serve): the CHAIN and RETURN streams of one session.

CHAIN: accept the session (checking plan, epoch, model digest), open the same session on the next
stage, then for each step: decode, compute, encode in the compute lane (stage_step.py; a decode step
with other sessions open goes through the batcher, batching.py), and write the result to the next
stage, or to the session's RETURN route on the last stage. RETURN: relay the route's
results. The chain design and its error rules are written down in protos/partition/v1/forward.proto.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from partition.errors import PartitionError
from partition.runtime.compute import ComputeLane
from partition.runtime.errors import InvalidRequestError, StaleDeploymentError
from partition.runtime.sessions import Session
from partition.runtime.stage import StageRuntime
from partition.transport.batching import StepBatcher
from partition.transport.generated import forward_pb2
from partition.transport.links import ChannelPool, Downstream, StatusError
from partition.transport.messages import check_open_stream, check_step_header
from partition.transport.routes import End, ReturnRoutes
from partition.transport.stage_step import process_step
from partition.transport.status import parse, status_code

log = logging.getLogger(__name__)

_EOF = object()  # the caller half-closed its stream
# Steps of at most this many tokens (decode steps, short chunks) compute inline on the event loop;
# longer prefill chunks go to the compute thread so the worker keeps answering meanwhile.
INLINE_MAX_TOKENS = 16
# Messages of a CHAIN stream read ahead of the step computing: enough to overlap the next prefill
# chunk's transfer with this one's compute. Beyond them the stream is not read, so gRPC's flow control
# stops the caller, instead of the worker buffering whatever one session sends.
READ_AHEAD = 2
# After refusing a step, messages the caller still sends are read and dropped for this long before the
# stream ends: a client whose writes are in flight when the call ends gets INTERNAL from its gRPC core,
# not the refusal's status.
DRAIN_S = 0.2


class ForwardService:
    def __init__(
        self,
        runtime: StageRuntime,
        compute: ComputeLane,
        pool: ChannelPool,
        routes: ReturnRoutes,
        worker: str,
    ) -> None:
        self.runtime = runtime
        self.compute = compute
        self.pool = pool
        self.routes = routes
        self.worker = worker
        self.batcher = StepBatcher(runtime, compute, worker, runtime.settings.max_batch)
        self._opening: set[tuple[str, str]] = set()  # (session, pair) of CHAIN streams opening downstream

    async def handle(self, _request_iterator, context: grpc.aio.ServicerContext) -> None:
        """Raises PartitionError or StatusError; the caller turns them into the call's status."""
        data = await context.read()
        if data is grpc.aio.EOF:
            return
        first = parse(forward_pb2.ForwardRequest, data)
        if not first.HasField("open"):
            raise InvalidRequestError("the first message of a Forward stream must be an OpenStream")
        check_open_stream(first.open)
        if first.open.role == forward_pb2.STREAM_ROLE_CHAIN:
            await self._chain(first.open.session, first.open.pair_id, data, context)
        elif first.open.role == forward_pb2.STREAM_ROLE_RETURN:
            await self._return(first.open.session, first.open.pair_id, context)
        else:
            raise InvalidRequestError("OpenStream.role must be CHAIN or RETURN")

    # -- RETURN ---------------------------------------------------------------------------------------

    async def _return(
        self, ref: forward_pb2.SessionRef, pair_id: str, context: grpc.aio.ServicerContext
    ) -> None:
        await self.compute.call(self.runtime.check_deployment, ref.plan_id, ref.epoch, ref.model_digest)
        deployment = self.runtime.deployment
        if deployment is not None and deployment.downstream:
            raise StaleDeploymentError(
                f"this worker is not the last stage (its outputs go to {deployment.downstream}); open the "
                "RETURN stream on the last stage of the plan"
            )
        queue = self.routes.attach(ref.session_id, pair_id)
        listener = asyncio.ensure_future(self._refuse_requests(context, queue))
        try:
            opened = forward_pb2.ForwardReply(opened=forward_pb2.StreamOpened(stages=[self.worker]))
            await context.write(opened.SerializeToString())
            while True:
                item = await queue.get()
                if isinstance(item, End):
                    if item.status is not None:
                        raise item.status
                    return
                await context.write(item)
        finally:
            listener.cancel()
            self.routes.detach(ref.session_id, pair_id, queue)

    async def _refuse_requests(self, context: grpc.aio.ServicerContext, queue: asyncio.Queue) -> None:
        """A RETURN stream's caller sends nothing after its OpenStream: a message ends the stream, after
        the results already queued, with INVALID_ARGUMENT."""
        try:
            if await context.read() is grpc.aio.EOF:
                return
        except Exception:  # the call is over: the handler ends with it
            return
        refusal = "a RETURN stream carries only its OpenStream; send Steps on the session's CHAIN stream"
        queue.put_nowait(End(StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"[{self.worker}] {refusal}")))

    # -- CHAIN ----------------------------------------------------------------------------------------

    async def _chain(
        self,
        ref: forward_pb2.SessionRef,
        pair_id: str,
        open_request: bytes,
        context: grpc.aio.ServicerContext,
    ):
        session_id = ref.session_id
        session, downstream = await self._open(ref, pair_id, open_request)
        reader: asyncio.Task | None = None
        try:
            stages = [self.worker, *(downstream.opened.stages if downstream is not None else ())]
            opened = forward_pb2.StreamOpened(
                stages=stages, kv_slot=session.slot, next_position=session.next_position
            )
            await context.write(forward_pb2.ForwardReply(opened=opened).SerializeToString())

            inbox: asyncio.Queue = asyncio.Queue()
            room, draining = asyncio.Semaphore(READ_AHEAD), asyncio.Event()
            reader = asyncio.ensure_future(_pump(context, inbox, room, draining))
            if downstream is not None:
                downstream.on_failure(inbox.put_nowait)
            while (item := await inbox.get()) is not _EOF:
                if isinstance(item, BaseException):
                    raise item
                room.release()
                await self._step(item, session_id, pair_id, downstream)
            if downstream is not None:
                await downstream.finish()
            else:
                self.routes.finish(session_id, pair_id)
        except (PartitionError, StatusError) as error:
            if downstream is None:  # last stage: the RETURN stream ends with the same status
                self.routes.finish(session_id, pair_id, _as_status(error, self.worker))
            if reader is not None:
                draining.set()
                room.release()  # a pump waiting for room reads on, and drops what it reads
                await asyncio.wait({reader}, timeout=DRAIN_S)
            raise
        except (asyncio.CancelledError, CallerGone):  # the caller cancelled: end the rest of the chain too
            if downstream is None:
                self.routes.finish(
                    session_id,
                    pair_id,
                    StatusError(
                        grpc.StatusCode.CANCELLED,
                        f"[{self.worker}] the session's CHAIN stream was cancelled upstream "
                        "(by the coordinator, or by an earlier stage that failed)",
                    ),
                    abandoned=True,
                )
            raise
        finally:
            if reader is not None:
                reader.cancel()
            if downstream is not None:
                downstream.cancel()

    async def _open(
        self, ref: forward_pb2.SessionRef, pair_id: str, open_request: bytes
    ) -> tuple[Session, Downstream | None]:
        """Open the session here, then the same CHAIN stream on the next stage (None on the last)."""
        opening = (ref.session_id, pair_id)
        if opening in self._opening:  # each stage passes the same OpenStream on: it came round
            raise StaleDeploymentError(
                f"a CHAIN stream of session {ref.session_id!r} with this pair_id is already opening here: "
                "the chain's downstream addresses lead back to this worker (deploy each stage with the "
                "next stage's address), or the caller opened the same pair twice"
            )
        self._opening.add(opening)
        try:
            session, new = await self.compute.call(
                self.runtime.open_session, ref.session_id, ref.plan_id, ref.epoch, ref.model_digest
            )
            downstream_address = self.runtime.deployment.downstream
            if not downstream_address:
                return session, None
            try:
                return session, await Downstream.open(self.pool, downstream_address, open_request)
            except BaseException:  # refused downstream, or the caller gave up (cancelled) meanwhile
                if new:  # do not hold the session's KV slot until it expires
                    await self.compute.call(self.runtime.end_session, ref.session_id, ref.plan_id, ref.epoch)
                raise
        finally:
            self._opening.discard(opening)

    async def _step(self, data: bytes, session_id: str, pair_id: str, downstream: Downstream | None) -> None:
        recv_ns = time.time_ns()
        request = parse(forward_pb2.ForwardRequest, data)
        if not request.HasField("step"):
            raise InvalidRequestError("after its OpenStream, a CHAIN stream carries only Steps")
        step = request.step
        check_step_header(step, session_id)
        if self.batcher.takes(step):
            await self.batcher.run(step, recv_ns)
        else:
            inline = step.n_tokens <= INLINE_MAX_TOKENS
            await self.compute.call(
                process_step, self.runtime, step, recv_ns, time.perf_counter(), self.worker, inline=inline
            )
        step.hops[-1].sent_unix_ns = step.sent_unix_ns = time.time_ns()
        # `request` now holds the output step. ForwardRequest.step and ForwardReply.result are both
        # field 2 of type Step, so the same bytes serve the next stage and the RETURN stream.
        data = request.SerializeToString()
        if downstream is not None:
            await downstream.write(data)
        else:
            self.routes.put(session_id, pair_id, data)


class CallerGone(Exception):
    """The caller's side of a CHAIN stream broke (cancelled, disconnected) while the handler was not
    the task grpc cancels: the stream is abandoned as if the handler had been cancelled."""


async def _pump(
    context: grpc.aio.ServicerContext, inbox: asyncio.Queue, room: asyncio.Semaphore, draining: asyncio.Event
) -> None:
    """Move the caller's messages into `inbox`, so the handler also hears the downstream failing; each
    message takes one of `room`'s places, given back when the handler takes the message out. Once
    `draining`, read and drop them: the stream is ending."""
    try:
        while True:
            if not draining.is_set():
                await room.acquire()
            if (data := await context.read()) is grpc.aio.EOF:
                break
            if not draining.is_set():
                inbox.put_nowait(data)
        inbox.put_nowait(_EOF)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the upstream call broke: hand the error to the handler, which ends with it
        inbox.put_nowait(CallerGone(error))


def _as_status(error: PartitionError | StatusError, worker: str) -> StatusError:
    if isinstance(error, StatusError):
        return error
    return StatusError(status_code(error), f"[{worker}] {error}")
