import pytest
import torch

from partition.codec import CODECS, Codec, get_codec
from partition.errors import CodecError, ConfigError

EXPECTED = ("raw", "fp16", "bf16", "int8", "shuffle-zstd", "int8-zstd")


def test_registry_names_and_flags():
    assert CODECS == EXPECTED
    lossless = {name for name in CODECS if get_codec(name).lossless}
    assert lossless == {"raw", "shuffle-zstd"}
    for name in CODECS:
        codec = get_codec(name)
        assert isinstance(codec, Codec)
        assert codec.name == name


def test_nominal_bytes_per_value():
    nominal = {name: get_codec(name).bytes_per_value for name in CODECS}
    assert nominal == {
        "raw": 4.0,
        "fp16": 2.0,
        "bf16": 2.0,
        "int8": 1 + 2 / 32,
        "shuffle-zstd": 4.0,
        "int8-zstd": 1 + 2 / 32,
    }


def test_unknown_codec_lists_known_names():
    with pytest.raises(
        ConfigError, match="unknown codec 'int4'.*raw, fp16, bf16, int8, shuffle-zstd, int8-zstd"
    ):
        get_codec("int4")


@pytest.mark.parametrize("name", EXPECTED)
def test_encode_refuses_wrong_dtype(name):
    with pytest.raises(CodecError, match="expected float32"):
        get_codec(name).encode(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(CodecError, match="torch.Tensor"):
        get_codec(name).encode([1.0, 2.0])
