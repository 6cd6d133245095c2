"""Measure a codec on a given tensor (profile: the planner's codec table; benchmarks/codecs.py).

Timing follows the usual discipline: warm-up runs discarded, then the median of repeated runs.
Errors are over the finite entries of x; non-finite ones only count toward `bit_exact`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from partition.codec.base import Codec


@dataclass(frozen=True)
class CodecMeasurement:
    codec: str
    shape: tuple[int, ...]
    lossless: bool  # what the codec claims
    bit_exact: bool  # what this tensor showed (NaN compared by bits)
    n_values: int
    encoded_bytes: int  # bytes
    bytes_per_value: float  # bytes, measured (encoded_bytes / n_values)
    ratio_vs_raw: float  # fp32 bytes / encoded bytes (> 1 is smaller)
    encode_s: float  # seconds, median
    decode_s: float  # seconds, median
    encode_gbps: float  # fp32 input GB/s (1e9 bytes) through encode
    decode_gbps: float  # fp32 output GB/s through decode
    max_abs_error: float  # max |y - x|
    max_rel_error: float  # max |y - x| / max |x|: the error in units of the tensor's range
    rel_l2_error: float  # ||y - x|| / ||x||

    def as_dict(self) -> dict:
        return asdict(self)


def _median_seconds(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_codec(codec: Codec, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> CodecMeasurement:
    """Size, median encode/decode seconds and error of `codec` on float32 CPU tensor `x`."""
    assert repeats >= 1 and warmup >= 0
    x = x.detach().float().contiguous()
    data = codec.encode(x)
    y = codec.decode(data, x.shape)
    encode_s = _median_seconds(lambda: codec.encode(x), repeats, warmup)
    decode_s = _median_seconds(lambda: codec.decode(data, x.shape), repeats, warmup)

    n = x.numel()
    finite = torch.isfinite(x)
    xf, yf = x[finite].double(), y[finite].double()
    diff = (yf - xf).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    x_range = float(xf.abs().max()) if xf.numel() else 0.0
    x_norm = float(xf.norm())
    raw_bytes = 4 * n
    return CodecMeasurement(
        codec=codec.name,
        shape=tuple(x.shape),
        lossless=codec.lossless,
        bit_exact=bool(torch.equal(x.view(torch.int32), y.view(torch.int32))),
        n_values=n,
        encoded_bytes=len(data),
        bytes_per_value=len(data) / n if n else 0.0,
        ratio_vs_raw=raw_bytes / len(data) if data else 0.0,
        encode_s=encode_s,
        decode_s=decode_s,
        encode_gbps=raw_bytes / encode_s / 1e9 if encode_s > 0 else 0.0,
        decode_gbps=raw_bytes / decode_s / 1e9 if decode_s > 0 else 0.0,
        max_abs_error=max_abs,
        max_rel_error=max_abs / x_range if x_range else 0.0,
        rel_l2_error=float((yf - xf).norm()) / x_norm if x_norm else 0.0,
    )
