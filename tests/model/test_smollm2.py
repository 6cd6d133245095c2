"""The embedded default model, real weights: parity with transformers' GGUF loader, and segments chained."""

import pytest
import torch

from partition.model import load_segment
from partition.types import Segment
from tests.model.test_parity_tiny import _hf_greedy, _our_greedy

PROMPT = [1, 504, 3458, 282, 4649, 314, 253, 1345, 30, 378, 2025, 30]  # token ids of a short English prompt


@pytest.fixture(scope="module")
def reference(smollm2):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2.path.parent), gguf_file=smollm2.path.name, dtype=torch.float32
    ).eval()


def test_logits_match_transformers(smollm2_whole, reference):
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        expected = reference(ids).logits
    got = smollm2_whole(ids, smollm2_whole.new_cache(1, 64), [0], [0])
    assert (got - expected).abs().max().item() < 1e-4


def test_64_greedy_tokens_match_transformers(smollm2_whole, reference):
    assert _our_greedy(smollm2_whole, PROMPT, 64) == _hf_greedy(reference, PROMPT, 64)


def _run_chain(parts, ids, decode_steps: int):
    """Prefill `ids` then greedy-decode through the chain of segments; return every step's logits."""
    caches = [p.new_cache(1, ids.shape[1] + decode_steps) for p in parts]
    outputs = []
    x, position = ids, 0
    for _ in range(decode_steps + 1):
        h = x
        for part, cache in zip(parts, caches, strict=True):
            h = part(h, cache, [0], [position])
        outputs.append(h[:, -1])
        position += x.shape[1]
        x = h[:, -1:].argmax(-1)
    return torch.cat(outputs)


@pytest.mark.parametrize(
    "cuts",
    [(16,), (1, 31), (7, 13, 19, 26)],  # 2, 3 and 5 segments, including embed-only and head-only stages
    ids=["2-segments", "3-segments", "5-segments"],
)
def test_chained_segments_reproduce_whole_model(smollm2, smollm2_whole, cuts):
    n = smollm2.spec.n_units
    bounds = [0, *cuts, n]
    parts = [load_segment(smollm2, Segment(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
    ids = torch.tensor([PROMPT])
    whole = _run_chain([smollm2_whole], ids, decode_steps=6)
    split = _run_chain(parts, ids, decode_steps=6)
    assert (whole - split).abs().max().item() <= 1e-5


def test_segment_holds_only_its_units(smollm2):
    part = load_segment(smollm2, Segment(3, 8))
    assert list(part.units()) == [f"block.{i}" for i in range(2, 7)]
    assert not part.takes_token_ids and not part.returns_logits
    whole_block = 14.2e6  # bytes of one fp32 SmolLM2 block, within a few percent
    assert part.weight_bytes() == pytest.approx(5 * whole_block, rel=0.05)


def test_batched_sessions_equal_separate_sessions(smollm2):
    """Sessions at different positions in one batch compute what each computes alone."""
    part = load_segment(smollm2, Segment(0, 6))
    cache = part.new_cache(slots=3, max_len=32)
    prompts = [PROMPT[:5], PROMPT[:9], PROMPT[:3]]
    alone = []
    for slot, prompt in enumerate(prompts):
        part(torch.tensor([prompt]), cache, [slot], [0])
        alone.append(part(torch.tensor([[42]]), cache, [slot], [len(prompt)]))
    batched = part(torch.tensor([[42], [42], [42]]), cache, [0, 1, 2], [len(p) for p in prompts])
    # hidden states carry outlier channels in the hundreds: compare relative to the largest value
    assert _relative_error(torch.cat(alone), batched) < 1e-6
    # a batch of prefills at different starts (chunked prefill) too
    chunk = torch.tensor([[7, 8], [9, 10], [11, 12]])
    one_by_one = [part(chunk[i : i + 1], cache, [i], [len(prompts[i]) + 1]) for i in range(3)]
    together = part(chunk, cache, [0, 1, 2], [len(p) + 1 for p in prompts])
    assert _relative_error(torch.cat(one_by_one), together) < 1e-6
    # rows in consecutive slots read the cache as a view; others gather their slots: the same numbers
    order = [2, 0, 1]
    step = torch.tensor([[5]])
    alone = [part(step, cache, [slot], [len(prompts[slot]) + 3]) for slot in order]
    gathered = part(step.repeat(3, 1), cache, order, [len(prompts[slot]) + 3 for slot in order])
    assert _relative_error(torch.cat(alone), gathered) < 1e-6


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()
