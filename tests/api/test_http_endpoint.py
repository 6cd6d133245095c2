"""The OpenAI-compatible endpoint as a client sees it: a real HTTP server on 127.0.0.1 over a deployment
whose second half runs in a real worker process (it holds the head and returns the top logits)."""

import contextlib
import http.client
import json
import socket
import threading
import time

import pytest
import torch

from partition.api.server import ApiServer
from partition.coordinator.answer import Answerer
from partition.coordinator.deploy import deploy
from partition.model.generation import GenerationRequest, generate, local_step
from partition.model.sampling import SamplingParams
from partition.model.tokenizer import load_tokenizer
from partition.transport.local import spawn_worker
from tests.coordinator.plans import split_plan

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOP_P_RANGE = "top_p must be a number in (0, 1]"
SEED = (400, "seed", "seed must be a whole number in [-9223372036854775808, 18446744073709551615]")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def deployed(smollm2):
    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    try:
        plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
        # one KV slot per worker: a second request has to wait for the first one's session to end
        deployment = deploy(plan, {"server-a": worker.address}, max_context=256, max_sessions=1)
        try:
            yield Answerer(deployment)
        finally:
            deployment.close()
    finally:
        worker.stop()


@contextlib.contextmanager
def api_server(answerer, **options):
    """An ApiServer (with `options`) over `answerer` on 127.0.0.1, answering until the block ends."""
    server = ApiServer("127.0.0.1", 0, **options)
    server.attach(answerer)
    server.serve_in_thread()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def api(deployed):
    with api_server(deployed) as server:
        yield server


