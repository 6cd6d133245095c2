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


def test_decode_steps_of_sessions_waiting_together_run_as_one_forward_and_keep_their_tokens(
    workers, smollm2_whole
):
    """Two sessions' decode steps arrive while a third session's long prompt holds the worker: they wait
    together and run as one forward (HopTiming.batch = 2), and each gets its own greedy token, the
    whole model's, with logits within rounding of its own."""
    prompts = {"b": PROMPT, "c": PROMPT[:7]}
    long_prompt = (PROMPT * 20)[:240]  # its prefill runs on the worker's compute thread for a while

    def alone(prompt: list[int]) -> torch.Tensor:
        cache = smollm2_whole.new_cache(1, len(prompt) + 2)
        logits = smollm2_whole(torch.tensor([prompt]), cache, [0], [0], last_token_only=True)
        token = int(logits[0, -1].argmax())
        return token, smollm2_whole(torch.tensor([[token]]), cache, [0], [len(prompt)])[0, -1]

    async def run():
        chain = Chain([workers[0].address], TransportConfig())
        try:
            replies = await chain.load(
                "batch", 1, "smollm2-135m", [Segment(0, 32)], ["raw"], max_context=256, max_sessions=3
            )
            digest = replies[0].model_digest
            sessions = {name: await chain.open_session(f"batch-{name}", "batch", 1, digest) for name in "abc"}
            try:
                tokens = {}
                for name, prompt in prompts.items():
                    result = await sessions[name].step(torch.tensor([prompt]), 0)
                    tokens[name] = int(result.output[0, -1].argmax())
                await sessions["a"].send(torch.tensor([long_prompt]), 0)
                for name, prompt in prompts.items():
                    await sessions[name].send(torch.tensor([[tokens[name]]]), len(prompt))
                decoded = {name: await sessions[name].receive() for name in prompts}
                await sessions["a"].receive()
                return tokens, decoded
            finally:
                for session in sessions.values():
                    await session.close()
        finally:
            await chain.close()

    tokens, decoded = asyncio.run(run())
    for name, prompt in prompts.items():
        token, logits = alone(prompt)
        assert tokens[name] == token
        assert decoded[name].hops[-1].batch == 2
        torch.testing.assert_close(decoded[name].output[0, -1], logits, rtol=1e-4, atol=1e-3)
