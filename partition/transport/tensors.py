"""The one converter between torch tensors and `partition.v1.Tensor` (serve: what crosses a link).

Two layouts cross the network and nothing else: token ids `[batch, seq]` (int32, raw little-endian)
and activations or logits `[batch, seq, width]` (float32 before encoding, bytes from a
partition.codec codec). Logits of one position may also go as their top K (`to_top_k_proto`): what
a sampler on the other end needs, in a few hundred bytes instead of vocab x 4. Every stage and the
coordinator go through these functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from partition.codec import get_codec
from partition.errors import CodecError, ConfigError
from partition.runtime.errors import InvalidRequestError
from partition.transport.generated import tensor_pb2

RAW = "raw"
TOP_K = "top-k"  # the largest logits of one position: K int32 ids, then K float32 values
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
        x_BSD = x if x.dtype == torch.float32 and x.device.type == "cpu" else x.to("cpu", torch.float32)
        data = get_codec(codec or RAW).encode(x_BSD)
        return tensor_pb2.Tensor(shape=x.shape, dtype=tensor_pb2.DTYPE_FLOAT32, codec=codec or RAW, data=data)
    if x.dim() != 2:
        raise ValueError(f"token ids must be [batch, seq], got shape {list(x.shape)}")
    if codec not in ("", RAW):
        raise ValueError(f"token ids are always sent raw, not with codec {codec!r}")
    ids_BS = x.detach().to(device="cpu", dtype=torch.int32).contiguous()
    data = ids_BS.numpy().astype("<i4", copy=False).tobytes()
    return tensor_pb2.Tensor(shape=x.shape, dtype=tensor_pb2.DTYPE_INT32, codec=RAW, data=data)


def to_top_k_proto(logits: torch.Tensor, k: int) -> tensor_pb2.Tensor:
    """The `k` largest of logits `[1, 1, V]`, and every other logit equal to the k-th (ties), so that a
    greedy or top-k (<= k) sampler on the receiving end picks what it would from all V logits."""
    if logits.dim() != 3 or logits.shape[0] != 1 or logits.shape[1] != 1:
        raise InvalidRequestError(
            f"logits_top_k needs the last position of one session, logits [1, 1, vocab]; got "
            f"{list(logits.shape)} (send OUTPUT_SELECT_LAST)"
        )
    row = logits.detach().reshape(-1).to(device="cpu", dtype=torch.float32)
    if k < row.numel():
        values, ids = torch.topk(row, k + 1)  # sorted: the (k+1)-th says whether a tie crosses the cut
        kth, after = values[k - 1 : k + 1].tolist()  # as Python floats: one call, not four tensor ops
        values, ids = values[:k], ids[:k]
        if not after < kth:  # a tie with the k-th: send every one of them
            tied = torch.nonzero(row >= kth).reshape(-1)
            if tied.numel() >= k:  # NaN compares false: then the top k go as they are
                values, ids = row[tied], tied
    else:
        values, ids = row, torch.arange(row.numel())
    ids_bytes = ids.to(torch.int32).numpy().astype("<i4", copy=False).tobytes()
    data = ids_bytes + values.numpy().astype("<f4", copy=False).tobytes()
    return tensor_pb2.Tensor(shape=logits.shape, dtype=tensor_pb2.DTYPE_FLOAT32, codec=TOP_K, data=data)


def from_proto(msg: tensor_pb2.Tensor, max_elements: int = MAX_ELEMENTS, width: int = 0) -> torch.Tensor:
    """A new CPU tensor: int64 ids `[B, S]` or float32 `[B, S, D]`. InvalidRequestError if malformed,
    or when `width` (> 0) is not its last dimension: checked from the header, before anything is
    allocated (a top-k message's few bytes would otherwise unfold into logits as wide as it says)."""
    shape = _checked_shape(msg, max_elements)
    if width and shape[-1] != width:
        raise InvalidRequestError(f"tensor shape {list(shape)}: its last dimension must be {width} here")
    if msg.codec == TOP_K:
        return _from_top_k(msg.data, shape)
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
    try:
        codec = get_codec(msg.codec or RAW)
    except ConfigError as error:
        raise InvalidRequestError(f"tensor codec: {error}") from None
    try:
        return codec.decode(msg.data, shape)
    except CodecError as error:
        raise InvalidRequestError(f"tensor payload: {error}") from None


def _from_top_k(data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """Logits `[1, 1, V]`: the sent ones in place, every other one -inf."""
    vocab = shape[-1]
    if shape[:2] != (1, 1) or len(data) % 8 or not 0 < len(data) // 8 <= vocab:
        raise InvalidRequestError(
            f"top-k logits need shape [1, 1, vocab] and K ids + K logits (8 bytes each, 1 <= K <= vocab); "
            f"got shape {list(shape)} with {len(data)} bytes"
        )
    k = len(data) // 8
    ids = np.frombuffer(data, dtype="<i4", count=k)
    listed = ids.tolist()  # K is 64 or a sampler's top-k: Python's min, max, set beat three torch ops
    if min(listed) < 0 or max(listed) >= vocab or len(set(listed)) != k:
        raise InvalidRequestError(f"top-k logits: token ids must be distinct and lie in [0, {vocab})")
    values = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=4 * k).astype(np.float32))
    logits = torch.full((vocab,), float("-inf"))
    logits[torch.from_numpy(ids.astype(np.int64))] = values
    return logits.reshape(shape)


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