def request(server, method, path, body=None, headers=None, raw: bytes | None = None):
    """(status, parsed JSON or the raw text) of one request on a new connection."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(
            method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        text = response.read().decode()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(text) if kind == "application/json" else text
    finally:
        connection.close()


def events(text: str) -> list:
    """The `data:` payloads of a server-sent event stream, JSON-decoded except [DONE]."""
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payload = block.removeprefix("data: ")
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def whole_model_answer(smollm2, smollm2_whole, prompt_ids: list[int], max_new_tokens: int, **fields):
    """The whole model's answer in this process (GenerationResult), with GenerationRequest's `fields`."""
    tokenizer = load_tokenizer(smollm2)
    eos = tuple(set(smollm2.spec.eos_token_ids) | set(tokenizer.eos_ids))
    cache = smollm2_whole.new_cache(slots=1, max_len=len(prompt_ids) + max_new_tokens)
    context = len(prompt_ids) + max_new_tokens
    request = GenerationRequest(prompt_ids, max_new_tokens, context=context, **fields)
    return generate(local_step(smollm2_whole, cache), request, eos, tokenizer.decode)


def whole_model_greedy(smollm2, smollm2_whole, prompt_ids: list[int], max_new_tokens: int) -> str:
    return whole_model_answer(smollm2, smollm2_whole, prompt_ids, max_new_tokens).text


def chat_prompt_ids(smollm2) -> list[int]:
    tokenizer = load_tokenizer(smollm2)
    return tokenizer.encode(tokenizer.render_chat(QUESTION), add_special=False)


def test_a_chat_completion_is_the_whole_models_greedy_answer(api, deployed, smollm2, smollm2_whole):
    body = {"model": "smollm2-135m", "messages": QUESTION, "temperature": 0, "max_tokens": 24}
    status, reply = request(api, "POST", "/v1/chat/completions", body)
    assert status == 200, reply
    prompt_ids = chat_prompt_ids(smollm2)
    expected = whole_model_greedy(smollm2, smollm2_whole, prompt_ids, 24)
    assert reply["object"] == "chat.completion" and reply["id"].startswith("chatcmpl-")
    assert reply["model"] == "smollm2-135m"
    (choice,) = reply["choices"]
    assert choice["message"] == {"role": "assistant", "content": expected}
    assert "Paris" in expected
    assert choice["finish_reason"] in ("stop", "length")
    usage = reply["usage"]
    assert usage["prompt_tokens"] == len(prompt_ids)
    assert (
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] <= len(prompt_ids) + 24
    )
    timing = reply["partition"]
    assert timing["plan_id"] == deployed.deployment.plan.plan_id
    assert timing["metrics"]["ttft_s"] > 0 and timing["metrics"]["tpot_s"] > 0
    assert [(h["from"], h["to"]) for h in timing["hops"]] == [("phone", "server-a"), ("server-a", "phone")]


def test_a_streamed_chat_sends_the_same_text_in_pieces_then_usage_and_done(api, smollm2, smollm2_whole):
    body = {
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 24,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, text = request(api, "POST", "/v1/chat/completions", body)
    assert status == 200, text
    got = events(text)
    assert got[-1] == "[DONE]"
    chunks, usage = got[:-2], got[-2]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert len([p for p in pieces if p]) > 3  # streamed, not sent at the end
    expected = whole_model_greedy(smollm2, smollm2_whole, chat_prompt_ids(smollm2), 24)
    assert "".join(pieces) == expected
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= len([p for p in pieces if p])
    assert usage["partition"]["metrics"]["tpot_s"] > 0


def test_completions_continue_text_or_token_ids_for_16_tokens_by_default(api, smollm2, smollm2_whole):
    ids = load_tokenizer(smollm2).encode("Once upon a time")
    status, by_text = request(
        api, "POST", "/v1/completions", {"prompt": "Once upon a time", "temperature": 0}
    )
    assert status == 200, by_text
    status, by_ids = request(api, "POST", "/v1/completions", {"prompt": ids, "temperature": 0})
    assert status == 200, by_ids
    assert by_text["object"] == "text_completion"
    assert by_text["usage"]["completion_tokens"] == 16 and by_text["choices"][0]["finish_reason"] == "length"
    assert by_text["choices"][0]["text"] == by_ids["choices"][0]["text"]
    assert by_text["choices"][0]["text"] == whole_model_greedy(smollm2, smollm2_whole, ids, 16)


def whole_model_logprobs(smollm2, smollm2_whole, prompt_ids: list[int], max_new_tokens: int, top: int):
    """The whole model's greedy tokens with their log-probabilities, in this process."""
    eos = tuple(set(smollm2.spec.eos_token_ids) | set(load_tokenizer(smollm2).eos_ids))
    context = len(prompt_ids) + max_new_tokens
    cache = smollm2_whole.new_cache(slots=1, max_len=context)
    request = GenerationRequest(prompt_ids, max_new_tokens, context=context, logprobs=top)
    step = local_step(smollm2_whole, cache, log_probs=True)
    return generate(step, request, eos, load_tokenizer(smollm2).decode).logprobs


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_chat_answer_brings_each_tokens_log_probability_and_its_likeliest_alternatives(
    api, smollm2, smollm2_whole, stream
):
    """The head runs on the worker, which sends back only its top 64: each token still comes with the
    whole model's log-probability, its bytes, and its 3 likeliest alternatives; streamed, each chunk
    brings those of the tokens its text came from."""
    body = {"messages": QUESTION, "temperature": 0, "max_tokens": 12, "logprobs": True, "top_logprobs": 3}
    status, reply = request(api, "POST", "/v1/chat/completions", body | {"stream": stream})
    assert status == 200, reply
    if stream:
        chunks = [e for e in events(reply) if e != "[DONE]"]
        assert chunks[0]["choices"][0]["logprobs"] is None  # the role's chunk: no token yet
        content = [t for c in chunks[1:] for t in c["choices"][0]["logprobs"]["content"]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert sum(1 for c in chunks[1:] if c["choices"][0]["logprobs"]["content"]) > 3  # as they came
    else:
        (choice,) = reply["choices"]
        content, text = choice["logprobs"]["content"], choice["message"]["content"]
        assert choice["logprobs"]["refusal"] is None and choice["finish_reason"] == "stop"
        assert len(content) == reply["usage"]["completion_tokens"] + 1  # and the EOS that ended it
    expected = whole_model_logprobs(smollm2, smollm2_whole, chat_prompt_ids(smollm2), 12, 3)
    assert len(content) == len(expected) > 3  # "The capital of France is Paris." and EOS
    assert bytes(b for token in content for b in token["bytes"]).decode() == text
    assert (content[-1]["token"], content[-1]["bytes"]) == ("", []) and expected[-1].ends  # EOS: no text
    tokenizer = load_tokenizer(smollm2)
    for token, want in zip(content[:-1], expected, strict=False):
        assert token["token"] == tokenizer.token_bytes(want.token_id).decode(errors="replace")
    for token, want in zip(content, expected, strict=True):
        assert token["logprob"] == pytest.approx(want.logprob, abs=1e-4) and token["logprob"] <= 0
        alternatives = token["top_logprobs"]
        assert [a["bytes"] for a in alternatives] == [list(tokenizer.token_bytes(i)) for i, _ in want.top]
        assert [a["logprob"] for a in alternatives] == pytest.approx([lp for _, lp in want.top], abs=1e-4)
        assert alternatives[0]["logprob"] == token["logprob"]  # greedy: the likeliest one was taken


def test_ignore_eos_min_tokens_and_stop_token_ids_end_the_answer_where_vllms_would(
    api, smollm2, smollm2_whole
):
    """The greedy answer to QUESTION ends with EOS after a few tokens. ignore_eos takes it as a token and
    goes on to max_tokens (what a benchmark of fixed lengths asks); min_tokens keeps EOS from being
    drawn before then, with the head on the worker sending back only its top logits, so each token
    is the whole model's choice without EOS; a stop token id ends the answer before it."""
    prompt_ids = chat_prompt_ids(smollm2)
    tokenizer = load_tokenizer(smollm2)
    eos = tuple(set(smollm2.spec.eos_token_ids) | set(tokenizer.eos_ids))

    def whole_model(max_tokens: int, **fields) -> list[int]:
        cache = smollm2_whole.new_cache(slots=1, max_len=len(prompt_ids) + max_tokens)
        request = GenerationRequest(prompt_ids, max_tokens, context=len(prompt_ids) + max_tokens, **fields)
        return generate(local_step(smollm2_whole, cache), request, eos, tokenizer.decode).token_ids

    def answer(**fields) -> tuple[list[int], str, int]:
        body = {"messages": QUESTION, "temperature": 0, "max_tokens": 16, **fields}
        status, reply = request(api, "POST", "/v1/chat/completions", body)
        assert status == 200, reply
        (choice,) = reply["choices"]
        ids = tokenizer.encode(choice["message"]["content"], add_special=False)
        return ids, choice["finish_reason"], reply["usage"]["completion_tokens"]

    plain = whole_model(16)
    assert len(plain) < 12
    ids, finish, used = answer(ignore_eos=True)
    assert (finish, used) == ("length", 16)
    assert ids[: len(plain)] == plain  # then EOS (not in the text) and what follows it
    longer = whole_model(16, min_tokens=12)
    assert len(longer) >= 12 and longer[: len(plain)] == plain
    ids, finish, used = answer(min_tokens=12)
    assert used == len(longer) >= 12 and ids == longer
    ids, finish, used = answer(stop_token_ids=[plain[2]])
    assert (ids, finish, used) == (plain[:2], "stop", 2)


def test_an_echoed_completion_scores_its_prompt_as_an_evaluation_harness_asks(api, smollm2, smollm2_whole):
    """lm-evaluation-harness's loglikelihood request (local-completions): token ids, echo, logprobs 1,
    one new token. It sums token_logprobs[ctxlen:-1] and takes a continuation as greedy where each
    equals the largest of its top_logprobs: both must be the whole model's."""
    tokenizer = load_tokenizer(smollm2)
    context, continuation = tokenizer.encode("The capital of France is"), tokenizer.encode(" Paris")
    ids = context + continuation
    body = {"prompt": [ids], "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": True}
    status, reply = request(api, "POST", "/v1/completions", body)
    assert status == 200, reply
    (choice,) = reply["choices"]
    said = choice["logprobs"]
    assert choice["text"].startswith(tokenizer.decode(ids)) and reply["usage"]["completion_tokens"] == 1
    assert len(said["tokens"]) == len(said["token_logprobs"]) == len(ids) + 1
    assert said["token_logprobs"][0] is None and said["top_logprobs"][0] is None
    assert "".join(said["tokens"]) == choice["text"]
    logits = smollm2_whole(torch.tensor([ids]), smollm2_whole.new_cache(1, len(ids)), [0], [0])[0]
    expected = torch.log_softmax(logits.float(), -1)
    scored = said["token_logprobs"][1 : len(ids)]
    assert scored == pytest.approx(expected[range(len(ids) - 1), ids[1:]].tolist(), abs=1e-4)
    harness_sum = sum(said["token_logprobs"][len(context) : -1])
    assert harness_sum == pytest.approx(float(expected[len(context) - 1, continuation[0]]), abs=1e-4)
    tokens, tops = said["token_logprobs"][len(context) : -1], said["top_logprobs"][len(context) : -1]
    assert all(lp == max(top.values()) for lp, top in zip(tokens, tops, strict=True))  # taken as greedy
    assert int(expected[len(context) - 1].argmax()) == continuation[0]  # as " Paris" is the model's pick


@pytest.mark.parametrize(
    "penalties",
    [
        {"presence_penalty": 1.0, "frequency_penalty": 0.5},
        {"repetition_penalty": 1.3},
        {"logit_bias": {"28": -100, "30": -100, "314": -100}},  # ",", ".", " is": a worker sends 3 more
        # " friends", the 301st likeliest first token, lifted past the likeliest: every logit comes back
        {"logit_bias": {"2428": 12.5}},
    ],
    ids=["presence-frequency", "repetition", "bias-down", "bias-up"],
)
def test_a_penalized_completion_is_the_whole_models_with_the_same_penalty(
    api, smollm2, smollm2_whole, penalties
):
    ids = load_tokenizer(smollm2).encode("Once upon a time")
    fields = penalties | {
        "logit_bias": tuple((int(t), float(b)) for t, b in penalties.get("logit_bias", {}).items())
    }
    expected = whole_model_answer(smollm2, smollm2_whole, ids, 40, sampling=SamplingParams(**fields)).text
    body = {"prompt": ids, "temperature": 0, "max_tokens": 40, **penalties}
    status, reply = request(api, "POST", "/v1/completions", body)
    assert status == 200, reply
    assert reply["choices"][0]["text"] == expected != whole_model_greedy(smollm2, smollm2_whole, ids, 40)


def test_min_p_samples_as_the_whole_model_does_and_a_stop_string_may_end_the_text(
    api, smollm2, smollm2_whole
):
    """vLLM's min_p, drawn from the logits the worker holding the head sends back (top_k keeps the
    plan's cost), and its include_stop_str_in_output, whole and streamed."""
    ids = load_tokenizer(smollm2).encode("Once upon a time")
    sampled = {"temperature": 1.5, "top_k": 64, "seed": 5}
    texts = {}
    for min_p in (0.0, 0.2):
        sampling = SamplingParams(**sampled, min_p=min_p)
        texts[min_p] = whole_model_answer(
            smollm2, smollm2_whole, ids, 32, sampling=sampling, ignore_eos=True
        ).text
    body = {"prompt": ids, "max_tokens": 32, "ignore_eos": True, **sampled, "min_p": 0.2}
    status, reply = request(api, "POST", "/v1/completions", body)
    assert status == 200, reply
    expected = reply["choices"][0]["text"]
    assert expected == texts[0.2] != texts[0.0]  # at 1.5, min_p 0.2 leaves fewer tokens to draw from
    stop = expected[12:15]
    cut = expected.index(stop)
    for kept, text in ((True, expected[: cut + len(stop)]), (False, expected[:cut])):
        asked = body | {"stop": [stop], "include_stop_str_in_output": kept}
        status, reply = request(api, "POST", "/v1/completions", asked)
        assert status == 200, reply
        assert reply["choices"][0]["text"] == text and reply["choices"][0]["finish_reason"] == "stop"
        status, streamed = request(api, "POST", "/v1/completions", asked | {"stream": True})
        assert status == 200, streamed
        assert "".join(e["choices"][0]["text"] for e in events(streamed) if e != "[DONE]") == text


def test_special_tokens_show_in_the_text_when_asked_and_the_tokens_still_join_into_it(api, smollm2):
    """vLLM's skip_special_tokens: false. With ignore_eos the answer goes on past <|im_end|> into the
    next turn; the text shows it as the tokenizer writes it, and a completion's tokens join into it."""
    tokenizer = load_tokenizer(smollm2)
    ids = chat_prompt_ids(smollm2)
    body = {"prompt": ids, "temperature": 0, "max_tokens": 24, "ignore_eos": True, "logprobs": 0}
    texts = {}
    for skip in (True, False):
        status, reply = request(api, "POST", "/v1/completions", body | {"skip_special_tokens": skip})
        assert status == 200, reply
        (choice,) = reply["choices"]
        texts[skip] = choice["text"]
        assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
    assert "<|im_end|>" in texts[False] and "<|im_end|>" not in texts[True]
    drawn = tokenizer.encode(texts[False], add_special=False)
    assert tokenizer.decode(drawn, skip_special=True) == texts[True]


def test_a_stop_string_cuts_the_text_not_the_log_probabilities_and_asking_changes_no_token(api):
    """Cut by a stop string, the answer still reports the tokens that held it (as vLLM does), streamed
    as whole; and a sampled answer is the same with log-probabilities asked for as without."""
    body = {"messages": QUESTION, "temperature": 0, "max_tokens": 12, "stop": ["Paris"]}
    asked = body | {"logprobs": True, "top_logprobs": 1}
    status, whole = request(api, "POST", "/v1/chat/completions", asked)
    assert status == 200, whole
    status, streamed = request(api, "POST", "/v1/chat/completions", asked | {"stream": True})
    assert status == 200, streamed
    chunks = [e for e in events(streamed) if e != "[DONE]"]
    entries = [t for c in chunks[1:] for t in c["choices"][0]["logprobs"]["content"]]
    (choice,) = whole["choices"]
    assert entries == choice["logprobs"]["content"] and choice["finish_reason"] == "stop"
    assert "Paris" not in choice["message"]["content"] and entries[-1]["token"] == " Paris"
    sampled = {"messages": QUESTION, "temperature": 0.9, "top_p": 0.95, "seed": 11, "max_tokens": 16}
    texts = []
    for extra in ({}, {"logprobs": True, "top_logprobs": 2}):
        status, reply = request(api, "POST", "/v1/chat/completions", sampled | extra)
        assert status == 200, reply
        texts.append(reply["choices"][0]["message"]["content"])
    assert texts[0] == texts[1]


def test_an_echoed_text_the_model_would_end_is_scored_to_its_end(api, smollm2, smollm2_whole):
    """The harness's request for a continuation after which the model draws EOS: the reply still has
    one entry past the prompt (EOS's, with no text), so its token_logprobs[ctxlen:-1] holds the whole
    continuation, as from vLLM."""
    tokenizer = load_tokenizer(smollm2)
    context = chat_prompt_ids(smollm2)
    continuation = tokenizer.encode("The capital of France is Paris.", add_special=False)
    ids = context + continuation
    body = {"prompt": [ids], "temperature": 0, "max_tokens": 1, "logprobs": 1, "echo": True}
    status, reply = request(api, "POST", "/v1/completions", body)
    assert status == 200, reply
    (choice,) = reply["choices"]
    said = choice["logprobs"]
    assert choice["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] == 0  # EOS drawn
    assert len(said["token_logprobs"]) == len(ids) + 1 and said["tokens"][-1] == ""
    assert "".join(said["tokens"]) == choice["text"] == tokenizer.decode(ids, skip_special=False)
    logits = smollm2_whole(torch.tensor([ids]), smollm2_whole.new_cache(1, len(ids)), [0], [0])[0]
    expected = torch.log_softmax(logits.float(), -1)
    harness = said["token_logprobs"][len(context) : -1]
    assert harness == pytest.approx(
        expected[range(len(context) - 1, len(ids) - 1), continuation].tolist(), abs=1e-4
    )
    eos = int(expected[-1].argmax())
    assert eos in tokenizer.eos_ids and said["token_logprobs"][-1] == pytest.approx(
        float(expected[-1, eos]), abs=1e-4
    )


def test_a_completions_tokens_join_into_its_text_where_a_character_spans_several(api):
    """東 and 京 each take three byte-level tokens: the tokens are the text each one adds ("" within a
    character, the character from its last), so they join into the text and each offset points at
    its own text; the alternatives include the drawn token, as OpenAI's do."""
    body = {"prompt": "Tokyo, 東京, is", "max_tokens": 4, "temperature": 0, "logprobs": 0, "echo": True}
    status, reply = request(api, "POST", "/v1/completions", body)
    assert status == 200, reply
    (choice,) = reply["choices"]
    said, text = choice["logprobs"], choice["text"]
    assert "".join(said["tokens"]) == text and "" in said["tokens"] and "東" in said["tokens"]
    assert all(
        text[offset:].startswith(token)
        for offset, token in zip(said["text_offset"], said["tokens"], strict=True)
    )
    assert said["text_offset"] == sorted(said["text_offset"])
    for token_logprob, top in zip(said["token_logprobs"][1:], said["top_logprobs"][1:], strict=True):
        assert len(top) == 1 and list(top.values()) == [token_logprob]  # logprobs 0: the drawn one alone


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_completion_brings_its_tokens_log_probabilities_in_the_legacy_shape(
    api, smollm2, smollm2_whole, stream
):
    body = {"prompt": "Once upon a time", "temperature": 0, "max_tokens": 10, "logprobs": 2}
    status, reply = request(api, "POST", "/v1/completions", body | {"stream": stream})
    assert status == 200, reply
    choices = [e["choices"][0] for e in events(reply) if e != "[DONE]"] if stream else reply["choices"]
    keys = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
    said = {key: [v for choice in choices for v in choice["logprobs"][key]] for key in keys}
    text = "".join(choice["text"] for choice in choices)
    ids = load_tokenizer(smollm2).encode("Once upon a time")
    expected = whole_model_logprobs(smollm2, smollm2_whole, ids, 10, 2)
    assert "".join(said["tokens"]) == text and len(said["tokens"]) == 10
    assert said["text_offset"] == [len("".join(said["tokens"][:i])) for i in range(10)]
    assert said["token_logprobs"] == pytest.approx([e.logprob for e in expected], abs=1e-4)
    assert all(len(top) == 2 and max(top.values()) == pytest.approx(lp, abs=1e-4)
               for top, lp in zip(said["top_logprobs"], said["token_logprobs"], strict=True))  # fmt: skip


def test_fields_we_cannot_honour_are_taken_at_their_off_values_and_stop_strings_up_to_the_limits(api):
    body = {
        "messages": QUESTION,
        "max_tokens": 2,
        "add_generation_prompt": True,
        "continue_final_message": False,
        "guided_json": None,
        "bad_words": [],
        "chat_template_kwargs": {},
        "skip_special_tokens": True,
        "modalities": ["text"],
        "stop": [chr(0x4E00 + i) * 256 for i in range(16)],
        # fields that change nothing here
        "user": "someone",
        "metadata": {"team": "a"},
        "store": False,
        "parallel_tool_calls": True,
    }
    status, reply = request(api, "POST", "/v1/chat/completions", body)
    assert status == 200, reply
    assert reply["usage"]["completion_tokens"] == 2
    # a completion takes OpenAI's off values of the log-probability fields as clients send them
    off = {"prompt": "x", "max_tokens": 1, "logprobs": False, "top_logprobs": None, "echo": False}
    status, reply = request(api, "POST", "/v1/completions", off)
    assert status == 200 and reply["choices"][0]["logprobs"] is None, reply
    status, reply = request(api, "POST", "/v1/completions", off | {"logprobs": None, "top_logprobs": 0})
    assert status == 200 and reply["choices"][0]["logprobs"] is None, reply


def test_served_model_names_replace_the_plans_and_replies_give_the_first(deployed):
    """serve --served-model-name, as vLLM's: requests may give any of the names, replies the first."""
    with api_server(deployed, model_names=("tiny-chat", "gpt-4o-mini")) as server:
        status, listed = request(server, "GET", "/v1/models")
        assert status == 200 and [m["id"] for m in listed["data"]] == ["tiny-chat", "gpt-4o-mini"]
        assert request(server, "GET", "/v1/models/gpt-4o-mini")[1]["id"] == "gpt-4o-mini"
        body = {"model": "gpt-4o-mini", "messages": QUESTION, "max_tokens": 2}
        status, reply = request(server, "POST", "/v1/chat/completions", body)
        assert status == 200 and reply["model"] == "tiny-chat", reply
        status, reply = request(server, "POST", "/v1/chat/completions", body | {"model": "smollm2-135m"})
        assert (
            status == 404 and "this endpoint serves 'tiny-chat' or 'gpt-4o-mini'" in reply["error"]["message"]
        )
        assert request(server, "GET", "/v1/models/smollm2-135m")[0] == 404


def test_one_model_is_retrieved_by_its_id_and_another_is_a_404_naming_the_served_one(api):
    status, listed = request(api, "GET", "/v1/models")
    assert status == 200
    status, one = request(api, "GET", "/v1/models/smollm2-135m")
    assert status == 200 and one == listed["data"][0] and one["object"] == "model"
    status, reply = request(api, "GET", "/v1/models/gpt-4o")
    assert status == 404 and reply["error"]["code"] == "model_not_found"
    assert "'gpt-4o' is not served here; this endpoint serves 'smollm2-135m'" in reply["error"]["message"]
    status, reply = request(api, "GET", "/v1/model")
    assert (
        status == 404
        and "this endpoint has GET /v1/models, /v1/models/MODEL, /metrics" in (reply["error"]["message"])
    )


def test_a_temperature_near_0_samples_the_greedy_answer_and_a_top_k_past_the_vocabulary_all_of_it(api):
    """At 1e-40 every logit but the largest scales past float32's range; a top-k of 2**32 does not fit the
    worker's 32-bit field and keeps every token, as top-k 0 does."""

    def text(**sampling) -> str:
        status, reply = request(api, "POST", "/v1/completions", {"prompt": "Once upon a time", **sampling})
        assert status == 200, reply
        return reply["choices"][0]["text"]

    assert text(temperature=1e-40, seed=3) == text(temperature=0)
    assert text(temperature=0.8, top_k=2**32, seed=3) == text(temperature=0.8, top_k=0, seed=3)


def test_a_one_token_answer_is_strict_json_with_null_for_its_undefined_tpot(api):
    """TPOT needs two tokens; a strict parser (JavaScript's JSON.parse) must still read the reply."""

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    for stream in (False, True):
        body = {"prompt": "Once upon a time", "max_tokens": 1, "temperature": 0, "stream": stream}
        body |= {"stream_options": {"include_usage": True}} if stream else {}
        host, port = api.server_address[:2]
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        try:
            connection.request("POST", "/v1/completions", body=json.dumps(body).encode())
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        assert response.status == 200, text
        payloads = [b.removeprefix("data: ") for b in text.split("\n\n") if b.strip()] if stream else [text]
        replies = [json.loads(p, parse_constant=refuse) for p in payloads if p != "[DONE]"]
        metrics = next(r["partition"]["metrics"] for r in replies if "partition" in r)
        assert metrics["tpot_s"] is None and metrics["ttft_s"] > 0, metrics


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "says"),
    [
        ("/v1/chat/completions", b"{not json", 400, None, "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", 400, None, "must be a JSON object"),
        ("/v1/embeddings", {"input": "x"}, 404, None, "/v1/chat/completions"),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": QUESTION}, 404, "model", "'smollm2-135m'"),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "best_of": 2},
            400,
            "best_of",
            "best_of=2 is not supported",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "top_logprobs": 3},
            400,
            "top_logprobs",
            "logprobs: true",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "logprobs": True, "top_logprobs": 21},
            400,
            "top_logprobs",
            "[0, 20]",
        ),
        ("/v1/chat/completions", {"messages": QUESTION, "logprobs": 3}, 400, "logprobs", "true or false"),
        ("/v1/completions", {"prompt": "x", "logprobs": True}, 400, "logprobs", "[0, 20]"),
        ("/v1/completions", {"prompt": "x", "top_logprobs": 2}, 400, "top_logprobs", "leave it out"),
        ("/v1/completions", {"prompt": "x", "prompt_logprobs": 1}, 400, "prompt_logprobs", "leave it out"),
        ("/v1/completions", {"prompt": "x", "echo": True, "stream": True}, 400, "echo", "without stream"),
        ("/v1/chat/completions", {"messages": QUESTION, "echo": True}, 400, "echo", "leave it out"),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "min_tokens": 30, "max_tokens": 10},
            400,
            "min_tokens",
            "min_tokens (30) must be at most max_tokens (10)",
        ),
        ("/v1/chat/completions", {"messages": QUESTION, "min_tokens": -1}, 400, "min_tokens", ">= 0"),
        ("/v1/completions", {"prompt": "x", "stop_token_ids": [49152]}, 400, "stop_token_ids", "[0, 49152)"),
        (
            "/v1/completions",
            {"prompt": "x", "stop_token_ids": 2},
            400,
            "stop_token_ids",
            "a list of token ids",
        ),
        (
            "/v1/completions",
            {"prompt": "x", "stop_token_ids": [2] * 257},
            400,
            "stop_token_ids",
            "at most 256",
        ),
        ("/v1/completions", {"prompt": "x", "ignore_eos": 1}, 400, "ignore_eos", "true or false"),
        ("/v1/completions", {"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty", "[-2, 2]"),
        ("/v1/completions", {"prompt": "x", "frequency_penalty": "1"}, 400, "frequency_penalty", "[-2, 2]"),
        ("/v1/completions", {"prompt": "x", "logit_bias": [1, 2]}, 400, "logit_bias", "must be an object"),
        ("/v1/completions", {"prompt": "x", "logit_bias": {"x": 1}}, 400, "logit_bias", "'x' is no token id"),
        ("/v1/completions", {"prompt": "x", "logit_bias": {"49152": 1}}, 400, "logit_bias", "[0, 49152)"),
        ("/v1/completions", {"prompt": "x", "logit_bias": {"9" * 5000: 1}}, 400, "logit_bias", "no token id"),
        (
            "/v1/completions",
            {"prompt": "x", "logit_bias": {"5": 101}},
            400,
            "logit_bias",
            "[-100, 100], got 101",
        ),
        (
            "/v1/completions",
            {"prompt": "x", "logit_bias": {"5": 1, "05": 1}},
            400,
            "logit_bias",
            "token 5 twice",
        ),
        (
            "/v1/completions",
            {"prompt": "x", "repetition_penalty": 0},
            400,
            "repetition_penalty",
            "repetition_penalty must be a number in [0.01, 100]",
        ),
        (
            "/v1/completions",
            {"prompt": "x", "repetition_penalty": 10**4000},
            400,
            "repetition_penalty",
            "repetition_penalty must be a number in [0.01, 100]",
        ),
        (
            "/v1/completions",
            {"prompt": "x", "repetition_penalty": 1.2, "logprobs": 1},
            400,
            "repetition_penalty",
            "ask for one or the other",
        ),
        ("/v1/completions", {"prompt": "x", "min_p": 1.5}, 400, "min_p", "min_p must be a number in [0, 1]"),
        (
            "/v1/completions",
            {"prompt": "x", "include_stop_str_in_output": "yes"},
            400,
            "include_stop_str_in_output",
            "true or false",
        ),
        ("/v1/chat/completions", {"messages": QUESTION, "temperature": 3}, 400, "temperature", "[0, 2]"),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "temperature": 10**400},
            400,
            "temperature",
            "[0, 2]",
        ),
        ("/v1/chat/completions", {"messages": QUESTION, "top_k": "ten"}, 400, "top_k", "whole number"),
        ("/v1/chat/completions", {"messages": QUESTION, "top_k": -1.0}, 400, "top_k", "whole number"),
        ("/v1/chat/completions", {"messages": QUESTION, "top_k": 5.0}, 400, "top_k", "whole number"),
        ("/v1/chat/completions", {"messages": QUESTION, "top_p": 0}, 400, "top_p", TOP_P_RANGE),
        ("/v1/chat/completions", {"messages": QUESTION, "top_p": 2}, 400, "top_p", TOP_P_RANGE),
        ("/v1/chat/completions", {"messages": QUESTION, "top_p": "all"}, 400, "top_p", TOP_P_RANGE),
        ("/v1/chat/completions", {"messages": QUESTION, "seed": 12345678901234567890123456789}, *SEED),
        ("/v1/chat/completions", {"messages": QUESTION, "seed": 2**64, "temperature": 0}, *SEED),
        ("/v1/completions", {"prompt": "x", "seed": -(2**63) - 1, "temperature": 0.7}, *SEED),
        ("/v1/completions", {"prompt": "x", "seed": 1.5}, *SEED),
        ("/v1/completions", b'{"prompt": "x", "seed": 1' + b"0" * 5000 + b"}", 400, None, "too long"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages", "non-empty list"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "tool", "content": "x"}]},
            400,
            "messages[0].role",
            "tool",
        ),
        ("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 0}, 400, "max_tokens", ">= 1"),
        ("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 1000}, 400, "max_tokens", "at most"),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "stream_options": {}},
            400,
            "stream_options",
            "stream=true",
        ),
        ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt", "one prompt per request"),
        (
            "/v1/completions",
            {"prompt": "x", "temprature": 0},
            400,
            "temprature",
            "did you mean 'temperature'",
        ),
        ("/v1/completions", {"prompt": "x", "max_token": 4}, 400, "max_token", "unknown field 'max_token'"),
        ("/v1/completions", {"messages": QUESTION}, 400, "messages", "this route takes prompt, not messages"),
        ("/v1/chat/completions", {"messages": QUESTION, "prompt": "x"}, 400, "prompt", "takes messages"),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "modalities": ["audio"]},
            400,
            "modalities",
            "leave it",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "skip_special_tokens": "no"},
            400,
            "skip_special_tokens",
            "true or false",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "reasoning_effort": "high"},
            400,
            "reasoning_effort",
            "leave",
        ),
        ("/v1/completions", {"prompt": [1, 10**9]}, 400, "prompt", "token ids must lie in"),
        ("/v1/completions", {"prompt": "x " * 400}, 400, "prompt", "a session of this deployment holds 256"),
        ("/v1/completions", {"prompt": "x " * 400}, 400, "prompt", "larger --max-context, at most 8192"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": ["user"], "content": "Hi"}]},
            400,
            "messages[0].role",
            '["user"] is not one of',
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": {"a": 1}, "content": "Hi"}]},
            400,
            "messages[0].role",
            "not one of",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "guided_choice": ["yes", "no"]},
            400,
            "guided_choice",
            "leave it out",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "guided_json": {}},
            400,
            "guided_json",
            "leave it out",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "allowed_token_ids": [1]},
            400,
            "allowed_token_ids",
            "leave it out",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "continue_final_message": True},
            400,
            "continue_final_message",
            "leave it out",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "add_generation_prompt": False},
            400,
            "add_generation_prompt",
            "leave it out",
        ),
        ("/v1/completions", {"prompt": "x", "stop": ["s"] * 17}, 400, "stop", "at most 16 strings"),
        ("/v1/completions", {"prompt": "x", "stop": ["s" * 257]}, 400, "stop", "the longest 257 characters"),
        (
            "/v1/completions",
            {"prompt": "x", "max_tokens": -7, "max_completion_tokens": 3},
            400,
            "max_tokens",
            "whole number >= 1, got -7",
        ),
        ("/v1/completions", b"[" * 100_000, 400, None, "nested too deeply"),
        ("/v1/completions", b'{"prompt": "hi \\ud800 there"}', 400, "prompt", "lone surrogate (U+D800 at"),
        ("/v1/completions", b'{"prompt": "hi \xed\xa0\x80"}', 400, "prompt", "lone surrogate (U+D800 at"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
            400,
            "messages[0].content",
            "lone surrogate (U+DFFF",
        ),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "max_completion_tokens": 1000},
            400,
            "max_completion_tokens",
            "and max_completion_tokens (1000) need",
        ),
    ],
)
def test_a_bad_request_is_named_in_openais_error_shape_and_the_endpoint_keeps_serving(
    api, path, body, status, param, says
):
    raw = body if isinstance(body, bytes) else None
    got, reply = request(api, "POST", path, None if raw else body, raw=raw)
    assert got == status, reply
    error = reply["error"]
    assert says in error["message"], error
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    ok, models = request(api, "GET", "/v1/models")
    assert ok == 200 and [m["id"] for m in models["data"]] == ["smollm2-135m"]


