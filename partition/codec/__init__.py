"""Activation codecs (serve): how a stage's output crosses a link. The plan picks one per link.

codec = get_codec("int8")
data = codec.encode(x)              # x: float32 CPU tensor, e.g. [batch, seq, hidden]
y = codec.decode(data, x.shape)     # float32 tensor; CodecError if the bytes do not fit
"""

from partition.codec.base import Codec
from partition.codec.registry import CODECS, get_codec

__all__ = ["CODECS", "Codec", "get_codec"]
