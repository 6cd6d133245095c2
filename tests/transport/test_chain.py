"""Split generation over real worker processes gives exactly the whole model's tokens."""

import asyncio

import pytest

from partition.transport.channels import TransportConfig
from partition.transport.client import Chain
from partition.types import Segment
from tests.transport.helpers import PROMPT, deploy, generate, reference_tokens

N_NEW = 16
SPLITS = {
    1: [Segment(0, 5)],
    2: [Segment(0, 2), Segment(2, 5)],
    3: [Segment(0, 2), Segment(2, 3), Segment(3, 5)],
}


@pytest.fixture(scope="module")
def expected(models_dir):
    return reference_tokens(models_dir, PROMPT, N_NEW)


@pytest.mark.parametrize(("n_stages", "codec"), [(1, "raw"), (2, "raw"), (3, "raw"), (3, "shuffle-zstd")])
def test_split_generation_matches_the_whole_model(chain_workers, expected, n_stages, codec):
    workers = chain_workers[:n_stages]
    digest = deploy(workers, SPLITS[n_stages], [codec] * n_stages)

    async def run():
        chain = Chain([w.address for w in workers], TransportConfig())
        try:
            return await generate(chain, "plan", 1, digest, PROMPT, N_NEW)
        finally:
            await chain.close()

    tokens, results = asyncio.run(run())
    assert tokens == expected
    names = [w.name for w in workers]
    for result in results:
        assert [hop.stage for hop in result.hops] == names
        for hop in result.hops:
            assert hop.compute_s > 0 and hop.bytes_in > 0 and hop.bytes_out > 0
            assert hop.recv_unix_ns <= hop.sent_unix_ns
        assert [hop.codec_in for hop in result.hops] == ["raw"] + [codec] * (n_stages - 1)
        assert 0 <= result.hops[0].recv_unix_ns - result.sent_unix_ns < 10**9  # one host, one clock
        assert result.output.shape == (1, 1, 256)  # logits of the last position only


def test_prefill_chunks_can_be_in_flight_together(chain_workers, expected):
    """send() twice before receive(): the second chunk follows the first down the chain."""
    import torch

    workers = chain_workers[:3]
    digest = deploy(workers, SPLITS[3])

    async def run():
        chain = Chain([w.address for w in workers], TransportConfig())
        session = await chain.open_session("chunks", "plan", 1, digest)
        try:
            await session.send(torch.tensor([PROMPT[:4]]), 0)
            await session.send(torch.tensor([PROMPT[4:]]), 4)
            first, second = await session.receive(), await session.receive()
            return first.position, second.position, int(second.output[0, -1].argmax())
        finally:
            await session.close()
            await chain.close()

    assert asyncio.run(run()) == (0, 4, expected[0])


def test_a_chain_without_the_head_returns_every_positions_hidden_state(chain_workers):
    """A last stage without the head returns the hidden state of every position (the edge's tail needs
    them all), whatever OUTPUT_SELECT the step asked for: the client takes them, as wide as its load
    reply said, no more rows than the step sent."""
    import torch

    workers = chain_workers[:2]

    async def run():
        chain = Chain([w.address for w in workers], TransportConfig())
        try:
            replies = await chain.load("plan", 1, "tiny", [Segment(0, 2), Segment(2, 4)], ["raw", "raw"])
            session = await chain.open_session("headless", "plan", 1, replies[0].model_digest)
            try:
                return await session.step(torch.tensor([PROMPT]), 0), chain.output_width
            finally:
                await session.close()
        finally:
            await chain.close()

    result, width = asyncio.run(run())
    assert result.output.shape == (1, len(PROMPT), width) and width < 256  # the hidden size, not logits
