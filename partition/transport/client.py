"""The coordinator's side of the wire (deploy, serve, profile): control calls and a session's chain.

    chain = Chain(["127.0.0.1:7001", "127.0.0.1:7002"], TransportConfig())
    replies = await chain.load(plan_id, epoch, model, digest, segments, codecs)   # LoadSegment on every stage
    session = await chain.open_session("s1", plan_id, epoch, digest)
    result = await session.step(ids_BS, position=0)      # prefill: logits of the last position
    result = await session.step(next_BS, position=n)     # one decode step
    await session.close()                                # half-close streams, EndSession everywhere
    # or: await session.abandon()                        # cancel what is in flight, EndSession everywhere
    await chain.close()

`session.send` and `session.receive` split a step, so several prefill chunks can be in flight down
the chain at once. Every failure raises StageCallError with the gRPC code and the worker's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass

import grpc
import torch

from partition.errors import PartitionError
from partition.runtime.errors import InvalidRequestError
from partition.transport.channels import (
    TransportConfig,
    auth_metadata,
    call_status,
    open_channel,
    reachable,
)
from partition.transport.generated import deploy_pb2, forward_pb2, measure_pb2
from partition.transport.links import FORWARD, STAGE_SERVICE, probe_method
from partition.transport.tensors import MAX_ELEMENTS, from_proto, to_proto
from partition.types import Segment

LOAD_TIMEOUT_S = 900.0  # seconds: LoadSegment reads weights (and hashes the model file the first time)
CONTROL_TIMEOUT_S = 10.0  # seconds for EndSession and other quick calls
OPEN_TIMEOUT_S = 60.0  # seconds for a whole chain to accept a session
STEP_TIMEOUT_S = 120.0  # seconds for one step's result (a long prefill on a slow device)
CLOSE_TIMEOUT_S = 5.0  # seconds for a closed session's streams to end by themselves
CHAIN_STATUS_WAIT_S = 2.0  # seconds to wait for the CHAIN stream's status after RETURN ended early
CHAIN, RETURN = forward_pb2.STREAM_ROLE_CHAIN, forward_pb2.STREAM_ROLE_RETURN  # a session's two streams


class StageCallError(PartitionError):
    """A call to a worker failed; `code` is the gRPC status, the message is the worker's."""

    def __init__(self, code: grpc.StatusCode, details: str, address: str, device: str = "") -> None:
        where = f"{device} at {address}" if device else address
        super().__init__(f"{where}: {code.name}: {details}")
        self.code = code
        self.details = details
        self.address = address
        self.device = device  # the plan's name for the worker at `address`, where the caller knows it


@dataclass(frozen=True)
class StepResult:
    output: torch.Tensor  # [1, n, hidden] or logits [1, n, vocab] (n = 1 with last_only)
    position: int  # first position of the step
    n_tokens: int
    hops: tuple[forward_pb2.HopTiming, ...]  # one per stage, in chain order (stamps on each stage's clock)
    sent_unix_ns: int  # when the coordinator wrote the step (coordinator clock)
    received_unix_ns: int  # when its result was read off the RETURN stream (coordinator clock)
    encode_s: float  # coordinator seconds encoding the input
    decode_s: float  # coordinator seconds decoding the result
    bytes_sent: int  # encoded input bytes (Tensor.data) sent to the first stage
    bytes_received: int  # encoded result bytes received from the last stage
    codec_received: str = "raw"  # how the result was encoded ("top-k" for the largest logits only)
    log_probs_sent: bool = False  # the last stage sent log-probabilities, as the step asked (Step.log_probs)


