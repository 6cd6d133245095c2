"""The one tensor<->proto converter: exact round trips, codecs, and precise refusals of bad payloads."""

import pytest
import torch

from partition.codec import CODECS, get_codec
from partition.runtime.errors import InvalidRequestError
from partition.transport.generated import tensor_pb2
from partition.transport.tensors import from_proto, to_proto, to_top_k_proto


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


def test_top_k_logits_keep_the_largest_and_their_ties_and_nothing_else():
    logits = torch.tensor([[[0.5, 3.0, -1.0, 2.0, 2.0, 1.0]]])
    msg = tensor_pb2.Tensor.FromString(to_top_k_proto(logits, 2).SerializeToString())
    assert msg.codec == "top-k" and len(msg.data) == 3 * 8  # 3.0, and both 2.0s tie for second
    back = from_proto(msg)
    inf = float("-inf")
    assert back.shape == (1, 1, 6) and torch.equal(back, torch.tensor([[[inf, 3.0, inf, 2.0, 2.0, inf]]]))
    assert int(back.argmax()) == int(logits.argmax())
    assert torch.equal(from_proto(to_top_k_proto(logits, 10)), logits)  # K >= vocab: all of them
    assert torch.equal(
        from_proto(to_top_k_proto(logits, 1)), torch.tensor([[[inf, 3.0, inf, inf, inf, inf]]])
    )
    assert len(to_top_k_proto(logits, 4).data) == 4 * 8  # no tie at the 4th: exactly 4
    nan = torch.tensor([[[0.5, float("nan"), 1.0, 2.0]]])  # a broken head's NaN travels as it would in full
    assert len(to_top_k_proto(nan, 1).data) == 8 and len(to_top_k_proto(nan, 2).data) == 2 * 8


@pytest.mark.parametrize(
    ("data", "shape", "match"),
    [
        (b"\x00" * 12, [1, 1, 6], "K ids \\+ K logits"),
        (b"", [1, 1, 6], "K ids \\+ K logits"),
        (b"\x00" * 8, [1, 2, 6], "shape \\[1, 1, vocab\\]"),
        (b"\x09\x00\x00\x00" + b"\x00" * 4, [1, 1, 6], "lie in \\[0, 6\\)"),
        (b"\x01\x00\x00\x00" * 2 + b"\x00" * 8, [1, 1, 6], "distinct"),
    ],
)
def test_malformed_top_k_logits_are_invalid_requests(data, shape, match):
    msg = tensor_pb2.Tensor(shape=shape, dtype=tensor_pb2.DTYPE_FLOAT32, codec="top-k", data=data)
    with pytest.raises(InvalidRequestError, match=match):
        from_proto(msg)


def test_top_k_of_more_than_one_position_is_refused():
    with pytest.raises(InvalidRequestError, match="OUTPUT_SELECT_LAST"):
        to_top_k_proto(torch.zeros(1, 3, 6), 2)


def test_a_result_wider_than_the_receiver_expects_is_refused_before_it_unfolds():
    # one top-k entry (8 bytes) declaring a vocabulary of 2^28: 1 GiB of logits once decoded
    forged = tensor_pb2.Tensor(
        shape=[1, 1, 1 << 28], dtype=tensor_pb2.DTYPE_FLOAT32, codec="top-k", data=b"\x00" * 8
    )
    with pytest.raises(InvalidRequestError, match="its last dimension must be 49152 here"):
        from_proto(forged, width=49152)
    honest = to_top_k_proto(torch.randn(1, 1, 49152), 64)
    assert from_proto(honest, max_elements=49152, width=49152).shape == (1, 1, 49152)
