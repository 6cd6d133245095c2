"""Checks and conversions between request messages and runtime arguments (every servicer).

Proto3 has no required fields, so a missing field reads as "" or 0; these checks turn that into
INVALID_ARGUMENT naming the field, before the runtime sees the request.
"""

from __future__ import annotations

from partition.errors import ConfigError
from partition.runtime.errors import InvalidRequestError
from partition.runtime.stage import Deployment, LoadResult
from partition.transport.generated import deploy_pb2, forward_pb2
from partition.types import Segment, check_address

MAX_ID_CHARS = 128
MAX_PAIR_ID_CHARS = 64


def check_session_ref(ref: forward_pb2.SessionRef, what: str) -> None:
    if not ref.session_id or len(ref.session_id) > MAX_ID_CHARS:
        raise InvalidRequestError(f"{what}: session_id must have 1 to {MAX_ID_CHARS} characters")
    _check_plan(ref.plan_id, ref.epoch, what)


def check_open_stream(open_stream: forward_pb2.OpenStream) -> None:
    check_session_ref(open_stream.session, "OpenStream")
    if len(open_stream.pair_id) > MAX_PAIR_ID_CHARS:
        raise InvalidRequestError(f"OpenStream: pair_id must have at most {MAX_PAIR_ID_CHARS} characters")


def check_step_header(step: forward_pb2.Step, session_id: str) -> None:
    if step.session_id != session_id:
        raise InvalidRequestError(
            f"step for session {step.session_id!r} on the stream of session {session_id!r}; "
            "open one Forward stream per session"
        )
    _check_plan(step.plan_id, step.epoch, "step")
    if step.n_tokens < 1:
        raise InvalidRequestError("step: n_tokens must be at least 1 (the tensor's seq dimension)")
    if not step.HasField("tensor"):
        raise InvalidRequestError("step: tensor is missing (token ids or activations for this stage)")


def deployment_of(request: deploy_pb2.LoadSegmentRequest) -> Deployment:
    _check_plan(request.plan_id, request.epoch, "LoadSegment")
    try:
        segment = Segment(request.start, request.end)
    except ValueError as error:
        raise InvalidRequestError(f"LoadSegment: {error}; units are half-open [start, end)") from None
    if request.downstream:
        try:
            check_address(request.downstream)
        except ConfigError as error:
            raise InvalidRequestError(f"LoadSegment downstream: {error}") from None
    return Deployment(
        plan_id=request.plan_id,
        epoch=request.epoch,
        model=request.model,
        model_digest="",  # filled in by the runtime from the worker's copy
        segment=segment,
        dtype=request.dtype,
        downstream=request.downstream,
        codec_out=request.codec_out or "raw",
        max_context=request.max_context,
        max_sessions=request.max_sessions,
        chain_workers=max(1, request.chain_workers),
    )


def load_reply(result: LoadResult, worker: str) -> deploy_pb2.LoadSegmentReply:
    d = result.deployment
    return deploy_pb2.LoadSegmentReply(
        worker=worker,
        plan_id=d.plan_id,
        epoch=d.epoch,
        model_name=result.model_name,
        model_digest=d.model_digest,
        weights_digest=result.weights_digest,
        start=d.segment.start,
        end=d.segment.end,
        n_blocks=result.n_blocks,
        hidden_size=result.hidden_size,
        vocab_size=result.vocab_size,
        kv_slots=result.kv_slots,
        max_context=d.max_context,
        weight_bytes=result.weight_bytes,
        kv_bytes=result.kv_bytes,
        load_s=result.load_s,
        device=result.device,
        chain_workers=d.chain_workers,
        units_kept=result.units_kept,
    )


def _check_plan(plan_id: str, epoch: int, what: str) -> None:
    if not plan_id:
        raise InvalidRequestError(f"{what}: plan_id is empty; send the deployed plan's id")
    if epoch < 1:
        raise InvalidRequestError(f"{what}: epoch must be at least 1, got {epoch}")
