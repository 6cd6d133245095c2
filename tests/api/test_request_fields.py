"""How the endpoint reads a request's fields (serve --http), checked without a server: what each field
becomes, and what is refused naming itself."""

import pytest

from partition.api.requests import CHAT, ApiError, Served, text_request
from partition.model.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def served(smollm2) -> Served:
    return Served(
        "smollm2-135m", load_tokenizer(smollm2), smollm2.spec.vocab_size, 256, smollm2.spec.max_context
    )


def test_text_parts_of_a_message_are_read_one_per_line(served):
    """As vLLM renders them: two parts are two lines, not one run-on sentence."""
    parts = [{"type": "text", "text": "Tell me a joke."}, {"type": "text", "text": "Answer in French."}]
    as_parts = text_request(CHAT, {"messages": [{"role": "user", "content": parts}]}, served)
    as_lines = text_request(
        CHAT, {"messages": [{"role": "user", "content": "Tell me a joke.\nAnswer in French."}]}, served
    )
    assert as_parts.generation.prompt_ids == as_lines.generation.prompt_ids


def test_a_typo_in_stream_options_is_refused_naming_it(served):
    body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with pytest.raises(ApiError) as refused:
        text_request(CHAT, body | {"stream_options": {"include_usge": True}}, served)
    assert refused.value.status == 400 and refused.value.param == "stream_options.include_usge"
    assert "did you mean 'include_usage'" in str(refused.value)
    with pytest.raises(ApiError, match="stream_options.continuous_usage_stats"):
        text_request(CHAT, body | {"stream_options": {"continuous_usage_stats": True}}, served)
    # OpenAI's padding against length side channels changes nothing here: taken, and checked as a flag
    taken = text_request(
        CHAT, body | {"stream_options": {"include_usage": True, "include_obfuscation": False}}, served
    )
    assert taken.include_usage
    with pytest.raises(ApiError, match="stream_options.include_obfuscation must be true or false"):
        text_request(CHAT, body | {"stream_options": {"include_obfuscation": "no"}}, served)
