"""Encoded sizes match the stated bytes per value; payloads that do not fit are refused precisely."""

import math

import pytest
import torch

from partition.codec import CODECS, get_codec
from partition.codec.synthetic import synthetic_activations
from partition.errors import CodecError

FIXED_SIZE = ("raw", "fp16", "bf16", "int8")


@pytest.mark.parametrize("name", FIXED_SIZE)
@pytest.mark.parametrize("seq", [1, 7, 128])
def test_size_is_bytes_per_value_times_values(name, seq):
    # hidden 576 is a multiple of the int8 block, so the nominal figure is exact.
    codec = get_codec(name)
    x = synthetic_activations(seq=seq, hidden=576)
    assert len(codec.encode(x)) == codec.bytes_per_value * x.numel()


def test_int8_size_with_a_short_last_block():
    # 3 rows of 70 values: blocks of 32, 32, 6 per row -> 210 values + 9 fp16 scales.
    x = torch.randn(3, 70)
    assert len(get_codec("int8").encode(x)) == 210 + 2 * 3 * math.ceil(70 / 32)


@pytest.mark.parametrize("name", ["shuffle-zstd", "int8-zstd"])
def test_zstd_codecs_stay_within_nominal_plus_frame(name):
    codec = get_codec(name)
    x = torch.randn(1, 16, 576)  # noise: hardly compressible
    # A zstd frame adds a header, block headers and a 4-byte checksum: well under 64 bytes here.
    assert len(codec.encode(x)) <= codec.bytes_per_value * x.numel() + 64


@pytest.mark.parametrize("name", CODECS)
def test_truncated_and_extended_payloads_are_refused(name):
    codec = get_codec(name)
    x = synthetic_activations(seq=4, hidden=96)
    data = codec.encode(x)
    for bad in (data[:-1], data[: len(data) // 2], data + b"\x00", b""):
        with pytest.raises(CodecError, match=name):
            codec.decode(bad, x.shape)


@pytest.mark.parametrize("name", CODECS)
def test_payload_for_another_shape_is_refused(name):
    codec = get_codec(name)
    data = codec.encode(torch.randn(1, 4, 64))
    with pytest.raises(CodecError, match=r"shape \[1, 5, 64\]"):
        codec.decode(data, (1, 5, 64))


@pytest.mark.parametrize("name", CODECS)
def test_bad_shape_is_refused(name):
    with pytest.raises(CodecError, match="shape"):
        get_codec(name).decode(b"", (1, -4))
    with pytest.raises(CodecError, match="shape"):
        get_codec(name).decode(b"", ("a", 2))


@pytest.mark.parametrize("name", ["shuffle-zstd", "int8-zstd"])
def test_corrupted_zstd_frame_fails_its_checksum(name):
    codec = get_codec(name)
    x = synthetic_activations(seq=8, hidden=128)
    data = bytearray(codec.encode(x))
    data[len(data) // 2] ^= 0x10  # one flipped bit in the compressed body
    with pytest.raises(CodecError, match="corrupt"):
        codec.decode(bytes(data), x.shape)


@pytest.mark.parametrize("name", ["shuffle-zstd", "int8-zstd"])
def test_random_bytes_are_not_a_zstd_frame(name):
    garbage = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    with pytest.raises(CodecError, match="zstd"):
        get_codec(name).decode(garbage.numpy().tobytes(), (1, 1, 64))


def test_zstd_frame_claiming_a_huge_size_is_refused_before_decompressing():
    import zstandard

    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(10_000_000))
    with pytest.raises(CodecError, match="holds 10000000 bytes"):
        get_codec("shuffle-zstd").decode(bomb, (1, 1, 576))


def test_int8_negative_scale_is_corruption():
    codec = get_codec("int8")
    data = bytearray(codec.encode(torch.randn(1, 64)))
    data[1] |= 0x80  # sign bit of the first fp16 scale (little-endian: high byte second)
    with pytest.raises(CodecError, match="scales are negative or not finite"):
        codec.decode(bytes(data), (1, 64))


def test_int8_minus_128_is_corruption():
    codec = get_codec("int8")
    data = bytearray(codec.encode(torch.randn(1, 64)))
    data[-1] = 0x80  # -128 as int8
    with pytest.raises(CodecError, match="-128"):
        codec.decode(bytes(data), (1, 64))
