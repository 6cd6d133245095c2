"""Our exceptions -> gRPC status codes, and parsing of raw request bytes (every servicer uses both).

Requests arrive as raw bytes (handlers are registered without deserializers) so that garbage is
answered with INVALID_ARGUMENT and a message, not grpc's generic "Exception deserializing request!"
(INTERNAL).
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from partition.errors import (
    ConfigError,
    ContextOverflowError,
    ModelNotFoundError,
    PartitionError,
    UnsupportedModelError,
)
from partition.runtime.errors import (
    CapacityError,
    InvalidRequestError,
    ModelAccessError,
    PositionError,
    StaleDeploymentError,
    UnknownSessionError,
)

M = TypeVar("M", bound=Message)

# Most specific first: the first matching class wins.
_CODES: tuple[tuple[type[PartitionError], grpc.StatusCode], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnsupportedModelError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelAccessError, grpc.StatusCode.PERMISSION_DENIED),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (UnknownSessionError, grpc.StatusCode.NOT_FOUND),
    (StaleDeploymentError, grpc.StatusCode.FAILED_PRECONDITION),
    (PositionError, grpc.StatusCode.OUT_OF_RANGE),
    (ContextOverflowError, grpc.StatusCode.OUT_OF_RANGE),
    (CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


def status_code(error: PartitionError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


def parse(message_type: type[M], data: bytes) -> M:
    """Parse a request; InvalidRequestError (INVALID_ARGUMENT) when the bytes are not a `message_type`."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise InvalidRequestError(
            f"request is not a valid {message_type.DESCRIPTOR.full_name} ({len(data)} bytes: {error}); "
            "send messages built from protos/partition/v1"
        ) from None
    return message
