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
        # the tokens' log-probabilities, where the request asks for them (the tokenizer shows each token)
        asked = request.generation.logprobs is not None
        self.logprobs = LogprobShapes(request.kind, tokenizer) if asked else None
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

    def completion(self, answer) -> dict:
        """The whole answer (`answer`: partition.coordinator.answer.Answer)."""
        result = answer.result
        finish = FINISH_REASON[result.finish_reason]
        if self.request.kind == CHAT:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text}}
        else:
            choice = {"index": 0, "text": (self.request.echo or "") + result.text}
        logprobs = None
        if self.logprobs and self.request.echo is not None:  # the prompt's tokens first, scored
            first, scored = result.prompt_token_ids[0], result.prompt_logprobs
            logprobs = self.logprobs.render(scored + result.logprobs, unscored=first, echoed=len(scored))
        elif self.logprobs:
            logprobs = self.logprobs.render(result.logprobs)
        choice |= {"logprobs": logprobs, "finish_reason": finish}
        return self._envelope(self.object, [choice]) | {"usage": usage(result), "partition": answer.report()}

    def chunk(
        self,
        text: str = "",
        first: bool = False,
        finish_reason: str | None = None,
        tokens: list[TokenLogprob] | None = None,
    ) -> dict:
        """One stream event: text as it is decoded (the first chat chunk also names the role), with the
        log-probabilities of the `tokens` generated since the last event, where the request asks."""
        if self.request.kind == CHAT:
            delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text}
        choice |= {
            "logprobs": self.logprobs.render(tokens or []) if self.logprobs and not first else None,
            "finish_reason": FINISH_REASON.get(finish_reason) if finish_reason else None,
        }
        out = self._envelope(self.chunk_object, [choice])
        if self.request.include_usage:
            out["usage"] = None
        return out

    def last_chunks(self, answer, tokens: list[TokenLogprob] | None = None) -> list[dict]:
        """After the text: the finish reason, with the log-probabilities of `tokens` no text was sent
        with (held back, or cut by a stop string), then (stream_options.include_usage) the token counts
        and the timing report in a chunk without choices."""
        out = [self.chunk(finish_reason=answer.result.finish_reason, tokens=tokens)]
        if self.request.include_usage:
            out.append(
                self._envelope(self.chunk_object, [])
                | {"usage": usage(answer.result), "partition": answer.report()}
            )
        return out


def usage(result) -> dict:
    prompt, completion = len(result.prompt_token_ids), len(result.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def model(name: str, created: int) -> dict:
    """The served model as OpenAI's model object (GET /v1/models/{model})."""
    return {"id": name, "object": "model", "created": created, "owned_by": "partition"}


def models(name: str, created: int) -> dict:
    return {"object": "list", "data": [model(name, created)]}
