"""TextStream (serve, generate): streamed text is the whole text's, cut at stops, at a bounded cost a token."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from partition.model.generation import GenerationRequest, TextStream, generate

# Byte pieces cut from these characters at every boundary, so tokens often end inside a character,
# as byte-level BPE tokens do.
ENCODED = "ab STé€😀".encode()
PIECES = st.lists(
    st.binary(min_size=1, max_size=3).map(lambda b: bytes(ENCODED[i % len(ENCODED)] for i in b))
)


def byte_level(vocab: list[bytes]):
    return lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def whole_text(decode, ids: list[int], stops: tuple[str, ...]) -> str:
    full = decode(ids)
    cuts = [full.find(s) for s in stops if s in full]
    return full[: min(cuts)] if cuts else full


@given(PIECES, st.lists(st.text("ab ST", min_size=1, max_size=3), max_size=2))
def test_streamed_text_is_a_prefix_of_the_whole_text_and_all_of_it_at_a_stop(vocab, stops):
    stops = tuple(stops)
    decode = byte_level(vocab)
    stream = TextStream(decode, stops)
    streamed, pushed = "", []
    for token in range(len(vocab)):
        pushed.append(token)
        streamed += stream.push(token)
        assert whole_text(decode, pushed, stops).startswith(streamed)
        if stream.stopped:
            break
        assert not any(s in decode(pushed) for s in stops)  # it stops at the first token that completes one
    assert stream.text() == whole_text(decode, pushed, stops)
    if stream.stopped:
        assert streamed == stream.text()
    elif not decode(pushed).endswith("\ufffd"):  # held back: at most a possible start of a stop string
        assert len(stream.text()) - len(streamed) <= max((len(s) - 1 for s in stops), default=0)


def test_a_push_decodes_only_the_newest_tokens():
    vocab = [f" w{i}".encode() for i in range(500)]
    seen: list[int] = []

    def decode(ids):
        seen.append(len(ids))
        return byte_level(vocab)(ids)

    stream = TextStream(decode, ("STOP",))
    streamed = "".join(stream.push(i) for i in range(500))
    assert max(seen) <= 2  # the new token after the previous one, not the whole text
    assert len(seen) == 500  # one decode a token
    assert streamed == stream.text() == "".join(f" w{i}" for i in range(500))


@pytest.mark.parametrize(
    "script, max_new_tokens, finish",
    [([1, 2, 0], 8, "eos"), ([1, 2], 2, "length"), ([1, 3, 0], 8, "eos")],
    ids=[
        "held-back-stop-start-then-eos",
        "held-back-stop-start-then-length",
        "unfinished-character-then-eos",
    ],
)
def test_the_streamed_text_ends_as_the_whole_text_when_no_stop_string_came(script, max_new_tokens, finish):
    """ "." could start the stop string ".\n" and half of "é" is no character yet: both are held back
    while the next token may complete them, and handed out once generation ends without a stop."""
    vocab = [b"<eos>", b"Paris", b".", "é".encode()[:1]]
    tokens = iter(script)

    def step(ids, position):
        logits = torch.zeros(len(vocab))
        logits[next(tokens)] = 1.0
        return logits

    chunks: list[str] = []
    request = GenerationRequest([1], max_new_tokens=max_new_tokens, context=64, stop=(".\n",))
    result = generate(step, request, (0,), byte_level(vocab), chunks.append)
    assert result.finish_reason == finish
    assert "".join(chunks) == result.text and result.text in ("Paris.", "Paris\ufffd")
    assert len(chunks) == 2  # "Paris", then the held-back tail once it is known to be the end
