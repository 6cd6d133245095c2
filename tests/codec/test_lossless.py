"""Lossless codecs round-trip every bit: NaN payloads, inf, -0.0, subnormals, odd sizes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from partition.codec import get_codec
from partition.codec.synthetic import synthetic_activations

LOSSLESS = ("raw", "shuffle-zstd")


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


def special_values() -> torch.Tensor:
    weird = torch.tensor(
        [float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-45, -1e-40, 3.4e38, 1.0],
        dtype=torch.float32,
    )
    # Two NaNs with different payloads must keep their bits too.
    other_nan = torch.tensor([0x7FC00123], dtype=torch.int32).view(torch.float32)
    return torch.cat([weird, other_nan])


@pytest.mark.parametrize("name", LOSSLESS)
@pytest.mark.parametrize("shape", [(1, 1, 576), (1, 13, 577), (2, 3, 5), (7,), (), (0, 576), (1, 0, 8)])
def test_round_trip_is_bit_exact(name, shape):
    codec = get_codec(name)
    x = torch.randn(shape) * 3
    y = codec.decode(codec.encode(x), shape)
    assert y.shape == torch.Size(shape) and y.dtype == torch.float32
    assert torch.equal(bits(y), bits(x))


@pytest.mark.parametrize("name", LOSSLESS)
def test_special_values_keep_their_bits(name):
    codec = get_codec(name)
    x = special_values().reshape(2, 5)
    y = codec.decode(codec.encode(x), x.shape)
    assert torch.equal(bits(y), bits(x))


@pytest.mark.parametrize("name", LOSSLESS)
def test_non_contiguous_input(name):
    codec = get_codec(name)
    x = torch.randn(4, 33).t()  # a transposed view
    y = codec.decode(codec.encode(x), x.shape)
    assert torch.equal(y, x)


@pytest.mark.parametrize("name", LOSSLESS)
@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), min_size=0, max_size=300))
def test_any_bit_pattern_round_trips(name, words):
    x = torch.tensor(words, dtype=torch.int32).view(torch.float32)
    codec = get_codec(name)
    assert torch.equal(bits(codec.decode(codec.encode(x), x.shape)), bits(x))


def test_decoded_tensor_is_writable_and_independent():
    codec = get_codec("raw")
    data = codec.encode(torch.ones(4))
    y = codec.decode(data, (4,))
    y += 1  # would warn or fail on a read-only buffer
    assert torch.equal(codec.decode(data, (4,)), torch.ones(4))


def test_shuffle_zstd_compresses_activations():
    # Byte shuffling makes the exponent planes compressible; plain zstd gains under 10 % on floats.
    x = synthetic_activations(seq=128, hidden=576)
    assert len(get_codec("shuffle-zstd").encode(x)) < 0.95 * 4 * x.numel()
