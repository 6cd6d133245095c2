"""Tokenizer from GGUF metadata and the chat template, against transformers' GGUF tokenizer."""

import pytest

from partition.model.tokenizer import Tokenizer, load_tokenizer

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


@pytest.mark.parametrize("text", TEXTS)
def test_the_bytes_of_each_token_make_up_the_text(ours, text):
    """What a reply's log-probabilities show for each token: a character may span tokens (東, 🙂)."""
    pieces = [ours.token_bytes(i) for i in ours.encode(text)]
    assert b"".join(pieces) == text.encode("utf-8")
    if text.startswith("Unicode"):
        assert any(not piece.decode("utf-8", errors="ignore") for piece in pieces)  # a lone part


def test_the_bytes_of_sentencepiece_tokens_spell_their_space_and_byte_fallback():
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models

    vocab = {"<unk>": 0, "▁hi": 1, "<0xE6>": 2, "<0x9D>": 3, "<0xB1>": 4, "x": 5}
    backend = Backend(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer = Tokenizer(backend)
    assert [tokenizer.token_bytes(i) for i in (1, 2, 3, 4, 5)] == [b" hi", b"\xe6", b"\x9d", b"\xb1", b"x"]
    assert backend.decode([1, 2, 3, 4]) == " hi東"  # what the bytes spell, as the decoder reads them
