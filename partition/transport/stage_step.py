"""What a worker does with a step in its compute lane (serve): check, decode, compute, encode, and the
hop record; one session's step alone, or the decode steps of several sessions as one forward.

Each function turns the incoming Step into the outgoing one in place (ForwardRequest.step and
ForwardReply.result share its type), so the caller serializes the same message on.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import torch

from partition.model.generation import MAX_TOP_LOGPROBS, as_log_probs
from partition.model.scoring import LARGEST_SCORED_VOCAB, scored_rows
from partition.runtime.errors import InvalidRequestError
from partition.runtime.sessions import Session
from partition.runtime.stage import StageRuntime
from partition.transport.generated import forward_pb2
from partition.transport.tensors import RAW, from_proto, to_proto, to_top_k_proto


@dataclass
class Prepared:
    """A step checked against the session and decoded: ready to compute."""

    step: forward_pb2.Step
    session: Session
    x: torch.Tensor
    last_only: bool
    top_k: int
    log_probs: bool  # the output goes back as log-probabilities (Step.log_probs)
    score_next: list[int]  # Step.score_next, on the stage that scores them: the output goes back scored
    recv_ns: int  # Unix ns when the step was read off its stream
    submitted: float  # perf_counter when it was handed to the compute lane
    started: float  # perf_counter when its work began
    decoded: float  # perf_counter when its input was decoded


def process_step(runtime: StageRuntime, step: forward_pb2.Step, recv_ns: int, submitted: float, worker: str):
    """One session's step, alone; `step` becomes the output with its hop record."""
    return compute_alone(runtime, prepare(runtime, step, recv_ns, submitted), worker)


def compute_alone(runtime: StageRuntime, prepared: Prepared, worker: str) -> forward_pb2.Step:
    """Run a prepared step's segment for its session alone, then `finish` it."""
    step = prepared.step
    out = runtime.run_step(prepared.session, prepared.x, step.n_tokens, prepared.last_only)
    return finish(runtime, prepared, out, time.perf_counter() - prepared.decoded, 1, worker)


@dataclass
class Waiting:
    """A decode step waiting to be computed with others, and the future its caller awaits."""

    step: forward_pb2.Step
    recv_ns: int
    submitted: float
    result: asyncio.Future

    @property
    def wanted(self) -> bool:
        """False once its caller went away (the future cancelled): its step is not computed."""
        return not self.result.done()

    def done(self, output: forward_pb2.Step) -> None:
        if not self.result.done():
            self.result.set_result(output)

    def fail(self, error: BaseException) -> None:
        if not self.result.done():
            self.result.set_exception(error)


def process_decode_steps(runtime: StageRuntime, waiting: list[Waiting], worker: str) -> None:
    """The decode steps of different sessions (one step each) as one forward. A step refused before
    the forward fails alone; if the forward itself fails, each step is run alone, so one bad row ends
    only its own session; a step whose output cannot be encoded fails alone and its session stays
    where it was, as with `process_step`."""
    ready: list[tuple[Waiting, Prepared]] = []
    for item in waiting:
        try:
            ready.append((item, prepare(runtime, item.step, item.recv_ns, item.submitted)))
        except Exception as error:
            item.fail(error)
    if len(ready) == 1:
        item, prepared = ready[0]
        _finish_alone(runtime, item, prepared, worker)
        return
    if not ready:
        return
    ready.sort(key=lambda pair: pair[1].session.slot)  # consecutive slots read the KV cache as a view
    computing = time.perf_counter()
    try:
        out = runtime.run_decode_steps([(prepared.session, prepared.x) for _, prepared in ready])
    except Exception:
        for item, prepared in ready:
            _finish_alone(runtime, item, prepared, worker)
        return
    compute_s = time.perf_counter() - computing
    for row, (item, prepared) in enumerate(ready):
        try:
            item.done(finish(runtime, prepared, out[row : row + 1], compute_s, len(ready), worker))
        except Exception as error:
            item.fail(error)


def _finish_alone(runtime: StageRuntime, item: Waiting, prepared: Prepared, worker: str) -> None:
    try:
        item.done(compute_alone(runtime, prepared, worker))
    except Exception as error:
        item.fail(error)


