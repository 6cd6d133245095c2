"""A request's `n` choices: through a real HTTP server over a real worker process holding the head (two
session slots, so two choices generate at once and their chunks interleave), each choice the whole
model's answer with its own seed; and the fan-out's failure rule, with a stand-in answerer."""

import threading
import time

import pytest

from partition.api.choices import ChoiceDropped, answer_choices, choice_request
from partition.coordinator.answer import Answerer
from partition.coordinator.deploy import deploy
from partition.model.generation import GenerationRequest
from partition.model.sampling import SEED_MAX, SamplingParams
from partition.model.tokenizer import load_tokenizer
from partition.transport.local import spawn_worker
from tests.api.test_http_endpoint import (
    QUESTION,
    api_server,
    events,
    get_metrics,
    request,
    whole_model_answer,
)
from tests.coordinator.plans import split_plan

SAMPLED = {"temperature": 1.0, "top_k": 64, "seed": 7}


@pytest.fixture(scope="module")
def api(smollm2):
    worker = spawn_worker("server-a", extra_args=("--threads", "1"))
    try:
        plan = split_plan(smollm2, [("phone", 0, 16, "raw"), ("server-a", 16, 32, "raw")])
        deployment = deploy(plan, {"server-a": worker.address}, max_context=256, max_sessions=2)
        try:
            with api_server(Answerer(deployment)) as server:
                yield server
        finally:
            deployment.close()
    finally:
        worker.stop()


def test_each_of_n_choices_is_the_whole_models_answer_with_its_seed_counted_once_per_prompt(
    api, smollm2, smollm2_whole
):
    ids = load_tokenizer(smollm2).encode("Once upon a time")
    before = get_metrics(api)
    body = {"prompt": ids, "n": 3, "best_of": 3, "max_tokens": 12, **SAMPLED}  # best_of = n: the same
    status, reply = request(api, "POST", "/v1/completions", body)
    assert status == 200, reply
    texts = [choice["text"] for choice in reply["choices"]]
    assert [choice["index"] for choice in reply["choices"]] == [0, 1, 2]
    expected = [
        whole_model_answer(
            smollm2, smollm2_whole, ids, 12, sampling=SamplingParams(**(SAMPLED | {"seed": 7 + i}))
        )
        for i in range(3)
    ]
    assert texts == [result.text for result in expected]
    assert len(set(texts)) == 3  # sampled apart, as vLLM seeds them
    usage = reply["usage"]
    assert usage["prompt_tokens"] == len(ids)  # once, as OpenAI counts it
    assert usage["completion_tokens"] == sum(len(result.token_ids) for result in expected)
    assert all(choice["partition"]["metrics"]["ttft_s"] > 0 for choice in reply["choices"])
    after = get_metrics(api)
    said = 'partition_requests_total{outcome="ok"}'
    assert int(after[said]) - int(before.get(said, "0")) == 1  # one request, three choices
    tokens = "partition_generation_tokens_total"
    assert int(float(after[tokens]) - float(before.get(tokens, "0"))) == usage["completion_tokens"]


