"""How many logits a worker holding the head sends back (serve): enough that the sampler on the edge
picks from the top K what it would pick from every logit, when min_tokens keeps ids from it, a penalty
pushes the tokens already drawn down, or a logit bias pushes tokens down, past the 64 it needs alone."""

import pytest
import torch

from partition.coordinator.session import logits_to_return
from partition.model.generation import GenerationRequest
from partition.model.sampling import Sampler, SamplingParams
from partition.transport.tensors import from_proto, to_top_k_proto
from partition.types import RETURN_TOP_K

VOCAB = 1000
LOGITS = torch.linspace(10.0, 0.0, VOCAB)  # token i is the (i + 1)-th likeliest
LIKELIEST_70 = list(range(70))


def top(k: int) -> torch.Tensor:
    """The logits as the edge gets them from a worker that sends the top `k`."""
    return from_proto(to_top_k_proto(LOGITS.reshape(1, 1, -1), k)).reshape(-1)


@pytest.mark.parametrize(
    ("fields", "drawn"),
    [
        ({"sampling": SamplingParams(presence_penalty=2.0)}, LIKELIEST_70),
        ({"sampling": SamplingParams(frequency_penalty=1.0)}, LIKELIEST_70 + LIKELIEST_70),
        ({"sampling": SamplingParams(temperature=0.7, top_k=5, seed=3, presence_penalty=2.0)}, LIKELIEST_70),
        ({"min_tokens": 5, "stop_token_ids": tuple(LIKELIEST_70)}, []),
        ({"sampling": SamplingParams(logit_bias=tuple((i, -100.0) for i in LIKELIEST_70))}, []),
    ],
    ids=["presence", "frequency", "top-k-sampled", "min-tokens", "logit-bias"],
)
def test_what_the_sampler_picks_from_the_top_k_sent_is_its_pick_from_every_logit(fields, drawn):
    request = GenerationRequest([1], max_new_tokens=140, **fields)
    held_back = torch.tensor(request.stop_token_ids or [], dtype=torch.long)

    def pick(logits: torch.Tensor) -> int:
        if len(held_back):
            logits = logits.index_fill(0, held_back, float("-inf"))
        return Sampler(request.sampling)(logits, drawn)

    k = logits_to_return(request.sampling, VOCAB, request.extra_logits(()))
    assert pick(top(k)) == pick(LOGITS) >= 70  # every one of the 70 likeliest was pushed down or kept back
    assert pick(top(RETURN_TOP_K)) != pick(LOGITS)  # the sampler's own 64 alone would have lost it


def test_a_negative_penalty_takes_every_logit():
    lifted = GenerationRequest([1], 8, sampling=SamplingParams(presence_penalty=-1.0))
    assert logits_to_return(lifted.sampling, VOCAB, lifted.extra_logits(())) == 0  # 0: all of them
    assert Sampler(lifted.sampling)(LOGITS, [900]) == 0  # 900 rises by 1, not past the likeliest
    assert Sampler(SamplingParams(presence_penalty=-2.0))(LOGITS, [5]) == 5  # 5 rises past it


def test_a_repetition_penalty_pushes_the_prompts_tokens_down_too_and_below_1_takes_every_logit():
    request = GenerationRequest(LIKELIEST_70, 8, sampling=SamplingParams(repetition_penalty=1.5))

    def pick(logits: torch.Tensor) -> int:
        return Sampler(request.sampling, request.prompt_ids)(logits, [70, 71])

    k = logits_to_return(request.sampling, VOCAB, request.extra_logits(()))
    assert pick(top(k)) == pick(LOGITS) == 72  # the prompt's 70 and the two drawn fall below it
    assert pick(top(RETURN_TOP_K)) != pick(LOGITS)
    lifting = GenerationRequest([1], 8, sampling=SamplingParams(repetition_penalty=0.5))
    assert logits_to_return(lifting.sampling, VOCAB, lifting.extra_logits(())) == 0
