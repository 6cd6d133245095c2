"""One generation request through a deployment (serve): the `step` the generation loop calls.

    session = PipelineSession(deployment, "req-1", context=512)
    result = generate(session.step, request, eos, tokenizer.decode)
    session.close()   # or session.abandon(): a request that ends early
    session.spans     # per-hop timings of every step (metrics)

A step runs the edge's front segment here, sends its output down the chain of workers, waits for the
last worker's result, and runs the edge's head here. Every step records one span per hop. A caller
that stops wanting the answer (`still_wanted` raises; the HTTP client hung up) ends the wait for a
step's result at once, instead of after the step went through every stage.
When a worker holds the head, it returns only the largest logits that `sampling` can pick from
(RETURN_TOP_K, what the plan assumes, or more for a larger top-k), and every logit only when the
sampler needs them all (temperature or top-p without top-k).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import torch

from partition.coordinator.deploy import Deployment
from partition.coordinator.spans import EdgeTimes, RemoteHop, step_spans
from partition.errors import ContextOverflowError
from partition.metrics.spans import HopSpan
from partition.model.generation import TokenLogprob, as_log_probs
from partition.model.sampling import SamplingParams
from partition.model.scoring import read_scored, scores_of
from partition.transport.client import StageCallError
from partition.types import RETURN_TOP_K

# Logits one step of a scored prompt computes at once, on the worker holding the head or here (64 MiB:
# 341 tokens of SmolLM2's 49 k vocabulary); their log-probabilities take as much again
SCORED_BYTES_PER_STEP = 64 * 2**20


def logits_to_return(sampling: SamplingParams, vocab_size: int, extra: int | None = 0) -> int:
    """Step.logits_top_k for a sampler: how many logits a worker holding the head sends back (0: all,
    also for a top-k of the whole vocabulary or more, which the message's 32 bits may not hold).
    `extra`: how many more the request needs (GenerationRequest.extra_logits; None: all)."""
    needed = sampling.deciding_logits
    if needed is None or extra is None or needed + extra >= vocab_size:
        return 0
    return max(RETURN_TOP_K, needed + extra)


class PipelineSession:
    def __init__(
        self,
        deployment: Deployment,
        session_id: str | None = None,
        context: int | None = None,
        sampling: SamplingParams | None = None,  # greedy when None
        still_wanted: Callable[[], None] | None = None,  # asked while a step's result is awaited
        log_probs: bool = False,  # `step` gives log-probabilities, not logits
        extra_logits: int | None = 0,  # see logits_to_return
    ):
        self.deployment = deployment
        self.still_wanted = still_wanted
        self.log_probs = log_probs
        vocab = deployment.source.spec.vocab_size
        self.logits_top_k = logits_to_return(sampling or SamplingParams(), vocab, extra_logits)
        self.session_id = session_id or uuid.uuid4().hex[:16]
        self.context = context or deployment.max_context
        if self.context > deployment.max_context:
            limit = deployment.source.spec.max_context
            advice = (
                f"{deployment.plan.model.name!r} holds at most {limit} tokens: use a shorter prompt or fewer new tokens"
                if deployment.max_context >= limit
                else f"serve with a larger --max-context (at most {limit}, the model's)"
            )
            raise ContextOverflowError(
                f"a session of {self.context} tokens exceeds the deployment's context of "
                f"{deployment.max_context}; {advice}"
            )
        d = deployment
        self._front_cache = d.front_model.new_cache(1, self.context) if d.front_model else None
        self._tail_cache = d.tail_model.new_cache(1, self.context) if d.tail_model else None
        self._remote = None
        if d.chain is not None:
            plan = d.plan
            self._remote = d.loop.run(
                d.chain.open_session(self.session_id, plan.plan_id, plan.epoch, plan.model.digest),
                still_wanted=still_wanted,  # a chain slow to accept it (a stage busy, or hung) holds no one
            )
        self.start_ns = time.time_ns()
        self.spans: list[HopSpan] = []
        self._steps = 0

    def step(self, token_ids: list[int], position: int) -> torch.Tensor:
        """Logits [V] of the last of `token_ids`, placed at `position`.. of the session; log-probabilities
        for a session opened with `log_probs` (the worker holding the head normalizes over the whole
        vocabulary before it picks the largest to send; only the head's holder has them all)."""
        return self._forward(token_ids, position, every_position=False, log_probs=self.log_probs)[-1]

    def scores(self, token_ids: list[int], top: int) -> tuple[list[TokenLogprob], torch.Tensor]:
        """A prompt's prefill, scored (model/scoring.py): the entries of `token_ids` after the first,
        with the `top` likeliest in each place, and the log-probabilities [V] of the last position (as
        `step` gives them). A worker holding the head scores every position but the last itself and
        sends back 1 + 2 x top values per position, not every logit; the last goes as a step of its own,
        whose reply is what `step` gets. The prompt goes as many tokens a step as SCORED_BYTES_PER_STEP
        of logits hold, so that no step computes more at once."""
        rows = max(1, SCORED_BYTES_PER_STEP // (4 * self.deployment.source.spec.vocab_size))
        entries: list[TokenLogprob] = []
        if self._remote is not None and self.deployment.tail_model is None:
            front = token_ids[:-1]
            for start in range(0, len(front), rows):
                nexts = token_ids[start + 1 : start + rows + 1]
                packed = self._forward(
                    front[start : start + rows], start, True, score_next=nexts, score_top=top, prefill=True
                )
                try:
                    entries += read_scored(packed, nexts, top, self.deployment.source.spec.vocab_size)
                except ValueError as error:  # a worker's header says what it likes
                    raise self._worker_error(
                        grpc.StatusCode.INVALID_ARGUMENT, f"a malformed result: {error}"
                    ) from None
            last = self._forward(token_ids[-1:], len(front), False, log_probs=True, prefill=True)
            return entries, last[-1]
        for start in range(0, len(token_ids), rows):
            log_probs = self._forward(
                token_ids[start : start + rows], start, True, log_probs=True, prefill=True
            )
            nexts = token_ids[start + 1 : start + rows + 1]
            entries += scores_of(log_probs[: len(nexts)], nexts, top)
        return entries, log_probs[-1]

    def logits(self, token_ids: list[int], position: int) -> torch.Tensor:
        """Logits [S, V] of every one of `token_ids` (teacher forcing: one step scores a whole sequence)."""
        return self._forward(token_ids, position, every_position=True)

    @torch.inference_mode()
    def _forward(
        self,
        token_ids: list[int],
        position: int,
        every_position: bool,
        log_probs: bool = False,
        score_next: list[int] | None = None,
        score_top: int = 0,
        prefill: bool = False,
    ) -> torch.Tensor:
        """The output of the last of `token_ids` (of each, with `every_position`); with `log_probs`,
        normalized where every logit is at hand: on the worker holding the head when it sends only the
        last position's largest, here otherwise. `score_next` (to a worker holding the head): each
        position's scored rows instead (`scores`). `prefill`: one of the steps of a prompt that goes in
        several, whose spans all count as the prompt's (token 0)."""
        d = self.deployment
        d.check_open()  # closed, it has neither chain nor segments: the step would compute nonsense
        step_start_ns = time.time_ns()
        x = torch.tensor([token_ids], dtype=torch.long)
        front_s = tail_s = 0.0
        if d.front_model is not None:
            started = time.perf_counter()
            x = d.front_model(x, self._front_cache, [0], [position])
            front_s = time.perf_counter() - started
        result, on_worker = None, False
        if self._remote is not None:
            last_only = d.tail_model is None and not every_position
            top_k = self.logits_top_k if last_only else 0
            on_worker = log_probs and last_only
            codec = d.topology.input_codec
            coro = self._remote.step(x, position, codec, last_only, top_k, on_worker, score_next, score_top)
            result = d.loop.run(coro, still_wanted=self.still_wanted)
            if on_worker and not result.log_probs_sent:
                raise self._worker_error(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "it sent logits back where log-probabilities were asked (Step.log_probs): it runs a "
                    "partition older than this coordinator; update it, or ask without logprobs",
                )
            x = result.output
        if d.tail_model is not None:
            started = time.perf_counter()
            x = d.tail_model(x, self._tail_cache, [0], [position], last_token_only=not every_position)
            tail_s = time.perf_counter() - started
        self._record(0 if prefill else self._steps, len(token_ids), step_start_ns, front_s, tail_s, result)
        self._steps = max(self._steps, 1) if prefill else self._steps + 1
        return as_log_probs(x[0]) if log_probs and not on_worker else x[0]

    def _worker_error(self, code: grpc.StatusCode, details: str) -> StageCallError:
        """A reply of the worker holding the head that cannot be used, named by its device."""
        address = self.deployment.addresses[-1]
        return StageCallError(code, details, address, self.deployment.devices.get(address, ""))

    def _record(
        self, token: int, n_tokens: int, step_start_ns: int, front_s: float, tail_s: float, result
    ) -> None:
        d = self.deployment
        edge = d.plan.edge
        times = EdgeTimes(
            session=self.session_id,
            token=token,
            n_tokens=n_tokens,
            session_start_ns=self.start_ns,
            step_start_ns=step_start_ns,
            front_compute_s=front_s,
            encode_s=result.encode_s if result else 0.0,
            sent_unix_ns=result.sent_unix_ns if result else 0,
            bytes_sent=result.bytes_sent if result else 0,
            received_unix_ns=result.received_unix_ns if result else 0,
            decode_s=result.decode_s if result else 0.0,
            bytes_received=result.bytes_received if result else 0,
            codec_received=result.codec_received if result else "",
            tail_compute_s=tail_s,
        )
        hops = []
        if result is not None:
            for stage, hop in zip(d.topology.remote, result.hops, strict=True):
                hops.append(
                    RemoteHop(
                        stage.device, hop.recv_unix_ns, hop.sent_unix_ns, hop.queue_s, hop.decode_s,
                        hop.compute_s, hop.encode_s, hop.bytes_in, hop.bytes_out, hop.codec_in or "raw",
                        max(hop.batch, 1),
                    )
                )  # fmt: skip
        self.spans.extend(
            step_spans(edge, times, hops, d.clocks, d.front_model is not None, d.tail_model is not None)
        )

    def close(self) -> None:
        if self._remote is not None:
            self.deployment.loop.run(self._remote.close(), timeout_s=30)
            self._remote = None

    def abandon(self) -> None:
        """End the session without its step in flight: no stage passes that step on (ChainSession.abandon),
        and every stage frees its KV slot."""
        if self._remote is not None:
            remote, self._remote = self._remote, None
            self.deployment.loop.run(remote.abandon())
