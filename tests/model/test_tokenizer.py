"""Tokenizer from GGUF metadata and the chat template, against transformers' GGUF tokenizer."""

import pytest

from partition.model.tokenizer import load_tokenizer

TEXTS = [
    "What is the capital of France?",
    "  leading spaces, tabs\tand\nnewlines",
    "Unicode: café, naïve, 東京, emoji 🙂",
    "<|im_start|>user\nhello<|im_end|>",
]


@pytest.fixture(scope="module")
def ours(smollm2):
    return load_tokenizer(smollm2)


@pytest.fixture(scope="module")
def reference(smollm2):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(smollm2.path.parent), gguf_file=smollm2.path.name)


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_match_transformers(ours, reference, text):
    ids = ours.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False)
    assert ours.decode(ids, skip_special=False) == text


def test_digits_split_one_by_one_like_the_original_tokenizer(ours):
    # SmolLM2's tokenizer splits numbers into single digits (llama.cpp pre-tokenizer "smollm")
    assert len(ours.encode("2024")) == 4


def test_chat_template_matches_transformers(ours, reference):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.render_chat(messages) == expected
    assert ours.render_chat(messages).endswith("<|im_start|>assistant\n")


def test_special_tokens_and_eos(ours):
    assert ours.encode("<|im_end|>") == [2]
    assert 2 in ours.eos_ids
