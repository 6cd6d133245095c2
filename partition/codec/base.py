"""What every activation codec is (serve: the bytes a stage sends to the next one), and shared checks.

A codec turns one float32 CPU tensor (activations `[batch, seq, hidden]`, any shape works) into bytes
and back. The shape is not in the bytes: the message that carries them carries the shape, so `decode`
gets it and checks that the bytes fit it exactly.
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from partition.errors import CodecError

Shape = tuple[int, ...]


class Codec(ABC):
    """An activation codec. Instances are stateless and safe to share between threads."""

    name: str  # registry name, e.g. "int8"
    lossless: bool  # True: decode(encode(x)) is bit-identical to x, NaN and inf included
    # Bytes per value before any entropy coding (raw fp32 = 4.0). For zstd codecs this is the bound
    # before compression; the real size depends on the data, see partition.codec.measure.
    bytes_per_value: float

    @abstractmethod
    def encode(self, x: torch.Tensor) -> bytes:
        """Encode a float32 CPU tensor of any shape."""

    @abstractmethod
    def decode(self, data: bytes, shape: Sequence[int]) -> torch.Tensor:
        """Decode bytes made by `encode` into a new float32 tensor of `shape`; CodecError if they do not fit."""

    def __repr__(self) -> str:
        return f"<codec {self.name}>"


def check_input(codec: str, x: torch.Tensor) -> torch.Tensor:
    """The contiguous float32 CPU tensor a codec may encode, or a CodecError that says why not."""
    if not isinstance(x, torch.Tensor):
        raise CodecError(f"{codec}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise CodecError(f"{codec}: expected float32 activations, got {x.dtype}; convert with x.float()")
    if x.device.type != "cpu":
        raise CodecError(f"{codec}: expected a CPU tensor, got one on {x.device}; move it with x.cpu()")
    # Only the calls needed: each costs tens of microseconds on a stage's cold cache.
    if x.requires_grad:
        x = x.detach()
    return x if x.is_contiguous() else x.contiguous()


def check_shape(codec: str, shape: Sequence[int]) -> Shape:
    """`shape` as a tuple of non-negative ints, or a CodecError."""
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise CodecError(f"{codec}: shape must be a sequence of integers, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise CodecError(f"{codec}: shape {dims} has a negative dimension")
    return dims


def check_size(codec: str, data: bytes, expected: int, shape: Shape, what: str = "bytes") -> None:
    if len(data) != expected:
        raise CodecError(
            f"{codec}: {len(data)} {what} do not fit shape {list(shape)} (expected {expected}); "
            "the payload is truncated, corrupt, or was encoded with another codec or shape"
        )


def numel(shape: Shape) -> int:
    return math.prod(shape)


# Little-endian numpy dtypes torch can read straight from a buffer on a little-endian host. One torch
# call instead of numpy's three: a stage decodes a hidden state per token right after its compute has
# evicted the caches, and there each call costs tens of microseconds (benchmarks/transport.py).
_TORCH_DTYPES = {"<f4": torch.float32, "<f2": torch.float16, "<i2": torch.int16}
LITTLE_ENDIAN = sys.byteorder == "little"


def tensor_from(data: bytes | bytearray | memoryview, dtype: str, shape: Shape) -> torch.Tensor:
    """A new writable tensor over a copy of `data`, read as the little-endian numpy `dtype`."""
    torch_dtype = _TORCH_DTYPES.get(dtype) if LITTLE_ENDIAN else None
    if torch_dtype is not None and len(data):
        return torch.frombuffer(bytearray(data), dtype=torch_dtype).view(shape)
    array = np.frombuffer(data, dtype=dtype).copy()
    return torch.from_numpy(array).reshape(shape)
