"""Split generation through real workers gives the tokens of the whole model (serve).

Lossless codecs must reproduce `partition generate` exactly; fp16 and int8 blockwise must agree with
it on at least 97 % of 256 greedy positions (teacher-forced: each position sees the reference prefix).
A worker holding the head returns only the top logits, which must change no token for greedy and
top-k sampling, and every logit when the sampler needs them all.
"""

import dataclasses

import pytest
import torch

from partition.coordinator import session as session_module
from partition.coordinator.deploy import deploy
from partition.coordinator.session import PipelineSession
from partition.model.generation import GenerationRequest, generate, local_step
from partition.model.sampling import SamplingParams
from partition.model.scoring import local_scores
from partition.model.tokenizer import load_tokenizer
from partition.transport.client import ChainSession, StageCallError
from partition.types import RETURN_TOP_K, TOP_K_LOGITS_BYTES
from tests.coordinator.plans import split_plan

# (device, start, end) chains over SmolLM2's 32 units; "phone" is the edge (runs in this process)
SPLITS = {
    "2-stages": [("phone", 0, 16), ("server-a", 16, 32)],
    "3-stages-edge-ends": [("phone", 0, 10), ("server-a", 10, 22), ("phone", 22, 32)],
    "3-stages-all-remote": [("server-a", 0, 10), ("server-b", 10, 22), ("server-c", 22, 32)],
    "4-stages": [("phone", 0, 8), ("server-a", 8, 16), ("server-b", 16, 24), ("phone", 24, 32)],
}
N_EXACT = 48
N_LOSSY = 256
GREEDY = SamplingParams()


@pytest.fixture(scope="module")
def prompt(smollm2):
    tokenizer = load_tokenizer(smollm2)
    chat = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea."}]
    return tokenizer.encode(tokenizer.render_chat(chat), add_special=False)


def _reference(model, prompt, n, sampling=GREEDY):
    cache = model.new_cache(1, len(prompt) + n)
    request = GenerationRequest(prompt, max_new_tokens=n, sampling=sampling, context=len(prompt) + n)
    return generate(local_step(model, cache), request, eos_ids=(), decode=lambda ids: "").token_ids


@pytest.fixture(scope="module")
def reference_48(smollm2_whole, prompt):
    return _reference(smollm2_whole, prompt, N_EXACT)


@pytest.fixture(scope="module")
def reference_256(smollm2_whole, prompt):
    return _reference(smollm2_whole, prompt, N_LOSSY)


def _plan(smollm2, split, codec):
    return split_plan(smollm2, [(device, start, end, codec) for device, start, end in split])


@pytest.mark.parametrize("codec", ["raw", "shuffle-zstd"])
@pytest.mark.parametrize("split", list(SPLITS), ids=list(SPLITS))
def test_lossless_split_gives_exactly_the_whole_models_tokens(
    smollm2, workers, prompt, reference_48, split, codec
):
    plan = _plan(smollm2, SPLITS[split], codec)
    deployment = deploy(plan, workers, max_context=512, max_sessions=2)
    front, tail = deployment.front_model, deployment.tail_model
    try:
        session = PipelineSession(deployment, context=len(prompt) + N_EXACT)
        request = GenerationRequest(prompt, max_new_tokens=N_EXACT, context=len(prompt) + N_EXACT)
        result = generate(session.step, request, eos_ids=(), decode=lambda ids: "")
        session.close()
    finally:
        deployment.close()
    assert result.token_ids == reference_48
    if SPLITS[split][0][0] == SPLITS[split][-1][0] == "phone":  # the edge holds both ends: a tied matrix once
        assert front.embed.tokens is None and front.embed.table_DV is tail.head.lm_head.weight
    remote = [device for device, *_ in SPLITS[split] if device != "phone"]
    # every step produced one span per link (remote stages + 1) plus the edge's own segments
    links = [s for s in session.spans if s.token == 1 and s.src]
    assert [s.dst for s in links] == [*remote, "phone"]
    assert all(s.codec for s in links)
    back = links[-1]
    if SPLITS[split][-1][0] != "phone":  # the head ran on a worker: only the top logits came back
        assert (back.codec, back.payload_bytes) == ("top-k", TOP_K_LOGITS_BYTES)


