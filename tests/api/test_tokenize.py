"""vLLM's /tokenize and /detokenize on the OpenAI-compatible endpoint, as a client sees them: a chat's
count is what a chat completion of the same messages reports as its prompt_tokens."""

import pytest

from partition.model.tokenizer import load_tokenizer
from tests.api.test_http_endpoint import QUESTION, api, deployed, request  # noqa: F401  (fixtures)

TEXT = "Once upon a time, in a café by the sea"


def test_a_prompts_tokens_are_the_tokenizers_and_turn_back_into_its_text(api, smollm2):  # noqa: F811
    tokenizer = load_tokenizer(smollm2)
    status, said = request(api, "POST", "/tokenize", {"prompt": TEXT, "return_token_strs": True})
    assert status == 200, said
    assert said["tokens"] == tokenizer.encode(TEXT) and said["count"] == len(said["tokens"])
    assert said["max_model_len"] == 256  # a session's tokens here (the fixture's --max-context)
    assert "".join(said["token_strs"]) == TEXT
    status, back = request(api, "POST", "/detokenize", {"model": "smollm2-135m", "tokens": said["tokens"]})
    assert status == 200 and back == {"prompt": TEXT}
    status, plain = request(api, "POST", "/tokenize", {"prompt": TEXT})
    assert status == 200 and plain["token_strs"] is None and plain["tokens"] == said["tokens"]


def test_a_chats_count_is_the_prompt_tokens_a_chat_completion_reports(api):  # noqa: F811
    status, said = request(api, "POST", "/tokenize", {"messages": QUESTION})
    assert status == 200, said
    status, reply = request(api, "POST", "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 1})
    assert status == 200, reply
    assert said["count"] == reply["usage"]["prompt_tokens"]
    status, bare = request(api, "POST", "/tokenize", {"messages": QUESTION, "add_generation_prompt": False})
    assert (
        status == 200 and bare["tokens"] == said["tokens"][: bare["count"]] and bare["count"] < said["count"]
    )
    status, back = request(api, "POST", "/detokenize", {"tokens": said["tokens"]})
    assert (
        status == 200 and back["prompt"].startswith("<|im_start|>") and back["prompt"].endswith("assistant\n")
    )


@pytest.mark.parametrize(
    ("path", "body", "param", "said"),
    [
        ("/tokenize", {"prompt": "x", "messages": QUESTION}, "prompt", "either prompt (text) or messages"),
        ("/tokenize", {}, "prompt", "either prompt (text) or messages"),
        ("/tokenize", {"promt": "x"}, "promt", "did you mean 'prompt'"),
        ("/tokenize", {"prompt": [1, 2]}, "prompt", "prompt must be a string"),
        (
            "/tokenize",
            {"prompt": "x", "add_generation_prompt": True},
            "add_generation_prompt",
            "messages only",
        ),
        ("/tokenize", {"prompt": "x", "return_token_strs": 1}, "return_token_strs", "true or false"),
        ("/tokenize", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "robot"),
        ("/tokenize", {"model": "gpt-4o", "prompt": "x"}, "model", "not served here"),
        ("/detokenize", {"tokens": [49152]}, "tokens", "[0, 49152)"),
        ("/detokenize", {"tokens": "1 2"}, "tokens", "a list of token ids"),
        ("/detokenize", {"tokens": [1] * 8193}, "tokens", "at most 8192 ids"),
    ],
)
def test_a_bad_token_request_is_named_and_the_endpoint_keeps_serving(api, path, body, param, said):  # noqa: F811
    status, reply = request(api, "POST", path, body)
    assert status in (400, 404) and reply["error"]["param"] == param and said in reply["error"]["message"]
    assert request(api, "POST", "/tokenize", {"prompt": "x"})[0] == 200


def test_the_token_routes_take_post_and_are_named_where_a_route_is_missing(api):  # noqa: F811
    status, reply = request(api, "GET", "/tokenize")
    assert status == 405 and "takes POST" in reply["error"]["message"]
    status, reply = request(api, "POST", "/v1/tokenize", {"prompt": "x"})
    assert status == 404 and "/tokenize, /detokenize" in reply["error"]["message"]
