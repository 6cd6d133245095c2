"""SmolLM2 (real weights) split over 2, 3 and 4 worker processes gives the whole model's greedy tokens."""

import asyncio

import pytest
import torch

from partition.transport.channels import TransportConfig
from partition.transport.client import Chain
from partition.types import Segment
from tests.transport.helpers import generate

pytestmark = pytest.mark.slow

PROMPT = [1, 504, 3458, 282, 4649, 314, 253, 1345, 30, 378, 2025, 30]
N_NEW = 48
SPLITS = {
    2: [Segment(0, 16), Segment(16, 32)],
    3: [Segment(0, 11), Segment(11, 21), Segment(21, 32)],
    4: [Segment(0, 8), Segment(8, 16), Segment(16, 24), Segment(24, 32)],
}


@pytest.fixture(scope="module")
def expected(smollm2_whole):
    cache = smollm2_whole.new_cache(1, len(PROMPT) + N_NEW + 1)
    logits = smollm2_whole(torch.tensor([PROMPT]), cache, [0], [0], last_token_only=True)
    tokens = []
    for position in range(len(PROMPT), len(PROMPT) + N_NEW):
        tokens.append(int(logits[0, -1].argmax()))
        logits = smollm2_whole(torch.tensor([[tokens[-1]]]), cache, [0], [position])
    return tokens


@pytest.fixture(scope="module")
def workers(start_worker):
    return [start_worker(f"smol-{i}") for i in range(4)]


# 2 and 3 stages and the lossless codec are covered through the coordinator (tests/coordinator);
# here: four workers chained with no edge segment, the longest chain.
@pytest.mark.parametrize(("n_stages", "codec"), [(4, "raw")])
def test_split_smollm2_matches_the_whole_model(workers, expected, n_stages, codec):
    async def run():
        chain = Chain([w.address for w in workers[:n_stages]], TransportConfig())
        try:
            replies = await chain.load(
                "smol",
                1,
                "smollm2-135m",
                SPLITS[n_stages],
                [codec] * n_stages,
                max_context=128,
                max_sessions=1,
            )
            assert len({r.model_digest for r in replies}) == 1
            tokens, _ = await generate(chain, "smol", 1, replies[0].model_digest, PROMPT, N_NEW)
        finally:
            await chain.close()
        return tokens

    assert asyncio.run(run()) == expected
