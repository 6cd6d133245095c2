"""Reading a request body sent with `Transfer-Encoding: chunked` (RFC 9112, 7.1), as clients that stream
their upload do: chunks of `SIZE-IN-HEX[;extensions]\\r\\n DATA \\r\\n`, a last chunk of size 0, then
optional trailer lines up to an empty one."""

from __future__ import annotations

import re
from typing import BinaryIO

from partition.api.requests import ApiError

MAX_LINE_BYTES = 4096  # a size line or a trailer: a few bytes, unless the client is not speaking HTTP
MAX_TRAILER_LINES = 64
HEX_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # no sign, no underscores: int(..., 16) would take both


def read_chunked(rfile: BinaryIO, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; ApiError (400 malformed, 413 too large) otherwise. After an
    error the connection cannot be trusted: where the next request starts is unknown."""
    body = bytearray()
    while True:
        line = _line(rfile)
        size_text = line.split(b";", 1)[0].strip()
        if not HEX_SIZE.fullmatch(size_text):
            raise _malformed(f"a chunk size line reads {line[:64]!r}, not a hexadecimal size")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise ApiError(413, f"the chunked request body is over the limit of {limit} bytes; send less")
        data = rfile.read(size)
        if len(data) < size:
            raise _malformed("the body ended inside a chunk")
        body += data
        if _line(rfile):
            raise _malformed("a chunk is longer than its size says")
    for _ in range(MAX_TRAILER_LINES):
        if not _line(rfile):  # the empty line that ends the body
            return bytes(body)
    raise _malformed(f"more than {MAX_TRAILER_LINES} trailer lines")


def _line(rfile: BinaryIO) -> bytes:
    """One line without its line ending; a line cut off by the end of the stream or too long is malformed."""
    line = rfile.readline(MAX_LINE_BYTES + 1)
    if not line.endswith(b"\n"):
        raise _malformed("the body ended early" if len(line) <= MAX_LINE_BYTES else "a line is too long")
    return line.rstrip(b"\r\n")


def _malformed(what: str) -> ApiError:
    return ApiError(
        400, f"the chunked request body is malformed: {what}; send it again, or with Content-Length"
    )