@pytest.mark.parametrize(
    ("sampling", "codec_back"),
    [
        (SamplingParams(temperature=0.9, top_k=RETURN_TOP_K, seed=11), "top-k"),
        (SamplingParams(temperature=0.9, top_p=0.95, seed=11), "raw"),  # needs all: every logit comes back
    ],
    ids=["top-k", "top-p"],
)
def test_sampling_through_a_head_on_a_worker_picks_the_whole_models_tokens(
    smollm2, smollm2_whole, workers, prompt, sampling, codec_back
):
    reference = _reference(smollm2_whole, prompt, N_EXACT, sampling)
    deployment = deploy(_plan(smollm2, SPLITS["2-stages"], "raw"), workers, max_context=512, max_sessions=2)
    try:
        session = PipelineSession(deployment, context=len(prompt) + N_EXACT, sampling=sampling)
        request = GenerationRequest(prompt, N_EXACT, sampling=sampling, context=len(prompt) + N_EXACT)
        result = generate(session.step, request, eos_ids=(), decode=lambda ids: "")
        session.close()
    finally:
        deployment.close()
    assert result.token_ids == reference
    assert len(set(reference)) > 10  # sampled, not a greedy loop
    back = [s for s in session.spans if s.token == 1 and s.dst == "phone"][-1]
    vocab = smollm2.spec.vocab_size
    assert (back.codec, back.payload_bytes) == (
        codec_back,
        TOP_K_LOGITS_BYTES if codec_back == "top-k" else 4 * vocab,
    )


@pytest.mark.parametrize(("codec", "floor"), [("fp16", 0.97), ("int8", 0.97)])
def test_lossy_codecs_agree_on_97_percent_of_256_tokens(
    smollm2, workers, prompt, reference_256, codec, floor
):
    plan = _plan(smollm2, SPLITS["4-stages"], codec)
    deployment = deploy(plan, workers, max_context=512, max_sessions=2)
    try:
        session = PipelineSession(deployment, context=len(prompt) + N_LOSSY)
        # teacher-forced: the prompt and the reference in one step; position i's argmax must be token i + 1.
        # Codecs act per token (int8 blocks run along the hidden dimension), so this is the error a
        # decode step sees, without 256 round trips.
        logits = session.logits(prompt + reference_256[:-1], 0)
        predicted = torch.argmax(logits[len(prompt) - 1 :], dim=-1).tolist()
        agree = sum(int(p == t) for p, t in zip(predicted, reference_256, strict=True))
        session.close()
    finally:
        deployment.close()
    assert agree / N_LOSSY >= floor, f"{codec}: {agree}/{N_LOSSY} positions agree"


@pytest.mark.parametrize(
    ("split", "sampling", "codec_back"),
    [
        ("2-stages", GREEDY, "top-k"),  # the head on a worker: it normalizes, then sends the top K
        ("2-stages", SamplingParams(temperature=0.9, top_p=0.95, seed=11), "raw"),  # it sends them all
        ("3-stages-edge-ends", GREEDY, ""),  # the head on the edge: normalized here
        ("1-stage", GREEDY, ""),  # all of it on the edge
    ],
    ids=["head-on-worker-greedy", "head-on-worker-top-p", "head-on-edge", "all-on-edge"],
)
def test_a_split_reports_the_whole_models_log_probabilities(
    smollm2, smollm2_whole, workers, prompt, split, sampling, codec_back
):
    n, top = 16, 5
    context = len(prompt) + n
    request = GenerationRequest(prompt, n, sampling=sampling, context=context, logprobs=top)
    cache = smollm2_whole.new_cache(1, context)
    reference = generate(local_step(smollm2_whole, cache, log_probs=True), request, (), lambda ids: "")
    chain = SPLITS.get(split, [("phone", 0, 32)])
    deployment = deploy(_plan(smollm2, chain, "raw"), workers, max_context=512, max_sessions=2)
    try:
        session = PipelineSession(deployment, context=context, sampling=sampling, log_probs=True)
        result = generate(session.step, request, eos_ids=(), decode=lambda ids: "")
        session.close()
    finally:
        deployment.close()
    assert result.token_ids == reference.token_ids
    assert [e.token_id for e in result.logprobs] == result.token_ids
    for got, want in zip(result.logprobs, reference.logprobs, strict=True):
        assert got.logprob == pytest.approx(want.logprob, abs=1e-4)
        assert [i for i, _ in got.top] == [i for i, _ in want.top]
        assert [v for _, v in got.top] == pytest.approx([v for _, v in want.top], abs=1e-4)
        # probabilities: the top ones fall, and add up to at most 1
        values = [v for _, v in got.top]
        assert len(values) == top and values == sorted(values, reverse=True) and values[0] < 0
        assert sum(torch.tensor(values).exp().tolist()) <= 1.0 + 1e-5
        if sampling.greedy:  # the chosen token is the likeliest
            assert got.top[0] == (got.token_id, pytest.approx(got.logprob))
    # each equals the model's own log-softmax at that position, scored in one teacher-forced pass
    whole = smollm2_whole.new_cache(1, context)
    ids = torch.tensor([prompt + result.token_ids[:-1]])
    logits = smollm2_whole(ids, whole, [0], [0])[0, len(prompt) - 1 :]
    expected = torch.log_softmax(logits.float(), -1)[range(n), result.token_ids]
    assert [e.logprob for e in result.logprobs] == pytest.approx(expected.tolist(), abs=1e-3)
    if codec_back:
        back = [s for s in session.spans if s.token == 1 and s.dst == "phone"][-1]
        assert back.codec == codec_back  # the top-k reply stays as small as without log-probabilities
        if codec_back == "top-k":
            assert back.payload_bytes == TOP_K_LOGITS_BYTES


