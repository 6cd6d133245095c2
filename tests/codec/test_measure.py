import pytest
import torch

from partition.codec import get_codec
from partition.codec.measure import measure_codec
from partition.codec.synthetic import synthetic_activations


def test_measure_raw_is_exact_and_four_bytes():
    x = synthetic_activations(seq=8)
    m = measure_codec(get_codec("raw"), x, repeats=3, warmup=1)
    assert m.bit_exact and m.lossless
    assert m.bytes_per_value == 4.0 and m.ratio_vs_raw == 1.0 and m.encoded_bytes == 4 * x.numel()
    assert m.max_abs_error == 0.0 and m.rel_l2_error == 0.0
    assert m.encode_s > 0 and m.decode_s > 0 and m.encode_gbps > 0
    assert m.shape == (1, 8, 576)


def test_measure_int8_reports_its_error():
    x = torch.linspace(-1, 1, 64).reshape(1, 64)
    m = measure_codec(get_codec("int8"), x, repeats=2, warmup=0)
    y = get_codec("int8").decode(get_codec("int8").encode(x), x.shape)
    assert not m.bit_exact
    assert m.max_abs_error == pytest.approx(float((y - x).abs().max()))
    assert m.max_rel_error == pytest.approx(m.max_abs_error / 1.0)
    assert 0 < m.max_abs_error <= (1 / 127) / 2 * 1.001  # both blocks have absmax 1
    assert m.bytes_per_value == pytest.approx(1 + 2 / 32)
    assert m.as_dict()["codec"] == "int8"
