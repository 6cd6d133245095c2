"""The codec names a plan may name per link, and the one function that turns a name into a codec."""

from __future__ import annotations

from partition.codec.base import Codec
from partition.codec.floats import Bf16, Fp16, Raw
from partition.codec.int8 import Int8Blockwise
from partition.codec.zstd import Int8Zstd, ShuffleZstd
from partition.errors import ConfigError

# One shared instance per name: codecs are stateless (zstd contexts are per thread).
_REGISTRY: dict[str, Codec] = {
    codec.name: codec
    for codec in (Raw(), Fp16(), Bf16(), Int8Blockwise(block=32), ShuffleZstd(), Int8Zstd(block=32))
}

CODECS: tuple[str, ...] = tuple(_REGISTRY)


def get_codec(name: str) -> Codec:
    """The codec called `name`; ConfigError naming the known codecs otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown codec {name!r}; known codecs: {', '.join(CODECS)}") from None
