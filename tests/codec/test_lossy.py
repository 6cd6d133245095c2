"""Lossy codecs: their stated error bounds hold, and int8 blocks survive outlier channels."""

import math

import numpy as np
import pytest
import torch

from partition.codec import get_codec
from partition.codec.int8 import layout
from partition.codec.synthetic import synthetic_activations
from partition.errors import CodecError

FP16_U = 2.0**-11  # unit roundoff of fp16 (10 stored mantissa bits, round to nearest)
BF16_U = 2.0**-8  # unit roundoff of bf16 (7 stored mantissa bits)


def wide_range(n: int = 4096) -> torch.Tensor:
    """Values from 1e-6 to 6e4 with both signs: normal and subnormal fp16 ranges."""
    generator = torch.Generator().manual_seed(3)
    magnitude = torch.pow(10.0, torch.empty(n).uniform_(-6, math.log10(6e4), generator=generator))
    return magnitude * torch.randn(n, generator=generator).sign()


def test_fp16_relative_error_bound():
    codec = get_codec("fp16")
    x = wide_range().reshape(1, 8, 512)
    y = codec.decode(codec.encode(x), x.shape)
    error = (y.double() - x.double()).abs()
    # Normal fp16 range: relative bound. Below 2^-14 (subnormals): absolute bound of half a step 2^-24.
    bound = torch.maximum(FP16_U * x.double().abs(), torch.tensor(2.0**-25, dtype=torch.float64))
    assert bool((error <= bound).all())
    assert float(error.max()) > 0  # it really is lossy


def test_bf16_relative_error_bound():
    codec = get_codec("bf16")
    x = (wide_range() * 1e6).reshape(64, 64)  # bf16 has fp32's range: 1 .. 6e10
    y = codec.decode(codec.encode(x), x.shape)
    error = (y.double() - x.double()).abs()
    assert bool((error <= BF16_U * x.double().abs()).all())
    assert float(error.max()) > 0


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_half_formats_pass_nan_and_inf_through(name):
    codec = get_codec(name)
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1.5])
    y = codec.decode(codec.encode(x), x.shape)
    assert torch.isnan(y[0]) and y[1] == float("inf") and y[2] == -float("inf")
    assert torch.equal(y[3:], x[3:]) and math.copysign(1, float(y[3])) == -1


def test_fp16_refuses_values_beyond_its_range():
    with pytest.raises(CodecError, match="70000 exceeds the fp16 range"):
        get_codec("fp16").encode(torch.tensor([1.0, 70000.0]))


def test_bf16_refuses_the_top_of_fp32s_range_that_it_would_round_to_inf():
    largest = torch.finfo(torch.bfloat16).max
    codec = get_codec("bf16")
    kept = torch.tensor([-largest, largest, 3.0e38])
    assert torch.equal(codec.decode(codec.encode(kept), kept.shape), kept.to(torch.bfloat16).float())
    with pytest.raises(CodecError, match="3.4e\\+38 exceeds the bf16 range"):
        codec.encode(torch.tensor([1.0, -3.4e38]))


def stored_scales(data: bytes, shape: tuple[int, ...], block: int = 32) -> torch.Tensor:
    rows, _, blocks = layout(shape, block)
    scales = np.frombuffer(data, "<f2", count=rows * blocks).astype(np.float32)
    return torch.from_numpy(scales).reshape(rows, blocks)


