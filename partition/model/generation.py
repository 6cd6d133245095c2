"""The generation loop on the edge, independent of where the layers run.

`generate(step, ...)` drives any `step(token_ids, position) -> logits of the last token [V]`: the whole
model in this process (`local_step`) or a pipeline of remote segments (the coordinator). It samples,
stops on EOS, stop strings or length, streams text, and records when each token was ready and, when
asked, its log-probability and the likeliest tokens in its place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from partition.errors import ConfigError, ContextOverflowError
from partition.model.sampling import Sampler, SamplingParams

# (new token ids, position of the first) -> logits [V]; log-probabilities [V] for a request that asks
# for them (the step is built so: the whole vocabulary is at hand only where the head ran, and a worker
# holding it sends back no more than the largest few)
Step = Callable[[list[int], int], torch.Tensor]
# (token ids from position 0, alternatives per token) -> the entries of every token after the first, and
# the log-probabilities [V] of the last position: the prefill of a prompt whose own log-probabilities
# are asked for (model/scoring.py)
Scores = Callable[[list[int], int], tuple[list["TokenLogprob"], torch.Tensor]]
# The most alternatives a request may ask for per token (OpenAI's limit). A worker holding the head
# sends back at least RETURN_TOP_K (64) of them, so these are always among what it sends.
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (its raw distribution: before temperature,
    top-k or top-p), and the `top` most likely tokens at its position, most likely first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, log-probability)
    # the token that ended the answer (EOS, a stop token id): not part of its text or token ids, yet
    # drawn, as vLLM reports it (a harness scoring a text that ends there needs its log-probability)
    ends: bool = False


def token_logprob(logprobs_V: torch.Tensor, token_id: int, top: int, ends: bool = False) -> TokenLogprob:
    """`token_id`'s entry of log-probabilities [V], with the `top` largest of them."""
    alternatives: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = torch.topk(logprobs_V, min(top, logprobs_V.numel()))
        alternatives = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token_id, float(logprobs_V[token_id]), alternatives, ends)