@pytest.mark.parametrize(
    ("split", "tokens", "per_step"),
    [
        ("2-stages", None, None),
        ("2-stages", 1, None),
        ("2-stages", 2, None),
        ("2-stages", None, 4),
        ("2-stages", 5, 4),
        ("3-stages-edge-ends", None, None),
        ("3-stages-edge-ends", None, 4),
        ("3-stages-edge-ends", 1, None),
        ("3-stages-edge-ends", 5, 4),
    ],
    ids=[
        "head-on-worker",
        "one-token",
        "two-tokens",
        "4-tokens-a-step",
        "a-step-of-4-then-none",
        "head-on-edge",
        "edge-4-a-step",
        "edge-one-token",
        "edge-a-step-of-4-then-one",
    ],
)
def test_a_split_scores_a_prompt_as_the_whole_model_does(
    smollm2, smollm2_whole, workers, prompt, split, tokens, per_step, monkeypatch
):
    """A prompt's own log-probabilities (what an evaluation harness asks a completion to echo): every
    position's, from the prefill, then generation goes on from it. A worker holding the head scores
    them itself and sends back 1 + 2 x top values per position, not every logit; the prompt's last
    token goes as a step of its own, as a one-token prompt does. A long prompt goes a few tokens a step
    (here 4), so that no step computes every position's logits at once."""
    if per_step:
        monkeypatch.setattr(session_module, "SCORED_BYTES_PER_STEP", per_step * 4 * smollm2.spec.vocab_size)
    prompt = prompt[:tokens] if tokens else prompt
    n, top = 4, 2
    context = len(prompt) + n
    request = GenerationRequest(prompt, n, context=context, logprobs=top, prompt_logprobs=top)
    cache = smollm2_whole.new_cache(1, context)
    step, score = local_step(smollm2_whole, cache, log_probs=True), local_scores(smollm2_whole, cache)
    reference = generate(step, request, (), lambda ids: "", score=score)
    deployment = deploy(_plan(smollm2, SPLITS[split], "raw"), workers, max_context=512, max_sessions=2)
    try:
        session = PipelineSession(deployment, context=context, log_probs=True)
        result = generate(session.step, request, (), lambda ids: "", score=session.scores)
        session.close()
    finally:
        deployment.close()
    assert result.token_ids == reference.token_ids == _reference(smollm2_whole, prompt, n)
    assert [e.token_id for e in result.prompt_logprobs] == prompt[1:]
    back = [(s.token, s.payload_bytes) for s in session.spans if s.dst == "phone" and s.src]
    if split == "2-stages":  # the prompt but its last token, scored; then the top K of each token
        scored = len(prompt) - 1
        steps = [per_step] * (scored // per_step) + [scored % per_step] if per_step else [scored]
        row = (1 + 2 * top) * 4
        expected = [(0, k * row) for k in steps if k] + [(0, TOP_K_LOGITS_BYTES)]
        assert back == expected + [(i, TOP_K_LOGITS_BYTES) for i in range(1, n)]  # the prompt's all token 0
    got = [e.logprob for e in result.prompt_logprobs]
    assert got == pytest.approx([e.logprob for e in reference.prompt_logprobs], abs=1e-4)
    assert [[i for i, _ in e.top] for e in result.prompt_logprobs] == [
        [i for i, _ in e.top] for e in reference.prompt_logprobs
    ]
    # each is the model's log-softmax at the position before, computed here on its own
    logits = smollm2_whole(torch.tensor([prompt]), smollm2_whole.new_cache(1, context), [0], [0])[0]
    expected = torch.log_softmax(logits.float(), -1)[range(len(prompt) - 1), prompt[1:]]
    assert got == pytest.approx(expected.tolist(), abs=1e-3)


def test_a_worker_that_sends_logits_where_log_probabilities_were_asked_is_named(
    smollm2, workers, prompt, monkeypatch
):
    """A worker older than Step.log_probs keeps the field it does not know and sends raw logits back,
    which would be reported as log-probabilities: its reply lacks log_probs_sent (cleared here as it
    arrives), and the step ends naming the worker and what to do."""
    receive = ChainSession.receive

    async def as_from_an_older_worker(self, *args, **kwargs):
        return dataclasses.replace(await receive(self, *args, **kwargs), log_probs_sent=False)

    monkeypatch.setattr(ChainSession, "receive", as_from_an_older_worker)
    deployment = deploy(_plan(smollm2, SPLITS["2-stages"], "raw"), workers, max_context=512, max_sessions=2)
    try:
        asking = PipelineSession(deployment, context=len(prompt) + 1, log_probs=True)
        with pytest.raises(StageCallError, match="server-a at .*older than this coordinator; update it"):
            asking.step(prompt, 0)
        asking.close()
        plain = PipelineSession(deployment, context=len(prompt) + 1)  # no log-probabilities: no check
        assert plain.step(prompt, 0).shape == (smollm2.spec.vocab_size,)
        plain.close()
    finally:
        deployment.close()


def test_a_reply_without_the_scores_asked_is_refused_naming_the_worker(smollm2, workers, prompt):
    """A worker older than Step.score_next keeps the field and sends logits back, without scores_sent:
    the step ends naming it and what to do, before its logits are read as scores. A stage without the
    head does not score either, which is how it is asked here."""
    deployment = deploy(
        _plan(smollm2, SPLITS["3-stages-edge-ends"], "raw"), workers, max_context=512, max_sessions=2
    )
    try:
        session = PipelineSession(deployment, context=len(prompt) + 1, log_probs=True)
        older = "scores were asked .*older than this coordinator; update it"
        with pytest.raises(StageCallError, match=older) as refused:
            session._forward(prompt, 0, every_position=True, score_next=prompt[1:] + [0], score_top=1)
        assert refused.value.address == workers["server-a"]  # an answer names its device (Answerer._named)
        session.abandon()
    finally:
        deployment.close()


@pytest.mark.parametrize(
    ("penalties", "codec_back", "payload"),
    [
        ({"frequency_penalty": 1.5}, "top-k", 81 * 8),  # the top 1 + 80 a penalty may push below it
        ({"presence_penalty": -0.5}, "raw", None),  # a drawn token may rise from anywhere: all of them
    ],
    ids=["pushed-down", "lifted"],
)
def test_penalized_answers_through_a_head_on_a_worker_are_the_whole_models(
    smollm2, smollm2_whole, workers, prompt, penalties, codec_back, payload
):
    n = 80
    sampling = SamplingParams(**penalties)
    reference = _reference(smollm2_whole, prompt, n, sampling)
    assert reference != _reference(smollm2_whole, prompt, n)  # the penalty changes the answer
    deployment = deploy(_plan(smollm2, SPLITS["2-stages"], "raw"), workers, max_context=512, max_sessions=2)
    request = GenerationRequest(prompt, n, sampling=sampling, context=len(prompt) + n)
    try:
        session = PipelineSession(
            deployment, context=len(prompt) + n, sampling=sampling, extra_logits=request.extra_logits(())
        )
        result = generate(session.step, request, eos_ids=(), decode=lambda ids: "")
        session.close()
    finally:
        deployment.close()
    assert result.token_ids == reference
    back = [s for s in session.spans if s.token == 1 and s.dst == "phone"][-1]
    assert (back.codec, back.payload_bytes) == (codec_back, payload or 4 * smollm2.spec.vocab_size)