class StageClient:
    """Unary and probe calls to one worker."""

    def __init__(
        self, address: str, config: TransportConfig, channel: grpc.aio.Channel | None = None
    ) -> None:
        self.address = address
        self._own_channel = channel is None
        self.channel = channel or open_channel(address, config)
        self.metadata = auth_metadata(config)

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close()

    async def _unary(self, method: str, request, reply_type, timeout_s: float):
        call = self.channel.unary_unary(
            f"/{STAGE_SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        try:
            return await call(request, timeout=timeout_s, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            raise StageCallError(error.code(), error.details() or "", self.address) from None

    async def load_segment(
        self, request: deploy_pb2.LoadSegmentRequest, timeout_s: float = LOAD_TIMEOUT_S
    ) -> deploy_pb2.LoadSegmentReply:
        return await self._unary("LoadSegment", request, deploy_pb2.LoadSegmentReply, timeout_s)

    async def end_session(
        self, ref: forward_pb2.SessionRef, timeout_s: float = CONTROL_TIMEOUT_S
    ) -> deploy_pb2.EndSessionReply:
        request = deploy_pb2.EndSessionRequest(session=ref)
        return await self._unary("EndSession", request, deploy_pb2.EndSessionReply, timeout_s)

    async def profile(self, request: measure_pb2.ProfileRequest, timeout_s: float = LOAD_TIMEOUT_S):
        return await self._unary("Profile", request, measure_pb2.ProfileReply, timeout_s)

    def _probe_call(self, timeout_s: float):
        return probe_method(self.channel)(metadata=self.metadata, timeout=timeout_s)

    async def probe(
        self, rounds: int, payload_bytes: int = 0, reply_bytes: int = 0, timeout_s: float = 60.0
    ) -> list[measure_pb2.ProbeSample]:
        """`rounds` round trips over one Probe stream: (t0, t1, t2, t3) samples for RTT and clock offset."""
        call = self._probe_call(timeout_s)
        payload = bytes(payload_bytes)
        samples = []
        try:
            async with _stage_errors(call, self.address, self.channel):
                for _ in range(rounds):
                    request = measure_pb2.ProbeRequest(
                        payload=payload, reply_bytes=reply_bytes, client_sent_unix_ns=time.time_ns()
                    )
                    await call.write(request)
                    reply = await call.read()
                    t3 = time.time_ns()
                    if reply is grpc.aio.EOF:
                        break
                    samples.append(_sample(request, reply, t3))
                await call.done_writing()
        finally:
            call.cancel()
        return samples

    async def probe_link(
        self, target: str, rounds: int, payload_bytes: int = 0, reply_bytes: int = 0, timeout_s: float = 120.0
    ) -> list[measure_pb2.ProbeSample]:
        """Samples of this worker probing the worker at `target` (a worker-to-worker link)."""
        request = measure_pb2.ProbeRequest(
            payload=bytes(payload_bytes), reply_bytes=reply_bytes, forward_to=target, count=rounds
        )
        reply = await self.probe_once(request, timeout_s)
        return list(reply.samples) if reply is not None else []

    async def worker_name(self, timeout_s: float = 60.0) -> str:
        """The --name of the worker that answers here (one Probe round trip; "" if it ended the call)."""
        reply = await self.probe_once(measure_pb2.ProbeRequest(), timeout_s)
        return reply.worker if reply is not None else ""

    async def probe_once(
        self, request: measure_pb2.ProbeRequest, timeout_s: float
    ) -> measure_pb2.ProbeReply | None:
        """`request` on a Probe stream of its own and the one reply to it (None if the call ended first)."""
        call = self._probe_call(timeout_s)
        try:
            async with _stage_errors(call, self.address, self.channel):
                await call.write(request)
                reply = await call.read()
                await call.done_writing()
        finally:
            call.cancel()
        return None if reply is grpc.aio.EOF else reply


def _sample(
    request: measure_pb2.ProbeRequest, reply: measure_pb2.ProbeReply, t3: int
) -> measure_pb2.ProbeSample:
    return measure_pb2.ProbeSample(
        t0=request.client_sent_unix_ns,
        t1=reply.server_recv_unix_ns,
        t2=reply.server_send_unix_ns,
        t3=t3,
        request_bytes=request.ByteSize(),
        reply_bytes=reply.ByteSize(),
    )


class Chain:
    """The stages of one deployed plan, in chain order (first holds the input side, last returns)."""

    def __init__(self, addresses: Sequence[str], config: TransportConfig) -> None:
        if not addresses:
            raise ValueError("a chain needs at least one stage address")
        self.addresses = list(addresses)
        self.config = config
        self.stages = [StageClient(address, config) for address in self.addresses]
        # what the last stage returns per token (its vocabulary when it holds the head, else the hidden
        # size), from its LoadSegment reply: a result of any other width is refused before decoding
        self.output_width = 0
        self._background: set[asyncio.Task] = set()  # calls no caller waits for (the loop holds them weakly)

    def end_in_background(self, call: Coroutine) -> None:
        """Run `call` (an EndSession) on this loop without waiting for it; a failure of the call is dropped:
        the session it ends has already failed, and a stage that does not answer frees it at its idle
        timeout. Closing the chain's channels ends it."""
        task = asyncio.ensure_future(_dropping_errors(call))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for stage in self.stages:
            await stage.close()

    async def away(self, timeout_s: float) -> list[str]:
        """The addresses of the stages whose channel does not connect within `timeout_s` (a worker down;
        the wait lets one started again be reached), or whose worker then does not answer one probe
        within `timeout_s` (one that hangs: its connection stays up, and a call to it would wait for
        its whole deadline)."""
        return [address for address, serves in (await self.look(timeout_s)).items() if serves is None]

    async def look(self, timeout_s: float, tries: int = 1) -> dict[str, tuple[str, int] | None]:
        """Per stage address, the (plan_id, epoch) its worker serves now ("", 0: nothing loaded), from one
        probe each, all at once; None for a worker away, as `away` says. A worker that misses is asked
        again at once, up to `tries` probes in all (each with its own `timeout_s` to connect and to
        answer): one probe lost, or late behind a busy host's work, does not count it away."""

        async def answers(stage: StageClient) -> tuple[str, int] | None:
            if not await reachable(stage.channel, timeout_s):
                return None
            try:
                reply = await stage.probe_once(
                    measure_pb2.ProbeRequest(client_sent_unix_ns=time.time_ns()), timeout_s
                )
            except StageCallError:
                return None
            return None if reply is None else (reply.plan_id, reply.epoch)

        async def serves(stage: StageClient) -> tuple[str, int] | None:
            for _ in range(tries):
                if (serving := await answers(stage)) is not None:
                    return serving
            return None

        found = await asyncio.gather(*(serves(stage) for stage in self.stages))
        return {stage.address: serving for stage, serving in zip(self.stages, found, strict=True)}

    async def load(
        self,
        plan_id: str,
        epoch: int,
        model: str,
        segments: Sequence[Segment],
        codecs: Sequence[str],
        model_digest: str = "",
        dtype: str = "float32",
        max_context: int = 0,
        max_sessions: int = 0,
        workers: Sequence[str] = (),
    ) -> list[deploy_pb2.LoadSegmentReply]:
        """LoadSegment on every stage at once; stage i's downstream is stage i + 1's address. `workers`:
        the name each stage's worker must have (a worker by another name refuses and keeps its segment)."""
        if not len(segments) == len(codecs) == len(self.stages):
            raise ValueError(f"{len(self.stages)} stages need as many segments and codecs")
        if workers and len(workers) != len(self.stages):
            raise ValueError(f"{len(self.stages)} stages need as many worker names, got {len(workers)}")
        requests = [
            deploy_pb2.LoadSegmentRequest(
                plan_id=plan_id,
                epoch=epoch,
                model=model,
                model_digest=model_digest,
                start=segment.start,
                end=segment.end,
                dtype=dtype,
                downstream=self.addresses[i + 1] if i + 1 < len(self.addresses) else "",
                codec_out=codec,
                max_context=max_context,
                max_sessions=max_sessions,
                worker=workers[i] if workers else "",
                chain_workers=len(self.stages),
            )
            for i, (segment, codec) in enumerate(zip(segments, codecs, strict=True))
        ]
        replies = list(
            await asyncio.gather(*(s.load_segment(r) for s, r in zip(self.stages, requests, strict=True)))
        )
        last = replies[-1]
        self.output_width = last.vocab_size if last.end == last.n_blocks + 2 else last.hidden_size
        return replies

    async def open_session(
        self, session_id: str, plan_id: str, epoch: int, model_digest: str, timeout_s: float = OPEN_TIMEOUT_S
    ) -> ChainSession:
        ref = forward_pb2.SessionRef(
            session_id=session_id, plan_id=plan_id, epoch=epoch, model_digest=model_digest
        )
        session = ChainSession(self, ref)
        await session._open(timeout_s)
        return session


class ChainSession:
    """One session's CHAIN stream (to the first stage) and RETURN stream (from the last stage)."""

    def __init__(self, chain: Chain, ref: forward_pb2.SessionRef) -> None:
        self.chain = chain
        self.ref = ref
        self.stages: tuple[str, ...] = ()  # worker names that accepted the session, in chain order
        self._inbox: asyncio.Queue = asyncio.Queue()
        # position -> (sent ns, encode s, bytes, n_tokens, width): a result holds at most n_tokens rows
        # (one for OUTPUT_SELECT_LAST where the last stage holds the head; hidden states come for every
        # one) of `width` values (a scored prompt's rows are narrower than logits)
        self._sent: dict[int, tuple[int, float, int, int, int]] = {}
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self._failure: StageCallError | None = None  # once the chain failed, every receive raises it
        # pairs this CHAIN stream with this RETURN stream: a session opened again (resume, re-plan) gets
        # none of the old streams' results or end
        self.pair_id = secrets.token_hex(8)

        def forward_call(stage: StageClient) -> grpc.aio.StreamStreamCall:
            return stage.channel.stream_stream(
                FORWARD,
                request_serializer=forward_pb2.ForwardRequest.SerializeToString,
                response_deserializer=forward_pb2.ForwardReply.FromString,
            )(metadata=stage.metadata)

        self._chain_call = forward_call(chain.stages[0])
        self._return_call = forward_call(chain.stages[-1])

    async def _open(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                opened = await asyncio.gather(
                    _open_stream(self._chain_call, self.ref, self.pair_id, CHAIN, self.chain.stages[0]),
                    _open_stream(self._return_call, self.ref, self.pair_id, RETURN, self.chain.stages[-1]),
                )
        except BaseException as error:
            self._cancel()
            # Stages free a session the chain refused, but not one the whole chain accepted before the
            # RETURN stream failed: end it everywhere rather than hold KV slots until they expire.
            with contextlib.suppress(StageCallError):
                await asyncio.gather(*(s.end_session(self.ref, timeout_s=2.0) for s in self.chain.stages))
            if isinstance(error, TimeoutError):
                raise StageCallError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the chain did not accept the session within {timeout_s:g} s",
                    self.chain.addresses[0],
                ) from None
            raise
        self.stages = tuple(opened[0].stages)
        self.next_position = opened[0].next_position
        self._tasks = [
            asyncio.ensure_future(self._watch_chain()),
            asyncio.ensure_future(self._pump_results()),
        ]

    async def send(
        self,
        x: torch.Tensor,
        position: int,
        codec: str = "raw",
        last_only: bool = True,
        logits_top_k: int = 0,
        log_probs: bool = False,
        score_next: list[int] | None = None,
        score_top: int = 0,
    ) -> None:
        """Write one step: token ids [1, S] (or activations [1, S, D] if stage 1 takes them) at `position`.

        `logits_top_k`: if the last stage holds the head, it returns only the K largest logits (0: all).
        `log_probs`: it returns log-probabilities over the whole vocabulary instead of logits.
        `score_next`: it returns each position's score of its next token instead (model/scoring.py),
        with the `score_top` likeliest in its place.
        """
        started = time.perf_counter()
        tensor = to_proto(x, codec)
        encode_s = time.perf_counter() - started
        step = forward_pb2.Step(
            session_id=self.ref.session_id,
            plan_id=self.ref.plan_id,
            epoch=self.ref.epoch,
            position=position,
            n_tokens=x.shape[1],
            tensor=tensor,
            output=forward_pb2.OUTPUT_SELECT_LAST if last_only else forward_pb2.OUTPUT_SELECT_ALL,
            logits_top_k=logits_top_k,
            log_probs=log_probs,
            score_next=score_next or (),
            score_top=score_top,
        )
        step.sent_unix_ns = time.time_ns()
        width = 1 + 2 * score_top if score_next else self.chain.output_width  # of each row of its result
        self._sent[position] = (step.sent_unix_ns, encode_s, len(tensor.data), x.shape[1], width)
        try:
            await self._chain_call.write(forward_pb2.ForwardRequest(step=step))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            raise await self._chain_failure() from None

    async def receive(self, timeout_s: float = STEP_TIMEOUT_S) -> StepResult:
        """The next result, in step order."""
        if self._failure is not None and self._inbox.empty():
            raise self._failure
        try:
            async with asyncio.timeout(timeout_s):
                item = await self._inbox.get()
        except TimeoutError:
            raise StageCallError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no result within {timeout_s:g} s (stages {', '.join(self.stages)})",
                self.chain.addresses[-1],
            ) from None
        if isinstance(item, BaseException):
            raise item
        reply, received_ns = item
        step = reply.result
        sent = self._sent.pop(step.position, (0, 0.0, 0, 1, self.chain.output_width))
        sent_ns, encode_s, bytes_sent, rows, width = sent
        if step.score_next and not step.scores_sent:
            raise StageCallError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "it sent logits back where a prompt's scores were asked (Step.score_next): it runs a "
                "partition older than this coordinator; update it, or ask without echo and logprobs",
                self.chain.addresses[-1],
            )
        started = time.perf_counter()
        # the values the step asked for, not what the result's header says: a header can say anything
        limit = min(rows * width, MAX_ELEMENTS) if width else MAX_ELEMENTS
        try:
            output = from_proto(step.tensor, limit, width)
        except InvalidRequestError as error:
            raise StageCallError(
                grpc.StatusCode.INVALID_ARGUMENT, f"a malformed result: {error}", self.chain.addresses[-1]
            ) from None
        decode_s = time.perf_counter() - started
        return StepResult(
            output=output,
            position=step.position,
            n_tokens=step.n_tokens,
            hops=tuple(step.hops),
            sent_unix_ns=sent_ns,
            received_unix_ns=received_ns,
            encode_s=encode_s,
            decode_s=decode_s,
            bytes_sent=bytes_sent,
            bytes_received=len(step.tensor.data),
            codec_received=step.tensor.codec or "raw",
            log_probs_sent=step.log_probs_sent,
        )

    async def step(
        self,
        x: torch.Tensor,
        position: int,
        codec: str = "raw",
        last_only: bool = True,
        logits_top_k: int = 0,
        log_probs: bool = False,
        score_next: list[int] | None = None,
        score_top: int = 0,
    ) -> StepResult:
        await self.send(x, position, codec, last_only, logits_top_k, log_probs, score_next, score_top)
        return await self.receive()

    async def close(self, end_session: bool = True) -> None:
        """Half-close the streams and, with `end_session`, free the session's KV slot on every stage."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._chain_call.done_writing()
        # Let the half-close travel down the chain so both streams end with OK, then make sure no
        # call outlives the session (a call still pending when its event loop closes is an error).
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
        await self._end(CONTROL_TIMEOUT_S if end_session else None)

    async def abandon(self) -> None:
        """End the session now, a step still in flight included: both streams are cancelled, and each
        stage cancels its next one in turn, so a step not passed on yet goes no further (the stage
        computing it finishes first: a forward cannot be cut). EndSession then frees its KV slot on
        every stage, answered by that stage once its forward is done: it may take a step's time."""
        if self._closed:
            return
        self._closed = True
        await self._end(STEP_TIMEOUT_S)

    async def _end(self, end_session_timeout_s: float | None) -> None:
        """Cancel the streams and wait for their tasks; then, given a timeout, EndSession on every stage."""
        self._cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if end_session_timeout_s is None:
            return
        waited = []
        for stage in self.chain.stages:
            ending = stage.end_session(self.ref, end_session_timeout_s)
            if self._stopped_answering(stage):
                self.chain.end_in_background(ending)
            else:
                waited.append(ending)
        await asyncio.gather(*waited)

    def _stopped_answering(self, stage: StageClient) -> bool:
        """Whether the session failed because `stage` stopped answering (UNAVAILABLE: gone, or hung with
        its connection's keepalive unanswered). Its EndSession is not waited for: to a hung stage it
        only waits out its deadline before the caller hears the failure. It is still sent, so a stage
        whose connection broke and came back frees the slot now rather than at its idle timeout."""
        failure = self._failure
        return (
            failure is not None
            and failure.code == grpc.StatusCode.UNAVAILABLE
            and failure.address == stage.address
        )

    def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._chain_call.cancel()
        self._return_call.cancel()

    async def _watch_chain(self) -> None:
        # The CHAIN stream carries no replies after StreamOpened: this read returns when it ends.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            await self._chain_call.read()
        if not self._closed:
            self._fail(await self._chain_failure())

    async def _pump_results(self) -> None:
        address = self.chain.addresses[-1]
        try:
            while (reply := await self._return_call.read()) is not grpc.aio.EOF:
                self._inbox.put_nowait((reply, time.time_ns()))
            error = StageCallError(
                grpc.StatusCode.ABORTED, "the RETURN stream ended before the session", address
            )
        except grpc.aio.AioRpcError as rpc_error:
            error = StageCallError(rpc_error.code(), rpc_error.details() or "", address)
        if self._closed:
            return
        if error.code in (grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED):
            # An earlier stage failed and ended the rest of the chain; its own status, with the
            # original code, arrives on the CHAIN stream. Give it a moment to win.
            await asyncio.wait(self._tasks[:1], timeout=CHAIN_STATUS_WAIT_S)
        self._fail(error)

    def _fail(self, error: StageCallError) -> None:
        if self._failure is None:
            self._failure = error
            self._inbox.put_nowait(error)

    async def _chain_failure(self) -> StageCallError:
        code = await self._chain_call.code()
        details = await self._chain_call.details() or ""
        if code == grpc.StatusCode.OK:
            code, details = grpc.StatusCode.ABORTED, "the chain ended the session's stream"
        else:
            code, details = call_status(code, details, self.chain.stages[0].channel)
        return StageCallError(code, details, self.chain.addresses[0])


async def _dropping_errors(call: Coroutine) -> None:
    with contextlib.suppress(StageCallError, grpc.aio.AioRpcError):
        await call


@contextlib.asynccontextmanager
async def _stage_errors(call: grpc.aio.StreamStreamCall, address: str, channel: grpc.aio.Channel):
    """A streaming call's failures as StageCallError naming the stage at `address` (on `channel`)."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        raise StageCallError(*call_status(error.code(), error.details() or "", channel), address) from None
    except asyncio.InvalidStateError:  # the worker ended the call before our write (e.g. no token)
        raise StageCallError(await call.code(), await call.details() or "", address) from None


async def _open_stream(
    call: grpc.aio.StreamStreamCall, ref: forward_pb2.SessionRef, pair_id: str, role: int, stage: StageClient
) -> forward_pb2.StreamOpened:
    address = stage.address
    async with _stage_errors(call, address, stage.channel):
        opening = forward_pb2.OpenStream(session=ref, pair_id=pair_id, role=role)
        await call.write(forward_pb2.ForwardRequest(open=opening))
        reply = await call.read()
    if reply is grpc.aio.EOF:
        raise StageCallError(await call.code(), await call.details() or "stream ended unopened", address)
    return reply.opened