def test_streamed_choices_interleave_and_each_one_is_its_whole_replys(api):
    """Two slots, two choices: both generate at once, so chunks of both arrive before either ends; each
    choice's chunks join into that choice of the whole reply, log-probabilities included."""
    body = {"messages": QUESTION, "n": 2, "max_tokens": 16, "logprobs": True, "top_logprobs": 2, **SAMPLED}
    status, whole = request(api, "POST", "/v1/chat/completions", body)
    assert status == 200, whole
    asked = body | {"stream": True, "stream_options": {"include_usage": True}}
    status, streamed = request(api, "POST", "/v1/chat/completions", asked)
    assert status == 200, streamed
    got = events(streamed)
    assert got[-1] == "[DONE]" and got[-2]["choices"] == []
    assert got[-2]["usage"] == whole["usage"]
    chunks = got[:-2]
    order = [c["choices"][0]["index"] for c in chunks]
    assert sorted(set(order), key=order.index) == [
        0,
        1,
    ]  # indexes first appear in order, as OpenAI's SDK takes them
    texts = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert texts.index(1) < len(texts) - 1 - texts[::-1].index(
        0
    )  # choice 1's text began before choice 0's ended
    for index, choice in enumerate(whole["choices"]):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["delta"].get("content", "") for c in mine)
        assert text == choice["message"]["content"]
        entries = [t for c in mine[1:] for t in c["logprobs"]["content"]]
        # the same tokens and values, to float32 rounding: a step batched with the other choice's
        # (they run at once) is computed as a batch of two, the whole reply's as it came
        assert same_entries(entries, choice["logprobs"]["content"])
        assert [c["finish_reason"] for c in mine] == [None] * (len(mine) - 1) + [choice["finish_reason"]]
    assert whole["choices"][0]["message"] != whole["choices"][1]["message"]


def same_entries(got: list[dict], expected: list[dict]) -> bool:
    """Chat log-probability entries of the same tokens, their values equal to 1e-4."""

    def values(entries):
        return [v for e in entries for v in (e["logprob"], *(t["logprob"] for t in e["top_logprobs"]))]

    def tokens(entries):
        return [(e["token"], e["bytes"], [t["token"] for t in e["top_logprobs"]]) for e in entries]

    return tokens(got) == tokens(expected) and values(got) == pytest.approx(values(expected), abs=1e-4)


@pytest.mark.parametrize("n", [0, 17, 1.5, True, "2"])
def test_a_count_of_choices_outside_1_to_16_is_refused_naming_n(api, n):
    status, reply = request(api, "POST", "/v1/completions", {"prompt": "x", "n": n})
    assert status == 400 and reply["error"]["param"] == "n"
    assert "n must be a whole number in [1, 16]" in reply["error"]["message"]


@pytest.mark.parametrize("best_of", [3, 1, 2.0])
def test_best_of_other_than_n_is_refused_as_it_would_drop_choices(api, best_of):
    status, reply = request(api, "POST", "/v1/completions", {"prompt": "x", "n": 2, "best_of": best_of})
    assert status == 400 and reply["error"]["param"] == "best_of"
    assert "only best_of equal to n, 2" in reply["error"]["message"]


def test_a_seed_past_the_largest_goes_around_to_the_smallest_as_torch_takes_it():
    seeded = GenerationRequest([1], sampling=SamplingParams(temperature=1.0, seed=SEED_MAX - 1))
    assert [choice_request(seeded, i).sampling.seed for i in range(4)] == [SEED_MAX - 1, SEED_MAX, 0, 1]
    unseeded = GenerationRequest([1], sampling=SamplingParams(temperature=1.0))
    assert choice_request(unseeded, 3) is unseeded


class FailingChoice:
    """Answers choice 1 (seed 1) with an error once choice 0 (seed 0) is under way; every other choice
    waits, asking whether it is still wanted, until it is told it is not."""

    def __init__(self) -> None:
        self.under_way = threading.Event()
        self.dropped: list[int] = []

    def answer(self, request, on_text, still_wanted, on_token):
        seed = request.sampling.seed
        if seed == 1:
            assert self.under_way.wait(10)
            raise RuntimeError("choice 1's worker failed")
        self.under_way.set()
        try:
            for _ in range(1000):
                still_wanted()
                time.sleep(0.01)
        except ChoiceDropped:
            self.dropped.append(seed)
            raise
        raise AssertionError("never told it was not wanted")


def test_the_first_choice_that_fails_ends_the_request_and_drops_the_others():
    answerer = FailingChoice()
    request_ = GenerationRequest([1], sampling=SamplingParams(temperature=1.0, seed=0))
    with pytest.raises(RuntimeError, match="choice 1's worker failed"):
        answer_choices(answerer, request_, 3, lambda: lambda: None)
    assert sorted(answerer.dropped) == [0, 2]
