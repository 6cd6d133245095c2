"""The one tensor<->proto converter: exact round trips, codecs, and precise refusals of bad payloads."""

import pytest
import torch

from partition.codec import CODECS, get_codec
from partition.runtime.errors import InvalidRequestError
from partition.transport.generated import tensor_pb2
from partition.transport.tensors import from_proto, to_proto


def test_token_ids_round_trip_as_int32():
    ids = torch.tensor([[0, 1, 49151, 7]])
    msg = to_proto(ids)
    assert msg.dtype == tensor_pb2.DTYPE_INT32 and list(msg.shape) == [1, 4] and len(msg.data) == 16
    back = from_proto(tensor_pb2.Tensor.FromString(msg.SerializeToString()))
    assert back.dtype == torch.int64 and torch.equal(back, ids)


@pytest.mark.parametrize("codec", CODECS)
def test_activations_round_trip_through_every_codec(codec):
    x = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(0))
    msg = tensor_pb2.Tensor.FromString(to_proto(x, codec).SerializeToString())
    assert msg.codec == codec and list(msg.shape) == [1, 5, 64]
    y = from_proto(msg)
    assert y.dtype == torch.float32 and y.shape == x.shape
    if get_codec(codec).lossless:
        assert torch.equal(y, x)
    else:
        assert torch.allclose(y, x, atol=0.05 * x.abs().max().item())


def test_activations_on_other_dtypes_are_sent_as_float32():
    x = torch.randn(1, 2, 8).to(torch.bfloat16)
    assert torch.equal(from_proto(to_proto(x)), x.float())


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (tensor_pb2.Tensor(shape=[1, 2], codec="raw", data=bytes(8)), "dtype 0 is not FLOAT32"),
        (
            tensor_pb2.Tensor(shape=[1, 2], dtype=tensor_pb2.DTYPE_FLOAT32, data=bytes(8)),
            r"not \[batch, seq, width\]",
        ),
        (tensor_pb2.Tensor(shape=[1, 0, 4], dtype=tensor_pb2.DTYPE_FLOAT32), "every dimension >= 1"),
        (tensor_pb2.Tensor(shape=[1, 2], dtype=tensor_pb2.DTYPE_INT32, data=bytes(7)), "need 8 bytes"),
        (
            tensor_pb2.Tensor(shape=[1, 2], dtype=tensor_pb2.DTYPE_INT32, codec="int8", data=bytes(8)),
            "sent raw",
        ),
        (
            tensor_pb2.Tensor(shape=[1, 2, 4], dtype=tensor_pb2.DTYPE_FLOAT32, data=bytes(31)),
            "tensor payload",
        ),
        (
            tensor_pb2.Tensor(shape=[1, 1, 4], dtype=tensor_pb2.DTYPE_FLOAT32, codec="gzip"),
            "unknown codec 'gzip'",
        ),
        (tensor_pb2.Tensor(shape=[1 << 20, 1 << 20, 1], dtype=tensor_pb2.DTYPE_FLOAT32), "over the limit"),
    ],
)
def test_malformed_tensors_are_invalid_requests(msg, match):
    with pytest.raises(InvalidRequestError, match=match):
        from_proto(msg)


def test_layouts_other_than_ids_or_activations_are_refused_on_the_way_out():
    with pytest.raises(ValueError, match=r"\[batch, seq, width\]"):
        to_proto(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="token ids"):
        to_proto(torch.zeros(1, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="always sent raw"):
        to_proto(torch.zeros(1, 2, dtype=torch.int64), "int8")
