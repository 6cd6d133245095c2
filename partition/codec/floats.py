"""Plain float codecs: raw fp32 (lossless), fp16 and bf16 (round to nearest even).

Error of the lossy ones, for a finite x (unit roundoff u = 2^-11 for fp16, 2^-8 for bf16):
|decode(encode(x)) - x| <= u * |x| in the normal range; below it (fp16 under 6.1e-5) the absolute
error is at most half the smallest subnormal step (2^-25 for fp16). NaN and inf pass through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from partition.codec.base import (
    LITTLE_ENDIAN,
    Codec,
    check_input,
    check_shape,
    check_size,
    numel,
    tensor_from,
)
from partition.errors import CodecError

FP16_MAX = 65504.0  # largest finite fp16 value; from 65520 on, round-to-nearest gives inf
BF16_MAX = torch.finfo(torch.bfloat16).max  # 3.3895e38; fp32 values a little above it round to inf


def refuse_overflow(name: str, x: torch.Tensor, halved: torch.Tensor, largest: float, advice: str) -> None:
    """CodecError when a finite value of `x` became inf in `halved`: silent garbage downstream. One
    min/max pass decides; the exact check runs only beyond `largest` (or on NaN, which min/max
    propagate and which may hide an overflow)."""
    if not x.numel():
        return
    low, high = (float(v) for v in torch.aminmax(x))
    if low >= -largest and high <= largest:
        return
    overflow = torch.isinf(halved) & torch.isfinite(x)
    if bool(overflow.any()):
        raise CodecError(
            f"{name}: value {float(x[overflow].abs().max()):.7g} exceeds the {name} range "
            f"(+-{largest:.5g}); {advice}"
        )


class Raw(Codec):
    """fp32 little-endian, 4 bytes per value: what llama.cpp RPC and exo send."""

    name = "raw"
    lossless = True
    bytes_per_value = 4.0

    def encode(self, x: torch.Tensor) -> bytes:
        array = check_input(self.name, x).numpy()
        return (array if LITTLE_ENDIAN else array.astype("<f4")).tobytes()

    def decode(self, data: bytes, shape: Sequence[int]) -> torch.Tensor:
        dims = check_shape(self.name, shape)
        check_size(self.name, data, 4 * numel(dims), dims)
        return tensor_from(data, "<f4", dims)


class Fp16(Codec):
    """IEEE half, 2 bytes per value: what Petals and vLLM send. Refuses values beyond +-65504."""

    name = "fp16"
    lossless = False
    bytes_per_value = 2.0

    def encode(self, x: torch.Tensor) -> bytes:
        x = check_input(self.name, x)
        halved = x.to(torch.float16)
        refuse_overflow(self.name, x, halved, FP16_MAX, "use bf16, int8 or a lossless codec for this link")
        return halved.numpy().astype("<f2", copy=False).tobytes()

    def decode(self, data: bytes, shape: Sequence[int]) -> torch.Tensor:
        dims = check_shape(self.name, shape)
        check_size(self.name, data, 2 * numel(dims), dims)
        return tensor_from(data, "<f2", dims).float()


class Bf16(Codec):
    """bfloat16 (fp32's range, 8 bits of mantissa), 2 bytes per value."""

    name = "bf16"
    lossless = False
    bytes_per_value = 2.0

    def encode(self, x: torch.Tensor) -> bytes:
        x = check_input(self.name, x)
        halved = x.to(torch.bfloat16)  # the top of fp32's range rounds to inf here
        refuse_overflow(self.name, x, halved, BF16_MAX, "use a lossless codec for this link")
        # numpy has no bfloat16: move the bits as int16.
        return halved.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()

    def decode(self, data: bytes, shape: Sequence[int]) -> torch.Tensor:
        dims = check_shape(self.name, shape)
        check_size(self.name, data, 2 * numel(dims), dims)
        return tensor_from(data, "<i2", dims).view(torch.bfloat16).float()