class RepetitionWithLogprobs(ConfigError):
    """A request for both the repetition penalty and log-probabilities, which this runtime cannot honour
    together."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int = 128
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()  # stop strings; the text is cut before them
    context: int = 2048  # tokens the caches hold: prompt + generated must fit
    # None: no log-probabilities; N: each token's, and the N likeliest at its position (<= MAX_TOP_LOGPROBS)
    logprobs: int | None = None
    # vLLM's: EOS taken as any other token; these ids end the answer as EOS does (neither is part of it);
    # before min_tokens new tokens, neither (nor EOS taken as a token) is drawn and no stop string ends it
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    stop_in_text: bool = False  # vLLM's include_stop_str_in_output: the text ends after the stop string
    # vLLM's skip_special_tokens: special tokens drawn are left out of the text (not the token ids);
    # false shows them (the token that ended the answer is never part of it)
    skip_special: bool = True
    # None: none; N: each prompt token's log-probability after the first, with the N likeliest in its
    # place (scoring a text, as a completion's `echo` with `logprobs` asks): the prefill computes the
    # log-probabilities of every prompt position, not only the last
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.sampling.repeats and (self.logprobs is not None or self.prompt_logprobs is not None):
            raise RepetitionWithLogprobs(
                "the repetition penalty scales raw logits, and a request for log-probabilities gets them "
                "normalized (a worker holding the head sends those alone): ask for one or the other"
            )

    def ending_ids(self, eos_ids: tuple[int, ...]) -> frozenset[int]:
        """The token ids that end the answer (not part of it): the model's EOS unless ignored, and
        stop_token_ids."""
        return frozenset(self.stop_token_ids) | (frozenset() if self.ignore_eos else frozenset(eos_ids))

    def held_back_ids(self, eos_ids: tuple[int, ...]) -> frozenset[int]:
        """The ids kept from the sampler until min_tokens: EOS (even with ignore_eos, as vLLM) and
        stop_token_ids."""
        return frozenset(self.stop_token_ids) | frozenset(eos_ids) if self.min_tokens else frozenset()

    def extra_logits(self, eos_ids: tuple[int, ...]) -> int | None:
        """How many more of the largest logits than the sampler decides among a worker holding the head
        must send, so that what the sampler picks from stays whole: those min_tokens keeps from it,
        and those a penalty or a negative logit bias may push below the rest (the tokens drawn, at most
        max_new_tokens, and for the repetition penalty the prompt's too); None for every logit, since
        a penalty or bias that lifts may lift a token from below them all."""
        sampling = self.sampling
        if sampling.lifts:
            return None
        extra = len(self.held_back_ids(eos_ids)) + sampling.tokens_biased_down
        extra += self.max_new_tokens if sampling.penalizes or sampling.repeats else 0
        return extra + (len(set(self.prompt_ids)) if sampling.repeats else 0)


def prompt_overflow(prompt_tokens: int, max_context: int, holder: str) -> str | None:
    """Why a prompt leaves no room for a token in `max_context` tokens, or None when it fits.

    `holder` names what holds them ("smollm2-135m's context", "a session of this deployment"); the CLI
    and the HTTP API say it in the same words and add their own advice."""
    if prompt_tokens < max_context:
        return None
    return f"the prompt has {prompt_tokens} tokens, but {holder} holds {max_context}"


def new_tokens_overflow(
    prompt_tokens: int, new_tokens: int, max_context: int, holder: str, asked: str
) -> str | None:
    """Why the prompt and `new_tokens` asked for by `asked` ("--max-new-tokens", "max_tokens") overflow
    `max_context` tokens of `holder`, with the most that fits, or None when they fit."""
    if prompt_tokens + new_tokens <= max_context:
        return None
    return (
        f"the prompt ({prompt_tokens} tokens) and {asked} ({new_tokens}) need {prompt_tokens + new_tokens} "
        f"tokens, over the {max_context} tokens of {holder}; ask for at most {max_context - prompt_tokens} new tokens"
    )


@dataclass
class GenerationResult:
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "eos", "stop" or "length"
    start_s: float = 0.0  # perf_counter when the request started (t0)
    token_times_s: list[float] = field(default_factory=list)  # perf_counter when each token was ready
    # one per token id, when the request asked, and one for the token that ended it (`ends`), if any
    logprobs: list[TokenLogprob] = field(default_factory=list)
    # one per prompt token after the first (which nothing came before), when the request asked
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def ttft_s(self) -> float:
        return self.token_times_s[0] - self.start_s if self.token_times_s else float("nan")

    @property
    def tbt_s(self) -> list[float]:
        t = self.token_times_s
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def tpot_s(self) -> float:
        """(t_N - t_1) / (N - 1): decode time per token, first token excluded."""
        t = self.token_times_s
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else float("nan")

    def timings(self) -> dict[str, float | list[float]]:
        total = self.token_times_s[-1] - self.start_s if self.token_times_s else 0.0
        return {
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "tbt_s": self.tbt_s,
            "total_s": total,
            "decode_tokens_per_s": 1.0 / self.tpot_s if self.tpot_s and not math.isnan(self.tpot_s) else 0.0,
        }


class TextStream:
    """Incremental detokenization that never emits half a UTF-8 character or a stop string.

    A push decodes only the tokens whose text is not known yet, after the previous push's tokens as
    context, instead of the whole text (benchmarks/text_stream.py compares the two). Our tokenizers are
    byte-level, so the text of a window is its context's text followed by what the new tokens add. The
    whole text is decoded once, by `text()`.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stop: tuple[str, ...],
        min_tokens: int = 0,
        stop_in_text: bool = False,
    ):
        self.decode, self.stop = decode, stop
        # vLLM's include_stop_str_in_output: the text ends after the stop string rather than before it,
        # and no text that could begin one is held back (it is part of the text either way)
        self.stop_in_text = stop_in_text
        # A stop string ends the text only where it ends after the first `min_tokens` tokens' text (as
        # vLLM looks for none before then): from this character on, once known
        self.min_tokens = min_tokens
        self._stops_from: int | None = 0 if min_tokens == 0 else None
        self.ids: list[int] = []
        self._text = ""  # text of ids[:_read], whole characters only
        self._context = 0  # ids[_context:_read] are decoded again before the newer tokens
        self._read = 0
        self._known = ""  # their text: the end of _text
        self._searched = 0  # characters already searched for stop strings
        self.emitted = 0  # characters already handed out
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        window = self.decode(self.ids[self._context :])
        if window.startswith(self._known):
            added = window[len(self._known) :]
            text = self._text + added
        else:  # a decode that is not byte-level: fall back to the whole text
            text, self._searched = self.decode(self.ids), 0
            added = text[len(self._text) :]
        whole = text.rstrip("\ufffd")  # the last character may still miss bytes
        if len(whole) == len(text):  # the next push decodes only tokens after these
            self._text, self._known = text, added
            self._context, self._read = self._read, len(self.ids)
        if self._stops_from is None and len(self.ids) >= self.min_tokens:
            self._stops_from = len(whole)  # stop strings count once they end after this
        # A stop string found now ends in the new text, so it starts at most len(stop) - 1 before it.
        end = None
        if self._stops_from is not None and len(self.ids) != self.min_tokens:
            end = self._end_at_stop(whole, max(self._searched, self._stops_from))
        self._searched = len(whole)
        if end is not None:
            self.stopped = True
            return self._emit(whole[:end], final=True)
        return self._emit(whole, final=False)

    def text(self) -> str:
        full = self.decode(self.ids)
        end = self._end_at_stop(full, len(full) if self._stops_from is None else self._stops_from)
        return full if end is None else full[:end]

    def _end_at_stop(self, text: str, searched: int) -> int | None:
        """Where `text` ends at the first stop string that ends after character `searched` (the first to
        begin; of two beginning there, the shorter, which was whole first), or None when none does."""
        found = [(at, len(s)) for s in self.stop if (at := text.find(s, max(0, searched - len(s) + 1))) != -1]
        if not found:
            return None
        at, length = min(found)
        return at + length if self.stop_in_text else at

    def _emit(self, text: str, final: bool) -> str:
        safe = len(text)
        if not final and not self.stop_in_text:  # hold back a tail that could be the start of a stop string
            for stop in self.stop:
                for k in range(min(len(stop) - 1, len(text)), 0, -1):
                    if text.endswith(stop[:k]):
                        safe = min(safe, len(text) - k)
                        break
        chunk = text[self.emitted : safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return chunk


def generate(
    step: Step,
    request: GenerationRequest,
    eos_ids: tuple[int, ...],
    decode: Callable[[list[int]], str],
    on_text: Callable[[str], None] | None = None,
    arrival_s: float | None = None,
    on_token: Callable[[TokenLogprob], None] | None = None,
    score: Scores | None = None,
) -> GenerationResult:
    """`arrival_s`: perf_counter when the request arrived (t0), if before this call: the wait for a
    session and its opening then count in TTFT, as REFERENCES.md defines it. `on_token` gets each
    token's log-probabilities (a request that asks for them) before `on_text` gets its text. `score`
    runs the prompt's prefill instead of `step` for a request that asks for the prompt's own
    log-probabilities."""
    prompt = request.prompt_ids
    if not prompt:
        raise ContextOverflowError("the prompt is empty: give at least one token")
    if len(prompt) >= request.context:
        raise ContextOverflowError(
            f"the prompt has {len(prompt)} tokens but the context holds {request.context}; shorten the prompt"
        )
    result = GenerationResult(
        prompt_token_ids=list(prompt), start_s=time.perf_counter() if arrival_s is None else arrival_s
    )
    sampler = Sampler(request.sampling, prompt)
    stream = TextStream(decode, request.stop, request.min_tokens, request.stop_in_text)
    budget = min(request.max_new_tokens, request.context - len(prompt))
    ending = request.ending_ids(eos_ids)
    held_back = torch.tensor(sorted(request.held_back_ids(eos_ids)), dtype=torch.long)  # until min_tokens
    if request.prompt_logprobs is None:
        logits = step(list(prompt), 0)
    else:
        if score is None:
            raise ValueError("a request for the prompt's log-probabilities needs `score`")
        result.prompt_logprobs, logits = score(list(prompt), request.prompt_logprobs)
    position = len(prompt)

    def scored(token: int, ends: bool = False) -> None:  # from the logits it was drawn from
        if request.logprobs is not None:
            result.logprobs.append(token_logprob(logits, token, request.logprobs, ends))
            if on_token is not None:
                on_token(result.logprobs[-1])

    while len(result.token_ids) < budget:
        if len(result.token_ids) < request.min_tokens and len(held_back):
            token = sampler(logits.index_fill(0, held_back, float("-inf")), result.token_ids)
        else:
            token = sampler(logits, result.token_ids)
        if token in ending:
            result.finish_reason = "stop" if token in request.stop_token_ids else "eos"
            scored(token, ends=True)
            break
        result.token_times_s.append(time.perf_counter())
        result.token_ids.append(token)
        scored(token)
        chunk = stream.push(token)
        if chunk and on_text is not None:
            on_text(chunk)
        if stream.stopped:
            result.finish_reason = "stop"
            break
        if len(result.token_ids) == budget:
            break
        logits = step([token], position)
        position += 1
    result.text = stream.text()
    if on_text is not None and not stream.stopped and len(result.text) > stream.emitted:
        # ended by EOS or length: what was held back (a possible start of a stop string, a character
        # still missing bytes) never became one, so the streamed text ends as the whole text does
        on_text(result.text[stream.emitted :])
    return result


def local_step(model, cache, log_probs: bool = False) -> Step:
    """A step over the whole model held in this process (slot 0 of `cache`); with `log_probs`, it gives
    log-probabilities rather than logits."""

    def step(token_ids: list[int], position: int) -> torch.Tensor:
        ids = torch.tensor([token_ids], dtype=torch.long)
        logits = model(ids, cache, [0], [position], last_token_only=True)[0, -1]
        return as_log_probs(logits) if log_probs else logits

    return step


def as_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the last dimension, in float32. The same sampler draws the same tokens from
    them as from the logits: they differ by one constant per row, up to float32 rounding."""
    return torch.log_softmax(logits.float(), dim=-1)
