import pytest
import torch

from partition.errors import ConfigError
from partition.model.generation import GenerationRequest, TextStream, generate
from partition.model.sampling import SEED_MAX, SEED_MIN, Sampler, SamplingError, SamplingParams
from partition.model.scoring import prompt_scores

LOGITS = torch.tensor([0.1, 2.0, 1.5, -1.0, 1.9])


def test_greedy_is_argmax():
    assert Sampler(SamplingParams())(LOGITS) == 1


def test_seeded_sampling_is_reproducible_and_varies():
    params = SamplingParams(temperature=1.0, seed=7)
    first, second = Sampler(params), Sampler(params)
    draws_a = [first(LOGITS) for _ in range(50)]
    draws_b = [second(LOGITS) for _ in range(50)]
    assert draws_a == draws_b
    assert len(set(draws_a)) > 1


def test_top_k_and_top_p_restrict_the_support():
    top2 = Sampler(SamplingParams(temperature=5.0, top_k=2, seed=0))
    assert {top2(LOGITS) for _ in range(200)} == {1, 4}
    # top-p just above the top token's mass keeps exactly the two best
    probs = torch.softmax(LOGITS, -1)
    nucleus = Sampler(SamplingParams(temperature=1.0, top_p=float(probs.max()) + 1e-3, seed=0))
    assert {nucleus(LOGITS) for _ in range(200)} == {1, 4}
    tiny = Sampler(SamplingParams(temperature=1.0, top_p=1e-6, seed=0))
    assert {tiny(LOGITS) for _ in range(50)} == {1}


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(temperature=float("nan")),
        dict(top_k=-2),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(seed=2**64),
        dict(seed=-(2**63) - 1),
        dict(seed=123456789012345678901234567890),
    ],
)
def test_invalid_params_are_rejected_naming_the_field_and_its_range(bad):
    ((field, value),) = bad.items()
    with pytest.raises(ConfigError) as refused:
        SamplingParams(**({"temperature": 1.0} | bad))
    assert isinstance(refused.value, SamplingError) and refused.value.field == field
    assert refused.value.requirement in str(refused.value) and str(value) in str(refused.value)


@pytest.mark.parametrize("seed", [SEED_MIN, -1, 0, 2**63, SEED_MAX])
def test_every_seed_in_the_stated_range_seeds_torchs_generator(seed):
    params = SamplingParams(temperature=1.0, seed=seed)
    assert Sampler(params)(LOGITS) == Sampler(params)(LOGITS)


@pytest.mark.parametrize("seed", [SEED_MIN - 1, SEED_MAX + 1])
def test_one_past_either_end_of_the_stated_range_is_what_torch_refuses(seed):
    with pytest.raises(ValueError, match="Overflow"):
        torch.Generator().manual_seed(seed)


def test_text_stream_holds_back_stop_strings_and_partial_characters():
    pieces = {1: "Hello", 2: " wor", 3: "ld", 4: " STO", 5: "P more"}
    stream = TextStream(lambda ids: "".join(pieces[i] for i in ids), stop=("STOP",))
    out = [stream.push(i) for i in (1, 2, 3, 4)]
    assert "".join(out) == "Hello world "  # " STO" could start "STOP": held back except the space
    assert stream.push(5) == "" and stream.stopped
    assert stream.text() == "Hello world "


def test_with_the_stop_string_in_the_text_it_ends_after_it_and_nothing_is_held_back():
    pieces = {1: "Hello", 2: " wor", 3: "ld", 4: " STO", 5: "P more"}
    stream = TextStream(lambda ids: "".join(pieces[i] for i in ids), ("STOP", "P m"), stop_in_text=True)
    out = [stream.push(i) for i in (1, 2, 3, 4)]
    assert out == ["Hello", " wor", "ld", " STO"]  # " STO" is text whether STOP follows or not
    assert stream.push(5) == "P" and stream.stopped  # "STOP" began first: the text ends after it
    assert stream.text() == "Hello world STOP"
    # of two stop strings that begin at one character and end within one push, the shorter was whole first
    whole = {1: "Hello", 2: " STOP"}
    both = TextStream(lambda ids: "".join(whole[i] for i in ids), ("STOP", "ST"), stop_in_text=True)
    assert both.push(1) + both.push(2) == "Hello ST" and both.stopped and both.text() == "Hello ST"


def test_generate_stops_on_eos_and_on_length():
    script = iter([5, 6, 2, 9])

    def step(ids, position):
        logits = torch.zeros(10)
        logits[next(script)] = 1.0
        return logits

    result = generate(step, GenerationRequest([1, 2, 3], max_new_tokens=10, context=64), (2,), lambda ids: "")
    assert result.token_ids == [5, 6] and result.finish_reason == "eos"
    assert len(result.token_times_s) == 2 and result.ttft_s >= 0 and result.tpot_s >= 0
    script = iter([5, 6, 7, 8])
    result = generate(step, GenerationRequest([1], max_new_tokens=3, context=64), (2,), lambda ids: "")
    assert result.token_ids == [5, 6, 7] and result.finish_reason == "length"


