"""vLLM's `POST /tokenize` and `POST /detokenize` (serve --http): a prompt's token ids as this endpoint
counts them, and ids back to text, so a client can fit a context without a tokenizer of its own.

`/tokenize` takes `prompt` (text) or `messages` (rendered with the model's chat template as
`/v1/chat/completions` renders them, so `count` is that request's `prompt_tokens`), with
`add_special_tokens` (default: true for a prompt, as a completion encodes it; false for messages, whose
template holds its own), `add_generation_prompt` (messages; default true) and `return_token_strs`. It
answers `count`, `max_model_len` (the tokens a session here holds: prompt and answer) and `tokens`
(and `token_strs`, each token's text, U+FFFD for a part of a character). `/detokenize` takes `tokens`
and answers `prompt`, special tokens included.
"""

from __future__ import annotations

import json

from partition.api.requests import (
    ApiError,
    Served,
    boolean_field,
    chat_ids,
    check_fields,
    check_model,
    encoded,
)

TOKENIZE_FIELDS = frozenset(
    {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt", "return_token_strs"}
)
DETOKENIZE_FIELDS = frozenset({"model", "tokens"})


def tokenize(body: dict, served: Served) -> dict:
    check_model(body, served)
    check_fields(body, TOKENIZE_FIELDS)
    if ("prompt" in body) == ("messages" in body):
        raise ApiError(400, "give either prompt (text) or messages (a chat), not both or neither", "prompt")
    chat = "messages" in body
    add_special = boolean_field(body, "add_special_tokens", not chat)
    if chat:
        ids = chat_ids(body, served, boolean_field(body, "add_generation_prompt", True), add_special)
    else:
        if "add_generation_prompt" in body:
            raise ApiError(
                400, "add_generation_prompt applies to messages only; leave it out", "add_generation_prompt"
            )
        prompt = body["prompt"]
        if not isinstance(prompt, str):
            raise ApiError(400, f"prompt must be a string, got {json.dumps(prompt)[:80]}", "prompt")
        ids = encoded(prompt, served, "prompt", add_special)
    said = {"count": len(ids), "max_model_len": served.max_context, "tokens": ids, "token_strs": None}
    if boolean_field(body, "return_token_strs", False):
        token_bytes = served.tokenizer.token_bytes
        said["token_strs"] = [token_bytes(i).decode("utf-8", errors="replace") for i in ids]
    return said


def detokenize(body: dict, served: Served) -> dict:
    check_model(body, served)
    check_fields(body, DETOKENIZE_FIELDS)
    ids, vocab, most = body.get("tokens"), served.vocab_size, served.model_max_context
    if not (isinstance(ids, list) and all(type(i) is int and 0 <= i < vocab for i in ids)):
        raise ApiError(400, f"tokens must be a list of token ids in [0, {vocab})", "tokens")
    if len(ids) > most:  # decoding holds the GIL: no more than the model ever holds
        raise ApiError(
            400, f"tokens takes at most {most} ids (the model's context), got {len(ids)}", "tokens"
        )
    return {"prompt": served.tokenizer.decode(ids, skip_special=False)}
