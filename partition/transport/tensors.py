"""The one converter between torch tensors and `partition.v1.Tensor` (serve: what crosses a link).

Two layouts cross the network and nothing else: token ids `[batch, seq]` (int32, raw little-endian)
and activations or logits `[batch, seq, width]` (float32 before encoding, bytes from a
partition.codec codec). Every stage and the coordinator go through `to_proto` / `from_proto`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from partition.errors import ConfigError
from partition.runtime.errors import InvalidRequestError
from partition.transport.generated import tensor_pb2

RAW = "raw"
# Largest tensor a message may declare: 2^28 values = 1 GiB as float32, far above a 32k-token
# prefill of a 8k-wide model. Checked before decoding so a forged shape cannot make us allocate.
MAX_ELEMENTS = 1 << 28

_RANK = {tensor_pb2.DTYPE_INT32: 2, tensor_pb2.DTYPE_FLOAT32: 3}
_LAYOUT = {tensor_pb2.DTYPE_INT32: "token ids [batch, seq]", tensor_pb2.DTYPE_FLOAT32: "[batch, seq, width]"}


def to_proto(x: torch.Tensor, codec: str = RAW) -> tensor_pb2.Tensor:
    """Token ids `[B, S]` (any integer dtype) or activations `[B, S, D]` (any float dtype, any device)."""
    if x.dtype.is_floating_point:
        if x.dim() != 3:
            raise ValueError(f"activations must be [batch, seq, width], got shape {list(x.shape)}")
        from partition.codec import get_codec

        x_BSD = x.detach().to(device="cpu", dtype=torch.float32)
        data = get_codec(codec or RAW).encode(x_BSD)
        return tensor_pb2.Tensor(shape=x.shape, dtype=tensor_pb2.DTYPE_FLOAT32, codec=codec or RAW, data=data)
    if x.dim() != 2:
        raise ValueError(f"token ids must be [batch, seq], got shape {list(x.shape)}")
    if codec not in ("", RAW):
        raise ValueError(f"token ids are always sent raw, not with codec {codec!r}")
    ids_BS = x.detach().to(device="cpu", dtype=torch.int32).contiguous()
    data = ids_BS.numpy().astype("<i4", copy=False).tobytes()
    return tensor_pb2.Tensor(shape=x.shape, dtype=tensor_pb2.DTYPE_INT32, codec=RAW, data=data)


def from_proto(msg: tensor_pb2.Tensor, max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """A new CPU tensor: int64 ids `[B, S]` or float32 `[B, S, D]`. InvalidRequestError if malformed."""
    shape = _checked_shape(msg, max_elements)
    if msg.dtype == tensor_pb2.DTYPE_INT32:
        if msg.codec not in ("", RAW):
            raise InvalidRequestError(f"token ids must be sent raw, got codec {msg.codec!r}")
        expected = math.prod(shape) * 4
        if len(msg.data) != expected:
            raise InvalidRequestError(
                f"token ids of shape {list(shape)} need {expected} bytes (int32), got {len(msg.data)}"
            )
        ids = np.frombuffer(msg.data, dtype="<i4").astype(np.int64)
        return torch.from_numpy(ids).reshape(shape)
    from partition.codec import get_codec
    from partition.errors import CodecError

    try:
        codec = get_codec(msg.codec or RAW)
    except ConfigError as error:
        raise InvalidRequestError(f"tensor codec: {error}") from None
    try:
        return codec.decode(msg.data, shape)
    except CodecError as error:
        raise InvalidRequestError(f"tensor payload: {error}") from None


def _checked_shape(msg: tensor_pb2.Tensor, max_elements: int) -> tuple[int, ...]:
    if msg.dtype not in _RANK:
        raise InvalidRequestError(
            f"tensor dtype {msg.dtype} is not FLOAT32 (activations) or INT32 (token ids); set Tensor.dtype"
        )
    shape = tuple(msg.shape)
    rank = _RANK[msg.dtype]
    if len(shape) != rank or any(d < 1 for d in shape):
        raise InvalidRequestError(
            f"tensor shape {list(shape)} is not {_LAYOUT[msg.dtype]} with every dimension >= 1"
        )
    if math.prod(shape) > max_elements:
        raise InvalidRequestError(
            f"tensor shape {list(shape)} holds {math.prod(shape)} values, over the limit of {max_elements}; "
            "send long prompts in prefill chunks"
        )
    return shape
