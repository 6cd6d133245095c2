from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProbeRequest(_message.Message):
    __slots__ = ("payload", "reply_bytes", "client_sent_unix_ns", "forward_to", "count")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REPLY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_TO_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    reply_bytes: int
    client_sent_unix_ns: int
    forward_to: str
    count: int
    def __init__(self, payload: _Optional[bytes] = ..., reply_bytes: _Optional[int] = ..., client_sent_unix_ns: _Optional[int] = ..., forward_to: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ProbeSample(_message.Message):
    __slots__ = ("t0", "t1", "t2", "t3", "request_bytes", "reply_bytes")
    T0_FIELD_NUMBER: _ClassVar[int]
    T1_FIELD_NUMBER: _ClassVar[int]
    T2_FIELD_NUMBER: _ClassVar[int]
    T3_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLY_BYTES_FIELD_NUMBER: _ClassVar[int]
    t0: int
    t1: int
    t2: int
    t3: int
    request_bytes: int
    reply_bytes: int
    def __init__(self, t0: _Optional[int] = ..., t1: _Optional[int] = ..., t2: _Optional[int] = ..., t3: _Optional[int] = ..., request_bytes: _Optional[int] = ..., reply_bytes: _Optional[int] = ...) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("worker", "payload", "client_sent_unix_ns", "server_recv_unix_ns", "server_send_unix_ns", "samples", "plan_id", "epoch")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SERVER_RECV_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SERVER_SEND_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    worker: str
    payload: bytes
    client_sent_unix_ns: int
    server_recv_unix_ns: int
    server_send_unix_ns: int
    samples: _containers.RepeatedCompositeFieldContainer[ProbeSample]
    plan_id: str
    epoch: int
    def __init__(self, worker: _Optional[str] = ..., payload: _Optional[bytes] = ..., client_sent_unix_ns: _Optional[int] = ..., server_recv_unix_ns: _Optional[int] = ..., server_send_unix_ns: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[ProbeSample, _Mapping]]] = ..., plan_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ProfileRequest(_message.Message):
    __slots__ = ("model", "dtype", "threads", "prefill_lengths", "context_lengths", "repeats", "refresh", "warmup", "min_time_s", "idle_s", "block_span")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    MIN_TIME_S_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SPAN_FIELD_NUMBER: _ClassVar[int]
    model: str
    dtype: str
    threads: int
    prefill_lengths: _containers.RepeatedScalarFieldContainer[int]
    context_lengths: _containers.RepeatedScalarFieldContainer[int]
    repeats: int
    refresh: bool
    warmup: int
    min_time_s: float
    idle_s: float
    block_span: int
    def __init__(self, model: _Optional[str] = ..., dtype: _Optional[str] = ..., threads: _Optional[int] = ..., prefill_lengths: _Optional[_Iterable[int]] = ..., context_lengths: _Optional[_Iterable[int]] = ..., repeats: _Optional[int] = ..., refresh: _Optional[bool] = ..., warmup: _Optional[int] = ..., min_time_s: _Optional[float] = ..., idle_s: _Optional[float] = ..., block_span: _Optional[int] = ...) -> None: ...

class ProfileReply(_message.Message):
    __slots__ = ("worker", "device_profile_json")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_JSON_FIELD_NUMBER: _ClassVar[int]
    worker: str
    device_profile_json: str
    def __init__(self, worker: _Optional[str] = ..., device_profile_json: _Optional[str] = ...) -> None: ...
