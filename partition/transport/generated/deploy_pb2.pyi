from . import forward_pb2 as _forward_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadSegmentRequest(_message.Message):
    __slots__ = ("plan_id", "epoch", "model", "model_digest", "start", "end", "dtype", "downstream", "codec_out", "max_context", "max_sessions", "worker", "chain_workers")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    CODEC_OUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    CHAIN_WORKERS_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    epoch: int
    model: str
    model_digest: str
    start: int
    end: int
    dtype: str
    downstream: str
    codec_out: str
    max_context: int
    max_sessions: int
    worker: str
    chain_workers: int
    def __init__(self, plan_id: _Optional[str] = ..., epoch: _Optional[int] = ..., model: _Optional[str] = ..., model_digest: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., dtype: _Optional[str] = ..., downstream: _Optional[str] = ..., codec_out: _Optional[str] = ..., max_context: _Optional[int] = ..., max_sessions: _Optional[int] = ..., worker: _Optional[str] = ..., chain_workers: _Optional[int] = ...) -> None: ...

class LoadSegmentReply(_message.Message):
    __slots__ = ("worker", "plan_id", "epoch", "model_name", "model_digest", "weights_digest", "start", "end", "n_blocks", "hidden_size", "vocab_size", "kv_slots", "max_context", "weight_bytes", "kv_bytes", "load_s", "device", "chain_workers", "units_kept")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    N_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    KV_SLOTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_WORKERS_FIELD_NUMBER: _ClassVar[int]
    UNITS_KEPT_FIELD_NUMBER: _ClassVar[int]
    worker: str
    plan_id: str
    epoch: int
    model_name: str
    model_digest: str
    weights_digest: str
    start: int
    end: int
    n_blocks: int
    hidden_size: int
    vocab_size: int
    kv_slots: int
    max_context: int
    weight_bytes: int
    kv_bytes: int
    load_s: float
    device: str
    chain_workers: int
    units_kept: int
    def __init__(self, worker: _Optional[str] = ..., plan_id: _Optional[str] = ..., epoch: _Optional[int] = ..., model_name: _Optional[str] = ..., model_digest: _Optional[str] = ..., weights_digest: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., n_blocks: _Optional[int] = ..., hidden_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., kv_slots: _Optional[int] = ..., max_context: _Optional[int] = ..., weight_bytes: _Optional[int] = ..., kv_bytes: _Optional[int] = ..., load_s: _Optional[float] = ..., device: _Optional[str] = ..., chain_workers: _Optional[int] = ..., units_kept: _Optional[int] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _forward_pb2.SessionRef
    def __init__(self, session: _Optional[_Union[_forward_pb2.SessionRef, _Mapping]] = ...) -> None: ...

class EndSessionReply(_message.Message):
    __slots__ = ("found", "positions")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    found: bool
    positions: int
    def __init__(self, found: _Optional[bool] = ..., positions: _Optional[int] = ...) -> None: ...
