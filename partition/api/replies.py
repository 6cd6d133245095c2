"""Replies in OpenAI's shapes (serve --http): whole completions, stream chunks, usage, models.

Every reply also carries `partition`: the plan it ran on and where its time went (TTFT, TPOT, each
link's latency and bytes, each stage's compute), the same report as `partition serve --json`.
"""

from __future__ import annotations

import time
import uuid

from partition.api.logprobs import LogprobShapes
from partition.api.requests import CHAT, TextRequest
from partition.model.generation import TokenLogprob

FINISH_REASON = {"eos": "stop", "stop": "stop", "length": "length"}  # ours -> OpenAI's


class ReplyIds:
    """The id, creation time and object names shared by every reply and chunk of one request."""

    def __init__(self, request: TextRequest, tokenizer=None) -> None:
        self.request = request
        # the tokens' log-probabilities, where the request asks for them (the tokenizer shows each
        # token), rendered for each choice on its own: a completion's offsets run on within a choice
        asked = request.generation.logprobs is not None
        skip = request.generation.skip_special
        self.logprobs = (
            [LogprobShapes(request.kind, tokenizer, skip) for _ in range(request.n)] if asked else None
        )
        chat = request.kind == CHAT
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def _envelope(self, obj: str, choices: list[dict]) -> dict:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.request.model,
            "choices": choices,
        }

    def completion(self, answers: list) -> dict:
        """The whole answer (`answers`: a partition.coordinator.answer.Answer per choice). Its
        `partition` report is the first choice's; with more than one, each choice carries its own."""
        choices = [self._choice(index, answer) for index, answer in enumerate(answers)]
        if len(answers) > 1:
            for choice, answer in zip(choices, answers, strict=True):
                choice["partition"] = answer.report()
        return self._envelope(self.object, choices) | {
            "usage": usage([a.result for a in answers]),
            "partition": answers[0].report(),
        }

    def _choice(self, index: int, answer) -> dict:
        result = answer.result
        if self.request.kind == CHAT:
            choice = {"index": index, "message": {"role": "assistant", "content": result.text}}
        else:
            choice = {"index": index, "text": (self.request.echo or "") + result.text}
        logprobs = None
        if self.logprobs and self.request.echo is not None:  # the prompt's tokens first, scored
            first, scored = result.prompt_token_ids[0], result.prompt_logprobs
            shapes = self.logprobs[index]
            logprobs = shapes.render(scored + result.logprobs, unscored=first, echoed=len(scored))
        elif self.logprobs:
            logprobs = self.logprobs[index].render(result.logprobs)
        return choice | {"logprobs": logprobs, "finish_reason": FINISH_REASON[result.finish_reason]}

    def chunk(
        self,
        text: str = "",
        first: bool = False,
        finish_reason: str | None = None,
        tokens: list[TokenLogprob] | None = None,
        index: int = 0,
    ) -> dict:
        """One stream event of choice `index`: text as it is decoded (the first chat chunk also names
        the role), with the log-probabilities of the `tokens` generated since the last event, where the
        request asks."""
        if self.request.kind == CHAT:
            delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": text}
        choice |= {
            "logprobs": self.logprobs[index].render(tokens or []) if self.logprobs and not first else None,
            "finish_reason": FINISH_REASON.get(finish_reason) if finish_reason else None,
        }
        out = self._envelope(self.chunk_object, [choice])
        if self.request.include_usage:
            out["usage"] = None
        return out

    def last_chunks(self, answers: list, tokens: list[list[TokenLogprob]]) -> list[dict]:
        """After the text: each choice's finish reason, with the log-probabilities of its `tokens` no
        text was sent with (held back, or cut by a stop string), then (stream_options.include_usage)
        the token counts and the first choice's timing report in a chunk without choices."""
        out = [
            self.chunk(finish_reason=answer.result.finish_reason, tokens=held, index=index)
            for index, (answer, held) in enumerate(zip(answers, tokens, strict=True))
        ]
        if self.request.include_usage:
            out.append(
                self._envelope(self.chunk_object, [])
                | {"usage": usage([a.result for a in answers]), "partition": answers[0].report()}
            )
        return out


def usage(results: list) -> dict:
    """Token counts of a request's choices: the prompt once, as OpenAI counts it, and every choice's
    completion."""
    prompt, completion = len(results[0].prompt_token_ids), sum(len(r.token_ids) for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def model(name: str, created: int) -> dict:
    """The served model as OpenAI's model object (GET /v1/models/{model})."""
    return {"id": name, "object": "model", "created": created, "owned_by": "partition"}


def models(names: tuple[str, ...], created: int) -> dict:
    """Every name the served model answers to, each as a model (as vLLM lists --served-model-name's)."""
    return {"object": "list", "data": [model(name, created) for name in names]}