def test_a_client_that_leaves_mid_stream_frees_its_session_for_the_next_one(api):
    host, port = api.server_address[:2]
    body = json.dumps({"messages": QUESTION, "max_tokens": 200, "stream": True, "temperature": 0}).encode()
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as client:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while b"data: " not in received:  # the headers and each event are separate writes
            chunk = client.recv(4096)
            assert chunk, received  # the answer is streaming, not ended
            received += chunk
    # The deployment has one session slot per worker: this answer needs the one the stream held.
    status, reply = request(api, "POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 3})
    assert status == 200, reply
    assert reply["usage"]["completion_tokens"] == 3


def test_two_clients_at_once_on_one_session_slot_both_get_their_answer(api):
    replies = [None, None]

    def ask(index: int) -> None:
        replies[index] = request(
            api, "POST", "/v1/completions", {"prompt": "The sea", "max_tokens": 6, "temperature": 0}
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert [status for status, _ in replies] == [200, 200], replies
    assert replies[0][1]["choices"][0]["text"] == replies[1][1]["choices"][0]["text"]


def test_with_an_api_key_only_requests_that_carry_it_are_answered(deployed):
    server = ApiServer("127.0.0.1", 0, token="s3cret")
    server.attach(deployed)
    server.serve_in_thread()
    try:
        host, port = server.server_address[:2]
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        connection.request("GET", "/v1/models")
        refused = connection.getresponse()
        reply = json.loads(refused.read())
        connection.close()
        assert refused.status == 401 and reply["error"]["code"] == "invalid_api_key"
        assert refused.getheader("WWW-Authenticate", "").startswith("Bearer ")  # the scheme to use
        assert "Authorization: Bearer" in reply["error"]["message"]
        status, _ = request(server, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, reply = request(server, "GET", "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and reply["data"][0]["id"] == "smollm2-135m"
        for scheme in ("bearer", "BEARER", "bEaReR"):  # the scheme is case-insensitive; the key is not
            given = {"Authorization": f"{scheme}  s3cret"}
            assert request(server, "GET", "/v1/models", headers=given)[0] == 200, scheme
        for wrong in ("Bearer S3CRET", "Basic s3cret", "s3cret", "Bearer", "Bearer s3cret s3cret"):
            assert request(server, "GET", "/v1/models", headers={"Authorization": wrong})[0] == 401, wrong
        status, reply = request(server, "GET", "/health")  # for load balancers: no key needed
        assert status == 200 and reply["status"] == "ok"
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_count_what_this_endpoint_served_per_link_and_stage(deployed):
    server = ApiServer("127.0.0.1", 0)  # a new endpoint: its counts start at zero
    server.attach(deployed)
    server.serve_in_thread()
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}
        status, first = request(server, "POST", "/v1/completions", body)
        assert status == 200, first
        status, text = request(server, "POST", "/v1/completions", body | {"max_tokens": 4, "stream": True})
        assert status == 200, text
        assert request(server, "POST", "/v1/completions", body | {"n": 17})[0] == 400
        host, port = server.server_address[:2]
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        samples = dict(
            line.rsplit(" ", 1) for line in response.read().decode().splitlines() if not line.startswith("#")
        )
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert (
        first["choices"][0]["finish_reason"] == "length"
    )  # 5 tokens: 1 from the prompt's step, 4 decode steps
    plan_id = deployed.deployment.plan.plan_id
    assert samples[f'partition_plan_info{{plan_id="{plan_id}",epoch="1",model="smollm2-135m"}}'] == "1"
    assert samples['partition_requests_total{outcome="ok"}'] == "2"
    assert samples['partition_requests_total{outcome="400"}'] == "1"
    assert samples["partition_requests_running"] == "0" and samples["partition_requests_waiting"] == "0"
    assert samples["partition_generation_tokens_total"] == str(5 + 4)
    assert samples["partition_prompt_tokens_total"] == str(2 * first["usage"]["prompt_tokens"])
    assert samples["partition_time_to_first_token_seconds_count"] == "2"
    decode_steps = (5 - 1) + (4 - 1)
    for link in ('src="phone",dst="server-a",codec="raw"', 'src="server-a",dst="phone",codec="top-k"'):
        assert samples[f"partition_link_latency_seconds_count{{{link}}}"] == str(decode_steps), link
        assert samples[f'partition_link_latency_seconds_bucket{{{link},le="+Inf"}}'] == str(decode_steps)
    assert samples['partition_stage_compute_seconds_count{hop="1",device="server-a"}'] == str(decode_steps)
    assert samples['partition_stage_compute_seconds_count{hop="0",device="phone"}'] == str(decode_steps)


def test_other_methods_get_a_405_saying_what_is_served_and_the_connection_goes_on(api):
    host, port = api.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"):
            connection.request(method, "/v1/chat/completions", body=b'{"x": 1}')  # a body, read and dropped
            response = connection.getresponse()
            error = json.loads(response.read())["error"]
            assert response.status == 405 and response.getheader("Allow") == "GET, HEAD, POST", method
            assert error["code"] == "method_not_allowed" and method in error["message"]
        # a route's own method is named for it: GET where POST is served, and the other way round
        for method, path, allow in (
            ("GET", "/v1/chat/completions", "POST"),
            ("HEAD", "/v1/completions", "POST"),
            ("POST", "/v1/models", "GET, HEAD"),
            ("POST", "/v1/models/smollm2-135m", "GET, HEAD"),
            ("POST", "/health", "GET, HEAD"),
        ):
            connection.request(method, path, body=b"{}" if method == "POST" else None)
            response = connection.getresponse()
            body = response.read()
            assert response.status == 405 and response.getheader("Allow") == allow, (method, path)
            if method != "HEAD":
                error = json.loads(body)["error"]
                assert error["code"] == "method_not_allowed" and method in error["message"], error
        connection.request("GET", "/health")  # the same kept-alive connection
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    finally:
        connection.close()


def test_a_served_baseline_is_named_in_every_reply_health_and_metrics(deployed):
    # what serve --baseline edge_only gives its Answerer (a baseline runs under a plan id of its own)
    labels = {"baseline": "edge_only", "base_plan_id": "0123456789ab"}
    server = ApiServer("127.0.0.1", 0)
    server.attach(Answerer(deployed.deployment, labels=labels))
    server.serve_in_thread()
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 2, "temperature": 0}
        status, reply = request(server, "POST", "/v1/completions", body)
        assert status == 200, reply
        assert reply["partition"]["plan_id"] == deployed.deployment.plan.plan_id
        assert reply["partition"].items() >= labels.items()
        status, health = request(server, "GET", "/health")
        assert status == 200 and health.items() >= labels.items()
        status, metrics = request(server, "GET", "/metrics")
        assert 'baseline="edge_only",base_plan_id="0123456789ab"} 1' in metrics
    finally:
        server.shutdown()
        server.server_close()


def test_the_body_of_a_refused_request_is_never_taken_for_the_next_request(api):
    host, port = api.server_address[:2]
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"  # a request inside the body of a refused one
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        connection.request("POST", "/v1/embeddings", body=hidden)
        response = connection.getresponse()
        assert response.status == 404 and b"no route POST /v1/embeddings" in response.read()
        connection.request("GET", "/health")  # the same connection, kept alive
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    finally:
        connection.close()


def get_metrics(server) -> dict[str, str]:
    status, text = request(server, "GET", "/metrics")
    assert status == 200, text
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_a_client_that_hangs_up_before_its_whole_answer_ends_the_request(deployed):
    server = ApiServer("127.0.0.1", 0)
    server.attach(deployed)
    server.serve_in_thread()
    try:
        host, port = server.server_address[:2]
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0}).encode()
        with socket.create_connection(
            (host, port), timeout=TIMEOUT_S
        ) as client:  # no stream: one reply at the end
            client.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        # one session slot: the two requests take turns, in either order
        status, reply = request(server, "POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 3})
        assert status == 200, reply
        deadline = time.monotonic() + TIMEOUT_S
        while (deployed.running or deployed.waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        samples = get_metrics(server)
    finally:
        server.shutdown()
        server.server_close()
    assert samples['partition_requests_total{outcome="client_gone"}'] == "1"
    assert samples['partition_requests_total{outcome="ok"}'] == "1"
    assert samples["partition_generation_tokens_total"] == "3"  # only the answered request's


def test_a_stopping_endpoint_refuses_new_connections_and_lets_a_streaming_answer_finish(deployed):
    server = ApiServer("127.0.0.1", 0)
    server.attach(deployed)
    server.serve_in_thread()
    host, port = server.server_address[:2]
    streaming, finished, lines = threading.Event(), threading.Event(), []

    def stream() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        body = {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stream": True}
        connection.request("POST", "/v1/completions", body=json.dumps(body))
        response = connection.getresponse()
        while line := response.readline():
            if line.startswith(b"data: "):
                lines.append(line[6:].strip().decode())
                streaming.set()
        finished.set()
        connection.close()

    client = threading.Thread(target=stream)
    client.start()
    try:
        assert streaming.wait(TIMEOUT_S)
        server.shutdown()
        drained = server.drain(TIMEOUT_S)
        # drain returned once the answer's last byte was sent: its generation had ended by then, not
        # seconds later (the rest of the 48 tokens), whenever this thread or the client's gets to run
        running_when_drained = deployed.running
        assert finished.wait(TIMEOUT_S)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5)
    finally:
        client.join(TIMEOUT_S)
        server.server_close()
    assert drained and running_when_drained == 0
    assert lines[-1] == "[DONE]"
    assert json.loads(lines[-2])["choices"][0]["finish_reason"] == "length"
    assert sum(bool(json.loads(line)["choices"][0]["text"]) for line in lines[:-2]) > 10


def test_a_client_that_hangs_up_while_it_waits_for_a_slot_gives_its_turn_up(deployed):
    server = ApiServer("127.0.0.1", 0)
    server.attach(deployed)
    server.serve_in_thread()
    host, port = server.server_address[:2]
    # A story: 200 tokens (seconds) with no end of text in them, so the stream still runs once the
    # waiting request's hang-up is seen (within a 0.2 s poll); the answer to QUESTION ends after 7.
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 200, "stream": True, "temperature": 0})
    post = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body.encode(),
    )
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S) as streaming:
            streaming.sendall(post)  # holds the one session slot while it streams
            received = b""
            while b"data: " not in received:
                received += streaming.recv(4096)
            with socket.create_connection((host, port), timeout=TIMEOUT_S) as waiting:
                waiting.sendall(post)
                deadline = time.monotonic() + TIMEOUT_S
                while deployed.waiting != 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert deployed.waiting == 1  # behind the stream
            # it hung up: its turn is given up while the stream still runs, not after it
            while deployed.waiting and time.monotonic() < deadline:
                time.sleep(0.01)
            assert deployed.waiting == 0 and deployed.running == 1
            assert get_metrics(server)['partition_requests_total{outcome="client_gone"}'] == "1"
        while deployed.running and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()


def test_a_requests_ttft_counts_its_wait_for_a_session_slot(deployed):
    """TTFT is from arrival (REFERENCES.md): a request queued behind another (one slot) reports the wait."""
    tokenizer = deployed.tokenizer
    ids = tokenizer.encode("Once upon a time", add_special=False)
    first_done = []

    def first() -> None:
        deployed.answer(GenerationRequest(ids, 48, context=len(ids) + 48))
        first_done.append(time.perf_counter())

    ahead = threading.Thread(target=first)
    ahead.start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not deployed.running and time.monotonic() < deadline:
            time.sleep(0.01)
        arrived = time.perf_counter()
        second = deployed.answer(GenerationRequest(ids, 2, context=len(ids) + 2))
    finally:
        ahead.join(TIMEOUT_S)
    assert deployed.running == 0 and first_done
    assert second.result.ttft_s >= first_done[0] - arrived > 0  # its first token came after the first ended
