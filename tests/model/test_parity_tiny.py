"""Our model engine against transformers on tiny random checkpoints of every supported family."""

import pytest
import torch

from partition.model import load_segment, resolve_model
from partition.model.generation import GenerationRequest, generate, local_step
from partition.types import Segment
from tests.conftest import GGUF_QUANTS, TINY_KINDS


def _hf_model(path, **kwargs):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()


def _ours(path):
    source = resolve_model(path)
    return load_segment(source, Segment.whole(source.spec.n_blocks))


def _hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


def _our_greedy(model, prompt: list[int], n: int) -> list[int]:
    cache = model.new_cache(1, len(prompt) + n)
    request = GenerationRequest(prompt, max_new_tokens=n, context=len(prompt) + n)
    return generate(local_step(model, cache), request, eos_ids=(), decode=lambda ids: "").token_ids


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_logits_and_64_greedy_tokens_match_transformers(kind, tiny_dirs):
    ours, ref = _ours(tiny_dirs[kind]), _hf_model(tiny_dirs[kind])
    ids = torch.randint(0, ours.spec.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(ids).logits
    got = ours(ids, ours.new_cache(1, 64), [0], [0])
    assert (got - expected).abs().max().item() < 1e-4
    prompt = ids[0, :8].tolist()
    assert _our_greedy(ours, prompt, 64) == _hf_greedy(ref, prompt, 64)


@pytest.mark.parametrize("quant", GGUF_QUANTS)
def test_gguf_types_match_transformers_gguf_loader(quant, tiny_ggufs):
    path = tiny_ggufs[quant]
    ours, ref = _ours(path), _hf_model(str(path.parent), gguf_file=path.name)
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(ids).logits
    assert (ours(ids, ours.new_cache(1, 64), [0], [0]) - expected).abs().max().item() < 1e-4


def test_gguf_and_hf_of_the_same_f32_weights_agree(tiny_dirs, tiny_ggufs):
    """The q/k un-permutation is right: an F32 GGUF computes what its source directory computes."""
    hf, gguf = _ours(tiny_dirs["llama"]), _ours(tiny_ggufs["F32"])
    ids = torch.arange(1, 30).unsqueeze(0)
    a = hf(ids, hf.new_cache(1, 32), [0], [0])
    b = gguf(ids, gguf.new_cache(1, 32), [0], [0])
    assert (a - b).abs().max().item() < 1e-5


def test_gpt2_with_the_exact_gelu_matches_transformers(tmp_path):
    """activation_function="gelu" is GELU without the tanh approximation of GPT-2's own gelu_new."""
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    config.activation_function = "gelu"
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "mlp" in name:
                parameter.normal_(0, 0.5)  # activations where the two GELUs differ
    model.save_pretrained(tmp_path)
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(ids).logits
    ours = _ours(tmp_path)
    assert (ours(ids, ours.new_cache(1, 16), [0], [0]) - expected).abs().max().item() < 1e-5
