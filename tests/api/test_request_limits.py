"""Requests too large for any session are refused from their size, before the endpoint spends time on
them: tokenizing a megabyte takes about a second here, rendering 250 k chat messages 0.7 s."""

import pytest

from partition.api.requests import CHAT, COMPLETION, ApiError, Served, text_request
from partition.model.tokenizer import Tokenizer, load_tokenizer

MAX_CONTEXT = 256


class CountingTokenizer(Tokenizer):
    """The model's own tokenizer, counting what it is asked to do."""

    encoded = rendered = 0

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        self.encoded += 1
        return super().encode(text, add_special)

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        self.rendered += 1
        return super().render_chat(messages, add_generation_prompt)


@pytest.fixture()
def served(smollm2) -> Served:
    real = load_tokenizer(smollm2)
    tokenizer = CountingTokenizer(
        real.backend, real.bos_token, real.eos_token, real.add_bos, real.chat_template, real.eos_ids
    )
    return Served("smollm2-135m", tokenizer, smollm2.spec.vocab_size, MAX_CONTEXT, smollm2.spec.max_context)


def test_no_token_stands_for_more_bytes_than_max_token_bytes(smollm2):
    tokenizer = load_tokenizer(smollm2)
    widest = max(
        len(tokenizer.decode([i], skip_special=False).encode()) for i in range(smollm2.spec.vocab_size)
    )
    # a byte-level token spells each byte with a character of one or two bytes: the bound is at most 2x
    assert widest <= tokenizer.max_token_bytes <= 2 * widest
    run = "\n" + " " * 80  # the longest token of this vocabulary
    assert len(tokenizer.encode(run * 10)) * tokenizer.max_token_bytes >= len((run * 10).encode())


def test_encode_gives_the_backends_ids(smollm2):
    tokenizer = load_tokenizer(smollm2)
    for text in ("What is the capital of France?", "  two  spaces\n\nand 12345 digits", "héllo wörld ✓"):
        assert tokenizer.encode(text, add_special=False) == tokenizer.backend.encode(text).ids


def test_a_prompt_longer_than_any_session_can_hold_is_refused_without_tokenizing_it(served):
    limit = MAX_CONTEXT * served.tokenizer.max_token_bytes
    with pytest.raises(ApiError) as refused:
        text_request(COMPLETION, {"prompt": "x" * (limit + 1)}, served)
    error = refused.value
    assert (error.status, error.param, error.code) == (400, "prompt", "context_length_exceeded")
    assert f"the text of prompt is {limit + 1} bytes" in error.message
    assert served.tokenizer.encoded == 0
    # at the limit it is tokenized, and refused for its tokens
    with pytest.raises(ApiError, match="a session of this deployment holds 256") as counted:
        text_request(COMPLETION, {"prompt": "x" * limit}, served)
    assert counted.value.code == "context_length_exceeded" and served.tokenizer.encoded == 1


def test_chat_messages_too_many_or_too_long_are_refused_before_tokenizing(served):
    many = [{"role": "user", "content": ""}] * (MAX_CONTEXT + 1)
    with pytest.raises(ApiError, match=f"{MAX_CONTEXT + 1} messages are more than") as refused:
        text_request(CHAT, {"messages": many}, served)
    assert refused.value.param == "messages" and served.tokenizer.rendered == 0

    long = [{"role": "user", "content": "y" * (MAX_CONTEXT * served.tokenizer.max_token_bytes)}]
    with pytest.raises(ApiError, match="the text of messages is") as refused:
        text_request(CHAT, {"messages": long}, served)
    assert refused.value.code == "context_length_exceeded" and served.tokenizer.encoded == 0

    # as many as a session holds tokens: rendered and tokenized, then refused for its tokens
    with pytest.raises(ApiError, match="a session of this deployment holds 256"):
        text_request(CHAT, {"messages": many[:MAX_CONTEXT]}, served)
    assert served.tokenizer.rendered == 2 and served.tokenizer.encoded == 1