@pytest.mark.parametrize("shape", [(1, 16, 576), (3, 70), (5,), (2, 1, 31), (1, 4, 65)])
def test_int8_error_is_at_most_half_a_step_per_block(shape):
    codec = get_codec("int8")
    x = synthetic_activations(seq=16, hidden=576).flatten()[: math.prod(shape)].reshape(shape)
    data = codec.encode(x)
    y = codec.decode(data, shape)
    rows, last, blocks = layout(shape, 32)
    scale_RK = stored_scales(data, shape)
    padded = blocks * 32 - last
    error_RKB = torch.nn.functional.pad((y - x).abs().reshape(rows, last), (0, padded)).reshape(
        rows, blocks, 32
    )
    absmax_RK = (
        torch.nn.functional.pad(x.abs().reshape(rows, last), (0, padded)).reshape(rows, blocks, 32).amax(-1)
    )
    # Scale is absmax / 127 rounded up to fp16 (relative step 2^-10).
    assert bool((scale_RK >= absmax_RK / 127).all())
    assert bool((scale_RK <= absmax_RK / 127 * (1 + 2.0**-10)).all())
    # Half a step, with room for one fp32 rounding of x / scale (relative 2^-24 of at most 127).
    assert bool((error_RKB.amax(-1) <= scale_RK / 2 * (1 + 1e-5)).all())


def test_int8_outlier_channels_do_not_wreck_other_blocks():
    x = synthetic_activations(seq=64, hidden=576, outlier_columns=(7, 123, 400), outlier_scale=300.0)
    y = get_codec("int8").decode(get_codec("int8").encode(x), x.shape)

    # Per-tensor (and per-token) int8: one scale set by the outliers for every value.
    scale = x.abs().amax() / 127
    y_tensor = torch.round(x / scale) * scale
    scale_token = x.abs().amax(-1, keepdim=True) / 127
    y_token = torch.round(x / scale_token) * scale_token

    # Blocks holding no outlier column: 32..95 etc. Compare there.
    clean = torch.ones(576, dtype=torch.bool)
    for column in (7, 123, 400):
        clean[column // 32 * 32 : column // 32 * 32 + 32] = False
    error_block = float((y - x)[..., clean].abs().max())
    error_tensor = float((y_tensor - x)[..., clean].abs().max())
    error_token = float((y_token - x)[..., clean].abs().max())
    assert error_block < error_tensor / 20
    assert error_block < error_token / 20
    # And in relative terms the clean blocks keep about 2 significant digits.
    rel_block = float((y - x)[..., clean].norm() / x[..., clean].norm())
    assert rel_block < 0.01


def test_int8_zero_and_tiny_blocks():
    codec = get_codec("int8")
    x = torch.zeros(2, 64)
    x[1, 40] = 1e-30  # underflows any fp16 scale; the scale is rounded up to the smallest subnormal
    y = codec.decode(codec.encode(x), x.shape)
    assert torch.equal(y[0], torch.zeros(64))
    assert float((y - x).abs().max()) <= 2.0**-25


def test_int8_refuses_nan_and_says_where():
    x = torch.randn(2, 96)
    x[1, 70] = float("nan")
    with pytest.raises(CodecError, match="row 1, values 64..95"):
        get_codec("int8").encode(x)
    with pytest.raises(CodecError, match="NaN or inf"):
        get_codec("int8-zstd").encode(x)


def test_int8_refuses_values_beyond_the_scale_range():
    with pytest.raises(CodecError, match="beyond the fp16 scale range"):
        get_codec("int8").encode(torch.tensor([1e9, 1.0]))


def test_int8_zstd_decodes_to_the_same_values_as_int8():
    x = synthetic_activations(seq=32, hidden=576)
    int8, int8_zstd = get_codec("int8"), get_codec("int8-zstd")
    a = int8.decode(int8.encode(x), x.shape)
    b = int8_zstd.decode(int8_zstd.encode(x), x.shape)
    assert torch.equal(a, b)
    assert len(int8_zstd.encode(x)) < len(int8.encode(x))


def test_fp16_keeps_values_that_round_to_its_largest():
    codec = get_codec("fp16")
    x = torch.tensor([65519.0, -65510.0])
    assert torch.equal(codec.decode(codec.encode(x), (2,)), torch.tensor([65504.0, -65504.0]))


def test_fp16_overflow_is_found_next_to_nan():
    with pytest.raises(CodecError, match="exceeds the fp16 range"):
        get_codec("fp16").encode(torch.tensor([float("nan"), 1e6]))
