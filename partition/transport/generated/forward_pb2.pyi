from . import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_ROLE_UNSPECIFIED: _ClassVar[StreamRole]
    STREAM_ROLE_CHAIN: _ClassVar[StreamRole]
    STREAM_ROLE_RETURN: _ClassVar[StreamRole]

class OutputSelect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_SELECT_ALL: _ClassVar[OutputSelect]
    OUTPUT_SELECT_LAST: _ClassVar[OutputSelect]
STREAM_ROLE_UNSPECIFIED: StreamRole
STREAM_ROLE_CHAIN: StreamRole
STREAM_ROLE_RETURN: StreamRole
OUTPUT_SELECT_ALL: OutputSelect
OUTPUT_SELECT_LAST: OutputSelect

class SessionRef(_message.Message):
    __slots__ = ("session_id", "plan_id", "epoch", "model_digest")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    plan_id: str
    epoch: int
    model_digest: str
    def __init__(self, session_id: _Optional[str] = ..., plan_id: _Optional[str] = ..., epoch: _Optional[int] = ..., model_digest: _Optional[str] = ...) -> None: ...

class OpenStream(_message.Message):
    __slots__ = ("session", "role", "pair_id")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PAIR_ID_FIELD_NUMBER: _ClassVar[int]
    session: SessionRef
    role: StreamRole
    pair_id: str
    def __init__(self, session: _Optional[_Union[SessionRef, _Mapping]] = ..., role: _Optional[_Union[StreamRole, str]] = ..., pair_id: _Optional[str] = ...) -> None: ...

class StreamOpened(_message.Message):
    __slots__ = ("stages", "kv_slot", "next_position")
    STAGES_FIELD_NUMBER: _ClassVar[int]
    KV_SLOT_FIELD_NUMBER: _ClassVar[int]
    NEXT_POSITION_FIELD_NUMBER: _ClassVar[int]
    stages: _containers.RepeatedScalarFieldContainer[str]
    kv_slot: int
    next_position: int
    def __init__(self, stages: _Optional[_Iterable[str]] = ..., kv_slot: _Optional[int] = ..., next_position: _Optional[int] = ...) -> None: ...

class HopTiming(_message.Message):
    __slots__ = ("stage", "upstream_sent_unix_ns", "recv_unix_ns", "queue_s", "decode_s", "compute_s", "encode_s", "sent_unix_ns", "bytes_in", "bytes_out", "codec_in", "batch")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    RECV_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    ENCODE_S_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    CODEC_IN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    stage: str
    upstream_sent_unix_ns: int
    recv_unix_ns: int
    queue_s: float
    decode_s: float
    compute_s: float
    encode_s: float
    sent_unix_ns: int
    bytes_in: int
    bytes_out: int
    codec_in: str
    batch: int
    def __init__(self, stage: _Optional[str] = ..., upstream_sent_unix_ns: _Optional[int] = ..., recv_unix_ns: _Optional[int] = ..., queue_s: _Optional[float] = ..., decode_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., encode_s: _Optional[float] = ..., sent_unix_ns: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., codec_in: _Optional[str] = ..., batch: _Optional[int] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("session_id", "plan_id", "epoch", "position", "n_tokens", "tensor", "output", "logits_top_k", "log_probs", "log_probs_sent", "score_next", "score_top", "scores_sent", "sent_unix_ns", "hops")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    N_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LOGITS_TOP_K_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBS_FIELD_NUMBER: _ClassVar[int]
    LOG_PROBS_SENT_FIELD_NUMBER: _ClassVar[int]
    SCORE_NEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_TOP_FIELD_NUMBER: _ClassVar[int]
    SCORES_SENT_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    plan_id: str
    epoch: int
    position: int
    n_tokens: int
    tensor: _tensor_pb2.Tensor
    output: OutputSelect
    logits_top_k: int
    log_probs: bool
    log_probs_sent: bool
    score_next: _containers.RepeatedScalarFieldContainer[int]
    score_top: int
    scores_sent: bool
    sent_unix_ns: int
    hops: _containers.RepeatedCompositeFieldContainer[HopTiming]
    def __init__(self, session_id: _Optional[str] = ..., plan_id: _Optional[str] = ..., epoch: _Optional[int] = ..., position: _Optional[int] = ..., n_tokens: _Optional[int] = ..., tensor: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., output: _Optional[_Union[OutputSelect, str]] = ..., logits_top_k: _Optional[int] = ..., log_probs: _Optional[bool] = ..., log_probs_sent: _Optional[bool] = ..., score_next: _Optional[_Iterable[int]] = ..., score_top: _Optional[int] = ..., scores_sent: _Optional[bool] = ..., sent_unix_ns: _Optional[int] = ..., hops: _Optional[_Iterable[_Union[HopTiming, _Mapping]]] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("open", "step")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    open: OpenStream
    step: Step
    def __init__(self, open: _Optional[_Union[OpenStream, _Mapping]] = ..., step: _Optional[_Union[Step, _Mapping]] = ...) -> None: ...

class ForwardReply(_message.Message):
    __slots__ = ("opened", "result")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    opened: StreamOpened
    result: Step
    def __init__(self, opened: _Optional[_Union[StreamOpened, _Mapping]] = ..., result: _Optional[_Union[Step, _Mapping]] = ...) -> None: ...