def test_generate_records_each_tokens_log_probability_before_its_text_and_the_one_eos_ended_on():
    script = iter([5, 6, 2])
    said = []

    def step(ids, position):  # log-probabilities, as a step built for a request that asks gives them
        logits = torch.arange(10, dtype=torch.float32) / 10
        logits[next(script)] = 3.0
        return torch.log_softmax(logits, -1)

    request = GenerationRequest([1], max_new_tokens=10, context=64, logprobs=2)
    result = generate(
        step, request, (2,), lambda ids: "".join(map(str, ids)), said.append, on_token=said.append
    )
    assert result.token_ids == [5, 6] and result.finish_reason == "eos"
    assert [type(s).__name__ for s in said] == ["TokenLogprob", "str", "TokenLogprob", "str", "TokenLogprob"]
    # EOS is no token of the answer, yet drawn: its entry says it ended it
    assert [(e.token_id, e.ends) for e in result.logprobs] == [(5, False), (6, False), (2, True)]
    first = result.logprobs[0]
    expected = torch.log_softmax(torch.tensor([0, 0.1, 0.2, 0.3, 0.4, 3.0, 0.6, 0.7, 0.8, 0.9]), -1)
    assert first.token_id == 5 and first.logprob == pytest.approx(float(expected[5]))
    assert [i for i, _ in first.top] == [5, 9] and first.top[1][1] == pytest.approx(float(expected[9]))
    script = iter([5, 6, 2])
    assert generate(step, GenerationRequest([1], 10, context=64), (2,), lambda ids: "").logprobs == []


def scripted(*favourites: int):
    """A step whose logits favour each of `favourites` in turn, then token 4, then 5 (the runners-up)."""
    script = iter(favourites)

    def step(ids, position):
        logits = torch.zeros(10)
        logits[4], logits[5] = 2.0, 1.0
        logits[next(script, 4)] = 3.0
        return logits

    return step


def test_ignore_eos_takes_eos_as_a_token_and_stop_token_ids_end_the_answer_as_eos_does():
    def run(**fields):
        request = GenerationRequest([1], max_new_tokens=4, context=64, **fields)
        return generate(scripted(6, 2, 7, 8), request, (2,), lambda ids: "")

    assert (run().token_ids, run().finish_reason) == ([6], "eos")
    ignoring = run(ignore_eos=True)
    assert (ignoring.token_ids, ignoring.finish_reason) == ([6, 2, 7, 8], "length")
    stopped = run(ignore_eos=True, stop_token_ids=(7,))
    assert (stopped.token_ids, stopped.finish_reason) == ([6, 2], "stop")
    held = run(ignore_eos=True, min_tokens=3)  # as vLLM: EOS is not drawn before min_tokens either
    assert (held.token_ids, held.finish_reason) == ([6, 4, 7, 8], "length")


def test_before_min_tokens_neither_eos_nor_a_stop_token_id_is_drawn():
    request = GenerationRequest([1], 6, context=64, min_tokens=3, stop_token_ids=(9,), logprobs=1)
    result = generate(scripted(2, 9, 2, 2, 9), request, (2,), lambda ids: "")
    # EOS and 9 lead at the first three steps: the runner-up is drawn; at the fourth, EOS ends it
    assert (result.token_ids, result.finish_reason) == ([4, 4, 4], "eos")
    # what is reported is the model's own, before anything was kept from the sampler
    assert [entry.top for entry in result.logprobs] == [((2, 3.0),), ((9, 3.0),), ((2, 3.0),), ((2, 3.0),)]
    assert [entry.ends for entry in result.logprobs] == [False, False, False, True]  # then EOS ended it
    greedy = GenerationRequest([1], max_new_tokens=6, context=64, min_tokens=3, stop_token_ids=(9,))
    assert greedy.extra_logits((2,)) == 2 and GenerationRequest([1]).extra_logits((2,)) == 0


def test_a_stop_string_counts_only_where_it_ends_after_min_tokens():
    pieces = {1: "a", 2: "STOP", 3: "b", 4: "ST", 5: "OP", 6: "c"}
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    stream = TextStream(decode, ("STOP",), min_tokens=2)
    said = "".join(stream.push(i) for i in (1, 2, 3))
    assert not stream.stopped and stream.text() == "aSTOPb"  # the first one, within 2 tokens, does not
    said += stream.push(4) + stream.push(5)
    assert stream.stopped and said == stream.text() == "aSTOPb"
    ended = TextStream(decode, ("STOP",), min_tokens=3)
    for i in (1, 2):
        ended.push(i)
    assert ended.text() == "aSTOP"  # ended (by length) before min_tokens: nothing cut
    straddling = TextStream(decode, ("STOP",), min_tokens=4)
    for i in (1, 2, 3, 4):
        straddling.push(i)
    assert straddling.push(5) == "" and straddling.stopped and straddling.text() == "aSTOPb"


