"""Drive real workers from tests: deploy a chain, generate greedily, and the whole-model reference."""

from __future__ import annotations

import asyncio
import itertools

import torch

from partition.model import load_segment, resolve_model
from partition.transport.channels import TransportConfig
from partition.transport.client import Chain
from partition.types import Segment

WHOLE = Segment(0, 5)  # the tiny llama (tests/model/checkpoints.py): embed, 3 blocks, head
SEGMENTS = [Segment(0, 2), Segment(2, 5)]  # a two-stage split of it
PROMPT = [5, 17, 42, 8, 23, 4]
_session_ids = itertools.count()


def new_session_id() -> str:
    return f"test-{next(_session_ids)}"


def reference_tokens(models_dir, prompt: list[int], n_new: int) -> list[int]:
    """Greedy tokens of the whole model in this process."""
    model = load_segment(resolve_model(models_dir / "tiny"), WHOLE)
    cache = model.new_cache(slots=1, max_len=64)
    logits = model(torch.tensor([prompt]), cache, [0], [0], last_token_only=True)
    tokens, position = [], len(prompt)
    for _ in range(n_new):
        token = int(logits[0, -1].argmax())
        tokens.append(token)
        logits = model(torch.tensor([[token]]), cache, [0], [position])
        position += 1
    return tokens


async def generate(
    chain: Chain, plan_id: str, epoch: int, digest: str, prompt: list[int], n_new: int, codec="raw"
):
    """Greedy tokens through the chain, and the results of every step (for their hop timings)."""
    session = await chain.open_session(new_session_id(), plan_id, epoch, digest)
    try:
        result = await session.step(torch.tensor([prompt]), 0, codec=codec)
        results, tokens, position = [result], [], len(prompt)
        for _ in range(n_new):
            token = int(result.output[0, -1].argmax())
            tokens.append(token)
            result = await session.step(torch.tensor([[token]]), position)
            results.append(result)
            position += 1
    finally:
        await session.close()
    return tokens, results


def deploy(workers, segments, codecs=None, plan_id="plan", epoch=1, **load_args) -> str:
    """LoadSegment on `workers` as one chain; the model digest they all answered."""

    async def run():
        chain = Chain([w.address for w in workers], TransportConfig())
        try:
            replies = await chain.load(
                plan_id, epoch, "tiny", segments, codecs or ["raw"] * len(segments), **load_args
            )
        finally:
            await chain.close()
        digests = {r.model_digest for r in replies}
        assert len(digests) == 1
        assert [r.chain_workers for r in replies] == [len(workers)] * len(workers)  # a batch's share
        return digests.pop()

    return asyncio.run(run())


def serves(workers, digest: str, plan_id="plan", epoch=1, config: TransportConfig | None = None) -> bool:
    """The chain still answers a fresh session correctly (checked against the logits' argmax shape)."""

    async def run():
        chain = Chain([w.address for w in workers], config or TransportConfig())
        try:
            tokens, _ = await generate(chain, plan_id, epoch, digest, PROMPT, 2)
        finally:
            await chain.close()
        return len(tokens) == 2

    return asyncio.run(run())