def prepare(runtime: StageRuntime, step: forward_pb2.Step, recv_ns: int, submitted: float) -> Prepared:
    """Check the step against its session and the deployment, then decode its input."""
    started = time.perf_counter()
    session = runtime.begin_step(step.session_id, step.plan_id, step.epoch, step.position, step.n_tokens)
    last_stage = not runtime.deployment.downstream
    last_only = last_stage and step.output == forward_pb2.OUTPUT_SELECT_LAST
    top_k = step.logits_top_k if last_stage and runtime.returns_logits else 0
    log_probs = step.log_probs and last_stage and runtime.returns_logits
    if top_k and not (last_only or step.n_tokens == 1):
        raise InvalidRequestError(
            f"logits_top_k={top_k} applies to the last position only: send the step with OUTPUT_SELECT_LAST"
        )
    expected = runtime.input_values(step.n_tokens)
    if math.prod(step.tensor.shape) > expected:  # before decoding: zstd would inflate it first
        raise InvalidRequestError(
            f"a step of n_tokens={step.n_tokens} brings {expected} values to this stage, but its tensor "
            f"declares shape {list(step.tensor.shape)}; send the shape its n_tokens says"
        )
    score_next = _score_next(runtime, step, last_only) if last_stage and runtime.returns_logits else []
    x = from_proto(step.tensor)
    return Prepared(
        step,
        session,
        x,
        last_only,
        top_k,
        log_probs,
        score_next,
        recv_ns,
        submitted,
        started,
        time.perf_counter(),
    )


def _score_next(runtime: StageRuntime, step: forward_pb2.Step, last_only: bool) -> list[int]:
    """Step.score_next, checked: one id in the vocabulary per position of a step that wants them all,
    and nothing else asked of its output."""
    if not step.score_next:
        return []
    vocab = runtime.vocab_size
    if last_only or len(step.score_next) != step.n_tokens:
        raise InvalidRequestError(
            f"score_next takes one token id per position ({step.n_tokens} here, got "
            f"{len(step.score_next)}) of a step with OUTPUT_SELECT_ALL"
        )
    if step.logits_top_k or step.log_probs:
        raise InvalidRequestError(
            "score_next replaces the logits: send it without logits_top_k and log_probs"
        )
    if max(step.score_next) >= vocab or step.score_top > MAX_TOP_LOGPROBS:
        raise InvalidRequestError(
            f"score_next ids must lie in [0, {vocab}) and score_top in [0, {MAX_TOP_LOGPROBS}]; got ids up to "
            f"{max(step.score_next)} and score_top={step.score_top}"
        )
    if vocab > LARGEST_SCORED_VOCAB:
        raise InvalidRequestError(
            f"this model's {vocab} token ids do not all fit a float32 exactly (below {LARGEST_SCORED_VOCAB}): "
            "score its prompt without score_next"
        )
    return list(step.score_next)


def finish(
    runtime: StageRuntime, prepared: Prepared, out: torch.Tensor, compute_s: float, batch: int, worker: str
) -> forward_pb2.Step:
    """Encode the output into the step, move the session on, and add this stage's hop record."""
    step = prepared.step
    computed = time.perf_counter()
    bytes_in, codec_in = len(step.tensor.data), step.tensor.codec
    codec_out = runtime.deployment.codec_out
    if prepared.score_next:  # a prompt's own tokens scored here: a few values per position, not V
        out = scored_rows(as_log_probs(out[0]), prepared.score_next, step.score_top).unsqueeze(0)
        codec_out, step.scores_sent = RAW, True  # ids go as float32 values: a lossy codec would move them
    elif prepared.log_probs:  # over the whole vocabulary, so before the top K are picked
        out = as_log_probs(out)
        step.log_probs_sent = True
    step.tensor.CopyFrom(to_top_k_proto(out, prepared.top_k) if prepared.top_k else to_proto(out, codec_out))
    encoded = time.perf_counter()
    runtime.end_step(prepared.session, step.n_tokens)
    step.hops.add(
        stage=worker,
        upstream_sent_unix_ns=step.sent_unix_ns,
        recv_unix_ns=prepared.recv_ns,
        queue_s=prepared.started - prepared.submitted,
        decode_s=prepared.decoded - prepared.started,
        compute_s=compute_s,
        encode_s=encoded - computed,
        bytes_in=bytes_in,
        bytes_out=len(step.tensor.data),
        codec_in=codec_in,
        batch=batch,
    )
    return step