def test_a_request_for_the_prompts_log_probabilities_is_prefilled_by_score_and_goes_on_from_it():
    table = torch.log_softmax(torch.arange(40, dtype=torch.float32).reshape(4, 10) % 7, -1)
    scored = []

    def score(ids, top):  # as a session's scores gives them
        scored.append((ids, top))
        return prompt_scores(table[: len(ids)], ids, top), table[len(ids) - 1]

    def step(ids, position):
        return table[position]

    request = GenerationRequest([3, 1, 2], max_new_tokens=1, context=64, logprobs=1, prompt_logprobs=1)
    result = generate(step, request, (), lambda ids: "", score=score)
    assert scored == [([3, 1, 2], 1)]
    assert [(e.token_id, e.logprob) for e in result.prompt_logprobs] == [
        (1, pytest.approx(float(table[0, 1]))),
        (2, pytest.approx(float(table[1, 2]))),
    ]
    assert result.token_ids == [int(torch.argmax(table[2]))]  # drawn from the prefill's last position
    with pytest.raises(ValueError, match="needs `score`"):
        generate(step, request, (), lambda ids: "")


def test_presence_and_frequency_penalties_count_the_tokens_drawn_in_this_answer():
    logits = torch.tensor([0.0, 1.0, 0.9, 0.5])
    assert Sampler(SamplingParams(presence_penalty=0.2))(logits, [1]) == 2  # 1.0 - 0.2 < 0.9
    assert Sampler(SamplingParams(presence_penalty=0.2))(logits, [3]) == 1  # only what was drawn
    assert Sampler(SamplingParams(frequency_penalty=0.06))(logits, [1]) == 1  # 0.94 > 0.9
    assert Sampler(SamplingParams(frequency_penalty=0.06))(logits, [1, 1]) == 2  # 0.88 < 0.9
    assert Sampler(SamplingParams(presence_penalty=-0.6))(logits, [3]) == 3  # 1.1: drawn again
    assert Sampler(SamplingParams(presence_penalty=2.0))(logits, []) == 1  # nothing drawn yet
    with pytest.raises(ConfigError, match=r"frequency-penalty must be a number in \[-2, 2\]"):
        SamplingParams(frequency_penalty=2.5)
    # a worker holding the head sends as many more logits as a penalty may push down: one per token
    penalized = GenerationRequest([1], 80, sampling=SamplingParams(frequency_penalty=0.5))
    assert penalized.extra_logits((2,)) == 80
    lifted = GenerationRequest([1], 80, sampling=SamplingParams(presence_penalty=-0.5))
    assert lifted.extra_logits((2,)) is None  # a drawn token may rise from anywhere: every logit


def test_min_p_draws_as_vllm_does_from_the_tokens_at_least_that_likely_against_the_likeliest():
    """vLLM's order: temperature, then min_p on the probabilities (each against the likeliest), then
    top-k and top-p on what is left."""
    logits = torch.tensor([0.1, 2.0, 1.5, -1.0, 1.9, 0.6])
    for temperature, min_p, top_p in ((1.0, 0.3, 1.0), (2.0, 0.6, 1.0), (0.7, 0.1, 0.8), (1.0, 1.0, 1.0)):
        params = SamplingParams(temperature=temperature, min_p=min_p, top_p=top_p, seed=4)
        probs = torch.softmax(logits / temperature, -1)
        kept = logits.masked_fill(probs < min_p * probs.max(), float("-inf"))
        reference = Sampler(SamplingParams(temperature=temperature, top_p=top_p, seed=4))
        sampler = Sampler(params)
        draws = [sampler(logits) for _ in range(300)]
        assert draws == [reference(kept) for _ in range(300)]
        assert set(draws) == set(torch.nonzero(probs >= min_p * probs.max()).flatten().tolist()) - (
            set() if top_p == 1.0 else {0, 5}  # top-p 0.8 of what min_p 0.1 left drops these two
        )
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(SamplingError, match=r"min-p must be a number in \[0, 1\]"):
            SamplingParams(min_p=bad)


