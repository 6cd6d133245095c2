"""Codecs with a zstd stage: lossless byte-shuffle + zstd, and int8 blockwise + zstd.

zstd alone gains under 10 % on float data: the exponent bytes repeat, the mantissa bytes look random,
and they are interleaved. Shuffling puts the 4 byte planes of fp32 one after another (all first bytes,
then all second bytes, ...), so the repetitive planes compress (the trick of Blosc and HDF5's shuffle
filter). After int8 quantization the values themselves are small and compress directly.

Each payload is one zstd frame with its content size and a checksum: a frame that claims another size
is refused before decompressing (no memory bomb from a forged header), and a corrupted one fails the
checksum instead of decoding to wrong numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import zstandard

from partition.codec.base import Codec, Shape, check_input, check_shape, check_size, numel
from partition.codec.int8 import Int8Blockwise, encoded_size
from partition.errors import CodecError

LEVEL = 1  # activations are small and latency-bound: the fastest level, higher ones gain little here


class _Frames:
    """zstd compress/decompress with one context per thread (zstd contexts are not thread-safe)."""

    def __init__(self, codec: str, level: int) -> None:
        self.codec = codec
        self.level = level
        self._local = threading.local()

    def compress(self, payload: bytes) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(
                level=self.level, write_checksum=True, write_content_size=True
            )
            self._local.compressor = compressor
        return compressor.compress(payload)

    def decompress(self, data: bytes, expected: int, shape: Shape) -> bytes:
        try:
            claimed = zstandard.frame_content_size(data)
        except zstandard.ZstdError as error:
            raise CodecError(
                f"{self.codec}: not a zstd frame ({error}): corrupt or truncated payload"
            ) from None
        if claimed != expected:
            raise CodecError(
                f"{self.codec}: the zstd frame holds {claimed} bytes but shape {list(shape)} needs {expected}; "
                "the payload was encoded for another shape or codec"
            )
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = zstandard.ZstdDecompressor()
            self._local.decompressor = decompressor
        try:
            payload = decompressor.decompress(data, allow_extra_data=False)
        except zstandard.ZstdError as error:
            raise CodecError(f"{self.codec}: zstd frame does not decode ({error}): corrupt payload") from None
        check_size(self.codec, payload, expected, shape, what="decompressed bytes")
        return payload


class ShuffleZstd(Codec):
    """Lossless: fp32 byte planes, then zstd. Bit-exact for every value, NaN payloads included."""

    name = "shuffle-zstd"
    lossless = True
    bytes_per_value = 4.0  # before zstd; the measured size is data-dependent

    def __init__(self, level: int = LEVEL) -> None:
        self._frames = _Frames(self.name, level)

    def encode(self, x: torch.Tensor) -> bytes:
        values_N = check_input(self.name, x).reshape(-1).numpy().astype("<f4", copy=False)
        planes_4N = np.ascontiguousarray(values_N.view(np.uint8).reshape(-1, 4).T)
        return self._frames.compress(planes_4N.tobytes())

    def decode(self, data: bytes, shape: Sequence[int]) -> torch.Tensor:
        dims = check_shape(self.name, shape)
        payload = self._frames.decompress(data, 4 * numel(dims), dims)
        planes_4N = np.frombuffer(payload, np.uint8).reshape(4, numel(dims))
        values_N = planes_4N.T.copy().view("<f4")  # copy: a new, writable, contiguous buffer
        return torch.from_numpy(values_N).reshape(dims)


class Int8Zstd(Codec):
    """int8 blockwise, then zstd over its bytes. Same error as int8."""

    lossless = False

    def __init__(self, block: int = 32, level: int = LEVEL, name: str = "int8-zstd") -> None:
        self.name = name
        self._int8 = Int8Blockwise(block, name=name)
        self._frames = _Frames(name, level)
        self.block = block
        self.bytes_per_value = self._int8.bytes_per_value  # before zstd

    def encode(self, x: torch.Tensor) -> bytes:
        return self._frames.compress(self._int8.encode(x))

    def decode(self, data: bytes, shape: Sequence[int]) -> torch.Tensor:
        dims = check_shape(self.name, shape)
        payload = self._frames.decompress(data, encoded_size(dims, self.block), dims)
        return self._int8.decode(payload, dims)