def test_the_repetition_penalty_scales_the_prompts_and_the_answers_tokens_as_vllm_does():
    """Divided where positive, multiplied where negative, on the tokens of the prompt or drawn, before
    the presence and frequency penalties."""
    logits = torch.tensor([-1.0, 2.0, 1.5, 0.5, -0.2])
    sampler = Sampler(SamplingParams(repetition_penalty=2.0), prompt_ids=[1, 0])
    assert sampler(logits, []) == 2  # 2.0 / 2 = 1.0 < 1.5
    assert sampler(logits, [2]) == 1  # 1.5 / 2 = 0.75 < 1.0
    scaled = sampler._repeated(logits, [4])
    assert scaled.tolist() == pytest.approx([-2.0, 1.0, 1.5, 0.5, -0.4])  # 3 neither prompt nor drawn
    both = Sampler(SamplingParams(repetition_penalty=2.0, presence_penalty=0.3), prompt_ids=[1])
    assert both(torch.tensor([0.0, 2.0, 0.8]), [1]) == 2  # 2.0 / 2 - 0.3 = 0.7 < 0.8
    assert Sampler(SamplingParams(repetition_penalty=0.5), prompt_ids=[2])(logits, []) == 2  # 3.0
    for bad in (0.0, 0.009, -1.0, 101.0, 1e39, float("inf"), float("nan")):
        with pytest.raises(SamplingError, match=r"repetition-penalty must be a number in \[0.01, 100\]"):
            SamplingParams(repetition_penalty=bad)
    # the largest keeps a logit of 0 at 0 (1e39, infinite in float32, made it NaN and drew it)
    assert (
        Sampler(SamplingParams(repetition_penalty=100.0), prompt_ids=[0])(torch.tensor([0.0, 1.0, -2.0])) == 1
    )
    # a worker holding the head sends one more logit per token of the prompt or the answer
    repeating = GenerationRequest([5, 5, 6], 80, sampling=SamplingParams(repetition_penalty=1.2))
    assert repeating.extra_logits((2,)) == 82
    with pytest.raises(ConfigError, match="ask for one or the other"):
        GenerationRequest([1], 8, sampling=SamplingParams(repetition_penalty=1.2), logprobs=0)


def test_a_logit_bias_is_added_before_the_penalties_and_says_how_many_more_logits_a_worker_sends():
    logits = torch.tensor([0.0, 2.0, 1.5, 0.5])
    assert Sampler(SamplingParams(logit_bias=((1, -100.0),)))(logits) == 2  # kept out
    assert Sampler(SamplingParams(logit_bias=((0, 2.5),)))(logits) == 0  # lifted past the rest
    # before the repetition penalty: 2.0 + 1.0 = 3.0, then / 2 = 1.5, below 2's 1.5 + 0.1
    both = Sampler(SamplingParams(logit_bias=((1, 1.0), (2, 0.1)), repetition_penalty=2.0), prompt_ids=[1])
    assert both(logits) == 2
    sampled = Sampler(SamplingParams(temperature=1.0, seed=0, logit_bias=((1, -100.0), (4, -100.0))))
    assert 1 not in {sampled(torch.tensor([0.0, 9.0, 0.0, 0.0, 9.0])) for _ in range(100)}
    banned = GenerationRequest(
        [1], 80, sampling=SamplingParams(logit_bias=((5, -100.0), (6, -1.0), (7, 0.0)))
    )
    assert banned.extra_logits((2,)) == 2  # each token pushed down: one more logit
    forced = GenerationRequest([1], 80, sampling=SamplingParams(logit_bias=((5, 0.5),)))
    assert forced.extra_logits((2,)) is None  # a token lifted may rise from anywhere: every logit
    for bad in (((1, 101.0),), ((1, float("nan")),), ((1, 1.0), (1, 2.0)), ((-1, 1.0),)):
        with pytest.raises(SamplingError, match="logit-bias must be token ids, each once"):
            SamplingParams(logit_bias=bad)


def test_a_temperature_near_0_draws_the_largest_logit_and_an_infinite_one_is_refused():
    logits = torch.tensor([1.0, 3.0, 2.0, float("-inf")])
    assert Sampler(SamplingParams(temperature=1e-40, seed=0))(logits) == 1  # 3 / 1e-40 would be inf
    # below float32's smallest value, in the range it states: 0 there, and 0 / 0 would be NaN
    assert Sampler(SamplingParams(temperature=1e-50, seed=0))(logits) == 1
    assert Sampler(SamplingParams(temperature=1.0, top_p=1e-50, seed=0))(logits) == 1
    with pytest.raises(SamplingError, match="temperature must be a finite number >= 0"):
        SamplingParams(temperature=float("inf"))


def test_every_alternative_a_request_may_ask_for_is_among_the_logits_a_worker_sends_back():
    from partition.cli.prompting import MAX_LOGPROBS_ARGUMENT
    from partition.model.generation import MAX_TOP_LOGPROBS
    from partition.types import RETURN_TOP_K

    assert MAX_LOGPROBS_ARGUMENT == MAX_TOP_LOGPROBS <= RETURN_TOP_K
